"""`train`: fit the ScaleFace scale head, the PFE head or the pair classifier into checkpoints `extract` loads.

Each subcommand is a thin click wrapper over `train.run.train(TrainOptions)`.
"""

from __future__ import annotations

from pathlib import Path

import click

from featurestore.cli_main import run_cli

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _common(f):
    """The options every subcommand takes."""
    options = [
        click.option("--data", default=None, help="Dataset manifest name or YAML (ms1mv2, folder, synthetic, ...)."),
        click.option("--data-root", type=click.Path(file_okay=False), default=None, help="Dataset folder."),
        click.option(
            "--preset",
            type=click.Choice(["tiny", "small", "medium"]),
            default="small",
            show_default=True,
            help="Size of the generated set for --data synthetic.",
        ),  # fmt: skip
        click.option(
            "--cache",
            type=click.Path(),
            default=None,
            help="Cached mode: a store with a bottleneck array (extract --bottleneck); no backbone forward.",
        ),  # fmt: skip
        click.option(
            "--backbone",
            type=click.Path(dir_okay=False),
            default=None,
            help="Backbone checkpoint (any layout extract reads). Default: seeded random weights.",
        ),  # fmt: skip
        click.option(
            "--config",
            "config_name",
            default=None,
            help="Train config name (configs/train/*.yaml) or YAML path; default per subcommand.",
        ),  # fmt: skip
        click.option(
            "--out",
            type=click.Path(),
            required=True,
            help="Output folder (owned: only its own files are ever replaced).",
        ),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N."),
        click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True),
        click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True),
        click.option("--steps", type=click.IntRange(min=1), default=None, help="Stop after this many steps in all."),
        click.option("--epochs", type=click.IntRange(min=1), default=None, help="Override the config's epochs."),
        click.option(
            "--batch-size", type=click.IntRange(min=1), default=None, help="Override the config's batch size."
        ),
        click.option("--lr", type=float, default=None, help="Override the config's (reference-batch) learning rate."),
        click.option("--resume", is_flag=True, help="Go on from --out's last checkpoint (the same options)."),
        click.option("--force", is_flag=True, help="Replace --out's earlier results (only files this tool wrote)."),
        click.option(
            "--checkpoint-every",
            type=click.IntRange(min=0),
            default=0,
            show_default=True,
            help="Also checkpoint every N steps (always at each epoch's end).",
        ),  # fmt: skip
        click.option(
            "--workers", type=click.IntRange(min=0), default=0, show_default=True, help="DataLoader processes."
        ),
        click.option("--val", multiple=True, type=click.Path(dir_okay=False), help="A .bin pack to validate on."),
        click.option("--val-every", type=click.IntRange(min=0), default=0, show_default=True),
        click.option("--trust-checkpoint", is_flag=True, help="Allow checkpoints that need full unpickling."),
        click.option("--quiet", is_flag=True, help="No progress bar."),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


def _run(task: str, config_name, centres=None, estimate_centres=False, mode=None, classifier=None, **kw) -> None:
    from train.config import ConfigTaskError, task_config
    from train.run import TrainOptions, train

    try:
        config = task_config(task, config_name, epochs=kw.pop("epochs"), batch_size=kw.pop("batch_size"), mode=mode,
                             classifier=classifier, lr=kw.pop("lr"))  # fmt: skip
    except ConfigTaskError as exc:
        raise click.BadParameter(str(exc), param_hint="--config") from None
    opts = TrainOptions(
        config=config,
        out=Path(kw.pop("out")),
        centres=centres,
        estimate_centres=estimate_centres,
        progress=not kw.pop("quiet"),
        val=tuple(kw.pop("val")),
        **kw,
    )
    result = train(opts)
    s = result.summary
    click.echo(
        f"{task}: {s['steps']} steps, loss {s['first_loss']:.4f} -> {s['last_loss']:.4f}, "
        f"{s['images_per_s']:.1f} images/s on {s['device']} ({s['precision']})",
        err=True,
    )
    if "mean_cosine_estimated_to_real_centres" in s:
        click.echo(f"centres: mean cosine estimated -> real {s['mean_cosine_estimated_to_real_centres']:.4f}", err=True)
    click.echo(f"checkpoint: {result.checkpoint}", err=True)


@click.group(context_settings=CONTEXT)
def cli() -> None:
    """Train the ScaleFace scale head, the PFE head or the pair classifier (docs/train.md)."""


@cli.command("scale-head", context_settings=CONTEXT)
@_common
@click.option("--mode", type=click.Choice(["finetune", "end2end"]), default=None, help="Override the config's mode.")
@click.option(
    "--centres",
    type=click.Path(),
    default=None,
    help="Class centres: a classifier checkpoint (softmax_fc_gpu_<rank>.pt shards, a folder of them).",
)
@click.option("--estimate-centres", is_flag=True, help="Centres = normalised per-identity mean embeddings.")
def scale_head(**kw) -> None:
    """ArcFace (m = 0.5) with a per-image predicted scale; writes checkpoint.pth {backbone, scale_predictor}."""
    _run("scale-head", **kw)


@cli.command("pfe-head", context_settings=CONTEXT)
@_common
def pfe_head(**kw) -> None:
    """PFE sigma head by the MLS loss over genuine pairs; writes sota.pth {epoch, backbone, head, train_loss}."""
    _run("pfe-head", **kw)


@cli.command("pair-classifier", context_settings=CONTEXT)
@_common
@click.option("--classifier", type=click.Choice(["smart_cosine", "bilinear", "mlp"]), default=None)
def pair_classifier(**kw) -> None:
    """Same/different classifier on [mu1, mu2]; writes classifier.pth {backbone, classifier, kind}."""
    _run("pair-classifier", **kw)


def main() -> None:
    """Console entry point: bad data, configs, checkpoints and stores become one `error:` line, exit 2."""
    from analyze.outputs import OutputExistsError
    from extract.checkpoints import CheckpointError
    from extract.models import ConfigError
    from extract.runner import ExtractionError
    from facedata.errors import DataError
    from featurestore.errors import StoreError
    from train.centres import CentreError
    from train.config import TrainConfigError
    from train.data import TrainDataError
    from train.run import TrainError

    errors = (DataError, StoreError, CheckpointError, ConfigError, ExtractionError, OutputExistsError, CentreError,
              TrainConfigError, TrainDataError, TrainError)  # fmt: skip
    run_cli(cli, errors, "train")
