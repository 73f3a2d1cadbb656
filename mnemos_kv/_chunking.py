"""Deterministic document chunking and ``ingest_document``: fixed windows, stable keys, one transaction.

A document becomes one *document memory* plus one memory per chunk:

* windows of ``chunk_size`` units (``"words"``: runs of non-whitespace; ``"chars"``:
  characters), each starting ``chunk_size - overlap`` units after the previous one,
  the last one ending at the end of the text. A word chunk's text is the original
  text from its first word to its last (whitespace and line breaks kept);
* chunk ``i`` has the key ``f"{doc_id}#{i}"`` and metadata ``doc_id``, ``chunk`` (i)
  and ``span`` ([first unit, end unit)), plus the caller's metadata;
* the document memory has the key ``doc_id``, the text ``"Document <doc_id>"`` (or
  ``"Document <doc_id>: <title>"`` when the metadata has a ``title``), and metadata
  ``doc_id`` and ``doc`` = {sha256, chunks, chunk_size, overlap, unit};
* edges: chunk ``i`` -``next``-> chunk ``i+1`` (so the previous chunk is the
  incoming ``next`` edge) and every chunk -``part_of``-> the document.

``doc_id`` defaults to ``"doc-"`` + the first 16 hex digits of the SHA-256 of the text.
The fingerprint (SHA-256 of text, chunking parameters, type and metadata) is stored on
the document memory: ingesting the same document again changes nothing and returns the
same ids; a changed one forgets the old document and chunks and writes the new ones, all
in one transaction.
"""

from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass
from typing import Any, Mapping

from . import _records as R
from ._model import Document
from .embedders import embed_checked
from .errors import DuplicateKeyError, InvalidInputError, MemoryNotFoundError

__all__ = ["UNITS", "RESERVED_KEYS", "Chunk", "chunk_text", "fingerprint", "chunk_key", "ingest"]

UNITS = ("words", "chars")
#: Metadata keys written by ingest_document; a caller's metadata may not use them.
RESERVED_KEYS = frozenset({"doc_id", "chunk", "span", "doc"})
#: doc ids longer than this (UTF-8 bytes) would make chunk keys exceed the key limit.
MAX_DOC_ID_BYTES = 200
EMBED_BATCH = 64
_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class Chunk:
    """One window of a document: its index, unit span [start, end) and text."""

    index: int
    start: int
    end: int
    text: str


