"""Optional device-side decode and 5-point alignment (issue 10 item 5): nvjpeg decode through
`torchvision.io.decode_jpeg(device=...)` and the similarity transform of `extract.align` applied with
`affine_grid` / `grid_sample`, so decode and alignment leave the CPU when they are the bottleneck.

OpenCV stays the default: it reproduces insightface's crops exactly. This path computes the same
transform (`estimate_alignment`, Umeyama) and samples bilinearly with a zero border like
`cv2.warpAffine(..., borderValue=0)`, but in float32 rather than OpenCV's 1/32-pixel fixed point, so crops
differ by a grey level or so (tests/test_gpu_preprocess.py measures it on CPU). `extract --preprocess device`
uses it through `device_batch` (workers only read the files). Not yet measured on a GPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from extract.align import CROP_SIZE, align_face, estimate_alignment
from extract.data import Batch, RawBatch, undecodable
from featurestore.schema import STATUS_ALIGN_FAILED, STATUS_UNREADABLE


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


def source_region(matrix: np.ndarray, hw: tuple[int, int], out_size: int = CROP_SIZE) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1): the part of an (h, w) image whose pixels the crop's bilinear taps can touch (the inverse map
    of the crop's corners, one pixel of margin, clipped to the image; empty when the crop lies outside it)."""
    m = np.vstack([np.asarray(matrix, dtype=np.float64).reshape(2, 3), [0.0, 0.0, 1.0]])
    c = out_size - 1.0
    corners = np.array([[0.0, 0.0, 1.0], [c, 0.0, 1.0], [0.0, c, 1.0], [c, c, 1.0]])
    src = corners @ np.linalg.inv(m).T
    h, w = hw
    x0, x1 = int(np.floor(src[:, 0].min())) - 1, int(np.ceil(src[:, 0].max())) + 2
    y0, y1 = int(np.floor(src[:, 1].min())) - 1, int(np.ceil(src[:, 1].max())) + 2
    x0, x1, y0, y1 = max(x0, 0), min(x1, w), max(y0, 0), min(y1, h)
    return (y0, max(y0, y1), x0, max(x0, x1))


def align_batch(
    images: Sequence[torch.Tensor], landmarks: np.ndarray, out_size: int = CROP_SIZE
) -> tuple[torch.Tensor, np.ndarray]:
    """(3, H, W) uint8 images (any sizes, one device) and their (B, 5, 2) landmarks -> (B, out, out, 3) uint8 crops.

    Only the region of each image that its crop samples (`source_region`) is copied, zero-padded to the batch's
    largest region (so the border outside each image is 0, as warpAffine's borderValue=0), and sampled in one
    grid_sample call: memory follows the faces' size, not the frames'. Returns the crops and an ok mask: rows
    whose landmarks give no transform (NaN, degenerate) come back as zeros with ok False.
    """
    matrices = [estimate_alignment(lm)[0] for lm in np.asarray(landmarks)]
    return warp_batch(images, matrices, out_size)


