"""Template fusion: per-template aggregation of image features and uncertainties, vectorised.

Methods follow ScaleFace's template_reject_verification.py / aggregation.py, PFE's
aggregate_PFE and insightface's IJB image2template_feature; differences from the
original code (shapes where it fails, normalisation axes) are listed in docs/metrics.md,
section "Template fusion". Every method is a segment reduction over the rows sorted by
template id (np.add/maximum/minimum.reduceat): there is no Python loop over templates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analyze.names import FUSIONS, parse_fusion
from analyze.rows import l2_normalize

__all__ = ["FUSIONS", "FusedTemplates", "fuse", "template_rows"]


@dataclass
class FusedTemplates:
    """Fusion output: sorted unique template ids, their features and uncertainties, image counts.

    `uncertainty` has the per-image values' shape per template: (T,) for (N,) input, (T, K) for
    (N, K) input; None when the method was given no values and needs none.
    """

    ids: np.ndarray
    features: np.ndarray
    uncertainty: np.ndarray | None
    sizes: np.ndarray


@dataclass
class _Segments:
    order: np.ndarray  # stable sort of the rows by template id
    ids: np.ndarray  # unique template ids, ascending
    starts: np.ndarray  # start of each template's run in sorted order
    sizes: np.ndarray
    seg: np.ndarray  # template index of each sorted row

    def sum(self, x_sorted: np.ndarray) -> np.ndarray:
        return np.add.reduceat(x_sorted, self.starts, axis=0)

    def max(self, x_sorted: np.ndarray) -> np.ndarray:
        return np.maximum.reduceat(x_sorted, self.starts, axis=0)

    def min(self, x_sorted: np.ndarray) -> np.ndarray:
        return np.minimum.reduceat(x_sorted, self.starts, axis=0)

    def first_where(self, mask_sorted: np.ndarray) -> np.ndarray:
        """Sorted-row position of the first True per template (and per column for 2-D masks)."""
        pos = np.arange(len(mask_sorted)).reshape((-1,) + (1,) * (mask_sorted.ndim - 1))
        big = len(mask_sorted)
        return np.minimum.reduceat(np.where(mask_sorted, pos, big), self.starts, axis=0)

    def softmax(self, v_sorted: np.ndarray, temperature: float) -> np.ndarray:
        z = v_sorted / temperature
        e = np.exp(z - self.max(z)[self.seg])
        return e / self.sum(e)[self.seg]


def _segments(template: np.ndarray) -> _Segments:
    order = np.argsort(template, kind="stable")
    t_sorted = template[order]
    ids, starts, sizes = np.unique(t_sorted, return_index=True, return_counts=True)
    seg = np.repeat(np.arange(len(ids)), sizes)
    return _Segments(order=order, ids=ids, starts=starts, sizes=sizes, seg=seg)


def _scalar_confidence(values: np.ndarray | None, method: str) -> np.ndarray:
    if values is None:
        raise ValueError(f"fusion {method!r} needs per-image confidences (uncertainty=)")
    if values.shape[1] != 1:
        raise ValueError(
            f"fusion {method!r} weights images by one confidence each, got values of shape "
            f"{values.shape}; reduce PFE sigma_sq with analyze.uncertainty.pfe_confidence first"
        )
    return values[:, 0]


def _check_inputs(
    features: np.ndarray, template: np.ndarray, uncertainty: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, bool]:
    features = np.asarray(features)
    if features.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {features.shape}")
    n = features.shape[0]
    template = np.asarray(template).reshape(-1)
    if template.shape[0] != n:
        raise ValueError(f"template ids: {template.shape[0]} rows, features: {n} rows")
    if n == 0:
        raise ValueError("cannot fuse zero images")
    if not np.issubdtype(template.dtype, np.integer):
        raise ValueError(f"template ids must be integers, got {template.dtype}")
    if np.any(template < 0):
        raise ValueError(f"{int(np.sum(template < 0))} images have template id < 0 (-1 = no template); drop them first")
    was_1d = False
    if uncertainty is not None:
        uncertainty = np.asarray(uncertainty, dtype=np.float64)
        was_1d = uncertainty.ndim == 1
        if was_1d:
            uncertainty = uncertainty[:, None]
        if uncertainty.ndim != 2 or uncertainty.shape[0] != n:
            raise ValueError(f"uncertainty must be ({n},) or ({n}, K), got {np.shape(uncertainty)}")
    return features, template, uncertainty, was_1d


def fuse(
    name: str,
    features: np.ndarray,
    template: np.ndarray,
    *,
    uncertainty: np.ndarray | None = None,
    media: np.ndarray | None = None,
    detector_score: np.ndarray | None = None,
    features_flip: np.ndarray | None = None,
    keep_norm: bool = True,
    use_detector_score: bool = True,
    add_flip: bool = True,
) -> FusedTemplates:
    """Fuse per-image rows into one feature (and uncertainty) per template id.

    `name` is a fusion from `analyze.names.FUSIONS` ('softmax-0.5' style temperatures allowed).
    `uncertainty` holds the per-image values the scripts call sigmas: a confidence (N,) for
    scale/norm or PFE sigma_sq (N, D). Templates come out sorted by id. Only 'media' uses
    `media`, `detector_score`, `features_flip` and the three switches (insightface's N/D/F
    test modes; defaults are its N1 D1 F2).
    """
    base, params = parse_fusion(name)
    features, template, unc, was_1d = _check_inputs(features, template, uncertainty)
    seg = _segments(template)
    f = np.asarray(features[seg.order], dtype=np.float64)
    u = None if unc is None else unc[seg.order]
    sizes = seg.sizes

    if base == "media":
        fused, unc_out = _media(
            features,
            template,
            seg,
            unc,
            media,
            detector_score,
            features_flip,
            keep_norm,
            use_detector_score,
            add_flip,
        )
    elif base in ("mean", "stat-mean"):
        fused = l2_normalize(seg.sum(f) / sizes[:, None])
        unc_out = None if u is None else seg.sum(u) / sizes[:, None]
        if unc_out is not None and base == "stat-mean":
            unc_out = unc_out * np.sqrt(sizes)[:, None]
    elif base == "first":
        fused = l2_normalize(f[seg.starts])
        unc_out = None if u is None else u[seg.starts]
    elif base in ("PFE", "PFE-paper"):
        if u is None:
            raise ValueError(f"fusion {base!r} needs PFE sigma_sq (uncertainty=)")
        if u.shape[1] not in (1, f.shape[1]):
            raise ValueError(f"fusion {base!r}: sigma_sq has {u.shape[1]} columns, features {f.shape[1]}")
        if np.any(u <= 0):
            raise ValueError(f"fusion {base!r} needs sigma_sq > 0")
        with np.errstate(invalid="ignore", divide="ignore"):  # inf sigma^2 -> NaN template, dropped later
            inv = 1.0 / u
            inv_sum = seg.sum(inv)
            attention = inv / inv_sum[seg.seg]
        fused = l2_normalize(seg.sum(f * attention))
        unc_out = seg.min(u) if base == "PFE" else 1.0 / inv_sum
    elif base == "min":
        if u is None:
            raise ValueError("fusion 'min' needs per-image uncertainties (uncertainty=)")
        if u.shape[1] not in (1, f.shape[1]):
            raise ValueError(f"fusion 'min': uncertainty has {u.shape[1]} columns, features {f.shape[1]}")
        u_min = seg.min(u)
        pos = seg.first_where(u == u_min[seg.seg])  # (T, K): first image with the min, per column
        # K = 1: the whole feature of the least uncertain image; K = D: coordinate-wise choice.
        fused = f[pos[:, 0]] if u.shape[1] == 1 else f[pos, np.arange(f.shape[1])]
        fused = l2_normalize(fused)
        unc_out = u_min
    elif base == "argmax":
        c = _scalar_confidence(u, base)
        pos = seg.first_where(c == seg.max(c)[seg.seg])
        fused = l2_normalize(f[pos])
        unc_out = u[pos]  # type: ignore[index]
    elif base in ("softmax", "stat-softmax"):
        c = _scalar_confidence(u, base)
        w = seg.softmax(c, params.get("temperature", 1.0))
        fused = l2_normalize(seg.sum(f * w[:, None]))
        unc_out = seg.sum(u * w[:, None])  # type: ignore[operator]
        if base == "stat-softmax":
            unc_out = unc_out * np.sqrt(sizes)[:, None]
    elif base == "weighted":
        c = _scalar_confidence(u, base)
        w = c / seg.sum(c)[seg.seg]
        fused = l2_normalize(seg.sum(l2_normalize(f) * w[:, None]))
        unc_out = seg.sum(u * w[:, None])  # type: ignore[operator]
    elif base == "weighted-softmax":
        c = _scalar_confidence(u, base)
        w = c / seg.sum(c)[seg.seg]
        fused = l2_normalize(seg.sum(f * w[:, None]))
        s = seg.softmax(c, params["temperature"])
        unc_out = seg.sum(u * s[:, None])  # type: ignore[operator]
    else:  # pragma: no cover - names.py and this table are kept in step by the tests
        raise ValueError(f"fusion {base!r} is registered but not implemented; known: {list(FUSIONS)}")

    if unc_out is not None and was_1d:
        unc_out = unc_out[:, 0]
    return FusedTemplates(ids=seg.ids, features=fused, uncertainty=unc_out, sizes=sizes)


def _media(
    features: np.ndarray,
    template: np.ndarray,
    seg: _Segments,
    unc: np.ndarray | None,
    media: np.ndarray | None,
    detector_score: np.ndarray | None,
    features_flip: np.ndarray | None,
    keep_norm: bool,
    use_detector_score: bool,
    add_flip: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    """insightface image2template_feature: mean over each media's frames, sum over medias, L2-normalise."""
    n = features.shape[0]
    x = np.asarray(features, dtype=np.float64)
    if add_flip:
        if features_flip is None:
            raise ValueError("fusion 'media' adds the flipped embedding: pass features_flip= or add_flip=False")
        flip = np.asarray(features_flip, dtype=np.float64)
        if flip.shape != x.shape:
            raise ValueError(f"features_flip has shape {flip.shape}, features {x.shape}")
        x = x + flip
    if not keep_norm:
        x = l2_normalize(x)
    if use_detector_score:
        if detector_score is None:
            raise ValueError(
                "fusion 'media' weights by detector score: pass detector_score= or use_detector_score=False"
            )
        score = np.asarray(detector_score, dtype=np.float64).reshape(-1)
        if score.shape[0] != n:
            raise ValueError(f"detector_score has {score.shape[0]} rows, features {n}")
        if np.any(np.isnan(score)):
            raise ValueError(
                f"{int(np.isnan(score).sum())} images have no detector score (NaN); "
                "use use_detector_score=False for this dataset"
            )
        x = x * score[:, None]
    if media is None:
        raise ValueError("fusion 'media' needs media ids (media=); -1 marks an image without one")
    media = np.asarray(media).reshape(-1)
    if media.shape[0] != n:
        raise ValueError(f"media ids have {media.shape[0]} rows, features {n}")
    # -1 = no media: every such image is a media of its own.
    media = np.where(media < 0, -2 - np.arange(n), media).astype(np.int64)
    order = np.lexsort((media, template))  # stable; template-major
    t_sorted, m_sorted = template[order], media[order]
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = (t_sorted[1:] != t_sorted[:-1]) | (m_sorted[1:] != m_sorted[:-1])
    g_starts = np.flatnonzero(new_group)
    g_sizes = np.diff(np.append(g_starts, n))
    media_feats = np.add.reduceat(x[order], g_starts, axis=0) / g_sizes[:, None]
    g_template = t_sorted[g_starts]
    t_starts = np.flatnonzero(np.r_[True, g_template[1:] != g_template[:-1]])
    fused = l2_normalize(np.add.reduceat(media_feats, t_starts, axis=0))
    unc_out = None
    if unc is not None:
        u = unc[seg.order]
        unc_out = seg.sum(u) / seg.sizes[:, None]
    return fused, unc_out


def template_rows(ids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Row of each wanted template id in sorted `ids` (a FusedTemplates.ids); error naming a missing id."""
    ids = np.asarray(ids)
    wanted = np.asarray(wanted)
    rows = np.searchsorted(ids, wanted)
    rows_clipped = np.minimum(rows, max(len(ids) - 1, 0))
    found = (rows < len(ids)) & (ids[rows_clipped] == wanted) if len(ids) else np.zeros(wanted.shape, bool)
    if not np.all(found):
        missing = np.unique(wanted[~found])
        raise ValueError(
            f"{missing.size} template ids have no fused template (no usable images), e.g. {missing[:5].tolist()}"
        )
    return rows
