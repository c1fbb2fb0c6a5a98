"""Which way do the self-distillation teachers point? A direction probe on real questions with the bundled model.

For each question, two attempts, scripted and played in the env (BM25 over the set's corpus): a successful one
(searches a gold passage's title, answers the gold answer) and a failed one (searches a distractor passage's title
from the question's own candidates, answers another question's answer). Each teacher of
``search_env.training.distill.direction_probe`` then scores both first searches, ``<search> title </search>``, after
its context, and the student after the plain prompt (both rendered with the policy's chat template and worked
example, as ``examples/grpo_ig.py`` does). Δ = log p_teacher − log p_student (nats, summed over the turn's tokens);
the teacher points the right way when it raises the successful query above the failed one (Δ_success > Δ_failure).

Teachers: ``hindsight`` (the failed rollout's, default: its own attempt left out, so the block shows the success),
``hindsight+own`` (``keep_own``: both attempts in the block), ``hindsight/successful`` (the successful rollout's,
default: the block shows the failure only), ``sibling`` (the failed rollout's, reading the successful episode).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/distill_probe.py --per-set 8

The last line is the ratio of the default hindsight teacher's right-direction rate to the kept-own one's.
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from search_env import SearchQAEnv
from search_env.agents import chat_prompt, load_causal_lm
from search_env.data import load_corpus, load_questions
from search_env.rewards import normalize_answer
from search_env.training.distill import PROBE_TEACHERS, Attempt, direction_probe, search_turn


def play(env, question_id: str, query: str, answer: str) -> tuple[str, Attempt, str]:
    """``(prompt, attempt, completion)`` of the scripted episode: one search, then the answer."""
    prompt, _ = env.reset(options={"question_id": question_id})
    env.step(search_turn(query))
    _, _, _, _, info = env.step(f"<answer> {answer} </answer>")
    return prompt, Attempt([query], answer, bool(info["em"])), env.unwrapped.transcript[len(prompt) :]


def attempts(item, corpus, other_answer: str, rng) -> tuple[str, str] | None:
    """``(successful query, failed query)``: a gold passage's title and a distractor's; None without a distractor
    or when the other question's answer happens to be right."""
    meta = item.metadata
    gold = set(meta.get("supporting_doc_ids", []))
    distractors = [i for i in meta.get("candidate_doc_ids", []) if i not in gold]
    if not gold or not distractors or normalize_answer(other_answer) in map(normalize_answer, item.golden_answers):
        return None
    distractor = distractors[int(rng.integers(len(distractors)))]
    return corpus.get(meta["supporting_doc_ids"][0]).title, corpus.get(distractor).title


def interval(hits: list[bool], rng, n: int = 2000) -> tuple[float, float]:
    """90% bootstrap interval of a rate."""
    draws = rng.choice(np.asarray(hits, float), size=(n, len(hits))).mean(1)
    return float(np.quantile(draws, 0.05)), float(np.quantile(draws, 0.95))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data", help="the folder of the shared data sets")
    parser.add_argument("--sets", nargs="+", default=["hotpotqa_dev_migres200", "musique_dev_migres200"])
    parser.add_argument("--per-set", type=int, default=8, help="questions per set (the first ones usable)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the distractor choice")
    parser.add_argument("--output", default=None, help="also write the per-question deltas as JSON here")
    args = parser.parse_args()
    if args.per_set < 1:
        raise SystemExit(f"--per-set {args.per_set}: use at least 1")
    torch.set_num_threads(1)
    model, tokenizer = load_causal_lm("bundled")
    render = partial(chat_prompt, tokenizer, dialect="search-r1", few_shot=True)
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    rng, rows, start = np.random.default_rng(args.seed), [], time.perf_counter()
    for name in args.sets:
        folder = Path(args.data, name)
        if not folder.is_dir():
            raise SystemExit(f"{folder}: not found (--data is the folder of the shared data sets)")
        questions, corpus = load_questions(folder / "test.jsonl"), load_corpus(folder / "corpus.jsonl")
        env = SearchQAEnv(questions=questions, corpus=corpus, ig=False, max_turns=3)
        taken = 0
        for k, item in enumerate(questions):
            other = questions[(k + 1) % len(questions)].golden_answers[0]
            pair = attempts(item, corpus, other, rng) if taken < args.per_set else None
            if pair is None:
                continue
            prompt, success, s_text = play(env, item.id, pair[0], item.golden_answers[0])
            _, failure, f_text = play(env, item.id, pair[1], other)
            if not success.correct or failure.correct:
                continue
            deltas = direction_probe(model, encode, prompt, (success, s_text), (failure, f_text), render=render)
            rows.append({"set": name, "id": item.id, "queries": pair, **{t: list(d) for t, d in deltas.items()}})
            taken += 1
            print(f"{name} {item.id}: " + "  ".join(f"{t} {d[0]:+.2f}/{d[1]:+.2f}" for t, d in deltas.items()),
                  flush=True)
    if args.output:
        Path(args.output).write_text(json.dumps(rows, indent=1))
    print(f"\n{len(rows)} questions ({', '.join(args.sets)}), bundled SmolLM2-135M, "
          f"{time.perf_counter() - start:.0f} s")
    print("| teacher | Δ success > Δ failure [90% bootstrap] | mean Δ success | mean Δ failure | success raised |"
          " failure lowered |")
    print("|---|---|---|---|---|---|")
    rates = {}
    for teacher in PROBE_TEACHERS:
        d = np.array([r[teacher] for r in rows])
        right = list(d[:, 0] > d[:, 1])
        rates[teacher] = float(np.mean(right))
        low, high = interval(right, rng)
        print(f"| {teacher} | {rates[teacher]:.2f} ({sum(right)}/{len(right)}) [{low:.2f}, {high:.2f}] | "
              f"{d[:, 0].mean():+.2f} | {d[:, 1].mean():+.2f} | {np.mean(d[:, 0] > 0):.2f} | "
              f"{np.mean(d[:, 1] < 0):.2f} |")
    kept = rates["hindsight+own"]
    ratio = rates["hindsight"] / kept if kept else float("inf")
    print(f"right-direction rate, hindsight own attempt out / kept: {rates['hindsight']:.2f} / {kept:.2f} "
          f"= {ratio:.2f}x")


if __name__ == "__main__":
    main()
