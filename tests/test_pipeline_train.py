"""The pipelines `train` step kind: resolving its checkpoints for later steps, argument checks, its fingerprint,
the built-in demo and train-scaleface pipelines loading and resolving without data, and (slow) a small
extract --bottleneck -> train -> extract-with-the-trained-heads pipeline run, rerun and resumed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.spec import PipelineError, load_pipeline, parse_pipeline, resolve_params, resolve_steps
from pipelines.train_spec import CHECKPOINT_NAMES, TASKS


def _steps(spec, params=None, out=Path("/runs/x")):
    return {s.id: s for s in resolve_steps(spec, resolve_params(spec, params or {}), out)}


def test_checkpoint_names_match_train():
    from train.run import CHECKPOINT_NAMES as TRAIN_NAMES

    assert CHECKPOINT_NAMES == TRAIN_NAMES
    assert set(TASKS) == {"demo-heads", *TRAIN_NAMES}


def test_demo_pipeline_trains_then_extracts_with_the_trained_heads():
    steps = _steps(load_pipeline("demo"))
    train, trained = steps["train"], steps["extract-trained"]
    assert train.kind == "train" and train.needs == ["extract-train"]
    assert train.args["cache"] == str(steps["extract-train"].store)
    assert steps["extract-train"].args["bottleneck"] is True
    assert trained.needs == ["train"]
    assert trained.args["model"] == [
        "scaleface_random_head=/runs/x/train/warmup/checkpoint.pth:scaleface_r18",
        "scaleface_trained=/runs/x/train/scale/checkpoint.pth:scaleface_r18",
        "pfe_trained=/runs/x/train/pfe/sota.pth:pfe_r18",
    ]
    assert trained.args["preset"] == steps["extract"].args["preset"] == "tiny"
    assert steps["reject-template-trained"].args["cache"] == str(trained.store)


def test_train_scaleface_pipeline_loads_and_resolves():
    spec = load_pipeline("train-scaleface")
    with pytest.raises(PipelineError, match="backbone_checkpoint"):
        resolve_params(spec, {})
    steps = _steps(spec, {"backbone_checkpoint": "bb.pth", "centres": "ckpt/"})
    assert [s.kind for s in steps.values()] == [
        "extract", "train", "train", "extract", "reject", "reject", "fusion", "report"
    ]  # fmt: skip
    ms1m = steps["extract-ms1m"]
    assert ms1m.args["dataset"] == "ms1mv2" and ms1m.args["bottleneck"] is True and ms1m.args["per_identity"] == 8
    scale, pfe = steps["train-scale"], steps["train-pfe"]
    assert scale.args["task"] == "scale-head" and scale.args["cache"] == str(ms1m.store)
    assert scale.args["centres"] == "ckpt/" and pfe.args["task"] == "pfe-head"
    ijbc = steps["extract-ijbc"]
    assert ijbc.needs == ["train-scale", "train-pfe"]
    assert ijbc.args["model"][:2] == [
        "scaleface=/runs/x/train-scale/checkpoint.pth:scaleface_r50",
        "pfe=/runs/x/train-pfe/sota.pth:pfe_r50",
    ]
    # the options the train steps pass are the train CLI's (a TrainOptions builds from them)
    from pipelines.train_step import train_options

    opts = train_options(scale, "cpu", resume=False, progress=False)
    assert opts.config.task == "scale-head" and opts.config.epochs == 12 and opts.centres == "ckpt/"
    assert opts.cache == str(ms1m.store) and opts.backbone == "bb.pth" and opts.out == scale.dir
    pfe_opts = train_options(pfe, "cpu", resume=True, progress=False)
    assert pfe_opts.config.task == "pfe-head" and pfe_opts.resume


def _pipeline(train_with: dict, refer: str = "${steps.train.checkpoint}") -> dict:
    return {
        "steps": [
            {"id": "ex", "kind": "extract", "with": {"dataset": "synthetic"}},
            {"id": "train", "kind": "train", "with": {"cache": "${steps.ex.store}", **train_with}},
            {"id": "after", "kind": "extract", "with": {"dataset": "synthetic", "model": [f"m={refer}:c"]}},
        ]
    }


def test_train_step_outputs_and_errors():
    spec = parse_pipeline(_pipeline({"task": "scale-head", "steps": 3}), "p.yaml")
    steps = _steps(spec)
    assert steps["after"].args["model"] == ["m=/runs/x/train/checkpoint.pth:c"] and steps["after"].needs == ["train"]
    spec = parse_pipeline(_pipeline({"task": "pfe-head"}), "p.yaml")
    assert _steps(spec)["after"].args["model"] == ["m=/runs/x/train/sota.pth:c"]
    with pytest.raises(PipelineError, match=r"p\.yaml: step 'train' \(train\): task 'fit' is not one of"):
        _steps(parse_pipeline(_pipeline({"task": "fit"}), "p.yaml"))
    with pytest.raises(PipelineError, match=r"unknown key\(s\) \['stepz'\] for task scale-head"):
        _steps(parse_pipeline(_pipeline({"task": "scale-head", "stepz": 3}), "p.yaml"))
    with pytest.raises(PipelineError, match="exactly one of 'data'"):
        _steps(parse_pipeline(_pipeline({"task": "scale-head", "data": "ms1mv2"}), "p.yaml"))
    # a demo-heads step names scale_checkpoint, not checkpoint
    with pytest.raises(PipelineError, match=r"\$\{steps.train.checkpoint\}"):
        _steps(parse_pipeline(_pipeline({"task": "demo-heads"}), "p.yaml"))


def test_train_fingerprint_covers_options_and_store_not_device(tmp_path):
    from pipelines.context import StepContext
    from pipelines.steps import fingerprint_payload

    spec = parse_pipeline(_pipeline({"task": "scale-head", "steps": 3, "device": "cpu"}), "p.yaml")
    step = _steps(spec, out=tmp_path)["train"]
    payload = fingerprint_payload(
        type(step)(step.id, step.kind, {**step.args, "cache": None}, step.dir, []), StepContext(tmp_path, "p")
    )
    assert payload["kind"] == "train" and payload["args"]["steps"] == 3 and "device" not in payload["args"]
    assert payload["stores"] == {}


TINY_PIPE = """
name: tiny-train
params:
  n: {default: 3}
