"""`--version` on every console script (through featurestore.cli_main.run_cli), without the command running."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from featurestore import __version__

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "module, prog",
    [
        ("extract.cli", "extract"),
        ("analyze.cli", "analyze"),
        ("pipelines.cli", "pipelines"),
        ("facedata.cli", "datasets"),
    ],
)
def test_every_command_prints_its_version(module, prog):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-c", f"from {module} import main; main()", "--version"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{prog} (scaleface-toolkit) {__version__}\n" and proc.stderr == ""


def test_version_is_the_one_setup_cfg_reads():
    assert "version = attr: featurestore.__version__" in (ROOT / "setup.cfg").read_text()


def test_version_option_is_added_once_and_leaves_the_command_working():
    import click
    from click.testing import CliRunner

    from featurestore.cli_main import add_version_option

    @click.command()
    @click.option("--n", type=int, default=1)
    def cmd(n: int) -> None:
        click.echo(f"n={n}")

    add_version_option(cmd, "tool")
    add_version_option(cmd, "tool")
    assert sum("--version" in p.opts for p in cmd.params) == 1
    runner = CliRunner()
    assert runner.invoke(cmd, ["--version", "--n", "x"]).output == f"tool (scaleface-toolkit) {__version__}\n"
    assert runner.invoke(cmd, ["--n", "3"]).output == "n=3\n"
