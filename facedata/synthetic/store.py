"""A feature store at full IJB-C scale without images: structure, protocol and model outputs, synthesised.

Each image has a latent quality q in (0, 1) (per media, with a little per-frame jitter). Every model's raw
embedding is its subject's centre plus noise that grows as q falls, so low-q images are the ones that
cause verification errors; the uncertainty outputs follow q: ScaleFace's scale rises with q, PFE's
sigma_sq falls with q, and MagFace's embedding norm rises with q. Rejecting the most uncertain
pairs therefore raises TAR@FAR, as on real data. Everything derives from (preset, seed) chunk by
chunk, so the store is reproducible and `synthetic_quality` recomputes the truth q without a file.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facedata.errors import DataError
from featurestore.schema import STATUS_OK, DatasetTables, Identification, ImageTable, ModelSpec, Protocol, TemplateSet
from featurestore.store import DEFAULT_CHUNK_ROWS, FeatureStore, create_store

from .presets import StorePreset, store_preset
from .structure import Structure, child_rng, make_pairs, plan_galleries, plan_structure

PROTOCOL = "verification_11"
"""Protocol name, as in data_manifests/ijbc.yaml."""
IDENTIFICATION = "identification_1N"
"""1:N protocol name, as in data_manifests/ijbc.yaml."""

MODEL_FAMILIES = {"scaleface": "scaleface", "pfe": "pfe", "magface": "magface", "arcface": "arcface"}
MODEL_OUTPUTS = {
    "scaleface": ("embedding", "norm", "scale"),
    "pfe": ("embedding", "norm", "sigma_sq"),
    "magface": ("embedding", "norm"),
    "arcface": ("embedding", "norm"),
}
BANK = 4096
"""Rows of the shared-direction bank. A media's shared noise is the mean of two rows picked by two hashes of
its id, so two medias share it only if both rows collide (1 in 16 M), not 1 in 4096."""


GEN_BLOCK = 256
"""Rows drawn from one generator: outputs do not depend on the store's chunk size."""


def media_noise(bank: np.ndarray, media: np.ndarray) -> np.ndarray:
    """(n, D) noise shared by all frames of each media: two bank rows chosen from the media id, averaged."""
    h1 = media % BANK
    h2 = (media // BANK + media * 2654435761) % BANK
    return (bank[h1] + bank[h2]) * np.float32(np.sqrt(0.5))


# insightface's reference 5 points for a 112 x 112 aligned face, used to place plausible landmarks
_REF_5PTS = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)


@dataclass
class StorePlan:
    """Images, templates, medias, latent quality and pairs of a synthetic store (no model outputs)."""

    preset: StorePreset
    seed: int
    structure: Structure
    pairs: np.ndarray  # (M, 2) template indices
    label: np.ndarray
    quality: np.ndarray  # (N,) latent quality in (0, 1)

    def __post_init__(self) -> None:
        s = self.structure
        self.image_media = s.image_media()
        self.image_template = s.media_template[self.image_media]
        self.image_subject = s.template_subject[self.image_template]


def plan_store(preset: str = "ijbc", seed: int = 0, with_pairs: bool = True) -> StorePlan:
    """The structure, latent qualities and (optionally) pairs of a store preset, with its exact counts."""
    p = store_preset(preset)
    rng = child_rng(seed, 10)
    n_probes = p.n_templates - p.n_subjects
    s = plan_structure(p.n_subjects, n_probes, 3.0, p.video_fraction, 0.0, rng, n_images=p.n_images)
    if with_pairs:
        pairs, label = make_pairs(s.template_subject, p.n_subjects, p.n_genuine, p.n_pairs - p.n_genuine, rng)
    else:
        pairs, label = np.zeros((0, 2), np.int64), np.zeros(0, bool)
    qrng = child_rng(seed, 11)
    media_q = qrng.beta(3.0, 1.6, len(s.media_frames))
    q = np.repeat(media_q, s.media_frames) + 0.03 * qrng.standard_normal(int(s.media_frames.sum()))
    quality = np.clip(q, 0.01, 0.99).astype(np.float32)
    return StorePlan(p, seed, s, pairs, label, quality)


def synthetic_quality(preset: str = "ijbc", seed: int = 0) -> np.ndarray:
    """(N,) true latent quality of each image of `synthesize_store(preset, seed)` (higher = better)."""
    return plan_store(preset, seed, with_pairs=False).quality


