"""Scored pairs with the ids they came from: a PairSet plus, per kept pair, both sides' image rows or
template ids and subjects, for commands that write per-pair rows (`analyze scores`) or resample subjects
(`analyze accuracy --bootstrap`). Built on analyze.experiments' public PairSet and build_pair_set."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analyze.accuracy import flip_features
from analyze.loading import PairSet, ValidRows, build_pair_set, uncertainty_source
from analyze.rows import l2_normalize
from featurestore.errors import StoreError
from featurestore.schema import Protocol
from featurestore.store import FeatureStore

__all__ = ["IdPairs", "image_pairs", "template_pairs"]


@dataclass
class IdPairs:
    """One (model, protocol)'s scored pairs, the protocol positions they hold, and each side's ids and subjects."""

    ps: PairSet
    flip: bool
    kept: np.ndarray  # bool per protocol pair: scored
    ids: tuple[np.ndarray, np.ndarray]
    subjects: tuple[np.ndarray, np.ndarray]
    id_kind: str  # "image" (store rows) or "template" (template ids)


def image_pairs(
    store: FeatureStore, model: str, proto: Protocol, valid: ValidRows, flip: bool = False, normalize: bool = False
) -> IdPairs:
    """Image-level pairs as build_pair_set makes them (raw embeddings), or with `flip` the insightface test
    features (embedding + embedding_flip where stored) and with `normalize` L2-normalised; pairs touching an
    invalid image or a non-finite feature/uncertainty are dropped."""
    spec = store.model(model)
    src, mode = uncertainty_source(spec)
    pairs, labels = proto.pairs, proto.label
    if pairs.size and (pairs.min() < 0 or pairs.max() >= store.n_images):
        raise StoreError(f"protocol {proto.name!r}: image rows outside 0..{store.n_images - 1}")
    keep = valid.mask[pairs[:, 0]] & valid.mask[pairs[:, 1]]
    rows = np.unique(pairs[keep])
    use_flip = flip and "embedding_flip" in spec.outputs
    features = store.read_rows(model, "embedding", rows)
    if use_flip or normalize:
        features = flip_features(features, store.read_rows(model, "embedding_flip", rows) if use_flip else None)
    values = store.read_rows(model, src, rows)
    finite = np.isfinite(features).all(axis=1) & np.isfinite(values).reshape(len(rows), -1).all(axis=1)
    keep[keep] = finite[np.searchsorted(rows, pairs[keep, 0])] & finite[np.searchsorted(rows, pairs[keep, 1])]
    kept = pairs[keep]
    i, j = np.searchsorted(rows, kept[:, 0]), np.searchsorted(rows, kept[:, 1])
    n = len(labels)
    ps = PairSet(model, "image", "none", features, values, mode, i, j, labels[keep], n, n - int(keep.sum()))
    subject = store.image_column("subject")
    ids = (kept[:, 0], kept[:, 1])
    return IdPairs(ps, use_flip, keep, ids, (subject[ids[0]], subject[ids[1]]), "image")


def template_pairs(
    store: FeatureStore, model: str, proto: Protocol, valid: ValidRows, fusion: str, normalize: bool = False
) -> IdPairs:
    """Template-level pairs: build_pair_set's fused templates (L2-normalised with `normalize`), with the
    template ids and subjects of each kept pair; the flip is used as the fusion uses it."""
    ps = build_pair_set(store, model, proto, "template", fusion, valid)
    if normalize:
        ps.features = l2_normalize(ps.features)
    template, subject = store.image_column("template"), store.image_column("subject")
    have = np.unique(template[valid.mask & (template >= 0)])
    keep = np.isin(proto.pairs, have).all(axis=1)
    if int(keep.sum()) != len(ps.labels):  # build_pair_set also dropped templates with non-finite fused values
        raise StoreError(
            f"protocol {proto.name!r}, model {model!r}: some fused templates are not finite; "
            "per-pair ids cannot be matched (check the store with `analyze info --verify`)"
        )
    kept = proto.pairs[keep]
    rows = np.flatnonzero(template >= 0)
    t_ids, first = np.unique(template[rows], return_index=True)
    t_subj = subject[rows[first]]
    subj = tuple(t_subj[np.searchsorted(t_ids, kept[:, k])] for k in (0, 1))
    return IdPairs(ps, False, keep, (kept[:, 0], kept[:, 1]), subj, "template")
