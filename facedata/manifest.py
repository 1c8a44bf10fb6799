"""Dataset manifests: YAML files in data_manifests/ naming a dataset's layout, files and protocols.

A manifest never holds absolute paths: every file is relative to a data root given on the command
line (`--data-root`) or by the environment (see `resolve_data_root`).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from facedata.errors import DataError
from facedata.paths import _escape_reason
from featurestore.resources import package_data_dir

MANIFEST_DIR = package_data_dir("facedata", "data_manifests")
"""Where the built-in manifests live: package data `facedata/data_manifests/` (the repository's
data_manifests/ links to it)."""

ENV_DATA_ROOT = "SCALEFACE_DATA_ROOT"

# layout -> (file keys that must be present, file keys that may be present)
LAYOUT_FILES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "insightface_ijb": (("images", "face_tid_mid", "name_5pts_score"), ("template_subjects",)),
    "nist_ijbc": (("images", "enroll_templates", "verif_templates"), ()),
    "lfw": (("images",), ()),
    "bin": ((), ()),
    "recordio": (("rec", "idx"), ()),
    "folder": ((), ("images",)),
    "table": (("list",), ()),
}
LAYOUTS = tuple(LAYOUT_FILES)

EXPECTED_KEYS = ("images", "subjects", "templates", "pairs", "genuine")
_TOP_KEYS = {
    "name",
    "layout",
    "description",
    "aligned",
    "root_dir",
    "files",
    "protocols",
    "expected",
    "expected_source",
    "options",
    "identification",
}

IDENTIFICATION_LAYOUTS = ("insightface_ijb", "nist_ijbc")
"""Layouts whose images carry template ids, so 1:N template CSVs can refer to them."""


@dataclass(frozen=True)
class ProtocolSpec:
    """One verification protocol of a manifest: its pairs file and whether pairs are templates or images."""

    name: str
    pairs: str
    level: str
    description: str = ""
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class IdentificationSpec:
    """One 1:N identification protocol of a manifest: a template CSV per gallery (name -> path, in
    order) and the probe CSV; `optional`: the protocol is left out (and named) when a file is absent."""

    name: str
    galleries: dict[str, str]
    probes: str
    description: str = ""
    optional: bool = False


@dataclass(frozen=True)
class Manifest:
    """A parsed, validated manifest. `files` and protocol `pairs` are paths relative to the data root."""

    name: str
    layout: str
    aligned: bool
    files: dict[str, Any]
    protocols: dict[str, ProtocolSpec]
    expected: dict[str, int]
    expected_source: str = "expected"
    description: str = ""
    root_dir: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    source: str = "<dict>"
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    identification: dict[str, IdentificationSpec] = field(default_factory=dict)

    def file(self, key: str) -> str:
        """The manifest's relative path for file `key`; DataError naming the YAML and key if absent."""
        if key not in self.files:
            raise DataError(f"missing key 'files.{key}' (layout {self.layout} needs it)", path=self.source)
        return self.files[key]


def list_manifests(directory: str | Path | None = None) -> list[str]:
    """Names of the built-in manifests (YAML file stems in data_manifests/), sorted."""
    d = Path(directory) if directory is not None else MANIFEST_DIR
    return sorted(p.stem for p in d.glob("*.yaml"))


def is_manifest_path(name_or_path: str | Path) -> bool:
    """Whether a manifest argument names a file rather than a built-in: a `Path`, or a string ending in
    `.yaml`/`.yml` or containing a path separator. So a folder `lfw/` in the current directory never
    shadows the built-in `lfw` (write `./lfw.yaml` or `lfw.yaml` for a file)."""
    if isinstance(name_or_path, Path):
        return True
    s = str(name_or_path)
    seps = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    return s.lower().endswith((".yaml", ".yml")) or any(sep in s for sep in seps)


def load_manifest(name_or_path: str | Path) -> Manifest:
    """Load a manifest by built-in name (e.g. "ijbc") or by path to a YAML file, and validate it.

    The argument is a path only when `is_manifest_path` says so; otherwise it is a built-in name.
    """
    if is_manifest_path(name_or_path):
        path = Path(name_or_path)
        if not path.exists():
            raise DataError("manifest file not found", path=path)
        if not path.is_file():
            raise DataError("manifest path is not a file", path=path)
    else:
        path = MANIFEST_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            known = ", ".join(list_manifests()) or "none"
            raise DataError(
                f"no manifest named {str(name_or_path)!r} (built-in: {known}; a manifest file is given by a "
                "path ending in .yaml or containing '/')",
                path=path,
            )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        line = None
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            line = mark.line + 1
        raise DataError(f"invalid YAML: {exc}", path=path, line=line) from exc
    return manifest_from_dict(raw, source=str(path))