def warp_batch(
    images: Sequence[torch.Tensor], matrices: Sequence[np.ndarray | None], out_size: int = CROP_SIZE
) -> tuple[torch.Tensor, np.ndarray]:
    """`align_batch` with the 2x3 image -> crop matrices given (None: no transform, a zero crop with ok False)."""
    b = len(images)
    if b == 0:
        return torch.zeros((0, out_size, out_size, 3), dtype=torch.uint8), np.zeros(0, bool)
    device = images[0].device
    ok = np.array([m is not None for m in matrices], dtype=bool)
    regions = [
        source_region(m, (int(im.shape[1]), int(im.shape[2])), out_size) if m is not None else (0, 0, 0, 0)
        for im, m in zip(images, matrices)
    ]
    hmax = max(1, max(r[1] - r[0] for r in regions))
    wmax = max(1, max(r[3] - r[2] for r in regions))
    batch = torch.zeros((b, 3, hmax, wmax), dtype=torch.float32, device=device)
    thetas = np.zeros((b, 2, 3))
    for k, (im, m, (y0, y1, x0, x1)) in enumerate(zip(images, matrices, regions)):
        if m is None:
            continue
        batch[k, :, : y1 - y0, : x1 - x0] = im[:, y0:y1, x0:x1].to(torch.float32)
        shift = np.array([[1.0, 0.0, x0], [0.0, 1.0, y0], [0.0, 0.0, 1.0]])  # region coordinates -> image's
        thetas[k] = sampling_theta(np.asarray(m, dtype=np.float64).reshape(2, 3) @ shift, (hmax, wmax), out_size)
    theta = torch.as_tensor(thetas, dtype=torch.float32, device=device)
    grid = F.affine_grid(theta, [b, 3, out_size, out_size], align_corners=False)
    crops = F.grid_sample(batch, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    crops = crops.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    crops[torch.as_tensor(~ok, device=device)] = 0
    return crops, ok


JPEG_MAGIC = b"\xff\xd8"


def _decode_rows(data: list[bytes], device: torch.device) -> list[torch.Tensor | None]:
    """Decode JPEG bytes on `device` in one call (nvjpeg on CUDA); when that call fails, one by one, and
    OpenCV on the CPU for what decode_jpeg cannot read (None: no decoder reads it)."""
    try:
        return list(decode_jpegs(data, device))
    except (RuntimeError, ValueError):
        out: list[torch.Tensor | None] = []
        for d in data:
            try:
                out.append(decode_jpegs([d], device)[0])
            except (RuntimeError, ValueError):
                out.append(_cpu_decode(d, device))
        return out


def _cpu_decode(data: bytes, device: torch.device) -> torch.Tensor | None:
    """OpenCV's decode of any format it reads, as a (3, H, W) uint8 RGB tensor on `device`; None if unreadable."""
    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        return None
    return torch.from_numpy(cv2.cvtColor(img, cv2.COLOR_BGR2RGB)).permute(2, 0, 1).contiguous().to(device)


def device_batch(raw: RawBatch, landmarks: np.ndarray, device: torch.device | str) -> Batch:
    """`--preprocess device`: a RawBatch (file bytes) -> the Batch of crops that FaceCrops would give, computed on
    `device`: JPEGs decoded there (others by OpenCV), aligned by `warp_batch`, pre-aligned faces (all-NaN landmarks)
    passed through (other sizes resized by `align_face`, on the CPU). Failures get FaceCrops' statuses and messages."""
    device = torch.device(device)
    n = len(raw.rows)
    status, messages = raw.status.copy(), list(raw.messages)
    crops = torch.zeros((n, CROP_SIZE, CROP_SIZE, 3), dtype=torch.uint8, device=device)
    readable = [k for k in range(n) if raw.data[k] is not None]
    jpeg = [k for k in readable if raw.data[k][:2] == JPEG_MAGIC]
    decoded: dict[int, torch.Tensor | None] = dict(zip(jpeg, _decode_rows([raw.data[k] for k in jpeg], device)))
    decoded.update({k: _cpu_decode(raw.data[k], device) for k in readable if k not in decoded})
    warp_rows, warp_images, warp_matrices = [], [], []
    for k, img in decoded.items():
        if img is None:
            status[k], messages[k] = STATUS_UNREADABLE, undecodable(raw.data[k])
            continue
        lm = np.asarray(landmarks[k], dtype=np.float32)
        if np.isnan(lm).all():  # pre-aligned: exactly align_face's rule
            if tuple(img.shape[1:]) == (CROP_SIZE, CROP_SIZE):
                crops[k] = img.permute(1, 2, 0)
            else:
                res = align_face(img.permute(1, 2, 0).cpu().numpy(), None)
                crops[k] = torch.from_numpy(res.crop).to(device)
            continue
        matrix, reason = estimate_alignment(lm)
        if matrix is None:
            status[k], messages[k] = STATUS_ALIGN_FAILED, reason
            continue
        warp_rows.append(k)
        warp_images.append(img)
        warp_matrices.append(matrix)
    if warp_rows:
        warped, _ = warp_batch(warp_images, warp_matrices)
        crops[torch.as_tensor(warp_rows, device=device)] = warped
    return Batch(raw.rows, crops, status, messages, raw.decode_seconds)
