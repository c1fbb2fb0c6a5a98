"""Does a credit mode credit the first lookup of a multi-hop question? Paired, per question type and mode.

For each question: episode A looks up a gold first passage, then a gold second one; episode B looks up an
unrelated passage (from another question), then the same gold second one; both then answer. Each mode's credit of
the first lookup is compared between A and B (a win: A's is larger; a tie counts half). Shared draws key the random
passages by question and turn, so A and B are scored against the same ones. Modes: one-step IG (``info["ig"]`` of
the first search), ``sub-answer``, ``leave-one-out`` and ``shapley`` (``info["search_credit"][0]``).

Question types: 2Wiki dev comparison and bridge-comparison (first: the first compared entity's passage, or the first
film's; second: the other compared entity's, or that film's director's), MuSiQue dev (hops 1 and 2 of the
decomposition) and HotpotQA dev bridge (the passage the question names, then the bridge entity's).

    .venv/bin/python benchmarks/credit_validity.py --per-type 12

The last line is the ratio of the sub-answer credit's win rate to one-step IG's, over all questions.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from search_env import IGConfig, SearchQAEnv
from search_env.agents.models import load_causal_lm
from search_env.data import load_corpus, load_questions
from search_env.info_gain import keyed_rng
from search_env.retrieval.base import Hit
from search_env.rewards import normalize_answer
from search_env.scoring.transformers_scorer import TransformersScorer

MODES = ("sub-answer", "leave-one-out", "shapley")
SETS = {"2wiki comparison": ("2wiki_dev_migres164", "comparison"),
        "2wiki bridge-comparison": ("2wiki_dev_migres164", "bridge_comparison"),
        "musique": ("musique_dev_migres200", None),
        "hotpotqa bridge": ("hotpotqa_dev_migres200", "bridge")}


class FixedRetriever:
    """Returns the passage listed for each query (the episode's scripted lookups)."""

    def __init__(self):
        self.table: dict[str, list[Hit]] = {}

    def search(self, query, k):
        return self.table[query][:k]

    def batch_search(self, queries, k):
        return [self.search(q, k) for q in queries]


def lookups(item, corpus) -> tuple[str, str] | None:
    """(first, second) gold passage ids of a question, by its type; None where they cannot be told."""
    meta = item.metadata
    by_title = {corpus.get(i).title.lower(): i for i in meta.get("supporting_doc_ids", [])}
    if meta.get("question_decomposition"):
        ids = [meta["candidate_doc_ids"][d["paragraph_support_idx"]] for d in meta["question_decomposition"]]
        return (ids[0], ids[1]) if len(ids) >= 2 else None
    if meta.get("evidences"):
        ev = meta["evidences"]
        titles = (ev[0][0], ev[1][0]) if meta["type"] == "comparison" else (ev[0][0], ev[0][2])
        ids = [by_title.get(t.lower()) for t in titles]
        return tuple(ids) if all(ids) and ids[0] != ids[1] else None
    words = set(normalize_answer(item.question).split())
    named = sorted(by_title, key=lambda t: -sum(w in words for w in normalize_answer(t.split(" (")[0]).split()))
    return (by_title[named[0]], by_title[named[1]]) if len(named) == 2 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data", help="the folder of the shared data sets")
    parser.add_argument("--per-type", type=int, default=12, help="questions per question type")
    parser.add_argument("--n-random", type=int, default=2, help="random counterfactuals per step")
    parser.add_argument("--max-context-tokens", type=int, default=1024)
    parser.add_argument("--output", default=None, help="also write the per-question credits as JSON here")
    args = parser.parse_args()

    model, tokenizer = load_causal_lm("bundled")
    scorer = TransformersScorer(model, tokenizer, max_context_tokens=args.max_context_tokens, cache_size=100_000)
    rows, records, start = [], [], time.perf_counter()
    for name, (folder, kind) in SETS.items():
        questions = load_questions(Path(args.data) / folder / "test.jsonl")
        corpus = load_corpus(str(Path(args.data) / folder / "corpus.jsonl"))
        retriever = FixedRetriever()
        envs = {mode: SearchQAEnv(questions=questions, corpus=corpus, retriever=retriever, scorer=scorer, topk=1,
                                  max_turns=3, ig=IGConfig(n_random=args.n_random, shared_draws=True, credit=mode))
                for mode in MODES}
        wins = {m: [] for m in ("step",) + MODES}
        for item in questions:
            if len(wins["step"]) >= args.per_type:
                break
            if kind is not None and item.metadata.get("type") != kind:
                continue
            pair = lookups(item, corpus)
            if pair is None:
                continue
            own = set(item.metadata.get("candidate_doc_ids", [])) | set(pair)
            rng = keyed_rng(item.id, "unrelated")
            unrelated = next(str(i) for i in rng.permutation(len(corpus)) if corpus[int(i)].id not in own)
            first, second, other = (corpus.get(i) for i in (*pair, unrelated))
            credit = {}
            for label, lookup in (("gold", first), ("unrelated", other)):
                retriever.table = {p.title: [Hit(p.id, p.title, p.text, 1.0)] for p in (lookup, second)}
                for mode, env in envs.items():
                    env.reset(options={"question_id": item.id, "draw_seed": 0})
                    step = env.step(f"<search> {lookup.title} </search>")[4]
                    env.step(f"<search> {second.title} </search>")
                    end = env.step("<answer> unknown </answer>")[4]
                    credit[(label, "step")] = step["ig"]
                    credit[(label, mode)] = end["search_credit"][0]
            for mode in wins:
                a, b = credit[("gold", mode)], credit[("unrelated", mode)]
                wins[mode].append(1.0 if a > b else 0.5 if a == b else 0.0)
            records.append({"type": name, "id": item.id, **{f"{k[0]}/{k[1]}": v for k, v in credit.items()}})
        rows.append((name, len(wins["step"]), {m: float(np.mean(w)) if w else float("nan") for m, w in wins.items()},
                     wins))
        print(f"{name}: {len(wins['step'])} questions ({time.perf_counter() - start:.0f} s so far)", flush=True)

    print(f"\nwin rate of a gold first lookup over an unrelated one (paired; n_random {args.n_random})")
    print(f"{'type':<26}{'n':>4}" + "".join(f"{m:>15}" for m in ("step IG",) + MODES))
    totals = {m: [] for m in ("step",) + MODES}
    for name, n, rates, wins in rows:
        print(f"{name:<26}{n:>4}" + "".join(f"{rates[m]:>15.2f}" for m in totals))
        for m in totals:
            totals[m] += wins[m]
    print(f"{'all':<26}{len(totals['step']):>4}" + "".join(f"{np.mean(totals[m]):>15.2f}" for m in totals))
    if args.output:
        Path(args.output).write_text(json.dumps(records, indent=1))
    print(f"sub-answer / step IG win rate: {np.mean(totals['sub-answer']) / np.mean(totals['step']):.2f}")


if __name__ == "__main__":
    main()
