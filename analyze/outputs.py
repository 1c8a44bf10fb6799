"""Where `analyze` and `pipelines` write: output folders the tool owns (an ownership record lists what it
wrote, so --force deletes only that), tidy tables as Parquet and CSV, a JSON summary, and the Dask
scheduler the run uses."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analyze.tables import far_pivot, method_labels
from featurestore.interrupts import Interrupted

OWNER_FILE = ".scaleface-output.json"
"""The ownership record of an output folder: tool, command, created, complete, files (relative path -> size)."""

TOOL = "scaleface-toolkit"
OWNER_FORMAT = 1
_SHOW = 3  # foreign entries named in a refusal


class OutputExistsError(Exception):
    """The output folder cannot be (re)used: it holds results without --force, or holds, is or contains
    something this tool did not write (user files, the input store, the current folder)."""


def default_out_dir(store_path: str | Path, command: str) -> Path:
    """Beside the store: ijbc.zarr -> ijbc.analysis/<command>/."""
    p = Path(store_path)
    return p.parent / f"{p.stem}.analysis" / command


def read_owner(folder: Path) -> dict[str, Any] | None:
    """The folder's ownership record, or None when absent, unreadable or not this tool's."""
    try:
        rec = json.loads((folder / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or rec.get("tool") != TOOL or not isinstance(rec.get("files"), dict):
        return None
    return rec


def _entries(folder: Path) -> list[Path]:
    """Every file and folder under `folder` (recursively), sorted, the ownership record left out."""
    return sorted(p for p in folder.rglob("*") if p.relative_to(folder).as_posix() != OWNER_FILE)


def _is_within(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def _foreign(folder: Path, listed: set[str]) -> list[str]:
    """Entries of `folder` the record does not account for: unlisted files, links, other special files,
    and empty folders that are no listed file's parent (a folder with contents is judged by them)."""
    owned_dirs = {d.as_posix() for f in listed for d in Path(f).parents}
    out = []
    for p in _entries(folder):
        rel = p.relative_to(folder).as_posix()
        if p.is_symlink() or not (p.is_file() or p.is_dir()):
            out.append(rel)
        elif p.is_file() and rel not in listed:
            out.append(rel)
        elif p.is_dir() and rel not in owned_dirs and not any(p.iterdir()):
            out.append(rel + "/")
    return out


def check_out_dir(
    path: str | Path,
    force: bool,
    inputs: Iterable[str | Path] = (),
    also_owned: Iterable[str] = (),
    option: str = "--out",
) -> Path:
    """Refuse an output folder the tool may not (re)use, deleting nothing; return it.

    Always refused: the input store itself or a folder inside it, a folder containing an input store, a
    path that is a file. Without `force`: a non-empty folder (one holding only an ownership record with no
    files, left by a run that failed before writing, counts as empty). With `force`: the current folder,
    and a folder holding anything its record (plus `also_owned` names) does not list; without a record, only
    a folder whose every entry `also_owned` names (a pipeline step folder from before records) is accepted.
    """
    also_owned = tuple(also_owned)
    out = Path(path)
    res = out.resolve()
    for inp in inputs:
        store = Path(inp).resolve()
        if _is_within(res, store):
            what = "is the input store" if res == store else "is inside the input store"
            raise OutputExistsError(f"{option} {out} {what} {inp}; choose a folder outside it")
        if _is_within(store, res):
            raise OutputExistsError(
                f"{option} {out} contains the input store {inp}; choose a folder that does not hold it"
            )
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{option} {out} exists and is not a folder")
    if not out.is_dir():
        return out
    entries = _entries(out)
    record = read_owner(out)
    if not entries and (record is not None or not (out / OWNER_FILE).exists()):
        return out  # empty, or only our record of a run that wrote nothing
    if not force:
        raise OutputExistsError(
            f"output folder {out} is not empty: it already holds results; pass --force to replace them, "
            f"or choose another {option}"
        )
    if _is_within(Path.cwd().resolve(), res):
        what = "is the current folder" if res == Path.cwd().resolve() else "contains the current folder"
        raise OutputExistsError(f"{option} {out} {what}; --force never empties it, choose a new subfolder")
    if record is None and (not also_owned or _foreign(out, set(also_owned))):
        names = [p.relative_to(out).as_posix() for p in entries if p.parent == out] or [OWNER_FILE]
        raise OutputExistsError(
            f"{option} {out} was not written by this tool (no {OWNER_FILE}); it replaces only folders it "
            f"wrote, and this one holds {_names(names)}; choose another folder or empty it yourself"
        )
    foreign = _foreign(out, set((record or {"files": {}})["files"]) | set(also_owned))
    if foreign:
        raise OutputExistsError(
            f"{option} {out} holds files this tool did not write: {_names(foreign)}; it deletes only "
            f"what {OWNER_FILE} lists: move them away or choose another folder"
        )
    return out


