"""extract.gpu_preprocess (decode_jpeg + grid_sample alignment) against the OpenCV path, run on CPU."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from extract.align import align_face
from extract.checkpoints import random_model
from extract.gpu_preprocess import align_batch, decode_jpegs, sampling_theta
from extract.models.config import load_model_config
from extract.preprocess import preprocess_batch

REF = np.array([[38.29, 51.70], [73.53, 51.50], [56.03, 71.74], [41.55, 92.37], [70.73, 92.20]])


def faces(n=4, seed=0):
    """Smooth random images of different sizes with plausible, rotated and scaled 5-point landmarks."""
    rng = np.random.default_rng(seed)
    imgs, lms = [], []
    for k in range(n):
        h, w = 170 + 23 * k, 210 - 11 * k
        img = cv2.GaussianBlur((rng.random((h, w, 3)) * 255).astype(np.uint8), (0, 0), 2.5)
        img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX)
        a = 0.15 * (k - 1.5)
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        lms.append((REF - 56) @ rot.T * (1.2 + 0.15 * k) + [w / 2, h / 2] + rng.normal(0, 1.5, (5, 2)))
        imgs.append(img)
    return imgs, np.stack(lms)


def as_tensors(imgs):
    return [torch.from_numpy(im).permute(2, 0, 1).contiguous() for im in imgs]


def test_crops_match_opencv_within_one_grey_level():
    imgs, lms = faces()
    want = np.stack([align_face(im, lm).crop for im, lm in zip(imgs, lms)])
    got, ok = align_batch(as_tensors(imgs), lms)
    assert ok.all() and got.dtype == torch.uint8 and got.shape == want.shape
    diff = np.abs(got.numpy().astype(int) - want.astype(int))
    assert diff.max() <= 1  # OpenCV samples on a 1/32-pixel grid in fixed point, grid_sample in float32
    assert diff.mean() < 0.01


def test_border_is_zero_and_bad_landmarks_flagged():
    imgs, lms = faces(n=3)
    lms = lms.copy()
    lms[0] = lms[0] * 0.2 + [-40.0, -40.0]  # face mostly outside the image: zero border, as warpAffine
    lms[1, 2] = np.nan
    got, ok = align_batch(as_tensors(imgs), lms)
    assert ok.tolist() == [True, False, True]
    want0 = align_face(imgs[0], lms[0]).crop
    assert np.abs(got[0].numpy().astype(int) - want0.astype(int)).max() <= 1
    assert (want0 == 0).any()
    assert not got[1].any()
    empty, ok_empty = align_batch([], np.zeros((0, 5, 2)))
    assert empty.shape == (0, 112, 112, 3) and ok_empty.shape == (0,)


def test_theta_of_identity_is_identity():
    theta = sampling_theta(np.array([[1.0, 0, 0], [0, 1.0, 0]]), (112, 112), 112)
    np.testing.assert_allclose(theta, [[1, 0, 0], [0, 1, 0]], atol=1e-12)


def test_decode_matches_opencv():
    imgs, _ = faces(n=2)
    data = [cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes() for im in imgs]
    got = decode_jpegs(data)
    for g, b in zip(got, data):
        want = cv2.cvtColor(cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        assert np.abs(g.permute(1, 2, 0).numpy().astype(int) - want.astype(int)).max() <= 2
    assert decode_jpegs([]) == []


@pytest.mark.slow
def test_embeddings_agree_with_the_opencv_path():
    imgs, lms = faces(n=4, seed=1)
    config = load_model_config("arcface_r18")
    model = random_model(config, seed=0)
    cv_crops = np.stack([cv2.cvtColor(align_face(im, lm).crop, cv2.COLOR_BGR2RGB) for im, lm in zip(imgs, lms)])
    rgb = [torch.from_numpy(cv2.cvtColor(im, cv2.COLOR_BGR2RGB)).permute(2, 0, 1).contiguous() for im in imgs]
    gpu_crops, ok = align_batch(rgb, lms)
    assert ok.all()
    with torch.inference_mode():
        a = model.backbone(preprocess_batch(cv_crops, config.preprocessing)).embedding
        b = model.backbone(preprocess_batch(gpu_crops, config.preprocessing)).embedding
    cos = torch.nn.functional.cosine_similarity(a.float(), b.float()).numpy()
    assert cos.min() > 0.999
