"""`analyze accuracy` end to end: a tiny insightface .bin pack, `extract` (iResNet-18, random init, flip test),
then the command; its numbers equal insightface's functions (the oracle) on the store's embeddings."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from facedata_fixtures import write_bin
from insightface_verification_oracle import oracle_roc, oracle_val
from PIL import Image
from sklearn.preprocessing import normalize

from analyze.accuracy import ACCURACY_THRESHOLDS, VAL_THRESHOLDS
from analyze.accuracy_cli import AccuracyOptions, run_accuracy
from featurestore.store import FeatureStore

ROOT = Path(__file__).resolve().parents[1]


def _jpeg(rng: np.random.Generator) -> bytes:
    img = rng.integers(0, 256, size=(112, 112, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _cli(*args: str, module: str = "analyze.cli") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-c", f"from {module} import main; main()", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def bin_store(tmp_path_factory) -> Path:
    """Two packs (lfw 24 pairs, cfp 13 pairs: uneven folds), extracted with the flip test."""
    tmp = tmp_path_factory.mktemp("packs")
    rng = np.random.default_rng(0)
    data = tmp / "data"
    data.mkdir()
    for name, n in (("lfw", 24), ("cfp", 13)):
        imgs = [_jpeg(rng) for _ in range(2 * n)]
        for k in range(0, n, 2):  # genuine pairs: the same image twice (distance 0 with flip too)
            imgs[2 * k + 1] = imgs[2 * k]
        write_bin(data / f"{name}.bin", imgs, [k % 2 == 0 for k in range(n)])
    manifest = {
        "name": "packs",
        "layout": "bin",
        "aligned": True,
        "protocols": {"lfw": {"pairs": "lfw.bin"}, "cfp": {"pairs": "cfp.bin"}},
    }
    (tmp / "packs.yaml").write_text(yaml.safe_dump(manifest))
    store = tmp / "packs.zarr"
    r = _cli(
        *("--dataset", str(tmp / "packs.yaml"), "--data-root", str(data), "--random-init", "--config", "arcface_r18"),
        *("--device", "cpu", "--workers", "0", "--quiet", "--flip", "--out", str(store)),
        module="extract.cli",
    )
    assert r.returncode == 0, r.stderr
    return store


@pytest.mark.slow
def test_accuracy_on_bin_packs_equals_insightface(bin_store, tmp_path):
    out = tmp_path / "acc"
    r = _cli("accuracy", "--cache", str(bin_store), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "10-fold accuracy (insightface-10fold)" in r.stdout
    acc = pd.read_parquet(out / "accuracy.parquet")
    folds = pd.read_parquet(out / "accuracy_folds.parquet")
    assert set(acc["protocol"]) == {"lfw", "cfp"} and acc["flip"].all()
    assert (out / "accuracy.csv").is_file() and (out / "summary.json").is_file()
    with FeatureStore.open(bin_store) as s:
        model = next(iter(s.models))
        for name in ("lfw", "cfp"):
            proto = s.protocol(name)
            rows = proto.pairs.ravel()  # images 2k, 2k+1 of the pack, in pair order
            emb = s.read_rows(model, "embedding", np.sort(rows)).astype(np.float64)
            flip = s.read_rows(model, "embedding_flip", np.sort(rows)).astype(np.float64)
            order = np.searchsorted(np.sort(rows), rows)
            feats = normalize(emb[order] + flip[order])
            issame = proto.label.astype(bool)
            _, _, acc_ref, thr_ref = oracle_roc(ACCURACY_THRESHOLDS, feats[0::2], feats[1::2], issame, 10)
            row = acc[acc["protocol"] == name].iloc[0]
            if name == "lfw":
                val_ref, _, far_ref, _ = oracle_val(VAL_THRESHOLDS, feats[0::2], feats[1::2], issame, 1e-3, 10)
            else:  # cfp's 1-pair folds hold one class: FaceNet divides by zero there, we report NaN
                val_ref = far_ref = np.nan
                with pytest.raises(ZeroDivisionError):
                    oracle_val(VAL_THRESHOLDS, feats[0::2], feats[1::2], issame, 1e-3, 10)
            assert row["accuracy_mean"] == np.mean(acc_ref) and row["accuracy_std"] == np.std(acc_ref)
            assert row["threshold_mean"] == np.mean(thr_ref)
            assert row["val"] == pytest.approx(val_ref, abs=1e-15, nan_ok=True)
            assert row["val_far_achieved"] == pytest.approx(far_ref, abs=1e-15, nan_ok=True)
            f = folds[folds["protocol"] == name]
            np.testing.assert_array_equal(f["accuracy"], acc_ref)
            assert row["pairs"] == len(issame) and row["dropped_pairs"] == 0


@pytest.mark.slow
def test_accuracy_bootstrap_rejection_and_errors(bin_store, tmp_path):
    with FeatureStore.open(bin_store) as s:
        run = run_accuracy(s, tmp_path / "b", AccuracyOptions(protocols=("lfw",), bootstrap=20, seed=3))
        again = run_accuracy(s, tmp_path / "c", AccuracyOptions(protocols=("lfw",), bootstrap=20, seed=3))
    row = run.accuracy.iloc[0]
    assert row["resampled"] == "image" and row["bootstrap"] == 20
    assert 0 <= row["accuracy_lo"] <= row["accuracy_hi"] <= 1
    assert (row["accuracy_lo"], row["accuracy_hi"]) == tuple(again.accuracy.iloc[0][["accuracy_lo", "accuracy_hi"]])
    rej = run.reject
    assert set(rej["uncertainty"]) == {"mean", "harmonic-harmonic"}
    first = rej[rej["rejected_fraction"] == 0.0]
    assert (first["accuracy_mean"] == row["accuracy_mean"]).all()
    # fewer pairs than folds: one line, exit 2, no folder
    r = _cli("accuracy", "--cache", str(bin_store), "--protocol", "cfp", "--folds", "14", "--out", str(tmp_path / "x"))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "error: 13 pairs in protocol 'cfp' are fewer than --folds 14: every fold needs at least one pair"
    ]
    assert not (tmp_path / "x").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("user file")
    r = _cli("accuracy", "--cache", str(bin_store), "--out", str(tmp_path / "mine"), "--force")
    assert r.returncode == 2 and "not written by this tool" in r.stderr
    assert (tmp_path / "mine" / "notes.txt").read_text() == "user file"