def _names(names: list[str]) -> str:
    more = f" and {len(names) - _SHOW} more" if len(names) > _SHOW else ""
    return ", ".join(names[:_SHOW]) + more


def clear_owned(folder: Path, also_owned: Iterable[str] = ()) -> None:
    """Delete the files `folder`'s record (plus `also_owned`) lists, then the subfolders that leaves empty,
    then the record; call only after check_out_dir accepted the folder."""
    record = read_owner(folder) or {"files": {}}
    names = set(record["files"]) | set(also_owned)
    dirs: set[Path] = set()
    for name in names:
        if Path(name).is_absolute() or ".." in Path(name).parts:
            continue  # never outside the folder, whatever the record says
        p = folder / name
        if _is_within(p.resolve(), folder.resolve()) and (p.is_file() or p.is_symlink()):
            p.unlink()
        dirs |= {d for d in (folder / name).parents if _is_within(d, folder) and d != folder}
    for d in sorted(dirs, key=lambda d: len(d.parts), reverse=True):
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()
    (folder / OWNER_FILE).unlink(missing_ok=True)


class OwnedOutput:
    """An output folder this tool writes: the record says complete: false from before the first result
    file until `finish` rewrites it with complete: true and every file written, with its size."""

    def __init__(self, path: Path, command: str) -> None:
        self.path, self.command = path, command
        self.created = datetime.now(UTC).isoformat(timespec="seconds")
        self.files: dict[str, int] = {}
        self.complete = False

    def _write(self) -> None:
        rec = {
            "tool": TOOL,
            "format": OWNER_FORMAT,
            "command": self.command,
            "created": self.created,
            "complete": self.complete,
            "files": dict(sorted(self.files.items())),
        }
        tmp = self.path / f"{OWNER_FILE}.tmp"
        tmp.write_text(json.dumps(rec, indent=2) + "\n")
        os.replace(tmp, self.path / OWNER_FILE)

    def add(self, *paths: Path) -> None:
        """Record files (a folder: every file under it) as written by this command."""
        for p in paths:
            p = Path(p)
            for f in [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file()):
                self.files[f.relative_to(self.path).as_posix()] = f.stat().st_size
        self._write()

    def sweep(self) -> None:
        """Record every file now in the folder: it was empty (or held only our own files, deleted) when
        this command took it, so all of it was written by this command."""
        self.add(*[p for p in _entries(self.path) if p.is_file() and p.name != f"{OWNER_FILE}.tmp"])

    def finish(self) -> None:
        """complete: true, with every file written and its size (rewritten last)."""
        self.complete = True
        self.sweep()

    def __enter__(self) -> OwnedOutput:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            if not self.complete:
                self.finish()
            return
        try:
            self.sweep()  # still complete: false; a rerun with --force replaces it
        except OSError:
            pass  # the folder itself went away: nothing to record, and the original error matters more
        if isinstance(exc, Interrupted):
            exc.with_message(
                f"{self.command} stopped before finishing; {self.path} is marked incomplete "
                "(complete: false in its .scaleface-output.json); rerun the same command with --force to replace it"
            )


def claim_out_dir(
    path: str | Path,
    force: bool,
    command: str,
    inputs: Iterable[str | Path] = (),
    also_owned: Iterable[str] = (),
    option: str = "--out",
) -> OwnedOutput:
    """check_out_dir, then empty the folder of this tool's own files (if any), create it and write its
    record with complete: false; use the result as a context manager around writing the outputs."""
    out = check_out_dir(path, force, inputs, also_owned, option)
    if out.is_dir():
        clear_owned(out, also_owned)
    out.mkdir(parents=True, exist_ok=True)
    owned = OwnedOutput(out, command)
    owned._write()
    return owned


