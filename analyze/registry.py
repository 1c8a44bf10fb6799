"""The vocabulary's machinery: frozen spec objects and a name -> spec `Registry` (names are looked up, never parsed).

Three kinds of spec, one table each, kept beside the code that computes them (timm's `register_model`
style: the spec and its function on one screen): distances in `analyze.scores.DISTANCES`, pair-uncertainty
combinations in `analyze.uncertainty.COMBINATIONS`, template fusions in `analyze.fusion.FUSIONS`.
`analyze.vocabulary` assembles them for `analyze list`, the CLI's name checks, the metric strings and the
docs table. Every spec names what it computes, its inputs, its direction, its source in the ScaleFace /
insightface / PFE code and every deliberate deviation from that code.

Directions: a distance is a similarity (higher = same person); a pair-uncertainty combination's output keeps
its input's direction ("input") or is always a "confidence"; a fusion's value keeps the per-image direction
("input") unless it states otherwise. `DIRECTIONS` are the two meanings a per-image or pair value can have.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

__all__ = [
    "DIRECTIONS",
    "CombinationSpec",
    "DistanceSpec",
    "FusionRegistry",
    "FusionSpec",
    "Registry",
    "unknown_name",
]

DIRECTIONS = ("uncertainty", "confidence")
"""'uncertainty': larger = less reliable (PFE sigma_sq); 'confidence': larger = more reliable (scale, norm)."""

VALUE_INPUTS = {
    "sigma_sq": "PFE sigma_sq (N, D)",
    "confidence": "the per-row confidence (scale or norm)",
}
"""Per-row value inputs a distance may need (passed as `uncertainty=`), with how errors describe them."""


@dataclass(frozen=True)
class DistanceSpec:
    """A pair similarity: `score(features, i, j, *, uncertainty, bias, center, block) -> (M,)` float64.

    `inputs` lists what it reads: "features" always; at most one of "sigma_sq" / "confidence" (passed as
    `uncertainty=`); "bias" (required) or "center" (mean, std; taken over the scored pairs when not given).
    """

    name: str
    computes: str
    score: Callable[..., Any] = field(repr=False, compare=False)
    inputs: tuple[str, ...] = ("features",)
    direction: str = "similarity"
    source: str = ""
    deviations: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict, compare=False)
    """What a family of specs varies (the weighted cosines: weight_source, weight, sqrt, cosine), for readers."""

    @property
    def values(self) -> str | None:
        """The per-row value it needs ('sigma_sq' or 'confidence'), or None."""
        return next((k for k in self.inputs if k in VALUE_INPUTS), None)


@dataclass(frozen=True)
class CombinationSpec:
    """A pair-uncertainty combination of per-image values u ((N,) or (N, K)).

    Row-reducible combinations give `row` (a per-row statistic of a (n, K) block, float64 (n,)) and `pair`
    (statistics a, b of the two rows and K -> pair value): computed once per row, gathered per pair. The
    others give `gathered(u1, u2, mu1, mu2, labels, center) -> (m,)` on the gathered rows of a block.
    `direction` "input": the output means what the per-image values mean; "confidence": always a confidence.
    """

    name: str
    computes: str
    row: Callable[..., Any] | None = field(default=None, repr=False, compare=False)
    pair: Callable[..., Any] | None = field(default=None, repr=False, compare=False)
    gathered: Callable[..., Any] | None = field(default=None, repr=False, compare=False)
    fused: Callable[..., Any] | None = field(default=None, repr=False, compare=False)
    """Optional fused kernel `fused(values, features, i, j) -> (M,)` computing `gathered` for all pairs at once."""
    inputs: tuple[str, ...] = ("values",)
    direction: str = "input"
    source: str = ""
    deviations: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if (self.row is None or self.pair is None) == (self.gathered is None):
            raise ValueError(f"combination {self.name!r}: give row and pair, or gathered")
        if self.direction not in ("input", "confidence"):
            raise ValueError(f"combination {self.name!r}: direction must be 'input' or 'confidence'")


@dataclass(frozen=True)
class FusionSpec:
    """A template fusion: `fuse(seg, f, u, params) -> (features (T, D), values or None)` on rows sorted by template.

    `inputs` names what it reads beyond the features: "values" (any per-image values), "sigma_sq",
    "confidence" (one per image; a PFE model's sigma_sq is reduced to 1/hm first, and the fused value is then
    a confidence), "media" (insightface's media ids, detector scores, flips). `temperature` is the default of
    the optional '-T' name suffix ('softmax-0.5'), None when the name takes none.
    """

    name: str
    computes: str
    value: str
    fuse: Callable[..., Any] = field(repr=False, compare=False)
    inputs: tuple[str, ...] = ()
    direction: str = "input"
    source: str = ""
    deviations: tuple[str, ...] = ()
    temperature: float | None = None

    @property
    def weights_by_confidence(self) -> bool:
        """True when it weights images by one confidence each (PFE sigma_sq is reduced to 1/hm first)."""
        return "confidence" in self.inputs


S = TypeVar("S", DistanceSpec, CombinationSpec, FusionSpec)


def unknown_name(kind: str, name: str, valid: list[str]) -> ValueError:
    """The one error for an unknown name: close matches, then every valid name."""
    close = difflib.get_close_matches(name, valid, n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return ValueError(f"unknown {kind} {name!r}.{hint} Valid {kind}s: {', '.join(valid)}")


class Registry(Generic[S]):
    """Specs by name in registration order; `get` resolves aliases and names close matches on a miss.

    Names may not contain '_', which separates the parts of the scripts' metric strings.
    """

    def __init__(self, kind: str, specs: tuple[S, ...] | list[S] = ()) -> None:
        self.kind = kind
        self._specs: dict[str, S] = {}
        self._aliases: dict[str, str] = {}
        for spec in specs:
            self.register(spec)

    def register(self, spec: S) -> S:
        """Add `spec` (refusing a taken name or alias, or a '_' in a name); return it."""
        for name in (spec.name, *getattr(spec, "aliases", ())):
            if "_" in name:
                raise ValueError(f"{self.kind} name {name!r} may not contain '_' (it separates metric parts)")
            if name in self._specs or name in self._aliases:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._specs[spec.name] = spec
        for alias in getattr(spec, "aliases", ()):
            self._aliases[alias] = spec.name
        return spec

    def valid_names(self) -> list[str]:
        """The names an error lists as valid."""
        return list(self._specs)

    def get(self, name: str) -> S:
        """The spec registered as `name` or one of its aliases; ValueError listing the valid names."""
        spec = self._specs.get(self._aliases.get(name, name))
        if spec is None:
            raise unknown_name(self.kind, name, self.valid_names())
        return spec

    def names(self) -> list[str]:
        """Registered names in registration order (aliases not included)."""
        return list(self._specs)

    def specs(self) -> list[S]:
        """Registered specs in registration order."""
        return list(self._specs.values())

    def copy(self) -> Registry[S]:
        """An independent registry with the same specs (a test or a caller may register more in it)."""
        return type(self)(self.kind, self.specs())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._specs or name in self._aliases)

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)


class FusionRegistry(Registry[FusionSpec]):
    """Fusions; a spec with a `temperature` also answers to 'NAME-T' with T > 0 ('softmax-0.5')."""

    def valid_names(self) -> list[str]:
        return [*self._specs, *(f"{s.name}-T" for s in self._specs.values() if s.temperature is not None)]

    def resolve(self, name: str) -> tuple[FusionSpec, dict[str, float]]:
        """(spec, parameters) for a fusion name: 'softmax-0.5' -> (softmax, {'temperature': 0.5})."""
        spec = self._specs.get(name)
        if spec is not None:
            return spec, ({} if spec.temperature is None else {"temperature": spec.temperature})
        tempered = [s for s in self._specs.values() if s.temperature is not None]
        for spec in sorted(tempered, key=lambda s: len(s.name), reverse=True):
            prefix = spec.name + "-"
            if name.startswith(prefix):
                text = name[len(prefix) :]
                try:
                    temperature = float(text)
                except ValueError:
                    raise ValueError(
                        f"fusion {name!r}: temperature {text!r} after {prefix!r} is not a number"
                    ) from None
                if not temperature > 0:
                    raise ValueError(f"fusion {name!r}: temperature must be > 0, got {temperature}")
                return spec, {"temperature": temperature}
        raise unknown_name(self.kind, name, self.valid_names())

    def get(self, name: str) -> FusionSpec:
        return self.resolve(name)[0]
