"""Reject verification and fixed-threshold EDC against plain per-fraction recomputation, bit for bit."""

import numpy as np
import pytest
from sklearn.metrics import auc as sk_auc

from analyze.reject import (
    fixed_threshold_edc,
    kept_counts,
    partial_auc,
    reject_curve,
    rejection_order,
    stable_argsort,
)

FARS = np.array([0.0, 1e-3, 0.01, 0.1, 0.25, 0.5, 0.9, 1.0])
FRACTIONS = np.linspace(0, 1, 26)


def plain_tar_at_far(s, lab, fars):
    """The paper's ROC(FARs=...) on one subset: (tar, threshold, achieved far) per FAR, or NaN rows."""
    neg = sorted(s[~lab].tolist(), reverse=True)
    rows = []
    for far in fars:
        if not neg:
            rows.append((np.nan, np.nan, np.nan))
            continue
        k = int(np.round(len(neg) * far))
        thr = neg[0] + 1e-8 if k == 0 else neg[k - 1]
        accept = s >= thr
        rows.append((np.mean(accept[lab]) if lab.any() else np.nan, thr, np.mean(accept[~lab])))
    return np.array(rows).reshape(len(fars), 3)


def plain_reject(s, lab, u, fractions, fars, confidence=False):
    """Sort by (uncertainty, index) or (-confidence, index); per fraction keep int(n(1-r)), recompute."""
    n = len(s)
    order = sorted(range(n), key=lambda i: (-u[i] if confidence else u[i], i))
    out = []
    for r in fractions:
        keep = np.array(order[: int(n * (1 - r))], dtype=np.int64)
        out.append(plain_tar_at_far(s[keep], lab[keep], fars))
    return np.stack(out)  # (R, F, 3)


def tied_data(seed, m, p_genuine):
    """Integer-valued scores and uncertainties: heavy ties in both."""
    rng = np.random.default_rng(seed)
    s = rng.integers(-3, 4, m).astype(np.float64)
    u = rng.integers(0, 4, m).astype(np.float64)
    lab = rng.random(m) < p_genuine
    lab[0] = False
    return s, lab, u


def assert_curve_equals_plain(curve, s, lab, u, fractions, fars, confidence=False):
    ref = plain_reject(s, lab, u, fractions, fars, confidence)
    np.testing.assert_array_equal(curve.tar, ref[:, :, 0])
    np.testing.assert_array_equal(curve.threshold, ref[:, :, 1])
    np.testing.assert_array_equal(curve.far_achieved, ref[:, :, 2])
    kept = np.array([int(len(s) * (1 - r)) for r in fractions])
    np.testing.assert_array_equal(curve.kept_pairs, kept)
    order = np.argsort(-u if confidence else u, kind="stable")
    np.testing.assert_array_equal(curve.kept_genuine, [lab[order[:k]].sum() for k in kept])
    np.testing.assert_array_equal(curve.kept_impostor, kept - curve.kept_genuine)


@pytest.mark.parametrize(
    "seed,m,p", [(0, 1, 0.5), (1, 2, 0.5), (2, 17, 0.5), (3, 150, 0.1), (4, 300, 0.5), (5, 300, 0.9)]
)
def test_reject_matches_plain_recomputation(seed, m, p):
    s, lab, u = tied_data(seed, m, p)
    curve = reject_curve(s, lab, u, FRACTIONS, FARS, allow_tiny_far=True)
    assert_curve_equals_plain(curve, s, lab, u, FRACTIONS, FARS)


@pytest.mark.parametrize("seed", range(3))
def test_reject_confidence_order_matches_plain(seed):
    s, lab, c = tied_data(10 + seed, 200, 0.4)
    curve = reject_curve(s, lab, c, FRACTIONS, FARS, order="confidence", allow_tiny_far=True)
    assert_curve_equals_plain(curve, s, lab, c, FRACTIONS, FARS, confidence=True)
    assert curve.order == "confidence"


def test_reject_many_buckets_float_scores():
    rng = np.random.default_rng(7)
    m = 4000
    s = np.round(rng.standard_normal(m), 2)
    u = np.round(rng.random(m), 2)
    lab = rng.random(m) < 0.3
    fractions = np.array([0.0, 0.013, 0.34, 0.5, 0.77, 0.999])
    curve = reject_curve(s, lab, u, fractions, FARS, allow_tiny_far=True)
    assert_curve_equals_plain(curve, s, lab, u, fractions, FARS)


def test_genuine_first_prefixes_have_no_impostors():
    # all genuine pairs are the most certain: small kept sets hold no impostor (NaN rows)
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    lab = np.array([True, True, True, False, False, False])
    u = np.arange(6.0)
    fractions = np.array([0.0, 0.5, 0.6])  # keep 6, 3, 2
    curve = reject_curve(s, lab, u, fractions, [1 / 3, 1.0])
    assert np.isnan(curve.tar[1:]).all() and np.isnan(curve.threshold[1:]).all()
    np.testing.assert_array_equal(curve.tar[0], [1.0, 1.0])
    np.testing.assert_array_equal(curve.kept_impostor, [3, 0, 0])
    assert_curve_equals_plain(curve, s, lab, u, fractions, [1 / 3, 1.0])


