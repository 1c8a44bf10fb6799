"""train end to end on CPU: cached mode from a real `extract --bottleneck` store, resume, the centre check, the
streaming/cached equality, and the round trip (train, extract with the same config, stored scales = the head's)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from train.config import load_train_config

ROOT = Path(__file__).resolve().parents[1]
SF18 = """name: scaleface_r18
family: scaleface
backbone: {arch: iresnet18, embedding_dim: 512}
head: {kind: scale_predictor, num_feats: [25088, 512, 1], batch_norm: true, activation: sigm_mul, coefficient: 64.0}
preprocessing: {channel_order: RGB, mean: 127.5, std: 128.0}
"""
N_ROWS = 24


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _extract(out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", "from extract.cli import main; main()", "--dataset", "synthetic", "--preset", "tiny",
           "--device", "cpu", "--workers", "0", "--quiet", "--limit", str(N_ROWS), "--out", str(out), *extra]  # fmt: skip
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny synthetic store (24 rows) of a seeded random iResNet-18 ScaleFace model with its bottleneck."""
    d = tmp_path_factory.mktemp("train")
    cfg = d / "scaleface_r18.yaml"
    cfg.write_text(SF18)
    res = _extract(d / "s.zarr", "--random-init", "--config", str(cfg), "--bottleneck")
    assert res.returncode == 0, res.stderr
    assert "bottleneck (scaleface_r18): 24 rows written" in res.stderr
    return d / "s.zarr", cfg


def _opts(store_path: Path, out: Path, **kw):
    from train.run import TrainOptions

    cfg = load_train_config("scale_finetune").with_overrides(batch_size=4, milestones=(1,))
    cfg = replace(cfg, optimizer=replace(cfg.optimizer, lr=0.5))
    base = dict(config=cfg, out=out, cache=str(store_path), estimate_centres=True, device="cpu", progress=False)
    return TrainOptions(**(base | kw))


