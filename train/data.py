"""Training data: image rows with identity labels, read through facedata (streaming: decode and align each
batch) or from a feature store's bottleneck array (cached: no backbone forward), and the batch orders.

Batch orders are a pure function of (seed, epoch), so a resumed run replays exactly the batches an
uninterrupted one would have seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from extract.data import FaceCrops
from featurestore.schema import STATUS_OK


class TrainDataError(ValueError):
    """Training data that cannot be used (no identities, no bottleneck, too few images)."""


@dataclass
class TrainData:
    """Image rows with class labels 0..n_classes-1; `crops` (streaming) or `bottleneck` (cached) holds them."""

    rows: np.ndarray
    """Row of each item in its dataset (or store)."""
    labels: np.ndarray
    """Class index of each item (identities renumbered 0..n_classes-1 in ascending subject order)."""
    subjects: np.ndarray
    """The dataset's subject id of each class index."""
    crops: FaceCrops | None = None
    bottleneck: np.ndarray | None = None
    """(N, F) float16, cached mode."""
    embedding: np.ndarray | None = None
    """(N, D) float32 stored embeddings of the bottleneck's model, cached mode."""
    source: str = ""

    @property
    def n_classes(self) -> int:
        return len(self.subjects)

    @property
    def cached(self) -> bool:
        return self.bottleneck is not None

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, keep: np.ndarray) -> TrainData:
        """The items `keep` (a boolean mask or indices); labels keep their class numbering."""
        return TrainData(
            self.rows[keep],
            self.labels[keep],
            self.subjects,
            self.crops,
            None if self.bottleneck is None else self.bottleneck[keep],
            None if self.embedding is None else self.embedding[keep],
            self.source,
        )


def _labels(subject: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    keep = np.flatnonzero(subject >= 0)
    if keep.size == 0:
        raise TrainDataError(f"{where}: no image has an identity (subject) label; training needs identities")
    subjects, labels = np.unique(subject[keep], return_inverse=True)
    return keep, labels.astype(np.int64), subjects


def streaming_data(
    data: str, data_root: str | None = None, preset: str = "small", limit: int | None = None
) -> TrainData:
    """Images of a dataset manifest (name or YAML: MS1M RecordIO, identity folder, ..., or `synthetic`,
    generated as `preset`), labelled by subject, decoded and aligned per batch."""
    from facedata.manifest import load_manifest, resolve_data_root
    from facedata.readers import read_dataset

    manifest = load_manifest(data)
    if manifest.name == "synthetic" and data_root is None:
        from facedata.synthetic import ensure_synthetic

        root = ensure_synthetic(preset=preset, seed=0)
    else:
        root = resolve_data_root(manifest, data_root)
    tables = read_dataset(manifest, root)
    images = tables.images if limit is None else tables.images.take(slice(0, limit))
    keep, labels, subjects = _labels(np.asarray(images.subject), f"--data {data}")
    crops = FaceCrops(root, images.path, images.landmarks)
    return TrainData(keep, labels, subjects, crops=crops, source=f"{data} ({root})")


def cached_data(store_path: str | Path) -> tuple[TrainData, str]:
    """The store's bottleneck rows with their subjects and the stored embeddings of the bottleneck's model;
    returns (data, model name). Rows that failed extraction are left out."""
    from featurestore.bottleneck import bottleneck_info, read_bottleneck
    from featurestore.store import FeatureStore

    with FeatureStore.open(store_path) as store:
        info = bottleneck_info(store)
        rows, values = read_bottleneck(store)
        model = str(info["model"])
        ok = store.status()[rows] == STATUS_OK
        subject = store.image_column("subject")[rows]
        embedding = store.read_rows(model, "embedding", rows).astype(np.float32)
    ok &= subject >= 0
    rows, values, subject, embedding = rows[ok], values[ok], subject[ok], embedding[ok]
    _, labels, subjects = _labels(subject, f"--cache {store_path}")
    data = TrainData(rows, labels, subjects, bottleneck=values, embedding=embedding, source=f"{store_path} ({model})")
    return data, model


def identity_split(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of held-out items: `fraction` of each identity's images (at least one kept for training)."""
    rng = np.random.default_rng(seed)
    held = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = min(len(idx) - 1, int(round(fraction * len(idx))))
        if k > 0:
            held[rng.choice(idx, size=k, replace=False)] = True
    return held


def epoch_batches(
    labels: np.ndarray, epoch: int, seed: int, batch_size: int, per_identity: tuple[int, int] | None = None
) -> list[np.ndarray]:
    """The epoch's batches of item indices: a seeded permutation cut into full batches, or (PFE, pairs)
    `per_identity` = (P identities, K images) batches over the identities with at least 2 images."""
    rng = np.random.default_rng([seed, epoch])
    if per_identity is None:
        order = rng.permutation(len(labels))
        n = len(order) // batch_size
        if n == 0:
            raise TrainDataError(f"{len(labels)} images are fewer than one batch of {batch_size}")
        return [order[i * batch_size : (i + 1) * batch_size] for i in range(n)]
    p, k = per_identity
    by_class = {int(c): np.flatnonzero(labels == c) for c in np.unique(labels)}
    eligible = [c for c, idx in by_class.items() if len(idx) >= 2]
    if len(eligible) < 2:
        raise TrainDataError(f"only {len(eligible)} identities have 2 or more images; pair losses need at least 2")
    p = min(p, len(eligible))
    order = rng.permutation(eligible)
    batches = []
    for b in range(len(order) // p):
        picks = []
        for c in order[b * p : (b + 1) * p]:
            idx = by_class[int(c)]
            picks.append(rng.choice(idx, size=k, replace=len(idx) < k))
        batches.append(np.concatenate(picks))
    return batches


class _Rows(Dataset):
    """Item i -> the aligned uint8 crop of data row rows[i] (streaming mode)."""

    def __init__(self, data: TrainData):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        face = self.data.crops[int(self.data.rows[i])]
        return i, face.crop, face.status


def _collate(items):
    idx = torch.tensor([it[0] for it in items], dtype=torch.int64)
    crops = torch.from_numpy(np.stack([it[1] for it in items]))
    status = np.array([it[2] for it in items])
    return idx, crops, status


def iterate_batches(data: TrainData, batches: list[np.ndarray], workers: int = 0):
    """Yield (item indices tensor, x) per batch: x = uint8 crops (B, 112, 112, 3) or float16 bottleneck (B, F).
    Streaming batches with an unreadable image stop with TrainDataError naming it."""
    if data.cached:
        for b in batches:
            yield torch.from_numpy(b), torch.from_numpy(data.bottleneck[b])
        return
    loader = DataLoader(_Rows(data), batch_sampler=[list(map(int, b)) for b in batches], num_workers=workers,
                        collate_fn=_collate)  # fmt: skip
    for idx, crops, status in loader:
        bad = np.flatnonzero(status != STATUS_OK)
        if bad.size:
            row = int(data.rows[int(idx[bad[0]])])
            raise TrainDataError(
                f"{data.source}: image row {row} ({data.crops.paths[row]}) could not be read or aligned"
            )
        yield idx, crops
