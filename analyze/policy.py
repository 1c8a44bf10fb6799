"""What an image's number means and what each model family runs by default: one typed value, one policy table.

`ImageValues` carries per-image (or per-template) values with their direction (`uncertainty` or `confidence`,
`analyze.registry.DIRECTIONS`) and the store output they came from. `FamilyPolicy` is the per-family table
(the model's per-image output, its direction, the paper's default fusions, metrics and EDC metric), chosen
from a model's outputs by `policy_for`. Whether a PFE value is used as sigma^2 or as the confidence
1/harmonic_mean(sigma^2) is decided here only (`ImageValues.for_fusion`, `ImageValues.for_distance`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analyze.registry import DIRECTIONS, DistanceSpec, FusionSpec
from analyze.rows import pfe_confidence
from featurestore.errors import StoreError
from featurestore.schema import ModelSpec

__all__ = ["OUTPUT_KINDS", "POLICIES", "FamilyPolicy", "ImageValues", "external_policy", "policy_for"]

OUTPUT_KINDS = {"sigma_sq": "uncertainty", "scale": "confidence", "norm": "confidence"}
"""Direction of each per-image store output: PFE sigma^2 an uncertainty; ScaleFace scale and the embedding norm
(MagFace, ArcFace) confidences."""

PFE_CONFIDENCE = "sigma_sq -> 1/harmonic_mean"
"""The `source` of a PFE sigma^2 reduced to its confidence."""


@dataclass(frozen=True)
class ImageValues:
    """Per-row values, what they mean (`kind`: uncertainty | confidence) and where they came from (`source`)."""

    values: np.ndarray | None
    kind: str
    source: str

    def __post_init__(self) -> None:
        if self.kind not in DIRECTIONS:
            raise ValueError(f"kind must be one of {DIRECTIONS}, got {self.kind!r}")

    @property
    def is_sigma_sq(self) -> bool:
        """PFE sigma^2 per dimension (N, D), not yet reduced."""
        return self.source == "sigma_sq" and self.values is not None and np.ndim(self.values) == 2

    def fused_by(self, fusion: FusionSpec) -> tuple[str, str]:
        """(kind, source) of the values a fusion is given and returns: the one rule for PFE sigma^2, which
        fusions weighting images by one confidence each get (and return) as its confidence 1/hm(sigma^2)."""
        if self.source == "sigma_sq" and fusion.weights_by_confidence:
            return "confidence", PFE_CONFIDENCE
        return self.kind, self.source

    def as_confidence(self) -> ImageValues:
        """A PFE sigma^2 as its confidence 1/hm(sigma^2) (the scripts' pfe-* weights); other values unchanged."""
        if self.source != "sigma_sq":
            return self
        return ImageValues(pfe_confidence(self.values), "confidence", PFE_CONFIDENCE)

    def for_fusion(self, fusion: FusionSpec) -> ImageValues:
        """What a fusion is given: fusions weighting images by one confidence each get a PFE sigma^2 reduced
        (and then yield a confidence); every other fusion gets the values as stored."""
        return self.as_confidence() if self.fused_by(fusion)[1] == PFE_CONFIDENCE else self

    def for_distance(self, distance: DistanceSpec) -> np.ndarray | None:
        """What a distance is given as `uncertainty=`: a per-row confidence for 'confidence' distances (a PFE
        sigma^2 reduced first), the values as they are otherwise (pfe-* and MLS reduce or use sigma^2 themselves)."""
        if distance.values == "confidence" and self.is_sigma_sq:
            return self.as_confidence().values
        return self.values


@dataclass(frozen=True)
class FamilyPolicy:
    """One model family's per-image value and the paper's defaults for it."""

    name: str
    value_output: str
    fusions: tuple[str, ...]
    metrics: tuple[str, ...]
    edc_metric: str
    fusion_distances: tuple[str, ...] = ("cosine",)
    fusion_table: tuple[str, ...] = ("mean", "first", "media")
    """Fusions `analyze fusion` compares before the family's own (`fusions`)."""
    kind: str = ""
    """The value's direction when its output is not a built-in one (an external model's quality)."""

    @property
    def value_kind(self) -> str:
        return self.kind or OUTPUT_KINDS[self.value_output]

    def stored(self, values: np.ndarray | None = None) -> ImageValues:
        """The family's per-image values as read from the store (`values` None: the meaning only)."""
        return ImageValues(values, self.value_kind, self.value_output)

    def metrics_for(self, threshold_mode: str) -> list[str]:
        """Default metric strings: the EDC's pair quality (worse image) if the threshold is fixed, else the paper's."""
        return [self.edc_metric] if threshold_mode == "fixed" else list(self.metrics)

    def fusion_table_fusions(self) -> list[str]:
        return [*self.fusion_table, *self.fusions]


POLICIES: dict[str, FamilyPolicy] = {
    "pfe": FamilyPolicy(
        "pfe",
        "sigma_sq",
        fusions=("PFE",),
        metrics=("cosine_mean", "cosine_harmonic-harmonic", "MLS_harmonic-sum"),
        edc_metric="cosine_max",
        fusion_distances=("cosine", "MLS"),
    ),
    "scaleface": FamilyPolicy(
        "scaleface",
        "scale",
        fusions=("weighted",),
        metrics=("cosine_mean", "cosine_harmonic-harmonic"),
        edc_metric="cosine_min",
    ),
    "norm": FamilyPolicy(
        "norm",
        "norm",
        fusions=("mean",),
        metrics=("cosine_mean", "cosine_harmonic-harmonic"),
        edc_metric="cosine_min",
    ),
}
"""Per family: PFE (sigma^2, an uncertainty: PFE attention fusion, MLS; the EDC's worse image is the max
sigma^2), ScaleFace (scale, a confidence: weighted fusion), and the embedding norm of MagFace / ArcFace /
emb-norm heads (a confidence: mean fusion); the EDC's worse image is the min confidence."""


def external_policy(output: str, kind: str) -> FamilyPolicy:
    """An imported (`external`) model's policy: its quality output `output` read as `kind` (the user's
    declaration); the mean fusion (nothing says how the scores should weight images), the paper's metrics,
    and the EDC's worse image the min confidence or the max uncertainty."""
    return FamilyPolicy(
        "external",
        output,
        fusions=("mean",),
        metrics=("cosine_mean", "cosine_harmonic-harmonic"),
        edc_metric="cosine_min" if kind == "confidence" else "cosine_max",
        kind=kind,
    )


def policy_for(model: ModelSpec | tuple[str, ...] | list[str]) -> FamilyPolicy:
    """The policy of a model (its spec, or its store outputs): an external model's declared quality ->
    `external_policy`; else sigma_sq -> pfe, scale -> scaleface, else the norm (an external model without
    a quality is analysed by its embedding norm)."""
    outputs = model
    if isinstance(model, ModelSpec):
        quality = model.external_quality()
        if len(quality) > 1:
            raise StoreError(
                f"model {model.name!r} has {len(quality)} quality outputs ({', '.join(quality)}); analyze reads one "
                "per model (`datasets import` writes one model per quality)"
            )
        if quality:
            return external_policy(*next(iter(quality.items())))
        outputs = model.outputs
    if "sigma_sq" in outputs:
        return POLICIES["pfe"]
    if "scale" in outputs:
        return POLICIES["scaleface"]
    return POLICIES["norm"]
