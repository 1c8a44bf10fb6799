"""`extract` checks every option before it creates anything: a bad value exits 2 with one error line
naming the option, no traceback, and nothing at --out (nor beside it)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from ijb_fixture import write_ijb

from extract.cli import SYNTHETIC_PRESETS


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_ijb(tmp_path_factory.mktemp("data"), n=4)


def _argv(root, out):
    return ["--dataset", "ijbc", "--data-root", str(root), "--out", str(out), "--random-init"] + [
        "--config",
        "arcface_r18",
        "--device",
        "cpu",
        "--workers",
        "0",
        "--quiet",
    ]


def _run_main(monkeypatch, capsys, argv):
    from extract.cli import main

    monkeypatch.setattr(sys, "argv", ["extract", *argv])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main()
    return exc.value.code, capsys.readouterr().err


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.lower().startswith("error")]


BAD = [
    (["--batch-size", "0"], "--batch-size", "0 is not in the range x>=1"),
    (["--workers", "-1"], "--workers", "-1 is not in the range x>=0"),
    (["--chunk-rows", "0"], "--chunk-rows", "0 is not in the range x>=1"),
    (["--limit", "-5"], "--limit", "-5 is not in the range x>=1"),
    (["--limit", "0"], "--limit", "0 is not in the range x>=1"),
    (["--seed", "-1"], "--seed", "-1 is not in the range x>=0"),
    (["--seed", str(2**64)], "--seed", "past torch's seed range"),
    (["--seed", "abc"], "--seed", "'abc' is not a valid integer"),
    (["--batch-size", "2.5"], "--batch-size", "not a valid integer"),
    (["--device", "tpu"], "--device", "'tpu' is not a device: use auto, cpu, cuda, cuda:N"),
    (["--device", "cuda:x"], "--device", "is not a device"),
    (["--preset", "huge"], "--preset", "'huge' is not one of 'tiny', 'small', 'medium'"),
    (["--precision", "fp8"], "--precision", "'fp8' is not one of"),
    (["--precision", "fp16"], "--precision fp16", "not supported on the CPU; use fp32 or bf16"),
    (["--shard", "2/2"], "--shard", "expected I/N with 0 <= I < N"),
]


@pytest.mark.parametrize("extra, option, phrase", BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_option_exits_2_naming_it_and_creates_nothing(tmp_path, root, monkeypatch, capsys, extra, option, phrase):
    pytest.importorskip("torch")
    out = tmp_path / "store" / "s.zarr"
    code, err = _run_main(monkeypatch, capsys, _argv(root, out) + extra)
    lines = _error_lines(err)
    assert code == 2, err
    assert len(lines) == 1 and option in lines[0] and phrase in lines[0], err
    assert "Traceback" not in err
    assert not out.exists() and not out.parent.exists(), "nothing may be created before the options are checked"


def test_cuda_without_cuda_is_refused_before_the_store(tmp_path, root, monkeypatch, capsys):
    torch = pytest.importorskip("torch")
    out = tmp_path / "s.zarr"
    if torch.cuda.is_available():
        device, phrase = f"cuda:{torch.cuda.device_count()}", "CUDA device(s)"
    else:
        device, phrase = "cuda", "CUDA is not available on this machine; use --device cpu"
    code, err = _run_main(monkeypatch, capsys, _argv(root, out) + ["--device", device])
    lines = _error_lines(err)
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"error: --device {device}: "), err
    assert phrase in lines[0] and "Traceback" not in err
    assert list(tmp_path.iterdir()) == [], "nothing may be created before the device is checked"


def test_a_bad_option_in_a_subprocess_prints_no_traceback(tmp_path, root):
    """The real entry point, as a user runs it: exactly one `error:` line naming the option, exit 2."""
    out = tmp_path / "s.zarr"
    cmd = [sys.executable, "-c", "from extract.cli import main; main()", *_argv(root, out), "--batch-size", "0"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.splitlines() == [
        "error: Invalid value for '--batch-size': 0 is not in the range x>=1. (see 'extract --help')"
    ], res.stderr
    assert not out.exists()


def test_good_values_still_run(tmp_path, root, monkeypatch, capsys):
    """Upper-case device names, --limit within range and --workers 0 are accepted; --limit cuts the images."""
    pytest.importorskip("torch")
    from extract.cli import main
    from featurestore.store import FeatureStore

    out = tmp_path / "s.zarr"
    argv = _argv(root, out) + ["--device", "CPU", "--limit", "3", "--chunk-rows", "2", "--batch-size", "1"]
    monkeypatch.setattr(sys, "argv", ["extract", *argv])
    main()
    with FeatureStore.open(out) as s:
        assert s.n_images == 3 and s.chunk_done().all()


def test_preset_choices_are_the_synthetic_presets():
    from facedata.synthetic import DATASET_PRESETS

    assert tuple(DATASET_PRESETS) == SYNTHETIC_PRESETS
