"""``dump``: every memory and edge of some namespaces as plain dicts, from one snapshot.

Before the LMDB reads, the pages of data.mdb are checked without LMDB (see
``_lmdbcheck``), so a damaged file raises CorruptionError instead of crashing.
"""

from __future__ import annotations

import base64
from typing import Any, Iterator, Sequence

from . import _storage as S
from ._engine import Engine
from ._timeutil import from_us
from ._verify import lmdb_pages
from .errors import CorruptionError


def jsonable(value: Any) -> Any:
    """Metadata as JSON-ready values (bytes become ``{"$bytes": base64}``)."""
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value


def rows(engine: Engine, namespaces: Sequence[str] | None, vectors: bool) -> Iterator[dict[str, Any]]:
    """Per namespace (sorted): its memories in time order, then their outgoing edges."""
    engine.check_open()
    problems, _ = lmdb_pages(engine)
    if problems:
        raise CorruptionError(problems[0])
    with engine.snapshot() as snap:
        txn = snap.txn
        names = list(engine.namespaces(txn)) if namespaces is None else list(namespaces)
        for name in names:
            nid = engine.ns_id(name, txn)
            if nid is None:
                continue
            prefix = S.u32(nid)
            ids = []
            with txn.cursor(db=engine.env.db("time")) as cur:
                found = cur.set_range(prefix)
                keys = []
                if found:
                    for k in cur.iternext(values=False):
                        if not k.startswith(prefix):
                            break
                        keys.append(k)
            for k in keys:
                mid = S.from_u64(k[12:20])
                rec = engine.record(txn, mid)
                if rec is None:
                    continue
                row: dict[str, Any] = {"kind": "memory", "id": rec.id, "namespace": name,
                                       "text": rec.text, "metadata": jsonable(rec.metadata),
                                       "type": rec.type, "created_at": from_us(rec.ts)}
                if rec.key is not None:
                    row["key"] = rec.key
                if vectors:
                    row["vector"] = [float(x) for x in engine.checked_vector(snap, rec)]
                ids.append(mid)
                yield row
            for mid in ids:
                for src, dst, rel, w in engine.edges(txn, mid, "out"):
                    yield {"kind": "edge", "namespace": name, "src": src, "dst": dst,
                           "relation": rel, "weight": w}
