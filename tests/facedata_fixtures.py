"""Writers of tiny datasets in each real on-disk format, for the facedata reader tests."""

from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from facedata.manifest import Manifest, manifest_from_dict

MAGIC = 0xCED7230A


def jpeg_bytes(value: int, size: int = 8) -> bytes:
    """A tiny solid-grey JPEG whose pixel value identifies it."""
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def write_image(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg_bytes(value))


def manifest(tmp_path: Path, raw: dict, name: str = "m.yaml") -> Manifest:
    """Write `raw` as YAML under tmp_path and parse it (so errors name a real file)."""
    p = tmp_path / name
    p.write_text(yaml.safe_dump(raw))
    return manifest_from_dict(raw, source=str(p))


# IJB: 4 images, templates 1 (2 images, one media), 2 and 3; pairs (1,2,1) (1,3,0)
IJB_ROWS = [("1.jpg", 1, 10), ("2.jpg", 1, 10), ("3.jpg", 2, 11), ("4.jpg", 3, 12)]
IJB_PAIRS = [(1, 2, 1), (1, 3, 0)]


def write_ijb(root: Path, name: str = "ijbc", rows=IJB_ROWS, pairs=IJB_PAIRS) -> dict:
    """insightface IJB layout under root; returns the manifest mapping."""
    (root / "meta").mkdir(parents=True, exist_ok=True)
    tid = "".join(f"{n} {t} {m}\n" for n, t, m in rows)
    (root / "meta" / f"{name}_face_tid_mid.txt").write_text(tid)
    pts = ""
    for k, (n, _, _) in enumerate(rows):
        lm = " ".join(f"{10 * k + j + 0.5:.3f}" for j in range(10))
        pts += f"{n} {lm} {0.9 - 0.1 * k:.3f}\n"
    (root / "meta" / f"{name}_name_5pts_score.txt").write_text(pts)
    (root / "meta" / f"{name}_template_pair_label.txt").write_text("".join(f"{a} {b} {c}\n" for a, b, c in pairs))
    for k, (n, _, _) in enumerate(rows):
        write_image(root / "loose_crop" / n, 20 * k)
    return {
        "name": name,
        "layout": "insightface_ijb",
        "aligned": False,
        "files": {
            "images": "loose_crop",
            "face_tid_mid": f"meta/{name}_face_tid_mid.txt",
            "name_5pts_score": f"meta/{name}_name_5pts_score.txt",
        },
        "protocols": {"v11": {"pairs": f"meta/{name}_template_pair_label.txt"}},
    }


def write_bin(path: Path, images: list[bytes], issame: list[bool]) -> None:
    """An insightface .bin pack: pickle of (list of encoded images, issame list)."""
    with open(path, "wb") as f:
        pickle.dump((images, issame), f, protocol=pickle.HIGHEST_PROTOCOL)


def recordio_frame(payload: bytes) -> bytes:
    """dmlc RecordIO framing of one record, splitting it where the magic occurs at aligned offsets."""
    magic = struct.pack("<I", MAGIC)
    out = b""
    dptr = 0
    lower = len(payload) // 4 * 4
    for i in range(0, lower, 4):
        if payload[i : i + 4] == magic:
            out += magic + struct.pack("<I", ((1 if dptr == 0 else 2) << 29) | (i - dptr)) + payload[dptr:i]
            dptr = i + 4
    out += magic + struct.pack("<I", ((3 if dptr else 0) << 29) | (len(payload) - dptr)) + payload[dptr:]
    out += b"\0" * ((4 - len(payload) % 4) % 4)
    return out


def ir_pack(label, image: bytes, id1: int = 0, id2: int = 0) -> bytes:
    """IRHeader `<IfQQ` (+ label array when several labels) followed by the image bytes."""
    labels = np.atleast_1d(np.asarray(label, dtype=np.float32))
    if labels.size == 1:
        return struct.pack("<IfQQ", 0, float(labels[0]), id1, id2) + image
    return struct.pack("<IfQQ", labels.size, 0.0, id1, id2) + labels.astype("<f4").tobytes() + image


def write_recordio(rec: Path, records: dict[int, bytes]) -> dict[int, int]:
    """Write records (key -> payload) to rec and its .idx (`key\\toffset`); returns the offsets."""
    offsets = {}
    with open(rec, "wb") as f:
        for key, payload in records.items():
            offsets[key] = f.tell()
            f.write(recordio_frame(payload))
    rec.with_suffix(".idx").write_text("".join(f"{k}\t{o}\n" for k, o in offsets.items()))
    return offsets
