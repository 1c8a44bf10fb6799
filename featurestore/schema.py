"""Schema 1 of the feature store: the contract between `extract` and `analyze`.

Everything here is plain numpy/pandas so both stages (and machines without
torch) can import it. Paths, dtypes and status codes are the ones in
docs/store.md; change them only together with SCHEMA_VERSION.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

SCHEMA_VERSION = 1
"""Written into every store's attributes; readers refuse versions they do not know."""

KNOWN_SCHEMAS = (1,)

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

MODEL_FAMILIES = ("arcface", "scaleface", "pfe", "magface")

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


@dataclass
class DatasetTables:
    """What a dataset reader returns: the images and the protocols over them."""

    name: str
    images: ImageTable
    protocols: dict[str, Protocol] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

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
        return DatasetTables(self.name, images, protocols, dict(self.extra))


@dataclass
class ModelSpec:
    """A model whose outputs a store holds, with the provenance the store records."""

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

    def __post_init__(self) -> None:
        unknown = [o for o in self.outputs if o not in MODEL_OUTPUTS]
        if unknown:
            raise ValueError(f"model {self.name!r}: unknown outputs {unknown}; known: {sorted(MODEL_OUTPUTS)}")
        if self.family not in MODEL_FAMILIES:
            raise ValueError(f"model {self.name!r}: unknown family {self.family!r}; known: {MODEL_FAMILIES}")
        outs = list(self.outputs)
        if self.flip and "embedding_flip" not in outs:
            outs.append("embedding_flip")
        self.outputs = tuple(outs)

    def row_shape(self, output: str) -> tuple[int, ...]:
        """Shape of one row of `output` (e.g. (512,) for an embedding, () for a norm)."""
        return (self.embedding_dim,) if MODEL_OUTPUTS[output][0] == "D" else ()

    def output_dtype(self, output: str) -> str:
        """Embeddings may be stored as f2 to halve the store; everything else is f4."""
        return self.dtype if output in ("embedding", "embedding_flip") else "f4"

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
        }

    @classmethod
    def from_attrs(cls, name: str, attrs: dict[str, Any]) -> ModelSpec:
        return cls(name=name, **{k: v for k, v in attrs.items() if k != "outputs"}, outputs=tuple(attrs["outputs"]))
