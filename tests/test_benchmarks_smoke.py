"""Smoke run of benchmarks/extract_bench.py and gpu_extract_check.py on a handful of images (iResNet-18, CPU),
plus the comparison helpers on inputs with known answers."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from extract.data import decode_and_align
from featurestore.schema import STATUS_OK

pytestmark = pytest.mark.torch

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


bench = _load("extract_bench")


def test_max_relative_difference_known_values():
    want = np.array([[1.0, -4.0], [0.5, 0.25]], dtype=np.float32)
    got = np.array([[1.2, -4.0], [0.5, 0.30]], dtype=np.float32)
    # row 0: max |diff| 0.2 / row max 4 = 0.05; row 1: 0.05 / 0.5 = 0.1
    assert bench.max_relative_difference(got, want) == pytest.approx(0.1, rel=1e-6)
    assert bench.max_relative_difference(want, want) == 0.0
    # a (N,) output (norm, scale) is relative to its largest value over all rows: max |diff| 1 / 10
    assert bench.max_relative_difference(np.array([2.0, 11.0]), np.array([1.0, 10.0])) == pytest.approx(0.1)
    assert bench.max_relative_difference(np.array([1e-9]), np.array([2e-9])) == pytest.approx(0.5)
    assert bench.max_relative_difference(np.zeros((0, 4)), np.zeros((0, 4))) == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        bench.max_relative_difference(got[:1], want)


def test_compare_outputs_names_missing_output():
    a = {"m": {"embedding": np.ones((2, 3)), "norm": np.ones(2)}}
    assert bench.compare_outputs(a, a) == {"m/embedding": 0.0, "m/norm": 0.0}
    with pytest.raises(KeyError, match="m/norm"):
        bench.compare_outputs({"m": {"embedding": np.ones((2, 3))}}, a)


def test_own_images_align_and_naive_read_equals_runner_decoding(tmp_path):
    tables, how = bench.make_dataset(tmp_path, 5, source="own")
    assert "write_loose_crops" in how and len(tables.images) == 5
    for path, lmk in zip(tables.images.path, tables.images.landmarks):
        crop, status, msg = decode_and_align(tmp_path, str(path), lmk)
        assert status == STATUS_OK, msg
        np.testing.assert_array_equal(bench.naive_read(tmp_path, str(path), lmk, bgr=False), crop)
        np.testing.assert_array_equal(bench.naive_read(tmp_path, str(path), lmk, bgr=True), crop[..., ::-1])


@pytest.mark.slow
def test_benchmark_end_to_end_tiny(tmp_path):
    lines: list[str] = []
    res = bench.run_benchmark(n_images=6, arch="iresnet18", workers=0, source="own", workdir=tmp_path, log=lines.append)
    assert res["images"] == 6 and res["naive_images_per_s"] > 0 and res["ours_images_per_s"] > 0
    assert res["backbone_forwards_per_image"] == {"naive": 4, "ours": 2}
    assert set(res["max_relative_difference"]) >= {"scaleface/scale", "pfe/sigma_sq", "embnorm/norm", "magface/norm"}
    assert max(res["max_relative_difference"].values()) < 1e-4
    assert any("naive" in line for line in lines)


gpu = _load("gpu_extract_check")


def test_row_cosine_known_values():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [3.0, 4.0]])
    b = np.array([[0.0, 2.0], [2.0, 2.0], [-3.0, -4.0]])
    np.testing.assert_allclose(gpu.row_cosine(a, b), [0.0, 1.0, -1.0], atol=1e-12)


def test_aligned_jpegs_are_112_and_pre_aligned(tmp_path):
    tables = gpu.write_aligned_jpegs(tmp_path, 3)
    assert list(tables.images.path) == ["aligned/000000.jpg", "aligned/000001.jpg", "aligned/000002.jpg"]
    assert np.isnan(tables.images.landmarks).all()
    for p, lmk in zip(tables.images.path, tables.images.landmarks):
        crop, status, msg = decode_and_align(tmp_path, str(p), lmk)
        assert status == STATUS_OK and crop.shape == (112, 112, 3), msg
