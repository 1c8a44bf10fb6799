"""Shared fixtures: tiny in-memory datasets and model specs for store tests."""

from __future__ import annotations

import os

import numpy as np
import pytest

# No fused-template files beside the tests' stores (analyze.fusion_cache): a test counting or changing fusions must
# see each one made; tests/test_fusion_disk_cache.py turns the cache on where it tests it. Set here, before any test
# runs, so the commands tests start as subprocesses inherit it.
os.environ["SCALEFACE_FUSION_CACHE"] = "off"

from featurestore.schema import DatasetTables, ImageTable, ModelSpec, Protocol


def make_tables(n: int = 10, seed: int = 0) -> DatasetTables:
    """A toy dataset: n images, 3 per subject, 2 per template, one template-level protocol."""
    rng = np.random.default_rng(seed)
    images = ImageTable(
        path=[f"id{i // 3}/img_{i:04d}.jpg" for i in range(n)],
        subject=np.arange(n) // 3,
        template=np.arange(n) // 2,
        media=np.arange(n),
        detector_score=rng.random(n).astype(np.float32),
        landmarks=rng.random((n, 5, 2)).astype(np.float32) * 100,
    )
    pairs = np.array([[0, 1], [1, 2], [0, 3], [2, 4]])
    proto = Protocol("tpl", pairs, [True, False, False, True], level="template", description="toy")
    return DatasetTables("toy", images, {"tpl": proto})


def make_models(dim: int = 4) -> list[ModelSpec]:
    return [
        ModelSpec("scaleface", "scaleface", embedding_dim=dim, outputs=("embedding", "norm", "scale")),
        ModelSpec("pfe", "pfe", embedding_dim=dim, outputs=("embedding", "norm", "sigma_sq"), flip=True),
    ]


def chunk_outputs(models: list[ModelSpec], start: int, stop: int) -> dict[str, dict[str, np.ndarray]]:
    """Deterministic outputs for rows [start, stop): every value encodes its row and output."""
    rows = np.arange(start, stop, dtype=np.float32)
    out: dict[str, dict[str, np.ndarray]] = {}
    for k, spec in enumerate(models):
        out[spec.name] = {}
        for j, name in enumerate(spec.outputs):
            shape = spec.row_shape(name)
            base = rows * 100 + k * 10 + j
            value = np.repeat(base[:, None], shape[0], axis=1) + np.arange(shape[0]) / 10 if shape else base
            out[spec.name][name] = value.astype(np.float32)
    return out


@pytest.fixture
def tables() -> DatasetTables:
    return make_tables()


@pytest.fixture
def models() -> list[ModelSpec]:
    return make_models()


def store_snapshot(path) -> dict[str, np.ndarray]:
    """Everything a store's chunk writes produced: status, done flags, checksums and every model output."""
    from featurestore.store import CRC_KEY, FeatureStore

    with FeatureStore.open(path) as s:
        out = {"status": s.status(), "done": s.chunk_done(), "crc": np.asarray(s._b.array(CRC_KEY)[:])}
        for name, spec in s.models.items():
            for o in spec.outputs:
                out[f"{name}/{o}"] = s.read(name, o)
        return out
