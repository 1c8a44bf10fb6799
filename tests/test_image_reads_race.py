"""Image reads cannot be raced: the resolved path is opened and the opened descriptor is checked to lie
inside the data root, for plain files, `.bin` packs and RecordIO packs (a symlink swapped to point outside
between the containment check and the open is refused, never read)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from facedata_fixtures import ir_pack, jpeg_bytes, write_bin, write_recordio

import facedata.paths
from facedata.errors import DataError, MissingFileError
from facedata.images import open_image_bytes
from facedata.paths import open_resolved, real_under

SECRET = b"outside the data root: must never be read"


def swap_after_check(monkeypatch: pytest.MonkeyPatch, swap) -> list[str]:
    """Run `swap()` right after the containment check of every path resolved under a data root."""
    real = facedata.paths._resolve
    seen: list[str] = []

    def checked_then_swapped(root, rel, source):
        out = real(root, rel, source)
        seen.append(str(rel))
        swap()
        return out

    monkeypatch.setattr(facedata.paths, "_resolve", checked_then_swapped)
    return seen


def make_root(tmp_path: Path) -> tuple[Path, Path]:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "faces").mkdir(parents=True)
    outside.mkdir()
    return root, outside


def test_swapped_file_symlink_reads_the_checked_target_not_the_new_one(tmp_path, monkeypatch):
    root, outside = make_root(tmp_path)
    (root / "faces" / "real.jpg").write_bytes(b"inside")
    (outside / "secret.jpg").write_bytes(SECRET)
    os.symlink(root / "faces" / "real.jpg", root / "faces" / "link.jpg")

    def swap():
        (root / "faces" / "link.jpg").unlink()
        os.symlink(outside / "secret.jpg", root / "faces" / "link.jpg")

    seen = swap_after_check(monkeypatch, swap)
    assert open_image_bytes(root, "faces/link.jpg") == b"inside"  # the old code read SECRET here
    assert seen == ["faces/link.jpg"]


def test_checked_file_replaced_by_outside_symlink_is_refused(tmp_path, monkeypatch):
    root, outside = make_root(tmp_path)
    (root / "faces" / "a.jpg").write_bytes(b"inside")
    (outside / "secret.jpg").write_bytes(SECRET)

    def swap():
        (root / "faces" / "a.jpg").unlink()
        os.symlink(outside / "secret.jpg", root / "faces" / "a.jpg")

    swap_after_check(monkeypatch, swap)
    with pytest.raises(DataError, match=r"^faces/a\.jpg: .*symlink") as err:
        open_image_bytes(root, "faces/a.jpg")
    assert not isinstance(err.value, MissingFileError)


def test_checked_folder_replaced_by_outside_symlink_is_refused(tmp_path, monkeypatch):
    root, outside = make_root(tmp_path)
    (root / "faces" / "a.jpg").write_bytes(b"inside")
    (outside / "a.jpg").write_bytes(SECRET)

    def swap():
        shutil.rmtree(root / "faces")
        os.symlink(outside, root / "faces")

    swap_after_check(monkeypatch, swap)
    with pytest.raises(DataError, match=r"^faces/a\.jpg: opened .*outside the data root"):
        open_image_bytes(root, "faces/a.jpg")


def test_bin_pack_behind_swapped_folder_is_refused(tmp_path, monkeypatch):
    root, outside = make_root(tmp_path)
    write_bin(root / "faces" / "lfw.bin", [jpeg_bytes(1), jpeg_bytes(2)], [True])
    write_bin(outside / "lfw.bin", [SECRET, SECRET], [True])

    def swap():
        shutil.rmtree(root / "faces")
        os.symlink(outside, root / "faces")

    swap_after_check(monkeypatch, swap)
    with pytest.raises(DataError, match=r"^faces/lfw\.bin: opened .*outside the data root"):
        open_image_bytes(root, "faces/lfw.bin#0")


def test_recordio_pack_behind_swapped_folder_is_refused(tmp_path, monkeypatch):
    root, outside = make_root(tmp_path)
    write_recordio(root / "faces" / "train.rec", {1: ir_pack(0, jpeg_bytes(3))})
    write_recordio(outside / "train.rec", {1: ir_pack(0, SECRET)})
    assert open_image_bytes(root, "faces/train.rec#1") == jpeg_bytes(3)

    def swap():
        if (root / "faces").is_symlink():
            return
        shutil.rmtree(root / "faces")
        os.symlink(outside, root / "faces")

    swap_after_check(monkeypatch, swap)
    with pytest.raises(DataError, match=r"^faces/train\.(rec|idx): opened .*outside the data root"):
        open_image_bytes(root, "faces/train.rec#1")


def test_open_resolved_checks_the_descriptor_itself(tmp_path):
    root, outside = make_root(tmp_path)
    (root / "faces" / "a.jpg").write_bytes(b"inside")
    (outside / "a.jpg").write_bytes(SECRET)
    real = real_under(root, "faces/a.jpg")
    with open_resolved(root, real, "faces/a.jpg") as f:
        assert f.read() == b"inside"
    shutil.rmtree(root / "faces")
    os.symlink(outside, root / "faces")
    with pytest.raises(DataError, match="outside the data root"):
        open_resolved(root, real, "faces/a.jpg")


def test_missing_and_non_regular_files(tmp_path):
    root, _ = make_root(tmp_path)
    with pytest.raises(MissingFileError, match=r"^faces/x\.jpg: image file not found$"):
        open_image_bytes(root, "faces/x.jpg")
    (root / "faces" / "dir.jpg").mkdir()
    with pytest.raises(MissingFileError, match=r"^faces/dir\.jpg: not a regular file$"):
        open_image_bytes(root, "faces/dir.jpg")
    os.mkfifo(root / "faces" / "fifo.jpg")  # must not block
    with pytest.raises(MissingFileError, match=r"^faces/fifo\.jpg: not a regular file$"):
        open_image_bytes(root, "faces/fifo.jpg")
    with pytest.raises(DataError, match=r"^faces/none\.bin: file not found$"):
        open_image_bytes(root, "faces/none.bin#0")


def test_descriptor_check_without_proc(tmp_path, monkeypatch):
    """Where /proc is unavailable the descriptor must be the very file that was resolved (fstat vs stat)."""
    root, outside = make_root(tmp_path)
    (root / "faces" / "a.jpg").write_bytes(b"inside")
    (outside / "a.jpg").write_bytes(SECRET)
    real_readlink = os.readlink

    def no_proc(path, *args, **kwargs):
        if str(path).startswith("/proc/"):
            raise OSError("no /proc here")
        return real_readlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "readlink", no_proc)
    assert open_image_bytes(root, "faces/a.jpg") == b"inside"
    real = real_under(root, "faces/a.jpg")
    fd = os.open(outside / "a.jpg", os.O_RDONLY)
    try:
        with pytest.raises(DataError, match="changed while it was opened"):
            facedata.paths.verify_open_file(fd, root, real, "faces/a.jpg")
    finally:
        os.close(fd)
