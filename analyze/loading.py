"""Read what an analysis needs from a store: valid rows, per-image features and uncertainties, and
per-template fusions computed block by block (whole templates per block) as Dask tasks.

Nothing here holds per-pair features: image features are read once per row, template features
once per template, and pair scores are gathered from those in blocks (analyze.scores).
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
import numpy as np

from analyze import fusion_cache
from analyze.bootstrap import PairUnits, pair_units
from analyze.fusion import FUSIONS, FusedTemplates, fuse
from analyze.policy import ImageValues, policy_for
from analyze.timing import stage, timed
from featurestore.errors import StoreError
from featurestore.schema import STATUS_OK, ModelSpec, Protocol
from featurestore.store import FeatureStore

FUSION_BLOCK_IMAGES = 16384
"""Images per fusion task: 32 MiB of float32 512-d embeddings (the fusion kernels read them as stored, without
float64 copies); 118k images make 8 tasks, enough to keep two threads busy."""


def uncertainty_source(spec: ModelSpec) -> tuple[str, str]:
    """(store output, direction) of a model's per-image value (its family policy, analyze.policy)."""
    policy = policy_for(spec)
    return policy.value_output, policy.value_kind


@dataclass
class ValidRows:
    """Which image rows an analysis may use, and why the others were left out."""

    mask: np.ndarray
    n_not_done: int = 0
    n_failed: int = 0
    n_nan: dict[str, int] = field(default_factory=dict)


@timed("read")
def valid_rows(store: FeatureStore, models: list[str], partial: bool) -> ValidRows:
    """Rows that are done, ok, and with a finite norm (and scale, or an external quality) in every model;
    refuse an incomplete store unless `partial`, naming how much is missing. The norm is finite exactly when
    the whole embedding is, so checking it costs N reads instead of N x D."""
    done = store.row_done()
    n_not_done = int((~done).sum())
    if n_not_done and not partial:
        raise StoreError(
            f"{store.path}: extraction is incomplete ({n_not_done:,} of {store.n_images:,} images not done); "
            "finish it with `extract` (it resumes), or pass --partial to analyse the finished rows only"
        )
    ok = store.status() == STATUS_OK
    mask = done & ok
    out = ValidRows(mask=mask, n_not_done=n_not_done, n_failed=int((done & ~ok).sum()))
    for m in models:
        spec = store.model(m)
        for output in [o for o in ("norm", "scale") if o in spec.outputs] + list(spec.external_quality()):
            bad = mask & ~np.isfinite(store.read(m, output))
            if bad.any():
                out.n_nan[f"{m}/{output}"] = int(bad.sum())
                mask &= ~bad
    out.mask = mask
    return out


def template_blocks(template: np.ndarray, rows: np.ndarray, block_images: int) -> list[np.ndarray]:
    """Split `rows` into ascending row sets of whole templates, about `block_images` images each."""
    order = rows[np.argsort(template[rows], kind="stable")]
    t_sorted = template[order]
    starts = np.flatnonzero(np.r_[True, t_sorted[1:] != t_sorted[:-1]])
    out, a = [], 0
    cut_points = starts[1:]
    while a < len(order):
        target = a + block_images
        k = np.searchsorted(cut_points, target, side="left")
        b = int(cut_points[k]) if k < len(cut_points) else len(order)
        if b <= a:
            b = len(order)
        out.append(np.sort(order[a:b]))
        a = b
    return out


def read_fusion_inputs(
    store: FeatureStore, model: str, fusion: str, rows: np.ndarray, options: dict[str, Any] | None = None
) -> tuple[tuple[np.ndarray, np.ndarray], dict[str, Any]]:
    """What `fuse(fusion, ...)` needs for ascending `rows`: ((features, template ids), keyword arguments).

    A block of consecutive rows (the usual case: a template's images are stored together) is read as one slice,
    without read_rows' gathered copy of it.
    """
    options = options or {}
    spec = store.model(model)
    policy = policy_for(spec)
    fusion_spec = FUSIONS.get(fusion)
    dense = rows.size > 0 and int(rows[-1]) - int(rows[0]) + 1 == rows.size
    sel = slice(int(rows[0]), int(rows[-1]) + 1) if dense else rows

    def read(output: str) -> np.ndarray:
        return store.read(model, output, sel) if dense else store.read_rows(model, output, rows)

    feats = read("embedding")
    values = policy.stored(read(policy.value_output)).for_fusion(fusion_spec)
    kwargs: dict[str, Any] = {"uncertainty": values.values}
    if "media" in fusion_spec.inputs:
        kwargs.update(
            media=store.image_column("media", sel),
            detector_score=store.image_column("detector_score", sel),
            keep_norm=options.get("keep_norm", True),
            use_detector_score=options.get("use_detector_score", True),
            add_flip=options.get("add_flip", True) and "embedding_flip" in spec.outputs,
        )
        if kwargs["add_flip"]:
            kwargs["features_flip"] = read("embedding_flip")
    return (feats, store.image_column("template", sel)), kwargs


