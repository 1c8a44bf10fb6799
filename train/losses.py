"""The training objectives: ArcFace with a per-image predicted scale (ScaleFace), PFE's mutual likelihood
score over genuine pairs, and the pair classifiers (SmartCosine, Bilinear, MLP) with their NLL loss.

Cosines are clamped to [-1 + eps, 1 - eps] before acos (the original's missing clamp gives NaN in fp16).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

COS_EPS = 1e-6
"""Cosines are clamped to [-1 + COS_EPS, 1 - COS_EPS]: acos' gradient is infinite at +-1."""


def _at_least_f32(x: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 -> float32; float64 stays (gradient checks run in double)."""
    return x.double() if x.dtype == torch.float64 else x.float()


def margin_cosines(cos: torch.Tensor, labels: torch.Tensor, margin: float = 0.5) -> torch.Tensor:
    """ArcFace's z: cos(theta_y + m) in the target column, cos(theta_j) elsewhere, computed in float32."""
    cos = _at_least_f32(cos).clamp(-1.0 + COS_EPS, 1.0 - COS_EPS)
    target = cos.gather(1, labels.view(-1, 1))
    shifted = torch.cos(torch.acos(target) + margin)
    return cos.scatter(1, labels.view(-1, 1), shifted)


def arcface_logits(
    cos: torch.Tensor, labels: torch.Tensor, scale: torch.Tensor | float, margin: float = 0.5
) -> torch.Tensor:
    """Logits s_i * z_ij: `scale` a float (plain ArcFace(s, m)) or a (B,) tensor (ScaleFace's predicted s_i)."""
    z = margin_cosines(cos, labels, margin)
    s = _at_least_f32(scale).view(-1, 1) if isinstance(scale, torch.Tensor) else float(scale)
    return s * z


def class_cosines(embedding: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """(B, C) cosines between L2-normalised embeddings and L2-normalised class centres."""
    return F.linear(F.normalize(_at_least_f32(embedding), dim=1), F.normalize(_at_least_f32(centres), dim=1))


def scaleface_loss(
    cos: torch.Tensor, labels: torch.Tensor, scale: torch.Tensor | float, margin: float = 0.5
) -> torch.Tensor:
    """Mean cross-entropy of the ArcFace logits with the predicted per-image scale (no regulariser, as the
    original). Its gradient in s_i is (sum_j p_ij z_ij - z_iy) / B."""
    return F.cross_entropy(arcface_logits(cos, labels, scale, margin), labels)


def mls_loss(mu: torch.Tensor, log_sigma_sq: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """PFE's negative mutual likelihood score, mean over genuine pairs i < j (same label) of
    sum_k (mu_ik - mu_jk)^2 / (s_ik + s_jk) + log(s_ik + s_jk), with mu L2-normalised and s = sigma^2.
    A batch without a genuine pair gives 0 (with a graph, so backward still works)."""
    mu = F.normalize(_at_least_f32(mu), dim=1)
    sigma_sq = torch.exp(_at_least_f32(log_sigma_sq))
    i, j = torch.triu_indices(len(labels), len(labels), offset=1, device=labels.device)
    genuine = labels[i] == labels[j]
    i, j = i[genuine], j[genuine]
    if i.numel() == 0:
        return (mu.sum() + sigma_sq.sum()) * 0.0
    total = sigma_sq[i] + sigma_sq[j]
    per_pair = ((mu[i] - mu[j]) ** 2 / total + torch.log(total)).sum(dim=1)
    return per_pair.mean()


class SmartCosine(nn.Module):
    """log_softmax(Linear(D -> 2)(mu1 * mu2)) on L2-normalised embeddings: a learned weighted cosine."""

    def __init__(self, dim: int = 512):
        super().__init__()
        self.fc = nn.Linear(dim, 2)

    def forward(self, mu1: torch.Tensor, mu2: torch.Tensor) -> torch.Tensor:
        """(B, D), (B, D) -> (B, 2) log-probabilities (class 1 = same identity)."""
        return F.log_softmax(self.fc(F.normalize(mu1, dim=1) * F.normalize(mu2, dim=1)), dim=1)


class BilinearPair(nn.Module):
    """log_softmax(Bilinear(D, D -> 2)(mu1, mu2)) on L2-normalised embeddings."""

    def __init__(self, dim: int = 512):
        super().__init__()
        self.bilinear = nn.Bilinear(dim, dim, 2)

    def forward(self, mu1: torch.Tensor, mu2: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.bilinear(F.normalize(mu1, dim=1), F.normalize(mu2, dim=1)), dim=1)


class MLPPair(nn.Module):
    """log_softmax(MLP([mu1, mu2])) on L2-normalised embeddings (hidden ReLU layer)."""

    def __init__(self, dim: int = 512, hidden: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(2 * dim, hidden), nn.ReLU(), nn.Linear(hidden, 2))

    def forward(self, mu1: torch.Tensor, mu2: torch.Tensor) -> torch.Tensor:
        x = torch.cat([F.normalize(mu1, dim=1), F.normalize(mu2, dim=1)], dim=1)
        return F.log_softmax(self.mlp(x), dim=1)


PAIR_CLASSIFIERS = {"smart_cosine": SmartCosine, "bilinear": BilinearPair, "mlp": MLPPair}


def build_pair_classifier(kind: str, dim: int = 512) -> nn.Module:
    """One of PAIR_CLASSIFIERS by name; unknown names raise ValueError listing the known ones."""
    if kind not in PAIR_CLASSIFIERS:
        raise ValueError(f"unknown pair classifier {kind!r}; known: {', '.join(PAIR_CLASSIFIERS)}")
    return PAIR_CLASSIFIERS[kind](dim)


def pair_uncertainty(log_probs: torch.Tensor) -> torch.Tensor:
    """The repository's `classifier` uncertainty: 1 - max softmax probability, shape (B,)."""
    return 1.0 - log_probs.exp().max(dim=1).values


def pair_batch(labels: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Balanced pairs from a batch: every genuine pair i < j and as many impostor pairs, drawn with
    `generator`; returns (index pairs (P, 2), same-identity targets (P,) int64)."""
    n = len(labels)
    i, j = torch.triu_indices(n, n, offset=1, device=labels.device)
    same = labels[i] == labels[j]
    gen = torch.stack([i[same], j[same]], 1)
    imp = torch.stack([i[~same], j[~same]], 1)
    k = min(len(imp), max(len(gen), 1))
    pick = torch.randperm(len(imp), generator=generator)[:k].to(labels.device)
    pairs = torch.cat([gen, imp[pick]])
    target = torch.cat([torch.ones(len(gen)), torch.zeros(k)]).long().to(labels.device)
    return pairs, target
