"""IG scoring cost with the bundled model: naive vs prefix-shared vs vector-batched, and IG vs generation.

    .venv/bin/python benchmarks/bench_ig.py [--envs 16] [--searches 3] [--n-random 3]

Every variant plays the same episodes (same seeds, same scripted searches: the gold passages' titles, so the
third search has a 2-step history) with the score cache off, and must give the same IG values:

- naive: the envs stepped one by one, each IG step scoring its 1 + N contexts with full forwards;
- prefix-shared: the same, with the shared history run once per step and its KV cache reused;
- vector: one SearchQAVectorEnv over the same envs, one scorer call per step.

Then the same model generates the same turns (the policy's side of a rollout) so IG's cost can be read as a
share of generation. The last line prints the speed-ups.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from search_env import IGConfig, SearchQAEnv, build_world
from search_env.agents.models import load_causal_lm
from search_env.agents.policy import OraclePolicy, chat_prompt
from search_env.scoring.transformers_scorer import TransformersScorer
from search_env.vector import SearchQAVectorEnv


def run_single(envs, items, oracle, searches, seed) -> tuple[float, list]:
    igs, start = [], time.perf_counter()
    for i, (env, item) in enumerate(zip(envs, items)):
        prompt, _ = env.reset(seed=seed + i, options={"question_id": item.id})
        for _ in range(searches):
            igs.append(env.step(oracle.act(prompt, env.transcript[len(prompt):], force="search"))[4]["ig"])
    return time.perf_counter() - start, igs


def run_vector(venv, items, oracle, searches, seed) -> tuple[float, list]:
    start = time.perf_counter()
    venv.reset(seed=seed)
    prompts = [env.reset(seed=seed + i, options={"question_id": item.id})[0]
               for i, (env, item) in enumerate(zip(venv.envs, items))]
    per_env = [[] for _ in items]
    for _ in range(searches):
        turns = [oracle.act(p, env.transcript[len(p):], force="search") for p, env in zip(prompts, venv.envs)]
        *_, infos = venv.step(turns)
        for i in range(len(items)):
            per_env[i].append(infos["ig"][i])
    return time.perf_counter() - start, [ig for row in per_env for ig in row]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--envs", type=int, default=16)
    parser.add_argument("--searches", type=int, default=3)
    parser.add_argument("--n-random", type=int, default=3)
    parser.add_argument("--turn-tokens", type=int, default=48, help="tokens generated per turn for the comparison")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's; 1 on a shared machine)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    world = build_world()
    items = [q for q in world.questions if q.metadata["hops"] >= 2][: args.envs]
    oracle = OraclePolicy(items, n_searches=args.searches)  # the gold titles in turn (a 2-step history by the third)
    model, tokenizer = load_causal_lm("bundled")
    ig = IGConfig(n_random=args.n_random)
    common = dict(questions=world.questions, corpus=world.corpus, ig=ig, max_turns=args.searches + 1)
    naive = TransformersScorer(model, tokenizer, share_prefix=False, cache_size=0)
    shared = TransformersScorer(model, tokenizer, share_prefix=True, cache_size=0)
    print(f"{args.envs} episodes x {args.searches} searches, N={args.n_random}, bundled SmolLM2-135M fp32, "
          f"{torch.get_num_threads()} threads")

    n = args.searches
    run_single([SearchQAEnv(**common, scorer=shared)], items[:1], oracle, n, 0)  # warm-up
    t_naive, ig_naive = run_single([SearchQAEnv(**common, scorer=naive) for _ in items], items, oracle, n, 0)
    t_shared, ig_shared = run_single([SearchQAEnv(**common, scorer=shared) for _ in items], items, oracle, n, 0)
    t_vector, ig_vector = run_vector(SearchQAVectorEnv(len(items), **common, scorer=shared), items, oracle, n, 0)
    diff = max(np.max(np.abs(np.array(ig_naive) - ig_shared)), np.max(np.abs(np.array(ig_naive) - ig_vector)))
    assert diff < 1e-3, f"variants disagree by {diff}"
    steps = len(ig_naive)
    for name, t in [("naive", t_naive), ("prefix-shared", t_shared), (f"vector ({len(items)} envs)", t_vector)]:
        print(f"{name:<18} {t:7.2f}s  {t / steps * 1000:7.0f} ms per IG step")
    print(f"max |IG difference| between variants: {diff:.2e} nats/token; mean IG {np.mean(ig_naive):+.3f}")

    # The policy's side: generate one turn of exactly --turn-tokens tokens at each of the same search steps.
    env = SearchQAEnv(**{**common, "ig": False})
    contexts = []
    for item in items:
        prompt, _ = env.reset(options={"question_id": item.id})
        for _ in range(n):
            contexts.append((prompt, env.transcript[len(prompt):]))
            env.step(oracle.act(*contexts[-1], force="search"))
    start = time.perf_counter()
    with torch.inference_mode():
        for prompt, continuation in contexts:
            ids = tokenizer(chat_prompt(tokenizer, prompt, continuation), return_tensors="pt", add_special_tokens=False)
            model.generate(**ids, min_new_tokens=args.turn_tokens, max_new_tokens=args.turn_tokens, do_sample=False,
                           pad_token_id=tokenizer.eos_token_id)
    t_generate = time.perf_counter() - start
    print(f"{'generation':<18} {t_generate:7.2f}s  {t_generate / steps * 1000:7.0f} ms per turn "
          f"({args.turn_tokens} tokens, batch 1)")
    print(f"IG (prefix-shared) cost as a share of generating the same turns: {t_shared / t_generate:.1%}")
    print(f"prefix sharing speed-up {t_naive / t_shared:.2f}x; vector batching speed-up over one by one "
          f"{t_shared / t_vector:.2f}x; vector over naive {t_naive / t_vector:.2f}x")


if __name__ == "__main__":
    main()
