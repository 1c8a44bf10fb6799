"""Optional device-side decode and 5-point alignment (issue 10 item 5): nvjpeg decode through
`torchvision.io.decode_jpeg(device=...)` and the similarity transform of `extract.align` applied with
`affine_grid` / `grid_sample`, so decode and alignment leave the CPU when they are the bottleneck.

OpenCV stays the default: it reproduces insightface's crops exactly. This path computes the same
transform (`estimate_alignment`, Umeyama) and samples bilinearly with a zero border like
`cv2.warpAffine(..., borderValue=0)`, but in float32 rather than OpenCV's 1/32-pixel fixed point, so crops
differ by a grey level or so (tests/test_gpu_preprocess.py measures it on CPU). Not yet measured on a GPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from extract.align import CROP_SIZE, estimate_alignment


def decode_jpegs(data: Sequence[bytes], device: torch.device | str = "cpu") -> list[torch.Tensor]:
    """JPEG file contents -> (3, H, W) uint8 RGB tensors on `device` (batched nvjpeg on CUDA)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    if not data:
        return []
    raw = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in data]
    out = decode_jpeg(raw, mode=ImageReadMode.RGB, device=device)
    return list(out)


def _pixel_to_normalized(w: int, h: int) -> np.ndarray:
    """3x3 map from pixel coordinates (centres at integers, as OpenCV) to grid_sample's [-1, 1], align_corners=False."""
    return np.array([[2.0 / w, 0.0, 1.0 / w - 1.0], [0.0, 2.0 / h, 1.0 / h - 1.0], [0.0, 0.0, 1.0]])


def sampling_theta(matrix: np.ndarray, in_hw: tuple[int, int], out_size: int = CROP_SIZE) -> np.ndarray:
    """affine_grid's 2x3 theta that samples what cv2.warpAffine(img, matrix, (out, out)) writes.

    warpAffine maps image -> crop with `matrix` and reads the image at matrix^-1 of each crop pixel;
    theta is that inverse map written in normalised coordinates of the (padded) input and of the crop.
    """
    m = np.vstack([np.asarray(matrix, dtype=np.float64).reshape(2, 3), [0.0, 0.0, 1.0]])
    h, w = in_hw
    theta = _pixel_to_normalized(w, h) @ np.linalg.inv(m) @ np.linalg.inv(_pixel_to_normalized(out_size, out_size))
    return theta[:2]


def align_batch(
    images: Sequence[torch.Tensor], landmarks: np.ndarray, out_size: int = CROP_SIZE
) -> tuple[torch.Tensor, np.ndarray]:
    """(3, H, W) uint8 images (any sizes, one device) and their (B, 5, 2) landmarks -> (B, out, out, 3) uint8 crops.

    The images are zero-padded to one size (so the border outside each image is 0, as warpAffine's
    borderValue=0) and sampled in one grid_sample call. Returns the crops and an ok mask: rows whose
    landmarks give no transform (NaN, degenerate) come back as zeros with ok False.
    """
    b = len(images)
    if b == 0:
        return torch.zeros((0, out_size, out_size, 3), dtype=torch.uint8), np.zeros(0, bool)
    device = images[0].device
    hmax = max(int(im.shape[1]) for im in images)
    wmax = max(int(im.shape[2]) for im in images)
    batch = torch.zeros((b, 3, hmax, wmax), dtype=torch.float32, device=device)
    thetas = np.zeros((b, 2, 3))
    ok = np.zeros(b, bool)
    for k, im in enumerate(images):
        batch[k, :, : im.shape[1], : im.shape[2]] = im.to(torch.float32)
        matrix, _ = estimate_alignment(landmarks[k])
        if matrix is not None:
            thetas[k] = sampling_theta(matrix, (hmax, wmax), out_size)
            ok[k] = True
    theta = torch.as_tensor(thetas, dtype=torch.float32, device=device)
    grid = F.affine_grid(theta, [b, 3, out_size, out_size], align_corners=False)
    crops = F.grid_sample(batch, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    crops = crops.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    crops[torch.as_tensor(~ok, device=device)] = 0
    return crops, ok
