"""1:N identification protocols read from IJB template CSVs (insightface's meta layout and NIST's), over
the templates of the 1:1 images table; bad input is one error naming the file and line."""

from __future__ import annotations

import pytest
import yaml
from facedata_fixtures import manifest, write_ijb
from test_readers_ijb import nist_raw

from facedata.errors import DataError
from facedata.manifest import load_manifest, manifest_from_dict
from facedata.readers import read_dataset

HEAD = "TEMPLATE_ID,SUBJECT_ID,FILENAME,SUBJECT_NAME\n"
ROWS = [("1.jpg", 1, 10), ("2.jpg", 1, 10), ("3.jpg", 2, 11), ("4.jpg", 3, 12), ("5.jpg", 4, 13)]


def _ijb(tmp_path, g1=None, g2=None, probe=None, optional=True):
    root = tmp_path / "IJBC"
    raw = write_ijb(root, rows=ROWS)
    meta = root / "meta"
    files = {
        "ijbc_1N_gallery_G1.csv": g1 if g1 is not None else HEAD + "1,7,img/1.jpg,a\n1,7,img/2.jpg,a\n",
        "ijbc_1N_gallery_G2.csv": g2 if g2 is not None else HEAD + "2,8,img/3.jpg,b\n",
        "ijbc_1N_probe_mixed.csv": probe if probe is not None else HEAD + "3,7,frames/1_2.png,a\n4,9,img/9.jpg,c\n",
    }
    for name, text in files.items():
        if text is not False:
            (meta / name).write_text(text)
    raw["identification"] = {
        "ident": {
            "galleries": {"G1": "meta/ijbc_1N_gallery_G1.csv", "G2": "meta/ijbc_1N_gallery_G2.csv"},
            "probes": "meta/ijbc_1N_probe_mixed.csv",
            "optional": optional,
            "description": "toy",
        }
    }
    return root, manifest(tmp_path, raw)


def test_insightface_meta_layout(tmp_path):
    root, m = _ijb(tmp_path)
    t = read_dataset(m, root)
    idp = t.identification["ident"]
    assert list(idp.galleries) == ["G1", "G2"] and idp.description == "toy"
    assert idp.galleries["G1"].template.tolist() == [1] and idp.galleries["G1"].subject.tolist() == [7]
    assert idp.galleries["G2"].template.tolist() == [2] and idp.galleries["G2"].subject.tolist() == [8]
    assert idp.probe.template.tolist() == [3, 4] and idp.probe.subject.tolist() == [7, 9]
    assert "skipped_identification" not in t.extra
    assert t.protocols["v11"].pairs.tolist() == [[1, 2], [1, 3]]  # the 1:1 reading is unchanged


def test_absent_optional_files_read_as_today(tmp_path):
    root, m = _ijb(tmp_path, probe=False)
    t = read_dataset(m, root)
    assert t.identification == {} and t.extra["skipped_identification"] == ["ident"]
    root, m = _ijb(tmp_path / "req", probe=False, optional=False)
    with pytest.raises(DataError, match=r"^meta/ijbc_1N_probe_mixed\.csv: file not found"):
        read_dataset(m, root)


@pytest.mark.parametrize(
    "which, text, message",
    [
        ("g1", HEAD + "1,7,a.jpg,a\n9,7,b.jpg,a\n", r"^meta/ijbc_1N_gallery_G1\.csv:3: template 9 has no image"),
        ("g1", HEAD + "1,7,a.jpg,a\n\n1,6,b.jpg,a\n", r"^meta/ijbc_1N_gallery_G1\.csv:4: template 1 has SUBJECT_ID 6"),
        ("g2", HEAD + "2,x,a.jpg,a\n", r"^meta/ijbc_1N_gallery_G2\.csv:2: SUBJECT_ID 'x' is not an integer"),
        ("g2", "TEMPLATE_ID,FILENAME\n2,a.jpg\n", r"^meta/ijbc_1N_gallery_G2\.csv:1: header lacks column SUBJECT_ID"),
        (
            "probe",
            HEAD + "3,7,a.jpg,a\n1,7,b.jpg,a\n",
            r"^meta/ijbc_1N_probe_mixed\.csv:3: template 1 is in set 'probe' and already in 'G1'",
        ),
    ],
)
def test_bad_csvs_name_file_and_line(tmp_path, which, text, message):
    root, m = _ijb(tmp_path, **{which: text})
    with pytest.raises(DataError, match=message):
        read_dataset(m, root)


