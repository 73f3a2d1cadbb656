# Loose stub for py-lmdb, used by mypy only (see [tool.mypy] in pyproject.toml).
# py-lmdb's own stubs type every read as ``bytes | memoryview``; mnemos-kv opens every
# transaction with buffers=False, so reads are bytes. Treat the module as untyped.
from typing import Any

def __getattr__(name: str) -> Any: ...
