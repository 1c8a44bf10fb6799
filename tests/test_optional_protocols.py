"""A protocol marked `optional: true` may be absent (a folder of faces without pairs); others may not."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facedata.errors import DataError
from facedata.manifest import load_manifest, manifest_from_dict
from facedata.readers import read_dataset


def _faces(root):
    for ident in ("alice", "bob"):
        (root / ident).mkdir(parents=True)
        cv2.imwrite(str(root / ident / "0.jpg"), np.full((112, 112, 3), 128, np.uint8))


def test_folder_without_pairs_csv_reads_images_only(tmp_path):
    _faces(tmp_path)
    tables = read_dataset(load_manifest("folder"), tmp_path)
    assert len(tables.images) == 2 and tables.protocols == {}
    assert tables.extra["skipped_protocols"] == ["pairs"]
    (tmp_path / "pairs.csv").write_text("alice/0.jpg,bob/0.jpg,0\n")
    assert len(read_dataset(load_manifest("folder"), tmp_path).protocols["pairs"]) == 1


def test_required_protocol_file_still_required(tmp_path):
    _faces(tmp_path)
    raw = dict(load_manifest("folder").raw)
    raw["protocols"] = {"pairs": {"pairs": "pairs.csv", "level": "image"}}
    with pytest.raises(DataError, match="pairs.csv"):
        read_dataset(manifest_from_dict(raw, source="m.yaml"), tmp_path)
