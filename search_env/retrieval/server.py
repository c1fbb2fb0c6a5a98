"""A retrieval server in Search-R1's protocol (FastAPI + uvicorn, the ``server`` extra).

    search-env serve --corpus wiki.jsonl --retriever bm25 --port 8000
    python -m search_env.retrieval.server --corpus wiki.jsonl --retriever dense --index hnsw

The command's options are defined once, by :func:`add_arguments`, and carried out by :func:`run`; the
``search-env`` CLI registers ``serve`` with both, and :func:`main` is the ``python -m`` entry point.

Endpoints:

- ``POST /retrieve`` ``{"queries": [...], "topk": k, "return_scores": true}`` ->
  ``{"result": [[{"document": {"id", "contents"}, "score"}, ...], ...]}``; ``{"query": "..."}`` is
  accepted too and answered in the same shape (a list of one list). Without ``return_scores`` each
  entry is the bare document, as in Search-R1.
- ``GET /health`` -> ``{"status": "ok", "retriever", "passages", "corpus", "fingerprint"}``.

One worker thread owns the retriever: every request's queries go into a queue, and the worker runs one
``batch_search`` over all queries waiting at that moment (up to ``max_batch``), so concurrent clients
are batched together and the retriever is never called from two threads at once.
"""

# No ``from __future__ import annotations``: FastAPI reads the request model from the endpoint's
# annotations at run time, and that model is defined inside create_app.
import argparse
import asyncio
import logging
import queue
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from search_env._args import OneLineParser, positive_int
from search_env.bundled import MINILM_NAME
from search_env.data.corpus import Corpus, load_corpus
from search_env.retrieval.base import Hit, Retriever

__all__ = ["DESCRIPTION", "QueryBatcher", "add_arguments", "build_retriever", "create_app", "main", "run"]

DESCRIPTION = "Serve a corpus over HTTP in Search-R1's /retrieve protocol (one server per retrieval node)."

logger = logging.getLogger(__name__)

MAX_QUERIES = 4096  # per request
MAX_TOPK = 1000


@dataclass
class _Job:
    queries: list[str]
    k: int
    future: Future = field(default_factory=Future)


class QueryBatcher:
    """Runs ``retriever.batch_search`` on one thread, merging the queries of requests that wait together.

    ``submit(queries, k)`` returns a ``Future`` of the hit lists. The worker takes every job queued (up
    to ``max_batch`` queries, waiting at most ``max_wait`` seconds for more after the first), groups them
    by ``k`` and answers each group with one ``batch_search``.
    """

    def __init__(self, retriever: Retriever, *, max_batch: int = 256, max_wait: float = 0.0):
        self.retriever = retriever
        self.max_batch, self.max_wait = int(max_batch), float(max_wait)
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="search-env-retriever", daemon=True)
        self._thread.start()

    def submit(self, queries: list[str], k: int) -> Future:
        job = _Job(list(queries), int(k))
        self._queue.put(job)
        return job.future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _take(self) -> list[_Job] | None:
        """The next jobs to run together (blocks for the first one); None when closed."""
        first = self._queue.get()
        if first is None:
            return None
        jobs, n = [first], len(first.queries)
        while n < self.max_batch:
            try:
                job = self._queue.get(timeout=self.max_wait) if self.max_wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                self._queue.put(None)
                break
            jobs.append(job)
            n += len(job.queries)
        return jobs

    def _run(self) -> None:
        while (jobs := self._take()) is not None:
            for k in sorted({job.k for job in jobs}):
                group = [job for job in jobs if job.k == k and job.future.set_running_or_notify_cancel()]
                try:
                    hits = self.retriever.batch_search([q for job in group for q in job.queries], k)
                except Exception as exc:  # the request fails, the server keeps serving
                    logger.exception("batch_search failed")
                    for job in group:
                        job.future.set_exception(exc)
                    continue
                offset = 0
                for job in group:
                    job.future.set_result(hits[offset : offset + len(job.queries)])
                    offset += len(job.queries)


def _document(hit: Hit) -> dict:
    """A hit as a FlashRAG/Search-R1 corpus row."""
    return {"id": hit.doc_id, "contents": f'"{hit.title}"\n{hit.text}'}


