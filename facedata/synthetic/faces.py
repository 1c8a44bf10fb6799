"""A small procedural face renderer with exact 5-point landmarks (insightface order).

An identity fixes face shape, skin colour and texture, eye spacing and colour, brows, nose, mouth
and hair; a view (per media, with per-frame jitter) fixes pose, expression, lighting and where the
face sits in a larger loose crop. Landmarks are the canonical points mapped by the same affine
transform that places the face, so they are true to sub-pixel precision.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from .structure import child_rng

CANVAS = 256
"""Side of the square canvas a face is drawn on before it is placed into its crop."""
CX, CY, W = 128.0, 136.0, 58.0
"""Canonical face centre and half-width on the canvas."""
_SHIFT = 4
_ONE = 1 << _SHIFT  # cv2 drawing with 4 fractional bits: sub-pixel positions


@dataclass(frozen=True)
class Identity:
    """Everything that stays the same across one subject's images."""

    skin: tuple[float, float, float]
    face_w: float
    face_h: float
    eye_sep: float
    eye_y: float
    eye_size: float
    iris: tuple[float, float, float]
    brow_color: tuple[float, float, float]
    brow_thick: float
    brow_tilt: float
    nose_len: float
    nose_w: float
    mouth_y: float
    mouth_w: float
    lip: tuple[float, float, float]
    hair: tuple[float, float, float]
    hairline: float
    hair_volume: float
    texture: np.ndarray  # (16, 16) float32 in [-1, 1]: skin pattern
    spots: np.ndarray  # (k, 3): x, y (face units) and radius of moles


@dataclass(frozen=True)
class View:
    """Per-image pose, expression, lighting and placement in the crop."""

    yaw: float  # -1..1, shifts inner features sideways
    pitch: float  # -1..1, shifts them up/down
    smile: float  # -1..1 mouth curvature
    mouth_open: float  # 0..1
    eye_open: float  # 0.3..1
    light_dir: float  # radians
    light_amp: float  # 0..0.5 gradient strength
    brightness: float  # multiplier
    background: tuple[float, float, float]
    crop: int  # crop side in pixels
    scale: float  # canvas -> crop scale
    angle: float  # in-plane rotation, degrees
    centre: tuple[float, float]  # face centre in the crop


def _colour(rng: np.random.Generator, lo: float, hi: float) -> tuple[float, float, float]:
    return tuple(float(v) for v in rng.uniform(lo, hi, 3))


@lru_cache(maxsize=4096)
def make_identity(seed: int, subject: int) -> Identity:
    """The identity of `subject` under `seed` (cached; depends on nothing else)."""
    rng = child_rng(seed, 1, subject)
    tone = rng.uniform(0.25, 1.0)
    skin = (60 + 140 * tone + rng.uniform(-10, 10), 90 + 130 * tone + rng.uniform(-10, 10), 130 + 115 * tone)
    n_spots = int(rng.integers(0, 5))
    spots = np.column_stack(
        [rng.uniform(-0.7, 0.7, n_spots), rng.uniform(-0.2, 0.9, n_spots), rng.uniform(1.2, 3.0, n_spots)]
    )
    return Identity(
        skin=tuple(float(min(v, 250)) for v in skin),
        face_w=float(rng.uniform(0.85, 1.1)),
        face_h=float(rng.uniform(1.15, 1.45)),
        eye_sep=float(rng.uniform(0.34, 0.48)),
        eye_y=float(rng.uniform(-0.32, -0.18)),
        eye_size=float(rng.uniform(0.12, 0.18)),
        iris=_colour(rng, 20, 160),
        brow_color=_colour(rng, 10, 90),
        brow_thick=float(rng.uniform(2.0, 6.0)),
        brow_tilt=float(rng.uniform(-0.12, 0.12)),
        nose_len=float(rng.uniform(0.12, 0.3)),
        nose_w=float(rng.uniform(0.1, 0.2)),
        mouth_y=float(rng.uniform(0.5, 0.68)),
        mouth_w=float(rng.uniform(0.26, 0.4)),
        lip=(float(rng.uniform(60, 120)), float(rng.uniform(50, 100)), float(rng.uniform(120, 200))),
        hair=_colour(rng, 10, 140),
        hairline=float(rng.uniform(-1.0, -0.6)),
        hair_volume=float(rng.uniform(1.0, 1.35)),
        texture=rng.uniform(-1, 1, (16, 16)).astype(np.float32),
        spots=spots,
    )


