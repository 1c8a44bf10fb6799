"""Extraction speed: the paper scripts' way (one pass per model) against `run_extraction`, same images, same process.

Naive baseline, as the ScaleFace/PFE/MagFace evaluation scripts do it: for EACH model, decode and
align every image in the main process (cv2.imread, the same 5-point alignment), build contiguous
fp32 NCHW batches of 64, run that model's own backbone under `torch.no_grad`, collect the outputs in
Python lists. Ours: one `run_extraction` into a store, with ScaleFace, PFE and the embedding-norm
baseline sharing one backbone forward (same seeded weights, same preprocessing) plus MagFace.
Both get identical weights (`random_model` with the same seeds); the outputs are compared.

    .venv/bin/python benchmarks/extract_bench.py [--images 128] [--arch iresnet50] [--workers 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: import the repository's packages
    sys.path.insert(0, str(ROOT))

from extract.align import ARCFACE_TEMPLATE, align_face  # noqa: E402
from extract.checkpoints import LoadedModel, random_model  # noqa: E402
from extract.models import load_model_config  # noqa: E402
from extract.runner import RunModel, run_extraction  # noqa: E402
from facedata.manifest import load_manifest  # noqa: E402
from facedata.readers import read_dataset  # noqa: E402
from featurestore.schema import STATUS_OK, DatasetTables, ModelSpec  # noqa: E402
from featurestore.store import create_store  # noqa: E402

SHARED_CONFIGS = ("scaleface_r50", "pfe_r50", "embnorm_r50")
"""The ScaleFace repository's three models: one backbone (same weights and preprocessing), three heads."""
MAGFACE_CONFIG = "magface_r50"
SHARED_SEED, MAGFACE_SEED = 7, 8
NAIVE_BATCH = 64

Outputs = dict[str, dict[str, np.ndarray]]
"""model name -> output name (embedding, norm, scale, sigma_sq) -> (N, ...) float32 array."""


# ----------------------------------------------------------------------------------------------- data


