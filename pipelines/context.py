"""The run's state a step reads: its own module so that the step kinds (steps) and the report (report),
which both take it, import it downward instead of from each other."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.spec import ResolvedStep


@dataclass
class StepContext:
    """What a step may need from the run: earlier steps, their markers, the run folder and pipeline name."""

    out_dir: Path
    pipeline: str
    steps: dict[str, ResolvedStep] = field(default_factory=dict)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    overwrite: bool = False
