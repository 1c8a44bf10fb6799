"""What a pipeline needs to know of a `train` step before it runs (no torch, no other pipelines module): its
tasks, the checkpoint paths later steps name as `${steps.ID.checkpoint}` (demo-heads: `scale_checkpoint`,
`pfe_checkpoint`, `warmup_checkpoint`), and the check of its arguments. pipelines/train_step.py runs it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TASKS = ("demo-heads", "scale-head", "pfe-head", "pair-classifier")
"""What a train step's `task` may be (default demo-heads)."""

CHECKPOINT_NAMES = {"scale-head": "checkpoint.pth", "pfe-head": "sota.pth", "pair-classifier": "classifier.pth"}
"""The checkpoint file each task writes (train.run.CHECKPOINT_NAMES, repeated so resolving needs no torch;
tests/test_pipeline_train.py checks the two agree)."""

DEMO_METRICS = "demo_metrics.json"
"""The demo task's held-out figures (train.demo.DemoResult.metrics), in the step's folder."""

DEMO_KEYS = frozenset(
    {
        "warmup_steps",
        "scale_steps",
        "pfe_steps",
        "batch_size",
        "holdout",
        "warmup_fraction",
        "centre_max_severity",
        "seed",
    }
)
"""Arguments of the demo task besides `task`, `cache` and the runtime ones (train_demo_heads' keywords)."""

TRAIN_KEYS = frozenset(
    {"config", "data", "data_root", "preset", "cache", "backbone", "centres", "estimate_centres", "precision", "seed",
     "steps", "epochs", "batch_size", "lr", "checkpoint_every", "val", "val_every", "mode", "classifier"}
)  # fmt: skip
"""Arguments of the scale-head / pfe-head / pair-classifier tasks (the `train` CLI's options)."""

RUNTIME_KEYS = frozenset({"device", "workers", "quiet"})
"""Arguments that do not change what a train step writes (left out of its fingerprint)."""


class TrainStepError(ValueError):
    """A train step's arguments are wrong; one line naming the step and the key."""


def task_of(args: dict[str, Any], where: str) -> str:
    """The step's task, checked against TASKS."""
    task = args.get("task", "demo-heads")
    if task not in TASKS:
        raise TrainStepError(f"{where}: task {task!r} is not one of {', '.join(TASKS)}")
    return str(task)


def outputs(step_dir: Path, args: dict[str, Any]) -> dict[str, str]:
    """The files a train step makes, by the name later steps use as ${steps.ID.NAME}; known before it runs."""
    task = args.get("task", "demo-heads")
    if task == "demo-heads":
        return {
            "scale_checkpoint": str(step_dir / "scale" / CHECKPOINT_NAMES["scale-head"]),
            "pfe_checkpoint": str(step_dir / "pfe" / CHECKPOINT_NAMES["pfe-head"]),
            "warmup_checkpoint": str(step_dir / "warmup" / CHECKPOINT_NAMES["scale-head"]),
            "metrics": str(step_dir / DEMO_METRICS),
        }
    name = CHECKPOINT_NAMES.get(str(task), "checkpoint.pth")
    return {"checkpoint": str(step_dir / name), "centres": str(step_dir / "centres")}


def check_args(args: dict[str, Any], where: str) -> None:
    """Refuse unknown keys and a missing input before anything runs (also what `pipelines check` runs)."""
    task = task_of(args, where)
    known = (DEMO_KEYS | {"cache"} if task == "demo-heads" else TRAIN_KEYS) | RUNTIME_KEYS | {"task"}
    unknown = sorted(set(args) - known)
    if unknown:
        raise TrainStepError(f"{where}: unknown key(s) {unknown} for task {task}; known: {sorted(known)}")
    if task == "demo-heads" and not args.get("cache"):
        raise TrainStepError(f"{where}: task demo-heads needs 'cache' (a store made with extract --bottleneck)")
    if task != "demo-heads" and bool(args.get("cache")) == bool(args.get("data")):
        raise TrainStepError(f"{where}: give exactly one of 'data' (a dataset) or 'cache' (a store with a bottleneck)")
