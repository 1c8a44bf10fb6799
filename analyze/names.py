"""Registry of pair distances, pair-uncertainty combinations and template fusions.

Names are the ScaleFace scripts' own strings (`DISTANCE_UNCERTAINTY` such as
``cosine_harmonic-harmonic``, `FUSION_DISTANCE_UNCERTAINTY` such as
``PFE_MLS_mean``), each with a one-line meaning for ``analyze list``. This module
has no numeric code; `scores`, `uncertainty` and `fusion` look their names up here.
"""

from __future__ import annotations

import difflib

# ---------------------------------------------------------------- distances
_BASE_DISTANCES = {
    "cosine": "cosine similarity of the L2-normalised features",
    "centered-cosine": "cosine standardised by the mean and std of all scored pairs",
    "biased-cosine": "cosine minus a bias (mean cosine of a validation split)",
    "euc": "minus the squared euclidean distance of the features as given",
    "MLS": "PFE mutual likelihood score -sum((mu1-mu2)^2/(s1+s2) + log(s1+s2)), mu L2-normalised",
}
_COSINE_FLAVOURS = {
    "cosine": "cosine",
    "centered-cosine": "centred cosine",
    "biased-cosine": "biased cosine",
}
_WEIGHT_SOURCES = {
    "scale": "the per-image confidence as stored (ScaleFace scale or feature norm)",
    "pfe": "the PFE confidence 1/harmonic_mean(sigma_sq)",
}
_COMBINERS = {
    ("mul", False): "c1*c2",
    ("harmonic", False): "c1*c2/(c1+c2)",
    ("mul", True): "sqrt(c1)*sqrt(c2)",
    ("harmonic", True): "sqrt(c1)*sqrt(c2)/(sqrt(c1)+sqrt(c2))",
}


def _weighted_distances() -> dict[str, str]:
    out: dict[str, str] = {}
    for source, source_meaning in _WEIGHT_SOURCES.items():
        for sqrt in (False, True):
            for comb in ("mul", "harmonic"):
                for flavour, flavour_meaning in _COSINE_FLAVOURS.items():
                    name = f"{source}-{'sqrt-' if sqrt else ''}{comb}-{flavour}"
                    out[name] = f"{flavour_meaning} times {_COMBINERS[comb, sqrt]}, c = {source_meaning}"
    return out


DISTANCES: dict[str, str] = {**_BASE_DISTANCES, **_weighted_distances()}
"""Pair similarity (higher = same person) name -> meaning."""

DISTANCE_ALIASES: dict[str, str] = {"euclidean": "euc", "mls": "MLS"}

# ---------------------------------------------------------------- uncertainty combinations
UNCERTAINTIES: dict[str, str] = {
    "mean": "u1.sum() + u2.sum() (the scripts call the sum 'mean')",
    "squared-sum": "u1.sum()^2 + u2.sum()^2",
    "mul": "prod(u1) * prod(u2) over all dimensions",
    "harmonic-sum": "hm(u1) + hm(u2), hm = harmonic mean over dimensions",
    "harmonic-mul": "hm(u1) * hm(u2)",
    "harmonic-harmonic": "harmonic mean of the concatenation [u1, u2]",
    "squared-harmonic": "harmonic mean of the concatenation [u1^2, u2^2]",
    "cosine-analytic": "sum(u1*u2 + mu1^2*u2 + mu2^2*u1): variance of the dot product of two Gaussians",
    "min": "min(u1.sum(), u2.sum())",
    "max": "max(u1.sum(), u2.sum()) (not in the scripts)",
    "similarity": "cosine similarity of the pair's features used as the pair's value",
    "perfect": "oracle margin (2*label-1)*(cos - mean cos): uses the labels, an upper bound",
}
"""Pair-uncertainty combination name -> meaning (u = per-image values, as (N, K) rows)."""

