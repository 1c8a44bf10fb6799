"""Store integrity: checksums that make 'done' mean 'verified', and the checks that use them.

Three levels, cheapest first:

* `validate_attrs`: the root attributes are present, of the right types and consistent with the
  arrays' shapes (metadata only), run by every open;
* `check_present`: every storage object a done chunk (and the creation-time arrays) needs exists
  (a directory listing for Zarr, HDF5's chunk index), run by every open, so a missing chunk is
  never read as its fill value;
* `verify`: reads everything back and recomputes the zlib.crc32 checksums recorded at write time
  (`analyze info --verify`, `extract --verify`, `extract --repair`).

Checksums are zlib.crc32 over the chunk's values as stored (C-order bytes of the stored dtype;
strings: UTF-8 joined by NUL), so they are the same in both formats and independent of compression.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import StoreError
from .schema import PROBE_SET, PROTOCOL_LEVELS, STATUS_OK, STATUS_PENDING, ModelSpec

if TYPE_CHECKING:
    from .backend import Backend
    from .store import FeatureStore

DONE_KEY = "progress/chunk_done"
"""One uint8 flag per chunk: set only after the chunk's data and checksums are flushed."""

ALGORITHM = "zlib.crc32"
CHECKSUM_KEY = "progress/chunk_crc32"
"""n_chunks x len(checksum_arrays) uint32: the checksum of each array's rows of a done chunk."""

ATTR_ALGORITHM = "checksum_algorithm"
ATTR_COLUMNS = "checksum_arrays"
"""Root attribute: the arrays whose checksums `progress/chunk_crc32` holds, in column order."""

ATTR_CREATION = "creation_crc32"
"""Root attribute: {array: [checksum per storage chunk]} for the arrays written at creation."""

CREATION_IMAGE_KEYS = ("path", "subject", "template", "media", "detector_score", "landmarks")

# Stores made before checksums: zarr skipped chunks equal to the fill value. Where the fill value is
# a legal value (-1 subject/template/media, NaN score or landmarks, False label), a missing chunk of a
# creation-time array is what an all-fill chunk looked like, so it is accepted there.
_LEGACY_FILL_IS_DATA = {
    "images/subject",
    "images/template",
    "images/media",
    "images/detector_score",
    "images/landmarks",
}

HOW_TO_FIX = "list the damage with `analyze info --cache {path} --verify`; redo it with `extract ... --repair`"


def crc32_of(values: Any) -> int:
    """zlib.crc32 of an array's values as stored (strings: UTF-8, NUL-separated)."""
    a = np.asarray(values)
    if a.dtype.kind in "OUST":
        data = "\0".join(str(v) for v in a.ravel()).encode("utf-8")
    else:
        data = np.ascontiguousarray(a).tobytes()
    return zlib.crc32(data) & 0xFFFFFFFF


def chunk_columns(models: dict[str, ModelSpec]) -> list[str]:
    """The arrays a chunk writer writes, in the column order of `progress/chunk_crc32`."""
    return [f"models/{name}/{out}" for name, spec in models.items() for out in spec.outputs] + ["images/status"]


def creation_keys(protocol_names: list[str], identification: dict[str, Any] | None = None) -> list[str]:
    """The arrays written once, when the store is created (`identification`: the root attribute of that
    name, whose galleries plus the probe set each have a template and a subject array)."""
    keys = [f"images/{k}" for k in CREATION_IMAGE_KEYS]
    for name in protocol_names:
        keys += [f"protocols/{name}/pairs", f"protocols/{name}/label"]
    for name, info in (identification or {}).items():
        for set_name in [*info["galleries"], PROBE_SET]:
            keys += [f"identification/{name}/{set_name}/template", f"identification/{name}/{set_name}/subject"]
    return keys


def store_creation_keys(store: FeatureStore) -> list[str]:
    """`creation_keys` of an open store."""
    return creation_keys(list(store.protocols_info), store.identification_info)


