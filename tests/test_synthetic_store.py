"""The image-free synthetic store: exact counts, round trip through FeatureStore, uncertainty vs error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from facedata.synthetic.presets import STORE_PRESETS, store_preset
from facedata.synthetic.store import PROTOCOL, plan_store, synthesize_store, synthetic_quality
from featurestore.schema import STATUS_OK
from featurestore.store import FeatureStore


@pytest.mark.slow
def test_ijbc_preset_plans_the_official_counts() -> None:
    plan = plan_store("ijbc", 0)
    p = store_preset("ijbc")
    assert (p.n_images, p.n_templates, p.n_pairs, p.n_genuine) == (469_375, 23_124, 15_658_489, 19_557)
    assert len(plan.quality) == plan.structure.n_images == 469_375
    assert len(np.unique(plan.image_template)) == 23_124
    assert len(plan.label) == 15_658_489 and int(plan.label.sum()) == 19_557
    subj = plan.structure.template_subject
    np.testing.assert_array_equal(plan.label, subj[plan.pairs[:, 0]] == subj[plan.pairs[:, 1]])
    key = plan.pairs[:, 0] * len(subj) + plan.pairs[:, 1]
    assert (np.diff(key) > 0).all()  # sorted and without duplicates
    # realistic sizes: about 20 images per template, several medias, videos with several frames
    per_template = np.bincount(plan.image_template)
    assert 15 < per_template.mean() < 25 and per_template.max() > 60
    assert np.bincount(plan.structure.media_template).mean() > 2.5


@pytest.fixture(scope="module", params=["tiny.zarr", "tiny.h5"])
def tiny_store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("store") / request.param
    synthesize_store(path, "tiny-store", seed=0, chunk_rows=512, progress=False)
    return path


def test_round_trip_counts_and_consistency(tiny_store: Path) -> None:
    p = STORE_PRESETS["tiny-store"]
    with FeatureStore.open(tiny_store) as s:
        assert s.n_images == p.n_images and s.chunk_done().all() and (s.status() == STATUS_OK).all()
        assert s.summary().n_templates == p.n_templates
        proto = s.protocol(PROTOCOL)
        assert len(proto) == p.n_pairs and int(proto.label.sum()) == p.n_genuine
        images = s.images()
        assert images.path[0] == "loose_crop/1.jpg" and images.path[-1] == f"loose_crop/{p.n_images}.jpg"
        t_subject = dict(zip(images.template, images.subject))
        same = np.array([t_subject[a] == t_subject[b] for a, b in proto.pairs])
        np.testing.assert_array_equal(proto.label, same)
        assert np.isfinite(images.landmarks).all() and ((images.detector_score > 0) & (images.detector_score < 1)).all()
        assert set(s.models) == {"scaleface", "pfe", "magface"}
        for m in s.models:
            emb = s.read(m, "embedding")
            assert emb.shape == (p.n_images, p.embedding_dim)
            np.testing.assert_allclose(s.read(m, "norm"), np.linalg.norm(emb, axis=1), rtol=1e-5)
        assert s.read("pfe", "sigma_sq").shape == (p.n_images, p.embedding_dim)
        assert (s.read("pfe", "sigma_sq") > 0).all()
        assert s.attrs["extra"]["synthetic"] == {
            "preset": "tiny-store",
            "seed": 0,
            "generator": "facedata.synthetic.store",
        }


def test_same_seed_same_arrays(tiny_store: Path, tmp_path: Path) -> None:
    again = synthesize_store(tmp_path / "again.zarr", "tiny-store", seed=0, chunk_rows=1000, progress=False)
    with FeatureStore.open(tiny_store) as a, FeatureStore.open(again) as b:
        assert a.attrs["images_digest"] == b.attrs["images_digest"]
        np.testing.assert_array_equal(a.protocol(PROTOCOL).pairs, b.protocol(PROTOCOL).pairs)
        np.testing.assert_array_equal(a.images().landmarks, b.images().landmarks)
        # values are drawn per block of rows, so another chunk size gives the same arrays
        for model, spec in a.models.items():
            for out in spec.outputs:
                np.testing.assert_array_equal(a.read(model, out), b.read(model, out), err_msg=f"{model}/{out}")


def _template_scores(s: FeatureStore, model: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cosine scores of the protocol's template pairs (mean of unit image embeddings), labels, pairs."""
    emb = s.read(model, "embedding").astype(np.float64)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    tmpl = s.image_column("template")
    ids, inv = np.unique(tmpl, return_inverse=True)
    feats = np.zeros((len(ids), emb.shape[1]))
    np.add.at(feats, inv, emb)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    proto = s.protocol(PROTOCOL)
    a, b = np.searchsorted(ids, proto.pairs[:, 0]), np.searchsorted(ids, proto.pairs[:, 1])
    return (feats[a] * feats[b]).sum(1), proto.label, np.stack([a, b], 1)


def test_uncertainty_tracks_quality_and_error(tiny_store: Path) -> None:
    q = synthetic_quality("tiny-store", 0)
    with FeatureStore.open(tiny_store) as s:
        assert spearmanr(q, s.read("scaleface", "scale")).statistic > 0.8
        assert spearmanr(q, s.read("magface", "norm")).statistic > 0.8
        assert spearmanr(q, s.read("pfe", "sigma_sq").mean(axis=1)).statistic < -0.8
        # image level: low-confidence images lie further from their subject's centre
        emb = s.read("scaleface", "embedding")
        emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        subj = s.image_column("subject")
        centre = np.stack([emb[subj == k].mean(0) for k in subj])
        cos = (emb * centre).sum(1)
        assert spearmanr(s.read("scaleface", "scale"), cos).statistic > 0.5
        # pair level: rejecting the half of the pairs with least confident templates raises the AUC
        score, label, idx = _template_scores(s, "scaleface")
        conf_t = np.zeros(idx.max() + 1)
        tmpl = s.image_column("template")
        _, inv = np.unique(tmpl, return_inverse=True)
        np.add.at(conf_t, inv, s.read("scaleface", "scale"))
        conf_t /= np.bincount(inv)
        pair_conf = np.minimum(conf_t[idx[:, 0]], conf_t[idx[:, 1]])
        keep = pair_conf >= np.median(pair_conf)
        assert label[keep].any() and (~label[keep]).any()
        assert roc_auc_score(label[keep], score[keep]) > roc_auc_score(label, score)
        assert 0.85 < roc_auc_score(label, score) < 1.0  # hard enough to leave errors to reject


def test_bad_arguments_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown synthetic store preset 'nope'"):
        synthesize_store(tmp_path / "x.zarr", "nope", progress=False)
    with pytest.raises(ValueError, match="unknown synthetic models"):
        synthesize_store(tmp_path / "x.zarr", "tiny-store", models=("resnet",), progress=False)
