"""Errors raised by the feature store; each message names the store and the key at fault."""


class StoreError(Exception):
    """A store that is missing, not a store, of an unknown schema, or used inconsistently."""


class StoreLockedError(StoreError):
    """Another live process is writing the same rows (or the same HDF5 file)."""


class StoreWriteError(StoreError):
    """Writing a chunk failed (no space, I/O error, closed file); the chunk was not marked done."""

    def __init__(self, message: str, key: str = "", chunk: int = -1, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.chunk = chunk
        self.cause = cause
