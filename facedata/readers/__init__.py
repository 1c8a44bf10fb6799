"""Dataset readers, one module per on-disk layout; `read_dataset` picks the one a manifest names."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from facedata.errors import DataError
from facedata.manifest import Manifest
from facedata.paths import resolve_under
from facedata.readers.bin_pack import read_bin
from facedata.readers.folder import read_folder
from facedata.readers.identification import absent_identification, read_identification
from facedata.readers.insightface_ijb import read_insightface_ijb
from facedata.readers.lfw import read_lfw
from facedata.readers.nist_ijbc import read_nist_ijbc
from facedata.readers.recordio import read_recordio
from facedata.readers.table import read_table
from featurestore.schema import DatasetTables

READERS: dict[str, Callable[[Path, Manifest], DatasetTables]] = {
    "insightface_ijb": read_insightface_ijb,
    "nist_ijbc": read_nist_ijbc,
    "lfw": read_lfw,
    "bin": read_bin,
    "recordio": read_recordio,
    "folder": read_folder,
    "table": read_table,
}


def read_dataset(manifest: Manifest, root: str | Path) -> DatasetTables:
    """Read the dataset a manifest describes, under data root `root`, with the reader for its layout."""
    reader = READERS.get(manifest.layout)
    if reader is None:
        raise DataError(f"key 'layout': no reader for layout {manifest.layout!r}", path=manifest.source)
    root = Path(root)
    if not root.is_dir():
        raise DataError("data root is not a directory", path=root)
    manifest, skipped = _without_absent_optional_protocols(manifest, root)
    tables = reader(root, manifest)
    tables.extra.setdefault("layout", manifest.layout)
    if skipped:
        tables.extra["skipped_protocols"] = skipped
    if manifest.identification:
        skip = absent_identification(manifest, root)
        tables.identification = read_identification(root, manifest, tables.images, skip)
        if skip:
            tables.extra["skipped_identification"] = skip
    return tables


def _without_absent_optional_protocols(manifest: Manifest, root: Path) -> tuple[Manifest, list[str]]:
    """Drop protocols marked `optional: true` whose pairs file is not there (a folder of faces without
    a pairs CSV is still a dataset to extract); every other protocol stays required."""
    skipped = [
        name
        for name, spec in manifest.protocols.items()
        if spec.options.get("optional") and not resolve_under(root, spec.pairs, source=manifest.source).exists()
    ]
    if not skipped:
        return manifest, []
    kept = {n: p for n, p in manifest.protocols.items() if n not in skipped}
    return dataclasses.replace(manifest, protocols=kept), skipped


__all__ = ["READERS", "read_dataset"]
