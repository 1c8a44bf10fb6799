"""The run's state a step reads: its own module so that the step kinds (steps) and the report (report),
which both take it, import it downward instead of from each other."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.spec import ResolvedStep


def _echo(text: str, err: bool = False) -> None:
    print(text, file=sys.stderr if err else sys.stdout)


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
    say: Callable[..., None] = field(
        default=lambda text, err=False: print(text, file=sys.stderr if err else sys.stdout)
    )
    """How a step reports what it did: `say(text, err=False)`; the runner logs it to pipeline.log too."""
