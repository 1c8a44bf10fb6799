"""The extraction runner: shared backbones run once per batch, outputs equal a direct forward,
failed images are recorded, an interrupted run resumes to the same store, bad models stop early."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from ijb_fixture import write_ijb

from extract.checkpoints import random_model, save_checkpoint
from extract.cli import cli
from extract.data import decode_and_align
from extract.models import load_model_config
from extract.preprocess import preprocess_batch
from extract.runner import RunModel, run_extraction
from facedata.manifest import load_manifest
from facedata.readers import read_dataset
from featurestore.schema import STATUS_ALIGN_FAILED, STATUS_MISSING, STATUS_OK, STATUS_UNREADABLE
from featurestore.store import FeatureStore, create_store

pytestmark = pytest.mark.torch


def r18(name: str):
    return dataclasses.replace(load_model_config(name), arch="iresnet18", name=name.replace("r50", "r18"))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = write_ijb(tmp_path_factory.mktemp("ijb"), n=10, corrupt=(3,), missing=(5,), bad_landmarks=(7,))
    return root, read_dataset(load_manifest("ijbc"), root)


@pytest.fixture(scope="module")
def models():
    """ScaleFace, PFE and emb-norm on one random backbone (same seed, same preprocessing), MagFace apart."""
    run = [
        RunModel(c.name, random_model(c, seed=3)) for c in (r18("scaleface_r50"), r18("pfe_r50"), r18("embnorm_r50"))
    ]
    run.append(RunModel("magface", random_model(r18("magface_r50"), seed=4), flip=True))
    specs = [m.model.config.model_spec(name=m.name, random_init=True, flip=m.flip) for m in run]
    return run, specs


def assert_rows_close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    """Equal up to float rounding of a different batch composition: 1e-5 of each row's scale."""
    got, want = got.reshape(len(got), -1), want.reshape(len(want), -1)
    scale = np.abs(want).max(axis=1, keepdims=True) + 1e-12
    assert (np.abs(got - want) / scale).max() < 1e-5, what


def extract(path, dataset, models, **kw):
    root, tables = dataset
    run, specs = models
    store = create_store(path, tables, specs, chunk_rows=4, exist_ok=True)
    kw = {"device": "cpu", "batch_size": 3, "workers": 0, "progress": False, **kw}
    return store, run_extraction(store, str(root), run, **kw)


def test_outputs_statuses_and_shared_backbone(tmp_path, dataset, models):
    calls = {}
    run, _ = models
    hooks = [
        m.model.backbone.register_forward_hook(
            lambda mod, i, o, k=id(m.model.backbone): calls.__setitem__(k, calls.get(k, 0) + 1)
        )
        for m in run
    ]
    try:
        store, summary = extract(tmp_path / "s.zarr", dataset, models)
    finally:
        for h in hooks:
            h.remove()
    # batches of 3 within chunks of 4 rows (10 rows): 2 + 2 + 1 = 5 batches
    shared = id(run[0].model.backbone)
    assert calls[shared] == 5, "ScaleFace, PFE and emb-norm must share one backbone forward per batch"
    assert calls[id(run[3].model.backbone)] == 10, "MagFace: its own backbone, plus the flip pass"
    assert summary.backbone_calls == 15
    status = store.status()
    assert status[3] == STATUS_UNREADABLE and status[5] == STATUS_MISSING and status[7] == STATUS_ALIGN_FAILED
    assert (np.delete(status, [3, 5, 7]) == STATUS_OK).all()
    assert summary.images_failed == 3 and summary.images_ok == 7
    assert {f[0] for f in summary.failures} == {3, 5, 7}

    root, tables = dataset
    crops = [decode_and_align(root, tables.images.path[r], tables.images.landmarks[r])[0] for r in range(10)]
    ok = np.flatnonzero(status == STATUS_OK)
    batch = torch.from_numpy(np.stack([crops[r] for r in ok]))
    for m in run:
        with torch.inference_mode():
            x = preprocess_batch(batch, m.model.preprocessing)
            want = m.model(x)
        for out, values in want.items():
            got = store.read(m.name, out)
            assert_rows_close(got[ok], values.numpy(), f"{m.name}/{out}")
            assert np.isnan(got[[3, 5, 7]]).all()
        if m.flip:
            with torch.inference_mode():
                flipped = m.model(preprocess_batch(batch, m.model.preprocessing, flip=True))["embedding"]
            assert_rows_close(store.read(m.name, "embedding_flip")[ok], flipped.numpy(), "embedding_flip")
    sf = store.read("scaleface_r18", "scale")[ok]
    assert np.isfinite(sf).all() and (sf > 0).all()
    assert (store.read("pfe_r18", "sigma_sq")[ok] > 0).all()


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_to_identical_store(tmp_path, dataset, models):
    full, _ = extract(tmp_path / "full.zarr", dataset, models)

    def stop_after_first(chunk):
        raise Interrupt(chunk)

    with pytest.raises(Interrupt):
        extract(tmp_path / "resumed.zarr", dataset, models, on_chunk=stop_after_first)
    partial = FeatureStore.open(tmp_path / "resumed.zarr")
    assert partial.chunk_done().tolist() == [True, False, False]
    store, summary = extract(tmp_path / "resumed.zarr", dataset, models)
    assert summary.chunks_skipped == 1 and summary.chunks_written == 2
    np.testing.assert_array_equal(store.status(), full.status())
    for name, spec in full.models.items():
        for out in spec.outputs:
            np.testing.assert_array_equal(store.read(name, out), full.read(name, out), err_msg=f"{name}/{out}")


