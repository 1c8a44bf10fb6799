"""A minimal validation hook on insightface `.bin` packs: 10-fold verification accuracy of the cosine of
L2-normalised embeddings. Kept small on purpose: the full accuracy metrics live in analyze/accuracy.py."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from extract.models.config import Preprocessing
from extract.preprocess import preprocess_batch


def ten_fold_accuracy(scores: np.ndarray, issame: np.ndarray, folds: int = 10) -> float:
    """Mean over `folds` contiguous folds of the held-out accuracy at the threshold that is best on the
    other folds (thresholds: midpoints between their distinct scores and +-inf, the first best one;
    a pair is 'same' when its score >= threshold)."""
    scores, issame = np.asarray(scores, dtype=np.float64), np.asarray(issame, dtype=bool)
    parts = np.array_split(np.arange(len(scores)), folds)
    accs = []
    for k, test in enumerate(parts):
        if test.size == 0:
            continue
        train = np.concatenate([p for j, p in enumerate(parts) if j != k])
        u = np.unique(scores[train])
        cand = np.concatenate([[-np.inf], (u[1:] + u[:-1]) / 2, [np.inf]])
        acc_train = [((scores[train] >= t) == issame[train]).mean() for t in cand]
        best = cand[int(np.argmax(acc_train))]
        accs.append(((scores[test] >= best) == issame[test]).mean())
    return float(np.mean(accs))


def decode_pack(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(N, 112, 112, 3) uint8 RGB crops and (N/2,) genuine flags of a `.bin` pack (pairs are rows 2i, 2i+1)."""
    from facedata.readers.bin_pack import load_pack

    images, issame = load_pack(Path(path), str(path))
    crops = []
    for data in images:
        img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        if img.shape[:2] != (112, 112):
            img = cv2.resize(img, (112, 112))
        crops.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    return np.stack(crops), np.asarray(issame, dtype=bool)


@torch.no_grad()
def pack_accuracy(backbone: torch.nn.Module, crops: np.ndarray, issame: np.ndarray, pre: Preprocessing,
                  device: torch.device, batch_size: int = 64) -> float:  # fmt: skip
    """10-fold accuracy of `backbone`'s embeddings on decoded pack crops (backbone put in eval mode)."""
    was_training = backbone.training
    backbone.eval()
    embs = []
    for i in range(0, len(crops), batch_size):
        x = preprocess_batch(crops[i : i + batch_size], pre, device)
        embs.append(F.normalize(backbone(x).embedding.float(), dim=1).cpu())
    backbone.train(was_training)
    e = torch.cat(embs).numpy()
    scores = (e[0::2] * e[1::2]).sum(axis=1)
    return ten_fold_accuracy(scores, issame[: len(scores)])
