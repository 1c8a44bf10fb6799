"""Compatibility names for code written before the registry (issue 9): everything here is `analyze.vocabulary`.

New code looks names up in the registries (`analyze.scores.DISTANCES`, `analyze.uncertainty.COMBINATIONS`,
`analyze.fusion.FUSIONS`) or calls `analyze.vocabulary`; this module only re-exports, and keeps the old
name -> meaning dicts as read-only views of the registries.
"""

from __future__ import annotations

from types import MappingProxyType

from analyze import vocabulary
from analyze.vocabulary import (
    check_distance,
    check_uncertainty,
    describe_all,
    parse_fusion,
    parse_fusion_metric,
    parse_metric,
)

__all__ = [
    "DISTANCES",
    "FUSIONS",
    "UNCERTAINTIES",
    "check_distance",
    "check_uncertainty",
    "describe_all",
    "parse_fusion",
    "parse_fusion_metric",
    "parse_metric",
]

DISTANCES = MappingProxyType({s.name: s.computes for s in vocabulary.DISTANCES.specs()})
UNCERTAINTIES = MappingProxyType({s.name: s.computes for s in vocabulary.COMBINATIONS.specs()})
FUSIONS = MappingProxyType({s.name: s.computes for s in vocabulary.FUSIONS.specs()})
