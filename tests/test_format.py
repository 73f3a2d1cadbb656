"""The stable file format: stores written by earlier formats open, verify and answer;
a store of a newer format is refused. Fixtures: tests/fixtures/v<format>_<name>.tar.gz
(made by scripts/make_fixtures.py with the code of that format; see docs/format.md)."""

from __future__ import annotations

import os
import tarfile

import pytest

from mnemos_kv import FormatVersionError, Mnemos
from mnemos_kv import _records as R

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")

#: What scripts/make_fixtures.py wrote (ids are assigned in order from 1).
TEXTS = {
    1: "We chose Stripe for payments; PayPal was too expensive.",
    2: "The office moves to Berlin in March.",
    3: "Our main database is PostgreSQL 16.",
    4: "Alice leads the mobile app; Bob owns the backend APIs.",
    5: "We deploy on Tuesdays and Thursdays, never on Fridays.",
    6: "The team lunch is on Wednesday at the Thai place.",
    8: "The payments key is kept in the vault.",
}


def _extract(tmp_path, name: str) -> str:
    dest = str(tmp_path / name)
    with tarfile.open(os.path.join(FIXTURES, f"{name}.tar.gz")) as tar:
        tar.extractall(dest)
    return dest


@pytest.mark.parametrize("name", ["v1_plain", "v1_compacted", "v2_plain", "v2_compacted",
                                  "v5_plain", "v5_compacted", "v6_plain", "v6_compacted"])
@pytest.mark.parametrize("readonly", [True, False])
def test_old_format_fixture_opens_verifies_and_answers(tmp_path, name: str, readonly: bool) -> None:
    path = _extract(tmp_path, name)
    expected = dict(TEXTS)
    if name.endswith("_compacted"):
        expected[10] = "After compaction: the audit starts on June 2nd."
    with Mnemos.open(path, readonly=readonly) as db:
        rep = db.verify()
        assert rep.ok, rep
        assert {m.id: m.text for m in db.memories()} == expected
        assert db.get(2).metadata == {"topic": "office", "month": 3}
        assert db.get(5).type == "procedural"
        assert db.get_by_key("vault").id == 8
        assert 7 not in db  # forgotten before the fixture was closed
        assert db.ask("payments provider Stripe", top_k=1)[0].id == 1
        assert db.ask("Berlin office move", top_k=1)[0].id == 2
        assert [(e.src, e.dst, e.relation, e.weight) for e in db.neighbors(1)] == [(1, 3, "depends_on", 0.5)]
        assert [m.text for m in db.namespace("critic").memories()] == ["The Berlin move plan lacks a budget."]
        old = int(name[1])
        assert db.stats()["format_version"] == (old if readonly else R.FORMAT_VERSION)
        if not readonly:  # writes of the current format next to the old records
            mid = db.remember("A new memory in the current format.")
            db.connect(mid, 1)
            db.forget(3)
            assert db.verify().ok
            digest = db.state_digest()
    if not readonly:
        with Mnemos.open(path) as db:
            assert db.state_digest() == digest and db.verify().ok
            assert db.stats()["format_version"] == R.FORMAT_VERSION


