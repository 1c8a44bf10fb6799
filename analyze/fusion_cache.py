"""Fused templates kept on disk beside the store, so reject, fusion, roc, identify and scores fuse each
(model, fusion) once per store contents instead of once per command (issue 10, item 2).

Where: `<store>.cache/fused/` next to the store (`SCALEFACE_FUSION_CACHE=DIR` puts it elsewhere, `=off` turns it
off). One `.npz` per fusion, named by the sha256 of everything the fusion depends on (`analyze.loading._fused_key`:
the store's content digest, model, fusion, the images fused, the options, the block split), so a changed store or
option never meets an old file. Each file records a crc32 of every array; a file that does not match is ignored
and written again. Files are written to a temporary name and renamed, so a reader never sees half a file. Only
files this module wrote (`fused-*.npz` in a folder holding its marker) are ever replaced or pruned; the folder is
kept within FUSION_CACHE_BYTES, oldest first.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import importlib
import json
import os
import sys
import time
import zlib
from pathlib import Path

import numpy as np

from analyze.fusion import FusedTemplates

FUSION_CACHE_ENV = "SCALEFACE_FUSION_CACHE"
FUSION_CACHE_BYTES = 4 << 30
"""At most this many bytes of cached fusions per folder (IJB-C: ~95 MB per mean of 512-d embeddings, ~190 MB per
PFE fusion); the least recently used files go first."""
MARKER = "scaleface-fusion-cache"
"""The file that marks a folder as this module's: nothing is written into or pruned from a folder without it,
unless the folder is new."""
_ARRAYS = ("ids", "features", "uncertainty", "sizes")


def cache_dir(store_path: str | Path) -> Path | None:
    """The cache folder of a store: $SCALEFACE_FUSION_CACHE (None when it is 'off', '0' or 'no'), else
    `<store>.cache/fused` beside it."""
    env = os.environ.get(FUSION_CACHE_ENV, "").strip()
    if env.lower() in ("off", "0", "no", "false"):
        return None
    if env:
        return Path(env)
    p = Path(store_path).resolve()
    return p.with_name(p.name + ".cache") / "fused"


FUSION_CODE = ("analyze.fusion", "analyze.kernels", "analyze.loading", "analyze.policy", "analyze.rows")
"""The modules whose source makes a fusion: a toolkit whose fusion code differs never reads another's files."""


@functools.cache
def code_digest() -> str:
    """sha256 of the FUSION_CODE modules' source files."""
    h = hashlib.sha256()
    for name in FUSION_CODE:
        h.update(Path(importlib.import_module(name).__file__ or name).read_bytes())
    return h.hexdigest()


def _key_text(key: tuple) -> list[str]:
    return [code_digest(), *(str(k) for k in key)]


def key_name(key: tuple) -> str:
    """The file name of a fusion key (`analyze.loading._fused_key` without the store's path) and this code."""
    return "fused-" + hashlib.sha256(json.dumps(_key_text(key)).encode()).hexdigest()[:32] + ".npz"


def _crc(a: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(a).view(np.uint8).reshape(-1)) & 0xFFFFFFFF


def load(folder: Path | None, key: tuple) -> FusedTemplates | None:
    """The cached fusion of `key`, checked against its recorded crc32s; None when absent, unreadable or damaged."""
    if folder is None:
        return None
    path = folder / key_name(key)
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("key") != _key_text(key):
                return None
            arrays = {name: (z[name] if name in z.files else None) for name in _ARRAYS}
    except Exception:  # noqa: BLE001 - missing, unreadable, BadZipFile, bad CRC: recomputed, never trusted
        return None
    for name, a in arrays.items():
        if (a is None) != (meta["crc32"].get(name) is None) or (a is not None and _crc(a) != meta["crc32"][name]):
            return None
    try:
        os.utime(path)  # recently used: pruned last
    except OSError:
        pass
    return FusedTemplates(**arrays)


def save(folder: Path | None, key: tuple, fused: FusedTemplates) -> Path | None:
    """Write `fused` under `key` (atomic rename) and prune the folder to FUSION_CACHE_BYTES; returns the file, or
    None when there is no cache or it cannot be written (a note on stderr: the analysis itself goes on)."""
    if folder is None:
        return None
    try:
        new = not folder.exists()
        folder.mkdir(parents=True, exist_ok=True)
        marker = folder / MARKER
        if new:
            marker.write_text("fused templates written by scaleface-toolkit's analyze (analyze/fusion_cache.py)\n")
        elif not marker.is_file():
            print(f"note: fusion cache not written: {folder} exists and is not a fusion cache", file=sys.stderr)
            return None
        arrays = {name: getattr(fused, name) for name in _ARRAYS if getattr(fused, name) is not None}
        meta = {"key": _key_text(key), "crc32": {n: _crc(arrays[n]) if n in arrays else None for n in _ARRAYS}}
        path = folder / key_name(key)
        tmp = folder / f".{path.stem}.{os.getpid()}.tmp.npz"
        try:
            with open(tmp, "wb") as f:
                np.savez(f, meta=np.array(json.dumps(meta)), **arrays)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)  # our own half-written file
            raise
        prune(folder)
        return path
    except OSError as exc:
        print(f"note: fusion cache not written ({folder}: {exc.strerror or exc})", file=sys.stderr)
        return None


_WRITER: list = []  # the one background writer (a ThreadPoolExecutor), made on first use
_PENDING: list = []


def save_later(folder: Path | None, key: tuple, fused: FusedTemplates) -> None:
    """`save` on a background thread, so writing ~100-200 MB per fusion overlaps the analysis that goes on with
    it (the arrays are read-only by then); `wait_for_writes` (also run at exit) waits for every pending write."""
    if folder is None:
        return
    if not _WRITER:
        from concurrent.futures import ThreadPoolExecutor

        _WRITER.append(ThreadPoolExecutor(max_workers=1, thread_name_prefix="fusion-cache"))
        atexit.register(wait_for_writes)
    _PENDING.append(_WRITER[0].submit(save, folder, key, fused))


def wait_for_writes() -> None:
    """Wait until every `save_later` write has finished; one that failed unexpectedly costs a note, not the run."""
    while _PENDING:
        try:
            _PENDING.pop(0).result()
        except Exception as exc:  # noqa: BLE001 - a cache write never fails the analysis that made the fusion
            print(f"note: fusion cache not written ({type(exc).__name__}: {exc})", file=sys.stderr)


def prune(folder: Path, limit: int = FUSION_CACHE_BYTES) -> None:
    """Delete this module's oldest files (by last use) until the folder's fusions fit in `limit` bytes, and the
    temporary files of writes that did not finish (older than an hour); nothing in a folder without the marker."""
    if not (folder / MARKER).is_file():
        return
    for tmp in folder.glob(".fused-*.tmp.npz"):
        try:
            if time.time() - tmp.stat().st_mtime > 3600:
                tmp.unlink(missing_ok=True)
        except OSError:
            pass
    files = []
    for p in folder.glob("fused-*.npz"):
        try:
            st = p.stat()
        except OSError:  # pruned or replaced by another process meanwhile
            continue
        files.append((st.st_mtime, st.st_size, p))
    total = sum(size for _, size, _ in files)
    for _, size, p in sorted(files):
        if total <= limit:
            break
        p.unlink(missing_ok=True)
        total -= size
