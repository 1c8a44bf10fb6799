"""Progress (issue 12 item 7): the extract bar under `pipelines run` is not silenced; its carriage-return updates
become a live bar on a terminal and periodic `progress:` lines in pipeline.log; analyze shows a bar only on a
terminal; --cluster says where its dashboard is."""

from __future__ import annotations

import io

from pipelines import steps


class _Term(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def _lines(tty: bool, monkeypatch):
    said, logged = [], []

    def say(text, err=False):
        said.append(text)

    say.log_only = logged.append
    term = _Term(tty)
    monkeypatch.setattr(steps.sys, "stderr", term)
    stream = steps._Lines(say, err=True)
    return stream, term, said, logged


def test_bar_updates_on_a_terminal_go_live_to_it_and_now_and_then_to_the_log(monkeypatch):
    stream, term, said, logged = _lines(True, monkeypatch)
    stream.write("extract:  10%|#  | 10/100\r")
    stream.write("extract:  20%|## | 20/100\r")  # within PROGRESS_LOG_SECONDS: not logged again
    stream.write("extract: 100%|###| 100/100\n")
    stream.write("wrote s.zarr\n")
    assert "\rextract:  10%" in term.getvalue() and "\rextract:  20%" in term.getvalue()
    assert logged == ["progress: extract:  10%|#  | 10/100"]
    assert said == ["extract: 100%|###| 100/100", "wrote s.zarr"]


def test_without_a_terminal_progress_lines_are_said(monkeypatch):
    stream, term, said, logged = _lines(False, monkeypatch)
    monkeypatch.setattr(steps, "PROGRESS_LOG_SECONDS", 0.0)
    stream.write("a 1/3\ra 2/3\r")
    stream.write("a 3/3\n")
    assert term.getvalue() == "" and logged == []
    assert said == ["progress: a 1/3", "progress: a 2/3", "a 3/3"]


def test_pipelines_no_longer_force_quiet_on_extract():
    import inspect

    assert 'setdefault("quiet", True)' not in inspect.getsource(steps.run_extract)


def test_analyze_progress_only_on_a_terminal(monkeypatch):
    from analyze import outputs

    monkeypatch.setattr(outputs.sys if hasattr(outputs, "sys") else __import__("sys"), "stderr", _Term(False))
    items = ["a", "b"]
    assert outputs.progress(items, "x") is items
    monkeypatch.setattr(__import__("sys"), "stderr", _Term(True))
    bar = outputs.progress(items, "x")
    assert list(bar) == items and bar is not items


def test_cluster_says_where_its_dashboard_is(capsys):
    from analyze.outputs import _say_dashboard

    class Client:
        dashboard_link = "http://127.0.0.1:8787/status"

    _say_dashboard(Client())
    _say_dashboard(None)
    err = capsys.readouterr().err
    assert "dask dashboard: http://127.0.0.1:8787/status" in err and "not served (install bokeh" in err