_OPEN_HERE: dict[str, FeatureStore] = {}
"""Stores a fusion in this process has open, by path: its tasks on local threads read through the caller's handle;
a task in another process (dask.distributed) finds none and opens the store itself."""


def _fuse_block(path: str, model: str, fusion: str, rows: np.ndarray, options: dict[str, Any]) -> FusedTemplates:
    shared = _OPEN_HERE.get(path)
    if shared is not None:
        (feats, template), kwargs = read_fusion_inputs(shared, model, fusion, rows, options)
        return fuse(fusion, feats, template, **kwargs)
    # the caller's open already checked every done chunk's storage objects: a task need not list them again
    with FeatureStore.open(path, check=False) as store:
        (feats, template), kwargs = read_fusion_inputs(store, model, fusion, rows, options)
        return fuse(fusion, feats, template, **kwargs)


FUSED_CACHE_ENTRIES = 4
FUSED_CACHE_BYTES = 256 << 20
"""Bounds of the in-process cache of fused templates (`fuse_templates`): at most this many entries and bytes (IJB-C:
PFE fusion 190 MB, a mean of 512-d embeddings 95 MB); the least recently used entry goes first. Kept small: a default
`analyze reject` gains nothing from it (each (model, fusion) is fused once there) and must stay within 3 GiB."""

_FUSED: OrderedDict[tuple, FusedTemplates] = OrderedDict()


def _fused_bytes(f: FusedTemplates) -> int:
    return sum(a.nbytes for a in (f.ids, f.features, f.sizes, f.uncertainty) if a is not None)


def _fused_key(store: FeatureStore, model: str, fusion: str, rows: np.ndarray, options: dict, block: int) -> tuple:
    """What a fusion depends on: the store (its resolved path and content digest: done marks, checksums, model
    fingerprints), model, fusion, the images fused (a digest of their rows), the fusion options and the block size
    (the tasks' split)."""
    from analyze.outputs import store_digest

    rows_digest = hashlib.sha256(np.ascontiguousarray(rows, dtype=np.int64).tobytes()).hexdigest()
    opts = json.dumps(options, sort_keys=True, default=repr)
    return (str(Path(store.path).resolve()), store_digest(store), model, fusion, rows_digest, opts, block)


def clear_fused_cache() -> None:
    """Forget every cached fusion (tests; or to give the memory back)."""
    _FUSED.clear()


@timed("fuse")
def fuse_templates(
    store: FeatureStore,
    model: str,
    fusion: str,
    valid: np.ndarray,
    *,
    options: dict[str, Any] | None = None,
    block_images: int = FUSION_BLOCK_IMAGES,
) -> FusedTemplates:
    """Fuse the valid images of every template, as one Dask task per block of whole templates
    (run by the active Dask scheduler: local threads, or a dask.distributed client).

    Fused once per (store contents, model, fusion, images, options) in a process: reject, fusion, roc and identify
    steps of one pipeline share it (an LRU cache bounded by FUSED_CACHE_ENTRIES and FUSED_CACHE_BYTES). Cached arrays
    are shared and read-only."""
    template = store.image_column("template")
    rows = np.flatnonzero(valid & (template >= 0))
    if rows.size == 0:
        raise StoreError(f"{store.path}: no valid image belongs to a template (model {model!r})")
    used = (options or {}) if "media" in FUSIONS.get(fusion).inputs else {}  # only media reads its options
    key = _fused_key(store, model, fusion, rows, used, block_images)
    if key in _FUSED:
        _FUSED.move_to_end(key)
        return _FUSED[key]
    disk_key = key[1:]  # the store's contents, not where it lies: a moved store keeps its cache
    folder = fusion_cache.cache_dir(store.path)
    fused = fusion_cache.load(folder, disk_key)
    written = fused is None
    if written:
        fused = _fuse_all(store, model, fusion, template, rows, options, block_images)
    for a in (fused.ids, fused.features, fused.sizes, fused.uncertainty):
        if a is not None:  # shared with later callers and the cache writer: an in-place change would corrupt them
            a.setflags(write=False)
    if written:
        fusion_cache.save_later(folder, disk_key, fused)
    if _fused_bytes(fused) <= FUSED_CACHE_BYTES:
        _FUSED[key] = fused
        while len(_FUSED) > FUSED_CACHE_ENTRIES or sum(_fused_bytes(f) for f in _FUSED.values()) > FUSED_CACHE_BYTES:
            _FUSED.popitem(last=False)
    return fused


