"""The vocabulary registry: every spec complete and reachable, the docs table generated from it, lookups
instead of parsing, a newcomer's distance in a registry copy, and weighted-scaleface against its definition."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from analyze.cli import cli
from analyze.fusion import FUSIONS, fuse
from analyze.registry import DIRECTIONS, DistanceSpec, Registry
from analyze.scores import DISTANCES, cosine_scores, pair_scores
from analyze.uncertainty import COMBINATIONS
from analyze.vocabulary import describe_all, docs_table, metric_specs

ROOT = Path(__file__).resolve().parents[1]
ALL_SPECS = [(r.kind, s) for r in (DISTANCES, COMBINATIONS, FUSIONS) for s in r.specs()]


@pytest.mark.parametrize("kind,spec", ALL_SPECS, ids=[f"{k}:{s.name}" for k, s in ALL_SPECS])
def test_every_spec_says_what_it_computes_and_where_it_comes_from(kind: str, spec) -> None:
    assert spec.computes and "_" not in spec.name
    assert spec.source or spec.deviations, f"{kind} {spec.name}: no source and no deviation from one"
    assert spec.direction in ("similarity", "input", *DIRECTIONS)


def test_docs_table_is_the_generated_one() -> None:
    text = (ROOT / "docs" / "metrics.md").read_text()
    start, end = "<!-- vocabulary:start -->\n", "<!-- vocabulary:end -->"
    assert start in text and end in text, "docs/metrics.md lost its generated vocabulary table markers"
    table = text.split(start, 1)[1].split(end, 1)[0]
    assert table == docs_table(), "docs/metrics.md vocabulary table is stale: paste analyze.vocabulary.docs_table()"


def test_analyze_list_prints_every_registered_name() -> None:
    out = CliRunner().invoke(cli, ["list"]).output
    listed = {line.split()[0] for line in out.splitlines() if line.startswith("  ")}
    assert listed == {name for _, name, _ in describe_all()}
    assert {s.name for _, s in ALL_SPECS} <= listed


def test_lookups_resolve_aliases_and_refuse_unknown_names() -> None:
    assert DISTANCES.get("euclidean") is DISTANCES.get("euc")
    d, c = metric_specs("pfe-sqrt-harmonic-biased-cosine_harmonic-harmonic")
    assert d.values == "sigma_sq" and "bias" in d.inputs and c.row is not None
    spec, params = FUSIONS.resolve("weighted-softmax-0.25")
    assert spec.name == "weighted-softmax" and params == {"temperature": 0.25}
    with pytest.raises(ValueError, match=r"unknown fusion 'weighted-scale'.*Did you mean 'weighted-scaleface'"):
        FUSIONS.resolve("weighted-scale")
    reg = DISTANCES.copy()
    with pytest.raises(ValueError, match="registered twice"):
        reg.register(DistanceSpec("cosine", "again", DISTANCES.get("cosine").score))
    with pytest.raises(ValueError, match="may not contain '_'"):
        reg.register(DistanceSpec("my_cos", "bad", DISTANCES.get("cosine").score))


def test_a_new_distance_is_one_spec() -> None:
    """docs/architecture.md's worked example: `angular` = 1 - arccos(cos)/pi, registered in a copy."""
    angular = DistanceSpec(
        "angular",
        "1 - arccos(cosine)/pi of the L2-normalised features",
        lambda features, i, j, *, block, **_: (
            1 - np.arccos(np.clip(cosine_scores(features, i, j, block=block), -1, 1)) / np.pi
        ),
        source="ours",
    )
    registry: Registry[DistanceSpec] = DISTANCES.copy()
    registry.register(angular)
    x = np.array([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0], [1.0, 1.0]])
    got = pair_scores("angular", x, [0, 0, 0, 3], [1, 2, 0, 0], registry=registry)
    np.testing.assert_allclose(got, [0.5, 0.0, 1.0, 0.75], atol=1e-12)
    assert "angular" not in DISTANCES  # the shared registry is untouched


def _scaleface_weighted(features: np.ndarray, conf: np.ndarray, template: np.ndarray) -> dict[int, np.ndarray]:
    """Brute force of ScaleFace's `weighted` as coded: mu = F / ||F|| (axis=None), l2n(sum_k w_k mu_k)."""
    out = {}
    for t in np.unique(template):
        f = features[template == t].astype(np.float64)
        c = conf[template == t].astype(np.float64)
        mu = f / np.sqrt(np.sum(f * f))
        w = c / c.sum()
        v = sum(wk * mk for wk, mk in zip(w, mu))
        out[int(t)] = v / np.linalg.norm(v)
    return out


def test_weighted_scaleface_matches_the_scripts_definition() -> None:
    rng = np.random.default_rng(7)
    n, d = 23, 6
    template = np.array([5] * 1 + [2] * 4 + [9] * 7 + [3] * 11)  # a singleton and unequal sizes
    norms = rng.uniform(5, 40, size=n)
    features = rng.normal(size=(n, d))
    features = features / np.linalg.norm(features, axis=1, keepdims=True) * norms[:, None]  # raw, norms 5-40
    conf = rng.uniform(1.0, 60.0, size=n)
    conf[template == 2] = 7.0  # ties in the weights
    got = fuse("weighted-scaleface", features, template, uncertainty=conf)
    want = _scaleface_weighted(features, conf, template)
    np.testing.assert_allclose(got.features, np.stack([want[t] for t in got.ids.tolist()]), rtol=1e-12, atol=1e-14)
    w = conf / np.array([conf[template == t].sum() for t in template])
    np.testing.assert_allclose(got.uncertainty, [np.sum((w * conf)[template == t]) for t in got.ids], rtol=1e-12)
    # Our `weighted` normalises each image first: on raw features the directions differ, on unit-norm ones not.
    ours = fuse("weighted", features, template, uncertainty=conf)
    assert np.max(1 - np.sum(ours.features * got.features, axis=1)) > 1e-4
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    np.testing.assert_allclose(
        fuse("weighted-scaleface", unit, template, uncertainty=conf).features,
        fuse("weighted", unit, template, uncertainty=conf).features,
        rtol=1e-12,
        atol=1e-14,
    )
    single = template == 5  # one image: its own direction, whatever its norm
    np.testing.assert_allclose(got.features[got.ids == 5][0], unit[single][0], rtol=1e-12)
    with pytest.raises(ValueError, match="one confidence each"):
        fuse("weighted-scaleface", features, template, uncertainty=rng.uniform(size=(n, d)))
