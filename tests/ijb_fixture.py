"""A tiny dataset in insightface's IJB-C layout, written by the tests themselves."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from extract.align import ARCFACE_TEMPLATE


def write_ijb(
    root: Path,
    n: int = 12,
    corrupt: tuple[int, ...] = (),
    missing: tuple[int, ...] = (),
    bad_landmarks: tuple[int, ...] = (),
    seed: int = 0,
) -> Path:
    """n loose crops of random textures with landmarks at a scaled, shifted ArcFace template;
    2 images per template, 4 templates per subject; rows in `corrupt` hold garbage bytes, rows in
    `missing` have no file, rows in `bad_landmarks` have all five landmarks on one point."""
    rng = np.random.default_rng(seed)
    (root / "loose_crop").mkdir(parents=True, exist_ok=True)
    (root / "meta").mkdir(exist_ok=True)
    tid_lines, lmk_lines = [], []
    for i in range(n):
        name = f"{i + 1}.jpg"
        img = rng.integers(0, 256, size=(160, 150, 3), dtype=np.uint8)
        img = cv2.GaussianBlur(img, (5, 5), 2)
        scale, dx, dy = rng.uniform(0.9, 1.2), rng.uniform(5, 20), rng.uniform(5, 25)
        lmk = ARCFACE_TEMPLATE * scale + [dx, dy]
        if i in bad_landmarks:
            lmk = np.repeat(lmk[:1], 5, axis=0)
        if i in corrupt:
            (root / "loose_crop" / name).write_bytes(b"\xff\xd8 this is not a jpeg")
        elif i not in missing:
            cv2.imwrite(str(root / "loose_crop" / name), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        tid_lines.append(f"{name} {i // 2 + 1} {i + 1}")
        lmk_lines.append(name + " " + " ".join(f"{v:.2f}" for v in lmk.ravel()) + f" {rng.uniform(0.5, 1):.3f}")
    (root / "meta" / "ijbc_face_tid_mid.txt").write_text("\n".join(tid_lines) + "\n")
    (root / "meta" / "ijbc_name_5pts_score.txt").write_text("\n".join(lmk_lines) + "\n")
    n_t = (n + 1) // 2
    pairs = [(a + 1, b + 1, int(a // 4 == b // 4)) for a in range(n_t) for b in range(a + 1, n_t)]
    (root / "meta" / "ijbc_template_pair_label.txt").write_text("\n".join(f"{a} {b} {c}" for a, b, c in pairs) + "\n")
    return root


def extract_cmd(root: Path, out: Path, *extra: str, workers: int = 0) -> list[str]:
    """The real `extract` entry point over a `write_ijb` folder as the subprocess tests run it: seeded
    iResNet-18, CPU, no progress bar, 2-row chunks and batches (so a run has many chunks to interrupt)."""
    import sys

    return [
        sys.executable,
        *("-c", "from extract.cli import main; main()"),
        *("--dataset", "ijbc", "--data-root", str(root), "--random-init", "--config", "arcface_r18"),
        *("--device", "cpu", "--workers", str(workers), "--quiet", "--chunk-rows", "2", "--batch-size", "2"),
        *("--out", str(out), *extra),
    ]
