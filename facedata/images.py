"""Bytes of one dataset image given its row path: a plain file, `<pack>.bin#<index>` inside an
insightface validation pack, or `<name>.rec#<key>` inside a RecordIO pack.

Every read goes through `facedata.paths.open_under`: the resolved path is opened and the opened
descriptor is verified to lie inside the data root, so a symlink swapped after the check cannot
make a read escape."""

from __future__ import annotations

from pathlib import Path

from facedata.errors import DataError, MissingFileError
from facedata.paths import open_under
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
    """The encoded image bytes of row `path` (relative to data root `root`), never read outside the root.

    A plain image file that is absent (or not a regular file) raises MissingFileError; other problems DataError.
    """
    file, member = split_member(path)
    source = f"image path {path}"
    if member is None:
        try:
            with open_under(root, file, source=source, display=file) as f:
                return f.read()
        except MissingFileError as exc:
            message = "image file not found" if exc.message == "file not found" else exc.message
            raise MissingFileError(message, path=file) from None
        except OSError as exc:
            raise DataError(f"cannot read image: {exc}", path=file) from exc
    if file.lower().endswith(".bin"):
        return pack_image_bytes(root, file, member, file, source=source)
    return record_image_bytes(root, file, member, file, source=source)
