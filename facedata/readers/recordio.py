"""MXNet RecordIO packs (insightface `train.rec` + `train.idx`) read without mxnet.

Record framing (dmlc-core recordio): uint32 magic 0xced7230a, uint32 lrecord whose top 3 bits are
cflag (0 whole, 1 first, 2 middle, 3 last part; parts are joined by the magic bytes) and low 29 bits
the part length; data padded to 4 bytes. Payload: IRHeader `<IfQQ` (flag, label, id, id2), then
`flag` float32 labels when flag > 0, then the encoded image. In insightface packs record 0's labels
(a, b) say images are records 1..a-1 and identity records a..b-1. Rows are `train.rec#<index>`.
"""

from __future__ import annotations

import os
import struct
from collections import OrderedDict
from pathlib import Path

import numpy as np

from facedata.errors import DataError
from facedata.manifest import Manifest
from facedata.paths import open_under
from facedata.readers._text import read_columns, require_file
from facedata.readers.common import line_finder, locate
from featurestore.schema import DatasetTables, ImageTable

MAGIC = 0xCED7230A
IR_FORMAT = "<IfQQ"
IR_SIZE = struct.calcsize(IR_FORMAT)
_LEN_MASK = (1 << 29) - 1


def read_record(f, display: str, offset: int) -> bytes:
    """The payload of the record starting at byte `offset` (multi-part records reassembled)."""
    f.seek(offset)
    parts: list[bytes] = []
    while True:
        head = f.read(8)
        if len(head) < 8:
            raise DataError(f"record at byte {offset}: file ends inside a record header", path=display)
        magic, lrec = struct.unpack("<II", head)
        if magic != MAGIC:
            raise DataError(f"record at byte {offset}: bad magic 0x{magic:08x} (expected 0x{MAGIC:08x})", path=display)
        cflag, length = lrec >> 29, lrec & _LEN_MASK
        data = f.read(length)
        if len(data) < length:
            raise DataError(f"record at byte {offset}: file ends inside the record data", path=display)
        f.seek((4 - length % 4) % 4, os.SEEK_CUR)
        if cflag == 0:
            if parts:
                raise DataError(f"record at byte {offset}: whole record inside a multi-part one", path=display)
            return data
        if cflag == 1 and parts:
            raise DataError(f"record at byte {offset}: new record starts inside a multi-part one", path=display)
        if cflag in (2, 3) and not parts:
            raise DataError(f"record at byte {offset}: continuation part without a first part", path=display)
        parts.append(data)
        if cflag == 3:
            return struct.pack("<I", MAGIC).join(parts)


def unpack_payload(payload: bytes, display: str, where: str) -> tuple[int, np.ndarray, int, int, bytes]:
    """(flag, labels, id, id2, image bytes) of a record payload; `labels` has max(flag, 1) values."""
    if len(payload) < IR_SIZE:
        raise DataError(f"{where}: {len(payload)} bytes, shorter than the {IR_SIZE}-byte IRHeader", path=display)
    flag, label, id1, id2 = struct.unpack_from(IR_FORMAT, payload, 0)
    body = payload[IR_SIZE:]
    if flag > 0:
        if len(body) < 4 * flag:
            raise DataError(f"{where}: header says {flag} labels but the record is too short", path=display)
        labels = np.frombuffer(body, dtype="<f4", count=flag).astype(np.float32)
        body = body[4 * flag :]
    else:
        labels = np.asarray([label], dtype=np.float32)
    return flag, labels, id1, id2, body


