"""The exception tree of mnemos-kv.

Every error the library raises on purpose is a :class:`MnemosError`, so callers
can catch one class, or a precise subclass::

    MnemosError
    ├── InvalidInputError (ValueError)        bad argument: rejected before any write
    │   └── DuplicateKeyError                  a memory with that key already exists
    ├── MemoryNotFoundError (KeyError)         unknown id (or one of another namespace)
    ├── StoreError                             the store on disk cannot be used as asked
    │   ├── NotAStoreError                     the path is not a mnemos-kv store
    │   ├── FormatVersionError                 the store was written by a newer format
    │   ├── EmbedderMismatchError              a different embedder than the store's
    │   ├── ReadOnlyError                      a write on a store opened read-only
    │   ├── ClosedError                        a call on a closed store
    │   ├── ReplayError                        a replay cannot apply here, or diverged
    │   ├── CapacityError                      a capacity limit cannot be met (pinned memories)
    │   ├── UnsupportedError                   a call this store's engine does not offer (PostgreSQL)
    │   └── CorruptionError                    a file fails its checks (log, vectors, records)
    │       ├── LogCorruptionError             a replay-log frame is torn or fails its CRC
    │       └── NeedsRecoveryError             a damaged or lost file: run ``recover``
    └── StorageError                           the storage layer failed (wraps lmdb.Error)
        ├── MapFullError                       the LMDB map is full and cannot grow
        └── DiskFullError                      the disk has no room left

Messages name the bad value and what was expected.
"""

from __future__ import annotations

__all__ = [
    "MnemosError",
    "InvalidInputError",
    "DuplicateKeyError",
    "MemoryNotFoundError",
    "StoreError",
    "NotAStoreError",
    "FormatVersionError",
    "EmbedderMismatchError",
    "ReadOnlyError",
    "ClosedError",
    "ReplayError",
    "CapacityError",
    "CorruptionError",
    "LogCorruptionError",
    "NeedsRecoveryError",
    "StorageError",
    "MapFullError",
    "DiskFullError",
    "MissingDependencyError",
    "UnsupportedError",
]


class MnemosError(Exception):
    """Root of every error mnemos-kv raises on purpose."""


class InvalidInputError(MnemosError, ValueError):
    """An argument has the wrong type or value; nothing was written."""


class DuplicateKeyError(InvalidInputError):
    """``remember(key=...)`` named a key that already exists in the namespace."""


class MemoryNotFoundError(MnemosError, KeyError):
    """No live memory with that id in this namespace (forgotten, evicted or never made)."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want the sentence.
        return str(self.args[0]) if self.args else "memory not found"


class StoreError(MnemosError):
    """The store on disk cannot be used as asked."""


class NotAStoreError(StoreError):
    """The path exists but is not a mnemos-kv store (or does not exist, read-only)."""


class FormatVersionError(StoreError):
    """The store's format version is newer than this library understands."""


class EmbedderMismatchError(StoreError):
    """The embedder given differs (name or dimension) from the one the store was made with."""


class ReadOnlyError(StoreError):
    """A mutating call on a store opened with ``readonly=True``."""


class ClosedError(StoreError):
    """A call on a store (or namespace handle) after ``close()``."""


class ReplayError(StoreError):
    """A replay file cannot be applied to this store (not empty, wrong starting point),
    or applying it did not reproduce the source's state digest."""


class CapacityError(StoreError):
    """A write (or a new capacity limit) cannot be kept within a capacity limit, because
    every memory that would have to be evicted is pinned. Nothing was written."""


class UnsupportedError(StoreError):
    """A call the store's engine does not offer (e.g. ``compact`` on a PostgreSQL store);
    the message names the call. Nothing was written."""


class CorruptionError(StoreError):
    """A file of the store fails its checks; the message names the file and offset."""


class LogCorruptionError(CorruptionError):
    """A replay-log frame is truncated or fails its checksum.

    ``offset`` is the byte offset of the bad frame, ``frame`` its index (0-based)
    in the file, ``good_seq`` the last sequence number read intact (or None).
    """

    def __init__(self, message: str, *, path: str = "", offset: int = -1,
                 frame: int = -1, good_seq: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.offset = offset
        self.frame = frame
        self.good_seq = good_seq


class NeedsRecoveryError(CorruptionError):
    """A file of the store is damaged or lost in a way that opening cannot repair without
    losing committed data; nothing was changed. ``Mnemos.recover(path)`` (``mnemos-kv
    recover PATH``) rebuilds the store from its base snapshot and replay log."""


class StorageError(MnemosError):
    """The storage layer failed; ``__cause__`` holds the underlying error."""


class MapFullError(StorageError):
    """The LMDB map is full and could not grow. Hint: open with a larger ``map_size=``."""


class DiskFullError(StorageError):
    """The disk has no space left, or a file reached the largest size the file system or a
    resource limit allows (EFBIG); nothing of the failed call was kept."""


class MissingDependencyError(MnemosError, ImportError):
    """An optional feature needs a package that is not installed (the message names the extra)."""
