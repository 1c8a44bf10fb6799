"""Template fusion: per-template aggregation of image features and uncertainties, vectorised.

Methods follow ScaleFace's template_reject_verification.py / aggregation.py, PFE's
aggregate_PFE and insightface's IJB image2template_feature; differences from the
original code (shapes where it fails, normalisation axes) are listed in docs/metrics.md,
section "Template fusion". Every method is a segment reduction over the rows sorted by
template id (np.add/maximum/minimum.reduceat): there is no Python loop over templates. The sums
and minima of first, mean, PFE, weighted, the softmax methods and media run through
analyze.kernels.segment_sums / segment_min: the same reduceat results bit for bit, with each image's
term formed from the rows as given (float32) instead of sorted float64 copies and temporaries.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from analyze.kernels import row_norms, segment_min, segment_sums
from analyze.registry import FusionRegistry, FusionSpec
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
    if uncertainty is not None:  # float32 kept as given (the kernels read it so); _Rows.unc is the float64 view
        uncertainty = np.asarray(uncertainty)
        if uncertainty.dtype not in (np.float32, np.float64):
            uncertainty = uncertainty.astype(np.float64)
        was_1d = uncertainty.ndim == 1
        if was_1d:
            uncertainty = uncertainty[:, None]
        if uncertainty.ndim != 2 or uncertainty.shape[0] != n:
            raise ValueError(f"uncertainty must be ({n},) or ({n}, K), got {np.shape(uncertainty)}")
    return features, template, uncertainty, was_1d


@dataclass
class _Rows:
    """What a fusion function reads: its segments, the raw inputs, and (made on first use) the rows sorted by
    template (`f`, `u`); the kernel-backed methods read the inputs through `seg.order` and never make `f`."""

    seg: _Segments
    features: np.ndarray  # as given (input order)
    template: np.ndarray
    unc_in: np.ndarray | None  # values in input order, (N, K), float32 or float64 as given
    media: dict

    @cached_property
    def unc(self) -> np.ndarray | None:
        """Per-image values in input order as float64, (N, K), or None."""
        return None if self.unc_in is None else np.asarray(self.unc_in, dtype=np.float64)

    @cached_property
    def f(self) -> np.ndarray:
        """Features sorted by template, float64 (an (N, D) copy: only the methods without a kernel use it)."""
        return np.asarray(self.features[self.seg.order], dtype=np.float64)

    @cached_property
    def u(self) -> np.ndarray | None:
        """Per-image values sorted by template, (N, K), or None."""
        return None if self.unc is None else self.unc[self.seg.order]

    def sums(self, src: np.ndarray, **term) -> np.ndarray:
        """``seg.sum(term(src)[order])`` bit for bit, by the kernel (no sorted float64 copy); see segment_sums."""
        return segment_sums(src, self.seg.order, self.seg.starts, self.seg.sizes, **term)


def _needs_values(rows: _Rows, method: str, what: str = "PFE sigma_sq") -> np.ndarray:
    if rows.u is None:
        raise ValueError(f"fusion {method!r} needs {what} (uncertainty=)")
    return rows.u


def _fuse_first(r: _Rows, params: dict):
    first = r.seg.order[r.seg.starts]
    return l2_normalize(r.features[first]), None if r.unc_in is None else np.asarray(r.unc_in[first], np.float64)


def _fuse_mean(stat: bool):
    def run(r: _Rows, params: dict):
        sizes = r.seg.sizes
        unc_out = None if r.unc_in is None else r.sums(r.unc_in) / sizes[:, None]
        if unc_out is not None and stat:
            unc_out = unc_out * np.sqrt(sizes)[:, None]
        return l2_normalize(r.sums(r.features) / sizes[:, None]), unc_out

    return run


def _fuse_pfe(paper: bool):
    def run(r: _Rows, params: dict):
        base = "PFE-paper" if paper else "PFE"
        if r.unc_in is None:
            raise ValueError(f"fusion {base!r} needs PFE sigma_sq (uncertainty=)")
        u = r.unc_in  # input order, as given: the kernels gather through seg.order and widen to float64
        if u.shape[1] not in (1, r.features.shape[1]):
            raise ValueError(f"fusion {base!r}: sigma_sq has {u.shape[1]} columns, features {r.features.shape[1]}")
        if np.any(u <= 0):
            raise ValueError(f"fusion {base!r} needs sigma_sq > 0")
        # sum(f * (1/u) / sum(1/u)) per template; an inf sigma^2 gives a NaN template, dropped later
        inv_sum = r.sums(u, reciprocal=True)
        fused = r.sums(r.features, attention=(u, inv_sum))
        with np.errstate(divide="ignore"):
            unc_out = 1.0 / inv_sum if paper else segment_min(u, r.seg.order, r.seg.starts, r.seg.sizes)
        return l2_normalize(fused), unc_out

    return run


def _fuse_min(r: _Rows, params: dict):
    u = _needs_values(r, "min", "per-image uncertainties")
    f, seg = r.f, r.seg
    if u.shape[1] not in (1, f.shape[1]):
        raise ValueError(f"fusion 'min': uncertainty has {u.shape[1]} columns, features {f.shape[1]}")
    u_min = seg.min(u)
    pos = seg.first_where(u == u_min[seg.seg])  # (T, K): first image with the min, per column
    # K = 1: the whole feature of the least uncertain image; K = D: coordinate-wise choice.
    fused = f[pos[:, 0]] if u.shape[1] == 1 else f[pos, np.arange(f.shape[1])]
    return l2_normalize(fused), u_min


def _fuse_argmax(r: _Rows, params: dict):
    c = _scalar_confidence(r.u, "argmax")
    pos = r.seg.first_where(c == r.seg.max(c)[r.seg.seg])
    return l2_normalize(r.f[pos]), r.u[pos]  # type: ignore[index]


def _fuse_softmax(stat: bool):
    def run(r: _Rows, params: dict):
        c = _scalar_confidence(r.u, "stat-softmax" if stat else "softmax")
        w = r.seg.softmax(c, params.get("temperature", 1.0))
        unc_out = r.seg.sum(r.u * w[:, None])  # type: ignore[operator]
        if stat:
            unc_out = unc_out * np.sqrt(r.seg.sizes)[:, None]
        return l2_normalize(r.sums(r.features, weight=w)), unc_out

    return run


def _confidence_weights(r: _Rows, method: str) -> np.ndarray:
    c = _scalar_confidence(r.u, method)
    return c / r.seg.sum(c)[r.seg.seg]


def _fuse_weighted(r: _Rows, params: dict):
    w = _confidence_weights(r, "weighted")
    norm = row_norms(r.features)[r.seg.order]  # l2_normalize(f) * w, per image, without the float64 copy of f
    fused = r.sums(r.features, divide=np.where(norm > 0, norm, 1.0), weight=w)
    return l2_normalize(fused), r.seg.sum(r.u * w[:, None])  # type: ignore[operator]


def _fuse_weighted_scaleface(r: _Rows, params: dict):
    """ScaleFace's `weighted` as coded: l2_normalize(t.features) with axis=None, one norm per template matrix."""
    w = _confidence_weights(r, "weighted-scaleface")
    frobenius = np.sqrt(r.seg.sum(np.einsum("nd,nd->n", r.f, r.f)))  # ||F|| of each template's (n, D) matrix
    scaled = r.f / np.where(frobenius > 0, frobenius, 1.0)[r.seg.seg][:, None]
    return l2_normalize(r.seg.sum(scaled * w[:, None])), r.seg.sum(r.u * w[:, None])  # type: ignore[operator]