steps:
  - id: ex
    kind: extract
    with: {dataset: synthetic, preset: tiny, random_init: true, config: scaleface_r18, bottleneck: true,
           device: cpu, workers: 0}
  - id: train
    kind: train
    with: {task: demo-heads, cache: "${steps.ex.store}", warmup_steps: "${n}", scale_steps: "${n}",
           pfe_steps: 2, batch_size: 16, device: cpu}
  - id: after
    kind: extract
    with:
      dataset: synthetic
      preset: tiny
      model: ["sf=${steps.train.scale_checkpoint}:scaleface_r18", "pfe=${steps.train.pfe_checkpoint}:pfe_r18"]
      device: cpu
      workers: 0
  - id: report
    kind: report
"""


@pytest.mark.slow
def test_train_step_runs_skips_and_resumes(tmp_path):
    import numpy as np
    import torch

    from featurestore.store import FeatureStore
    from pipelines.runner import run_pipeline
    from train.demo import heldout_outputs

    pipe = tmp_path / "p.yaml"
    pipe.write_text(TINY_PIPE)
    out = tmp_path / "run"
    first = run_pipeline(pipe, out)
    assert first.actions == {"ex": "ran", "train": "ran", "after": "ran", "report": "ran"}
    metrics = json.loads((out / "train" / "demo_metrics.json").read_text())
    assert {"scale_spearman_vs_severity", "pfe_log_sigma_sq_spearman_vs_severity", "warmup_last_loss"} <= set(metrics)
    # the later extract loaded the trained checkpoints: its stored scales are the trained head's outputs (on the
    # float16 stored bottleneck here, hence the tolerance)
    from featurestore.bottleneck import read_bottleneck

    with FeatureStore.open(out / "ex" / "synthetic.zarr") as s:
        cfg = s.attrs["models"]["scaleface_r18"]["config"]
        rows, bottleneck = read_bottleneck(s)
    want = heldout_outputs(out / "train" / "scale" / "checkpoint.pth", cfg, bottleneck, "scaleface")
    with FeatureStore.open(out / "after" / "synthetic.zarr") as s:
        got = np.asarray(s.read("sf", "scale"))[rows]
    np.testing.assert_allclose(got.ravel(), want.ravel(), rtol=1e-2, atol=1e-2)
    html = (out / "report" / "report.html").read_text()
    assert "Training: train" in html and "Spearman correlation with the true degradation severity" in html
    # unchanged: skipped
    assert run_pipeline(pipe, out).actions["train"] == "skipped"
    state = torch.load(out / "train" / "scale" / "train_state.pt", weights_only=True)
    assert state["step"] == 3
    # interrupted (no step.json): the step resumes its runs from their train_state.pt (finished ones are re-read)
    (out / "train" / "step.json").unlink()
    again = run_pipeline(pipe, out)
    assert again.actions["train"] == "ran"
    assert len((out / "train" / "scale" / "metrics.jsonl").read_text().splitlines()) == 3
    # changed parameters: the step starts again (the warm-up changes what the fine-tune starts from)
    third = run_pipeline(pipe, out, {"n": 5})
    assert third.actions["train"] == "ran" and third.actions["after"] == "ran"
    assert "args.warmup_steps" in third.reasons["train"]
    state = torch.load(out / "train" / "scale" / "train_state.pt", weights_only=True)
    assert state["step"] == 5
    assert len((out / "train" / "scale" / "metrics.jsonl").read_text().splitlines()) == 5


def test_task_config_applies_the_cli_overrides_and_refuses_another_tasks_config():
    from train.config import ConfigTaskError, task_config

    pfe = task_config("pfe-head", batch_size=32, epochs=2, lr=0.5)
    assert (pfe.identities_per_batch, pfe.images_per_identity, pfe.epochs, pfe.optimizer.lr) == (8, 4, 2, 0.5)
    scale = task_config("scale-head", batch_size=32)
    assert scale.batch_size == 32 and scale.task == "scale-head" and scale.model == "scaleface_r50"
    with pytest.raises(ConfigTaskError, match="is a pfe-head config, not scale-head"):
        task_config("scale-head", "pfe")
