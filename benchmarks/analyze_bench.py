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
(budgets) whole `analyze` processes (wall time, peak RSS of the child), each run twice: cold (an empty
    fusion cache, which the run writes) and warm (reading it), against the issue-10 budgets and
    against floors measured in the same run (reading the embeddings, all template-pair cosines by
    blocked matrix products, one argsort of the pairs); `--pairs 1M,4M,15.66M` repeats them on
    synthetic stores of that many pairs (growth table); commands not in this checkout's CLI
    (`analyze identify`, `roc --bootstrap`) are skipped with a note. Also in-process: MLS by the
    fused kernel (exact and fast) against the pre-kernel numpy formula (timed on a sample of pairs),
    and the kernels' compile time (cold cache vs warm).
The store is made with `datasets synthesize-store` when missing (about 1 minute, 3.2 GB on disk).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
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


# ------------------------------------------------------------------ budgets: whole processes, floors, growth
IJBC_PAIRS = 15_658_489
BUDGETS = [  # (name, analyze arguments after --cache/--out, seconds, GiB or None)
    ("reject-default", ["reject", "--level", "template"], 60.0, 3.0),
    ("reject-MLS", ["reject", "--model", "pfe", "--fusion", "PFE", "--metric", "MLS_harmonic-sum"], 15.0, None),
    ("reject-cosine", ["reject", "--model", "magface", "--fusion", "mean", "--metric", "cosine_mean"], 10.0, None),
    ("roc", ["roc", "--model", "magface", "--fusion", "media"], 10.0, None),
    ("identify", ["identify"], 20.0, None),
    ("roc-bootstrap-100", ["roc", "--model", "magface", "--fusion", "media", "--bootstrap", "100"], 60.0, None),
]
ANALYZE = "from analyze.cli import main; main()"


def parse_pairs(text: str) -> int:
    """'1M', '4M', '15.66M', '2500000' -> a pair count ('15.66M' and 'ijbc' mean IJB-C's exact 15,658,489)."""
    t = text.strip().lower()
    if t in ("ijbc", "15.66m", "15.7m"):
        return IJBC_PAIRS
    scale = 1_000_000 if t.endswith("m") else 1
    return int(float(t.rstrip("m")) * scale)


def pairs_store(store_dir: Path, n_pairs: int) -> Path:
    """A synthetic store with `n_pairs` template pairs: IJB-C's preset, or its counts scaled by sqrt(pairs ratio)
    (templates and images grow like the square root of the pairs, as in a full cross protocol)."""
    if n_pairs == IJBC_PAIRS:
        return ensure_store(store_dir / "ijbc-synthetic.zarr")
    path = store_dir / f"synthetic-{n_pairs}-pairs.zarr"
    if not path.exists():
        from facedata.synthetic import presets
        from facedata.synthetic.store import synthesize_store

        full = presets.STORE_PRESETS["ijbc"]
        f = math.sqrt(n_pairs / full.n_pairs)
        name = f"bench-{n_pairs}"
        presets.STORE_PRESETS[name] = presets.StorePreset(
            name,
            int(full.n_images * f),
            int(full.n_subjects * f),
            int(full.n_templates * f),
            n_pairs,
            max(1, int(full.n_genuine * n_pairs / full.n_pairs)),
        )
        print(f"writing {path} ({n_pairs:,} pairs) ...", flush=True)
        synthesize_store(path, preset=name, progress=False)
    return path


