"""Fused templates on disk beside the store (analyze.fusion_cache): a later process reads what an earlier one fused,
bit for bit; a changed store, a damaged file or a folder that is not the cache's is never trusted or touched."""

from __future__ import annotations

import numpy as np
import pytest
from analysis_fixture import build_store, count_fusions

from analyze import fusion_cache, loading
from analyze.loading import fuse_templates, valid_rows


@pytest.fixture
def cached(tmp_path, monkeypatch):
    """The disk cache on, in tmp_path/cache; the in-process cache empty; a list of the fusions actually made."""
    folder = tmp_path / "cache"
    monkeypatch.setenv(fusion_cache.FUSION_CACHE_ENV, str(folder))
    calls = count_fusions(monkeypatch)
    yield folder, calls
    loading.clear_fused_cache()


def _same(a, b) -> bool:
    arrays = ("ids", "features", "uncertainty", "sizes")
    return all(
        (getattr(a, n) is None and getattr(b, n) is None)
        or (getattr(a, n).dtype == getattr(b, n).dtype and np.array_equal(getattr(a, n), getattr(b, n)))
        for n in arrays
    )


@pytest.mark.parametrize(("model", "fusion"), [("pfe", "PFE"), ("magface", "media"), ("scaleface", "mean")])
def test_a_later_process_reads_the_fusion_bit_for_bit(tmp_path, cached, model, fusion):
    folder, calls = cached
    st = build_store(tmp_path / "s.zarr", failed=(4,))
    valid = valid_rows(st, [model], False).mask
    first = fuse_templates(st, model, fusion, valid)
    fusion_cache.wait_for_writes()
    assert calls == [(model, fusion)]
    files = list(folder.glob("fused-*.npz"))
    assert len(files) == 1 and (folder / fusion_cache.MARKER).is_file()
    loading.clear_fused_cache()  # as a new process would start
    again = fuse_templates(st, model, fusion, valid)
    assert calls == [(model, fusion)]  # read, not fused
    assert _same(first, again)
    assert not again.features.flags.writeable  # shared with later callers, as in-process hits are


def test_the_default_folder_is_beside_the_store_and_off_means_none(tmp_path, monkeypatch):
    monkeypatch.setenv(fusion_cache.FUSION_CACHE_ENV, "")
    assert fusion_cache.cache_dir(tmp_path / "a" / "ijbc.zarr") == (tmp_path / "a" / "ijbc.zarr.cache" / "fused")
    for off in ("off", "0", "no", "OFF"):
        monkeypatch.setenv(fusion_cache.FUSION_CACHE_ENV, off)
        assert fusion_cache.cache_dir(tmp_path / "ijbc.zarr") is None


def test_other_contents_options_or_rows_miss(tmp_path, cached):
    import shutil

    folder, calls = cached
    path = tmp_path / "s.zarr"
    st = build_store(path)
    valid = valid_rows(st, ["magface"], False).mask
    fuse_templates(st, "magface", "media", valid, options={"add_flip": True})
    loading.clear_fused_cache()
    fuse_templates(st, "magface", "media", valid, options={"add_flip": False})  # other options
    fewer = valid.copy()
    fewer[2] = False
    loading.clear_fused_cache()
    fuse_templates(st, "magface", "media", fewer, options={"add_flip": True})  # other rows
    fusion_cache.wait_for_writes()
    assert len(calls) == 3 and len(list(folder.glob("fused-*.npz"))) == 3
    st.close()
    shutil.rmtree(path)
    st = build_store(path, seed=1)  # the same path, other contents: another store digest
    loading.clear_fused_cache()
    fresh = fuse_templates(st, "magface", "media", valid_rows(st, ["magface"], False).mask, options={"add_flip": True})
    fusion_cache.wait_for_writes()
    assert len(calls) == 4
    loading.clear_fused_cache()
    assert _same(fresh, fuse_templates(st, "magface", "media", valid_rows(st, ["magface"], False).mask,
                                       options={"add_flip": True}))  # fmt: skip
    assert len(calls) == 4


