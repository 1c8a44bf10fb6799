"""Networks for extraction: iResNet backbones, ScaleFace/PFE heads, and the configs that describe them."""

from extract.models.build import HEAD_SECTION, build_backbone, build_head
from extract.models.config import (
    ConfigError,
    ModelConfig,
    PFEHeadConfig,
    Preprocessing,
    ScaleHeadConfig,
    available_model_configs,
    load_model_config,
    model_config_from_dict,
)
from extract.models.heads import PFESigmaHead, ScalePredictor
from extract.models.iresnet import ARCH_LAYERS, BackboneOutput, IResNet, build_iresnet

__all__ = [
    "ARCH_LAYERS",
    "HEAD_SECTION",
    "BackboneOutput",
    "ConfigError",
    "IResNet",
    "ModelConfig",
    "PFEHeadConfig",
    "PFESigmaHead",
    "Preprocessing",
    "ScaleHeadConfig",
    "ScalePredictor",
    "available_model_configs",
    "build_backbone",
    "build_head",
    "build_iresnet",
    "load_model_config",
    "model_config_from_dict",
]
