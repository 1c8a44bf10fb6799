"""GPU extraction check (H100-sized, ~5 minutes): iResNet-50 images/s from aligned JPEGs through
`run_extraction` at fp16 and bf16, batched nvjpeg decoding (torchvision.io.decode_jpeg on CUDA) as an
alternative input path, and GPU outputs against CPU fp32 on a subset (cosine >= 0.999). Prints JSON.

    .venv/bin/python benchmarks/gpu_extract_check.py                       # on a GPU machine
    .venv/bin/python benchmarks/gpu_extract_check.py --device cpu --images 64 --arch iresnet18   # dry run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from extract.checkpoints import random_model  # noqa: E402
from extract.models import load_model_config  # noqa: E402
from extract.preprocess import preprocess_batch  # noqa: E402
from extract.runner import BatchRunner, RunModel, autocast_dtype, run_extraction  # noqa: E402
from featurestore.schema import STATUS_OK, DatasetTables, ImageTable  # noqa: E402
from featurestore.store import create_store  # noqa: E402

CONFIG = "embnorm_r50"
"""One backbone, no head, no flip: images/s below is backbone forwards per second plus the input path."""
COSINE_MIN = 0.999


def _write_range(args: tuple[str, int, int, int]) -> None:
    out, start, stop, seed = args
    rng = np.random.default_rng([seed, start])
    for i in range(start, stop):
        img = cv2.GaussianBlur(rng.integers(0, 256, size=(112, 112, 3), dtype=np.uint8), (5, 5), 1.5)
        cv2.imwrite(os.path.join(out, f"{i:06d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 95])


def precision_takes_effect(run: RunModel, device: torch.device, precision: str) -> bool:
    """Whether BatchRunner at `precision` gives different numbers than fp32 on a small random batch
    (False means the network silently ran in fp32: an enclosing autocast was switched off)."""
    crops = torch.randint(0, 256, (8, 112, 112, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    a = BatchRunner([run], device, "fp32")(crops)[run.name]["embedding"]
    b = BatchRunner([run], device, precision)(crops)[run.name]["embedding"]
    return bool(np.abs(a - b).max() > 0)


def write_aligned_jpegs(root: Path, n: int, seed: int = 0, processes: int = 1) -> DatasetTables:
    """n aligned 112x112 JPEGs (smooth random textures, q95) under root/aligned, and their table
    (landmarks NaN = pre-aligned, one subject per 10 images, no protocols)."""
    out = root / "aligned"
    out.mkdir(parents=True, exist_ok=True)
    step = 500
    tasks = [(str(out), a, min(a + step, n), seed) for a in range(0, n, step)]
    if processes > 1 and len(tasks) > 1:
        with ProcessPoolExecutor(max_workers=processes) as pool:
            list(pool.map(_write_range, tasks))
    else:
        for t in tasks:
            _write_range(t)
    paths = np.array([f"aligned/{i:06d}.jpg" for i in range(n)], dtype=object)
    return DatasetTables("aligned-synthetic", ImageTable(path=paths, subject=np.arange(n) // 10))


def extract_images_per_s(
    store_path: Path, root: Path, tables: DatasetTables, run: list[RunModel], **kw
) -> tuple[float, np.ndarray, str]:
    """(images/s of one run_extraction into a fresh store, embeddings read back, runner summary)."""
    specs = [m.model.config.model_spec(name=m.name, random_init=True, flip=False) for m in run]
    store = create_store(store_path, tables, specs, overwrite=True)
    try:
        t0 = time.perf_counter()
        summary = run_extraction(store, str(root), run, progress=False, **kw)
        seconds = time.perf_counter() - t0
        bad = np.flatnonzero(store.status() != STATUS_OK)
        if len(bad):
            raise RuntimeError(f"{len(bad)} images failed, first row {bad[0]}: {summary.format()}")
        emb = store.read(run[0].name, "embedding")
    finally:
        store.close()
    return len(tables.images) / seconds, emb, summary.format()


def nvjpeg_images_per_s(
    root: Path,
    paths: Sequence[str],
    run: RunModel,
    device: torch.device,
    precision: str,
    batch_size: int,
    readers: int = 8,
    align: bool = False,
) -> tuple[float, float, np.ndarray]:
    """(end-to-end images/s, decode-only images/s, embeddings): file bytes read by a thread pool,
    batched torchvision.io.decode_jpeg on `device` (nvjpeg on CUDA), same preprocessing, backbone forward.
    With `align`, the decoded images also go through extract.gpu_preprocess.align_batch (the 5-point
    similarity transform by grid_sample on the device; the landmarks here are the template's own points,
    since the images are pre-aligned, so the embeddings must still match the reference); decode-only then
    counts decode + alignment."""
    from torchvision.io import ImageReadMode, decode_jpeg

    from extract.align import ARCFACE_TEMPLATE
    from extract.gpu_preprocess import align_batch

    def read(p: str) -> torch.Tensor:
        return torch.frombuffer(bytearray((root / p).read_bytes()), dtype=torch.uint8)

    model = run.model
    model.to(device)
    amp = autocast_dtype(precision, device)
    embs, decode_s = [], 0.0
    batches = [list(paths[a : a + batch_size]) for a in range(0, len(paths), batch_size)]
    with ThreadPoolExecutor(max_workers=readers) as pool, torch.inference_mode():
        t0 = time.perf_counter()
        pending = pool.submit(lambda b: list(map(read, b)), batches[0]) if batches else None
        for i in range(len(batches)):
            data = pending.result()
            if i + 1 < len(batches):  # read the next batch's bytes while this one decodes and runs
                pending = pool.submit(lambda b: list(map(read, b)), batches[i + 1])
            td = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                imgs = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
            if align:
                crops, _ = align_batch(imgs, np.broadcast_to(ARCFACE_TEMPLATE, (len(imgs), 5, 2)))
            else:
                crops = torch.stack(imgs).permute(0, 2, 3, 1)  # (B, 112, 112, 3) uint8 RGB
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            decode_s += time.perf_counter() - td
            x = preprocess_batch(crops, model.preprocessing)
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                embs.append(model.backbone(x).embedding.float().cpu())
        total = time.perf_counter() - t0
    return len(paths) / total, len(paths) / max(decode_s, 1e-9), torch.cat(embs).numpy()


def row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of corresponding rows (float64)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(den, 1e-300)


def check(args: argparse.Namespace) -> dict:
    """Run every measurement; returns the JSON summary (ok = every cosine check passed)."""
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.backends.cudnn.benchmark = True
    precisions = args.precisions or (["fp16", "bf16"] if device.type == "cuda" else ["fp32", "bf16"])
    cfg = load_model_config(CONFIG)
    if args.arch != cfg.arch:
        import dataclasses

        cfg = dataclasses.replace(cfg, arch=args.arch, name=f"embnorm_{args.arch}")
    workers = args.workers if args.workers is not None else max(0, min(14, (os.cpu_count() or 2) - 2))
    res: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "arch": cfg.arch,
        "images": args.images,
        "batch_size": args.batch_size,
        "workers": workers,
        "cpu_count": os.cpu_count(),
        "run_extraction": {},
        "decode_jpeg": {},  # batched torchvision decode_jpeg on the device
        "decode_jpeg_align": {},  # the same plus extract.gpu_preprocess.align_batch on the device
        "cosine_vs_cpu_fp32": {},
    }
    probe = RunModel("m", random_model(cfg, seed=1))
    res["precision_takes_effect"] = {p: precision_takes_effect(probe, device, p) for p in precisions if p != "fp32"}
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        tables = write_aligned_jpegs(tmp, args.images, processes=os.cpu_count() or 1)
        res["seconds_writing_jpegs"] = round(time.perf_counter() - t0, 2)
        n_sub = min(args.check_images, args.images)
        sub = DatasetTables(tables.name, tables.images.take(slice(0, n_sub)))
        log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
        ref_model = RunModel("m", random_model(cfg, seed=1))
        _, ref, _ = extract_images_per_s(tmp / "cpu.zarr", tmp, sub, [ref_model], device="cpu", precision="fp32",
                                         batch_size=64, workers=min(4, workers))  # fmt: skip
        log(f"CPU fp32 reference on {n_sub} images done")
        run = [RunModel("m", random_model(cfg, seed=1))]
        for prec in precisions:
            kw = dict(device=str(device), precision=prec, batch_size=args.batch_size, workers=workers)
            extract_images_per_s(tmp / "warm.zarr", tmp, sub, run, **kw)  # cuDNN autotuning, worker start-up
            ips, emb, summary = extract_images_per_s(tmp / f"{prec}.zarr", tmp, tables, run, **kw)
            cos = row_cosine(emb[:n_sub], ref)
            res["run_extraction"][prec] = {"images_per_s": round(ips, 1), "summary": summary}
            res["cosine_vs_cpu_fp32"][f"run_extraction/{prec}"] = float(cos.min())
            log(f"run_extraction {prec}: {ips:,.0f} images/s, min cosine {cos.min():.6f}\n{summary}")
            kw["preprocess"] = "device"  # extract --preprocess device: workers read bytes, the device decodes
            extract_images_per_s(tmp / "warm-dev.zarr", tmp, sub, run, **kw)
            ips, emb, summary = extract_images_per_s(tmp / f"{prec}-device.zarr", tmp, tables, run, **kw)
            cos = row_cosine(emb[:n_sub], ref)
            res["run_extraction"][f"{prec}+preprocess-device"] = {"images_per_s": round(ips, 1), "summary": summary}
            res["cosine_vs_cpu_fp32"][f"run_extraction/{prec}+preprocess-device"] = float(cos.min())
            log(f"run_extraction --preprocess device {prec}: {ips:,.0f} images/s, min cosine {cos.min():.6f}")
        paths = [str(p) for p in tables.images.path]
        for prec in precisions:
            nvjpeg_images_per_s(tmp, paths[: args.batch_size], run[0], device, prec, args.batch_size)  # warm-up
            ips, dec, emb = nvjpeg_images_per_s(tmp, paths, run[0], device, prec, args.batch_size)
            cos = row_cosine(emb[:n_sub], ref)
            res["decode_jpeg"][prec] = {"images_per_s": round(ips, 1), "decode_only_images_per_s": round(dec, 1)}
            res["cosine_vs_cpu_fp32"][f"decode_jpeg/{prec}"] = float(cos.min())
            log(f"decode_jpeg({device.type}) {prec}: {ips:,.0f} images/s end to end, decode alone {dec:,.0f} images/s")
            ips, dec, emb = nvjpeg_images_per_s(tmp, paths, run[0], device, prec, args.batch_size, align=True)
            cos = row_cosine(emb[:n_sub], ref)
            res["decode_jpeg_align"][prec] = {"images_per_s": round(ips, 1), "decode_align_images_per_s": round(dec, 1)}
            res["cosine_vs_cpu_fp32"][f"decode_jpeg_align/{prec}"] = float(cos.min())
            log(f"decode_jpeg + grid_sample align ({device.type}) {prec}: {ips:,.0f} images/s end to end, "
                f"decode + align alone {dec:,.0f} images/s")  # fmt: skip
    res["ok"] = all(c >= COSINE_MIN for c in res["cosine_vs_cpu_fp32"].values())
    runs = [(f"run_extraction/{p}", v["images_per_s"]) for p, v in res["run_extraction"].items()]
    best_name, best = max(runs, key=lambda kv: kv[1])
    res["run_extraction_best_images_per_s"] = best
    res["run_extraction_best"] = best_name
    res["goal_5000_images_per_s_met"] = best >= 5000
    return res


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; exit status 1 when a cosine check fails."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", help="cuda, cuda:N, cpu or auto (default)")
    ap.add_argument("--images", type=int, default=20_000, help="aligned JPEGs to generate (default 20000)")
    ap.add_argument("--arch", default="iresnet50", choices=["iresnet18", "iresnet34", "iresnet50", "iresnet100"])
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: cores - 2, at most 14)")
    ap.add_argument("--precisions", nargs="+", default=None, help="default fp16 bf16 on CUDA, fp32 bf16 on CPU")
    ap.add_argument("--check-images", type=int, default=512, help="images compared with CPU fp32 (default 512)")
    ap.add_argument("--workdir", type=Path, default=None, help="where the temporary JPEGs go (default: system temp)")
    ap.add_argument("--json", type=Path, default=None, help="also write the summary here")
    args = ap.parse_args(argv)
    if args.images < 1:
        ap.error("--images must be >= 1")
    res = check(args)
    text = json.dumps(res, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