def test_format5_crc16_rows_keep_their_checksum_next_to_crc32_rows(tmp_path) -> None:
    """A format-5 store upgraded to 6: its rows and log ops keep their CRC-16 (``CHECKED``,
    ``vcrc``), new ones get a CRC-32 (``CHECKED32``, ``vc32``); damage in either kind of
    row is reported by verify and refused by ask."""
    import numpy as np

    from mnemos_kv import CorruptionError
    from mnemos_kv._vectors import CHECKED, CHECKED32, vector_file

    path = _extract(tmp_path, "v5_plain")
    with Mnemos.open(path) as db:
        new = db.remember_many([f"A new memory number {i} about the Stripe payments." for i in range(20)])
        db.sync()
        with db._engine.snapshot() as snap:
            flags = snap.slots["flags"][: snap.state.n_slots].tolist()
            gen = snap.state.gen
        assert set(flags[:9]) == {CHECKED} and set(flags[9:]) == {CHECKED32}
        assert db.verify(deep=True).ok  # (the log's ops: vcrc before the upgrade, vc32 after)
        old_vec = db.get_vector(2)
    dim = old_vec.size
    for slot, mid in ((1, 2), (9 + 3, new[3])):  # an old CRC-16 row, then a new CRC-32 one
        with open(vector_file(path, gen), "r+b") as f:
            f.seek(4096 + slot * dim * 4 + 5)
            b = f.read(1)
            f.seek(-1, 1)
            f.write(bytes((b[0] ^ 0x10,)))
        with Mnemos.open(path) as db:
            assert not db.verify(deep=True).ok
            with pytest.raises(CorruptionError, match=f"memory {mid}"):
                db.get_vector(mid)
            assert np.isfinite(db.get_vector(1)).all()
        with open(vector_file(path, gen), "r+b") as f:  # repaired again
            f.seek(4096 + slot * dim * 4 + 5)
            b = f.read(1)
            f.seek(-1, 1)
            f.write(bytes((b[0] ^ 0x10,)))


#: What scripts/make_fixtures.py remembers after the last flush of the ``unflushed`` fixture.
UNFLUSHED = {10: "The backup runs nightly at two.", 11: "Carol reviews every payments change.",
             12: "Is the vault key rotated yearly?"}


@pytest.mark.parametrize("readonly", [True, False])
def test_format6_unflushed_store_keeps_its_staged_postings(tmp_path, readonly: bool) -> None:
    """A format-6 store whose writer ended without closing: its unflushed frames, rows
    and staged postings (the terms themselves, as format 6 staged them) are read as
    they are by a read-only open; a read-write open flushes them, and format-7 writes
    (a window of staged ids) go on from there. Table entries against the window:
    tests/test_lexstage.py::test_window_staging_equals_staged_terms."""
    from mnemos_kv import _lexstage
    path = _extract(tmp_path, "v6_unflushed")

    def staged(db: Mnemos) -> tuple[list[int], int]:
        """(the lengths of the lexstage table's values, how many ids the window holds)"""
        env = db._engine.env
        with env.read() as txn:
            lo, hi = _lexstage.window(txn, env)
            if not env.has_db(_lexstage.DB):
                return [], hi - lo
            with txn.cursor(db=env.db(_lexstage.DB)) as cur:
                return [len(v) for v in cur.iternext(keys=False)], hi - lo

    with Mnemos.open(path, readonly=readonly) as db:
        assert db.verify().ok
        assert {m.id: m.text for m in db.memories()} == {**TEXTS, **UNFLUSHED}
        for mid, text in UNFLUSHED.items():
            assert db.ask(text, mode="lexical", top_k=1)[0].id == mid
        assert db.ask("nightly backup", top_k=1)[0].id == 10
        if readonly:  # read as format 6 staged them: the terms, in the table
            old, n = staged(db)
            assert len(old) == 3 and min(old) > 4 and n == 0
            return
        assert staged(db) == ([], 0)  # the first read-write open flushed the store
        new = db.remember("The backup moved to three at night.")
        assert staged(db) == ([], 1)  # format 7: the window of staged ids
        assert sorted(m.id for m in db.ask("backup", mode="lexical")) == [10, new]
        db.forget(11)
        assert staged(db) == ([], 1)  # (not staged: nothing merged)
        assert 11 not in [m.id for m in db.ask("Carol reviews payments", mode="lexical")]
        assert db.verify().ok
        digest = db.state_digest()
    with Mnemos.open(path) as db:
        assert db.state_digest() == digest and db.verify().ok
        assert sorted(m.id for m in db.ask("backup", mode="lexical")) == [10, new]


def test_newer_format_is_refused(tmp_path, monkeypatch) -> None:
    path = str(tmp_path / "s")
    with Mnemos.open(path) as db:
        db.remember("hello")
    monkeypatch.setattr(R, "FORMAT_VERSION", R.FORMAT_VERSION - 1)
    for readonly in (True, False):
        with pytest.raises(FormatVersionError, match="newer|Upgrade"):
            Mnemos.open(path, readonly=readonly)