def _fuse_all(
    store: FeatureStore,
    model: str,
    fusion: str,
    template: np.ndarray,
    rows: np.ndarray,
    options: dict[str, Any] | None,
    block_images: int,
) -> FusedTemplates:
    """The fusion itself: one Dask task per block of whole templates, the parts concatenated in template order."""
    path = str(store.path)
    tasks = [
        dask.delayed(_fuse_block)(path, model, fusion, block, options or {})
        for block in template_blocks(template, rows, block_images)
    ]
    mine = _OPEN_HERE.setdefault(path, store) is store
    try:
        parts = dask.compute(*tasks)
    finally:
        if mine:
            _OPEN_HERE.pop(path, None)
    return FusedTemplates(
        ids=np.concatenate([p.ids for p in parts]),
        features=np.concatenate([p.features for p in parts]),
        uncertainty=None if parts[0].uncertainty is None else np.concatenate([p.uncertainty for p in parts]),
        sizes=np.concatenate([p.sizes for p in parts]),
    )


# ---- pair assembly: what one (model, level, fusion) scores ------------------------------------------------


@dataclass
class PairSet:
    """What one (model, level, fusion) scores: row features and values, pair rows into them, labels."""

    model: str
    level: str
    fusion: str
    features: np.ndarray
    values: np.ndarray
    mode: str
    i: np.ndarray
    j: np.ndarray
    labels: np.ndarray
    n_pairs_total: int
    n_pairs_dropped: int
    source: str = ""
    row_ids: np.ndarray | None = None  # per feature row: its image row (image level) or template id

    def units(self, store: FeatureStore) -> PairUnits:
        """Each scored pair's two bootstrap resampling units (analyze.bootstrap.pair_units): the subjects of its
        images or templates where known, else the image rows or template ids."""
        if self.row_ids is None:
            raise ValueError("this PairSet has no row ids (made by build_pair_set)")
        ids = self.row_ids
        subject = store.image_column("subject")
        if self.level == "image":
            row_subject = subject[ids]
        else:
            template = store.image_column("template")
            rows = np.flatnonzero(template >= 0)
            t_ids, first = np.unique(template[rows], return_index=True)
            row_subject = subject[rows[first]][np.searchsorted(t_ids, ids)]
        i, j = self.i, self.j
        return pair_units(ids[i], ids[j], row_subject[i], row_subject[j], id_kind=self.level)

    @property
    def image_values(self) -> ImageValues:
        """`values` with what they mean and where they came from."""
        return ImageValues(self.values, self.mode, self.source)


def resolve_models(specs: Mapping[str, ModelSpec], wanted: Sequence[str] | None, where: str = "the store") -> list[str]:
    """The model names `wanted` stands for (default: all): each an exact name, else the one model whose name
    starts with it or whose family it names (`pfe` -> `pfe_r50`). StoreError naming --model for an unknown or
    ambiguous name (the candidates listed)."""
    if not wanted:
        return list(specs)
    out = []
    for w in wanted:
        if w in specs:
            out.append(w)
            continue
        hits = [n for n, s in specs.items() if n.startswith(w) or s.family == w]
        if len(hits) == 1:
            out.append(hits[0])
        elif hits:
            raise StoreError(f"{where}: --model {w!r} is ambiguous: it matches {', '.join(hits)}; give one of them")
        else:
            raise StoreError(f"{where}: no model {w!r}; it has: {', '.join(specs) or 'none'}")
    return list(dict.fromkeys(out))


