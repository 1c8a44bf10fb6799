"""Create, fill and read a feature store (schema 2; schema-1 stores are read too), the same API over Zarr v3 and HDF5.

Rows are grouped in chunks of `chunk_rows` images. A writer writes every array's rows
of a chunk, flushes, and only then sets the chunk's done flag, so an interrupted run
never leaves a half-written chunk marked done; a rerun writes only the chunks not done.
"""

from __future__ import annotations

import hashlib
import platform
import shutil
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from . import integrity
from .arrays import describe_array
from .backend import CREATED_BY, Backend, open_backend, read_root_attrs, store_format
from .errors import StoreError, StoreWriteError
from .integrity import DONE_KEY
from .locks import FileLock, LockSet
from .schema import (
    KNOWN_SCHEMAS,
    PROBE_SET,
    SCHEMA_VERSION,
    STATUS_PENDING,
    DatasetTables,
    Identification,
    ImageTable,
    ModelSpec,
    Protocol,
    TemplateSet,
    fingerprint_differences,
)

DEFAULT_CHUNK_ROWS = 2048
"""Images per chunk: 4 MiB of float32 512-d embeddings, a good Dask task size, a few batches to write."""

PAIR_CHUNK_ROWS = 1 << 20
"""Pairs per protocol chunk: 16 MiB of int64 pairs, 15 chunks for IJB-C's 15.7 M pairs."""

CRC_KEY = integrity.CHECKSUM_KEY
DISK_MARGIN_BYTES = 4 << 20
"""Free space an HDF5 write must leave beyond the chunk's uncompressed bytes (metadata, B-tree nodes):
HDF5 does not recover from a full disk (a later close can crash), so it is refused before writing."""
IMAGE_KEYS = ("path", "subject", "template", "media", "detector_score", "landmarks", "status")


def package_versions() -> dict[str, str]:
    """Versions of the libraries that shaped the store's bytes (torch only if the caller loaded it)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("scaleface-toolkit", "numpy", "zarr", "h5py", "dask", "pandas", "opencv-python-headless"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    for mod in ("torch", "torchvision"):
        if mod in sys.modules:
            out[mod] = getattr(sys.modules[mod], "__version__", "?")
    return out


def images_digest(images: ImageTable) -> str:
    """sha256 over the image rows' identity (paths, subjects, templates, medias) to match stores to data."""
    h = hashlib.sha256()
    h.update("\n".join(map(str, images.path)).encode())
    for arr in (images.subject, images.template, images.media):
        h.update(np.ascontiguousarray(arr, dtype=np.int64).tobytes())
    return h.hexdigest()


