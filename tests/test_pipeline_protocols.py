"""Pipeline step kinds `identify` and `accuracy` (options dataclass from the YAML, fingerprints, owned folders)
and the report's sections for them and for the issue-11 outputs of reject (EDC, references), roc (EER, DET,
intervals) and fusion, on a synthetic image-free store (torch-free)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from analyze.identify import IdentifyOptions, run_identify
from facedata.synthetic.store import synthesize_store
from pipelines.runner import run_pipeline
from pipelines.spec import load_pipeline


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("protocols")
    store = synthesize_store(tmp / "s.zarr", preset="tiny-store", progress=False, models=("scaleface",))
    spec = {
        "name": "protocols-test",
        "params": {"store": str(store), "bootstrap": 5},
        "steps": [
            {"id": "identify", "kind": "identify",
             "with": {"cache": "${store}", "fpir": [0.1, 0.3], "rank": [1, 2], "bootstrap": "${bootstrap}",
                      "seed": 2, "rejected": "0:0.5:6"}},
            {"id": "accuracy", "kind": "accuracy", "with": {"cache": "${store}", "folds": 2, "no_flip": True}},
            {"id": "roc", "kind": "roc",
             "with": {"cache": "${store}", "far": [0.1], "bootstrap": "${bootstrap}", "no_figures": True}},
            {"id": "edc", "kind": "reject",
             "with": {"cache": "${store}", "far": [0.1], "rejected": "0:0.5:6", "threshold": "fixed",
                      "no_figures": True}},
            {"id": "report", "kind": "report", "with": {"title": "protocols"}},
        ],
    }  # fmt: skip
    path = tmp / "p.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    out = tmp / "run"
    run_pipeline(path, out)
    return tmp, path, out, store


def test_identify_step_writes_what_run_identify_writes(run):
    tmp, _, out, store = run
    direct = run_identify(store, tmp / "direct", IdentifyOptions(fpirs=(0.1, 0.3), ranks=(1, 2), bootstrap=5, seed=2,
                                                                 fractions=(0.0, 0.5, 6)))  # fmt: skip
    for name in ("tpir.csv", "cmc.csv", "reject.csv", "reject_auc.csv"):
        assert (out / "identify" / name).read_bytes() == (tmp / "direct" / name).read_bytes(), name
    assert "tpir_lo" in direct.tpir.columns
    marker = json.loads((out / "identify" / "step.json").read_text())
    assert "tpir.parquet" in marker["outputs"] and (out / "identify" / ".scaleface-output.json").is_file()


def test_accuracy_step_and_report_sections(run):
    _, _, out, _ = run
    acc = pd.read_csv(out / "accuracy" / "accuracy.csv")
    assert (acc["folds"] == 2).all() and not acc["flip"].any()
    html = (out / "report" / "report.html").read_text()
    for text in ("1:N identification: identify", "TPIR at FPIR", "CMC", "10-fold verification accuracy: accuracy",
                 "Equal error rate", "TAR@FAR with 95% bootstrap intervals", "EDC (ISO/IEC 29794-1:2024)",
                 "Reference curves&#x27; AUC", "DET"):  # fmt: skip
        assert text in html, text
    md = (out / "report" / "report.md").read_text()
    assert "1:N identification" in md and "10-fold" in md


def test_rerun_skips_and_a_changed_bootstrap_reruns_only_its_steps(run, capsys):
    _, path, out, _ = run
    before = {s: (out / s / "step.json").read_text() for s in ("identify", "accuracy", "roc")}
    run_pipeline(path, out)
    assert {s: (out / s / "step.json").read_text() for s in before} == before
    run_pipeline(path, out, params={"bootstrap": 6})
    after = {s: (out / s / "step.json").read_text() for s in before}
    assert after["accuracy"] == before["accuracy"]
    assert after["identify"] != before["identify"] and after["roc"] != before["roc"]
    assert (pd.read_csv(out / "identify" / "tpir.csv")["bootstrap"] == 6).all()


def test_builtin_protocol_pipelines_parse():
    for name, kind in (("ijbc-identification", "identify"), ("verification-10fold", "accuracy")):
        spec = load_pipeline(name)
        assert kind in [s.kind for s in spec.steps]
    demo = load_pipeline("demo")
    assert "identify" in [s.kind for s in demo.steps]
