"""Pair-uncertainty combinations with the ScaleFace scripts' names (per-image reductions: analyze.rows).

The combinations act on the per-image values exactly as the scripts pass them: a (N, K) array,
K = 1 for a scalar (ScaleFace scale, feature norm) and K = D for PFE sigma_sq. They do not
look at whether the values are confidences or uncertainties: the scripts keep the raw values
and choose the sort direction with `uncertainty_mode` ('uncertainty': ascending, keep the
smallest; 'confidence': descending). `combination_mode` and `as_uncertainty` carry that flag.
See docs/metrics.md, section "Pair uncertainty".
"""

from __future__ import annotations

import numpy as np

from analyze.kernels import cosine_analytic_pairs, row_reciprocal_sums
from analyze.registry import DIRECTIONS, CombinationSpec, Registry
from analyze.rows import check_pairs, harmonic_mean, image_scalar, l2_normalize, pfe_confidence
from analyze.scores import DEFAULT_BLOCK, blocks, cosine_scores
from analyze.timing import timed

__all__ = [
    "COMBINATIONS",
    "MODES",
    "as_uncertainty",
    "combination_mode",
    "combine",
    "harmonic_mean",
    "image_scalar",
    "pair_uncertainty",
    "pfe_confidence",
]

MODES = DIRECTIONS
"""'uncertainty': larger = less reliable (PFE sigma_sq); 'confidence': larger = more reliable (scale, norm)."""