def write_loose_crops(root: Path, n: int, seed: int = 0, size: tuple[int, int] = (200, 250)) -> Path:
    """n loose crops (random smooth textures, JPEG q95, side in `size`) in insightface's IJB-C layout,
    landmarks at a scaled, shifted ArcFace template; used when facedata.synthetic is unavailable."""
    rng = np.random.default_rng(seed)
    (root / "loose_crop").mkdir(parents=True, exist_ok=True)
    (root / "meta").mkdir(parents=True, exist_ok=True)
    tid, lmk_lines = [], []
    for i in range(n):
        name = f"{i + 1}.jpg"
        h, w = (int(v) for v in rng.integers(size[0], size[1] + 1, size=2))
        img = cv2.GaussianBlur(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8), (7, 7), 2.5)
        scale = rng.uniform(1.2, 1.6)
        lmk = (ARCFACE_TEMPLATE - 56.0) * scale + [w / 2 + rng.uniform(-8, 8), h / 2 + rng.uniform(-8, 8)]
        cv2.imwrite(str(root / "loose_crop" / name), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        tid.append(f"{name} {i // 2 + 1} {i + 1}")
        lmk_lines.append(name + " " + " ".join(f"{v:.3f}" for v in lmk.ravel()) + f" {rng.uniform(0.5, 1):.4f}")
    (root / "meta" / "ijbc_face_tid_mid.txt").write_text("\n".join(tid) + "\n")
    (root / "meta" / "ijbc_name_5pts_score.txt").write_text("\n".join(lmk_lines) + "\n")
    n_t = (n + 1) // 2
    pairs = [f"{a + 1} {b + 1} {int(a // 4 == b // 4)}" for a in range(min(n_t, 64)) for b in range(a + 1, n_t)]
    (root / "meta" / "ijbc_template_pair_label.txt").write_text("\n".join(pairs) + "\n")
    return root


def make_dataset(root: Path, n: int, seed: int = 0, source: str = "auto") -> tuple[DatasetTables, str]:
    """(tables of the first n images, how they were made) of an IJB-C-layout dataset written under `root`.

    source 'synthetic' renders faces with facedata.synthetic (the smallest preset holding n images),
    'own' writes textures with `write_loose_crops`, 'auto' prefers 'synthetic' when importable.
    """
    if n < 1:
        raise ValueError(f"--images must be >= 1, got {n}")
    if source in ("auto", "synthetic"):
        try:
            from facedata.synthetic import DATASET_PRESETS, plan_dataset, synthesize_dataset
        except ImportError:
            if source == "synthetic":
                raise
        else:
            preset = next((p for p in DATASET_PRESETS if plan_dataset(p, seed).n_images >= n), None)
            if preset is None and source == "synthetic":
                raise ValueError(f"no synthetic preset holds {n} images")
            if preset is not None:
                synthesize_dataset(root, preset, seed, workers=min(4, os.cpu_count() or 1))
                return read_dataset(load_manifest("ijbc"), root).head(n), f"facedata.synthetic preset {preset!r}"
    elif source != "own":
        raise ValueError(f"source must be auto, synthetic or own, got {source!r}")
    write_loose_crops(root, n, seed)
    return read_dataset(load_manifest("ijbc"), root), "random textures (write_loose_crops)"


# --------------------------------------------------------------------------------------------- models


def model_config(name: str, arch: str):
    """Named config with its backbone swapped to `arch` (iresnet18 keeps tests and dry runs fast)."""
    cfg = load_model_config(name)
    return cfg if cfg.arch == arch else dataclasses.replace(cfg, arch=arch, name=cfg.name.replace("r50", arch))


def build_models(arch: str = "iresnet50") -> list[RunModel]:
    """ScaleFace, PFE and emb-norm sharing one seeded backbone, plus a MagFace model (fresh copies each call)."""
    run = [
        RunModel(name.split("_")[0], random_model(model_config(name, arch), seed=SHARED_SEED))
        for name in SHARED_CONFIGS
    ]
    run.append(RunModel("magface", random_model(model_config(MAGFACE_CONFIG, arch), seed=MAGFACE_SEED)))
    return run


def model_specs(run: Sequence[RunModel]) -> list[ModelSpec]:
    """Store ModelSpecs of the run models (no flip)."""
    return [m.model.config.model_spec(name=m.name, random_init=True, flip=False) for m in run]


# ---------------------------------------------------------------------------------------------- naive


def naive_read(root: Path, path: str, landmarks: np.ndarray, bgr: bool) -> np.ndarray:
    """One image as the original scripts read it: cv2.imread (BGR), 5-point alignment, RGB unless `bgr`."""
    img = cv2.imread(str(root / path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"{root / path}: cannot read")
    res = align_face(img, landmarks)
    if not res.ok:
        raise ValueError(f"{root / path}: alignment failed: {res.message}")
    return res.crop if bgr else cv2.cvtColor(res.crop, cv2.COLOR_BGR2RGB)


def naive_one_model(root: Path, tables: DatasetTables, model: LoadedModel, batch_size: int = NAIVE_BATCH):
    """One model's pass over all images, decoding in the main process; outputs collected in Python lists."""
    pre = model.preprocessing
    bgr = pre.channel_order == "BGR"
    mean = np.asarray(pre.mean, dtype=np.float32)
    std = np.asarray(pre.std, dtype=np.float32)
    paths, lmks = tables.images.path, tables.images.landmarks
    collected: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(paths), batch_size):
        batch = []
        for i in range(start, min(start + batch_size, len(paths))):
            crop = naive_read(root, str(paths[i]), lmks[i], bgr).astype(np.float32)
            batch.append(((crop - mean) / std).transpose(2, 0, 1))
        x = torch.from_numpy(np.ascontiguousarray(np.stack(batch)))
        with torch.no_grad():
            out = model.backbone(x)
            emb = out.embedding.float()
            res = {"embedding": emb, "norm": emb.norm(dim=1)}
            if model.family == "scaleface":
                res["scale"] = model.head(out.bottleneck)
            elif model.family == "pfe":
                res["sigma_sq"] = torch.exp(model.head(out.bottleneck))
        for k, v in res.items():
            collected.setdefault(k, []).append(v.numpy())
    return {k: np.concatenate(v) for k, v in collected.items()}


def naive_extract(root: Path, tables: DatasetTables, run: Sequence[RunModel], batch_size: int = NAIVE_BATCH) -> Outputs:
    """Every model on its own: own backbone forward, own decoding pass, contiguous fp32 (the paper's scripts)."""
    for m in run:
        m.model.to("cpu", channels_last=False)
    return {m.name: naive_one_model(root, tables, m.model, batch_size) for m in run}


# ------------------------------------------------------------------------------------------------ ours


def ours_extract(
    store_path: Path,
    root: Path,
    tables: DatasetTables,
    run: list[RunModel],
    *,
    workers: int = 1,
    batch_size: int = 64,
    precision: str = "fp32",
) -> tuple[Outputs, str]:
    """run_extraction into a fresh store at `store_path`; returns (outputs read back, the run summary text)."""
    store = create_store(store_path, tables, model_specs(run), overwrite=True)
    try:
        summary = run_extraction(
            store, str(root), run, device="cpu", precision=precision, batch_size=batch_size,
            workers=workers, progress=False,
        )  # fmt: skip
        bad = np.flatnonzero(store.status() != STATUS_OK)
        if len(bad):
            raise RuntimeError(f"{len(bad)} images failed in the store, first row {bad[0]}: {summary.format()}")
        outputs = {m.name: {o: store.read(m.name, o) for o in m.model.config.outputs} for m in run}
    finally:
        store.close()
    return outputs, summary.format()


# ------------------------------------------------------------------------------------------- compare


def max_relative_difference(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want|, relative to the magnitude of what is compared (1e-12 floor): for (N, D) outputs
    each row is divided by max |want| of that row; for (N,) outputs (norm, scale) by max |want| over
    all rows, since a scalar near 0 (a saturated sigmoid scale) has no meaningful relative error."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        raise ValueError(f"shapes differ: {got.shape} vs {want.shape}")
    if got.size == 0:
        return 0.0
    got, want = got.reshape(len(got), -1), want.reshape(len(want), -1)
    axis = None if want.shape[1] == 1 else 1
    scale = np.maximum(np.abs(want).max(axis=axis, keepdims=True), 1e-12)
    return float((np.abs(got - want) / scale).max())


def compare_outputs(got: Outputs, want: Outputs) -> dict[str, float]:
    """'model/output' -> max relative difference, for every output of every model in `want`."""
    diffs = {}
    for name, outs in want.items():
        for o, values in outs.items():
            if name not in got or o not in got[name]:
                raise KeyError(f"output {name}/{o} missing from the compared run")
            diffs[f"{name}/{o}"] = max_relative_difference(got[name][o], values)
    return diffs


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    """(fn(), wall seconds)."""
    t0 = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------- main


def run_benchmark(
    n_images: int = 128,
    arch: str = "iresnet50",
    workers: int = 1,
    repeats: int = 1,
    threads: int | None = None,
    source: str = "auto",
    workdir: Path | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Make the dataset, run naive and ours `repeats` times alternately (best time of each counts), compare."""
    if threads:
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tmp = Path(tmp)
        (tables, how), t_data = timed(lambda: make_dataset(tmp / "data", n_images, source=source))
        n = len(tables.images)
        log(f"dataset: {n} loose crops with landmarks, IJB-C layout ({how}), written in {t_data:.1f} s")
        naive_models, ours_models = build_models(arch), build_models(arch)
        warm = tables.head(min(n, 8))  # first-call costs (allocator, oneDNN kernels) out of both timings
        naive_extract(tmp / "data", warm, naive_models[:1], batch_size=8)
        ours_extract(tmp / "warm.zarr", tmp / "data", warm, ours_models[:1], workers=0, batch_size=8)
        naive_s, ours_s = [], []
        naive = ours = None
        for r in range(repeats):
            naive, t = timed(lambda: naive_extract(tmp / "data", tables, naive_models))
            naive_s.append(t)
            log(f"  repeat {r + 1}: naive {t:.2f} s ({n / t:.2f} images/s)")
            (ours, summary), t = timed(
                lambda: ours_extract(tmp / "ours.zarr", tmp / "data", tables, ours_models, workers=workers)
            )
            ours_s.append(t)
            log(f"  repeat {r + 1}: ours  {t:.2f} s ({n / t:.2f} images/s)")
            log("\n".join(f"    runner: {line}" for line in summary.splitlines()))
        diffs = compare_outputs(ours, naive)
    result = {
        "images": n,
        "arch": arch,
        "workers": workers,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "naive_images_per_s": n / min(naive_s),
        "ours_images_per_s": n / min(ours_s),
        "naive_seconds": naive_s,
        "ours_seconds": ours_s,
        "backbone_forwards_per_image": {"naive": len(naive), "ours": 2},
        "max_relative_difference": diffs,
    }
    result["speedup"] = result["ours_images_per_s"] / result["naive_images_per_s"]
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: run the benchmark, print images/s, the ratio and the output agreement; 1 if outputs differ."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=128, help="number of synthetic images (default 128)")
    ap.add_argument("--arch", default="iresnet50", choices=["iresnet50", "iresnet18", "iresnet34", "iresnet100"])
    ap.add_argument("--workers", type=int, default=1, help="DataLoader decoding workers for ours (default 1)")
    ap.add_argument("--repeats", type=int, default=1, help="alternate naive/ours this many times; best time counts")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    ap.add_argument("--source", default="auto", choices=["auto", "synthetic", "own"], help="how to make images")
    ap.add_argument("--tolerance", type=float, default=1e-3, help="max relative difference accepted (1e-3)")
    ap.add_argument("--json", type=Path, default=None, help="also write the result as JSON here")
    args = ap.parse_args(argv)
    res = run_benchmark(args.images, args.arch, args.workers, args.repeats, args.threads, args.source)
    print(f"machine: {res['cpu_count']} CPU cores, torch {torch.__version__}, {res['torch_threads']} torch threads")
    print(f"naive (one pass per model, {res['backbone_forwards_per_image']['naive']} backbone forwards/image): "
          f"{res['naive_images_per_s']:.2f} images/s")  # fmt: skip
    print(f"ours  (run_extraction, shared backbone, 2 forwards/image, {args.workers} workers): "
          f"{res['ours_images_per_s']:.2f} images/s")  # fmt: skip
    print(f"speedup: {res['speedup']:.2f}x")
    worst = max(res["max_relative_difference"].values())
    for key, d in res["max_relative_difference"].items():
        print(f"  max relative difference {key}: {d:.2e}")
    ok = worst <= args.tolerance
    print(f"outputs {'agree' if ok else 'DIFFER'}: worst {worst:.2e} (tolerance {args.tolerance:.0e})")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