def read_idx(path: Path, display: str, data: bytes | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Record keys and byte offsets from a `.idx` file (`key<TAB>offset` per line), or from its bytes `data`."""
    df = read_columns(path, display, ("int", "int"), data=data)
    keys = df[0].to_numpy(dtype=np.int64)
    offsets = df[1].to_numpy(dtype=np.int64)
    if (offsets < 0).any():
        i = int(np.flatnonzero(offsets < 0)[0])
        raise DataError(f"negative offset {offsets[i]}", path=display, line=line_finder(path, data=data)(i))
    dup = np.flatnonzero(np.diff(np.sort(keys)) == 0)
    if len(dup):
        k = np.sort(keys)[dup[0]]
        i = int(np.flatnonzero(keys == k)[1])
        raise DataError(f"duplicate key {k}", path=display, line=line_finder(path, data=data)(i))
    return keys, offsets


def _header_labels(rec_path: Path, rec_disp: str, offsets: np.ndarray) -> np.ndarray:
    """First label of each record at `offsets`, read vectorised from a memory map (whole records),
    falling back to a full read for multi-part records."""
    size = os.path.getsize(rec_path)
    out = np.empty(len(offsets), dtype=np.float32)
    if len(offsets) == 0:
        return out
    beyond = offsets > size - (8 + IR_SIZE)  # not offsets + 8 + IR_SIZE > size, which overflows near 2**63
    if beyond.any():
        i = int(np.flatnonzero(beyond)[0])
        raise DataError(f"record at byte {offsets[i]}: beyond the end of the file ({size} bytes)", path=rec_disp)
    mm = np.memmap(rec_path, dtype=np.uint8, mode="r")

    def u32(pos: np.ndarray) -> np.ndarray:
        pos = np.minimum(pos, size - 4)
        return (
            mm[pos].astype(np.uint32)
            | (mm[pos + 1].astype(np.uint32) << 8)
            | (mm[pos + 2].astype(np.uint32) << 16)
            | (mm[pos + 3].astype(np.uint32) << 24)
        )

    magic, lrec = u32(offsets), u32(offsets + 4)
    bad = magic != MAGIC
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"record at byte {offsets[i]}: bad magic 0x{magic[i]:08x}", path=rec_disp)
    flag = u32(offsets + 8)
    scalar = u32(offsets + 12).view(np.float32)
    first = u32(offsets + 8 + IR_SIZE).view(np.float32)
    cflag, length = lrec >> 29, lrec & _LEN_MASK
    simple = (cflag == 0) & (length >= IR_SIZE + 4 * flag.astype(np.int64)) & (offsets + 8 + length <= size)
    out[:] = np.where(flag > 0, first, scalar)
    with open(rec_path, "rb") as f:
        for i in np.flatnonzero(~simple):
            _, labels, _, _, _ = unpack_payload(
                read_record(f, rec_disp, int(offsets[i])), rec_disp, f"record at byte {offsets[i]}"
            )
            out[i] = labels[0]
    return out


def read_recordio(root: Path, manifest: Manifest) -> DatasetTables:
    """Image rows `rec#key` with subject = the record's (first) label; record 0's header, when its
    flag > 0, limits images to keys 1..label[0]-1 (insightface packs); images are not decoded."""
    rec_rel, idx_rel = manifest.file("rec"), manifest.file("idx")
    rec_path, rec_disp = locate(root, manifest, rec_rel, "files.rec")
    idx_path, idx_disp = locate(root, manifest, idx_rel, "files.idx")
    require_file(rec_path, rec_disp)
    keys, offsets = read_idx(idx_path, idx_disp)
    extra: dict = {"aligned": manifest.aligned}
    order = np.argsort(keys, kind="stable")
    keys, offsets = keys[order], offsets[order]
    if len(keys) and keys[0] == 0:
        with open(rec_path, "rb") as f:
            flag, labels, _, _, _ = unpack_payload(read_record(f, rec_disp, int(offsets[0])), rec_disp, "record 0")
        if flag > 0:
            end, id_end = int(labels[0]), int(labels[1]) if len(labels) > 1 else int(labels[0])
            extra["header0"] = (end, id_end)
            keep = (keys >= 1) & (keys < end)
            missing = (end - 1) - int(keep.sum())
            if missing:
                raise DataError(
                    f"record 0 says images are keys 1..{end - 1}, {missing} of them are not indexed", path=idx_disp
                )
            keys, offsets = keys[keep], offsets[keep]
    labels = _header_labels(rec_path, rec_disp, offsets)
    if not np.all(np.isfinite(labels)) or not np.all(labels == np.round(labels)) or (labels < 0).any():
        i = int(np.flatnonzero(~(np.isfinite(labels) & (labels == np.round(labels)) & (labels >= 0)))[0])
        raise DataError(f"record {keys[i]}: label {labels[i]} is not an identity number", path=rec_disp)
    paths = np.asarray([f"{rec_rel}#{k}" for k in keys.tolist()], dtype=object)
    images = ImageTable(path=paths, subject=labels.astype(np.int64))
    return DatasetTables(name=manifest.name, images=images, protocols={}, extra=extra)


_IDX_CACHE: OrderedDict[tuple[int, int, int, int], dict[int, int]] = OrderedDict()
_IDX_CACHE_SIZE = 4


def idx_path_for(rec_rel: str) -> str:
    """The `.idx` beside a `.rec`: `faces/train.rec` -> `faces/train.idx`."""
    stem, dot, _ = rec_rel.rpartition(".")
    return f"{stem}.idx" if dot else f"{rec_rel}.idx"


def _record_index(root: str | Path, idx_rel: str, idx_disp: str, source: str | None) -> dict[int, int]:
    """key -> offset of an `.idx` file under `root`, read through a verified descriptor and cached by its identity."""
    with open_under(root, idx_rel, source=source, display=idx_disp) as f:
        st = os.fstat(f.fileno())
        cache_key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        index = _IDX_CACHE.get(cache_key)
        if index is not None:
            _IDX_CACHE.move_to_end(cache_key)
            return index
        data = f.read()
    keys, offsets = read_idx(Path(idx_disp), idx_disp, data=data)
    index = dict(zip(keys.tolist(), offsets.tolist()))
    _IDX_CACHE[cache_key] = index
    while len(_IDX_CACHE) > _IDX_CACHE_SIZE:
        _IDX_CACHE.popitem(last=False)
    return index


def record_image_bytes(root: str | Path, rec_rel: str, key: int, display: str, source: str | None = None) -> bytes:
    """Encoded image bytes of record `key` of pack `rec_rel` under data root `root`, located through the
    sibling `.idx` file; both are opened through `open_under`, so never outside the root."""
    idx_rel = idx_path_for(rec_rel)
    with open_under(root, rec_rel, source=source, display=display) as f:
        index = _record_index(root, idx_rel, idx_path_for(display), source)
        if key not in index:
            raise DataError(f"record key {key} is not in {Path(idx_rel).name}", path=display)
        payload = read_record(f, display, index[key])
    return unpack_payload(payload, display, f"record {key}")[4]
