"""The demo's train step: fine-tune a ScaleFace head and a PFE head in cached mode on a synthetic store and
measure, on held-out images, how the learned scale (and PFE's sigma^2) follow the true degradation.

`train_demo_heads(store, out)` is what the demo pipeline's train step calls; the synthetic set's degradation
table (meta/ijbc_degradations.csv under the store's data root) is the truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

from extract.checkpoints import load_model, random_model
from extract.models import model_config_from_dict
from featurestore.store import FeatureStore
from train.centres import estimate_centres, save_shards
from train.config import load_train_config
from train.data import cached_data, identity_split
from train.losses import class_cosines, margin_cosines
from train.run import TrainError, TrainOptions, train

DEMO_LR = {"warmup": 0.5, "scale": 0.02, "pfe": 1e-3}
"""Reference-batch learning rates of the demo (x batch/512 as in the original): the repository's lr (1e-4, 1e-3)
fine-tunes for 12 epochs of MS1M (5.2 M images); the synthetic store has ~1.5 k, so a hundred steps need a
larger step size. The scale head's 0.02 is measured (docs/train.md): 0.1 and more drive most scales into
sigm_mul's flat ends, where the gradient vanishes."""

CENTRE_MAX_SEVERITY = 0.2
"""The demo's class centres are the per-identity means of the training images this clean or cleaner (the
generator's truth): a trained backbone's centres come from a curated, mostly clean training set, while 85 % of
the synthetic images are degraded, so means over all of them put blurred faces next to their centre."""


@dataclass
class DemoResult:
    """Paths of the trained heads and the held-out figures."""

    scale_checkpoint: Path
    pfe_checkpoint: Path | None
    metrics: dict[str, Any] = field(default_factory=dict)


def degradation_severity(store_path: str | Path, data_root: str | Path | None = None) -> np.ndarray:
    """The synthetic set's true degradation severity per store row (NaN where the table has no row)."""
    with FeatureStore.open(store_path) as store:
        root = Path(data_root or store.attrs.get("extra", {}).get("data_root", ""))
        paths = store.image_column("path")
    table = pd.read_csv(root / "meta" / "ijbc_degradations.csv").set_index("name")["severity"]
    names = pd.Series([Path(str(p)).name for p in paths])
    return names.map(table).to_numpy(dtype=np.float64)


@torch.no_grad()
def heldout_outputs(checkpoint: Path, store_model_config: dict, bottleneck: np.ndarray, family: str) -> np.ndarray:
    """The trained head's per-image output on stored bottlenecks: scale (ScaleFace) or mean log sigma^2 (PFE)."""
    cfg = model_config_from_dict({**store_model_config, "family": family, "head": _head(family, store_model_config)})
    head = load_model(checkpoint, cfg).head.eval()
    out = []
    for i in range(0, len(bottleneck), 256):
        out.append(head(torch.from_numpy(bottleneck[i : i + 256]).float()))
    out_t = torch.cat(out)
    return (out_t if family == "scaleface" else out_t.mean(dim=1)).numpy()


def _head(family: str, config: dict) -> dict:
    if family == config.get("family"):
        return config["head"]
    if family == "pfe":
        return {"kind": "pfe", "in_feat": 25088, "out_feat": int(config["backbone"]["embedding_dim"])}
    return {"kind": "scale_predictor", "num_feats": [25088, 512, 1], "activation": "sigm_mul", "coefficient": 64.0}


def optimal_scales(z: torch.Tensor, labels: torch.Tensor, cap: float = 64.0, iters: int = 50) -> torch.Tensor:
    """Per image, the scale s* in [0, cap] minimising its ScaleFace loss for fixed margin cosines z (B, C): the root
    of dL/ds = sum_j p_j(s) z_j - z_y, which rises with s (its derivative is the variance of z under p); 0 where
    z_y is at most the mean of z (the loss only grows with s, or is flat), cap where z_y is also at least every
    other z (the loss falls all the way). Bisection in float64."""
    z = z.double()
    zy = z.gather(1, labels.view(-1, 1)).squeeze(1)
    others = z.scatter(1, labels.view(-1, 1), float("-inf")).max(dim=1).values
    lo, hi = torch.zeros(len(z), dtype=z.dtype), torch.full((len(z),), float(cap), dtype=z.dtype)
    for _ in range(iters):
        mid = (lo + hi) / 2
        below = (torch.softmax(mid[:, None] * z, dim=1) * z).sum(1) < zy
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    s = torch.where(zy >= others, torch.full_like(lo, float(cap)), (lo + hi) / 2)
    return torch.where(zy <= z.mean(dim=1), torch.zeros_like(s), s)


