"""Play a few episodes on the built-in world and print each turn with its rewards and information gain.

    python -m search_env.demo                    # the bundled SmolLM2-135M-Instruct acts and scores IG
                                                 # (constrained: it searches first and answers by the last turn)
    python -m search_env.demo --policy oracle    # searches the gold passages' titles, then answers
"""

from __future__ import annotations

import argparse
import textwrap
import time

import gymnasium as gym

import search_env  # noqa: F401  (registers the env ids)


def oracle_turns(item):
    """The turns of an agent that knows the gold passages: search each title, then answer."""
    for title in item.metadata.get("supporting_titles", []):
        yield f"<think>I should look up {title}.</think>\n<search> {title} </search>"
    yield f"<answer> {item.golden_answers[0]} </answer>"


def show(label: str, text: str, width: int = 100) -> None:
    lines = textwrap.wrap(" ".join(text.split()), width - 12) or [""]
    print(f"  {label:<9} {lines[0]}")
    for line in lines[1:]:
        print(f"  {'':<9} {line}")


def describe_step(info: dict, reward: float, corpus) -> None:
    if info["action_type"] == "search":
        titles = "; ".join(corpus.get(doc).title for doc in info["doc_ids"]) or "nothing"
        show("found", titles)
        if info.get("ig") is not None:
            d = info["ig_detail"]
            randoms = ", ".join(f"{x:.2f}" for x in d["logp_random"])
            show("IG", f"{info['ig']:+.3f} nats/token: log p(gold | retrieved) = {d['logp_real']:.2f}, "
                       f"with random passages = [{randoms}]")
    elif info["action_type"] == "answer":
        show("outcome", f"EM {info['em']:.0f}, F1 {info['f1']:.2f} (gold: {info['golden_answers'][0]})")
    else:
        show("invalid", info["invalid_reason"])
    show("reward", f"{reward:+.3f}  {info['reward_components']}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", choices=["model", "oracle"], default="model", help="who acts (default: the bundled model)")
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-ig", action="store_true", help="skip IG scoring (no model is loaded for the oracle)")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    env = gym.make("search_env:SearchQA-v0", ig=not args.no_ig, max_turns=4)
    policy = None
    if args.policy == "model":
        from search_env.policy import LMPolicy
        from search_env.scorers import load_bundled_model

        model, tokenizer = load_bundled_model()
        policy = LMPolicy(model, tokenizer, constrained=True, max_new_tokens=24)
    print(f"search_env demo: {args.policy} policy on the built-in world "
          f"({len(env.unwrapped.corpus)} passages, {len(env.unwrapped.questions)} questions)\n")

    total = 0.0
    for episode in range(args.episodes):
        prompt, info = env.reset(seed=args.seed + episode)
        item = env.unwrapped.item
        print(f"=== Episode {episode + 1}: {item.id} ({item.metadata.get('hops', '?')} hops) ===")
        show("question", item.question)
        scripted = oracle_turns(item)
        done = False
        while not done:
            if policy is None:
                turn = next(scripted)
            else:
                # Search first, answer on the last turn, the model's choice in between.
                turn_no = env.unwrapped.turn
                force = "search" if turn_no == 0 else "answer" if turn_no == env.unwrapped.max_turns - 1 else None
                turn = policy.act(prompt, env.unwrapped.transcript[len(prompt):], force=force)
            obs, reward, terminated, truncated, info = env.step(turn)
            show(f"turn {info['turn']}", turn)
            describe_step(info, reward, env.unwrapped.corpus)
            total += reward
            done = terminated or truncated
            if truncated:
                show("end", f"no answer after {info['turn']} turns")
        print()
    print(f"total reward {total:+.3f} over {args.episodes} episodes in {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()
