"""Retrievers: BM25 in-process (bm25s, rank-bm25), dense (``dense.py``, its encoder in ``encoder.py``) and
remote over HTTP (``http.py``); ``server.py`` serves any of them. What is built once per process is kept by
:func:`search_env._cache.built_once` (kinds ``"bm25"``, ``"dense"``, ``"encoder"``)."""

from __future__ import annotations

from search_env.retrieval.base import Hit, Retriever, RetrieverUnavailable
from search_env.retrieval.http import HTTPRetriever, is_url  # light: requests is imported on first request

__all__ = ["HTTPRetriever", "Hit", "Retriever", "RetrieverUnavailable", "make_retriever"]

_BM25_BACKENDS = {"bm25": "bm25s", "bm25s": "bm25s", "rank-bm25": "rank-bm25", "rank_bm25": "rank-bm25"}


def make_retriever(spec, corpus=None) -> Retriever:
    """A retriever from a spec.

    Args:
        spec: ``"bm25"`` / ``"rank-bm25"`` / ``"dense"`` (over ``corpus``, built once per process), an
            ``http(s)://`` URL or a list of URLs (a Search-R1 retrieval server and its replicas, used round
            robin), or an object with ``search``/``batch_search`` (returned as it is).
        corpus: the passages, for the in-process retrievers.

    Raises:
        TypeError: an object without ``search``/``batch_search``.
        ValueError: an unknown name, or an in-process retriever without a corpus.
    """
    if isinstance(spec, (list, tuple)) and spec and all(is_url(url) for url in spec):
        return HTTPRetriever(list(spec))
    if not isinstance(spec, str):
        if not isinstance(spec, Retriever):
            raise TypeError(f"a retriever needs search(query, k) and batch_search(queries, k); "
                            f"got {type(spec).__name__}")
        return spec
    if is_url(spec):
        return HTTPRetriever(spec)
    if spec in _BM25_BACKENDS or spec == "dense":
        if corpus is None:
            raise ValueError(f"retriever={spec!r} searches a corpus in-process; pass `corpus` too")
        if spec == "dense":
            from search_env.retrieval.dense import get_dense

            return get_dense(corpus)
        from search_env.retrieval.bm25 import get_bm25

        return get_bm25(corpus, _BM25_BACKENDS[spec])
    raise ValueError(
        f"unknown retriever {spec!r}; use 'bm25', 'rank-bm25', 'dense', an http(s):// URL (or a list of them) "
        "or a Retriever object"
    )
