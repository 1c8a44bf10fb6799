"""`datasets check`: read a dataset through its manifest, count what it holds, find missing image
files, image files resolving outside the data root (which extract would refuse), empty protocols,
an empty dataset and malformed lines, and compare the counts with the manifest's `expected` numbers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facedata.errors import DataError
from facedata.images import split_member
from facedata.manifest import EXPECTED_KEYS, Manifest
from facedata.paths import scan_under
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
    outside: list[str] = field(default_factory=list)
    n_outside: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the dataset read cleanly, has images, no image is missing or outside the data root,
        no protocol is empty and every expected count matches."""
        return not (self.errors or self.n_missing or self.n_outside or self.problems or self.mismatches)

    def format(self) -> str:
        """A plain-text report for the terminal."""
        lines = [f"dataset {self.name} at {self.root}: {'OK' if self.ok else 'PROBLEMS FOUND'}"]
        for key in EXPECTED_KEYS:
            if key in self.counts:
                lines.append(f"  {key}: {self.counts[key]}")
        for name, (n, g) in self.protocols.items():
            lines.append(f"  protocol {name}: {n} pairs, {g} genuine")
        for n in self.notes:
            lines.append(f"  note: {n}")
        for e in self.errors:
            lines.append(f"  error: {e}")
        for p in self.problems:
            lines.append(f"  problem: {p}")
        if self.n_outside:
            lines.append(
                f"  image files resolving outside the data root (symlinks; extract refuses them): "
                f"{self.n_outside} in total, first {len(self.outside)}:"
            )
            lines.extend(f"    {m}" for m in self.outside)
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
    missing, _ = scan_under(root, _files(paths))
    return missing, len(missing)


def _files(paths: np.ndarray) -> set[str]:
    """The distinct files behind row paths (a pack once for all its `#member` rows)."""
    return {split_member(str(p))[0] for p in paths}


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
    missing, outside = scan_under(root, _files(tables.images.path))
    report.missing, report.n_missing = missing[:max_list], len(missing)
    report.outside = [f"{rel} -> {real}" for rel, real in outside[:max_list]]
    report.n_outside = len(outside)
    if len(tables.images) == 0:
        report.problems.append("the dataset has 0 images")
    for name, (n_pairs, _) in report.protocols.items():
        if n_pairs == 0:
            report.problems.append(f"protocol {name} has 0 pairs")
    expected, source = expected_counts(manifest, Path(root))
    if source != manifest.expected_source:
        report.notes.append(f"synthetic data ({source}): counts compared with its synthetic.json, not official ones")
    for key, want in expected.items():
        got = report.counts.get(key)
        if got != want:
            report.mismatches.append(f"{key}: found {got}, {source} {want}")
    return report


SYNTHETIC_KEYS = {"images": "n_images", "templates": "n_templates", "pairs": "n_pairs", "genuine": "n_genuine"}
"""The expected counts a synthetic dataset's synthetic.json records (`datasets synthesize`)."""


def expected_counts(manifest: Manifest, root: Path) -> tuple[dict[str, int], str]:
    """The counts to compare with and where they come from: a synthetic dataset of this layout (a
    synthetic.json naming this dataset beside its files) is checked against its own plan, anything else
    against the manifest's `expected` numbers."""
    meta = root / "synthetic.json"
    if meta.is_file():
        import json

        try:
            info = json.loads(meta.read_text())
        except (OSError, ValueError):
            info = {}
        if isinstance(info, dict) and info.get("dataset") == manifest.name:
            got = {k: info[v] for k, v in SYNTHETIC_KEYS.items() if isinstance(info.get(v), int)}
            if got:
                return got, f"synthetic preset {info.get('preset')} seed {info.get('seed')}"
    return dict(manifest.expected), manifest.expected_source
