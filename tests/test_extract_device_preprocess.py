"""`extract --preprocess device` (extract.gpu_preprocess.device_batch), run on CPU: the same statuses as the OpenCV
path, crops within a grey level, embeddings with cosine > 0.999, and a fingerprint that keeps the two apart."""

from __future__ import annotations

import subprocess

import cv2
import numpy as np
import pytest
import torch
from ijb_fixture import extract_cmd, write_ijb

from extract.data import FaceBytes, FaceCrops, collate, collate_raw
from extract.gpu_preprocess import device_batch, source_region
from featurestore.schema import STATUS_ALIGN_FAILED, STATUS_MISSING, STATUS_OK, STATUS_UNREADABLE
from featurestore.store import FeatureStore


def _rows(root):
    """write_ijb's rows (a corrupt JPEG, a missing file, degenerate landmarks) plus a PNG, a pre-aligned 112x112
    JPEG and a pre-aligned 100x120 one (all-NaN landmarks)."""
    write_ijb(root, n=6, corrupt=(1,), missing=(2,), bad_landmarks=(3,))
    lines = (root / "meta" / "ijbc_name_5pts_score.txt").read_text().splitlines()
    paths = [f"loose_crop/{line.split()[0]}" for line in lines]
    lms = np.array([[float(v) for v in line.split()[1:11]] for line in lines]).reshape(-1, 5, 2)
    rng = np.random.default_rng(1)
    img = cv2.GaussianBlur(rng.integers(0, 256, (160, 150, 3), dtype=np.uint8), (5, 5), 2)
    cv2.imwrite(str(root / "loose_crop" / "p.png"), img)
    cv2.imwrite(str(root / "loose_crop" / "a112.jpg"), img[:112, :112], [cv2.IMWRITE_JPEG_QUALITY, 95])
    cv2.imwrite(str(root / "loose_crop" / "a100.jpg"), img[:120, :100], [cv2.IMWRITE_JPEG_QUALITY, 95])
    paths += ["loose_crop/p.png", "loose_crop/a112.jpg", "loose_crop/a100.jpg"]
    lms = np.concatenate([lms, lms[:1], np.full((2, 5, 2), np.nan)])
    return paths, lms


def test_device_batch_matches_the_opencv_path(tmp_path):
    paths, lms = _rows(tmp_path)
    rows = list(range(len(paths)))
    want = collate([FaceCrops(tmp_path, paths, lms)[r] for r in rows])
    got = device_batch(collate_raw([FaceBytes(tmp_path, paths)[r] for r in rows]), lms, "cpu")
    assert got.status.tolist() == want.status.tolist()
    assert want.status.tolist()[:4] == [STATUS_OK, STATUS_UNREADABLE, STATUS_MISSING, STATUS_ALIGN_FAILED]
    assert got.messages == want.messages
    ok = want.status == STATUS_OK
    diff = np.abs(got.crops.numpy().astype(int) - want.crops.numpy().astype(int))
    assert diff[ok].max() <= 2  # JPEG decoders differ by a level or so, grid_sample vs fixed point by one
    assert diff[ok].mean() < 0.5
    assert np.array_equal(got.crops[-2].numpy(), want.crops[-2].numpy())  # pre-aligned 112x112: passed through
    assert not got.crops[~torch.as_tensor(ok)].any()  # failed rows are zeros, as FaceCrops gives


def test_source_region_covers_the_taps_and_clips():
    m = np.array([[0.5, 0.0, -10.0], [0.0, 0.5, -20.0]])  # crop = image / 2 shifted: reads x 20..242, y 40..262
    y0, y1, x0, x1 = source_region(m, (1000, 1000))
    assert (y0, y1, x0, x1) == (39, 264, 19, 244)  # taps of pixel 262 (242) reach 263 (243): end exclusive
    assert source_region(m, (100, 100))[1] == 100  # clipped to the image
    far = np.array([[1.0, 0.0, 5000.0], [0.0, 1.0, 5000.0]])  # the crop reads only outside the image
    y0, y1, x0, x1 = source_region(far, (50, 50))
    assert y1 == y0 and x1 == x0


@pytest.mark.slow
def test_extract_device_path_end_to_end_and_fingerprint(tmp_path):
    root = write_ijb(tmp_path / "data", n=6, corrupt=(1,))
    cpu, dev = tmp_path / "cpu.zarr", tmp_path / "dev.zarr"
    assert subprocess.run(extract_cmd(root, cpu), capture_output=True, text=True).returncode == 0
    r = subprocess.run(extract_cmd(root, dev, "--preprocess", "device"), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    with FeatureStore.open(cpu) as a, FeatureStore.open(dev) as b:
        name = next(iter(a.models))
        assert np.array_equal(a.image_column("status"), b.image_column("status"))
        ea, eb = a.read(name, "embedding"), b.read(name, "embedding")
        ok = a.image_column("status") == STATUS_OK
        cos = (ea * eb).sum(1) / np.linalg.norm(ea, axis=1) / np.linalg.norm(eb, axis=1)
        assert cos[ok].min() > 0.999
        assert b.model(name).preprocessing["decode_align"] == "device"
        assert "decode_align" not in a.model(name).preprocessing
    r = subprocess.run(extract_cmd(root, cpu, "--preprocess", "device"), capture_output=True, text=True)
    assert r.returncode != 0 and "preprocessing" in r.stderr and "Traceback" not in r.stderr
