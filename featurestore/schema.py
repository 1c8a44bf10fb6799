"""Schema 2 of the feature store: the contract between `extract` and `analyze`.

Everything here is plain numpy/pandas so both stages (and machines without
torch) can import it. Paths, dtypes and status codes are the ones in
docs/store.md; change them only together with SCHEMA_VERSION.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

SCHEMA_VERSION = 2
"""Written into every store's attributes; readers refuse versions they do not know. Schema 2 added
identification (1:N) protocols; a schema-1 store reads as one without any."""

KNOWN_SCHEMAS = (1, 2)

# images/status codes
STATUS_PENDING = 0
STATUS_OK = 1
STATUS_UNREADABLE = 2
STATUS_MISSING = 3
STATUS_ALIGN_FAILED = 4
STATUS_NAMES = {
    STATUS_PENDING: "not yet done",
    STATUS_OK: "ok",
    STATUS_UNREADABLE: "unreadable",
    STATUS_MISSING: "missing",
    STATUS_ALIGN_FAILED: "failed alignment",
}

# Per-model outputs: name -> (per-row shape in terms of D, dtype, meaning)
MODEL_OUTPUTS: dict[str, tuple[str, str, str]] = {
    "embedding": ("D", "f4", "raw network output before L2 normalisation"),
    "embedding_flip": ("D", "f4", "raw output for the horizontally mirrored crop"),
    "norm": ("", "f4", "L2 norm of the raw embedding (MagFace quality, emb-norm baseline)"),
    "scale": ("", "f4", "ScaleFace predicted scale (a confidence)"),
    "sigma_sq": ("D", "f4", "PFE per-dimension variance exp(log sigma^2) (an uncertainty)"),
}

MODEL_FAMILIES = ("arcface", "scaleface", "pfe", "magface", "external")
"""`external`: features and per-image scores a user brought (`datasets import`), not computed by `extract`."""

EXTERNAL_KINDS = ("confidence", "uncertainty")
"""What an external model's quality output means (its `config["quality"]` maps each such output to one)."""

PROTOCOL_LEVELS = ("template", "image")


@dataclass
class ImageTable:
    """One row per image (IJB: per face line of the protocol) with its metadata.

    `template`/`media` are -1 where the dataset has none; `detector_score` is
    NaN where none; `landmarks` (N, 5, 2) are NaN for pre-aligned images.
    """

    path: np.ndarray
    subject: np.ndarray
    template: np.ndarray | None = None
    media: np.ndarray | None = None
    detector_score: np.ndarray | None = None
    landmarks: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.path)
        self.path = np.asarray(self.path, dtype=object)
        self.subject = np.asarray(self.subject, dtype=np.int64)
        self.template = _or_fill(self.template, n, -1, np.int64)
        self.media = _or_fill(self.media, n, -1, np.int64)
        self.detector_score = _or_fill(self.detector_score, n, np.nan, np.float32)
        if self.landmarks is None:
            self.landmarks = np.full((n, 5, 2), np.nan, dtype=np.float32)
        self.landmarks = np.asarray(self.landmarks, dtype=np.float32).reshape(n, 5, 2)
        for name in ("subject", "template", "media", "detector_score"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"images/{name} has {len(getattr(self, name))} rows, images/path has {n}")

    def __len__(self) -> int:
        return len(self.path)

    def take(self, rows: np.ndarray | slice) -> ImageTable:
        """The table restricted to `rows`, in that order."""
        return ImageTable(
            path=self.path[rows],
            subject=self.subject[rows],
            template=self.template[rows],
            media=self.media[rows],
            detector_score=self.detector_score[rows],
            landmarks=self.landmarks[rows],
        )

    def to_frame(self) -> pd.DataFrame:
        """The table without landmarks, as a DataFrame (one column per field)."""
        return pd.DataFrame(
            {
                "path": self.path,
                "subject": self.subject,
                "template": self.template,
                "media": self.media,
                "detector_score": self.detector_score,
            }
        )


def _or_fill(values: Any, n: int, fill: Any, dtype: Any) -> np.ndarray:
    if values is None:
        return np.full(n, fill, dtype=dtype)
    return np.asarray(values, dtype=dtype)


@dataclass
class Protocol:
    """Labelled verification pairs: template ids (level 'template') or image row indices (level 'image')."""

    name: str
    pairs: np.ndarray
    label: np.ndarray
    level: str = "template"
    description: str = ""

    def __post_init__(self) -> None:
        self.pairs = np.asarray(self.pairs, dtype=np.int64).reshape(-1, 2)
        self.label = np.asarray(self.label, dtype=bool).reshape(-1)
        if len(self.pairs) != len(self.label):
            raise ValueError(f"protocol {self.name!r}: {len(self.pairs)} pairs but {len(self.label)} labels")
        if self.level not in PROTOCOL_LEVELS:
            raise ValueError(f"protocol {self.name!r}: level must be one of {PROTOCOL_LEVELS}, got {self.level!r}")

    def __len__(self) -> int:
        return len(self.label)


