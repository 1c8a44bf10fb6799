"""Folder-tree and CSV/Parquet list readers, and `check_dataset` counts, missing files and mismatches."""

from __future__ import annotations

import pandas as pd
import pytest
from facedata_fixtures import manifest, write_ijb, write_image

from facedata.check import check_dataset
from facedata.errors import DataError
from facedata.readers import read_dataset


def folder_tree(root):
    for who, names in {"bob": ["2.png", "1.jpg"], "alice": ["a.jpg"], ".hidden": ["x.jpg"]}.items():
        for k, n in enumerate(names):
            write_image(root / "faces" / who / n, 10 * k)
    (root / "faces" / "alice" / "notes.txt").write_text("not an image")
    return {
        "name": "mine",
        "layout": "folder",
        "aligned": True,
        "files": {"images": "faces"},
        "protocols": {"p": {"pairs": "pairs.csv"}},
    }


def test_folder_tree_and_pairs(tmp_path):
    raw = folder_tree(tmp_path)
    (tmp_path / "pairs.csv").write_text("faces/bob/1.jpg,faces/bob/2.png,1\nfaces/alice/a.jpg, faces/bob/2.png,0\n")
    t = read_dataset(manifest(tmp_path, raw), tmp_path)
    assert list(t.images.path) == ["faces/alice/a.jpg", "faces/bob/1.jpg", "faces/bob/2.png"]
    assert t.images.subject.tolist() == [0, 1, 1] and t.extra["subject_names"] == ["alice", "bob"]
    p = t.protocols["p"]
    assert p.level == "image" and p.pairs.tolist() == [[1, 2], [0, 2]] and p.label.tolist() == [True, False]


@pytest.mark.parametrize(
    "content, message",
    [
        (
            "faces/bob/1.jpg,faces/bob/2.png,1\nfaces/bob/9.jpg,faces/bob/2.png,0\n",
            r"^pairs\.csv:2: unknown image path 'faces/bob/9\.jpg'",
        ),
        (
            "faces/bob/1.jpg,faces/bob/2.png,1\nfaces/bob/1.jpg,faces/bob/2.png\n",
            r"^pairs\.csv:2: expected 3 fields, got 2",
        ),
        ("faces/bob/1.jpg,faces/bob/2.png,yes\n", r"^pairs\.csv:1: field 3: 'yes' is not an integer"),
        ("faces/bob/1.jpg,../faces/bob/2.png,1\n", r"^pairs\.csv:1: image path '\.\./faces/bob/2\.png'"),
    ],
)
def test_folder_pairs_errors(tmp_path, content, message):
    raw = folder_tree(tmp_path)
    (tmp_path / "pairs.csv").write_text(content)
    with pytest.raises(DataError, match=message):
        read_dataset(manifest(tmp_path, raw), tmp_path)


def test_folder_missing_dir(tmp_path):
    raw = {"name": "mine", "layout": "folder", "aligned": True, "files": {"images": "nowhere"}}
    with pytest.raises(DataError, match=r"^nowhere: image folder not found"):
        read_dataset(manifest(tmp_path, raw), tmp_path)


def table_raw(list_name="list.csv", pairs="pairs.csv", level="image"):
    return {
        "name": "tbl",
        "layout": "table",
        "aligned": True,
        "files": {"list": list_name},
        "protocols": {"p": {"pairs": pairs, "level": level}},
    }


def test_table_csv_with_names_and_image_pairs(tmp_path):
    (tmp_path / "list.csv").write_text("path,subject\na/1.jpg,zed\na/2.jpg,zed\nb/1.jpg,amy\n")
    (tmp_path / "pairs.csv").write_text("left,right,label\na/1.jpg,a/2.jpg,1\nb/1.jpg,a/1.jpg,0\n")
    t = read_dataset(manifest(tmp_path, table_raw()), tmp_path)
    assert list(t.images.path) == ["a/1.jpg", "a/2.jpg", "b/1.jpg"]
    assert t.images.subject.tolist() == [1, 1, 0] and t.extra["subject_names"] == ["amy", "zed"]
    assert t.protocols["p"].pairs.tolist() == [[0, 1], [2, 0]] and t.protocols["p"].label.tolist() == [True, False]


