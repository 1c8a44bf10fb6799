"""One identity per model: a resume or a shard joining with another seed, checkpoint, config, precision,
dtype or torch is refused before any image is read, naming each difference; old stores are refused, kept."""

from __future__ import annotations

import hashlib
import json
import signal
import sys

import numpy as np
import pytest
import yaml
from conftest import chunk_outputs
from ijb_fixture import write_ijb
from torchless import run_without_torch

from featurestore.describe import describe
from featurestore.errors import StoreError
from featurestore.schema import FINGERPRINT_FIELDS, ModelSpec
from featurestore.store import FeatureStore, create_store

CONFIG = {"name": "sf", "family": "scaleface", "backbone": {"arch": "iresnet18"}, "preprocessing": {"std": [128.0] * 3}}


def _spec(**change) -> ModelSpec:
    fields = {
        "name": "scaleface",
        "family": "scaleface",
        "embedding_dim": 4,
        "outputs": ("embedding", "norm", "scale"),
        "random_init": True,
        "checkpoint": "random:seed=0",
        "seed": 0,
        "config": CONFIG,
        "preprocessing": {"channel_order": "RGB", "std": [128.0] * 3},
        "precision": "fp32",
        "torch_version": "2.5.1",
    }
    return ModelSpec(**{**fields, **change})


def _partial_store(path, tables, spec):
    """A store with chunk 0 of 3 written, as an interrupted run leaves it."""
    store = create_store(path, tables, [spec], chunk_rows=4)
    with store.writer() as w:
        w.write_chunk(0, np.ones(4, np.uint8), chunk_outputs([spec], 0, 4))
    store.close()


def test_fingerprint_is_recorded_with_its_sha256(tmp_path, tables):
    path = tmp_path / "s.zarr"
    create_store(path, tables, [_spec()]).close()
    with FeatureStore.open(path) as s:
        fp = s.attrs["models"]["scaleface"]["fingerprint"]
        assert set(fp["fields"]) == set(FINGERPRINT_FIELDS)
        assert fp["fields"]["seed"] == 0 and fp["fields"]["precision"] == "fp32"
        assert fp["fields"]["torch_version"] == "2.5.1" and fp["fields"]["config"] == CONFIG
        text = json.dumps(fp["fields"], sort_keys=True, separators=(",", ":"))
        assert fp["sha256"] == hashlib.sha256(text.encode()).hexdigest()
        spec = s.model("scaleface")
        assert spec.recorded_fingerprint == fp and spec.fingerprint_attrs() == fp
        assert (spec.seed, spec.precision, spec.torch_version) == (0, "fp32", "2.5.1")


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_resume_with_another_seed_is_refused_and_the_store_kept(tmp_path, tables, suffix):
    path = tmp_path / f"s{suffix}"
    _partial_store(path, tables, _spec(seed=0))
    with pytest.raises(StoreError) as err:
        create_store(path, tables, [_spec(seed=7)], chunk_rows=4, exist_ok=True)
    msg = str(err.value)
    assert "model 'scaleface' seed: the store has 0, this run has 7" in msg
    assert "--overwrite" in msg and "another --out" in msg and "\n" not in msg
    with FeatureStore.open(path) as s:
        assert s.model("scaleface").seed == 0
        assert s.chunk_done().tolist() == [True, False, False]
        np.testing.assert_array_equal(s.read("scaleface", "norm", slice(0, 4)), [1, 101, 201, 301])


@pytest.mark.parametrize(
    "change, phrase",
    [
        ({"precision": "bf16"}, "precision: the store has fp32, this run has bf16"),
        ({"dtype": "f2"}, "dtype: the store has f4, this run has f2"),
        ({"flip": True}, "flip: the store has false, this run has true"),
        ({"torch_version": "2.6.0"}, "torch_version: the store has 2.5.1, this run has 2.6.0"),
        (
            {"random_init": False, "seed": None, "checkpoint_sha256": "ab" * 32},
            "checkpoint_sha256: the store has none, this run has abababababab",
        ),
        (
            {"config": {**CONFIG, "backbone": {"arch": "iresnet50"}}},
            "config.backbone.arch: the store has iresnet18, this run has iresnet50",
        ),
        (
            {"preprocessing": {"channel_order": "BGR", "std": [128.0] * 3}},
            "preprocessing.channel_order: the store has RGB, this run has BGR",
        ),
    ],
)
def test_every_field_of_the_fingerprint_is_checked(tmp_path, tables, change, phrase):
    path = tmp_path / "s.zarr"
    _partial_store(path, tables, _spec())
    with pytest.raises(StoreError, match="was made for a different run") as err:
        create_store(path, tables, [_spec(**change)], exist_ok=True)
    assert f"model 'scaleface' {phrase}" in str(err.value)
    if "seed" in change:  # every difference is named, not only the first
        assert "seed: the store has 0, this run has none" in str(err.value)


