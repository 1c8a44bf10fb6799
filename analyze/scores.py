"""Pair similarity scores (higher = same person) over feature rows gathered by pair index arrays.

Definitions follow the ScaleFace evaluation code (face_lib/evaluation/distance_uncertainty_funcs.py)
and PFE's utils.py; see docs/metrics.md, section "Pair scores". Every function takes the
per-image (or per-template) arrays plus pair index arrays ``i, j`` and works through the pairs
in blocks of ``block`` pairs, so at most ``2 * block * D`` gathered values are in memory at once.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from analyze.kernels import mls_pairs
from analyze.names import check_distance
from analyze.rows import check_pairs, l2_normalize, pfe_confidence

DEFAULT_BLOCK = 16384
"""Pairs per block: two float64 blocks of 16384 x 512 take 134 MB."""


def blocks(n: int, block: int = DEFAULT_BLOCK) -> Iterator[slice]:
    """Consecutive slices covering range(n), each at most `block` long."""
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    for start in range(0, n, block):
        yield slice(start, min(n, start + block))


def _rows(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return np.asarray(values[idx], dtype=np.float64)


def _as_2d(values: np.ndarray, n_rows: int, what: str) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2 or values.shape[0] != n_rows:
        raise ValueError(f"{what} must have shape ({n_rows},) or ({n_rows}, K), got {values.shape}")
    return values


DENSE_PAIRS_PER_ROW = 64
"""Above this many pairs per feature row, cosine scores come from blocks of a matrix product."""

DENSE_BLOCK_ROWS = 1024
"""Rows of the left factor per matrix-product block: 1024 x 23k float64 similarities is 190 MB."""


def cosine_scores(features: np.ndarray, i: np.ndarray, j: np.ndarray, *, block: int = DEFAULT_BLOCK) -> np.ndarray:
    """Cosine similarity of rows i and j (each row L2-normalised first), float64 (M,).

    With many pairs per row (IJB-C: 15.7 M template pairs over 23 k templates) the scores are read
    out of row blocks of the similarity matrix (BLAS dgemm), which is faster than gathering two
    feature rows per pair; both compute the same float64 dot products up to summation order.
    """
    features = np.asarray(features)
    i, j = check_pairs(i, j, len(features))
    if i.size >= DENSE_PAIRS_PER_ROW * max(len(features), 1):
        return _dense_cosine(l2_normalize(features), i, j)
    out = np.empty(i.size, dtype=np.float64)
    for s in blocks(i.size, block):
        a = l2_normalize(_rows(features, i[s]))
        b = l2_normalize(_rows(features, j[s]))
        out[s] = np.einsum("md,md->m", a, b)
    return out


def _dense_cosine(unit: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Scores of pairs (i, j) from blocks unit[a:b] @ unit.T, pairs grouped by their first row."""
    order = np.argsort(i, kind="stable")
    i_sorted = i[order]
    out = np.empty(i.size, dtype=np.float64)
    edges = np.searchsorted(i_sorted, np.arange(0, len(unit) + DENSE_BLOCK_ROWS, DENSE_BLOCK_ROWS))
    for k, a in enumerate(range(0, len(unit), DENSE_BLOCK_ROWS)):
        lo, hi = edges[k], edges[k + 1]
        if lo == hi:
            continue
        sim = unit[a : a + DENSE_BLOCK_ROWS] @ unit.T
        sel = order[lo:hi]
        out[sel] = sim[i_sorted[lo:hi] - a, j[sel]]
    return out


def euclidean_scores(features: np.ndarray, i: np.ndarray, j: np.ndarray, *, block: int = DEFAULT_BLOCK) -> np.ndarray:
    """Minus the squared euclidean distance of rows i and j as given (no normalisation), as the scripts do."""
    features = np.asarray(features)
    i, j = check_pairs(i, j, len(features))
    out = np.empty(i.size, dtype=np.float64)
    for s in blocks(i.size, block):
        d = _rows(features, i[s]) - _rows(features, j[s])
        out[s] = -np.einsum("md,md->m", d, d)
    return out


def mls_scores(
    features: np.ndarray,
    sigma_sq: np.ndarray,
    i: np.ndarray,
    j: np.ndarray,
    *,
    block: int = DEFAULT_BLOCK,
    exact: bool = True,
) -> np.ndarray:
    """PFE mutual likelihood score -sum_d((mu1-mu2)^2/(s1+s2) + log(s1+s2)), mu = L2-normalised rows.

    As in PFE's and ScaleFace's code: no 1/2 factor and no D*log(2*pi) constant (neither changes
    any ranking). `sigma_sq` is (N, D) or (N, 1)/(N,) broadcast over the D dimensions. Rows are
    normalised once and the pairs scored by a fused kernel (analyze.kernels.mls_pairs: no pairs x D
    temporaries; `block` is kept for callers and unused); `exact=False` sums the log term as logs of
    products, ~3x faster, within ~1e-13 of the exact score.
    """
    features = np.asarray(features)
    n = len(features)
    sigma_sq = _as_2d(sigma_sq, n, "sigma_sq")
    if sigma_sq.shape[1] not in (1, features.shape[1]):
        raise ValueError(f"sigma_sq has {sigma_sq.shape[1]} columns, features have {features.shape[1]}")
    i, j = check_pairs(i, j, n)
    return mls_pairs(l2_normalize(np.ascontiguousarray(features)), sigma_sq, i, j, exact=exact)


