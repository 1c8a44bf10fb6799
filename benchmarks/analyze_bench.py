"""Analysis benchmark on an IJB-C-scale synthetic store (469,375 images, 23,124 templates, 15.7 M pairs).

One command:  .venv/bin/python benchmarks/analyze_bench.py [--store PATH] [--part a|b|all]

(a) template aggregation + 1:1 scores + ROC table: ours (segment-reduction fusion as Dask tasks,
    BLAS block cosine, one-sort TAR@FAR) against an insightface-style implementation (ijb_11.py's
    per-template loops, batched gather scores, sklearn roc_curve table), same inputs, same process;
    checks the numbers agree.
(b) template reject verification, 5 metric combinations x 250 fractions x 6 FARs, the whole
    `run_reject` in a fresh subprocess (wall time, peak RSS), against the paper's per-fraction
    recomputation (re-sort and re-threshold for every fraction), timed on a subsample of fractions
    and extrapolated to 250 (said so in the output); checks the curves agree exactly.
The store is made with `datasets synthesize-store` when missing (about 1 minute, 3.2 GB on disk).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

FARS = (1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2)
ROC_FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
METRICS_B = [  # (model, fusion, metric): the 5 combinations of part (b)
    ("scaleface", "weighted", "cosine_mean"),
    ("scaleface", "weighted", "cosine_harmonic-harmonic"),
    ("pfe", "PFE", "cosine_mean"),
    ("pfe", "PFE", "cosine_harmonic-sum"),
    ("magface", "mean", "cosine_mean"),
]


def ensure_store(path: Path) -> Path:
    if not path.exists():
        from facedata.synthetic import synthesize_store

        print(f"writing {path} (datasets synthesize-store --preset ijbc) ...", flush=True)
        synthesize_store(path, preset="ijbc", progress=False)
    return path


# ------------------------------------------------------------------ (a) insightface-style baseline
def insightface_template_features(img_feats, templates, medias):
    """ijb_11.py's image2template_feature: loops over templates and their medias."""
    unique_templates = np.unique(templates)
    template_feats = np.zeros((len(unique_templates), img_feats.shape[1]))
    for count_template, uqt in enumerate(unique_templates):
        (ind_t,) = np.where(templates == uqt)
        face_norm_feats = img_feats[ind_t]
        face_medias = medias[ind_t]
        unique_medias, unique_media_counts = np.unique(face_medias, return_counts=True)
        media_norm_feats = []
        for u, ct in zip(unique_medias, unique_media_counts):
            (ind_m,) = np.where(face_medias == u)
            if ct == 1:
                media_norm_feats += [face_norm_feats[ind_m]]
            else:
                media_norm_feats += [np.mean(face_norm_feats[ind_m], axis=0, keepdims=True)]
        media_norm_feats = np.array(media_norm_feats)
        template_feats[count_template] = np.sum(media_norm_feats, axis=0)
    norms = np.linalg.norm(template_feats, axis=1, keepdims=True)
    return template_feats / norms, unique_templates


def insightface_verification(template_norm_feats, unique_templates, p1, p2):
    """ijb_11.py's verification: template2id lookup, batches of 100,000 pairs, elementwise dot."""
    template2id = np.zeros((max(unique_templates) + 1, 1), dtype=int)
    for count_template, uqt in enumerate(unique_templates):
        template2id[uqt] = count_template
    score = np.zeros((len(p1),))
    total_pairs = np.array(range(len(p1)))
    batchsize = 100000
    for s in [total_pairs[i : i + batchsize] for i in range(0, len(p1), batchsize)]:
        feat1 = template_norm_feats[template2id[p1[s]]]
        feat2 = template_norm_feats[template2id[p2[s]]]
        score[s] = np.sum(feat1 * feat2, -1).flatten()
    return score