@pytest.mark.slow
def test_store_bottleneck_verifies_and_damage_is_found(store, tmp_path):
    from featurestore.bottleneck import read_bottleneck
    from featurestore.integrity import damaged_chunks, verify
    from featurestore.store import FeatureStore

    with FeatureStore.open(store[0]) as s:
        rows, values = read_bottleneck(s)
        assert rows.tolist() == list(range(N_ROWS)) and values.shape == (N_ROWS, 25088) and values.dtype == np.float16
        assert verify(s) == []
    damaged = tmp_path / "d.zarr"
    shutil.copytree(store[0], damaged)
    chunk_files = sorted(p for p in (damaged / "bottleneck").rglob("*") if p.is_file() and p.name != "zarr.json")
    assert chunk_files
    data = bytearray(chunk_files[0].read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk_files[0].write_bytes(bytes(data))
    with FeatureStore.open(damaged) as s:
        found = verify(s)
        assert [d.key for d in found] == ["bottleneck"]
        assert damaged_chunks(s, found) == []  # redone by `extract --bottleneck`, not by --repair


@pytest.mark.slow
def test_resume_gives_the_weights_of_an_uninterrupted_run(store, tmp_path):
    from train.run import train

    whole = train(_opts(store[0], tmp_path / "whole", steps=9))  # 6 steps per epoch: crosses epoch and milestone
    part = train(_opts(store[0], tmp_path / "part", steps=4))
    assert part.summary["steps"] == 4
    resumed = train(_opts(store[0], tmp_path / "part", steps=9, resume=True))
    assert resumed.summary["steps"] == 9
    a = torch.load(whole.checkpoint, weights_only=True)["scale_predictor"]
    b = torch.load(resumed.checkpoint, weights_only=True)["scale_predictor"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sa = torch.load(whole.state, weights_only=True)
    sb = torch.load(resumed.state, weights_only=True)
    assert sa["losses"] == sb["losses"] and len(sa["losses"]) == 9
    lines = (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
    assert [int(line.split('"step": ')[1].split(",")[0]) for line in lines] == list(range(1, 10))
    assert (tmp_path / "part" / "loss.png").stat().st_size > 0
    assert sa["scheduler"]["last_epoch"] == 1  # stepped once, at the end of epoch 0
    with pytest.raises(Exception, match="different run"):
        train(_opts(store[0], tmp_path / "part", steps=12, resume=True, seed=1))


@pytest.mark.slow
def test_centre_count_mismatch_is_one_error_line(store, tmp_path):
    from train.centres import save_shards

    save_shards(torch.randn(5, 512), tmp_path / "centres", ranks=2)
    cmd = [sys.executable, "-c", "from train.cli import main; main()", "scale-head", "--cache", str(store[0]),
           "--out", str(tmp_path / "o"), "--centres", str(tmp_path / "centres"), "--device", "cpu", "--quiet"]  # fmt: skip
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: centres") and "5 class rows" in lines[0]
    n_classes = int(lines[0].split("dataset has ")[1].split(" ")[0])
    assert n_classes >= 2 and "Traceback" not in res.stderr


@pytest.mark.slow
def test_cached_and_streaming_give_the_same_loss_on_the_same_batch(store):
    from extract.checkpoints import random_model
    from extract.models import build_head, load_model_config
    from extract.preprocess import preprocess_batch
    from train.centres import estimate_centres
    from train.data import cached_data, iterate_batches, streaming_data
    from train.run import TrainNet

    cached, _ = cached_data(store[0])
    streaming = streaming_data("synthetic", preset="tiny", limit=N_ROWS)
    assert np.array_equal(cached.rows, streaming.rows) and np.array_equal(cached.labels, streaming.labels)
    cfg = load_model_config(store[1])
    backbone = random_model(cfg, seed=0).backbone  # what extract --random-init --seed 0 ran
    torch.manual_seed(0)
    head = build_head(cfg).train()
    centres = estimate_centres(torch.from_numpy(cached.embedding), torch.from_numpy(cached.labels), cached.n_classes)
    net = TrainNet(load_train_config("scale_finetune"), cfg, backbone, head, centres).train()
    batch = [np.arange(3, 11)]
    idx, bott = next(iterate_batches(cached, batch))
    _, crops = next(iterate_batches(streaming, batch))
    labels = torch.from_numpy(cached.labels[idx.numpy()])
    with torch.no_grad():
        loss_cached = float(net(bott, labels, torch.from_numpy(cached.embedding[idx.numpy()])))
        loss_stream = float(net(preprocess_batch(crops, cfg.preprocessing), labels))
    assert np.isfinite(loss_cached) and loss_cached == pytest.approx(loss_stream, rel=2e-3)


@pytest.mark.slow
def test_round_trip_extract_stores_the_trained_heads_scales(store, tmp_path):
    from extract.checkpoints import load_model
    from extract.data import FaceCrops
    from extract.models import load_model_config
    from extract.preprocess import preprocess_batch
    from featurestore.store import FeatureStore
    from train.run import train

    result = train(_opts(store[0], tmp_path / "t", steps=3))
    ckpt = torch.load(result.checkpoint, weights_only=True)
    assert set(ckpt) == {"backbone", "scale_predictor"}
    assert set(ckpt["scale_predictor"]) == {"mlp.0.weight", "mlp.1.running_mean", "mlp.1.running_var",
                                            "mlp.1.num_batches_tracked", "mlp.3.weight"}  # fmt: skip
    res = _extract(tmp_path / "e.zarr", "--model", f"sf={result.checkpoint}:{store[1]}")
    assert res.returncode == 0, res.stderr
    model = load_model(result.checkpoint, load_model_config(store[1]))
    with FeatureStore.open(tmp_path / "e.zarr") as s:
        stored = s.read("sf", "scale")
        crops = FaceCrops(s.attrs["extra"]["data_root"], s.image_column("path"), s.image_column("landmarks"))
    x = np.stack([crops[i].crop for i in range(N_ROWS)])
    with torch.no_grad():
        want = model.head(model.backbone(preprocess_batch(x, model.preprocessing)).bottleneck).numpy()
    np.testing.assert_allclose(stored, want, rtol=1e-5)
    assert np.std(stored) > 0


@pytest.mark.slow
def test_demo_heads_with_too_few_clean_identities_is_one_error_line(store, tmp_path):
    """24 rows leave a handful of images of identities with a clean-ish centre: the demo names the cause."""
    from train.demo import train_demo_heads
    from train.run import TrainError

    with pytest.raises(TrainError, match=r"images for the scale head, fewer than one batch of 16 \(only identities"):
        train_demo_heads(store[0], tmp_path / "heads", scale_steps=2, pfe_steps=0, batch_size=16)
