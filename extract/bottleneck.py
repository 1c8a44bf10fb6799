"""`extract --bottleneck [--per-identity K]`: store one model's flattened bn2(layer4) backbone output
(25,088-d for iResNet at 112x112) as float16 for the rows it covers, so `train ... --cache STORE` fits heads
without running the backbone again (featurestore/bottleneck.py holds the array's format)."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from extract.data import FaceCrops, collate
from extract.preprocess import preprocess_batch
from extract.runner import RunModel, autocast_dtype, resolve_device
from featurestore.bottleneck import has_bottleneck, write_bottleneck
from featurestore.schema import STATUS_OK
from featurestore.store import FeatureStore


def bottleneck_rows(subject: np.ndarray, status: np.ndarray, per_identity: int | None) -> np.ndarray:
    """Ascending rows that extracted fine: all of them, or the first `per_identity` of each subject
    (rows without a subject, -1, count as one identity each)."""
    ok = np.flatnonzero(status == STATUS_OK)
    if per_identity is None:
        return ok
    seen: dict[int, int] = {}
    keep = []
    for r in ok:
        s = int(subject[r])
        if s < 0 or seen.get(s, 0) < per_identity:
            keep.append(r)
            if s >= 0:
                seen[s] = seen.get(s, 0) + 1
    return np.asarray(keep, dtype=np.int64)


def pick_model(models: list[RunModel], name: str | None) -> RunModel:
    """The model whose backbone fills the bottleneck: `name`, else the first with a head, else the first."""
    if name is not None:
        for m in models:
            if m.name == name:
                return m
        raise ValueError(
            f"--bottleneck-model {name!r}: not one of this run's models ({', '.join(m.name for m in models)})"
        )
    return next((m for m in models if m.model.head is not None), models[0])


@torch.inference_mode()
def extract_bottleneck(
    store: FeatureStore,
    data_root: str,
    model: RunModel,
    *,
    per_identity: int | None = None,
    device: str = "auto",
    precision: str = "auto",
    batch_size: int = 64,
    workers: int = 0,
    progress: bool = True,
) -> int:
    """Compute and write the bottleneck of `model` for the covered rows (after the run filled the store);
    a store already holding it for the same model and rows is left as it is. Returns the rows written."""
    rows = bottleneck_rows(store.image_column("subject"), store.status(), per_identity)
    if has_bottleneck(store):
        info = store.attrs["bottleneck"]
        if info.get("model") == model.name and np.array_equal(np.asarray(info["rows"]), rows):
            return 0
    dev = resolve_device(device)
    model.model.to(dev)
    amp_dtype = autocast_dtype(precision, dev)
    amp = torch.autocast(dev.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
    crops = FaceCrops(data_root, store.image_column("path"), store.image_column("landmarks"))
    batches = [rows[i : i + batch_size].tolist() for i in range(0, len(rows), batch_size)]
    loader = DataLoader(crops, batch_sampler=batches, num_workers=workers, collate_fn=collate)
    out = None
    bar = tqdm(total=len(rows), unit="img", disable=not progress, desc="bottleneck")
    pos = 0
    for batch in loader:
        with amp:
            b = model.model.backbone(preprocess_batch(batch.crops, model.model.preprocessing, dev)).bottleneck
        b = b.float().cpu().numpy().astype(np.float16)
        if out is None:
            out = np.empty((len(rows), b.shape[1]), dtype=np.float16)
        out[pos : pos + len(b)] = b
        pos += len(b)
        bar.update(len(b))
    bar.close()
    if out is None:
        out = np.empty((0, 0), dtype=np.float16)
    write_bottleneck(store, model.name, rows, out)
    return len(rows)
