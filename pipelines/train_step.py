"""The `train` step kind: fits heads with `train`'s Python entries (no command line is built) into the step's
folder (pipelines.steps.run_train decides whether it resumes); pipelines/train_spec.py names the checkpoints
later steps load and checks the arguments.

Tasks: `demo-heads` calls `train.demo.train_demo_heads` (centres, ScaleFace fine-tune and PFE on a synthetic
store's bottleneck, with the held-out Spearman figures in `demo_metrics.json`); `scale-head`, `pfe-head` and
`pair-classifier` call `train.run.train` with a `TrainOptions` built from the step's YAML. torch is imported
only when a train step runs, so loading or checking a pipeline never needs it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.context import StepContext
from pipelines.spec import ResolvedStep
from pipelines.train_spec import DEMO_KEYS, DEMO_METRICS, TrainStepError, check_args, task_of


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


def run_train(step: ResolvedStep, ctx: StepContext, resume: bool) -> list[Path]:
    """Train into the step's folder (<run>/<id>/, its subfolders claimed by train), continuing its runs from their
    train_state.pt when `resume`, else replacing what train wrote there; returns the files under the folder.
    Raises TrainStepError (one line naming the step) for bad arguments or a run that cannot go on."""
    from analyze.outputs import write_json

    where = f"step {step.id!r} (train)"
    check_args(step.args, where)
    step.dir.mkdir(parents=True, exist_ok=True)
    how = "resuming" if resume and any(step.dir.glob("**/train_state.pt")) else "starting"
    ctx.say(f"train ({step.args.get('task', 'demo-heads')}): {how} in {step.dir}")
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
        raise TrainStepError(f"{where}: {exc}") from None
    return sorted(p for p in step.dir.rglob("*") if p.is_file())


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