def create_app(retriever: Retriever, *, corpus: Corpus | None = None, default_topk: int = 3,
               max_batch: int = 256, max_wait: float = 0.0):
    """The FastAPI app serving ``retriever`` in Search-R1's protocol (see the module docstring).

    Args:
        retriever: what answers the queries.
        corpus: only feeds ``/health`` (default: ``retriever.corpus`` when it has one).
        default_topk: passages per query when a request names none.
        max_batch: most queries merged into one ``batch_search``.
        max_wait: seconds to wait for more queries before a batch runs.
    """
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, HTTPException
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, Field

    corpus = corpus if corpus is not None else getattr(retriever, "corpus", None)
    batcher = QueryBatcher(retriever, max_batch=max_batch, max_wait=max_wait)

    class QueryRequest(BaseModel):
        queries: list[str] | None = Field(default=None, max_length=MAX_QUERIES)
        query: str | None = None
        topk: int | None = Field(default=None, ge=0, le=MAX_TOPK)
        return_scores: bool = True

    @asynccontextmanager
    async def lifespan(_app):
        yield
        batcher.close()

    app = FastAPI(title="search_env retrieval server", version="1", lifespan=lifespan)
    app.state.retriever, app.state.batcher = retriever, batcher

    @app.get("/health")
    def health() -> dict:
        info = {"status": "ok", "retriever": type(retriever).__name__}
        if corpus is not None:
            info.update(passages=len(corpus), corpus=corpus.name, fingerprint=corpus.fingerprint)
        return info

    @app.post("/retrieve")
    async def retrieve(request: QueryRequest) -> JSONResponse:
        if (request.queries is None) == (request.query is None):
            raise HTTPException(422, "send exactly one of 'queries' (a list of strings) or 'query' (a string)")
        queries = request.queries if request.queries is not None else [request.query]
        k = default_topk if request.topk is None else request.topk
        hits = await asyncio.wrap_future(batcher.submit(queries, k)) if queries else []
        if request.return_scores:
            result = [[{"document": _document(h), "score": h.score} for h in row] for row in hits]
        else:
            result = [[_document(h) for h in row] for row in hits]
        return JSONResponse({"result": result})

    return app


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The serve options, on ``parser`` (``search-env serve``'s subparser, or :func:`main`'s own)."""
    parser.add_argument("--corpus", help="FlashRAG corpus JSONL (default: the built-in world's corpus)")
    parser.add_argument("--retriever", choices=("bm25", "rank-bm25", "dense"), default="bm25")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (0.0.0.0 to serve other machines)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--topk", type=positive_int, default=3, help="hits per query when a request gives no topk")
    parser.add_argument("--index-dir", help="where the index is kept (default: the search_env cache)")
    parser.add_argument("--encoder", default=MINILM_NAME, help="dense: Hugging Face encoder name or path")
    parser.add_argument("--index", choices=("numpy", "flat", "hnsw", "ivf"), default="numpy", help="dense: search index")
    parser.add_argument("--max-batch", type=positive_int, default=256, help="most queries merged into one batch_search")
    parser.add_argument("--max-wait-ms", type=float, default=0.0, help="wait this long for more queries to batch")
    parser.add_argument("--log-level", default="info")


def build_retriever(args: argparse.Namespace) -> tuple[Retriever, Corpus]:
    """The retriever ``serve`` was asked for, over ``--corpus`` (default: the built-in world's corpus)."""
    corpus = load_corpus(args.corpus)
    if args.retriever == "dense":
        from search_env.retrieval.dense import DenseRetriever

        cache = args.index_dir if args.index_dir else True
        return DenseRetriever(corpus, args.encoder, index=args.index, cache=cache, show_progress=True), corpus
    from search_env.retrieval.bm25 import get_bm25

    backend = "rank-bm25" if args.retriever == "rank-bm25" else "bm25s"
    kwargs = {"cache": args.index_dir} if args.index_dir and backend == "bm25s" else {}
    return get_bm25(corpus, backend, **kwargs), corpus


def run(args: argparse.Namespace) -> int:
    """Serve as ``args`` (from :func:`add_arguments`) say: build (or load) the index, then serve it with
    uvicorn until stopped. Returns the exit status (0)."""
    import uvicorn

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    retriever, corpus = build_retriever(args)
    app = create_app(retriever, corpus=corpus, default_topk=args.topk, max_batch=args.max_batch,
                     max_wait=args.max_wait_ms / 1000)
    logger.info("serving %s over %d passages on http://%s:%d/retrieve", type(retriever).__name__, len(corpus),
                args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level.lower(), access_log=False)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m search_env.retrieval.server``: its own parser over :func:`add_arguments`, then :func:`run`."""
    parser = OneLineParser(prog="python -m search_env.retrieval.server", description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
