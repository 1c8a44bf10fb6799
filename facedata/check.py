"""`datasets check`: read a dataset through its manifest, count what it holds, find missing image
files and malformed lines, and compare the counts with the manifest's `expected` numbers."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facedata.errors import DataError
from facedata.images import split_member
from facedata.manifest import EXPECTED_KEYS, Manifest
from facedata.readers import read_dataset
from featurestore.schema import DatasetTables


@dataclass
class CheckReport:
    """What `check_dataset` found; `ok` is False on any error, missing file or count mismatch."""

    name: str
    root: str
    counts: dict[str, int] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    n_missing: int = 0
    errors: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    protocols: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the dataset read cleanly, no image is missing and every expected count matches."""
        return not (self.errors or self.n_missing or self.mismatches)

    def format(self) -> str:
        """A plain-text report for the terminal."""
        lines = [f"dataset {self.name} at {self.root}: {'OK' if self.ok else 'PROBLEMS FOUND'}"]
        for key in EXPECTED_KEYS:
            if key in self.counts:
                lines.append(f"  {key}: {self.counts[key]}")
        for name, (n, g) in self.protocols.items():
            lines.append(f"  protocol {name}: {n} pairs, {g} genuine")
        for e in self.errors:
            lines.append(f"  error: {e}")
        if self.n_missing:
            lines.append(f"  missing image files: {self.n_missing} in total, first {len(self.missing)}:")
            lines.extend(f"    {m}" for m in self.missing)
        for m in self.mismatches:
            lines.append(f"  mismatch: {m}")
        return "\n".join(lines)


def count_tables(tables: DatasetTables) -> dict[str, int]:
    """images, subjects/templates (distinct ids >= 0), pairs and genuine pairs over all protocols."""
    im = tables.images
    subj, tmpl = np.asarray(im.subject), np.asarray(im.template)
    return {
        "images": len(im),
        "subjects": int(np.unique(subj[subj >= 0]).size),
        "templates": int(np.unique(tmpl[tmpl >= 0]).size),
        "pairs": int(sum(len(p) for p in tables.protocols.values())),
        "genuine": int(sum(int(np.count_nonzero(p.label)) for p in tables.protocols.values())),
    }


def find_missing(root: Path, paths: np.ndarray) -> tuple[list[str], int]:
    """All row paths whose file (or pack, for `x.bin#i`/`x.rec#k`) does not exist: (sorted list, count)."""
    files = {split_member(str(p))[0] for p in paths}
    missing = sorted(f for f in files if not os.path.exists(os.path.join(root, f)))
    return missing, len(missing)


def check_dataset(manifest: Manifest, root: str | Path, max_list: int = 10) -> CheckReport:
    """Read, count and verify a dataset; errors are collected in the report rather than raised."""
    report = CheckReport(name=manifest.name, root=str(root))
    try:
        tables = read_dataset(manifest, root)
    except DataError as exc:
        report.errors.append(str(exc))
        return report
    report.counts = count_tables(tables)
    report.protocols = {n: (len(p), int(np.count_nonzero(p.label))) for n, p in tables.protocols.items()}
    missing, n = find_missing(Path(root), tables.images.path)
    report.missing, report.n_missing = missing[:max_list], n
    for key, want in manifest.expected.items():
        got = report.counts.get(key)
        if got != want:
            report.mismatches.append(f"{key}: found {got}, {manifest.expected_source} {want}")
    return report
