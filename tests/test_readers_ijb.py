"""insightface IJB and NIST IJB-C readers on tiny files in the real formats."""

from __future__ import annotations

import numpy as np
import pytest
from facedata_fixtures import IJB_ROWS, manifest, write_ijb

from facedata.errors import DataError
from facedata.readers import read_dataset


def test_insightface_ijb_reads_rows_landmarks_and_pairs(tmp_path):
    root = tmp_path / "IJBC"
    m = manifest(tmp_path, write_ijb(root))
    t = read_dataset(m, root)
    im = t.images
    assert list(im.path) == [f"loose_crop/{n}" for n, _, _ in IJB_ROWS]
    assert im.template.tolist() == [1, 1, 2, 3] and im.media.tolist() == [10, 10, 11, 12]
    assert im.subject.tolist() == [-1] * 4  # no 1:N subject files named
    np.testing.assert_allclose(im.landmarks[1], np.arange(10, 20).reshape(5, 2) + 0.5)
    np.testing.assert_allclose(im.detector_score, [0.9, 0.8, 0.7, 0.6], rtol=1e-6)
    p = t.protocols["v11"]
    assert p.level == "template" and p.pairs.tolist() == [[1, 2], [1, 3]] and p.label.tolist() == [True, False]
    assert t.extra["aligned"] is False


def test_insightface_ijb_template_subjects(tmp_path):
    root = tmp_path / "IJBC"
    raw = write_ijb(root)
    (root / "meta" / "g.csv").write_text(
        "TEMPLATE_ID,SUBJECT_ID,FILENAME\n1,7,img/1.jpg\n1,7,img/2.jpg\n2,7,img/3.jpg\n"
    )
    (root / "meta" / "p.csv").write_text("TEMPLATE_ID,SUBJECT_ID,FILENAME\n3,8,img/4.jpg\n")
    raw["files"]["template_subjects"] = ["meta/g.csv", "meta/p.csv"]
    t = read_dataset(manifest(tmp_path, raw), root)
    assert t.images.subject.tolist() == [7, 7, 7, 8]
    (root / "meta" / "p.csv").write_text("TEMPLATE_ID,SUBJECT_ID,FILENAME\n3,8,img/4.jpg\n3,x,img/5.jpg\n")
    with pytest.raises(DataError, match=r"^meta/p\.csv:3: SUBJECT_ID 'x' is not an integer"):
        read_dataset(manifest(tmp_path, raw), root)


