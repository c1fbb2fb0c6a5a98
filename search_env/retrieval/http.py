"""HTTPRetriever: a client for retrieval servers that speak Search-R1's protocol.

    POST {url}/retrieve  {"queries": [...], "topk": k, "return_scores": true}
    ->   {"result": [[{"document": {"id": ..., "contents": "\\"Title\\"\\nText"}, "score": s}, ...], ...]}

Works with ``search-env serve`` (:mod:`search_env.retrieval.server`), Search-R1's own
``retrieval_server.py`` and its derivatives (FlashRAG, verl, SkyRL). Several URLs are used round robin,
so replicas share the load, and a failed attempt moves on to the next one. Each attempt has a timeout;
connection errors, timeouts, HTTP 5xx/408/429 and malformed bodies are retried with exponential backoff,
then :class:`~search_env.retrieval.base.RetrieverUnavailable` is raised naming every URL tried and what
went wrong. The env raises it out of ``step`` without touching the episode, so the step can be retried.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from search_env._http import JSONClient, MalformedResponse, endpoint, is_url
from search_env.data.corpus import split_contents
from search_env.retrieval.base import Hit, RetrieverUnavailable, check_queries

__all__ = ["HTTPRetriever", "MalformedResponse", "is_url", "parse_response"]


def _hit(item: Any, where: str) -> Hit:
    """One result entry: ``{"document": doc, "score": s}``, or a bare ``doc`` when scores were not asked."""
    if not isinstance(item, dict):
        raise MalformedResponse(f"{where} is a {type(item).__name__}, expected an object")
    doc, score = (item["document"], item.get("score", 0.0)) if "document" in item else (item, 0.0)
    if not isinstance(doc, dict):
        raise MalformedResponse(f"{where}.document is a {type(doc).__name__}, expected an object")
    if "id" not in doc and "doc_id" not in doc:
        raise MalformedResponse(f"{where}.document has no 'id'")
    if isinstance(doc.get("contents"), str):
        title, text = split_contents(doc["contents"])
    elif isinstance(doc.get("text"), str):
        title, text = str(doc.get("title") or ""), doc["text"]
    else:
        raise MalformedResponse(f"{where}.document has no string 'contents' (or 'text')")
    try:
        score = float(score if score is not None else 0.0)
    except (TypeError, ValueError):
        raise MalformedResponse(f"{where}.score is not a number: {score!r}") from None
    if math.isnan(score):
        raise MalformedResponse(f"{where}.score is NaN")
    return Hit(doc_id=str(doc.get("id", doc.get("doc_id"))), title=title, text=text, score=score)


def parse_response(body: Any, n_queries: int, k: int) -> list[list[Hit]]:
    """Hits from a decoded Search-R1 response to ``n_queries`` queries (at most ``k`` each).

    Raises :class:`MalformedResponse` saying what is wrong. A single-query server answering with one
    flat list of results (instead of a list of one list) is accepted when one query was asked.
    """
    if not isinstance(body, dict) or "result" not in body:
        got = f"keys {sorted(body)[:5]}" if isinstance(body, dict) else f"a {type(body).__name__}"
        raise MalformedResponse(f"expected a JSON object with 'result', got {got}")
    result = body["result"]
    if not isinstance(result, list):
        raise MalformedResponse(f"'result' is a {type(result).__name__}, expected a list")
    if n_queries == 1 and result and isinstance(result[0], dict):
        result = [result]
    if len(result) != n_queries:
        raise MalformedResponse(f"'result' has {len(result)} lists for {n_queries} queries")
    hits = []
    for i, row in enumerate(result):
        if not isinstance(row, list):
            raise MalformedResponse(f"result[{i}] is a {type(row).__name__}, expected a list")
        hits.append([_hit(item, f"result[{i}][{j}]") for j, item in enumerate(row[:k])])
    return hits


class HTTPRetriever:
    """A :class:`~search_env.retrieval.base.Retriever` backed by one or more Search-R1 retrieval servers.

    Args:
        urls: a URL or a list of them (replicas). ``http://host:port`` means ``http://host:port/retrieve``;
            a URL with a path is used as is.
        timeout: seconds per attempt, for connecting and for each read.
        retries: further attempts after a failed one, each on the next URL.
        backoff: seconds before the first retry, doubled each time up to ``max_backoff``.
        pool_size: pooled keep-alive connections per server, in each thread.
        batch_size: queries per request; larger batches are split into several requests.
        return_scores: ask for scores (Search-R1's ``return_scores``); without them hits score 0.

    A call tries at most ``retries + 1`` times, so it returns or raises within about
    ``(retries + 1) * timeout + retries * max_backoff`` seconds.
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.2,
        max_backoff: float = 5.0,
        pool_size: int = 32,
        batch_size: int = 512,
        return_scores: bool = True,
    ):
        urls = [urls] if isinstance(urls, str) else list(urls)
        if not urls:
            raise ValueError("HTTPRetriever needs at least one URL")
        if timeout <= 0 or retries < 0 or batch_size < 1:
            raise ValueError(
                f"need timeout > 0, retries >= 0, batch_size >= 1 (got {timeout}, {retries}, {batch_size})"
            )
        self.client = JSONClient([endpoint(url, "/retrieve") for url in urls], timeout=timeout, retries=retries,
                                 backoff=backoff, max_backoff=max_backoff, pool_size=pool_size,
                                 error=RetrieverUnavailable, what="retrieval")
        self.batch_size = int(batch_size)
        self.return_scores = bool(return_scores)

    @property
    def urls(self) -> list[str]:
        return self.client.urls

    @property
    def timeout(self) -> float:
        return self.client.timeout

    def __repr__(self) -> str:
        return f"HTTPRetriever({self.urls if len(self.urls) > 1 else self.urls[0]!r}, timeout={self.timeout})"

    def close(self) -> None:
        """Close pooled connections (a later call opens new ones)."""
        self.client.close()

    def search(self, query: str, k: int) -> list[Hit]:
        return self.batch_search([query], k)[0]

    def batch_search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """Top-``k`` hits per query, ``batch_size`` queries per request (Search-R1's batch schema)."""
        queries = check_queries(queries)
        k = int(k)
        if k <= 0 or not queries:
            return [[] for _ in queries]
        hits: list[list[Hit]] = []
        for start in range(0, len(queries), self.batch_size):
            batch = queries[start : start + self.batch_size]
            payload = {"queries": batch, "topk": k, "return_scores": self.return_scores}
            hits.extend(self.client.post(payload, lambda body, n=len(batch): parse_response(body, n, k)))
        return hits
