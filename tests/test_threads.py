"""What an env process shares between threads (SkyRL steps its envs on a pool of 32): the scorers and their caches,
the disk score cache, the retrievers, the HTTP client, built_once. Each test runs the same calls from 32 threads at
once and compares every result with a single-threaded run; caches are small, so entries are evicted all the time."""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from search_env.scorers import TransformersScorer
from tests.test_scorers import tiny_model

THREADS = 32


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One intra-op thread per call: 32 calling threads on a few cores are parallelism enough."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from search_env import bundled

    return AutoTokenizer.from_pretrained(bundled.bundled_model_dir())


def run_threads(call, tasks, threads: int = THREADS) -> tuple[list, list[BaseException]]:
    """``call(task)`` for every task on ``threads`` threads released together: (results in task order, errors)."""
    start = threading.Barrier(threads)

    def first(task):
        try:
            start.wait(timeout=60)
        except threading.BrokenBarrierError:
            pass
        return call(task)

    def guarded(index_task):
        index, task = index_task
        try:
            return (first if index < threads else call)(task), None
        except Exception as exc:  # noqa: BLE001 - every failure is counted and reported
            return None, exc

    with ThreadPoolExecutor(threads) as pool:
        outcomes = list(pool.map(guarded, enumerate(tasks)))
    return [result for result, _ in outcomes], [error for _, error in outcomes if error is not None]


def summary(errors: list[BaseException]) -> str:
    kinds: dict[str, int] = {}
    for error in errors:
        kinds[f"{type(error).__name__}: {error}"[:120]] = kinds.get(f"{type(error).__name__}: {error}"[:120], 0) + 1
    return f"{len(errors)} errors: {kinds}"


# -------------------------------------------------------------------------------------------- the scorer

WORDS = "river mountain castle library museum painter composer treaty empire harbour island village".split()


def batches(n_batches: int = 12, size: int = 3, seed: int = 0) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """Fixed batches of (context, answer) pairs; pairs recur across batches, so calls share cache entries."""
    rng = random.Random(seed)
    pairs = [(" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))), rng.choice(["Paris", "Omrith 1841"]))
             for _ in range(16)]
    out = []
    for _ in range(n_batches):
        chosen = rng.sample(pairs, size)
        out.append((tuple(c for c, _ in chosen), tuple(a for _, a in chosen)))
    return out


def calls(n_batches: int, repeats: int, seed: int = 1) -> list[int]:
    order = [i for i in range(n_batches) for _ in range(repeats)]
    random.Random(seed).shuffle(order)
    return order


def test_scorer_with_a_small_cache_under_32_threads(tokenizer):
    """Pairs scored one at a time (no batching), so a pair's score does not depend on what it was scored with:
    every call must return exactly the single-threaded scores."""
    model = tiny_model(tokenizer)
    groups = batches()
    settings = {"share_prefix": False, "batch_size": 1}
    reference = [TransformersScorer(model, tokenizer, cache_size=0, **settings).score(*g) for g in groups]
    scorer = TransformersScorer(model, tokenizer, cache_size=6, **settings)
    order = calls(len(groups), repeats=50)
    results, errors = run_threads(lambda i: scorer.score(*groups[i]), order)
    assert not errors, summary(errors)
    wrong = sum(not np.array_equal(got, reference[i]) for i, got in zip(order, results))
    assert wrong == 0, f"{wrong} of {len(order)} calls differ from the single-threaded scores"
    assert len(scorer._cache) <= 6