def _image_table(plan: StorePlan) -> ImageTable:
    """Paths loose_crop/<n>.jpg, subjects/templates/medias (1-based ids), detector scores, landmarks."""
    n = len(plan.quality)
    rng = child_rng(plan.seed, 12)
    names = np.char.add(np.char.add("loose_crop/", np.arange(1, n + 1).astype(str)), ".jpg")
    score = np.clip(0.45 + 0.54 * plan.quality + 0.03 * rng.standard_normal(n, dtype=np.float32), 0.3, 0.999)
    crop = rng.uniform(150, 250, n).astype(np.float32)
    face = crop * rng.uniform(0.35, 0.6, n).astype(np.float32) / 112
    offset = crop[:, None] * (0.5 + rng.uniform(-0.08, 0.08, (n, 2)).astype(np.float32)) - 56 * face[:, None]
    lm = _REF_5PTS[None] * face[:, None, None] + offset[:, None, :]
    lm += rng.standard_normal((n, 5, 2), dtype=np.float32)
    return ImageTable(
        path=names.astype(object),
        subject=plan.image_subject + 1,
        template=plan.image_template + 1,
        media=plan.image_media + 1,
        detector_score=score.astype(np.float32),
        landmarks=lm,
    )


def identification_protocol(plan: StorePlan, preset: str) -> Identification:
    """Galleries G1, G2 (IJB-C's 1,772 and 1,759 enrolment templates for the ijbc preset, in that
    proportion otherwise) and the probe set (every other template), with 1-based ids as in the store."""
    s = plan.structure
    galleries = {
        g: TemplateSet(t + 1, s.template_subject[t] + 1) for g, t in plan_galleries(s.n_enrol, plan.seed).items()
    }
    probes = np.arange(s.n_enrol, len(s.template_subject))
    return Identification(
        IDENTIFICATION,
        galleries,
        TemplateSet(probes + 1, s.template_subject[probes] + 1),
        description=f"synthetic {preset} 1:N identification (galleries G1, G2; mixed probes)",
    )


def _model_specs(models: tuple[str, ...], dim: int, dtype: str) -> list[ModelSpec]:
    bad = [m for m in models if m not in MODEL_FAMILIES]
    if bad:
        raise ValueError(f"unknown synthetic models {bad}; known: {', '.join(MODEL_FAMILIES)}")
    return [
        ModelSpec(
            name=m,
            family=MODEL_FAMILIES[m],
            embedding_dim=dim,
            outputs=MODEL_OUTPUTS[m],
            checkpoint="synthetic",
            random_init=False,
            config={"synthetic": True},
            dtype=dtype,
        )
        for m in models
    ]


class _ModelSynth:
    """Per-model constants: subject centres, a bank of shared media directions, a sigma profile."""

    def __init__(self, seed: int, k: int, n_subjects: int, dim: int) -> None:
        rng = child_rng(seed, 20, k)
        c = rng.standard_normal((n_subjects, dim), dtype=np.float32)
        self.centres = c / np.linalg.norm(c, axis=1, keepdims=True)
        self.bank = rng.standard_normal((BANK, dim), dtype=np.float32) / np.float32(np.sqrt(dim))
        self.profile = np.exp(0.5 * rng.standard_normal(dim, dtype=np.float32)).astype(np.float32)
        self.k = k

    def chunk(self, name: str, plan: StorePlan, start: int, stop: int) -> dict[str, np.ndarray]:
        """All outputs of this model for rows [start, stop): the same values whatever the store's chunking."""
        n_rows = len(plan.quality)
        first, last = start // GEN_BLOCK, -(-stop // GEN_BLOCK)
        parts = [
            self._block(name, plan, b * GEN_BLOCK, min((b + 1) * GEN_BLOCK, n_rows), b) for b in range(first, last)
        ]
        lo = start - first * GEN_BLOCK
        return {k: np.concatenate([p[k] for p in parts])[lo : lo + stop - start] for k in parts[0]}

    def _block(self, name: str, plan: StorePlan, start: int, stop: int, block: int) -> dict[str, np.ndarray]:
        """Outputs for the rows of one generation block, from a generator seeded by (seed, model, block)."""
        rng = child_rng(plan.seed, 21, self.k, block)
        n, dim = stop - start, self.centres.shape[1]
        q = plan.quality[start:stop]
        media = plan.image_media[start:stop]
        spread = (1.0 + 5.0 * (1 - q) ** 1.5)[:, None]  # noise size relative to the unit centre
        emb = rng.standard_normal((n, dim), dtype=np.float32)
        emb *= np.float32(0.6 / np.sqrt(dim))
        emb += 0.8 * media_noise(self.bank, media)
        emb *= spread
        emb += self.centres[plan.image_subject[start:stop]]
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        if name == "magface":
            mag = 12 + 26 * q + 1.5 * rng.standard_normal(n, dtype=np.float32)
        else:
            mag = 20 + 4 * rng.standard_normal(n, dtype=np.float32)
        emb *= mag[:, None].astype(np.float32)
        out = {"embedding": emb, "norm": np.linalg.norm(emb, axis=1).astype(np.float32)}
        if name == "scaleface":
            logit = 5 * (q - 0.55) + 0.5 * rng.standard_normal(n, dtype=np.float32)
            out["scale"] = (64 / (1 + np.exp(-logit))).astype(np.float32)
        if name == "pfe":
            base = np.exp(-1.5 - 3.0 * q + 0.3 * rng.standard_normal(n, dtype=np.float32)).astype(np.float32)
            wobble = 1 + 0.2 * self.bank[(media * 7 + 3) % BANK] * np.float32(np.sqrt(dim) / 3)
            out["sigma_sq"] = (base[:, None] * self.profile[None, :] * np.abs(wobble)).astype(np.float32)
        return out


