"""Step kinds: how each step runs, which of its arguments are inputs to its fingerprint, which stores and files
it reads, and how the runner tells its outputs are complete.

Analysis steps build the command's options dataclass from the step's YAML (`analyze.commands.options_from_args`)
and call the same Python function the `analyze` click command calls (`analyze.commands.reject` ...); their
runtime-only fields (force, scheduler, cluster) are the kind's `runtime_keys`. The `extract` step still runs
the `extract` click command in-process (extract has no options dataclass yet)."""

from __future__ import annotations

import hashlib
import io
import json
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

from analyze import commands
from analyze.accuracy_cli import AccuracyOptions
from analyze.commands import (
    CommandError,
    CommandResult,
    DistributionOptions,
    FusionOptions,
    RejectOptions,
    RocOptions,
    options_from_args,
    runtime_keys,
)
from analyze.identify import IdentifyOptions
from analyze.outputs import OWNER_FILE, OutputExistsError, check_out_dir, claim_out_dir, clear_owned
from featurestore.interrupts import Interrupted
from pipelines import train_step
from pipelines.context import StepContext
from pipelines.report import write_report
from pipelines.spec import ResolvedStep
from pipelines.train_spec import RUNTIME_KEYS as TRAIN_RUNTIME_KEYS
from pipelines.train_spec import TrainStepError

FINGERPRINT_FORMAT = 1
"""Bumped when what a fingerprint covers changes, so old markers no longer match."""

MARKER = "step.json"
"""Written last into a step's folder, after its outputs are complete."""

STEP_FILES = (MARKER, f".{MARKER}.tmp")
"""What the runner itself writes into a step folder, beside the files the ownership record lists."""


class StepError(Exception):
    """A step failed; the message names the step and the cause."""


def _listed_outputs(step: ResolvedStep, marker: dict[str, Any]) -> str | None:
    """None when the outputs the marker lists are all there with their sizes; else what is missing."""
    have = output_files(step.dir)
    for name, size in (marker.get("outputs") or {}).items():
        if name not in have:
            return f"output {name} is missing"
        if have[name] != size:
            return f"output {name} changed size ({size} -> {have[name]} bytes)"
    return None


@dataclass
class StepKind:
    """One kind of step: its runner (returns the files it wrote), the arguments that do not change its
    outputs (left out of the fingerprint), the stores and files its outputs depend on, and how a finished
    step's outputs are checked (`incomplete`: None when complete, else what is missing).

    `writes_store`: the step's output is a feature store (extract), resumable: a run with changed
    `resume_keys` only continues it, any other change starts it again; its marker lists no files."""

    name: str
    run: Callable[[ResolvedStep, StepContext], list[Path]]
    runtime_keys: frozenset[str] = frozenset()
    resume_keys: frozenset[str] = frozenset()
    store_inputs: Callable[[ResolvedStep], list[Path]] = lambda step: []
    file_inputs: Callable[[ResolvedStep], list[Path]] = lambda step: []
    incomplete: Callable[[ResolvedStep, dict[str, Any]], str | None] = _listed_outputs
    writes_store: bool = False


# ---- helpers --------------------------------------------------------------------------------------


def to_cli_args(args: dict[str, Any], negatable: tuple[str, ...] = ()) -> list[str]:
    """Step arguments -> command-line options (the extract step only): key `a_b` -> `--a-b`; True -> flag;
    False -> left out (or `--no-KEY` for negatable options); None -> left out; a list -> the option repeated."""
    argv: list[str] = []
    for key, value in args.items():
        opt = "--" + key.replace("_", "-")
        if value is None:
            continue
        if isinstance(value, bool):
            if value:
                argv.append(opt)
            elif key in negatable:
                argv.append("--no-" + key.replace("_", "-"))
            continue
        for v in value if isinstance(value, list | tuple) else [value]:
            if isinstance(v, dict | list):
                raise StepError(f"option {key}: nested value {v!r} cannot be a command-line value")
            argv += [opt, _scalar(v)]
    return argv


def _scalar(v: Any) -> str:
    return repr(v) if isinstance(v, float) else str(v)


def invoke(command: click.Command, argv: list[str], step: ResolvedStep) -> None:
    """Run a click command in-process (standalone_mode=False) and turn its usage errors into StepError."""
    try:
        command.main(args=argv, prog_name=f"{step.kind}", standalone_mode=False)
    except click.exceptions.Abort as exc:
        if isinstance(exc.__context__, KeyboardInterrupt):  # Ctrl-C without run_cli's handler (a Python caller)
            raise Interrupted(signal.SIGINT) from None
        raise
    except click.ClickException as exc:
        raise StepError(f"step {step.id!r} ({step.kind}): {exc.format_message()}") from exc