def available_commands() -> tuple[set[str], bool]:
    """The analyze subcommands of this checkout, and whether `roc` has --bootstrap."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    out = subprocess.run([sys.executable, "-c", ANALYZE, "--help"], capture_output=True, text=True, env=env).stdout
    names = set()
    for line in out.split("Commands:", 1)[-1].splitlines():
        if line.strip():
            names.add(line.split()[0])
    roc_help = subprocess.run(
        [sys.executable, "-c", ANALYZE, "roc", "--help"], capture_output=True, text=True, env=env
    ).stdout
    return names, "--bootstrap" in roc_help


def takes_option(command: str, option: str, env: dict[str, str]) -> bool:
    """Whether `analyze COMMAND --help` lists `option`."""
    out = subprocess.run([sys.executable, "-c", ANALYZE, command, "--help"], capture_output=True, text=True, env=env)
    return option in out.stdout


def timed_process(argv: list[str], env: dict[str, str] | None = None) -> dict:
    """Run one whole process; its wall time, peak RSS (of that child alone, wait4) and exit status."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    out = proc.stdout.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "seconds": time.perf_counter() - t0,
        "peak_rss_gib": usage.ru_maxrss / 2**20,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "rc": proc.returncode,
        "tail": out.decode(errors="replace").strip().splitlines()[-3:],
    }


def floors(store_path: Path) -> dict:
    """The work no implementation avoids, on the same store: read a model's embeddings, all template-pair
    cosines by blocked matrix products (analyze.scores dense path), one argsort of the pair scores."""
    from analyze.scores import cosine_scores
    from featurestore.store import FeatureStore

    with FeatureStore.open(store_path) as store:
        proto = store.protocol("verification_11")
        t0 = time.perf_counter()
        emb = store.read("magface", "embedding")
        t_read = time.perf_counter() - t0
        ids = np.unique(proto.pairs)
        i = np.searchsorted(ids, proto.pairs[:, 0])
        j = np.searchsorted(ids, proto.pairs[:, 1])
    feats = np.random.default_rng(0).normal(size=(len(ids), emb.shape[1]))
    del emb
    t0 = time.perf_counter()
    cos = cosine_scores(feats, i, j)
    t_cos = time.perf_counter() - t0
    t0 = time.perf_counter()
    np.argsort(cos)
    t_sort = time.perf_counter() - t0
    return {"read": t_read, "cosine_matmul": t_cos, "argsort": t_sort, "total": t_read + t_cos + t_sort}


def mls_inprocess(store_path: Path, sample: int) -> dict:
    """MLS scores of the PFE-fused templates: fused kernel exact / fast (all pairs) vs the pre-kernel numpy
    formula (the ScaleFace scripts' way: gathered rows, D-wide temporaries) timed on `sample` pairs."""
    from analyze.experiments import build_pair_set
    from analyze.loading import valid_rows
    from analyze.rows import l2_normalize
    from analyze.scores import mls_scores
    from featurestore.store import FeatureStore

    with FeatureStore.open(store_path) as store:
        proto = store.protocol("verification_11")
        ps = build_pair_set(store, "pfe", proto, "template", "PFE", valid_rows(store, ["pfe"], False))
    f, sg, i, j = ps.features, ps.values, ps.i, ps.j
    t0 = time.perf_counter()
    exact = mls_scores(f, sg, i, j, exact=True)
    t_exact = time.perf_counter() - t0
    t0 = time.perf_counter()
    fast = mls_scores(f, sg, i, j, exact=False)
    t_fast = time.perf_counter() - t0
    k = min(sample, i.size)
    t0 = time.perf_counter()
    old = np.empty(k)
    for a in range(0, k, 16384):
        s = slice(a, min(k, a + 16384))
        d = l2_normalize(f[i[s]]) - l2_normalize(f[j[s]])
        mutual = sg[i[s]].astype(np.float64) + sg[j[s]]
        old[s] = -np.sum(d * d / mutual + np.log(mutual), axis=1)
    t_old = (time.perf_counter() - t0) * i.size / max(k, 1)
    return {
        "pairs": int(i.size),
        "kernel_exact_seconds": t_exact,
        "kernel_fast_seconds": t_fast,
        "numpy_formula_seconds_extrapolated": t_old,
        "numpy_sample_pairs": int(k),
        "exact_equals_numpy_on_sample": bool(np.array_equal(exact[:k], old)),
        "fast_max_rel_diff": float(np.max(np.abs(fast - exact) / np.maximum(np.abs(exact), 1e-300))),
    }