def resume_hint(command: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a command so an interrupt before it claimed its folder says that nothing was written (a
    claimed folder's own message, set first, says it is marked incomplete)."""

    def wrap(f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return f(*args, **kwargs)
            except Interrupted as exc:
                raise exc.with_message(
                    f"{command} stopped before writing any output (nothing was changed); rerun the same command"
                ) from None

        return run

    return wrap


def prepare_out_dir(path: str | Path, force: bool, command: str = "analyze", inputs: Iterable[str | Path] = ()) -> Path:
    """claim_out_dir for callers that only need the folder (its record stays complete: false)."""
    return claim_out_dir(path, force, command, inputs).path


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


def command_line() -> str:
    """The command line that is running, as a user would type it (`analyze reject --cache x.zarr`): the click
    root command's name and the arguments; outside a click command, the interpreter's argv."""
    import shlex
    import sys

    import click

    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        return shlex.join([ctx.find_root().info_name or "", *sys.argv[1:]])
    return shlex.join(sys.argv)


def toolkit_version() -> str:
    """The installed scaleface-toolkit version ('unknown' when it is run from a tree that is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("scaleface-toolkit")
    except PackageNotFoundError:
        return "unknown"


def store_digest(store: Any) -> str:
    """sha256 identifying a store's contents without reading its arrays: the image rows' digest, the manifest
    digest, each model's recorded fingerprint, the done marks and the recorded per-chunk checksums (which
    cover every output's bytes); two stores with the same digest hold the same values."""
    import hashlib

    from featurestore.integrity import CHECKSUM_KEY, has_checksums

    read_only = getattr(getattr(store, "_b", None), "mode", None) == "r"
    if read_only and getattr(store, "_content_digest", None):  # once per read-only handle (identify asks 3 times)
        return store._content_digest

    h = hashlib.sha256()
    a = store.attrs
    meta = {
        "images_digest": a.get("images_digest"),
        "manifest_digest": a.get("manifest_digest"),
        "schema": a.get("schema"),
        "models": {name: spec.recorded_fingerprint for name, spec in store.models.items()},
    }
    h.update(json.dumps(_jsonable(meta), sort_keys=True).encode())
    h.update(np.ascontiguousarray(store.chunk_done(), dtype=np.uint8).tobytes())
    if has_checksums(store):  # the recorded checksums, not recomputed (a store from before them: the rest only)
        h.update(np.ascontiguousarray(store._b.read_whole(CHECKSUM_KEY), dtype=np.uint32).tobytes())
    if read_only:
        store._content_digest = h.hexdigest()
    return h.hexdigest()


def provenance(store: Any) -> dict[str, Any]:
    """What summary.json records of how a result was made: command line, toolkit version, store and its digest."""
    return {
        "command_line": command_line(),
        "toolkit_version": toolkit_version(),
        "store": str(store.path),
        "store_digest": store_digest(store),
    }


def write_json(obj: Any, path: Path) -> Path:
    """Pretty JSON (dataclasses and numpy scalars converted, NaN as null)."""
    path.write_text(json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n")
    return path


def auc_table_text(auc_df: pd.DataFrame) -> str:
    """AUCs as a method x FAR table for the terminal."""
    if auc_df.empty:
        return "(no AUC rows)"
    table = far_pivot(auc_df.assign(method=method_labels(auc_df, "terminal")), "method", "auc")
    return table.to_string(float_format=lambda v: f"{v:.4f}")


def progress(items: Iterable[Any], desc: str, unit: str = "it") -> Iterable[Any]:
    """`items` with a tqdm bar on stderr while a long analysis step runs: shown only when stderr is a terminal
    (never in logs, pipes or tests), so the tables and notes a command prints stay the same."""
    import sys

    if not sys.stderr.isatty():
        return items
    from tqdm import tqdm

    items = list(items)
    return tqdm(items, desc=desc, unit=unit, file=sys.stderr, leave=False, disable=len(items) < 2)


def _dashboard_address() -> str | None:
    """':0' (a free port) when bokeh is installed, so a LocalCluster serves its dashboard; else None."""
    import importlib.util

    return ":0" if importlib.util.find_spec("bokeh") is not None else None


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
        address = _dashboard_address()
        with LocalCluster(n_workers=int(n), threads_per_worker=1, processes=True, dashboard_address=address) as lc:
            with Client(lc) as client:
                _say_dashboard(client if address else None)
                yield f"LocalCluster with {n} workers ({client.scheduler.address})"
        return
    with Client(scheduler) as client:
        _say_dashboard(client)
        yield f"dask.distributed at {scheduler} ({len(client.scheduler_info()['workers'])} workers)"


def _say_dashboard(client: Any) -> None:
    """The dask dashboard's link on stderr (or why there is none), for watching a --cluster/--scheduler run."""
    import sys

    link = getattr(client, "dashboard_link", None) if client is not None else None
    if link:
        print(f"dask dashboard: {link}", file=sys.stderr, flush=True)
    else:
        print("dask dashboard: not served (install bokeh>=3.1 for it)", file=sys.stderr, flush=True)