def insightface_roc_table(score, label, x_labels):
    """ijb_11.py's table: sklearn roc_curve, flipped, TPR at argmin |FPR - target|."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(label, score)
    fpr, tpr = np.flipud(fpr), np.flipud(tpr)
    return np.array([tpr[np.argmin(abs(fpr - x))] for x in x_labels])


def part_a(store_path: Path, model: str) -> dict:
    from analyze.loading import fuse_templates, valid_rows
    from analyze.scores import cosine_scores
    from analyze.tarfar import tar_at_far
    from featurestore.store import FeatureStore

    store = FeatureStore.open(store_path)
    proto = store.protocol("verification_11")
    t0 = time.perf_counter()
    valid = valid_rows(store, [model], partial=False)
    fused = fuse_templates(store, model, "media", valid.mask)
    t_fuse = time.perf_counter() - t0
    i = np.searchsorted(fused.ids, proto.pairs[:, 0])
    j = np.searchsorted(fused.ids, proto.pairs[:, 1])
    ours_scores = cosine_scores(fused.features, i, j)
    t_score = time.perf_counter() - t0 - t_fuse
    ours_table = tar_at_far(ours_scores, proto.label, ROC_FARS, "nearest", allow_tiny_far=True).tar
    t_ours = time.perf_counter() - t0

    # insightface: the same image features (embedding x detector score, norms kept, no flip in this store)
    t0 = time.perf_counter()
    img = store.read(model, "embedding").astype(np.float32)
    img = img * store.image_column("detector_score")[:, None]
    feats, uniq = insightface_template_features(img, store.image_column("template"), store.image_column("media"))
    t_if_fuse = time.perf_counter() - t0
    if_scores = insightface_verification(feats, uniq, proto.pairs[:, 0], proto.pairs[:, 1])
    t_if_score = time.perf_counter() - t0 - t_if_fuse
    if_table = insightface_roc_table(if_scores, proto.label, ROC_FARS)
    t_if = time.perf_counter() - t0
    return {
        "model": model,
        "ours_seconds": {"fusion": t_fuse, "scores": t_score, "total": t_ours},
        "insightface_seconds": {"fusion": t_if_fuse, "scores": t_if_score, "total": t_if},
        "speedup": t_if / t_ours,
        "max_abs_template_feature_diff": float(np.abs(fused.features - feats).max()),
        "max_abs_score_diff": float(np.abs(ours_scores - if_scores).max()),
        "roc_table_ours": dict(zip(map(str, ROC_FARS), ours_table.tolist())),
        "roc_table_insightface": dict(zip(map(str, ROC_FARS), if_table.tolist())),
        "max_abs_roc_table_diff": float(np.abs(ours_table - if_table).max()),
    }


# ------------------------------------------------------------------ (b) reject verification
def paper_rejected_tar_far(scores, labels, unc, fractions, fars):
    """The paper's loop: for every fraction re-sort by uncertainty, keep int(n(1-r)), re-threshold."""
    out = np.full((len(fractions), len(fars)), np.nan)
    for a, r in enumerate(fractions):
        order = np.argsort(unc, kind="stable")
        keep = order[: int(len(scores) * (1 - r))]
        s, lab = scores[keep], labels[keep]
        imp = np.sort(s[~lab])[::-1]
        gen = s[lab]
        for b, far in enumerate(fars):
            k = int(np.round(far * len(imp)))
            thr = imp[0] + 1e-8 if k == 0 else imp[k - 1]
            out[a, b] = (gen >= thr).mean()
    return out