def compile_times() -> dict:
    """Kernel compile in a fresh process with an empty numba cache (cold) and again with it filled (warm)."""
    code = (
        "import time, numpy as np; t=time.perf_counter(); from analyze import kernels; "
        "f=np.ones((4,512)); i=np.arange(4); kernels.mls_pairs(f, f, i, i); "
        "kernels.cosine_analytic_pairs(f, f, i, i); kernels.row_reciprocal_sums(f); print(time.perf_counter()-t)"
    )
    cache = tempfile.mkdtemp(prefix="numba-cache-")
    env = dict(os.environ, NUMBA_CACHE_DIR=cache, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    try:
        runs = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                                     check=True).stdout.split()[-1]) for _ in range(2)]  # fmt: skip
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return {"cold_seconds": runs[0], "warm_seconds": runs[1]}


def part_budgets(store_path: Path, names: list[str], cluster: str | None) -> dict:
    """Each selected budget command as a whole process on `store_path`, with the floors of the same run."""
    have, has_bootstrap = available_commands()
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    fl = floors(store_path)
    rows = []
    with tempfile.TemporaryDirectory(prefix="analyze-bench-") as tmp:
        for k, (name, args, budget_s, budget_gib) in enumerate(BUDGETS):
            if names and name not in names:
                continue
            if args[0] not in have or ("--bootstrap" in args and not has_bootstrap):
                print(f"    {name}: skipped (`analyze {args[0]}{' --bootstrap' if '--bootstrap' in args else ''}`"
                      " is not in this checkout)")  # fmt: skip
                rows.append({"command": name, "skipped": True})
                continue
            # cold: an empty fusion cache (the command fuses and writes it); warm: the same command again, reading it
            fused = Path(tmp) / f"fused-{k}"
            with_cluster = bool(cluster) and takes_option(args[0], "--cluster", env)
            if cluster and not with_cluster:
                print(f"    {name}: no --cluster run (`analyze {args[0]}` has no --cluster option)")
            for variant in ["cold", "warm"] + ([cluster] if with_cluster else []):
                extra = [] if variant in ("cold", "warm") else ["--cluster", variant]
                out = Path(tmp) / f"{k}-{variant.replace(':', '')}"
                argv = [sys.executable, "-c", ANALYZE, *args, "--cache", str(store_path), "--out", str(out), *extra]
                run_env = dict(env, SCALEFACE_FUSION_CACHE=str(fused) if variant != cluster else "off")
                r = timed_process(argv, run_env)
                r.update(command=name, variant=variant, budget_seconds=budget_s, budget_gib=budget_gib)
                r["ratio_to_floor"] = r["seconds"] / fl["total"]
                r["within_budget"] = (
                    r["rc"] == 0
                    and r["seconds"] <= budget_s
                    and (budget_gib is None or r["peak_rss_gib"] <= budget_gib)
                )
                rows.append(r)
                mem = f" (budget {budget_gib:g} GiB)" if budget_gib else ""
                status = "ok" if r["within_budget"] else (f"FAILED rc={r['rc']}" if r["rc"] else "over budget")
                print(
                    f"    {name:<18} {variant:<8} {r['seconds']:7.1f} s (budget {budget_s:g} s), "
                    f"peak {r['peak_rss_gib']:.2f} GiB{mem}, cpu {r['cpu_seconds']:.0f} s, "
                    f"{r['ratio_to_floor']:.1f}x the floor: {status}",
                    flush=True,
                )
                if r["rc"]:
                    print("      " + " | ".join(r["tail"]))
                r["stages"] = stage_seconds(out)
                if r["stages"]:
                    print("      " + ", ".join(f"{k} {v:.1f}" for k, v in r["stages"].items()) + " (s, summary.json)")
    return {"floors": fl, "commands": rows}


