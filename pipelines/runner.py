"""Run a pipeline's steps in order, skipping each step whose outputs are complete and were made from the
same inputs and parameters (same fingerprint and a `step.json` marker written after its outputs), so a
rerun after a crash continues where it stopped. Logs to <out>/pipeline.log and the terminal."""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from featurestore.interrupts import Interrupted
from pipelines.context import StepContext
from pipelines.spec import PipelineSpec, ResolvedStep, load_pipeline, resolve_params, resolve_steps
from pipelines.steps import (
    KINDS,
    MARKER,
    StepError,
    changed_keys,
    fingerprint,
    fingerprint_payload,
    output_files,
)

LOG_NAME = "pipeline.log"


@dataclass
class RunSummary:
    """What a run did: per step 'ran' or 'skipped', with the reason, and where its outputs are."""

    pipeline: str
    out_dir: Path
    actions: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def report(self) -> Path | None:
        """The HTML report of the run's report step, if it has one."""
        found = sorted(self.out_dir.glob("*/report.html"))
        return found[0] if found else None


def default_out_dir(name: str) -> Path:
    """runs/<pipeline name>/ in the current folder."""
    return Path("runs") / name


def read_marker(step: ResolvedStep) -> dict[str, Any] | None:
    """The step's step.json, or None when absent or unreadable (a crash while writing it)."""
    path = step.dir / MARKER
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _logger(out_dir: Path) -> logging.Logger:
    """A logger writing to <out>/pipeline.log (appending: one log across reruns) and the terminal."""
    log = logging.getLogger(f"pipelines.run.{out_dir.resolve()}")
    log.setLevel(logging.INFO)
    log.propagate = False
    for h in list(log.handlers):
        h.close()
        log.removeHandler(h)
    fmt = logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S")
    fh = logging.FileHandler(out_dir / LOG_NAME, encoding="utf-8")
    fh.setFormatter(fmt)
    th = logging.StreamHandler(sys.stderr)
    th.setFormatter(logging.Formatter("[pipelines] %(message)s"))
    log.addHandler(fh)
    log.addHandler(th)
    return log


def _sayer(log: logging.Logger, step: str) -> Callable[..., None]:
    """What a step says: the line on the terminal as it is, and `  <step> | line` in pipeline.log (the terminal
    streams are taken now, so a step redirecting sys.stdout into `say` does not loop)."""
    terminal_out, terminal_err = sys.stdout, sys.stderr

    def say(text: str, err: bool = False) -> None:
        for line in str(text).splitlines() or [""]:
            print(line, file=terminal_err if err else terminal_out, flush=True)
            _file_only(log, f"  {step} | {line}")

    say.log_only = lambda line: _file_only(log, f"  {step} | {line}")  # progress lines (the terminal has the bar)
    return say


def run_pipeline(
    pipeline: str | Path | PipelineSpec,
    out_dir: str | Path | None = None,
    params: dict[str, Any] | None = None,
) -> RunSummary:
    """Run (or continue) a pipeline: resolve parameters, then each step in order, skipping complete ones.

    Raises PipelineError (bad file or parameters, before anything runs) or StepError (a step failed; the
    steps before it keep their markers, so the next run starts at the failed step)."""
    spec = pipeline if isinstance(pipeline, PipelineSpec) else load_pipeline(pipeline)
    values = resolve_params(spec, dict(params or {}))
    out = Path(out_dir) if out_dir is not None else default_out_dir(spec.name)
    out.mkdir(parents=True, exist_ok=True)
    steps = resolve_steps(spec, values, out)
    log = _logger(out)
    summary = RunSummary(spec.name, out)
    ctx = StepContext(out_dir=out, pipeline=spec.name, params=values, source=spec.source)
    log.info("=== pipeline %s (%s) -> %s", spec.name, spec.source, out)
    given = ", ".join(f"{k}={v}" for k, v in (params or {}).items()) or "none"
    log.info("parameters given: %s", given)
    (out / "pipeline.json").write_text(
        json.dumps(
            {
                "pipeline": spec.name,
                "source": spec.source,
                "params": values,
                "started": _now(),
                "steps": [{"id": s.id, "kind": s.kind, "args": s.args, "needs": s.needs} for s in steps],
            },
            indent=2,
            default=str,
        )
        + "\n"
    )
    t_run = time.perf_counter()
    try:
        for step in steps:
            if step.kind == "report" and not step.needs:
                step.needs = [s.id for s in steps[: steps.index(step)]]
            ctx.steps[step.id] = step
            try:
                _run_step(step, ctx, log, summary)
            except Interrupted as exc:
                raise _interrupted(exc, step, log, summary) from None
            except KeyboardInterrupt:  # a Python caller without run_cli's signal handler
                raise _interrupted(Interrupted(signal.SIGINT), step, log, summary) from None
    finally:
        for h in list(log.handlers):
            h.close()
            log.removeHandler(h)
    ran = [k for k, v in summary.actions.items() if v == "ran"]
    skipped = [k for k, v in summary.actions.items() if v == "skipped"]
    log = _logger(out)
    log.info(
        "=== done in %.1f s: ran %s; skipped %s",
        time.perf_counter() - t_run,
        ", ".join(ran) or "none",
        ", ".join(skipped) or "none",
    )
    if summary.report:
        log.info("report: %s", summary.report)
    for h in list(log.handlers):
        h.close()
        log.removeHandler(h)
    return summary


