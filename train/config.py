"""Training configs (train/configs/train/*.yaml; configs/train/ links there): the ScaleFace hyper-parameters.

Every key is documented in docs/train.md with the file of the original it comes from; unknown keys are
refused naming the file and key.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from featurestore.resources import package_data_dir

CONFIG_DIR = package_data_dir("train", "configs", "train")
TASKS = ("scale-head", "pfe-head", "pair-classifier")
MODES = ("finetune", "end2end")
DEFAULT_CONFIG = {"scale-head": "scale_finetune", "pfe-head": "pfe", "pair-classifier": "pair_classifier"}


class TrainConfigError(ValueError):
    """A training config that cannot be used; the message names the file and key."""


class ConfigTaskError(TrainConfigError):
    """A config of another task than the one asked for (the CLI names --config)."""


@dataclass(frozen=True)
class OptimizerConfig:
    """SGD settings; `lr` is for a global batch of `TrainConfig.lr_reference_batch` (0: used as given)."""

    name: str = "sgd"
    lr: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False


@dataclass(frozen=True)
class TrainConfig:
    """One training recipe: task, mode, model config, schedule, optimiser and batch composition."""

    task: str
    mode: str = "finetune"
    model: str = "scaleface_r50"
    margin: float = 0.5
    epochs: int = 12
    milestones: tuple[int, ...] = (3, 6, 9)
    gamma: float = 0.1
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    lr_reference_batch: int = 512
    batch_size: int = 128
    identities_per_batch: int = 64
    images_per_identity: int = 4
    clip_grad: float = 5.0
    flip: bool = True
    classifier: str = "smart_cosine"
    fixed_scale: float = 0.0
    """> 0: plain ArcFace with this scale (a warm-up of the embedding and centres; the head is not trained)."""
    source: str = ""

    def __post_init__(self) -> None:
        where = self.source or "<config>"
        if self.task not in TASKS:
            raise TrainConfigError(f"{where}: task {self.task!r} unknown; known: {', '.join(TASKS)}")
        if self.mode not in MODES:
            raise TrainConfigError(f"{where}: mode {self.mode!r} unknown; known: {', '.join(MODES)}")
        if self.mode == "end2end" and self.task != "scale-head":
            raise TrainConfigError(f"{where}: mode end2end is only for task scale-head")
        if self.optimizer.name != "sgd":
            raise TrainConfigError(f"{where}: optimizer.name {self.optimizer.name!r}: only sgd (the original's)")
        for key in ("epochs", "batch_size", "identities_per_batch", "images_per_identity"):
            if int(getattr(self, key)) < 1:
                raise TrainConfigError(f"{where}: {key} must be >= 1, got {getattr(self, key)}")
        if self.images_per_identity < 2 and self.task != "scale-head":
            raise TrainConfigError(f"{where}: images_per_identity must be >= 2 (genuine pairs), got 1")

    @property
    def per_identity_batches(self) -> bool:
        """PFE and the pair classifier draw P identities x K images per batch; the scale head plain batches."""
        return self.task != "scale-head"

    @property
    def images_per_batch(self) -> int:
        return self.identities_per_batch * self.images_per_identity if self.per_identity_batches else self.batch_size

    def with_overrides(self, **kwargs: Any) -> TrainConfig:
        """A copy with some fields replaced (None values ignored)."""
        return replace(self, **{k: v for k, v in kwargs.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        return d


_KEYS = {f for f in TrainConfig.__dataclass_fields__ if f != "source"}
_OPT_KEYS = set(OptimizerConfig.__dataclass_fields__)


def load_train_config(name_or_path: str | Path) -> TrainConfig:
    """A config by path, or by name from configs/train/<name>.yaml."""
    path = Path(name_or_path)
    if not path.is_file():
        named = CONFIG_DIR / f"{name_or_path}.yaml"
        if not named.is_file():
            known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
            raise TrainConfigError(f"train config {str(name_or_path)!r}: no such file or named config ({known})")
        path = named
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise TrainConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from exc
    return train_config_from_dict(data, str(path))


def train_config_from_dict(data: Any, source: str = "<dict>") -> TrainConfig:
    """Parse a loaded YAML mapping, refusing unknown keys and wrong types with the key named."""
    if not isinstance(data, dict):
        raise TrainConfigError(f"{source}: a train config must be a mapping")
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise TrainConfigError(f"{source}: unknown key(s) {unknown}; allowed: {sorted(_KEYS)}")
    if "task" not in data:
        raise TrainConfigError(f"{source}: missing key 'task' (one of {', '.join(TASKS)})")
    opt = data.get("optimizer", {}) or {}
    if not isinstance(opt, dict) or set(opt) - _OPT_KEYS:
        raise TrainConfigError(f"{source}: optimizer must be a mapping with keys from {sorted(_OPT_KEYS)}")
    try:
        optimizer = OptimizerConfig(
            name=str(opt.get("name", "sgd")),
            lr=float(opt.get("lr", 1e-4)),
            momentum=float(opt.get("momentum", 0.9)),
            weight_decay=float(opt.get("weight_decay", 5e-4)),
            nesterov=bool(opt.get("nesterov", False)),
        )
        kwargs: dict[str, Any] = {}
        casts = {
            "task": str, "mode": str, "model": str, "margin": float, "epochs": int, "gamma": float,
            "lr_reference_batch": int, "batch_size": int, "identities_per_batch": int,
            "images_per_identity": int, "clip_grad": float, "flip": bool, "classifier": str, "fixed_scale": float,
        }  # fmt: skip
        for key, cast in casts.items():
            if key in data:
                kwargs[key] = cast(data[key])
        if "milestones" in data:
            kwargs["milestones"] = tuple(int(m) for m in (data["milestones"] or []))
    except (TypeError, ValueError) as exc:
        raise TrainConfigError(f"{source}: bad value: {exc}") from exc
    return TrainConfig(optimizer=optimizer, source=source, **kwargs)


def task_config(
    task: str,
    name_or_path: str | Path | None = None,
    *,
    epochs: int | None = None,
    batch_size: int | None = None,
    mode: str | None = None,
    classifier: str | None = None,
    lr: float | None = None,
) -> TrainConfig:
    """A task's config (its default one unless named) with the CLI's overrides; a config of another task is
    refused. For PFE and the pair classifier `batch_size` sets identities per batch (x images per identity)."""
    config = load_train_config(name_or_path or DEFAULT_CONFIG[task])
    if config.task != task:
        raise ConfigTaskError(f"{config.source} is a {config.task} config, not {task}")
    overrides: dict[str, Any] = {"epochs": epochs, "batch_size": batch_size, "mode": mode, "classifier": classifier}
    if task != "scale-head" and batch_size is not None:
        overrides["identities_per_batch"] = max(2, overrides.pop("batch_size") // config.images_per_identity)
    config = config.with_overrides(**overrides)
    if lr is not None:
        config = replace(config, optimizer=replace(config.optimizer, lr=lr))
    return config