def test_all_impostor_prefixes_give_nan_tar():
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    lab = np.array([False, False, False, True, True, True])
    curve = reject_curve(s, lab, np.arange(6.0), [0.0, 0.5], [1 / 3])
    assert curve.tar[0, 0] == 0.0 and np.isnan(curve.tar[1, 0])  # threshold .9 is above every genuine
    assert curve.threshold[1, 0] == 0.9 and curve.far_achieved[1, 0] == 1 / 3
    assert_curve_equals_plain(curve, s, lab, np.arange(6.0), [0.0, 0.5], [1 / 3])


def test_known_answer_and_auc():
    # (score, genuine, uncertainty): a .9 G .1 | b .8 I .2 | c .7 G .3 | d .6 I .4 | e .5 G .5 | f .95 I .6
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.95])
    lab = np.array([True, False, True, False, True, False])
    u = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    curve = reject_curve(s, lab, u, [0.0, 0.2, 0.5, 0.8], [0.5])
    # keep 6: k=round(1.5)=2 -> thr .8; keep 4 (int 4.8): k=1 -> .8; keep 3: k=round(.5)=0 -> .8+1e-8
    np.testing.assert_array_equal(curve.kept_pairs, [6, 4, 3, 1])
    np.testing.assert_array_equal(curve.threshold[:, 0], [0.8, 0.8, 0.8 + 1e-8, np.nan])
    np.testing.assert_array_equal(curve.tar[:, 0], [1 / 3, 1 / 2, 1 / 2, np.nan])
    np.testing.assert_array_equal(curve.far_achieved[:, 0], [2 / 3, 1 / 2, 0.0, np.nan])
    short = reject_curve(s, lab, u, [0.0, 0.2, 0.5], [0.5])
    assert short.auc()[0] == pytest.approx(0.2 * (1 / 3 + 1 / 2) / 2 + 0.3 * 0.5)
    assert short.auc()[0] == sk_auc([0.0, 0.2, 0.5], short.tar[:, 0])
    # confidence descending keeps f, e, d first
    conf = reject_curve(s, lab, u, [0.5], [0.5], order="confidence")
    assert conf.threshold[0, 0] == 0.95  # impostors f .95, d .6: k = 1


def test_kept_counts_truncate_like_the_paper():
    # 100 * (1 - 0.34) = 65.99999999999999 -> 65; 1000 * (1 - 0.07) -> 929
    np.testing.assert_array_equal(kept_counts(100, [0.0, 0.34, 1.0]), [100, 65, 0])
    assert kept_counts(1000, [0.07])[0] == 929


def test_rejection_order_is_stable():
    u = np.array([2.0, 1.0, 2.0, 1.0, 0.0])
    np.testing.assert_array_equal(rejection_order(u), [4, 1, 3, 0, 2])
    np.testing.assert_array_equal(rejection_order(u, "confidence"), [0, 2, 1, 3, 4])


def test_reject_errors():
    s, lab, u = tied_data(0, 50, 0.5)
    n_imp = int((~lab).sum())
    with pytest.raises(ValueError, match=f"n_impostors = {n_imp}"):
        reject_curve(s, lab, u, FRACTIONS, [1e-4])
    with pytest.raises(ValueError, match="NaN"):
        reject_curve(s, lab, np.where(np.arange(50) == 3, np.nan, u), FRACTIONS, [0.1])
    with pytest.raises(ValueError, match="fractions"):
        reject_curve(s, lab, u, [-0.1], [0.1])
    with pytest.raises(ValueError, match="no impostor"):
        reject_curve(s[lab], lab[lab], u[lab], FRACTIONS, [0.1])
    with pytest.raises(ValueError, match="shape"):
        reject_curve(s, lab, u[:-1], FRACTIONS, [0.1])


def test_columns_are_tidy():
    s, lab, u = tied_data(1, 60, 0.5)
    curve = reject_curve(s, lab, u, [0.0, 0.5], [0.1, 0.5])
    cols = curve.columns()
    assert {len(v) for v in cols.values()} == {4}
    np.testing.assert_array_equal(cols["rejected_fraction"], [0.0, 0.0, 0.5, 0.5])
    np.testing.assert_array_equal(cols["far"], [0.1, 0.5, 0.1, 0.5])
    np.testing.assert_array_equal(cols["tar"], curve.tar.ravel())