def chunk_crcs(values: Any, rows_per_chunk: int) -> list[int]:
    """Checksums of `values` cut into storage chunks of `rows_per_chunk` rows."""
    n = len(values)
    return [crc32_of(values[i : i + rows_per_chunk]) for i in range(0, n, rows_per_chunk)]


@dataclass
class Damage:
    """One damaged storage object: the array, the chunk (and its rows), and why."""

    key: str
    chunk: int
    rows: tuple[int, int]
    why: str

    @property
    def creation(self) -> bool:
        """Written at creation (images table, protocols), so repaired from the dataset, not by a rerun."""
        keys = self.key
        return keys.startswith(("protocols/", "identification/")) or keys[len("images/") :] in CREATION_IMAGE_KEYS

    def format(self) -> str:
        return f"{self.key} chunk {self.chunk} (rows {self.rows[0]}-{self.rows[1] - 1}): {self.why}"


# ---- root attributes ------------------------------------------------------------------------------


def _int_attr(path: Any, attrs: dict[str, Any], name: str, minimum: int) -> int:
    if name not in attrs:
        raise StoreError(f"{path}: root attribute {name!r} is missing; the store's attributes were edited or lost")
    v = attrs[name]
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise StoreError(f"{path}: root attribute {name!r} is {v!r}, expected an integer >= {minimum}")
    return v