@pytest.mark.parametrize(
    "file, content, message",
    [
        ("face_tid_mid", "1.jpg 1 10\n2.jpg 1\n", r"^meta/ijbc_face_tid_mid\.txt:2: expected 3 fields, got 2$"),
        ("face_tid_mid", "1.jpg 1 10\n2.jpg 1 10\n3.jpg two 11\n", r"^meta/ijbc_face_tid_mid\.txt:3: field 2: 'two'"),
        ("face_tid_mid", "1.jpg 1 10\n2.jpg 1 10 5\n", r"^meta/ijbc_face_tid_mid\.txt:2: expected 3 fields, got 4$"),
        (
            "face_tid_mid",
            "1.jpg 1 10\n../2.jpg 1 10\n3.jpg 2 11\n4.jpg 3 12\n",
            r"^meta/ijbc_face_tid_mid\.txt:2: .*'\.\./2\.jpg'",
        ),
        ("pairs", "1 2 1\n1 3 2\n", r"^meta/ijbc_template_pair_label\.txt:2: label must be 0 or 1, got 2"),
        ("pairs", "1 2 1\n\n1 9 0\n", r"^meta/ijbc_template_pair_label\.txt:3: unknown template 9"),
        ("pairs", "1 2 1\n1 3\n", r"^meta/ijbc_template_pair_label\.txt:2: expected 3 fields, got 2"),
        ("pts", None, r"^meta/ijbc_name_5pts_score\.txt:3: image name '9\.jpg' differs from '3\.jpg'"),
        ("pts_short", None, r"^meta/ijbc_name_5pts_score\.txt: 3 lines, but meta/ijbc_face_tid_mid\.txt has 4"),
        ("pts_nan", None, r"^meta/ijbc_name_5pts_score\.txt:2: field 12: 'bad' is not a number"),
    ],
)
def test_insightface_ijb_bad_lines(tmp_path, file, content, message):
    root = tmp_path / "IJBC"
    raw = write_ijb(root)
    meta = root / "meta"
    if file == "face_tid_mid":
        (meta / "ijbc_face_tid_mid.txt").write_text(content)
    elif file == "pairs":
        (meta / "ijbc_template_pair_label.txt").write_text(content)
    else:
        lines = (meta / "ijbc_name_5pts_score.txt").read_text().splitlines()
        if file == "pts":
            lines[2] = lines[2].replace("3.jpg", "9.jpg")
        elif file == "pts_short":
            lines = lines[:3]
        else:
            lines[1] = lines[1].rsplit(" ", 1)[0] + " bad"
        (meta / "ijbc_name_5pts_score.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=message):
        read_dataset(manifest(tmp_path, raw), root)


def test_insightface_ijb_missing_file(tmp_path):
    root = tmp_path / "IJBC"
    raw = write_ijb(root)
    (root / "meta" / "ijbc_name_5pts_score.txt").unlink()
    with pytest.raises(DataError, match=r"^meta/ijbc_name_5pts_score\.txt: file not found$"):
        read_dataset(manifest(tmp_path, raw), root)


def test_insightface_ijb_escaping_manifest_file_refused(tmp_path):
    root = tmp_path / "IJBC"
    raw = write_ijb(root)
    (tmp_path / "secret.txt").write_text("1.jpg 1 10\n")
    (root / "meta" / "link.txt").symlink_to(tmp_path / "secret.txt")
    raw["files"]["face_tid_mid"] = "meta/link.txt"
    with pytest.raises(DataError, match=r"files\.face_tid_mid.*outside the data root"):
        read_dataset(manifest(tmp_path, raw), root)


NIST_ENROLL = (
    "TEMPLATE_ID,SUBJECT_ID,FILENAME,SIGHTING_ID\n1,100,img/5.jpg,1\n1,100,frames/7_1.png,2\n2,200,img/6.jpg,3\n"
)
NIST_VERIF = "TEMPLATE_ID,SUBJECT_ID,FILENAME,SIGHTING_ID\n11,100,frames/7_2.png,4\n12,300,img/8.jpg,5\n"


def nist_raw(root, enroll=NIST_ENROLL, verif=NIST_VERIF, match="1,11\n1,12\n2,11\n", pattern="{flat_stem}.png"):
    prot = root / "protocols"
    prot.mkdir(parents=True, exist_ok=True)
    (prot / "enroll_templates.csv").write_text(enroll)
    (prot / "verif_templates.csv").write_text(verif)
    (prot / "match.csv").write_text(match)
    return {
        "name": "ijbc-nist",
        "layout": "nist_ijbc",
        "aligned": True,
        "files": {
            "images": "aligned",
            "enroll_templates": "protocols/enroll_templates.csv",
            "verif_templates": "protocols/verif_templates.csv",
        },
        "protocols": {"test1": {"pairs": "protocols/match.csv"}},
        "options": {"image_path": pattern},
    }


def test_nist_ijbc_reads_templates_media_and_labels(tmp_path):
    root = tmp_path / "nist"
    t = read_dataset(manifest(tmp_path, nist_raw(root)), root)
    im = t.images
    assert list(im.path) == [
        "aligned/img_5.png",
        "aligned/frames_7_1.png",
        "aligned/img_6.png",
        "aligned/frames_7_2.png",
        "aligned/img_8.png",
    ]
    assert im.template.tolist() == [1, 1, 2, 11, 12] and im.subject.tolist() == [100, 100, 200, 100, 300]
    # media: still images are their own media; video frames 7_1 and 7_2 share video 7
    assert im.media[1] == im.media[3] and len({im.media[0], im.media[1], im.media[2], im.media[4]}) == 4
    p = t.protocols["test1"]
    assert p.pairs.tolist() == [[1, 11], [1, 12], [2, 11]] and p.label.tolist() == [True, False, False]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"match": "1,11\n1;12\n"}, r"^protocols/match\.csv:2: expected 2 fields, got 1"),
        ({"match": "1,11\n1,99\n"}, r"^protocols/match\.csv:2: unknown template 99"),
        (
            {"verif": "TEMPLATE_ID,SUBJECT_ID,FILENAME\n11,100,a.png\n12,x,b.png\n"},
            r"^protocols/verif_templates\.csv:3: SUBJECT_ID 'x' is not an integer",
        ),
        (
            {"verif": "TEMPLATE_ID,FILENAME\n11,a.png\n"},
            r"^protocols/verif_templates\.csv:1: header lacks column SUBJECT_ID",
        ),
        (
            {"verif": "TEMPLATE_ID,SUBJECT_ID,FILENAME\n11,100,a.png\n12,300,../b.png\n"},
            r"^protocols/verif_templates\.csv:3: image path '\.\./b\.png'",
        ),
        ({"pattern": "{nope}.png"}, r"options\.image_path '\{nope\}\.png': unknown field 'nope'"),
    ],
)
def test_nist_ijbc_errors(tmp_path, kwargs, message):
    root = tmp_path / "nist"
    with pytest.raises(DataError, match=message):
        read_dataset(manifest(tmp_path, nist_raw(root, **kwargs)), root)
