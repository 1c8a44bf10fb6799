"""Run Python code in a subprocess where `import torch` fails, as on a CPU-only analysis machine."""

from __future__ import annotations

import subprocess
import sys

BLOCK = """
import importlib.abc, sys
class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith(("torch.", "torchvision")):
            raise ImportError(f"{name} is blocked: analysis must run without torch")
sys.meta_path.insert(0, _NoTorch())
"""


def run_without_torch(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `code` with torch blocked; returns the completed process (stdout/stderr as text)."""
    return subprocess.run(
        [sys.executable, "-c", BLOCK + code], capture_output=True, text=True, timeout=timeout, check=False
    )