def test_nist_layout_and_subject_check(tmp_path):
    root = tmp_path / "nist"
    raw = nist_raw(root)
    test4 = root / "protocols" / "test4"
    test4.mkdir(parents=True)
    # NIST's header and face-box columns, as public IJB-C tooling reads protocols/test4/*.csv
    nist_head = "TEMPLATE_ID,SUBJECT_ID,FILENAME,FACE_X,FACE_Y,FACE_WIDTH,FACE_HEIGHT\n"
    (test4 / "gallery_G1.csv").write_text(nist_head + "1,100,img/5.jpg,10,12,80,96\n1,100,frames/7_1.png,3,4,50,60\n")
    (test4 / "gallery_G2.csv").write_text(nist_head + "2,200,img/6.jpg,0,0,112,112\n")
    (test4 / "probes.csv").write_text(nist_head + "11,100,frames/7_2.png,5,5,40,48\n12,300,img/8.jpg,1,2,30,33\n")
    raw["identification"] = yaml.safe_load(open(load_manifest("ijbc-nist").source))["identification"]
    t = read_dataset(manifest(tmp_path, raw), root)
    idp = t.identification["identification_1N"]
    assert idp.galleries["G1"].subject.tolist() == [100] and idp.probe.template.tolist() == [11, 12]
    (test4 / "probes.csv").write_text(HEAD + "11,100,frames/7_2.png,a\n12,301,img/8.jpg,c\n")
    with pytest.raises(DataError, match=r"^protocols/test4/probes\.csv:3: template 12 has SUBJECT_ID 301, but its"):
        read_dataset(manifest(tmp_path, raw), root)


@pytest.mark.parametrize(
    "ident, message",
    [
        ("x", "key 'identification' must be a mapping"),
        ({"i": {"galleries": {"G1": "a.csv"}}}, "missing key 'identification.i.probes'"),
        ({"i": {"galleries": {}, "probes": "p.csv"}}, "'identification.i.galleries' names no gallery"),
        ({"i": {"galleries": {"probe": "a.csv"}, "probes": "p.csv"}}, "bad gallery name 'probe'"),
        ({"i": {"galleries": {"G1": "../a.csv"}, "probes": "p.csv"}}, "identification.i.galleries.G1"),
        ({"i": {"galleries": {"G1": "a.csv"}, "probes": "p.csv", "gallery": 1}}, "unknown key 'identification.i"),
    ],
)
def test_manifest_errors(ident, message):
    raw = {"name": "x", "layout": "insightface_ijb", "aligned": False, "identification": ident}
    raw["files"] = {"images": "i", "face_tid_mid": "a", "name_5pts_score": "b"}
    with pytest.raises(DataError, match=message):
        manifest_from_dict(raw, source="x.yaml")
    raw["layout"], raw["files"] = "folder", {}
    if isinstance(ident, dict):
        with pytest.raises(DataError, match="layout folder has no template ids"):
            manifest_from_dict(raw, source="x.yaml")


def test_builtin_manifests_name_the_official_files():
    ijbc, ijbb = load_manifest("ijbc").identification, load_manifest("ijbb").identification
    assert ijbc["identification_1N"].galleries == {
        "G1": "meta/ijbc_1N_gallery_G1.csv",
        "G2": "meta/ijbc_1N_gallery_G2.csv",
    }
    assert ijbc["identification_1N"].probes == "meta/ijbc_1N_probe_mixed.csv"
    assert list(ijbb["identification_1N"].galleries.values()) == [
        "meta/ijbb_1N_gallery_S1.csv",
        "meta/ijbb_1N_gallery_S2.csv",
    ]
    assert ijbb["identification_1N"].probes == "meta/ijbb_1N_probe_mixed.csv"
    assert all(s["identification_1N"].optional for s in (ijbc, ijbb))