def _req(raw: dict[str, Any], key: str, source: str, kind: type | tuple[type, ...], where: str = "") -> Any:
    full = f"{where}{key}"
    if key not in raw:
        raise DataError(f"missing key {full!r}", path=source)
    value = raw[key]
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise DataError(f"key {full!r} must be a {names}, got {type(value).__name__}", path=source)
    return value


def _check_rel(value: Any, key: str, source: str) -> None:
    if not isinstance(value, str):
        raise DataError(f"key {key!r} must be a relative path string, got {type(value).__name__}", path=source)
    reason = _escape_reason(value)
    if reason is not None:
        raise DataError(f"key {key!r}: path {value!r}: {reason}", path=source)


def manifest_from_dict(raw: Any, source: str = "<dict>") -> Manifest:
    """Validate a manifest mapping (as read from YAML); errors name `source` and the key at fault."""
    if not isinstance(raw, dict):
        raise DataError("manifest must be a YAML mapping", path=source)
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise DataError(f"unknown key {unknown[0]!r} (known: {', '.join(sorted(_TOP_KEYS))})", path=source)
    name = _req(raw, "name", source, str)
    layout = _req(raw, "layout", source, str)
    if layout not in LAYOUT_FILES:
        raise DataError(f"key 'layout': unknown layout {layout!r} (known: {', '.join(LAYOUTS)})", path=source)
    aligned = _req(raw, "aligned", source, bool)
    files = raw.get("files") or {}
    if not isinstance(files, dict):
        raise DataError("key 'files' must be a mapping", path=source)
    required, optional = LAYOUT_FILES[layout]
    for key in required:
        if key not in files:
            raise DataError(f"missing key 'files.{key}' (layout {layout} needs it)", path=source)
    for key, value in files.items():
        if key not in required + optional:
            raise DataError(
                f"unknown key 'files.{key}' for layout {layout} (known: {', '.join(required + optional)})",
                path=source,
            )
        values = value if isinstance(value, list) else [value]
        for v in values:
            _check_rel(v, f"files.{key}", source)

    protocols_raw = raw.get("protocols") or {}
    if not isinstance(protocols_raw, dict):
        raise DataError("key 'protocols' must be a mapping of protocol name to settings", path=source)
    protocols: dict[str, ProtocolSpec] = {}
    for pname, spec in protocols_raw.items():
        where = f"protocols.{pname}."
        if not isinstance(spec, dict):
            raise DataError(f"key 'protocols.{pname}' must be a mapping", path=source)
        pairs = _req(spec, "pairs", source, str, where)
        _check_rel(pairs, f"{where}pairs", source)
        level = spec.get("level", _default_level(layout))
        if level not in ("template", "image"):
            raise DataError(f"key '{where}level' must be 'template' or 'image', got {level!r}", path=source)
        extra = {k: v for k, v in spec.items() if k not in ("pairs", "level", "description")}
        protocols[str(pname)] = ProtocolSpec(
            name=str(pname), pairs=pairs, level=level, description=str(spec.get("description", "")), options=extra
        )

    expected_raw = raw.get("expected") or {}
    if not isinstance(expected_raw, dict):
        raise DataError("key 'expected' must be a mapping of count name to integer", path=source)
    expected: dict[str, int] = {}
    for key, value in expected_raw.items():
        if key not in EXPECTED_KEYS:
            raise DataError(f"unknown key 'expected.{key}' (known: {', '.join(EXPECTED_KEYS)})", path=source)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise DataError(f"key 'expected.{key}' must be a non-negative integer, got {value!r}", path=source)
        expected[key] = value

    identification = _identification_specs(raw.get("identification"), layout, source)
    root_dir = raw.get("root_dir", name)
    _check_rel(root_dir, "root_dir", source)
    options = raw.get("options") or {}
    if not isinstance(options, dict):
        raise DataError("key 'options' must be a mapping", path=source)
    return Manifest(
        name=name,
        layout=layout,
        aligned=aligned,
        files=dict(files),
        protocols=protocols,
        expected=expected,
        expected_source=str(raw.get("expected_source", "expected")),
        description=str(raw.get("description", "")),
        root_dir=root_dir,
        options=dict(options),
        source=source,
        raw=raw,
        identification=identification,
    )


