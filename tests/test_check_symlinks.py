"""`datasets check` reports what extract would refuse or find empty: image files (or packs) resolving
outside the data root through symlinked files or folders, protocols with 0 pairs, a dataset of 0 images."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml
from facedata_fixtures import jpeg_bytes, manifest, write_bin, write_ijb

from facedata.check import check_dataset
from facedata.paths import scan_under

REPO = Path(__file__).resolve().parent.parent


def ijb(tmp_path: Path) -> tuple[Path, Path, dict]:
    root, outside = tmp_path / "IJBC", tmp_path / "elsewhere"
    outside.mkdir()
    return root, outside, write_ijb(root)


def test_image_symlink_out_of_the_root_is_a_problem(tmp_path):
    root, outside, raw = ijb(tmp_path)
    (outside / "2.jpg").write_bytes(jpeg_bytes(1))
    (root / "loose_crop" / "2.jpg").unlink()
    os.symlink(outside / "2.jpg", root / "loose_crop" / "2.jpg")
    report = check_dataset(manifest(tmp_path, raw), root)
    assert not report.ok
    assert report.n_outside == 1 and report.n_missing == 0
    assert report.outside == [f"loose_crop/2.jpg -> {os.path.realpath(outside / '2.jpg')}"]
    text = report.format()
    assert "PROBLEMS FOUND" in text and "outside the data root" in text and "loose_crop/2.jpg ->" in text


def test_images_behind_a_symlinked_folder_are_a_problem(tmp_path):
    root, outside, raw = ijb(tmp_path)
    os.rename(root / "loose_crop", outside / "loose_crop")
    os.symlink(outside / "loose_crop", root / "loose_crop")
    report = check_dataset(manifest(tmp_path, raw), root, max_list=2)
    assert not report.ok and report.n_outside == 4 and len(report.outside) == 2
    assert report.outside[0].startswith("loose_crop/1.jpg -> ")


def test_symlinks_inside_the_root_are_fine_and_dangling_ones_missing(tmp_path):
    root, _, raw = ijb(tmp_path)
    (root / "store").mkdir()
    os.rename(root / "loose_crop" / "1.jpg", root / "store" / "1.jpg")
    os.symlink(root / "store" / "1.jpg", root / "loose_crop" / "1.jpg")
    os.symlink("../store/1.jpg", root / "loose_crop" / "link.jpg")
    assert check_dataset(manifest(tmp_path, raw), root).ok
    (root / "loose_crop" / "2.jpg").unlink()
    os.symlink(root / "store" / "absent.jpg", root / "loose_crop" / "2.jpg")
    report = check_dataset(manifest(tmp_path, raw), root)
    assert not report.ok and report.missing == ["loose_crop/2.jpg"] and report.n_outside == 0


def test_the_data_root_itself_may_be_a_symlink(tmp_path):
    root, _, raw = ijb(tmp_path)
    os.symlink(root, tmp_path / "link-to-root")
    assert check_dataset(manifest(tmp_path, raw), tmp_path / "link-to-root").ok


def test_bin_pack_symlinked_out_is_a_problem(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    write_bin(outside / "lfw.bin", [jpeg_bytes(1), jpeg_bytes(2)], [True])
    raw = {"name": "v", "layout": "bin", "aligned": True, "protocols": {"lfw": {"pairs": "lfw.bin"}}}
    os.symlink(outside / "lfw.bin", root / "lfw.bin")
    report = check_dataset(manifest(tmp_path, raw), root)
    # the reader refuses the pack as a manifest file; the report names it either way
    assert not report.ok and "lfw.bin" in report.format() and "outside the data root" in report.format()


def test_empty_protocol_and_empty_dataset_are_problems(tmp_path):
    root, _, raw = ijb(tmp_path)
    (root / "meta" / "ijbc_template_pair_label.txt").write_text("")
    report = check_dataset(manifest(tmp_path, raw), root)
    assert not report.ok and report.problems == ["protocol v11 has 0 pairs"]
    assert "problem: protocol v11 has 0 pairs" in report.format()
    for f in ("ijbc_face_tid_mid.txt", "ijbc_name_5pts_score.txt"):
        (root / "meta" / f).write_text("")
    report = check_dataset(manifest(tmp_path, raw), root)
    assert not report.ok and report.problems == ["the dataset has 0 images", "protocol v11 has 0 pairs"]


def test_scan_checks_each_file_once_without_opening_it(tmp_path):
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    for k in range(5):
        (root / "a" / f"{k}.jpg").write_bytes(b"x")
        os.chmod(root / "a" / f"{k}.jpg", 0)  # unreadable: only lstat is allowed
    names = [f"a/{k % 6}.jpg" for k in range(30)]
    missing, outside = scan_under(root, names)
    assert missing == ["a/5.jpg"] and outside == []


def test_cli_check_exits_1_naming_the_escaping_file(tmp_path):
    root, outside, raw = ijb(tmp_path)
    (outside / "3.jpg").write_bytes(jpeg_bytes(1))
    (root / "loose_crop" / "3.jpg").unlink()
    os.symlink(outside / "3.jpg", root / "loose_crop" / "3.jpg")
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(raw))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-c", "from facedata.cli import main; main()", "check"]
    res = subprocess.run(
        cmd + ["--dataset", str(tmp_path / "mine.yaml"), "--data-root", str(root)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert res.returncode == 1, res.stderr
    assert "PROBLEMS FOUND" in res.stdout and "loose_crop/3.jpg ->" in res.stdout
