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

from extract.checkpoints import load_model
from extract.models import model_config_from_dict
from featurestore.store import FeatureStore
from train.config import load_train_config
from train.data import cached_data, identity_split
from train.run import TrainOptions, train

DEMO_LR = {"warmup": 0.5, "scale": 0.5, "pfe": 1e-3}
"""Reference-batch learning rates of the demo (x batch/512 as in the original): the repository's lr (1e-4, 1e-3)
fine-tunes for 12 epochs of MS1M (5.2 M images); the synthetic store has ~1.5 k, so a few hundred steps need a
larger step size."""


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


def train_demo_heads(
    store: str | Path,
    out: str | Path,
    *,
    warmup_steps: int = 200,
    scale_steps: int = 200,
    pfe_steps: int = 150,
    batch_size: int = 64,
    holdout: float = 0.25,
    warmup_fraction: float = 0.5,
    seed: int = 0,
    device: str = "cpu",
    force: bool = False,
    resume: bool = False,
    progress: bool = False,
) -> DemoResult:
    """On the store's bottleneck array, leaving `holdout` of each identity's images out: a plain-ArcFace warm-up
    of the backbone's fc + features and the centres (a random backbone's embedding carries no identity, so a scale
    head fitted on it collapses to s = 0), then a ScaleFace fine-tune and a PFE head on the warmed-up embedding;
    reports on the held-out images the Spearman correlation of the learned scale with the true severity (the
    method works when it is negative) and of PFE's mean log sigma^2 (positive). `resume` continues each of the
    three runs from its train_state.pt (a finished one is only re-read)."""
    out = Path(out)
    data, model = cached_data(store)
    with FeatureStore.open(store) as s:
        store_cfg = s.attrs["models"][model]["config"]
    held = identity_split(data.labels, holdout, seed)
    train_items = tuple(int(i) for i in np.flatnonzero(~held))
    # the warm-up and the fine-tune see different images: a warm-up memorises its own images (a 25,088-d linear
    # layer over 1.5 k), so their margin cosines say nothing about quality; on unseen ones they do
    rest = np.flatnonzero(~held)
    second = identity_split(data.labels[rest], warmup_fraction, seed + 1) if warmup_steps else np.ones(len(rest), bool)
    warm_items = tuple(int(i) for i in rest[~second])
    head_items = tuple(int(i) for i in rest[second])
    severity = degradation_severity(store)[data.rows[held]]
    metrics: dict[str, Any] = {"n_train": len(train_items), "n_heldout": int(held.sum()), "store": str(store)}
    metrics |= {"n_warmup": len(warm_items), "n_head": len(head_items)}
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
    runs: list[tuple[str, str, TrainOptions, int]] = []
    if warmup_steps:
        runs.append(("warmup", "scale-head", base, warmup_steps))
        after = {"backbone": str(out / "warmup" / "checkpoint.pth"), "centres": str(out / "warmup" / "centres")}
    else:
        after = {}
    scale = replace(base, config=load_train_config("scale_finetune"), out=out / "scale", items=head_items, **after)
    if after:
        scale = replace(scale, estimate_centres=False)
    runs.append(("scale", "scale-head", scale, scale_steps))
    if pfe_steps:
        pfe_opts = replace(
            scale, config=load_train_config("pfe"), out=out / "pfe", centres=None, estimate_centres=False
        )
        runs.append(("pfe", "pfe-head", pfe_opts, pfe_steps))
    results = {}
    for name, task, opts, steps in runs:
        cfg = opts.config
        cfg = cfg.with_overrides(epochs=10_000, milestones=(), batch_size=batch_size,
                                 identities_per_batch=max(2, batch_size // cfg.images_per_identity))  # fmt: skip
        cfg = replace(cfg, optimizer=replace(cfg.optimizer, lr=DEMO_LR[name]), clip_grad=5.0)
        result = train(replace(opts, config=cfg, steps=steps))
        results[name] = result
        metrics[f"{name}_first_loss"] = result.summary["first_loss"]
        metrics[f"{name}_last_loss"] = result.summary["last_loss"]
        metrics[f"{name}_seconds"] = result.summary["seconds_this_run"]
        if name == "warmup":
            continue
        family = "scaleface" if task == "scale-head" else "pfe"
        values = heldout_outputs(result.checkpoint, store_cfg, data.bottleneck[held], family)
        ok = np.isfinite(severity) & np.isfinite(values)
        rho = float(spearmanr(values[ok], severity[ok]).statistic) if ok.sum() > 2 else float("nan")
        key = "scale" if family == "scaleface" else "pfe_log_sigma_sq"
        metrics[f"{key}_spearman_vs_severity"] = rho
        metrics[f"{key}_heldout_range"] = [float(values[ok].min()), float(values[ok].max())]
    pfe = results.get("pfe")
    return DemoResult(results["scale"].checkpoint, pfe.checkpoint if pfe else None, metrics)
