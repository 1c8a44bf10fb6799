"""Turn a batch of aligned uint8 RGB crops into a model's input tensor (channel order, mean/std, layout).

Each family's original inference feeds its network differently (docs/models.md): insightface
RGB (x-127.5)/127.5, the ScaleFace repository RGB (x-127.5)/128, MagFace BGR x/255. The
`Preprocessing` of a model config carries these numbers; mean/std are given per network
input channel (after reordering).
"""

from __future__ import annotations

import numpy as np
import torch

from extract.models.config import Preprocessing


def preprocess_batch(
    crops: np.ndarray | torch.Tensor,
    preprocessing: Preprocessing,
    device: torch.device | str | None = None,
    flip: bool = False,
    channels_last: bool = True,
) -> torch.Tensor:
    """(B, H, W, 3) uint8 RGB crops -> (B, 3, H, W) float32 network input on `device`.

    The uint8 batch moves to the device first (4x fewer bytes); `flip=True` mirrors each crop
    horizontally (the flip-test input). The result is channels_last unless told otherwise.
    """
    batch = torch.from_numpy(np.ascontiguousarray(crops)) if isinstance(crops, np.ndarray) else crops
    if batch.ndim != 4 or batch.shape[-1] != 3:
        raise ValueError(f"crops must be (B, H, W, 3) RGB, got shape {tuple(batch.shape)}")
    if batch.dtype != torch.uint8:
        raise ValueError(f"crops must be uint8, got {batch.dtype}")
    size = preprocessing.size
    if tuple(batch.shape[1:3]) != (size, size):
        raise ValueError(f"crops must be {size}x{size}, got {tuple(batch.shape[1:3])}")
    if device is not None:
        batch = batch.to(device, non_blocking=True)
    x = batch.permute(0, 3, 1, 2)  # NCHW view of NHWC memory, i.e. already channels_last
    if preprocessing.channel_order == "BGR":
        x = x.flip(1)
    elif preprocessing.channel_order != "RGB":
        raise ValueError(f"channel_order must be RGB or BGR, got {preprocessing.channel_order!r}")
    if flip:
        x = x.flip(3)
    mean = torch.tensor(preprocessing.mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(preprocessing.std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    x = (x.float() - mean) / std
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return x.contiguous(memory_format=fmt)
