"""The store's one optional training array: `bottleneck`, (M, F) float16, the flattened bn2(layer4) output
(25,088-d for iResNet at 112x112) of one model's backbone for M chosen image rows (`extract --bottleneck`).

Heads train from it without running the backbone (`train ... --cache STORE`). The root attribute
`bottleneck` records the source model, the image rows (ascending), the storage chunking and one zlib.crc32
per storage chunk, which `featurestore.integrity.verify` checks like every other array.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from . import integrity
from .errors import StoreError

if TYPE_CHECKING:
    from .store import FeatureStore

BOTTLENECK_KEY = integrity.BOTTLENECK_KEY
BOTTLENECK_CHUNK_ROWS = 256
"""Rows per storage chunk: 12 MiB of float16 25,088-d rows."""


def has_bottleneck(store: FeatureStore) -> bool:
    """Whether the store holds the optional bottleneck array."""
    return BOTTLENECK_KEY in store.attrs


def bottleneck_info(store: FeatureStore) -> dict[str, Any]:
    """The `bottleneck` root attribute (model, rows, dim, chunk_rows, crc32); StoreError when absent."""
    if not has_bottleneck(store):
        raise StoreError(
            f"{store.path}: no bottleneck array; make one with `extract ... --bottleneck [--per-identity K]`"
        )
    return store.attrs[BOTTLENECK_KEY]


def read_bottleneck(store: FeatureStore, index: np.ndarray | slice | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(image rows, float16 values) of the stored bottleneck, all of it or the entries `index` selects."""
    info = bottleneck_info(store)
    rows = np.asarray(info["rows"], dtype=np.int64)
    arr = store._b.array(BOTTLENECK_KEY)
    if index is None:
        return rows, np.asarray(arr[:])
    if isinstance(index, slice):
        return rows[index], np.asarray(arr[index])
    index = np.asarray(index, dtype=np.int64)
    return rows[index], np.asarray(arr.oindex[index] if hasattr(arr, "oindex") else arr[np.sort(index)])


def write_bottleneck(store: FeatureStore, model: str, rows: np.ndarray, values: np.ndarray) -> None:
    """Write (replace) the bottleneck for ascending image `rows` from `model`'s backbone, with checksums;
    the attribute is written last, so a store whose write failed has no (half) bottleneck."""
    rows = np.asarray(rows, dtype=np.int64)
    values = np.ascontiguousarray(np.asarray(values, dtype=np.float16))
    if values.ndim != 2 or len(values) != len(rows):
        raise StoreError(f"{store.path}: bottleneck values {values.shape} do not match {len(rows)} rows")
    if len(rows) and (np.any(np.diff(rows) <= 0) or rows[0] < 0 or rows[-1] >= store.n_images):
        raise StoreError(f"{store.path}: bottleneck rows must be ascending, unique and in 0..{store.n_images - 1}")
    store.model(model)  # names a model the store has
    if store._b.mode == "r":
        raise StoreError(f"{store.path} is open read-only")
    m, dim = values.shape
    chunk = BOTTLENECK_CHUNK_ROWS
    store._b.create_array(BOTTLENECK_KEY, (m, dim), np.float16, (min(chunk, max(m, 1)), dim), np.nan)
    if m:
        store._b.array(BOTTLENECK_KEY)[:] = values
    store._b.flush()
    info = {
        "model": model,
        "rows": rows.tolist(),
        "dim": int(dim),
        "dtype": "f2",
        "chunk_rows": chunk,
        "crc32": integrity.chunk_crcs(values, chunk),
    }
    store._b.write_attrs({BOTTLENECK_KEY: info})
    store._b.flush()
    store.attrs[BOTTLENECK_KEY] = info
