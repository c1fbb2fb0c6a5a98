"""search_env.scoring.cache and TransformersScorer(disk_cache=...): values identical across processes, served
from disk by a second process, invalidated when the model changes, and safe with two writers at once.

A tiny randomly initialised Llama with the bundled SmolLM2 tokenizer, as in test_scorers.py; the subprocesses
build the same model from the same seed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from search_env.scoring.cache import DiskScoreCache
from search_env.scoring.transformers_scorer import TransformersScorer
from tests.test_scorers import count_forwards, tiny_model

ROOT = Path(__file__).resolve().parents[1]
PAIRS = [(f"Question {i}: where was the composer of work {i} born?\n<search> work {i} </search>", answer)
         for i, answer in enumerate(["Paris", "the river Thames", "Ludwig van Beethoven", "1815", "Karvesh"] * 2)]
PAIRS[-1] = (PAIRS[0][0], "Osmundia")  # two answers after one context


def _run(script: str, *args: str, wait: bool = True):
    """Run ``script`` in a fresh Python process (at the repository root); its last stdout line is JSON."""
    cmd = [sys.executable, "-c", textwrap.dedent(script), *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return _result(proc) if wait else proc


def _result(proc) -> dict:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


SCORE_IN_ANOTHER_PROCESS = """
    import json, sys
    import torch
    from transformers import AutoTokenizer
    from search_env.agents import models as bundled
    from search_env.scoring.transformers_scorer import TransformersScorer
    from tests.test_scorers import count_forwards, tiny_model
    from tests.test_score_cache import PAIRS

    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(bundled.bundled_model_dir())
    model = tiny_model(tokenizer, seed=int(sys.argv[2]))
    calls = count_forwards(model)
    scorer = TransformersScorer(model, tokenizer, disk_cache=sys.argv[1])
    scores = scorer.score(*zip(*PAIRS))
    print(json.dumps({"scores": [float(s).hex() for s in scores], "forwards": calls[0], "hits": scorer.disk_cache.hits,
                      "misses": scorer.disk_cache.misses, "fingerprint": scorer.fingerprint}))