PROGRESS_LOG_SECONDS = 30.0
"""How often a progress bar's state (the extract bar under `pipelines run`) becomes a line in pipeline.log."""


class _Lines(io.TextIOBase):
    """A text stream handing each complete line to `say` (the extract command prints its progress). A progress
    bar's carriage-return updates go to the terminal as a live bar when it is one, and every
    PROGRESS_LOG_SECONDS as a line into pipeline.log (and, when the terminal is not one, onto it too)."""

    def __init__(self, say: Callable[..., None], err: bool) -> None:
        self.say, self.err, self.buf, self.busy = say, err, "", False
        self.terminal = sys.stderr if err else sys.stdout  # taken before the redirect
        self.tty = bool(getattr(self.terminal, "isatty", lambda: False)())
        self.last_logged = -PROGRESS_LOG_SECONDS
        self.last_state = ""
        self.bar_shown = False

    def write(self, s: str) -> int:
        if self.busy:  # `say` itself printed to sys.stdout (which is this stream): straight to the terminal
            return self.terminal.write(s)
        self.buf += s
        *lines, self.buf = self.buf.split("\n")
        if "\r" in self.buf:  # a bar's updates (tqdm writes '\r' + state): each state, the newest kept as buf
            *states, self.buf = self.buf.split("\r")
            for state in [*states, self.buf]:
                self._progress(state)
        self.busy = True
        try:
            for line in lines:
                line = line.rsplit("\r", 1)[-1]
                if self.bar_shown:
                    self.terminal.write("\r\x1b[K")  # the finished bar is said as a line below
                    self.bar_shown = False
                self.say(line, err=self.err)
        finally:
            self.busy = False
        return len(s)

    def _progress(self, state: str) -> None:
        import time

        if not state.strip() or state == self.last_state:
            return
        self.last_state = state
        if self.tty:
            self.terminal.write("\r" + state)
            self.terminal.flush()
            self.bar_shown = True
        now = time.monotonic()
        if now - self.last_logged < PROGRESS_LOG_SECONDS:
            return
        self.last_logged = now
        log_only = getattr(self.say, "log_only", None)
        self.busy = True
        try:
            if self.tty and log_only is not None:
                log_only(f"progress: {state.strip()}")
            elif not self.tty:
                self.say(f"progress: {state.strip()}", err=self.err)
        finally:
            self.busy = False

    def close_line(self) -> None:
        if self.buf:
            line, self.buf = self.buf, ""
            self.write(line + "\n")


@contextmanager
def _said(ctx: StepContext) -> Iterator[None]:
    """What a click command prints while it runs in-process goes through `ctx.say` (terminal and log)."""
    out, err = _Lines(ctx.say, False), _Lines(ctx.say, True)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            yield
    finally:
        out.close_line()
        err.close_line()


def store_digest(path: str | Path) -> str:
    """sha256 over a store's attributes and its chunk-done mask: what analyses read from it changes with either."""
    from featurestore.store import FeatureStore

    with FeatureStore.open(path) as store:
        h = hashlib.sha256(json.dumps(store.attrs, sort_keys=True, default=str).encode())
        h.update(np.ascontiguousarray(store.chunk_done(), dtype=np.uint8).tobytes())
    return h.hexdigest()


def file_identity(path: Path) -> dict[str, Any]:
    """Size and modification time of an input file (a checkpoint): cheap, and changes when the file is replaced."""
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def output_files(folder: Path) -> dict[str, int]:
    """Every file under `folder` except the marker and the ownership record, relative path -> size."""
    if not folder.is_dir():
        return {}
    skip = {*STEP_FILES, OWNER_FILE, f"{OWNER_FILE}.tmp"}
    return {
        str(p.relative_to(folder)): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file() and str(p.relative_to(folder)) not in skip
    }


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _step_owned(step: ResolvedStep) -> tuple[str, ...]:
    """Files of the step folder the runner may delete besides those of its ownership record: the marker,
    and, for a folder written before ownership records existed, the outputs its step.json lists."""
    names = list(STEP_FILES)
    if not (step.dir / OWNER_FILE).exists():
        try:
            marker = json.loads((step.dir / MARKER).read_text())
        except (OSError, ValueError):
            marker = None
        if isinstance(marker, dict) and marker.get("id") == step.id and isinstance(marker.get("outputs"), dict):
            names += list(marker["outputs"])
    return tuple(names)