def canonical_landmarks(ident: Identity, view: View) -> np.ndarray:
    """(5, 2) canvas positions: left eye, right eye, nose tip, left mouth corner, right mouth corner.

    'Left' is the image's left (smaller x), as in insightface's files.
    """
    dx = view.yaw * 0.22 * W
    dy = view.pitch * 0.12 * W
    ey = CY + ident.eye_y * W + dy
    es = ident.eye_sep * W
    my = CY + ident.mouth_y * W + dy * 1.2 - view.smile * 2.5
    mw = ident.mouth_w * W * (1 + 0.15 * view.smile) * (1 - 0.15 * abs(view.yaw))
    return np.array(
        [
            [CX - es * (1 - 0.25 * max(view.yaw, 0)) + dx * 0.7, ey],
            [CX + es * (1 - 0.25 * max(-view.yaw, 0)) + dx * 0.7, ey],
            [CX + dx * 1.3, CY + ident.nose_len * W + dy * 1.1],
            [CX - mw + dx, my],
            [CX + mw + dx, my],
        ],
        dtype=np.float64,
    )


def _p(x: float, y: float) -> tuple[int, int]:
    return int(round(x * _ONE)), int(round(y * _ONE))


def _ax(a: float, b: float) -> tuple[int, int]:
    return max(int(round(a * _ONE)), 1), max(int(round(b * _ONE)), 1)


