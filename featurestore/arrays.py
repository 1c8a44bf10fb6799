"""What each array of a store means, written beside it: dimension names and attributes.

So a store describes itself to tools that do not know this package (xarray, plain zarr, h5py, dask):
every array has `dimension_names` (Zarr) or dimension labels (HDF5) and attributes with a `long_name`,
its `meaning`, `units` or `kind`, CF-style `flag_values`/`flag_meanings` for codes, `raw: true` on
embeddings, `kind: uncertainty | confidence` on per-image scores. Additive to schema 1: readers of the
store never need them, and stores written before them read the same (docs/store.md, "Array attributes").
"""

from __future__ import annotations

from typing import Any

from .schema import MODEL_OUTPUTS, STATUS_NAMES

DIMENSIONS = {
    "image": "one row per image of images/ (the store's row order)",
    "dim": "one embedding dimension",
    "point": "one of the 5 facial landmarks (left eye, right eye, nose, left mouth corner, right mouth corner)",
    "xy": "x then y, in pixels of the original image",
    "pair": "one verification pair of a protocol",
    "side": "the pair's first (0) and second (1) side",
    "chunk": "one chunk of chunk_rows image rows",
    "column": "one array whose checksum the column holds (root attribute checksum_arrays, in order)",
}
"""Every dimension name a store uses, with its meaning (docs/store.md)."""

# per-image model outputs that are uncertainties (larger = worse) or confidences (larger = better)
_OUTPUT_KIND = {"norm": "confidence", "scale": "confidence", "sigma_sq": "uncertainty"}
_OUTPUT_UNITS = {"norm": "1 (L2 norm)", "scale": "1", "sigma_sq": "variance per dimension"}


def _flags(codes: dict[int, str]) -> dict[str, Any]:
    """CF-style code meanings: `flag_values` [0, 1, ...] and `flag_meanings` as one space-separated string."""
    return {
        "flag_values": sorted(codes),
        "flag_meanings": " ".join(codes[k].replace(" ", "_") for k in sorted(codes)),
    }


def _images(name: str) -> tuple[tuple[str, ...], dict[str, Any]]:
    table: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
        "path": (("image",), {"long_name": "image path", "meaning": "path of the image relative to the data root"}),
        "subject": (
            ("image",),
            {"long_name": "subject id", "meaning": "identity label of the image"},
        ),
        "template": (
            ("image",),
            {"long_name": "template id", "meaning": "template the image belongs to; -1: none"},
        ),
        "media": (
            ("image",),
            {"long_name": "media id", "meaning": "media (photo or video) of the image; -1: none"},
        ),
        "detector_score": (
            ("image",),
            {"long_name": "face detector score", "meaning": "the dataset's detector confidence; NaN: none"},
        ),
        "landmarks": (
            ("image", "point", "xy"),
            {
                "long_name": "5-point facial landmarks",
                "meaning": "left eye, right eye, nose, left and right mouth corners as (x, y); NaN: pre-aligned image",
                "units": "pixels",
            },
        ),
        "status": (
            ("image",),
            {
                "long_name": "extraction status",
                "meaning": "outcome of reading and aligning the image",
                **_flags(STATUS_NAMES),
            },
        ),
    }
    if name in table:
        return table[name]
    return ("image",), {"long_name": f"images {name}"}


def _model_output(
    model: str, output: str, family: str, quality: dict[str, str]
) -> tuple[tuple[str, ...], dict[str, Any]]:
    row, _dtype, meaning = MODEL_OUTPUTS.get(output, ("", "", f"{output} of model {model}"))
    dims = ("image", "dim") if row == "D" else ("image",)
    attrs: dict[str, Any] = {"long_name": f"{model} {output}", "meaning": meaning, "model": model, "family": family}
    if output in ("embedding", "embedding_flip"):
        attrs.update(raw=True, units="1", note="not L2-normalised; NaN rows: images that failed")
    if output in _OUTPUT_KIND:
        attrs["kind"] = _OUTPUT_KIND[output]
    if output in quality:  # an external model's imported score: its declared direction
        attrs.update(kind=quality[output], meaning=f"imported per-image score {output!r} ({quality[output]})")
    if output in _OUTPUT_UNITS:
        attrs["units"] = _OUTPUT_UNITS[output]
    return dims, attrs


def describe_array(
    key: str,
    *,
    levels: dict[str, str],
    families: dict[str, str],
    qualities: dict[str, dict[str, str]] | None = None,
) -> tuple[tuple[str, ...], dict]:
    """Dimension names and attributes of the array at `key` (`images/status`, `models/m/embedding`, ...);
    `levels` maps protocol names to their level, `families` model names to their family, `qualities` an
    external model's imported scores to their direction."""
    parts = key.split("/")
    if parts[0] == "images" and len(parts) == 2:
        return _images(parts[1])
    if parts[0] == "models" and len(parts) == 3:
        return _model_output(parts[1], parts[2], families.get(parts[1], ""), (qualities or {}).get(parts[1], {}))
    if parts[0] == "protocols" and len(parts) == 3:
        name, what, level = parts[1], parts[2], levels.get(parts[1], "")
        ids = "template ids (images/template)" if level == "template" else "image row indices (dimension image)"
        if what == "pairs":
            return ("pair", "side"), {
                "long_name": f"{name} pairs",
                "meaning": f"the two sides of each pair, as {ids}",
                "level": level,
                "kind": "template_id" if level == "template" else "row_index",
            }
        if what == "label":
            return ("pair",), {
                "long_name": f"{name} labels",
                "meaning": "true: genuine (same subject), false: impostor",
            }
        return (), {"long_name": f"{name} {what}"}  # an array of a kind this module does not know: named per array
    if key == "progress/chunk_done":
        return ("chunk",), {
            "long_name": "chunk done flags",
            "meaning": "set only after the chunk's rows and checksums were flushed",
            **_flags({0: "not done", 1: "done"}),
        }
    if key == "progress/chunk_crc32":
        return ("chunk", "column"), {
            "long_name": "chunk checksums",
            "meaning": "zlib.crc32 of each array's rows of a done chunk; columns: root attribute checksum_arrays",
        }
    return (), {}
