"""Model configs: which backbone, head and input preprocessing a checkpoint needs.

Two YAML forms are read. This project's own (`configs/models/*.yaml`, documented in
docs/models.md) names the family, backbone, head, preprocessing and flip default. The
ScaleFace repository's training yaml (`backbone: {name: iresnet50_normalized}` with a
`scale_predictor: {name: MLPHead, ...}` or `head: {name: pfe_head_adjustable, ...}`) is
accepted as-is and mapped onto the same `ModelConfig` with that repository's preprocessing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from extract.models.heads import SCALE_ACTIVATIONS
from extract.models.iresnet import ARCH_LAYERS
from featurestore.resources import package_data_dir
from featurestore.schema import ModelSpec

CONFIG_DIR = package_data_dir("extract", "configs", "models")
"""The named configs: package data `extract/configs/models/` (the repository's configs/models/ links to it)."""
"""Where `load_model_config('arcface_r50')` looks for named configs."""

FAMILY_OUTPUTS: dict[str, tuple[str, ...]] = {
    "arcface": ("embedding", "norm"),
    "scaleface": ("embedding", "norm", "scale"),
    "pfe": ("embedding", "norm", "sigma_sq"),
    "magface": ("embedding", "norm"),
}
"""Store outputs each family produces (embedding_flip is added when flip is on)."""

SCALEFACE_REPO_BACKBONES = {
    "iresnet50_normalized": "iresnet50",
    "iresnet18": "iresnet18",
    "iresnet34": "iresnet34",
    "iresnet50": "iresnet50",
    "iresnet100": "iresnet100",
}
"""Backbone names of the ScaleFace repository's model_dict that are insightface iResNets."""


class ConfigError(ValueError):
    """A model config that cannot be used; the message names the file and key."""


@dataclass(frozen=True)
class Preprocessing:
    """How a 112x112 uint8 RGB crop becomes network input: reorder channels, then (x - mean) / std."""

    channel_order: str = "RGB"
    mean: tuple[float, float, float] = (127.5, 127.5, 127.5)
    std: tuple[float, float, float] = (127.5, 127.5, 127.5)
    size: int = 112

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form for store attributes."""
        return {"channel_order": self.channel_order, "mean": list(self.mean), "std": list(self.std), "size": self.size}


INSIGHTFACE_PREPROCESSING = Preprocessing("RGB", (127.5,) * 3, (127.5,) * 3)
SCALEFACE_REPO_PREPROCESSING = Preprocessing("RGB", (127.5,) * 3, (128.0,) * 3)
MAGFACE_PREPROCESSING = Preprocessing("BGR", (0.0,) * 3, (255.0,) * 3)


@dataclass(frozen=True)
class ScaleHeadConfig:
    """ScaleFace MLPHead parameters."""

    num_feats: tuple[int, ...] = (25088, 512, 1)
    batch_norm: bool = True
    activation: str = "sigm_mul"
    coefficient: float = 64.0
    kind: str = field(default="scale_predictor", init=False)


@dataclass(frozen=True)
class PFEHeadConfig:
    """PFEHeadAdjustable parameters."""

    in_feat: int = 25088
    out_feat: int = 512
    kind: str = field(default="pfe", init=False)


HeadConfig = ScaleHeadConfig | PFEHeadConfig


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build a model and feed it: family, backbone, head, preprocessing, flip."""

    name: str
    family: str
    arch: str = "iresnet50"
    embedding_dim: int = 512
    bn_eps: float = 1e-5
    head: HeadConfig | None = None
    preprocessing: Preprocessing = INSIGHTFACE_PREPROCESSING
    flip: bool = False
    fp16: bool = False
    backbone_only: bool = False
    """Use the backbone of a checkpoint that also carries a head (the embedding-norm baseline on a
    ScaleFace/PFE training checkpoint); the head's keys are then ignored."""
    source: str = ""

    def __post_init__(self) -> None:
        where = self.source or self.name
        if self.family not in FAMILY_OUTPUTS:  # the store's `external` family is imported, never extracted
            raise ConfigError(f"{where}: family {self.family!r} unknown; known: {tuple(FAMILY_OUTPUTS)}")
        if self.arch not in ARCH_LAYERS:
            raise ConfigError(f"{where}: backbone arch {self.arch!r} unknown; known: {sorted(ARCH_LAYERS)}")
        wanted = {"scaleface": ScaleHeadConfig, "pfe": PFEHeadConfig}.get(self.family)
        if wanted is None and self.head is not None:
            raise ConfigError(f"{where}: family {self.family!r} takes no head, got {self.head.kind!r}")
        if wanted is not None and not isinstance(self.head, wanted):
            raise ConfigError(f"{where}: family {self.family!r} needs a {wanted.__name__} head, got {self.head}")
        if isinstance(self.head, PFEHeadConfig) and self.head.out_feat != self.embedding_dim:
            raise ConfigError(f"{where}: head.out_feat {self.head.out_feat} != embedding_dim {self.embedding_dim}")

    @property
    def outputs(self) -> tuple[str, ...]:
        """Store outputs this model produces (without embedding_flip; ModelSpec adds it when flip is on)."""
        return FAMILY_OUTPUTS[self.family]

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (this project's YAML schema) for store attributes and provenance."""
        head = None
        if self.head is not None:
            head = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.head).items()}
        return {
            "name": self.name,
            "family": self.family,
            "backbone": {
                "arch": self.arch,
                "embedding_dim": self.embedding_dim,
                "bn_eps": self.bn_eps,
                "fp16": self.fp16,
            },
            "head": head,
            "preprocessing": self.preprocessing.to_dict(),
            "flip": self.flip,
            "backbone_only": self.backbone_only,
        }

    def model_spec(
        self,
        name: str | None = None,
        checkpoint: str = "",
        checkpoint_sha256: str = "",
        random_init: bool = False,
        flip: bool | None = None,
        dtype: str = "f4",
        seed: int | None = None,
        precision: str = "",
        torch_version: str = "",
    ) -> ModelSpec:
        """The store's ModelSpec for this model (flip defaults to the config's); `seed` (random init),
        `precision` (as resolved) and `torch_version` complete its fingerprint."""
        return ModelSpec(
            name=name or self.name,
            family=self.family,
            embedding_dim=self.embedding_dim,
            outputs=self.outputs,
            flip=self.flip if flip is None else flip,
            checkpoint=checkpoint,
            checkpoint_sha256=checkpoint_sha256,
            random_init=random_init,
            config=self.to_dict(),
            preprocessing=self.preprocessing.to_dict(),
            dtype=dtype,
            seed=seed,
            precision=precision,
            torch_version=torch_version,
        )


