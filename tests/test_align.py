"""Face alignment: Umeyama against the textbook least-squares similarity, landmarks and drawn dots
landing on the ArcFace template, pre-aligned pass-through and failures."""

from __future__ import annotations

import numpy as np
import pytest

from extract.align import ARCFACE_TEMPLATE, CROP_SIZE, align_face, estimate_alignment, umeyama


def textbook_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least squares over x' = a x - b y + tx, y' = b x + a y + ty (every rotation+scale+shift), float64."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(src.astype(np.float64), dst.astype(np.float64)):
        rows += [[x, -y, 1, 0], [y, x, 0, 1]]
        rhs += [u, v]
    a, b, tx, ty = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0]
    return np.array([[a, -b, tx], [b, a, ty]])


def similarity(scale: float, angle: float, shift: tuple[float, float]) -> np.ndarray:
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[c, -s, shift[0]], [s, c, shift[1]]])


def apply(M: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ M[:, :2].T + M[:, 2]


def face_landmarks(scale: float, angle: float, shift: tuple[float, float], noise: float = 0.0, seed: int = 0):
    """Image landmarks of a face placed by the inverse of a known similarity (+ optional noise)."""
    forward = np.vstack([similarity(scale, angle, shift), [0, 0, 1]])
    inverse = np.linalg.inv(forward)[:2]
    pts = apply(inverse, ARCFACE_TEMPLATE.astype(np.float64))
    pts += np.random.default_rng(seed).normal(0, noise, pts.shape)
    return pts.astype(np.float32), forward[:2]


def test_template_is_insightface_arcface_src_shifted_by_8():
    assert ARCFACE_TEMPLATE.dtype == np.float32
    np.testing.assert_array_equal(ARCFACE_TEMPLATE[:, 1], np.float32([51.6963, 51.5014, 71.7366, 92.3655, 92.2041]))
    np.testing.assert_array_equal(
        ARCFACE_TEMPLATE[:, 0], np.float32([30.2946, 65.5318, 48.0252, 33.5493, 62.7299]) + np.float32(8.0)
    )


@pytest.mark.parametrize("seed", range(6))
def test_umeyama_equals_textbook_least_squares(seed):
    rng = np.random.default_rng(seed)
    src = rng.uniform(0, 300, size=(5, 2))
    dst = apply(similarity(rng.uniform(0.2, 3), rng.uniform(-np.pi, np.pi), rng.uniform(-50, 50, 2)), src)
    dst += rng.normal(0, 3.0, dst.shape)  # noisy: the least-squares optimum, not an exact fit
    T = umeyama(src, dst)
    np.testing.assert_allclose(T[:2], textbook_similarity(src, dst), atol=1e-9)
    np.testing.assert_allclose(T[2], [0, 0, 1])


def test_umeyama_float32_like_insightface_close_to_float64():
    pts, _ = face_landmarks(2.3, 0.4, (-120.0, -80.0), noise=2.0)
    T32 = umeyama(pts, ARCFACE_TEMPLATE)
    T64 = umeyama(pts.astype(np.float64), ARCFACE_TEMPLATE.astype(np.float64))
    np.testing.assert_allclose(apply(T32[:2], pts), apply(T64[:2], pts), atol=1e-3)


def test_umeyama_all_points_equal_is_nan():
    assert np.isnan(umeyama(np.ones((5, 2)), ARCFACE_TEMPLATE)).all()


@pytest.mark.parametrize(
    ("scale", "angle", "shift"),
    [(0.5, 0.0, (0.0, 0.0)), (0.35, -0.5, (-40.0, 10.0)), (1.7, 0.3, (-150.0, -60.0)), (0.8, np.pi * 0.9, (90, 160))],
)
def test_landmarks_map_onto_template(scale, angle, shift):
    pts, expected = face_landmarks(scale, angle, shift)
    M, reason = estimate_alignment(pts)
    assert reason == "" and M.shape == (2, 3)
    err = np.linalg.norm(apply(M, pts.astype(np.float64)) - ARCFACE_TEMPLATE, axis=1)
    assert err.max() < 0.01, err
    np.testing.assert_allclose(M, expected, atol=1e-3 * max(1.0, np.abs(expected).max()))


def _draw_dots(shape: tuple[int, int], points: np.ndarray, sigma: float = 2.5) -> np.ndarray:
    """uint8 RGB image, black, with a Gaussian blob of a distinct colour channel mix at each point."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w, 3), dtype=np.float64)
    for i, (x, y) in enumerate(points):
        blob = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
        img[..., i % 3] += 250 * blob
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _blob_centres(crop: np.ndarray, near: np.ndarray, radius: int = 7) -> np.ndarray:
    """Intensity-weighted centroid of each dot's channel within `radius` px of its expected place."""
    h, w = crop.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    centres = []
    for i, (x, y) in enumerate(near):
        window = ((xx - x) ** 2 + (yy - y) ** 2) <= radius**2
        weight = crop[..., i % 3].astype(np.float64) * window
        centres.append([(weight * xx).sum() / weight.sum(), (weight * yy).sum() / weight.sum()])
    return np.array(centres)


@pytest.mark.parametrize(("scale", "angle", "shift"), [(0.6, 0.2, (-20.0, -30.0)), (0.45, -0.35, (-60.0, 15.0))])
def test_dots_drawn_at_landmarks_land_on_template_after_warping(scale, angle, shift):
    pts, _ = face_landmarks(scale, angle, shift)
    img = _draw_dots((320, 300), pts, sigma=2.5 / scale)  # blobs ~2.5 px wide after warping
    assert (pts > 20).all() and (pts[:, 0] < 280).all() and (pts[:, 1] < 300).all()  # dots whole
    result = align_face(img, pts)
    assert result.ok and result.crop.shape == (CROP_SIZE, CROP_SIZE, 3) and result.crop.dtype == np.uint8
    centres = _blob_centres(result.crop, ARCFACE_TEMPLATE)
    err = np.linalg.norm(centres - ARCFACE_TEMPLATE, axis=1)
    assert err.max() < 0.5, err


def test_warp_is_channelwise_so_channel_order_commutes():
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, size=(200, 180, 3), dtype=np.uint8)
    pts, _ = face_landmarks(0.7, 0.1, (-30.0, -20.0))
    rgb = align_face(img, pts).crop
    bgr = align_face(np.ascontiguousarray(img[..., ::-1]), pts).crop
    np.testing.assert_array_equal(rgb, bgr[..., ::-1])


