"""Pipeline files: load and check a YAML pipeline, then resolve its `${...}` placeholders into concrete steps.

A pipeline names parameters (with defaults, or required), and an ordered list of steps, each of a kind
(extract, reject, fusion, roc, distribution, identify, accuracy, report) with arguments that mirror the
command-line options.
`${name}` is a parameter, `${out}` the run folder, `${steps.ID.store}` / `${steps.ID.dir}` another step's
store / folder, `${steps.ID.checkpoint}` (or `scale_checkpoint`, `pfe_checkpoint`) a train step's checkpoint
(each also makes that step a dependency). See docs/pipelines.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from featurestore.resources import package_data_dir
from pipelines import train_spec

PIPELINE_DIR = package_data_dir("pipelines", "configs", "pipelines")
"""Where `load_pipeline('demo')` looks for built-in pipelines: package data `pipelines/configs/pipelines/`
(the repository's configs/pipelines/ links to it)."""

KINDS = ("extract", "reject", "fusion", "roc", "distribution", "identify", "accuracy", "train", "report")
"""Step kinds a pipeline may use (implemented in pipelines.steps)."""

_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_STEP_KEYS = {"id", "kind", "with", "needs", "description"}
_PARAM_KEYS = {"default", "required", "help"}


class PipelineError(Exception):
    """A pipeline file or its parameters are wrong; the message names the file, step, key or parameter."""


class MissingParamError(PipelineError):
    """Required parameters were not given; `missing` lists their names."""

    def __init__(self, message: str, missing: list[str]) -> None:
        super().__init__(message)
        self.missing = missing


@dataclass
class ParamSpec:
    """A pipeline parameter: a default (None: the option is left out), or required."""

    name: str
    default: Any = None
    required: bool = False
    help: str = ""


@dataclass
class StepSpec:
    """One step as written in the file: its id, kind, raw arguments and explicit dependencies."""

    id: str
    kind: str
    args: dict[str, Any]
    needs: list[str] = field(default_factory=list)
    description: str = ""


@dataclass
class PipelineSpec:
    """A parsed pipeline file."""

    name: str
    description: str
    source: str
    params: dict[str, ParamSpec]
    steps: list[StepSpec]


@dataclass
class ResolvedStep:
    """A step with every placeholder filled: concrete arguments, its folder and the steps it needs."""

    id: str
    kind: str
    args: dict[str, Any]
    dir: Path
    needs: list[str]
    description: str = ""

    @property
    def store(self) -> Path:
        """The store an extract step writes: its `out` argument, else <step dir>/<dataset>.zarr."""
        out = self.args.get("out")
        return Path(out) if out else self.dir / f"{Path(str(self.args.get('dataset', 'store'))).stem}.zarr"


def available_pipelines() -> list[PipelineSpec]:
    """The built-in pipelines in configs/pipelines/, sorted by name."""
    return [load_pipeline(p) for p in sorted(PIPELINE_DIR.glob("*.yaml"))]


def load_pipeline(name_or_path: str | Path) -> PipelineSpec:
    """Read a pipeline from a YAML path, or by name from configs/pipelines/<name>.yaml, and check its shape."""
    path = Path(name_or_path)
    if not path.is_file():
        named = PIPELINE_DIR / f"{name_or_path}.yaml"
        if not named.is_file():
            known = ", ".join(sorted(p.stem for p in PIPELINE_DIR.glob("*.yaml"))) or "none"
            raise PipelineError(
                f"pipeline {str(name_or_path)!r}: no such file, and no built-in pipeline of that name "
                f"(built-in: {known})"
            )
        path = named
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise PipelineError(f"{path}: not valid YAML: {exc}") from exc
    return parse_pipeline(data, source=str(path), default_name=path.stem)


def parse_pipeline(data: Any, source: str = "<dict>", default_name: str = "pipeline") -> PipelineSpec:
    """Check a loaded pipeline mapping and turn it into a PipelineSpec; errors name `source` and the key."""
    if not isinstance(data, dict):
        raise PipelineError(f"{source}: expected a mapping with 'steps', got {type(data).__name__}")
    unknown = set(data) - {"name", "description", "params", "steps"}
    if unknown:
        raise PipelineError(
            f"{source}: unknown top-level key(s) {sorted(unknown)}; known: name, description, params, steps"
        )
    params = {}
    raw_params = data.get("params") or {}
    if not isinstance(raw_params, dict):
        raise PipelineError(f"{source}: 'params' must be a mapping of name -> default or {{default, required, help}}")
    for name, value in raw_params.items():
        if not isinstance(name, str) or not _ID.match(name) or name in ("out", "steps"):
            raise PipelineError(
                f"{source}: params: {name!r} is not a valid parameter name (letters, digits, _ and -; "
                "not 'out' or 'steps')"
            )
        if isinstance(value, dict) and set(value) <= _PARAM_KEYS and value:
            params[name] = ParamSpec(
                name, value.get("default"), bool(value.get("required", False)), str(value.get("help", ""))
            )
        else:
            params[name] = ParamSpec(name, value)
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise PipelineError(f"{source}: 'steps' must be a non-empty list")
    steps: list[StepSpec] = []
    for n, raw in enumerate(raw_steps):
        where = f"{source}: steps[{n}]"
        if not isinstance(raw, dict):
            raise PipelineError(f"{where}: expected a mapping with 'id' and 'kind'")
        bad = set(raw) - _STEP_KEYS
        if bad:
            raise PipelineError(f"{where}: unknown key(s) {sorted(bad)}; known: {sorted(_STEP_KEYS)}")
        sid, kind = raw.get("id"), raw.get("kind")
        if not isinstance(sid, str) or not _ID.match(sid):
            raise PipelineError(f"{where}: 'id' must be a name of letters, digits, _ and - (got {sid!r})")
        if any(s.id == sid for s in steps):
            raise PipelineError(f"{where}: step id {sid!r} used twice")
        if kind not in KINDS:
            raise PipelineError(f"{where} ({sid}): unknown kind {kind!r}; known: {', '.join(KINDS)}")
        args = raw.get("with") or {}
        if not isinstance(args, dict):
            raise PipelineError(f"{where} ({sid}): 'with' must be a mapping of option -> value")
        needs = raw.get("needs") or []
        needs = [needs] if isinstance(needs, str) else list(needs)
        for dep in needs + _step_refs(args):
            if not any(s.id == dep for s in steps):
                raise PipelineError(f"{where} ({sid}): refers to step {dep!r}, which is not an earlier step")
        steps.append(StepSpec(sid, kind, dict(args), needs, str(raw.get("description", ""))))
    for s in steps:
        for ref in _param_refs(s.args):
            if ref not in params:
                raise PipelineError(f"{source}: step {s.id!r} uses ${{{ref}}}, which is not declared under 'params'")
    return PipelineSpec(str(data.get("name") or default_name), str(data.get("description", "")), source, params, steps)


def _walk_strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _walk_strings(v)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _walk_strings(v)]
    return []


