"""A small store with identity structure and known per-image quality, built directly (no torch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from featurestore.schema import STATUS_OK, DatasetTables, ImageTable, ModelSpec, Protocol
from featurestore.store import FeatureStore, create_store

D = 16


def build_store(
    path: Path,
    n_subjects: int = 10,
    per_template: int = 3,
    templates_per_subject: int = 3,
    failed: tuple[int, ...] = (),
    seed: int = 0,
    chunk_rows: int = 16,
    write_chunks=None,
) -> FeatureStore:
    """Images of `n_subjects` identities in templates of `per_template` images (2 medias each);
    embeddings = centre + noise / quality; scale = quality (ScaleFace), sigma_sq = 1/quality (PFE);
    an image-level protocol over all image pairs of the first 40 images and a template-level one
    over all template pairs. Rows in `failed` get status 2 and NaN outputs."""
    rng = np.random.default_rng(seed)
    n_t = n_subjects * templates_per_subject
    n = n_t * per_template
    template = np.repeat(np.arange(n_t) + 100, per_template)
    subject = (template - 100) // templates_per_subject
    media = template * 10 + (np.arange(n) % per_template > 0)
    centres = rng.standard_normal((n_subjects, D)).astype(np.float32)
    quality = rng.uniform(0.2, 2.0, n).astype(np.float32)
    emb = centres[subject] + rng.standard_normal((n, D)).astype(np.float32) * (0.8 / quality[:, None])
    norm = np.linalg.norm(emb, axis=1).astype(np.float32)
    sigma = (1.0 / quality[:, None] + rng.uniform(0, 0.1, (n, D))).astype(np.float32)
    images = ImageTable(
        path=[f"img/{i}.jpg" for i in range(n)],
        subject=subject,
        template=template,
        media=media,
        detector_score=rng.uniform(0.5, 1, n).astype(np.float32),
    )
    m = min(40, n)
    ii, jj = np.triu_indices(m, 1)
    img_proto = Protocol("images", np.c_[ii, jj], subject[ii] == subject[jj], level="image")
    ti, tj = np.triu_indices(n_t, 1)
    tpl_subject = np.arange(n_t) // templates_per_subject
    tpl_proto = Protocol("templates", np.c_[ti + 100, tj + 100], tpl_subject[ti] == tpl_subject[tj])
    tables = DatasetTables("toyset", images, {"templates": tpl_proto, "images": img_proto})
    models = [
        ModelSpec("scaleface", "scaleface", embedding_dim=D, outputs=("embedding", "norm", "scale")),
        ModelSpec("pfe", "pfe", embedding_dim=D, outputs=("embedding", "norm", "sigma_sq")),
        ModelSpec("magface", "magface", embedding_dim=D, outputs=("embedding", "norm"), flip=True),
    ]
    values = {
        "scaleface": {"embedding": emb, "norm": norm, "scale": quality},
        "pfe": {"embedding": emb, "norm": norm, "sigma_sq": sigma},
        "magface": {"embedding": emb * quality[:, None], "norm": norm * quality, "embedding_flip": emb * 0.9},
    }
    status = np.full(n, STATUS_OK, dtype=np.uint8)
    for r in failed:
        status[r] = 2
        for outs in values.values():
            for v in outs.values():
                v[r] = np.nan
    store = create_store(path, tables, models, chunk_rows=chunk_rows)
    with store.writer() as w:
        for c in w.pending() if write_chunks is None else write_chunks:
            a, b = store.chunk_rows_range(c)
            w.write_chunk(c, status[a:b], {k: {o: v[a:b] for o, v in outs.items()} for k, outs in values.items()})
    store.truth = {"quality": quality, "emb": emb, "sigma": sigma, "status": status}  # for tests
    return store


def count_fusions(monkeypatch) -> list[tuple[str, str]]:
    """The (model, fusion) of every fusion actually made from here on (analyze.loading._fuse_all counted), with
    the in-process fusion cache emptied first."""
    from analyze import loading

    calls: list[tuple[str, str]] = []
    real = loading._fuse_all

    def counting(store, model, fusion, *args):
        calls.append((model, fusion))
        return real(store, model, fusion, *args)

    monkeypatch.setattr(loading, "_fuse_all", counting)
    loading.clear_fused_cache()
    return calls
