"""`datasets import`: a feature store from a dataset's images table plus arrays the user already has.

Embeddings (N, D), optional flipped embeddings and any number of per-image quality scores or uncertainties
(OFIQ, CR-FIQA, SER-FIQ, ...) are read from npy/npz/Parquet/CSV/HDF5 files and matched to the dataset's
images by path. The store gets one `external` model per quality (embedding, norm, the quality; named by
the user), so every analyze command compares quality methods as it compares models. Dataset images a
features file lacks get status "missing"; an image a quality file lacks gets NaN there (analyze leaves it
out). The store is written through `featurestore.store` (chunks, checksums, done marks) and verified.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from facedata.errors import DataError
from featurestore.backend import read_root_attrs
from featurestore.errors import StoreError
from featurestore.schema import EXTERNAL_KINDS, MODEL_OUTPUTS, STATUS_MISSING, STATUS_OK, DatasetTables, ModelSpec
from featurestore.store import DEFAULT_CHUNK_ROWS, FeatureStore, create_store, is_our_store

__all__ = [
    "ARRAY_SUFFIXES",
    "ImportReport",
    "Loaded",
    "Match",
    "QualitySource",
    "import_store",
    "load_values",
    "match_rows",
    "parse_quality",
]

ARRAY_SUFFIXES = (".npy", ".npz", ".parquet", ".pq", ".csv", ".txt", ".h5", ".hdf5", ".zarr")
"""File formats read by suffix; `FILE#NAME` picks one array (npz, HDF5) or column (Parquet, CSV). A CSV's
delimiter is sniffed (OFIQ writes ';'); a .txt is `path value...` per line, no header (CR-FIQA's score
files); a feature store (.zarr, or an .h5 this tool wrote) is read as `STORE#MODEL[/OUTPUT]`."""

PATH_KEYS = ("path", "paths", "Filename", "filename")
"""The path column (tables) or array (npz, HDF5) looked for, in this order, when --key is not given."""

EMBEDDING_KEYS = ("embedding", "embeddings", "features")
SHOWN = 5
"""How many unmatched paths a report names, each way."""


@dataclass(frozen=True)
class QualitySource:
    """One `--quality NAME=FILE[#ARRAY]:confidence|uncertainty`."""

    name: str
    file: str
    kind: str


def parse_quality(text: str) -> QualitySource:
    """`NAME=FILE:KIND` -> QualitySource; ValueError saying what is wrong (the CLI turns it into --quality's)."""
    name, eq, rest = text.partition("=")
    file, colon, kind = rest.rpartition(":")
    if not eq or not name or not colon or not file:
        raise ValueError(f"{text!r} is not NAME=FILE:confidence|uncertainty")
    if kind not in EXTERNAL_KINDS:
        raise ValueError(f"{text!r}: {kind!r} must be one of {', '.join(EXTERNAL_KINDS)}")
    if name in MODEL_OUTPUTS or "/" in name or name.startswith("."):
        raise ValueError(f"{text!r}: {name!r} cannot name a quality (no '/', not one of {', '.join(MODEL_OUTPUTS)})")
    return QualitySource(name, file, kind)


@dataclass
class Loaded:
    """Values read from one file: `values` (rows, ...) and the row paths (None for a plain .npy)."""

    source: str
    values: np.ndarray
    paths: np.ndarray | None
    sha256: str
    array: str


def _split(spec: str) -> tuple[Path, str | None]:
    file, _, name = spec.partition("#")
    return Path(file), (name or None)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _pick(names: list[str], wanted: str | None, preferred: tuple[str, ...], key: str | None, source: str) -> str:
    """The array/column holding the values: the one asked for, a preferred name, or the only one left."""
    if wanted is not None:
        if wanted not in names:
            raise DataError(f"no array or column {wanted!r} (found: {', '.join(names) or 'none'})", path=source)
        return wanted
    rest = [n for n in names if n != key and n not in PATH_KEYS]
    for p in preferred:
        if p in rest:
            return p
    if len(rest) != 1:
        raise DataError(
            f"cannot tell which of {', '.join(rest) or 'no arrays'} holds the values; name it as FILE#NAME",
            path=source,
        )
    return rest[0]


def _path_key(names: list[str], key: str | None, source: str) -> str | None:
    if key is not None:
        if key not in names:
            raise DataError(f"no path column or array {key!r} (--key; found: {', '.join(names)})", path=source)
        return key
    return next((k for k in PATH_KEYS if k in names), None)


def _as_paths(values: Any) -> np.ndarray:
    return np.asarray(
        [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(values).ravel()], dtype=object
    )


def _from_store(path: Path, wanted: str | None, default_output: str | None) -> Loaded:
    """`STORE#MODEL[/OUTPUT]`: a model output of a feature store, NaN on rows not done or not ok."""
    model, _, output = (wanted or "").partition("/")
    output = output or default_output or ""
    if not model or not output:
        raise DataError("name the model output as STORE#MODEL/OUTPUT (embeddings: STORE#MODEL)", path=str(path))
    with FeatureStore.open(path) as st:
        values = st.read(model, output).astype(np.float64)
        ok = st.row_done() & (st.status() == STATUS_OK)
        values[~ok] = np.nan
        paths = _as_paths(st.image_column("path"))
    return Loaded(str(path), values, paths, "", f"{model}/{output}")


def _read_text(path: Path) -> pd.DataFrame:
    """`path value [value...]` per line, whitespace-separated, no header: column 'path', then '0', '1', ..."""
    df = pd.read_csv(path, sep=r"\s+", header=None, engine="python", dtype={0: str})
    return df.rename(columns={0: "path", **{i: str(i - 1) for i in range(1, df.shape[1])}})


def load_values(
    spec: str,
    *,
    key: str | None,
    preferred: tuple[str, ...] = (),
    store_output: str | None = None,
    matrix: bool = False,
) -> Loaded:
    """Read `FILE[#NAME]`: the values (the named array/column, a preferred name, or the only one besides
    the paths) and the row paths (`key`, default the first of PATH_KEYS there). A feature store is read as
    `STORE#MODEL/OUTPUT` (`store_output`: the OUTPUT when only the model is named). With `matrix`, a table's
    value columns (several, none of them named) are the dimensions of one row each."""
    path, wanted = _split(spec)
    source = str(path)
    suffix = path.suffix.lower()
    if suffix not in ARRAY_SUFFIXES:
        raise DataError(
            f"unknown file type {suffix or '(none)'!r}; use one of {', '.join(ARRAY_SUFFIXES)}", path=source
        )
    if not path.exists():
        raise DataError("file not found", path=source)
    if suffix == ".zarr" or (suffix in (".h5", ".hdf5") and is_our_store(path)):
        return _from_store(path, wanted, store_output)
    if not path.is_file():
        raise DataError("not a file", path=source)
    try:
        if suffix == ".npy":
            if wanted is not None:
                raise DataError("a .npy file holds one array: drop the #NAME", path=source)
            values, paths, array = np.load(path, allow_pickle=False), None, ""
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                names = list(z.files)
                pk = _path_key(names, key, source)
                array = _pick(names, wanted, preferred, pk, source)
                values, paths = z[array], (None if pk is None else _as_paths(z[pk]))
        elif suffix in (".h5", ".hdf5"):
            import h5py

            with h5py.File(path, "r") as f:
                names = [k for k in f.keys() if isinstance(f[k], h5py.Dataset)]
                pk = _path_key(names, key, source)
                array = _pick(names, wanted, preferred, pk, source)
                values, paths = f[array][()], (None if pk is None else _as_paths(f[pk][()]))
        else:
            if suffix in (".parquet", ".pq"):
                df = pd.read_parquet(path)
            elif suffix == ".txt":
                df = _read_text(path)
            else:
                df = pd.read_csv(path, sep=None, engine="python")
            names = [str(c) for c in df.columns]
            pk = _path_key(names, key, source)
            df.columns = names
            rest = [c for c in names if c != pk and c not in PATH_KEYS]
            by_dimension = matrix and not wanted and len(rest) > 1 and not any(p in rest for p in preferred)
            array = f"{len(rest)} columns" if by_dimension else _pick(names, wanted, preferred, pk, source)
            paths = None if pk is None else _as_paths(df[pk].astype(str).to_numpy())
            if by_dimension:  # one numeric column per dimension
                values = df[rest].to_numpy()
            else:
                col = df[array]
                values = np.stack(col.to_numpy()) if col.dtype == object else col.to_numpy()
    except DataError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"cannot read: {type(exc).__name__}: {' '.join(str(exc).split())}", path=source) from exc
    try:  # embeddings stay float32 (the store's dtype: IJB-C's 469k x 512 are 0.9 GiB), scores float64
        values = np.asarray(values, dtype=np.float32 if np.ndim(values) == 2 else np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{array or 'values'}: not numbers ({exc})", path=source) from exc
    if paths is not None and len(paths) != len(values):
        raise DataError(f"{len(paths)} paths but {len(values)} rows of {array or 'values'}", path=source)
    return Loaded(source, values, paths, _sha256(path), array)


def normalise_path(p: str, root: str = "") -> str:
    """A path as the dataset's images table writes it: '/' separators, no './', no surrounding spaces, and
    relative to the data root `root` when it is an absolute path under it."""
    p = p.strip().replace("\\", "/")
    if not p:
        return p
    p = posixpath.normpath(p)
    if root and p.startswith(root + "/"):
        p = p[len(root) + 1 :]
    return p


@dataclass
class Match:
    """Where each dataset row's values are in a file (-1: not there), and what did not match, both ways."""

    what: str
    source: str
    file_row: np.ndarray
    file_unmatched: list[str] = field(default_factory=list)
    n_file_rows: int = 0

    @property
    def n_matched(self) -> int:
        return int((self.file_row >= 0).sum())

    def lines(self, dataset_paths: np.ndarray, missing_means: str) -> list[str]:
        """The report: matched counts, then the unmatched paths of each side (count and the first few)."""
        out = [f"{self.what} {self.source}: {self.n_matched:,} of {len(self.file_row):,} dataset images matched"]
        lacking = np.flatnonzero(self.file_row < 0)
        if lacking.size:
            shown = ", ".join(str(dataset_paths[i]) for i in lacking[:SHOWN])
            more = ", ..." if lacking.size > SHOWN else ""
            out.append(f"  {lacking.size:,} dataset images have no row in it ({missing_means}): {shown}{more}")
        if self.file_unmatched:
            n = len(self.file_unmatched)
            shown = ", ".join(self.file_unmatched[:SHOWN]) + (", ..." if n > SHOWN else "")
            out.append(f"  {n:,} of its {self.n_file_rows:,} rows match no dataset image (ignored): {shown}")
        return out


def match_rows(what: str, loaded: Loaded, dataset_paths: np.ndarray, order: str, root: str = "") -> Match:
    """Map dataset rows to file rows by path (`order` 'path'), or take the file's row order as the dataset's
    (`order` 'dataset': same row count, and the paths, when the file has them, must agree)."""
    n = len(dataset_paths)
    if order == "dataset":
        if len(loaded.values) != n:
            raise DataError(
                f"--order dataset: {len(loaded.values):,} rows, the dataset has {n:,} images", path=loaded.source
            )
        if loaded.paths is not None:
            theirs = [normalise_path(p, root) for p in loaded.paths]
            bad = next((i for i, (a, b) in enumerate(zip(theirs, dataset_paths)) if a != b), None)
            if bad is not None:
                raise DataError(
                    f"--order dataset: row {bad} is {theirs[bad]!r}, "
                    f"the dataset's image {bad} is {dataset_paths[bad]!r}",
                    path=loaded.source,
                )
        return Match(what, loaded.source, np.arange(n), [], n)
    if loaded.paths is None:
        raise DataError(
            "has no paths to match rows by (a .npy file, or no 'path'/'paths' column or array; see --key); "
            "pass --order dataset if its rows are in the dataset's order",
            path=loaded.source,
        )
    theirs = pd.Index([normalise_path(p, root) for p in loaded.paths])
    dup = theirs.duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        raise DataError(f"path {theirs[i]!r} is given twice (row {i}); each image needs one row", path=loaded.source)
    file_row = theirs.get_indexer(pd.Index(list(dataset_paths)))
    used = np.zeros(len(theirs), dtype=bool)
    used[file_row[file_row >= 0]] = True
    return Match(what, loaded.source, file_row.astype(np.int64), [str(p) for p in theirs[~used]], len(theirs))


def _gather(values: np.ndarray, file_row: np.ndarray) -> np.ndarray:
    out = np.full((len(file_row), *values.shape[1:]), np.nan, dtype=values.dtype)
    ok = file_row >= 0
    out[ok] = values[file_row[ok]]
    return out


@dataclass
class ImportReport:
    """What `datasets import` did: the store, its models, the match report and the verification line."""

    out: Path
    models: list[str]
    lines: list[str]
    n_ok: int
    n_missing: int

    def format(self) -> str:
        return "\n".join(self.lines)


def _refuse_existing(out: Path, overwrite: bool) -> None:
    if not out.exists():
        return
    attrs = read_root_attrs(out)
    ours = attrs is not None and "imported" in (attrs.get("extra") or {})
    if not overwrite:
        raise StoreError(f"{out} already exists; pass --overwrite to replace a store `datasets import` made")
    if not ours:
        raise StoreError(
            f"{out} exists and was not made by `datasets import`; --overwrite replaces only such stores, "
            "so nothing was deleted. Choose another --out"
        )


def store_tables(path: str | Path) -> tuple[DatasetTables, str, dict[str, Any]]:
    """(images table with the verification and 1:N protocols, manifest digest, extra attributes) of an existing
    store, for importing scores of the images it was extracted from (`--dataset STORE`)."""
    with FeatureStore.open(path) as st:
        tables = DatasetTables(
            st.dataset or Path(path).stem,
            st.images(),
            {name: st.protocol(name) for name in st.protocols_info},
            identification={name: st.identification(name) for name in st.identification_info},
        )
        extra = st.attrs.get("extra") or {}
        keep = {k: extra[k] for k in ("data_root", "manifest") if k in extra}
        return tables, str(st.attrs.get("manifest_digest", "")), {**keep, "images_from": str(path)}


def model_names(qualities: list[QualitySource], model: str | None) -> list[str]:
    """One model per quality, named by it (`MODEL-NAME` with --model); without qualities one model
    (`--model`, default 'external')."""
    if not qualities:
        return [model or "external"]
    return [f"{model}-{q.name}" if model else q.name for q in qualities]


def import_store(
    tables: DatasetTables,
    out: str | Path,
    embeddings: str,
    *,
    flipped: str | None = None,
    qualities: list[QualitySource] | tuple[QualitySource, ...] = (),
    key: str | None = None,
    order: str = "path",
    model: str | None = None,
    manifest_digest: str = "",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    overwrite: bool = False,
    extra_attrs: dict[str, Any] | None = None,
    data_root: str | Path | None = None,
) -> ImportReport:
    """Build the store at `out` from `tables` and the user's files (see the module docstring); verify it.
    Absolute paths in the files under `data_root` are matched relative to it."""
    from featurestore.integrity import format_report, verify

    out = Path(out)
    qualities = list(qualities)
    names = [q.name for q in qualities]
    if len(set(names)) != len(names):
        raise ValueError(f"--quality names must be unique, got {names}")
    models = model_names(qualities, model)
    _refuse_existing(out, overwrite)
    root = posixpath.normpath(os.path.abspath(data_root)).replace("\\", "/") if data_root else ""
    dataset_paths = np.asarray([normalise_path(str(p)) for p in tables.images.path], dtype=object)
    n = len(dataset_paths)
    emb = load_values(embeddings, key=key, preferred=EMBEDDING_KEYS, store_output="embedding", matrix=True)
    if emb.values.ndim != 2 or emb.values.shape[1] < 1:
        raise DataError(f"embeddings must be (N, D), got shape {emb.values.shape}", path=emb.source)
    dim = emb.values.shape[1]
    lines: list[str] = []
    m_emb = match_rows("embeddings", emb, dataset_paths, order, root)
    features = _gather(emb.values, m_emb.file_row)
    lines += m_emb.lines(dataset_paths, 'status "missing"')
    present = m_emb.file_row >= 0
    flip_values = None
    sources: dict[str, Any] = {"embeddings": {"file": emb.source, "array": emb.array, "sha256": emb.sha256}}
    if flipped is not None:
        fl = load_values(flipped, key=key, preferred=EMBEDDING_KEYS, store_output="embedding_flip", matrix=True)
        if fl.values.shape[1:] != (dim,):
            raise DataError(f"flipped embeddings have shape {fl.values.shape}, embeddings (N, {dim})", path=fl.source)
        m_fl = match_rows("flipped embeddings", fl, dataset_paths, order, root)
        flip_values = _gather(fl.values, m_fl.file_row)
        lines += m_fl.lines(dataset_paths, 'status "missing"')
        present &= m_fl.file_row >= 0
        sources["flipped"] = {"file": fl.source, "array": fl.array, "sha256": fl.sha256}
    finite = np.isfinite(features).all(axis=1) & (
        np.ones(n, bool) if flip_values is None else np.isfinite(flip_values).all(axis=1)
    )
    if (present & ~finite).any():
        bad = np.flatnonzero(present & ~finite)
        lines.append(
            f'  {bad.size:,} matched images have non-finite features (status "missing"): '
            + ", ".join(str(dataset_paths[i]) for i in bad[:SHOWN])
        )
    present &= finite
    quality_values: dict[str, np.ndarray] = {}
    for q in qualities:
        loaded = load_values(q.file, key=key, preferred=(q.name,))
        if loaded.values.ndim == 2 and loaded.values.shape[1] == 1:
            loaded.values = loaded.values[:, 0]
        if loaded.values.ndim != 1:
            raise DataError(
                f"quality {q.name!r} must be one number per image, got shape {loaded.values.shape}", path=loaded.source
            )
        mq = match_rows(f"quality {q.name} ({q.kind})", loaded, dataset_paths, order, root)
        quality_values[q.name] = _gather(loaded.values, mq.file_row)
        lines += mq.lines(dataset_paths, "NaN: analyze leaves them out")
        bad = np.flatnonzero((mq.file_row >= 0) & ~np.isfinite(quality_values[q.name]))
        if bad.size:
            lines.append(
                f"  {bad.size:,} matched values are not finite (analyze leaves them out): "
                + ", ".join(str(dataset_paths[i]) for i in bad[:SHOWN])
            )
        sources.setdefault("quality", {})[q.name] = {
            "file": loaded.source,
            "array": loaded.array,
            "sha256": loaded.sha256,
            "kind": q.kind,
        }
    features[~present] = np.nan
    if flip_values is not None:
        flip_values[~present] = np.nan
    norm = np.linalg.norm(features, axis=1)
    status = np.where(present, STATUS_OK, STATUS_MISSING).astype(np.uint8)
    specs = []
    for name, q in zip(models, qualities or [None]):
        outputs = ("embedding", "norm") + ((q.name,) if q else ())
        specs.append(
            ModelSpec(
                name,
                "external",
                embedding_dim=dim,
                outputs=outputs,
                flip=flip_values is not None,
                checkpoint=f"{emb.source}#{emb.array}" if emb.array else emb.source,
                checkpoint_sha256=emb.sha256,
                config={"quality": {q.name: q.kind}} if q else {},
            )
        )
    per_model: dict[str, dict[str, np.ndarray]] = {}
    for spec, q in zip(specs, qualities or [None]):
        outs = {"embedding": features, "norm": norm}
        if flip_values is not None:
            outs["embedding_flip"] = flip_values
        if q is not None:
            outs[q.name] = quality_values[q.name]
        per_model[spec.name] = outs
    extra = {**(extra_attrs or {}), "imported": {**sources, "order": order, "key": key or ""}}
    store = create_store(
        out,
        tables,
        specs,
        manifest_digest=manifest_digest,
        chunk_rows=chunk_rows,
        overwrite=overwrite,
        extra_attrs=extra,
    )
    try:
        with store.writer() as w:
            for c in w.pending():
                a, b = store.chunk_rows_range(c)
                w.write_chunk(
                    c, status[a:b], {m: {o: v[a:b] for o, v in outs.items()} for m, outs in per_model.items()}
                )
    finally:
        store.close()
    with FeatureStore.open(out) as check:
        damages = verify(check)
        verified = format_report(check, damages)
    if damages:
        raise StoreError(f"{out}: the imported store does not verify:\n{verified}")
    n_ok = int(present.sum())
    lines.append(
        f"store {out}: {n:,} images ({n_ok:,} ok, {n - n_ok:,} missing); models "
        + ", ".join(
            f"{s.name} (external{', ' + q.kind + ' ' + q.name if q else ''})"
            for s, q in zip(specs, qualities or [None])
        )
    )
    lines.append(verified)
    return ImportReport(out, models, lines, n_ok, n - n_ok)
