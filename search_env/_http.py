"""JSON over HTTP to one of several replicas, shared by the HTTP retriever and the server scorers.

Replicas are used round robin, so they share the load, and a failed attempt moves on to the next one. Each
attempt has a timeout; connection errors, timeouts, HTTP 5xx/408/429 and malformed bodies are retried with
exponential backoff; once every attempt has failed, the caller's error class is raised naming every URL tried
and what went wrong (``error.failures`` lists them).
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")
_RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}


class MalformedResponse(ValueError):
    """A server answered, but not in the expected shape."""


def is_url(spec: object) -> bool:
    """True for an ``http://`` or ``https://`` string."""
    return isinstance(spec, str) and spec.lower().startswith(("http://", "https://"))


def endpoint(url: str, default_path: str) -> str:
    """``http://host:port`` gets ``default_path``; a URL with a path is used as given."""
    if not is_url(url):
        raise ValueError(f"not an http(s) URL: {url!r}")
    parts = urlsplit(url)
    if not parts.netloc:
        raise ValueError(f"URL without a host: {url!r}")
    return url.rstrip("/") + default_path if parts.path in ("", "/") else url


class JSONClient:
    """POSTs JSON bodies to ``urls`` (full endpoint URLs) round robin, with retries.

    Args:
        urls: the endpoints (replicas of one service).
        timeout: seconds per attempt, for connecting and for each read.
        retries: further attempts after a failed one, each on the next URL.
        backoff: seconds before the first retry, doubled each time up to ``max_backoff``.
        pool_size: pooled keep-alive connections per server, in each thread.
        error: the exception class raised when every attempt failed.
        what: names the service in that error ("retrieval", "scoring").

    A call tries at most ``retries + 1`` times, so it returns or raises within about
    ``(retries + 1) * timeout + retries * max_backoff`` seconds. Safe to call from many threads at once: the round
    robin is locked and each thread has its own ``requests.Session`` (requests does not promise that one Session is
    thread-safe). Picklable (sessions are made again after unpickling or a fork).
    """

    def __init__(self, urls: Sequence[str], *, timeout: float, retries: int, backoff: float, max_backoff: float,
                 pool_size: int, error: type[Exception], what: str):
        if not urls:
            raise ValueError(f"the {what} client needs at least one URL")
        if timeout <= 0 or retries < 0:
            raise ValueError(f"need timeout > 0 and retries >= 0 (got {timeout}, {retries})")
        self.urls = list(urls)
        self.timeout, self.retries = float(timeout), int(retries)
        self.backoff, self.max_backoff = float(backoff), float(max_backoff)
        self.pool_size, self.error, self.what = int(pool_size), error, what
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._lock = threading.Lock()
        self._next = itertools.count()
        self._local = threading.local()
        self._sessions: weakref.WeakSet = weakref.WeakSet()  # for close(); a finished thread's session is dropped
        self._pid = os.getpid()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        for key in ("_lock", "_next", "_local", "_sessions", "_pid"):
            del state[key]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._init_runtime()

    @property
    def session(self):
        """This thread's pooled ``requests.Session``, made on its first use and again after a fork."""
        if self._pid != os.getpid():
            self._init_runtime()  # a forked child shares no connections (nor a lock held at the fork) with its parent
        session = getattr(self._local, "session", None)
        if session is None:
            import requests
            from requests.adapters import HTTPAdapter

            session = requests.Session()
            adapter = HTTPAdapter(pool_connections=len(self.urls), pool_maxsize=self.pool_size, max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._local.session = session
            with self._lock:
                self._sessions.add(session)
        return session

    def close(self) -> None:
        """Close every thread's pooled connections (a later call opens new ones)."""
        with self._lock:
            sessions, self._sessions = list(self._sessions), weakref.WeakSet()
            self._local = threading.local()
        for session in sessions:
            session.close()

    def post(self, payload: Any, parse: Callable[[Any], T]) -> T:
        """``parse(decoded JSON body)`` of the first attempt that succeeds; ``parse`` raises
        :class:`MalformedResponse` for a body of the wrong shape (retried like a failed attempt)."""
        import requests

        session = self.session
        with self._lock:
            first = next(self._next)
        failures: list[str] = []
        for attempt in range(self.retries + 1):
            url = self.urls[(first + attempt) % len(self.urls)]
            if attempt:
                time.sleep(min(self.max_backoff, self.backoff * 2 ** (attempt - 1)))
            try:
                response = session.post(url, json=payload, timeout=self.timeout)
                if response.status_code != 200:
                    reason = f"HTTP {response.status_code}: {excerpt(response.text)}"
                    if response.status_code not in _RETRYABLE_STATUS:
                        failures.append(f"{url}: {reason} (not retried)")
                        break
                    failures.append(f"{url}: {reason}")
                    continue
                try:
                    body = response.json()
                except ValueError:
                    raise MalformedResponse(f"body is not JSON: {excerpt(response.text)}") from None
                return parse(body)
            except requests.Timeout:
                failures.append(f"{url}: timed out after {self.timeout:g} s")
            except requests.ConnectionError as exc:
                failures.append(f"{url}: connection failed ({_root_cause(exc)})")
            except MalformedResponse as exc:
                failures.append(f"{url}: malformed response ({exc})")
            except requests.RequestException as exc:
                failures.append(f"{url}: {type(exc).__name__}: {exc}")
        error = self.error(f"{self.what} failed after {len(failures)} attempt(s): " + "; ".join(failures))
        error.failures = failures
        raise error


def excerpt(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[:limit] + "…")


def _root_cause(exc: BaseException) -> str:
    """The innermost cause of a requests error, which names the real problem (refused, reset, ...)."""
    while exc.__cause__ is not None or (exc.args and isinstance(exc.args[0], BaseException)):
        exc = exc.__cause__ or exc.args[0]
    text = str(exc)
    return text.split(": ", 1)[-1] if "Failed to establish" in text else text or type(exc).__name__


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now (for a local server to bind)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
