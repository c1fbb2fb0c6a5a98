"""A retrieval server in Search-R1's protocol (FastAPI + uvicorn, the ``server`` extra).

    search-env serve --corpus wiki.jsonl --retriever bm25 --port 8000
    python -m search_env.retrieval.server --corpus wiki.jsonl --retriever dense --index hnsw

The command's options are defined once, by :func:`add_arguments`, and carried out by :func:`run`; the
``search-env`` CLI registers ``serve`` with both, and :func:`main` is the ``python -m`` entry point.

Endpoints:

- ``POST /retrieve`` ``{"queries": [...], "topk": k, "return_scores": false}`` ->
  ``{"result": [[doc, ...], ...]}``, or with ``"return_scores": true``
  ``{"result": [[{"document": doc, "score": s}, ...], ...]}``; ``doc`` is ``{"id", "contents", "title", "text"}``.
  ``{"query": "..."}`` is accepted too and answered in the same shape (a list of one list). As in Search-R1's
  server: ``return_scores`` defaults to false, and a missing, null or 0 ``topk`` means the server's default.
- ``GET /health`` -> ``{"status": "ok", "retriever", "passages", "corpus", "fingerprint"}``; ``corpus`` is the
  corpus's file name without its directory (the server's paths stay private), ``fingerprint`` its content hash.

Limits: at most ``max_queries`` queries per request (default 100,000; trainers send a turn's whole batch, e.g.
Search-R1's 1024 x 5 = 5,120) and ``max_body_bytes`` per request body (default 100 MB; larger bodies get 413).
An invalid request gets 422 with what is wrong; the values it echoes are cut to 200 characters, and non-finite
numbers (``1e999``, ``NaN``, ``Infinity``) are echoed as text.

One worker thread owns the retriever and runs one ``batch_search`` at a time over at most ``max_batch`` queries.
A request's queries are split into such chunks, and requests take turns chunk by chunk in arrival order, so a
one-query request never waits behind all of a 5,000-query one, while concurrent small requests are still merged
into one batch.
"""

# No ``from __future__ import annotations``: FastAPI reads the request model from the endpoint's
# annotations at run time, and that model is defined inside create_app.
import argparse
import asyncio
import errno
import json
import logging
import math
import os
import queue
import socket
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from search_env.agents.models import MINILM_NAME
from search_env.commands.args import CLIError, OneLineParser, positive_int
from search_env.data.corpus import Corpus, load_corpus
from search_env.retrieval.base import Hit, Retriever

__all__ = ["DESCRIPTION", "QueryBatcher", "add_arguments", "bind", "build_retriever", "create_app", "main", "run"]

DESCRIPTION = "Serve a corpus over HTTP in Search-R1's /retrieve protocol (one server per retrieval node)."

logger = logging.getLogger(__name__)

MAX_QUERIES = 100_000  # per request, by default
MAX_BODY_BYTES = 100 * 1024 * 1024
MAX_TOPK = 1000
ECHO_CHARS = 200


@dataclass
class _Job:
    queries: list[str]
    k: int
    future: Future = field(default_factory=Future)
    done: int = 0  # queries answered so far
    hits: list = field(default_factory=list)


