"""Owned outputs (issue 8): --force replaces only folders this tool marked and deletes only the files their
record lists; the current folder, the input store and folders holding it are refused; options are checked
before any folder is made; one FAR-resolution rule in reject, fusion and roc; every command reports what it
excluded; distribution labels stores uniquely."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from analysis_fixture import build_store
from click.testing import CliRunner

from analyze.cli import cli
from analyze.experiments import build_pair_set, run_roc, select
from analyze.loading import valid_rows
from analyze.outputs import OWNER_FILE, OutputExistsError, check_out_dir, claim_out_dir, read_owner
from analyze.scores import pair_scores
from analyze.tarfar import tar_at_far
from featurestore.interrupts import Interrupted

REJECT = ["--far", "0.1", "--rejected", "0:0.5:3", "--no-figures"]


@pytest.fixture
def store(tmp_path):
    return build_store(tmp_path / "toy.zarr", failed=(4, 31))


def _invoke(args, cwd=None):
    runner = CliRunner()  # output holds stdout and stderr
    if cwd is None:
        return runner.invoke(cli, args)
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return runner.invoke(cli, args)
    finally:
        os.chdir(old)


def _tree(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


# ---- ownership ---------------------------------------------------------------------------------------


def test_force_into_the_current_folder_holding_the_store_deletes_nothing(tmp_path, store):
    (tmp_path / "notes.txt").write_text("mine")
    before = _tree(tmp_path)
    res = _invoke(["reject", "--cache", "toy.zarr", "--out", ".", "--force", *REJECT], cwd=tmp_path)
    assert isinstance(res.exception, OutputExistsError), res.output
    assert "contains the input store toy.zarr" in str(res.exception)
    assert _tree(tmp_path) == before


def test_force_refuses_the_current_folder_and_a_user_folder(tmp_path, store):
    work = tmp_path / "work"
    work.mkdir()
    (work / "thesis.tex").write_text("mine")
    res = _invoke(["reject", "--cache", str(store.path), "--out", ".", "--force", *REJECT], cwd=work)
    assert "is the current folder" in str(res.exception)
    user = tmp_path / "results"
    (user / "sub").mkdir(parents=True)
    (user / "a.csv").write_text("1")
    (user / "sub" / "b.csv").write_text("2")
    res = _invoke(["reject", "--cache", str(store.path), "--out", str(user), "--force", *REJECT])
    msg = str(res.exception)
    assert f"{user} was not written by this tool (no {OWNER_FILE})" in msg and "a.csv, sub" in msg
    assert (work / "thesis.tex").read_text() == "mine" and (user / "sub" / "b.csv").read_text() == "2"


def test_out_inside_the_store_or_the_store_itself_is_refused(tmp_path, store):
    for out in (store.path, store.path / "results"):
        res = _invoke(["reject", "--cache", str(store.path), "--out", str(out), "--force", *REJECT])
        assert isinstance(res.exception, OutputExistsError)
        assert "input store" in str(res.exception) and "choose a folder outside it" in str(res.exception)
    assert not (store.path / "results").exists()


def test_force_replaces_only_the_files_its_record_lists(tmp_path, store):
    out = tmp_path / "res"
    args = ["reject", "--cache", str(store.path), "--out", str(out), "--far", "0.1", "--rejected", "0:0.5:3"]
    assert _invoke(args).exit_code == 0
    rec = read_owner(out)
    assert rec["complete"] is True and rec["command"] == "analyze reject"
    on_disk = {p.relative_to(out).as_posix(): p.stat().st_size for p in out.rglob("*") if p.is_file()}
    on_disk.pop(OWNER_FILE)
    assert rec["files"] == on_disk and "reject.parquet" in on_disk and any(k.startswith("figures/") for k in on_disk)

    res = _invoke([*args, "--force", "--no-figures"])  # replaces: the old figures go, record rewritten
    assert res.exit_code == 0, res.output
    assert not (out / "figures").exists() and read_owner(out)["complete"] is True

    (out / "mine.txt").write_text("user file")
    res = _invoke([*args, "--force"])
    assert "holds files this tool did not write: mine.txt" in str(res.exception)
    assert (out / "mine.txt").exists() and (out / "reject.parquet").exists()


def test_without_force_a_non_empty_folder_is_refused_but_a_record_alone_is_not(tmp_path, store):
    out = tmp_path / "res"
    with pytest.raises(ValueError):
        with claim_out_dir(out, False, "analyze reject"):
            raise ValueError("failed before writing")
    assert read_owner(out)["complete"] is False and read_owner(out)["files"] == {}
    assert check_out_dir(out, False) == out  # nothing but our record: reusable without --force
    (out / "x.txt").write_text("x")
    with pytest.raises(OutputExistsError, match="already holds results; pass --force"):
        check_out_dir(out, False)


def test_an_interrupted_analysis_stays_incomplete_and_force_replaces_it(tmp_path, store, monkeypatch):
    import analyze.figures

    def stop(df, out_dir, *args, **kwargs):
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "half.png").write_bytes(b"x")
        raise Interrupted(signal.SIGINT)

    monkeypatch.setattr(analyze.figures, "plot_reject_figures", stop)
    out = tmp_path / "res"
    args = ["reject", "--cache", str(store.path), "--out", str(out), "--far", "0.1", "--rejected", "0:0.5:3"]
    with pytest.raises(Interrupted) as info:
        _invoke(args)
    assert "marked incomplete" in info.value.message and "--force" in info.value.message
    rec = read_owner(out)
    assert rec["complete"] is False and "figures/half.png" in rec["files"] and "reject.parquet" in rec["files"]
    monkeypatch.undo()
    res = _invoke([*args, "--force", "--no-figures"])
    assert res.exit_code == 0, res.output
    assert read_owner(out)["complete"] is True and not (out / "figures").exists()


# ---- options -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--rejected", "0:1:10"], "rejecting every pair leaves no pairs to measure a TAR on"),
        (["--rejected", "0.5:0.2:3"], "0 <= START <= STOP"),
        (["--rejected", "-0.1:0.2:3"], "0 <= START <= STOP"),
        (["--rejected", "0:0.5:1"], "NUM must be at least 2"),
        (["--rejected", "0:0.5"], "expected START:STOP:NUM"),
        (["--far", "0"], "--far"),
        (["--far", "1.5"], "--far"),
        (["--discard-limit", "0"], "--discard-limit"),
        (["--bias", "nan"], "--bias"),
        (["--cluster", "remote:2"], "--cluster"),
    ],
)
def test_bad_options_exit_2_naming_the_option_before_any_folder(tmp_path, store, extra, needle):
    out = tmp_path / "res"
    res = _invoke(["reject", "--cache", str(store.path), "--out", str(out), *extra])
    assert res.exit_code == 2 and needle in res.output, res.output
    assert "Traceback" not in res.output and not out.exists()


def test_fusion_and_roc_check_their_far_options(tmp_path, store):
    for cmd in ("fusion", "roc"):
        res = _invoke([cmd, "--cache", str(store.path), "--out", str(tmp_path / cmd), "--far", "0"])
        assert res.exit_code == 2 and "--far" in res.output and not (tmp_path / cmd).exists()


# ---- FAR resolution ----------------------------------------------------------------------------------


def _n_impostors(store, model="scaleface", fusion="media"):
    models, proto = select(store, [model], None)
    ps = build_pair_set(store, model, proto, proto.level, fusion, valid_rows(store, models, False))
    return ps, int((~ps.labels).sum())


def test_default_fars_below_resolution_are_dropped_with_a_note(tmp_path, store):
    ps, n_imp = _n_impostors(store)
    assert 1e-3 < 1 / n_imp < 1e-2  # the defaults 1e-6 ... 1e-3 cannot be resolved, 1e-2 and 1e-1 can
    out = tmp_path / "roc"
    res = _invoke(["roc", "--cache", str(store.path), "--model", "scaleface", "--out", str(out), "--no-figures"])
    assert res.exit_code == 0, res.output
    table = pd.read_parquet(out / "roc_table.parquet")
    assert [c for c in table.columns if c[0].isdigit()] == ["0.01", "0.1"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["fars_dropped"]["scaleface/media"]["fars"] == [1e-6, 1e-5, 1e-4, 1e-3]
    assert summary["fars_dropped"]["scaleface/media"]["n_impostors"] == n_imp
    assert "note: scaleface/media: default FAR 1e-06, 1e-05, 0.0001, 0.001 not reported" in res.output
    # the reported FARs are the numbers tar_at_far gives (insightface's nearest point), unchanged
    scores = pair_scores("cosine", ps.features, ps.i, ps.j)
    expect = tar_at_far(scores, ps.labels, [0.01, 0.1], "nearest", allow_tiny_far=True).tar
    np.testing.assert_array_equal(table[["0.01", "0.1"]].to_numpy()[0], expect)

    out = tmp_path / "fusion"
    res = _invoke(
        ["fusion", "--cache", str(store.path), "--model", "scaleface", "--fusion", "media", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert sorted(pd.read_parquet(out / "fusion.parquet").far.unique()) == [0.01, 0.1]
    assert json.loads((out / "summary.json").read_text())["fars_dropped"]["scaleface/media"]["fars"][0] == 1e-6


@pytest.mark.parametrize("cmd", ["reject", "fusion", "roc"])
def test_explicit_tiny_far_is_refused_unless_allowed(tmp_path, store, cmd):
    base = [cmd, "--cache", str(store.path), "--model", "scaleface", "--far", "1e-5", "--no-figures"]
    base += ["--rejected", "0:0.5:3"] if cmd == "reject" else []
    res = _invoke([*base, "--out", str(tmp_path / "a")])
    assert "FAR 1e-05 is below the smallest meaningful FAR" in str(res.exception)
    res = _invoke([*base, "--allow-tiny-far", "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output


def test_run_roc_api_keeps_explicit_fars_strict(store):
    with pytest.raises(ValueError, match="below the smallest meaningful FAR"):
        run_roc(store, models=["scaleface"], fars=(1e-6, 0.1))
    table, _, report = run_roc(store, models=["scaleface"], fars=(1e-6, 0.1), allow_tiny_far=True)
    assert list(table.columns[-4:]) == ["1e-06", "0.1", "protocol", "dataset"] and report.fars_dropped == {}


# ---- exclusions --------------------------------------------------------------------------------------


@pytest.mark.parametrize("cmd", ["fusion", "roc"])
def test_fusion_and_roc_report_failed_images_and_dropped_pairs(tmp_path, store, cmd):
    out = tmp_path / cmd
    res = _invoke([cmd, "--cache", str(store.path), "--far", "0.1", "--out", str(out), "--no-figures"])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["excluded"]["images_failed"] == 2 and summary["excluded"]["images_used"] == 88
    assert summary["pairs"]["scaleface/media"]["scored"] + summary["pairs"]["scaleface/media"]["dropped"] == 435
    assert "excluded 2 failed images" in res.output


# ---- distribution ------------------------------------------------------------------------------------


def test_distribution_labels_stores_of_one_dataset_by_their_folder(tmp_path):
    from analyze.distribution_cli import dataset_labels

    for run in ("run1", "run2"):
        build_store(tmp_path / run / "ijbc.zarr", seed=int(run[-1]))
    out = tmp_path / "dist"
    args = ["distribution", "--cache", str(tmp_path / "run1" / "ijbc.zarr")]
    args += ["--cache", str(tmp_path / "run2" / "ijbc.zarr"), "--out", str(out), "--gallery-size", "0"]
    res = _invoke(args)
    assert res.exit_code == 0, res.output
    per_image = pd.read_parquet(out / "uncertainty.parquet")
    assert set(per_image.dataset) == {"toyset[run1]", "toyset[run2]"}
    assert len(per_image) == 2 * per_image[per_image.dataset == "toyset[run1]"].shape[0]
    summary = json.loads((out / "summary.json").read_text())
    assert [e["dataset"] for e in summary["excluded"]] == ["toyset[run1]", "toyset[run2]"]
    assert read_owner(out)["complete"] is True

    assert dataset_labels(["a", "a", "b"], ["x/s.zarr", "x/t.zarr", "y/s.zarr"]) == ["a[s]", "a[t]", "b"]
    assert dataset_labels(["a", "a"], ["p/x/s.zarr", "q/x/s.zarr"]) == ["a[p]", "a[q]"]

    res = _invoke(["distribution", "--cache", str(tmp_path / "run1" / "ijbc.zarr"), "--cache",
                   str(tmp_path / "run1" / ".." / "run1" / "ijbc.zarr"), "--out", str(tmp_path / "d2")])  # fmt: skip
    assert res.exit_code == 2 and "is the same store as" in res.output and not (tmp_path / "d2").exists()


def test_distribution_reports_failed_images(tmp_path, store):
    out = tmp_path / "dist"
    res = _invoke(["distribution", "--cache", str(store.path), "--out", str(out), "--gallery-size", "0"])
    assert res.exit_code == 0, res.output
    (ex,) = json.loads((out / "summary.json").read_text())["excluded"]
    assert ex["images_failed"] == 2 and ex["images_used"] == 88 and ex["dataset"] == "toyset"
    assert "toyset: excluded 0 images not done, 2 failed images" in res.output


def test_an_interrupt_before_the_folder_is_claimed_says_nothing_was_written(tmp_path, store, monkeypatch):
    import analyze.experiments

    def stop(*args, **kwargs):
        raise Interrupted(signal.SIGTERM)

    monkeypatch.setattr(analyze.experiments, "select", stop)
    out = tmp_path / "res"
    with pytest.raises(Interrupted) as info:
        _invoke(["roc", "--cache", str(store.path), "--out", str(out)])
    assert info.value.message.startswith("analyze roc stopped before writing any output") and not out.exists()
