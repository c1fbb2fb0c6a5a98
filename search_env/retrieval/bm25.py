"""In-process BM25: :class:`BM25Retriever` (bm25s, the default, cached on disk) and
:class:`RankBM25Retriever` (rank-bm25's ``BM25Okapi``, the slow reference).

Both index a passage as its title plus its text and share one analyzer: a bm25s ``Tokenizer``
(lower-casing, ``\\w\\w+`` words, stopwords, a PyStemmer stemmer) fitted on the corpus. Queries are
mapped onto that fitted vocabulary without growing it; words the corpus never had are dropped.

Both backends return only hits with a positive score, best first, ties broken by corpus position,
so a query with no known word gives ``[]`` rather than arbitrary zero-score passages.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import threading
from array import array
from collections.abc import Sequence
from pathlib import Path

import bm25s
import numpy as np
import Stemmer
from bm25s.scoring import _build_idf_array, _get_counts_from_token_ids, _select_idf_scorer, _select_tfc_scorer
from bm25s.tokenization import Tokenizer

from search_env._cache import built_once, cache_dir, check_index_meta, index_meta, load_or_build, replace_dir
from search_env.data.corpus import Corpus, Passage
from search_env.data.pread import npy_layout, pread_array
from search_env.retrieval.base import Hit, check_queries

__all__ = ["BM25Retriever", "RankBM25Retriever", "get_bm25"]

FORMAT_VERSION = 1
_DATA_FILE, _INDICES_FILE = "data.csc.index.npy", "indices.csc.index.npy"  # bm25s's names for the two big arrays
MMAP_AUTO_THRESHOLD = 500_000  # mmap=None maps the index when the corpus has more passages than this
MAX_QUERY_TERMS = 1024  # known terms kept from a query; bounds the cost of pathological (1 MB) queries
METHODS = ("lucene", "robertson", "atire")  # bm25l / bm25+ give every passage a score, so are left out
_META_FILE = "search_env_bm25.json"
BUILD_CHUNK = 20_000  # passages tokenized at a time while building
BUCKET_PAIRS = 16_000_000  # (passage, term) pairs sorted into the index at a time (~28 bytes each while sorted) ...
MAX_PASSES = 16  # ... unless that would take more passes than this over the pairs (then buckets grow)
_MISSING = object()


def _passage_text(passage: Passage) -> str:
    """What is indexed: the title, then the text, so searching a title finds its passage."""
    return f"{passage.title}\n{passage.text}" if passage.title else passage.text


def _hit(passage: Passage, score: float) -> Hit:
    return Hit(doc_id=passage.id, title=passage.title, text=passage.text, score=float(score))


def _top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of the best ``k`` positive scores, ties broken by position."""
    candidates = np.flatnonzero(scores > 0)
    if len(candidates) > k:
        kth = np.partition(scores[candidates], len(candidates) - k)[len(candidates) - k]
        candidates = candidates[scores[candidates] >= kth]
    order = np.lexsort((candidates, -scores[candidates]))[:k]
    return candidates[order], scores[candidates[order]]