# ---------------------------------------------------------------- fusions
FUSIONS: dict[str, str] = {
    "first": "the template's first image (input order): its L2-normalised feature and its value",
    "mean": "L2-normalised mean feature; value = mean of the images' values",
    "stat-mean": "as mean, value = mean * sqrt(n_images)",
    "PFE": "PFE code: attention 1/sigma^2 per dimension, L2-normalised; sigma^2 = per-dimension min",
    "PFE-paper": "as PFE, but sigma^2 = 1/sum(1/sigma^2) as in the PFE paper's formula",
    "softmax": "softmax-T: weights softmax(c/T) over the template's images (T defaults to 1)",
    "stat-softmax": "softmax with T=1, value = weighted mean * sqrt(n_images)",
    "weighted": "weights c/sum(c) applied to per-image L2-normalised features",
    "weighted-softmax": "weighted-softmax-T: features weighted by c/sum(c), value by softmax(c/T)",
    "argmax": "the most confident image's feature (L2-normalised) and value",
    "min": "per dimension, the coordinate of the image with the smallest uncertainty; value = that min",
    "media": "insightface IJB: optional flip add, norm drop, detector weighting; mean per media, "
    "sum over medias, L2-normalise",
}
"""Template fusion name -> meaning (c = per-image confidence, shape (N,))."""

TEMPERATURE_FUSIONS = ("softmax", "weighted-softmax")
"""Fusions that take an optional '-T' temperature suffix, e.g. 'softmax-0.5'."""


def _unknown(kind: str, name: str, valid: list[str]) -> ValueError:
    close = difflib.get_close_matches(name, valid, n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return ValueError(f"unknown {kind} {name!r}.{hint} Valid {kind}s: {', '.join(valid)}")


def check_distance(name: str) -> str:
    """Canonical distance name for `name` (aliases resolved); ValueError listing valid names."""
    name = DISTANCE_ALIASES.get(name, name)
    if name not in DISTANCES:
        raise _unknown("distance", name, list(DISTANCES))
    return name


def check_uncertainty(name: str) -> str:
    """`name` if it is a known pair-uncertainty combination; ValueError listing valid names."""
    if name not in UNCERTAINTIES:
        raise _unknown("uncertainty combination", name, list(UNCERTAINTIES))
    return name


def parse_fusion(name: str) -> tuple[str, dict[str, float]]:
    """Split a fusion name into its base and parameters: 'softmax-0.5' -> ('softmax', {'temperature': 0.5})."""
    if name in FUSIONS:
        return name, ({"temperature": 1.0} if name in TEMPERATURE_FUSIONS else {})
    for base in sorted(TEMPERATURE_FUSIONS, key=len, reverse=True):
        prefix = base + "-"
        if name.startswith(prefix):
            text = name[len(prefix) :]
            try:
                temperature = float(text)
            except ValueError:
                raise ValueError(f"fusion {name!r}: temperature {text!r} after {prefix!r} is not a number") from None
            if not temperature > 0:
                raise ValueError(f"fusion {name!r}: temperature must be > 0, got {temperature}")
            return base, {"temperature": temperature}
    raise _unknown("fusion", name, [*FUSIONS, "softmax-T", "weighted-softmax-T"])


def parse_metric(text: str) -> tuple[str, str]:
    """Split a scripts' DISTANCE_UNCERTAINTY string: 'cosine_harmonic-harmonic' -> ('cosine', 'harmonic-harmonic')."""
    parts = text.split("_")
    if len(parts) != 2:
        raise ValueError(
            f"metric {text!r} must be DISTANCE_UNCERTAINTY (one '_'), e.g. 'cosine_mean', 'MLS_harmonic-sum'"
        )
    return check_distance(parts[0]), check_uncertainty(parts[1])


def parse_fusion_metric(text: str) -> tuple[str, str, str]:
    """Split a FUSION_DISTANCE_UNCERTAINTY string: 'PFE_MLS_mean' -> ('PFE', 'MLS', 'mean'); fusion validated."""
    parts = text.split("_")
    if len(parts) != 3:
        raise ValueError(f"metric {text!r} must be FUSION_DISTANCE_UNCERTAINTY (two '_'), e.g. 'mean_cosine_mean'")
    parse_fusion(parts[0])
    return parts[0], check_distance(parts[1]), check_uncertainty(parts[2])


def describe_all() -> list[tuple[str, str, str]]:
    """(kind, name, meaning) rows for every distance, uncertainty combination and fusion."""
    rows = [("distance", n, m) for n, m in DISTANCES.items()]
    rows += [("uncertainty", n, m) for n, m in UNCERTAINTIES.items()]
    rows += [("fusion", n, m) for n, m in FUSIONS.items()]
    return rows
