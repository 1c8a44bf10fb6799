"""Proof that a refactor leaves the analysis outputs identical: sha256 of every table `analyze` writes.

Runs `analyze reject` (image and template level; recompute with both conventions, the fixed-threshold
EDC; explicit MLS, harmonic, softmax and media choices), `fusion`, `roc` and `distribution` in-process
on one store and hashes every table they write, as canonical CSV bytes (a .csv as written; a .parquet
read back and written with pandas' ``to_csv(index=False)``, as `write_table` writes its CSV twin).
Figures and summary.json (paths, timings) are not hashed.

    python benchmarks/outputs_identical.py --record before.json                # tiny store it builds itself
    python benchmarks/outputs_identical.py --cache ijbc.zarr --record before.json
    ... refactor ...
    python benchmarks/outputs_identical.py --cache ijbc.zarr --compare before.json   # exit 1 if any differs

Image-level runs need an image-level protocol; a store without one (e.g. `datasets synthesize-store`)
gets only the template-level runs, and the JSON lists the runs that were skipped. Hashes are exact
float64 bytes: compare on the machine (numpy/BLAS build) that recorded them.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import io
import json
import sys
import tempfile
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere: import this checkout's packages
    sys.path.insert(0, str(REPO))

#: (run name, level it needs or None, the `analyze` arguments before --cache/--out); {img}/{tpl}: the protocol.
RUNS: list[tuple[str, str | None, str]] = [
    ("reject-image", "image", "reject --protocol {img}"),
    ("reject-image-nearest", "image", "reject --protocol {img} --convention nearest"),
    ("reject-image-fixed", "image", "reject --protocol {img} --threshold fixed"),
    (
        "reject-image-metrics",
        "image",
        "reject --protocol {img} --model pfe --metric MLS_harmonic-sum --metric pfe-harmonic-cosine_mean "
        "--metric cosine_squared-sum",
    ),
    (
        "reject-image-scale",
        "image",
        "reject --protocol {img} --model scaleface --metric scale-harmonic-cosine_harmonic-mul",
    ),
    ("reject-template", "template", "reject --protocol {tpl}"),
    ("reject-template-nearest", "template", "reject --protocol {tpl} --convention nearest"),
    ("reject-template-fixed", "template", "reject --protocol {tpl} --threshold fixed"),
    (
        "reject-template-choices",
        "template",
        "reject --protocol {tpl} --model scaleface --fusion softmax-0.5 --fusion media --fusion weighted "
        "--metric cosine_harmonic-harmonic --metric scale-harmonic-cosine_mean",
    ),
    (
        "reject-template-pfe",
        "template",
        "reject --protocol {tpl} --model pfe --fusion PFE --fusion mean --metric MLS_harmonic-sum "
        "--metric cosine_harmonic-mul",
    ),
    ("fusion", "template", "fusion --protocol {tpl}"),
    (
        "fusion-choices",
        "template",
        "fusion --protocol {tpl} --fusion media --fusion softmax-0.5 --fusion PFE --fusion mean --distance cosine "
        "--distance scale-harmonic-cosine --model scaleface --model magface",
    ),
    ("roc", None, "roc"),
    ("roc-template-exact", "template", "roc --protocol {tpl} --convention exact --fusion mean"),
    ("distribution", None, "distribution --gallery-size 0"),
]


def build_tiny_store(path: Path):
    """The tests' small deterministic store (tests/analysis_fixture.py: image and template protocols)."""
    spec = importlib.util.spec_from_file_location("analysis_fixture", REPO / "tests" / "analysis_fixture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.build_store(path).close()
    return path


def canonical_csv(path: Path) -> bytes:
    """The bytes a table is compared by: a CSV as written, a parquet as pandas writes it to CSV."""
    if path.suffix == ".csv":
        return path.read_bytes()
    return pd.read_parquet(path).to_csv(index=False).encode()


def protocols_by_level(cache: str) -> dict[str, str]:
    """The first protocol of each level in the store ({'image': name, 'template': name})."""
    from featurestore.store import FeatureStore

    out: dict[str, str] = {}
    with FeatureStore.open(cache) as store:
        for name, info in store.protocols_info.items():
            out.setdefault(info["level"], name)
    return out


def run_all(cache: str, work: Path, only: list[str] | None = None) -> dict:
    """Every run of RUNS the store allows, in-process; {'tables': {run/file: sha256}, 'skipped': [...]}."""
    from analyze.cli import cli

    levels = protocols_by_level(cache)
    tables: dict[str, str] = {}
    skipped: list[str] = []
    for name, level, args in RUNS:
        if only and name not in only:
            continue
        if level is not None and level not in levels:
            skipped.append(f"{name} (no {level}-level protocol)")
            continue
        argv = args.format(img=levels.get("image", ""), tpl=levels.get("template", "")).split()
        out = work / name
        argv += ["--cache", cache, "--out", str(out)]
        if argv[0] != "distribution":
            argv.append("--no-figures")
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            cli.main(argv, standalone_mode=False)
        for path in sorted(out.rglob("*")):
            if path.suffix in (".csv", ".parquet"):
                key = f"{name}/{path.relative_to(out).as_posix()}"
                tables[key] = hashlib.sha256(canonical_csv(path)).hexdigest()
    return {"tables": tables, "skipped": skipped}


def differences(recorded: dict, now: dict, only: list[str] | None = None) -> list[str]:
    """One line per table that differs, is missing, or is new (within the runs in `only`, when given)."""
    a, b = recorded["tables"], now["tables"]
    if only:
        a = {k: v for k, v in a.items() if k.split("/", 1)[0] in only}
    lines = [f"differs: {k}" for k in sorted(a.keys() & b.keys()) if a[k] != b[k]]
    lines += [f"missing now: {k}" for k in sorted(a.keys() - b.keys())]
    lines += [f"new: {k}" for k in sorted(b.keys() - a.keys())]
    return lines


def main(argv: list[str] | None = None) -> int:
    """Record or compare the table hashes; exit status 1 when a comparison finds a difference."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", help="Feature store to analyse (default: a tiny store built in a temp folder).")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--record", type=Path, help="Write the hashes to this JSON file.")
    group.add_argument("--compare", type=Path, help="Compare against hashes recorded earlier.")
    parser.add_argument("--run", action="append", help="Only this run (repeatable; names as in RUNS).")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="outputs-identical-") as tmp:
        work = Path(tmp)
        cache = args.cache or str(build_tiny_store(work / "tiny.zarr"))
        now = run_all(cache, work / "out", args.run)
    for s in now["skipped"]:
        print(f"skipped: {s}")
    if args.record:
        args.record.write_text(json.dumps(now, indent=1, sort_keys=True) + "\n")
        print(f"recorded {len(now['tables'])} tables to {args.record}")
        return 0
    recorded = json.loads(args.compare.read_text())
    diff = differences(recorded, now, args.run)
    for line in diff:
        print(line)
    print(f"{len(now['tables'])} tables, {len(diff)} differences")
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())
