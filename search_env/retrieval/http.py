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

import itertools
import math
import os
import threading
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from search_env.data.corpus import split_contents
from search_env.retrieval.base import Hit, RetrieverUnavailable, check_queries

__all__ = ["HTTPRetriever", "MalformedResponse", "is_url", "parse_response"]

_RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}


class MalformedResponse(ValueError):
    """A server answered, but not in Search-R1's response shape."""


def is_url(spec: object) -> bool:
    """True for an ``http://`` or ``https://`` string."""
    return isinstance(spec, str) and spec.lower().startswith(("http://", "https://"))


def _endpoint(url: str) -> str:
    """``http://host:port`` gets ``/retrieve``; a URL with a path is used as given."""
    if not is_url(url):
        raise ValueError(f"not an http(s) URL: {url!r}")
    parts = urlsplit(url)
    if not parts.netloc:
        raise ValueError(f"URL without a host: {url!r}")
    return url.rstrip("/") + "/retrieve" if parts.path in ("", "/") else url


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
        pool_size: pooled keep-alive connections per server.
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
            raise ValueError(f"need timeout > 0, retries >= 0, batch_size >= 1 (got {timeout}, {retries}, {batch_size})")
        self.urls = [_endpoint(url) for url in urls]
        self.timeout, self.retries = float(timeout), int(retries)
        self.backoff, self.max_backoff = float(backoff), float(max_backoff)
        self.pool_size, self.batch_size = int(pool_size), int(batch_size)
        self.return_scores = bool(return_scores)
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._lock = threading.Lock()
        self._next = itertools.count()
        self._session = None
        self._pid = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        for key in ("_lock", "_next", "_session", "_pid"):
            del state[key]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._init_runtime()

    def __repr__(self) -> str:
        return f"HTTPRetriever({self.urls if len(self.urls) > 1 else self.urls[0]!r}, timeout={self.timeout})"

    @property
    def session(self):
        """A pooled ``requests.Session``, made on first use and again after a fork."""
        if self._session is None or self._pid != os.getpid():
            import requests
            from requests.adapters import HTTPAdapter

            session = requests.Session()
            adapter = HTTPAdapter(pool_connections=len(self.urls), pool_maxsize=self.pool_size, max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._session, self._pid = session, os.getpid()
        return self._session

    def close(self) -> None:
        """Close pooled connections (a later call opens new ones)."""
        if self._session is not None:
            self._session.close()
            self._session = None

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
            hits.extend(self._request(queries[start : start + self.batch_size], k))
        return hits

    def _request(self, queries: list[str], k: int) -> list[list[Hit]]:
        """POST one batch, trying URLs in turn; RetrieverUnavailable once every attempt has failed."""
        import requests

        payload = {"queries": queries, "topk": k, "return_scores": self.return_scores}
        with self._lock:
            first = next(self._next)
        failures: list[str] = []
        for attempt in range(self.retries + 1):
            url = self.urls[(first + attempt) % len(self.urls)]
            if attempt:
                time.sleep(min(self.max_backoff, self.backoff * 2 ** (attempt - 1)))
            try:
                response = self.session.post(url, json=payload, timeout=self.timeout)
                if response.status_code != 200:
                    reason = f"HTTP {response.status_code}: {_excerpt(response.text)}"
                    if response.status_code not in _RETRYABLE_STATUS:
                        failures.append(f"{url}: {reason} (not retried)")
                        break
                    failures.append(f"{url}: {reason}")
                    continue
                try:
                    body = response.json()
                except ValueError:
                    raise MalformedResponse(f"body is not JSON: {_excerpt(response.text)}") from None
                return parse_response(body, len(queries), k)
            except requests.Timeout:
                failures.append(f"{url}: timed out after {self.timeout:g} s")
            except requests.ConnectionError as exc:
                failures.append(f"{url}: connection failed ({_root_cause(exc)})")
            except MalformedResponse as exc:
                failures.append(f"{url}: malformed response ({exc})")
            except requests.RequestException as exc:
                failures.append(f"{url}: {type(exc).__name__}: {exc}")
        error = RetrieverUnavailable(
            f"retrieval failed after {len(failures)} attempt(s): " + "; ".join(failures)
        )
        error.failures = failures
        raise error


def _excerpt(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[:limit] + "…")


def _root_cause(exc: BaseException) -> str:
    """The innermost cause of a requests error, which names the real problem (refused, reset, ...)."""
    while exc.__cause__ is not None or (exc.args and isinstance(exc.args[0], BaseException)):
        exc = exc.__cause__ or exc.args[0]
    text = str(exc)
    return text.split(": ", 1)[-1] if "Failed to establish" in text else text or type(exc).__name__