def load_model_config(path_or_name: str | Path) -> ModelConfig:
    """Read a model config from a YAML path, or by name from configs/models/<name>.yaml."""
    path = Path(path_or_name)
    if not path.is_file():
        named = CONFIG_DIR / f"{path_or_name}.yaml"
        if not named.is_file():
            known = ", ".join(available_model_configs()) or "none"
            raise ConfigError(
                f"model config {str(path_or_name)!r}: no such file, and no named config {named} (known names: {known})"
            )
        path = named
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return model_config_from_dict(data, source=str(path), default_name=path.stem)


def available_model_configs() -> list[str]:
    """Names of the configs shipped in configs/models/."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def model_config_from_dict(data: Any, source: str = "<dict>", default_name: str = "model") -> ModelConfig:
    """Parse either YAML form (see module docstring) already loaded into a dict."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a model config must be a mapping, got {type(data).__name__}")
    backbone = data.get("backbone")
    if "family" not in data and isinstance(backbone, dict) and "name" in backbone:
        return _from_scaleface_repo(data, source, default_name)
    return _from_project_yaml(data, source, default_name)


_TOP_KEYS = {"name", "family", "backbone", "head", "preprocessing", "flip", "description", "backbone_only"}
_BACKBONE_KEYS = {"arch", "embedding_dim", "bn_eps", "fp16"}
_PREPROC_KEYS = {"channel_order", "mean", "std", "size"}