"""


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from search_env.agents import models as bundled

    return AutoTokenizer.from_pretrained(bundled.bundled_model_dir())


def _hex(scores) -> list[str]:
    return [float(s).hex() for s in scores]


# ------------------------------------------------------------------------------------------ the scorer


def test_another_process_gets_identical_values_from_disk(tokenizer, tmp_path):
    path = tmp_path / "scores.sqlite3"
    model = tiny_model(tokenizer, seed=0)
    calls = count_forwards(model)
    scorer = TransformersScorer(model, tokenizer, disk_cache=path)
    first = scorer.score(*zip(*PAIRS))
    assert calls[0] > 0 and scorer.disk_cache.misses == len(PAIRS) and scorer.disk_cache.hits == 0
    assert len(scorer.disk_cache) == len(PAIRS)

    other = _run(SCORE_IN_ANOTHER_PROCESS, str(path), "0")
    assert other["fingerprint"] == scorer.fingerprint  # the same weights hash alike in another process
    assert other["forwards"] == 0  # all served from disk: the model never ran
    assert other["hits"] == len(PAIRS) and other["misses"] == 0
    assert other["scores"] == _hex(first)  # bit for bit

    # the values are the model's: a scorer without any cache agrees (up to batching's rounding)
    plain = TransformersScorer(model, tokenizer, cache_size=0).score(*zip(*PAIRS))
    np.testing.assert_allclose(first, plain, atol=1e-5, rtol=0)


def test_memory_cache_first_then_disk(tokenizer, tmp_path):
    model = tiny_model(tokenizer)
    calls = count_forwards(model)
    scorer = TransformersScorer(model, tokenizer, disk_cache=tmp_path)  # a folder: scores.sqlite3 inside
    assert scorer.disk_cache.path == tmp_path / "scores.sqlite3"
    first = scorer.score(*zip(*PAIRS[:4]))
    calls[0] = 0
    scorer.score(*zip(*PAIRS[:4]))  # in memory: the disk is not asked
    assert calls[0] == 0 and scorer.disk_cache.hits == 0
    scorer._cache.clear()  # memory lost, disk kept (a new scorer in the same process)
    again = scorer.score(*zip(*PAIRS[:4]))
    assert calls[0] == 0 and scorer.disk_cache.hits == 4
    assert _hex(again) == _hex(first)


def test_a_changed_weight_is_a_new_model(tokenizer, tmp_path):
    path = tmp_path / "scores.sqlite3"
    model = tiny_model(tokenizer, seed=0)
    calls = count_forwards(model)
    scorer = TransformersScorer(model, tokenizer, disk_cache=path)
    before, old_fingerprint = scorer.score(*zip(*PAIRS)), scorer.fingerprint

    with torch.no_grad():
        model.model.norm.weight[0] += 3.0  # one weight of the final norm: every logit moves
    calls[0] = 0
    after = scorer.score(*zip(*PAIRS))
    assert scorer.fingerprint != old_fingerprint
    assert calls[0] > 0 and scorer.disk_cache.hits == 0  # recomputed, not served from the old entries
    assert np.abs(after - before).min() > 1e-3
    np.testing.assert_allclose(after, TransformersScorer(model, tokenizer, cache_size=0).score(*zip(*PAIRS)),
                               atol=1e-5, rtol=0)
    assert len(scorer.disk_cache) == 2 * len(PAIRS)  # both models' scores are kept

    # another process with the original weights is still served the original values, and one with other
    # weights (seed 1) matches none of the stored entries
    original = _run(SCORE_IN_ANOTHER_PROCESS, str(path), "0")
    assert original["forwards"] == 0 and original["scores"] == _hex(before)
    other = _run(SCORE_IN_ANOTHER_PROCESS, str(path), "1")
    assert other["hits"] == 0 and other["forwards"] > 0
    assert other["fingerprint"] not in (old_fingerprint, scorer.fingerprint)


def test_clear_cache_recomputes_the_fingerprint(tokenizer, tmp_path):
    model = tiny_model(tokenizer)
    scorer = TransformersScorer(model, tokenizer, disk_cache=tmp_path)
    old = scorer.fingerprint
    with torch.no_grad():
        model.model.norm.weight.data[5] += 1.0  # through .data: no version bump, not a sampled value
    assert scorer.fingerprint == old  # the cheap check cannot see it; clear_cache() is the documented remedy
    scorer.clear_cache()
    assert scorer.fingerprint != old


def test_scoring_settings_are_part_of_the_key(tokenizer, tmp_path):
    model = tiny_model(tokenizer)
    a = TransformersScorer(model, tokenizer, disk_cache=tmp_path)
    b = TransformersScorer(model, tokenizer, disk_cache=tmp_path, head_weight=1.0)
    assert a.fingerprint != b.fingerprint
    pairs = [("Where is the castle?", "a castle on the island of Skye")]  # more than 3 tokens: weights matter
    score_a, score_b = a.score(*zip(*pairs)), b.score(*zip(*pairs))
    assert b.disk_cache.hits == 0 and abs(score_a - score_b)[0] > 1e-3


def test_disk_cache_argument(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("SEARCH_ENV_CACHE", str(tmp_path / "cache"))
    model = tiny_model(tokenizer)
    assert TransformersScorer(model, tokenizer).disk_cache is None
    assert (
        TransformersScorer(model, tokenizer, disk_cache=True).disk_cache.path
        == tmp_path / "cache/scores/scores.sqlite3"
    )
    shared = DiskScoreCache(tmp_path / "mine.db")
    assert TransformersScorer(model, tokenizer, disk_cache=shared).disk_cache is shared
    with pytest.raises(TypeError, match="disk_cache"):
        TransformersScorer(model, tokenizer, disk_cache=3)


# ------------------------------------------------------------------------------------------ the store


WRITE_MANY = """
    import json, os, sys, time
    from pathlib import Path
    from search_env.scoring.cache import DiskScoreCache

    path, me, n, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    folder = Path(path).parent
    (folder / f"ready-{me}").touch()
    while not all((folder / f"ready-{i}").exists() for i in (0, 1)):  # start together
        time.sleep(0.001)
    cache = DiskScoreCache(path)  # both create the file and switch it to WAL at once
    for start in range(0, n, batch):
        # keys 0..n-1 are written by both processes (the same values), keys tagged with `me` by one
        shared = {(f"context {k}", "answer"): k / 7 for k in range(start, min(n, start + batch))}
        own = {(f"context {k} of {me}", "answer"): -k / 3 for k in range(start, min(n, start + batch))}
        cache.put("model-a", {**shared, **own})
        got = cache.get("model-a", list(shared))
        assert got == shared, "a value written was not read back"
    print(json.dumps({"writes": cache.writes}))