PROBE_SET = "probe"
"""The set name of an identification protocol's probe templates (a gallery may not be called so)."""


@dataclass
class TemplateSet:
    """Distinct template ids with the subject of each: one gallery, or the probe set, of a 1:N protocol."""

    template: np.ndarray
    subject: np.ndarray

    def __post_init__(self) -> None:
        self.template = np.asarray(self.template, dtype=np.int64).reshape(-1)
        self.subject = np.asarray(self.subject, dtype=np.int64).reshape(-1)
        if len(self.template) != len(self.subject):
            raise ValueError(f"{len(self.template)} templates but {len(self.subject)} subjects")

    def __len__(self) -> int:
        return len(self.template)

    def keep(self, mask: np.ndarray) -> TemplateSet:
        return TemplateSet(self.template[mask], self.subject[mask])


@dataclass
class Identification:
    """A 1:N identification protocol: galleries (name -> templates and subjects, e.g. IJB-C's G1, G2) and
    the probe set searched against each gallery separately. Template ids are those of images/template."""

    name: str
    galleries: dict[str, TemplateSet]
    probe: TemplateSet
    description: str = ""

    def __post_init__(self) -> None:
        if not self.galleries:
            raise ValueError(f"identification protocol {self.name!r}: no gallery")
        for g, ts in [*self.galleries.items(), (PROBE_SET, self.probe)]:
            if g == PROBE_SET and ts is not self.probe:
                raise ValueError(f"identification protocol {self.name!r}: a gallery may not be called {PROBE_SET!r}")
            if not g or "/" in g:
                raise ValueError(f"identification protocol {self.name!r}: bad set name {g!r}")
            if len(np.unique(ts.template)) != len(ts):
                raise ValueError(f"identification protocol {self.name!r}: set {g!r} lists a template twice")

    def sets(self) -> dict[str, TemplateSet]:
        """Every set by its stored name: the galleries in order, then the probe set."""
        return {**self.galleries, PROBE_SET: self.probe}


@dataclass
class DatasetTables:
    """What a dataset reader returns: the images, the verification protocols and the identification
    (1:N) protocols over them."""

    name: str
    images: ImageTable
    protocols: dict[str, Protocol] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    identification: dict[str, Identification] = field(default_factory=dict)

    def head(self, n: int) -> DatasetTables:
        """The first `n` images, with each protocol cut to the pairs whose two sides lie in them
        (template level: templates with at least one of the kept images)."""
        images = self.images.take(slice(0, n))
        kept_templates = np.unique(images.template[images.template >= 0])
        protocols = {}
        for name, p in self.protocols.items():
            if p.level == "image":
                keep = (p.pairs < len(images)).all(axis=1)
            else:
                keep = np.isin(p.pairs, kept_templates).all(axis=1)
            protocols[name] = Protocol(name, p.pairs[keep], p.label[keep], p.level, p.description)
        ident = {
            name: Identification(
                name,
                {g: ts.keep(np.isin(ts.template, kept_templates)) for g, ts in idp.galleries.items()},
                idp.probe.keep(np.isin(idp.probe.template, kept_templates)),
                idp.description,
            )
            for name, idp in self.identification.items()
        }
        return DatasetTables(self.name, images, protocols, dict(self.extra), ident)


FINGERPRINT_FIELDS = (
    "family",
    "embedding_dim",
    "outputs",
    "checkpoint_sha256",
    "random_init",
    "seed",
    "config",
    "preprocessing",
    "flip",
    "precision",
    "dtype",
    "torch_version",
)
"""What decides a model's outputs: a resume or a shard joining must match on every one (docs/models.md)."""


