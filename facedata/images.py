"""Bytes of one dataset image given its row path: a plain file, `<pack>.bin#<index>` inside an
insightface validation pack, or `<name>.rec#<key>` inside a RecordIO pack."""

from __future__ import annotations

from pathlib import Path

from facedata.errors import DataError
from facedata.paths import resolve_under
from facedata.readers.bin_pack import pack_image_bytes
from facedata.readers.recordio import record_image_bytes


def split_member(path: str) -> tuple[str, int | None]:
    """`lfw.bin#12` -> ("lfw.bin", 12); a path without a `.bin#`/`.rec#` member -> (path, None)."""
    file, sep, member = path.rpartition("#")
    if sep and file.lower().endswith((".bin", ".rec")):
        try:
            return file, int(member)
        except ValueError:
            raise DataError(f"image path {path!r}: member after '#' must be an integer", path=path) from None
    return path, None


def open_image_bytes(root: str | Path, path: str) -> bytes:
    """The encoded image bytes of row `path` (relative to data root `root`), never read outside the root."""
    file, member = split_member(path)
    full = resolve_under(root, file, source=f"image path {path}")
    if member is None:
        try:
            return full.read_bytes()
        except FileNotFoundError:
            raise DataError("image file not found", path=file) from None
        except OSError as exc:
            raise DataError(f"cannot read image: {exc}", path=file) from exc
    if file.lower().endswith(".bin"):
        return pack_image_bytes(full, member, file)
    return record_image_bytes(full, member, file)