def _embedding(data: Any, checkpoint: Path | None, store_cfg: dict) -> torch.Tensor:
    """The embeddings the fine-tune sees: the stored ones, or the warm-up backbone's fc + features."""
    if checkpoint is None:
        return torch.from_numpy(data.embedding).float()
    cfg = model_config_from_dict({**store_cfg, "family": "arcface", "head": None, "backbone_only": True})
    backbone = load_model(checkpoint, cfg).backbone.eval()
    with torch.no_grad():
        x = torch.from_numpy(data.bottleneck.astype(np.float32))
        return torch.cat([backbone.features(backbone.fc(x[i : i + 256])) for i in range(0, len(x), 256)])


def _baseline_checkpoint(store_cfg: dict, seed: int, out: Path) -> Path:
    """Without a warm-up: the store's random backbone with a seeded random ScaleFace head, saved as the warm-up's
    checkpoint would be (the report's random-head baseline on the embedding the trained head uses)."""
    from analyze.outputs import claim_out_dir

    folder = out / "warmup"
    cfg = model_config_from_dict({**store_cfg, "family": "scaleface", "head": _head("scaleface", store_cfg)})
    model = random_model(cfg, seed=seed)
    with claim_out_dir(folder, True, "train demo-heads baseline") as owned:
        path = folder / "checkpoint.pth"
        torch.save({"backbone": model.backbone.state_dict(), "scale_predictor": model.head.state_dict()}, path)
        owned.add(path)
    return path


def train_demo_heads(
    store: str | Path,
    out: str | Path,
    *,
    warmup_steps: int = 0,
    scale_steps: int = 100,
    pfe_steps: int = 40,
    batch_size: int = 64,
    holdout: float = 0.25,
    warmup_fraction: float = 0.5,
    centre_max_severity: float | None = CENTRE_MAX_SEVERITY,
    seed: int = 0,
    device: str = "cpu",
    force: bool = False,
    resume: bool = False,
    progress: bool = False,
) -> DemoResult:
    """On the store's bottleneck array, leaving `holdout` of each identity's images out: class centres, then a
    ScaleFace fine-tune (frozen embedding and centres) and a PFE head, with the held-out Spearman correlation of
    the learned scale with the true severity (the method works when it is negative) and of PFE's mean log sigma^2
    (positive). Centres: with `centre_max_severity` the normalised per-identity means of the training images at
    most that degraded (CENTRE_MAX_SEVERITY; the head then trains on the identities that have such an image), else
    estimated over all the head's images. With `warmup_steps` a plain-ArcFace warm-up of the backbone's fc +
    features and centres first runs on `warmup_fraction` of the training images (the head trains on the others:
    the warm-up memorises its own). `resume` continues each run from its train_state.pt."""
    out = Path(out)
    data, model = cached_data(store)
    with FeatureStore.open(store) as s:
        store_model = s.attrs["models"][model]
    store_cfg = store_model["config"]
    held = identity_split(data.labels, holdout, seed)
    rest = np.flatnonzero(~held)
    # the warm-up and the fine-tune see different images: a warm-up memorises its own images (a 25,088-d linear
    # layer over 1.5 k), so their margin cosines say nothing about quality; on unseen ones they do
    second = identity_split(data.labels[rest], warmup_fraction, seed + 1) if warmup_steps else np.ones(len(rest), bool)
    warm_items = tuple(int(i) for i in rest[~second])
    head_idx = rest[second]
    all_severity = degradation_severity(store)[data.rows]
    severity = all_severity[held]
    metrics: dict[str, Any] = {"n_train": len(rest), "n_heldout": int(held.sum()), "store": str(store)}
    base = TrainOptions(
        config=load_train_config("arcface_warmup"),
        out=out / "warmup",
        cache=str(store),
        seed=seed,
        device=device,
        force=force,
        resume=resume,
        progress=progress,
        items=warm_items,
        estimate_centres=True,
    )
    results = {}
    warm_ckpt = None
    if warmup_steps:
        results["warmup"] = _run("warmup", base, warmup_steps, batch_size, metrics)
        warm_ckpt = results["warmup"].checkpoint
        after = {"backbone": str(warm_ckpt), "centres": str(out / "warmup" / "centres"), "estimate_centres": False}
    else:
        _baseline_checkpoint(store_cfg, int(store_model.get("seed") or 0), out)
        after = {}
    emb = _embedding(data, warm_ckpt, store_cfg)
    labels = torch.from_numpy(data.labels)
    if centre_max_severity is not None:
        clean = rest[all_severity[rest] <= centre_max_severity]
        centres = estimate_centres(emb[clean], labels[clean], data.n_classes)
        _save_centres(centres, out / "centres", "train demo-heads centres")
        head_idx = head_idx[np.isin(data.labels[head_idx], data.labels[clean])]
        after = {**after, "centres": str(out / "centres"), "estimate_centres": False}
        metrics |= {"centre_max_severity": centre_max_severity, "n_centre_images": len(clean)}
        metrics["n_centre_identities"] = int(len(np.unique(data.labels[clean])))
    else:
        centres = estimate_centres(emb[head_idx], labels[head_idx], data.n_classes) if not warmup_steps else None
    if len(head_idx) < batch_size:
        raise TrainError(
            f"{store}: {len(head_idx)} images for the scale head, fewer than one batch of {batch_size}"
            + (f" (only identities with a training image of severity <= {centre_max_severity} have a centre)"
               if centre_max_severity is not None else "")
        )  # fmt: skip
    metrics |= {"n_warmup": len(warm_items), "n_head": len(head_idx)}
    head_items = tuple(int(i) for i in head_idx)
    scale = replace(base, config=load_train_config("scale_finetune"), out=out / "scale", items=head_items, **after)
    if centres is None:  # the warm-up's learned centres
        from train.centres import load_centres

        centres = load_centres(out / "warmup" / "centres", data.n_classes)
    metrics |= _margin_diagnostics(emb[held], centres, labels[held], severity)
    runs = [("scale", "scale-head", scale, scale_steps)]
    if pfe_steps:
        pfe_opts = replace(
            scale, config=load_train_config("pfe"), out=out / "pfe", centres=None, estimate_centres=False
        )
        runs.append(("pfe", "pfe-head", pfe_opts, pfe_steps))
    for name, task, opts, steps in runs:
        result = results[name] = _run(name, opts, steps, batch_size, metrics)
        family = "scaleface" if task == "scale-head" else "pfe"
        values = heldout_outputs(result.checkpoint, store_cfg, data.bottleneck[held], family)
        ok = np.isfinite(severity) & np.isfinite(values)
        rho = float(spearmanr(values[ok], severity[ok]).statistic) if ok.sum() > 2 else float("nan")
        key = "scale" if family == "scaleface" else "pfe_log_sigma_sq"
        metrics[f"{key}_spearman_vs_severity"] = rho
        metrics[f"{key}_heldout_range"] = [float(values[ok].min()), float(values[ok].max())]
    pfe = results.get("pfe")
    return DemoResult(results["scale"].checkpoint, pfe.checkpoint if pfe else None, metrics)