def test_outside_image_is_black_border():
    img = np.full((60, 60, 3), 200, dtype=np.uint8)
    pts, _ = face_landmarks(0.5, 0.0, (0.0, 0.0))  # face larger than the image: crop corners fall outside
    crop = align_face(img, pts).crop
    assert (crop[-1, -1] == 0).all() and (crop[0, 0] == 200).all()


def test_pre_aligned_images_pass_through_or_are_resized():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, size=(112, 112, 3), dtype=np.uint8)
    for marks in (None, np.full((5, 2), np.nan, dtype=np.float32)):
        result = align_face(img, marks)
        assert result.ok and not result.resized and result.crop is img
    big = rng.integers(0, 256, size=(150, 130, 3), dtype=np.uint8)
    result = align_face(big, None)
    assert result.ok and result.resized and result.crop.shape == (112, 112, 3) and "130x150" in result.message


@pytest.mark.parametrize(
    ("marks", "needle"),
    [
        (np.where(np.arange(10).reshape(5, 2) == 3, np.nan, 50.0), "NaN"),
        (np.full((5, 2), 40.0), "degenerate"),
        (np.array([[40, 40], [40.2, 40], [40.1, 40.3], [40, 40.1], [40.2, 40.2]]), "degenerate"),
        (np.ones((4, 2)), "5x2"),
        (np.array([[1, 2], [3, 4], [np.inf, 1], [2, 2], [3, 3]]), "NaN or infinite"),
    ],
)
def test_bad_landmarks_fail_with_reason(marks, needle):
    img = np.zeros((100, 100, 3), dtype=np.uint8)
    result = align_face(img, marks)
    assert not result.ok and result.crop is None and needle in result.message


def test_collinear_landmarks_still_align():
    """Rank-1 (collinear) landmarks have a unique best similarity; skimage returns it, so do we."""
    pts = np.array([[30, 50], [70, 50], [50, 50], [35, 50], [65, 50]], dtype=np.float32)
    result = align_face(np.zeros((120, 120, 3), dtype=np.uint8), pts)
    T = umeyama(pts.astype(np.float64), ARCFACE_TEMPLATE.astype(np.float64))
    assert result.ok
    np.testing.assert_allclose(result.matrix, T[:2], atol=1e-3)
