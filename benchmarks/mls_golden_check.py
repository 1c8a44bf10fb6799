"""Before re-recording tests/data/outputs_identical.json for the fast MLS default, prove what changes.

Runs benchmarks/outputs_identical.py's runs twice on the tiny store: with the exact MLS kernel forced (must equal the
recorded hashes) and with the default (fast) one; every table that then differs must be an MLS one whose only
differing column is the threshold (last bits), with tar, kept pairs, FARs and the non-MLS rows identical.
    PYTHONPATH=$PWD python benchmarks/mls_golden_check.py
"""

from __future__ import annotations

import importlib.util
import io
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
EQUAL_COLUMNS = ("tar", "kept", "kept_pairs", "auc", "far", "far_achieved", "tar_lo", "tar_hi")


def _bench():
    spec = importlib.util.spec_from_file_location("outputs_identical", REPO / "benchmarks" / "outputs_identical.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules["outputs_identical"] = bench
    spec.loader.exec_module(bench)
    return bench


def _compare(bench, work: Path, key: str) -> bool:
    run, rel = key.split("/", 1)
    a = pd.read_csv(io.BytesIO(bench.canonical_csv(work / "exact" / run / rel)))
    b = pd.read_csv(io.BytesIO(bench.canonical_csv(work / "fast" / run / rel)))
    if a.shape != b.shape or list(a.columns) != list(b.columns) or "distance" not in a.columns:
        print(f"  {key}: layout differs or no distance column")
        return False
    is_mls = a["distance"].astype(str) == "MLS"
    cols = [c for c in a.columns if not a[c].equals(b[c])]
    kept = [c for c in EQUAL_COLUMNS if c in a.columns]
    equal = all(a[c].equals(b[c]) for c in kept)
    others_same = a[~is_mls].equals(b[~is_mls])
    floats = [c for c in cols if a[c].dtype.kind == "f"]
    rel_err = max((float(np.nanmax(np.abs(a[c] - b[c]) / np.maximum(np.abs(a[c]), 1e-300))) for c in floats), default=0)
    print(f"  {key}: differing {cols}; equal {kept}: {equal}; non-MLS rows identical: {others_same}; rel {rel_err:.2e}")
    return bool(is_mls.any()) and equal and others_same and set(cols) <= {"threshold"} and rel_err < 1e-12


def main() -> int:
    import analyze.scores as scores
    from analyze import kernels

    bench = _bench()
    golden = json.loads((REPO / "tests" / "data" / "outputs_identical.json").read_text())
    work = Path(tempfile.mkdtemp(prefix="golden_mls_"))
    cache = str(bench.build_tiny_store(work / "tiny.zarr"))
    fast_pairs = scores.mls_pairs
    scores.mls_pairs = lambda *a, exact=False: kernels.mls_pairs(*a, exact=True)
    try:
        exact_run = bench.run_all(cache, work / "exact")
    finally:
        scores.mls_pairs = fast_pairs
    fast_run = bench.run_all(cache, work / "fast")
    print("exact kernel vs recorded:", bench.differences(golden, exact_run) or "all identical")
    diff = [k for k in exact_run["tables"] if exact_run["tables"][k] != fast_run["tables"].get(k)]
    print(f"fast default: {len(diff)} of {len(exact_run['tables'])} tables differ from the exact kernel's")
    bad = [k for k in diff if not _compare(bench, work, k)]
    print("VERDICT:", f"unexpected differences: {bad}" if bad else "only MLS thresholds differ (last bits)")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
