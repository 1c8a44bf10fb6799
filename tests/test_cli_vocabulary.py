"""docs/cli.md lists every long option of every command (issue 12 item 8), and the shared words work alike:
--cache names the store in extract and synthesize-store too, extract's --force is --overwrite, fusion takes
--metric, and every --convention help states its default and why."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
TOOLS = {"datasets": "facedata.cli", "extract": "extract.cli", "analyze": "analyze.cli", "pipelines": "pipelines.cli", "train": "train.cli"}


def _commands():
    for tool, module in TOOLS.items():
        stack = [(tool, importlib.import_module(module).cli)]
        while stack:
            path, cmd = stack.pop()
            if isinstance(cmd, click.Group):
                stack += [(f"{path} {n}", c) for n, c in cmd.commands.items()]
            else:
                yield path, cmd


def _options() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path, cmd in _commands():
        for p in cmd.params:
            if isinstance(p, click.Option):
                for o in (*p.opts, *p.secondary_opts):
                    if o.startswith("--") and o != "--help":
                        found.setdefault(o, []).append(path)
    return found


def test_every_option_is_in_docs_cli_and_nothing_else():
    documented = set(re.findall(r"^\| `(--[a-z0-9-]+)` \|", (ROOT / "docs" / "cli.md").read_text(), flags=re.M))
    used = set(_options())
    assert used - documented == set(), "options missing from docs/cli.md"
    assert documented - used == set(), "docs/cli.md lists options no command has"


def _param(cmd: click.Command, opt: str) -> click.Option:
    return next(p for p in cmd.params if isinstance(p, click.Option) and opt in (*p.opts, *p.secondary_opts))


def test_one_word_per_idea():
    cmds = dict(_commands())
    assert _param(cmds["extract"], "--cache") is _param(cmds["extract"], "--out")
    assert _param(cmds["extract"], "--force") is _param(cmds["extract"], "--overwrite")
    assert _param(cmds["datasets synthesize-store"], "--cache").name == "cache"
    assert _param(cmds["analyze fusion"], "--metric").multiple
    for path, cmd in cmds.items():
        assert not any(isinstance(p, click.Option) and "--store" in p.opts for p in cmd.params), path
        if any(isinstance(p, click.Option) and "--convention" in p.opts for p in cmd.params):
            help_text = _param(cmd, "--convention").help or ""
            assert "Default " in help_text and "exact" in help_text and "nearest" in help_text, path


def test_synthesize_store_takes_cache_and_fusion_takes_metric(tmp_path):
    from click.testing import CliRunner

    from analyze.cli import cli as analyze
    from facedata.cli import cli as datasets

    store = tmp_path / "s.zarr"
    res = CliRunner().invoke(datasets, ["synthesize-store", "--cache", str(store), "--preset", "tiny-store"])
    assert res.exit_code == 0, res.output
    both = CliRunner().invoke(datasets, ["synthesize-store", "x.zarr", "--cache", str(store)])
    assert both.exit_code == 2 and "OUT or --cache" in both.output
    args = ["fusion", "--cache", str(store), "--model", "pfe", "--fusion", "mean", "--far", "0.01", "--no-figures"]
    by_metric = CliRunner().invoke(analyze, [*args, "--metric", "MLS_harmonic-sum", "--out", str(tmp_path / "a")])
    by_distance = CliRunner().invoke(analyze, [*args, "--distance", "MLS", "--out", str(tmp_path / "b")])
    assert by_metric.exit_code == 0 and by_distance.exit_code == 0, by_metric.output + by_distance.output
    import pandas as pd

    a, b = (pd.read_parquet(tmp_path / d / "fusion.parquet") for d in "ab")
    assert list(a["distance"].unique()) == ["MLS"]
    pd.testing.assert_frame_equal(a, b)