def _identification_specs(raw: Any, layout: str, source: str) -> dict[str, IdentificationSpec]:
    """`identification: {NAME: {galleries: {G1: csv, G2: csv}, probes: csv, description, optional}}`."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise DataError("key 'identification' must be a mapping of protocol name to settings", path=source)
    if raw and layout not in IDENTIFICATION_LAYOUTS:
        raise DataError(
            f"key 'identification': layout {layout} has no template ids (1:N protocols need one of "
            f"{', '.join(IDENTIFICATION_LAYOUTS)})",
            path=source,
        )
    out: dict[str, IdentificationSpec] = {}
    for pname, spec in raw.items():
        where = f"identification.{pname}."
        if not isinstance(spec, dict):
            raise DataError(f"key 'identification.{pname}' must be a mapping", path=source)
        unknown = sorted(set(spec) - {"galleries", "probes", "description", "optional"})
        if unknown:
            raise DataError(
                f"unknown key '{where}{unknown[0]}' (known: description, galleries, optional, probes)", path=source
            )
        galleries = _req(spec, "galleries", source, dict, where)
        if not galleries:
            raise DataError(f"key '{where}galleries' names no gallery", path=source)
        for g, rel in galleries.items():
            if not isinstance(g, str) or not g or "/" in g or g == "probe":
                raise DataError(f"key '{where}galleries': bad gallery name {g!r} (no '/', not 'probe')", path=source)
            _check_rel(rel, f"{where}galleries.{g}", source)
        probes = _req(spec, "probes", source, str, where)
        _check_rel(probes, f"{where}probes", source)
        optional = spec.get("optional", False)
        if not isinstance(optional, bool):
            raise DataError(f"key '{where}optional' must be true or false, got {optional!r}", path=source)
        out[str(pname)] = IdentificationSpec(
            str(pname), dict(galleries), probes, str(spec.get("description", "")), optional
        )
    return out


def _default_level(layout: str) -> str:
    return "template" if layout in ("insightface_ijb", "nist_ijbc") else "image"


def manifest_digest(manifest: Manifest) -> str:
    """sha256 of the manifest's canonical YAML (sorted keys), so stores record exactly what was read."""
    canonical = yaml.safe_dump(manifest.raw, sort_keys=True, default_flow_style=False, allow_unicode=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def env_var_for(name: str) -> str:
    """The per-dataset data-root variable, e.g. SCALEFACE_DATA_ROOT_IJBC_NIST for "ijbc-nist"."""
    return f"{ENV_DATA_ROOT}_{re.sub(r'[^A-Za-z0-9]', '_', name).upper()}"


def resolve_data_root(manifest: Manifest, data_root: str | Path | None = None) -> Path:
    """The dataset's root directory: `data_root` if given, else $SCALEFACE_DATA_ROOT_<NAME>,
    else $SCALEFACE_DATA_ROOT/<root_dir>. The directory must exist.
    """
    per_dataset = env_var_for(manifest.name)
    if data_root is not None and str(data_root) != "":
        root, how = Path(data_root), "--data-root"
    elif os.environ.get(per_dataset):
        root, how = Path(os.environ[per_dataset]), f"${per_dataset}"
    elif os.environ.get(ENV_DATA_ROOT):
        root, how = Path(os.environ[ENV_DATA_ROOT]) / manifest.root_dir, f"${ENV_DATA_ROOT}/{manifest.root_dir}"
    else:
        raise DataError(
            f"no data root for dataset {manifest.name!r}: pass --data-root DIR, or set ${per_dataset} "
            f"to the dataset's directory, or ${ENV_DATA_ROOT} to a directory holding {manifest.root_dir}/"
        )
    root = root.expanduser()
    if not root.is_dir():
        raise DataError(f"data root for dataset {manifest.name!r} (from {how}) is not a directory", path=root)
    return root
