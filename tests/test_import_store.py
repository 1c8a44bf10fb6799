"""`datasets import`: features and quality scores the user has, matched by path into a verified store."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest
import zarr

from facedata.errors import DataError
from facedata.importing import import_store, parse_quality
from facedata.manifest import load_manifest
from facedata.readers import read_dataset
from featurestore.errors import StoreError
from featurestore.integrity import verify
from featurestore.schema import STATUS_MISSING, STATUS_OK, ModelSpec
from featurestore.store import FeatureStore
from tests.import_fixture import write_table_dataset
from tests.test_datasets_cli import datasets


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return write_table_dataset(tmp_path_factory.mktemp("byo"))


def tables_of(ds):
    return read_dataset(load_manifest(str(ds["manifest"])), ds["root"])


def test_parse_quality():
    q = parse_quality("ofiq=C:/x/ofiq.csv#UQS:confidence")
    assert (q.name, q.file, q.kind) == ("ofiq", "C:/x/ofiq.csv#UQS", "confidence")
    for bad in (
        "ofiq",
        "=f.csv:confidence",
        "ofiq=f.csv",
        "ofiq=f.csv:quality",
        "scale=f.csv:confidence",
        "a/b=f:uncertainty",
    ):
        with pytest.raises(ValueError):
            parse_quality(bad)


def test_import_matches_by_path_in_any_order_and_reports_both_ways(ds, tmp_path):
    paths, emb, scale = ds["paths"], ds["embedding"], ds["scale"]
    n = len(paths)
    rng = np.random.default_rng(1)
    perm = rng.permutation(n)
    keep = perm[3:]  # three dataset images have no features
    np.savez(
        tmp_path / "emb.npz",
        paths=np.r_[paths[keep], ["extra/a.jpg", "extra/b.jpg"]],
        embeddings=np.r_[emb[keep], np.ones((2, emb.shape[1]), np.float32)],
    )
    pd.DataFrame({"path": ["./" + p for p in paths[perm[::-1]]], "sf": scale[perm[::-1]]}).to_parquet(
        tmp_path / "q.parquet"
    )
    unc = 1.0 / scale
    pd.DataFrame({"path": paths[1:], "u": unc[1:]}).to_csv(tmp_path / "u.csv", index=False)
    rep = import_store(
        tables_of(ds),
        tmp_path / "byo.zarr",
        str(tmp_path / "emb.npz"),
        qualities=[
            parse_quality(f"sf={tmp_path}/q.parquet:confidence"),
            parse_quality(f"ser={tmp_path}/u.csv#u:uncertainty"),
        ],
        chunk_rows=16,
    )
    text = rep.format()
    assert f"{n - 3:,} of {n:,} dataset images matched" in text
    assert '3 dataset images have no row in it (status "missing")' in text
    assert "2 of its 89 rows match no dataset image (ignored): extra/a.jpg, extra/b.jpg" in text
    assert "1 dataset images have no row in it (NaN: analyze leaves them out): img/0.jpg" in text
    assert "verify: " in text and "intact" in text
    assert rep.models == ["sf", "ser"] and (rep.n_ok, rep.n_missing) == (n - 3, 3)
    with FeatureStore.open(tmp_path / "byo.zarr") as st:
        assert verify(st) == []
        assert st.models["sf"].family == "external" and st.models["sf"].external_quality() == {"sf": "confidence"}
        assert st.models["ser"].outputs == ("embedding", "norm", "ser")
        status = st.status()
        assert (status[perm[:3]] == STATUS_MISSING).all() and (status[keep] == STATUS_OK).all()
        got = st.read("sf", "embedding")
        np.testing.assert_array_equal(got[keep], emb[keep])
        assert np.isnan(got[perm[:3]]).all()
        np.testing.assert_allclose(st.read("sf", "norm")[keep], np.linalg.norm(emb[keep], axis=1), rtol=1e-6)
        np.testing.assert_array_equal(st.read("sf", "sf"), scale)
        ser = st.read("ser", "ser")
        assert np.isnan(ser[0]) and np.allclose(ser[1:], unc[1:].astype(np.float32))
        assert st.attrs["extra"]["imported"]["quality"]["ser"]["kind"] == "uncertainty"
    # the arrays themselves say it, for tools that do not know the project (zarr, xarray)
    group = zarr.open_group(str(tmp_path / "byo.zarr"), mode="r", use_consolidated=False)
    assert group["models/ser/ser"].attrs["kind"] == "uncertainty"
    assert group["models/sf/sf"].attrs["kind"] == "confidence"


def test_npy_needs_dataset_order_and_hdf5_paths(ds, tmp_path):
    paths, emb = ds["paths"], ds["embedding"]
    np.save(tmp_path / "emb.npy", emb)
    with pytest.raises(DataError, match=r"emb\.npy: has no paths to match rows by .*--order dataset"):
        import_store(tables_of(ds), tmp_path / "a.zarr", str(tmp_path / "emb.npy"))
    assert not (tmp_path / "a.zarr").exists()
    with h5py.File(tmp_path / "flip.h5", "w") as f:
        f["paths"] = np.asarray(paths, dtype="S")
        f["feats"] = emb[:, ::-1]
    rep = import_store(
        tables_of(ds),
        tmp_path / "a.h5",
        str(tmp_path / "emb.npy"),
        flipped=str(tmp_path / "flip.h5"),
        order="dataset",
        model="mine",
    )
    assert rep.models == ["mine"] and rep.n_missing == 0
    with FeatureStore.open(tmp_path / "a.h5") as st:
        assert st.models["mine"].outputs == ("embedding", "norm", "embedding_flip")
        np.testing.assert_array_equal(st.read("mine", "embedding_flip"), emb[:, ::-1])


def test_bad_inputs_are_one_line_errors_and_nothing_is_overwritten(ds, tmp_path):
    paths, emb = ds["paths"], ds["embedding"]
    np.savez(tmp_path / "dup.npz", paths=np.r_[paths, paths[:1]], embeddings=np.r_[emb, emb[:1]])
    with pytest.raises(DataError, match=r"dup\.npz: path 'img/0\.jpg' is given twice \(row 90\)"):
        import_store(tables_of(ds), tmp_path / "x.zarr", str(tmp_path / "dup.npz"))
    np.savez(tmp_path / "two.npz", paths=paths, a=emb, b=emb)
    with pytest.raises(DataError, match=r"cannot tell which of a, b holds the values; name it as FILE#NAME"):
        import_store(tables_of(ds), tmp_path / "x.zarr", str(tmp_path / "two.npz"))
    foreign = tmp_path / "foreign.zarr"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    np.savez(tmp_path / "ok.npz", paths=paths, embeddings=emb)
    with pytest.raises(StoreError, match="already exists; pass --overwrite"):
        import_store(tables_of(ds), foreign, str(tmp_path / "ok.npz"))
    with pytest.raises(StoreError, match="was not made by `datasets import`"):
        import_store(tables_of(ds), foreign, str(tmp_path / "ok.npz"), overwrite=True)
    with pytest.raises(StoreError, match="was not made by `datasets import`"):
        import_store(tables_of(ds), ds["builtin"], str(tmp_path / "ok.npz"), overwrite=True)
    assert (foreign / "keep.txt").read_text() == "mine"
    import_store(tables_of(ds), tmp_path / "y.zarr", str(tmp_path / "ok.npz"))
    import_store(tables_of(ds), tmp_path / "y.zarr", str(tmp_path / "ok.npz"), overwrite=True)  # ours: replaced


def test_external_spec_checks_its_quality_names():
    ModelSpec("m", "external", outputs=("embedding", "norm", "q"), config={"quality": {"q": "confidence"}})
    with pytest.raises(ValueError, match="unknown outputs"):
        ModelSpec("m", "external", outputs=("embedding", "q"))
    with pytest.raises(ValueError, match="must be one of"):
        ModelSpec("m", "external", outputs=("embedding", "q"), config={"quality": {"q": "score"}})
    with pytest.raises(ValueError, match="cannot name a quality output"):
        ModelSpec("m", "external", outputs=("embedding", "scale"), config={"quality": {"scale": "confidence"}})
    with pytest.raises(ValueError, match="unknown outputs"):  # only external models take user-named outputs
        ModelSpec("m", "scaleface", outputs=("embedding", "q"), config={"quality": {"q": "confidence"}})


def test_cli_import_and_option_errors(ds, tmp_path):
    paths, emb, scale = ds["paths"], ds["embedding"], ds["scale"]
    np.savez(tmp_path / "emb.npz", paths=paths, embeddings=emb)
    pd.DataFrame({"path": paths, "scale": scale}).to_csv(tmp_path / "s.csv", index=False)
    base = ["import", "--dataset", str(ds["manifest"]), "--data-root", str(ds["root"]), "--embeddings", "emb.npz"]
    r = datasets([*base, "--out", "o.zarr", "--quality", "s=s.csv:sometimes"], tmp_path)
    assert r.returncode == 2 and "--quality" in r.stderr and "'sometimes' must be one of" in r.stderr
    assert not (tmp_path / "o.zarr").exists()
    r = datasets([*base, "--out", "o.zarr", "--quality", "s=nope.csv:confidence"], tmp_path)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == "error: nope.csv: file not found"
    r = datasets([*base, "--out", "o.zarr", "--quality", "s=s.csv:confidence"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "models s (external, confidence s)" in r.stdout and "intact" in r.stdout


def test_ofiq_csv_crfiqa_txt_and_store_sources(ds, tmp_path):
    """A ';'-separated CSV with a Filename column of absolute paths under the data root (OFIQ's way), a
    headerless `path score` text file (CR-FIQA's), and a store's model output (`STORE#MODEL/OUTPUT`)."""
    paths, scale = ds["paths"], ds["scale"]
    root = ds["root"]
    pd.DataFrame({"Filename": [f"{root}/{p}" for p in paths], "UQS": scale * 10}).to_csv(
        tmp_path / "ofiq.csv", sep=";", index=False
    )
    pd.DataFrame({"p": paths[::-1], "s": scale[::-1] + 1}).to_csv(
        tmp_path / "cr.txt", sep=" ", header=False, index=False
    )
    builtin = f"{ds['builtin']}#scaleface"
    rep = import_store(
        tables_of(ds),
        tmp_path / "q.zarr",
        builtin,
        qualities=[
            parse_quality(f"ofiq={tmp_path}/ofiq.csv#UQS:confidence"),
            parse_quality(f"cr={tmp_path}/cr.txt:confidence"),
            parse_quality(f"sf={builtin}/scale:confidence"),
        ],
        data_root=root,
    )
    assert rep.n_missing == 0
    with FeatureStore.open(tmp_path / "q.zarr") as st:
        np.testing.assert_allclose(st.read("ofiq", "ofiq"), (scale * 10).astype(np.float32))
        np.testing.assert_allclose(st.read("cr", "cr"), (scale + 1).astype(np.float32))
        np.testing.assert_array_equal(st.read("sf", "sf"), scale)
        np.testing.assert_array_equal(st.read("sf", "embedding"), ds["embedding"])
    with pytest.raises(DataError, match=r"name the model output as STORE#MODEL/OUTPUT"):
        import_store(tables_of(ds), tmp_path / "r.zarr", str(ds["builtin"]))


def test_cli_dataset_from_a_store(ds, tmp_path):
    """`--dataset STORE`: the images and protocols of the store the features came from, no data root needed."""
    store = str(ds["builtin"])
    args = ["import", "--dataset", store, "--out", "o.zarr", "--embeddings", f"{store}#scaleface"]
    r = datasets([*args, "--quality", f"scaleface={store}#scaleface/scale:confidence"], tmp_path)
    assert r.returncode == 0, r.stderr
    with FeatureStore.open(tmp_path / "o.zarr") as st, FeatureStore.open(store) as ref:
        assert (
            set(st.protocols_info) == set(ref.protocols_info)
            and st.attrs["images_digest"] == ref.attrs["images_digest"]
        )
        np.testing.assert_array_equal(st.read("scaleface", "scaleface"), ref.read("scaleface", "scale"))


@pytest.mark.parametrize("form", ["csv-columns", "parquet-list", "txt"])
def test_embedding_table_forms(ds, tmp_path, form):
    paths, emb = ds["paths"], ds["embedding"]
    if form == "csv-columns":
        df = pd.DataFrame(emb, columns=[f"d{k}" for k in range(emb.shape[1])])
        df.insert(0, "path", paths)
        df.to_csv(tmp_path / "e.csv", index=False)
        name = "e.csv"
    elif form == "parquet-list":
        pd.DataFrame({"path": paths, "embedding": list(emb)}).to_parquet(tmp_path / "e.parquet")
        name = "e.parquet"
    else:
        df = pd.DataFrame(emb)
        df.insert(0, "p", paths)
        df.to_csv(tmp_path / "e.txt", sep=" ", header=False, index=False)
        name = "e.txt"
    import_store(tables_of(ds), tmp_path / "s.zarr", str(tmp_path / name))
    with FeatureStore.open(tmp_path / "s.zarr") as st:
        np.testing.assert_allclose(st.read("external", "embedding"), emb, rtol=1e-6)


def test_extract_refuses_the_external_family():
    from extract.models.config import ConfigError, model_config_from_dict

    with pytest.raises(
        ConfigError, match=r"family 'external' unknown; known: \('arcface', 'scaleface', 'pfe', 'magface'\)"
    ):
        model_config_from_dict({"family": "external", "backbone": {"arch": "iresnet18"}}, source="x.yaml")
