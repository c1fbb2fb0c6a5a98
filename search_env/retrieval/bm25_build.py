"""bm25s's index built in bounded memory, to the same arrays ``bm25s.BM25.index`` makes (``tests/test_bm25.py``
checks them equal), in memory or straight into files on disk.

bm25s's own ``index`` wants every passage's tokens as Python lists at once (about 4 GB at 1M passages). Here
passages are tokenized ``BUILD_CHUNK`` at a time and only their distinct terms and counts are kept, as arrays (in
files under a scratch folder when given); the score matrix is then assembled a bucket of terms at a time with
bm25s's own scoring functions, in its layout.
"""

from __future__ import annotations

import os
import shutil
from array import array
from collections.abc import Iterable
from pathlib import Path

import bm25s
import numpy as np
from bm25s.scoring import _build_idf_array, _get_counts_from_token_ids, _select_idf_scorer, _select_tfc_scorer

__all__ = ["BUILD_CHUNK", "DATA_FILE", "INDICES_FILE", "build_index", "move_arrays"]

DATA_FILE, INDICES_FILE = "data.csc.index.npy", "indices.csc.index.npy"  # bm25s's names for the two big arrays
BUILD_CHUNK = 20_000  # passages tokenized at a time while building
BUCKET_PAIRS = 16_000_000  # (passage, term) pairs sorted into the index at a time (~28 bytes each while sorted) ...
MAX_PASSES = 16  # ... unless that would take more passes than this over the pairs (then buckets grow)


def build_index(bm: bm25s.BM25, analyzer, texts: Iterable[str], scratch: Path | None = None,
                show_progress: bool = False) -> None:
    """Fit ``analyzer`` on ``texts`` and fill ``bm`` (a new ``bm25s.BM25``) with their index and vocabulary.

    ``analyzer`` has ``fit_chunks(texts, chunk, show_progress)`` (token ids, a chunk of texts at a time, growing its
    vocabulary) and ``vocab`` (term -> id). With ``scratch``, the two big arrays of the score matrix are written
    there as ``.npy`` files and ``bm.scores`` holds empty stand-ins for them (:func:`move_arrays` moves the files
    into the index folder once bm25s has saved the rest)."""
    pairs = _Pairs(scratch, bm.int_dtype, bm.dtype)
    lengths, sizes, df = array("q"), array("q"), np.zeros(0, dtype=np.int64)
    for ids in analyzer.fit_chunks(texts, BUILD_CHUNK, show_progress):
        counted = [_get_counts_from_token_ids(doc, dtype=bm.dtype, int_dtype=bm.int_dtype) for doc in ids]
        terms = np.concatenate([voc for voc, _ in counted])
        pairs.append(terms, np.concatenate([tf for _, tf in counted]))
        chunk_df = np.bincount(terms, minlength=len(df))
        chunk_df[: len(df)] += df
        df = chunk_df
        lengths.extend(len(doc) for doc in ids)
        sizes.extend(len(voc) for voc, _ in counted)
    pairs.close()
    vocab = analyzer.vocab
    df = np.concatenate([df, np.zeros(len(vocab) - len(df), dtype=np.int64)])
    bm.scores = _score_matrix(bm, pairs, np.frombuffer(lengths, dtype=np.int64), np.frombuffer(sizes, dtype=np.int64),
                              df, scratch)
    pairs.remove()
    if "" not in vocab:  # as bm25s's index does (create_empty_token)
        vocab[""] = max(vocab.values()) + 1
    bm.vocab_dict, bm.unique_token_ids_set, bm.nonoccurrence_array = vocab, set(vocab.values()), None


def move_arrays(scratch: Path, directory: Path) -> None:
    """Move the score matrix :func:`build_index` wrote under ``scratch`` into the index folder ``directory``, in
    place of the stand-ins bm25s saved there, and remove ``scratch``."""
    for name in (DATA_FILE, INDICES_FILE):
        os.replace(scratch / name, directory / name)
    shutil.rmtree(scratch)


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
        files = {"data": open(folder / DATA_FILE, "wb"), "indices": open(folder / INDICES_FILE, "wb")}
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
