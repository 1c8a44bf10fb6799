"""Open-set 1:N identification metrics (IJB-B/C): TPIR at FPIR, CMC, and identification with rejection,
as pure functions of the (probe x gallery) cosine scores of fused templates, per gallery.

Definitions (docs/metrics.md, "1:N identification"), following NIST's open-set definitions:

* a probe is *mated* in a gallery when its subject has a template there, *non-mated* otherwise;
* the mate's score is the highest score over the gallery templates of the probe's subject; its rank is
  1 + the number of gallery templates of other subjects scoring >= it (ties count against the mate:
  a mate tied with a non-mate is at rank 2, so rank 1 means strictly above every non-mate);
* FPIR threshold for a target f: the non-mated probes' top-1 scores sorted high to low, the k-th with
  k = round(f x n_nonmated) (k = 0: just above the highest), the `exact` rule of TAR@FAR (analyze.tarfar);
* a mated probe is identified at a threshold when its mate is at rank 1 with a score >= the threshold;
  TPIR = identified / mated;
* CMC(r) = the fraction of mated probes whose mate's rank is <= r.

Scores are computed in blocks of probes against one gallery (never a probes x all-images matrix).
numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analyze.curves import auc
from analyze.rows import check_unit_interval, l2_normalize
from analyze.tarfar import far_ranks, k0_threshold

DEFAULT_FPIRS = (1e-2, 1e-1)
DEFAULT_RANKS = (1, 5, 10)
PROBE_BLOCK = 4096
"""Probes scored per block: 4096 x 1,772 float64 scores are 58 MB."""
CONVENTION = "exact"
"""The FPIR threshold rule's name in the tables (the TAR@FAR `exact` rule, applied to non-mated top-1 scores)."""


@dataclass(frozen=True)
class Search:
    """One gallery searched by every probe: per probe whether it is mated, its mate's score and rank
    (NaN and 0 for non-mated probes) and its top-1 score over the whole gallery."""

    gallery: str
    mated: np.ndarray
    mate_score: np.ndarray
    mate_rank: np.ndarray
    top1: np.ndarray
    n_gallery: int

    @property
    def n_mated(self) -> int:
        return int(self.mated.sum())

    @property
    def n_nonmated(self) -> int:
        return int((~self.mated).sum())


def check_galleries(galleries: dict[str, np.ndarray], probe_subjects: np.ndarray) -> None:
    """Refuse a probe subject with templates in two galleries (its probe would be mated twice) and a
    gallery that no probe is mated in (TPIR and CMC would be 0/0), naming the subject or gallery."""
    seen: dict[int, str] = {}
    probe_set = set(np.unique(probe_subjects).tolist())
    for g, subjects in galleries.items():
        if len(subjects) == 0:
            raise ValueError(f"gallery {g!r} has no templates")
        for s in set(np.unique(subjects).tolist()) & probe_set:
            if s in seen:
                raise ValueError(
                    f"probe subject {s} has templates in galleries {seen[s]!r} and {g!r}; the galleries of a 1:N "
                    "protocol must be disjoint in subjects (each is searched on its own)"
                )
            seen[s] = g
        if not np.isin(probe_subjects, subjects).any():
            raise ValueError(f"gallery {g!r}: no probe is mated in it (no probe subject has a template there)")


