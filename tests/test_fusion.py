"""Template fusion against direct per-template loops written after the original scripts."""

from __future__ import annotations

import numpy as np
import pytest

from analyze import vocabulary as names
from analyze.fusion import fuse, template_rows

D = 4
rng = np.random.default_rng(2)
# templates of sizes 1..5 with non-contiguous ids; rows shuffled
_SIZES = {10: 1, 3: 2, 7: 3, 42: 4, 5: 5}
TEMPLATE = np.concatenate([np.full(n, t) for t, n in _SIZES.items()])
_perm = rng.permutation(len(TEMPLATE))
TEMPLATE = TEMPLATE[_perm]
NI = len(TEMPLATE)
# medias: several frames share a media inside a template; -1 = no media
MEDIA = np.array([100 + (t * 7 + k) % 2 for k, t in enumerate(TEMPLATE)])
MEDIA[np.flatnonzero(TEMPLATE == 5)[:2]] = -1
FEATS = rng.normal(size=(NI, D))
FLIP = rng.normal(size=(NI, D))
SCALE = rng.uniform(1.0, 5.0, size=NI)
SIGMA = rng.uniform(0.2, 2.0, size=(NI, D))
DET = rng.uniform(0.5, 1.0, size=NI)
IDS = np.array(sorted(_SIZES))


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def _reference(
    method: str, sig: np.ndarray, temperature: float = 1.0, data: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-template loop following template_reject_verification.py / aggregation.py (sigmas (n, K))."""
    all_feats, template = data if data is not None else (FEATS, TEMPLATE)
    feats, uncs = [], []
    for t in np.unique(template):
        rows = np.flatnonzero(template == t)  # input order
        f, s = all_feats[rows], sig[rows]
        n = len(rows)
        if method == "first":
            mu, u = _l2(f[0]), s[0]
        elif method in ("mean", "stat-mean"):
            mu, u = _l2(f.mean(axis=0)), s.mean(axis=0) * (np.sqrt(n) if method == "stat-mean" else 1)
        elif method in ("PFE", "PFE-paper"):
            att = (1 / s) / np.sum(1 / s, axis=0, keepdims=True)
            mu = _l2(np.sum(f * att, axis=0))
            u = s.min(axis=0) if method == "PFE" else 1 / np.sum(1 / s, axis=0)
        elif method == "min":
            mu = np.empty(D)
            u = np.empty(s.shape[1])
            for d in range(D):
                k = np.argmin(s[:, d if s.shape[1] > 1 else 0])
                mu[d] = f[k, d]
            u = s.min(axis=0)
            mu = _l2(mu)
        elif method == "argmax":
            k = int(np.argmax(s[:, 0]))
            mu, u = _l2(f[k]), s[k]
        elif method in ("softmax", "stat-softmax"):
            w = _softmax(s[:, 0] / temperature)
            mu, u = _l2(w @ f), (w @ s) * (np.sqrt(n) if method == "stat-softmax" else 1)
        elif method == "weighted":
            w = s[:, 0] / s[:, 0].sum()
            mu, u = _l2(w @ np.array([_l2(r) for r in f])), w @ s
        elif method == "weighted-softmax":
            w = s[:, 0] / s[:, 0].sum()
            mu, u = _l2(w @ f), _softmax(s[:, 0] / temperature) @ s
        else:
            raise AssertionError(method)
        feats.append(mu)
        uncs.append(u)
    return np.array(feats), np.array(uncs)


SCALAR_METHODS = ["first", "mean", "stat-mean", "min", "argmax", "softmax", "stat-softmax", "weighted",
                  "weighted-softmax", "PFE", "PFE-paper"]  # fmt: skip


@pytest.mark.parametrize("method", SCALAR_METHODS)
def test_scalar_confidence_fusions_match_loop(method: str) -> None:
    out = fuse(method, FEATS, TEMPLATE, uncertainty=SCALE)
    want_f, want_u = _reference(method, SCALE[:, None])
    np.testing.assert_array_equal(out.ids, IDS)
    np.testing.assert_array_equal(out.sizes, [_SIZES[t] for t in IDS])
    np.testing.assert_allclose(out.features, want_f, rtol=1e-12, atol=1e-12)
    assert out.uncertainty is not None and out.uncertainty.shape == (len(IDS),)
    np.testing.assert_allclose(out.uncertainty, want_u[:, 0], rtol=1e-12)


@pytest.mark.parametrize("method", ["first", "mean", "stat-mean", "PFE", "PFE-paper", "min"])
def test_per_dimension_sigma_fusions_match_loop(method: str) -> None:
    out = fuse(method, FEATS, TEMPLATE, uncertainty=SIGMA)
    want_f, want_u = _reference(method, SIGMA)
    np.testing.assert_allclose(out.features, want_f, rtol=1e-12, atol=1e-12)
    assert out.uncertainty is not None
    np.testing.assert_allclose(out.uncertainty, want_u, rtol=1e-12)


@pytest.mark.parametrize(("name", "base", "temperature"), [("softmax-0.5", "softmax", 0.5),
                                                           ("weighted-softmax-2", "weighted-softmax", 2.0)])  # fmt: skip
def test_temperature_suffix(name: str, base: str, temperature: float) -> None:
    out = fuse(name, FEATS, TEMPLATE, uncertainty=SCALE)
    want_f, want_u = _reference(base, SCALE[:, None], temperature)
    np.testing.assert_allclose(out.features, want_f, rtol=1e-12)
    np.testing.assert_allclose(out.uncertainty, want_u[:, 0], rtol=1e-12)


@pytest.mark.parametrize("method", SCALAR_METHODS)
def test_many_random_templates(method: str) -> None:
    r = np.random.default_rng(5)
    template = r.permutation(np.repeat(r.choice(1000, size=60, replace=False), r.integers(1, 6, size=60)))
    feats = r.normal(size=(len(template), D))
    sig = r.uniform(0.1, 3.0, size=(len(template), 1 if method not in ("PFE", "min", "mean") else D))
    out = fuse(method, feats, template, uncertainty=sig)
    want_f, want_u = _reference(method, sig, data=(feats, template))
    np.testing.assert_allclose(out.features, want_f, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out.uncertainty, want_u, rtol=1e-10)


def test_argmax_tie_takes_first_image_in_input_order_and_min_picks_least_uncertain() -> None:
    feats = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 2.0], [3.0, 0.0]])
    template = np.array([1, 1, 1, 2])
    conf = np.array([2.0, 5.0, 5.0, 1.0])
    out = fuse("argmax", feats, template, uncertainty=conf)
    np.testing.assert_allclose(out.features, [[0.0, 1.0], [1.0, 0.0]])
    out = fuse("min", feats, template, uncertainty=np.array([0.5, 0.1, 0.3, 9.0]))
    np.testing.assert_allclose(out.features, [[0.0, 1.0], [1.0, 0.0]])
    np.testing.assert_allclose(out.uncertainty, [0.1, 9.0])


def test_softmax_weights_are_over_images_not_features() -> None:
    # Two images, one very confident: the intended softmax follows it; the old axis=1 code would not.
    out = fuse("softmax", np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 0]), uncertainty=np.array([50.0, 0.0]))
    np.testing.assert_allclose(out.features, [[1.0, 0.0]], atol=1e-12)


def _media_reference(feats: np.ndarray) -> np.ndarray:
    """insightface image2template_feature, loop for loop (media -1 = its own media)."""
    media = np.where(MEDIA < 0, -2 - np.arange(NI), MEDIA)
    out = []
    for t in IDS:
        (ind_t,) = np.where(TEMPLATE == t)
        face = feats[ind_t]
        fm = media[ind_t]
        media_feats = []
        for u in np.unique(fm):
            (ind_m,) = np.where(fm == u)
            media_feats.append(np.mean(face[ind_m], axis=0))
        out.append(_l2(np.sum(media_feats, axis=0)))
    return np.array(out)


@pytest.mark.parametrize("keep_norm", [True, False])
@pytest.mark.parametrize("use_det", [True, False])
@pytest.mark.parametrize("add_flip", [True, False])
def test_media_fusion_matches_insightface_loop(keep_norm: bool, use_det: bool, add_flip: bool) -> None:
    x = FEATS + FLIP if add_flip else FEATS
    if not keep_norm:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    if use_det:
        x = x * DET[:, None]
    out = fuse(
        "media", FEATS, TEMPLATE, media=MEDIA, detector_score=DET, features_flip=FLIP,
        keep_norm=keep_norm, use_detector_score=use_det, add_flip=add_flip,
    )  # fmt: skip
    np.testing.assert_allclose(out.features, _media_reference(x), rtol=1e-12)
    assert out.uncertainty is None


def test_media_differs_from_plain_mean_when_medias_have_several_frames() -> None:
    media = fuse("media", FEATS, TEMPLATE, media=MEDIA, use_detector_score=False, add_flip=False)
    mean = fuse("mean", FEATS, TEMPLATE)
    assert not np.allclose(media.features, mean.features)
    one_media_each = fuse("media", FEATS, TEMPLATE, media=np.full(NI, -1), use_detector_score=False, add_flip=False)
    np.testing.assert_allclose(one_media_each.features, mean.features, rtol=1e-12)


def test_every_registered_fusion_runs() -> None:
    for name in names.FUSIONS:
        kw = {"media": MEDIA, "detector_score": DET, "features_flip": FLIP} if name == "media" else {}
        out = fuse(name, FEATS, TEMPLATE, uncertainty=SCALE, **kw)
        assert out.features.shape == (len(IDS), D)
        np.testing.assert_allclose(np.linalg.norm(out.features, axis=1), 1.0)


def test_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match=r"unknown fusion 'avg'.*Valid fusions: first, mean"):
        fuse("avg", FEATS, TEMPLATE)
    with pytest.raises(ValueError, match="temperature 'hot'"):
        fuse("softmax-hot", FEATS, TEMPLATE, uncertainty=SCALE)
    with pytest.raises(ValueError, match="one confidence each.*pfe_confidence"):
        fuse("softmax", FEATS, TEMPLATE, uncertainty=SIGMA)
    with pytest.raises(ValueError, match="pass features_flip= or add_flip=False"):
        fuse("media", FEATS, TEMPLATE, media=MEDIA, detector_score=DET)
    with pytest.raises(ValueError, match="template id < 0"):
        fuse("mean", FEATS, np.where(TEMPLATE == 3, -1, TEMPLATE))
    with pytest.raises(ValueError, match="needs PFE sigma_sq"):
        fuse("PFE", FEATS, TEMPLATE)
    with pytest.raises(ValueError, match="no detector score"):
        fuse("media", FEATS, TEMPLATE, media=MEDIA, detector_score=np.full(NI, np.nan), add_flip=False)


def test_template_rows_maps_ids_and_reports_missing() -> None:
    np.testing.assert_array_equal(template_rows(IDS, np.array([42, 3, 3, 10])), [4, 0, 0, 3])
    with pytest.raises(ValueError, match=r"2 template ids have no fused template.*\[4, 99\]"):
        template_rows(IDS, np.array([4, 99, 5]))


def test_fusion_metric_strings_and_listing() -> None:
    assert names.parse_fusion_metric("PFE_MLS_mean") == ("PFE", "MLS", "mean")
    assert names.parse_fusion_metric("softmax-0.5_cosine_harmonic-harmonic") == (
        "softmax-0.5", "cosine", "harmonic-harmonic",
    )  # fmt: skip
    assert names.parse_fusion("weighted-softmax-3") == ("weighted-softmax", {"temperature": 3.0})
    with pytest.raises(ValueError, match="temperature must be > 0"):
        names.parse_fusion("softmax-0")
    with pytest.raises(ValueError, match="FUSION_DISTANCE_UNCERTAINTY"):
        names.parse_fusion_metric("cosine_mean")
    kinds = {kind for kind, _, _ in names.describe_all()}
    assert kinds == {"distance", "uncertainty", "fusion"}
    assert all(meaning for _, _, meaning in names.describe_all())
