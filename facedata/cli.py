"""`datasets`: list and check dataset manifests, and generate the built-in synthetic benchmark."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from facedata.errors import DataError
from facedata.synthetic.presets import DATASET_PRESETS, STORE_PRESETS
from featurestore.cli_main import run_cli
from featurestore.errors import StoreError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def cli() -> None:
    """Dataset tooling: manifests, layout checks, the synthetic IJB-C-layout benchmark.

    \b
    Examples:
      datasets list
      datasets check --dataset ijbc --data-root /data/IJB_release/IJBC
      datasets synthesize ./synth --preset small --seed 0
      datasets synthesize-store ijbc-synthetic.zarr --preset ijbc
    """


@cli.command("list")
def list_cmd() -> None:
    """List the built-in dataset manifests (data_manifests/*.yaml) with their layout."""
    from facedata.manifest import list_manifests, load_manifest

    for name in list_manifests():
        m = load_manifest(name)
        click.echo(f"{name:<12} {m.layout:<16} {'aligned' if m.aligned else 'needs alignment':<16} {m.description}")


@cli.command()
@click.option(
    "--dataset",
    required=True,
    help="Built-in manifest name (see `datasets list`) or path to a manifest YAML: an argument is a path only "
    "when it ends in .yaml/.yml or contains '/', so a folder named like a built-in never shadows it.",
)
@click.option(
    "--data-root",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder the manifest's paths are relative to (default: $SCALEFACE_DATA_ROOT_<NAME> or $SCALEFACE_DATA_ROOT).",
)
@click.option(
    "--max-list",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="How many missing (or outside-the-root) files to name.",
)
def check(dataset: str, data_root: str | None, max_list: int) -> None:
    """Validate a dataset's layout: counts, missing image files, malformed lines (file:line), official counts.

    Also reports image files (or packs) that resolve outside the data root through symlinks (extract
    refuses them), protocols with 0 pairs and a dataset of 0 images. Exits with status 1 when anything is wrong.

    \b
    Example:
      datasets check --dataset ijbc --data-root /data/IJB_release/IJBC
    """
    from facedata.check import check_dataset
    from facedata.manifest import load_manifest, resolve_data_root

    manifest = load_manifest(dataset)
    report = check_dataset(manifest, resolve_data_root(manifest, data_root), max_list=max_list)
    click.echo(report.format())
    if not report.ok:
        sys.exit(1)


@cli.command()
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--preset", type=click.Choice(list(DATASET_PRESETS)), default="tiny", show_default=True)
@click.option(
    "--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Same seed, byte-identical files."
)
def synthesize(out_dir: str, preset: str, seed: int) -> None:
    """Write a synthetic dataset in the insightface IJB-C layout into OUT_DIR.

    Face-like images per identity as loose crops with true 5-point landmarks and detector scores,
    templates of several medias, labelled template pairs, and controlled degradations (blur, noise,
    low resolution, occlusion) whose true strength is in meta/ijbc_degradations.csv. OUT_DIR must be
    new, empty or an earlier synthesize output: files this command did not write are never overwritten.

    \b
    Example:
      datasets synthesize ./synth --preset small && datasets check --dataset ijbc --data-root ./synth
    """
    from facedata.synthetic import synthesize_dataset

    summary = synthesize_dataset(Path(out_dir), preset=preset, seed=seed)
    click.echo(summary.format())


@cli.command("synthesize-store")
@click.argument("out", type=click.Path(), required=False)
@click.option("--cache", "cache", type=click.Path(), default=None, help="The store to write (the same as OUT).")
@click.option("--preset", type=click.Choice(list(STORE_PRESETS)), default="ijbc", show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Same seed, same store.")
def synthesize_store_cmd(out: str | None, cache: str | None, preset: str, seed: int) -> None:
    """Write a feature store without images (OUT.zarr or OUT.h5), for analysis benchmarks.

    `--preset ijbc` has IJB-C's official counts: 469,375 images, 23,124 templates, 15,658,489 template
    pairs (19,557 genuine), with ScaleFace, PFE and MagFace outputs whose quality drives their error.
    Only a store this command wrote is replaced; anything else at OUT is refused.

    \b
    Example:
      datasets synthesize-store ijbc-synthetic.zarr --preset ijbc && analyze info --cache ijbc-synthetic.zarr
    """
    from facedata.synthetic import synthesize_store

    if (out is None) == (cache is None):
        raise click.UsageError("give the store once: OUT or --cache (the name every analyze command uses)")
    out = out or cache
    path = synthesize_store(Path(out), preset=preset, seed=seed)
    click.echo(f"wrote {path}")


@cli.command("import")
@click.option(
    "--dataset",
    required=True,
    help="Built-in manifest name (see `datasets list`), path to a manifest YAML, or an existing store (STORE.zarr, "
    "STORE.h5): its images table and protocols are the new store's.",
)
@click.option(
    "--data-root",
    "--root",
    "data_root",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder the manifest's paths are relative to (default: $SCALEFACE_DATA_ROOT_<NAME> or $SCALEFACE_DATA_ROOT).",
)
@click.option("--out", required=True, type=click.Path(), help="The store to write (NAME.zarr, NAME.h5); must be new.")
@click.option(
    "--embeddings",
    required=True,
    help="FILE[#ARRAY]: embeddings (N, D) in .npz/.h5 (a `paths` array), .parquet/.csv (a `path` column; one "
    "list column or one column per dimension), .txt (`path v1 v2 ...` lines), .npy (with --order dataset), "
    "or a feature store's model: STORE#MODEL.",
)
@click.option("--flipped", default=None, help="FILE[#ARRAY]: embeddings of the mirrored images, same forms.")
@click.option(
    "--quality",
    "qualities",
    multiple=True,
    metavar="NAME=FILE[#COL]:confidence|uncertainty",
    help="A per-image score and what it means (confidence: higher = better; uncertainty: higher = worse); "
    "repeatable, one store model per quality, named NAME. FILE#COL picks a column/array (default: NAME, "
    "or the only one); a store's output is STORE#MODEL/OUTPUT (e.g. ijbc.zarr#scaleface/scale).",
)
@click.option(
    "--key", default=None, help="The path column/array of every file (default: path, paths, Filename or filename)."
)
@click.option(
    "--order",
    type=click.Choice(["path", "dataset"]),
    default="path",
    show_default=True,
    help="Match rows by path, or take the files' row order as the dataset's (needed for .npy files).",
)
@click.option("--model", default=None, help="Model name (no --quality; default `external`) or prefix (MODEL-NAME).")
@click.option("--chunk-rows", type=click.IntRange(min=1), default=2048, show_default=True, help="Images per chunk.")
@click.option("--overwrite", is_flag=True, help="Replace OUT, only if `datasets import` made it.")
def import_cmd(
    dataset: str,
    data_root: str | None,
    out: str,
    embeddings: str,
    flipped: str | None,
    qualities: tuple[str, ...],
    key: str | None,
    order: str,
    model: str | None,
    chunk_rows: int,
    overwrite: bool,
) -> None:
    """Build a store from a dataset's images and the features and quality scores you already have.

    Rows are matched by image path (as in the dataset's images table, relative to its root); the report
    names unmatched rows both ways. Dataset images without features get status "missing"; images a
    quality file lacks are left out of that model's analyses. The store is verified like extract's.

    \b
    Example:
      datasets import --dataset ijbc.zarr --out quality.zarr --embeddings 'ijbc.zarr#scaleface' \\
        --quality 'scaleface=ijbc.zarr#scaleface/scale:confidence' \\
        --quality 'ofiq=ofiq.csv#UnifiedQualityScore:confidence' --quality crfiqa=crfiqa.txt:confidence \\
        && analyze reject --cache quality.zarr

    See docs/import.md (formats, OFIQ and CR-FIQA against ScaleFace end to end).
    """
    from facedata.importing import import_store, parse_quality, store_tables
    from facedata.manifest import load_manifest, manifest_digest, resolve_data_root
    from facedata.readers import read_dataset

    parsed = []
    for text in qualities:
        try:
            parsed.append(parse_quality(text))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--quality") from None
    if len({q.name for q in parsed}) != len(parsed):
        raise click.BadParameter("each NAME may be given once", param_hint="--quality")
    if Path(dataset).suffix in (".zarr", ".h5", ".hdf5") and Path(dataset).exists():  # the images of a store
        tables, digest, extra = store_tables(dataset)
        root = data_root or extra.get("data_root")
    else:
        manifest = load_manifest(dataset)
        root = resolve_data_root(manifest, data_root)
        tables, digest = read_dataset(manifest, root), manifest_digest(manifest)
        extra = {"data_root": str(root), "manifest": manifest.name}
    report = import_store(
        tables,
        out,
        embeddings,
        flipped=flipped,
        qualities=parsed,
        key=key,
        order=order,
        model=model,
        manifest_digest=digest,
        chunk_rows=chunk_rows,
        overwrite=overwrite,
        extra_attrs=extra,
        data_root=root,
    )
    click.echo(report.format())


def main() -> None:
    """Console entry point: data and store errors become one-line messages and exit status 2."""
    run_cli(cli, (DataError, StoreError), "datasets")
