"""--mls-exact / RejectOptions.mls_exact / the pipeline key mls_exact: MLS by the exact kernel, bit for bit the scores
of runs before the fast default; the default's numbers differ from them in the thresholds' last bits only."""

from __future__ import annotations

import numpy as np
import pytest
from analysis_fixture import build_store

from analyze import commands
from analyze.commands import FusionOptions, RejectOptions, options_from_args
from analyze.loading import build_pair_set, select, valid_rows
from analyze.scores import mls_scores


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_store(tmp_path_factory.mktemp("mx") / "toy.zarr")


def _template_protocol(store):
    return next(n for n, info in store.protocols_info.items() if info["level"] == "template")


def test_reject_mls_exact_uses_the_exact_scores(store, tmp_path):
    proto = _template_protocol(store)
    keys = {"protocol": proto, "model": "pfe", "level": "template", "fusion": "PFE", "metric": "MLS_harmonic-sum"}
    keys |= {"rejected": "0:0.5:5", "far": 0.1, "no_figures": True, "no_references": True}
    exact_opts = options_from_args(RejectOptions, {**keys, "mls_exact": True}, "test")
    assert exact_opts.mls_exact is True
    exact = commands.reject(store.path, tmp_path / "e", exact_opts).tables["reject"]
    fast = commands.reject(store.path, tmp_path / "f", options_from_args(RejectOptions, keys, "test")).tables["reject"]
    for col in ("tar", "kept_pairs", "far_achieved", "rejected_fraction"):
        assert exact[col].equals(fast[col])
    np.testing.assert_allclose(fast["threshold"], exact["threshold"], rtol=1e-12)
    # the exact run's thresholds are among the exact kernel's scores of the pair set
    models, p = select(store, ["pfe"], proto)
    ps = build_pair_set(store, "pfe", p, "template", "PFE", valid_rows(store, models, False))
    scores = mls_scores(ps.features, ps.values, ps.i, ps.j, exact=True)
    assert np.isin(exact["threshold"].dropna().to_numpy(), scores).all()


def test_fusion_options_and_clis_take_mls_exact():
    from click.testing import CliRunner

    from analyze.cli import cli
    from analyze.scores_cli import scores

    assert FusionOptions(mls_exact=True).mls_exact and not FusionOptions().mls_exact
    for command in (["reject", "--help"], ["fusion", "--help"]):
        assert "--mls-exact" in CliRunner().invoke(cli, command).output
    assert "--mls-exact" in CliRunner().invoke(scores, ["--help"]).output