def cosine_stats(
    features: np.ndarray, i: np.ndarray, j: np.ndarray, *, block: int = DEFAULT_BLOCK
) -> tuple[float, float]:
    """Mean and population std of the cosine over the given pairs (centring stats, or a bias from a split)."""
    cos = cosine_scores(features, i, j, block=block)
    if cos.size == 0:
        raise ValueError("cannot take cosine statistics over zero pairs")
    return float(cos.mean()), float(cos.std())


def weighted_cosine_scores(
    features: np.ndarray,
    confidence: np.ndarray,
    i: np.ndarray,
    j: np.ndarray,
    *,
    combine: str = "mul",
    sqrt: bool = False,
    center: tuple[float, float] | None = None,
    bias: float | None = None,
    block: int = DEFAULT_BLOCK,
) -> np.ndarray:
    """Confidence-weighted cosine: base cosine (plain, centred or biased) times w(c_i, c_j).

    w = c1*c2 ('mul') or c1*c2/(c1+c2) ('harmonic', half the harmonic mean, as the scripts);
    with `sqrt` the confidences are square-rooted first. `center` = (mean, std) standardises the
    cosine; `bias` is subtracted from it (give at most one).
    """
    features = np.asarray(features)
    n = len(features)
    conf = _as_2d(confidence, n, "confidence")
    if conf.shape[1] != 1:
        raise ValueError(
            f"confidence must be one value per row, got shape {conf.shape}; reduce PFE sigma_sq "
            "with analyze.uncertainty.pfe_confidence first"
        )
    if combine not in ("mul", "harmonic"):
        raise ValueError(f"combine must be 'mul' or 'harmonic', got {combine!r}")
    if center is not None and bias is not None:
        raise ValueError("give either center (centred cosine) or bias (biased cosine), not both")
    conf = conf[:, 0]
    cos = cosine_scores(features, i, j, block=block)
    if center is not None:
        mean, std = center
        if not std > 0:
            raise ValueError(f"cannot centre the cosine: std of the scores is {std}")
        cos = (cos - mean) / std
    elif bias is not None:
        cos = cos - bias
    i, j = check_pairs(i, j, n)
    c1 = conf[i].astype(np.float64)
    c2 = conf[j].astype(np.float64)
    if sqrt:
        if np.any(c1 < 0) or np.any(c2 < 0):
            raise ValueError("sqrt-weighted scores need confidences >= 0")
        c1, c2 = np.sqrt(c1), np.sqrt(c2)
    weight = c1 * c2 if combine == "mul" else c1 * c2 / (c1 + c2)
    return cos * weight


def pair_scores(
    name: str,
    features: np.ndarray,
    i: np.ndarray,
    j: np.ndarray,
    *,
    uncertainty: np.ndarray | None = None,
    bias: float | None = None,
    center: tuple[float, float] | None = None,
    block: int = DEFAULT_BLOCK,
) -> np.ndarray:
    """Scores of pairs (i, j) for a distance name from `analyze.names.DISTANCES` (higher = same).

    `uncertainty`: MLS and pfe-* take PFE sigma_sq (N, D); scale-* take a per-row confidence (N,).
    `bias` is required by *biased-cosine names (mean validation cosine, see `cosine_stats`).
    Centred names standardise by `center` = (mean, std) when given, else by the mean and
    std of the scored pairs themselves (the scripts' behaviour; pass `center` when scoring
    a protocol in several calls so every chunk uses the same statistics).
    """
    name = check_distance(name)
    if name == "cosine":
        return cosine_scores(features, i, j, block=block)
    if name == "euc":
        return euclidean_scores(features, i, j, block=block)
    if name == "MLS":
        if uncertainty is None:
            raise ValueError("distance 'MLS' needs uncertainty= PFE sigma_sq (N, D)")
        return mls_scores(features, uncertainty, i, j, block=block)
    flavour = "biased" if name.endswith("biased-cosine") else "centered" if "centered" in name else "plain"
    if flavour == "biased" and bias is None:
        raise ValueError(f"distance {name!r} needs bias= (mean cosine on a validation split; see cosine_stats)")
    if flavour == "centered" and center is None:
        center = cosine_stats(features, i, j, block=block)
    base_center = center if flavour == "centered" else None
    base_bias = bias if flavour == "biased" else None
    if name in ("centered-cosine", "biased-cosine"):
        cos = cosine_scores(features, i, j, block=block)
        if base_bias is not None:
            return cos - base_bias
        mean, std = base_center  # type: ignore[misc]
        if not std > 0:
            raise ValueError(f"cannot centre the cosine: std of the scores is {std}")
        return (cos - mean) / std
    # {scale|pfe}-[sqrt-]{mul|harmonic}-<flavour>
    parts = name.split("-")
    source, sqrt = parts[0], parts[1] == "sqrt"
    combine = parts[2] if sqrt else parts[1]
    if uncertainty is None:
        need = "PFE sigma_sq (N, D)" if source == "pfe" else "the per-row confidence (scale or norm)"
        raise ValueError(f"distance {name!r} needs uncertainty= {need}")
    confidence = pfe_confidence(uncertainty) if source == "pfe" else uncertainty
    return weighted_cosine_scores(
        features,
        confidence,
        i,
        j,
        combine=combine,
        sqrt=sqrt,
        center=base_center,
        bias=base_bias,
        block=block,
    )
