"""analyze.timing: exclusive stage seconds that add up to the run's wall time, and summary.json's timings."""

import json
import time

from analyze.timing import STAGES, StageTimes, stage, timed_run


def test_nested_stages_are_exclusive_and_add_up() -> None:
    with timed_run() as times:
        with stage("read"):
            time.sleep(0.02)
            with stage("fuse"):
                time.sleep(0.03)
            time.sleep(0.01)
        with stage("read"):
            time.sleep(0.01)
    d = times.as_dict()
    assert list(d) == ["read", "fuse", "other", "total"]
    assert 0.035 <= d["read"] < 0.2
    assert 0.025 <= d["fuse"] < 0.2
    assert abs(d["read"] + d["fuse"] + d["other"] - d["total"]) < 0.005
    assert times.line().startswith("time: read ")


def test_stage_outside_a_run_records_nothing() -> None:
    with stage("score"):
        pass
    with timed_run() as times:
        pass
    assert set(times.as_dict()) == {"other", "total"}


def test_known_stages_come_first_in_their_order() -> None:
    t = StageTimes()
    for name in ("zzz", "figures", "read"):
        t.enter(name)
        t.leave()
    assert list(t.as_dict())[:3] == ["read", "figures", "zzz"]
    assert STAGES.index("read") < STAGES.index("figures")


def test_reject_summary_has_timings(tmp_path) -> None:
    from analysis_fixture import build_store

    from analyze.commands import RejectOptions, reject

    store = build_store(tmp_path / "s.zarr")
    result = reject(store.path, tmp_path / "out", RejectOptions(fars=(0.1,), fractions=(0.0, 0.5, 3), figures=False))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert set(summary["timings"]) >= {"read", "fuse", "pairs", "score", "uncertainty", "write", "other", "total"}
    assert summary["timings"]["total"] >= summary["timings"]["write"]
    assert result.footer.splitlines()[-1].startswith("time: ")


def test_timed_decorator_counts_every_call() -> None:
    from analyze.timing import timed

    @timed("score")
    def work(x: int) -> int:
        time.sleep(0.01)
        return x + 1

    assert work(1) == 2  # outside a run: just the call
    with timed_run() as times:
        assert work(2) == 3 and work(3) == 4
    assert times.as_dict()["score"] >= 0.02
