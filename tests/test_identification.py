"""1:N identification metrics against a brute-force computation (full score matrix, per-probe loops) and
hand-worked examples, with ties, empty sets and FPIRs at and below 1/n_nonmated."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analyze.identification import (
    check_galleries,
    cmc,
    fpir_thresholds,
    reject_curve,
    resolved_fpirs,
    search,
    tpir_at_fpir,
)


def _unit(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute(P, ps, G, gs, fpirs, ranks, keep=None, fixed_from_all=False):
    """Per-probe loops over the full score matrix, straight from the definitions."""
    S = _unit(P) @ _unit(G).T
    n = len(P)
    keep = np.ones(n, bool) if keep is None else keep
    mated, mate_score, rank, top1 = [], [], [], []
    for i in range(n):
        row = list(S[i])
        top1.append(max(row))
        mates = [row[j] for j in range(len(gs)) if gs[j] == ps[i]]
        if mates:
            ms = max(mates)
            others = [row[j] for j in range(len(gs)) if gs[j] != ps[i]]
            mated.append(True)
            mate_score.append(ms)
            rank.append(1 + sum(1 for o in others if o >= ms))
        else:
            mated.append(False)
            mate_score.append(None)
            rank.append(0)
    base = (
        [i for i in range(n) if not mated[i]] if fixed_from_all else [i for i in range(n) if keep[i] and not mated[i]]
    )
    nm_top = sorted((top1[i] for i in base), reverse=True)
    tp = []
    for f in fpirs:
        k = int(np.round(f * len(nm_top)))
        thr = nm_top[0] + 1e-8 if k == 0 else nm_top[k - 1]
        m = [i for i in range(n) if mated[i] and keep[i]]
        hit = sum(1 for i in m if rank[i] == 1 and mate_score[i] >= thr)
        tp.append((hit / len(m) if m else math.nan, thr))
    m = [i for i in range(n) if mated[i] and keep[i]]
    c = [sum(1 for i in m if rank[i] <= r) / len(m) for r in ranks]
    return np.array(mated), np.array(rank), np.array(top1), tp, c


def test_hand_worked_example():
    # gallery: subject 1 at 0 deg, subject 2 at 90 deg; probes at angles (deg) with their subjects
    G = [[1, 0], [0, 1]]
    angles = {10: 1, 60: 1, 30: 2, 80: 2, 45: 3, 5: 4}
    P = [[math.cos(math.radians(a)), math.sin(math.radians(a))] for a in angles]
    res = search(P, list(angles.values()), G, [1, 2])
    assert res.mated.tolist() == [True, True, True, True, False, False]
    assert res.mate_rank.tolist() == [1, 2, 2, 1, 0, 0]
    np.testing.assert_allclose(res.top1[4:], [math.cos(math.radians(45)), math.cos(math.radians(5))])
    # non-mated top-1 scores: cos 5 (0.9962), cos 45 (0.7071). FPIR 0.5 -> k = 1: threshold cos 5, nobody passes;
    # FPIR 1 -> k = 2: threshold cos 45 -> probes at 10 (cos 10) and 80 (cos 10) are identified: 2 of 4
    out = tpir_at_fpir(res, [0.5, 1.0])
    np.testing.assert_allclose(out.threshold, [math.cos(math.radians(5)), math.cos(math.radians(45))])
    np.testing.assert_allclose(out.tpir, [0.0, 0.5])
    np.testing.assert_allclose(out.fpir_achieved, [0.5, 1.0])
    np.testing.assert_allclose(cmc(res, [1, 2, 5]), [0.5, 1.0, 1.0])


def test_ties_count_against_the_mate():
    G = [[1, 0], [1, 0], [0, 1]]  # subjects 1 and 2 have the same gallery feature
    res = search([[1, 0.1], [0, 1]], [1, 9], G, [1, 2, 3])
    assert res.mate_rank[0] == 2  # tied with subject 2's template: rank 2, never identified
    np.testing.assert_allclose(cmc(res, [1, 2]), [0.0, 1.0])
    assert tpir_at_fpir(res, [1.0]).tpir[0] == 0.0
    # a mate tied with its own subject's second template is still at rank 1
    res = search([[1, 0.1], [0, 1]], [1, 9], [[1, 0], [1, 0], [0, 1]], [1, 1, 3])
    assert res.mate_rank[0] == 1


def test_threshold_at_tied_nonmated_scores_accepts_all_ties():
    # four non-mated probes with the same top-1 score: k = 1 threshold is that score, achieved FPIR 1
    thr, achieved = fpir_thresholds(np.array([0.5, 0.5, 0.5, 0.5]), np.array([0.25, 0.0]))
    assert thr[0] == 0.5 and achieved[0] == 1.0
    assert thr[1] > 0.5 and achieved[1] == 0.0  # k = 0: just above the highest


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("block", [1, 7, 4096])
@pytest.mark.parametrize("repeated", [True, False])
def test_matches_brute_force_with_ties(seed, block, repeated):
    rng = np.random.default_rng(seed)
    n_sub, dim = 12, 4
    gs = rng.permutation(n_sub)  # one template per subject (the one-column path) ...
    if repeated:  # ... or some subjects with two gallery templates (the general path)
        gs = np.concatenate([gs, rng.choice(n_sub, 4)])

    def exact(n):
        # entries +-1 times a power of two: normalised entries are +-0.5 and every cosine is a sum of
        # +-0.25 terms, exact in any summation order, so ties are exact ties (few directions: many of them)
        return rng.choice([-1.0, 1.0], (n, dim)) * 2.0 ** rng.integers(-2, 3, (n, 1))

    G = exact(len(gs))
    ps = rng.integers(0, n_sub + 6, 60)  # subjects >= 12 are non-mated
    P = exact(60)
    fpirs, ranks = [0.05, 0.1, 0.2, 0.5, 1.0, 0.0], [1, 2, 3, 10]
    mated, rank, top1, tp, c = brute(P, ps, G, gs, fpirs, ranks)
    res = search(P, ps, G, gs, block=block)
    np.testing.assert_array_equal(res.mated, mated)
    np.testing.assert_array_equal(res.mate_rank, rank)
    np.testing.assert_allclose(res.top1, top1, rtol=0, atol=1e-12)
    out = tpir_at_fpir(res, fpirs)
    np.testing.assert_allclose(out.tpir, [t for t, _ in tp])
    np.testing.assert_allclose(out.threshold, [t for _, t in tp], atol=1e-12)
    np.testing.assert_allclose(cmc(res, ranks), c)
    assert len(np.unique(res.top1[~res.mated])) < res.n_nonmated  # the data do have ties


@pytest.mark.parametrize("mode", ["recompute", "fixed"])
def test_reject_curve_matches_brute_force(mode):
    rng = np.random.default_rng(5)
    gs = np.arange(10)
    G = rng.standard_normal((10, 4))
    ps = rng.integers(0, 14, 80)
    P = G[np.minimum(ps, 9)] + rng.standard_normal((80, 4)) * 0.9
    u = rng.integers(0, 5, 80).astype(float)  # many tied uncertainties
    fractions, fpirs = np.array([0.0, 0.1, 0.25, 0.5]), np.array([0.1, 0.3])
    res = search(P, ps, G, gs)
    curve = reject_curve(res, u, fractions, fpirs, mode)
    # rejection order by hand: most uncertain first, among equal uncertainties the later probe first
    order = sorted(range(80), key=lambda i: (-u[i], -i))
    for i, frac in enumerate(fractions):
        keep = np.ones(80, bool)
        keep[order[: int(round(frac * 80))]] = False
        _, _, _, tp, _ = brute(P, ps, G, gs, fpirs, [1], keep=keep, fixed_from_all=(mode == "fixed"))
        np.testing.assert_allclose(curve.tpir[i], [t for t, _ in tp])
        np.testing.assert_allclose(curve.threshold[i], [t for _, t in tp])
        assert curve.kept_mated[i] == (keep & res.mated).sum()
    np.testing.assert_allclose(curve.tpir[0], tpir_at_fpir(res, fpirs).tpir)
    area = curve.auc()
    expected = [np.trapezoid(curve.tpir[:, j], fractions) for j in range(2)]
    np.testing.assert_allclose(area, expected)


def test_empty_and_degenerate_sets():
    G = [[1, 0]]
    res = search([[1, 0], [0, 1]], [1, 1], G, [1])  # every probe mated: no non-mated probe
    with pytest.raises(ValueError, match="no non-mated probes: FPIR is undefined"):
        tpir_at_fpir(res, [0.1])
    np.testing.assert_allclose(cmc(res, [1]), [1.0])
    res = search([[1, 0]], [5], G, [1])  # no mated probe
    assert np.isnan(cmc(res, [1])).all() and np.isnan(tpir_at_fpir(res, [1.0]).tpir).all()
    res = search(np.zeros((0, 2)), [], G, [1])  # no probe at all
    assert res.n_mated == res.n_nonmated == 0
    with pytest.raises(ValueError, match="has no templates"):
        search([[1, 0]], [1], np.zeros((0, 2)), [], gallery="G1")
    with pytest.raises(ValueError, match="ranks must be >= 1"):
        cmc(res, [0])


def test_gallery_checks_name_the_fault():
    with pytest.raises(ValueError, match="probe subject 3 has templates in galleries 'G1' and 'G2'"):
        check_galleries({"G1": np.array([1, 3]), "G2": np.array([3, 4])}, np.array([3, 4, 1]))
    with pytest.raises(ValueError, match="gallery 'G2': no probe is mated in it"):
        check_galleries({"G1": np.array([1, 2]), "G2": np.array([8])}, np.array([1, 2, 5]))
    with pytest.raises(ValueError, match="gallery 'G1' has no templates"):
        check_galleries({"G1": np.array([], int)}, np.array([1]))
    check_galleries({"G1": np.array([1, 2]), "G2": np.array([8])}, np.array([1, 8, 5]))
    # a gallery subject no probe has, shared by both galleries, does not matter
    check_galleries({"G1": np.array([1, 7]), "G2": np.array([7, 8])}, np.array([1, 8]))


def test_fpirs_below_one_over_n_nonmated_follow_the_far_rule():
    kept, dropped = resolved_fpirs(np.array([1e-3, 1e-2, 1e-1]), False, 200, False)
    assert kept.tolist() == [1e-2, 1e-1] and dropped.tolist() == [1e-3]
    with pytest.raises(ValueError, match=r"FPIR 0.001 is below the smallest meaningful FPIR 1/n_nonmated = 0.005"):
        resolved_fpirs(np.array([1e-3, 1e-1]), True, 200, False)
    kept, dropped = resolved_fpirs(np.array([1e-3]), True, 200, True)
    assert kept.tolist() == [1e-3] and dropped.size == 0
    # allowed, it is k = round(0.2) = 0: just above the highest non-mated score
    thr, achieved = fpir_thresholds(np.linspace(0, 1, 200), np.array([1e-3]))
    assert thr[0] > 1.0 and achieved[0] == 0.0