def _fuse_weighted_softmax(r: _Rows, params: dict):
    w = _confidence_weights(r, "weighted-softmax")
    s = r.seg.softmax(r.u[:, 0], params["temperature"])  # type: ignore[index]
    return l2_normalize(r.sums(r.features, weight=w)), r.seg.sum(r.u * s[:, None])  # type: ignore[operator]


def _fuse_media(r: _Rows, params: dict):
    return _media(r.features, r.template, r.seg, r.unc_in, **r.media)


_SCRIPT = "ScaleFace face_lib/evaluation/template_reject_verification.py aggregate_templates"
_NO_PFE_COLUMNS = "the script reads t.sigmas[:, 0] (a PFE sigma_sq's first dimension only); we refuse (N, D) input"

FUSIONS = FusionRegistry(
    "fusion",
    [
        FusionSpec(
            "first",
            "the template's first image (input order): its L2-normalised feature and its value",
            "its value",
            _fuse_first,
            source=_SCRIPT,
            deviations=("first in the input (store) order; the script's is the first of the sorted image paths",),
        ),
        FusionSpec(
            "mean",
            "L2-normalised mean feature; value = mean of the images' values",
            "mean",
            _fuse_mean(stat=False),
            source=_SCRIPT,
        ),
        FusionSpec(
            "stat-mean",
            "as mean, value = mean * sqrt(n_images)",
            "mean * sqrt(n)",
            _fuse_mean(stat=True),
            source=_SCRIPT,
        ),
        FusionSpec(
            "PFE",
            "PFE code: attention 1/sigma^2 per dimension, L2-normalised; sigma^2 = per-dimension min",
            "per-dimension min sigma^2",
            _fuse_pfe(paper=False),
            inputs=("sigma_sq",),
            source="PFE aggregate_PFE; ScaleFace face_lib/evaluation/aggregation.py aggregate_PFE",
            deviations=("the PFE paper's fused variance is PFE-paper; this follows the code (published numbers)",),
        ),
        FusionSpec(
            "PFE-paper",
            "as PFE, but sigma^2 = 1/sum(1/sigma^2) as in the PFE paper's formula",
            "1/sum(1/sigma^2)",
            _fuse_pfe(paper=True),
            inputs=("sigma_sq",),
            source="the PFE paper's formula (not in any code)",
        ),
        FusionSpec(
            "softmax",
            "softmax-T: weights softmax(c/T) over the template's images (T defaults to 1)",
            "sum w u",
            _fuse_softmax(stat=False),
            inputs=("confidence",),
            source=_SCRIPT,
            deviations=(
                "aggregation.aggregate_softmax (ScaleFace fusion.py) uses exp(sigma*T) over the feature axis; "
                "we follow template_reject_verification.py's softmax(c/T) over the images",
                _NO_PFE_COLUMNS,
            ),
            temperature=1.0,
        ),
        FusionSpec(
            "stat-softmax",
            "softmax with T=1, value = weighted mean * sqrt(n_images)",
            "sum w u * sqrt(n)",
            _fuse_softmax(stat=True),
            inputs=("confidence",),
            source=_SCRIPT,
            deviations=(_NO_PFE_COLUMNS,),
        ),
        FusionSpec(
            "weighted",
            "weights c/sum(c) applied to per-image L2-normalised features",
            "sum w u",
            _fuse_weighted,
            inputs=("confidence",),
            source=_SCRIPT,
            deviations=(
                "the script's l2_normalize(t.features) has axis=None (one norm for the template's matrix); we "
                "normalise each image (the method's intent); weighted-scaleface reproduces the script",
                _NO_PFE_COLUMNS,
            ),
        ),
        FusionSpec(
            "weighted-scaleface",
            "ScaleFace's weighted as coded: features / ||F|| (one norm per template matrix), weights c/sum(c)",
            "sum w u",
            _fuse_weighted_scaleface,
            inputs=("confidence",),
            source=_SCRIPT + " ('weighted', l2_normalize with its default axis=None)",
            deviations=("||F|| instead of ||F|| + 1e-8", _NO_PFE_COLUMNS),
        ),
        FusionSpec(
            "weighted-softmax",
            "weighted-softmax-T: features weighted by c/sum(c), value by softmax(c/T)",
            "sum softmax(c/T) u",
            _fuse_weighted_softmax,
            inputs=("confidence",),
            source=_SCRIPT,
            deviations=(_NO_PFE_COLUMNS,),
            temperature=1.0,
        ),
        FusionSpec(
            "argmax",
            "the most confident image's feature (L2-normalised) and value",
            "its value",
            _fuse_argmax,
            inputs=("confidence",),
            source=_SCRIPT,
            deviations=(
                "np.argmax(t.sigmas) on the flattened array in the script; we take the largest scalar confidence "
                "and L2-normalise its feature",
            ),
        ),
        FusionSpec(
            "min",
            "per dimension, the coordinate of the image with the smallest uncertainty; value = that min",
            "per-dimension min",
            _fuse_min,
            inputs=("values",),
            source="ScaleFace face_lib/evaluation/aggregation.py aggregate_min",
            deviations=("with one value per image (where the script fails) the whole least uncertain image",),
        ),
        FusionSpec(
            "media",
            "insightface IJB: optional flip add, norm drop, detector weighting; mean per media, "
            "sum over medias, L2-normalise",
            "mean of u, if given",
            _fuse_media,
            inputs=("media",),
            source="insightface recognition/_evaluation_/ijb image2template_feature",
        ),
    ],
)
"""Every template fusion (c = per-image confidence, shape (N,)), in `analyze list` order."""


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
    registry: FusionRegistry | None = None,
) -> FusedTemplates:
    """Fuse per-image rows into one feature (and uncertainty) per template id.

    `name` is a fusion registered in `FUSIONS` (or `registry`; 'softmax-0.5' style temperatures allowed).
    `uncertainty` holds the per-image values the scripts call sigmas: a confidence (N,) for
    scale/norm or PFE sigma_sq (N, D). Templates come out sorted by id. Only 'media' uses
    `media`, `detector_score`, `features_flip` and the three switches (insightface's N/D/F
    test modes; defaults are its N1 D1 F2).
    """
    spec, params = (registry or FUSIONS).resolve(name)
    features, template, unc, was_1d = _check_inputs(features, template, uncertainty)
    seg = _segments(template)
    rows = _Rows(
        seg=seg,
        features=features,
        template=template,
        unc_in=unc,
        media={
            "media": media,
            "detector_score": detector_score,
            "features_flip": features_flip,
            "keep_norm": keep_norm,
            "use_detector_score": use_detector_score,
            "add_flip": add_flip,
        },
    )
    fused, unc_out = spec.fuse(rows, params)
    if unc_out is not None and was_1d:
        unc_out = unc_out[:, 0]
    return FusedTemplates(ids=seg.ids, features=fused, uncertainty=unc_out, sizes=seg.sizes)


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
    x, flip = features, None  # the per-image term (x + flip) * score is formed inside the segment-sum kernel
    if add_flip:
        if features_flip is None:
            raise ValueError("fusion 'media' adds the flipped embedding: pass features_flip= or add_flip=False")
        flip = np.asarray(features_flip)
        if flip.shape != x.shape:
            raise ValueError(f"features_flip has shape {flip.shape}, features {x.shape}")
    if not keep_norm:
        x = np.asarray(x, dtype=np.float64)
        x = l2_normalize(x if flip is None else x + np.asarray(flip, dtype=np.float64))
        flip = None
    score = None
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
    weight = None if score is None else score[order]
    media_feats = segment_sums(x, order, g_starts, g_sizes, add=flip, weight=weight) / g_sizes[:, None]
    g_template = t_sorted[g_starts]
    t_starts = np.flatnonzero(np.r_[True, g_template[1:] != g_template[:-1]])
    t_sizes = np.diff(np.append(t_starts, len(g_starts)))
    fused = l2_normalize(segment_sums(media_feats, np.arange(len(g_starts)), t_starts, t_sizes))
    unc_out = None
    if unc is not None:
        unc_out = segment_sums(unc, seg.order, seg.starts, seg.sizes) / seg.sizes[:, None]
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
