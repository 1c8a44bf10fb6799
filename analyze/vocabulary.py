"""The whole vocabulary in one place: distances, pair-uncertainty combinations, fusions, and the metric strings.

The specs live beside their code (`analyze.scores.DISTANCES`, `analyze.uncertainty.COMBINATIONS`,
`analyze.fusion.FUSIONS`, all `analyze.registry.Registry`s); this module is what everything else reads:
`analyze list` (`describe_all`), the CLI's name checks, the docs/metrics.md vocabulary table
(`docs_table`, checked by tests/test_registry.py) and the metric strings. A metric string is the ScaleFace
scripts' `DISTANCE_UNCERTAINTY` ('cosine_harmonic-harmonic') or, for templates,
`FUSION_DISTANCE_UNCERTAINTY` ('PFE_MLS_mean'); '_' separates the parts and no registered name contains
one, so splitting on it is the whole grammar, and it happens here only.
"""

from __future__ import annotations

from analyze.fusion import FUSIONS
from analyze.registry import CombinationSpec, DistanceSpec, FusionSpec
from analyze.scores import DISTANCES
from analyze.uncertainty import COMBINATIONS

__all__ = [
    "COMBINATIONS",
    "DISTANCES",
    "FUSIONS",
    "check_distance",
    "check_uncertainty",
    "describe_all",
    "docs_table",
    "fusion_spec",
    "metric_specs",
    "parse_fusion",
    "parse_fusion_metric",
    "parse_metric",
]


def check_distance(name: str) -> str:
    """Canonical distance name for `name` (aliases resolved); ValueError listing valid names."""
    return DISTANCES.get(name).name


def check_uncertainty(name: str) -> str:
    """`name` if it is a known pair-uncertainty combination; ValueError listing valid names."""
    return COMBINATIONS.get(name).name


def fusion_spec(name: str) -> FusionSpec:
    """The spec of a fusion name ('softmax-0.5' -> softmax's spec)."""
    return FUSIONS.get(name)


def parse_fusion(name: str) -> tuple[str, dict[str, float]]:
    """A fusion name's spec name and parameters: 'softmax-0.5' -> ('softmax', {'temperature': 0.5})."""
    spec, params = FUSIONS.resolve(name)
    return spec.name, params


def metric_specs(text: str) -> tuple[DistanceSpec, CombinationSpec]:
    """The distance and combination specs of a scripts' DISTANCE_UNCERTAINTY string."""
    parts = text.split("_")
    if len(parts) != 2:
        raise ValueError(
            f"metric {text!r} must be DISTANCE_UNCERTAINTY (one '_'), e.g. 'cosine_mean', 'MLS_harmonic-sum'"
        )
    return DISTANCES.get(parts[0]), COMBINATIONS.get(parts[1])


def parse_metric(text: str) -> tuple[str, str]:
    """Split a scripts' DISTANCE_UNCERTAINTY string: 'cosine_harmonic-harmonic' -> ('cosine', 'harmonic-harmonic')."""
    distance, combination = metric_specs(text)
    return distance.name, combination.name


def parse_fusion_metric(text: str) -> tuple[str, str, str]:
    """Split a FUSION_DISTANCE_UNCERTAINTY string: 'PFE_MLS_mean' -> ('PFE', 'MLS', 'mean'); fusion validated."""
    parts = text.split("_")
    if len(parts) != 3:
        raise ValueError(f"metric {text!r} must be FUSION_DISTANCE_UNCERTAINTY (two '_'), e.g. 'mean_cosine_mean'")
    FUSIONS.resolve(parts[0])
    return parts[0], check_distance(parts[1]), check_uncertainty(parts[2])


def describe_all() -> list[tuple[str, str, str]]:
    """(kind, name, meaning) rows for every distance, uncertainty combination and fusion (`analyze list`)."""
    rows = [("distance", s.name, s.computes) for s in DISTANCES.specs()]
    rows += [("uncertainty", s.name, s.computes) for s in COMBINATIONS.specs()]
    rows += [("fusion", s.name, s.computes) for s in FUSIONS.specs()]
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def docs_table() -> str:
    """The Markdown vocabulary table of docs/metrics.md ("Vocabulary"), generated from the registries."""
    lines = ["| kind | name | computes | inputs | direction | source | deviations |", "|---|---|---|---|---|---|---|"]
    for kind, registry in (("distance", DISTANCES), ("uncertainty", COMBINATIONS), ("fusion", FUSIONS)):
        for s in registry.specs():
            name = f"`{s.name}`"
            if getattr(s, "aliases", ()):
                name += " (alias " + ", ".join(f"`{a}`" for a in s.aliases) + ")"
            if getattr(s, "temperature", None) is not None:
                name += f" (`{s.name}-T`, T = {s.temperature:g} default)"
            cells = [
                kind,
                name,
                s.computes,
                ", ".join(s.inputs) or "features",
                s.direction,
                s.source or "ours",
                "; ".join(s.deviations) or "-",
            ]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"
