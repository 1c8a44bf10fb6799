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
from analyze.names import check_uncertainty, parse_metric
from analyze.rows import check_pairs, harmonic_mean, image_scalar, l2_normalize, pfe_confidence
from analyze.scores import DEFAULT_BLOCK, blocks, cosine_scores

__all__ = [
    "MODES",
    "as_uncertainty",
    "combination_mode",
    "combine",
    "harmonic_mean",
    "image_scalar",
    "pair_uncertainty",
    "parse_metric",
    "pfe_confidence",
]

MODES = ("uncertainty", "confidence")
"""'uncertainty': larger = less reliable (PFE sigma_sq); 'confidence': larger = more reliable (scale, norm)."""

NEEDS_FEATURES = ("cosine-analytic", "similarity", "perfect")
NEEDS_LABELS = ("perfect",)


def _two_d(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x[:, None] if x.ndim == 1 else x


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
    name = check_uncertainty(name)
    a, b = _two_d(u1), _two_d(u2)
    if a.shape != b.shape:
        raise ValueError(f"u1 and u2 differ in shape: {a.shape} vs {b.shape}")
    if name in NEEDS_FEATURES and (mu1 is None or mu2 is None):
        raise ValueError(f"uncertainty combination {name!r} needs the pair's features (mu1, mu2)")
    if name == "mean":
        return a.sum(axis=1) + b.sum(axis=1)
    if name == "squared-sum":
        return a.sum(axis=1) ** 2 + b.sum(axis=1) ** 2
    if name == "mul":
        return a.prod(axis=1) * b.prod(axis=1)
    if name == "harmonic-sum":
        return harmonic_mean(a, axis=1) + harmonic_mean(b, axis=1)
    if name == "harmonic-mul":
        return harmonic_mean(a, axis=1) * harmonic_mean(b, axis=1)
    if name == "harmonic-harmonic":
        return harmonic_mean(np.concatenate([a, b], axis=1), axis=1)
    if name == "squared-harmonic":
        return harmonic_mean(np.concatenate([a * a, b * b], axis=1), axis=1)
    if name == "min":
        return np.minimum(a.sum(axis=1), b.sum(axis=1))
    if name == "max":
        return np.maximum(a.sum(axis=1), b.sum(axis=1))
    m1, m2 = _two_d(mu1), _two_d(mu2)  # type: ignore[arg-type]
    if name == "cosine-analytic":
        if a.shape[1] not in (1, m1.shape[1]):
            raise ValueError(f"cosine-analytic: values have {a.shape[1]} columns, features {m1.shape[1]}")
        return np.sum(a * b + m1 * m1 * b + m2 * m2 * a, axis=1)
    cos = np.einsum("md,md->m", l2_normalize(m1), l2_normalize(m2))
    if name == "similarity":
        return cos
    # perfect
    if labels is None:
        raise ValueError("uncertainty combination 'perfect' is an oracle and needs the pair labels")
    labels = np.asarray(labels).reshape(-1)
    if labels.shape[0] != cos.shape[0]:
        raise ValueError(f"perfect: {labels.shape[0]} labels for {cos.shape[0]} pairs")
    if center is None:
        center = float(cos.mean())
    return (labels.astype(np.float64) * 2 - 1) * (cos - center)


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
    """
    name = check_uncertainty(name)
    values = np.asarray(values)
    n = len(values)
    i, j = check_pairs(i, j, n, what="uncertainty values")
    if name in NEEDS_FEATURES:
        if features is None:
            raise ValueError(f"uncertainty combination {name!r} needs features=")
        features = np.asarray(features)
        if len(features) != n:
            raise ValueError(f"features have {len(features)} rows, uncertainty values {n}")
    if name in NEEDS_LABELS:
        if labels is None:
            raise ValueError("uncertainty combination 'perfect' is an oracle and needs labels=")
        labels = np.asarray(labels).reshape(-1)
        if labels.shape[0] != i.shape[0]:
            raise ValueError(f"perfect: {labels.shape[0]} labels for {i.shape[0]} pairs")
        if center is None:
            center = float(cosine_scores(features, i, j, block=block).mean()) if i.size else 0.0
    if name in ROW_REDUCIBLE:
        return _from_row_stats(name, values, i, j, block)
    if name == "cosine-analytic":  # fused kernel: the formula of `combine`, no pairs x D temporaries
        return cosine_analytic_pairs(values, features, i, j)
    out = np.empty(i.size, dtype=np.float64)
    for s in blocks(i.size, block):
        mu1 = mu2 = None
        if features is not None and name in NEEDS_FEATURES:
            mu1 = np.asarray(features[i[s]], dtype=np.float64)
            mu2 = np.asarray(features[j[s]], dtype=np.float64)
        out[s] = combine(
            name,
            values[i[s]],
            values[j[s]],
            mu1=mu1,
            mu2=mu2,
            labels=None if labels is None else labels[s],
            center=center,
        )
    return out


ROW_REDUCIBLE = (
    "mean",
    "squared-sum",
    "mul",
    "harmonic-sum",
    "harmonic-mul",
    "harmonic-harmonic",
    "squared-harmonic",
    "min",
    "max",
)
"""Combinations that depend on each row only through a few per-row sums: computed once per row,
then gathered as scalars per pair (O(N K + M) instead of O(M K): 15.7 M IJB-C pairs x 512-d sigma)."""


def _row_stats(name: str, values: np.ndarray, block: int) -> np.ndarray:
    """The per-row scalar a combination needs, in float64, computed in row blocks."""
    if values.ndim == 2 and values.shape[1] > 1 and name in _RECIPROCAL_STATS:  # (N, D): fused kernel
        recip = row_reciprocal_sums(values, squared=name == "squared-harmonic")
        if name in ("harmonic-sum", "harmonic-mul"):
            return 1.0 / (recip / values.shape[1])  # harmonic_mean: 1 / np.mean(1 / v), the same operations
        return recip
    out = np.empty(len(values), dtype=np.float64)
    for s in blocks(len(values), max(1, block // 4)):
        v = _two_d(values[s])
        if name in ("mean", "squared-sum", "min", "max"):
            out[s] = v.sum(axis=1)
        elif name == "mul":
            out[s] = v.prod(axis=1)
        elif name in ("harmonic-sum", "harmonic-mul"):
            out[s] = harmonic_mean(v, axis=1)
        else:  # harmonic of the concatenation: sum of reciprocals (of squares)
            with np.errstate(divide="ignore"):
                out[s] = (1.0 / (v * v if name == "squared-harmonic" else v)).sum(axis=1)
    return out


_RECIPROCAL_STATS = ("harmonic-sum", "harmonic-mul", "harmonic-harmonic", "squared-harmonic")
"""Row statistics built on sum(1/v): computed by analyze.kernels.row_reciprocal_sums for (N, D) values."""


def _from_row_stats(name: str, values: np.ndarray, i: np.ndarray, j: np.ndarray, block: int) -> np.ndarray:
    """`combine(name, ...)` for every pair from per-row statistics (same formulas, see ROW_REDUCIBLE)."""
    r = _row_stats(name, values, block)
    a, b = r[i], r[j]
    if name in ("mean", "harmonic-sum"):
        return a + b
    if name == "squared-sum":
        return a**2 + b**2
    if name in ("mul", "harmonic-mul"):
        return a * b
    if name == "min":
        return np.minimum(a, b)
    if name == "max":
        return np.maximum(a, b)
    k = 1 if values.ndim == 1 else values.shape[1]
    return 2.0 * k / (a + b)  # harmonic mean of the 2K concatenated values


def combination_mode(name: str, input_mode: str) -> str:
    """Direction of a combination's output: the input's mode, except 'perfect' (always a confidence).

    'similarity' keeps the input's mode as the scripts do (it ignores the per-image values).
    """
    name = check_uncertainty(name)
    if input_mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {input_mode!r}")
    return "confidence" if name == "perfect" else input_mode


def as_uncertainty(pair_values: np.ndarray, mode: str) -> np.ndarray:
    """Pair values turned into 'larger = reject first': negated when `mode` is 'confidence'."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    values = np.asarray(pair_values, dtype=np.float64)
    return -values if mode == "confidence" else values
