"""`extract`: run every model over a dataset once and write all their outputs into a feature store."""

from __future__ import annotations

import os
import re
from pathlib import Path

import click

from facedata.errors import DataError
from featurestore.cli_main import run_cli
from featurestore.errors import StoreError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

SYNTHETIC_PRESETS = ("tiny", "small", "medium")
"""facedata.synthetic.DATASET_PRESETS, named here so `extract --help` does not import the generators."""


class DeviceType(click.ParamType):
    """auto, cpu, cuda, cuda:N, or mps where torch has it; whether the machine has it is checked later,
    still before the store is created (extract.runner.resolve_device)."""

    name = "device"

    def convert(self, value, param, ctx):
        text = str(value).strip().lower()
        if text in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", text):
            return text
        if text == "mps":
            import torch

            if getattr(torch.backends, "mps", None) is not None:
                return text
            self.fail("mps: this torch build has no MPS support; use auto, cpu, cuda or cuda:N", param, ctx)
        self.fail(f"{value!r} is not a device: use auto, cpu, cuda, cuda:N (N = 0, 1, ...) or mps", param, ctx)


@click.command(context_settings=CONTEXT)
@click.option(
    "--dataset",
    required=True,
    help="Built-in manifest name (ijbc, ijbb, lfw, ms1mv2, folder, synthetic, ...) or a manifest YAML path: "
    "an argument is a path only when it ends in .yaml/.yml or contains '/'.",
)
@click.option(
    "--data-root",
    type=click.Path(file_okay=False),
    default=None,
    help="Dataset folder (default: $SCALEFACE_DATA_ROOT_<NAME> or $SCALEFACE_DATA_ROOT). "
    "Not needed for --dataset synthetic, which is generated into a cache folder.",
)
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False),
    default=None,
    help="One model's checkpoint; its family and depth are recognised from its layout unless --config says.",
)
@click.option(
    "--config",
    "configs",
    multiple=True,
    help="Model config name (configs/models/*.yaml) or YAML (ScaleFace repository yamls accepted). "
    "With --random-init it may be repeated.",
)
@click.option(
    "--model",
    "model_options",
    multiple=True,
    metavar="NAME=CKPT[:CONFIG]",
    help="A model stored under NAME; repeat for several models in one pass, e.g. "
    "--model scaleface=sf.pt:scaleface_r50 --model pfe=pfe.pt:pfe_r50.",
)
@click.option(
    "--random-init",
    is_flag=True,
    help="Seeded random weights instead of a checkpoint (recorded as random in the store). Without "
    "--config: ScaleFace, PFE and the embedding-norm baseline on one backbone, plus MagFace.",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Seed for --random-init (0 ... 2**64 - 1, torch's seed range).",
)
@click.option(
    "--trust-checkpoint",
    is_flag=True,
    help="Allow checkpoints that need full unpickling (arbitrary code): only for files you trust.",
)
@click.option(
    "--out",
    "--cache",
    type=click.Path(),
    default=None,
    help="Store path: NAME.zarr (default: <dataset>.zarr in the current folder) or NAME.h5.",
)
@click.option(
    "--device",
    type=DeviceType(),
    default="auto",
    show_default=True,
    metavar="DEVICE",
    help="auto, cpu, cuda, cuda:I (or mps where torch has it).",
)
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="Images per network batch."
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=min(8, os.cpu_count() or 1),
    show_default=True,
    help="DataLoader processes decoding and aligning images (0: in the main process).",
)
@click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "fp16", "bf16"]),
    default="auto",
    show_default=True,
    help="auto = fp32 (TF32 off on CUDA), the precision of the original code, whose outputs users compare "
    "with; fp16/bf16: autocast for GPU throughput (embeddings move by ~1e-4 relative).",
)
@click.option(
    "--preprocess",
    type=click.Choice(["cpu", "device"]),
    default="cpu",
    show_default=True,
    help="Where images are decoded and aligned. cpu: OpenCV in the --workers processes, insightface's crops "
    "exactly. device: the workers only read files; JPEGs are decoded on --device (nvjpeg on CUDA) and aligned "
    "there by grid_sample with the same 5-point transform (crops within ~1 grey level of OpenCV's; other formats "
    "decoded by OpenCV). Recorded in each model's fingerprint, so a resume must use the same.",
)
@click.option("--flip/--no-flip", default=None, help="Flip test: also store embedding_flip (default: each config's).")
@click.option(
    "--shard",
    default="0/1",
    show_default=True,
    metavar="I/N",
    help="Write only shard I of N (chunk-aligned row ranges), so N processes can fill one .zarr store.",
)
@click.option(
    "--chunk-rows",
    type=click.IntRange(min=1),
    default=2048,
    show_default=True,
    help="Images per store chunk (new stores only).",
)
@click.option(
    "--overwrite",
    "--force",
    is_flag=True,
    help="Delete an existing store and start again (default: resume it). Only a feature store is ever deleted. "
    "--force is the same flag (the toolkit's one word for 'replace what this tool wrote').",
)
@click.option(
    "--verify",
    is_flag=True,
    help="Only check the store at --out: recompute every checksum and list damaged chunks (exit 1 if any).",
)
@click.option(
    "--repair",
    is_flag=True,
    help="Redo exactly the damaged chunks of the store at --out (same model options as the run that made it).",
)
@click.option("--strict", is_flag=True, help="Stop at the first unreadable, missing or unalignable image.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Only the first N images (and the pairs among them): a quick trial.",
)
@click.option(
    "--preset",
    type=click.Choice(SYNTHETIC_PRESETS),
    default="tiny",
    show_default=True,
    help="Size of the generated set for --dataset synthetic.",
)
@click.option(
    "--bottleneck",
    "bottleneck",
    is_flag=True,
    help="Also store one model's 25,088-d backbone bottleneck (float16) for training heads from the store "
    "(train ... --cache); see docs/train.md.",
)
@click.option(
    "--per-identity",
    type=click.IntRange(min=1),
    default=None,
    help="With --bottleneck: only the first K images of each identity.",
)
@click.option(
    "--bottleneck-model",
    default=None,
    help="With --bottleneck: the model whose backbone fills it (default: the first with a head).",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def cli(
    dataset,
    data_root,
    checkpoint,
    configs,
    model_options,
    random_init,
    seed,
    trust_checkpoint,
    out,
    device,
    batch_size,
    workers,
    precision,
    preprocess,
    flip,
    shard,
    chunk_rows,
    overwrite,
    verify,
    repair,
    strict,
    limit,
    preset,
    bottleneck,
    per_identity,
    bottleneck_model,
    quiet,
) -> None:
    """Run face models over a dataset once; write embeddings, norms, scales and sigmas to a feature store.

    Every model of a run shares decoding and alignment; models with identical backbone weights and
    preprocessing (ScaleFace and PFE heads on one frozen backbone) share one backbone forward per batch.
    The run resumes where it stopped (finished chunks are kept); failed images get a status code and
    NaN outputs, and the run goes on.

    \b
    Examples:
      extract --dataset ijbc --data-root /data/IJBC --checkpoint backbone.pth
      extract --dataset ijbc --model scaleface=sf.pt:scaleface_r50 --model pfe=pfe.pt:pfe_r50 --out ijbc.zarr
      extract --dataset synthetic --random-init --device cpu
      extract --dataset ijbc --checkpoint ms1mv2_r50.pth --shard 0/4   # one of 4 GPUs/nodes
    """
    from extract.checkpoints import CheckpointError
    from extract.models import ConfigError
    from extract.plan import resolve_models
    from extract.runner import resolve_device, resolve_precision, run_extraction
    from facedata.manifest import load_manifest, manifest_digest, resolve_data_root
    from facedata.readers import read_dataset
    from featurestore.store import create_store

    try:
        i, n = (int(x) for x in shard.split("/"))
        if not 0 <= i < n:
            raise ValueError
    except ValueError:
        raise click.BadParameter(f"{shard!r}: expected I/N with 0 <= I < N", param_hint="--shard") from None
    if seed >= 2**64:
        raise click.BadParameter(f"{seed} is past torch's seed range 0 ... 2**64 - 1", param_hint="--seed")
    if len(configs) > 1 and not random_init:
        raise click.UsageError("--config may be repeated only with --random-init; use --model NAME=CKPT:CONFIG")
    if sum((overwrite, verify, repair)) > 1:
        raise click.UsageError("--overwrite, --verify and --repair exclude each other")
    manifest = load_manifest(dataset)  # cheap checks first: manifest, device, data root, then the checkpoints
    if verify:
        _verify(Path(out or f"{manifest.name}.zarr"))
        return
    dev = resolve_device(device)  # checks that need torch, still before anything is created
    resolved_precision = resolve_precision(precision, dev)
    if manifest.name == "synthetic" and data_root is None:
        from facedata.synthetic import ensure_synthetic

        root = ensure_synthetic(preset=preset, seed=0)
    else:
        root = resolve_data_root(manifest, data_root)
    try:
        models, specs = resolve_models(
            checkpoint,
            configs[0] if configs and not random_init else None,
            model_options,
            random_init,
            tuple(configs) if random_init else (),
            seed,
            trust_checkpoint,
            flip,
            precision=resolved_precision,
        )
    except (CheckpointError, ConfigError):
        raise
    except ValueError as exc:  # contradictory or missing model options
        raise click.UsageError(str(exc)) from None
    if preprocess != "cpu":  # part of what decides the outputs: a resume with the other path is refused
        for spec in specs:
            spec.preprocessing = {**spec.preprocessing, "decode_align": preprocess}
    tables = read_dataset(manifest, root)
    if limit is not None:
        tables = tables.head(limit)
    out_path = Path(out or f"{manifest.name}.zarr")
    if repair:
        store, only = _prepare_repair(out_path, tables, specs)
        if only is None:
            return
    else:
        only = None
        store = create_store(
            out_path,
            tables,
            specs,
            manifest_digest=manifest_digest(manifest),
            chunk_rows=chunk_rows,
            overwrite=overwrite and i == 0,
            exist_ok=True,
            extra_attrs={"data_root": str(root), "manifest": manifest.name},
        )
    # closed on every path: an HDF5 file left open after an error can crash the interpreter at exit
    click.get_current_context().call_on_close(store.close_quietly)
    click.echo(
        f"store {out_path}: {store.n_images:,} images in {store.n_chunks} chunks; models "
        + ", ".join(f"{m.name} ({m.model.family})" for m in models),
        err=True,
    )
    summary = run_extraction(
        store,
        str(root),
        models,
        device=str(dev),
        precision=resolved_precision,
        batch_size=batch_size,
        workers=workers,
        shard=(i, n),
        strict=strict,
        progress=not quiet,
        only_chunks=only,
        preprocess=preprocess,
    )
    click.echo(summary.format(), err=True)
    if bottleneck:
        _bottleneck(store, root, models, per_identity, bottleneck_model, dev, resolved_precision, batch_size, quiet)
    if only is not None:
        from featurestore.integrity import verify

        left = verify(store)
        if left:
            raise StoreError(f"{out_path}: still damaged after the repair: {left[0].format()}")
        click.echo(f"repair: {out_path} verifies clean", err=True)
    click.echo(f"next: analyze info --cache {out_path}", err=True)


def _bottleneck(store, root, models, per_identity, name, dev, precision, batch_size, quiet) -> None:
    """`--bottleneck`: the chosen model's bottleneck for the covered rows, written after the run."""
    from extract.bottleneck import extract_bottleneck, pick_model

    try:
        model = pick_model(models, name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--bottleneck-model") from None
    n = extract_bottleneck(store, str(root), model, per_identity=per_identity, device=str(dev),
                           precision=precision, batch_size=batch_size, progress=not quiet)  # fmt: skip
    what = f"{n:,} rows written" if n else "already stored for these rows"
    click.echo(f"bottleneck ({model.name}): {what}", err=True)


def _verify(path: Path) -> None:
    """`--verify`: list the damaged storage objects of the store at `path`; exit 1 if any."""
    import sys

    from featurestore.integrity import format_report, verify
    from featurestore.store import FeatureStore

    with FeatureStore.open(path, check=False) as store:
        damages = verify(store)
        click.echo(format_report(store, damages))
    if damages:
        sys.exit(1)


def _prepare_repair(path: Path, tables, specs):
    """`--repair`: rewrite damaged creation-time chunks from the dataset and mark damaged done chunks not done.

    Returns the open store and the chunks to redo, or (None, None) when nothing is damaged.
    """
    from featurestore.integrity import damaged_chunks, format_report, verify
    from featurestore.store import FeatureStore

    store = FeatureStore.open(path, "r+", check=False)
    try:
        store.check_compatible(tables.images, specs)
        damages = verify(store)
        if not damages:
            click.echo(f"repair: {path} has no damage; nothing to do", err=True)
            store.close()
            return None, None
        click.echo(format_report(store, damages), err=True)
        if any(d.creation for d in damages):
            with store.writer() as w:
                for what in w.rewrite_creation(tables, damages):
                    click.echo(f"repair: rewrote {what} from the dataset", err=True)
        chunks = damaged_chunks(store, damages)
        if chunks:
            with store.writer(chunks) as w:
                w.mark_not_done(chunks)
            click.echo(f"repair: redoing chunks {', '.join(map(str, chunks))}", err=True)
        return store, chunks
    except BaseException:
        store.close()
        raise


def main() -> None:
    """Console entry point: data, checkpoint and store errors become one-line messages and exit status 2."""
    from extract.checkpoints import CheckpointError
    from extract.models import ConfigError
    from extract.runner import ExtractionError

    run_cli(cli, (DataError, StoreError, CheckpointError, ConfigError, ExtractionError), "extract")
