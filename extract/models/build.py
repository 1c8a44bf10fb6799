"""Build the torch modules a `ModelConfig` describes (backbone and optional head), weights untrained."""

from __future__ import annotations

from torch import nn

from extract.models.config import ModelConfig, PFEHeadConfig, ScaleHeadConfig
from extract.models.heads import PFESigmaHead, ScalePredictor
from extract.models.iresnet import IResNet, build_iresnet


def build_backbone(config: ModelConfig) -> IResNet:
    """The config's iResNet with its embedding size, batch-norm eps and fp16 flag, in eval mode."""
    model = build_iresnet(config.arch, num_features=config.embedding_dim, bn_eps=config.bn_eps, fp16=config.fp16)
    return model.eval()


def build_head(config: ModelConfig) -> nn.Module | None:
    """The config's uncertainty head (ScaleFace scale predictor or PFE sigma head) or None, in eval mode."""
    head = config.head
    if head is None:
        return None
    if isinstance(head, ScaleHeadConfig):
        module: nn.Module = ScalePredictor(head.num_feats, head.batch_norm, head.activation, head.coefficient)
    elif isinstance(head, PFEHeadConfig):
        module = PFESigmaHead(head.in_feat, head.out_feat)
    else:  # pragma: no cover - ModelConfig validates head types
        raise TypeError(f"unknown head config {head!r}")
    return module.eval()


HEAD_SECTION = {"scaleface": "scale_predictor", "pfe": "head"}
"""Key under which each family's training checkpoint stores the head state_dict."""