def _check_keys(section: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def _section(data: dict, key: str, source: str, required: bool = True) -> dict:
    value = data.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: '{key}' must be a mapping, got {value!r}")
    return value


def _triple(value: Any, where: str) -> tuple[float, float, float]:
    if isinstance(value, int | float):
        return (float(value),) * 3
    if isinstance(value, list | tuple) and len(value) == 3:
        return tuple(float(v) for v in value)  # type: ignore[return-value]
    raise ConfigError(f"{where}: expected a number or 3 numbers, got {value!r}")


def _from_project_yaml(data: dict, source: str, default_name: str) -> ModelConfig:
    _check_keys(data, _TOP_KEYS, source)
    if "family" not in data:
        raise ConfigError(f"{source}: missing key 'family' (one of {tuple(FAMILY_OUTPUTS)})")
    family = data["family"]
    bb = _section(data, "backbone", source)
    _check_keys(bb, _BACKBONE_KEYS, f"{source}: backbone")
    if "arch" not in bb:
        raise ConfigError(f"{source}: backbone.arch missing (one of {sorted(ARCH_LAYERS)})")
    pp = _section(data, "preprocessing", source, required=False)
    _check_keys(pp, _PREPROC_KEYS, f"{source}: preprocessing")
    default_pp = MAGFACE_PREPROCESSING if family == "magface" else INSIGHTFACE_PREPROCESSING
    order = str(pp.get("channel_order", default_pp.channel_order)).upper()
    if order not in ("RGB", "BGR"):
        raise ConfigError(f"{source}: preprocessing.channel_order must be RGB or BGR, got {order!r}")
    preprocessing = Preprocessing(
        channel_order=order,
        mean=_triple(pp.get("mean", default_pp.mean), f"{source}: preprocessing.mean"),
        std=_triple(pp.get("std", default_pp.std), f"{source}: preprocessing.std"),
        size=int(pp.get("size", 112)),
    )
    if preprocessing.size != 112:
        raise ConfigError(f"{source}: preprocessing.size must be 112 for iResNet, got {preprocessing.size}")
    if any(s == 0 for s in preprocessing.std):
        raise ConfigError(f"{source}: preprocessing.std must be non-zero, got {preprocessing.std}")
    head = _parse_head(data.get("head"), f"{source}: head")
    default_eps = 2e-5 if family == "magface" else 1e-5
    return ModelConfig(
        name=str(data.get("name", default_name)),
        family=family,
        arch=_arch_name(str(bb["arch"]), source),
        embedding_dim=int(bb.get("embedding_dim", 512)),
        bn_eps=float(bb.get("bn_eps", default_eps)),
        head=head,
        preprocessing=preprocessing,
        flip=bool(data.get("flip", False)),
        fp16=bool(bb.get("fp16", False)),
        backbone_only=bool(data.get("backbone_only", False)),
        source=source,
    )


def _arch_name(arch: str, source: str) -> str:
    key = arch.lower()
    if key.startswith("r") and key[1:].isdigit():
        key = "iresnet" + key[1:]
    if key not in ARCH_LAYERS:
        raise ConfigError(f"{source}: backbone arch {arch!r} unknown; known: {sorted(ARCH_LAYERS)}")
    return key


def _parse_head(head: Any, where: str) -> HeadConfig | None:
    if head is None:
        return None
    if not isinstance(head, dict) or "kind" not in head:
        raise ConfigError(f"{where}: must be a mapping with 'kind' (scale_predictor or pfe), got {head!r}")
    kind = head["kind"]
    params = {k: v for k, v in head.items() if k != "kind"}
    if kind == "scale_predictor":
        _check_keys(params, {"num_feats", "batch_norm", "activation", "coefficient"}, where)
        return _scale_head(params, where)
    if kind == "pfe":
        _check_keys(params, {"in_feat", "out_feat"}, where)
        return PFEHeadConfig(in_feat=int(params.get("in_feat", 25088)), out_feat=int(params.get("out_feat", 512)))
    raise ConfigError(f"{where}: kind {kind!r} unknown; known: scale_predictor, pfe")


def _scale_head(params: dict, where: str) -> ScaleHeadConfig:
    activation = str(params.get("activation", "sigm_mul"))
    if activation not in SCALE_ACTIVATIONS:
        raise ConfigError(f"{where}: activation {activation!r} unknown; known: {SCALE_ACTIVATIONS}")
    num_feats = params.get("num_feats", [25088, 512, 1])
    if not isinstance(num_feats, list | tuple) or len(num_feats) < 2 or int(num_feats[-1]) != 1:
        raise ConfigError(f"{where}: num_feats must list >= 2 sizes ending in 1, got {num_feats!r}")
    return ScaleHeadConfig(
        num_feats=tuple(int(n) for n in num_feats),
        batch_norm=bool(params.get("batch_norm", True)),
        activation=activation,
        coefficient=float(params.get("coefficient", 64.0)),
    )


def _from_scaleface_repo(data: dict, source: str, default_name: str) -> ModelConfig:
    """Map a ScaleFace-repository training yaml: backbone name, MLPHead / pfe_head_adjustable."""
    bb_name = str(data["backbone"]["name"])
    if bb_name not in SCALEFACE_REPO_BACKBONES:
        raise ConfigError(
            f"{source}: backbone.name {bb_name!r} is not an iResNet this tool builds; "
            f"known: {sorted(SCALEFACE_REPO_BACKBONES)}"
        )
    scale = data.get("scale_predictor")
    head = data.get("head")
    if scale is not None and head is not None:
        raise ConfigError(f"{source}: has both 'scale_predictor' and 'head'; one model per config")
    head_cfg: HeadConfig | None = None
    family = "arcface"
    if scale is not None:
        if not isinstance(scale, dict) or scale.get("name") != "MLPHead":
            raise ConfigError(f"{source}: scale_predictor.name must be 'MLPHead', got {scale!r}")
        # The repository's MLPHead called this argument `exponent` in one version and
        # `activation` in another; either is read. With neither, the original applies none.
        activation = scale.get("activation", scale.get("exponent", "lin"))
        if activation is True:
            activation = "lin"
        head_cfg = _scale_head(
            {
                "num_feats": scale.get("num_feats", [512, 1]),
                "batch_norm": scale.get("batch_norm", True),
                "activation": activation,
                "coefficient": scale.get("coefficient", 64.0),
            },
            f"{source}: scale_predictor",
        )
        family = "scaleface"
    elif head is not None:
        if not isinstance(head, dict) or head.get("name") != "pfe_head_adjustable":
            raise ConfigError(f"{source}: head.name must be 'pfe_head_adjustable', got {head!r}")
        head_cfg = PFEHeadConfig(in_feat=int(head.get("in_feat", 512)), out_feat=int(head.get("out_feat", 512)))
        family = "pfe"
    return ModelConfig(
        name=default_name,
        family=family,
        arch=SCALEFACE_REPO_BACKBONES[bb_name],
        embedding_dim=512,
        bn_eps=1e-5,
        head=head_cfg,
        preprocessing=SCALEFACE_REPO_PREPROCESSING,
        flip=False,
        source=source,
    )
