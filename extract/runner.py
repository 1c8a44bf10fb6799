"""One pass over a dataset: decode once, run each distinct backbone once per batch, write whole chunks.

Models whose backbone weights and preprocessing are identical (LoadedModel.backbone_key) form one
group: the backbone runs once per batch and every head of the group reads its bottleneck.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from extract.checkpoints import LoadedModel
from extract.data import Batch, ChunkBatches, FaceBytes, FaceCrops, collate, collate_raw
from extract.gpu_preprocess import device_batch
from extract.preprocess import preprocess_batch
from featurestore.errors import StoreWriteError
from featurestore.interrupts import Interrupted, ignore_in_worker
from featurestore.schema import STATUS_NAMES, STATUS_OK
from featurestore.store import FeatureStore, shard_chunks

PREPROCESS_MODES = ("cpu", "device")
"""Where images are decoded and aligned: OpenCV in the DataLoader workers (the default: insightface's crops exactly),
or on the run's device (nvjpeg decode, grid_sample alignment: extract.gpu_preprocess)."""


class ExtractionError(RuntimeError):
    """A run that must stop: --strict and a failed image, or out of device memory."""


@dataclass
class RunModel:
    """A model to run under the store name `name`, with or without the flip test."""

    name: str
    model: LoadedModel
    flip: bool = False


@dataclass
class ModelGroup:
    """Models sharing one backbone forward (same weights, same preprocessing)."""

    backbone: torch.nn.Module
    models: list[RunModel]

    @property
    def flip(self) -> bool:
        return any(m.flip for m in self.models)


def group_models(models: list[RunModel]) -> list[ModelGroup]:
    """Group models by backbone identity, keeping the order in which each group first appears."""
    groups: dict[str, ModelGroup] = {}
    for m in models:
        key = m.model.backbone_key
        if key not in groups:
            groups[key] = ModelGroup(m.model.backbone, [])
        groups[key].models.append(m)
    return list(groups.values())


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; cpu, cuda, cuda:N or mps only where this machine has it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ExtractionError(f"--device {device}: not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ExtractionError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ExtractionError(f"--device {device}: this machine has {count} CUDA device(s), cuda:0..{count - 1}")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ExtractionError(f"--device {device}: MPS is not available on this machine; use --device cpu")
    elif dev.type != "cpu":
        raise ExtractionError(f"--device {device}: not supported; use auto, cpu, cuda or cuda:N")
    return dev


def resolve_precision(precision: str, device: torch.device) -> str:
    """--precision as it will run on `device` (auto -> fp32); refuses fp16 on the CPU and bf16 on a GPU
    without it, before anything is created. The result goes into each model's fingerprint."""
    resolved = "fp32" if precision == "auto" else precision
    if resolved not in ("fp32", "fp16", "bf16"):
        raise ExtractionError(f"--precision {precision}: use auto, fp32, fp16 or bf16")
    if resolved == "fp16" and device.type == "cpu":
        raise ExtractionError("--precision fp16 is not supported on the CPU; use fp32 or bf16")
    if resolved == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ExtractionError(f"--precision bf16: {device} does not support bfloat16; use fp32 or fp16")
    return resolved


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for --precision (None = plain fp32).

    auto is fp32 everywhere: the original insightface, ScaleFace and MagFace code ran fp32, and users
    compare rows with theirs (fp16/bf16 autocast moves embeddings by ~1e-4 relative); ask for fp16 or
    bf16 explicitly for throughput on a GPU.
    """
    if precision in ("auto", "fp32"):
        return None
    return {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]


class BatchRunner:
    """Runs every model group on a batch of uint8 RGB crops and returns float32 numpy outputs."""

    def __init__(self, models: list[RunModel], device: torch.device, precision: str = "auto") -> None:
        self.models = models
        self.device = device
        self.amp_dtype = autocast_dtype(resolve_precision(precision, device), device)
        for m in models:
            m.model.to(device)
        self.groups = group_models(models)
        self.backbone_calls = 0

    def _forward(self, backbone: torch.nn.Module, x: torch.Tensor):
        self.backbone_calls += 1
        return backbone(x)

    @torch.inference_mode()
    def __call__(self, crops: torch.Tensor) -> dict[str, dict[str, np.ndarray]]:
        out: dict[str, dict[str, np.ndarray]] = {}
        crops = crops.to(self.device, non_blocking=True)
        amp = (
            torch.autocast(self.device.type, dtype=self.amp_dtype)
            if self.amp_dtype is not None
            else contextlib.nullcontext()
        )
        for group in self.groups:
            pre = group.models[0].model.preprocessing
            with amp:
                feats = self._forward(group.backbone, preprocess_batch(crops, pre))
                flipped = self._forward(group.backbone, preprocess_batch(crops, pre, flip=True)) if group.flip else None
                for m in group.models:
                    res = m.model.outputs_from_backbone(feats)
                    if m.flip:
                        res["embedding_flip"] = flipped.embedding
                    out[m.name] = {k: v.float().cpu().numpy() for k, v in res.items()}
        return out


@dataclass
class ExtractSummary:
    """What a run did: counts, failures (first few), and where the time went."""

    images_done: int = 0
    images_ok: int = 0
    images_failed: int = 0
    chunks_written: int = 0
    chunks_skipped: int = 0
    failures: list[tuple[int, str, str, str]] = field(default_factory=list)
    seconds_total: float = 0.0
    seconds_decode: float = 0.0
    seconds_network: float = 0.0
    seconds_write: float = 0.0
    backbone_calls: int = 0

    @property
    def images_per_second(self) -> float:
        return self.images_done / self.seconds_total if self.seconds_total > 0 else 0.0

    def format(self, max_failures: int = 5) -> str:
        lines = [
            f"images: {self.images_done:,} processed, {self.images_ok:,} ok, {self.images_failed:,} failed; "
            f"chunks: {self.chunks_written} written, {self.chunks_skipped} already done",
            f"speed: {self.images_per_second:,.1f} images/s over {self.seconds_total:.1f} s "
            f"(decode+align {self.seconds_decode:.1f} s summed over workers, network {self.seconds_network:.1f} s, "
            f"writing {self.seconds_write:.1f} s in the background)",
        ]
        for row, path, status, msg in self.failures[:max_failures]:
            lines.append(f"  failed row {row}: {path}: {status} ({msg})")
        if self.images_failed > max_failures:
            lines.append(f"  ... and {self.images_failed - max_failures} more (see `analyze info`)")
        return "\n".join(lines)


def run_extraction(
    store: FeatureStore,
    data_root: str,
    models: list[RunModel],
    *,
    device: str = "auto",
    precision: str = "auto",
    batch_size: int = 64,
    workers: int = 2,
    shard: tuple[int, int] = (0, 1),
    strict: bool = False,
    progress: bool = True,
    on_chunk: Callable[[int], None] | None = None,
    only_chunks: list[int] | None = None,
    preprocess: str = "cpu",
) -> ExtractSummary:
    """Fill the store's pending chunks of shard `shard` (i, n); returns the run's summary.

    `preprocess`: "cpu" (OpenCV decode and alignment in the DataLoader workers: insightface's crops exactly) or
    "device" (the workers only read files; extract.gpu_preprocess decodes and aligns on `device`).

    `on_chunk(chunk)` is called after each chunk is written and marked done (tests use it to
    interrupt a run at a known point). `only_chunks` (repair) restricts the run to those chunks.
    A failed write stops the run at once (StoreWriteError saying what failed, how much is done
    and how to resume); nothing after it is written or marked done. SIGINT/SIGTERM
    (featurestore.interrupts.Interrupted) stop it after the chunk being written is whole and marked
    done; the exception then says how many chunks are done and how to resume.
    """
    chunks = shard_chunks(store.n_chunks, *shard)
    done_before = int(store.chunk_done()[chunks.start : chunks.stop].sum())
    try:
        return _run_extraction(
            store,
            data_root,
            models,
            device=device,
            precision=precision,
            batch_size=batch_size,
            workers=workers,
            shard=shard,
            strict=strict,
            progress=progress,
            on_chunk=on_chunk,
            only_chunks=only_chunks,
            preprocess=preprocess,
        )
    except Interrupted as exc:
        done = int(store.chunk_done()[chunks.start : chunks.stop].sum())
        where = f" of shard {shard[0]}/{shard[1]}" if shard[1] > 1 else ""
        raise exc.with_message(
            f"{done} of {len(chunks)} chunks{where} of {store.path} are done ({done - done_before} written "
            "this run, each whole); run the same command again to resume from there"
        ) from None


def _worker_init(worker_id: int) -> None:
    """DataLoader workers leave SIGINT/SIGTERM to the main process, which stops them (no worker tracebacks)."""
    ignore_in_worker()


def _run_extraction(
    store: FeatureStore,
    data_root: str,
    models: list[RunModel],
    *,
    device: str,
    precision: str,
    batch_size: int,
    workers: int,
    shard: tuple[int, int],
    strict: bool,
    progress: bool,
    on_chunk: Callable[[int], None] | None,
    only_chunks: list[int] | None,
    preprocess: str = "cpu",
) -> ExtractSummary:
    if preprocess not in PREPROCESS_MODES:
        raise ValueError(f"preprocess must be one of {', '.join(PREPROCESS_MODES)}, got {preprocess!r}")
    dev = resolve_device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # every batch is (B, 3, 112, 112): tune the kernels once
        if autocast_dtype(precision, dev) is None:  # true fp32: TF32 convolutions would cost ~1e-3 relative
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
    runner = BatchRunner(models, dev, precision)
    summary = ExtractSummary()
    t_start = time.perf_counter()
    chunks = shard_chunks(store.n_chunks, *shard)
    if only_chunks is not None:
        chunks = [c for c in chunks if c in set(only_chunks)]
    paths = store.image_column("path")
    landmarks = store.image_column("landmarks")
    with store.writer(chunks) as writer:
        pending = writer.pending()
        summary.chunks_skipped = len(chunks) - len(pending)
        ranges = [store.chunk_rows_range(c) for c in pending]
        total = sum(b - a for a, b in ranges)
        on_device = preprocess == "device"
        loader = DataLoader(
            FaceBytes(data_root, paths) if on_device else FaceCrops(data_root, paths, landmarks),
            batch_sampler=ChunkBatches(ranges, batch_size),
            num_workers=workers,
            collate_fn=collate_raw if on_device else collate,
            pin_memory=dev.type == "cuda" and not on_device,
            persistent_workers=False,
            prefetch_factor=4 if workers > 0 else None,
            worker_init_fn=_worker_init if workers > 0 else None,
        )
        bar = tqdm(total=total, unit="img", disable=not progress, desc=f"extract {store.path.name}", smoothing=0.1)
        pool = ThreadPoolExecutor(max_workers=1)  # writes overlap with the next chunk's network time
        pending_write: Future | None = None
        chunk_iter = iter(zip(pending, ranges))
        current = next(chunk_iter, None)
        buf: ChunkBuffer | None = ChunkBuffer(store, *current) if current else None
        written = 0

        def collect(fut: Future) -> None:
            nonlocal written
            summary.seconds_write += fut.result()  # re-raises the background write's error here
            written += 1

        try:
            for batch in loader:
                assert buf is not None
                if on_device:
                    t0 = time.perf_counter()
                    batch = device_batch(batch, landmarks[batch.rows], dev)
                    batch.decode_seconds += time.perf_counter() - t0
                if pending_write is not None and pending_write.done() and pending_write.exception() is not None:
                    collect(pending_write)  # stop at the first failed write, not at the next full chunk
                _record_failures(batch, paths, summary, strict)
                t0 = time.perf_counter()
                try:
                    outputs = runner(batch.crops)
                except torch.OutOfMemoryError as exc:
                    raise ExtractionError(
                        f"out of {dev.type} memory at batch size {len(batch.rows)}; "
                        f"try --batch-size {max(1, len(batch.rows) // 2)}"
                    ) from exc
                summary.seconds_network += time.perf_counter() - t0
                summary.seconds_decode += batch.decode_seconds
                buf.add(batch, outputs)
                bar.update(len(batch.rows))
                if buf.full:
                    if pending_write is not None:
                        fut, pending_write = pending_write, None
                        collect(fut)
                    pending_write = pool.submit(_write, writer, buf, on_chunk)
                    summary.chunks_written += 1
                    current = next(chunk_iter, None)
                    buf = ChunkBuffer(store, *current) if current else None
            if pending_write is not None:
                fut, pending_write = pending_write, None
                collect(fut)
        except StoreWriteError as exc:
            done = summary.chunks_skipped + written
            raise StoreWriteError(
                f"{exc}. {done} of {len(chunks)} chunks are done and nothing after the failure was marked done; "
                "free space (or fix the device) and rerun the same command to resume",
                key=exc.key,
                chunk=exc.chunk,
                cause=exc.cause,
            ) from exc
        finally:
            pool.shutdown(wait=True)
            bar.close()
    summary.images_done = total
    summary.images_ok = total - summary.images_failed
    summary.seconds_total = time.perf_counter() - t_start
    summary.backbone_calls = runner.backbone_calls
    return summary


def _record_failures(batch: Batch, paths: np.ndarray, summary: ExtractSummary, strict: bool) -> None:
    bad = np.flatnonzero(batch.status != STATUS_OK)
    for i in bad:
        row = int(batch.rows[i])
        item = (row, str(paths[row]), STATUS_NAMES[int(batch.status[i])], batch.messages[i])
        if strict:
            raise ExtractionError(f"--strict: image row {row} {item[1]}: {item[2]} ({item[3]})")
        if len(summary.failures) < 20:
            summary.failures.append(item)
    summary.images_failed += len(bad)


class ChunkBuffer:
    """Collects one chunk's rows batch by batch; failed rows get NaN outputs."""

    def __init__(self, store: FeatureStore, chunk: int, rows: tuple[int, int]) -> None:
        self.chunk = chunk
        self.start, self.stop = rows
        n = self.stop - self.start
        self.status = np.zeros(n, dtype=np.uint8)
        self.filled = 0
        self.outputs = {
            name: {o: np.full((n, *spec.row_shape(o)), np.nan, dtype=np.float32) for o in spec.outputs}
            for name, spec in store.models.items()
        }

    @property
    def full(self) -> bool:
        return self.filled == self.stop - self.start

    def add(self, batch: Batch, outputs: dict[str, dict[str, np.ndarray]]) -> None:
        idx = batch.rows - self.start
        ok = batch.status == STATUS_OK
        self.status[idx] = batch.status
        for name, outs in outputs.items():
            for o, values in outs.items():
                self.outputs[name][o][idx[ok]] = values[ok]
        self.filled += len(idx)


def _write(writer, buf: ChunkBuffer, on_chunk: Callable[[int], None] | None) -> float:
    t0 = time.perf_counter()
    writer.write_chunk(buf.chunk, buf.status, buf.outputs)
    if on_chunk is not None:
        on_chunk(buf.chunk)
    return time.perf_counter() - t0
