"""Does IG tell a useful search from a useless one? Measured on a real multi-hop set with the bundled model.

    .venv/bin/python benchmarks/ig_quality.py [--data ../shared/data/musique_dev_migres200] [--limit 200]

For each question, two one-step episodes from the same seed: a search for the title of a gold supporting
passage (the one holding the answer when there is one) and a search for another random question's text.
Prints the share of questions where the gold-title search gets the higher IG and the AUC over all pairs;
the last line compares the gold and random searches' mean IG.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from search_env import SearchQAEnv, load_corpus, load_questions


def gold_title(item, corpus) -> str:
    passages = [corpus.get(d) for d in item.supporting_doc_ids]
    holding = [p for p in passages if any(a.lower() in p.text.lower() for a in item.golden_answers)]
    return (holding or passages)[-1].title


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a random positive > a random negative), ties counting one half."""
    diff = positive[:, None] - negative[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/musique_dev_migres200")
    )
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's; 1 on a shared machine)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    corpus = load_corpus(Path(args.data) / "corpus.jsonl")
    questions = load_questions(Path(args.data) / "test.jsonl")
    env = SearchQAEnv(questions=questions, corpus=corpus, max_turns=2)
    rng = np.random.default_rng(args.seed)
    items = list(questions)[: args.limit]
    gold_ig, random_ig = [], []
    start = time.perf_counter()
    for i, item in enumerate(items):
        other = questions[int((i + 1 + rng.integers(len(questions) - 1)) % len(questions))]
        pair = []
        for query in (gold_title(item, corpus), other.question):
            env.reset(seed=args.seed + i, options={"question_id": item.id})
            pair.append(env.step(f"<search> {query} </search>")[4]["ig"])
        if None not in pair:
            gold_ig.append(pair[0])
            random_ig.append(pair[1])
    gold_ig, random_ig = np.array(gold_ig), np.array(random_ig)
    print(f"{Path(args.data).name}: {len(gold_ig)} questions scored in {time.perf_counter() - start:.0f}s")
    print(f"gold-title search wins (higher IG than a random question's search): {np.mean(gold_ig > random_ig):.3f}")
    print(f"AUC (gold-title IG vs random-question IG, all pairs): {auc(gold_ig, random_ig):.3f}")
    print(f"mean IG: gold-title {gold_ig.mean():+.3f}, random question {random_ig.mean():+.3f} nats/token; "
          f"difference {gold_ig.mean() - random_ig.mean():+.3f}")


if __name__ == "__main__":
    main()