def stage_seconds(out: Path) -> dict[str, float]:
    """The `timings` a command wrote into its summary.json (analyze.timing: read, fuse, score, ...); {} if none."""
    path = out / "summary.json"
    if not path.is_file():
        return {}
    import json

    return dict(json.loads(path.read_text()).get("timings") or {})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, default=Path("benchmarks/data/ijbc-synthetic.zarr"))
    ap.add_argument("--part", choices=["a", "b", "budgets", "mls", "all", "b-ours"], default="all")
    ap.add_argument("--model", default="magface", help="model for part (a)")
    ap.add_argument("--sample-fractions", type=int, default=5, help="fractions the paper's loop is timed on")
    ap.add_argument(
        "--pairs",
        default=None,
        help="budgets on synthetic stores of these pair counts, e.g. 1M,4M,15.66M (written under --store-dir); "
        "default: --store only",
    )
    ap.add_argument("--store-dir", type=Path, default=Path("benchmarks/data"))
    ap.add_argument(
        "--commands",
        default="",
        help=f"comma-separated subset of the budget commands ({', '.join(b[0] for b in BUDGETS)}); default all",
    )
    ap.add_argument("--cluster", default=None, help="also run each budget command with --cluster, e.g. local:2")
    ap.add_argument("--mls-sample", type=int, default=200_000, help="pairs the pre-kernel MLS formula is timed on")
    ap.add_argument("--json", type=Path, default=None, help="write the results here too")
    args = ap.parse_args()
    if args.part == "b-ours":
        print(json.dumps(part_b_ours(args.store)))
        return
    results: dict = {}
    if args.part in ("budgets", "all"):
        names = [c for c in args.commands.split(",") if c]
        stores = [pairs_store(args.store_dir, parse_pairs(p)) for p in args.pairs.split(",")] if args.pairs else None
        stores = stores or [ensure_store(args.store)]
        results["kernel_compile"] = compile_times()
        c = results["kernel_compile"]
        print(f"numba kernels: compile {c['cold_seconds']:.1f} s cold (empty cache), {c['warm_seconds']:.1f} s warm")
        growth = []
        for path in stores:
            print(f"budgets on {path}", flush=True)
            b = part_budgets(path, names, args.cluster)
            fl = b["floors"]
            print(
                f"    floors: read embeddings {fl['read']:.2f} s, all pair cosines by matmul "
                f"{fl['cosine_matmul']:.2f} s, one argsort {fl['argsort']:.2f} s; total {fl['total']:.2f} s"
            )
            growth.append({"store": str(path), **b})
        results["budgets"] = growth
        if len(growth) > 1:
            print("growth (seconds; peak GiB):")
            print("    " + "command".ljust(26) + "".join(Path(g["store"]).name[:24].rjust(26) for g in growth))
            for name, *_ in BUDGETS:
                cells = []
                for g in growth:
                    r = [x for x in g["commands"] if x["command"] == name and x.get("variant", "cold") == "cold"]
                    cells.append("skipped" if not r or r[0].get("skipped") else f"{r[0]['seconds']:.1f} s; "
                                 f"{r[0]['peak_rss_gib']:.2f}")  # fmt: skip
                if any(c != "skipped" for c in cells) or not names or name in names:
                    print("    " + name.ljust(26) + "".join(c.rjust(26) for c in cells))
    if args.part in ("mls", "all"):
        m = mls_inprocess(ensure_store(args.store), args.mls_sample)
        results["mls"] = m
        print(
            f"MLS over {m['pairs']:,} PFE-fused template pairs, in-process: kernel exact "
            f"{m['kernel_exact_seconds']:.1f} s, fast {m['kernel_fast_seconds']:.1f} s; the pre-kernel numpy formula "
            f"{m['numpy_formula_seconds_extrapolated']:.1f} s (timed on {m['numpy_sample_pairs']:,} pairs, "
            f"extrapolated); exact == numpy: {m['exact_equals_numpy_on_sample']}, fast max rel diff "
            f"{m['fast_max_rel_diff']:.1e}"
        )
    if args.part in ("a", "b", "all"):
        ensure_store(args.store)
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
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    print(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
