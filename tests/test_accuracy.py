"""analyze.accuracy against insightface's verification functions (tests/insightface_verification_oracle.py)
and brute force, on random data with tied distances, tied training accuracies and uneven folds."""

from __future__ import annotations

import numpy as np
import pytest
from insightface_verification_oracle import oracle_roc, oracle_val
from sklearn.preprocessing import normalize

from analyze.accuracy import (
    ACCURACY_THRESHOLDS,
    VAL_THRESHOLDS,
    accuracy_under_rejection,
    flip_features,
    kfold_accuracy,
    kfold_bounds,
    squared_distances,
    val_at_far,
)


def tied_embeddings(n_pairs: int, seed: int, dim: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw and flipped embeddings (rows 2k, 2k+1 form pair k, as in a .bin pack) and issame. A third of the
    images are one of four axis vectors, so many distances tie exactly (0, 2, 1 +- ...) and accuracies tie."""
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(2 * n_pairs, dim))
    flip = emb + 0.3 * rng.normal(size=emb.shape)
    axis = rng.random(2 * n_pairs) < 0.35
    basis = np.eye(dim)[rng.integers(0, 4, 2 * n_pairs)] * rng.choice([1.0, 3.0], size=(2 * n_pairs, 1))
    emb[axis], flip[axis] = basis[axis], basis[axis]
    issame = rng.random(n_pairs) < 0.5
    close = issame & (rng.random(n_pairs) < 0.7)
    emb[1::2][close] = emb[0::2][close] + 0.4 * rng.normal(size=(int(close.sum()), dim))
    return emb, flip, issame


@pytest.mark.parametrize(("n_pairs", "folds", "seed"), [(60, 10, 0), (97, 10, 1), (33, 10, 2), (41, 7, 3), (25, 1, 4)])
def test_accuracy_equals_insightface(n_pairs, folds, seed):
    emb, flip, issame = tied_embeddings(n_pairs, seed)
    feats = normalize(emb + flip)  # insightface test(): embeddings_list[0] + [1], sklearn normalize
    tpr, fpr, acc, best = oracle_roc(ACCURACY_THRESHOLDS, feats[0::2], feats[1::2], issame, folds)
    ours_f = flip_features(emb, flip)
    np.testing.assert_allclose(ours_f, feats, rtol=0, atol=1e-15)
    i, j = np.arange(0, 2 * n_pairs, 2), np.arange(1, 2 * n_pairs, 2)
    dist = squared_distances(feats, i, j)
    np.testing.assert_array_equal(dist, np.sum(np.square(feats[0::2] - feats[1::2]), 1))
    res = kfold_accuracy(dist, issame, folds)
    np.testing.assert_array_equal(res.accuracy, acc)
    np.testing.assert_array_equal(res.threshold, best)
    np.testing.assert_allclose(res.tpr, tpr, rtol=0, atol=1e-15)
    np.testing.assert_allclose(res.fpr, fpr, rtol=0, atol=1e-15)
    assert res.accuracy_mean == np.mean(acc) and res.accuracy_std == np.std(acc)


def test_ties_pick_the_first_best_threshold():
    # every training threshold in (0.5, 1.5] separates perfectly: the first of them (0.51) is chosen
    dist = np.array([0.5, 1.5] * 10)
    res = kfold_accuracy(dist, np.array([True, False] * 10), folds=10)
    np.testing.assert_array_equal(res.threshold, np.full(10, ACCURACY_THRESHOLDS[51]))
    np.testing.assert_array_equal(res.accuracy, np.ones(10))
    assert res.accuracy_std == 0.0


def test_accuracy_brute_force_known_answer():
    # fold 1 (pairs 0-1) holds the one mislabelled-looking pair; the others separate perfectly at 1.0
    dist = np.array([0.2, 3.0, 0.2, 3.0, 0.2, 3.0, 0.2, 3.0])
    lab = np.array([False, False, True, False, True, False, True, False])
    res = kfold_accuracy(dist, lab, folds=4)
    np.testing.assert_array_equal(res.bounds, [[0, 2], [2, 4], [4, 6], [6, 8]])
    # fold 0 trains on 3 genuine at 0.2 and 3 impostors at 3.0: first perfect threshold 0.21; tests 0.2 < 0.21
    # as genuine (wrong) and 3.0 as impostor (right): 1/2
    np.testing.assert_array_equal(res.accuracy, [0.5, 1.0, 1.0, 1.0])
    assert res.accuracy_mean == 0.875


def test_kfold_bounds_like_sklearn():
    from sklearn.model_selection import KFold

    for n, k in [(10, 10), (23, 10), (6000, 10), (7, 3)]:
        ref = [(t[0], t[-1] + 1) for _, t in KFold(n_splits=k).split(np.arange(n))]
        np.testing.assert_array_equal(kfold_bounds(n, k), ref)


def test_fewer_pairs_than_folds_is_one_line():
    with pytest.raises(ValueError, match=r"^9 pairs are fewer than --folds 10: every fold needs at least one pair$"):
        kfold_accuracy(np.zeros(9), np.zeros(9, bool), folds=10)
    with pytest.raises(ValueError, match="need at least 1 fold"):
        kfold_accuracy(np.zeros(9), np.zeros(9, bool), folds=0)


def test_empty_class_and_non_finite():
    res = kfold_accuracy(np.linspace(0, 2, 20), np.ones(20, bool), folds=10)
    np.testing.assert_array_equal(res.fpr, 0.0)  # no impostors: fpr 0, as insightface
    # the last fold (1.89, 2.0) is tested at 1.79, the first threshold above its training distances; the others at 2.01
    np.testing.assert_array_equal(res.threshold, [ACCURACY_THRESHOLDS[201]] * 9 + [ACCURACY_THRESHOLDS[179]])
    np.testing.assert_array_equal(res.accuracy, [1.0] * 9 + [0.0])
    with pytest.raises(ValueError, match="non-finite"):
        kfold_accuracy(np.array([0.1, np.nan]), np.array([True, False]), folds=1)


@pytest.mark.parametrize(("n_pairs", "far", "seed"), [(400, 1e-3, 0), (400, 0.05, 1), (150, 0.1, 2), (60, 0.2, 3)])
def test_val_equals_facenet(n_pairs, far, seed):
    emb, flip, issame = tied_embeddings(n_pairs, seed)
    feats = normalize(emb + flip)
    val, val_std, far_mean, chosen = oracle_val(VAL_THRESHOLDS, feats[0::2], feats[1::2], issame, far)
    dist = squared_distances(feats, np.arange(0, 2 * n_pairs, 2), np.arange(1, 2 * n_pairs, 2))
    res = val_at_far(dist, issame, far)
    np.testing.assert_allclose(res.threshold, chosen, rtol=0, atol=1e-12)
    assert res.val_mean == pytest.approx(val, abs=1e-15)
    assert res.val_std == pytest.approx(val_std, abs=1e-15)
    assert res.far_mean == pytest.approx(far_mean, abs=1e-15)


def test_val_target_unreachable_accepts_nothing():
    # training FAR never reaches 0.9: threshold 0.0, nothing accepted
    dist = np.r_[np.full(10, 0.1), np.full(10, 3.9999)]
    lab = np.r_[np.ones(10, bool), np.zeros(10, bool)]
    res = val_at_far(dist, lab, far_target=0.9, folds=2)
    np.testing.assert_array_equal(res.threshold, 0.0)
    np.testing.assert_array_equal(res.val, [0.0, np.nan])  # fold 0 holds only genuine pairs


def test_accuracy_under_rejection_brute_force():
    emb, flip, issame = tied_embeddings(80, 5)
    feats = flip_features(emb, flip)
    dist = squared_distances(feats, np.arange(0, 160, 2), np.arange(1, 160, 2))
    unc = np.round(np.random.default_rng(5).random(80), 1)  # ties in uncertainty: stable order keeps input order
    out = accuracy_under_rejection(dist, issame, unc, [0.0, 0.25, 0.5, 0.95], folds=10)
    assert out.kept_pairs.tolist() == [80, 60, 40, 4]
    assert out.accuracy_mean[0] == kfold_accuracy(dist, issame).accuracy_mean
    for k, n in enumerate(out.kept_pairs[:3]):
        keep = np.sort(np.argsort(unc, kind="stable")[:n])
        ref = kfold_accuracy(dist[keep], issame[keep])
        assert out.accuracy_mean[k] == ref.accuracy_mean and out.accuracy_std[k] == ref.accuracy_std
    assert np.isnan(out.accuracy_mean[3])  # 4 kept pairs < 10 folds