def draw_canvas(ident: Identity, view: View) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(face image float32 BGR, coverage mask float32 in [0, 1], canonical landmarks) on the canvas."""
    img = np.zeros((CANVAS, CANVAS, 3), np.uint8)
    mask = np.zeros((CANVAS, CANVAS), np.uint8)
    aa = cv2.LINE_AA
    lm = canonical_landmarks(ident, view)
    fw, fh = ident.face_w * W, ident.face_h * W
    hair = ident.hair
    # hair behind the head, neck, then the face oval
    hv = ident.hair_volume
    cv2.ellipse(img, _p(CX, CY - 0.2 * W), _ax(fw * hv, fh * 1.02), 0, 180, 360, hair, -1, aa, _SHIFT)
    cv2.ellipse(mask, _p(CX, CY - 0.2 * W), _ax(fw * hv, fh * 1.02), 0, 180, 360, 255, -1, aa, _SHIFT)
    neck = np.array(
        [
            [CX - 0.45 * fw, CY + 0.8 * fh],
            [CX + 0.45 * fw, CY + 0.8 * fh],
            [CX + 0.6 * fw, CANVAS],
            [CX - 0.6 * fw, CANVAS],
        ]
    )
    skin_dark = tuple(0.8 * c for c in ident.skin)
    cv2.fillPoly(img, [np.round(neck * _ONE).astype(np.int32)], skin_dark, aa, _SHIFT)
    cv2.fillPoly(mask, [np.round(neck * _ONE).astype(np.int32)], 255, aa, _SHIFT)
    face_cx = CX + view.yaw * 0.06 * W
    cv2.ellipse(img, _p(face_cx, CY), _ax(fw, fh), 0, 0, 360, ident.skin, -1, aa, _SHIFT)
    cv2.ellipse(mask, _p(face_cx, CY), _ax(fw, fh), 0, 0, 360, 255, -1, aa, _SHIFT)
    out = img.astype(np.float32)
    # identity skin texture over the face oval
    face_mask = np.zeros((CANVAS, CANVAS), np.float32)
    cv2.ellipse(face_mask, _p(face_cx, CY), _ax(fw, fh), 0, 0, 360, 1.0, -1, aa, _SHIFT)
    tex = cv2.resize(ident.texture, (int(2 * fw), int(2 * fh)), interpolation=cv2.INTER_CUBIC)
    x0, y0 = int(face_cx - fw), int(CY - fh)
    region = out[y0 : y0 + tex.shape[0], x0 : x0 + tex.shape[1]]
    fm = face_mask[y0 : y0 + tex.shape[0], x0 : x0 + tex.shape[1], None]
    region *= 1 + 0.08 * tex[: region.shape[0], : region.shape[1], None] * fm
    img = np.clip(out, 0, 255).astype(np.uint8)
    for sx, sy, sr in ident.spots:
        cv2.circle(img, _p(face_cx + sx * fw, CY + sy * fh * 0.6), int(sr * _ONE), skin_dark, -1, aa, _SHIFT)
    # brows
    for k, side in ((0, -1), (1, 1)):
        ex, ey = lm[k]
        half = ident.eye_size * W * 1.3
        lift = ident.eye_size * W * 1.4
        tilt = side * ident.brow_tilt * W
        p1 = _p(ex - half, ey - lift + tilt)
        p2 = _p(ex + half, ey - lift - tilt)
        cv2.line(img, p1, p2, ident.brow_color, max(int(round(ident.brow_thick)), 1), aa, _SHIFT)
    # eyes: sclera, iris, pupil exactly on the landmark
    for k in (0, 1):
        ex, ey = lm[k]
        r = ident.eye_size * W
        cv2.ellipse(img, _p(ex, ey), _ax(r, r * 0.55 * view.eye_open), 0, 0, 360, (235, 235, 235), -1, aa, _SHIFT)
        cv2.circle(img, _p(ex, ey), int(r * 0.5 * _ONE), ident.iris, -1, aa, _SHIFT)
        cv2.circle(img, _p(ex, ey), int(r * 0.25 * _ONE), (15, 15, 15), -1, aa, _SHIFT)
    # nose: bridge and tip
    nx, ny = lm[2]
    nw = ident.nose_w * W
    bridge = np.array([[(lm[0, 0] + lm[1, 0]) / 2 + 0.2 * (nx - CX), lm[0, 1] + 4], [nx - nw, ny], [nx + nw, ny]])
    cv2.polylines(img, [np.round(bridge * _ONE).astype(np.int32)], False, skin_dark, 2, aa, _SHIFT)
    cv2.circle(img, _p(nx - 0.5 * nw, ny + 1), int(1.8 * _ONE), (40, 40, 60), -1, aa, _SHIFT)
    cv2.circle(img, _p(nx + 0.5 * nw, ny + 1), int(1.8 * _ONE), (40, 40, 60), -1, aa, _SHIFT)
    # mouth: upper and lower lip curves from corner to corner, opening between them
    (lx, ly), (rx, ry) = lm[3], lm[4]
    t = np.linspace(0, 1, 17)
    mx, my = lx + (rx - lx) * t, ly + (ry - ly) * t
    bend = 4 * t * (1 - t)
    upper = np.column_stack([mx, my + bend * (view.smile * 4 - 2)])
    lower = np.column_stack([mx, my + bend * (view.smile * 4 + 3 + 10 * view.mouth_open)])
    lips = np.concatenate([upper, lower[::-1]])
    cv2.fillPoly(img, [np.round(lips * _ONE).astype(np.int32)], ident.lip, aa, _SHIFT)
    if view.mouth_open > 0.15:
        inner = np.concatenate([upper[3:-3] + [0, 2], lower[3:-3][::-1] - [0, 2]])
        cv2.fillPoly(img, [np.round(inner * _ONE).astype(np.int32)], (30, 20, 40), aa, _SHIFT)
    # fringe: hair over the top of the face above the hairline
    top = CY + ident.hairline * fh
    cv2.ellipse(img, _p(face_cx, top), _ax(fw * 1.02, 0.35 * fh), 0, 180, 360, hair, -1, aa, _SHIFT)
    cv2.rectangle(img, _p(face_cx - fw * 1.02, top - 1), _p(face_cx + fw * 1.02, top + 0.06 * fh), hair, -1, aa, _SHIFT)
    return img.astype(np.float32), mask.astype(np.float32) / 255.0, lm


def placement(view: View) -> np.ndarray:
    """2x3 affine map canvas -> crop: rotate by view.angle and scale about the face centre, then move it."""
    m = cv2.getRotationMatrix2D((CX, CY), view.angle, view.scale)
    m[:, 2] += np.array(view.centre) - np.array([CX, CY])
    return m


def render_crop(ident: Identity, view: View, bg_noise: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(loose crop float32 BGR in [0, 255], true landmarks (5, 2) in crop pixels) before degradation.

    `bg_noise` is a small float32 array upsampled into the background's texture.
    """
    face, mask, lm = draw_canvas(ident, view)
    m = placement(view)
    size = (view.crop, view.crop)
    face_w = cv2.warpAffine(face, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    mask_w = cv2.warpAffine(mask, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)[..., None]
    bg = np.asarray(view.background, np.float32) * (
        1 + 0.25 * cv2.resize(bg_noise, size, interpolation=cv2.INTER_CUBIC)[..., None]
    )
    img = face_w * mask_w + bg * (1 - mask_w)
    yy, xx = np.mgrid[0 : view.crop, 0 : view.crop].astype(np.float32) / view.crop - 0.5
    grad = np.cos(view.light_dir) * xx + np.sin(view.light_dir) * yy
    img *= (view.brightness * (1 + view.light_amp * 2 * grad))[..., None]
    landmarks = lm @ m[:, :2].T + m[:, 2]
    return np.clip(img, 0, 255), landmarks.astype(np.float64)
