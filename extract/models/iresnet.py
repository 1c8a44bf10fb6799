"""iResNet backbones (18/34/50/100/200) in the insightface `arcface_torch` state_dict layout.

Key names and shapes equal insightface's `backbones/iresnet.py`, which ScaleFace's
`iresnet50_normalized` and MagFace's `models/iresnet.py` share (MagFace differs only in
batch-norm eps 2e-5 and an inactive-at-inference Dropout2d), so one class with a
`bn_eps` argument loads all three families' checkpoints unchanged.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import torch
from torch import nn

ARCH_LAYERS: dict[str, tuple[int, int, int, int]] = {
    "iresnet18": (2, 2, 2, 2),
    "iresnet34": (3, 4, 6, 3),
    "iresnet50": (3, 4, 14, 3),
    "iresnet100": (3, 13, 30, 3),
    "iresnet200": (6, 26, 60, 6),
}
"""Blocks per stage, as insightface's iresnet18 ... iresnet200 constructors define them."""

STAGE_WIDTHS = (64, 128, 256, 512)
FINAL_SPATIAL = 7 * 7
"""112x112 input halves four times (stride-2 first block of each stage) to 7x7."""


class BackboneOutput(NamedTuple):
    """What a backbone forward gives: the raw embedding and the tensor the uncertainty heads read."""

    embedding: torch.Tensor
    """(B, num_features) output of the final BatchNorm1d `features`, before any L2 normalisation."""
    bottleneck: torch.Tensor
    """(B, 512*7*7) = (B, 25088) float32: bn2 output flattened (dropout is identity), the input of `fc`."""


class IBasicBlock(nn.Module):
    """Pre-activation residual block: BN-conv3x3-BN-PReLU-conv3x3(stride)-BN plus (downsampled) identity."""

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None, eps: float):
        super().__init__()
        # Registration order mirrors the original so state_dict() lists keys in the same order.
        self.bn1 = nn.BatchNorm2d(inplanes, eps=eps)
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=eps)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes, eps=eps)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual branch plus shortcut."""
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


class IResNet(nn.Module):
    """iResNet face backbone; `forward` returns a `BackboneOutput` (raw embedding, 25088-d bottleneck).

    `fp16=True` runs the convolutional body under autocast (float16 on CUDA, bfloat16 on CPU)
    and `fc`/`features` in float32, as insightface's fp16 variant does.
    """

    def __init__(
        self,
        layers: tuple[int, int, int, int],
        num_features: int = 512,
        bn_eps: float = 1e-5,
        fp16: bool = False,
    ):
        super().__init__()
        self.fp16 = fp16
        self.bn_eps = bn_eps
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=bn_eps)
        self.prelu = nn.PReLU(64)
        inplanes = 64
        for index, (planes, blocks) in enumerate(zip(STAGE_WIDTHS, layers), start=1):
            self.add_module(f"layer{index}", self._make_stage(inplanes, planes, blocks, bn_eps))
            inplanes = planes
        self.bn2 = nn.BatchNorm2d(512, eps=bn_eps)
        self.fc = nn.Linear(512 * FINAL_SPATIAL, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=bn_eps)

    @staticmethod
    def _make_stage(inplanes: int, planes: int, blocks: int, eps: float) -> nn.Sequential:
        # Every stage starts with a stride-2 block, so the first block always has a projection
        # shortcut (`downsample.0` conv1x1, `downsample.1` BN), as in the original.
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes, kernel_size=1, stride=2, bias=False),
            nn.BatchNorm2d(planes, eps=eps),
        )
        stage = [IBasicBlock(inplanes, planes, 2, downsample, eps)]
        stage += [IBasicBlock(planes, planes, 1, None, eps) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def forward(self, x: torch.Tensor) -> BackboneOutput:
        """(B, 3, 112, 112) normalised images -> raw embedding and flattened bottleneck."""
        if x.shape[-2:] != (112, 112):
            raise ValueError(f"iResNet expects 112x112 inputs, got spatial size {tuple(x.shape[-2:])}")
        amp_dtype = torch.float16 if x.device.type == "cuda" else torch.bfloat16
        # fp16 configs autocast here as insightface does; otherwise inherit the caller's autocast
        # (extract --precision), which an `enabled=False` context would switch off.
        own_amp = torch.autocast(device_type=x.device.type, dtype=amp_dtype) if self.fp16 else contextlib.nullcontext()
        with own_amp:
            x = self.prelu(self.bn1(self.conv1(x)))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            x = self.bn2(x)
            # flatten reads logical NCHW order, so channels_last inputs give the same vector.
            bottleneck = torch.flatten(x, 1)
        bottleneck = bottleneck.float()
        with torch.autocast(device_type=x.device.type, enabled=False):
            embedding = self.features(self.fc(bottleneck))
        return BackboneOutput(embedding=embedding, bottleneck=bottleneck)


def build_iresnet(arch: str, num_features: int = 512, bn_eps: float = 1e-5, fp16: bool = False) -> IResNet:
    """An iResNet by name ('iresnet18' ... 'iresnet200', or 'r50' style); unknown names raise ValueError."""
    key = arch.lower()
    if key.startswith("r") and key[1:].isdigit():
        key = "iresnet" + key[1:]
    if key not in ARCH_LAYERS:
        raise ValueError(f"unknown backbone architecture {arch!r}; known: {sorted(ARCH_LAYERS)}")
    return IResNet(ARCH_LAYERS[key], num_features=num_features, bn_eps=bn_eps, fp16=fp16)
