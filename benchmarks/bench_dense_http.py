"""Retrieval beside BM25's scale: bm25s in-process vs over HTTP, dense numpy vs FAISS, the bundled encoder's speed.

    .venv/bin/python benchmarks/bench_dense_http.py [--small 100000] [--dense 100000] [--hnsw]

1. In-process vs HTTP: a ``--small`` random-word corpus (bench_bm25's Zipf generator) indexed with bm25s, searched
   in this process vs through ``search-env serve`` on 127.0.0.1 in its own process, single queries and batches of
   64 (``HTTPRetriever``, keep-alive), timed alternately.
2. Dense: ``--dense`` random unit vectors (dim 384, the bundled MiniLM's) searched exactly with numpy and with a
   FAISS flat index (plus HNSW with ``--hnsw``); and the bundled encoder's own speed.

BM25 at 1M-3M passages (build, memory, 16 processes, the server's RSS) is ``bench_retrieval_scale.py``. The last
line prints the ratios. About 3 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_bm25 import make_corpus, make_queries

from search_env._http import free_port
from search_env.retrieval.bm25 import BM25Retriever

ROOT = Path(__file__).resolve().parents[1]

MB = 1 << 20


def per_call(fn, items) -> float:
    """Mean seconds per call of ``fn`` over ``items``."""
    start = time.perf_counter()
    for item in items:
        fn(item)
    return (time.perf_counter() - start) / len(items)


def start_server(*flags: str) -> tuple[subprocess.Popen, str, float]:
    """``search-env serve`` (the server module) with ``flags`` on a free port of 127.0.0.1, in its own process;
    returns the process, its URL and the seconds until ``/health`` answered."""
    import requests

    port = free_port()
    cmd = [sys.executable, "-m", "search_env.retrieval.server", *flags, "--port", str(port), "--log-level", "warning"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url, deadline, start = f"http://127.0.0.1:{port}", time.monotonic() + 600, time.perf_counter()
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"server exited: {server.stderr.read()}")
        try:
            if requests.get(f"{url}/health", timeout=1).ok:
                return server, url, time.perf_counter() - start
        except requests.ConnectionError:
            time.sleep(0.2)
        if time.monotonic() > deadline:
            server.kill()
            raise RuntimeError("server did not start")


def bench_http(n: int, workdir: Path, n_queries: int, batch: int) -> dict:
    import psutil

    from search_env.data.corpus import load_corpus
    from search_env.retrieval.http import HTTPRetriever

    corpus = load_corpus(workdir / f"corpus-{n}.jsonl")
    local = BM25Retriever.load(workdir / f"bm25-{n}", corpus, mmap=True)
    server, url, t_start = start_server("--corpus", str(workdir / f"corpus-{n}.jsonl"), "--retriever", "bm25",
                                        "--index-dir", str(workdir / f"bm25-{n}"))
    try:
        remote = HTTPRetriever(url, timeout=30)
        queries = make_queries([p.text for p in corpus], n_queries + 10 * batch, seed=7)
        singles, batches = queries[:n_queries], [queries[n_queries + i * batch:][:batch] for i in range(10)]
        for batch_ in batches:  # same answers; also warms both up (page cache, connections)
            assert remote.batch_search(batch_, 10) == local.batch_search(batch_, 10)
        times: dict[str, list[float]] = {}
        for round_ in range(3):  # alternate the two, so that load from other processes hits both alike
            for name, retriever in (("local", local), ("http", remote)):
                times.setdefault(f"{name}_single_ms", []).append(
                    per_call(lambda q, r=retriever: r.search(q, 10), singles[round_::3]) * 1e3)
                times.setdefault(f"{name}_batch_ms", []).append(
                    per_call(lambda b, r=retriever: r.batch_search(b, 10), batches[round_::3]) * 1e3)
        result = {"server_start_s": t_start, **{key: float(np.median(v)) for key, v in times.items()}}
        result["server_rss_mb"] = psutil.Process(server.pid).memory_info().rss / MB
        return result
    finally:
        server.terminate()
        server.wait(timeout=30)


# -- dense -------------------------------------------------------------------------------------------


def bench_dense(n: int, n_queries: int, batch: int, hnsw: bool) -> dict:
    from search_env.data.corpus import Corpus, Passage
    from search_env.data.synthetic import build_world
    from search_env.retrieval.dense import DenseRetriever
    from search_env.retrieval.encoder import get_encoder

    encoder = get_encoder()
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n, encoder.dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[rng.integers(0, n, n_queries + batch)] + 0.3 * rng.standard_normal(
        (n_queries + batch, encoder.dim), dtype=np.float32
    )
    corpus = Corpus([Passage(f"v{i}", "", "x") for i in range(n)], name=f"vectors-{n}")
    result: dict = {"passages": n, "dim": encoder.dim, "embeddings_mb": vectors.nbytes / MB}
    exact = None
    for kind in ("numpy", "flat") + (("hnsw",) if hnsw else ()):
        start = time.perf_counter()
        retriever = DenseRetriever.from_embeddings(corpus, vectors, encoder, index=kind)
        result[f"{kind}_build_s"] = time.perf_counter() - start
        result[f"{kind}_single_ms"] = (
            per_call(lambda q, r=retriever: r.search_vectors(q[None], 10), queries[:n_queries]) * 1e3
        )
        result[f"{kind}_batch_ms"] = (
            per_call(lambda b, r=retriever: r.search_vectors(b, 10), [queries[n_queries:]] * 3) * 1e3
        )
        positions = retriever.search_vectors(queries, 10)[0]
        exact = positions if exact is None else exact
        result[f"{kind}_recall10"] = float(
            np.mean([len(set(a) & set(b)) / 10 for a, b in zip(positions.tolist(), exact.tolist())])
        )
    import torch

    world = build_world(seed=0, n_passages=300)
    texts = [p.contents for p in world.corpus][:128]
    questions = [q.question for q in world.questions][:batch]
    default_threads = torch.get_num_threads()
    for threads in sorted({default_threads, 1}, reverse=True):
        torch.set_num_threads(threads)
        encoder.encode(questions[:4])
        result[f"encode_query_ms_{threads}"] = per_call(lambda q: encoder.encode([q]), questions[:16]) * 1e3
        result[f"encode_batch_ms_{threads}"] = per_call(lambda b: encoder.encode(b), [questions] * 2) * 1e3
        start = time.perf_counter()
        encoder.encode(texts, "passage")
        result[f"encode_passages_per_s_{threads}"] = len(texts) / (time.perf_counter() - start)
    torch.set_num_threads(default_threads)
    result["torch_threads"] = default_threads
    return result


# -- main --------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--small", type=int, default=100_000, help="passages of the bm25s corpus searched locally and over HTTP"
    )
    parser.add_argument("--dense", type=int, default=100_000, help="vectors in the dense comparison")
    parser.add_argument("--queries", type=int, default=200, help="single queries timed per setting")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--hnsw", action="store_true", help="also time a FAISS HNSW index (slow to build)")
    parser.add_argument("--workdir", help="keep corpora and indexes here (default: a temporary folder)")
    args = parser.parse_args()

    import faiss
    import torch

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, numpy {np.__version__}, faiss {faiss.__version__}, "
        f"torch {torch.__version__}"
    )
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())}\n")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()

        corpus, _ = make_corpus(args.small)
        corpus.to_jsonl(workdir / f"corpus-{args.small}.jsonl")
        BM25Retriever(corpus, cache=workdir / f"bm25-{args.small}", mmap=True)
        del corpus
        http = bench_http(args.small, workdir, args.queries, args.batch)
        print(f"\n== bm25s over {args.small:,} passages: in-process vs HTTP on 127.0.0.1 "
              "(server in its own process) ==")
        print(f"{'':>12} {'single ms':>10} {'batch of ' + str(args.batch) + ' ms':>16}")
        for name in ("local", "http"):
            print(f"{name:>12} {http[name + '_single_ms']:>10.2f} {http[name + '_batch_ms']:>16.1f}")
        print(f"server: up in {http['server_start_s']:.1f} s, RSS {http['server_rss_mb']:.0f} MB")

        dense = bench_dense(args.dense, args.queries // 4, args.batch, args.hnsw)
        print(f"\n== dense search over {args.dense:,} unit vectors of dim {dense['dim']} "
              f"({dense['embeddings_mb']:.0f} MB), k=10, query vectors given ==")
        print(f"{'index':>8} {'build s':>8} {'single ms':>10} "
              f"{'batch of ' + str(args.batch) + ' ms':>16} {'recall@10':>10}")
        for kind in ("numpy", "flat", "hnsw"):
            if f"{kind}_build_s" in dense:
                print(f"{kind:>8} {dense[kind + '_build_s']:>8.2f} {dense[kind + '_single_ms']:>10.2f} "
                      f"{dense[kind + '_batch_ms']:>16.1f} {dense[kind + '_recall10']:>10.3f}")
        for threads in sorted({dense["torch_threads"], 1}, reverse=True):
            print(
                f"bundled MiniLM encoder, {threads} torch thread(s): "
                f"a query {dense[f'encode_query_ms_{threads}']:.1f} ms, "
                f"a batch of {args.batch} queries {dense[f'encode_batch_ms_{threads}']:.0f} ms, "
                f"{dense[f'encode_passages_per_s_{threads}']:.0f} passages/s"
            )
        print(f"\ntotal {time.perf_counter() - start:.0f} s; load average after: "
              f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")

    print(
        f"ratios: dense faiss-flat/numpy single {dense['flat_single_ms'] / dense['numpy_single_ms']:.2f}x "
        f"batch {dense['flat_batch_ms'] / dense['numpy_batch_ms']:.2f}x | "
        f"http/in-process single {http['http_single_ms'] / http['local_single_ms']:.2f}x "
        f"batch{args.batch} {http['http_batch_ms'] / http['local_batch_ms']:.2f}x"
    )


if __name__ == "__main__":
    main()
