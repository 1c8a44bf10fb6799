"""A human-readable account of what a store holds, for `analyze info`."""

from __future__ import annotations

import numpy as np

from . import integrity
from .schema import STATUS_NAMES, STATUS_OK, STATUS_PENDING
from .store import FeatureStore


def describe(store: FeatureStore, max_failed: int = 5) -> str:
    """Dataset, models and outputs, counts, progress, failures and provenance, as text."""
    a = store.attrs
    s = store.summary()
    lines = [
        f"store       {store.path} ({store.format}, schema {a['schema']})",
        f"dataset     {a.get('dataset', '?')}  (manifest sha256 {a.get('manifest_digest') or 'n/a'})",
        f"created     {a.get('created', '?')}",
        f"images      {s.n_images:,}  templates {s.n_templates:,}  chunks {s.n_chunks} x {store.chunk_rows} rows",
        f"progress    {s.chunks_done}/{s.n_chunks} chunks done ({100.0 * s.chunks_done / max(s.n_chunks, 1):.1f}%)",
    ]
    if integrity.has_checksums(store):
        lines.append(f"integrity   {a.get(integrity.ATTR_ALGORITHM, '?')} per done chunk and creation-time array")
    else:
        lines.append("integrity   no checksums (store made before they were recorded): presence checks only")
    status = ", ".join(f"{STATUS_NAMES.get(k, k)} {v:,}" for k, v in sorted(s.status_counts.items()))
    lines.append(f"status      {status}")
    failed = [k for k in s.status_counts if k not in (STATUS_OK, STATUS_PENDING)]
    if failed:
        st = store.status()
        rows = np.flatnonzero(np.isin(st, failed))[:max_failed]
        paths = store.image_column("path", rows=rows) if len(rows) else []
        for r, p in zip(rows, paths):
            lines.append(f"  failed    row {r}: {p} ({STATUS_NAMES[int(st[r])]})")
    lines.append("protocols")
    for name, info in store.protocols_info.items():
        lines.append(
            f"  {name:<16} level {info['level']:<8} pairs {info['n_pairs']:,}  genuine {info['n_genuine']:,}"
            + (f"  ({info['description']})" if info.get("description") else "")
        )
    for name, info in store.identification_info.items():
        counts = info.get("n_templates", {})
        sets = ", ".join(f"{g} {counts.get(g, 0):,}" for g in info.get("galleries", []))
        lines.append(
            f"  {name:<16} level 1:N      galleries {sets}; probes {counts.get('probe', 0):,} templates"
            + (f"  ({info['description']})" if info.get("description") else "")
        )
    lines.append("models")
    for name, spec in store.models.items():
        origin = "random init" if spec.random_init else (spec.checkpoint or "?")
        outputs = ", ".join(spec.outputs)
        lines.append(f"  {name:<16} family {spec.family:<10} dim {spec.embedding_dim}  outputs {outputs}")
        lines.append(f"  {'':<16} checkpoint {origin}  sha256 {spec.checkpoint_sha256 or 'n/a'}")
        lines.append(f"  {'':<16} {spec.fingerprint_line()}")
        if spec.preprocessing:
            pre = ", ".join(f"{k}={v}" for k, v in spec.preprocessing.items())
            lines.append(f"  {'':<16} preprocessing {pre}; flip {'on' if spec.flip else 'off'}")
    versions = ", ".join(f"{k} {v}" for k, v in a.get("package_versions", {}).items())
    lines.append(f"versions    {versions}")
    return "\n".join(lines)
