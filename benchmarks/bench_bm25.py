"""BM25 backends on a 100k-passage random-text corpus: build time, single-query and batch latency.

Run: ``python benchmarks/bench_bm25.py [--passages 100000] [--rank-queries 50]``. Takes about half a minute;
the last line is the bm25s vs rank-bm25 single-query speed-up.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from search_env.data.corpus import Corpus, Passage
from search_env.retrieval.bm25 import BM25Retriever, RankBM25Retriever


def make_corpus(n_passages: int, vocab_size: int = 50_000, seed: int = 0) -> tuple[Corpus, list[str]]:
    """Passages of 40-120 words drawn from a Zipf-distributed vocabulary of random letter strings."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    lengths = rng.integers(3, 10, size=vocab_size)
    vocab = np.array(["".join(rng.choice(letters, size=n)) for n in lengths])
    weights = 1.0 / np.arange(1, vocab_size + 1) ** 1.05
    weights /= weights.sum()
    doc_lens = rng.integers(40, 121, size=n_passages)
    words = vocab[rng.choice(vocab_size, size=int(doc_lens.sum()) + 3 * n_passages, p=weights)]
    passages, pos = [], 0
    for i, n in enumerate(doc_lens):
        title = " ".join(words[pos : pos + 3])
        text = " ".join(words[pos + 3 : pos + 3 + n])
        passages.append(Passage(f"d{i}", title, text))
        pos += 3 + n
    return Corpus(passages, name=f"random-{n_passages}"), [p.text for p in passages]


def make_queries(texts: list[str], n: int, seed: int = 1) -> list[str]:
    """Three to five words from a random passage."""
    rng = np.random.default_rng(seed)
    queries = []
    for doc in rng.integers(0, len(texts), size=n):
        words = texts[doc].split()
        picks = rng.choice(len(words), size=int(rng.integers(3, 6)), replace=False)
        queries.append(" ".join(words[j] for j in sorted(picks)))
    return queries


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--passages", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200, help="single queries timed on bm25s")
    parser.add_argument("--rank-queries", type=int, default=50, help="single queries timed on rank-bm25")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("-k", type=int, default=10)
    args = parser.parse_args()

    (corpus, texts), t_gen = timed(lambda: make_corpus(args.passages))
    queries = make_queries(texts, max(args.queries, args.batch))
    print(f"corpus: {len(corpus)} passages, {sum(len(t.split()) for t in texts):,} words (generated in {t_gen:.1f}s)")

    with tempfile.TemporaryDirectory() as tmp:
        fast, t_build = timed(lambda: BM25Retriever(corpus, cache=False))
        fast.save(tmp)
        _, t_load = timed(lambda: BM25Retriever.load(tmp, corpus))
        _, t_load_mmap = timed(lambda: BM25Retriever.load(tmp, corpus, mmap=True))
    ref, t_build_ref = timed(lambda: RankBM25Retriever(corpus))

    k = args.k
    fast.search(queries[0], k)  # warm-up
    _, t_fast = timed(lambda: [fast.search(q, k) for q in queries[: args.queries]])
    _, t_ref = timed(lambda: [ref.search(q, k) for q in queries[: args.rank_queries]])
    batch = queries[: args.batch]
    _, t_batch = timed(lambda: fast.batch_search(batch, k))

    ms_fast = 1000 * t_fast / args.queries
    ms_ref = 1000 * t_ref / args.rank_queries
    rows = [
        ("bm25s", "build index (in memory)", f"{t_build:.2f} s"),
        ("bm25s", "load saved index / mmap", f"{t_load:.2f} s / {t_load_mmap:.2f} s"),
        ("bm25s", f"search, {args.queries} single queries", f"{ms_fast:.2f} ms/query"),
        ("bm25s", f"batch_search of {len(batch)} ({os.cpu_count()} CPUs)",
         f"{t_batch:.2f} s = {1000 * t_batch / len(batch):.2f} ms/query"),
        ("rank-bm25", "build index", f"{t_build_ref:.2f} s"),
        ("rank-bm25", f"search, {args.rank_queries} single queries", f"{ms_ref:.1f} ms/query"),
    ]
    print(f"\n{'backend':<10} {'operation':<40} time")
    for row in rows:
        print(f"{row[0]:<10} {row[1]:<40} {row[2]}")
    print(f"\nbm25s vs rank-bm25 single-query speed-up: {ms_ref / ms_fast:.0f}x")


if __name__ == "__main__":
    main()