GENERATOR = "facedata.synthetic.store"
"""Recorded in every store this module writes (attrs extra.synthetic.generator): only such a store may be replaced."""


def refuse_foreign_store(path: Path) -> None:
    """DataError unless `path` is absent or a store this generator wrote: an extracted store, or any other
    file or folder at that path, is the user's and is never replaced."""
    if not path.exists() and not path.is_symlink():
        return
    generator = None
    try:
        with FeatureStore.open(path) as store:
            extra = store.attrs.get("extra") or {}
            generator = (extra.get("synthetic") or {}).get("generator")
    except Exception:  # not a readable store at all: certainly not ours (Interrupted is not an Exception)
        generator = None
    if generator != GENERATOR:
        raise DataError(
            "exists and is not a synthetic store written by `datasets synthesize-store`; refusing to replace it "
            "(choose another path, or remove it yourself)",
            path=path,
        )


def synthesize_store(
    out_path: str | Path,
    preset: str = "ijbc",
    seed: int = 0,
    models: tuple[str, ...] = ("scaleface", "pfe", "magface"),
    chunk_rows: int | None = None,
    progress: bool = True,
    embedding_dtype: str = "f4",
) -> Path:
    """Write a complete synthetic store (format by suffix: .zarr or .h5) for a store preset; returns its path."""
    t0 = time.perf_counter()
    p = store_preset(preset)
    plan = plan_store(preset, seed)
    images = _image_table(plan)
    protocol = Protocol(
        PROTOCOL,
        plan.pairs + 1,
        plan.label,
        level="template",
        description=f"synthetic {preset} 1:1 template verification",
    )
    tables = DatasetTables(
        name="ijbc" if preset == "ijbc" else f"synthetic-{preset}",
        images=images,
        protocols={PROTOCOL: protocol},
        identification={IDENTIFICATION: identification_protocol(plan, preset)},
    )
    specs = _model_specs(tuple(models), p.embedding_dim, embedding_dtype)
    refuse_foreign_store(Path(out_path))
    extra = {"synthetic": {"preset": preset, "seed": seed, "generator": GENERATOR}}
    store = create_store(
        out_path, tables, specs, chunk_rows=chunk_rows or DEFAULT_CHUNK_ROWS, overwrite=True, extra_attrs=extra
    )
    del tables, images, protocol
    synths = {m: _ModelSynth(seed, k, p.n_subjects, p.embedding_dim) for k, m in enumerate(models)}
    t_plan = time.perf_counter() - t0
    try:
        with store.writer() as w:
            for chunk in range(store.n_chunks):
                a, b = store.chunk_rows_range(chunk)
                outputs = {m: s.chunk(m, plan, a, b) for m, s in synths.items()}
                w.write_chunk(chunk, np.full(b - a, STATUS_OK, np.uint8), outputs)
                if progress and (chunk % 20 == 0 or chunk == store.n_chunks - 1):
                    print(f"\rsynthetic store: chunk {chunk + 1}/{store.n_chunks}", end="", file=sys.stderr)
    finally:
        store.close()
    if progress:
        print(
            f"\nsynthetic store {out_path}: planned in {t_plan:.1f} s, total {time.perf_counter() - t0:.1f} s",
            file=sys.stderr,
        )
    return Path(out_path)
