"""Retrievers: BM25 in-process (bm25s, rank-bm25); dense and HTTP in their own modules."""

from __future__ import annotations

from search_env.retrieval.base import Hit, Retriever, RetrieverUnavailable

__all__ = ["Hit", "Retriever", "RetrieverUnavailable", "make_retriever"]

_BM25_BACKENDS = {"bm25": "bm25s", "bm25s": "bm25s", "rank-bm25": "rank-bm25", "rank_bm25": "rank-bm25"}


def make_retriever(spec, corpus=None) -> Retriever:
    """A retriever from ``"bm25"`` / ``"rank-bm25"`` (over ``corpus``) or an object with ``search``/``batch_search``."""
    if not isinstance(spec, str):
        if not isinstance(spec, Retriever):
            raise TypeError(f"a retriever needs search(query, k) and batch_search(queries, k); got {type(spec).__name__}")
        return spec
    if spec in _BM25_BACKENDS:
        if corpus is None:
            raise ValueError(f"retriever={spec!r} searches a corpus in-process; pass `corpus` too")
        from search_env.retrieval.bm25 import get_bm25

        return get_bm25(corpus, _BM25_BACKENDS[spec])
    raise ValueError(f"unknown retriever {spec!r}; use 'bm25', 'rank-bm25' or a Retriever object")
