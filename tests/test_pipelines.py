"""Pipelines: file format and placeholders, missing-parameter errors, an end-to-end run on the synthetic
dataset (tiny iResNet-18 random models), resuming after a crash without redoing finished steps, and a
changed parameter re-running exactly the steps that depend on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from pipelines.cli import cli
from pipelines.runner import run_pipeline
from pipelines.spec import (
    MissingParamError,
    PipelineError,
    available_pipelines,
    load_pipeline,
    parse_param_value,
    parse_pipeline,
    resolve_params,
    resolve_steps,
)
from pipelines.steps import KINDS, StepError, changed_keys, to_cli_args

REPO = Path(__file__).resolve().parents[1]


# ---- spec ---------------------------------------------------------------------------------------------


def test_placeholders_params_lists_and_step_refs(tmp_path):
    spec = parse_pipeline(
        {
            "name": "t",
            "params": {"root": "/data", "sub": "${root}/lfw", "fars": [0.1, 0.2], "ckpt": {"required": True}},
            "steps": [
                {
                    "id": "ex",
                    "kind": "extract",
                    "with": {"dataset": "lfw", "data_root": "${sub}", "checkpoint": "${ckpt}"},
                },
                {
                    "id": "rj",
                    "kind": "reject",
                    "with": {"cache": "${steps.ex.store}", "far": "${fars}", "note": "a ${root} b"},
                },
            ],
        }
    )
    values = resolve_params(spec, {"ckpt": "m.pt"})
    assert values == {"root": "/data", "sub": "/data/lfw", "fars": [0.1, 0.2], "ckpt": "m.pt"}
    ex, rj = resolve_steps(spec, values, tmp_path / "run")
    assert ex.args == {"dataset": "lfw", "data_root": "/data/lfw", "checkpoint": "m.pt"}
    assert ex.store == tmp_path / "run" / "ex" / "lfw.zarr"
    assert rj.args["cache"] == str(ex.store) and rj.needs == ["ex"]
    assert rj.args["far"] == [0.1, 0.2], "a whole-string placeholder keeps its value's type"
    assert rj.args["note"] == "a /data b"


def test_to_cli_args():
    argv = to_cli_args(
        {"far": [0.1, 1e-4], "random_init": True, "quiet": False, "flip": False, "x": None, "batch_size": 8},
        negatable=("flip",),
    )
    assert argv == ["--far", "0.1", "--far", "0.0001", "--random-init", "--no-flip", "--batch-size", "8"]


def test_param_values_are_yaml():
    assert parse_param_value("[1e-4, 0.5]") == ["1e-4", 0.5]  # YAML 1.1: 1e-4 without a dot stays text
    assert parse_param_value("/a/b.pt") == "/a/b.pt"
    assert parse_param_value("3") == 3
    assert parse_param_value("a: b") == "a: b"


def test_missing_params_are_named():
    spec = load_pipeline("ijbc-reject-verification")
    with pytest.raises(MissingParamError) as err:
        resolve_params(spec, {})
    assert {"scaleface_checkpoint", "pfe_checkpoint", "magface_checkpoint"} <= set(err.value.missing)
    assert "--param scaleface_checkpoint=VALUE" in str(err.value)
    result = CliRunner().invoke(cli, ["run", "ijbc-reject-verification", "--param", "pfe_checkpoint=p.pt"])
    assert isinstance(result.exception, MissingParamError)
    assert "scaleface_checkpoint" in str(result.exception) and "pfe_checkpoint," not in str(result.exception)


def test_bad_files_name_the_problem(tmp_path):
    with pytest.raises(PipelineError, match=r"steps\[1\] \(b\): unknown kind 'rejct'"):
        parse_pipeline({"steps": [{"id": "a", "kind": "extract"}, {"id": "b", "kind": "rejct"}]}, "p.yaml")
    with pytest.raises(PipelineError, match="uses \\$\\{ckpt\\}, which is not declared"):
        parse_pipeline({"steps": [{"id": "a", "kind": "extract", "with": {"checkpoint": "${ckpt}"}}]}, "p.yaml")
    with pytest.raises(PipelineError, match="refers to step 'later', which is not an earlier step"):
        parse_pipeline({"steps": [{"id": "a", "kind": "roc", "with": {"cache": "${steps.later.store}"}}]}, "p.yaml")
    with pytest.raises(PipelineError, match="has no parameter\\(s\\) nope"):
        resolve_params(load_pipeline("demo"), {"nope": 1})
    with pytest.raises(PipelineError, match="no built-in pipeline"):
        load_pipeline("no-such-pipeline")


def test_builtin_pipelines_parse_and_list():
    names = {s.name for s in available_pipelines()}
    assert {
        "demo",
        "ijbc-reject-verification",
        "ijbc-template-reject-verification",
        "ijbc-fusion",
        "uncertainty-distribution",
    } <= names
    out = CliRunner().invoke(cli, ["list"]).output
    assert "demo" in out and "scaleface_checkpoint*" in out


def test_changed_keys():
    old = {"kind": "reject", "args": {"far": [0.1]}, "stores": {"s": "a"}, "needs": {"ex": "1"}}
    new = {"kind": "reject", "args": {"far": [0.2]}, "stores": {"s": "b"}, "needs": {"ex": "1"}}
    assert changed_keys(old, new) == ["args.far", "stores.s"]


# ---- end to end -----------------------------------------------------------------------------------------


def _r18_config(tmp: Path, family: str) -> str:
    cfg = yaml.safe_load((REPO / "configs" / "models" / f"{family}_r50.yaml").read_text())
    cfg["name"] = f"{family}_r18"
    cfg["backbone"]["arch"] = "iresnet18"
    path = tmp / f"{family}_r18.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.fixture(scope="module")
def pipeline_file(tmp_path_factory):
    """The demo reduced: ScaleFace + PFE on one random iResNet-18, MagFace iResNet-18; reject, ROC, report."""
    tmp = tmp_path_factory.mktemp("pipe")
    spec = {
        "name": "tiny-demo",
        "params": {"fars": [0.05, 0.1], "seed": 0},
        "steps": [
            {
                "id": "extract",
                "kind": "extract",
                "with": {
                    "dataset": "synthetic",
                    "random_init": True,
                    "seed": "${seed}",
                    "device": "cpu",
                    "workers": 0,
                    "config": [_r18_config(tmp, "scaleface"), _r18_config(tmp, "pfe"), "magface_r18"],
                },
            },
            {
                "id": "reject",
                "kind": "reject",
                "with": {
                    "cache": "${steps.extract.store}",
                    "protocol": "verification_11",
                    "far": "${fars}",
                    "rejected": "0:0.5:6",
                    "no_figures": True,
                },
            },
            {"id": "roc", "kind": "roc", "with": {"cache": "${steps.extract.store}", "far": [0.05, 0.5]}},
            {"id": "report", "kind": "report", "with": {"title": "tiny"}},
        ],
    }
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _mtimes(folder: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
@pytest.mark.torch
def test_crash_resume_and_changed_param(pipeline_file, tmp_path, monkeypatch):
    pytest.importorskip("torch")
    out = tmp_path / "run"

    def crash(step, ctx):
        raise RuntimeError("injected failure")

    monkeypatch.setattr(KINDS["roc"], "run", crash)
    with pytest.raises(StepError, match="step 'roc' \\(roc\\) failed: RuntimeError: injected failure"):
        run_pipeline(pipeline_file, out)
    assert (out / "extract" / "step.json").is_file() and (out / "reject" / "step.json").is_file()
    assert not (out / "roc" / "step.json").exists() and not (out / "report").exists()
    before = {**_mtimes(out / "extract"), **_mtimes(out / "reject")}
    monkeypatch.undo()

    summary = run_pipeline(pipeline_file, out)
    assert summary.actions == {"extract": "skipped", "reject": "skipped", "roc": "ran", "report": "ran"}
    assert {**_mtimes(out / "extract"), **_mtimes(out / "reject")} == before, "completed steps were rewritten"
    log = (out / "pipeline.log").read_text()
    assert "FAILED roc" in log and "injected failure" in log
    assert "skipped extract (extract): outputs complete, fingerprint" in log
    assert "skipped reject (reject): outputs complete" in log
    html = (out / "report" / "report.html").read_text()
    assert "scaleface_r18" in html and "AUC of TAR@FAR" in html and "ROC: roc" in html
    assert summary.report == out / "report" / "report.html"

    # nothing changed: everything is skipped
    again = run_pipeline(pipeline_file, out)
    assert set(again.actions.values()) == {"skipped"}

    # a changed FAR list re-runs reject and the report only, saying why
    changed = run_pipeline(pipeline_file, out, {"fars": [0.1]})
    assert changed.actions == {"extract": "skipped", "reject": "ran", "roc": "skipped", "report": "ran"}
    assert "args.far" in changed.reasons["reject"] and "needs.reject" in changed.reasons["report"]
    auc = (out / "reject" / "auc.csv").read_text()
    assert "0.05" not in auc.split("\n", 1)[1]
    marker = json.loads((out / "reject" / "step.json").read_text())
    assert marker["payload"]["args"]["far"] == [0.1] and "auc.csv" in marker["outputs"]

    # a deleted output makes its step run again even with the same fingerprint
    (out / "roc" / "roc_table.csv").unlink()
    redo = run_pipeline(pipeline_file, out, {"fars": [0.1]})
    assert redo.actions["roc"] == "ran" and "roc_table.csv is missing" in redo.reasons["roc"]
    assert redo.actions["extract"] == "skipped"
