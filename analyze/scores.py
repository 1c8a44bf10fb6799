"""Pair similarity scores (higher = same person) over feature rows gathered by pair index arrays.

Definitions follow the ScaleFace evaluation code (face_lib/evaluation/distance_uncertainty_funcs.py)
and PFE's utils.py; see docs/metrics.md, section "Pair scores". Every function takes the
per-image (or per-template) arrays plus pair index arrays ``i, j`` and works through the pairs
in blocks of ``block`` pairs, so at most ``2 * block * D`` gathered values are in memory at once.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np

from analyze.kernels import grouped_order, mls_pairs
from analyze.registry import VALUE_INPUTS, DistanceSpec, Registry
from analyze.rows import check_pairs, l2_normalize, pfe_confidence
from analyze.timing import timed

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
"""Distinct first rows per matrix-product block: 1024 x 19.6k float64 similarities (IJB-C) is 160 MB."""


def cosine_scores(features: np.ndarray, i: np.ndarray, j: np.ndarray, *, block: int = DEFAULT_BLOCK) -> np.ndarray:
    """Cosine similarity of rows i and j (each row L2-normalised first), float64 (M,).

    With many pairs per row (IJB-C: 15.7 M template pairs over 23 k templates) the scores are read
    out of blocks of the similarity matrix (BLAS dgemm) restricted to the rows and columns the pairs use,
    which is faster than gathering two feature rows per pair; both compute the same float64 dot products
    up to summation order. The last result is kept (`_LAST_COSINE`): the metrics of one pair set that share
    the cosine compute it once.
    """
    cached = _LAST_COSINE.get(features, i, j)  # keyed by the caller's own array objects
    if cached is not None:
        return cached
    key = (features, i, j)
    features = np.asarray(features)
    i, j = check_pairs(i, j, len(features))
    if i.size >= DENSE_PAIRS_PER_ROW * max(len(features), 1):
        out = _dense_cosine(l2_normalize(features), i, j)
    else:
        out = np.empty(i.size, dtype=np.float64)
        for s in blocks(i.size, block):
            a = l2_normalize(_rows(features, i[s]))
            b = l2_normalize(_rows(features, j[s]))
            out[s] = np.einsum("md,md->m", a, b)
    _LAST_COSINE.put(*key, out)
    return out.copy()


class _LastResult:
    """The last (features, i, j) -> scores of a pair function, held by weak references to the inputs: a hit needs
    the very same array objects (the pair sets' arrays are never modified in place), so nothing is kept alive
    and a new pair set misses. Returns a copy, so callers may modify what they get."""

    def __init__(self) -> None:
        self._key: tuple = ()
        self._value: np.ndarray | None = None

    def get(self, *arrays: np.ndarray) -> np.ndarray | None:
        if self._value is None or len(self._key) != len(arrays):
            return None
        if all(ref() is a for ref, a in zip(self._key, arrays)):
            return self._value.copy()
        return None

    def put(self, *arrays_and_value: np.ndarray) -> None:
        *arrays, value = arrays_and_value
        try:  # the scores go as soon as any input is freed (the pair set is done): no memory held past it
            self._key = tuple(weakref.ref(a, self._drop) for a in arrays)
        except TypeError:  # not weak-referenceable: do not cache
            self._key, self._value = (), None
            return
        self._value = value

    def _drop(self, ref: weakref.ref) -> None:
        if ref in self._key:
            self._key, self._value = (), None


_LAST_COSINE = _LastResult()


GEMM_UNROLL_M = 4
"""OpenBLAS's dgemm row unroll (Haswell..Zen: 4x8 kernels): a row's dot products keep their bits in any product whose
row count is a multiple of it (the same main kernel, the same k order); the rows past the last multiple of it use
edge kernels with other sums, and a one-column product is a gemv (tests/test_scores_dense.py pins both)."""


def _dense_cosine(unit: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Scores of pairs (i, j) from blocks unit[rows] @ unit[cols].T: pairs grouped by first row (kept as given when
    already grouped), DENSE_BLOCK_ROWS distinct first rows per block, only the rows and columns the block's pairs use
    (IJB-C's pairs are bipartite: 3.5 k first x 19.6 k second templates). Bit-identical to the full row blocks
    unit[a : a + DENSE_BLOCK_ROWS] @ unit.T it replaces: row counts padded to a multiple of GEMM_UNROLL_M, the last
    full block's tail rows (its row count mod GEMM_UNROLL_M) multiplied with the same tail, never one column."""
    n = len(unit)
    order = grouped_order(i)
    i_s = i if order is None else i[order]
    j_s = j if order is None else j[order]
    out = np.empty(i.size, dtype=np.float64)
    starts = np.flatnonzero(np.r_[True, i_s[1:] != i_s[:-1]])
    bounds = np.r_[starts[::DENSE_BLOCK_ROWS], i.size]
    last = (n - 1) // DENSE_BLOCK_ROWS * DENSE_BLOCK_ROWS  # the old last block unit[last:n]
    tail = n - (n - last) % GEMM_UNROLL_M  # its rows >= tail went through edge kernels
    tail_lo = max(last, tail - GEMM_UNROLL_M)
    pos = np.empty(n, dtype=np.int64)
    used = np.zeros(n, dtype=bool)
    buf = np.empty(0, dtype=np.float64)  # one similarity buffer and one column buffer for every block: no fresh
    rbuf = np.empty((0, unit.shape[1]), dtype=unit.dtype)  # pages per block (first touches are slow on some VMs)
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        ib = i_s[lo:hi]  # non-decreasing
        jb = j_s[lo:hi]
        rows = ib[np.r_[True, ib[1:] != ib[:-1]]]
        used[jb] = True
        cols = np.flatnonzero(used)
        used[cols] = False
        if cols.size == 1:  # a one-column product is a gemv, with other sums
            cols = np.r_[cols, (cols[0] + 1) % n] if n > 1 else np.r_[cols, cols]
        pos[cols] = np.arange(cols.size)
        col_of = pos[jb]
        if rbuf.shape[0] < cols.size:
            rbuf = np.empty((cols.size, unit.shape[1]), dtype=unit.dtype)
        right = np.take(unit, cols, axis=0, out=rbuf[: cols.size]).T
        main = rows[rows < tail]
        in_tail = rows.size - main.size
        pad = -main.size % GEMM_UNROLL_M
        n_main = main.size + pad if main.size else 0
        n_rows = n_main + (n - tail_lo if in_tail else 0)
        if buf.size < n_rows * cols.size:
            buf = np.empty(n_rows * cols.size, dtype=np.float64)
        sim = buf[: n_rows * cols.size].reshape(n_rows, cols.size)
        if main.size:
            np.matmul(unit[np.r_[main, np.full(pad, main[0])]], right, out=sim[:n_main])
            pos[main] = np.arange(main.size)
        if in_tail:
            np.matmul(unit[tail_lo:n], right, out=sim[n_main:])
            offset = main.size + pad - tail_lo
            pos[rows[main.size :]] = rows[main.size :] + offset
        vals = sim[pos[ib], col_of]
        if order is None:
            out[lo:hi] = vals
        else:
            out[order[lo:hi]] = vals
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


_MLS_EXACT: ContextVar[bool] = ContextVar("analyze_mls_exact", default=False)


@contextmanager
def mls_summation(exact: bool) -> Iterator[None]:
    """Within: MLS scores (`mls_scores` without `exact=`, so every command's MLS) use the exact kernel (`exact`
    True: bit-identical to runs before the fast default, `--mls-exact`) or the fast one."""
    token = _MLS_EXACT.set(bool(exact))
    try:
        yield
    finally:
        _MLS_EXACT.reset(token)


def mls_scores(
    features: np.ndarray,
    sigma_sq: np.ndarray,
    i: np.ndarray,
    j: np.ndarray,
    *,
    block: int = DEFAULT_BLOCK,
    exact: bool | None = None,
) -> np.ndarray:
    """PFE mutual likelihood score -sum_d((mu1-mu2)^2/(s1+s2) + log(s1+s2)), mu = L2-normalised rows.

    As in PFE's and ScaleFace's code: no 1/2 factor and no D*log(2*pi) constant (neither changes
    any ranking). `sigma_sq` is (N, D) or (N, 1)/(N,) broadcast over the D dimensions. Rows are
    normalised once and the pairs scored by a fused kernel (analyze.kernels.mls_pairs: no pairs x D
    temporaries; `block` is kept for callers and unused). Default (`exact` None: as `mls_summation` set it,
    else fast): one log per pair, within analyze.kernels.MLS_FAST_RTOL of the exact score; `exact=True`: numpy's
    per-dimension logs and pairwise sum, bit for bit.
    """
    features = np.asarray(features)
    n = len(features)
    sigma_sq = _as_2d(sigma_sq, n, "sigma_sq")
    if sigma_sq.shape[1] not in (1, features.shape[1]):
        raise ValueError(f"sigma_sq has {sigma_sq.shape[1]} columns, features have {features.shape[1]}")
    i, j = check_pairs(i, j, n)
    exact = _MLS_EXACT.get() if exact is None else exact
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


def _centred_cosine(features, i, j, *, center, block, **_) -> np.ndarray:
    mean, std = center
    if not std > 0:
        raise ValueError(f"cannot centre the cosine: std of the scores is {std}")
    return (cosine_scores(features, i, j, block=block) - mean) / std


def _weighted(source: str, combine: str, sqrt: bool, flavour: str) -> Callable[..., np.ndarray]:
    """The score function of one confidence-weighted cosine ({scale|pfe}-[sqrt-]{mul|harmonic}-<flavour>)."""

    def score(features, i, j, *, uncertainty, bias, center, block) -> np.ndarray:
        confidence = pfe_confidence(uncertainty) if source == "pfe" else uncertainty
        return weighted_cosine_scores(
            features,
            confidence,
            i,
            j,
            combine=combine,
            sqrt=sqrt,
            center=center if flavour == "centered-cosine" else None,
            bias=bias if flavour == "biased-cosine" else None,
            block=block,
        )

    return score


_SCRIPTS = "ScaleFace face_lib/evaluation/distance_uncertainty_funcs.py"
_FLAVOURS = {
    "cosine": ("cosine", ()),
    "centered-cosine": ("centred cosine", ("center",)),
    "biased-cosine": ("biased cosine", ("bias",)),
}
_WEIGHT_SOURCES = {
    "scale": ("the per-image confidence as stored (ScaleFace scale or feature norm)", "confidence"),
    "pfe": ("the PFE confidence 1/harmonic_mean(sigma_sq)", "sigma_sq"),
}
_WEIGHTS = {
    ("mul", False): "c1*c2",
    ("harmonic", False): "c1*c2/(c1+c2)",
    ("mul", True): "sqrt(c1)*sqrt(c2)",
    ("harmonic", True): "sqrt(c1)*sqrt(c2)/(sqrt(c1)+sqrt(c2))",
}


def _weighted_specs() -> list[DistanceSpec]:
    """The 24 confidence-weighted cosines: every source x sqrt x weight x cosine flavour (one spec each)."""
    out = []
    for source, (source_meaning, value_input) in _WEIGHT_SOURCES.items():
        for sqrt in (False, True):
            for combine in ("mul", "harmonic"):
                for flavour, (flavour_meaning, extra) in _FLAVOURS.items():
                    deviations = (
                        ("the scripts register only the biased flavour for pfe-*; offered for symmetry",)
                        if source == "pfe" and flavour != "biased-cosine"
                        else ()
                    )
                    out.append(
                        DistanceSpec(
                            f"{source}-{'sqrt-' if sqrt else ''}{combine}-{flavour}",
                            f"{flavour_meaning} times {_WEIGHTS[combine, sqrt]}, c = {source_meaning}",
                            _weighted(source, combine, sqrt, flavour),
                            inputs=("features", value_input, *extra),
                            source=_SCRIPTS,
                            deviations=deviations,
                            params={"weight_source": source, "weight": combine, "sqrt": sqrt, "cosine": flavour},
                        )
                    )
    return out


DISTANCES: Registry[DistanceSpec] = Registry(
    "distance",
    [
        DistanceSpec(
            "cosine",
            "cosine similarity of the L2-normalised features",
            lambda features, i, j, *, block, **_: cosine_scores(features, i, j, block=block),
            source=_SCRIPTS + " (cosine); insightface IJB eval",
            deviations=("rows divided by ||x|| (a zero row stays zero), the scripts by ||x|| + 1e-8",),
        ),
        DistanceSpec(
            "centered-cosine",
            "cosine standardised by the mean and std of all scored pairs",
            _centred_cosine,
            inputs=("features", "center"),
            source=_SCRIPTS,
        ),
        DistanceSpec(
            "biased-cosine",
            "cosine minus a bias (mean cosine of a validation split)",
            lambda features, i, j, *, bias, block, **_: cosine_scores(features, i, j, block=block) - bias,
            inputs=("features", "bias"),
            source=_SCRIPTS,
            deviations=("no default bias (the template script hard-codes 0.26)",),
        ),
        DistanceSpec(
            "euc",
            "minus the squared euclidean distance of the features as given",
            lambda features, i, j, *, block, **_: euclidean_scores(features, i, j, block=block),
            source=_SCRIPTS,
            aliases=("euclidean",),
        ),
        DistanceSpec(
            "MLS",
            "PFE mutual likelihood score -sum((mu1-mu2)^2/(s1+s2) + log(s1+s2)), mu L2-normalised",
            lambda features, i, j, *, uncertainty, block, **_: mls_scores(features, uncertainty, i, j, block=block),
            inputs=("features", "sigma_sq"),
            source="PFE utils.pair_MLS_score; " + _SCRIPTS,
            aliases=("mls",),
        ),
        *_weighted_specs(),
    ],
)
"""Every pair distance (higher = same person), in `analyze list` order."""


@timed("score")
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
    registry: Registry[DistanceSpec] | None = None,
) -> np.ndarray:
    """Scores of pairs (i, j) for a distance registered in `DISTANCES` (or `registry`; higher = same).

    `uncertainty`: specs needing 'sigma_sq' take PFE sigma_sq (N, D), those needing 'confidence' a per-row
    confidence (N,). `bias` is required by specs needing 'bias' (mean validation cosine, see `cosine_stats`).
    Specs needing 'center' standardise by `center` = (mean, std) when given, else by the mean and std of
    the scored pairs themselves (the scripts' behaviour; pass `center` when scoring a protocol in several
    calls so every chunk uses the same statistics).
    """
    spec = (registry or DISTANCES).get(name)
    if "bias" in spec.inputs and bias is None:
        raise ValueError(f"distance {spec.name!r} needs bias= (mean cosine on a validation split; see cosine_stats)")
    if "center" in spec.inputs and center is None:
        center = cosine_stats(features, i, j, block=block)
    if spec.values is not None and uncertainty is None:
        raise ValueError(f"distance {spec.name!r} needs uncertainty= {VALUE_INPUTS[spec.values]}")
    return spec.score(features, i, j, uncertainty=uncertainty, bias=bias, center=center, block=block)
