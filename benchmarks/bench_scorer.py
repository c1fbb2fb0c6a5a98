"""IG scoring with the bundled SmolLM2-135M: naive batches vs prefix sharing, on realistic IG steps.

    .venv/bin/python benchmarks/bench_scorer.py [--steps 4] [--n-random 3] [--seed 0]

Each IG step scores one gold answer (2-6 tokens) after 1 + N contexts: a ~150-token prompt, two earlier
search steps of 3 passages (~100 tokens each), step t's query and its 3 passages; the N counterfactual
contexts swap step t's passages for random ones. Passages and questions come from
``../shared/data/2wiki_dev_migres164`` when it is there, otherwise from generated text. Each step is one
``score`` call, as the env makes it. Naive: ``share_prefix=False``; shared: the default. Both have the
score cache off and agree to 1e-4 or the script fails. Takes about a minute and a half on 2 CPU cores;
the last line is the speed-up.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from search_env.agents.models import load_bundled_model
from search_env.scoring.transformers_scorer import TransformersScorer, _group_by_prefix

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "2wiki_dev_migres164"
INSTRUCTIONS = (
    "Answer the question below. Reason inside <think> and </think> whenever you get new information. "
    "If you need facts you do not have, search by writing <search> your query </search>; the 3 best "
    "passages come back between <information> and </information>. You may search as often as you need. "
    "When you know the answer, give it alone, with no explanation, between <answer> and </answer>, "
    "for example <answer> Lisbon </answer>. Keep every search short and specific, one fact at a time, "
    "and do not repeat a query that already returned its passages.\n"
)


def load_material(rng: random.Random, tokenizer) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(passages as (title, text) of 70-130 tokens, questions as (question, answer of 2-6 tokens))."""
    if DATA.exists():
        passages = []
        for line in (DATA / "corpus.jsonl").open(encoding="utf-8"):
            title, _, text = json.loads(line)["contents"].partition("\n")
            passages.append((title.strip('"'), text))
        questions = []
        for line in (DATA / "test.jsonl").open(encoding="utf-8"):
            row = json.loads(line)
            questions.append((row["question"], row["golden_answers"][0]))
    else:
        words = "the of a river film born director city war king was in and by his first album team".split()
        passages = [(f"Topic {i}", " ".join(rng.choices(words, k=rng.randint(60, 110)))) for i in range(300)]
        questions = [(f"Who directed film number {i}?", f"director number {i}") for i in range(50)]

    def n_tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    passages = [p for p in passages if 70 <= n_tokens(f"Doc 1(Title: {p[0]}) {p[1]}") <= 130]
    questions = [q for q in questions if 2 <= n_tokens(" " + q[1]) <= 6]
    return passages, questions


def information(docs: list[tuple[str, str]]) -> str:
    body = "".join(f"Doc {i}(Title: {title}) {text}\n" for i, (title, text) in enumerate(docs, start=1))
    return f"<information>{body}</information>"


def ig_steps(rng: random.Random, passages, questions, n_steps: int, n_random: int) -> list[tuple[list[str], str]]:
    """Per IG step: the real context first, then ``n_random`` counterfactuals; and the gold answer."""
    steps = []
    for question, answer in rng.sample(questions, n_steps):
        blocks = [INSTRUCTIONS + f"Question: {question}\n"]
        for _ in range(2):  # two earlier search steps
            query = " ".join(rng.sample(question.split(), 3))
            blocks += [f"<search> {query} </search>", information(rng.sample(passages, 3))]
        blocks.append(f"<search> {question.rstrip('?')} </search>")
        history = "\n".join(blocks)
        contexts = [f"{history}\n{information(rng.sample(passages, 3))}" for _ in range(1 + n_random)]
        steps.append((contexts, answer))
    return steps


def run(scorers: list[TransformersScorer], steps) -> tuple[list[np.ndarray], list[float]]:
    """Scores and total seconds per scorer; the scorers take turns step by step, so that a machine
    busy with something else slows them alike."""
    scores, seconds = [[] for _ in scorers], [0.0] * len(scorers)
    for contexts, answer in steps:
        for k, scorer in enumerate(scorers):
            start = time.perf_counter()
            scores[k].append(scorer.score(contexts, [answer] * len(contexts)))
            seconds[k] += time.perf_counter() - start
    return [np.concatenate(s) for s in scores], seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--n-random", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    start = time.perf_counter()
    model, tokenizer = load_bundled_model()
    print(f"bundled model loaded in {time.perf_counter() - start:.2f} s")
    rng = random.Random(args.seed)
    passages, questions = load_material(rng, tokenizer)
    steps = ig_steps(rng, passages, questions, args.steps + 1, args.n_random)
    warmup, steps = steps[:1], steps[1:]

    naive = TransformersScorer(model, tokenizer, share_prefix=False, cache_size=0)
    shared = TransformersScorer(model, tokenizer, share_prefix=True, cache_size=0)
    encoded = [naive._encode([(c, a) for c in contexts]) for contexts, a in steps]
    groups = [_group_by_prefix(step) for step in encoded]
    assert all(len(g) == 1 for g in groups), "the contexts of one IG step should form one prefix group"
    shared_len = [g[0][1] for g in groups]
    n_tokens = sum(len(ids) for step in encoded for ids, _ in step)
    tokens_run = sum(n + sum(len(ids) - n for ids, _ in step) for step, n in zip(encoded, shared_len))
    print(
        f"{len(steps)} IG steps x {1 + args.n_random} contexts, {n_tokens / len(steps) / (1 + args.n_random):.0f} "
        f"tokens per sequence, {np.mean(shared_len):.0f} of them shared; {torch.get_num_threads()} CPU threads"
    )

    run([naive, shared], warmup)
    (naive_scores, shared_scores), (naive_s, shared_s) = run([naive, shared], steps)

    diff = float(np.max(np.abs(naive_scores - shared_scores)))
    print(f"naive:          {naive_s:7.2f} s  {n_tokens / naive_s:8.0f} tokens/s  ({n_tokens} tokens run)")
    print(
        f"prefix-shared:  {shared_s:7.2f} s  {n_tokens / shared_s:8.0f} tokens/s scored  "
        f"({tokens_run} tokens run, {tokens_run / shared_s:.0f} tokens/s)"
    )
    print(f"max |naive - shared| = {diff:.2e} nats/token")
    if not diff < 1e-4:
        sys.exit("prefix-shared scores differ from naive ones")
    print(f"prefix sharing speed-up at N={args.n_random}: {naive_s / shared_s:.2f}x")


if __name__ == "__main__":
    main()
