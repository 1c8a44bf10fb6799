"""The feature store: the one torch-free module that `extract` writes and `analyze` reads."""
