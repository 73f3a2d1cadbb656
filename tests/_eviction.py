"""The documented eviction formula written out independently of ``mnemos_kv._capacity``,
and a check of a whole history's ``evict`` ops against it (tests/test_capacity.py,
tests/test_pg_concurrency.py)."""

from __future__ import annotations

from mnemos_kv._replay import iter_ops

DAY = 86_400
HALF = {"episodic": 7 * DAY, "semantic": 30 * DAY, "procedural": 90 * DAY}


def expected_order(mems: dict[int, tuple[float, str]], pinned: set[int],
                   unit: int = 1_000_000) -> list[int]:
    """The documented formula, written out independently: evict in descending
    x = (t_ref - ts) / half_life(type) (t_ref = newest timestamp, pinned included),
    ties by ascending id; pinned never. ``unit``: µs per unit of ``ts`` (1: integer µs,
    as the ops carry them)."""
    t_ref = max(ts for ts, _t in mems.values())
    xs = {i: ((t_ref - ts) * unit) / (HALF[t] * 1_000_000)
          for i, (ts, t) in mems.items() if i not in pinned}
    return sorted(xs, key=lambda i: (-xs[i], i))


def replay_ops(path: str) -> list[dict]:
    return [op for _s, _q, op in iter_ops(path)]


def check_evictions_follow_the_formula(ops: list[dict]) -> int:
    """Walk a history: each ``evict`` op must name the memory the documented formula
    (``expected_order``) puts first among the live, unpinned memories of its scope at
    that point of the history.
    Returns how many evictions were checked."""
    live: dict[int, tuple[int, int, str]] = {}  # id -> (ns, ts µs, type)
    pinned: set[int] = set()
    n = 0
    types = ["episodic", "semantic", "procedural"]
    for op in ops:
        kind = op["op"]
        if kind == "mem":
            live[op["id"]] = (op["ns"], op["ts"], types[op["type"]])
            if op.get("pin"):
                pinned.add(op["id"])
        elif kind in ("forget", "evict"):
            if kind == "evict":
                scope = op["scope"]
                mems = {i: (ts, t) for i, (ns, ts, t) in live.items()
                        if scope is None or ns == scope}
                order = expected_order(mems, pinned, unit=1)
                assert order and order[0] == op["id"], (op, order[:3])
                n += 1
            del live[op["id"]]
            pinned.discard(op["id"])
        elif kind == "pin":
            (pinned.add if op.get("on", True) else pinned.discard)(op["id"])
    return n