def _step_refs(args: Any) -> list[str]:
    """Ids of steps referred to as ${steps.ID.attr} anywhere in `args`."""
    out = []
    for s in _walk_strings(args):
        for ref in _PLACEHOLDER.findall(s):
            if ref.startswith("steps."):
                out.append(ref.split(".")[1])
    return list(dict.fromkeys(out))


def _param_refs(args: Any) -> list[str]:
    """Parameter names referred to as ${name} anywhere in `args` (not ${out} or ${steps...})."""
    refs = [r for s in _walk_strings(args) for r in _PLACEHOLDER.findall(s)]
    return list(dict.fromkeys(r for r in refs if r != "out" and not r.startswith("steps.")))


def parse_param_value(text: str) -> Any:
    """A --param value: YAML scalars and flow lists (`[1e-4, 1e-3]`), else the text as given."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return text if isinstance(value, dict) or value is None and text.strip() not in ("null", "~") else value


def resolve_params(spec: PipelineSpec, given: dict[str, Any]) -> dict[str, Any]:
    """Defaults overridden by `given`; refuses unknown names and reports every missing required parameter."""
    unknown = [k for k in given if k not in spec.params]
    if unknown:
        known = ", ".join(spec.params) or "none"
        raise PipelineError(
            f"pipeline {spec.name!r} ({spec.source}) has no parameter(s) {', '.join(unknown)}; its parameters: {known}"
        )
    values = {name: p.default for name, p in spec.params.items()}
    values.update(given)
    missing = [n for n, p in spec.params.items() if p.required and values.get(n) is None]
    if missing:
        lines = [f"  {n}: {spec.params[n].help}" if spec.params[n].help else f"  {n}" for n in missing]
        raise MissingParamError(
            f"pipeline {spec.name!r} needs parameter(s) {', '.join(missing)}; pass "
            + " ".join(f"--param {n}=VALUE" for n in missing)
            + "\n"
            + "\n".join(lines),
            missing,
        )
    # defaults may refer to other parameters (e.g. lfw_root: ${data_root}/lfw)
    for _ in range(len(values) + 1):
        new = {k: _substitute(v, values, f"params.{k}") for k, v in values.items()}
        if new == values:
            break
        values = new
    else:  # pragma: no cover - a cycle
        raise PipelineError(f"pipeline {spec.name!r}: parameters refer to each other in a cycle")
    return values


def resolve_steps(spec: PipelineSpec, params: dict[str, Any], out_dir: Path) -> list[ResolvedStep]:
    """Every step's arguments with parameters, ${out} and ${steps.ID.*} filled in, in file order."""
    resolved: list[ResolvedStep] = []
    refs: dict[str, Any] = {"out": str(out_dir)}
    for s in spec.steps:
        step_dir = out_dir / s.id
        args = {k: _substitute(v, {**params, **refs}, f"step {s.id!r}: {k}") for k, v in s.args.items()}
        step = ResolvedStep(
            s.id, s.kind, args, step_dir, list(dict.fromkeys(s.needs + _step_refs(s.args))), s.description
        )
        resolved.append(step)
        refs[f"steps.{s.id}.dir"] = str(step_dir)
        if s.kind == "extract":
            refs[f"steps.{s.id}.store"] = str(step.store)
        if s.kind == "train":
            try:
                train_spec.check_args(args, f"{spec.source}: step {s.id!r} (train)")
            except train_spec.TrainStepError as exc:
                raise PipelineError(str(exc)) from None
            refs |= {f"steps.{s.id}.{name}": path for name, path in train_spec.outputs(step_dir, args).items()}
    return resolved


