"""Identification (1:N) protocols in the store (schema 2): round trip, integrity, head(), and schema-1 stores
(recorded by the schema-1 code in tests/data/schema1) still read."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import chunk_outputs, make_models, make_tables

from featurestore.describe import describe
from featurestore.errors import StoreError
from featurestore.integrity import verify
from featurestore.schema import SCHEMA_VERSION, STATUS_OK, Identification, TemplateSet
from featurestore.store import FeatureStore, create_store

FORMATS = [".zarr", ".h5"]
SCHEMA1 = Path(__file__).resolve().parent / "data" / "schema1"


def _tables():
    t = make_tables()  # templates 0..4, subjects 0..3
    t.identification = {
        "ident": Identification(
            "ident",
            {"G1": TemplateSet([0, 2], [0, 1]), "G2": TemplateSet([4], [3])},
            TemplateSet([1, 3], [0, 2]),
            description="toy 1:N",
        )
    }
    return t


def _write(path, tables):
    store = create_store(path, tables, make_models(), chunk_rows=4)
    with store.writer() as w:
        for c in w.pending():
            a, b = store.chunk_rows_range(c)
            w.write_chunk(c, np.full(b - a, STATUS_OK), chunk_outputs(list(store.models.values()), a, b))
    store.close()


@pytest.mark.parametrize("suffix", FORMATS)
def test_round_trip_and_verify(tmp_path, suffix):
    path = tmp_path / f"toy{suffix}"
    _write(path, _tables())
    with FeatureStore.open(path) as s:
        assert s.attrs["schema"] == SCHEMA_VERSION == 2
        assert s.identification_info["ident"] == {
            "galleries": ["G1", "G2"],
            "n_templates": {"G1": 2, "G2": 1, "probe": 2},
            "description": "toy 1:N",
        }
        idp = s.identification("ident")
        assert list(idp.galleries) == ["G1", "G2"]
        np.testing.assert_array_equal(idp.galleries["G1"].template, [0, 2])
        np.testing.assert_array_equal(idp.galleries["G1"].subject, [0, 1])
        np.testing.assert_array_equal(idp.galleries["G2"].template, [4])
        np.testing.assert_array_equal(idp.probe.template, [1, 3])
        np.testing.assert_array_equal(idp.probe.subject, [0, 2])
        assert idp.description == "toy 1:N"
        assert verify(s) == []
        text = describe(s)
        assert "ident" in text and "galleries G1 2, G2 1; probes 2 templates" in text
        with pytest.raises(StoreError, match="no identification protocol 'nope'; it has: ident"):
            s.identification("nope")


def test_damaged_identification_chunk_is_found(tmp_path):
    path = tmp_path / "toy.zarr"
    _write(path, _tables())
    obj = path / "identification/ident/G1/template/c/0"
    obj.write_bytes(b"\x00" + obj.read_bytes()[1:])
    with FeatureStore.open(path, check=False) as s:
        keys = [d.key for d in verify(s)]
        assert keys == ["identification/ident/G1/template"]
        assert all(d.creation for d in verify(s))
    obj.unlink()
    with pytest.raises(StoreError, match="identification/ident/G1/template chunk 0 .*missing storage object"):
        FeatureStore.open(path)


def test_malformed_identification_attribute_is_named(tmp_path):
    path = tmp_path / "toy.zarr"
    _write(path, _tables())
    meta = path / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"]["identification"]["ident"]["n_templates"]["G1"] = 5
    meta.write_text(json.dumps(doc))
    with pytest.raises(StoreError, match=r"'identification.ident.n_templates.G1' is 5, .*G1/template has 2 rows"):
        FeatureStore.open(path)
    doc["attributes"]["identification"]["ident"] = {"galleries": "G1"}
    meta.write_text(json.dumps(doc))
    with pytest.raises(StoreError, match="root attribute 'identification.ident' is malformed"):
        FeatureStore.open(path)


def test_head_cuts_identification_sets():
    t = _tables().head(4)  # images 0..3: templates 0, 1
    idp = t.identification["ident"]
    np.testing.assert_array_equal(idp.galleries["G1"].template, [0])
    assert len(idp.galleries["G2"]) == 0
    np.testing.assert_array_equal(idp.probe.template, [1])


def test_bad_sets_are_refused():
    with pytest.raises(ValueError, match="no gallery"):
        Identification("x", {}, TemplateSet([1], [1]))
    with pytest.raises(ValueError, match="may not be called 'probe'"):
        Identification("x", {"probe": TemplateSet([1], [1])}, TemplateSet([2], [1]))
    with pytest.raises(ValueError, match="lists a template twice"):
        Identification("x", {"G1": TemplateSet([1, 1], [1, 1])}, TemplateSet([2], [1]))


@pytest.mark.parametrize("suffix", FORMATS)
def test_schema1_store_still_reads(tmp_path, suffix):
    if suffix == ".zarr":
        with tarfile.open(SCHEMA1 / "tiny.zarr.tar.gz") as tar:
            tar.extractall(tmp_path, filter="data")
    else:
        shutil.copy(SCHEMA1 / "tiny.h5", tmp_path / "tiny.h5")
    path = tmp_path / f"tiny{suffix}"
    with FeatureStore.open(path) as s:
        assert s.attrs["schema"] == 1 and "identification" not in s.attrs
        assert s.identification_info == {}
        assert s.chunk_done().all() and s.n_images == 10
        p = s.protocol("verification_11")
        np.testing.assert_array_equal(p.pairs, [[1, 2], [1, 3], [2, 4], [3, 5]])
        assert s.read("m", "embedding").shape == (10, 4)
        assert verify(s) == []
        assert "schema 1" in describe(s)
        with pytest.raises(StoreError, match="no identification protocol 'x'; it has: none"):
            s.identification("x")