def test_a_damaged_or_foreign_file_is_recomputed_and_rewritten(tmp_path, cached):
    folder, calls = cached
    st = build_store(tmp_path / "s.zarr")
    valid = valid_rows(st, ["pfe"], False).mask
    first = fuse_templates(st, "pfe", "PFE", valid)
    fusion_cache.wait_for_writes()
    (path,) = folder.glob("fused-*.npz")
    for damage in (b"not a zip file", path.read_bytes()[:-100]):
        path.write_bytes(damage)
        loading.clear_fused_cache()
        again = fuse_templates(st, "pfe", "PFE", valid)
        fusion_cache.wait_for_writes()
        assert _same(first, again)
    assert len(calls) == 3
    # a file whose arrays were changed after writing: its crc32 no longer matches
    with np.load(path) as z:
        parts = {k: z[k] for k in z.files}
    parts["features"] = parts["features"] + 1.0
    np.savez(path, **parts)
    loading.clear_fused_cache()
    assert _same(first, fuse_templates(st, "pfe", "PFE", valid))
    assert len(calls) == 4


def test_a_folder_that_is_not_the_cache_is_left_alone(tmp_path, cached, capsys):
    folder, calls = cached
    folder.mkdir()
    mine = folder / "notes.txt"
    mine.write_text("the user's file")
    st = build_store(tmp_path / "s.zarr")
    valid = valid_rows(st, ["pfe"], False).mask
    fuse_templates(st, "pfe", "PFE", valid)
    fusion_cache.wait_for_writes()
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"] and mine.read_text() == "the user's file"
    assert "is not a fusion cache" in capsys.readouterr().err


def test_an_unwritable_folder_only_costs_a_note(tmp_path, cached, capsys, monkeypatch):
    folder, calls = cached
    st = build_store(tmp_path / "s.zarr")
    valid = valid_rows(st, ["pfe"], False).mask

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(fusion_cache.Path, "mkdir", refuse)
    fused = fuse_templates(st, "pfe", "PFE", valid)
    fusion_cache.wait_for_writes()
    assert fused.features.shape[0] > 0
    assert "fusion cache not written" in capsys.readouterr().err


def test_prune_removes_only_the_oldest_cache_files(tmp_path):
    import os

    folder = tmp_path / "c"
    folder.mkdir()
    (folder / fusion_cache.MARKER).write_text("x")
    other = folder / "keep.npz"
    other.write_bytes(b"0" * 1000)
    for k in range(4):
        p = folder / f"fused-{k}.npz"
        p.write_bytes(b"0" * 1000)
        os.utime(p, (1000 + k, 1000 + k))
    stale = folder / ".fused-x.1.tmp.npz"
    stale.write_bytes(b"0")
    os.utime(stale, (0, 0))
    unmarked = tmp_path / "not-a-cache"
    unmarked.mkdir()
    (unmarked / "fused-0.npz").write_bytes(b"0" * 1000)
    fusion_cache.prune(unmarked, limit=0)  # no marker: not ours, nothing removed
    assert [p.name for p in unmarked.iterdir()] == ["fused-0.npz"]
    fusion_cache.prune(folder, limit=2500)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [fusion_cache.MARKER, "keep.npz", "fused-2.npz", "fused-3.npz"]
    )


def test_roc_with_a_warm_disk_cache_equals_a_cold_run(tmp_path, cached):
    from analyze import commands

    folder, calls = cached
    path = build_store(tmp_path / "s.zarr").path
    common = {"models": ("magface", "pfe"), "figures": False}
    cold = commands.roc(path, tmp_path / "r1", commands.RocOptions(fusions=("mean", "media"), **common))
    fusion_cache.wait_for_writes()
    n = len(calls)
    loading.clear_fused_cache()
    warm = commands.roc(path, tmp_path / "r2", commands.RocOptions(fusions=("mean", "media"), **common))
    assert len(calls) == n  # every fusion read from disk
    for name in ("roc_table", "roc_curve"):
        assert warm.tables[name].equals(cold.tables[name])


def test_an_unexpected_write_error_is_a_note_at_the_end(tmp_path, cached, capsys, monkeypatch):
    folder, calls = cached
    st = build_store(tmp_path / "s.zarr")

    def broken(*args, **kwargs):
        raise ValueError("no room in the archive")

    monkeypatch.setattr(fusion_cache.np, "savez", broken)
    fused = fuse_templates(st, "pfe", "PFE", valid_rows(st, ["pfe"], False).mask)
    fusion_cache.wait_for_writes()
    assert fused.features.shape[0] > 0 and sorted(p.name for p in folder.iterdir()) == [fusion_cache.MARKER]
    assert "fusion cache not written (ValueError: no room in the archive)" in capsys.readouterr().err
