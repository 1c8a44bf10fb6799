"""Template fusion alone, in-process: `fuse_templates` per (model, fusion) on an existing store.

One command:  .venv/bin/python benchmarks/fusion_bench.py --store STORE [--repeats 2] [--fusions magface:mean,...]

For each (model, fusion) it times the whole `fuse_templates` (Dask tasks over blocks of whole templates, the
threaded scheduler: wall and CPU seconds, best of `--repeats`), then the same blocks one after another split into
reading (embeddings, per-image values, images/ columns) and `fuse` itself. The first call of a process also loads
the numba kernels (a compile on a cold cache); a warm-up fusion on one block comes first so that is not timed.
Runs on any checkout whose `analyze.loading` has `fuse_templates` (to compare before/after, point PYTHONPATH at
the other checkout and run this file by path).
"""

from __future__ import annotations

import argparse
import time

import dask
import numpy as np

from analyze.fusion import FUSIONS, fuse
from analyze.loading import FUSION_BLOCK_IMAGES, fuse_templates, template_blocks, valid_rows
from analyze.policy import policy_for
from featurestore.store import FeatureStore

DEFAULT = "magface:mean,magface:first,magface:media,pfe:PFE,scaleface:weighted"


def _read_block(store: FeatureStore, model: str, fusion: str, block: np.ndarray) -> tuple[tuple, dict]:
    spec = store.model(model)
    policy = policy_for(spec.outputs)
    fusion_spec = FUSIONS.get(fusion)
    feats = store.read_rows(model, "embedding", block)
    values = policy.stored(store.read_rows(model, policy.value_output, block)).for_fusion(fusion_spec)
    kwargs: dict = {}
    if "media" in fusion_spec.inputs:
        kwargs = {
            "media": store.image_column("media", block),
            "detector_score": store.image_column("detector_score", block),
            "add_flip": "embedding_flip" in spec.outputs,
        }
        if kwargs["add_flip"]:
            kwargs["features_flip"] = store.read_rows(model, "embedding_flip", block)
    return (fusion, feats, store.image_column("template", block)), {"uncertainty": values.values, **kwargs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--fusions", default=DEFAULT, help="comma-separated model:fusion")
    args = ap.parse_args()
    store = FeatureStore.open(args.store)
    valid = valid_rows(store, list(store.models), False).mask
    template = store.image_column("template")
    rows = np.flatnonzero(valid & (template >= 0))
    blocks = template_blocks(template, rows, FUSION_BLOCK_IMAGES)
    print(f"{args.store}: {rows.size:,} images in templates, {len(blocks)} blocks of <= {FUSION_BLOCK_IMAGES:,}")
    print(f"{'model/fusion':22} {'wall s':>7} {'CPU s':>7} {'read s':>7} {'fuse s':>7}  templates")
    for pair in args.fusions.split(","):
        model, fusion = pair.split(":")
        fargs, fkw = _read_block(store, model, fusion, blocks[0])
        fuse(*fargs, **fkw)  # warm-up: kernel load (or compile) outside the timing
        best = (np.inf, np.inf)
        for _ in range(args.repeats):
            t, c = time.perf_counter(), time.process_time()
            with dask.config.set(scheduler="threads"):
                fused = fuse_templates(store, model, fusion, valid)
            best = min(best, (time.perf_counter() - t, time.process_time() - c))
        read = compute = 0.0
        for block in blocks:
            t = time.perf_counter()
            fargs, fkw = _read_block(store, model, fusion, block)
            read += time.perf_counter() - t
            t = time.perf_counter()
            fuse(*fargs, **fkw)
            compute += time.perf_counter() - t
        print(f"{model + '/' + fusion:22} {best[0]:7.2f} {best[1]:7.2f} {read:7.2f} {compute:7.2f}  {len(fused.ids):,}")


if __name__ == "__main__":
    main()