def _two_d(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x[:, None] if x.ndim == 1 else x


def _reciprocal_sum(v: np.ndarray) -> np.ndarray:
    """sum(1/v) per row by the fused kernel (bit-identical to ``(1.0 / v).sum(axis=1)``)."""
    return row_reciprocal_sums(v)


def _harmonic_rows(v: np.ndarray) -> np.ndarray:
    """harmonic_mean(v, axis=1) = 1 / (sum(1/v) / K) with the same operations, the sum by the fused kernel."""
    return 1.0 / (row_reciprocal_sums(v) / v.shape[1])


def _concatenated_hm(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """Harmonic mean of the 2K concatenated values from each row's sum of reciprocals."""
    return 2.0 * k / (a + b)


def _cosine_analytic(u1, u2, mu1, mu2, labels, center) -> np.ndarray:
    if u1.shape[1] not in (1, mu1.shape[1]):
        raise ValueError(f"cosine-analytic: values have {u1.shape[1]} columns, features {mu1.shape[1]}")
    return np.sum(u1 * u2 + mu1 * mu1 * u2 + mu2 * mu2 * u1, axis=1)


def _cos(mu1: np.ndarray, mu2: np.ndarray) -> np.ndarray:
    return np.einsum("md,md->m", l2_normalize(mu1), l2_normalize(mu2))


def _perfect(u1, u2, mu1, mu2, labels, center) -> np.ndarray:
    return (labels.astype(np.float64) * 2 - 1) * (_cos(mu1, mu2) - center)


_SCRIPTS = "ScaleFace face_lib/evaluation/distance_uncertainty_funcs.py"

COMBINATIONS: Registry[CombinationSpec] = Registry(
    "uncertainty combination",
    [
        CombinationSpec(
            "mean",
            "u1.sum() + u2.sum() (the scripts call the sum 'mean')",
            row=lambda v: v.sum(axis=1),
            pair=lambda a, b, k: a + b,
            source=_SCRIPTS,
        ),
        CombinationSpec(
            "squared-sum",
            "u1.sum()^2 + u2.sum()^2",
            row=lambda v: v.sum(axis=1),
            pair=lambda a, b, k: a**2 + b**2,
            source=_SCRIPTS,
        ),
        CombinationSpec(
            "mul",
            "prod(u1) * prod(u2) over all dimensions",
            row=lambda v: v.prod(axis=1),
            pair=lambda a, b, k: a * b,
            source=_SCRIPTS,
        ),
        CombinationSpec(
            "harmonic-sum",
            "hm(u1) + hm(u2), hm = harmonic mean over dimensions",
            row=_harmonic_rows,
            pair=lambda a, b, k: a + b,
            source=_SCRIPTS,
        ),
        CombinationSpec(
            "harmonic-mul",
            "hm(u1) * hm(u2)",
            row=_harmonic_rows,
            pair=lambda a, b, k: a * b,
            source=_SCRIPTS,
        ),
        CombinationSpec(
            "harmonic-harmonic",
            "harmonic mean of the concatenation [u1, u2]",
            row=_reciprocal_sum,
            pair=_concatenated_hm,
            source=_SCRIPTS,
        ),
        CombinationSpec(
            "squared-harmonic",
            "harmonic mean of the concatenation [u1^2, u2^2]",
            row=lambda v: row_reciprocal_sums(v, squared=True),
            pair=_concatenated_hm,
            source=_SCRIPTS,
        ),
        CombinationSpec(
            "cosine-analytic",
            "sum(u1*u2 + mu1^2*u2 + mu2^2*u1): variance of the dot product of two Gaussians",
            gathered=_cosine_analytic,
            fused=cosine_analytic_pairs,
            inputs=("values", "features"),
            source=_SCRIPTS,
        ),
        CombinationSpec(
            "min",
            "min(u1.sum(), u2.sum())",
            row=lambda v: v.sum(axis=1),
            pair=lambda a, b, k: np.minimum(a, b),
            source=_SCRIPTS,
        ),
        CombinationSpec(
            "max",
            "max(u1.sum(), u2.sum()) (not in the scripts)",
            row=lambda v: v.sum(axis=1),
            pair=lambda a, b, k: np.maximum(a, b),
            deviations=("ours: the scripts have no max",),
        ),
        CombinationSpec(
            "similarity",
            "cosine similarity of the pair's features used as the pair's value",
            gathered=lambda u1, u2, mu1, mu2, labels, center: _cos(mu1, mu2),
            inputs=("features",),
            source=_SCRIPTS,
        ),
        CombinationSpec(
            "perfect",
            "oracle margin (2*label-1)*(cos - mean cos): uses the labels, an upper bound",
            gathered=_perfect,
            inputs=("features", "labels"),
            direction="confidence",
            source=_SCRIPTS,
        ),
    ],
)
"""Every pair-uncertainty combination (u = per-image values, as (N, K) rows), in `analyze list` order."""


def combine(
    name: str,
    u1: np.ndarray,
    u2: np.ndarray,
    *,
    mu1: np.ndarray | None = None,
    mu2: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    center: float | None = None,
) -> np.ndarray:
    """Pair value (M,) of combination `name` for gathered per-image rows u1, u2 ((M,) or (M, K)).

    cosine-analytic uses mu1, mu2 as given; similarity and perfect use their cosine. perfect
    needs the pair labels and `center`, the mean cosine over all pairs (taken over these
    pairs when None, as the script does).
    """
    spec = COMBINATIONS.get(name)
    a, b = _two_d(u1), _two_d(u2)
    if a.shape != b.shape:
        raise ValueError(f"u1 and u2 differ in shape: {a.shape} vs {b.shape}")
    if spec.gathered is None:
        return spec.pair(spec.row(a), spec.row(b), a.shape[1])
    if mu1 is None or mu2 is None:
        raise ValueError(f"uncertainty combination {spec.name!r} needs the pair's features (mu1, mu2)")
    m1, m2 = _two_d(mu1), _two_d(mu2)
    if "labels" in spec.inputs:
        if labels is None:
            raise ValueError("uncertainty combination 'perfect' is an oracle and needs the pair labels")
        labels = np.asarray(labels).reshape(-1)
        if labels.shape[0] != m1.shape[0]:
            raise ValueError(f"perfect: {labels.shape[0]} labels for {m1.shape[0]} pairs")
        if center is None:
            center = float(_cos(m1, m2).mean())
    return spec.gathered(a, b, m1, m2, labels, center)


@timed("uncertainty")
def pair_uncertainty(
    name: str,
    values: np.ndarray,
    i: np.ndarray,
    j: np.ndarray,
    *,
    features: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    center: float | None = None,
    block: int = DEFAULT_BLOCK,
) -> np.ndarray:
    """Combination `name` for pairs (i, j) of per-row `values` ((N,) or (N, K)), computed in blocks.

    `features` (N, D) is needed by cosine-analytic (used as given), similarity and perfect;
    `labels` (M,) by perfect, whose `center` defaults to the mean cosine of all M pairs.
    Row-reducible combinations take their per-row statistic once per row (O(N K + M) instead of
    O(M K): 15.7 M IJB-C pairs x 512-d sigma), then combine the two rows' scalars per pair.
    """
    spec = COMBINATIONS.get(name)
    values = np.asarray(values)
    n = len(values)
    i, j = check_pairs(i, j, n, what="uncertainty values")
    if "features" in spec.inputs:
        if features is None:
            raise ValueError(f"uncertainty combination {spec.name!r} needs features=")
        features = np.asarray(features)
        if len(features) != n:
            raise ValueError(f"features have {len(features)} rows, uncertainty values {n}")
    if "labels" in spec.inputs:
        if labels is None:
            raise ValueError("uncertainty combination 'perfect' is an oracle and needs labels=")
        labels = np.asarray(labels).reshape(-1)
        if labels.shape[0] != i.shape[0]:
            raise ValueError(f"perfect: {labels.shape[0]} labels for {i.shape[0]} pairs")
        if center is None:
            center = float(cosine_scores(features, i, j, block=block).mean()) if i.size else 0.0
    if spec.gathered is None:
        stats = np.empty(n, dtype=np.float64)
        for s in blocks(n, max(1, block // 4)):
            stats[s] = spec.row(_two_d(values[s]))
        k = 1 if values.ndim == 1 else values.shape[1]
        return spec.pair(stats[i], stats[j], k)
    if spec.fused is not None:  # a fused kernel: the formula of `gathered`, no pairs x D temporaries
        return spec.fused(values, features, i, j)
    out = np.empty(i.size, dtype=np.float64)
    for s in blocks(i.size, block):
        out[s] = combine(
            spec.name,
            values[i[s]],
            values[j[s]],
            mu1=np.asarray(features[i[s]], dtype=np.float64),
            mu2=np.asarray(features[j[s]], dtype=np.float64),
            labels=None if labels is None else labels[s],
            center=center,
        )
    return out


def combination_mode(name: str, input_mode: str) -> str:
    """Direction of a combination's output: the input's mode, except 'perfect' (always a confidence).

    'similarity' keeps the input's mode as the scripts do (it ignores the per-image values).
    """
    spec = COMBINATIONS.get(name)
    if input_mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {input_mode!r}")
    return input_mode if spec.direction == "input" else spec.direction


def as_uncertainty(pair_values: np.ndarray, mode: str) -> np.ndarray:
    """Pair values turned into 'larger = reject first': negated when `mode` is 'confidence'."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    values = np.asarray(pair_values, dtype=np.float64)
    return -values if mode == "confidence" else values
