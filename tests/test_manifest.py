"""Manifests (loading, validation, digest, data-root resolution) and path-escape refusals."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from facedata.errors import DataError
from facedata.manifest import (
    env_var_for,
    list_manifests,
    load_manifest,
    manifest_digest,
    manifest_from_dict,
    resolve_data_root,
)
from facedata.paths import check_relative_names, resolve_under

BASE = {
    "name": "x",
    "layout": "lfw",
    "aligned": True,
    "files": {"images": "img"},
    "protocols": {"p": {"pairs": "pairs.txt"}},
}


def write_yaml(tmp_path: Path, raw: dict) -> Path:
    p = tmp_path / "x.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def test_builtin_manifests_load_and_have_known_counts():
    names = list_manifests()
    for required in ("ijbc", "ijbb", "lfw", "ms1mv2", "synthetic", "folder", "ijbc-nist", "table"):
        assert required in names
    for n in names:
        m = load_manifest(n)
        assert m.name == n and m.source.endswith(f"{n}.yaml")
    ijbc = load_manifest("ijbc")
    assert ijbc.expected == {"images": 469375, "templates": 23124, "pairs": 15658489, "genuine": 19557}
    assert ijbc.aligned is False and load_manifest("lfw").aligned is True
    assert ijbc.protocols["verification_11"].level == "template"
    assert load_manifest("ijbb").expected["pairs"] == 8010270


def test_load_by_path_and_digest_is_canonical(tmp_path):
    p = write_yaml(tmp_path, BASE)
    m = load_manifest(p)
    assert m.files == {"images": "img"} and m.protocols["p"].level == "image"
    # same content, different key order and formatting -> same digest; changed content -> different
    p2 = tmp_path / "y.yaml"
    p2.write_text("protocols: {p: {pairs: pairs.txt}}\nfiles: {images: img}\naligned: true\nlayout: lfw\nname: x\n")
    assert manifest_digest(load_manifest(p2)) == manifest_digest(m)
    assert manifest_digest(manifest_from_dict({**BASE, "aligned": False})) != manifest_digest(m)
    assert len(manifest_digest(m)) == 64


@pytest.mark.parametrize(
    "change, message",
    [
        ({"layout": "zip"}, "key 'layout': unknown layout 'zip'"),
        ({"files": {}}, "missing key 'files.images'"),
        ({"aligned": "yes"}, "key 'aligned' must be a bool"),
        ({"protocols": {"p": {"level": "image"}}}, "missing key 'protocols.p.pairs'"),
        ({"protocols": {"p": {"pairs": "a", "level": "media"}}}, "'protocols.p.level' must be 'template' or 'image'"),
        ({"expected": {"images": -1}}, "'expected.images' must be a non-negative integer"),
        ({"expected": {"faces": 3}}, "unknown key 'expected.faces'"),
        ({"files": {"images": "../elsewhere"}}, "key 'files.images': path '../elsewhere': escapes the data root"),
        ({"files": {"images": "/abs"}}, "absolute paths are not allowed"),
        ({"colour": 1}, "unknown key 'colour'"),
    ],
)
def test_bad_manifest_names_file_and_key(tmp_path, change, message):
    p = write_yaml(tmp_path, {**BASE, **change})
    with pytest.raises(DataError) as err:
        load_manifest(p)
    assert str(err.value).startswith(str(p) + ": ")
    assert message in str(err.value)


def test_missing_key_and_missing_manifest(tmp_path):
    raw = dict(BASE)
    del raw["layout"]
    p = write_yaml(tmp_path, raw)
    with pytest.raises(DataError, match=r"x\.yaml: missing key 'layout'"):
        load_manifest(p)
    with pytest.raises(DataError, match="no manifest named 'nope'.*ijbc"):
        load_manifest("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(DataError, match=r"bad\.yaml:\d+: invalid YAML"):
        load_manifest(bad)


def test_resolve_data_root_order(tmp_path, monkeypatch):
    m = manifest_from_dict({**BASE, "name": "ijbc-nist", "root_dir": "IJBC"})
    shared, own, given = tmp_path / "shared", tmp_path / "own", tmp_path / "given"
    for d in (shared / "IJBC", own, given):
        d.mkdir(parents=True)
    monkeypatch.delenv("SCALEFACE_DATA_ROOT", raising=False)
    monkeypatch.delenv("SCALEFACE_DATA_ROOT_IJBC_NIST", raising=False)
    with pytest.raises(DataError, match="no data root for dataset 'ijbc-nist'.*SCALEFACE_DATA_ROOT_IJBC_NIST"):
        resolve_data_root(m, None)
    monkeypatch.setenv("SCALEFACE_DATA_ROOT", str(shared))
    assert resolve_data_root(m, None) == shared / "IJBC"
    monkeypatch.setenv(env_var_for("ijbc-nist"), str(own))
    assert resolve_data_root(m, None) == own
    assert resolve_data_root(m, str(given)) == given
    with pytest.raises(DataError, match="from --data-root.*not a directory"):
        resolve_data_root(m, str(tmp_path / "absent"))


def test_resolve_under_refuses_escapes(tmp_path):
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    assert resolve_under(root, "a/./b.jpg") == root / "a/./b.jpg"
    assert resolve_under(root, "a/../b.jpg") == root / "a/../b.jpg"  # stays inside
    for rel in ("../x.jpg", "a/../../x.jpg", "/etc/passwd", "C:\\x"):
        with pytest.raises(DataError, match="ijbc.yaml: files.images") as err:
            resolve_under(root, rel, source="ijbc.yaml: files.images")
        assert repr(rel) in str(err.value)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, root / "link")
    with pytest.raises(DataError, match="'link/x.jpg'.*outside the data root"):
        resolve_under(root, "link/x.jpg", source="list.csv")


def test_check_relative_names_reports_line():
    check_relative_names(["a/b.jpg", "c.jpg"], "list.txt")
    with pytest.raises(DataError, match=r"^list\.txt:3: image path '\.\./x\.jpg': escapes the data root"):
        check_relative_names(["a.jpg", "b.jpg", "../x.jpg"], "list.txt")
    with pytest.raises(DataError, match=r"^list\.csv:3: image path '/x\.jpg': absolute"):
        check_relative_names(["a.jpg", "/x.jpg"], "list.csv", first_line=2)


def test_builtin_name_is_not_shadowed_by_a_folder_or_file(tmp_path, monkeypatch):
    """`--dataset lfw` in a folder holding `lfw/` (or a file `lfw`) still means the built-in manifest."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lfw").mkdir()
    (tmp_path / "ijbc").write_text("not a manifest")
    assert load_manifest("lfw").source.endswith("data_manifests/lfw.yaml")
    assert load_manifest("ijbc").name == "ijbc"
    with pytest.raises(DataError, match="no manifest named 'nope'.*ijbc"):
        load_manifest("nope")


def test_manifest_paths_by_suffix_or_separator(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.YML").write_text(yaml.safe_dump(BASE))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "noext").write_text(yaml.safe_dump(BASE))
    assert load_manifest("mine.YML").name == "x"  # suffix: a path relative to the current folder
    assert load_manifest("sub/noext").name == "x"  # a separator: a path
    assert load_manifest("./sub/noext").name == "x"
    with pytest.raises(DataError, match=r"^lfw\.yaml: manifest file not found$"):
        load_manifest("lfw.yaml")  # a path, not the built-in: it does not exist here
    with pytest.raises(DataError, match=r"^sub/lfw: manifest file not found$"):
        load_manifest("sub/lfw")
    with pytest.raises(DataError, match=r"^sub: manifest path is not a file$"):
        load_manifest(Path("sub"))
