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

from analyze.fusion import fuse
from analyze.loading import FUSION_BLOCK_IMAGES, fuse_templates, template_blocks, valid_rows
from featurestore.store import FeatureStore

try:  # this checkout's reader; a checkout from before it has the same steps inside its _fuse_block
    from analyze.loading import read_fusion_inputs
except ImportError:  # pragma: no cover - older checkouts, for before/after comparisons
    from analyze.fusion import FUSIONS
    from analyze.policy import policy_for

    def read_fusion_inputs(store, model, fusion, rows, options=None):  # type: ignore[no-redef]
        spec, fusion_spec = store.model(model), FUSIONS.get(fusion)
        policy = policy_for(spec.outputs)
        kwargs = {
            "uncertainty": policy.stored(store.read_rows(model, policy.value_output, rows))
            .for_fusion(fusion_spec)
            .values
        }
        if "media" in fusion_spec.inputs:
            kwargs.update(
                media=store.image_column("media", rows), detector_score=store.image_column("detector_score", rows)
            )
            kwargs["add_flip"] = "embedding_flip" in spec.outputs
            if kwargs["add_flip"]:
                kwargs["features_flip"] = store.read_rows(model, "embedding_flip", rows)
        return (store.read_rows(model, "embedding", rows), store.image_column("template", rows)), kwargs


DEFAULT = "magface:mean,magface:first,magface:media,pfe:PFE,scaleface:weighted"


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
        (feats, tpl), kw = read_fusion_inputs(store, model, fusion, blocks[0])
        fuse(fusion, feats, tpl, **kw)  # warm-up: kernel load (or compile) outside the timing
        best = (np.inf, np.inf)
        for _ in range(args.repeats):
            t, c = time.perf_counter(), time.process_time()
            with dask.config.set(scheduler="threads"):
                fused = fuse_templates(store, model, fusion, valid)
            best = min(best, (time.perf_counter() - t, time.process_time() - c))
        read = compute = 0.0
        for block in blocks:
            t = time.perf_counter()
            (feats, tpl), kw = read_fusion_inputs(store, model, fusion, block)
            read += time.perf_counter() - t
            t = time.perf_counter()
            fuse(fusion, feats, tpl, **kw)
            compute += time.perf_counter() - t
        print(f"{model + '/' + fusion:22} {best[0]:7.2f} {best[1]:7.2f} {read:7.2f} {compute:7.2f}  {len(fused.ids):,}")


if __name__ == "__main__":
    main()
