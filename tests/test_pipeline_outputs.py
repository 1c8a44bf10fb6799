"""Pipeline step folders are owned (issue 8): a rerun replaces only what this tool wrote into a step's
folder; a user's folder at a step's path, or a stranger file in a step folder, is refused and kept."""

from __future__ import annotations

import json

import pytest
import yaml
from analysis_fixture import build_store

from analyze.outputs import OWNER_FILE, read_owner
from pipelines.runner import run_pipeline
from pipelines.steps import StepError


@pytest.fixture
def pipeline(tmp_path):
    store = build_store(tmp_path / "toy.zarr")
    spec = {
        "name": "owned-test",
        "params": {"far": {"default": [0.1]}},
        "steps": [
            {"id": "rej", "kind": "reject",
             "with": {"cache": str(store.path), "far": "${far}", "rejected": "0:0.5:3", "no_figures": True}},
            {"id": "report", "kind": "report"},
        ],
    }  # fmt: skip
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_a_user_folder_at_a_step_path_is_refused_and_kept(tmp_path, pipeline):
    run = tmp_path / "run"
    (run / "rej" / "data").mkdir(parents=True)
    (run / "rej" / "thesis.tex").write_text("mine")
    (run / "rej" / "data" / "x.npy").write_bytes(b"1")
    with pytest.raises(StepError, match=r"step 'rej': folder .*rej was not written by this tool.*data, thesis.tex"):
        run_pipeline(pipeline, run)
    assert (run / "rej" / "thesis.tex").read_text() == "mine" and (run / "rej" / "data" / "x.npy").exists()


def test_a_rerun_replaces_only_the_step_folders_own_files(tmp_path, pipeline):
    run = tmp_path / "run"
    first = run_pipeline(pipeline, run)
    assert first.actions == {"rej": "ran", "report": "ran"}
    for step, command in (("rej", "analyze reject"), ("report", "pipelines report")):
        rec = read_owner(run / step)
        assert rec["complete"] is True and rec["command"] == command and "step.json" not in rec["files"]
    assert set(run_pipeline(pipeline, run).actions.values()) == {"skipped"}  # the record does not break skipping

    changed = run_pipeline(pipeline, run, {"far": [0.05]})
    assert changed.actions == {"rej": "ran", "report": "ran"}

    (run / "rej" / "mine.txt").write_text("user file")
    with pytest.raises(StepError, match=r"holds files this tool did not write: mine.txt.*nothing was deleted"):
        run_pipeline(pipeline, run, {"far": [0.1]})
    assert (run / "rej" / "mine.txt").exists() and (run / "rej" / "reject.parquet").exists()


def test_a_step_folder_from_before_ownership_records_is_replaced_by_its_step_json(tmp_path, pipeline):
    run = tmp_path / "run"
    run_pipeline(pipeline, run)
    (run / "rej" / OWNER_FILE).unlink()  # as written before records existed: step.json lists the outputs
    summary = run_pipeline(pipeline, run, {"far": [0.05]})
    assert summary.actions["rej"] == "ran" and read_owner(run / "rej")["complete"] is True


def test_report_notes_the_pairs_and_fars_fusion_and_roc_left_out(tmp_path):
    store = build_store(tmp_path / "failed.zarr", failed=(4, 31))
    spec = {
        "name": "exclusions-test",
        "steps": [
            {"id": "roc", "kind": "roc", "with": {"cache": str(store.path), "protocol": "images", "no_figures": True}},
            {"id": "fusion", "kind": "fusion", "with": {"cache": str(store.path), "model": "scaleface",
                                                         "fusion": "media"}},
            {"id": "report", "kind": "report"},
        ],
    }  # fmt: skip
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    run_pipeline(path, tmp_path / "run")
    html = (tmp_path / "run" / "report" / "report.html").read_text()
    roc = json.loads((tmp_path / "run" / "roc" / "summary.json").read_text())
    p = roc["pairs"]["scaleface/none"]
    assert roc["excluded"]["images_failed"] == 2 and p["dropped"] > 0
    section = html[html.index('<section id="step-roc">') :]
    assert f"scaleface/none: {p['dropped']:,} of {p['pairs']:,} pairs dropped" in section
    assert "scaleface/none: FAR 1e-06, 1e-05, 0.0001, 0.001 not reported (below 1/n_impostors" in section
    fusion = html[html.index('<section id="step-fusion">') :]
    assert "scaleface/media: FAR 1e-06" in fusion