class _Analyzer:
    """One bm25s ``Tokenizer``: fitted on the corpus once, then read-only for queries (safe from many threads)."""

    def __init__(self, stemmer: str | None = "english", stopwords: str | Sequence[str] | None = "en"):
        self._stemmer = Stemmer.Stemmer(stemmer) if stemmer else None
        self._stem_lock = threading.Lock()  # a PyStemmer stemmer "must not be called concurrently" (its docs)
        self.tokenizer = Tokenizer(
            lower=True,
            stopwords=stopwords if stopwords else [],
            stemmer=self._stem if self._stemmer else None,
        )
        self._stopwords = frozenset(self.tokenizer.stopwords)

    def _stem(self, word: str) -> str:
        try:
            with self._stem_lock:
                return self._stemmer.stemWord(word)
        except UnicodeError:  # lone surrogates: PyStemmer cannot encode them; keep the word as is
            return word

    def fit_chunks(self, texts, chunk: int, show_progress: bool = False):
        """Token ids of the documents, ``chunk`` documents at a time, building the vocabulary as one call over all
        of them would (a passage with no word gets the empty token)."""
        self.tokenizer.reset_vocab()
        batch = []
        for text in texts:
            batch.append(text)
            if len(batch) == chunk:
                yield self.tokenizer.tokenize(batch, update_vocab=True, return_as="ids", show_progress=show_progress,
                                              allow_empty=True)
                batch = []
        if batch:
            yield self.tokenizer.tokenize(batch, update_vocab=True, return_as="ids", show_progress=show_progress,
                                          allow_empty=True)

    @property
    def vocab(self) -> dict[str, int]:
        """Term -> id: stems when stemming, words otherwise (what the BM25 index is keyed by)."""
        return self.tokenizer.get_vocab_dict()

    def query_ids(self, query: str) -> list[int]:
        """Ids of the query's known terms, in order, repeats kept, at most ``MAX_QUERY_TERMS``.

        Mirrors ``Tokenizer.streaming_tokenize(update_vocab=False)`` but never writes to the
        tokenizer's dicts, so queries cannot grow the vocabulary (or its stem cache).
        """
        tok = self.tokenizer
        words = tok.splitter(query.lower() if tok.lower else query)
        word_to_id, word_to_stem, stem_to_sid = tok.word_to_id, tok.word_to_stem, tok.stem_to_sid
        seen: dict[str, int | None] = {}
        ids: list[int] = []
        for word in words:
            tid = seen.get(word, _MISSING)
            if tid is _MISSING:
                tid = word_to_id.get(word)
                if tid is None and self._stemmer is not None and word not in self._stopwords:
                    stem = word_to_stem.get(word)
                    tid = stem_to_sid.get(stem if stem is not None else self._stem(word))
                seen[word] = tid
            if tid is not None:
                ids.append(tid)
                if len(ids) >= MAX_QUERY_TERMS:
                    break
        return ids

    def save(self, directory: Path) -> None:
        self.tokenizer.save_vocab(directory)
        self.tokenizer.save_stopwords(directory)

    @classmethod
    def load(cls, directory: Path, stemmer: str | None) -> _Analyzer:
        with open(Path(directory, "stopwords.tokenizer.json"), encoding="utf-8") as f:
            stopwords = json.load(f)
        analyzer = cls(stemmer=stemmer, stopwords=stopwords)
        analyzer.tokenizer.load_vocab(directory)
        return analyzer