def test_same_fingerprint_resumes_and_keeps_done_chunks(tmp_path, tables):
    path = tmp_path / "s.zarr"
    _partial_store(path, tables, _spec())
    with create_store(path, tables, [_spec()], exist_ok=True) as s:
        assert s.chunk_done().tolist() == [True, False, False]


def test_store_without_fingerprints_is_refused_and_kept(tmp_path, tables):
    """A store written before this change: no way to tell its models from this run's, so no resume."""
    path = tmp_path / "old.zarr"
    _partial_store(path, tables, _spec())
    with FeatureStore.open(path, mode="r+") as s:
        models = s.attrs["models"]
        for attrs in models.values():
            for key in ("fingerprint", "seed", "precision", "torch_version"):
                del attrs[key]
        s._b.write_attrs({"models": models})
    before = sorted(p.relative_to(path) for p in path.rglob("*"))
    with pytest.raises(StoreError) as err:
        create_store(path, tables, [_spec()], exist_ok=True)
    msg = str(err.value)
    assert "written before model fingerprints were recorded (model 'scaleface')" in msg
    assert "nothing was changed" in msg and "--overwrite" in msg
    assert sorted(p.relative_to(path) for p in path.rglob("*")) == before
    with FeatureStore.open(path) as s:
        assert s.chunk_done().tolist() == [True, False, False]
        assert s.model("scaleface").recorded_fingerprint is None
        assert "fingerprint none" in describe(s)


def test_info_shows_the_fingerprint_without_torch(tmp_path, tables):
    path = tmp_path / "s.h5"
    create_store(path, tables, [_spec()]).close()
    sha = _spec().fingerprint_attrs()["sha256"]
    res = run_without_torch(
        f"from featurestore.describe import describe; from featurestore.store import FeatureStore\n"
        f"print(describe(FeatureStore.open({str(path)!r})))"
    )
    assert res.returncode == 0, res.stderr
    assert f"fingerprint {sha[:12]} (seed 0, precision fp32, stored f4, torch 2.5.1)" in res.stdout


# ---- through `extract` ---------------------------------------------------------------------------


def _extract(monkeypatch, capsys, root, out, *extra, random=True):
    """Run the `extract` entry point in-process (iResNet-18, 2-row chunks); (exit status, stderr)."""
    from extract.cli import main

    argv = ["extract", "--dataset", "ijbc", "--data-root", str(root), "--out", str(out)]
    argv += ["--random-init"] if random else []
    argv += ["--config", "arcface_r18", "--device", "cpu", "--workers", "0", "--quiet", "--chunk-rows", "2"]
    monkeypatch.setattr(sys, "argv", argv + list(extra))
    capsys.readouterr()
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


@pytest.mark.slow
def test_extract_resume_or_shard_with_another_seed_is_refused_before_any_image(tmp_path, monkeypatch, capsys):
    pytest.importorskip("torch")
    import extract.data

    root = write_ijb(tmp_path / "data", n=8)
    out = tmp_path / "s.zarr"
    code, err = _extract(monkeypatch, capsys, root, out, "--shard", "0/2", "--seed", "0")
    assert code == 0, err
    with FeatureStore.open(out) as s:
        done = s.chunk_done().tolist()
        norms = s.read("arcface_r18", "norm")
        assert done == [True, True, False, False] and s.model("arcface_r18").seed == 0

    def no_images(self, i):
        raise AssertionError("an image was read")

    monkeypatch.setattr(extract.data.FaceCrops, "__getitem__", no_images)
    for shard in ("0/1", "1/2"):  # the resume of the whole store, and the second shard joining
        code, err = _extract(monkeypatch, capsys, root, out, "--shard", shard, "--seed", "7")
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
        assert lines[0].startswith(f"error: {out} was made for a different run")
        assert "model 'arcface_r18' seed: the store has 0, this run has 7" in lines[0]
        assert "Use --overwrite to start again, or another --out." in lines[0]
    code, err = _extract(monkeypatch, capsys, root, out, "--seed", "0", "--precision", "bf16")
    assert code == 2 and "model 'arcface_r18' precision: the store has fp32, this run has bf16" in err
    with FeatureStore.open(out) as s:
        assert s.chunk_done().tolist() == done
        np.testing.assert_array_equal(s.read("arcface_r18", "norm"), norms)
        fields = s.model("arcface_r18").recorded_fingerprint["fields"]
        import torch

        assert fields["torch_version"] == torch.__version__ and fields["precision"] == "fp32"


