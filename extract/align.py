"""5-point face alignment to 112x112, as insightface's IJB-B/IJB-C evaluation does it.

insightface (`recognition/_evaluation_/ijb/ijb_11.py`, `arcface_torch/eval_ijbc.py`) maps the five
landmarks (eyes, nose tip, mouth corners; float32) onto the ArcFace template with x shifted by
+8.0, using skimage's `SimilarityTransform.estimate` (Umeyama's least-squares similarity, with
scale), then `cv2.warpAffine(img, M[:2], (112, 112), borderValue=0.0)` with bilinear sampling.
The warp treats every channel alike, so aligning the RGB image gives the RGB version of the
BGR crop insightface produces. Umeyama is re-implemented here in numpy (no skimage).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

CROP_SIZE = 112

ARCFACE_TEMPLATE = np.array(
    [
        [30.2946, 51.6963],  # left eye (image left)
        [65.5318, 51.5014],  # right eye
        [48.0252, 71.7366],  # nose tip
        [33.5493, 92.3655],  # left mouth corner
        [62.7299, 92.2041],  # right mouth corner
    ],
    dtype=np.float32,
)
ARCFACE_TEMPLATE[:, 0] += 8.0
"""Destination of the five landmarks in the 112x112 crop (the 96x112 template centred by +8 px in x)."""

MIN_LANDMARK_SPREAD = 1.0
"""Landmarks whose RMS distance from their centroid is below this many pixels cannot define a face."""


@dataclass
class AlignResult:
    """Outcome of `align_face`: the crop (None on failure), why it failed or what was done."""

    crop: np.ndarray | None
    ok: bool
    message: str = ""
    matrix: np.ndarray | None = None
    """2x3 affine matrix image -> crop (None for pre-aligned input)."""
    resized: bool = False
    """True when a pre-aligned image was not 112x112 and was resized."""


def umeyama(src: np.ndarray, dst: np.ndarray, estimate_scale: bool = True) -> np.ndarray:
    """3x3 homogeneous similarity T minimising sum |dst_i - T src_i|^2 (Umeyama 1991, as skimage does it).

    Computation follows skimage's `_umeyama` in the inputs' own dtype (insightface passes float32),
    so results match it to float rounding; returns all-NaN when `src` has rank 0 (all points equal).
    """
    src = np.asarray(src)
    dst = np.asarray(dst)
    num, dim = src.shape
    src_mean = src.mean(axis=0)
    dst_mean = dst.mean(axis=0)
    src_demean = src - src_mean
    dst_demean = dst - dst_mean
    cov = dst_demean.T @ src_demean / num  # Eq. (38)
    d = np.ones((dim,), dtype=np.float64)
    if np.linalg.det(cov) < 0:  # Eq. (39): avoid a reflection
        d[dim - 1] = -1
    T = np.eye(dim + 1, dtype=np.float64)
    U, S, Vt = np.linalg.svd(cov)
    rank = np.linalg.matrix_rank(cov)
    if rank == 0:
        return np.full_like(T, np.nan)
    if rank == dim - 1:  # Eq. (40), (43): degenerate covariance, choose the proper rotation
        if np.linalg.det(U) * np.linalg.det(Vt) > 0:
            T[:dim, :dim] = U @ Vt
        else:
            saved = d[dim - 1]
            d[dim - 1] = -1
            T[:dim, :dim] = U @ np.diag(d) @ Vt
            d[dim - 1] = saved
    else:
        T[:dim, :dim] = U @ np.diag(d) @ Vt
    scale = 1.0 / src_demean.var(axis=0).sum() * (S @ d) if estimate_scale else 1.0  # Eq. (42)
    T[:dim, dim] = dst_mean - scale * (T[:dim, :dim] @ src_mean.T)  # Eq. (41)
    T[:dim, :dim] *= scale
    return T


def estimate_alignment(landmarks: np.ndarray) -> tuple[np.ndarray | None, str]:
    """2x3 matrix mapping 5 image landmarks onto `ARCFACE_TEMPLATE`, or (None, reason) when impossible."""
    pts = np.asarray(landmarks, dtype=np.float32)
    if pts.shape != (5, 2):
        return None, f"landmarks must be 5x2, got shape {pts.shape}"
    if not np.isfinite(pts).all():
        return None, "landmarks contain NaN or infinite values"
    spread = float(np.sqrt(((pts - pts.mean(axis=0)) ** 2).sum(axis=1).mean()))
    if spread < MIN_LANDMARK_SPREAD:
        return None, f"degenerate landmarks: RMS spread {spread:.3g} px < {MIN_LANDMARK_SPREAD} px"
    T = umeyama(pts, ARCFACE_TEMPLATE, estimate_scale=True)
    M = T[:2, :]
    if not np.isfinite(M).all() or abs(np.linalg.det(M[:, :2])) < 1e-12:
        return None, "degenerate landmarks: no similarity transform"
    return M, ""


def align_face(img: np.ndarray, landmarks: np.ndarray | None) -> AlignResult:
    """Aligned 112x112 crop of `img` (H x W [x C], any channel order) from its 5 landmarks.

    Landmarks None or all-NaN mean the image is already aligned: a 112x112 image passes through
    unchanged, another size is resized (INTER_AREA when shrinking, INTER_LINEAR when enlarging)
    and `resized` says so. Partly-NaN or degenerate landmarks give ok=False with a reason.
    """
    if img is None or img.ndim not in (2, 3) or img.shape[0] == 0 or img.shape[1] == 0:
        shape = None if img is None else img.shape
        return AlignResult(None, False, f"not an image: shape {shape}")
    if landmarks is None or np.isnan(np.asarray(landmarks, dtype=np.float32)).all():
        return _pre_aligned(img)
    M, reason = estimate_alignment(landmarks)
    if M is None:
        return AlignResult(None, False, reason)
    crop = cv2.warpAffine(img, M, (CROP_SIZE, CROP_SIZE), borderValue=0.0)
    return AlignResult(crop, True, "", matrix=M)


def _pre_aligned(img: np.ndarray) -> AlignResult:
    h, w = img.shape[:2]
    if (h, w) == (CROP_SIZE, CROP_SIZE):
        return AlignResult(img, True, "pre-aligned")
    interp = cv2.INTER_AREA if h > CROP_SIZE or w > CROP_SIZE else cv2.INTER_LINEAR
    crop = cv2.resize(img, (CROP_SIZE, CROP_SIZE), interpolation=interp)
    return AlignResult(crop, True, f"pre-aligned image {w}x{h} resized to {CROP_SIZE}x{CROP_SIZE}", resized=True)
