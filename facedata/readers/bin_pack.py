"""insightface `.bin` validation packs (lfw.bin, cfp_fp.bin, agedb_30.bin, ...): a pickle of
(list of encoded images, issame list) where pair k is images 2k and 2k+1. Rows are `<pack>#<index>`.
"""

from __future__ import annotations

import os
import pickle
import struct
from collections import OrderedDict
from pathlib import Path
from typing import BinaryIO

import numpy as np

from facedata.errors import DataError
from facedata.manifest import Manifest
from facedata.paths import open_under
from facedata.readers._text import require_file
from facedata.readers.common import locate
from featurestore.schema import DatasetTables, ImageTable, Protocol

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("builtins", "bytearray"),
    ("__builtin__", "bytearray"),
    ("builtins", "bytes"),  # protocol <= 2 pickles write an empty bytes (an empty numpy buffer) as bytes()
    ("__builtin__", "bytes"),
    ("_codecs", "encode"),
}


class _PackUnpickler(pickle.Unpickler):
    """Unpickles only plain containers, bytes and numpy arrays: a pack cannot run code on load."""

    def find_class(self, module: str, name: str):  # type: ignore[override]
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"pack refers to {module}.{name}, which a .bin pack never needs")
        return super().find_class(module, name)


def load_pack(path: Path, display: str) -> tuple[list[bytes], np.ndarray]:
    """The encoded images and the per-pair genuine flags of one `.bin` pack, validated."""
    require_file(path, display)
    with open(path, "rb") as f:
        return parse_pack(f, display)


def parse_pack(f: BinaryIO, display: str) -> tuple[list[bytes], np.ndarray]:
    """`load_pack` on an open binary file: (images, issame); DataError naming `display` for anything else."""
    try:
        obj = _PackUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise DataError(f"not a readable insightface .bin pack: {exc}", path=display) from exc
    except (KeyError, OverflowError, MemoryError, RecursionError, struct.error, UnicodeDecodeError) as exc:
        raise DataError(f"not a readable insightface .bin pack: {type(exc).__name__}: {exc}", path=display) from exc
    if not isinstance(obj, tuple | list) or len(obj) != 2:
        raise DataError("a .bin pack must hold (images, issame_list)", path=display)
    bins, issame = obj
    if not isinstance(bins, list | tuple):
        raise DataError(f"images must be a list, got {type(bins).__name__}", path=display)
    try:
        issame_arr = np.asarray(issame)
        flat = issame_arr.ndim == 1 and issame_arr.dtype != object and bool(np.isin(issame_arr, (0, 1)).all())
    except (TypeError, ValueError):
        flat = False
    if not flat:
        raise DataError("issame_list must be a flat list of booleans", path=display)
    if len(bins) != 2 * len(issame_arr):
        raise DataError(f"{len(bins)} images for {len(issame_arr)} pairs (expected twice as many)", path=display)
    out = []
    for i, b in enumerate(bins):
        if isinstance(b, bytes | bytearray):
            out.append(bytes(b))
        elif isinstance(b, np.ndarray) and b.dtype == np.uint8:
            out.append(b.tobytes())
        else:
            raise DataError(f"image {i} is a {type(b).__name__}, expected encoded bytes", path=display)
    return out, issame_arr.astype(bool)


_PACK_CACHE: OrderedDict[tuple[int, int, int, int], list[bytes]] = OrderedDict()
_PACK_CACHE_SIZE = 4


def pack_image_bytes(root: str | Path, rel: str, index: int, display: str, source: str | None = None) -> bytes:
    """Encoded bytes of image `index` of pack `rel` under data root `root` (the pack is loaded once and
    cached by the opened file's identity; opened through `open_under`, so never outside the root)."""
    with open_under(root, rel, source=source, display=display) as f:
        st = os.fstat(f.fileno())
        key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        images = _PACK_CACHE.get(key)
        if images is None:
            images = parse_pack(f, display)[0]
            _PACK_CACHE[key] = images
            while len(_PACK_CACHE) > _PACK_CACHE_SIZE:
                _PACK_CACHE.popitem(last=False)
        else:
            _PACK_CACHE.move_to_end(key)
    if not 0 <= index < len(images):
        raise DataError(f"image index {index} out of range (pack holds {len(images)})", path=display)
    return images[index]


def read_bin(root: Path, manifest: Manifest) -> DatasetTables:
    """One protocol per pack (`protocols.<name>.pairs` names the .bin); images of all packs in
    protocol order, pairs (2k, 2k+1) offset to rows; subjects are unknown (-1)."""
    paths: list[np.ndarray] = []
    protocols: dict[str, Protocol] = {}
    offset = 0
    for name, spec in manifest.protocols.items():
        path, disp = locate(root, manifest, spec.pairs, f"protocols.{name}.pairs")
        bins, issame = load_pack(path, disp)
        n = len(bins)
        paths.append(np.asarray([f"{spec.pairs}#{i}" for i in range(n)], dtype=object))
        pairs = offset + np.arange(n, dtype=np.int64).reshape(-1, 2)
        protocols[name] = Protocol(name, pairs, issame, level="image", description=spec.description)
        offset += n
    all_paths = np.concatenate(paths) if paths else np.zeros(0, dtype=object)
    images = ImageTable(path=all_paths, subject=np.full(len(all_paths), -1, dtype=np.int64))
    return DatasetTables(name=manifest.name, images=images, protocols=protocols, extra={"aligned": manifest.aligned})