class BM25Retriever:
    """BM25 over a :class:`Corpus` with bm25s, its index cached on disk by corpus fingerprint.

    ``cache``: True keeps the index under ``cache_dir("bm25", ...)``, keyed by corpus fingerprint and
    parameters; a path uses that directory (loaded if it holds this corpus's index, else built and
    written there); False builds in memory only. ``mmap``: memory-map the index arrays read from disk
    (None: only when the corpus has more than 500k passages; ignored with ``cache=False``).
    ``show_progress``: progress bars while tokenizing and indexing (an index build only).
    """

    def __init__(
        self,
        corpus: Corpus,
        *,
        k1: float = 0.9,
        b: float = 0.4,
        method: str = "lucene",
        stemmer: str | None = "english",
        stopwords: str | None = "en",
        cache: bool | str | os.PathLike = True,
        mmap: bool | None = None,
        show_progress: bool = False,
    ):
        if method not in METHODS:
            raise ValueError(f"BM25 method must be one of {METHODS}, got {method!r}")
        if len(corpus) == 0:
            raise ValueError("cannot build a BM25 index over an empty corpus")
        self.corpus = corpus
        self.params = {"k1": float(k1), "b": float(b), "method": method, "stemmer": stemmer, "stopwords": stopwords}
        mmap = len(corpus) > MMAP_AUTO_THRESHOLD if mmap is None else bool(mmap)
        self._spill_to_disk = mmap  # the index is read back from disk after the build, so it is built there
        self.directory: Path | None = None
        self._show_progress = show_progress

        if cache is False or cache is None:
            self._build()
            return
        explicit = cache is not True
        self.directory = Path(cache) if explicit else cache_dir("bm25") / self._cache_key()
        load_or_build(
            self.directory, _META_FILE, explicit=explicit, what="BM25",
            load=lambda folder: self._load_state(folder, mmap=mmap, expect_params=True),
            write=self._build_into, reload=mmap,  # without mmap, the index just built in memory is used
        )

    # -- building, saving, loading -------------------------------------------------------------

    def _cache_key(self) -> str:
        spec = json.dumps({**self.params, "format": FORMAT_VERSION, "bm25s": bm25s.__version__}, sort_keys=True)
        return f"{self.corpus.fingerprint[:16]}-{hashlib.sha256(spec.encode()).hexdigest()[:12]}"

    def _build(self, scratch: Path | None = None) -> None:
        """Tokenize the corpus and build the bm25s index (the one expensive step), in bounded memory.

        bm25s's own ``index`` wants every passage's tokens as Python lists at once (about 4 GB at 1M passages).
        Here passages are tokenized ``BUILD_CHUNK`` at a time and only their distinct terms and counts are kept,
        as arrays (in files under ``scratch`` when given); the score matrix is then assembled a bucket of terms at
        a time with bm25s's own scoring functions, in its layout, to the same arrays ``index`` makes
        (``tests/test_bm25.py`` checks them equal). With ``scratch`` the matrix is written there as ``.npy`` files
        and ``self._bm25.scores`` holds empty stand-ins for it (:meth:`_build_into` moves the files into place)."""
        p = self.params
        self.analyzer = _Analyzer(p["stemmer"], p["stopwords"])
        bm = bm25s.BM25(k1=p["k1"], b=p["b"], method=p["method"], backend="numpy")
        pairs = _Pairs(scratch, bm.int_dtype, bm.dtype)
        lengths, sizes, df = array("q"), array("q"), np.zeros(0, dtype=np.int64)
        texts = (_passage_text(passage) for passage in self.corpus)
        for ids in self.analyzer.fit_chunks(texts, BUILD_CHUNK, self._show_progress):
            counted = [_get_counts_from_token_ids(doc, dtype=bm.dtype, int_dtype=bm.int_dtype) for doc in ids]
            terms = np.concatenate([voc for voc, _ in counted])
            pairs.append(terms, np.concatenate([tf for _, tf in counted]))
            chunk_df = np.bincount(terms, minlength=len(df))
            chunk_df[: len(df)] += df
            df = chunk_df
            lengths.extend(len(doc) for doc in ids)
            sizes.extend(len(voc) for voc, _ in counted)
        pairs.close()
        vocab = self.analyzer.vocab
        df = np.concatenate([df, np.zeros(len(vocab) - len(df), dtype=np.int64)])
        bm.scores = _score_matrix(bm, pairs, np.frombuffer(lengths, dtype=np.int64), np.frombuffer(sizes, dtype=np.int64),
                                  df, scratch)
        pairs.remove()
        if "" not in vocab:  # as bm25s's index does (create_empty_token)
            vocab[""] = max(vocab.values()) + 1
        bm.vocab_dict, bm.unique_token_ids_set, bm.nonoccurrence_array = vocab, set(vocab.values()), None
        self._bm25, self._postings = bm, None

    def _build_into(self, directory: Path) -> None:
        if not self._spill_to_disk:
            self._build()
            self._write(directory)
            return
        # The index is read back from disk (memory-mapped) afterwards, so it is built there: the pairs and the
        # score matrix never have to fit in memory.
        scratch = directory / "_build"
        self._build(scratch)
        self._write(directory)  # bm25s writes everything but the two big arrays (stand-ins), then they move in
        for name in (_DATA_FILE, _INDICES_FILE):
            os.replace(scratch / name, directory / name)
        shutil.rmtree(scratch)

    def _write(self, directory: Path) -> None:
        self._bm25.save(directory, data_name=_DATA_FILE, indices_name=_INDICES_FILE, show_progress=False)
        self.analyzer.save(directory)
        meta = index_meta(format_version=FORMAT_VERSION, corpus=self.corpus, bm25s=bm25s.__version__,
                          params=self.params)
        Path(directory, _META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")

    def _load_state(self, directory: Path, *, mmap: bool, expect_params: bool = False) -> None:
        """Read the index; ValueError when it was built from another corpus (or, ``expect_params``, with
        other parameters)."""
        expect = {"params": self.params} if expect_params else None
        meta = check_index_meta(directory, _META_FILE, what="BM25", format_version=FORMAT_VERSION,
                                corpus=self.corpus, expect=expect)
        self.params = meta["params"]
        self.analyzer = _Analyzer.load(directory, self.params["stemmer"])
        self._bm25 = bm25s.BM25.load(directory, mmap=mmap, load_corpus=False, show_progress=False)
        self._postings = _Postings(directory, self._bm25.scores["indptr"]) if mmap else None

    def save(self, directory: str | os.PathLike) -> None:
        """Write the index, its vocabulary and the corpus fingerprint to ``directory`` (replaced atomically)."""
        replace_dir(directory, self._write, overwrite=True)

    @classmethod
    def load(cls, directory: str | os.PathLike, corpus: Corpus, *, mmap: bool = False) -> BM25Retriever:
        """Read an index written by :meth:`save`; ValueError if it was built from another corpus."""
        self = cls.__new__(cls)
        self.corpus = corpus
        self.directory = Path(directory)
        self._load_state(self.directory, mmap=mmap)
        return self

    # -- searching -----------------------------------------------------------------------------

    def get_scores(self, query: str) -> np.ndarray:
        """BM25 scores of every passage (corpus order, float32) for ``query``."""
        ids = self.analyzer.query_ids(query)
        if not ids:
            return np.zeros(len(self.corpus), dtype=np.float32)
        return self._scores(ids)

    def _scores(self, ids: list[int]) -> np.ndarray:
        if self._postings is not None:
            return self._postings.scores(ids, len(self.corpus), np.dtype(self._bm25.dtype))
        return self._bm25.get_scores_from_ids(ids)

    def search(self, query: str, k: int) -> list[Hit]:
        return self.batch_search([query], k)[0]

    def batch_search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """Top-``k`` hits for each query; equal to ``search`` per query.

        Scores come from bm25s's sparse index; the top-k is chosen among the passages that share a term
        with the query (positive scores), which is far cheaper than bm25s's partition over the whole
        corpus (measured: 0.13 ms vs 4.3 ms at 100k passages) and breaks ties by corpus position.
        """
        queries = check_queries(queries)
        k = min(int(k), len(self.corpus))
        results: list[list[Hit]] = []
        for query in queries:
            ids = self.analyzer.query_ids(query) if k > 0 else []
            if not ids:
                results.append([])
                continue
            idx, sc = _top_k(self._scores(ids), k)
            results.append([_hit(self.corpus[j], s) for j, s in zip(idx.tolist(), sc.tolist())])
        return results


class _Postings:
    """A memory-mapped index's posting lists, read with ``pread`` when a query needs them.

    bm25s scores a query by slicing its memory-mapped ``data`` and ``indices`` arrays; every page that touches
    stays mapped in the process (with ~64 KB of fault-around), so after a few hundred queries an env process's RSS
    holds most of the index. Read instead, the pages are shared through the page cache and the process keeps only
    the query's lists while it scores them. The sums are bm25s's own (``np.add.at`` term by term, in query order),
    so the scores are equal bit for bit (``tests/test_bm25.py``)."""

    def __init__(self, directory: Path, indptr: np.ndarray):
        self.directory, self.indptr = Path(directory), indptr
        self._arrays = {}
        for name in (_DATA_FILE, _INDICES_FILE):
            dtype, _, offset = npy_layout(self.directory / name)
            self._arrays[name] = (open(self.directory / name, "rb", buffering=0), dtype, offset)

    def __reduce__(self):  # a copy in another process opens the files again
        return type(self), (self.directory, self.indptr)

    def scores(self, ids: list[int], num_docs: int, dtype: np.dtype) -> np.ndarray:
        scores = np.zeros(num_docs, dtype=dtype)
        for term in ids:
            start, stop = int(self.indptr[term]), int(self.indptr[term + 1])
            rows, values = (pread_array(f, dt, offset, start, stop) for f, dt, offset in
                            (self._arrays[_INDICES_FILE], self._arrays[_DATA_FILE]))
            np.add.at(scores, rows, values)
        return scores


class _Pairs:
    """Each passage's distinct terms and their counts, in passage order, a tokenized chunk at a time: in memory, or
    appended to two files under ``folder`` (read back a chunk at a time, never mapped)."""

    def __init__(self, folder: Path | None, term_dtype, count_dtype):
        self.folder, self.term_dtype, self.count_dtype = folder, np.dtype(term_dtype), np.dtype(count_dtype)
        self.sizes: list[int] = []
        self._chunks: list[tuple[np.ndarray, np.ndarray]] = []
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            self._files = (open(folder / "terms.bin", "wb"), open(folder / "counts.bin", "wb"))

    def append(self, terms: np.ndarray, counts: np.ndarray) -> None:
        self.sizes.append(len(terms))
        if self.folder is None:
            self._chunks.append((terms, counts))
        else:
            terms.astype(self.term_dtype, copy=False).tofile(self._files[0])
            counts.astype(self.count_dtype, copy=False).tofile(self._files[1])

    def close(self) -> None:
        if self.folder is not None:
            for f in self._files:
                f.close()

    def __iter__(self):
        """``(first pair's position, terms, counts)`` chunk by chunk."""
        start = 0
        if self.folder is None:
            for terms, counts in self._chunks:
                yield start, terms, counts
                start += len(terms)
            return
        with open(self.folder / "terms.bin", "rb") as t, open(self.folder / "counts.bin", "rb") as c:
            for size in self.sizes:
                yield start, np.fromfile(t, self.term_dtype, size), np.fromfile(c, self.count_dtype, size)
                start += size

    def remove(self) -> None:
        self._chunks = []
        if self.folder is not None:
            for name in ("terms.bin", "counts.bin"):
                (self.folder / name).unlink()


def _score_matrix(bm, pairs: _Pairs, lengths: np.ndarray, sizes: np.ndarray, df: np.ndarray,
                  folder: Path | None) -> dict:
    """bm25s's CSC score matrix (``data``, ``indices``, ``indptr``, ``num_docs``), as ``BM25.build_index_from_ids``
    computes it, from each passage's distinct terms and counts (``pairs``) and each term's document frequency.

    Columns (terms) are filled a bucket of consecutive terms at a time: one pass over the pairs collects the
    bucket's, scores them and sorts them by term, stably, so rows stay in passage order within a column. Memory is
    bounded by the bucket (``BUCKET_PAIRS``, or more when that would take over ``MAX_PASSES`` passes), not by the
    corpus. With ``folder``, ``data`` and ``indices`` are written there as ``.npy`` files bucket after bucket, and
    the returned dict holds empty arrays of their dtypes in their place."""
    n_docs, n_vocab = len(lengths), len(df)
    avg_doc_len = lengths.mean()
    idf = _build_idf_array(doc_frequencies={i: int(n) for i, n in enumerate(df)}, n_docs=n_docs,
                           compute_idf_fn=_select_idf_scorer(bm.idf_method), dtype=bm.dtype)
    tfc_of = _select_tfc_scorer(bm.method)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    indptr = np.zeros(n_vocab + 1, dtype=np.int64)
    np.cumsum(df, out=indptr[1:])
    n_pairs = int(indptr[-1])
    per_bucket = max(BUCKET_PAIRS, -(-n_pairs // MAX_PASSES))
    bounds = [0]
    while bounds[-1] < n_vocab:  # consecutive terms holding at most per_bucket pairs (at least one term)
        end = int(np.searchsorted(indptr, indptr[bounds[-1]] + per_bucket, side="right")) - 1
        bounds.append(min(max(end, bounds[-1] + 1), n_vocab))
    dtypes = {"data": np.dtype(bm.dtype), "indices": np.dtype(bm.int_dtype)}
    if folder is None:
        out = {key: np.empty(n_pairs, dtype=dtype) for key, dtype in dtypes.items()}
    else:
        files = {"data": open(folder / _DATA_FILE, "wb"), "indices": open(folder / _INDICES_FILE, "wb")}
        for key, f in files.items():
            np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(dtypes[key]),
                                                     "fortran_order": False, "shape": (n_pairs,)})
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        terms, rows, scores = [], [], []
        for first, voc, tf in pairs:
            selected = np.flatnonzero((voc >= lo) & (voc < hi))
            if not selected.size:
                continue
            doc = np.searchsorted(starts, first + selected, side="right") - 1
            voc_sel = voc[selected]
            tfc = tfc_of(tf_array=tf[selected], l_d=lengths[doc], l_avg=avg_doc_len, k1=bm.k1, b=bm.b, delta=bm.delta)
            scores.append((idf[voc_sel] * tfc).astype(bm.dtype, copy=False))
            terms.append(voc_sel)
            rows.append(doc.astype(bm.int_dtype))
        if not terms:
            continue
        order = np.argsort(np.concatenate(terms), kind="stable")
        del terms
        bucket = {"indices": np.concatenate(rows)[order], "data": np.concatenate(scores)[order]}
        del rows, scores, order
        a, b = int(indptr[lo]), int(indptr[hi])
        for key, values in bucket.items():
            if folder is None:
                out[key][a:b] = values
            else:
                values.tofile(files[key])
    if folder is not None:
        for f in files.values():
            f.close()
        out = {key: np.empty(0, dtype=dtype) for key, dtype in dtypes.items()}
    return {**out, "indptr": indptr, "num_docs": n_docs}


class RankBM25Retriever:
    """rank-bm25 ``BM25Okapi`` with the same analyzer and k1/b: a slow reference for :class:`BM25Retriever`.

    BM25Okapi's idf, ``log((N - df + .5) / (df + .5))``, is zero or negative for a term in half the
    passages or more (so on a 2-passage corpus every score is 0); such passages are not returned.
    """

    def __init__(
        self,
        corpus: Corpus,
        *,
        k1: float = 0.9,
        b: float = 0.4,
        stemmer: str | None = "english",
        stopwords: str | None = "en",
    ):
        from rank_bm25 import BM25Okapi

        if len(corpus) == 0:
            raise ValueError("cannot build a BM25 index over an empty corpus")
        self.corpus = corpus
        self.params = {"k1": float(k1), "b": float(b), "stemmer": stemmer, "stopwords": stopwords}
        self.analyzer = _Analyzer(stemmer, stopwords)
        texts = [_passage_text(passage) for passage in corpus]
        ids = [doc for chunk in self.analyzer.fit_chunks(texts, len(texts)) for doc in chunk]
        self.bm25 = BM25Okapi(ids, k1=float(k1), b=float(b))

    def get_scores(self, query: str) -> np.ndarray:
        """BM25Okapi scores of every passage (corpus order, float64) for ``query``."""
        ids = self.analyzer.query_ids(query)
        if not ids:
            return np.zeros(len(self.corpus))
        return self.bm25.get_scores(ids)

    def search(self, query: str, k: int) -> list[Hit]:
        if not isinstance(query, str):
            raise TypeError(f"queries must be strings, got {type(query).__name__}")
        k = min(int(k), len(self.corpus))
        if k <= 0:
            return []
        idx, scores = _top_k(self.get_scores(query), k)
        return [_hit(self.corpus[j], s) for j, s in zip(idx.tolist(), scores.tolist())]

    def batch_search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        return [self.search(query, k) for query in queries]


_BACKENDS = {"bm25s": BM25Retriever, "rank_bm25": RankBM25Retriever, "rank-bm25": RankBM25Retriever}


def get_bm25(corpus: Corpus, backend: str = "bm25s", **kwargs) -> BM25Retriever | RankBM25Retriever:
    """A shared retriever for ``corpus``: built once per process for each (corpus fingerprint, backend,
    parameters), so making many envs over one corpus indexes it once (``forget("bm25")`` drops them).
    ``kwargs`` go to the backend."""
    try:
        cls = _BACKENDS[backend]
    except KeyError:
        raise ValueError(f"unknown BM25 backend {backend!r}; choose 'bm25s' or 'rank_bm25'") from None
    bound = inspect.signature(cls).bind(corpus, **kwargs)
    bound.apply_defaults()
    params = sorted((name, value) for name, value in bound.arguments.items() if name != "corpus")
    return built_once("bm25", (corpus.fingerprint, cls.__name__, repr(params)), lambda: cls(corpus, **kwargs))