def part_b_ours(store_path: Path) -> dict:
    """Run in a fresh process: the whole reject run, its wall time and peak RSS."""
    from analyze.experiments import run_reject
    from featurestore.store import FeatureStore

    store = FeatureStore.open(store_path)
    t0 = time.perf_counter()
    n_rows = 0
    per_model: dict[str, tuple[list[str], list[str]]] = {}
    for model, fusion, metric in METRICS_B:
        per_model.setdefault(model, ([], []))
        if fusion not in per_model[model][0]:
            per_model[model][0].append(fusion)
        per_model[model][1].append(metric)
    for model, (fusions, metrics) in per_model.items():
        df, _, _ = run_reject(
            store, models=[model], fusions=fusions, metrics=metrics, fars=FARS, fractions=(0.0, 0.5, 250)
        )
        n_rows += len(df)
    return {
        "seconds": time.perf_counter() - t0,
        "rows": n_rows,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def part_b(store_path: Path, sample_fractions: int) -> dict:
    res = subprocess.run(
        [sys.executable, __file__, "--store", str(store_path), "--part", "b-ours"],
        capture_output=True,
        text=True,
        check=True,
    )
    ours = json.loads(res.stdout.strip().splitlines()[-1])

    from analyze.experiments import build_pair_set, score_pairs
    from analyze.loading import valid_rows
    from analyze.reject import reject_curve
    from featurestore.store import FeatureStore

    store = FeatureStore.open(store_path)
    proto = store.protocol("verification_11")
    valid = valid_rows(store, list(store.models), partial=False)
    model, fusion, metric = METRICS_B[0]
    ps = build_pair_set(store, model, proto, "template", fusion, valid)
    scores, unc, _, _ = score_pairs(ps, metric)
    fractions = np.linspace(0, 0.5, 250)
    sample = fractions[:: max(1, 250 // sample_fractions)][:sample_fractions]
    t0 = time.perf_counter()
    paper = paper_rejected_tar_far(scores, ps.labels, unc, sample, FARS)
    t_sample = time.perf_counter() - t0
    t0 = time.perf_counter()
    curve = reject_curve(scores, ps.labels, unc, fractions, FARS)
    t_curve = time.perf_counter() - t0
    idx = np.searchsorted(fractions, sample)
    per_curve_paper = t_sample / len(sample) * 250
    return {
        "ours_whole_run": ours,
        "ours_one_curve_seconds": t_curve,
        "paper_sampled_fractions": len(sample),
        "paper_seconds_for_sample": t_sample,
        "paper_one_curve_seconds_extrapolated_to_250": per_curve_paper,
        "paper_whole_run_seconds_extrapolated": per_curve_paper * len(METRICS_B),
        "curve_speedup_extrapolated": per_curve_paper / t_curve,
        "curves_equal_exactly": bool(np.array_equal(curve.tar[idx], paper, equal_nan=True)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, default=Path("benchmarks/data/ijbc-synthetic.zarr"))
    ap.add_argument("--part", choices=["a", "b", "all", "b-ours"], default="all")
    ap.add_argument("--model", default="magface", help="model for part (a)")
    ap.add_argument("--sample-fractions", type=int, default=5, help="fractions the paper's loop is timed on")
    args = ap.parse_args()
    if args.part == "b-ours":
        print(json.dumps(part_b_ours(args.store)))
        return
    ensure_store(args.store)
    results = {}
    if args.part in ("b", "all"):
        b = part_b(args.store, args.sample_fractions)
        results["b"] = b
        o = b["ours_whole_run"]
        print(f"(b) reject verification, {len(METRICS_B)} metric combinations x 250 fractions x {len(FARS)} FARs")
        print(f"    ours, whole run in a fresh process: {o['seconds']:.1f} s, peak RSS {o['peak_rss_gib']:.2f} GiB")
        print(
            f"    paper's per-fraction loop: {b['paper_seconds_for_sample']:.1f} s for {b['paper_sampled_fractions']} "
            f"fractions -> {b['paper_one_curve_seconds_extrapolated_to_250']:.0f} s per curve, "
            f"{b['paper_whole_run_seconds_extrapolated']:.0f} s for the 5 curves (extrapolated from the sample)"
        )
        print(
            f"    one curve: ours {b['ours_one_curve_seconds']:.2f} s -> {b['curve_speedup_extrapolated']:.0f}x; "
            f"same TARs on the sampled fractions: {b['curves_equal_exactly']}"
        )
    if args.part in ("a", "all"):
        a = part_a(args.store, args.model)
        results["a"] = a
        print(f"(a) template aggregation + 1:1 scores + ROC table ({a['model']}, media fusion as insightface)")
        print(
            f"    ours {a['ours_seconds']['total']:.1f} s (fusion {a['ours_seconds']['fusion']:.1f}, scores "
            f"{a['ours_seconds']['scores']:.1f}); insightface-style {a['insightface_seconds']['total']:.1f} s "
            f"(fusion {a['insightface_seconds']['fusion']:.1f}, scores {a['insightface_seconds']['scores']:.1f})"
        )
        print(
            f"    speedup {a['speedup']:.1f}x; max |diff| template features {a['max_abs_template_feature_diff']:.2e}, "
            f"scores {a['max_abs_score_diff']:.2e}, ROC table {a['max_abs_roc_table_diff']:.2e}"
        )
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
