"""analyze.commands: one Python entry per command, called the same way by the click commands and by pipeline
steps; options from a step's YAML (fractions as a string, a list or a mapping), runtime-only keys, figures."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
from analysis_fixture import build_store
from click.testing import CliRunner

from analyze import commands
from analyze.cli import cli
from analyze.commands import FusionOptions, RejectOptions, RocOptions, options_from_args, parse_fractions


@pytest.fixture
def store(tmp_path):
    return build_store(tmp_path / "toy.zarr")


def test_reject_function_writes_what_the_cli_writes(store, tmp_path):
    opts = RejectOptions(fars=(0.1,), fractions=(0.0, 0.5, 3), figures=False)
    result = commands.reject(store.path, tmp_path / "py", opts)
    res = CliRunner().invoke(
        cli, ["reject", "--cache", str(store.path), "--far", "0.1", "--rejected", "0:0.5:3", "--no-figures",
              "--out", str(tmp_path / "cli")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    for name in ("reject.csv", "auc.csv"):
        assert (tmp_path / "py" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes()
    pd.testing.assert_frame_equal(result.tables["reject"], pd.read_parquet(tmp_path / "cli" / "reject.parquet"))
    assert result.footer.splitlines()[0] == f"wrote {tmp_path / 'py'}" and result.text in res.output
    assert result.footer.splitlines()[1].startswith("time: ")
    assert not (tmp_path / "py" / "figures").exists()


def test_fusion_honours_no_figures(store, tmp_path):
    base = ["fusion", "--cache", str(store.path), "--fusion", "mean", "--fusion", "weighted", "--far", "0.1"]
    res = CliRunner().invoke(cli, [*base, "--out", str(tmp_path / "with")])
    assert res.exit_code == 0, res.output
    stems = {p.stem for p in (tmp_path / "with" / "figures").iterdir()}
    assert {p.suffix for p in (tmp_path / "with" / "figures").iterdir()} == {".pdf", ".png"}
    assert any("cosine" in s for s in stems) and any("MLS" in s for s in stems)
    res = CliRunner().invoke(cli, [*base, "--no-figures", "--out", str(tmp_path / "without")])
    assert res.exit_code == 0, res.output
    assert not (tmp_path / "without" / "figures").exists()
    assert (tmp_path / "with" / "fusion.csv").read_bytes() == (tmp_path / "without" / "fusion.csv").read_bytes()


@pytest.mark.parametrize("value", ["0:0.5:20", [0, 0.5, 20], {"start": 0, "stop": 0.5, "num": 20}])
def test_fractions_as_string_list_or_mapping(value):
    assert parse_fractions(value) == (0.0, 0.5, 20)
    opts = options_from_args(RejectOptions, {"rejected": value, "far": [0.05, "0.1"], "no_figures": True}, "step x")
    assert opts.fractions == (0.0, 0.5, 20) and opts.fars == (0.05, 0.1) and opts.figures is False


@pytest.mark.parametrize(
    "value,message",
    [
        ("0:1:10", "rejecting every pair leaves no pairs"),
        ([0.5, 0.2, 3], "0 <= START <= STOP"),
        ({"start": 0, "stop": 0.5}, "expected START:STOP:NUM"),
        ([0, 0.5, 2.5], "expected START:STOP:NUM"),
        ("0:0.5:1", "NUM must be at least 2"),
    ],
)
def test_bad_fractions_are_refused(value, message):
    with pytest.raises(ValueError, match=message):
        parse_fractions(value)


def test_options_from_args_refuses_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match=r"step 'r': unknown option\(s\) partial_ok; valid: model, protocol"):
        options_from_args(RejectOptions, {"partial_ok": True}, "step 'r'")
    with pytest.raises(ValueError, match="no_figures must be true or false"):
        options_from_args(RocOptions, {"no_figures": "yes"}, "step 'r'")
    opts = options_from_args(FusionOptions, {"model": "a", "media_no_flip": True, "scheduler": None}, "s")
    assert opts.models == ("a",) and opts.media_flip is False and opts.media_norm is True


def test_runtime_fields_are_marked_and_options_are_frozen():
    assert commands.runtime_keys(RejectOptions) == {"force", "scheduler", "cluster"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        RejectOptions().convention = "nearest"  # type: ignore[misc]


def test_pipeline_step_calls_the_function_with_yaml_options(store, tmp_path):
    import yaml

    from pipelines.runner import run_pipeline
    from pipelines.steps import KINDS, StepError

    assert KINDS["reject"].runtime_keys == {"force", "scheduler", "cluster"}
    spec = {
        "name": "yaml-options",
        "steps": [
            {
                "id": "rej",
                "kind": "reject",
                "with": {
                    "cache": str(store.path),
                    "far": [0.1],
                    "rejected": {"start": 0, "stop": 0.5, "num": 3},
                    "no_figures": True,
                },
            },  # fmt: skip
            {
                "id": "rej-list",
                "kind": "reject",
                "with": {"cache": str(store.path), "far": 0.1, "rejected": [0, 0.5, 3]},
            },
        ],
    }
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    run_pipeline(path, tmp_path / "run")
    direct = commands.reject(store.path, tmp_path / "direct", RejectOptions(fars=(0.1,), fractions=(0, 0.5, 3)))
    for step in ("rej", "rej-list"):
        got = pd.read_csv(tmp_path / "run" / step / "reject.csv")
        pd.testing.assert_frame_equal(got, pd.read_csv(direct.out_dir / "reject.csv"))
    assert not (tmp_path / "run" / "rej" / "figures").exists() and (tmp_path / "run" / "rej-list" / "figures").is_dir()
    log = (tmp_path / "run" / "pipeline.log").read_text()
    assert "  rej | AUC of TAR over rejected fraction (recompute, exact convention):" in log

    spec["steps"] = [{"id": "bad", "kind": "roc", "with": {"cache": str(store.path), "partial_ok": True}}]
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    with pytest.raises(StepError, match=r"step 'bad' \(roc\): unknown option\(s\) partial_ok"):
        run_pipeline(path, tmp_path / "run2")