def test_cli_end_to_end_and_bad_checkpoint_stops_before_work(tmp_path, dataset):
    root, _ = dataset
    cfg = r18("scaleface_r50")
    ckpt = tmp_path / "sf.pt"
    save_checkpoint(random_model(cfg, seed=1), ckpt, "sectioned")
    runner = CliRunner()
    out = tmp_path / "cli.h5"
    args = [
        "--dataset",
        "ijbc",
        "--data-root",
        str(root),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--workers",
        "0",
        "--quiet",
        "--chunk-rows",
        "4",
    ]
    res = runner.invoke(cli, [*args, "--checkpoint", str(ckpt)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    with FeatureStore.open(out) as s:
        spec = s.model("scaleface_r18")
        assert spec.family == "scaleface" and len(spec.checkpoint_sha256) == 64
        assert s.chunk_done().all()
    res = runner.invoke(cli, [*args])
    assert res.exit_code != 0 and "no model given" in res.output

    bad = tmp_path / "bad.pt"
    model = random_model(cfg, seed=1)
    sd = model.backbone.state_dict()
    sd.pop("fc.weight")
    torch.save({"backbone": sd, "scale_predictor": model.head.state_dict()}, bad)
    fresh = tmp_path / "never.zarr"
    res = runner.invoke(cli, [*args[:4], "--out", str(fresh), "--checkpoint", str(bad)])
    assert res.exit_code != 0
    assert "missing keys 1: fc.weight" in str(res.exception), res.output
    assert "sequence" not in str(res.exception)
    assert not fresh.exists(), "a bad checkpoint must stop the run before the store is made"


def test_precision_option_takes_effect():
    """--precision bf16 must reach the network (a config's own fp16=False must not switch it off)."""
    from extract.runner import BatchRunner

    run = [RunModel("a", random_model(r18("arcface_r50"), seed=5))]
    crops = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (2, 112, 112, 3), dtype=np.uint8))
    fp32 = BatchRunner(run, torch.device("cpu"), "fp32")(crops)["a"]["embedding"]
    bf16 = BatchRunner(run, torch.device("cpu"), "bf16")(crops)["a"]["embedding"]
    assert not np.array_equal(fp32, bf16)
    cos = (fp32 * bf16).sum(1) / np.linalg.norm(fp32, axis=1) / np.linalg.norm(bf16, axis=1)
    assert cos.min() > 0.99
