"""Decode and align dataset images into 112x112 RGB crops inside DataLoader workers.

Every row yields a crop or a failure status (missing file, unreadable bytes, failed alignment),
so one bad image never stops a run. Batches never straddle a store chunk: the runner writes a
chunk as soon as its last batch is back.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from extract.align import CROP_SIZE, align_face
from facedata.errors import DataError, MissingFileError
from facedata.images import open_image_bytes, split_member
from featurestore.schema import STATUS_ALIGN_FAILED, STATUS_MISSING, STATUS_OK, STATUS_UNREADABLE


@dataclass
class DecodedFace:
    """One row's result: the aligned crop (zeros on failure), its status and why it failed."""

    row: int
    crop: np.ndarray
    status: int
    message: str
    seconds: float


def read_image(root: Path, path: str) -> tuple[bytes | None, int, str]:
    """(encoded bytes, status, message) of one row's image file: missing and unreadable files get their status."""
    try:
        return open_image_bytes(root, path), STATUS_OK, ""  # one verified open: no check-then-open race
    except MissingFileError as exc:
        if split_member(path)[1] is None:
            return None, STATUS_MISSING, "file not found"
        return None, STATUS_UNREADABLE, str(exc)
    except DataError as exc:
        return None, STATUS_UNREADABLE, str(exc)


def undecodable(data: bytes) -> str:
    """The message of an image whose bytes no decoder reads."""
    return f"cannot decode {len(data)} bytes as an image"


def decode_and_align(root: Path, path: str, landmarks: np.ndarray) -> tuple[np.ndarray | None, int, str]:
    """(RGB crop, status, message) for one image, as insightface's IJB-C evaluation prepares it:
    decode to BGR with OpenCV, warp by the 5-point similarity (or pass a pre-aligned face), then RGB."""
    data, status, message = read_image(root, path)
    if data is None:
        return None, status, message
    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        return None, STATUS_UNREADABLE, undecodable(data)
    result = align_face(img, landmarks)
    if not result.ok:
        return None, STATUS_ALIGN_FAILED, result.message
    return cv2.cvtColor(result.crop, cv2.COLOR_BGR2RGB), STATUS_OK, ""


class FaceCrops(Dataset):
    """Map-style dataset over store rows: item `row` is that image's DecodedFace."""

    def __init__(self, root: str | Path, paths: Sequence[str], landmarks: np.ndarray) -> None:
        self.root = Path(root)
        self.paths = np.asarray(paths, dtype=object)
        self.landmarks = np.asarray(landmarks, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, row: int) -> DecodedFace:
        t0 = time.perf_counter()
        try:
            crop, status, message = decode_and_align(self.root, str(self.paths[row]), self.landmarks[row])
        except Exception as exc:  # a corrupt file must not kill a worker: record it and go on
            crop, status, message = None, STATUS_UNREADABLE, f"{type(exc).__name__}: {exc}"
        if crop is None:
            crop = np.zeros((CROP_SIZE, CROP_SIZE, 3), dtype=np.uint8)
        return DecodedFace(int(row), crop, status, message, time.perf_counter() - t0)


@dataclass
class RawFace:
    """One row's file contents for device-side decoding (`--preprocess device`): bytes, or None with why."""

    row: int
    data: bytes | None
    status: int
    message: str
    seconds: float


class FaceBytes(Dataset):
    """Map-style dataset over store rows whose item is the row's encoded image (RawFace): the workers only read
    files; decoding and alignment happen on the device (extract.gpu_preprocess.device_batch)."""

    def __init__(self, root: str | Path, paths: Sequence[str]) -> None:
        self.root = Path(root)
        self.paths = np.asarray(paths, dtype=object)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, row: int) -> RawFace:
        t0 = time.perf_counter()
        try:
            data, status, message = read_image(self.root, str(self.paths[row]))
        except Exception as exc:  # as FaceCrops: record it and go on
            data, status, message = None, STATUS_UNREADABLE, f"{type(exc).__name__}: {exc}"
        return RawFace(int(row), data, status, message, time.perf_counter() - t0)


@dataclass
class RawBatch:
    """Collated RawFaces: rows, file contents (None where unread), statuses, messages and read time."""

    rows: np.ndarray
    data: list[bytes | None]
    status: np.ndarray
    messages: list[str]
    decode_seconds: float


def collate_raw(items: list[RawFace]) -> RawBatch:
    """Collate RawFaces into one RawBatch."""
    return RawBatch(
        rows=np.array([it.row for it in items], dtype=np.int64),
        data=[it.data for it in items],
        status=np.array([it.status for it in items], dtype=np.uint8),
        messages=[it.message for it in items],
        decode_seconds=float(sum(it.seconds for it in items)),
    )


@dataclass
class Batch:
    """Collated rows: crops (B, 112, 112, 3) uint8 tensor, statuses, messages and decode time."""

    rows: np.ndarray
    crops: torch.Tensor
    status: np.ndarray
    messages: list[str]
    decode_seconds: float

    def pin_memory(self) -> Batch:
        self.crops = self.crops.pin_memory()
        return self


def collate(items: list[DecodedFace]) -> Batch:
    """Stack DecodedFaces into one Batch (crops stay uint8: 4x less to copy to the device)."""
    return Batch(
        rows=np.array([it.row for it in items], dtype=np.int64),
        crops=torch.from_numpy(np.stack([it.crop for it in items])),
        status=np.array([it.status for it in items], dtype=np.uint8),
        messages=[it.message for it in items],
        decode_seconds=float(sum(it.seconds for it in items)),
    )


class ChunkBatches(Sampler[list[int]]):
    """Batches of rows, chunk by chunk in order, never crossing a chunk boundary."""

    def __init__(self, chunk_ranges: Sequence[tuple[int, int]], batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        self.chunk_ranges = list(chunk_ranges)
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[list[int]]:
        for start, stop in self.chunk_ranges:
            for b in range(start, stop, self.batch_size):
                yield list(range(b, min(b + self.batch_size, stop)))

    def __len__(self) -> int:
        return sum(-(-(stop - start) // self.batch_size) for start, stop in self.chunk_ranges)
