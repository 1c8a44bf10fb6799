"""Uncertainty heads that read the 25088-d iResNet bottleneck, in the ScaleFace repository's key layout.

- `ScalePredictor` = ScaleFace's `MLPHead` (state_dict `mlp.<i>.*`): Linear(no bias) [+ BatchNorm1d
  (affine=False)] + ReLU per hidden layer, a final Linear(no bias), then an output activation.
- `PFESigmaHead` = its `PFEHeadAdjustable` (`fc1`, `fc2` raw weight parameters used row-normalised,
  `bn1` affine, `bn2` non-affine, scalar `gamma`, `beta`); outputs log sigma^2.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

SCALE_ACTIVATIONS = ("lin", "exp", "sigm", "sigm_mul", "sigm_sum", "sigm_sum_mul", "relu")
"""Output activations of ScaleFace's MLPHead (its `exponent`/`activation` argument)."""


def apply_scale_activation(x: torch.Tensor, activation: str, coefficient: float) -> torch.Tensor:
    """The MLPHead output map: lin x, exp e^x, sigm s(x), sigm_mul c*s(x), sigm_sum c+s(x),
    sigm_sum_mul c+c*s(x), relu c*max(x,0) (s = logistic sigmoid, c = coefficient)."""
    if activation == "lin":
        return x
    if activation == "exp":
        return torch.exp(x)
    if activation == "sigm":
        return torch.sigmoid(x)
    if activation == "sigm_mul":
        return coefficient * torch.sigmoid(x)
    if activation == "sigm_sum":
        return coefficient + torch.sigmoid(x)
    if activation == "sigm_sum_mul":
        return coefficient + coefficient * torch.sigmoid(x)
    if activation == "relu":
        return coefficient * F.relu(x)
    raise ValueError(f"unknown scale activation {activation!r}; known: {SCALE_ACTIVATIONS}")


class ScalePredictor(nn.Module):
    """ScaleFace scale predictor: MLP over the bottleneck -> one positive scale per image, shape (B,)."""

    def __init__(
        self,
        num_feats: Sequence[int] = (25088, 512, 1),
        batch_norm: bool = True,
        activation: str = "sigm_mul",
        coefficient: float = 64.0,
    ):
        super().__init__()
        num_feats = [int(n) for n in num_feats]
        if len(num_feats) < 2:
            raise ValueError(f"scale predictor num_feats needs at least 2 sizes, got {num_feats}")
        if num_feats[-1] != 1:
            raise ValueError(f"scale predictor must end in 1 output, got num_feats={num_feats}")
        if activation not in SCALE_ACTIVATIONS:
            raise ValueError(f"unknown scale activation {activation!r}; known: {SCALE_ACTIVATIONS}")
        self.activation = activation
        self.coefficient = float(coefficient)
        layers: list[nn.Module] = []
        for n_in, n_out in zip(num_feats[:-2], num_feats[1:-1]):
            layers.append(nn.Linear(n_in, n_out, bias=False))
            if batch_norm:
                layers.append(nn.BatchNorm1d(n_out, affine=False))
            layers.append(nn.ReLU())
        layers.append(nn.Linear(num_feats[-2], num_feats[-1], bias=False))
        self.mlp = nn.Sequential(*layers)

    def forward(self, bottleneck: torch.Tensor) -> torch.Tensor:
        """(B, 25088) bottleneck -> (B,) scale."""
        x = self.mlp(bottleneck.float())
        return apply_scale_activation(x, self.activation, self.coefficient).reshape(-1)


class PFESigmaHead(nn.Module):
    """PFE uncertainty head: bottleneck -> per-dimension log sigma^2, shape (B, out_feat).

    log sigma^2 = log(1e-6 + exp(gamma * BN2(W2n relu(BN1(W1n x))) + beta)), W*n = row-normalised weights.
    """

    def __init__(self, in_feat: int = 25088, out_feat: int = 512):
        super().__init__()
        self.fc1 = nn.Parameter(torch.empty(out_feat, in_feat))
        self.bn1 = nn.BatchNorm1d(out_feat, affine=True)
        self.relu = nn.ReLU()
        self.fc2 = nn.Parameter(torch.empty(out_feat, out_feat))
        self.bn2 = nn.BatchNorm1d(out_feat, affine=False)
        self.gamma = nn.Parameter(torch.tensor([1.0]))
        self.beta = nn.Parameter(torch.tensor([0.0]))
        nn.init.kaiming_normal_(self.fc1)
        nn.init.kaiming_normal_(self.fc2)

    def forward(self, bottleneck: torch.Tensor) -> torch.Tensor:
        """(B, in_feat) bottleneck -> (B, out_feat) log sigma^2."""
        x = bottleneck.float().reshape(bottleneck.shape[0], -1)
        x = self.relu(self.bn1(F.linear(x, F.normalize(self.fc1, dim=1))))
        x = self.bn2(F.linear(x, F.normalize(self.fc2, dim=1)))
        x = self.gamma * x + self.beta
        return torch.log(1e-6 + torch.exp(x))
