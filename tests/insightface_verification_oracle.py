"""Test oracle: insightface's 10-fold verification (`recognition/arcface_torch/eval/verification.py`,
calculate_roc / calculate_accuracy / calculate_val) re-stated loop by loop, one threshold at a time, with
sklearn's KFold, so analyze.accuracy can be checked against the original function's inputs and outputs.

calculate_val interpolates with scipy interp1d(kind='slinear'), which scipy >= 1.13 refuses on repeated FARs
(always present in practice); the degree-1 B-spline interp1d built before that check is evaluated directly.
"""

from __future__ import annotations

import numpy as np
from scipy.interpolate import BSpline
from sklearn.model_selection import KFold


def _confusion(threshold, dist, issame):
    predicted = np.less(dist, threshold)
    tp = np.sum(predicted & issame)
    fp = np.sum(predicted & ~issame)
    tn = np.sum(~predicted & ~issame)
    fn = np.sum(~predicted & issame)
    return tp, fp, tn, fn


def oracle_accuracy(threshold, dist, issame):
    """(tpr, fpr, acc) at one threshold; an empty class gives rate 0."""
    tp, fp, tn, fn = _confusion(threshold, dist, issame)
    tpr = 0 if tp + fn == 0 else float(tp) / float(tp + fn)
    fpr = 0 if fp + tn == 0 else float(fp) / float(fp + tn)
    return tpr, fpr, float(tp + tn) / dist.size


def _splits(n, folds):
    idx = np.arange(n)
    return [(idx, idx)] if folds == 1 else list(KFold(n_splits=folds, shuffle=False).split(idx))


def oracle_roc(thresholds, emb1, emb2, issame, folds=10):
    """(mean tpr, mean fpr, per-fold accuracy, per-fold best threshold) as calculate_roc computes them."""
    dist = np.sum(np.square(emb1 - emb2), 1)
    tprs = np.zeros((folds, len(thresholds)))
    fprs = np.zeros((folds, len(thresholds)))
    acc = np.zeros(folds)
    best_thr = np.zeros(folds)
    for f, (train, test) in enumerate(_splits(len(issame), folds)):
        acc_train = np.array([oracle_accuracy(t, dist[train], issame[train])[2] for t in thresholds])
        best = np.argmax(acc_train)
        for k, t in enumerate(thresholds):
            tprs[f, k], fprs[f, k], _ = oracle_accuracy(t, dist[test], issame[test])
        _, _, acc[f] = oracle_accuracy(thresholds[best], dist[test], issame[test])
        best_thr[f] = thresholds[best]
    return tprs.mean(0), fprs.mean(0), acc, best_thr


def _val_far(threshold, dist, issame):
    tp, fp, _, _ = _confusion(threshold, dist, issame)
    return float(tp) / float(np.sum(issame)), float(fp) / float(np.sum(~issame))


def oracle_val(thresholds, emb1, emb2, issame, far_target, folds=10):
    """(val mean, val std, far mean, per-fold thresholds) as calculate_val computes them."""
    dist = np.sum(np.square(emb1 - emb2), 1)
    val, far, chosen = np.zeros(folds), np.zeros(folds), np.zeros(folds)
    for f, (train, test) in enumerate(_splits(len(issame), folds)):
        far_train = np.array([_val_far(t, dist[train], issame[train])[1] for t in thresholds])
        if np.max(far_train) >= far_target:
            order = np.argsort(far_train, kind="mergesort")
            x, y = far_train[order], np.asarray(thresholds, dtype=np.float64)[order]
            threshold = float(BSpline.construct_fast(np.r_[x[0], x, x[-1]], y, 1)(far_target))
        else:
            threshold = 0.0
        val[f], far[f] = _val_far(threshold, dist[test], issame[test])
        chosen[f] = threshold
    return np.mean(val), np.std(val), np.mean(far), chosen
