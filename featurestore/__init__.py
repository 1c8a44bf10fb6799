"""The feature store: the one torch-free module that `extract` writes and `analyze` reads."""

__version__ = "0.1.0"
"""The toolkit's version (setup.cfg reads it from here; every command's `--version` prints it)."""
