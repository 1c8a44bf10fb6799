"""Errors raised by the feature store; each message names the store and the key at fault."""


class StoreError(Exception):
    """A store that is missing, not a store, of an unknown schema, or used inconsistently."""


class StoreLockedError(StoreError):
    """Another live process is writing the same rows (or the same HDF5 file)."""