def plain_edc(s, lab, q, fractions, fars):
    """Thresholds on all pairs; discard the d lowest qualities and every tie of the d-th; errors on the rest."""
    thr = plain_tar_at_far(s, lab, fars)[:, 1]
    n = len(s)
    q_sorted = sorted(q.tolist())
    rows = []
    for r in fractions:
        d = n - int(n * (1 - r))
        keep = q > q_sorted[d - 1] if d > 0 else np.ones(n, bool)
        g, i = lab & keep, ~lab & keep
        fnmr = [np.mean(s[g] < t) if g.any() else np.nan for t in thr]
        fmr = [np.mean(s[i] >= t) if i.any() else np.nan for t in thr]
        rows.append(((~keep).sum() / n, fnmr, fmr))
    return thr, rows


@pytest.mark.parametrize("seed,m", [(0, 3), (1, 40), (2, 300)])
def test_edc_matches_plain(seed, m):
    s, lab, q = tied_data(20 + seed, m, 0.5)
    lab[1] = True
    fars = np.array([0.01, 0.1, 0.5, 1.0])
    edc = fixed_threshold_edc(s, lab, q, FRACTIONS, fars, allow_tiny_far=True)
    thr, rows = plain_edc(s, lab, q, FRACTIONS, fars)
    np.testing.assert_array_equal(edc.threshold, thr)
    np.testing.assert_array_equal(edc.discarded_fraction, [row[0] for row in rows])
    np.testing.assert_array_equal(edc.fnmr, [row[1] for row in rows])
    np.testing.assert_array_equal(edc.fmr, [row[2] for row in rows])
    assert (edc.discarded_fraction >= edc.fractions - 1e-12).all()
    # uncertainty order discards the highest first: same as quality = -uncertainty
    unc = fixed_threshold_edc(s, lab, -q, FRACTIONS, fars, order="uncertainty", allow_tiny_far=True)
    np.testing.assert_array_equal(unc.fnmr, edc.fnmr)


def test_edc_ties_discarded_together():
    s = np.array([0.9, 0.1, 0.8, 0.2])
    lab = np.array([True, True, False, False])
    q = np.array([1.0, 1.0, 2.0, 3.0])
    edc = fixed_threshold_edc(s, lab, q, [0.0, 0.25], [0.5])
    np.testing.assert_array_equal(edc.discarded_fraction, [0.0, 0.5])
    np.testing.assert_array_equal(edc.quality_cutoff, [-np.inf, 1.0])
    assert edc.threshold[0] == 0.8  # k = 1 of impostors .8, .2
    assert edc.fnmr[0, 0] == 0.5 and np.isnan(edc.fnmr[1, 0])  # the genuine pairs were both discarded
    np.testing.assert_array_equal(edc.fmr[:, 0], [0.5, 0.5])


def test_partial_auc():
    assert partial_auc([0, 0.5, 1], [1, 0, 0], 0.25) == pytest.approx(0.1875)
    assert partial_auc([0, 0.5, 1], [1, 0, 0], 1.0) == pytest.approx(0.25)
    assert partial_auc([0, 0, 0.5], [1, 1, 0], 0.0) == 0.0
    with pytest.raises(ValueError, match="outside"):
        partial_auc([0, 0.5], [1, 0], 0.75)
    s, lab, q = tied_data(5, 100, 0.5)
    edc = fixed_threshold_edc(s, lab, q, np.linspace(0, 0.5, 11), [0.1])
    x, y = edc.discarded_fraction, edc.fnmr[:, 0]
    limit = float(x[3])
    assert edc.partial_auc(limit)[0] == pytest.approx(np.trapezoid(y[x <= limit], x[x <= limit]))


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16, np.int64, np.uint8, bool])
@pytest.mark.parametrize("descending", [False, True])
def test_stable_argsort_equals_numpy_stable(dtype, descending):
    rng = np.random.default_rng(42)
    m = 3000
    if np.dtype(dtype).kind == "f":
        v = np.concatenate([rng.standard_normal(m), rng.integers(-3, 3, m), [0.0, -0.0, np.inf, -np.inf] * 5])
        v = rng.permutation(v).astype(dtype)
    else:
        v = rng.integers(0, 2 if dtype is bool else 7, 2 * m).astype(dtype)
    ref_input = -v.astype(np.float64) if descending else v
    np.testing.assert_array_equal(stable_argsort(v, descending), np.argsort(ref_input, kind="stable"))


def test_stable_argsort_float64_beyond_float32_precision():
    base = np.array([1.0, 1.0 + 2**-40, 1.0 - 2**-45, -1.0 - 2**-50, -1.0, 1e-300, -1e-300, 1.0])
    v = np.tile(base, 50)
    np.testing.assert_array_equal(stable_argsort(v), np.argsort(v, kind="stable"))
    np.testing.assert_array_equal(stable_argsort(v, descending=True), np.argsort(-v, kind="stable"))
    assert stable_argsort(np.array([])).size == 0
    with pytest.raises(ValueError, match="NaN"):
        stable_argsort(np.array([1.0, np.nan]))
