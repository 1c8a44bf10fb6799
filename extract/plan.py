"""Turn the command line's model options into loaded models, before any image is read.

A checkpoint given without a config is recognised by its layout (bare state_dict: ArcFace;
{'backbone','scale_predictor'}: ScaleFace; {'backbone','head'}: PFE; {'state_dict'} with a
`features.module.` prefix: MagFace) and its depth by counting its residual blocks.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from extract.checkpoints import CheckpointError, load_model, random_model, read_checkpoint
from extract.models import ARCH_LAYERS, ModelConfig, load_model_config
from extract.runner import RunModel
from featurestore.schema import ModelSpec

DEMO_RANDOM_CONFIGS = ("scaleface_r50", "pfe_r50", "embnorm_r50", "magface_r50")
"""`--random-init` with no config: the paper's three heads on one backbone, plus a MagFace model."""

_BLOCK = re.compile(r"(?:^|\.)layer([1-4])\.(\d+)\.")


def _backbone_keys(obj: Any) -> tuple[str, list[str]]:
    """(family guessed from the layout, backbone key names)."""
    if isinstance(obj, Mapping) and "backbone" in obj:
        family = "scaleface" if "scale_predictor" in obj else "pfe" if "head" in obj else "arcface"
        return family, list(obj["backbone"])
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        keys = list(obj["state_dict"])
        return ("magface" if any(k.startswith("features.") for k in keys) else "arcface"), keys
    if isinstance(obj, Mapping):
        return "arcface", [k for k in obj if isinstance(k, str)]
    raise CheckpointError(f"unrecognised checkpoint object of type {type(obj).__name__}")


def guess_config(checkpoint: str | Path, trust: bool = False) -> ModelConfig:
    """The built-in config matching a checkpoint's layout (family) and block counts (depth)."""
    family, keys = _backbone_keys(read_checkpoint(checkpoint, trust=trust))
    blocks = [0, 0, 0, 0]
    for k in keys:
        m = _BLOCK.search(k)
        if m:
            stage, idx = int(m.group(1)) - 1, int(m.group(2))
            blocks[stage] = max(blocks[stage], idx + 1)
    arch = next((a for a, layers in ARCH_LAYERS.items() if list(layers) == blocks), None)
    if arch is None:
        raise CheckpointError(
            f"checkpoint {checkpoint}: blocks per stage {blocks} match no iResNet ({sorted(ARCH_LAYERS)}); "
            "pass --config"
        )
    base = load_model_config(f"{family}_r50")
    return dataclasses.replace(base, name=f"{family}_{arch.replace('iresnet', 'r')}", arch=arch)


def parse_model_option(value: str) -> tuple[str, str, str | None]:
    """`NAME=CKPT[:CONFIG]` -> (name, checkpoint, config or None)."""
    name, sep, rest = value.partition("=")
    if not sep or not name or not rest:
        raise ValueError(f"--model {value!r}: expected NAME=CHECKPOINT[:CONFIG]")
    ckpt, _, config = rest.partition(":")
    return name, ckpt, config or None


def resolve_models(
    checkpoint: str | None,
    config: str | None,
    model_options: tuple[str, ...],
    random_init: bool,
    random_configs: tuple[str, ...],
    seed: int,
    trust: bool,
    flip: bool | None,
    dtype: str = "f4",
    precision: str = "fp32",
) -> tuple[list[RunModel], list[ModelSpec]]:
    """Load every requested model (stopping at the first bad checkpoint) and its store ModelSpec.

    `precision` is the resolved one (fp32, fp16 or bf16, see extract.runner.resolve_precision): with the
    seed (random init only) and torch's version it goes into each model's fingerprint.
    """
    chosen = sum(bool(x) for x in (checkpoint, model_options, random_init))
    if chosen == 0:
        raise ValueError(
            "no model given: pass --checkpoint CKPT [--config YAML], --model NAME=CKPT[:YAML] ..., "
            "or --random-init for seeded random weights"
        )
    if chosen > 1:
        raise ValueError("use only one of --checkpoint, --model and --random-init")
    run: list[RunModel] = []
    specs: list[ModelSpec] = []

    def add(name: str, cfg: ModelConfig, ckpt: str | None) -> None:
        if any(m.name == name for m in run):
            raise ValueError(f"model name {name!r} given twice")
        loaded = random_model(cfg, seed=seed) if ckpt is None else load_model(ckpt, cfg, trust=trust)
        use_flip = cfg.flip if flip is None else flip
        run.append(RunModel(name, loaded, use_flip))
        specs.append(
            cfg.model_spec(
                name=name,
                checkpoint=loaded.checkpoint,
                checkpoint_sha256=loaded.sha256,
                random_init=loaded.random_init,
                flip=use_flip,
                dtype=dtype,
                seed=seed if loaded.random_init else None,
                precision=precision,
                torch_version=torch.__version__,
            )
        )

    if checkpoint:
        cfg = load_model_config(config) if config else guess_config(checkpoint, trust)
        add(cfg.name, cfg, checkpoint)
    for opt in model_options:
        name, ckpt, cfg_name = parse_model_option(opt)
        add(name, load_model_config(cfg_name) if cfg_name else guess_config(ckpt, trust), ckpt)
    if random_init:
        for cfg_name in random_configs or DEMO_RANDOM_CONFIGS:
            cfg = load_model_config(cfg_name)
            add(cfg.name, cfg, None)
    return run, specs