def _fresh_dir(step: ResolvedStep, ctx: StepContext) -> Path:
    """Empty the step's own folder (only ever <run folder>/<step id>) of what this tool wrote there before an
    analysis writes into it; a folder holding anything else (a user's folder of the same name) is refused."""
    if step.dir.resolve().parent != ctx.out_dir.resolve():
        raise StepError(f"step {step.id!r}: its folder {step.dir} is not inside the run folder {ctx.out_dir}")
    owned = _step_owned(step)
    try:
        check_out_dir(step.dir, True, _caches(step), owned, option=f"step {step.id!r}: folder")
    except OutputExistsError as exc:
        raise StepError(f"{exc} (nothing was deleted)") from None
    if step.dir.is_dir():
        clear_owned(step.dir, owned)
    step.dir.mkdir(parents=True, exist_ok=True)
    return step.dir


# ---- extract --------------------------------------------------------------------------------------


def run_extract(step: ResolvedStep, ctx: StepContext) -> list[Path]:
    """`extract` into the step's store: resumes a partly written one, starts again when ctx.overwrite."""
    from extract.cli import cli as extract_cli
    from featurestore.store import FeatureStore

    args = {k: v for k, v in step.args.items() if k not in ("out", "overwrite")}
    # no forced --quiet: the bar shows on a terminal and its state goes into pipeline.log (_Lines)
    step.dir.mkdir(parents=True, exist_ok=True)
    argv = to_cli_args(args, negatable=("flip",)) + ["--out", str(step.store)]
    if ctx.overwrite:
        argv.append("--overwrite")
    with _said(ctx):
        invoke(extract_cli, argv, step)
    with FeatureStore.open(step.store) as store:
        done = store.chunk_done()
    if not done.all():
        raise StepError(
            f"step {step.id!r}: store {step.store} has {int(done.sum())} of {len(done)} chunks done "
            "(another shard still to run?); the analyses need a complete store"
        )
    return [step.store]


def _extract_files(step: ResolvedStep) -> list[Path]:
    files = [step.args.get("checkpoint")]
    for m in _as_list(step.args.get("model")):
        _, _, rest = str(m).partition("=")
        ckpt, _, config = rest.partition(":")
        files += [ckpt, config]
    files += _as_list(step.args.get("config"))
    return [Path(str(f)) for f in files if f and Path(str(f)).is_file()]


# ---- analyze commands -------------------------------------------------------------------------------


def _analysis_runner(command: str) -> Callable[[ResolvedStep, StepContext], list[Path]]:
    """A step running `analyze.commands.<command>` with options from the step's YAML, into the step's folder."""
    options_cls, function = ANALYSES[command]

    def run(step: ResolvedStep, ctx: StepContext) -> list[Path]:
        where = f"step {step.id!r} ({step.kind})"
        if "cache" not in step.args:
            raise StepError(f"{where}: needs 'cache' (a store, e.g. ${{steps.extract.store}})")
        caches = _as_list(step.args["cache"])
        if command != "distribution" and len(caches) != 1:
            raise StepError(f"{where}: 'cache' is one store, got {len(caches)}")
        try:
            options = options_from_args(options_cls, {k: v for k, v in step.args.items() if k != "cache"}, where)
        except ValueError as exc:
            raise StepError(str(exc)) from None
        out = _fresh_dir(step, ctx)
        try:
            result = function([str(c) for c in caches] if command == "distribution" else str(caches[0]), out, options)
        except CommandError as exc:
            raise StepError(f"{where}: {exc}") from None
        for note in result.notes:
            ctx.say(note, err=True)
        ctx.say(result.text)
        ctx.say(result.footer)
        return [out / f for f in output_files(out)]

    run.__doc__ = f"`analyze.commands.{command}` into the step's folder (emptied first of what this tool wrote there)."
    return run


def _store_incomplete(step: ResolvedStep, marker: dict[str, Any]) -> str | None:
    """An extract step's outputs are complete when its store opens and every chunk is done."""
    from featurestore.errors import StoreError
    from featurestore.store import FeatureStore

    try:
        with FeatureStore.open(step.store) as store:
            done = store.chunk_done()
    except StoreError as exc:
        return f"store unreadable ({exc})"
    return None if done.all() else f"store {step.store} has {int(done.sum())}/{len(done)} chunks done"


