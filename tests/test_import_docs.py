"""docs/import.md's "Try it on synthetic data" runs as written: its bash lines through the real CLI entry
points, its Python snippet as a script, all in one folder."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parent.parent
ENTRY = {"datasets": "facedata.cli", "analyze": "analyze.cli", "extract": "extract.cli"}


def section_blocks(text: str, heading: str) -> list[tuple[str, str]]:
    """(language, body) of each fenced block between `heading` and the next '## ' heading."""
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    body = text[start : end if end >= 0 else len(text)]
    return re.findall(r"```(\w+)\n(.*?)```", body, flags=re.S)


def commands(bash: str) -> list[list[str]]:
    """The commands of a bash block: comments dropped, '\\' continuations joined."""
    joined = re.sub(r"\\\n\s*", " ", bash)
    return [shlex.split(line, comments=True) for line in joined.splitlines() if shlex.split(line, comments=True)]


@pytest.mark.slow
def test_the_synthetic_walkthrough_runs(tmp_path):
    blocks = section_blocks((REPO / "docs" / "import.md").read_text(), "## Try it on synthetic data")
    assert [lang for lang, _ in blocks] == ["bash", "python", "bash"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ran = []
    for lang, body in blocks:
        if lang == "python":
            argvs = [[sys.executable, "-c", body]]
        else:
            argvs = [[sys.executable, "-c", f"from {ENTRY[c[0]]} import main; main()", *c[1:]] for c in commands(body)]
        for argv in argvs:
            r = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
            assert r.returncode == 0, f"{argv[3:] or 'python snippet'} failed:\n{r.stdout}\n{r.stderr}"
            ran.append(r.stdout)
    assert len(ran) == 7
    assert "models scaleface (external, confidence scaleface), ofiq (external, confidence ofiq)" in ran[2]
    auc = pd.read_csv(tmp_path / "cmp" / "reject" / "auc.csv")
    assert set(auc["model"]) == {"scaleface", "ofiq", "crfiqa"}
    mean = auc[(auc["uncertainty"] == "mean") & (auc["far"] == 1e-3)].set_index("model")["auc"]
    # the figures docs/import.md quotes
    assert [round(mean[m], 4) for m in ("scaleface", "ofiq", "crfiqa")] == [0.4048, 0.3844, 0.4013]
    edc = pd.read_csv(tmp_path / "cmp" / "edc" / "auc.csv")
    assert set(edc["uncertainty"]) == {"min"}
    summary = pd.read_csv(tmp_path / "cmp" / "distribution" / "distribution_summary.csv")
    assert set(summary[summary["quantity"] == "external_confidence"]["model"]) == {"scaleface", "ofiq", "crfiqa"}
    assert json.loads((tmp_path / "cmp" / "roc" / "summary.json").read_text())
