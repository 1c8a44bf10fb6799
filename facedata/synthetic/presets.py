"""Sizes of the built-in synthetic benchmarks: image datasets (tiny/small/medium) and image-free stores.

A preset fixes every count the generators need, so the same (preset, seed) always plans the same data.
"""

from __future__ import annotations

from dataclasses import dataclass

DATASET_NAME = "ijbc"
"""The synthetic image dataset uses insightface's IJB-C file names so the standard reader reads it."""


@dataclass(frozen=True)
class DatasetPreset:
    """An image dataset: identities, templates per identity, media/frame sizes and pair budget."""

    name: str
    n_subjects: int
    probe_templates_per_subject: int
    mean_extra_medias: float
    video_fraction: float
    mean_extra_frames: float
    max_impostors_per_probe: int
    crop_min: int = 150
    crop_max: int = 250


@dataclass(frozen=True)
class StorePreset:
    """An image-free store: exact image, template, pair and genuine-pair counts, and the embedding size."""

    name: str
    n_images: int
    n_subjects: int
    n_templates: int
    n_pairs: int
    n_genuine: int
    embedding_dim: int = 512
    video_fraction: float = 0.4


DATASET_PRESETS: dict[str, DatasetPreset] = {
    "tiny": DatasetPreset("tiny", 8, 3, 0.6, 0.3, 2.0, 10**9),
    "small": DatasetPreset("small", 60, 3, 1.5, 0.35, 3.0, 10**9),
    "medium": DatasetPreset("medium", 400, 4, 2.5, 0.4, 5.0, 2000),
}

STORE_PRESETS: dict[str, StorePreset] = {
    # insightface's IJB-C 1:1 release: 469,375 face lines, 23,124 templates, 15,658,489 pairs, 19,557 genuine.
    # 3,531 subjects: one enrolment template each, the other 19,593 templates are probes.
    "ijbc": StorePreset("ijbc", 469_375, 3_531, 23_124, 15_658_489, 19_557),
    "tiny-store": StorePreset("tiny-store", 2_000, 40, 200, 4_000, 150, embedding_dim=64),
}


def dataset_preset(name: str) -> DatasetPreset:
    """The dataset preset called `name`; a ValueError lists the known ones."""
    if name not in DATASET_PRESETS:
        raise ValueError(f"unknown synthetic dataset preset {name!r}; known: {', '.join(DATASET_PRESETS)}")
    return DATASET_PRESETS[name]


def store_preset(name: str) -> StorePreset:
    """The store preset called `name`; a ValueError lists the known ones."""
    if name not in STORE_PRESETS:
        raise ValueError(f"unknown synthetic store preset {name!r}; known: {', '.join(STORE_PRESETS)}")
    return STORE_PRESETS[name]
