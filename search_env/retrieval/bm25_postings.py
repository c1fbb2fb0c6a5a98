"""The posting lists of a BM25 index on disk, read with ``pread`` when a query needs them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from search_env.data.pread import npy_layout, pread_array
from search_env.retrieval.bm25_build import DATA_FILE, INDICES_FILE

__all__ = ["Postings"]


class Postings:
    """A memory-mapped index's posting lists, read with ``pread`` when a query needs them.

    bm25s scores a query by slicing its memory-mapped ``data`` and ``indices`` arrays; every page that touches
    stays mapped in the process (with ~64 KB of fault-around), so after a few hundred queries an env process's RSS
    holds most of the index. Read instead, the pages are shared through the page cache and the process keeps only
    the query's lists while it scores them. The sums are bm25s's own (``np.add.at`` term by term, in query order),
    so the scores are equal bit for bit (``tests/test_bm25.py``)."""

    def __init__(self, directory: Path, indptr: np.ndarray):
        self.directory, self.indptr = Path(directory), indptr
        self._arrays = {}
        for name in (DATA_FILE, INDICES_FILE):
            dtype, _, offset = npy_layout(self.directory / name)
            self._arrays[name] = (open(self.directory / name, "rb", buffering=0), dtype, offset)

    def __reduce__(self):  # a copy in another process opens the files again
        return type(self), (self.directory, self.indptr)

    def scores(self, ids: list[int], num_docs: int, dtype: np.dtype) -> np.ndarray:
        scores = np.zeros(num_docs, dtype=dtype)
        for term in ids:
            start, stop = int(self.indptr[term]), int(self.indptr[term + 1])
            rows, values = (pread_array(f, dt, offset, start, stop) for f, dt, offset in
                            (self._arrays[INDICES_FILE], self._arrays[DATA_FILE]))
            np.add.at(scores, rows, values)
        return scores
