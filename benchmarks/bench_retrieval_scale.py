"""What one machine holds: bm25s at 100k vs 1M passages, in-process vs HTTP, dense numpy vs FAISS flat.

    .venv/bin/python benchmarks/bench_retrieval_scale.py [--small 100000] [--large 1000000] [--dense 100000]

1. bm25s scale. For each size a fresh process generates a random-word corpus (bench_bm25's Zipf
   generator, 40-120 words a passage), writes it as FlashRAG JSONL and builds the index on disk (build
   time, peak RSS); a second fresh process loads corpus and index (memory-mapped) and runs queries
   (latency, RSS split into anonymous memory and mapped index pages).
2. In-process vs HTTP: the small corpus's bm25s index in this process vs ``search-env serve`` on
   127.0.0.1 in its own process, for single queries and batches of 64 (``HTTPRetriever``, keep-alive).
3. Dense: ``--dense`` random unit vectors (dim 384, the bundled MiniLM's) searched exactly with numpy
   and with a FAISS flat index (plus HNSW with ``--hnsw``); and the bundled encoder's own speed.

The last line prints the ratios. Takes about 6-8 minutes on 2 CPU cores; ``--large 300000`` for a quick run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # runs from a checkout without installing the package
sys.path.insert(0, str(HERE))

from bench_bm25 import make_corpus, make_queries  # noqa: E402

MB = 1 << 20


def memory() -> dict[str, float]:
    """RSS now, its anonymous and file-backed (memory-mapped) parts, and the peak, in MB."""
    status = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                status[key] = int(value.split()[0]) / 1024
    except OSError:  # not Linux: the peak only
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        status["VmHWM"] = peak / (MB if sys.platform == "darwin" else 1024)
    return {"rss": status.get("VmRSS", float("nan")), "anon": status.get("RssAnon", float("nan")),
            "mapped": status.get("RssFile", float("nan")), "peak": status["VmHWM"]}


def per_call(fn, items) -> float:
    """Mean seconds per call of ``fn`` over ``items``."""
    start = time.perf_counter()
    for item in items:
        fn(item)
    return (time.perf_counter() - start) / len(items)


def dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / MB


# -- phases run in fresh processes -------------------------------------------------------------------


def phase_bm25_build(n: int, workdir: Path) -> dict:
    from search_env.retrieval.bm25 import BM25Retriever

    start = time.perf_counter()
    corpus, texts = make_corpus(n)
    t_generate = time.perf_counter() - start
    corpus.to_jsonl(workdir / f"corpus-{n}.jsonl")
    before = memory()
    start = time.perf_counter()
    BM25Retriever(corpus, cache=workdir / f"bm25-{n}", mmap=True)
    return {
        "passages": n,
        "words": sum(len(t.split()) for t in texts),
        "generate_s": t_generate,
        "build_s": time.perf_counter() - start,
        "build_peak_mb": memory()["peak"],
        "corpus_mb_in_build": before["rss"],
        "index_disk_mb": dir_mb(workdir / f"bm25-{n}"),
        "jsonl_mb": (workdir / f"corpus-{n}.jsonl").stat().st_size / MB,
    }


def phase_bm25_query(n: int, workdir: Path, n_queries: int, batch: int) -> dict:
    from search_env.data.corpus import load_corpus
    from search_env.retrieval.bm25 import BM25Retriever

    base = memory()
    start = time.perf_counter()
    corpus = load_corpus(workdir / f"corpus-{n}.jsonl")
    t_corpus = time.perf_counter() - start
    with_corpus = memory()
    start = time.perf_counter()
    retriever = BM25Retriever.load(workdir / f"bm25-{n}", corpus, mmap=True)
    t_index = time.perf_counter() - start
    queries = make_queries([p.text for p in corpus], n_queries + 10 * batch)
    retriever.search(queries[0], 10)  # first touch
    single = per_call(lambda q: retriever.search(q, 10), queries[:n_queries])
    batches = [queries[n_queries + i * batch : n_queries + (i + 1) * batch] for i in range(10)]
    batched = per_call(lambda b: retriever.batch_search(b, 10), batches)
    after = memory()
    return {
        "passages": n,
        "load_corpus_s": t_corpus,
        "load_index_s": t_index,
        "single_ms": single * 1e3,
        "batch_ms": batched * 1e3,
        "rss_corpus_mb": with_corpus["rss"] - base["rss"],
        "rss_mb": after["rss"],
        "anon_mb": after["anon"],
        "mapped_mb": after["mapped"],
        "peak_mb": after["peak"],
    }


def run_phase(*args: str) -> dict:
    """Run this script's ``--phase`` in a fresh interpreter; its last stdout line is the JSON result."""
    out = subprocess.run([sys.executable, __file__, "--phase", *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- in-process vs HTTP ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_http(n: int, workdir: Path, n_queries: int, batch: int) -> dict:
    import psutil
    import requests

    from search_env.data.corpus import load_corpus
    from search_env.retrieval.bm25 import BM25Retriever
    from search_env.retrieval.http import HTTPRetriever

    corpus = load_corpus(workdir / f"corpus-{n}.jsonl")
    local = BM25Retriever.load(workdir / f"bm25-{n}", corpus, mmap=True)
    port = free_port()
    cmd = [sys.executable, "-m", "search_env.retrieval.server", "--corpus", str(workdir / f"corpus-{n}.jsonl"),
           "--retriever", "bm25", "--index-dir", str(workdir / f"bm25-{n}"), "--port", str(port),
           "--log-level", "warning"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url, deadline, start = f"http://127.0.0.1:{port}", time.monotonic() + 300, time.perf_counter()
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"server exited: {server.stderr.read()}")
            try:
                if requests.get(f"{url}/health", timeout=1).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.2)
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
        t_start = time.perf_counter() - start
        remote = HTTPRetriever(url, timeout=30)
        queries = make_queries([p.text for p in corpus], n_queries + 10 * batch, seed=7)
        singles, batches = queries[:n_queries], [queries[n_queries + i * batch:][:batch] for i in range(10)]
        for batch_ in batches:  # same answers; also warms both up (page cache, connections)
            assert remote.batch_search(batch_, 10) == local.batch_search(batch_, 10)
        times: dict[str, list[float]] = {}
        for round_ in range(3):  # alternate the two, so that load from other processes hits both alike
            for name, retriever in (("local", local), ("http", remote)):
                times.setdefault(f"{name}_single_ms", []).append(
                    per_call(lambda q: retriever.search(q, 10), singles[round_::3]) * 1e3)
                times.setdefault(f"{name}_batch_ms", []).append(
                    per_call(lambda b: retriever.batch_search(b, 10), batches[round_::3]) * 1e3)
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
    queries = vectors[rng.integers(0, n, n_queries + batch)] + 0.3 * rng.standard_normal((n_queries + batch, encoder.dim), dtype=np.float32)
    corpus = Corpus([Passage(f"v{i}", "", "x") for i in range(n)], name=f"vectors-{n}")
    result: dict = {"passages": n, "dim": encoder.dim, "embeddings_mb": vectors.nbytes / MB}
    exact = None
    for kind in ("numpy", "flat") + (("hnsw",) if hnsw else ()):
        start = time.perf_counter()
        retriever = DenseRetriever.from_embeddings(corpus, vectors, encoder, index=kind)
        result[f"{kind}_build_s"] = time.perf_counter() - start
        result[f"{kind}_single_ms"] = per_call(lambda q: retriever.search_vectors(q[None], 10), queries[:n_queries]) * 1e3
        result[f"{kind}_batch_ms"] = per_call(lambda b: retriever.search_vectors(b, 10), [queries[n_queries:]] * 3) * 1e3
        positions = retriever.search_vectors(queries, 10)[0]
        exact = positions if exact is None else exact
        result[f"{kind}_recall10"] = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(positions.tolist(), exact.tolist())]))
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
    parser.add_argument("--small", type=int, default=100_000, help="smaller bm25s corpus (also used for HTTP)")
    parser.add_argument("--large", type=int, default=1_000_000, help="larger bm25s corpus")
    parser.add_argument("--dense", type=int, default=100_000, help="vectors in the dense comparison")
    parser.add_argument("--queries", type=int, default=200, help="single queries timed per setting")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--hnsw", action="store_true", help="also time a FAISS HNSW index (slow to build)")
    parser.add_argument("--workdir", help="keep corpora and indexes here (default: a temporary folder)")
    parser.add_argument("--phase", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.phase:
        name, n, workdir = args.phase[0], int(args.phase[1]), Path(args.phase[2])
        result = phase_bm25_build(n, workdir) if name == "build" else phase_bm25_query(n, workdir, args.queries, args.batch)
        print(json.dumps(result))
        return

    import faiss
    import torch

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, numpy {np.__version__}, faiss {faiss.__version__}, torch {torch.__version__}")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())}\n")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()

        scale = {}
        for n in (args.small, args.large):
            scale[n] = {**run_phase("build", str(n), str(workdir)),
                        **run_phase("query", str(n), str(workdir), "--queries", str(args.queries), "--batch", str(args.batch))}
        print(f"== bm25s, each step in a fresh process (k=10, batches of {args.batch}) ==")
        print(f"{'passages':>10} {'words':>12} {'build s':>8} {'build peak MB':>14} {'index disk MB':>14} "
              f"{'load s':>7} {'corpus MB':>10} {'RSS MB':>8} {'anon MB':>8} {'mapped MB':>10} {'single ms':>10} {'batch ms/q':>11}")
        for n, r in scale.items():
            print(f"{n:>10,} {r['words']:>12,} {r['build_s']:>8.1f} {r['build_peak_mb']:>14.0f} {r['index_disk_mb']:>14.0f} "
                  f"{r['load_corpus_s'] + r['load_index_s']:>7.1f} {r['rss_corpus_mb']:>10.0f} {r['rss_mb']:>8.0f} "
                  f"{r['anon_mb']:>8.0f} {r['mapped_mb']:>10.0f} {r['single_ms']:>10.2f} {r['batch_ms'] / args.batch:>11.2f}")

        http = bench_http(args.small, workdir, args.queries, args.batch)
        print(f"\n== bm25s over {args.small:,} passages: in-process vs HTTP on 127.0.0.1 (server in its own process) ==")
        print(f"{'':>12} {'single ms':>10} {'batch of ' + str(args.batch) + ' ms':>16}")
        for name in ("local", "http"):
            print(f"{name:>12} {http[name + '_single_ms']:>10.2f} {http[name + '_batch_ms']:>16.1f}")
        print(f"server: up in {http['server_start_s']:.1f} s, RSS {http['server_rss_mb']:.0f} MB")

        dense = bench_dense(args.dense, args.queries // 4, args.batch, args.hnsw)
        print(f"\n== dense search over {args.dense:,} unit vectors of dim {dense['dim']} "
              f"({dense['embeddings_mb']:.0f} MB), k=10, query vectors given ==")
        print(f"{'index':>8} {'build s':>8} {'single ms':>10} {'batch of ' + str(args.batch) + ' ms':>16} {'recall@10':>10}")
        for kind in ("numpy", "flat", "hnsw"):
            if f"{kind}_build_s" in dense:
                print(f"{kind:>8} {dense[kind + '_build_s']:>8.2f} {dense[kind + '_single_ms']:>10.2f} "
                      f"{dense[kind + '_batch_ms']:>16.1f} {dense[kind + '_recall10']:>10.3f}")
        for threads in sorted({dense["torch_threads"], 1}, reverse=True):
            print(f"bundled MiniLM encoder, {threads} torch thread(s): a query {dense[f'encode_query_ms_{threads}']:.1f} ms, "
                  f"a batch of {args.batch} queries {dense[f'encode_batch_ms_{threads}']:.0f} ms, "
                  f"{dense[f'encode_passages_per_s_{threads}']:.0f} passages/s")
        print(f"\ntotal {time.perf_counter() - start:.0f} s; load average after: "
              f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")

    small, large = scale[args.small], scale[args.large]
    print(
        f"ratios: dense faiss-flat/numpy single {dense['flat_single_ms'] / dense['numpy_single_ms']:.2f}x "
        f"batch {dense['flat_batch_ms'] / dense['numpy_batch_ms']:.2f}x | "
        f"http/in-process single {http['http_single_ms'] / http['local_single_ms']:.2f}x "
        f"batch{args.batch} {http['http_batch_ms'] / http['local_batch_ms']:.2f}x | "
        f"bm25s {large['passages'] // 1000}k/{small['passages'] // 1000}k single latency "
        f"{large['single_ms'] / small['single_ms']:.1f}x, batch {large['batch_ms'] / small['batch_ms']:.1f}x, "
        f"RSS {large['rss_mb'] / small['rss_mb']:.1f}x"
    )


if __name__ == "__main__":
    main()
