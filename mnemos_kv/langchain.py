"""A LangChain ``VectorStore`` on a mnemos-kv store (``pip install "mnemos-kv[langchain]"``).

>>> from langchain_core.embeddings import DeterministicFakeEmbedding
>>> from mnemos_kv.langchain import MnemosVectorStore
>>> vs = MnemosVectorStore("agent.mem", DeterministicFakeEmbedding(size=64))  # doctest: +SKIP
>>> vs.add_texts(["We chose Stripe"], ids=["billing"])                          # doctest: +SKIP
>>> vs.as_retriever().invoke("payment provider?")                              # doctest: +SKIP

Documents are memories of one namespace: ``Document.id`` is the memory's key,
``page_content`` its text, ``metadata`` its metadata. Adding a document with an id
that exists replaces it atomically. See docs/langchain.md.
"""

from __future__ import annotations

import os
import uuid
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from . import _adapters as A
from .errors import EmbedderMismatchError, InvalidInputError, MissingDependencyError

try:
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.vectorstores import VectorStore
    from langchain_core.vectorstores.utils import maximal_marginal_relevance
except ImportError as _exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(
        'mnemos_kv.langchain needs langchain-core: pip install "mnemos-kv[langchain]"') from _exc

from .store import Mnemos, Namespace

__all__ = ["MnemosVectorStore", "MODES"]

#: ``mode=``: ``"hybrid"`` (the store's fused vector + BM25 ranking) or ``"vector"``
#: (pure cosine; scores are cosine similarities).
MODES = ("hybrid", "vector")


def _check_mode(mode: Any) -> str:
    if mode not in MODES:
        raise InvalidInputError(f"mode must be one of {list(MODES)}, got {mode!r}")
    return str(mode)


