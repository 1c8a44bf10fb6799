"""The built-in synthetic benchmark: a rendered face dataset in insightface's IJB-C layout and an
image-free feature store at full IJB-C scale, both deterministic in (preset, seed). Torch-free.
"""

from .layout import DatasetPlan, SynthSummary, ensure_synthetic, plan_dataset, synthesize_dataset, synthetic_cache_dir
from .presets import DATASET_PRESETS, STORE_PRESETS
from .store import plan_store, synthesize_store, synthetic_quality

__all__ = [
    "DATASET_PRESETS",
    "STORE_PRESETS",
    "DatasetPlan",
    "SynthSummary",
    "ensure_synthetic",
    "plan_dataset",
    "plan_store",
    "synthesize_dataset",
    "synthesize_store",
    "synthetic_cache_dir",
    "synthetic_quality",
]
