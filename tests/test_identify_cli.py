"""`analyze identify` end to end on a synthetic store: tables against a direct computation from the store's
embeddings (fusion, then brute-force search per gallery), the galleries' mean, refusals, and the command line
without torch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from torchless import run_without_torch

from analyze.fusion import fuse
from analyze.identification import DEFAULT_RANKS, search
from analyze.identify import IdentifyOptions, run_identify
from analyze.outputs import OutputExistsError
from facedata.synthetic.store import IDENTIFICATION, synthesize_store
from featurestore.errors import StoreError
from featurestore.store import FeatureStore

SCHEMA1 = Path(__file__).resolve().parent / "data" / "schema1" / "tiny.h5"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ident") / "tiny.zarr"
    synthesize_store(path, "tiny-store", seed=0, chunk_rows=512, progress=False, models=("scaleface", "pfe"))
    return path


def _direct(path: Path, model: str):
    """Fuse every template with analyze.fusion.fuse from the raw store arrays, then brute-force each gallery."""
    with FeatureStore.open(path) as s:
        im = s.images()
        fused = fuse(
            "media",
            s.read(model, "embedding"),
            im.template,
            media=im.media,
            detector_score=im.detector_score,
            add_flip=False,
        )
        idp = s.identification(IDENTIFICATION)
    pos = {t: i for i, t in enumerate(fused.ids.tolist())}
    feats = fused.features / np.linalg.norm(fused.features, axis=1, keepdims=True)
    probe = feats[[pos[t] for t in idp.probe.template.tolist()]]
    out = {}
    for g, ts in idp.galleries.items():
        S = probe @ feats[[pos[t] for t in ts.template.tolist()]].T
        mated = np.isin(idp.probe.subject, ts.subject)
        nm_top = np.sort(S[~mated].max(axis=1))[::-1]
        k = int(np.round(0.1 * len(nm_top)))
        thr = nm_top[k - 1]
        same = idp.probe.subject[:, None] == ts.subject[None, :]
        hits, ranks = 0, []
        for i in np.flatnonzero(mated):
            ms = S[i][same[i]].max()
            rank = 1 + int((S[i][~same[i]] >= ms).sum())
            ranks.append(rank)
            hits += rank == 1 and ms >= thr
        out[g] = (hits / mated.sum(), thr, [np.mean(np.array(ranks) <= r) for r in DEFAULT_RANKS])
    return out


def test_tables_match_a_direct_computation(store, tmp_path):
    res = run_identify(store, tmp_path / "out", IdentifyOptions(figures=False))
    want = _direct(store, "scaleface")
    t = res.tpir.set_index(["model", "gallery", "fpir"])
    c = res.cmc.set_index(["model", "gallery", "rank"])
    for g, (tpir, thr, rates) in want.items():
        assert t.loc[("scaleface", g, 0.1), "tpir"] == pytest.approx(tpir, abs=1e-12)
        assert t.loc[("scaleface", g, 0.1), "threshold"] == pytest.approx(thr, abs=1e-6)
        for r, rate in zip(DEFAULT_RANKS, rates):
            assert c.loc[("scaleface", g, r), "rate"] == pytest.approx(rate, abs=1e-12)
    # the mean row is the mean of the galleries, not a merged gallery
    mean = t.loc[("scaleface", "mean", 0.1), "tpir"]
    assert mean == pytest.approx(np.mean([want[g][0] for g in want]))
    assert list(res.tpir.columns[:7]) == ["model", "fusion", "gallery", "fpir", "tpir", "threshold", "convention"]
    assert set(res.tpir["convention"]) == {"exact"}
    assert list(res.cmc.columns) == ["model", "fusion", "gallery", "rank", "rate"]
    # FPIR 1e-2 is below 1/n_nonmated (80 non-mated probes per gallery): a default, so dropped with a note
    assert 0.01 not in set(res.tpir["fpir"]) and res.summary["fpirs_dropped"]["scaleface/media/G1"]["n_nonmated"] == 80
    for name in ("tpir", "cmc", "reject", "reject_auc"):
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "out" / f"{name}.parquet"), getattr(res, name))
        assert (tmp_path / "out" / f"{name}.csv").is_file()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["galleries"] == {"G1": 20, "G2": 20} and summary["probes"] == 160
    timings = summary["timings"]  # exclusive stage seconds (analyze.timing), written after the figures
    assert {"fuse", "search", "curves", "write", "other", "total"} <= set(timings)
    assert sum(v for k, v in timings.items() if k != "total") == pytest.approx(timings["total"], abs=0.01)
    assert timings["total"] <= summary["seconds"] + 0.01
    r0 = res.reject[(res.reject["rejected_fraction"] == 0) & (res.reject["model"] == "scaleface")]
    for mode in ("recompute", "fixed"):
        at0 = r0[r0["threshold_mode"] == mode].set_index("gallery")["tpir"]
        assert at0["G1"] == pytest.approx(want["G1"][0]) and at0["G2"] == pytest.approx(want["G2"][0])
    assert set(res.reject["uncertainty"]) == {"scale", "sigma_sq"}


def test_refusals(store, tmp_path):
    with pytest.raises(ValueError, match=r"FPIR 0.001 is below the smallest meaningful FPIR 1/n_nonmated = 0.0125"):
        run_identify(store, tmp_path / "a", IdentifyOptions(fpirs=(1e-3,), figures=False, reject=False))
    res = run_identify(
        store, tmp_path / "b", IdentifyOptions(fpirs=(1e-3,), allow_tiny_far=True, figures=False, reject=False)
    )
    assert (res.tpir["fpir"] == 1e-3).all()
    with pytest.raises(OutputExistsError):
        run_identify(store, tmp_path / "b", IdentifyOptions(figures=False, reject=False))
    run_identify(store, tmp_path / "b", IdentifyOptions(figures=False, reject=False, force=True))
    copy = tmp_path / "schema1.h5"
    shutil.copy(SCHEMA1, copy)
    with pytest.raises(StoreError, match="has no identification .1:N. protocol"):
        run_identify(copy, tmp_path / "c", IdentifyOptions())
    with pytest.raises(StoreError, match="no model 'nope'"):
        run_identify(store, tmp_path / "d", IdentifyOptions(models=("nope",)))


def test_search_refuses_a_subject_in_both_galleries(store):
    with FeatureStore.open(store) as s:
        idp = s.identification(IDENTIFICATION)
    from analyze.identification import check_galleries

    g2 = idp.galleries["G2"].subject.copy()
    g2[0] = idp.galleries["G1"].subject[0]
    with pytest.raises(ValueError, match="has templates in galleries 'G1' and 'G2'"):
        check_galleries({"G1": idp.galleries["G1"].subject, "G2": g2}, idp.probe.subject)
    assert search(np.eye(2), [1, 2], np.eye(2), [1, 2]).mate_rank.tolist() == [1, 1]


@pytest.mark.slow  # two interpreter starts with matplotlib: 8-20 s on 2 busy cores
def test_command_line_without_torch(store, tmp_path):
    out = tmp_path / "cli"
    code = (
        "import sys; from analyze.cli import main; "
        f"sys.argv=['analyze','identify','--cache',{str(store)!r},'--model','pfe','--rank','1','--rank','3',"
        f"'--out',{str(out)!r}]; main()"
    )
    res = run_without_torch(code)
    assert res.returncode == 0, res.stderr
    assert "TPIR@FPIR (exact threshold rule)" in res.stdout and "rank 3" in res.stdout
    assert "default FPIR 0.01 not reported: below 1/n_nonmated = 0.0125" in res.stderr
    figs = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert figs == [
        "cmc_synthetic-tiny-store.png",
        "reject_fixed_fpir0.1_synthetic-tiny-store.png",
        "reject_recompute_fpir0.1_synthetic-tiny-store.png",
        "tpir_fpir_synthetic-tiny-store.png",
    ]
    cmc = pd.read_csv(out / "cmc.csv")
    assert sorted(set(cmc["rank"])) == [1, 3] and set(cmc["gallery"]) == {"G1", "G2", "mean"}
    bad = code.replace("'--rank','1'", "'--fpir','2'")
    res = run_without_torch(bad)
    assert res.returncode == 2 and "--fpir" in res.stderr and "Traceback" not in res.stderr


def test_templates_without_usable_images_are_dropped_and_named(store, tmp_path):
    from featurestore.schema import STATUS_OK, STATUS_UNREADABLE

    path = tmp_path / "failed.zarr"
    shutil.copytree(store, path)
    with FeatureStore.open(path, mode="r+") as s:
        idp = s.identification(IDENTIFICATION)
        tmpl = s.image_column("template")
        a, b = s.chunk_rows_range(0)
        inside = [t for t in np.unique(tmpl[a:b]) if (np.flatnonzero(tmpl == t) < b).all()]
        g1 = next(t for t in idp.galleries["G1"].template if t in inside)
        pr = next(t for t in idp.probe.template if t in inside)
        status = np.where(np.isin(tmpl[a:b], [g1, pr]), STATUS_UNREADABLE, STATUS_OK).astype(np.uint8)
        outputs = {m: {o: s.read(m, o, slice(a, b)) for o in spec.outputs} for m, spec in s.models.items()}
        with s.writer([0]) as w:
            w.write_chunk(0, status, outputs)
    res = run_identify(path, tmp_path / "out", IdentifyOptions(models=("scaleface",), figures=False, reject=False))
    assert res.summary["templates_dropped"] == {"scaleface/media": {"probe": 1, "G1": 1, "G2": 0}}
    assert res.summary["excluded"]["images_failed"] == int((status != STATUS_OK).sum())
    t = res.tpir.set_index(["gallery", "fpir"])
    assert t.loc[("G1", 0.1), "n_mated"] + t.loc[("G1", 0.1), "n_nonmated"] == 159
