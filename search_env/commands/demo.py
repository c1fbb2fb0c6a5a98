"""Play a few episodes on the built-in world and print each turn with its rewards and information gain.

    python -m search_env.commands.demo                    # the bundled SmolLM2-135M-Instruct acts and scores IG
                                                 # (constrained: it searches first and answers by the last turn)
    python -m search_env.commands.demo --policy oracle    # searches the gold passages' titles, then answers

The model's episodes end with what they show and the oracle's run on the same questions, for contrast.

``search-env demo`` is the same command.
"""

from __future__ import annotations

import argparse
import contextlib
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
    """Play episodes on the built-in world and print every turn with its IG and reward; after the model's
    episodes, what they show and the oracle's run on the same questions, for contrast.

    Args:
        policy: ``"model"`` (the bundled model acts, constrained to search first and answer by the last turn,
            and scores IG: it is loaded once) or ``"oracle"`` (searches the gold titles).
        episodes: how many; episode i is reset with seed ``seed + i``.
        seed: the first episode's seed.
        ig: score IG (``False``: no scoring, and no model at all for the oracle).

    Returns:
        The total reward of ``policy``'s episodes.
    """
    import gymnasium as gym

    import search_env  # noqa: F401  (registers the env ids)
    from search_env.agents.models import load_causal_lm
    from search_env.agents.policy import LMPolicy, OraclePolicy, play_episode
    from search_env.data import load_questions
    from search_env.scoring.transformers_scorer import TransformersScorer

    start = time.perf_counter()
    oracle = OraclePolicy(load_questions(None))
    if policy == "model":
        with _no_progress_bars():
            model, tokenizer = load_causal_lm("bundled")
        agent = LMPolicy(model, tokenizer, constrained=True, max_new_tokens=24)
        scorer = TransformersScorer(model, tokenizer) if ig else None
    else:
        agent, scorer = oracle, None
    env = gym.make("search_env:SearchQA-v0", ig=ig, scorer=scorer, max_turns=4)
    base = env.unwrapped
    print(f"search_env demo: {policy} policy on the built-in world "
          f"({len(base.corpus)} passages, {len(base.questions)} questions)\n")

    def show_step(episode: int, turn: str, reward: float, terminated: bool, truncated: bool, info: dict) -> None:
        if info["turn"] == 1:
            item = base.item
            hops = item.metadata.get("hops", "?")
            print(f"=== Episode {episode}: {item.id} ({hops} hop{'' if hops == 1 else 's'}) ===")
            _show("question", item.question)
        _show(f"turn {info['turn']}", turn)
        _describe_step(info, reward, base.corpus)
        if truncated:
            _show("end", f"no answer after {info['turn']} turns")

    records = []
    for episode in range(episodes):
        records.append(play_episode(env, agent, seed=seed + episode, search_first=policy == "model",
                                    answer_last=policy == "model", on_step=functools.partial(show_step, episode + 1)))
        print()
    total = sum(r["return"] for r in records)
    print(f"total reward {total:+.3f} over {episodes} episodes in {time.perf_counter() - start:.1f}s")
    print(_summary(policy, records))
    if policy == "model":  # the same questions, searched the right way
        print("\nFor contrast, the oracle (it searches the gold passages' titles, then answers) on the same questions:")
        for episode, record in enumerate(records):
            print(_oracle_line(play_episode(env, oracle, seed=seed + episode, options={"question_id": record["id"]})))
    return total


def _summary(policy: str, records: list[dict]) -> str:
    """What the episodes show: how many were answered right, answered at all, and how many searches they made."""
    n = len(records)
    right = sum(r["em"] == 1.0 for r in records)
    answered = sum(r["prediction"] is not None for r in records)
    searches = sum(r["n_searches"] for r in records)
    line = (f"The {policy} answered {right} of {n} right (EM 1), answered {answered} of {n} at all, and searched "
            f"{searches} times.")
    if policy == "model" and right < n:
        line += (" The bundled model is a 135M instruction model no one has trained for this task: it rarely "
                 "answers right. Training it on the env's rewards (examples/grpo_ig.py) is what the env is for.")
    return "\n".join(textwrap.wrap(line, 100))


def _oracle_line(record: dict) -> str:
    """One oracle episode in a line: each search with its IG, then the answer and its EM."""
    searches = [f"{t['query']} (IG {t['ig']:+.3f})" if t.get("ig") is not None else t["query"]
                for t in record["turns"] if t["action_type"] == "search"]
    answer = (f"answered {record['prediction']}: EM {record['em']:.0f}" if record["prediction"] is not None
              else "no answer")
    return f"  {record['id']}: searched {'; '.join(searches) or 'nothing'}; {answer}, reward {record['return']:+.3f}"


@contextlib.contextmanager
def _no_progress_bars():
    """transformers' "Loading weights" bar off while the demo loads its model (it is noise in a printed episode)."""
    from transformers.utils import logging

    was = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            logging.enable_progress_bar()


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
