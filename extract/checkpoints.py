"""Load published checkpoints (insightface, ScaleFace, PFE, MagFace) into this package's modules, safely.

Formats recognised (see docs/models.md):
  bare        a backbone state_dict (insightface model zoo `backbone.pth`), optionally `module.`-prefixed
  sectioned   {'backbone': sd, 'scale_predictor': sd} (ScaleFace) or {'backbone': sd, 'head': sd} (PFE)
  state_dict  {'state_dict': sd, ...} whose backbone keys carry `features.module.` (MagFace training
              save), `module.features.`, `module.` or no prefix; keys outside that prefix (the
              training classifier) are ignored and listed in `LoadedModel.ignored_keys`.
Files load with `torch.load(weights_only=True)`; one that needs arbitrary unpickling is refused
unless `trust=True`. Every key is checked (missing, unexpected, shape) before any weights are copied.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from extract.models.build import HEAD_SECTION, build_backbone, build_head
from extract.models.config import ModelConfig, Preprocessing
from extract.models.iresnet import BackboneOutput, IResNet

BACKBONE_PREFIXES = ("features.module.", "module.features.", "module.", "features.", "backbone.", "")
"""Key prefixes wrapping a backbone state_dict (DataParallel, MagFace's builder), most specific first."""

MAX_LISTED_KEYS = 10


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded for a config; the message names the file and the keys."""


@dataclass
class LoadedModel:
    """A ready-to-run model: backbone, optional head, provenance, and a key for sharing backbone forwards.

    Two LoadedModels with equal `backbone_key` have identical backbone weights, architecture, fp16
    flag and preprocessing, so a runner may compute the backbone once and feed both heads.
    """

    config: ModelConfig
    backbone: IResNet
    head: nn.Module | None
    checkpoint: str
    sha256: str
    backbone_key: str
    checkpoint_format: str
    random_init: bool = False
    ignored_keys: list[str] = field(default_factory=list)

    @property
    def family(self) -> str:
        """Model family (arcface, scaleface, pfe, magface)."""
        return self.config.family

    @property
    def preprocessing(self) -> Preprocessing:
        """Input preprocessing this model was trained with."""
        return self.config.preprocessing

    def to(self, device: torch.device | str, channels_last: bool = True) -> LoadedModel:
        """Move backbone and head to `device` (backbone in channels_last memory format by default)."""
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.backbone.to(device=device, memory_format=fmt)
        if self.head is not None:
            self.head.to(device)
        return self

    @torch.inference_mode()
    def outputs_from_backbone(self, out: BackboneOutput) -> dict[str, torch.Tensor]:
        """Store outputs from a backbone forward: embedding, norm, and scale (B,) or sigma_sq (B, D)."""
        embedding = out.embedding.float()
        result = {"embedding": embedding, "norm": torch.linalg.vector_norm(embedding, dim=1)}
        if self.head is not None:
            head_out = self.head(out.bottleneck)
            if self.family == "scaleface":
                result["scale"] = head_out
            else:
                result["sigma_sq"] = torch.exp(head_out)
        return result

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Preprocessed (B, 3, 112, 112) input -> store outputs (see `outputs_from_backbone`)."""
        return self.outputs_from_backbone(self.backbone(images))


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes (recorded in the store as the checkpoint's identity)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_checkpoint(path: str | Path, trust: bool = False) -> Any:
    """torch.load on CPU, weights_only unless `trust`; unreadable or unsafe files raise CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    with open(path, "rb") as fh:
        magic = fh.read(2)
    # torch.save writes a zip archive ("PK"); the legacy format starts with a pickle protocol byte.
    if magic != b"PK" and magic[:1] != b"\x80":
        raise CheckpointError(f"checkpoint {path}: not a torch checkpoint (starts with {magic!r})")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as exc:
        if trust:
            raise CheckpointError(f"checkpoint {path}: cannot be unpickled: {exc}") from exc
        detail = next((line.strip() for line in str(exc).splitlines() if "WeightsUnpickler" in line), "")
        raise CheckpointError(
            f"checkpoint {path}: refused, it holds objects that need full (arbitrary code) unpickling, "
            f"not only tensors and plain containers. If you trust its source, pass --trust-checkpoint "
            f"(trust=True). {detail}"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path}: not a readable torch checkpoint: {exc}") from exc


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _key_list(keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_LISTED_KEYS])
    more = f", ... ({len(keys) - MAX_LISTED_KEYS} more)" if len(keys) > MAX_LISTED_KEYS else ""
    return f"{len(keys)}: {shown}{more}"


def _strip_prefix(
    sd: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], str, list[str]]:
    """Pick the prefix under which most keys match `expected`; return (stripped sd, prefix, keys outside it)."""
    best, best_hits = "", -1
    for prefix in BACKBONE_PREFIXES:
        hits = sum(1 for k in sd if k.startswith(prefix) and k[len(prefix) :] in expected)
        if hits > best_hits:
            best, best_hits = prefix, hits
    inside = {k[len(best) :]: v for k, v in sd.items() if k.startswith(best)}
    outside = [k for k in sd if not k.startswith(best)]
    return inside, best, outside


def check_state_dict(module: nn.Module, sd: Mapping[str, torch.Tensor], what: str) -> None:
    """Raise CheckpointError listing missing, unexpected and mis-shaped keys of `sd` for `module`."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    misshaped = [
        f"{k} (checkpoint {tuple(sd[k].shape)}, model {tuple(expected[k].shape)})"
        for k in expected
        if k in sd and tuple(sd[k].shape) != tuple(expected[k].shape)
    ]
    wrong_kind = [
        f"{k} (checkpoint {sd[k].dtype}, model {expected[k].dtype})"
        for k in expected
        if k in sd and sd[k].is_floating_point() != expected[k].is_floating_point()
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {_key_list(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_key_list(unexpected)}")
    if misshaped:
        problems.append(f"mis-shaped keys {_key_list(misshaped)}")
    if wrong_kind:
        problems.append(f"wrong-dtype keys {_key_list(wrong_kind)}")
    if problems:
        raise CheckpointError(f"{what}: " + "; ".join(problems))


def split_checkpoint(
    obj: Any, config: ModelConfig, where: str
) -> tuple[str, Mapping[str, torch.Tensor], Mapping[str, torch.Tensor] | None]:
    """(format name, backbone state_dict, head state_dict or None) of a loaded checkpoint object."""
    head_section = HEAD_SECTION.get(config.family)
    if _is_state_dict(obj):
        fmt, backbone, head = "bare", obj, None
    elif isinstance(obj, Mapping) and "backbone" in obj:
        fmt, backbone = "sectioned", obj["backbone"]
        known_heads = [s for s in HEAD_SECTION.values() if s in obj]
        if head_section is None and known_heads and not config.backbone_only:
            raise CheckpointError(
                f"{where}: carries a {known_heads[0]!r} head but config {config.name!r} (family "
                f"{config.family!r}) has none; use a scaleface/pfe config, a backbone-only file, or a config "
                "with backbone_only: true (as embnorm_r50) to use just its backbone"
            )
        head = obj.get(head_section) if head_section else None
        if not _is_state_dict(backbone):
            raise CheckpointError(f"{where}: 'backbone' is not a state_dict of tensors")
    elif isinstance(obj, Mapping) and "state_dict" in obj:
        fmt, backbone, head = "state_dict", obj["state_dict"], None
        if not _is_state_dict(backbone):
            raise CheckpointError(f"{where}: 'state_dict' is not a state_dict of tensors")
    else:
        keys = list(obj)[:MAX_LISTED_KEYS] if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(
            f"{where}: unrecognised checkpoint layout (top level: {keys}); expected a state_dict, "
            "{'backbone', 'scale_predictor'|'head'} or {'state_dict'}"
        )
    if head_section is not None and head is None:
        raise CheckpointError(
            f"{where}: config {config.name!r} (family {config.family!r}) needs a {head_section!r} state_dict, "
            f"but the checkpoint ({fmt}) has none"
        )
    if head is not None and not _is_state_dict(head):
        raise CheckpointError(f"{where}: {head_section!r} is not a state_dict of tensors")
    return fmt, backbone, head


def backbone_identity(backbone: nn.Module, config: ModelConfig) -> str:
    """sha256 over architecture, eps, fp16, preprocessing and every backbone tensor (names, dtypes, bytes),
    except BN `num_batches_tracked` counters, which do not change the inference result."""
    digest = hashlib.sha256()
    pp = config.preprocessing
    digest.update(
        repr(
            (config.arch, config.embedding_dim, config.bn_eps, config.fp16, pp.channel_order, pp.mean, pp.std, pp.size)
        ).encode()
    )
    for name, tensor in backbone.state_dict().items():
        if name.endswith("num_batches_tracked"):
            continue  # a training counter that does not affect the eval-mode forward
        t = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{t.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def load_model(checkpoint_path: str | Path, config: ModelConfig, trust: bool = False) -> LoadedModel:
    """Load a checkpoint for `config`, validating every key first; returns an eval-mode CPU LoadedModel."""
    path = Path(checkpoint_path)
    obj = read_checkpoint(path, trust=trust)
    where = f"checkpoint {path}"
    fmt, backbone_sd, head_sd = split_checkpoint(obj, config, where)
    backbone = build_backbone(config)
    expected = backbone.state_dict()
    stripped, prefix, outside = _strip_prefix(backbone_sd, expected)
    if outside and fmt != "state_dict":
        # A bare or sectioned backbone must be entirely one namespace: the rest is unexpected.
        raise CheckpointError(f"{where}: backbone keys outside prefix {prefix!r}: {_key_list(outside)}")
    check_state_dict(backbone, stripped, f"{where} (backbone, prefix {prefix!r}, config {config.name!r})")
    backbone.load_state_dict(stripped, strict=True)
    head = build_head(config)
    if head is not None:
        assert head_sd is not None
        head_stripped, head_prefix, head_outside = _strip_prefix(head_sd, head.state_dict())
        if head_outside:
            raise CheckpointError(f"{where}: head keys outside prefix {head_prefix!r}: {_key_list(head_outside)}")
        check_state_dict(head, head_stripped, f"{where} ({HEAD_SECTION[config.family]}, config {config.name!r})")
        head.load_state_dict(head_stripped, strict=True)
        head.eval()
    backbone.eval()
    return LoadedModel(
        config=config,
        backbone=backbone,
        head=head,
        checkpoint=str(path),
        sha256=file_sha256(path),
        backbone_key=backbone_identity(backbone, config),
        checkpoint_format=f"{fmt}:{prefix}" if prefix else fmt,
        ignored_keys=(outside if fmt == "state_dict" else []) + _unused_heads(obj, config),
    )


def _unused_heads(obj: Any, config: ModelConfig) -> list[str]:
    """Keys of head sections a backbone_only config leaves unused (recorded, not loaded)."""
    if not (config.backbone_only and isinstance(obj, Mapping) and "backbone" in obj):
        return []
    return [f"{h}.{k}" for h in HEAD_SECTION.values() if h in obj for k in obj[h]]


def randomize_(module: nn.Module, generator: torch.Generator) -> None:
    """Fill weights with seeded, non-trivial values: fan-in-scaled conv/linear weights, BN affine and
    running statistics away from (1, 0), PReLU slopes in [0.05, 0.5], PFE gamma/beta off their init."""

    def uniform(shape: torch.Size, low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(shape, generator=generator)

    for sub in module.modules():
        if isinstance(sub, nn.Conv2d | nn.Linear):
            fan_in = sub.weight[0].numel()
            sub.weight.data = torch.randn(sub.weight.shape, generator=generator) / fan_in**0.5
            if sub.bias is not None:
                sub.bias.data = 0.1 * torch.randn(sub.bias.shape, generator=generator)
        elif isinstance(sub, nn.BatchNorm1d | nn.BatchNorm2d):
            if sub.affine:
                sub.weight.data = uniform(sub.weight.shape, 0.5, 1.5)
                sub.bias.data = 0.1 * torch.randn(sub.bias.shape, generator=generator)
            sub.running_mean.data = 0.1 * torch.randn(sub.running_mean.shape, generator=generator)
            sub.running_var.data = uniform(sub.running_var.shape, 0.5, 2.0)
            sub.num_batches_tracked.data = torch.randint(1, 10_000, (), generator=generator)
        elif isinstance(sub, nn.PReLU):
            sub.weight.data = uniform(sub.weight.shape, 0.05, 0.5)
    for name, param in module.named_parameters(recurse=False):
        # Raw parameters of the PFE head (fc1, fc2, gamma, beta).
        if name in ("fc1", "fc2"):
            param.data = torch.randn(param.shape, generator=generator) / param.shape[1] ** 0.5
        elif name == "gamma":
            # Small, as trained PFE heads have it: with random (unnormalised) activations a gamma near 1
            # sends log sigma^2 past float32's exp range (sigma^2 = inf) and every PFE pair is lost.
            param.data = uniform(param.shape, 0.05, 0.15)
        elif name == "beta":
            param.data = 0.5 * torch.randn(param.shape, generator=generator)


def random_model(config: ModelConfig, seed: int = 0) -> LoadedModel:
    """A model with seeded random (non-trivial) weights, for demos and tests without real checkpoints."""
    generator = torch.Generator().manual_seed(seed)
    backbone = build_backbone(config)
    randomize_(backbone, generator)
    head = build_head(config)
    if head is not None:
        randomize_(head, generator)
    return LoadedModel(
        config=config,
        backbone=backbone.eval(),
        head=head.eval() if head is not None else None,
        checkpoint=f"random:seed={seed}",
        sha256="",
        backbone_key=backbone_identity(backbone, config),
        checkpoint_format="random",
        random_init=True,
    )


CHECKPOINT_LAYOUTS = ("bare", "dataparallel", "sectioned", "magface")


def _detached_copy(t: torch.Tensor) -> torch.Tensor:
    # Meta tensors (structure-only models) have no data to move; keep them as they are.
    return t.detach().clone() if t.device.type == "meta" else t.detach().cpu().clone()


def checkpoint_object(model: LoadedModel, layout: str) -> dict[str, Any]:
    """The object the original code would torch.save for this model in `layout`:
    bare/dataparallel (`module.` keys) backbone state_dict; sectioned {'backbone', 'scale_predictor'|'head'};
    magface {'epoch', 'arch', 'state_dict' with `features.module.` keys}."""
    sd = {k: _detached_copy(v) for k, v in model.backbone.state_dict().items()}
    if layout == "bare":
        return sd
    if layout == "dataparallel":
        return {f"module.{k}": v for k, v in sd.items()}
    if layout == "sectioned":
        if model.head is None:
            raise ValueError(f"layout 'sectioned' needs a head; model {model.config.name!r} has none")
        head_sd = {k: _detached_copy(v) for k, v in model.head.state_dict().items()}
        return {"backbone": sd, HEAD_SECTION[model.family]: head_sd}
    if layout == "magface":
        prefixed = {f"features.module.{k}": v for k, v in sd.items()}
        return {"epoch": 25, "arch": model.config.arch, "state_dict": prefixed}
    raise ValueError(f"unknown checkpoint layout {layout!r}; known: {CHECKPOINT_LAYOUTS}")


def save_checkpoint(model: LoadedModel, path: str | Path, layout: str) -> Path:
    """torch.save `checkpoint_object(model, layout)` to `path` (e.g. to make demo checkpoints)."""
    path = Path(path)
    torch.save(checkpoint_object(model, layout), path)
    return path