def search(
    probe_features: np.ndarray,
    probe_subjects: np.ndarray,
    gallery_features: np.ndarray,
    gallery_subjects: np.ndarray,
    gallery: str = "gallery",
    block: int = PROBE_BLOCK,
) -> Search:
    """Score every probe against one gallery (cosine of L2-normalised features), block by block."""
    p = l2_normalize(np.asarray(probe_features, dtype=np.float64))
    g = l2_normalize(np.asarray(gallery_features, dtype=np.float64))
    ps = np.asarray(probe_subjects, dtype=np.int64).reshape(-1)
    gs = np.asarray(gallery_subjects, dtype=np.int64).reshape(-1)
    if p.ndim != 2 or g.ndim != 2 or p.shape[1] != g.shape[1]:
        raise ValueError(f"probe features {p.shape} and gallery features {g.shape} must be (n, D) with the same D")
    if len(ps) != len(p) or len(gs) != len(g):
        raise ValueError("one subject per probe and per gallery template")
    if len(g) == 0:
        raise ValueError(f"gallery {gallery!r} has no templates")
    n = len(p)
    mated = np.isin(ps, gs)
    mate_score = np.full(n, np.nan)
    mate_rank = np.zeros(n, dtype=np.int64)
    top1 = np.full(n, np.nan)
    one_each = len(np.unique(gs)) == len(gs)  # one template per subject (IJB-C): the mate is one column
    if one_each:
        order = np.argsort(gs, kind="stable")
        mate_col = order[np.minimum(np.searchsorted(gs[order], ps), max(len(gs) - 1, 0))]
    for a in range(0, n, block):
        b = min(a + block, n)
        s = p[a:b] @ g.T
        top1[a:b] = s.max(axis=1)
        m = mated[a:b]
        if one_each:
            ms = np.where(m, s[np.arange(b - a), mate_col[a:b]], -np.inf)
            ahead = (s >= ms[:, None]).sum(axis=1) - 1  # less the mate itself
        else:
            same = ps[a:b, None] == gs[None, :]
            ms = np.where(same, s, -np.inf).max(axis=1)
            ahead = ((s >= ms[:, None]) & ~same).sum(axis=1)
        mate_score[a:b] = np.where(m, ms, np.nan)
        mate_rank[a:b] = np.where(m, 1 + ahead, 0)
    return Search(gallery, mated, mate_score, mate_rank, top1, len(g))


