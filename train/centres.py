"""Class centres for the ArcFace loss: loaded from a classifier checkpoint (insightface partial-fc shards,
any number of ranks) with the row count checked, or estimated as normalised per-identity mean embeddings.

The original fine-tune silently re-initialised the centres at random when the shards did not match the
dataset (insightface's released shards hold 91,180 rows for a 93,431-class config); here it is an error.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F

SHARD_PATTERN = re.compile(r"softmax_fc_gpu_(\d+)\.pt$|rank_(\d+)_softmax_weight\.pt$")
"""arcface_torch's `softmax_fc_gpu_{rank}.pt` (state_dict with `weight`) and partial_fc v1's
`rank_{rank}_softmax_weight.pt` (a bare tensor)."""


class CentreError(ValueError):
    """Centres that cannot be used: missing shards, bad contents, or a row count that is not the dataset's."""


def shard_paths(path: str | Path) -> list[Path]:
    """The shard files of a classifier checkpoint, in rank order: a folder holding them, one shard file
    (its siblings are found), or any other single tensor file."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if path.is_file() and not SHARD_PATTERN.search(path.name):
        return [path]
    found = []
    for p in folder.iterdir():
        m = SHARD_PATTERN.search(p.name)
        if m:
            found.append((int(m.group(1) or m.group(2)), p))
    if not found:
        raise CentreError(f"centres {path}: no softmax_fc_gpu_<rank>.pt (or rank_<rank>_softmax_weight.pt) files")
    found.sort()
    ranks = [r for r, _ in found]
    if ranks != list(range(len(ranks))):
        raise CentreError(f"centres {folder}: shard ranks {ranks} are not 0..{len(ranks) - 1}")
    return [p for _, p in found]


def _shard_tensor(path: Path) -> torch.Tensor:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unreadable or unsafe pickles: one line naming the file
        raise CentreError(f"centres {path}: not a readable tensor checkpoint ({type(exc).__name__}: {exc})") from exc
    if isinstance(obj, dict):
        keys = [k for k in obj if k.endswith("weight")]
        if len(keys) != 1:
            raise CentreError(f"centres {path}: expected one '*weight' tensor, found keys {list(obj)[:8]}")
        obj = obj[keys[0]]
    if not isinstance(obj, torch.Tensor) or obj.ndim != 2:
        raise CentreError(f"centres {path}: expected a 2-d (classes, dim) tensor, got {type(obj).__name__}")
    return obj.float()


def load_centres(path: str | Path, n_classes: int, dim: int | None = None) -> torch.Tensor:
    """(n_classes, dim) centres from a classifier checkpoint; a row count other than the dataset's
    identity count is refused with both counts named."""
    shards = shard_paths(path)
    weight = torch.cat([_shard_tensor(p) for p in shards], dim=0)
    where = f"centres {path} ({len(shards)} shard{'s' if len(shards) > 1 else ''})"
    if weight.shape[0] != n_classes:
        raise CentreError(
            f"{where} hold {weight.shape[0]:,} class rows but the dataset has {n_classes:,} identities; "
            "use the classifier trained on this dataset, or --estimate-centres"
        )
    if dim is not None and weight.shape[1] != dim:
        raise CentreError(f"{where} are {weight.shape[1]}-d but the embeddings are {dim}-d")
    return weight


def estimate_centres(embeddings: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Normalised mean of the L2-normalised embeddings of each identity, shape (n_classes, dim); an identity
    without images keeps a zero row (its cosines are 0)."""
    e = F.normalize(embeddings if embeddings.dtype == torch.float64 else embeddings.float(), dim=1)
    sums = torch.zeros(n_classes, e.shape[1], dtype=e.dtype).index_add_(0, labels.long(), e)
    return F.normalize(sums, dim=1)


def mean_centre_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over classes of the cosine between two centre sets of the same shape."""
    return float(F.cosine_similarity(a.float(), b.float(), dim=1).mean())


def save_shards(weight: torch.Tensor, folder: str | Path, ranks: int = 1) -> list[Path]:
    """Write centres as arcface_torch does: `softmax_fc_gpu_{rank}.pt` = {'weight': rows of that rank}
    (rows split as evenly as torch.tensor_split does)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for rank, part in enumerate(torch.tensor_split(weight.detach().cpu(), ranks, dim=0)):
        p = folder / f"softmax_fc_gpu_{rank}.pt"
        torch.save({"weight": part.clone()}, p)
        out.append(p)
    return out