def shard_chunks(n_chunks: int, shard: int, n_shards: int) -> range:
    """The contiguous, chunk-aligned range of chunks that shard `shard` of `n_shards` writes."""
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard}/{n_shards}: need 0 <= i < n")
    return range(shard * n_chunks // n_shards, (shard + 1) * n_chunks // n_shards)


def _creation_lock(path: Path) -> FileLock:
    return FileLock(path.parent / f".{path.name}.create.lock", f"creation of store {path}", wait=True)


def _lock_dir(path: Path) -> Path:
    """The Zarr chunk locks' folder: beside the store, never inside its hierarchy (zarr would warn about it)."""
    return path.parent / f".{path.name}.locks"


def _chunk_lock_path(path: Path, fmt: str, chunk: int) -> Path:
    if fmt == "zarr":
        return _lock_dir(path) / f"chunk-{chunk:07d}.lock"
    return path.parent / f".{path.name}.write.lock"


def _remove_lock_dir(path: Path) -> None:
    """Remove the chunk locks' folder once no lock is in it (a writer may be creating one: then it stays)."""
    try:
        _lock_dir(path).rmdir()
    except OSError:
        pass


def create_store(
    path: str | Path,
    tables: DatasetTables,
    models: Iterable[ModelSpec],
    *,
    manifest_digest: str = "",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    overwrite: bool = False,
    exist_ok: bool = False,
    extra_attrs: dict[str, Any] | None = None,
) -> FeatureStore:
    """Create a store for `tables` and `models` at `path` (format by suffix) and open it for writing.

    With `exist_ok`, an existing store made for the same images and models is opened instead
    (resume, or another shard joining); one made for different ones is refused, naming the
    difference. `overwrite` deletes an existing store first, unless someone is writing it.
    """
    path = Path(path)
    fmt = store_format(path)
    models = list(models)
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with _creation_lock(path):
        if path.exists():
            if overwrite:
                _remove_store(path, fmt)
            elif exist_ok:
                store = FeatureStore.open(path, mode="r+")
                try:
                    store.check_compatible(tables.images, models)
                except BaseException:
                    store.close()
                    raise
                return store
            else:
                raise StoreError(f"{path} already exists; pass overwrite to replace it or resume it")
        _write_new_store(path, tables, models, manifest_digest, chunk_rows, extra_attrs or {})
    return FeatureStore.open(path, mode="r+")


def is_our_store(path: str | Path) -> bool:
    """Whether `path` holds a feature store (a `schema` or our `created_by` root attribute): the only
    things this package ever deletes."""
    attrs = read_root_attrs(path)
    return attrs is not None and ("schema" in attrs or attrs.get("created_by") == CREATED_BY)


def _refuse_foreign(path: Path, why: str) -> None:
    if not is_our_store(path):
        raise StoreError(
            f"{path} exists but is not a feature store (no 'schema' attribute in its root); {why} only replaces "
            "stores this tool made, so nothing was deleted. Move it away or choose another --out"
        )


def _remove_store(path: Path, fmt: str) -> None:
    """Delete a store, refusing anything that is not one, and while any writer still holds one of its locks."""
    _refuse_foreign(path, "--overwrite")
    if fmt == "zarr":
        # stores written before locks moved out of the hierarchy kept them in .locks/ inside
        found = sorted([*_lock_dir(path).glob("*.lock"), *(path / ".locks").glob("*.lock")])
        held = LockSet([FileLock(p, f"store {path}") for p in found])
    else:
        held = LockSet([FileLock(_chunk_lock_path(path, fmt, 0), f"store {path}")])
    held.acquire()
    try:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    finally:
        held.release()
        if fmt == "zarr":
            _remove_lock_dir(path)


def _write_new_store(
    path: Path,
    tables: DatasetTables,
    models: list[ModelSpec],
    manifest_digest: str,
    chunk_rows: int,
    extra_attrs: dict[str, Any],
) -> None:
    images = tables.images
    n = len(images)
    if n == 0:
        raise StoreError(f"{path}: the dataset {tables.name!r} has no images")
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise StoreError(f"{path}: model names must be unique, got {names}")
    n_chunks = -(-n // chunk_rows)
    tmp = path.with_name(f".{path.stem}.creating{path.suffix}")
    if tmp.exists():  # left by a killed creation: remove it only if it is one of ours
        _refuse_foreign(tmp, "store creation")
        shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
    try:
        _fill_new_store(tmp, tables, models, manifest_digest, chunk_rows, extra_attrs, n, n_chunks)
    except Exception as exc:
        if tmp.exists() and is_our_store(tmp):
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        if isinstance(exc, StoreError):
            raise
        detail = " ".join(str(exc).split())
        raise StoreWriteError(
            f"{path}: creating the store failed ({type(exc).__name__}: {detail}); nothing was created. "
            "Free space (or fix the device) and rerun the same command",
            cause=exc,
        ) from exc
    tmp.rename(path)  # a store appears whole or not at all


def _fill_new_store(
    tmp: Path,
    tables: DatasetTables,
    models: list[ModelSpec],
    manifest_digest: str,
    chunk_rows: int,
    extra_attrs: dict[str, Any],
    n: int,
    n_chunks: int,
) -> None:
    images = tables.images
    b = open_backend(tmp, "w", attrs={"created_by": CREATED_BY})
    levels = {name: p.level for name, p in tables.protocols.items()}
    families = {m.name: m.family for m in models}
    qualities = {m.name: m.external_quality() for m in models}

    def create(key: str, shape: tuple[int, ...], dtype: Any, chunks: tuple[int, ...], fill: Any) -> None:
        dims, attrs = describe_array(key, levels=levels, families=families, qualities=qualities)
        if len(dims) != len(shape):  # an array arrays.py does not know yet: still named, per array
            dims = tuple(f"{key.rsplit('/', 1)[-1]}_{i}" for i in range(len(shape)))
        b.create_array(key, shape, dtype, chunks, fill, dimension_names=dims, attributes=attrs)

    try:
        creation_crc: dict[str, list[int]] = {}

        def put(key: str, values: Any, rows_per_chunk: int) -> None:
            values = np.asarray(values) if not isinstance(values, np.ndarray) else values
            b.array(key)[:] = values
            creation_crc[key] = integrity.chunk_crcs(values, rows_per_chunk)

        rc = (chunk_rows,)
        create("images/path", (n,), str, rc, "")
        put("images/path", np.asarray(images.path, dtype=str), chunk_rows)
        for key, arr, fill in (
            ("subject", images.subject, -1),
            ("template", images.template, -1),
            ("media", images.media, -1),
            ("detector_score", images.detector_score, np.nan),
        ):
            create(f"images/{key}", (n,), arr.dtype, rc, fill)
            put(f"images/{key}", arr, chunk_rows)
        create("images/landmarks", (n, 5, 2), np.float32, (chunk_rows, 5, 2), np.nan)
        put("images/landmarks", np.asarray(images.landmarks, dtype=np.float32), chunk_rows)
        create("images/status", (n,), np.uint8, rc, STATUS_PENDING)
        create(DONE_KEY, (n_chunks,), np.uint8, (1,), 0)
        protocols = {}
        for name, proto in tables.protocols.items():
            m = len(proto)
            pc = max(1, min(PAIR_CHUNK_ROWS, m))
            create(f"protocols/{name}/pairs", (m, 2), np.int64, (pc, 2), -1)
            create(f"protocols/{name}/label", (m,), np.bool_, (pc,), False)
            creation_crc[f"protocols/{name}/pairs"] = creation_crc[f"protocols/{name}/label"] = []
            if m:
                put(f"protocols/{name}/pairs", np.asarray(proto.pairs, dtype=np.int64), pc)
                put(f"protocols/{name}/label", np.asarray(proto.label, dtype=np.bool_), pc)
            protocols[name] = {
                "level": proto.level,
                "n_pairs": m,
                "n_genuine": int(proto.label.sum()),
                "description": proto.description,
            }
        identification = {}
        for name, idp in tables.identification.items():
            counts = {}
            for set_name, ts in idp.sets().items():
                m = len(ts)
                for k in ("template", "subject"):
                    key = f"identification/{name}/{set_name}/{k}"
                    b.create_array(key, (m,), np.int64, (max(1, min(PAIR_CHUNK_ROWS, m)),), -1)
                    creation_crc[key] = []
                    if m:
                        put(key, getattr(ts, k), max(1, min(PAIR_CHUNK_ROWS, m)))
                counts[set_name] = m
            identification[name] = {
                "galleries": list(idp.galleries),
                "n_templates": counts,
                "description": idp.description,
            }
        for spec in models:
            for out in spec.outputs:
                shape = (n, *spec.row_shape(out))
                chunks = (chunk_rows, *spec.row_shape(out))
                create(f"models/{spec.name}/{out}", shape, spec.output_dtype(out), chunks, np.nan)
        columns = integrity.chunk_columns({s.name: s for s in models})
        create(CRC_KEY, (n_chunks, len(columns)), np.uint32, (1, len(columns)), 0)
        b.write_attrs(
            {
                "schema": SCHEMA_VERSION,
                "created_by": CREATED_BY,
                integrity.ATTR_ALGORITHM: integrity.ALGORITHM,
                integrity.ATTR_COLUMNS: columns,
                integrity.ATTR_CREATION: creation_crc,
                "dataset": tables.name,
                "manifest_digest": manifest_digest,
                "images_digest": images_digest(images),
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "package_versions": package_versions(),
                "chunk_rows": chunk_rows,
                "n_images": n,
                "n_chunks": n_chunks,
                "protocols": protocols,
                "identification": identification,
                "models": {s.name: s.to_attrs() for s in models},
                "extra": extra_attrs,
            }
        )
        b.flush()
    finally:
        b.close()


@dataclass
class StoreSummary:
    """Counts that `analyze info` prints."""

    n_images: int
    n_templates: int
    n_chunks: int
    chunks_done: int
    status_counts: dict[int, int]


class FeatureStore:
    """An open store. Read-only by default; `writer()` hands out chunk writers in 'r+' mode."""

    def __init__(self, backend: Backend, check: bool = True) -> None:
        self._b = backend
        self.path = backend.path
        self.format = backend.format
        self.attrs = backend.read_attrs()
        found = self.attrs.get("schema")
        if found is None:
            raise StoreError(
                f"{self.path} is not a feature store: its root has no 'schema' attribute "
                f"(attributes found: {sorted(self.attrs) or 'none'})"
            )
        if found not in KNOWN_SCHEMAS:
            raise StoreError(
                f"{self.path} has store schema {found!r}, which this version does not know "
                f"(it reads schema {', '.join(map(str, KNOWN_SCHEMAS))}); upgrade scaleface-toolkit"
            )
        integrity.validate_attrs(self.path, self.attrs, backend)
        self.chunk_rows = int(self.attrs["chunk_rows"])
        self.n_images = int(self.attrs["n_images"])
        self.n_chunks = int(self.attrs["n_chunks"])
        self.models = {name: ModelSpec.from_attrs(name, a) for name, a in self.attrs["models"].items()}
        self.protocols_info: dict[str, dict[str, Any]] = self.attrs.get("protocols", {})
        self.identification_info: dict[str, dict[str, Any]] = self.attrs.get("identification", {})
        """1:N protocols by name: galleries (in order), n_templates per set, description ({} in schema 1)."""
        self._protocols: dict[str, Protocol] = {}  # read once per read-only handle (`protocol`)
        if check:
            integrity.check_present(self)

    @classmethod
    def open(cls, path: str | Path, mode: str = "r", *, check: bool = True) -> FeatureStore:
        """Open an existing store; fails with a message naming what was found if it is not one.

        Every open validates the root attributes and (unless `check` is False, for verify and repair)
        that each done chunk's storage objects exist, so a damaged store never reads as complete.
        """
        path = Path(path)
        fmt = store_format(path)
        if not path.exists():
            raise StoreError(f"no store at {path}")
        if fmt == "zarr" and not (path / "zarr.json").exists():
            found = sorted(p.name for p in path.iterdir())[:8] if path.is_dir() else "a file"
            raise StoreError(f"{path} is not a Zarr v3 store: no zarr.json in it (found: {found})")
        backend = open_backend(path, mode)
        try:
            return cls(backend, check=check)
        except BaseException:
            backend.close()
            raise

    def close(self) -> None:
        self._b.close()

    def close_quietly(self) -> None:
        """Close, ignoring errors: for cleanup after a failure (a full disk can make the final flush fail)."""
        try:
            self._b.close()
        except Exception:
            pass

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        try:
            self.close()
        except Exception:
            if exc_type is None:  # do not hide the error that is already on its way out
                raise

    # ---- reading -------------------------------------------------------------------------
    @property
    def dataset(self) -> str:
        return self.attrs.get("dataset", "")

    def chunk_rows_range(self, chunk: int) -> tuple[int, int]:
        """The [start, stop) rows of `chunk`."""
        start = chunk * self.chunk_rows
        return start, min(start + self.chunk_rows, self.n_images)

    def images(self) -> ImageTable:
        """The whole images table (paths, subjects, templates, medias, scores, landmarks)."""
        a = self._b.array
        return ImageTable(
            path=np.asarray(a("images/path")[:], dtype=object),
            subject=a("images/subject")[:],
            template=a("images/template")[:],
            media=a("images/media")[:],
            detector_score=a("images/detector_score")[:],
            landmarks=a("images/landmarks")[:],
        )

    def image_column(self, key: str, rows: slice | np.ndarray | None = None) -> np.ndarray:
        """One images/ column (all rows, or `rows`)."""
        if key not in IMAGE_KEYS:
            raise StoreError(f"{self.path}: no images/{key}; columns: {', '.join(IMAGE_KEYS)}")
        return self._read_key(f"images/{key}", rows)

    def status(self) -> np.ndarray:
        return self.image_column("status")

    def chunk_done(self) -> np.ndarray:
        """Bool per chunk: written whole and marked done (a flag that cannot be decoded reads as not done)."""
        return integrity.read_done(self)[0]

    def row_done(self) -> np.ndarray:
        """Bool per image row: its chunk is done."""
        return np.repeat(self.chunk_done(), self.chunk_rows)[: self.n_images]

    def protocol(self, name: str) -> Protocol:
        """A protocol's pairs and labels, in memory (IJB-C: 15.7 M pairs, 250 MB of int64)."""
        if name not in self.protocols_info:
            raise StoreError(f"{self.path}: no protocol {name!r}; it has: {', '.join(self.protocols_info) or 'none'}")
        read_only = self._b.mode == "r"
        if read_only and name in self._protocols:
            return self._protocols[name]
        info = self.protocols_info[name]
        proto = Protocol(
            name=name,
            pairs=self._b.read_whole(f"protocols/{name}/pairs"),
            label=self._b.read_whole(f"protocols/{name}/label"),
            level=info["level"],
            description=info.get("description", ""),
        )
        if read_only:  # read once per read-only handle (the pairs read-only, shared by every caller)
            proto.pairs.setflags(write=False)
            proto.label.setflags(write=False)
            self._protocols[name] = proto
        return proto

    def identification(self, name: str) -> Identification:
        """An identification (1:N) protocol: its galleries' and probe set's template ids and subjects."""
        if name not in self.identification_info:
            have = ", ".join(self.identification_info) or "none"
            raise StoreError(f"{self.path}: no identification protocol {name!r}; it has: {have}")
        info = self.identification_info[name]

        def read_set(set_name: str) -> TemplateSet:
            base = f"identification/{name}/{set_name}"
            return TemplateSet(self._b.read_whole(f"{base}/template"), self._b.read_whole(f"{base}/subject"))

        return Identification(
            name,
            {g: read_set(g) for g in info["galleries"]},
            read_set(PROBE_SET),
            info.get("description", ""),
        )

    def model(self, name: str) -> ModelSpec:
        if name not in self.models:
            raise StoreError(f"{self.path}: no model {name!r}; it has: {', '.join(self.models) or 'none'}")
        return self.models[name]

    def _output_key(self, model: str, output: str) -> str:
        spec = self.model(model)
        if output not in spec.outputs:
            raise StoreError(
                f"{self.path}: model {model!r} has no output {output!r}; it has: {', '.join(spec.outputs)}"
            )
        return f"models/{model}/{output}"

    def read(self, model: str, output: str, rows: slice | np.ndarray | None = None) -> np.ndarray:
        """A model output (all rows, or `rows`) as numpy, in its stored dtype."""
        return self._read_key(self._output_key(model, output), rows)

    def _read_key(self, key: str, rows: slice | np.ndarray | None) -> np.ndarray:
        """Rows of one array: a plain row range through the backend's range read, anything else through the array."""
        if rows is None or (isinstance(rows, slice) and rows.step in (None, 1)):
            start, stop, _ = (rows or slice(None)).indices(self.n_images)
            return self._b.read_slice(key, start, stop)
        return np.asarray(self._b.array(key)[rows])

    def read_rows(self, model: str, output: str, rows: np.ndarray) -> np.ndarray:
        """Ascending rows of one output: one slice read when they are dense, else a point selection."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            spec = self.model(model)
            return np.empty((0, *spec.row_shape(output)), dtype=spec.output_dtype(output))
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        if hi - lo <= 2 * rows.size:
            return self.read(model, output, slice(lo, hi))[rows - lo]
        arr = self._b.array(self._output_key(model, output))
        return np.asarray(arr.oindex[rows] if hasattr(arr, "oindex") else arr[rows])

    def dask(self, model: str, output: str) -> Any:
        """A model output as a Dask array over the store's chunks (picklable for dask.distributed)."""
        return self._dask_key(self._output_key(model, output))

    def dask_images(self, key: str) -> Any:
        """An images/ column as a Dask array."""
        if key not in IMAGE_KEYS or key == "path":
            raise StoreError(f"{self.path}: images/{key} is not a numeric column")
        return self._dask_key(f"images/{key}")

    def _dask_key(self, key: str) -> Any:
        import dask.array as da

        if self.format == "zarr":
            return da.from_zarr(str(self.path), component=key)
        proxy = H5ArrayProxy(str(self.path), key)
        return da.from_array(proxy, chunks=proxy.chunks, lock=True, asarray=True)

    def summary(self) -> StoreSummary:
        status = self.status()
        templates = self.image_column("template")
        counts = np.bincount(status, minlength=5)
        return StoreSummary(
            n_images=self.n_images,
            n_templates=int(np.unique(templates[templates >= 0]).size),
            n_chunks=self.n_chunks,
            chunks_done=int(self.chunk_done().sum()),
            status_counts={i: int(c) for i, c in enumerate(counts) if c},
        )

    def check_compatible(self, images: ImageTable, models: list[ModelSpec]) -> None:
        """Refuse to resume or join a store made for other images or other models: one line naming every
        difference of the model fingerprints (seed, checkpoint, config, precision, ...). A store written
        before fingerprints were recorded is refused too, since its models cannot be checked."""
        problems = []
        if self.attrs.get("images_digest") != images_digest(images):
            problems.append(f"its images differ ({self.n_images} rows in the store, {len(images)} given)")
        want = {m.name: m for m in models}
        if set(want) != set(self.models):
            problems.append(f"its models are {sorted(self.models)}, this run has {sorted(want)}")
        else:
            legacy = [name for name in want if self.models[name].recorded_fingerprint is None]
            if legacy:
                raise StoreError(
                    f"{self.path} was written before model fingerprints were recorded (model "
                    + ", ".join(map(repr, legacy))
                    + "), so this run cannot check that its models are the store's; it is not resumed and "
                    "nothing was changed. Use --overwrite to start again, or another --out."
                )
            for name, spec in want.items():
                problems += fingerprint_differences(name, self.models[name].recorded_fingerprint or {}, spec)
        if problems:
            raise StoreError(
                f"{self.path} was made for a different run: "
                + "; ".join(problems)
                + ". Use --overwrite to start again, or another --out."
            )

    # ---- writing -------------------------------------------------------------------------
    @contextmanager
    def writer(self, chunks: Iterable[int] | None = None) -> Iterator[ChunkWriter]:
        """Lock `chunks` (default: all) for this process and yield a writer for them.

        A second process asking for any of the same chunks gets StoreLockedError; HDF5
        allows one writing process per file, Zarr one per chunk.
        """
        if self._b.mode == "r":
            raise StoreError(f"{self.path} is open read-only")
        chunk_list = sorted(set(range(self.n_chunks) if chunks is None else chunks))
        bad = [c for c in chunk_list if not 0 <= c < self.n_chunks]
        if bad:
            raise StoreError(f"{self.path}: chunks {bad[:5]} out of range 0..{self.n_chunks - 1}")
        paths = sorted({_chunk_lock_path(self.path, self.format, c) for c in chunk_list})
        what = "this HDF5 store (HDF5 allows one writer; use a .zarr store for shards)"
        locks = LockSet(
            [
                FileLock(p, f"chunk {p.stem.split('-')[-1]} of {self.path}" if self.format == "zarr" else what)
                for p in paths
            ]
        )
        locks.acquire()
        try:
            yield ChunkWriter(self, chunk_list)
        finally:
            locks.release()
            if self.format == "zarr":
                _remove_lock_dir(self.path)
        self.consolidate_if_complete()

    def consolidate_if_complete(self) -> bool:
        """Once every chunk is done, write Zarr consolidated metadata (the whole hierarchy's metadata in the
        root's zarr.json, what xarray and zarr read first), from the arrays' metadata as it is now, so it is
        rewritten after each --repair or resume that completes the store. Returns whether it wrote it."""
        if self.format != "zarr" or self._b.mode == "r" or not self._b.all_set(DONE_KEY):
            return False
        with _creation_lock(self.path):  # one writer of the root zarr.json at a time
            self._b.consolidate()
        return True


class ChunkWriter:
    """Writes whole chunks of rows for the chunks its store locked for it."""

    def __init__(self, store: FeatureStore, chunks: list[int]) -> None:
        self.store = store
        self.chunks = chunks
        self._allowed = set(chunks)

    def pending(self) -> list[int]:
        """This writer's chunks that are not done yet, in order."""
        done = self.store.chunk_done()
        return [c for c in self.chunks if not done[c]]

    def write_chunk(self, chunk: int, status: np.ndarray, outputs: dict[str, dict[str, np.ndarray]]) -> None:
        """Write every model output and the status of `chunk`'s rows, flush, record their checksums, flush,
        then mark the chunk done.

        Any failure while writing (no space, I/O error, a closed file, a library error) raises
        StoreWriteError naming the array and chunk; the chunk is then not marked done.
        """
        s = self.store
        if chunk not in self._allowed:
            raise StoreError(f"{s.path}: chunk {chunk} is not locked by this writer")
        start, stop = s.chunk_rows_range(chunk)
        n = stop - start
        status = np.asarray(status, dtype=np.uint8)
        if status.shape != (n,):
            raise StoreError(f"{s.path}: chunk {chunk} status has shape {status.shape}, expected ({n},)")
        missing = [f"{m}/{o}" for m, spec in s.models.items() for o in spec.outputs if o not in outputs.get(m, {})]
        if missing:
            raise StoreError(f"{s.path}: chunk {chunk} lacks outputs {missing}")
        values: dict[str, np.ndarray] = {}
        for model, outs in outputs.items():
            spec = s.model(model)
            for out, v in outs.items():
                want = (n, *spec.row_shape(out))
                v = np.asarray(v)
                if v.shape != want:
                    raise StoreError(
                        f"{s.path}: models/{model}/{out} chunk {chunk} has shape {v.shape}, expected {want}"
                    )
                values[s._output_key(model, out)] = np.ascontiguousarray(v.astype(spec.output_dtype(out)))
        values["images/status"] = status
        columns = integrity.chunk_columns(s.models)
        crc = np.array([integrity.crc32_of(values[k]) for k in columns], dtype=np.uint32)
        if s.format == "hdf5":
            self._check_space(chunk, sum(v.nbytes for v in values.values()) + crc.nbytes)
        for key in columns:
            self._put(chunk, key, slice(start, stop), values[key])
        self._put(chunk, "flush", None, None)
        self._put(chunk, CRC_KEY, chunk, crc)
        self._put(chunk, "flush", None, None)
        self._put(chunk, DONE_KEY, chunk, 1)
        self._put(chunk, "flush", None, None)

    def _put(self, chunk: int, key: str, where: Any, values: Any) -> None:
        """One write (or flush), with any failure turned into a StoreWriteError naming array and chunk."""
        s = self.store
        try:
            if key == "flush":
                s._b.flush()
            else:
                s._b.array(key)[where] = values
        except StoreError:
            raise
        except Exception as exc:  # OSError (ENOSPC, EIO), closed files, zarr/h5py/codec errors
            what = "flushing the store" if key == "flush" else f"writing {key}"
            detail = " ".join(str(exc).split())  # libhdf5 messages span lines
            raise StoreWriteError(
                f"{s.path}: {what} for chunk {chunk} failed: {type(exc).__name__}: {detail}",
                key=key,
                chunk=chunk,
                cause=exc,
            ) from exc

    def _check_space(self, chunk: int, nbytes: int) -> None:
        s = self.store
        need = nbytes + DISK_MARGIN_BYTES
        try:
            free = shutil.disk_usage(s.path.parent).free
        except OSError:
            return
        if free < need:
            import errno
            import os

            exc = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            raise StoreWriteError(
                f"{s.path}: writing chunk {chunk} refused before it began: {_size(free)} free on "
                f"{s.path.parent}, the chunk needs {_size(nbytes)} plus a {_size(DISK_MARGIN_BYTES)} margin ({exc})",
                key="(all arrays)",
                chunk=chunk,
                cause=exc,
            )

    def mark_not_done(self, chunks: Iterable[int]) -> None:
        """Clear the done marks (and checksums) of `chunks`, so that a run writes them again."""
        s = self.store
        for c in sorted(set(chunks)):
            if c not in self._allowed:
                raise StoreError(f"{s.path}: chunk {c} is not locked by this writer")
            self._put(c, DONE_KEY, c, 0)
            self._put(c, "flush", None, None)
            if s._b.has(CRC_KEY):
                self._put(c, CRC_KEY, c, np.zeros(len(integrity.chunk_columns(s.models)), dtype=np.uint32))
        self._put(-1, "flush", None, None)

    def rewrite_creation(self, tables: DatasetTables, damages: list[integrity.Damage]) -> list[str]:
        """Rewrite damaged creation-time chunks (images table, protocols) from the dataset they were made from.

        The caller checked the store was made for these tables (`check_compatible`); each rewritten
        chunk must match its recorded checksum again. Returns what was rewritten.
        """
        s = self.store
        images = tables.images
        source = {f"images/{k}": getattr(images, k) for k in integrity.CREATION_IMAGE_KEYS}
        source["images/path"] = np.asarray(images.path, dtype=str)
        for name, proto in tables.protocols.items():
            source[f"protocols/{name}/pairs"] = np.asarray(proto.pairs, dtype=np.int64)
            source[f"protocols/{name}/label"] = np.asarray(proto.label, dtype=np.bool_)
        for name, idp in tables.identification.items():
            for set_name, ts in idp.sets().items():
                source[f"identification/{name}/{set_name}/template"] = ts.template
                source[f"identification/{name}/{set_name}/subject"] = ts.subject
        recorded = s.attrs.get(integrity.ATTR_CREATION, {})
        done = []
        for d in damages:
            if not d.creation:
                continue
            if d.key not in source:
                raise StoreError(f"{s.path}: cannot rewrite {d.key}: the dataset has no such protocol")
            a, b = d.rows
            chunk_values = source[d.key][a:b]
            want = recorded.get(d.key, [None] * (d.chunk + 1))[d.chunk]
            if want is not None and integrity.crc32_of(chunk_values) != want:
                raise StoreError(
                    f"{s.path}: {d.key} chunk {d.chunk}: the dataset's rows {a}-{b - 1} differ from those the "
                    "store was made from; recreate it with --overwrite"
                )
            self._put(d.chunk, d.key, slice(a, b), chunk_values)
            done.append(d.format().split(":")[0])
        self._put(-1, "flush", None, None)
        return done


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


class H5ArrayProxy:
    """A picklable handle on one HDF5 dataset that opens the file lazily in each process."""

    def __init__(self, path: str, key: str) -> None:
        import h5py

        self.path = path
        self.key = key
        with h5py.File(path, "r") as f:
            ds = f[key]
            self.shape, self.dtype, self.chunks = ds.shape, ds.dtype, ds.chunks or ds.shape
        self.ndim = len(self.shape)
        self._ds: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_ds": None}

    def __getitem__(self, item: Any) -> np.ndarray:
        if self._ds is None:
            import h5py

            self._ds = h5py.File(self.path, "r")[self.key]
        return self._ds[item]
