"""`search-env eval --policy bundled`: episodes played one at a time vs --batch-size at once (play_episodes).

The bundled model, constrained as eval runs it, on the first N built-in questions, once with one sub-env and once
with B sub-envs (one generation batch, one retrieval call per turn), in one process and one torch thread. Prints
each arm's episodes per minute, how many episodes wrote the same turns in both arms (greedy), and on the last line
the ratio batched / one at a time.

    .venv/bin/python benchmarks/bench_eval_batch.py --questions 8 --batch-size 8
"""

from __future__ import annotations

import argparse
import time

import torch

from search_env.agents.models import load_causal_lm
from search_env.agents.policy import LMPolicy, play_episodes
from search_env.data import load_corpus, load_questions
from search_env.vector import SearchQAVectorEnv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=8, help="built-in questions played in each arm")
    parser.add_argument("--batch-size", type=int, default=8, help="sub-envs of the batched arm")
    parser.add_argument("--max-turns", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=96, help="eval's default")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, tokenizer = load_causal_lm("bundled")
    policy = LMPolicy(model, tokenizer, constrained=True, max_new_tokens=args.max_new_tokens)
    questions, corpus = load_questions(None), load_corpus(None)
    episodes = [{"question_id": q.id} for q in list(questions)[: args.questions]]
    texts, rates = {}, {}
    for width in (1, args.batch_size):
        venv = SearchQAVectorEnv(width, autoreset_mode="Disabled", questions=questions, corpus=corpus, ig=False,
                                 max_turns=args.max_turns)
        start = time.perf_counter()
        records = play_episodes(venv, policy, episodes, seed=0, search_first=True, answer_last=True)
        seconds = time.perf_counter() - start
        texts[width] = [[t["text"] for t in r["turns"]] for r in records]
        rates[width] = len(records) / seconds * 60
        turns = sum(len(r["turns"]) for r in records)
        print(f"batch {width:>2}: {len(records)} episodes, {turns} turns in {seconds:.1f}s: "
              f"{rates[width]:.1f} episodes/min")
    same = sum(a == b for a, b in zip(texts[1], texts[args.batch_size]))
    print(f"episodes with the same turns in both arms (greedy): {same} of {len(episodes)}")
    print(f"batch {args.batch_size} vs one at a time, episodes/min: {rates[args.batch_size] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