def _caches(step: ResolvedStep) -> list[Path]:
    return [Path(str(c)) for c in _as_list(step.args.get("cache"))]


# ---- report ----------------------------------------------------------------------------------------


def run_report(step: ResolvedStep, ctx: StepContext) -> list[Path]:
    """The run's HTML report and Markdown summary from the steps it names (default: every earlier step)."""
    out = _fresh_dir(step, ctx)
    with claim_out_dir(out, False, "pipelines report") as owned:
        written = write_report(step, ctx, out)
        owned.finish()
    return written


# ---- train ------------------------------------------------------------------------------------------------


def run_train(step: ResolvedStep, ctx: StepContext) -> list[Path]:
    """pipelines.train_step into the step's folder: continues its runs (train --resume) when the step was
    interrupted (no step.json) or its outputs are incomplete with the same fingerprint; starts again when its
    inputs or parameters changed (the warm-up changes what a fine-tune starts from)."""
    if step.dir.resolve().parent != ctx.out_dir.resolve():
        raise StepError(f"step {step.id!r}: its folder {step.dir} is not inside the run folder {ctx.out_dir}")
    try:
        marker = json.loads((step.dir / MARKER).read_text())
    except (OSError, ValueError):
        marker = None
    resume = marker is None or marker.get("fingerprint") == fingerprint(fingerprint_payload(step, ctx))
    (step.dir / MARKER).unlink(missing_ok=True)
    try:
        written = train_step.run_train(step, ctx, resume)
    except TrainStepError as exc:
        raise StepError(str(exc)) from None
    skip = {*STEP_FILES}
    return [p for p in written if p.name not in skip]


ANALYSES: dict[str, tuple[type, Callable[..., CommandResult]]] = {
    "reject": (RejectOptions, commands.reject),
    "fusion": (FusionOptions, commands.fusion),
    "roc": (RocOptions, commands.roc),
    "distribution": (DistributionOptions, commands.distribution),
    "identify": (IdentifyOptions, commands.identify),
    "accuracy": (AccuracyOptions, commands.accuracy),
}
"""The analysis step kinds: the options dataclass a step's YAML fills and the function it calls."""


def _analysis(command: str) -> StepKind:
    options_cls, _ = ANALYSES[command]
    return StepKind(command, _analysis_runner(command), runtime_keys(options_cls), store_inputs=_caches)


KINDS: dict[str, StepKind] = {
    "extract": StepKind(
        "extract",
        run_extract,
        runtime_keys=frozenset({"device", "batch_size", "workers", "quiet", "shard", "overwrite"}),
        resume_keys=frozenset({"data_root"}),
        file_inputs=_extract_files,
        incomplete=_store_incomplete,
        writes_store=True,
    ),
    **{command: _analysis(command) for command in ANALYSES},
    "report": StepKind("report", run_report),
    "train": StepKind(
        "train", run_train, TRAIN_RUNTIME_KEYS, store_inputs=train_step.store_inputs, file_inputs=train_step.file_inputs
    ),  # fmt: skip
}
"""Every step kind by name (pipelines.spec.KINDS lists the same names)."""


def fingerprint_payload(step: ResolvedStep, ctx: StepContext) -> dict[str, Any]:
    """What a step's outputs are made from: its kind, arguments (less runtime-only ones), the digests of the
    stores it reads, the identity of its input files and the fingerprints of the steps it needs."""
    kind = KINDS[step.kind]
    return {
        "format": FINGERPRINT_FORMAT,
        "kind": step.kind,
        "args": {k: v for k, v in step.args.items() if k not in kind.runtime_keys},
        "stores": {str(p): store_digest(p) for p in kind.store_inputs(step)},
        "files": {str(p): file_identity(p) for p in kind.file_inputs(step)},
        "needs": {d: ctx.records[d]["fingerprint"] for d in step.needs if d in ctx.records},
    }


def fingerprint(payload: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of a fingerprint payload."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Which parts of two payloads differ, as readable names (args.far, stores.<path>, needs.extract, ...)."""
    out = []
    for part in ("format", "kind"):
        if old.get(part) != new.get(part):
            out.append(part)
    for part in ("args", "stores", "files", "needs"):
        a, b = old.get(part) or {}, new.get(part) or {}
        out += [f"{part}.{k}" for k in sorted(set(a) | set(b), key=str) if a.get(k) != b.get(k)]
    return out
