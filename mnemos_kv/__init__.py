"""mnemos-kv: an embedded memory database for local AI agents, on LMDB.

>>> from mnemos_kv import Mnemos
>>> with Mnemos.open(path) as db:                      # doctest: +SKIP
...     mid = db.remember("We chose Stripe for payments")
...     db.ask("What payment provider did we choose?")[0].text
'We chose Stripe for payments'
"""

import logging as _logging

from ._batch import Batch, PendingId
from ._model import Document, Edge, Memory
from .embedders import Embedder, HashingEmbedder, SentenceTransformerEmbedder, from_callable
from .errors import (CapacityError, ClosedError, CorruptionError, DiskFullError, DuplicateKeyError,
                     EmbedderMismatchError, FormatVersionError, InvalidInputError,
                     LogCorruptionError, MapFullError, MemoryNotFoundError, MissingDependencyError,
                     MnemosError, NeedsRecoveryError, NotAStoreError, ReadOnlyError, ReplayError, StorageError,
                     StoreError, UnsupportedError)
from ._semantic import extractive_summary
from ._migrate import migrate
from .store import MemoryId, Mnemos, Namespace
from .rerank import CrossEncoderReranker

__version__ = "0.1.0"

# Silent by default, as a library should be: the application configures logging.
# INFO: slow or surprising events (index rebuilds, map growth, compaction phases,
# recovery on open, a skipped LMDB rewrite); DEBUG: the rest.
_logging.getLogger("mnemos_kv").addHandler(_logging.NullHandler())

__all__ = [
    "Mnemos", "Namespace", "Memory", "Edge", "Document", "MemoryId", "Batch", "PendingId",
    "Embedder", "HashingEmbedder", "SentenceTransformerEmbedder", "from_callable",
    "CrossEncoderReranker",
    "extractive_summary", "migrate",
    "MnemosError", "InvalidInputError", "DuplicateKeyError", "MemoryNotFoundError",
    "StoreError", "NotAStoreError", "FormatVersionError", "EmbedderMismatchError",
    "ReadOnlyError", "ReplayError", "CapacityError", "ClosedError", "CorruptionError",
    "LogCorruptionError", "NeedsRecoveryError", "StorageError", "MapFullError", "DiskFullError", "MissingDependencyError",
    "UnsupportedError",
    "__version__",
]

for _name in __all__:
    _obj = globals().get(_name)
    if hasattr(_obj, "__module__") and isinstance(_obj, type):
        try:
            _obj.__module__ = "mnemos_kv"
        except (AttributeError, TypeError):
            pass
del _name, _obj
