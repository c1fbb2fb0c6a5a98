"""Dense retrieval: inner-product search over passage embeddings made by an :class:`Encoder`.

The encoder (any Hugging Face ``AutoModel``, by default the bundled all-MiniLM-L6-v2) lives in
:mod:`search_env.retrieval.encoder`.

:class:`DenseRetriever` embeds a :class:`Corpus` once, in batches and longest passages first, and keeps
the embeddings on disk (``embeddings.npy``, memory-mapped on load, plus ``ids.json`` and ``meta.json``
with the encoder settings and the corpus fingerprint). Search is exact inner product in numpy by default,
in chunks so that a memory-mapped index never needs a score matrix the size of the corpus; with
``faiss-cpu`` installed (the ``dense`` extra) it can also use a FAISS Flat, HNSW or IVF index.

Hits are the ``k`` best passages by score, ties broken by corpus position. ``batch_search`` encodes and
scores its queries together, so its scores can differ from ``search``'s in the last float bits (~1e-6).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from search_env._cache import built_once, cache_dir, cache_key, check_index_meta, index_meta, load_or_build, replace_dir
from search_env.data.corpus import Corpus
from search_env.retrieval.base import Hit, check_queries
from search_env.retrieval.encoder import DEFAULT_ENCODER, Encoder, get_encoder

__all__ = ["DenseRetriever", "get_dense"]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
INDEX_KINDS = ("numpy", "flat", "hnsw", "ivf")
_META_FILE = "meta.json"
_FAISS_FILE = "index.faiss"
_TIE_MARGIN = 16  # extra candidates fetched past k so that ties at the cut are ordered by position
_SCORE_BLOCK = 1 << 24  # floats in one (queries x passages) score block of the numpy search


def _import_faiss():
    try:
        import faiss
    except ImportError:
        raise ImportError("FAISS indexes need faiss-cpu: pip install 'search_env[dense]' "
                          "(or use index='numpy')") from None
    return faiss


def _top_k_rows(scores: np.ndarray, positions: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """For each row, the ``k`` best (score, position) pairs, by score then position (best first)."""
    out_pos = np.empty((len(scores), min(k, scores.shape[1])), dtype=np.int64)
    out_scores = np.empty(out_pos.shape, dtype=np.float32)
    for row in range(len(scores)):
        order = np.lexsort((positions[row], -scores[row]))[:k]
        out_pos[row], out_scores[row] = positions[row][order], scores[row][order]
    return out_pos, out_scores


class DenseRetriever:
    """Inner-product search over encoder embeddings of a :class:`Corpus`.

    Args:
        corpus: the passages; each is embedded as its FlashRAG ``contents`` (``"Title"`` newline text).
        encoder: an :class:`Encoder` or the model name to build one with (default: bundled MiniLM).
        index: ``"numpy"`` (exact, default), or with faiss-cpu ``"flat"`` (exact), ``"hnsw"`` or ``"ivf"``
            (approximate; built from the embeddings on first use and saved next to them).
        cache: True keeps the embeddings under ``cache_dir("dense", ...)`` keyed by corpus fingerprint and
            encoder settings; a path uses that folder (loaded if it holds this corpus's index, else built
            there); False keeps everything in memory.
        mmap: memory-map the saved embeddings (default True): processes on one machine share one copy
            in the page cache, and a corpus larger than RAM can still be searched.
        show_progress: progress bar while embedding (default: for corpora over 2,000 passages).
        hnsw_m, ef_search: HNSW graph degree and search breadth. nlist, nprobe: IVF cells (default
            about ``4·sqrt(n)``) and cells visited per query.
    """

    def __init__(
        self,
        corpus: Corpus,
        encoder: Encoder | str = DEFAULT_ENCODER,
        *,
        index: str = "numpy",
        cache: bool | str | os.PathLike = True,
        mmap: bool = True,
        show_progress: bool | None = None,
        hnsw_m: int = 32,
        ef_search: int = 128,
        nlist: int | None = None,
        nprobe: int = 16,
    ):
        self._setup(corpus, encoder, index, hnsw_m=hnsw_m, ef_search=ef_search, nlist=nlist, nprobe=nprobe)
        show_progress = len(corpus) > 2000 if show_progress is None else show_progress

        if cache is False or cache is None:
            self.embeddings = self._embed(None, show_progress)
        else:
            explicit = cache is not True
            self.directory = Path(cache) if explicit else cache_dir("dense") / self._cache_key()
            self._explicit = explicit
            self._load_or_build(self.directory, explicit=explicit, mmap=mmap, show_progress=show_progress)
        self._build_index()

    def _setup(self, corpus: Corpus, encoder: Encoder | str, index: str, *, hnsw_m: int = 32, ef_search: int = 128,
               nlist: int | None = None, nprobe: int = 16) -> None:
        if index not in INDEX_KINDS:
            raise ValueError(f"index must be one of {INDEX_KINDS}, not {index!r}")
        if index != "numpy":
            _import_faiss()
        if len(corpus) == 0:
            raise ValueError("cannot build a dense index over an empty corpus")
        self.corpus = corpus
        self.encoder = get_encoder(encoder) if isinstance(encoder, str) else encoder
        self.kind = index
        self.faiss_params = {"hnsw_m": int(hnsw_m), "ef_search": int(ef_search), "nlist": nlist, "nprobe": int(nprobe)}
        self.directory: Path | None = None
        self._explicit = False
        self.embeddings: np.ndarray | None = None
        self._faiss = None

    @classmethod
    def from_embeddings(
        cls, corpus: Corpus, embeddings: np.ndarray, encoder: Encoder | str = DEFAULT_ENCODER, *,
        index: str = "numpy", **faiss_params: Any,
    ) -> DenseRetriever:
        """A retriever over precomputed passage vectors (one float32 row per passage, in corpus order; a
        memory-mapped array stays mapped). ``encoder`` must be the one that made them: it encodes queries."""
        self = cls.__new__(cls)
        self._setup(corpus, encoder, index, **faiss_params)
        if embeddings.shape != (len(corpus), self.encoder.dim) or embeddings.dtype != np.float32:
            raise ValueError(f"embeddings must be float32 of shape {(len(corpus), self.encoder.dim)}, "
                             f"got {embeddings.dtype} {embeddings.shape}")
        self.embeddings = embeddings
        self._build_index()
        return self

    # -- building, saving, loading -------------------------------------------------------------

    def _cache_key(self) -> str:
        return cache_key(self.corpus.fingerprint, {**self.encoder.config(), "format": FORMAT_VERSION})

    def _embed(self, out: np.ndarray | None, show_progress: bool) -> np.ndarray:
        texts = [passage.contents for passage in self.corpus]
        return self.encoder.encode(texts, "passage", out=out, show_progress=show_progress)

    def _write(self, directory: Path, show_progress: bool = False) -> None:
        """Embeddings (encoded straight into the file when not yet in memory), ids and metadata."""
        shape = (len(self.corpus), self.encoder.dim)
        array = np.lib.format.open_memmap(directory / "embeddings.npy", mode="w+", dtype=np.float32, shape=shape)
        if self.embeddings is None:
            self._embed(array, show_progress)
        else:
            array[:] = self.embeddings
        array.flush()
        del array
        Path(directory, "ids.json").write_text(json.dumps(self.corpus.ids, ensure_ascii=False), encoding="utf-8")
        meta = index_meta(format_version=FORMAT_VERSION, corpus=self.corpus, encoder=self.encoder.config(),
                          dtype="float32")
        Path(directory, _META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")

    def _load_or_build(self, directory: Path, *, explicit: bool, mmap: bool, show_progress: bool) -> None:
        """Load the index in ``directory``, or embed the corpus into it first (see :func:`load_or_build`)."""

        def embed_into(tmp: Path) -> None:
            self.embeddings = None  # a half-loaded stale index is not copied
            if show_progress:
                logger.warning("search_env: embedding %d passages with %s once, into %s",
                               len(self.corpus), self.encoder.name, directory)
            self._write(tmp, show_progress)

        load_or_build(directory, _META_FILE, explicit=explicit, what="dense index",
                      load=lambda folder: self._load_embeddings(folder, mmap=mmap), write=embed_into)

    def _load_embeddings(self, directory: Path, *, mmap: bool) -> None:
        """Read the embeddings; ValueError when they were built from another corpus or with other encoder settings."""
        check_index_meta(directory, _META_FILE, what="dense", format_version=FORMAT_VERSION, corpus=self.corpus,
                         expect={"encoder": self.encoder.config()})
        self.embeddings = np.load(directory / "embeddings.npy", mmap_mode="r" if mmap else None)
        if self.embeddings.shape != (len(self.corpus), self.encoder.dim):
            raise ValueError(f"dense index {directory}: embeddings have shape {self.embeddings.shape}, "
                             f"expected {(len(self.corpus), self.encoder.dim)}")

    def save(self, directory: str | os.PathLike) -> None:
        """Write the embeddings, ids and metadata to ``directory`` (replaced atomically)."""
        replace_dir(directory, self._write, overwrite=True)

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike,
        corpus: Corpus,
        encoder: Encoder | str | None = None,
        *,
        index: str = "numpy",
        mmap: bool = True,
        **faiss_params: Any,
    ) -> DenseRetriever:
        """Read an index written by :meth:`save` (or a ``cache`` folder).

        ``encoder`` defaults to the one recorded in the index. ValueError when the index was built from
        another corpus or with other encoder settings.
        """
        directory = Path(directory)
        if not (directory / _META_FILE).exists():
            raise FileNotFoundError(f"{directory} holds no search_env dense index (no {_META_FILE})")
        if encoder is None:
            recorded = json.loads((directory / _META_FILE).read_text(encoding="utf-8"))["encoder"]
            keys = ("pooling", "query_prefix", "passage_prefix", "normalize", "max_length")
            settings = {key: recorded[key] for key in keys}
            encoder = get_encoder(recorded["model"], **settings)
        return cls(corpus, encoder, index=index, cache=directory, mmap=mmap, **faiss_params)

    # -- FAISS ---------------------------------------------------------------------------------

    def _faiss_folder(self) -> str:
        """The folder, inside the index folder, that keeps this FAISS index (its kind and build settings)."""
        p = self.faiss_params
        if self.kind == "hnsw":
            return f"faiss-hnsw-m{p['hnsw_m']}"
        return f"faiss-ivf-{self._nlist()}"

    def _nlist(self) -> int:
        n = len(self.corpus)
        nlist = self.faiss_params["nlist"] or int(4 * np.sqrt(n))
        return int(max(1, min(nlist, n // 39)))  # FAISS wants ~39 training points per cell

    def _build_index(self) -> None:
        """The FAISS index for ``self.kind`` (none for numpy); an approximate one is kept in a folder of the index
        folder, built there once (:func:`~search_env._cache.load_or_build`)."""
        if self.kind == "numpy":
            return
        faiss = _import_faiss()
        if self.directory is None or self.kind == "flat":
            index = self._new_faiss_index(faiss)
        else:
            built = []

            def write(folder: Path) -> None:
                built.append(self._new_faiss_index(faiss))
                faiss.write_index(built[-1], str(folder / _FAISS_FILE))

            index = load_or_build(self.directory / self._faiss_folder(), _FAISS_FILE, explicit=self._explicit,
                                  what=f"FAISS {self.kind} index", write=write,
                                  load=lambda folder: faiss.read_index(str(folder / _FAISS_FILE)), reload=False)
            index = built[-1] if index is None else index
        if self.kind == "hnsw":
            index.hnsw.efSearch = self.faiss_params["ef_search"]
        elif self.kind == "ivf":
            index.nprobe = self.faiss_params["nprobe"]
        self._faiss = index

    def _new_faiss_index(self, faiss):
        """A FAISS index of ``self.kind`` over the embeddings."""
        data = np.ascontiguousarray(self.embeddings, dtype=np.float32)
        if self.kind == "flat":
            index = faiss.IndexFlatIP(self.encoder.dim)
        elif self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(self.encoder.dim, self.faiss_params["hnsw_m"], faiss.METRIC_INNER_PRODUCT)
        else:
            quantizer = faiss.IndexFlatIP(self.encoder.dim)
            index = faiss.IndexIVFFlat(quantizer, self.encoder.dim, self._nlist(), faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(0)
            n_train = 256 * index.nlist
            sample = data if len(data) <= n_train else data[np.sort(rng.choice(len(data), n_train, replace=False))]
            index.train(sample)
        index.add(data)
        return index

    # -- searching -----------------------------------------------------------------------------

    def search(self, query: str, k: int) -> list[Hit]:
        return self.batch_search([query], k)[0]

    def batch_search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """Top-``k`` hits for each query: one encoder pass and one scoring pass for the whole batch."""
        queries = check_queries(queries)
        k = min(int(k), len(self.corpus))
        if k <= 0 or not queries:
            return [[] for _ in queries]
        positions, scores = self.search_vectors(self.encoder.encode(queries, "query"), k)
        n = len(self.corpus)
        return [
            [self._hit(j, s) for j, s in zip(row_pos.tolist(), row_scores.tolist()) if j < n]
            for row_pos, row_scores in zip(positions, scores)
        ]

    def search_vectors(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Corpus positions and scores ``(len(vectors), k)`` of the best passages for query vectors.

        An approximate index may find fewer than ``k``; the missing slots hold position ``len(corpus)``.
        """
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        fetch = min(len(self.corpus), k + _TIE_MARGIN)
        if self._faiss is None:
            return self._numpy_search(vectors, fetch, k)
        scores, positions = self._faiss.search(vectors, fetch)
        scores = np.where(positions >= 0, scores, -np.inf).astype(np.float32)
        return _top_k_rows(scores, np.where(positions >= 0, positions, len(self.corpus)), k)

    def _numpy_search(self, vectors: np.ndarray, fetch: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact inner product, a block of passages at a time, keeping the best ``fetch`` per query."""
        n = len(self.embeddings)
        block = max(4096, _SCORE_BLOCK // max(1, len(vectors)))
        best_scores = np.empty((len(vectors), 0), dtype=np.float32)
        best_pos = np.empty((len(vectors), 0), dtype=np.int64)
        for start in range(0, n, block):
            scores = vectors @ np.asarray(self.embeddings[start : start + block]).T
            if scores.shape[1] > fetch:
                keep = np.argpartition(-scores, fetch - 1, axis=1)[:, :fetch]
                scores = np.take_along_axis(scores, keep, axis=1)
            else:
                keep = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
            best_scores = np.concatenate([best_scores, scores], axis=1)
            best_pos = np.concatenate([best_pos, keep + start], axis=1)
            if best_scores.shape[1] > 2 * fetch:
                best_pos, best_scores = _top_k_rows(best_scores, best_pos, fetch)
        return _top_k_rows(best_scores, best_pos, k)

    def _hit(self, position: int, score: float) -> Hit:
        passage = self.corpus[position]
        return Hit(doc_id=passage.id, title=passage.title, text=passage.text, score=float(score))


def get_dense(corpus: Corpus, encoder: str = DEFAULT_ENCODER, **kwargs: Any) -> DenseRetriever:
    """A shared :class:`DenseRetriever` per (corpus fingerprint, encoder, settings), as ``get_bm25`` does
    for BM25: many ``gym.make(retriever="dense")`` calls embed the corpus once (``forget("dense")`` drops them).

    Args:
        corpus: the passages to index.
        encoder: a Hugging Face encoder name or folder (default: the bundled all-MiniLM-L6-v2).
        **kwargs: given to :class:`DenseRetriever`.
    """
    key = (corpus.fingerprint, encoder, repr(sorted(kwargs.items())))
    return built_once("dense", key, lambda: DenseRetriever(corpus, encoder, **kwargs))
