"""The package as users install it (issue 12 item 2): build the wheel, install it into a fresh venv where the
repository is not on the path, and run `datasets synthesize`, `extract` and `analyze reject` from an empty
folder, so the built-in manifests, model configs and pipelines must come from the wheel's package data.

Offline and fast: the venv has no pip and no packages of its own; its dependencies come from the running
interpreter's site-packages through a .pth line (a .pth line only adds a folder to sys.path; the .pth files
inside it, such as an editable install of this repository, are not run), and the wheel is installed with
`pip --python VENV install --no-deps --no-index`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = (
    "featurestore",
    "facedata",
    "extract",
    "analyze",
    "pipelines",
    "train",
    "setup.cfg",
    "pyproject.toml",
    "README.md",
)
"""What the wheel is built from (train/ where it exists)."""

pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A venv with only the freshly built wheel installed (and the test environment's dependencies)."""
    pytest.importorskip("setuptools")
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"  # a copy, so the build leaves nothing (build/, *.egg-info) in the checkout
    src.mkdir()
    for name in SOURCES:
        p = ROOT / name
        if not p.exists():
            continue
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy(p, src / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    pip = [sys.executable, "-m", "pip"]
    _run([*pip, "wheel", ".", "--no-deps", "--no-build-isolation", "-q", "-w", str(base / "dist")], src, env)
    (wheel,) = (base / "dist").glob("scaleface_toolkit-*.whl")
    venv = base / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], base, env)
    py = venv / "bin" / "python"
    purelib = _run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], base, env).strip()
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(purelib) / "_test_deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    _run([*pip, "--python", str(py), "install", "--no-deps", "--no-index", "-q", str(wheel)], base, env)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return venv, env


def test_wheel_installs_and_runs_without_the_repository(installed, tmp_path):
    venv, env = installed
    work = tmp_path / "work"  # an empty folder: no configs/ or data_manifests/ to fall back on
    work.mkdir()
    where = _run(
        [
            str(venv / "bin/python"),
            "-c",
            "import featurestore, facedata.manifest as m; print(featurestore.__file__); print(m.MANIFEST_DIR)",
        ],
        work,
        env,
    )
    assert str(ROOT) not in where and all(line.startswith(str(venv)) for line in where.split())
    for script in ("extract", "analyze", "pipelines", "datasets"):
        assert (
            _run([str(venv / "bin" / script), "--version"], work, env).strip() == f"{script} (scaleface-toolkit) 0.1.0"
        )
    assert "ijbc " in _run([str(venv / "bin/datasets"), "list"], work, env)
    assert "demo" in _run([str(venv / "bin/pipelines"), "list"], work, env)
    _run([str(venv / "bin/datasets"), "synthesize", "synth", "--preset", "tiny"], work, env)
    out = _run(
        [
            *(str(venv / "bin/extract"), "--dataset", "ijbc", "--data-root", "synth", "--random-init"),
            *("--config", "arcface_r18", "--device", "cpu", "--workers", "0", "--quiet", "--out", "s.zarr"),
        ],
        work,
        env,
    )
    assert "107 ok, 0 failed" in out
    out = _run([str(venv / "bin/analyze"), "reject", "--cache", "s.zarr", "--no-figures"], work, env)
    assert "wrote s.analysis/reject" in out
    assert (work / "s.analysis/reject/auc.csv").is_file() and (work / "s.analysis/reject/reject.parquet").is_file()