class QueryBatcher:
    """Runs ``retriever.batch_search`` on one thread over at most ``max_batch`` queries at a time.

    ``submit(queries, k)`` (any number of queries) returns a ``Future`` of the hit lists. The worker keeps the
    requests in arrival order and builds each batch from those with the first one's ``k``: each gets an equal share
    of the batch (at least one query), so large requests are answered chunk by chunk, taking turns with every
    other request, and small ones that wait together share one ``batch_search``. ``max_wait``: seconds to wait for
    more requests before a batch that is not full runs.
    """

    def __init__(self, retriever: Retriever, *, max_batch: int = 256, max_wait: float = 0.0):
        self.retriever = retriever
        self.max_batch, self.max_wait = int(max_batch), float(max_wait)
        self._inbox: queue.Queue[_Job | None] = queue.Queue()
        self._active: list[_Job] = []
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="search-env-retriever", daemon=True)
        self._thread.start()

    def submit(self, queries: list[str], k: int) -> Future:
        job = _Job(list(queries), int(k))
        if not job.queries:
            job.future.set_result([])
        else:
            self._inbox.put(job)
        return job.future

    def close(self) -> None:
        self._inbox.put(None)
        self._thread.join(timeout=5)

    def _collect(self) -> None:
        """Move waiting requests into the active list: blocks for the first when none is active, takes every one
        already waiting, then waits up to ``max_wait`` seconds for more while a batch is not full."""
        if not self._active and not self._admit(self._inbox.get()):
            return
        deadline = time.monotonic() + self.max_wait
        while True:
            timeout = deadline - time.monotonic()
            full = sum(len(job.queries) - job.done for job in self._active) >= self.max_batch
            try:
                job = self._inbox.get(timeout=timeout) if timeout > 0 and not full else self._inbox.get_nowait()
            except queue.Empty:
                return
            if not self._admit(job):
                return

    def _admit(self, job: _Job | None) -> bool:
        """Add a request (unless it was cancelled); False for the close signal."""
        if job is None:
            self._closed = True
            return False
        if job.future.set_running_or_notify_cancel():
            self._active.append(job)
        return True

    def _next_batch(self) -> list[tuple[_Job, int, int]]:
        k = self._active[0].k
        same = [job for job in self._active if job.k == k]
        share, room, parts = max(1, self.max_batch // len(same)), self.max_batch, []
        for job in same:
            take = min(share, len(job.queries) - job.done, room)
            if take <= 0:
                break
            parts.append((job, job.done, job.done + take))
            job.done += take
            room -= take
        return parts

    def _run(self) -> None:
        while True:
            self._collect()
            if self._closed and not self._active:
                return
            if not self._active:
                continue
            parts = self._next_batch()
            k = parts[0][0].k
            try:
                hits = self.retriever.batch_search([q for job, a, b in parts for q in job.queries[a:b]], k)
            except Exception as exc:  # those requests fail, the server keeps serving
                logger.exception("batch_search failed")
                for job, _, _ in parts:
                    if not job.future.done():
                        job.future.set_exception(exc)
                self._active = [job for job in self._active if not job.future.done()]
                continue
            offset = 0
            for job, a, b in parts:
                job.hits.extend(hits[offset : offset + b - a])
                offset += b - a
                if job.done == len(job.queries):
                    job.future.set_result(job.hits)
            served = parts[0][0]
            # Round robin: the first request served goes to the back, finished ones leave.
            self._active = [job for job in self._active if not job.future.done() and job is not served] + \
                ([served] if not served.future.done() else [])


def _document(hit: Hit, corpus: Corpus | None) -> dict:
    """A hit as a corpus row: ``contents`` as the corpus stores it, ``title`` and ``text`` beside it."""
    contents = (
        corpus.get(hit.doc_id).contents if corpus is not None and hit.doc_id in corpus else f'"{hit.title}"\n{hit.text}'
    )
    return {"id": hit.doc_id, "contents": contents, "title": hit.title, "text": hit.text}


def _echo(value) -> object:
    """What an error response may echo of a bad value: short, and always encodable as JSON."""
    if isinstance(value, (bool, int, str)) and len(str(value)) <= ECHO_CHARS:
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    text = repr(value)
    return text if len(text) <= ECHO_CHARS else text[:ECHO_CHARS] + "…"


def create_app(retriever: Retriever, *, corpus: Corpus | None = None, default_topk: int = 3,
               max_batch: int = 256, max_wait: float = 0.0, max_queries: int = MAX_QUERIES,
               max_body_bytes: int = MAX_BODY_BYTES):
    """The FastAPI app serving ``retriever`` in Search-R1's protocol (see the module docstring).

    Args:
        retriever: what answers the queries.
        corpus: only feeds ``/health`` (default: ``retriever.corpus`` when it has one).
        default_topk: passages per query when a request names none.
        max_batch: most queries merged into one ``batch_search``.
        max_wait: seconds to wait for more queries before a batch runs.
        max_queries: most queries in one request (more: 422).
        max_body_bytes: largest request body (larger: 413).
    """
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, HTTPException
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, Field

    corpus = corpus if corpus is not None else getattr(retriever, "corpus", None)
    batcher = QueryBatcher(retriever, max_batch=max_batch, max_wait=max_wait)

    class QueryRequest(BaseModel):
        queries: list[str] | None = Field(default=None, max_length=max_queries)
        query: str | None = None
        topk: int | None = Field(default=None, ge=0, le=MAX_TOPK)
        return_scores: bool = False

    @asynccontextmanager
    async def lifespan(_app):
        yield
        batcher.close()

    app = FastAPI(title="search_env retrieval server", version="1", lifespan=lifespan)
    app.state.retriever, app.state.batcher = retriever, batcher
    app.add_middleware(_BodyLimit, limit=int(max_body_bytes))

    @app.exception_handler(RequestValidationError)
    async def invalid(_request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type"), "input": _echo(e.get("input"))}
            for e in exc.errors()[:20]
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.get("/health")
    def health() -> dict:
        info = {"status": "ok", "retriever": type(retriever).__name__}
        if corpus is not None:
            info.update(passages=len(corpus), corpus=os.path.basename(corpus.name), fingerprint=corpus.fingerprint)
        return info

    @app.post("/retrieve")
    async def retrieve(request: QueryRequest) -> JSONResponse:
        if (request.queries is None) == (request.query is None):
            raise HTTPException(422, "send exactly one of 'queries' (a list of strings) or 'query' (a string)")
        queries = request.queries if request.queries is not None else [request.query]
        k = request.topk or default_topk  # None or 0: the default, as in Search-R1's server
        hits = await asyncio.wrap_future(batcher.submit(queries, k))
        if request.return_scores:
            result = [[{"document": _document(h, corpus), "score": h.score} for h in row] for row in hits]
        else:
            result = [[_document(h, corpus) for h in row] for row in hits]
        return JSONResponse({"result": result})

    return app


class _BodyLimit:
    """ASGI middleware: 413 for a request body over ``limit`` bytes, by its Content-Length or as it streams in.

    The body is read here (the endpoint reads it whole anyway) and handed on in one piece."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self._reject(send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await self._reject(send)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _reject(self, send):
        body = json.dumps({"detail": f"request body over {self.limit} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The serve options, on ``parser`` (``search-env serve``'s subparser, or :func:`main`'s own)."""
    parser.add_argument("--corpus", help="FlashRAG corpus JSONL (default: the built-in world's corpus)")
    parser.add_argument("--mmap", action="store_true", help="keep the corpus memory-mapped on disk (built once, shared "
                                                            "by every process on the machine) instead of in memory")
    parser.add_argument("--retriever", choices=("bm25", "rank-bm25", "dense"), default="bm25",
                        help="bm25 (bm25s), rank-bm25, or dense (an encoder and a vector index)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (0.0.0.0 to serve other machines)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port to listen on")
    parser.add_argument("--topk", type=positive_int, default=3, help="hits per query when a request gives no topk")
    parser.add_argument("--index-dir", help="where the index is kept (default: the search_env cache)")
    parser.add_argument("--encoder", default=MINILM_NAME, help="dense: Hugging Face encoder name or path")
    parser.add_argument(
        "--index", choices=("numpy", "flat", "hnsw", "ivf"), default="numpy", help="dense: search index"
    )
    parser.add_argument("--max-batch", type=positive_int, default=256, help="most queries merged into one batch_search")
    parser.add_argument("--max-wait-ms", type=float, default=0.0, help="wait this long for more queries to batch")
    parser.add_argument("--max-queries", type=positive_int, default=MAX_QUERIES, help="most queries in one request")
    parser.add_argument("--max-body-mb", type=float, default=MAX_BODY_BYTES / 2**20, help="largest request body, MiB")
    parser.add_argument("--log-level", default="info", help="debug, info, warning or error")


def build_retriever(args: argparse.Namespace) -> tuple[Retriever, Corpus]:
    """The retriever ``serve`` was asked for, over ``--corpus`` (default: the built-in world's corpus)."""
    corpus = load_corpus(args.corpus, mmap=bool(getattr(args, "mmap", False) and args.corpus))
    if args.retriever == "dense":
        from search_env.retrieval.dense import DenseRetriever

        cache = args.index_dir if args.index_dir else True
        return DenseRetriever(corpus, args.encoder, index=args.index, cache=cache, show_progress=True), corpus
    from search_env.retrieval.bm25 import get_bm25

    backend = "rank-bm25" if args.retriever == "rank-bm25" else "bm25s"
    kwargs = {"cache": args.index_dir} if args.index_dir and backend == "bm25s" else {}
    return get_bm25(corpus, backend, **kwargs), corpus


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``(host, port)``, for uvicorn to listen on; a port in use (or any other failure to
    bind) raises :class:`~search_env.commands.args.CLIError` naming the address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does; a listening port still refuses
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        why = "the port is in use (pick another with --port)" if e.errno == errno.EADDRINUSE else e.strerror or e
        raise CLIError(f"cannot serve on {host}:{port}: {why}") from None
    sock.set_inheritable(True)
    return sock


def run(args: argparse.Namespace) -> int:
    """Serve as ``args`` (from :func:`add_arguments`) say: bind the port (first, so that a busy one fails before the
    index is built), build (or load) the index, then serve it with uvicorn until stopped. Returns the exit status
    (0); a port that cannot be bound raises :class:`~search_env.commands.args.CLIError`."""
    import uvicorn

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sock = bind(args.host, args.port)
    try:
        retriever, corpus = build_retriever(args)
        app = create_app(retriever, corpus=corpus, default_topk=args.topk, max_batch=args.max_batch,
                         max_wait=args.max_wait_ms / 1000, max_queries=args.max_queries,
                         max_body_bytes=int(args.max_body_mb * 2**20))
        logger.info("serving %s over %d passages on http://%s:%d/retrieve", type(retriever).__name__, len(corpus),
                    args.host, args.port)
        config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level.lower(),
                                access_log=False)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m search_env.retrieval.server``: its own parser over :func:`add_arguments`, then :func:`run`."""
    parser = OneLineParser(prog="python -m search_env.retrieval.server", description=DESCRIPTION)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except CLIError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
