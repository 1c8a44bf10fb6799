"""Per-row primitives at the bottom of `analyze`: normalise rows, reduce PFE sigma^2, check pair indices and
unit-interval values.

Every other analyze module (scores, uncertainty, fusion, loading, reject, tarfar, experiments) imports
these; this module imports only numpy, so no analyze module needs a local import to dodge a cycle.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["check_pairs", "check_unit_interval", "harmonic_mean", "image_scalar", "l2_normalize", "pfe_confidence"]


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """x / ||x|| along `axis` in float64; a zero row stays zero instead of becoming NaN."""
    x = np.asarray(x, dtype=np.float64)
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def harmonic_mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Harmonic mean 1/mean(1/x) along `axis` (the scripts' reduction of PFE sigma_sq), float64."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return 1.0 / np.mean(1.0 / x, axis=axis)


def image_scalar(values: np.ndarray) -> np.ndarray:
    """One value per image: (N,) and (N, 1) unchanged, (N, D) PFE sigma_sq -> harmonic mean over D."""
    values = np.asarray(values)
    if values.ndim == 1:
        return values.astype(np.float64)
    if values.ndim != 2:
        raise ValueError(f"per-image values must be (N,) or (N, K), got shape {values.shape}")
    if values.shape[1] == 1:
        return values[:, 0].astype(np.float64)
    return harmonic_mean(values, axis=1)


def pfe_confidence(sigma_sq: np.ndarray) -> np.ndarray:
    """PFE confidence 1 / harmonic_mean(sigma_sq) per image (the scripts' pfe-* score weights), (N,)."""
    return 1.0 / image_scalar(sigma_sq)


def check_pairs(i: np.ndarray, j: np.ndarray, n_rows: int, what: str = "features") -> tuple[np.ndarray, np.ndarray]:
    """Validate pair index arrays against `n_rows` rows; return them as int64 1-D arrays."""
    i = np.asarray(i).reshape(-1)
    j = np.asarray(j).reshape(-1)
    if i.shape != j.shape:
        raise ValueError(f"pair index arrays differ in length: i has {i.size}, j has {j.size}")
    if not (np.issubdtype(i.dtype, np.integer) and np.issubdtype(j.dtype, np.integer)):
        if i.size or j.size:
            raise ValueError(f"pair indices must be integers, got {i.dtype} and {j.dtype}")
    i = i.astype(np.int64, copy=False)
    j = j.astype(np.int64, copy=False)
    for name, idx in (("i", i), ("j", j)):
        if idx.size and (idx.min() < 0 or idx.max() >= n_rows):
            bad = idx[(idx < 0) | (idx >= n_rows)][0]
            raise ValueError(f"pair index {name} holds {bad}, outside the {n_rows} rows of {what}")
    return i, j


def check_unit_interval(values: ArrayLike, what: str, each: str | None = None, show: bool = False) -> np.ndarray:
    """Validate a non-empty 1-D sequence (a scalar becomes length 1) of values in [0, 1]; return it as float64.

    The error names `what` (e.g. "fars"), each value as `each` (default "value of <what>") and, with
    `show`, lists the values given.
    """
    v = np.atleast_1d(np.asarray(values, dtype=np.float64))
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"{what} must be a non-empty 1-D sequence, got shape {v.shape}")
    if np.isnan(v).any() or (v < 0).any() or (v > 1).any():
        listed = f", got {v.tolist()}" if show else ""
        raise ValueError(f"every {each or 'value of ' + what} must lie in [0, 1]{listed}")
    return v