def test_table_parquet_with_templates(tmp_path):
    pd.DataFrame(
        {"path": ["x.jpg", "y.jpg", "z.jpg"], "subject": [3, 3, 4], "template": [7, 8, 9], "media": [1, 2, 3]}
    ).to_parquet(tmp_path / "list.parquet")
    pd.DataFrame({"left": [7, 7], "right": [8, 9], "label": [1, 0]}).to_parquet(tmp_path / "pairs.parquet")
    t = read_dataset(manifest(tmp_path, table_raw("list.parquet", "pairs.parquet", "template")), tmp_path)
    assert t.images.subject.tolist() == [3, 3, 4] and t.images.template.tolist() == [7, 8, 9]
    assert t.images.media.tolist() == [1, 2, 3]
    assert t.protocols["p"].level == "template" and t.protocols["p"].pairs.tolist() == [[7, 8], [7, 9]]


@pytest.mark.parametrize(
    "listing, pairs, message",
    [
        ("path,who\na.jpg,1\n", "left,right,label\n", r"^list\.csv:1: missing column 'subject'"),
        ("path,subject\na.jpg,1\n/b.jpg,2\n", "left,right,label\n", r"^list\.csv:3: image path '/b\.jpg': absolute"),
        ("path,subject\na.jpg,1\na.jpg,2\n", "left,right,label\n", r"^list\.csv:3: path 'a\.jpg' listed twice"),
        ("path,subject,template\na.jpg,1,x\n", "left,right,label\n", r"^list\.csv:2: template 'x' is not an integer"),
        (
            "path,subject\na.jpg,1\nb.jpg,1\n",
            "left,right,label\na.jpg,b.jpg,1\na.jpg,c.jpg,0\n",
            r"^pairs\.csv:3: unknown image path 'c\.jpg'",
        ),
        (
            "path,subject\na.jpg,1\nb.jpg,1\n",
            "left,right,label\na.jpg,b.jpg,3\n",
            r"^pairs\.csv:2: label must be 0 or 1, got 3",
        ),
    ],
)
def test_table_errors(tmp_path, listing, pairs, message):
    (tmp_path / "list.csv").write_text(listing)
    (tmp_path / "pairs.csv").write_text(pairs)
    with pytest.raises(DataError, match=message):
        read_dataset(manifest(tmp_path, table_raw()), tmp_path)


def test_check_report_counts_missing_and_expected(tmp_path):
    root = tmp_path / "IJBC"
    raw = write_ijb(root)
    (root / "loose_crop" / "3.jpg").unlink()
    (root / "loose_crop" / "4.jpg").unlink()
    raw["expected"] = {"images": 4, "templates": 12, "pairs": 2, "genuine": 1}
    raw["expected_source"] = "IJB-C official"
    report = check_dataset(manifest(tmp_path, raw), root, max_list=1)
    assert report.counts == {"images": 4, "subjects": 0, "templates": 3, "pairs": 2, "genuine": 1}
    assert report.n_missing == 2 and report.missing == ["loose_crop/3.jpg"]
    assert report.mismatches == ["templates: found 3, IJB-C official 12"]
    assert not report.ok
    text = report.format()
    assert "PROBLEMS FOUND" in text and "missing image files: 2 in total, first 1:" in text
    assert "mismatch: templates: found 3, IJB-C official 12" in text and "protocol v11: 2 pairs, 1 genuine" in text


def test_check_report_ok_and_malformed(tmp_path):
    root = tmp_path / "IJBC"
    raw = write_ijb(root)
    raw["expected"] = {"images": 4, "templates": 3, "pairs": 2, "genuine": 1}
    report = check_dataset(manifest(tmp_path, raw), root)
    assert report.ok and report.n_missing == 0 and "OK" in report.format()
    (root / "meta" / "ijbc_template_pair_label.txt").write_text("1 2 1\n1 3 0 9\n")
    report = check_dataset(manifest(tmp_path, raw), root)
    assert not report.ok
    assert report.errors == ["meta/ijbc_template_pair_label.txt:2: expected 3 fields, got 4"]
