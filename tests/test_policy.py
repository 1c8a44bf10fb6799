"""analyze.policy: what each family's per-image value means and the one rule for PFE sigma^2 vs its confidence."""

from __future__ import annotations

import numpy as np
import pytest

from analyze.fusion import FUSIONS
from analyze.policy import OUTPUT_KINDS, PFE_CONFIDENCE, POLICIES, ImageValues, policy_for
from analyze.registry import DIRECTIONS
from analyze.scores import DISTANCES

SIGMA = np.array([[1.0, 2.0, 4.0], [0.5, 0.5, 0.5]])


def test_family_table_and_defaults():
    assert policy_for(("embedding", "norm", "sigma_sq")).name == "pfe"
    assert policy_for(("embedding", "norm", "scale")).name == "scaleface"
    assert policy_for(("embedding", "norm")).name == "norm"
    pfe, sf = POLICIES["pfe"], POLICIES["scaleface"]
    assert (pfe.value_kind, sf.value_kind, POLICIES["norm"].value_kind) == ("uncertainty", "confidence", "confidence")
    assert pfe.metrics_for("fixed") == ["cosine_max"] and sf.metrics_for("fixed") == ["cosine_min"]
    assert pfe.metrics_for("recompute") == ["cosine_mean", "cosine_harmonic-harmonic", "MLS_harmonic-sum"]
    assert POLICIES["norm"].fusion_table_fusions() == ["mean", "first", "media", "mean"]
    assert set(OUTPUT_KINDS.values()) <= set(DIRECTIONS)
    for p in POLICIES.values():  # every default name is registered
        assert all(FUSIONS.resolve(f) for f in p.fusions) and all(DISTANCES.get(d) for d in p.fusion_distances)


@pytest.mark.parametrize("fusion", FUSIONS.names())
def test_pfe_sigma_is_reduced_exactly_for_confidence_weighted_fusions(fusion):
    spec = FUSIONS.get(fusion)
    given = POLICIES["pfe"].stored(SIGMA).for_fusion(spec)
    if spec.weights_by_confidence:
        assert (given.kind, given.source) == ("confidence", PFE_CONFIDENCE)
        np.testing.assert_allclose(given.values, [7 / 12, 2.0])  # 1 / harmonic mean
    else:
        assert given.values is SIGMA and given.kind == "uncertainty"
    assert POLICIES["pfe"].stored().fused_by(spec) == (given.kind, given.source)
    scale = POLICIES["scaleface"].stored(np.array([3.0, 4.0]))
    assert scale.for_fusion(spec) is scale  # a confidence is never changed


def test_values_for_distances_and_bad_kind():
    sigma = POLICIES["pfe"].stored(SIGMA)
    np.testing.assert_allclose(sigma.for_distance(DISTANCES.get("scale-mul-cosine")), [7 / 12, 2.0])
    assert sigma.for_distance(DISTANCES.get("MLS")) is SIGMA
    assert sigma.for_distance(DISTANCES.get("pfe-mul-biased-cosine")) is SIGMA  # reduced by the distance itself
    with pytest.raises(ValueError, match="kind must be one of"):
        ImageValues(SIGMA, "quality", "sigma_sq")
