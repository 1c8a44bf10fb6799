"""A `table`-layout dataset on disk with the same images and protocols as tests/analysis_fixture's store,
plus that store's ScaleFace embeddings and scales as the user's own files (for `datasets import`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from tests.analysis_fixture import build_store


def write_table_dataset(root: Path, chunk_rows: int = 16) -> dict:
    """Build the analysis fixture's store at root/builtin.zarr and write its images table and protocols
    as a `table` dataset under `root` (manifest root/dataset.yaml). Returns paths and the truth."""
    root.mkdir(parents=True, exist_ok=True)
    store = build_store(root / "builtin.zarr", chunk_rows=chunk_rows)
    images = store.images()
    paths = np.asarray(images.path, dtype=str)
    pd.DataFrame({"path": paths, "subject": images.subject, "template": images.template, "media": images.media}).to_csv(
        root / "images.csv", index=False
    )
    img = store.protocol("images")
    pd.DataFrame(
        {"left": paths[img.pairs[:, 0]], "right": paths[img.pairs[:, 1]], "label": img.label.astype(int)}
    ).to_csv(root / "image_pairs.csv", index=False)
    tpl = store.protocol("templates")
    pd.DataFrame({"left": tpl.pairs[:, 0], "right": tpl.pairs[:, 1], "label": tpl.label.astype(int)}).to_csv(
        root / "template_pairs.csv", index=False
    )
    manifest = {
        "name": "toyset",
        "layout": "table",
        "aligned": True,
        "files": {"list": "images.csv"},
        "protocols": {
            "templates": {"pairs": "template_pairs.csv", "level": "template"},
            "images": {"pairs": "image_pairs.csv", "level": "image"},
        },
    }
    (root / "dataset.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    truth = {
        "paths": paths,
        "embedding": store.read("scaleface", "embedding"),
        "scale": store.read("scaleface", "scale"),
        "sigma": store.truth["sigma"],
    }
    store.close()
    return {"root": root, "manifest": root / "dataset.yaml", "builtin": root / "builtin.zarr", **truth}
