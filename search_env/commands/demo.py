"""Play a few episodes on the built-in world and print each turn with its rewards and information gain.

    python -m search_env.commands.demo                    # the bundled SmolLM2-135M-Instruct acts and scores IG
                                                 # (constrained: it searches first and answers by the last turn)
    python -m search_env.commands.demo --policy oracle    # searches the gold passages' titles, then answers

``search-env demo`` is the same command.
"""

from __future__ import annotations

import argparse
import functools
import sys
import textwrap
import time

from search_env.commands.args import OneLineParser, RawDescriptionDefaultsHelpFormatter, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's options, for ``python -m search_env.commands.demo`` and ``search-env demo`` alike."""
    parser.add_argument("--policy", choices=["model", "oracle"], default="model",
                        help="the bundled model, or an agent that searches the gold titles (default: model)")
    parser.add_argument("--episodes", type=positive_int, default=3, help="episodes to play (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="the first episode's reset seed (episode i: seed + i)")
    parser.add_argument("--no-ig", action="store_true", help="skip IG scoring (no model is loaded for the oracle)")


def run_demo(policy: str = "model", episodes: int = 3, seed: int = 0, ig: bool = True) -> float:
    """Play episodes on the built-in world and print every turn with its IG and reward.

    Args:
        policy: ``"model"`` (the bundled model acts, constrained to search first and answer by the last turn,
            and scores IG: it is loaded once) or ``"oracle"`` (searches the gold titles).
        episodes: how many; episode i is reset with seed ``seed + i``.
        seed: the first episode's seed.
        ig: score IG (``False``: no scoring, and no model at all for the oracle).

    Returns:
        The total reward over the episodes.
    """
    import gymnasium as gym

    import search_env  # noqa: F401  (registers the env ids)
    from search_env.agents.models import load_causal_lm
    from search_env.agents.policy import LMPolicy, OraclePolicy, play_episode
    from search_env.data import load_questions
    from search_env.scoring.transformers_scorer import TransformersScorer

    start = time.perf_counter()
    if policy == "model":
        model, tokenizer = load_causal_lm("bundled")
        agent = LMPolicy(model, tokenizer, constrained=True, max_new_tokens=24)
        scorer = TransformersScorer(model, tokenizer) if ig else None
    else:
        agent, scorer = OraclePolicy(load_questions(None)), None
    env = gym.make("search_env:SearchQA-v0", ig=ig, scorer=scorer, max_turns=4)
    base = env.unwrapped
    print(f"search_env demo: {policy} policy on the built-in world "
          f"({len(base.corpus)} passages, {len(base.questions)} questions)\n")

    def show_step(episode: int, turn: str, reward: float, terminated: bool, truncated: bool, info: dict) -> None:
        if info["turn"] == 1:
            item = base.item
            print(f"=== Episode {episode}: {item.id} ({item.metadata.get('hops', '?')} hops) ===")
            _show("question", item.question)
        _show(f"turn {info['turn']}", turn)
        _describe_step(info, reward, base.corpus)
        if truncated:
            _show("end", f"no answer after {info['turn']} turns")

    total = 0.0
    for episode in range(episodes):
        record = play_episode(env, agent, seed=seed + episode, search_first=policy == "model",
                              answer_last=policy == "model", on_step=functools.partial(show_step, episode + 1))
        total += record["return"]
        print()
    print(f"total reward {total:+.3f} over {episodes} episodes in {time.perf_counter() - start:.1f}s")
    return total


def _show(label: str, text: str, width: int = 100) -> None:
    lines = textwrap.wrap(" ".join(text.split()), width - 12) or [""]
    print(f"  {label:<9} {lines[0]}")
    for line in lines[1:]:
        print(f"  {'':<9} {line}")


def _describe_step(info: dict, reward: float, corpus) -> None:
    if info["action_type"] == "search":
        titles = "; ".join(corpus.get(doc).title for doc in info["doc_ids"]) or "nothing"
        _show("found", titles)
        if info.get("ig") is not None:
            d = info["ig_detail"]
            randoms = ", ".join(f"{x:.2f}" for x in d["logp_random"])
            _show("IG", f"{info['ig']:+.3f} nats/token: log p(gold | retrieved) = {d['logp_real']:.2f}, "
                        f"with random passages = [{randoms}]")
    elif info["action_type"] == "answer":
        _show("outcome", f"EM {info['em']:.0f}, F1 {info['f1']:.2f} (gold: {info['golden_answers'][0]})")
    else:
        _show("invalid", info["invalid_reason"])
    _show("reward", f"{reward:+.3f}  {info['reward_components']}")


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m search_env.commands.demo", description=__doc__,
                           formatter_class=RawDescriptionDefaultsHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    run_demo(args.policy, args.episodes, args.seed, ig=not args.no_ig)
    return 0


if __name__ == "__main__":
    sys.exit(main())
