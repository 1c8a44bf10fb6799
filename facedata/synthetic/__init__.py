"""The built-in synthetic benchmark: a rendered face dataset in insightface's IJB-C layout and an
image-free feature store at full IJB-C scale, both deterministic in (preset, seed). Torch-free.

The generators are imported on first use, so `facedata.synthetic.presets` (the CLI's option choices)
stays cheap to import.
"""

from __future__ import annotations

import importlib
from typing import Any

from .presets import DATASET_PRESETS, STORE_PRESETS

_LAZY = {
    "DatasetPlan": "layout",
    "SynthSummary": "layout",
    "ensure_synthetic": "layout",
    "plan_dataset": "layout",
    "synthesize_dataset": "layout",
    "synthetic_cache_dir": "layout",
    "plan_store": "store",
    "synthesize_store": "store",
    "synthetic_quality": "store",
}


def __getattr__(name: str) -> Any:
    """Import the generator module defining `name` on first access."""
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DATASET_PRESETS", "STORE_PRESETS", *_LAZY]
