"""fuse_templates reads its blocks as slices when they are dense and by rows otherwise: both equal `fuse` on the
whole arrays, bit for bit, and `read_fusion_inputs` gives the same inputs either way."""

from __future__ import annotations

import numpy as np
import pytest
from analysis_fixture import build_store, count_fusions

from analyze.fusion import fuse
from analyze.loading import fuse_templates, read_fusion_inputs, valid_rows


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_store(tmp_path_factory.mktemp("lf") / "toy.zarr", failed=(4, 31))


@pytest.mark.parametrize(
    ("model", "fusion"),
    [("magface", "media"), ("pfe", "PFE"), ("scaleface", "weighted"), ("magface", "mean"), ("pfe", "first")],
)
@pytest.mark.parametrize("block_images", [5, 1000])
def test_fuse_templates_equals_fuse_on_all_rows(store, model, fusion, block_images):
    valid = valid_rows(store, [model], False).mask
    rows = np.flatnonzero(valid)  # rows 4 and 31 failed: blocks around them are not dense
    got = fuse_templates(store, model, fusion, valid, block_images=block_images)
    (feats, template), kwargs = read_fusion_inputs(store, model, fusion, rows)
    ref = fuse(fusion, feats, template, **kwargs)
    assert np.array_equal(got.ids, ref.ids) and np.array_equal(got.sizes, ref.sizes)
    assert np.array_equal(got.features, ref.features)
    assert (got.uncertainty is None) == (ref.uncertainty is None)
    if ref.uncertainty is not None:
        assert np.array_equal(got.uncertainty, ref.uncertainty)


def test_dense_and_gathered_reads_agree(store):
    dense = np.arange(10, 40)
    (f1, t1), k1 = read_fusion_inputs(store, "magface", "media", dense)
    gathered = np.r_[dense, 60]  # not consecutive: read_rows' point selection
    (f2, t2), k2 = read_fusion_inputs(store, "magface", "media", gathered)
    assert np.array_equal(f1, f2[:-1], equal_nan=True) and np.array_equal(t1, t2[:-1])  # row 31 failed: NaN
    assert np.array_equal(f1, store.read("magface", "embedding")[dense], equal_nan=True)
    for key in ("media", "detector_score", "features_flip"):
        assert np.array_equal(k1[key], k2[key][:-1], equal_nan=True), key
    assert k1["add_flip"] and k1["keep_norm"] and k1["use_detector_score"]


def _old_pair_rows(ids, pairs):
    """build_pair_set's mapping before the lookup table: searchsorted, keep pairs with both ids found."""
    from analyze.fusion import template_rows

    pos = np.searchsorted(ids, pairs)
    found = ids[np.minimum(pos, len(ids) - 1)] == pairs
    keep = found.all(axis=1)
    return template_rows(ids, pairs[keep, 0]), template_rows(ids, pairs[keep, 1]), keep


@pytest.mark.parametrize(
    "ids",
    [
        np.arange(0, 50),  # dense, from 0: the lookup table
        np.array([-7, -3, 0, 2, 9, 11]),  # negative ids
        np.array([3, 10**9, 10**12]),  # sparse: binary search
        np.array([5]),
    ],
)
def test_pair_rows_equal_the_searchsorted_mapping(ids):
    from analyze.loading import _pair_rows

    rng = np.random.default_rng(len(ids))
    pool = np.r_[ids, ids + 1, [-(10**13), 10**13, ids.min() - 1, ids.max() + 1]]
    pairs = rng.choice(pool, size=(500, 2))
    i, j, keep = _pair_rows(ids, pairs)
    oi, oj, okeep = _old_pair_rows(ids, pairs)
    assert keep is not None and np.array_equal(keep, okeep)
    assert np.array_equal(i, oi) and np.array_equal(j, oj) and i.dtype == oi.dtype
    every = rng.choice(ids, size=(40, 2))  # every id found: no mask
    i, j, keep = _pair_rows(ids, every)
    assert keep is None
    assert np.array_equal(i, _old_pair_rows(ids, every)[0]) and np.array_equal(j, _old_pair_rows(ids, every)[1])


def test_second_command_in_a_process_reuses_the_fusion(tmp_path, monkeypatch):
    """`analyze fusion` then `analyze roc` on the same store and (model, fusion): fused once, the same numbers as
    with a cold cache."""
    from analyze import commands

    path = build_store(tmp_path / "s.zarr").path
    calls = count_fusions(monkeypatch)
    common = {"models": ("magface",), "figures": False}
    commands.fusion(path, tmp_path / "f", commands.FusionOptions(fusions=("mean",), **common))
    assert calls == [("magface", "mean")]
    warm = commands.roc(path, tmp_path / "r1", commands.RocOptions(fusions=("mean",), **common))
    assert calls == [("magface", "mean")]  # not fused again
    from analyze.loading import clear_fused_cache

    clear_fused_cache()
    cold = commands.roc(path, tmp_path / "r2", commands.RocOptions(fusions=("mean",), **common))
    assert len(calls) == 2
    for name in ("roc_table", "roc_curve"):
        assert warm.tables[name].equals(cold.tables[name])


def test_fusion_cache_misses_on_another_mask_options_or_store_contents(tmp_path, monkeypatch):
    import shutil

    from analyze.loading import _FUSED, FUSED_CACHE_ENTRIES

    path = tmp_path / "s.zarr"
    st = build_store(path)
    calls = count_fusions(monkeypatch)
    valid = valid_rows(st, ["pfe"], False).mask
    first = fuse_templates(st, "pfe", "PFE", valid)
    again = fuse_templates(st, "pfe", "PFE", valid.copy())  # an equal mask: a hit, the same arrays
    assert len(calls) == 1 and again.features is first.features
    fewer = valid.copy()
    fewer[3] = False
    other = fuse_templates(st, "pfe", "PFE", fewer)
    assert len(calls) == 2 and not np.array_equal(other.features, first.features)
    fuse_templates(st, "magface", "media", valid, options={"add_flip": False})
    fuse_templates(st, "magface", "media", valid, options={"add_flip": True})
    assert len(calls) == 4 and len(_FUSED) <= FUSED_CACHE_ENTRIES
    st.close()
    shutil.rmtree(path)
    st = build_store(path, seed=1)  # same path, other contents: the store digest differs
    fresh = fuse_templates(st, "pfe", "PFE", valid_rows(st, ["pfe"], False).mask)
    assert len(calls) == 5 and not np.array_equal(fresh.features, first.features)


def test_fusion_cache_is_bounded(tmp_path, monkeypatch):
    from analyze import loading

    st = build_store(tmp_path / "s.zarr")
    calls = count_fusions(monkeypatch)
    valid = valid_rows(st, ["pfe"], False).mask
    one = loading._fused_bytes(fuse_templates(st, "pfe", "PFE", valid))
    monkeypatch.setattr(loading, "FUSED_CACHE_BYTES", one)  # room for one such fusion only
    fuse_templates(st, "pfe", "mean", valid)
    assert sum(loading._fused_bytes(f) for f in loading._FUSED.values()) <= one
    fuse_templates(st, "pfe", "PFE", valid)
    assert len(calls) == 3  # evicted, fused again
