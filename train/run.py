"""The training loop shared by the three tasks: build the networks, centres and optimiser, run the seeded
batch order, checkpoint (every N steps and per epoch) in the ScaleFace repository's formats, resume.

`train(options)` is the one Python entry (the CLI and the demo pipeline's train step call it); it returns
a `TrainResult` with the checkpoint path and a summary.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from extract.checkpoints import load_model, random_model
from extract.models import build_backbone, build_head, load_model_config, model_config_from_dict
from extract.models.config import ModelConfig
from extract.preprocess import preprocess_batch
from extract.runner import resolve_device, resolve_precision
from featurestore.interrupts import Interrupted
from train.centres import estimate_centres, load_centres, mean_centre_cosine, save_shards
from train.config import TrainConfig
from train.data import TrainData, cached_data, epoch_batches, iterate_batches, streaming_data
from train.losses import build_pair_classifier, class_cosines, mls_loss, pair_batch, scaleface_loss

STATE_FILE = "train_state.pt"
METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "loss.png"
SUMMARY_FILE = "summary.json"
CHECKPOINT_NAMES = {"scale-head": "checkpoint.pth", "pfe-head": "sota.pth", "pair-classifier": "classifier.pth"}
"""The ScaleFace repository's file names: train_scale.py saves checkpoint.pth, train_pfe.py sota.pth."""


class TrainError(ValueError):
    """A training run that cannot start or go on; one line naming the option or file at fault."""


@dataclass(frozen=True)
class TrainOptions:
    """Everything one run needs (the CLI's options). `items` restricts training to those data items
    (e.g. leaving held-out images out); `data` is a manifest name/YAML, `cache` a store with a bottleneck."""

    config: TrainConfig
    out: Path
    data: str | None = None
    data_root: str | None = None
    preset: str = "small"
    cache: str | None = None
    backbone: str | None = None
    centres: str | None = None
    estimate_centres: bool = False
    device: str = "auto"
    precision: str = "fp32"
    seed: int = 0
    steps: int | None = None
    resume: bool = False
    force: bool = False
    checkpoint_every: int = 0
    workers: int = 0
    val: tuple[str, ...] = ()
    val_every: int = 0
    progress: bool = True
    trust_checkpoint: bool = False
    items: tuple[int, ...] | None = None
    log_every: int = 1


@dataclass
class TrainResult:
    """What a run wrote and measured."""

    checkpoint: Path
    state: Path
    metrics: Path
    plot: Path | None
    summary: dict[str, Any] = field(default_factory=dict)


