"""Progress reporting for long calls.

Library calls take an optional callback ``progress(phase: str, done: int, total: int)``
(the same signature as ``compact(progress=...)``): called as work goes on, with
``done`` counting up to ``total`` within each named phase. :class:`Reporter` is the
command line's implementation: a tqdm bar per phase when tqdm is installed and stderr
is a terminal, otherwise a plain line on stderr per phase and every ~10 %.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Sequence

from .errors import InvalidInputError

Progress = Callable[[str, int, int], Any]
#: Texts per embedder call when a progress callback wants to hear about embedding.
EMBED_CHUNK = 1024
#: Long loops (records, log frames) report every this many items.
EVERY = 10_000

__all__ = ["Progress", "check", "embed", "Reporter"]


def check(progress: Any) -> Progress | None:
    """None or a callable ``progress(phase, done, total)``; anything else is bad input."""
    if progress is not None and not callable(progress):
        raise InvalidInputError(
            f"progress must be None or a callable progress(phase, done, total), got {progress!r}")
    return progress


def embed(embedder: Any, texts: Sequence[str], progress: Progress | None,
          phase: str = "embed") -> list[Any]:
    """Embed ``texts`` (checked, normalised rows); in chunks reporting ``phase`` when
    ``progress`` is given, in one embedder call otherwise."""
    from .embedders import embed_checked
    if progress is None or len(texts) <= EMBED_CHUNK:
        out = list(embed_checked(embedder, list(texts)))
        if progress is not None:
            progress(phase, len(texts), len(texts))
        return out
    out = []
    for start in range(0, len(texts), EMBED_CHUNK):
        out.extend(embed_checked(embedder, list(texts[start:start + EMBED_CHUNK])))
        progress(phase, len(out), len(texts))
    return out


class Reporter:
    """A progress callback for the command line (see the module doc); ``close()`` it."""

    def __init__(self, enabled: bool = True, stream: Any = None, min_total: int = 1000) -> None:
        self.enabled = enabled
        self.min_total = min_total  # smaller phases are quick: no plain lines for them
        self.stream = stream if stream is not None else sys.stderr
        self.phase: str | None = None
        self.bar: Any = None
        self.last = -1
        self.tqdm: Any = None
        if enabled and getattr(self.stream, "isatty", lambda: False)():
            try:
                import tqdm  # type: ignore[import-untyped]  # optional extra "progress"
                self.tqdm = tqdm.tqdm
            except ImportError:
                pass

    def __call__(self, phase: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if phase != self.phase:
            self.close()
            self.phase, self.last = phase, -1
            if self.tqdm is not None and total > 1:
                self.bar = self.tqdm(total=total, desc=phase, unit="item", leave=False,
                                     file=self.stream)
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
            return
        if total < self.min_total:
            return
        tenth = (10 * done) // total
        if tenth != self.last:
            self.last = tenth
            print(f"  {phase}: {done}/{total}", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> "Reporter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
