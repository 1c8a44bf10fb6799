"""The two on-disk formats behind one small interface: Zarr v3 (a `.zarr` directory) and HDF5 (`.h5`).

Only this module knows which library holds the bytes; the store above it speaks in
paths like `models/scaleface/embedding`, the same in both formats.
"""

from __future__ import annotations

import json
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
        self, key: str, shape: tuple[int, ...], dtype: Any, chunks: tuple[int, ...], fill_value: Any
    ) -> None:
        raise NotImplementedError

    def array(self, key: str) -> Any:
        """The array at `key`, sliceable with numpy semantics (reads and writes)."""
        raise NotImplementedError

    def has(self, key: str) -> bool:
        raise NotImplementedError

    def flush(self) -> None:
        """Make written data durable before a chunk is marked done."""

    def close(self) -> None:
        """Release file handles."""


class ZarrBackend(Backend):
    format = "zarr"

    def __init__(self, path: Path, mode: str) -> None:
        super().__init__(path, mode)
        import zarr

        self._zarr = zarr
        try:
            self.root = zarr.open_group(str(self.path), mode=mode)
        except Exception as exc:  # zarr raises several types for a non-store directory
            raise StoreError(f"{self.path} is not a Zarr v3 store: {exc}") from exc

    def read_attrs(self) -> dict[str, Any]:
        return dict(self.root.attrs)

    def write_attrs(self, attrs: dict[str, Any]) -> None:
        self.root.attrs.update(attrs)

    def create_array(self, key, shape, dtype, chunks, fill_value) -> None:
        from zarr.codecs import BloscCodec

        is_str = dtype is str
        kwargs: dict[str, Any] = {}
        if not is_str:
            shuffle = "bitshuffle" if np.dtype(dtype).itemsize == 1 else "shuffle"
            kwargs["compressors"] = BloscCodec(cname="zstd", clevel=3, shuffle=shuffle)
        self.root.create_array(
            key, shape=shape, dtype=dtype, chunks=chunks, fill_value=fill_value, overwrite=True, **kwargs
        )

    def array(self, key: str) -> Any:
        return self.root[key]

    def has(self, key: str) -> bool:
        try:
            self.root[key]
        except KeyError:
            return False
        return True


class HDF5Backend(Backend):
    format = "hdf5"

    def __init__(self, path: Path, mode: str) -> None:
        super().__init__(path, mode)
        import h5py

        self._h5py = h5py
        h5mode = {"r": "r", "r+": "r+", "w": "w"}[mode]
        try:
            self.file = h5py.File(self.path, h5mode)
        except OSError as exc:
            if "unable to lock file" in str(exc):
                raise StoreLockedError(
                    f"{self.path} is open by another process that writes it (HDF5 allows one writer per file; "
                    "use a .zarr store to write shards in parallel)"
                ) from exc
            raise StoreError(f"{self.path} could not be opened as an HDF5 store ({h5mode}): {exc}") from exc

    def read_attrs(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self.file.attrs.items()}

    def write_attrs(self, attrs: dict[str, Any]) -> None:
        for k, v in attrs.items():
            self.file.attrs[k] = json.dumps(v)

    def create_array(self, key, shape, dtype, chunks, fill_value) -> None:
        if key in self.file:
            del self.file[key]
        chunks = tuple(max(1, min(c, n)) for c, n in zip(chunks, shape))  # HDF5 chunks may not exceed the shape
        if dtype is str:
            self.file.create_dataset(key, shape=shape, dtype=self._h5py.string_dtype(), chunks=chunks)
            return
        self.file.create_dataset(
            key,
            shape=shape,
            dtype=dtype,
            chunks=chunks,
            fillvalue=fill_value,
            compression="gzip",
            compression_opts=4,
            shuffle=True,
        )

    def array(self, key: str) -> Any:
        return _H5Strings(self.file[key]) if self.file[key].dtype.kind == "O" else self.file[key]

    def has(self, key: str) -> bool:
        return key in self.file

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class _H5Strings:
    """An HDF5 string dataset that reads back as Python str, like Zarr's string arrays."""

    def __init__(self, ds: Any) -> None:
        self.ds = ds
        self.shape = ds.shape

    def __getitem__(self, item: Any) -> np.ndarray:
        return np.asarray(self.ds.asstr()[item], dtype=object)

    def __setitem__(self, item: Any, value: Any) -> None:
        self.ds[item] = np.asarray(value, dtype=object)


def open_backend(path: str | Path, mode: str) -> Backend:
    """Open the store at `path` in `mode` ('r', 'r+', 'w') with the backend its suffix names."""
    fmt = store_format(path)
    return ZarrBackend(Path(path), mode) if fmt == "zarr" else HDF5Backend(Path(path), mode)
