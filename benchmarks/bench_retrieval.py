"""Env search-step throughput (IG off) on a generated 100k-passage world: bm25s vs rank-bm25, one core.

    .venv/bin/python benchmarks/bench_retrieval.py [--passages 100000] [--steps 2000] [--reference-steps 20]

Both backends index the same corpus with the same analyzer and answer the same queries (the world's
questions) through ``env.step``; the last line prints the speed-up.
"""

from __future__ import annotations

import argparse
import os
import time

import gymnasium as gym

import search_env  # noqa: F401
from search_env.data.synthetic import build_world
from search_env.retrieval.bm25 import BM25Retriever, RankBM25Retriever


def steps_per_second(env, queries: list[str], n_steps: int) -> float:
    env.reset(seed=0)
    start = time.perf_counter()
    for i in range(n_steps):
        *_, terminated, truncated, _ = env.step(f"<search> {queries[i % len(queries)]} </search>")
        if terminated or truncated:
            env.reset()
    return n_steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--passages", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--reference-steps", type=int, default=20)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core, as the target says

    t = time.perf_counter()
    world = build_world(seed=0, n_passages=args.passages)
    print(f"world: {len(world.corpus):,} passages, {len(world.questions):,} questions ({time.perf_counter() - t:.1f}s)")
    queries = [q.question for q in world.questions]

    results = {}
    for name, make, n in [
        ("bm25s", lambda: BM25Retriever(world.corpus, cache=False), args.steps),
        ("rank-bm25", lambda: RankBM25Retriever(world.corpus), args.reference_steps),
    ]:
        t = time.perf_counter()
        retriever = make()
        build = time.perf_counter() - t
        env = gym.make("search_env:SearchQA-v0", questions=world.questions, corpus=world.corpus,
                       retriever=retriever, ig=False, max_turns=50)
        results[name] = steps_per_second(env, queries, n)
        print(f"{name:<10} index build {build:6.1f}s   {results[name]:8.1f} search steps/s ({n} steps, one core)")
    print(f"bm25s vs rank-bm25 env search-step speed-up: {results['bm25s'] / results['rank-bm25']:.0f}x")


if __name__ == "__main__":
    main()
