"""insightface IJB layout with an image-level protocol (`name1 name2 label`), as the synthetic set has."""

from __future__ import annotations

import numpy as np
import pytest
from ijb_fixture import write_ijb

from facedata.errors import DataError
from facedata.manifest import load_manifest, manifest_from_dict
from facedata.readers import read_dataset


def manifest_with_image_pairs():
    raw = dict(load_manifest("ijbc").raw)
    raw["protocols"] = {"imgs": {"pairs": "meta/image_pairs.txt", "level": "image"}}
    raw.pop("expected", None)
    return manifest_from_dict(raw, source="test.yaml")


def test_image_pairs_map_names_to_rows(tmp_path):
    root = write_ijb(tmp_path, n=6)
    (root / "meta" / "image_pairs.txt").write_text("1.jpg 2.jpg 1\n3.jpg 6.jpg 0\n")
    tables = read_dataset(manifest_with_image_pairs(), root)
    p = tables.protocols["imgs"]
    assert p.level == "image"
    np.testing.assert_array_equal(p.pairs, [[0, 1], [2, 5]])
    np.testing.assert_array_equal(p.label, [True, False])


def test_unknown_image_name_is_reported_with_its_line(tmp_path):
    root = write_ijb(tmp_path, n=6)
    (root / "meta" / "image_pairs.txt").write_text("1.jpg 2.jpg 1\n3.jpg 99.jpg 0\n")
    with pytest.raises(DataError, match=r"meta/image_pairs.txt:2: unknown image path '99.jpg'"):
        read_dataset(manifest_with_image_pairs(), root)