class TrainNet(nn.Module):
    """Backbone + head (+ class centres) computing a task's loss from a batch; DDP wraps this module."""

    def __init__(self, config: TrainConfig, model_cfg: ModelConfig, backbone: nn.Module, head: nn.Module,
                 centres: torch.Tensor | None) -> None:  # fmt: skip
        super().__init__()
        self.task, self.mode, self.margin = config.task, config.mode, config.margin
        self.fixed_scale = config.fixed_scale
        self.from_bottleneck = False
        """Cached mode: inputs are stored bottlenecks; the embedding is fc + features of the backbone."""
        self.preprocessing = model_cfg.preprocessing
        self.backbone = backbone
        self.head = head
        if centres is None:
            self.centres = None
        elif self.mode == "end2end":
            self.centres = nn.Parameter(centres.clone())
        else:
            self.register_buffer("centres", centres.clone())
        for p in backbone.parameters():
            p.requires_grad_(self.mode == "end2end")
        if self.fixed_scale > 0:  # a plain-ArcFace warm-up: the scale head is not used nor trained
            for p in head.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> TrainNet:
        super().train(mode)
        if self.mode != "end2end":
            self.backbone.eval()  # frozen: running statistics stay as loaded
        return self

    def features(self, x: torch.Tensor, embedding: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(embedding, bottleneck): from the backbone (x = network input); cached (x = bottleneck): the stored
        embedding when given, else the backbone's fc + features on the bottleneck (trained in end2end)."""
        if embedding is not None:
            return embedding.float(), x.float()
        with torch.no_grad() if self.mode != "end2end" else contextlib.nullcontext():
            if self.from_bottleneck:
                return self.backbone.features(self.backbone.fc(x.float())), x.float()
            out = self.backbone(x)
        return out.embedding, out.bottleneck

    def forward(self, x: torch.Tensor, labels: torch.Tensor, embedding: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
        emb, bottleneck = self.features(x, embedding)
        if self.task == "scale-head":
            scale = self.fixed_scale if self.fixed_scale > 0 else self.head(bottleneck)
            return scaleface_loss(class_cosines(emb, self.centres), labels, scale, self.margin)
        if self.task == "pfe-head":
            return mls_loss(emb, self.head(bottleneck), labels)
        pairs, target = pair_batch(labels, generator)
        log_probs = self.head(emb[pairs[:, 0]].float(), emb[pairs[:, 1]].float())
        return F.nll_loss(log_probs, target)


def _flip(crops: torch.Tensor, seed: int, step: int) -> torch.Tensor:
    """Random horizontal flip of half the crops on average, seeded by (seed, step)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    mask = torch.rand(len(crops), generator=g) < 0.5
    out = crops.clone()
    out[mask] = out[mask].flip(2)
    return out


def _model_config(config: TrainConfig) -> ModelConfig:
    cfg = load_model_config(config.model)
    want = {"scale-head": "scaleface", "pfe-head": "pfe"}.get(config.task)
    if want is not None and cfg.family != want:
        raise TrainError(
            f"{config.source}: model {config.model!r} is family {cfg.family!r}; task {config.task} needs {want}"
        )
    return cfg


def _backbone_config(cfg: ModelConfig) -> ModelConfig:
    """The backbone part of `cfg` as a backbone-only config (any checkpoint layout's backbone loads)."""
    d = cfg.to_dict()
    d.update(family="arcface", head=None, backbone_only=True, name=f"{cfg.name}-backbone")
    return model_config_from_dict(d, source=cfg.source)


def _build_backbone(options: TrainOptions, cfg: ModelConfig, store_model: dict | None) -> tuple[nn.Module, str]:
    """The backbone to train on and where it came from."""
    bb_cfg = _backbone_config(cfg)
    if options.backbone:
        return load_model(options.backbone, bb_cfg, trust=options.trust_checkpoint).backbone, options.backbone
    if store_model is not None:
        if not store_model.get("random_init"):
            raise TrainError(
                f"--cache {options.cache}: its bottleneck comes from checkpoint {store_model.get('checkpoint')}; "
                "pass that file as --backbone (the trained head's checkpoint carries the backbone)"
            )
        store_cfg = _backbone_config(model_config_from_dict(store_model["config"], source=str(options.cache)))
        seed = int(store_model.get("seed") or 0)
        return random_model(store_cfg, seed=seed).backbone, f"random:seed={seed} (the store's)"
    if options.config.mode == "end2end":
        torch.manual_seed(options.seed)
        return build_backbone(bb_cfg).train(), "fresh init (end-to-end)"
    return random_model(bb_cfg, seed=options.seed).backbone, f"random:seed={options.seed}"


def _build_head(config: TrainConfig, cfg: ModelConfig, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    if config.task == "pair-classifier":
        return build_pair_classifier(config.classifier, cfg.embedding_dim)
    head = build_head(cfg)
    assert head is not None
    return head.train()


@torch.no_grad()
def _all_embeddings(net: TrainNet, data: TrainData, device: torch.device, batch: int = 64) -> torch.Tensor:
    if data.embedding is not None and not net.from_bottleneck:
        return torch.from_numpy(data.embedding)
    order = np.arange(len(data))
    out = []
    net.backbone.eval()
    for _, x in iterate_batches(data, [order[i : i + batch] for i in range(0, len(order), batch)]):
        if data.cached:
            b = x.to(device).float()
            out.append(net.backbone.features(net.backbone.fc(b)).float().cpu())
        else:
            out.append(net.backbone(preprocess_batch(x, net.preprocessing, device)).embedding.float().cpu())
    return torch.cat(out)


def _centres(options: TrainOptions, data: TrainData, net_probe: TrainNet, device: torch.device, dim: int,
             notes: dict) -> torch.Tensor | None:  # fmt: skip
    if options.config.task != "scale-head":
        return None
    real = load_centres(options.centres, data.n_classes, dim) if options.centres else None
    if options.estimate_centres:
        est = estimate_centres(_all_embeddings(net_probe, data, device), torch.from_numpy(data.labels), data.n_classes)
        notes["centres"] = "estimated (normalised per-identity mean embeddings)"
        if real is not None:
            notes["mean_cosine_estimated_to_real_centres"] = mean_centre_cosine(est, real)
        return est
    if real is not None:
        notes["centres"] = f"loaded from {options.centres}"
        return real
    if options.config.mode == "end2end":
        notes["centres"] = "random normal(0, 0.01) init, trained"
        g = torch.Generator().manual_seed(options.seed + 1)
        return 0.01 * torch.randn(data.n_classes, dim, generator=g)
    raise TrainError(
        "fine-tuning the scale head needs frozen class centres: pass --centres CLASSIFIER or --estimate-centres"
    )


def _fingerprint(options: TrainOptions, data: TrainData, backbone_src: str) -> dict[str, Any]:
    """What a resume must match: config, seed, data and backbone."""
    return {
        "config": options.config.to_dict() | {"source": ""},
        "seed": options.seed,
        "data": data.source,
        "n_items": len(data),
        "n_classes": data.n_classes,
        "backbone": backbone_src,
        "precision": options.precision,
        "centres": options.centres or ("estimate" if options.estimate_centres else ""),
    }


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def repository_checkpoint(task: str, net: TrainNet, epoch: int, loss: float) -> dict[str, Any]:
    """The original's save formats: checkpoint.pth {'backbone', 'scale_predictor'}, sota.pth {'epoch',
    'backbone', 'head', 'train_loss'}; the pair classifier {'backbone', 'classifier', 'kind'}."""
    bb = {k: v.detach().cpu().clone() for k, v in net.backbone.state_dict().items()}
    hd = {k: v.detach().cpu().clone() for k, v in net.head.state_dict().items()}
    if task == "scale-head":
        return {"backbone": bb, "scale_predictor": hd}
    if task == "pfe-head":
        return {"epoch": int(epoch), "backbone": bb, "head": hd, "train_loss": float(loss)}
    return {"backbone": bb, "classifier": hd, "kind": type(net.head).__name__}


def _rank_world() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _claim(options: TrainOptions, command: str):
    from analyze.outputs import OWNER_FILE, OwnedOutput, claim_out_dir, read_owner

    out = Path(options.out)
    if options.resume and (out / STATE_FILE).is_file():
        record = read_owner(out)
        if record is None or record.get("command") != command:
            raise TrainError(f"--resume: {out} was not written by `{command}` (see its {OWNER_FILE})")
        owned = OwnedOutput(out, command)
        owned.files = dict(record["files"])
        owned.created = record.get("created", owned.created)
        return owned, True
    return claim_out_dir(out, options.force, command), False


def train(options: TrainOptions) -> TrainResult:
    """Run one training job into `options.out`; see the module docstring."""
    config = options.config
    rank, world = _rank_world()
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        device = (
            torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
            if torch.cuda.is_available()
            else torch.device("cpu")
        )
    else:
        device = resolve_device(options.device)
    precision = resolve_precision(options.precision, device)
    if (options.data is None) == (options.cache is None):
        raise TrainError("give exactly one of --data (a dataset) or --cache (a store with a bottleneck array)")
    model_cfg = _model_config(config)
    store_model = None
    if options.cache:
        data, model_name = cached_data(options.cache)
        from featurestore.store import FeatureStore

        with FeatureStore.open(options.cache) as store:
            store_model = store.attrs["models"][model_name]
        store_cfg = model_config_from_dict(store_model["config"], source=f"{options.cache} ({model_name})")
        if store_cfg.family == model_cfg.family:  # the store's own architecture and head shape
            model_cfg = store_cfg
        else:  # the store's backbone, the config's head
            model_cfg = dataclasses.replace(model_cfg, arch=store_cfg.arch, embedding_dim=store_cfg.embedding_dim,
                                            bn_eps=store_cfg.bn_eps, preprocessing=store_cfg.preprocessing)  # fmt: skip
    else:
        data = streaming_data(options.data, options.data_root, options.preset)
    if options.items is not None:
        data = data.subset(np.asarray(options.items, dtype=np.int64))
    backbone, backbone_src = _build_backbone(options, model_cfg, store_model)
    head = _build_head(config, model_cfg, options.seed)
    # cached: the stored embeddings belong to the store's backbone; another backbone (or a trained fc) recomputes them
    own_embeddings = data.cached and not options.backbone and config.mode != "end2end"
    probe = TrainNet(config, model_cfg, backbone, head, None).to(device)
    probe.from_bottleneck = data.cached and not own_embeddings
    notes: dict[str, Any] = {}
    centres = _centres(options, data, probe, device, model_cfg.embedding_dim, notes)
    net = TrainNet(config, model_cfg, backbone, head, centres).to(device)
    net.from_bottleneck = probe.from_bottleneck
    net.train()
    per_identity = (config.identities_per_batch, config.images_per_identity) if config.per_identity_batches else None
    global_batch = config.images_per_batch * world
    lr = config.optimizer.lr * (global_batch / config.lr_reference_batch if config.lr_reference_batch > 0 else 1.0)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=config.optimizer.momentum,
                          weight_decay=config.optimizer.weight_decay, nesterov=config.optimizer.nesterov)  # fmt: skip
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(config.milestones), gamma=config.gamma)
    amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    model: nn.Module = net
    if world > 1:
        model = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    n_batches = len(epoch_batches(data.labels, 0, options.seed, config.images_per_batch, per_identity)) // world
    total_steps = config.epochs * n_batches if options.steps is None else min(options.steps, config.epochs * n_batches)
    command = f"train {config.task}"
    owned, resuming = _claim(options, command) if rank == 0 else (None, False)
    out = Path(options.out)
    fp = _fingerprint(options, data, backbone_src)
    step, losses = 0, []
    if resuming:
        state = torch.load(out / STATE_FILE, map_location="cpu", weights_only=True)
        if state["fingerprint"] != fp:
            diff = [k for k in fp if state["fingerprint"].get(k) != fp[k]]
            raise TrainError(
                f"--resume: {out / STATE_FILE} was made by a different run (differs in: {', '.join(diff)})"
            )
        missing, unexpected = net.load_state_dict(state["net"], strict=False)
        if unexpected or any(not k.startswith("backbone.") for k in missing):
            raise TrainError(f"--resume: {out / STATE_FILE} does not hold this run's networks")
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        step, losses = int(state["step"]), list(state["losses"])
        _truncate_metrics(out / METRICS_FILE, step)
    val_sets = [(Path(p).stem, *_decode(p)) for p in options.val]
    bar = _bar(total_steps, step, config.task, options.progress and rank == 0)
    t0, seen, last_loss = time.perf_counter(), 0, float("nan")

    def save(epoch: int) -> None:
        if rank != 0:
            return
        mean_loss = float(np.mean(losses[-n_batches:])) if losses else float("nan")
        _atomic_save(repository_checkpoint(config.task, net, epoch, mean_loss), out / CHECKPOINT_NAMES[config.task])
        if net.centres is not None:
            save_shards(net.centres, out / "centres")
        state = {
            "fingerprint": fp,
            "net": _state_net(net),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "scaler": scaler.state_dict(),
            "step": step,
            "losses": losses,
        }
        _atomic_save(state, out / STATE_FILE)
        owned.add(out)

    try:
        with owned if owned is not None else contextlib.nullcontext():
            metrics = open(out / METRICS_FILE, "a") if rank == 0 else None
            try:
                while step < total_steps:
                    epoch, in_epoch = divmod(step, n_batches)
                    batches = epoch_batches(data.labels, epoch, options.seed, config.images_per_batch, per_identity)
                    batches = batches[rank::world][:n_batches][in_epoch:]
                    for idx, x in iterate_batches(data, batches, options.workers):
                        if step >= total_steps:
                            break
                        labels = torch.from_numpy(data.labels[idx.numpy()]).to(device)
                        emb = None
                        if data.cached:
                            if own_embeddings:
                                emb = torch.from_numpy(data.embedding[idx.numpy()]).to(device)
                            x = x.to(device)
                        else:
                            x = _flip(x, options.seed, step) if config.flip else x
                            x = preprocess_batch(x, model_cfg.preprocessing, device)
                        gen = torch.Generator().manual_seed(options.seed * 7919 + step)
                        amp = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
                        with amp:
                            loss = model(x, labels, emb, gen)
                        opt.zero_grad(set_to_none=True)
                        scaler.scale(loss).backward()
                        if config.clip_grad > 0:
                            scaler.unscale_(opt)
                            nn.utils.clip_grad_norm_(params, config.clip_grad)
                        scaler.step(opt)
                        scaler.update()
                        step += 1
                        seen += len(idx) * world
                        last_loss = float(loss.detach())
                        if not math.isfinite(last_loss):
                            raise TrainError(
                                f"loss is {last_loss} at step {step} (precision {precision}); try a lower --lr"
                            )
                        losses.append(last_loss)
                        rate = seen / max(time.perf_counter() - t0, 1e-9)
                        cur_lr = opt.param_groups[0]["lr"]
                        rec = {"step": step, "epoch": epoch, "loss": last_loss, "lr": cur_lr, "images_per_s": rate}
                        if val_sets and options.val_every and step % options.val_every == 0:
                            for name, crops, issame in val_sets:
                                from train.validate import pack_accuracy

                                rec[f"val_{name}"] = pack_accuracy(
                                    net.backbone, crops, issame, net.preprocessing, device
                                )
                        if metrics is not None and step % options.log_every == 0:
                            metrics.write(json.dumps(rec) + "\n")
                            metrics.flush()
                        if bar is not None:
                            bar.update(1)
                            bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{cur_lr:.2e}", img_s=f"{rate:.1f}")
                        end_of_epoch = step % n_batches == 0
                        if end_of_epoch:
                            sched.step()
                        if end_of_epoch or (options.checkpoint_every and step % options.checkpoint_every == 0):
                            save(step // n_batches)
                if step % n_batches and (not options.checkpoint_every or step % options.checkpoint_every):
                    save(step // n_batches)  # a --steps stop between checkpoints
            finally:
                if metrics is not None:
                    metrics.close()
                if bar is not None:
                    bar.close()
            if rank == 0:
                plot = _plot(out / METRICS_FILE, out / PLOT_FILE)
                summary = _summary(options, data, backbone_src, notes, losses, step, seen, time.perf_counter() - t0,
                                   precision, device, lr, n_batches)  # fmt: skip
                from analyze.outputs import write_json

                write_json(summary, out / SUMMARY_FILE)
    except Interrupted as exc:
        done = (step // n_batches) if n_batches else 0
        raise exc.with_message(
            f"train stopped at step {step}; the last checkpoint in {out} (epoch {done} or the last --checkpoint-every) "
            "is whole; rerun the same command with --resume to go on from it"
        ) from None
    finally:
        if world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()
    return TrainResult(out / CHECKPOINT_NAMES[config.task], out / STATE_FILE, out / METRICS_FILE,
                       plot if rank == 0 else None, summary if rank == 0 else {})  # fmt: skip


def _state_net(net: TrainNet) -> dict[str, torch.Tensor]:
    """The trainable networks' state for a resume: a frozen backbone is left out (the fingerprint names it)."""
    sd = net.state_dict()
    if net.mode == "end2end":
        return sd
    return {k: v for k, v in sd.items() if not k.startswith("backbone.")}


def _decode(path: str):
    from train.validate import decode_pack

    return decode_pack(path)


def _bar(total: int, initial: int, task: str, progress: bool):
    from tqdm import tqdm

    if not progress or not sys.stderr.isatty():
        return None
    return tqdm(total=total, initial=initial, unit="step", desc=f"train {task}", smoothing=0.1)


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines past the resumed step (written after the checkpoint the run resumes from)."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in keep))


def _plot(metrics: Path, out: Path) -> Path | None:
    """The loss (and a 50-step running mean) per step as a PNG."""
    if not metrics.is_file():
        return None
    recs = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    if not recs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.array([r["step"] for r in recs])
    loss = np.array([r["loss"] for r in recs])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, loss, lw=0.8, alpha=0.6, label="loss")
    if len(loss) >= 10:
        w = min(50, len(loss) // 2)
        ax.plot(steps[w - 1 :], np.convolve(loss, np.ones(w) / w, mode="valid"), lw=1.5, label=f"mean of {w}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _summary(options, data, backbone_src, notes, losses, step, seen, seconds, precision, device, lr, n_batches):
    k = max(1, min(10, len(losses) // 4))
    return {
        "task": options.config.task,
        "mode": options.config.mode,
        "config": options.config.source,
        "data": data.source,
        "cached": data.cached,
        "n_images": len(data),
        "n_classes": data.n_classes,
        "backbone": backbone_src,
        "steps": step,
        "steps_per_epoch": n_batches,
        "images_seen_this_run": seen,
        "seconds_this_run": seconds,
        "images_per_s": seen / seconds if seconds > 0 else 0.0,
        "first_loss": float(np.mean(losses[:k])) if losses else None,
        "last_loss": float(np.mean(losses[-k:])) if losses else None,
        "lr": lr,
        "precision": precision,
        "device": str(device),
        "seed": options.seed,
        **notes,
    } | {
        "options": {
            k2: (str(v) if isinstance(v, Path) else v)
            for k2, v in asdict(options).items()
            if k2 not in ("config", "items")
        }
    }