def _interrupted(exc: Interrupted, step: ResolvedStep, log: logging.Logger, summary: RunSummary) -> Interrupted:
    """Log the interruption to pipeline.log (the terminal gets run_cli's one line) and say what is done and
    how to continue, with what the step's own command said of its progress (an extract step: chunks done)."""
    done = [k for k in summary.actions if k != step.id]
    _file_only(log, f"interrupted during step {step.id} ({step.kind}) by {exc.signal_name}; no step.json written")
    # an extract step's own line says how many chunks are done; an analysis step's advice (--force) is not the user's
    inner = f" ({exc.message})" if exc.message and KINDS[step.kind].writes_store else ""
    exc.message = (
        f"steps {', '.join(done) or 'none'} done; step {step.id} interrupted{inner}; rerun the same command to "
        f"continue (log: {summary.out_dir / LOG_NAME})"
    )
    return exc


def _file_only(log: logging.Logger, message: str) -> None:
    """A log line for pipeline.log only."""
    record = log.makeRecord(log.name, logging.INFO, __file__, 0, message, None, None)
    for h in log.handlers:
        if isinstance(h, logging.FileHandler):
            h.handle(record)


def _run_step(step: ResolvedStep, ctx: StepContext, log: logging.Logger, summary: RunSummary) -> None:
    kind = KINDS[step.kind]
    payload = fingerprint_payload(step, ctx)
    fp = fingerprint(payload)
    marker = read_marker(step)
    ctx.overwrite = False
    if marker is None:
        reason = "no step.json (never finished)"
        if kind.writes_store and step.store.exists():
            reason += f"; resuming the existing store {step.store} (finished chunks are kept)"
    elif marker.get("fingerprint") != fp:
        changed = changed_keys(marker.get("payload") or {}, payload)
        reason = "inputs or parameters changed: " + (", ".join(changed) or "fingerprint format")
        if kind.writes_store:
            arg_changes = {c.split(".", 1)[1] for c in changed if c.startswith("args.")}
            resumable = set(changed) <= {f"args.{k}" for k in kind.resume_keys} and arg_changes
            ctx.overwrite = not resumable
            reason += "; resuming the store" if resumable else "; starting the store again"
    else:
        missing = kind.incomplete(step, marker)
        if missing is None:
            log.info(
                "skipped %s (%s): outputs complete, fingerprint %s unchanged (finished %s)",
                step.id,
                step.kind,
                fp[:12],
                marker.get("finished", "?"),
            )
            summary.actions[step.id], summary.reasons[step.id] = "skipped", "complete, same fingerprint"
            ctx.records[step.id] = marker
            return
        reason = f"outputs incomplete: {missing}"
    log.info("running %s (%s): %s", step.id, step.kind, reason)
    if kind.writes_store and marker is not None and marker.get("id") == step.id:
        (step.dir / MARKER).unlink(missing_ok=True)  # analyses and the report: _fresh_dir removes it with the rest
    t0 = time.perf_counter()
    ctx.say = _sayer(log, step.id)
    try:
        written = kind.run(step, ctx)
    except StepError as exc:
        log.info("FAILED %s after %.1f s: %s", step.id, time.perf_counter() - t0, exc)
        raise
    except Exception as exc:
        log.info("FAILED %s after %.1f s: %s: %s", step.id, time.perf_counter() - t0, type(exc).__name__, exc)
        raise StepError(f"step {step.id!r} ({step.kind}) failed: {type(exc).__name__}: {exc}") from exc
    seconds = time.perf_counter() - t0
    payload_out = {"store": str(step.store)} if kind.writes_store else {}
    record = {
        "id": step.id,
        "kind": step.kind,
        "fingerprint": fp,
        "payload": payload,
        "args": step.args,
        "outputs": {} if kind.writes_store else output_files(step.dir),
        "written": [str(p) for p in written],
        "seconds": round(seconds, 3),
        "finished": _now(),
        **payload_out,
    }
    step.dir.mkdir(parents=True, exist_ok=True)
    tmp = step.dir / f".{MARKER}.tmp"
    tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
    tmp.replace(step.dir / MARKER)  # the marker appears whole, and last
    ctx.records[step.id] = record
    summary.actions[step.id], summary.reasons[step.id], summary.seconds[step.id] = "ran", reason, seconds
    log.info("finished %s in %.1f s (fingerprint %s)", step.id, seconds, fp[:12])


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