class MnemosVectorStore(VectorStore):
    """A LangChain vector store kept in one namespace of a mnemos-kv store.

    ``path_or_store`` is a store directory (opened here, with ``embedding`` as the
    store's embedder, and closed by :meth:`close`) or an open :class:`~mnemos_kv.Mnemos`
    (left open; its dimension must match). ``embedding`` is a LangChain ``Embeddings``:
    ``embed_documents`` for what is added, ``embed_query`` for searches. The store
    records the embedder as ``"langchain:" + embedding_name`` (default: the class
    name and its ``model``/``model_name``, e.g. ``langchain:OpenAIEmbeddings:text-embedding-3-small``)
    and its dimension (``dim``, probed with one ``embed_query`` call when not given).
    ``mode`` is the default ranking (``"hybrid"`` or ``"vector"``; each search may pass
    ``mode=``). ``id_factory`` makes ids for documents added without one (default:
    random UUID4 strings; inject one for reproducible runs). Other keyword arguments go
    to :meth:`Mnemos.open`.
    """

    def __init__(self, path_or_store: str | os.PathLike[str] | Mnemos, embedding: Embeddings, *,
                 namespace: str = "default", mode: str = "hybrid",
                 embedding_name: str | None = None, dim: int | None = None,
                 id_factory: Callable[[], str] | None = None, **open_kwargs: Any) -> None:
        self._mode = _check_mode(mode)
        if id_factory is not None and not callable(id_factory):
            raise InvalidInputError(f"id_factory must be callable, got {type(id_factory).__name__}")
        self._id_factory = id_factory or (lambda: str(uuid.uuid4()))
        self._embedding = embedding
        if isinstance(path_or_store, Mnemos):
            if open_kwargs:
                raise InvalidInputError(
                    f"open options {sorted(open_kwargs)} need a path, not an open store")
            self._db = path_or_store
            self._owns = False
            want = path_or_store._engine.dim
            if dim is not None and dim != want:
                raise EmbedderMismatchError(
                    f"store {path_or_store.path!r} has dimension {want}; got dim={dim}")
            self._dim = want
        elif isinstance(path_or_store, (str, os.PathLike)):
            emb = A.ExternalEmbedder(embedding, name=embedding_name, dim=dim)
            self._db = Mnemos.open(path_or_store, embedder=emb, **open_kwargs)
            self._owns = True
            self._dim = emb.dim
        else:
            raise InvalidInputError(
                f"path_or_store must be a path or a Mnemos store, got {type(path_or_store).__name__}")
        try:
            self._ns: Namespace = self._db.namespace(namespace)
        except BaseException:
            self.close()
            raise

    # -- the store -------------------------------------------------------------------

    @property
    def embeddings(self) -> Embeddings:
        return self._embedding

    @property
    def store(self) -> Mnemos:
        """The underlying mnemos-kv store."""
        return self._db

    @property
    def namespace(self) -> str:
        return self._ns.name

    @property
    def mode(self) -> str:
        return self._mode

    def close(self) -> None:
        """Close the store if this object opened it (idempotent)."""
        if self._owns:
            self._db.close()

    def __enter__(self) -> "MnemosVectorStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writes ----------------------------------------------------------------------

    def _vectors(self, texts: list[str]) -> np.ndarray:
        arr = np.asarray(self._embedding.embed_documents(texts), dtype=np.float32)
        if arr.shape != (len(texts), self._dim):
            raise InvalidInputError(
                f"embedding returned shape {arr.shape}; expected ({len(texts)}, {self._dim})")
        return arr

    def _query_vector(self, query: str) -> np.ndarray:
        vec = np.asarray(self._embedding.embed_query(query), dtype=np.float32)
        if vec.shape != (self._dim,):
            raise InvalidInputError(f"embed_query returned shape {vec.shape}; expected ({self._dim},)")
        return vec

    def add_texts(self, texts: Iterable[str], metadatas: list[dict[str, Any]] | None = None, *,
                  ids: list[str] | None = None, **kwargs: Any) -> list[str]:
        """Embed and store ``texts``; an id that exists is replaced (atomically, all
        texts in one transaction). Returns the ids (generated where not given)."""
        if isinstance(texts, str):
            raise InvalidInputError("add_texts takes a list of texts, not one str")
        texts = list(texts)
        if metadatas is not None and len(metadatas) != len(texts):
            raise InvalidInputError(
                f"got {len(metadatas)} metadatas for {len(texts)} texts")
        if ids is not None and len(ids) != len(texts):
            raise InvalidInputError(f"got {len(ids)} ids for {len(texts)} texts")
        given: list[str | None] = list(ids) if ids is not None else [None] * len(texts)
        out = [i if i is not None else self._id_factory() for i in given]
        for i in out:
            if not isinstance(i, str) or not i:
                raise InvalidInputError(f"document ids must be non-empty strs, got {i!r}")
        if not texts:
            return []
        vecs = self._vectors(texts)
        last = {key: n for n, key in enumerate(out)}  # the same id twice: the last one wins
        items = [{"key": out[n], "text": texts[n], "vector": vecs[n],
                  "metadata": (metadatas[n] if metadatas else None)}
                 for n in sorted(last.values())]
        A.write_by_key(self._ns, items)
        return out

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete the documents with these ids (missing ones are ignored); ``ids=None``
        deletes every document of the namespace. One transaction."""
        if ids is None:
            self._ns.drop()
            return True
        if isinstance(ids, str):
            raise InvalidInputError("delete takes a list of ids, not one str")
        A.delete_keys(self._ns, list(ids))
        return True

    # -- reads -----------------------------------------------------------------------

    @staticmethod
    def _doc(mem: Any) -> Document:
        return Document(id=mem.key, page_content=mem.text, metadata=dict(mem.metadata))

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The documents with these ids, in the given order; missing ids are left out."""
        found = A.get_by_keys(self._ns, [i for i in dict.fromkeys(ids) if isinstance(i, str) and i])
        return [self._doc(found[i]) for i in dict.fromkeys(ids) if i in found]

    def _search(self, *, query: str | None, vector: np.ndarray, k: int, filter: Any,
                mode: str | None) -> list[tuple[Document, float]]:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InvalidInputError(f"k must be a positive int, got {k!r}")
        f = A.check_filter(filter)
        m = self._mode if mode is None else _check_mode(mode)
        hits = A.search(self._db, [self._ns.name], text=query, vector=vector, k=k, mode=m,
                        filter=f)
        return [(self._doc(h), float(h.score if h.score is not None else 0.0)) for h in hits]

    def similarity_search_with_score(self, query: str, k: int = 4, filter: dict[str, Any] | None = None,
                                     *, mode: str | None = None, **kwargs: Any
                                     ) -> list[tuple[Document, float]]:
        """The ``k`` best documents for ``query`` with their scores (higher is better):
        the cosine similarity in ``"vector"`` mode, the fused score in ``"hybrid"``.
        ``filter`` is a metadata filter of the store's filter language."""
        return self._search(query=query, vector=self._query_vector(query), k=k, filter=filter,
                            mode=mode)

    def similarity_search(self, query: str, k: int = 4, filter: dict[str, Any] | None = None,
                          **kwargs: Any) -> list[Document]:
        return [d for d, _ in self.similarity_search_with_score(query, k, filter, **kwargs)]

    def similarity_search_with_score_by_vector(self, embedding: list[float], k: int = 4,
                                               filter: dict[str, Any] | None = None,
                                               **kwargs: Any) -> list[tuple[Document, float]]:
        """The ``k`` documents nearest to ``embedding`` by cosine (always pure vector)."""
        vec = np.asarray(embedding, dtype=np.float32)
        if vec.shape != (self._dim,):
            raise InvalidInputError(f"embedding has shape {vec.shape}; expected ({self._dim},)")
        return self._search(query=None, vector=vec, k=k, filter=filter, mode="vector")

    def similarity_search_by_vector(self, embedding: list[float], k: int = 4,
                                    filter: dict[str, Any] | None = None,
                                    **kwargs: Any) -> list[Document]:
        return [d for d, _ in self.similarity_search_with_score_by_vector(embedding, k, filter)]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        """Vector mode: cosine -> (1 + cos) / 2; hybrid: the fused score, capped to [0, 1]."""
        if self._mode == "vector":
            return lambda s: min(1.0, max(0.0, (1.0 + s) / 2.0))
        return lambda s: min(1.0, max(0.0, s))

    def max_marginal_relevance_search_by_vector(self, embedding: list[float], k: int = 4,
                                                fetch_k: int = 20, lambda_mult: float = 0.5,
                                                filter: dict[str, Any] | None = None,
                                                **kwargs: Any) -> list[Document]:
        """``k`` documents picked by maximal marginal relevance among the ``fetch_k``
        nearest to ``embedding`` (cosine)."""
        vec = np.asarray(embedding, dtype=np.float32)
        return self._mmr(None, vec, k, fetch_k, lambda_mult, filter, "vector")

    def max_marginal_relevance_search(self, query: str, k: int = 4, fetch_k: int = 20,
                                      lambda_mult: float = 0.5,
                                      filter: dict[str, Any] | None = None,
                                      *, mode: str | None = None, **kwargs: Any) -> list[Document]:
        """``k`` documents picked by maximal marginal relevance among the ``fetch_k``
        best for ``query`` (ranked in this store's mode), diversified by their vectors."""
        return self._mmr(query, self._query_vector(query), k, fetch_k, lambda_mult, filter, mode)

    def _mmr(self, query: str | None, vec: np.ndarray, k: int, fetch_k: int, lambda_mult: float,
             filter: Any, mode: str | None) -> list[Document]:
        if isinstance(fetch_k, bool) or not isinstance(fetch_k, int) or fetch_k < 1:
            raise InvalidInputError(f"fetch_k must be a positive int, got {fetch_k!r}")
        if not 0.0 <= float(lambda_mult) <= 1.0:
            raise InvalidInputError(f"lambda_mult must be in [0, 1], got {lambda_mult!r}")
        if vec.shape != (self._dim,):
            raise InvalidInputError(f"embedding has shape {vec.shape}; expected ({self._dim},)")
        f = A.check_filter(filter)
        m = self._mode if mode is None else _check_mode(mode)
        hits = A.search(self._db, [self._ns.name], text=query, vector=vec,
                        k=max(fetch_k, k), mode=m, filter=f)
        if not hits:
            return []
        cand = np.stack([self._ns.get_vector(h.id) for h in hits])
        chosen = maximal_marginal_relevance(vec, list(cand), lambda_mult=float(lambda_mult), k=k)
        return [self._doc(hits[i]) for i in chosen]

    # -- constructors ----------------------------------------------------------------

    @classmethod
    def from_texts(cls, texts: list[str], embedding: Embeddings,
                   metadatas: list[dict[str, Any]] | None = None, *,
                   ids: list[str] | None = None, **kwargs: Any) -> "MnemosVectorStore":
        """A store at ``path_or_store=`` (required keyword) holding ``texts``; other
        keywords are those of the constructor."""
        target = kwargs.pop("path_or_store", None)
        if target is None:
            raise InvalidInputError("from_texts needs path_or_store= (a store path or a Mnemos)")
        vs = cls(target, embedding, **kwargs)
        try:
            vs.add_texts(texts, metadatas, ids=ids)
        except BaseException:
            vs.close()
            raise
        return vs

    def __repr__(self) -> str:
        return f"<MnemosVectorStore {self._db.path!r} namespace={self._ns.name!r} mode={self._mode!r}>"
