"""Built-in data files (model configs, pipelines, dataset manifests) found as package data.

They live inside the package that reads them (`extract/configs/models/`, `pipelines/configs/pipelines/`,
`facedata/data_manifests/`, ...) and are found through importlib.resources, so a wheel or a non-editable
install has them too; the repository's top-level `configs/...` and `data_manifests/` are links to them.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def package_data_dir(package: str, *parts: str) -> Path:
    """The folder `parts` inside the installed `package`, as a filesystem path."""
    found = files(package).joinpath(*parts)
    if not isinstance(found, Path):  # a zip import: the loaders here read files by path
        raise RuntimeError(f"package {package!r} is not installed as files ({found!r}); install it unzipped")
    return found
