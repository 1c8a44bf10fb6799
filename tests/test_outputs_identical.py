"""The analysis tables stay byte-identical: every table of benchmarks/outputs_identical.py's runs on the
small deterministic store of tests/analysis_fixture.py hashes as in tests/data/outputs_identical.json.

That JSON was recorded before the issue-9 refactors. A change that alters any number (or a table's
layout) fails here, naming the tables. To change outputs on purpose, say so in the commit and re-record:
    PYTHONPATH=$PWD python benchmarks/outputs_identical.py --record tests/data/outputs_identical.json
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "outputs_identical.py"
GOLDEN = Path(__file__).resolve().parent / "data" / "outputs_identical.json"


def _load():
    spec = importlib.util.spec_from_file_location("outputs_identical", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["outputs_identical"] = module
    spec.loader.exec_module(module)
    return module


def test_tables_match_golden_hashes(tmp_path):
    bench = _load()
    cache = str(bench.build_tiny_store(tmp_path / "tiny.zarr"))
    now = bench.run_all(cache, tmp_path / "out")
    recorded = json.loads(GOLDEN.read_text())
    assert now["skipped"] == []
    assert len(now["tables"]) == len(recorded["tables"]) >= 40
    assert bench.differences(recorded, now) == []


def test_differences_names_changed_missing_and_new_tables():
    bench = _load()
    recorded = {"tables": {"a/x.csv": "1", "a/y.csv": "2", "b/z.csv": "3"}}
    now = {"tables": {"a/x.csv": "1", "a/y.csv": "9", "c/w.csv": "4"}}
    assert bench.differences(recorded, now) == ["differs: a/y.csv", "missing now: b/z.csv", "new: c/w.csv"]
    assert bench.differences(recorded, now, only=["a"]) == ["differs: a/y.csv", "new: c/w.csv"]
