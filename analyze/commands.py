"""One Python entry per table-writing `analyze` command: `reject`, `fusion`, `roc` and `distribution`.

Each takes the store path(s), an output folder (None: beside the store) and a frozen options dataclass, and
returns a `CommandResult` (the tables, the run report, the lines to print). The click commands in
`analyze/cli.py` and `analyze/distribution_cli.py` only parse options into the dataclass and call these;
pipeline steps (`pipelines/steps.py`) build the same dataclass from a step's YAML (`options_from_args`) and
call the same function, so a command is implemented once. Fields marked `runtime(...)` (workers, cluster,
force) do not change what is written and are left out of a pipeline step's fingerprint (`runtime_keys`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from analyze import experiments
from analyze.det import EER_RULE
from analyze.distribution import gallery, plot_distributions, quantities_of, summarize, uncertainty_table
from analyze.figure_pool import draw_split, load_figures, second_process
from analyze.loading import resolve_models
from analyze.outputs import (
    OutputExistsError,
    OwnedOutput,
    auc_table_text,
    check_out_dir,
    claim_out_dir,
    dask_scheduler,
    default_out_dir,
    write_json,
    write_table,
)
from analyze.reject import REFERENCE_ORDERS
from analyze.scores import mls_summation
from analyze.tables import far_pivot, method_labels
from analyze.timing import StageTimes, stage, timed_run
from analyze.vocabulary import check_distance, fusion_spec, metric_specs
from featurestore.errors import StoreError
from featurestore.schema import STATUS_OK
from featurestore.store import FeatureStore

__all__ = [
    "CommandError",
    "CommandResult",
    "DistributionOptions",
    "FusionOptions",
    "RejectOptions",
    "RocOptions",
    "distribution",
    "fusion",
    "options_from_args",
    "parse_fractions",
    "reject",
    "roc",
    "runtime_keys",
    "dataset_labels",
]


def runtime(default: Any, key: str | None = None) -> Any:
    """A field that does not change the outputs (scheduler, cluster, force): not part of a fingerprint."""
    return field(default=default, metadata={"fingerprint": False, **({"key": key} if key else {})})


def option(default: Any, key: str) -> Any:
    """A field read from the step/command-line key `key` (e.g. fusions <- 'fusion')."""
    return field(default=default, metadata={"key": key})


@dataclass(frozen=True)
class TableOptions:
    """What every table-writing command shares."""

    models: tuple[str, ...] = option((), "model")
    protocol: str | None = None
    partial: bool = False
    figures: bool = True
    force: bool = runtime(False)
    scheduler: str | None = runtime(None)
    cluster: str | None = runtime(None)
    figure_style: Any = None
    """analyze.figures.FigureStyle (labels, methods, titles, size, dpi, style sheet); None: the built-in look."""


@dataclass(frozen=True)
class RejectOptions(TableOptions):
    """`analyze reject`: reject verification (the paper's recompute threshold, or the fixed-threshold EDC)."""

    level: str | None = None
    fusions: tuple[str, ...] = option((), "fusion")
    metrics: tuple[str, ...] = option((), "metric")
    fars: tuple[float, ...] = option((), "far")
    fractions: tuple[float, float, int] = option(experiments.PAPER_FRACTIONS, "rejected")
    threshold_mode: str = option("recompute", "threshold")
    convention: str = "exact"
    bias: float | None = None
    discard_limit: float = 0.3
    allow_tiny_far: bool = False
    bootstrap: int = 0
    seed: int = 0
    references: bool = option(True, "no_references")
    mls_exact: bool = False
    """MLS by the exact kernel (numpy's summation, bit-identical to earlier runs) instead of the fast default."""


@dataclass(frozen=True)
class FusionOptions(TableOptions):
    """`analyze fusion`: TAR@FAR of each fusion x distance over template pairs."""

    fusions: tuple[str, ...] = option((), "fusion")
    distances: tuple[str, ...] = option((), "distance")
    fars: tuple[float, ...] = option((), "far")
    convention: str = "exact"
    allow_tiny_far: bool = False
    bootstrap: int = 0
    seed: int = 0
    media_norm: bool = option(True, "media_no_norm")
    media_detector: bool = option(True, "media_no_detector")
    media_flip: bool = option(True, "media_no_flip")
    mls_exact: bool = False
    """As RejectOptions.mls_exact."""


@dataclass(frozen=True)
class RocOptions(TableOptions):
    """`analyze roc`: insightface's ROC table and the ROC curves."""

    fusions: tuple[str, ...] = option((), "fusion")
    fars: tuple[float, ...] = option((), "far")
    convention: str = "nearest"
    allow_tiny_far: bool = False
    bootstrap: int = 0
    seed: int = 0


@dataclass(frozen=True)
class DistributionOptions:
    """`analyze distribution`: per-image uncertainty tables, summaries, histograms and galleries."""

    models: tuple[str, ...] = option((), "model")
    data_roots: tuple[str, ...] = option((), "data_root")
    gallery_size: int = 8
    bins: int = 50
    force: bool = runtime(False)


NEGATED = {"figures": "no_figures", "media_norm": "media_no_norm", "media_detector": "media_no_detector"}
NEGATED["media_flip"] = "media_no_flip"
NEGATED |= {"reject": "no_reject", "flip": "no_flip", "references": "no_references"}
"""Boolean fields whose step/command-line key is the negative flag (`no_figures: true` -> figures False)."""


@dataclass
class CommandResult:
    """What a command wrote and says: its folder, tables by name, the run report, stdout text, stderr notes."""

    command: str
    out_dir: Path
    tables: dict[str, pd.DataFrame]
    report: Any
    text: str
    notes: list[str] = field(default_factory=list)
    footer: str = ""

    def lines(self) -> list[str]:
        """Everything the command says, stdout and stderr lines together (a pipeline step logs these)."""
        return [*self.notes, self.text, self.footer]


# ---------------------------------------------------------------- options from a mapping (pipeline steps)


def _key(f: dataclasses.Field) -> str:
    return NEGATED.get(f.name) or f.metadata.get("key") or f.name


def runtime_keys(cls: type) -> frozenset[str]:
    """The step keys of `cls` that do not count for a fingerprint."""
    return frozenset(_key(f) for f in dataclasses.fields(cls) if not f.metadata.get("fingerprint", True))


def parse_fractions(value: Any) -> tuple[float, float, int]:
    """Rejected fractions np.linspace(START, STOP, NUM) from 'START:STOP:NUM', [START, STOP, NUM] or
    {start, stop, num}; 0 <= START <= STOP < 1 and NUM >= 2. ValueError naming the rule broken."""
    text = value if isinstance(value, str) else repr(value)
    try:
        if isinstance(value, str):
            a, b, n = value.split(":")
        elif isinstance(value, Mapping):
            if set(value) != {"start", "stop", "num"}:
                raise ValueError
            a, b, n = value["start"], value["stop"], value["num"]
        else:
            a, b, n = value
        start, stop, num = float(a), float(b), int(n)
        if isinstance(n, float) and n != num:
            raise ValueError
    except (ValueError, TypeError):
        other = "" if isinstance(value, str) else " (or [START, STOP, NUM], or a mapping of start, stop, num)"
        raise ValueError(f"{text!r}: expected START:STOP:NUM, e.g. 0:0.5:250{other}") from None
    if not (math.isfinite(start) and math.isfinite(stop)) or not 0 <= start <= stop:
        raise ValueError(f"{text!r}: need 0 <= START <= STOP")
    if stop >= 1:
        raise ValueError(f"{text!r}: STOP must be below 1: rejecting every pair leaves no pairs to measure a TAR on")
    if num < 2:
        raise ValueError(f"{text!r}: NUM must be at least 2 (a curve has two ends)")
    return start, stop, num


def _convert(f: dataclasses.Field, value: Any, where: str) -> Any:
    key = _key(f)
    if f.name == "fractions":
        try:
            return parse_fractions(value)
        except ValueError as exc:
            raise ValueError(f"{where}: {key}: {exc}") from None
    if f.name in NEGATED:
        if not isinstance(value, bool):
            raise ValueError(f"{where}: {key} must be true or false, got {value!r}")
        return not value
    default = f.default
    if isinstance(default, tuple):
        items = list(value) if isinstance(value, list | tuple) else [value]
        if f.name in ("fars", "fpirs", "ranks"):
            kind = int if f.name == "ranks" else float
            try:
                return tuple(kind(v) for v in items)
            except (TypeError, ValueError):
                raise ValueError(f"{where}: {key}: every value must be a number, got {value!r}") from None
        return tuple(str(v) for v in items)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{where}: {key} must be true or false, got {value!r}")
        return value
    if isinstance(default, int | float) or f.name == "bias":
        try:
            number = float(value) if f.name == "bias" or isinstance(default, float) else int(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: {key} must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ValueError(f"{where}: {key} must be finite, got {value!r}")
        return number
    return None if value is None else str(value)


def options_from_args(cls: type, args: Mapping[str, Any], where: str, skip: tuple[str, ...] = ()) -> Any:
    """`cls` built from a step's YAML keys (the command-line names with '_': model, far, rejected, no_figures);
    None means the default; an unknown key is an error naming `where` and listing the valid keys."""
    by_key = {_key(f): f for f in dataclasses.fields(cls)}
    unknown = [k for k in args if k not in by_key and k not in skip]
    if unknown:
        raise ValueError(f"{where}: unknown option(s) {', '.join(map(str, unknown))}; valid: {', '.join(by_key)}")
    values = {by_key[k].name: _convert(by_key[k], v, where) for k, v in args.items() if k in by_key and v is not None}
    return cls(**values)


# ---------------------------------------------------------------- the commands


def check_names(metrics=(), fusions=(), distances=()) -> None:
    """Metric, fusion and distance names, checked before the store is read or a folder made."""
    for m in metrics:
        metric_specs(m)
    for f in fusions:
        fusion_spec(f)
    for d in distances:
        check_distance(d)


def exclusion_notes(report: experiments.RunReport) -> list[str]:
    """What the run left out and why (stderr lines): images not done, failed or NaN; pairs dropped; FARs dropped."""
    notes = []
    ex = report.excluded
    left = ex.get("images_not_done", 0)
    if left:
        notes.append(f"--partial: {left:,} images not yet extracted were left out")
    if ex.get("images_failed") or ex.get("images_nan"):
        notes.append(f"excluded {ex['images_failed']:,} failed images and NaN outputs {ex['images_nan']}")
    for key, p in report.pairs.items():
        if p["dropped"]:
            notes.append(
                f"{key}: {p['dropped']:,} of {p['pairs']:,} pairs dropped (an image or template without valid outputs)"
            )
    for key, d in report.fars_dropped.items():
        fars = ", ".join(f"{f:g}" for f in d["fars"])
        notes.append(
            f"note: {key}: default FAR {fars} not reported: below 1/n_impostors = {d['smallest_far']:.3g} "
            f"(n_impostors = {d['n_impostors']:,}); --allow-tiny-far reports such FARs anyway"
        )
    return notes


def _models(o: TableOptions) -> list[str] | None:
    return list(o.models) or None


@contextmanager
def _claimed(
    store: str | Path, out: str | Path | None, o: TableOptions, command: str
) -> Iterator[tuple[FeatureStore, OwnedOutput, str]]:
    """The frame of a table command: the store open (models and protocol checked), the Dask scheduler up, and
    the output folder (default beside the store) claimed; yields (store, owned folder, scheduler text)."""
    with FeatureStore.open(store) as st, dask_scheduler(o.scheduler, o.cluster) as where:
        experiments.select(st, _models(o), o.protocol)
        with claim_out_dir(out or default_out_dir(store, command), o.force, f"analyze {command}", [store]) as owned:
            yield st, owned, where


def reject(store: str | Path, out: str | Path | None, options: RejectOptions) -> CommandResult:
    """Reject verification into `out`: reject.parquet/.csv, auc.csv, summary.json, figures (unless not figures)."""
    o = options
    check_names(o.metrics, o.fusions)
    if o.bootstrap and o.threshold_mode != "recompute":
        raise CommandError(
            "--bootstrap resamples the recompute curve only (the fixed-threshold EDC discards tied qualities "
            f"together, which pair weights do not express; got --threshold {o.threshold_mode})",
            "--bootstrap",
        )
    details: dict[str, list[pd.DataFrame]] = {}
    with (
        timed_run() as times,
        _claimed(store, out, o, "reject") as (st, owned, where),
        second_process(o.figures) as submit,  # its job is waited for before the folder is recorded
        mls_summation(o.mls_exact),
    ):
        submit(load_figures)  # the figure worker starts (imports) while the curves are computed
        df, auc_df, report = experiments.run_reject(
            st,
            models=_models(o),
            protocol=o.protocol,
            level=o.level,
            fusions=list(o.fusions) or None,
            metrics=list(o.metrics) or None,
            fars=o.fars or None,
            fractions=o.fractions,
            threshold_mode=o.threshold_mode,
            convention=o.convention,
            partial=o.partial,
            bias=o.bias,
            discard_limit=o.discard_limit,
            allow_tiny_far=o.allow_tiny_far,
            details=details,
            bootstrap=o.bootstrap,
            seed=o.seed,
            references=o.references,
        )
        report.params["references"] = dict(REFERENCE_ORDERS) if o.references else {}
        _resolve_params(report, df, fusions="fusion", metrics=("distance", "uncertainty"))
        report.results = {"auc": _records(auc_df, ["model", "fusion", "distance", "uncertainty", "far", "auc"])}
        _provenance(report, st, where)
        out_dir = owned.path
        with stage("write"):
            owned.add(*write_table(df, out_dir, "reject"))
            auc_df.to_csv(out_dir / "auc.csv", index=False)
            owned.add(out_dir / "auc.csv")
            extra = {name: pd.concat(details[name], ignore_index=True) for name in REJECT_DETAILS if details.get(name)}
            for name, table in extra.items():
                if name == "reference_auc":
                    table.to_csv(out_dir / "reference_auc.csv", index=False)
                    owned.add(out_dir / "reference_auc.csv")
                else:
                    owned.add(*write_table(table, out_dir, name))
        if o.figures:
            from analyze.figures import plot_reject_figures

            with stage("figures"):  # every second figure is drawn by the worker
                ref = extra.get("reference")
                draw_split(submit, plot_reject_figures, df, out_dir / "figures", reference=ref, style=o.figure_style)
        _write_summary(report, times, owned)
        owned.finish()
    lines = [
        f"AUC of TAR over rejected fraction ({o.threshold_mode}, {o.convention} convention):",
        auc_table_text(auc_df),
    ]
    if "edc" in extra:
        edc = extra["edc"]
        pivot = far_pivot(edc.assign(method=method_labels(edc, "terminal")), "method", "pauc_minus_ideal")
        lines += [
            f"EDC partial AUC up to {o.discard_limit:g} minus the ideal curve's"
            + (" (oracle and random: references):" if o.references else ":"),
            pivot.to_string(float_format=lambda v: f"{v:.4f}"),
        ]
    text = "\n".join(lines)
    tables = {"reject": df, "auc": auc_df, **extra}
    return CommandResult("reject", out_dir, tables, report, text, exclusion_notes(report), _footer(out_dir, times))


REJECT_DETAILS = ("reference", "reference_auc", "edc")
"""The tables `reject` writes beside reject and auc: the oracle and random reference curves (rows with
uncertainty `oracle` / `random`, analyze.reject.REFERENCE_ORDERS) and their AUCs, and with --threshold fixed
the EDC's partial areas (raw, ideal, difference; analyze.tables.EDC_COLUMNS) of methods and references."""


def fusion(store: str | Path, out: str | Path | None, options: FusionOptions) -> CommandResult:
    """Template fusion table into `out`: fusion.parquet/.csv, summary.json, figures (unless not figures)."""
    o = options
    check_names(fusions=o.fusions, distances=o.distances)
    media = {"keep_norm": o.media_norm, "use_detector_score": o.media_detector, "add_flip": o.media_flip}
    with timed_run() as times, _claimed(store, out, o, "fusion") as (st, owned, where), mls_summation(o.mls_exact):
        df, report = experiments.run_fusion_table(
            st,
            models=_models(o),
            protocol=o.protocol,
            fusions=list(o.fusions) or None,
            distances=list(o.distances) or None,
            fars=o.fars or None,
            convention=o.convention,
            partial=o.partial,
            fusion_options=media,
            allow_tiny_far=o.allow_tiny_far,
            bootstrap=o.bootstrap,
            seed=o.seed,
        )
        _resolve_params(report, df, fusions="fusion", distances="distance")
        report.results = {"tar": _records(df, ["model", "fusion", "distance", "far", "tar"])}
        _provenance(report, st, where)
        out_dir = owned.path
        with stage("write"):
            owned.add(*write_table(df, out_dir, "fusion"))
        if o.figures:
            from analyze.figures import plot_fusion

            with stage("figures"):
                plot_fusion(df, out_dir / "figures", style=o.figure_style)
        _write_summary(report, times, owned)
        owned.finish()
    table = far_pivot(df, ["model", "fusion", "distance"], "tar")
    text = "\n".join(
        [
            f"TAR@FAR ({o.convention} convention):",
            table.to_string(float_format=lambda v: f"{v:.4f}"),
        ]
    )
    footer = _footer(out_dir, times)
    return CommandResult("fusion", out_dir, {"fusion": df}, report, text, exclusion_notes(report), footer)


def roc(store: str | Path, out: str | Path | None, options: RocOptions) -> CommandResult:
    """ROC table and curves into `out`: roc_table and roc_curve (.parquet/.csv), summary.json, figures."""
    o = options
    check_names(fusions=o.fusions)
    details: dict[str, list[pd.DataFrame]] = {}
    with (
        timed_run() as times,
        _claimed(store, out, o, "roc") as (st, owned, where),
        second_process(o.figures) as submit,  # its job is waited for before the folder is recorded
    ):
        submit(load_figures)  # the figure worker starts (imports) while the curve is computed
        table, curve_df, report = experiments.run_roc(
            st,
            models=_models(o),
            protocol=o.protocol,
            fusions=list(o.fusions) or None,
            fars=o.fars or None,
            convention=o.convention,
            partial=o.partial,
            allow_tiny_far=o.allow_tiny_far,
            details=details,
            bootstrap=o.bootstrap,
            seed=o.seed,
        )
        _resolve_params(report, curve_df, fusions="fusion")
        report.results = {"tar": table.to_dict(orient="records")}
        _provenance(report, st, where)
        out_dir = owned.path
        with stage("write"):
            owned.add(*write_table(table, out_dir, "roc_table"), *write_table(curve_df, out_dir, "roc_curve"))
            extra = {name: pd.concat(details[name], ignore_index=True) for name in ROC_DETAILS if details.get(name)}
            for name, df in extra.items():
                owned.add(*write_table(df, out_dir, name))
        if o.figures:
            from analyze.figures import plot_roc_figures

            with stage("figures"):  # the ROC and the DET figure: one drawn by the worker
                draw_split(
                    submit,
                    plot_roc_figures,
                    curve_df,
                    out_dir / "figures",
                    det=extra.get("det"),
                    eer=extra.get("eer"),
                    intervals=extra.get("roc_interval"),
                    style=o.figure_style,
                )
        _write_summary(report, times, owned)
        owned.finish()
    lines = [f"TAR@FAR ({o.convention} convention):", table.to_string(index=False, float_format=lambda v: f"{v:.4f}")]
    if "eer" in extra:
        eer_df = extra["eer"][["model", "fusion", "eer", "threshold"]]
        lines += [f"EER ({EER_RULE}):", eer_df.to_string(index=False, float_format=lambda v: f"{v:.4f}")]
    text = "\n".join(lines)
    tables = {"roc_table": table, "roc_curve": curve_df, **extra}
    return CommandResult("roc", out_dir, tables, report, text, exclusion_notes(report), _footer(out_dir, times))


ROC_DETAILS = ("eer", "det", "roc_long", "roc_interval")
"""The tables `roc` writes beside roc_table and roc_curve (analyze.det): EER per (model, fusion), the DET
points (FNMR vs FMR, thinned for a log-log figure), the tidy long ROC (far, tar, threshold) and, with
--bootstrap N, roc_interval (model, fusion, far, tar, tar_lo, tar_hi, bootstrap, resampled)."""


def identify(store: str | Path, out: str | Path | None, options: Any) -> CommandResult:
    """`analyze identify` (analyze.identify.run_identify with its IdentifyOptions) as a CommandResult."""
    from analyze.identify import result_lines, run_identify

    res = run_identify(store, out, options)
    notes, lines = result_lines(res)
    tables = {"tpir": res.tpir, "cmc": res.cmc, "reject": res.reject, "reject_auc": res.reject_auc}
    return CommandResult("identify", res.out, tables, res.summary, "\n".join(lines[:-1]), notes, lines[-1])


def accuracy(store: str | Path, out: str | Path | None, options: Any) -> CommandResult:
    """`analyze accuracy` (analyze.accuracy_cli.run_accuracy with its AccuracyOptions) as a CommandResult."""
    from analyze.accuracy_cli import accuracy_lines, run_accuracy

    with FeatureStore.open(store) as st:
        run = run_accuracy(st, out, options)
    notes, lines = accuracy_lines(run, options)
    tables = {"accuracy": run.accuracy, "accuracy_folds": run.folds, "accuracy_reject": run.reject}
    return CommandResult("accuracy", run.out, tables, run.summary, "\n".join(lines), notes, f"wrote {run.out}")


def _records(df: pd.DataFrame, columns: list[str]) -> list[dict[str, Any]]:
    """The headline rows of a table for summary.json (the columns present of `columns`)."""
    return df[[c for c in columns if c in df.columns]].to_dict(orient="records")


def _resolve_params(report: experiments.RunReport, df: pd.DataFrame, **columns: str | tuple[str, str]) -> None:
    """Parameters left to their defaults (None) recorded as what the run resolved them to, read off its table
    (fusions, metrics, distances), so summary.json never says null for a value it used."""
    for key, col in columns.items():
        if report.params.get(key) is not None or df.empty:
            continue
        if isinstance(col, tuple):
            values = [f"{d}_{u}" if isinstance(u, str) and u else str(d) for d, u in zip(df[col[0]], df[col[1]])]
        else:
            values = [str(v) for v in df[col]]
        report.params[key] = list(dict.fromkeys(values))


def _footer(out_dir: Path, times: StageTimes) -> str:
    """The command's last line: where it wrote, and where the time went."""
    return f"wrote {out_dir}\n{times.line()}"


def _write_summary(report: experiments.RunReport, times: StageTimes, owned: OwnedOutput) -> None:
    """summary.json, written last so that its `timings` (analyze.timing) cover the tables and figures too."""
    report.timings = times.as_dict()
    owned.add(write_json(report, owned.path / "summary.json"))


def _provenance(report: experiments.RunReport, store: FeatureStore, scheduler: str) -> None:
    """Where the run ran (the scheduler) and the command line, toolkit version and store digest in summary.json
    (analyze.outputs.provenance)."""
    from analyze.outputs import provenance

    report.params["scheduler"] = scheduler
    report.provenance = provenance(store)


class CommandError(Exception):
    """Bad input a command refuses before or while writing; `param_hint` names the option at fault (the click
    command shows it as that option's error; a pipeline step as a step error)."""

    def __init__(self, message: str, param_hint: str | None = None) -> None:
        super().__init__(message)
        self.param_hint = param_hint


@contextmanager
def command_errors() -> Iterator[None]:
    """For a click command: a CommandError becomes that option's BadParameter, or a one-line ClickException."""
    import click

    try:
        yield
    except CommandError as exc:
        if exc.param_hint:
            raise click.BadParameter(str(exc), param_hint=exc.param_hint) from None
        raise click.ClickException(str(exc)) from None


def _open(path: str) -> FeatureStore:
    try:
        return FeatureStore.open(path)
    except StoreError as exc:
        raise CommandError(str(exc)) from exc


def _distinct_caches(caches: list[str]) -> None:
    """The same store given twice would be counted twice under two labels: refuse it."""
    seen: dict[Path, str] = {}
    for c in caches:
        key = Path(c).resolve()
        if key in seen:
            raise CommandError(f"{c} is the same store as {seen[key]}; give each store once", "--cache")
        seen[key] = c


def _resolve_models(stores: list[FeatureStore], wanted: tuple[str, ...]) -> list[str]:
    """The models to analyse: those asked for (each must be in at least one store), else all."""
    specs = {m: spec for s in reversed(stores) for m, spec in s.models.items()}
    known = list(dict.fromkeys(m for s in stores for m in s.models))
    if not wanted:
        return known
    resolved = []
    for w in wanted:  # a unique prefix or family name stands for its model, as in every command (resolve_models)
        try:
            resolved += resolve_models(specs, [w], "the stores")
        except StoreError as exc:
            if "ambiguous" in str(exc):
                raise CommandError(str(exc), "--model") from None
            resolved.append(w)
    wanted = tuple(resolved)
    unknown = [m for m in wanted if m not in known]
    if unknown:
        raise CommandError(
            f"unknown model(s) {', '.join(unknown)}; the stores have: {', '.join(known) or 'none'}", "--model"
        )
    return list(dict.fromkeys(wanted))


def dataset_labels(names: list[str], paths: list[str | Path]) -> list[str]:
    """A unique label per store: its dataset name, and where two share one, `name[part]` with the shortest
    path part that tells them apart: the file stem, else the nearest differing parent folder
    (run1/ijbc.zarr, run2/ijbc.zarr -> ijbc[run1], ijbc[run2]), else the whole path."""
    labels = list(names)
    resolved = [Path(p).resolve() for p in paths]
    for name in dict.fromkeys(names):
        idx = [i for i, n in enumerate(names) if n == name]
        if len(idx) < 2:
            continue
        candidates = [[resolved[i].stem] for i in idx]
        parents = [list(reversed(resolved[i].parent.parts)) for i in idx]
        for depth in range(max(len(p) for p in parents)):
            for c, p in zip(candidates, parents):
                c.append(p[depth] if depth < len(p) else "")
        tags = None
        for k in range(len(candidates[0])):
            parts = [c[k] for c in candidates]
            if len(set(parts)) == len(parts) and all(parts):
                tags = parts
                break
        tags = tags or [str(resolved[i]) for i in idx]
        for i, tag in zip(idx, tags):
            labels[i] = f"{name}[{tag}]"
    return labels


def _exclusions(store: FeatureStore, label: str, models: list[str], tables: dict) -> dict:
    """Which images of one store the distributions leave out and why: not done, status not ok, and per
    model output the ok images whose value is NaN (counted in the table, skipped by the statistics)."""
    done = store.row_done()
    ok = store.status() == STATUS_OK
    nan = {}
    for m in models:
        df = tables.get((label, m))
        if df is None:
            continue
        for q in quantities_of(store, m):
            n = int(df[q].isna().sum())
            if n:
                nan[f"{m}/{q}"] = n
    return {
        "store": str(store.path),
        "dataset": label,
        "images": int(store.n_images),
        "images_not_done": int((~done).sum()),
        "images_failed": int((done & ~ok).sum()),
        "images_nan": nan,
        "images_used": int((done & ok).sum()),
    }


def _summary_text(summary: pd.DataFrame) -> str:
    cols = ["dataset", "model", "quantity", "kind", "count", "mean", "std", "p5", "p50", "p95"]
    if summary.empty:
        return "(no images with status ok in the selected stores and models)"
    return summary[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}")


def distribution(stores: list[str | Path], out: str | Path, options: DistributionOptions) -> CommandResult:
    """Distributions of per-image uncertainty (ScaleFace scale and embedding norm: confidences; PFE harmonic-mean
    sigma^2: uncertainty) over images with status ok, for one or several stores, into `out`."""
    o = options
    caches = [str(c) for c in stores]
    _distinct_caches(caches)
    try:
        check_out_dir(out, o.force, caches)
    except OutputExistsError as exc:
        raise CommandError(str(exc), "--out") from None
    if o.data_roots and len(o.data_roots) != len(caches):
        raise CommandError(
            f"give one --data-root per --cache ({len(caches)}), in the same order; got {len(o.data_roots)}",
            "--data-root",
        )
    opened = [_open(c) for c in caches]
    try:
        selected = _resolve_models(opened, o.models)
        names = dataset_labels([s.dataset or Path(s.path).stem for s in opened], [s.path for s in opened])
        with claim_out_dir(out, o.force, "analyze distribution", caches) as owned:
            return _write_distributions(opened, names, selected, o, owned)
    finally:
        for s in opened:
            s.close()


def _write_distributions(stores, names, selected, o: DistributionOptions, owned: OwnedOutput) -> CommandResult:
    """Tables, summaries, figures and galleries of `distribution` into its claimed folder."""
    out_dir = owned.path
    tables: dict[tuple[str, str], pd.DataFrame] = {}
    notes: list[str] = []
    galleries: list[Path] = []
    for i, (store, dataset) in enumerate(zip(stores, names)):
        root = o.data_roots[i] if o.data_roots else (store.attrs.get("extra") or {}).get("data_root")
        for model in selected:
            if model not in store.models:
                notes.append(f"{store.path}: no model {model!r}, skipped")
                continue
            if not quantities_of(store, model):
                notes.append(f"{store.path}: model {model!r} has no per-image uncertainty output, skipped")
                continue
            df = uncertainty_table(store, model)
            df["dataset"] = dataset
            tables[(dataset, model)] = df
            if o.gallery_size == 0:
                continue
            if not root:
                notes.append(f"{store.path}: no data root recorded (give --data-root), galleries skipped")
                continue
            if not Path(root).is_dir():
                notes.append(f"{store.path}: data root {root} is not a folder, galleries skipped")
                continue
            for q in quantities_of(store, model):
                if df[q].notna().any():
                    galleries.append(
                        gallery(store, model, q, root, out_dir, n=o.gallery_size, table=df, dataset=dataset)
                    )
    excluded = [_exclusions(s, n, selected, tables) for s, n in zip(stores, names)]
    if not tables:
        raise CommandError("nothing to analyse: no selected model has scale, norm or sigma_sq outputs")
    per_image = pd.concat(list(tables.values()), ignore_index=True)
    per_image.to_parquet(out_dir / "uncertainty.parquet", index=False)
    summary = summarize(per_image)
    summary.to_csv(out_dir / "distribution_summary.csv", index=False)
    write_json(summary.to_dict(orient="records"), out_dir / "distribution_summary.json")
    figures = plot_distributions(tables, out_dir, bins=o.bins)
    params = {"stores": [str(s.path) for s in stores], "datasets": names, "models": selected, "bins": o.bins}
    write_json({"params": params, "excluded": excluded}, out_dir / "summary.json")
    owned.finish()
    lines = [_summary_text(summary), *(f"note: {note}" for note in dict.fromkeys(notes))]
    stderr = [
        f"{ex['dataset']}: excluded {ex['images_not_done']:,} images not done, {ex['images_failed']:,} "
        f"failed images and NaN outputs {ex['images_nan']}"
        for ex in excluded
        if ex["images_not_done"] or ex["images_failed"] or ex["images_nan"]
    ]
    footer = f"wrote {len(figures)} distribution figure files and {len(galleries)} galleries to {out_dir}"
    report = {"params": params, "excluded": excluded}
    tables = {"uncertainty": per_image, "summary": summary}
    return CommandResult("distribution", out_dir, tables, report, "\n".join(lines), stderr, footer)