def _substitute(value: Any, values: dict[str, Any], where: str) -> Any:
    """Fill ${...} in strings (recursively in lists/dicts); a string that is one placeholder takes its value's type."""
    if isinstance(value, list):
        out = []
        for v in value:
            sub = _substitute(v, values, where)
            out.extend(sub if isinstance(sub, list) and isinstance(v, str) and _whole(v) else [sub])
        return out
    if isinstance(value, dict):
        return {k: _substitute(v, values, f"{where}.{k}") for k, v in value.items()}
    if not isinstance(value, str):
        return value
    whole = _whole(value)
    if whole is not None:
        return _lookup(whole, values, where)

    def repl(m: re.Match) -> str:
        got = _lookup(m.group(1), values, where)
        if got is None:
            raise PipelineError(
                f"{where}: ${{{m.group(1)}}} has no value (null) but sits inside {value!r}; "
                f"pass --param {m.group(1)}=VALUE"
            )
        if isinstance(got, list | dict):
            raise PipelineError(f"{where}: ${{{m.group(1)}}} is a list, which cannot sit inside {value!r}")
        return str(got)

    return _PLACEHOLDER.sub(repl, value)


def _whole(value: str) -> str | None:
    m = _PLACEHOLDER.fullmatch(value)
    return m.group(1) if m else None


def _lookup(name: str, values: dict[str, Any], where: str) -> Any:
    if name not in values:
        if name.startswith("steps."):
            raise PipelineError(
                f"{where}: ${{{name}}}: steps are referred to as ${{steps.ID.dir}}, for an "
                "extract step ${steps.ID.store}, for a train step ${steps.ID.checkpoint} (task demo-heads: "
                "${steps.ID.scale_checkpoint}, ${steps.ID.pfe_checkpoint})"
            )
        raise PipelineError(f"{where}: unknown placeholder ${{{name}}}")
    return values[name]