def select(store: FeatureStore, models: list[str] | None, protocol: str | None) -> tuple[list[str], Protocol]:
    """The models to analyse (default: all; a unique prefix or family name picks one, `resolve_models`) and the
    protocol (default: the first)."""
    models = resolve_models(store.models, models, str(store.path))
    name = protocol or next(iter(store.protocols_info), None)
    if name is None:
        raise StoreError(f"{store.path} has no protocol to verify")
    return models, store.protocol(name)


@timed("pairs")
def build_pair_set(
    store: FeatureStore,
    model: str,
    protocol: Protocol,
    level: str,
    fusion: str,
    valid: ValidRows,
    fusion_options: dict[str, Any] | None = None,
) -> PairSet:
    """Features and uncertainty values per image (image level) or per fused template (template level),
    with the protocol's pairs mapped onto them; pairs touching an invalid image/template are dropped."""
    stored = policy_for(store.model(model)).stored()
    mode, src = stored.kind, stored.source
    pairs, labels = protocol.pairs, protocol.label
    if level != protocol.level:
        raise StoreError(
            f"protocol {protocol.name!r} pairs {protocol.level}s, so it is analysed at level {protocol.level!r}, "
            f"not {level!r}"
        )
    if level == "image":
        if pairs.size and (pairs.min() < 0 or pairs.max() >= store.n_images):
            raise StoreError(f"protocol {protocol.name!r}: image rows outside 0..{store.n_images - 1}")
        keep = valid.mask[pairs[:, 0]] & valid.mask[pairs[:, 1]]
        rows = np.unique(pairs[keep])
        with stage("read"):
            features = store.read_rows(model, "embedding", rows)
            values = store.read_rows(model, src, rows)
        i = np.searchsorted(rows, pairs[keep, 0])
        j = np.searchsorted(rows, pairs[keep, 1])
    else:
        fused = fuse_templates(store, model, fusion, valid.mask, options=fusion_options)
        features, values = fused.features, fused.uncertainty
        i, j, keep = _pair_rows(fused.ids, pairs)
        mode, src = stored.fused_by(FUSIONS.get(fusion))
    labels = labels.copy() if keep is None else labels[keep]
    finite = _finite_rows(features) & (True if values is None else _finite_rows(values))
    if not finite.all():  # e.g. an inf sigma^2 from exp overflow: drop the pairs touching such rows
        ok = finite[i] & finite[j]
        i, j, labels = i[ok], j[ok], labels[ok]
    level_fusion = fusion if level == "template" else "none"
    n_total = len(protocol.label)
    n_dropped = n_total - len(labels)
    row_ids = rows if level == "image" else fused.ids
    return PairSet(model, level, level_fusion, features, values, mode, i, j, labels, n_total, n_dropped, src, row_ids)


LOOKUP_SLACK = 8
"""Template ids are mapped to fused rows by a lookup table when their range is at most this many times their count
(IJB-C: dense ids), else by binary search."""


def _pair_rows(ids: np.ndarray, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(i, j, keep): the fused rows of the pairs' two template ids, for the pairs whose both ids have a fused
    template (`keep` None: all of them). A lookup table over the ids' range (one gather per id, instead of two binary
    searches of 15.66 M ids), or searchsorted when the ids are sparse; the same rows either way."""
    ids = np.asarray(ids)
    if ids.size == 0 or pairs.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.zeros(len(pairs), bool)
    lo = min(0, int(ids[0]))
    hi = int(ids[-1])
    if hi - lo < LOOKUP_SLACK * ids.size + 1024:
        lut = np.full(hi - lo + 2, -1, dtype=np.int64)  # the last entry: every id outside [lo, hi]
        lut[ids - lo] = np.arange(ids.size)

        def rows_of(col: np.ndarray) -> np.ndarray:
            if lo == 0 and int(col.min()) >= 0 and int(col.max()) <= hi:
                return lut[col]
            idx = col.astype(np.int64) - lo
            idx[(idx < 0) | (idx > hi - lo)] = hi - lo + 1
            return lut[idx]

    else:

        def rows_of(col: np.ndarray) -> np.ndarray:
            pos = np.minimum(np.searchsorted(ids, col), ids.size - 1)
            return np.where(ids[pos] == col, pos, -1)

    i, j = rows_of(pairs[:, 0]), rows_of(pairs[:, 1])
    keep = (i >= 0) & (j >= 0)
    if keep.all():
        return i, j, None
    return i[keep], j[keep], keep


def _finite_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    return np.isfinite(x) if x.ndim == 1 else np.isfinite(x).all(axis=1)