def validate_attrs(path: Any, attrs: dict[str, Any], backend: Backend) -> None:
    """Refuse, naming the attribute, root attributes that are missing, mistyped or contradict the arrays."""
    chunk_rows = _int_attr(path, attrs, "chunk_rows", 1)
    n_images = _int_attr(path, attrs, "n_images", 1)
    n_chunks = _int_attr(path, attrs, "n_chunks", 1)
    if n_chunks != -(-n_images // chunk_rows):
        raise StoreError(
            f"{path}: root attribute 'n_chunks' is {n_chunks}, but n_images {n_images} in chunks of "
            f"chunk_rows {chunk_rows} make {-(-n_images // chunk_rows)}"
        )
    for name in ("models", "protocols"):
        if not isinstance(attrs.get(name), dict):
            what = "missing" if name not in attrs else f"{type(attrs[name]).__name__}, expected a mapping"
            raise StoreError(f"{path}: root attribute {name!r} is {what}")
    for name, a in attrs["models"].items():
        try:
            spec = ModelSpec.from_attrs(name, a)
            if isinstance(spec.embedding_dim, bool) or not isinstance(spec.embedding_dim, int):
                raise ValueError(f"embedding_dim {spec.embedding_dim!r} is not an integer")
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise StoreError(f"{path}: root attribute 'models.{name}' is malformed: {exc}") from None
    for name, info in attrs["protocols"].items():
        ok = (
            isinstance(info, dict)
            and info.get("level") in PROTOCOL_LEVELS
            and all(isinstance(info.get(k), int) and info[k] >= 0 for k in ("n_pairs", "n_genuine"))
        )
        if not ok:
            raise StoreError(
                f"{path}: root attribute 'protocols.{name}' is malformed ({info!r}); expected level in "
                f"{PROTOCOL_LEVELS} and integer n_pairs, n_genuine"
            )

    _validate_identification(path, attrs, backend)

    def shape_of(key: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return backend.shape_chunks(key)

    row_chunk = {chunk_rows, min(chunk_rows, n_images)}  # HDF5 chunks may not exceed the shape
    for key in [f"images/{k}" for k in (*CREATION_IMAGE_KEYS, "status")]:
        shape, chunks = shape_of(key)
        if shape[0] != n_images:
            raise StoreError(f"{path}: root attribute 'n_images' is {n_images}, but {key} has {shape[0]} rows")
        if chunks[0] not in row_chunk:
            raise StoreError(
                f"{path}: root attribute 'chunk_rows' is {chunk_rows}, but {key} is stored in chunks of {chunks[0]}"
            )
    for name, a in attrs["models"].items():
        spec = ModelSpec.from_attrs(name, a)
        for out in spec.outputs:
            key = f"models/{name}/{out}"
            shape, _ = shape_of(key)
            want = (n_images, *spec.row_shape(out))
            if shape != want:
                raise StoreError(f"{path}: root attribute 'models.{name}' says {key} is {want}, it is {shape}")
    if shape_of(DONE_KEY)[0] != (n_chunks,):
        raise StoreError(f"{path}: root attribute 'n_chunks' is {n_chunks}, {DONE_KEY} has {shape_of(DONE_KEY)[0]}")
    for name, info in attrs["protocols"].items():
        for k in ("pairs", "label"):
            shape, _ = shape_of(f"protocols/{name}/{k}")
            if shape[0] != info["n_pairs"]:
                raise StoreError(
                    f"{path}: root attribute 'protocols.{name}' has n_pairs {info['n_pairs']}, "
                    f"protocols/{name}/{k} has {shape[0]} rows"
                )
    if ATTR_COLUMNS in attrs:
        cols = attrs[ATTR_COLUMNS]
        want = chunk_columns({n: ModelSpec.from_attrs(n, a) for n, a in attrs["models"].items()})
        if cols != want:
            raise StoreError(f"{path}: root attribute {ATTR_COLUMNS!r} is {cols!r}; the store's arrays are {want}")
        if shape_of(CHECKSUM_KEY)[0] != (n_chunks, len(want)):
            raise StoreError(
                f"{path}: {CHECKSUM_KEY} has shape {shape_of(CHECKSUM_KEY)[0]}, expected {(n_chunks, len(want))}"
            )
        creation = attrs.get(ATTR_CREATION)
        keys = creation_keys(list(attrs["protocols"]), attrs.get("identification"))
        if not isinstance(creation, dict) or sorted(creation) != sorted(keys):
            raise StoreError(f"{path}: root attribute {ATTR_CREATION!r} is missing or lists other arrays than {keys}")
        for key in keys:
            shape, chunks = shape_of(key)
            n = -(-shape[0] // chunks[0]) if shape[0] else 0
            v = creation[key]
            if not isinstance(v, list) or len(v) != n or not all(isinstance(x, int) for x in v):
                raise StoreError(f"{path}: root attribute '{ATTR_CREATION}.{key}' is not a list of {n} checksums")


def _validate_identification(path: Any, attrs: dict[str, Any], backend: Backend) -> None:
    """The `identification` root attribute (schema 2; absent in schema 1): per protocol a list of gallery
    names and a template count per set that matches its arrays."""
    ident = attrs.get("identification", {})
    if not isinstance(ident, dict):
        raise StoreError(f"{path}: root attribute 'identification' is {type(ident).__name__}, expected a mapping")
    for name, info in ident.items():
        galleries = info.get("galleries") if isinstance(info, dict) else None
        counts = info.get("n_templates") if isinstance(info, dict) else None
        ok = (
            isinstance(galleries, list)
            and len(galleries) > 0
            and all(isinstance(g, str) and g and g != PROBE_SET for g in galleries)
            and isinstance(counts, dict)
            and sorted(counts) == sorted([*galleries, PROBE_SET])
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts.values())
        )
        if not ok:
            raise StoreError(
                f"{path}: root attribute 'identification.{name}' is malformed ({info!r}); expected a list of "
                f"gallery names and integer n_templates for each and for {PROBE_SET!r}"
            )
        for set_name, n in counts.items():
            for k in ("template", "subject"):
                key = f"identification/{name}/{set_name}/{k}"
                if not backend.has(key):
                    raise StoreError(f"{path}: root attribute 'identification.{name}' names {key}, which is missing")
                rows = backend.shape_chunks(key)[0][0]
                if rows != n:
                    raise StoreError(
                        f"{path}: root attribute 'identification.{name}.n_templates.{set_name}' is {n}, "
                        f"{key} has {rows} rows"
                    )


# ---- cheap existence check ------------------------------------------------------------------------


def has_checksums(store: FeatureStore) -> bool:
    """Made by a version that records checksums (and writes every chunk, even all-fill ones)."""
    return ATTR_COLUMNS in store.attrs


def _rows(store: FeatureStore, key: str, chunk: int) -> tuple[int, int]:
    shape, chunks = store._b.shape_chunks(key)
    start = chunk * chunks[0]
    return start, min(start + chunks[0], shape[0])


def _n_storage_chunks(store: FeatureStore, key: str) -> int:
    shape, chunks = store._b.shape_chunks(key)
    return -(-shape[0] // chunks[0]) if shape[0] else 0


def missing_objects(store: FeatureStore) -> list[Damage]:
    """Storage objects that should exist and do not, from a listing (no data is read)."""
    b = store._b
    damages: list[Damage] = []
    new = has_checksums(store)
    for key in store_creation_keys(store):
        if not new and (key in _LEGACY_FILL_IS_DATA or key.endswith("/label")):
            continue
        present = b.stored_row_chunks(key)
        for c in range(_n_storage_chunks(store, key)):
            if c not in present:
                damages.append(Damage(key, c, _rows(store, key, c), "missing storage object"))
    done_flags, unreadable = read_done(store)
    damages += unreadable
    done = np.flatnonzero(done_flags)
    if done.size == 0:
        return damages
    columns = chunk_columns(store.models) + ([CHECKSUM_KEY] if new else [])
    status_present = b.stored_row_chunks("images/status")
    for key in columns:
        present = status_present if key == "images/status" else b.stored_row_chunks(key)
        lost = [int(c) for c in done if int(c) not in present]
        if not new and key.startswith("models/"):
            # old zarr skipped all-NaN chunks: fine where every row of the chunk failed
            lost = [c for c in lost if c not in status_present or not _all_failed(store, c)]
        damages += [Damage(key, c, store.chunk_rows_range(c), "missing storage object") for c in lost]
    return damages


def read_done(store: FeatureStore) -> tuple[np.ndarray, list[Damage]]:
    """The done flags, with a flag whose storage object cannot be decoded read as not done (and listed)."""
    arr = store._b.array(DONE_KEY)
    try:
        return np.asarray(store._b.read_whole(DONE_KEY), dtype=bool), []
    except Exception:  # one damaged flag object: find which, keep the others
        flags = np.zeros(store.n_chunks, dtype=bool)
        damages = []
        for c in range(store.n_chunks):
            try:
                flags[c] = bool(np.asarray(arr[c : c + 1])[0])
            except Exception as exc:
                why = f"unreadable ({type(exc).__name__}: {' '.join(str(exc).split())})"
                damages.append(Damage(DONE_KEY, c, store.chunk_rows_range(c), why))
        return flags, damages


def _all_failed(store: FeatureStore, chunk: int) -> bool:
    start, stop = store.chunk_rows_range(chunk)
    st = np.asarray(store._b.array("images/status")[start:stop])
    return bool(((st != STATUS_OK) & (st != STATUS_PENDING)).all())


def check_present(store: FeatureStore) -> None:
    """Refuse a store whose done chunks (or creation-time arrays) lack a storage object, or whose done
    flags cannot be decoded, naming the first."""
    damages = missing_objects(store)
    if damages:
        more = f" (and {len(damages) - 1} more)" if len(damages) > 1 else ""
        raise StoreError(
            f"{store.path}: {damages[0].format()}{more}; the store is damaged and will not be read as complete: "
            + HOW_TO_FIX.format(path=store.path)
        )


# ---- full verification ----------------------------------------------------------------------------


def _read(store: FeatureStore, key: str, rows: tuple[int, int]) -> np.ndarray:
    return np.asarray(store._b.array(key)[rows[0] : rows[1]])


def _compare(store: FeatureStore, key: str, chunk: int, rows: tuple[int, int], want: int | None) -> Damage | None:
    try:
        values = _read(store, key, rows)
    except Exception as exc:  # a damaged object fails to decode in many ways (codec, zlib, h5py, OS)
        return Damage(key, chunk, rows, f"unreadable ({type(exc).__name__}: {' '.join(str(exc).split())})")
    if want is None:
        return None
    got = crc32_of(values)
    if got != want:
        return Damage(key, chunk, rows, f"checksum mismatch (recorded {want:08x}, computed {got:08x})")
    return None


def verify(store: FeatureStore) -> list[Damage]:
    """Read back every done chunk and every creation-time array and compare them with their checksums.

    Stores made before checksums are checked for presence and readability only.
    """
    damages = missing_objects(store)
    missing = {(d.key, d.chunk) for d in damages}
    new = has_checksums(store)
    creation = store.attrs.get(ATTR_CREATION, {}) if new else {}
    for key in store_creation_keys(store):
        for c in range(_n_storage_chunks(store, key)):
            if (key, c) in missing:
                continue
            d = _compare(store, key, c, _rows(store, key, c), creation[key][c] if new else None)
            if d:
                damages.append(d)
    done = np.flatnonzero(read_done(store)[0])
    columns = chunk_columns(store.models)
    for c in map(int, done):
        rows = store.chunk_rows_range(c)
        recorded: np.ndarray | None = None
        if new and (CHECKSUM_KEY, c) not in missing:
            try:
                recorded = np.asarray(store._b.array(CHECKSUM_KEY)[c], dtype=np.uint32)
            except Exception as exc:
                why = f"unreadable ({type(exc).__name__}: {' '.join(str(exc).split())})"
                damages.append(Damage(CHECKSUM_KEY, c, rows, why))
        for j, key in enumerate(columns):
            if (key, c) in missing or (new and recorded is None):
                continue
            d = _compare(store, key, c, rows, int(recorded[j]) if recorded is not None else None)
            if d:
                damages.append(d)
            elif key == "images/status":
                st = _read(store, key, rows)
                if (st == STATUS_PENDING).any():
                    damages.append(Damage(key, c, rows, "marked done, but rows have status 'not yet done'"))
    return damages + verify_bottleneck(store)


BOTTLENECK_KEY = "bottleneck"
"""The optional training array (featurestore/bottleneck.py) and the root attribute describing it."""


def verify_bottleneck(store: FeatureStore) -> list[Damage]:
    """Damage records for the optional bottleneck array's storage chunks that do not match their checksums."""
    info = store.attrs.get(BOTTLENECK_KEY)
    if info is None:
        return []
    chunk, n = int(info["chunk_rows"]), len(info["rows"])
    damages = []
    for c, want in enumerate(info["crc32"]):
        rows = (c * chunk, min(n, (c + 1) * chunk))
        d = _compare(store, BOTTLENECK_KEY, c, rows, int(want))
        if d:
            damages.append(d)
    return damages


def damaged_chunks(store: FeatureStore, damages: list[Damage]) -> list[int]:
    """The done chunks a rerun must redo: those with a damaged model output, status or checksum object."""
    # the optional bottleneck array is redone by `extract --bottleneck`, not by redoing image chunks
    return sorted({d.chunk for d in damages if not d.creation and d.key != BOTTLENECK_KEY})


def format_report(store: FeatureStore, damages: list[Damage]) -> str:
    """One line per damaged object, then a summary line saying what to do."""
    lines = [f"damaged  {d.format()}" for d in damages]
    n_done = int(read_done(store)[0].sum())
    how = "zlib.crc32 checksums" if has_checksums(store) else "presence and readability (no checksums recorded)"
    if damages:
        chunks = damaged_chunks(store, damages)
        lines.append(
            f"verify: {len(damages)} damaged storage objects"
            + (f"; done chunks to redo: {', '.join(map(str, chunks))}" if chunks else "")
            + f". Repair: extract ... --out {store.path} --repair (the same model options as the run that made it)"
        )
    else:
        lines.append(f"verify: {n_done} done chunks and the creation-time arrays are intact ({how})")
    return "\n".join(lines)
