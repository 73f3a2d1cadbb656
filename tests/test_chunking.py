"""Deterministic chunking and ingest_document: stable ids, links, replacement, validation."""

from __future__ import annotations

import pytest

from mnemos_kv import Document, DuplicateKeyError, InvalidInputError, MemoryNotFoundError, Mnemos
from mnemos_kv._chunking import chunk_text

WORDS = " ".join(f"w{i}" for i in range(25))


def test_word_windows_overlap_and_cover_the_text() -> None:
    chunks = chunk_text(WORDS, chunk_size=10, overlap=3)
    assert [(c.start, c.end) for c in chunks] == [(0, 10), (7, 17), (14, 24), (21, 25)]
    assert chunks[0].text == "w0 w1 w2 w3 w4 w5 w6 w7 w8 w9"
    assert chunks[-1].text == "w21 w22 w23 w24"
    assert chunk_text(WORDS, 10, 3) == chunks  # deterministic
    assert [c.text for c in chunk_text("a b", 5, 0)] == ["a b"]
    assert chunk_text("   \n ", 5, 0) == []


def test_word_chunks_keep_the_original_spacing() -> None:
    text = "Title\n\nFirst  paragraph here.\nSecond line"
    assert [c.text for c in chunk_text(text, 3, 1)] == [
        "Title\n\nFirst  paragraph", "paragraph here.\nSecond", "Second line"]


def test_char_windows() -> None:
    chunks = chunk_text("abcdefghij", chunk_size=4, overlap=1, unit="chars")
    assert [c.text for c in chunks] == ["abcd", "defg", "ghij"]
    assert [c.text for c in chunk_text("ab" + " " * 8 + "cd", 4, 0, unit="chars")] == ["ab  ", "  cd"]


@pytest.mark.parametrize("kw", [dict(chunk_size=0), dict(chunk_size=5, overlap=5),
                                dict(overlap=-1), dict(chunk_size=2.5), dict(unit="tokens"),
                                dict(chunk_size=True)])
def test_bad_chunking_parameters(db: Mnemos, kw) -> None:
    with pytest.raises(InvalidInputError):
        db.ingest_document(WORDS, **kw)
    assert db.count() == 0


def test_ingest_links_chunks_and_document(db: Mnemos) -> None:
    doc = db.ingest_document(WORDS, chunk_size=10, overlap=3, doc_id="manual",
                             metadata={"title": "The manual", "lang": "en"})
    assert isinstance(doc, Document) and doc.changed and doc.doc_id == "manual"
    assert len(doc.chunk_ids) == 4 and db.count() == 5
    home = db.get_by_key("manual")
    assert home.id == doc.id and home.text == "Document manual: The manual"
    assert home.metadata["doc"]["chunks"] == 4 and home.metadata["lang"] == "en"
    for i, cid in enumerate(doc.chunk_ids):
        m = db.get_by_key(f"manual#{i}")
        assert m.id == cid and m.metadata["chunk"] == i and m.metadata["doc_id"] == "manual"
        assert m.type == "semantic"
        rels = {(e.relation, e.dst) for e in db.neighbors(cid, direction="out")}
        assert ("part_of", doc.id) in rels
        if i + 1 < 4:
            assert ("next", doc.chunk_ids[i + 1]) in rels
    prev = db.neighbors(doc.chunk_ids[2], relation="next", direction="in")
    assert [e.src for e in prev] == [doc.chunk_ids[1]]
    assert db.ask("w12 w13", top_k=1)[0].id == doc.chunk_ids[1]


def test_reingesting_the_same_document_changes_nothing(db: Mnemos) -> None:
    first = db.ingest_document(WORDS, chunk_size=10, overlap=3, doc_id="d")
    seq = db.stats()["seq"]
    again = db.ingest_document(WORDS, chunk_size=10, overlap=3, doc_id="d")
    assert again.chunk_ids == first.chunk_ids and again.id == first.id and not again.changed
    assert db.stats()["seq"] == seq and db.count() == 5


def test_chunk_ids_stable_across_reopen_and_default_doc_id(store_path: str) -> None:
    with Mnemos.open(store_path) as s:
        first = s.ingest_document(WORDS, chunk_size=8, overlap=2)
    assert first.doc_id.startswith("doc-")
    with Mnemos.open(store_path) as s:
        again = s.ingest_document(WORDS, chunk_size=8, overlap=2)
        assert again == Document(first.doc_id, first.id, first.chunk_ids, changed=False)


def test_changed_document_replaces_its_chunks(db: Mnemos) -> None:
    old = db.ingest_document(WORDS, chunk_size=10, overlap=3, doc_id="d")
    keep = db.remember("an unrelated memory")
    new = db.ingest_document("fresh text about otters " * 3, chunk_size=10, overlap=3, doc_id="d")
    assert new.changed and len(new.chunk_ids) == 2
    assert db.count() == 1 + 1 + 2
    for mid in (old.id, *old.chunk_ids):
        with pytest.raises(MemoryNotFoundError):
            db.get(mid)
    assert db.get_by_key("d#1").id == new.chunk_ids[1]
    with pytest.raises(MemoryNotFoundError):
        db.get_by_key("d#2")
    assert keep in db
    assert all(h.metadata.get("doc_id") != "d" or h.id in (new.id, *new.chunk_ids)
               for h in db.ask("w12", top_k=10))
    # metadata or parameters changing also counts as a change
    assert db.ingest_document("fresh text about otters " * 3, chunk_size=5, overlap=0, doc_id="d").changed


def test_reserved_metadata_and_key_clashes(db: Mnemos) -> None:
    with pytest.raises(InvalidInputError, match="reserved"):
        db.ingest_document(WORDS, metadata={"chunk": 1})
    db.remember("a plain memory", key="taken")
    with pytest.raises(DuplicateKeyError):
        db.ingest_document(WORDS, doc_id="taken")
    for bad in ("", "x" * 300, 5):
        with pytest.raises(InvalidInputError):
            db.ingest_document(WORDS, doc_id=bad)
    with pytest.raises(InvalidInputError):
        db.ingest_document("   ")
    assert db.count() == 1


def test_ingest_in_a_namespace_and_progress_flag(db: Mnemos) -> None:
    ns = db.namespace("docs")
    d = ns.ingest_document(WORDS, chunk_size=5, overlap=0, doc_id="x", progress=True)
    assert ns.count() == 6 and db.count() == 0
    assert ns.get_by_key("x#4").id == d.chunk_ids[4]
    with pytest.raises(InvalidInputError):
        ns.ingest_document(WORDS, progress="yes")