def _windows(total: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) unit ranges of the windows over ``total`` units."""
    step = size - overlap
    out = []
    start = 0
    while True:
        end = min(start + size, total)
        out.append((start, end))
        if end >= total:
            return out
        start += step


def chunk_text(text: str, chunk_size: int = 512, overlap: int = 50,
               unit: str = "words") -> list[Chunk]:
    """Split ``text`` into overlapping fixed windows; the same input gives the same chunks."""
    check_params(chunk_size, overlap, unit)
    chunks: list[Chunk] = []
    if unit == "words":
        spans = [(m.start(), m.end()) for m in _WORD.finditer(text)]
        if not spans:
            return []
        for s, e in _windows(len(spans), chunk_size, overlap):
            chunks.append(Chunk(len(chunks), s, e, text[spans[s][0]:spans[e - 1][1]]))
    else:
        if not text:
            return []
        for s, e in _windows(len(text), chunk_size, overlap):
            piece = text[s:e]
            if piece.strip():  # a window of only whitespace is not a memory
                chunks.append(Chunk(len(chunks), s, e, piece))
    return chunks


def check_params(chunk_size: Any, overlap: Any, unit: Any) -> None:
    """Validate the chunking parameters; raises InvalidInputError naming the bad one."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise InvalidInputError(f"chunk_size must be a positive int, got {chunk_size!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap < chunk_size:
        raise InvalidInputError(
            f"overlap must be an int from 0 to chunk_size - 1 ({chunk_size - 1}), got {overlap!r}")
    if unit not in UNITS:
        raise InvalidInputError(f"unit must be 'words' or 'chars', got {unit!r}")


def fingerprint(text: str, chunk_size: int, overlap: int, unit: str, type_: str,
                metadata: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of everything that determines the stored chunks."""
    h = hashlib.sha256()
    h.update(R.encode([chunk_size, overlap, unit, type_, dict(metadata)]))
    h.update(text.encode("utf-8"))
    return h.hexdigest()


def chunk_key(doc_id: str, index: int) -> str:
    """The key of chunk ``index`` of document ``doc_id``."""
    return f"{doc_id}#{index}"


def _check_doc_id(doc_id: Any, text: str) -> str:
    """The validated doc id, or the one derived from the text's SHA-256."""
    if doc_id is None:
        return "doc-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    if not isinstance(doc_id, str) or not doc_id.strip():
        raise InvalidInputError(f"doc_id must be a non-empty str or None, got {doc_id!r}")
    if R.utf8_size(doc_id, "doc_id") > MAX_DOC_ID_BYTES:
        raise InvalidInputError(f"doc_id is longer than {MAX_DOC_ID_BYTES} bytes: {doc_id[:40]!r}...")
    return doc_id


def _progress(total: int, enabled: bool | None) -> Any:
    """A tqdm bar over ``total`` chunks, or None (no tqdm, or not wanted)."""
    if enabled is False or (enabled is None and (total < 256 or not sys.stderr.isatty())):
        return None
    try:
        from tqdm import tqdm  # optional extra "progress"
    except ImportError:
        return None
    return tqdm(total=total, unit="chunk", desc="embedding", leave=False)


def _existing(engine: Any, ns: str, doc_id: str) -> tuple[Any, list[int]]:
    """(document record or None, ids of every memory holding one of this doc's keys)."""
    with engine.snapshot() as snap:
        nid = snap.ns_id(ns)
        if nid is None:
            return None, []
        did = snap.key_id(nid, doc_id)
        doc = snap.record(did) if did is not None else None
        if doc is not None and not (isinstance(doc.metadata.get("doc"), dict)
                                    and doc.metadata.get("doc_id") == doc_id):
            raise DuplicateKeyError(
                f"key {doc_id!r} already names memory {did}, which is not a document; "
                "choose another doc_id")
        n_old = int(doc.metadata["doc"].get("chunks", 0)) if doc is not None else 0
        ids = []
        i = 0
        while True:
            cid = snap.key_id(nid, chunk_key(doc_id, i))
            if cid is None and i >= n_old:
                break
            if cid is not None:
                rec = snap.record(cid)
                if rec is not None and rec.metadata.get("doc_id") != doc_id:
                    raise DuplicateKeyError(
                        f"key {chunk_key(doc_id, i)!r} already names memory {cid}, which is not "
                        f"a chunk of document {doc_id!r}")
                ids.append(cid)
            i += 1
        return doc, ids


def ingest(handle: Any, text: str, chunk_size: int, overlap: int, *, doc_id: Any,
           metadata: Any, unit: str, type_: str, timestamp: Any,
           progress: Any) -> Document:
    """Chunk, embed and store a document in one transaction (see the module docstring)."""
    from ._timeutil import to_us
    engine = handle._engine
    engine.check_writable()
    if not isinstance(text, str):
        raise InvalidInputError(f"text must be a str, got {type(text).__name__}")
    if not text.strip():
        raise InvalidInputError("text must not be empty or only whitespace")
    check_params(chunk_size, overlap, unit)
    type_ = R.check_type(type_)
    meta = R.check_metadata(metadata)
    clash = sorted(RESERVED_KEYS & set(meta))
    if clash:
        raise InvalidInputError(f"metadata keys {clash} are reserved by ingest_document")
    doc_id = _check_doc_id(doc_id, text)
    if progress is not None and not isinstance(progress, bool) and not callable(progress):
        raise InvalidInputError(
            f"progress must be True, False, None or a callable progress(phase, done, total), "
            f"got {progress!r}")
    callback = progress if callable(progress) else None
    ts = to_us(timestamp if timestamp is not None else engine.clock(), "timestamp")
    fp = fingerprint(text, chunk_size, overlap, unit, type_, meta)
    chunks = chunk_text(text, chunk_size, overlap, unit)
    for c in chunks:
        R.check_text(c.text, f"chunk {c.index} text")
    title = meta.get("title")
    doc_text = f"Document {doc_id}" + (f": {title}" if isinstance(title, str) and title.strip() else "")
    doc_meta = {**meta, "doc_id": doc_id,
                "doc": {"sha256": fp, "chunks": len(chunks), "chunk_size": chunk_size,
                        "overlap": overlap, "unit": unit}}
    R.check_metadata(doc_meta)

    doc, old_ids = _existing(engine, handle.name, doc_id)
    if doc is not None and doc.metadata["doc"].get("sha256") == fp and len(old_ids) == len(chunks):
        return Document(doc_id, doc.id, tuple(old_ids), changed=False)

    texts = [doc_text] + [c.text for c in chunks]
    bar = None if callback is not None else _progress(len(chunks), progress)
    embedder = engine.require_embedder()
    vecs: list[Any] = []
    try:
        for start in range(0, len(texts), EMBED_BATCH):
            batch = texts[start:start + EMBED_BATCH]
            vecs.extend(embed_checked(embedder, batch))
            if bar is not None:
                bar.update(len(batch) - (1 if start == 0 else 0))
            if callback is not None:
                callback("embed", len(vecs), len(texts))
    finally:
        if bar is not None:
            bar.close()

    reqs: list[tuple[Any, ...]] = []
    for mid in ([doc.id] if doc is not None else []) + old_ids:
        reqs.append(("forget", handle.name, mid))
    base = len(reqs)
    reqs.append(("remember", handle.name, doc_text, doc_meta, type_, ts, doc_id, vecs[0]))
    for c, v in zip(chunks, vecs[1:]):
        cmeta = {**meta, "doc_id": doc_id, "chunk": c.index, "span": [c.start, c.end]}
        reqs.append(("remember", handle.name, c.text, cmeta, type_, ts, chunk_key(doc_id, c.index), v))
    for i in range(len(chunks)):
        if i + 1 < len(chunks):
            reqs.append(("connect", handle.name, ("ref", base + 1 + i), ("ref", base + 2 + i), "next", 1.0))
        reqs.append(("connect", handle.name, ("ref", base + 1 + i), ("ref", base), "part_of", 1.0))
    if callback is not None:
        callback("write", 0, 1)
    try:
        results = engine.write(reqs)
    except MemoryNotFoundError as exc:
        raise MemoryNotFoundError(
            f"document {doc_id!r} changed while it was being ingested ({exc}); try again") from exc
    if callback is not None:
        callback("write", 1, 1)
    return Document(doc_id, results[base], tuple(results[base + 1: base + 1 + len(chunks)]), changed=True)