def fingerprint_sha256(fields: dict[str, Any]) -> str:
    """sha256 of the fingerprint fields as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class ModelSpec:
    """A model whose outputs a store holds, with the provenance the store records.

    `seed` (random init only), `precision` (as resolved: fp32, fp16 or bf16) and `torch_version`
    complete the model's identity: `fingerprint()` is every field that decides its outputs, and the
    store records it with its sha256. `recorded_fingerprint` is what a store had (None: a store
    written before fingerprints were recorded).
    """

    name: str
    family: str
    embedding_dim: int = 512
    outputs: tuple[str, ...] = ("embedding", "norm")
    flip: bool = False
    checkpoint: str = ""
    checkpoint_sha256: str = ""
    random_init: bool = False
    config: dict[str, Any] = field(default_factory=dict)
    preprocessing: dict[str, Any] = field(default_factory=dict)
    dtype: str = "f4"
    seed: int | None = None
    precision: str = ""
    torch_version: str = ""
    recorded_fingerprint: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.family not in MODEL_FAMILIES:
            raise ValueError(f"model {self.name!r}: unknown family {self.family!r}; known: {MODEL_FAMILIES}")
        quality = self.external_quality()
        unknown = [o for o in self.outputs if o not in MODEL_OUTPUTS and o not in quality]
        if unknown:
            raise ValueError(f"model {self.name!r}: unknown outputs {unknown}; known: {sorted(MODEL_OUTPUTS)}")
        outs = list(self.outputs)
        if self.flip and "embedding_flip" not in outs:
            outs.append("embedding_flip")
        self.outputs = tuple(outs)

    def external_quality(self) -> dict[str, str]:
        """An external model's quality outputs -> 'confidence' | 'uncertainty' (`config["quality"]`); {} otherwise.

        Their names are the user's, so they may not shadow a built-in output or nest (no '/')."""
        if self.family != "external":
            return {}
        quality = dict(self.config.get("quality") or {})
        for name, kind in quality.items():
            if kind not in EXTERNAL_KINDS:
                raise ValueError(
                    f"model {self.name!r}: quality {name!r} is {kind!r}; it must be one of {EXTERNAL_KINDS}"
                )
            if name in MODEL_OUTPUTS or not name or "/" in name or name.startswith("."):
                raise ValueError(f"model {self.name!r}: {name!r} cannot name a quality output")
        return quality

    def row_shape(self, output: str) -> tuple[int, ...]:
        """Shape of one row of `output` (e.g. (512,) for an embedding, () for a norm or an external quality)."""
        return (self.embedding_dim,) if MODEL_OUTPUTS.get(output, ("",))[0] == "D" else ()

    def output_dtype(self, output: str) -> str:
        """Embeddings may be stored as f2 to halve the store; everything else is f4."""
        return self.dtype if output in ("embedding", "embedding_flip") else "f4"

    def fingerprint(self) -> dict[str, Any]:
        """The model's identity: every field that decides its outputs, in plain JSON form."""
        fields = {name: getattr(self, name) for name in FINGERPRINT_FIELDS}
        fields["outputs"] = list(self.outputs)
        return json.loads(json.dumps(fields, default=str))  # tuples -> lists, as the store reads them back

    def fingerprint_attrs(self) -> dict[str, Any]:
        """`{"sha256": ..., "fields": {...}}`, as a store records it."""
        fields = self.fingerprint()
        return {"sha256": fingerprint_sha256(fields), "fields": fields}

    def fingerprint_line(self) -> str:
        """`fingerprint 1a2b3c4d5e6f (seed 0, precision fp32, stored f4, torch 2.5.1)` for `analyze info`:
        the recorded fingerprint of a store's model, or why it has none."""
        rec = self.recorded_fingerprint
        if rec is None:
            return "fingerprint none (written before fingerprints were recorded: cannot be resumed)"
        f = rec.get("fields", {})
        seed = f"seed {f.get('seed')}, " if f.get("random_init") else ""
        return (
            f"fingerprint {str(rec.get('sha256', ''))[:12]} ({seed}precision {f.get('precision') or '?'}, "
            f"stored {f.get('dtype')}, torch {f.get('torch_version') or '?'})"
        )

    def to_attrs(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "embedding_dim": self.embedding_dim,
            "outputs": list(self.outputs),
            "flip": self.flip,
            "checkpoint": self.checkpoint,
            "checkpoint_sha256": self.checkpoint_sha256,
            "random_init": self.random_init,
            "config": self.config,
            "preprocessing": self.preprocessing,
            "dtype": self.dtype,
            "seed": self.seed,
            "precision": self.precision,
            "torch_version": self.torch_version,
            "fingerprint": self.fingerprint_attrs(),
        }

    @classmethod
    def from_attrs(cls, name: str, attrs: dict[str, Any]) -> ModelSpec:
        known = {k: v for k, v in attrs.items() if k not in ("outputs", "fingerprint")}
        return cls(name=name, **known, outputs=tuple(attrs["outputs"]), recorded_fingerprint=attrs.get("fingerprint"))


def fingerprint_differences(name: str, recorded: dict[str, Any], spec: ModelSpec) -> list[str]:
    """One phrase per fingerprint field (nested keys dotted) where `spec` differs from the `recorded`
    {"sha256", "fields"}: `model 'x' seed: the store has 0, this run has 7`."""
    have, run = recorded.get("fields", {}), spec.fingerprint()
    out = [
        f"model {name!r} {key}: the store has {_shown(a)}, this run has {_shown(b)}"
        for key, a, b in _differences(have, run, "")
    ]
    if not out and recorded.get("sha256") != fingerprint_sha256(run):
        out.append(
            f"model {name!r} fingerprint sha256: the store has {_shown(recorded.get('sha256'))}, "
            f"this run has {_shown(fingerprint_sha256(run))}"
        )
    return out


def _differences(a: Any, b: Any, prefix: str) -> list[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [
            d
            for key in sorted(set(a) | set(b), key=str)
            for d in _differences(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else str(key))
        ]
    return [] if a == b else [(prefix, a, b)]


def _shown(value: Any) -> str:
    if value is None or value == "":
        return "none"
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12]  # a sha256
    return value if isinstance(value, str) else json.dumps(value)