"""


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    n, batch = 4000, 10
    path = tmp_path / "scores.sqlite3"
    procs = [_run(WRITE_MANY, str(path), str(me), str(n), str(batch), wait=False) for me in (0, 1)]
    results = [_result(p) for p in procs]
    assert [r["writes"] for r in results] == [2 * n, 2 * n]
    cache = DiskScoreCache(path)
    assert len(cache) == 3 * n
    pairs = [(f"context {k}", "answer") for k in range(n)]
    pairs += [(f"context {k} of {me}", "answer") for me in (0, 1) for k in range(n)]
    got = cache.get("model-a", pairs)
    assert len(got) == 3 * n
    assert all(got[(f"context {k}", "answer")] == k / 7 for k in range(n))
    assert all(got[(f"context {k} of {me}", "answer")] == -k / 3 for me in (0, 1) for k in range(n))
    assert cache.get("model-b", pairs[:10]) == {}  # another fingerprint sees none of them


def test_values_round_trip_exactly_and_first_writer_wins(tmp_path):
    cache = DiskScoreCache(tmp_path / "s.db")
    values = {(f"c{i}", "a"): v for i, v in enumerate([-0.1, -1 / 3, -1e-300, -123.456789012345678, 0.0])}
    cache.put("m", values)
    assert DiskScoreCache(tmp_path / "s.db").get("m", list(values)) == values
    cache.put("m", {("c0", "a"): 5.0, ("c9", "a"): float("nan"), ("c8", "a"): float("-inf")})
    assert cache.get("m", [("c0", "a"), ("c9", "a"), ("c8", "a")]) == {("c0", "a"): -0.1}  # non-finite: not stored
    assert cache.get("m", [("c0", "a "), ("c0a", "")]) == {}  # the pair is the key, not its concatenation


def test_unreadable_file(tmp_path, monkeypatch, caplog):
    bad = tmp_path / "named.db"
    bad.write_bytes(b"not a database" * 100)
    with pytest.raises(Exception, match="not a database"):
        DiskScoreCache(bad)  # a file the user named is never replaced
    monkeypatch.setenv("SEARCH_ENV_CACHE", str(tmp_path / "cache"))
    default = tmp_path / "cache" / "scores" / "scores.sqlite3"
    default.parent.mkdir(parents=True)
    default.write_bytes(b"not a database" * 100)
    cache = DiskScoreCache()  # the default one is moved aside and started afresh
    cache.put("m", {("c", "a"): -1.0})
    assert cache.get("m", [("c", "a")]) == {("c", "a"): -1.0}
    assert any(p.name.startswith("scores.sqlite3.broken-") for p in default.parent.iterdir())
    assert "moved to" in caplog.text


def test_pickles_without_its_connection(tmp_path):
    import pickle

    cache = DiskScoreCache(tmp_path / "s.db")
    cache.put("m", {("c", "a"): -2.0})
    copy = pickle.loads(pickle.dumps(cache))
    assert copy.get("m", [("c", "a")]) == {("c", "a"): -2.0}


def test_answer_styles_never_share_entries(tokenizer, tmp_path):
    model = tiny_model(tokenizer)
    calls = count_forwards(model)
    natural = TransformersScorer(model, tokenizer, disk_cache=tmp_path)
    authors = TransformersScorer(model, tokenizer, disk_cache=tmp_path, answer_style="authors")
    assert authors.answer_style == "authors" and authors.fingerprint != natural.fingerprint
    first = natural.score(*zip(*PAIRS))
    calls[0] = 0
    other = authors.score(*zip(*PAIRS))
    assert calls[0] > 0 and authors.disk_cache.hits == 0  # scored again, not served the natural style's entries
    assert len(authors.disk_cache) == 2 * len(PAIRS)
    assert np.abs(other - first).max() > 1e-3  # the styles tokenise the answer differently
    np.testing.assert_allclose(other, TransformersScorer(model, tokenizer, cache_size=0, answer_style="authors")
                               .score(*zip(*PAIRS)), atol=1e-5, rtol=0)
