"""What an env process shares between threads (SkyRL steps its envs on a pool of 32): the scorers and their caches,
the disk score cache, the retrievers, the HTTP client, built_once. Each test runs the same calls from 32 threads at
once and compares every result with a single-threaded run; caches are small, so entries are evicted all the time."""

from __future__ import annotations

import json
import pickle
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from search_env._cache import built_once, forget
from search_env.scoring.cache import DiskScoreCache
from search_env.scoring.transformers_scorer import TransformersScorer
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

    from search_env.agents import models as bundled

    return AutoTokenizer.from_pretrained(bundled.bundled_model_dir())


def run_threads(call, tasks, threads: int = THREADS) -> tuple[list, list[BaseException]]:
    """``call(task)`` for every task on ``threads`` threads released together: (results in task order, errors)."""
    threads = min(threads, len(tasks))
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
    """How many errors of each kind (for an assertion message)."""
    kinds: dict[str, int] = {}
    for error in errors:
        kind = f"{type(error).__name__}: {error}"[:120]
        kinds[kind] = kinds.get(kind, 0) + 1
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
    order = calls(len(groups), repeats=20)
    results, errors = run_threads(lambda i: scorer.score(*groups[i]), order)
    assert not errors, summary(errors)
    wrong = sum(not np.array_equal(got, reference[i]) for i, got in zip(order, results))
    assert wrong == 0, f"{wrong} of {len(order)} calls differ from the single-threaded scores"
    assert len(scorer._cache) <= 6


def test_prefix_sharing_scorer_under_32_threads(tokenizer):
    """The default scorer (prefix sharing, batches): a pair's score moves only by batching's float rounding."""
    model = tiny_model(tokenizer)
    prefix = "Question: where was the composer born?\n<search> composer </search>\n<information> "
    groups = [tuple(zip(*[(prefix + " ".join(WORDS[(g + j) % 12 : (g + j) % 12 + 3]), answer)
                          for j, answer in enumerate(["Paris", "Omrith", "1841", "Paris"])])) for g in range(8)]
    reference = [TransformersScorer(model, tokenizer, cache_size=0).score(*g) for g in groups]
    scorer = TransformersScorer(model, tokenizer, cache_size=5)
    order = calls(len(groups), repeats=8)
    results, errors = run_threads(lambda i: scorer.score(*groups[i]), order)
    assert not errors, summary(errors)
    for i, got in zip(order, results):
        np.testing.assert_allclose(got, reference[i], atol=1e-4, rtol=0)


def test_concurrent_scoring_keeps_eval_mode_and_restores_train_mode(tokenizer):
    """A model in training mode with dropout: every thread's forward runs without dropout, and the model is back
    in training mode once the last thread is done."""
    model = tiny_model(tokenizer, attention_dropout=0.5)
    groups = batches(n_batches=8)
    settings = {"share_prefix": False, "batch_size": 1, "cache_size": 0}
    reference = [TransformersScorer(model, tokenizer, **settings).score(*g) for g in groups]
    model.train()
    scorer = TransformersScorer(model, tokenizer, **settings)
    order = calls(len(groups), repeats=8)
    results, errors = run_threads(lambda i: scorer.score(*groups[i]), order)
    assert not errors, summary(errors)
    wrong = sum(not np.array_equal(got, reference[i]) for i, got in zip(order, results))
    assert wrong == 0, f"{wrong} of {len(order)} calls ran with dropout"
    assert all(module.training for module in model.modules())


def test_memory_cache_drops_scores_looked_up_before_a_clear():
    from search_env.scoring.cache import MemoryScoreCache

    cache = MemoryScoreCache(4)
    _, generation = cache.get([("c", "a")])
    cache.clear()  # the weights changed while ("c", "a") was being scored
    cache.put({("c", "a"): 1.0}, generation)
    assert cache.get([("c", "a")]) == ({}, generation + 1)
    cache.put({("c", "a"): 2.0}, generation + 1)
    assert cache.get([("c", "a")])[0] == {("c", "a"): 2.0}
    restored = pickle.loads(pickle.dumps(cache))
    assert restored.get([("c", "a")])[0] == {("c", "a"): 2.0} and len(restored) == 1


def test_disk_score_cache_under_32_threads(tokenizer, tmp_path):
    """32 threads score through one disk cache (no memory cache); a second scorer then reads every score back."""
    model = tiny_model(tokenizer)
    groups = batches()
    settings = {"share_prefix": False, "batch_size": 1, "cache_size": 0}
    reference = [TransformersScorer(model, tokenizer, **settings).score(*g) for g in groups]
    scorer = TransformersScorer(model, tokenizer, disk_cache=tmp_path, **settings)
    order = calls(len(groups), repeats=6)
    results, errors = run_threads(lambda i: scorer.score(*groups[i]), order)
    assert not errors, summary(errors)
    assert all(np.array_equal(got, reference[i]) for i, got in zip(order, results))
    pairs = {pair for g in groups for pair in zip(*g)}
    assert len(scorer.disk_cache) == len(pairs)

    again = TransformersScorer(model, tokenizer, disk_cache=DiskScoreCache(tmp_path), **settings)
    results, errors = run_threads(lambda i: again.score(*groups[i]), order)
    assert not errors, summary(errors)
    assert all(np.array_equal(got, reference[i]) for i, got in zip(order, results))
    assert again.disk_cache.misses == 0 and again.disk_cache.hits == 3 * len(order)


