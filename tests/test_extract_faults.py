"""The real `extract` command under faults: a full disk (tmpfs), kill -9, injected write errors, damaged
chunks repaired with --repair. Each ends in a store equal, bit for bit, to an uninterrupted run's."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import store_snapshot
from ijb_fixture import extract_cmd, write_ijb

from featurestore.errors import StoreError
from featurestore.store import FeatureStore

pytestmark = [pytest.mark.torch, pytest.mark.slow]

FORMATS = [".zarr", ".h5"]
N_CHUNKS = 12
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), *sys.path])}


def _cmd(root, out, *extra):
    return extract_cmd(root, out, *extra)


def run(root, out, *extra, check=True):
    res = subprocess.run(_cmd(root, out, *extra), capture_output=True, text=True, timeout=600, env=ENV)
    if check:
        assert res.returncode == 0, res.stderr
    return res


snapshot = store_snapshot


def assert_same(path, want: dict) -> None:
    got = snapshot(path)
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def verified_done(path) -> np.ndarray:
    """Done chunks, after checking each one's data really is all there (open + verify)."""
    from featurestore.integrity import verify

    with FeatureStore.open(path) as s:
        assert verify(s) == []
        return s.chunk_done()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_ijb(tmp_path_factory.mktemp("ijb"), n=24, missing=(9,))


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """An uninterrupted run per format: {suffix: (path, snapshot)}."""
    out = {}
    for suffix in FORMATS:
        path = tmp_path_factory.mktemp("ref") / f"full{suffix}"
        run(data, path)
        out[suffix] = (path, snapshot(path))
    return out


# ---- full disk -----------------------------------------------------------------------------------


@pytest.fixture
def tmpfs(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _usage_on(fs: Path, store: Path) -> int:
    """Bytes `store` takes on the filesystem at `fs` (tmpfs counts whole pages per file)."""
    copy = fs / f"probe{store.suffix}"
    before = shutil.disk_usage(fs).used
    shutil.copytree(store, copy) if store.is_dir() else shutil.copy(store, copy)
    used = shutil.disk_usage(fs).used - before
    shutil.rmtree(copy) if copy.is_dir() else copy.unlink()
    return used


NO_PRECHECK = (
    "import featurestore.store as fs\n"
    "fs.ChunkWriter._check_space = lambda self, chunk, nbytes: None\n"
    "from extract.cli import main; main()\n"
)


@pytest.mark.parametrize("suffix, precheck", [(".zarr", False), (".h5", True), (".h5", False)])
def test_full_disk_stops_with_one_line_marks_nothing_unwritten_and_resumes(tmpfs, data, reference, suffix, precheck):
    """Without the HDF5 free-space check the real ENOSPC from libhdf5 must be caught too (it used to
    vanish in a chunk-cache eviction: every chunk marked done, then exit 139)."""
    from featurestore.store import DISK_MARGIN_BYTES

    ref_path, want = reference[suffix]
    # leave room for the store's creation and a few chunks, not all of them
    leave = _usage_on(tmpfs, ref_path) * 2 // 3 + (DISK_MARGIN_BYTES if precheck else 0)
    free = shutil.disk_usage(tmpfs).free
    filler = tmpfs / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * (free - leave))
    out = tmpfs / f"s{suffix}"
    cmd = _cmd(data, out)
    if not precheck:
        cmd[2] = NO_PRECHECK
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=ENV)
    assert res.returncode == 2, (res.returncode, res.stderr)  # never 139 (a crash)
    assert "HDF5-DIAG" not in res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in res.stderr, res.stderr
    line = errors[0]
    assert "No space left on device" in line and f"of {N_CHUNKS} chunks are done" in line, line
    assert "rerun the same command to resume" in line
    done = verified_done(out)
    assert 0 < done.sum() < N_CHUNKS, res.stderr
    filler.unlink()
    res = run(data, out)
    assert f"{N_CHUNKS - done.sum()} written, {done.sum()} already done" in res.stderr
    assert_same(out, want)


# ---- kill -9 -------------------------------------------------------------------------------------


