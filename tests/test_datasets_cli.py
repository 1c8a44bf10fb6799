"""`datasets` options are checked by click: bad values exit 2 naming the option, and nothing is created."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from facedata.synthetic.presets import DATASET_PRESETS, STORE_PRESETS

REPO = Path(__file__).resolve().parent.parent


def datasets(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-c", "from facedata.cli import main; main()", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=60)


@pytest.mark.parametrize(
    "args, option",
    [
        (["check", "--dataset", "lfw", "--data-root", ".", "--max-list", "-1"], "--max-list"),
        (["check", "--dataset", "lfw", "--data-root", ".", "--max-list", "many"], "--max-list"),
        (["synthesize", "out", "--preset", "huge"], "--preset"),
        (["synthesize", "out", "--seed", "-3"], "--seed"),
        (["synthesize-store", "out.zarr", "--preset", "tiny"], "--preset"),
        (["synthesize-store", "out.zarr", "--seed", "-1"], "--seed"),
    ],
)
def test_bad_option_values_exit_2_and_create_nothing(tmp_path, args, option):
    res = datasets(args, tmp_path)
    assert res.returncode == 2, res.stderr
    errors = res.stderr.splitlines()  # one line, naming the option
    assert len(errors) == 1 and errors[0].startswith("error: ") and f"'{option}'" in errors[0], res.stderr
    assert "Traceback" not in res.stderr and res.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_preset_choices_are_the_presets():
    from facedata.cli import cli

    params = {p.name: p for p in cli.commands["synthesize"].params}
    assert list(params["preset"].type.choices) == list(DATASET_PRESETS)
    params = {p.name: p for p in cli.commands["synthesize-store"].params}
    assert list(params["preset"].type.choices) == list(STORE_PRESETS)


def test_dataset_name_not_shadowed_on_the_command_line(tmp_path):
    (tmp_path / "lfw").mkdir()  # a folder named like the built-in, in the current folder
    res = datasets(["check", "--dataset", "lfw", "--data-root", "lfw"], tmp_path)
    assert "manifest file not found" not in res.stderr
    assert res.returncode == 1 and "dataset lfw at lfw: PROBLEMS FOUND" in res.stdout
    res = datasets(["check", "--dataset", "./nope.yaml", "--data-root", "lfw"], tmp_path)
    assert res.returncode == 2 and res.stderr.strip() == "error: nope.yaml: manifest file not found"
