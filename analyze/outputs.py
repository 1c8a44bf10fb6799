"""Where `analyze` writes: an output folder (never silently overwritten), tidy tables as Parquet and
CSV, a JSON summary, and the Dask scheduler the run uses."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


class OutputExistsError(Exception):
    """The output folder already holds results and --force was not given."""


def default_out_dir(store_path: str | Path, command: str) -> Path:
    """Beside the store: ijbc.zarr -> ijbc.analysis/<command>/."""
    p = Path(store_path)
    return p.parent / f"{p.stem}.analysis" / command


def prepare_out_dir(path: str | Path, force: bool) -> Path:
    """Create `path`; refuse a non-empty one unless `force`, which empties it first."""
    out = Path(path)
    if out.exists() and any(out.iterdir()):
        if not force:
            raise OutputExistsError(
                f"output folder {out} already holds results; pass --force to replace them, or choose another --out"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_table(df: pd.DataFrame, out: Path, name: str) -> list[Path]:
    """`name`.parquet and `name`.csv in `out`."""
    paths = [out / f"{name}.parquet", out / f"{name}.csv"]
    df.to_parquet(paths[0], index=False)
    df.to_csv(paths[1], index=False)
    return paths


def _jsonable(obj: Any) -> Any:
    if is_dataclass(obj):
        return _jsonable(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def write_json(obj: Any, path: Path) -> Path:
    """Pretty JSON (dataclasses and numpy scalars converted, NaN as null)."""
    path.write_text(json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n")
    return path


def auc_table_text(auc_df: pd.DataFrame) -> str:
    """AUCs as a method x FAR table for the terminal."""
    if auc_df.empty:
        return "(no AUC rows)"
    df = auc_df.copy()
    df["method"] = (
        df["model"]
        + " "
        + df["fusion"].where(df["fusion"] != "none", "")
        + " "
        + df["distance"]
        + "_"
        + df["uncertainty"]
    )
    df["method"] = df["method"].str.replace("  ", " ")
    table = df.pivot_table(index="method", columns="far", values="auc", sort=False)
    table.columns = [f"FAR={c:g}" for c in table.columns]
    return table.to_string(float_format=lambda v: f"{v:.4f}")


@contextmanager
def dask_scheduler(scheduler: str | None, cluster: str | None) -> Iterator[str]:
    """Local threads by default; `scheduler` connects a dask.distributed client to that address;
    `cluster` 'local:N' starts a LocalCluster of N worker processes for the run."""
    if scheduler and cluster:
        raise ValueError("give either --scheduler or --cluster, not both")
    if not scheduler and not cluster:
        yield "threads (local)"
        return
    from distributed import Client, LocalCluster

    if cluster:
        kind, _, n = cluster.partition(":")
        if kind != "local" or not n.isdigit() or int(n) < 1:
            raise ValueError(f"--cluster {cluster!r}: expected local:N with N >= 1")
        with LocalCluster(n_workers=int(n), threads_per_worker=1, processes=True, dashboard_address=None) as lc:
            with Client(lc) as client:
                yield f"LocalCluster with {n} workers ({client.scheduler.address})"
        return
    with Client(scheduler) as client:
        yield f"dask.distributed at {scheduler} ({len(client.scheduler_info()['workers'])} workers)"