def test_extract_with_a_checkpoint_records_no_seed(tmp_path, monkeypatch, capsys):
    """--seed decides nothing for a checkpoint: it is not in the fingerprint, and a shard with another joins."""
    pytest.importorskip("torch")
    from extract.checkpoints import file_sha256, random_model, save_checkpoint
    from extract.models import load_model_config

    root = write_ijb(tmp_path / "data", n=4)
    ckpt = save_checkpoint(random_model(load_model_config("arcface_r18"), seed=3), tmp_path / "a.pt", "bare")
    out = tmp_path / "s.zarr"
    for shard, seed in (("0/2", "0"), ("1/2", "5")):
        code, err = _extract(
            monkeypatch, capsys, root, out, "--shard", shard, "--seed", seed, "--checkpoint", str(ckpt), random=False
        )
        assert code == 0, err
    with FeatureStore.open(out) as s:
        spec = s.model("arcface_r18")
        assert s.chunk_done().all() and spec.seed is None and spec.checkpoint_sha256 == file_sha256(ckpt)


# ---- through a pipeline --------------------------------------------------------------------------


@pytest.mark.slow
def test_pipeline_rerun_with_another_seed_never_mixes_models(tmp_path, monkeypatch):
    """A pipeline's extract step interrupted (Ctrl-C) leaves a partial store and no step marker; the rerun
    with --param seed=7 must not fill the rest of that store with another model."""
    pytest.importorskip("torch")
    import extract.runner
    from featurestore.interrupts import Interrupted
    from pipelines.runner import run_pipeline
    from pipelines.steps import StepError

    root = write_ijb(tmp_path / "data", n=8)
    spec = {
        "name": "tiny-seed",
        "params": {"seed": 0},
        "steps": [
            {
                "id": "extract",
                "kind": "extract",
                "with": {
                    "dataset": "ijbc",
                    "data_root": str(root),
                    "random_init": True,
                    "config": "arcface_r18",
                    "seed": "${seed}",
                    "device": "cpu",
                    "workers": 0,
                    "chunk_rows": 2,
                    "batch_size": 2,
                },
            }
        ],
    }
    pipeline = tmp_path / "tiny.yaml"
    pipeline.write_text(yaml.safe_dump(spec, sort_keys=False))
    out = tmp_path / "run"

    real_add = extract.runner.ChunkBuffer.add
    calls = []

    def add_then_ctrl_c(self, batch, outputs):
        real_add(self, batch, outputs)
        calls.append(1)
        if len(calls) == 2:  # two chunks of 2 rows filled: as if Ctrl-C came now
            raise Interrupted(signal.SIGINT)

    monkeypatch.setattr(extract.runner.ChunkBuffer, "add", add_then_ctrl_c)
    with pytest.raises(Interrupted) as exc:
        run_pipeline(pipeline, out)
    assert "chunks of" in exc.value.message and "run the same command again" in exc.value.message
    monkeypatch.undo()
    store_path = next(out.glob("extract/*.zarr"))
    with FeatureStore.open(store_path) as s:
        done = s.chunk_done().tolist()
        assert 1 <= sum(done) < 4 and s.model("arcface_r18").seed == 0
        norms = s.read("arcface_r18", "norm")

    with pytest.raises(StepError) as err:
        run_pipeline(pipeline, out, params={"seed": 7})
    assert "model 'arcface_r18' seed: the store has 0, this run has 7" in str(err.value)
    with FeatureStore.open(store_path) as s:
        assert s.chunk_done().tolist() == done and s.model("arcface_r18").seed == 0
        np.testing.assert_array_equal(s.read("arcface_r18", "norm"), norms)

    run_pipeline(pipeline, out)  # the same seed again: resumes and completes the one-model store
    with FeatureStore.open(store_path) as s:
        assert s.chunk_done().all() and s.model("arcface_r18").seed == 0
