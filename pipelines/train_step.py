"""The `train` step kind: fits heads with `train`'s Python entries (no command line is built) into the step's
folder, resumably, and names the checkpoints later steps load (`${steps.ID.checkpoint}` and, for the demo's
`task: demo-heads`, `${steps.ID.scale_checkpoint}` / `${steps.ID.pfe_checkpoint}`).

Tasks: `demo-heads` calls `train.demo.train_demo_heads` (warm-up, ScaleFace fine-tune and PFE on a synthetic
store's bottleneck, with the held-out Spearman figures in `demo_metrics.json`); `scale-head`, `pfe-head` and
`pair-classifier` call `train.run.train` with a `TrainOptions` built from the step's YAML. torch is imported
only when a train step runs, so loading or checking a pipeline never needs it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # spec resolves a train step's outputs through this module: no import back at run time
    from pipelines.context import StepContext
    from pipelines.spec import ResolvedStep

TASKS = ("demo-heads", "scale-head", "pfe-head", "pair-classifier")
"""What a train step's `task` may be (default demo-heads)."""

CHECKPOINT_NAMES = {"scale-head": "checkpoint.pth", "pfe-head": "sota.pth", "pair-classifier": "classifier.pth"}
"""The checkpoint file each task writes (train.run.CHECKPOINT_NAMES, repeated so resolving needs no torch;
tests/test_pipeline_train.py checks the two agree)."""

DEMO_METRICS = "demo_metrics.json"
"""The demo task's held-out figures (train.demo.DemoResult.metrics), in the step's folder."""

DEMO_KEYS = frozenset({"warmup_steps", "scale_steps", "pfe_steps", "batch_size", "holdout", "warmup_fraction", "seed"})
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


def store_inputs(step: ResolvedStep) -> list[Path]:
    """The store a train step reads (its digest is part of the fingerprint)."""
    return [Path(str(step.args["cache"]))] if step.args.get("cache") else []


def file_inputs(step: ResolvedStep) -> list[Path]:
    """Backbone, centres and config files a train step reads (their size and mtime go into the fingerprint)."""
    files = [step.args.get(k) for k in ("backbone", "config")] + list(step.args.get("val") or [])
    paths = [Path(str(f)) for f in files if f]
    centres = step.args.get("centres")
    if centres and Path(str(centres)).is_dir():
        paths += sorted(p for p in Path(str(centres)).glob("*.pt"))
    elif centres:
        paths.append(Path(str(centres)))
    return [p for p in paths if p.is_file()]


def _resume(step: ResolvedStep, ctx: StepContext) -> bool:
    """Continue the step's own earlier run (its train_state.pt files) unless its inputs or parameters changed:
    a step without a marker (interrupted) or whose marker has this fingerprint (outputs incomplete) resumes."""
    from pipelines.steps import MARKER, fingerprint, fingerprint_payload

    try:
        marker = json.loads((step.dir / MARKER).read_text())
    except (OSError, ValueError):
        return True
    (step.dir / MARKER).unlink(missing_ok=True)
    return marker.get("fingerprint") == fingerprint(fingerprint_payload(step, ctx))


def run_train(step: ResolvedStep, ctx: StepContext) -> list[Path]:
    """Train into the step's folder (<run>/<id>/, its subfolders claimed by train), resuming when it can."""
    from analyze.outputs import write_json
    from pipelines.steps import StepError

    where = f"step {step.id!r} (train)"
    try:
        check_args(step.args, where)
    except TrainStepError as exc:
        raise StepError(str(exc)) from None
    if step.dir.resolve().parent != ctx.out_dir.resolve():
        raise StepError(f"{where}: its folder {step.dir} is not inside the run folder {ctx.out_dir}")
    step.dir.mkdir(parents=True, exist_ok=True)
    resume = _resume(step, ctx)
    ctx.say(f"train ({step.args.get('task', 'demo-heads')}): {'resuming' if resume else 'starting'} in {step.dir}")
    device = str(step.args.get("device", "cpu"))
    progress = not step.args.get("quiet", True)
    from train.config import TrainConfigError
    from train.run import TrainError

    try:
        if task_of(step.args, where) == "demo-heads":
            from train.demo import train_demo_heads

            kw = {k: step.args[k] for k in DEMO_KEYS if k in step.args}
            result = train_demo_heads(step.args["cache"], step.dir, device=device, force=True, resume=resume,
                                      progress=progress, **kw)  # fmt: skip
            write_json(result.metrics, step.dir / DEMO_METRICS)
            for key, value in result.metrics.items():
                if "spearman" in key or key.endswith("_last_loss"):
                    ctx.say(f"  {key}: {value:.4f}")
        else:
            from train.run import train

            result = train(train_options(step, device, resume, progress))
            ctx.say(f"  {result.summary.get('steps', '?')} steps, last loss {result.summary.get('last_loss')}")
    except (TrainError, TrainConfigError) as exc:
        raise StepError(f"{where}: {exc}") from None
    from pipelines.steps import output_files

    return [step.dir / f for f in output_files(step.dir)]


def train_options(step: ResolvedStep, device: str, resume: bool, progress: bool) -> Any:
    """A `train.run.TrainOptions` from a scale-head / pfe-head / pair-classifier step's YAML."""
    from train.config import task_config
    from train.run import TrainOptions

    a, task = step.args, str(step.args.get("task"))
    config = task_config(task, a.get("config"), epochs=a.get("epochs"), batch_size=a.get("batch_size"),
                         mode=a.get("mode"), classifier=a.get("classifier"), lr=a.get("lr"))  # fmt: skip
    return TrainOptions(
        config=config,
        out=step.dir,
        data=a.get("data"),
        data_root=a.get("data_root"),
        preset=str(a.get("preset", "small")),
        cache=a.get("cache"),
        backbone=a.get("backbone"),
        centres=a.get("centres"),
        estimate_centres=bool(a.get("estimate_centres", False)),
        device=device,
        precision=str(a.get("precision", "fp32")),
        seed=int(a.get("seed", 0)),
        steps=a.get("steps"),
        resume=resume,
        force=True,
        checkpoint_every=int(a.get("checkpoint_every", 0)),
        workers=int(a.get("workers", 0)),
        val=tuple(str(v) for v in (a.get("val") or [])),
        val_every=int(a.get("val_every", 0)),
        progress=progress,
    )
