"""The two on-disk formats behind one small interface: Zarr v3 (a `.zarr` directory) and HDF5 (`.h5`).

Only this module knows which library holds the bytes; the store above it speaks in
paths like `models/scaleface/embedding`, the same in both formats.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import StoreError, StoreLockedError

ZARR_SUFFIXES = (".zarr",)
HDF5_SUFFIXES = (".h5", ".hdf5")


def store_format(path: str | Path) -> str:
    """'zarr' or 'hdf5', from the path's suffix."""
    suffix = Path(path).suffix.lower()
    if suffix in ZARR_SUFFIXES:
        return "zarr"
    if suffix in HDF5_SUFFIXES:
        return "hdf5"
    raise StoreError(
        f"{path}: cannot tell the store format from the suffix {suffix!r}; "
        "use NAME.zarr (Zarr v3 directory) or NAME.h5 (HDF5 file)"
    )


class Backend:
    """Arrays and attributes of one store, addressed by '/'-separated paths."""

    format: str

    def __init__(self, path: Path, mode: str) -> None:
        self.path = Path(path)
        self.mode = mode

    # attributes of the root group, JSON-compatible values
    def read_attrs(self) -> dict[str, Any]:
        raise NotImplementedError

    def write_attrs(self, attrs: dict[str, Any]) -> None:
        raise NotImplementedError

    def create_array(
        self,
        key: str,
        shape: tuple[int, ...],
        dtype: Any,
        chunks: tuple[int, ...],
        fill_value: Any,
        dimension_names: tuple[str, ...] | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> None:
        """Create (or replace) an array; `dimension_names` and `attributes` describe it to other tools."""
        raise NotImplementedError

    def consolidate(self) -> None:
        """Record every array's metadata in one place for readers (Zarr consolidated metadata; HDF5: nothing)."""

    def all_set(self, key: str) -> bool:
        """Whether every value of the flag array `key` is set, read afresh from disk (False if unreadable)."""
        try:
            return bool(np.asarray(self.array(key)[:]).all())
        except Exception:  # a damaged flag: not complete
            return False

    def array(self, key: str) -> Any:
        """The array at `key`, sliceable with numpy semantics (reads and writes)."""
        raise NotImplementedError

    def read_slice(self, key: str, start: int, stop: int) -> np.ndarray:
        """Rows start:stop of an array as numpy (both backends: the library's own read)."""
        return np.asarray(self.array(key)[start:stop])

    def read_whole(self, key: str) -> np.ndarray:
        """All of an array (at least one dimension) through `read_slice`."""
        return self.read_slice(key, 0, int(self.array(key).shape[0]))

    def has(self, key: str) -> bool:
        raise NotImplementedError

    def shape_chunks(self, key: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The array's shape and storage-chunk shape, from its metadata (no data read)."""
        raise NotImplementedError

    def stored_row_chunks(self, key: str) -> set[int]:
        """Indices (along rows) of the storage chunks that exist on disk; lists metadata, reads no data."""
        raise NotImplementedError

    def flush(self) -> None:
        """Make written data durable before a chunk is marked done."""

    def close(self) -> None:
        """Release file handles (idempotent)."""


def blosc_codec(dtype: np.dtype) -> Any:
    """The Blosc codec of a new Zarr array. Floats (embeddings, sigmas, norms): LZ4 with byte shuffle. Their
    mantissas barely compress (zstd level 3 keeps 90 % of the bytes, LZ4 94 %), and zstd decodes them at
    ~0.3 GB/s per core against LZ4's ~3.5 GB/s. Reading 469k x 512 float32 takes 3.7 s with zstd, 0.3 s with
    LZ4. Integers and flags (ids, pairs, labels, done flags) compress well and decode fast: zstd level 3,
    bit shuffle for single bytes."""
    from zarr.codecs import BloscCodec

    if dtype.kind == "f":
        return BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")
    return BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle" if dtype.itemsize == 1 else "shuffle")


CREATED_BY = "scaleface-toolkit featurestore"
"""Root attribute `created_by`, written first when a store is created: marks a path as one of ours."""

_ZARR_CONFIG = {"write_empty_chunks": True}
"""Every chunk gets a storage object even when it equals the fill value (an all-failed chunk is all NaN),
so a missing object always means damage, never 'all fill'."""


class ZarrBackend(Backend):
    format = "zarr"

    def __init__(self, path: Path, mode: str, attrs: dict[str, Any] | None = None) -> None:
        super().__init__(path, mode)
        import zarr

        self._zarr = zarr
        self._arrays: dict[str, Any] = {}
        self._readers: dict[str, ChunkReader | None] = {}
        try:
            if mode == "w":
                self.root = zarr.open_group(str(self.path), mode=mode, attributes=attrs or {})
            else:
                # the arrays' own zarr.json files, never the consolidated copy: they are what a check must see
                self.root = zarr.open_group(str(self.path), mode=mode, use_consolidated=False)
        except Exception as exc:  # zarr raises several types for a non-store directory
            raise StoreError(f"{self.path} is not a Zarr v3 store: {exc}") from exc

    def read_attrs(self) -> dict[str, Any]:
        return dict(self.root.attrs)

    def write_attrs(self, attrs: dict[str, Any]) -> None:
        self.root.attrs.update(attrs)

    def create_array(self, key, shape, dtype, chunks, fill_value, dimension_names=None, attributes=None) -> None:
        is_str = dtype is str
        kwargs: dict[str, Any] = {}
        if not is_str:
            kwargs["compressors"] = blosc_codec(np.dtype(dtype))
        self._readers.pop(key, None)  # a new array: its layout is read again
        self._arrays[key] = self.root.create_array(
            key,
            shape=shape,
            dtype=dtype,
            chunks=chunks,
            fill_value=fill_value,
            overwrite=True,
            config=_ZARR_CONFIG,
            dimension_names=dimension_names,
            attributes=attributes or {},
            **kwargs,
        )

    def all_set(self, key: str) -> bool:
        try:  # a fresh handle on the array (other shards write it too), not the cached writing one
            return bool(np.asarray(self._zarr.open_array(str(self.path / key), mode="r")[:]).all())
        except Exception:  # missing or damaged flags: not complete
            return False

    def consolidate(self) -> None:
        import warnings

        with warnings.catch_warnings():  # "not part of the Zarr v3 specification": known, and only an index
            warnings.simplefilter("ignore")
            self._zarr.consolidate_metadata(str(self.path))

    def array(self, key: str) -> Any:
        if key not in self._arrays:
            try:
                arr = self.root[key]
            except KeyError:
                raise StoreError(f"{self.path}: array {key} is missing (no {key}/zarr.json)") from None
            except Exception as exc:  # edited or truncated metadata
                detail = " ".join(str(exc).split())
                raise StoreError(
                    f"{self.path}: array {key} has unreadable metadata ({key}/zarr.json: {detail})"
                ) from None
            self._arrays[key] = arr.with_config(_ZARR_CONFIG)
        return self._arrays[key]

    def read_slice(self, key: str, start: int, stop: int) -> np.ndarray:
        """Rows start:stop, decoding the chunk files directly on a small thread pool where the array is this store's
        own layout (`chunk_reader`): the same bytes through the same Blosc library as zarr's read, without its
        per-chunk overhead (~3x faster for 469k x 512 float32 here); any other layout goes through zarr."""
        arr = self.array(key)
        if key not in self._readers:  # the metadata is read once per array
            self._readers[key] = chunk_reader(arr, self.path / key)
        reader = self._readers[key]
        if reader is None:
            return np.asarray(arr[start:stop])
        return reader.read(start, stop)

    def has(self, key: str) -> bool:
        try:
            self.array(key)
        except StoreError:
            return False
        return True

    def shape_chunks(self, key: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        arr = self.array(key)
        return tuple(arr.shape), tuple(arr.chunks)

    def stored_row_chunks(self, key: str) -> set[int]:
        # default chunk key encoding: KEY/c/<row chunk>[/0...]; the other dimensions are one chunk each
        shape, _ = self.shape_chunks(key)
        base = self.path / key / "c"
        try:
            names = os.listdir(base)
        except FileNotFoundError:
            return set()
        tail = ("0",) * (len(shape) - 1)
        found = set()
        for name in names:
            if name.isdigit() and (not tail or os.path.isfile(os.path.join(base, name, *tail))):
                found.add(int(name))
        return found


class HDF5Backend(Backend):
    format = "hdf5"

    def __init__(self, path: Path, mode: str, attrs: dict[str, Any] | None = None) -> None:
        super().__init__(path, mode)
        import h5py

        self._h5py = h5py
        h5mode = {"r": "r", "r+": "r+", "w": "w"}[mode]
        self.file: Any = None
        try:
            # no chunk cache: every chunk is written whole anyway, and a write error (ENOSPC, EIO) then
            # surfaces in the write call itself instead of in a later cache eviction that h5py cannot report
            cache = {"rdcc_nbytes": 0} if h5mode != "r" else {}
            self.file = h5py.File(self.path, h5mode, **cache)
            if mode == "w" and attrs:
                self.write_attrs(attrs)
        except OSError as exc:
            if "unable to lock file" in str(exc):
                raise StoreLockedError(
                    f"{self.path} is open by another process that writes it (HDF5 allows one writer per file; "
                    "use a .zarr store to write shards in parallel)"
                ) from exc
            raise StoreError(f"{self.path} could not be opened as an HDF5 store ({h5mode}): {exc}") from exc

    def read_attrs(self) -> dict[str, Any]:
        try:
            return decode_h5_attrs(self.file.attrs)
        except ValueError as exc:
            raise StoreError(f"{self.path}: {exc}") from None

    def write_attrs(self, attrs: dict[str, Any]) -> None:
        encode_h5_attrs(self.file.attrs, attrs)

    def create_array(self, key, shape, dtype, chunks, fill_value, dimension_names=None, attributes=None) -> None:
        if key in self.file:
            del self.file[key]
        chunks = tuple(max(1, min(c, n)) for c, n in zip(chunks, shape))  # HDF5 chunks may not exceed the shape
        if dtype is str:
            ds = self.file.create_dataset(key, shape=shape, dtype=self._h5py.string_dtype(), chunks=chunks)
        else:
            ds = self._create_numeric(key, shape, dtype, chunks, fill_value)
        encode_h5_attrs(ds.attrs, attributes or {})  # first: an object with attributes but no list is an old one
        for i, name in enumerate(dimension_names or ()):
            ds.dims[i].label = name  # HDF5 dimension labels (DIMENSION_LABELS), what netCDF-aware tools show

    def _create_numeric(self, key, shape, dtype, chunks, fill_value) -> Any:
        return self.file.create_dataset(
            key,
            shape=shape,
            dtype=dtype,
            chunks=chunks,
            fillvalue=fill_value,
            compression="gzip",
            compression_opts=4,
            shuffle=True,
        )

    def _dataset(self, key: str) -> Any:
        try:
            return self.file[key]
        except KeyError:
            raise StoreError(f"{self.path}: array {key} is missing") from None

    def array(self, key: str) -> Any:
        _silence_hdf5_in_this_thread()
        ds = self._dataset(key)
        return _H5Strings(ds) if ds.dtype.kind == "O" else ds

    def has(self, key: str) -> bool:
        return key in self.file

    def shape_chunks(self, key: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        ds = self._dataset(key)
        return tuple(ds.shape), tuple(ds.chunks or ds.shape)

    def stored_row_chunks(self, key: str) -> set[int]:
        # HDF5 allocates a chunk on its first write, whatever the values; chunk_iter reads only the chunk index
        ds = self._dataset(key)
        if ds.size == 0:
            return set()
        rows = (ds.chunks or ds.shape)[0]
        found: set[int] = set()
        ds.id.chunk_iter(lambda info: found.add(info.chunk_offset[0] // rows))
        return found

    def flush(self) -> None:
        _silence_hdf5_in_this_thread()
        self.file.flush()

    def close(self) -> None:
        _silence_hdf5_in_this_thread()
        if self.file is not None:
            f, self.file = self.file, None
            f.close()


def _silence_hdf5_in_this_thread() -> None:
    """h5py silences libhdf5's error stack printing only in the main thread; chunks are written on a
    background thread, where a failed write would otherwise print a multi-line HDF5-DIAG trace
    before the one-line error."""
    try:
        from h5py import _errors

        _errors.silence_errors()
    except (ImportError, AttributeError):  # a future h5py without it: the trace is only noise
        pass


class _H5Strings:
    """An HDF5 string dataset that reads back as Python str, like Zarr's string arrays."""

    def __init__(self, ds: Any) -> None:
        self.ds = ds
        self.shape = ds.shape
        self.chunks = ds.chunks

    def __getitem__(self, item: Any) -> np.ndarray:
        return np.asarray(self.ds.asstr()[item], dtype=object)

    def __setitem__(self, item: Any, value: Any) -> None:
        self.ds[item] = np.asarray(value, dtype=object)


def open_backend(path: str | Path, mode: str, attrs: dict[str, Any] | None = None) -> Backend:
    """Open the store at `path` in `mode` ('r', 'r+', 'w') with the backend its suffix names.

    With mode 'w', `attrs` are the root's first attributes (written together with the root itself).
    """
    fmt = store_format(path)
    return ZarrBackend(Path(path), mode, attrs) if fmt == "zarr" else HDF5Backend(Path(path), mode, attrs)


def read_root_attrs(path: str | Path) -> dict[str, Any] | None:
    """The root attributes of whatever is at `path` if it is a Zarr group or an HDF5 file, else None.

    Reads only metadata (zarr.json, or the HDF5 root's attributes) and never fails: used to decide
    whether a path is one of our stores before deleting it.
    """
    path = Path(path)
    try:
        if store_format(path) == "zarr":
            meta = json.loads((path / "zarr.json").read_text())
            attrs = meta.get("attributes", {})
            return attrs if isinstance(attrs, dict) else None
        import h5py

        with h5py.File(path, "r", locking=False) as f:
            return decode_h5_attrs(f.attrs)
    except Exception:  # not a store, unreadable, or not JSON: not provably ours
        return None


JSON_ATTRS = "json_attributes"
"""HDF5 root attribute listing the attributes stored as JSON text (mappings, mixed or empty lists, None);
every other attribute has its native HDF5 type. A file without it (a store written before) holds only
JSON text attributes."""


def _h5_native(value: Any) -> Any:
    """`value` as a native HDF5 attribute value, or None where it needs JSON text."""
    import h5py

    if isinstance(value, bool | str | float) or (isinstance(value, int) and -(2**63) <= value < 2**63):
        return value
    if isinstance(value, list | tuple) and value:
        if all(isinstance(v, str) for v in value):
            return np.array(value, dtype=h5py.string_dtype())
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            arr = np.array(value)
            return arr if arr.dtype.kind == "i" else None
        if all(isinstance(v, float) for v in value):
            return np.array(value, dtype=np.float64)
    return None


def encode_h5_attrs(target: Any, attrs: dict[str, Any]) -> None:
    """Write `attrs` on an HDF5 object: native types where HDF5 has them, JSON text (listed in
    `json_attributes`) for the rest. An object that already holds attributes without that list is a store
    written before native attributes, and keeps JSON text throughout."""
    legacy = JSON_ATTRS not in target and len(target) > 0
    as_json = set() if legacy else {str(v) for v in np.atleast_1d(target.get(JSON_ATTRS, []))}
    for k, v in attrs.items():
        native = None if legacy else _h5_native(v)
        if native is None:
            target[k] = json.dumps(v)
            as_json.add(k)
        else:
            target[k] = native
            as_json.discard(k)
    if not legacy:
        import h5py

        target[JSON_ATTRS] = np.array(sorted(as_json), dtype=h5py.string_dtype())


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def decode_h5_attrs(attrs: Any) -> dict[str, Any]:
    """The attributes of an HDF5 object as Python values (native ones as they are, JSON text decoded);
    ValueError naming an attribute that should be JSON text and is not."""
    legacy = JSON_ATTRS not in attrs
    as_json = set() if legacy else {_plain(v) for v in np.atleast_1d(attrs[JSON_ATTRS])}
    out: dict[str, Any] = {}
    for k, v in attrs.items():
        if k == JSON_ATTRS:
            continue
        if legacy or k in as_json:
            try:
                out[k] = json.loads(v)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"root attribute {k!r} is not JSON text ({exc})") from None
        else:
            out[k] = _plain(v)
    return out


@dataclass(frozen=True)
class ChunkReader:
    """Reads row ranges of one Zarr v3 array written by this package: a regular grid of row chunks spanning the
    other dimensions whole, default '/' chunk keys, codecs `bytes` (little endian) then `blosc`, no sharding."""

    base: Path
    shape: tuple[int, ...]
    chunk_rows: int
    dtype: np.dtype
    fill_value: Any
    blosc: dict[str, Any]

    def read(self, start: int, stop: int) -> np.ndarray:
        start, stop = max(0, start), min(self.shape[0], stop)
        out = np.empty((max(0, stop - start), *self.shape[1:]), dtype=self.dtype)
        if stop <= start:
            return out
        first, last = start // self.chunk_rows, (stop - 1) // self.chunk_rows
        list(_decode_pool().map(lambda k: self._chunk_into(k, start, stop, out), range(first, last + 1)))
        return out

    def _chunk_into(self, k: int, start: int, stop: int, out: np.ndarray) -> None:
        """Decode chunk k and copy its rows that fall in start:stop into `out` (a missing chunk file: fill value)."""
        lo, hi = max(start, k * self.chunk_rows), min(stop, (k + 1) * self.chunk_rows)
        path = self.base.joinpath("c", str(k), *("0",) * (len(self.shape) - 1))
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            out[lo - start : hi - start] = self.fill_value
            return
        from numcodecs import Blosc

        data = Blosc(**self.blosc).decode(raw)
        chunk = np.frombuffer(data, dtype=self.dtype)
        if chunk.size != self.chunk_rows * int(np.prod(self.shape[1:], dtype=np.int64)):
            raise StoreError(f"{path}: chunk decodes to {chunk.size} values, not a {self.chunk_rows}-row chunk")
        chunk = chunk.reshape(self.chunk_rows, *self.shape[1:])
        out[lo - start : hi - start] = chunk[lo - k * self.chunk_rows : hi - k * self.chunk_rows]


@functools.cache
def _decode_pool() -> Any:
    """One process-wide thread pool for chunk decoding (Blosc releases the GIL): at most 8 threads, one per core."""
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1)), thread_name_prefix="chunks")


def chunk_reader(arr: Any, base: Path) -> ChunkReader | None:
    """A ChunkReader for a zarr array in exactly this package's layout, or None (then zarr reads it)."""
    try:
        from zarr.codecs import BloscCodec, BytesCodec
        from zarr.core.chunk_grids import RegularChunkGrid
        from zarr.core.chunk_key_encodings import DefaultChunkKeyEncoding

        m = arr.metadata
        if getattr(m, "zarr_format", None) != 3 or not isinstance(m.chunk_grid, RegularChunkGrid):
            return None
        chunks, shape = tuple(m.chunk_grid.chunk_shape), tuple(m.shape)
        if len(shape) < 1 or tuple(chunks[1:]) != tuple(shape[1:]):
            return None
        enc = m.chunk_key_encoding
        if not isinstance(enc, DefaultChunkKeyEncoding) or enc.separator != "/":
            return None
        codecs = tuple(m.codecs)
        if len(codecs) != 2 or not isinstance(codecs[0], BytesCodec) or not isinstance(codecs[1], BloscCodec):
            return None
        if codecs[0].endian is not None and codecs[0].endian.value != "little":
            return None
        dtype = np.dtype(arr.dtype).newbyteorder("<")
        if dtype.kind not in "biuf":
            return None
        b = codecs[1]
        shuffle = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}[b.shuffle.value]
        blosc = {"cname": b.cname.value, "clevel": int(b.clevel), "shuffle": shuffle, "blocksize": int(b.blocksize)}
        return ChunkReader(base, shape, int(chunks[0]), dtype, m.fill_value, blosc)
    except Exception:  # an unexpected zarr version or metadata: let zarr read it
        return None