def test_disk_score_cache_get_and_put_under_32_threads(tmp_path):
    cache = DiskScoreCache(tmp_path / "scores.sqlite3")
    tasks = [(f"model-{t % 4}", {(f"context {t} {i}", "answer"): t + i / 10 for i in range(20)}) for t in range(96)]
    _, errors = run_threads(lambda task: cache.put(*task), tasks)
    assert not errors, summary(errors)
    results, errors = run_threads(lambda task: cache.get(task[0], list(task[1])), tasks)
    assert not errors, summary(errors)
    assert results == [scores for _, scores in tasks]
    assert len(cache) == 96 * 20 and cache.writes == 96 * 20


# ------------------------------------------------------------------------------------ the server scorers


def test_vllm_scorer_replicas_and_cache_under_32_threads(tokenizer):
    """Two stand-in vLLM replicas (each prompt computed alone, so scores are batch-independent): every call gets
    the single-threaded scores, and the round robin splits the requests evenly."""
    from search_env.scoring.servers import VLLMScorer
    from tests.test_server_scorers import StandIn

    model = tiny_model(tokenizer)
    replicas = [StandIn(model), StandIn(model)]
    try:
        groups = batches()
        reference = [VLLMScorer(replicas[0].url, tokenizer, timeout=30, retries=0).score(*g) for g in groups]
        for replica in replicas:
            replica.requests.clear()
        scorer = VLLMScorer([r.url for r in replicas], tokenizer, timeout=30, retries=0, cache_size=6)
        order = calls(len(groups), repeats=4)
        results, errors = run_threads(lambda i: scorer.score(*groups[i]), order)
        assert not errors, summary(errors)
        wrong = sum(not np.array_equal(got, reference[i]) for i, got in zip(order, results))
        assert wrong == 0, f"{wrong} of {len(order)} calls differ from the single-threaded scores"
        counts = [len(r.requests) for r in replicas]
        assert abs(counts[0] - counts[1]) <= 1 and sum(counts) > 0, counts
        scorer.close()
    finally:
        for replica in replicas:
            replica.close()


# -------------------------------------------------------------------------------------------- retrievers

QUERIES = ["In which country is Karvesh?", "capital of Osmundia", "river cities founded on salt roads", "harbour guild",
           "zzz unknown", "Brisk Hollow", "towers and quarries", "Veltrania capitals", "orchards mills", "Quenlar"]


def check_retriever(retriever, rounds: int = 3) -> None:
    """``rounds`` calls a thread of search and batch_search, from 32 threads, equal their single-threaded results."""
    single = {q: retriever.search(q, 3) for q in QUERIES}
    batch = retriever.batch_search(QUERIES, 3)
    assert sum(map(bool, batch)) >= len(QUERIES) - 1  # all but "zzz unknown" find something
    tasks = [("search", QUERIES[i % len(QUERIES)]) if i % 3 else ("batch", None) for i in range(rounds * THREADS)]

    def call(task):
        kind, query = task
        return retriever.search(query, 3) if kind == "search" else retriever.batch_search(QUERIES, 3)

    results, errors = run_threads(call, tasks)
    assert not errors, summary(errors)
    for (kind, query), got in zip(tasks, results):
        assert got == (single[query] if kind == "search" else batch)


def test_bm25_in_memory_under_32_threads(tiny_corpus):
    from search_env.retrieval.bm25 import BM25Retriever

    check_retriever(BM25Retriever(tiny_corpus, cache=False))


def test_bm25_memory_mapped_over_a_mapped_corpus_under_32_threads(tiny_corpus, tmp_path):
    """The pread paths: posting lists of a memory-mapped index, passages of a mapped corpus."""
    from search_env.data.mapped import load_mapped_corpus
    from search_env.retrieval.bm25 import BM25Retriever

    source = tmp_path / "corpus.jsonl"
    source.write_text("".join(json.dumps({"id": p.id, "contents": p.contents}) + "\n" for p in tiny_corpus))
    corpus = load_mapped_corpus(source, tmp_path / "mapped")
    retriever = BM25Retriever(corpus, cache=tmp_path / "bm25", mmap=True)
    assert retriever._postings is not None
    check_retriever(retriever)
    positions = [i % len(corpus) for i in range(7 * THREADS)]
    passages, errors = run_threads(lambda i: (corpus[i], corpus.get(corpus.id_at(i))), positions)
    assert not errors, summary(errors)
    assert passages == [(tiny_corpus[i], tiny_corpus[i]) for i in positions]


