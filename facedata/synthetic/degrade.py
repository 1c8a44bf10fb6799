"""Controlled image degradations with known strengths: occlusion, blur, low resolution, noise.

Each strength is in [0, 1] (0 = not applied). The overall severity is 1 - prod(1 - s_i): 0 for a
clean image, near 1 when any degradation is at full strength. The detector score falls with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

KINDS = ("blur", "noise", "lowres", "occlusion")

MAX_BLUR_SIGMA = 4.0
"""Gaussian blur sigma (crop pixels) at blur strength 1."""
MAX_NOISE_STD = 40.0
"""Gaussian noise std (grey levels) at noise strength 1."""
MIN_RES_FRACTION = 0.12
"""Fraction of the crop side kept by downsampling at lowres strength 1."""
MAX_OCCLUDED = 0.6
"""Fraction of the face box covered by the occluder at occlusion strength 1."""


@dataclass(frozen=True)
class Degradation:
    """True strengths in [0, 1] of each degradation applied to one image."""

    blur: float = 0.0
    noise: float = 0.0
    lowres: float = 0.0
    occlusion: float = 0.0

    @property
    def severity(self) -> float:
        """1 - prod(1 - s): how far the image is from clean, in [0, 1]."""
        return float(1 - np.prod([1 - getattr(self, k) for k in KINDS]))


def draw_degradation(rng: np.random.Generator, p_present: float = 0.35) -> Degradation:
    """Each kind independently present with probability `p_present`, with strength uniform in (0.05, 1)."""
    present = rng.random(len(KINDS)) < p_present
    strength = rng.uniform(0.05, 1.0, len(KINDS))
    return Degradation(*(float(s) if p else 0.0 for s, p in zip(strength, present)))


def jitter(d: Degradation, rng: np.random.Generator, rel: float = 0.08) -> Degradation:
    """Nearly the same degradation (for the next frame of a video): each nonzero strength moved by ~rel."""
    vals = [getattr(d, k) for k in KINDS]
    moved = [float(np.clip(v * (1 + rel * rng.standard_normal()), 0.0, 1.0)) if v > 0 else 0.0 for v in vals]
    return Degradation(*moved)


def detector_score(severity: float, rng: np.random.Generator) -> float:
    """A face detector confidence that falls with severity (0.99 clean, about 0.45 at severity 1)."""
    return float(np.clip(0.99 - 0.54 * severity + 0.02 * rng.standard_normal(), 0.3, 0.999))


@dataclass(frozen=True)
class Occluder:
    """Shape, place and colour of an occluder (fixed per media so video frames share it)."""

    band: bool  # a horizontal band (sunglasses, scarf) rather than a square block (hand, object)
    u: float  # horizontal position in [0, 1] of the free range inside the face box
    v: float  # vertical position in [0, 1]
    colour: tuple[float, float, float]


def draw_occluder(rng: np.random.Generator) -> Occluder:
    """A random occluder: band or block, anywhere on the face box, any colour."""
    return Occluder(
        bool(rng.random() < 0.5),
        float(rng.random()),
        float(rng.random()),
        tuple(float(c) for c in rng.uniform(0, 255, 3)),
    )


def apply(
    img: np.ndarray,
    d: Degradation,
    face_box: tuple[float, float, float, float],
    occluder: Occluder,
    rng: np.random.Generator,
) -> np.ndarray:
    """Degrade a float32 BGR crop in the order occlusion, blur, low resolution, noise; returns uint8.

    The occluder covers MAX_OCCLUDED * d.occlusion of `face_box` (x0, y0, x1, y1); `rng` draws the noise.
    """
    out = img.astype(np.float32, copy=True)
    h, w = out.shape[:2]
    if d.occlusion > 0:
        x0, y0, x1, y1 = face_box
        bw, bh = x1 - x0, y1 - y0
        frac = MAX_OCCLUDED * d.occlusion
        if occluder.band:
            ow, oh = bw, bh * frac
        else:
            ow = oh = min(np.sqrt(frac * bw * bh), bw, bh)
        ox = x0 + occluder.u * max(bw - ow, 0)
        oy = y0 + occluder.v * max(bh - oh, 0)
        cv2.rectangle(
            out, (int(round(ox)), int(round(oy))), (int(round(ox + ow)), int(round(oy + oh))), occluder.colour, -1
        )
    if d.blur > 0:
        out = cv2.GaussianBlur(out, (0, 0), sigmaX=MAX_BLUR_SIGMA * d.blur)
    if d.lowres > 0:
        keep = 1 - (1 - MIN_RES_FRACTION) * d.lowres
        small = (max(int(round(w * keep)), 8), max(int(round(h * keep)), 8))
        out = cv2.resize(cv2.resize(out, small, interpolation=cv2.INTER_AREA), (w, h), interpolation=cv2.INTER_LINEAR)
    if d.noise > 0:
        out += (MAX_NOISE_STD * d.noise) * rng.standard_normal(out.shape, dtype=np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