def _run(name: str, opts: TrainOptions, steps: int, batch_size: int, metrics: dict[str, Any]) -> Any:
    """One of the demo's runs at its DEMO_LR, batch `batch_size`, `steps` steps, no lr decay; losses into metrics."""
    cfg = opts.config
    cfg = cfg.with_overrides(epochs=10_000, milestones=(), batch_size=batch_size,
                             identities_per_batch=max(2, batch_size // cfg.images_per_identity))  # fmt: skip
    cfg = replace(cfg, optimizer=replace(cfg.optimizer, lr=DEMO_LR[name]), clip_grad=5.0)
    result = train(replace(opts, config=cfg, steps=steps))
    metrics[f"{name}_first_loss"] = result.summary["first_loss"]
    metrics[f"{name}_last_loss"] = result.summary["last_loss"]
    metrics[f"{name}_seconds"] = result.summary["seconds_this_run"]
    return result


def _save_centres(centres: torch.Tensor, folder: Path, command: str) -> None:
    from analyze.outputs import claim_out_dir

    with claim_out_dir(folder, True, command) as owned:
        owned.add(*save_shards(centres, folder))


def _margin_diagnostics(emb: torch.Tensor, centres: torch.Tensor, labels: torch.Tensor, severity: np.ndarray) -> dict:
    """What any head can learn on these images: the loss-optimal scale s* per held-out image (optimal_scales), its
    Spearman correlation with severity, and how often s* = 0 (target margin cosine at most the mean one) in the
    cleanest and the most degraded third."""
    z = margin_cosines(class_cosines(emb, centres), labels).detach()
    s = optimal_scales(z, labels).numpy()
    ok = np.isfinite(severity)
    lo, hi = np.quantile(severity[ok], [1 / 3, 2 / 3])
    return {
        "optimal_scale_spearman_vs_severity": float(spearmanr(s[ok], severity[ok]).statistic),
        "heldout_zero_optimal_scale_clean_third": float(np.mean(s[ok & (severity <= lo)] < 1e-3)),
        "heldout_zero_optimal_scale_degraded_third": float(np.mean(s[ok & (severity >= hi)] < 1e-3)),
    }