def _done_now(path) -> int:
    """Chunks marked done so far, read while another process writes (no HDF5 lock, errors count as 0)."""
    try:
        if path.suffix == ".h5":
            with h5py.File(path, "r", locking=False) as f:
                return int(f["progress/chunk_done"][:].sum())
        with FeatureStore.open(path, check=False) as s:
            return int(s.chunk_done().sum())
    except (StoreError, OSError, KeyError):
        return 0


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize("kill_after", [1, 6])
def test_sigkill_then_resume_equals_uninterrupted(tmp_path, data, reference, suffix, kill_after):
    out = tmp_path / f"killed{suffix}"
    proc = subprocess.Popen(_cmd(data, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    deadline = time.time() + 300
    while _done_now(out) < kill_after and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    done = verified_done(out)  # whatever is marked done is whole
    assert kill_after <= done.sum() < N_CHUNKS, f"kill landed after {done.sum()} chunks"
    res = run(data, out)
    assert f"{N_CHUNKS - done.sum()} written, {done.sum()} already done" in res.stderr
    assert_same(out, reference[suffix][1])


# ---- injected write errors through the real runner -----------------------------------------------


@pytest.mark.parametrize("suffix", FORMATS)
def test_injected_write_error_stops_the_run_and_no_later_chunk_is_written(tmp_path, data, reference, suffix):
    """The background writer fails at chunk 4 (EIO): the main loop stops, chunks 5.. are never written."""
    out = tmp_path / f"s{suffix}"
    code = (
        "import errno, os\n"
        "import featurestore.backend as fb\n"
        "class Failing:\n"
        "    def __init__(self, arr): self.arr = arr\n"
        "    def __getattr__(self, name): return getattr(self.arr, name)\n"
        "    def __getitem__(self, item): return self.arr[item]\n"
        "    def __setitem__(self, item, value):\n"
        "        if isinstance(item, slice) and item.start == 8:  # rows of chunk 4\n"
        "            raise OSError(errno.EIO, os.strerror(errno.EIO))\n"
        "        self.arr[item] = value\n"
        "for cls in (fb.ZarrBackend, fb.HDF5Backend):\n"
        "    def array(self, key, real=cls.array):\n"
        "        arr = real(self, key)\n"
        "        return Failing(arr) if key.startswith('models/') else arr\n"
        "    cls.array = array\n"
        "from extract.cli import main; main()\n"
    )
    cmd = _cmd(data, out)
    cmd[2] = code
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=ENV)
    assert res.returncode == 2, res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, res.stderr
    assert "for chunk 4 failed: OSError: [Errno 5] Input/output error" in errors[0]
    assert f"4 of {N_CHUNKS} chunks are done" in errors[0]
    done = verified_done(out)
    np.testing.assert_array_equal(np.flatnonzero(done), [0, 1, 2, 3])
    with FeatureStore.open(out) as s:
        assert np.isnan(s.read("arcface_r18", "embedding")[8:]).all()  # nothing after the failure was written
    run(data, out)
    assert_same(out, reference[suffix][1])


# ---- damaged chunks: --verify lists them, --repair redoes exactly those --------------------------


def _corrupt_chunk(path: Path, key: str, chunk: int) -> None:
    if path.suffix == ".zarr":
        f = path / key / "c" / str(chunk)
        while f.is_dir():
            f = f / "0"
        f.unlink()
        return
    with h5py.File(path, "r") as h:
        ds = h[key]
        info = ds.id.get_chunk_info_by_coord((chunk * ds.chunks[0],) + (0,) * (ds.ndim - 1))
    with open(path, "r+b") as f:
        f.seek(info.byte_offset + info.size // 2)
        b = f.read(1)
        f.seek(info.byte_offset + info.size // 2)
        f.write(bytes([b[0] ^ 0x5A]))


@pytest.mark.parametrize("suffix", FORMATS)
def test_verify_lists_and_repair_redoes_exactly_the_damaged_chunks(tmp_path, data, reference, suffix):
    ref_path, want = reference[suffix]
    out = tmp_path / f"s{suffix}"
    shutil.copytree(ref_path, out) if ref_path.is_dir() else shutil.copy(ref_path, out)
    _corrupt_chunk(out, "models/arcface_r18/embedding", 3)
    _corrupt_chunk(out, "images/status", 7)
    res = run(data, out, "--verify", check=False)
    assert res.returncode == 1, res.stderr
    damaged = [ln for ln in res.stdout.splitlines() if ln.startswith("damaged")]
    assert len(damaged) == 2, res.stdout
    assert "models/arcface_r18/embedding chunk 3 (rows 6-7)" in damaged[0]
    assert "images/status chunk 7 (rows 14-15)" in damaged[1]
    res = run(data, out, "--repair")
    assert "repair: redoing chunks 3, 7" in res.stderr
    assert "chunks: 2 written, 0 already done" in res.stderr
    assert "verifies clean" in res.stderr
    assert_same(out, want)
    res = run(data, out, "--verify")
    assert "intact" in res.stdout
    res = run(data, out, "--repair")
    assert "has no damage; nothing to do" in res.stderr


def test_extract_overwrite_never_deletes_a_folder_that_is_not_a_store(tmp_path, data):
    user = tmp_path / f"photos-{uuid.uuid4().hex[:6]}.zarr"
    user.mkdir()
    (user / "keep.txt").write_text("mine")
    res = run(data, user, "--overwrite", check=False)
    assert res.returncode == 2
    assert "is not a feature store" in res.stderr and "nothing was deleted" in res.stderr
    assert (user / "keep.txt").read_text() == "mine"