def fpir_thresholds(nonmated_top1: np.ndarray, fpirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(threshold, achieved FPIR) per target FPIR: the k-th highest non-mated top-1 score, k = round(f x n)
    (k = 0: just above the highest); achieved = fraction of non-mated top-1 scores >= the threshold."""
    top = np.sort(np.asarray(nonmated_top1, dtype=np.float64))
    n = top.size
    if n == 0:
        raise ValueError("no non-mated probes: FPIR is undefined")
    ks = far_ranks(n, fpirs)
    thr = np.array([k0_threshold(top[-1]) if k == 0 else top[n - k] for k in ks], dtype=np.float64)
    achieved = (n - np.searchsorted(top, thr, side="left")) / n
    return thr, achieved


def tpir_at_threshold(res: Search, thresholds: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    """TPIR per threshold over the mated probes (those in `keep`, when given); NaN with no mated probe."""
    m = res.mated if keep is None else res.mated & keep
    n = int(m.sum())
    if n == 0:
        return np.full(len(thresholds), np.nan)
    first = res.mate_rank[m] == 1
    scores = np.sort(res.mate_score[m][first])
    return (scores.size - np.searchsorted(scores, np.asarray(thresholds, dtype=np.float64), side="left")) / n


@dataclass(frozen=True)
class TpirResult:
    fpirs: np.ndarray
    tpir: np.ndarray
    threshold: np.ndarray
    fpir_achieved: np.ndarray
    n_mated: int
    n_nonmated: int


def tpir_at_fpir(res: Search, fpirs: np.ndarray) -> TpirResult:
    """TPIR at each target FPIR (the exact rule; see the module docstring)."""
    f = check_unit_interval(fpirs, "fpirs", each="FPIR", show=True)
    thr, achieved = fpir_thresholds(res.top1[~res.mated], f)
    return TpirResult(f, tpir_at_threshold(res, thr), thr, achieved, res.n_mated, res.n_nonmated)


def cmc(res: Search, ranks: np.ndarray) -> np.ndarray:
    """Fraction of mated probes whose mate is within rank r, per r (NaN with no mated probe)."""
    r = np.asarray(ranks, dtype=np.int64)
    if (r < 1).any():
        raise ValueError(f"ranks must be >= 1, got {r[r < 1].tolist()}")
    ranks_m = np.sort(res.mate_rank[res.mated])
    if ranks_m.size == 0:
        return np.full(r.size, np.nan)
    return np.searchsorted(ranks_m, r, side="right") / ranks_m.size


def resolved_fpirs(
    fpirs: np.ndarray, explicit: bool, n_nonmated: int, allow_tiny: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(kept, dropped) FPIRs under the FAR rule of analyze.tarfar: an FPIR below 1/n_nonmated cannot be
    measured; given explicitly it is refused (ValueError) unless `allow_tiny`, as a default it is dropped."""
    f = np.asarray(fpirs, dtype=np.float64)
    if allow_tiny or n_nonmated == 0:
        return f, f[:0]
    floor = 1.0 / n_nonmated
    tiny = f < floor
    if explicit and tiny.any():
        raise ValueError(
            f"FPIR {f[tiny].min():g} is below the smallest meaningful FPIR 1/n_nonmated = {floor:.6g} "
            f"(n_nonmated = {n_nonmated}); request FPIR >= {floor:.6g}, or allow it (--allow-tiny-far) to use "
            "k = round(FPIR x n_nonmated) anyway (k = 0 puts the threshold just above the highest non-mated score)"
        )
    return f[~tiny], f[tiny]


@dataclass(frozen=True)
class RejectCurve:
    """TPIR at each FPIR as the most uncertain probes are rejected: arrays (fractions x fpirs)."""

    fractions: np.ndarray
    fpirs: np.ndarray
    tpir: np.ndarray
    threshold: np.ndarray
    kept_mated: np.ndarray
    kept_nonmated: np.ndarray
    mode: str

    def auc(self) -> np.ndarray:
        """Area under TPIR over rejected fraction, per FPIR (analyze.curves.auc)."""
        return np.array([auc(self.fractions, self.tpir[:, j]) for j in range(self.fpirs.size)])


def reject_curve(
    res: Search, uncertainty: np.ndarray, fractions: np.ndarray, fpirs: np.ndarray, mode: str = "recompute"
) -> RejectCurve:
    """Reject the round(r x n) most uncertain probes (mated and non-mated alike; ties broken by probe order,
    the earlier kept) for each fraction r, then TPIR at each FPIR over the probes kept. `recompute`: the
    threshold is set again on the kept non-mated probes; `fixed`: set once on all of them."""
    if mode not in ("recompute", "fixed"):
        raise ValueError(f"threshold mode must be 'recompute' or 'fixed', got {mode!r}")
    u = np.asarray(uncertainty, dtype=np.float64).reshape(-1)
    if u.shape != res.mated.shape:
        raise ValueError(f"{u.size} uncertainties for {res.mated.size} probes")
    if np.isnan(u).any():
        raise ValueError(f"{int(np.isnan(u).sum())} probe uncertainties are NaN")
    r = check_unit_interval(fractions, "fractions")
    f = np.asarray(fpirs, dtype=np.float64)
    n = u.size
    order = np.lexsort((-np.arange(n), -u))  # most uncertain first; equal ones: the later probe first
    fixed_thr = fpir_thresholds(res.top1[~res.mated], f)[0] if mode == "fixed" else None
    tpir = np.full((r.size, f.size), np.nan)
    thr = np.full((r.size, f.size), np.nan)
    kept_m = np.zeros(r.size, dtype=np.int64)
    kept_n = np.zeros(r.size, dtype=np.int64)
    for i, frac in enumerate(r):
        keep = np.ones(n, dtype=bool)
        keep[order[: int(np.round(frac * n))]] = False
        kept_m[i], kept_n[i] = int((keep & res.mated).sum()), int((keep & ~res.mated).sum())
        if fixed_thr is not None:
            t = fixed_thr
        elif kept_n[i] == 0:
            continue
        else:
            t = fpir_thresholds(res.top1[keep & ~res.mated], f)[0]
        thr[i] = t
        tpir[i] = tpir_at_threshold(res, t, keep)
    return RejectCurve(r, f, tpir, thr, kept_m, kept_n, mode)