@pytest.mark.slow  # loads the bundled encoder
@pytest.mark.parametrize("index", ["numpy", "flat", "hnsw"])
def test_dense_under_32_threads(tiny_corpus, index):
    if index != "numpy":
        pytest.importorskip("faiss")
    from search_env.retrieval.dense import DenseRetriever
    from search_env.retrieval.encoder import get_encoder

    encoder = get_encoder()
    embeddings = encoder.encode([p.contents for p in tiny_corpus], "passage")
    check_retriever(DenseRetriever.from_embeddings(tiny_corpus, embeddings, encoder, index=index), rounds=1)


def test_http_retriever_with_two_replicas_under_32_threads(tiny_corpus):
    from search_env.retrieval import HTTPRetriever
    from search_env.retrieval.bm25 import BM25Retriever
    from tests.test_http import LiveServer

    bm25 = BM25Retriever(tiny_corpus, cache=False)
    servers = [LiveServer(bm25), LiveServer(bm25)]
    try:
        client = HTTPRetriever([s.url for s in servers], timeout=30, retries=0)
        check_retriever(client)
        assert client.batch_search(QUERIES, 3) == bm25.batch_search(QUERIES, 3)
        with ThreadPoolExecutor(1) as pool:
            assert pool.submit(lambda: client.client.session).result() is not client.client.session
        client.close()
        assert len(client.client._sessions) == 0 and client.search(QUERIES[0], 3) == bm25.search(QUERIES[0], 3)
    finally:
        for server in servers:
            server.stop()


# ------------------------------------------------------------------------------------- built_once, the env


def test_built_once_builds_once_under_32_threads():
    builds = []

    def build():
        builds.append(threading.get_ident())
        time.sleep(0.05)  # widens the window in which other threads ask for the same key
        return object()

    try:
        results, errors = run_threads(lambda _: built_once("test-threads", "same", build), range(THREADS))
        assert not errors, summary(errors)
        assert len(builds) == 1 and all(r is results[0] for r in results)
    finally:
        forget("test-threads")


def test_built_once_builds_other_keys_meanwhile():
    """A build that waits for another key's build finishes only if the two are not serialised."""
    started, other_built = threading.Event(), threading.Event()

    def slow():
        started.set()
        assert other_built.wait(timeout=30), "the other key waited for this build"
        return "slow"

    def fast():
        other_built.set()
        return "fast"

    try:
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(built_once, "test-threads", "slow", slow)
            assert started.wait(timeout=30)
            assert built_once("test-threads", "fast", fast) == "fast"
            assert first.result(timeout=60) == "slow"
    finally:
        forget("test-threads")


def test_skyrl_envs_stepped_from_32_threads_share_one_scorer_and_retriever(tokenizer, tiny_corpus, tiny_questions,
                                                                         tmp_path, monkeypatch):
    """SearchQATextEnvs made and stepped on 32 threads at once, as SkyRL's env workers do: the corpus, retriever and
    scorer are built once and shared, and every episode equals the same episode run alone."""
    pytest.importorskip("skyrl_gym")
    from search_env.integrations.skyrl import SearchQATextEnv, dataset_rows

    monkeypatch.setenv("SEARCH_ENV_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "corpus.jsonl"
    source.write_text("".join(json.dumps({"id": p.id, "contents": p.contents}) + "\n" for p in tiny_corpus))
    # a fixed draw seed per row: otherwise the envs of one batch (here, all 32 threads) share theirs, unlike alone
    rows = [{**{k: v for k, v in row.items() if k != "prompt"}, "draw_seed": 7} for row in dataset_rows(tiny_questions)]
    model = tiny_model(tokenizer)

    def config():
        scorer = TransformersScorer(model, tokenizer, share_prefix=False, batch_size=1, cache_size=8)
        return {"corpus": str(source), "retriever": "bm25", "scorer": scorer, "seed": 0}

    def episode(env_config, row):
        env = SearchQATextEnv(env_config=env_config, extras=row)
        env.init(None)
        question = row["extra_info"]["question"]
        actions = [f"<search> {question} </search>", f"<search> {question.split()[-1]} capital </search>",
                   f"<answer> {row['reward_spec']['ground_truth']['target'][0]} </answer>"]
        out = [env.step(action) for action in actions]
        return env, [(o["reward"], o["done"], o["metadata"]) for o in out]

    alone_config = config()
    alone = [episode(alone_config, row)[1] for row in rows]
    tasks = [rows[i % len(rows)] for i in range(THREADS)]
    shared_config = config()
    try:
        results, errors = run_threads(lambda row: episode(shared_config, row), tasks)
        assert not errors, summary(errors)
        envs = [env.env for env, _ in results]
        assert len({id(e.retriever) for e in envs}) == 1 and len({id(e.scorer) for e in envs}) == 1
        assert len({id(e.corpus) for e in envs}) == 1
        assert all(steps[0][2]["ig"] is not None for _, steps in results)
        wrong = sum(steps != alone[i % len(rows)] for i, (_, steps) in enumerate(results))
        assert wrong == 0, f"{wrong} of {len(tasks)} episodes differ from the same episode run alone"
    finally:
        forget("adapter-shared")
        forget("bm25")
