"""PPO (stable-baselines3) on the built-in world's multi-hop questions: outcome-only reward vs outcome + IG, added
to each search or as potential-based shaping.

One file, read top to bottom. The policy is a small MLP that cannot read text, so the env is seen through
``NumericSearchView`` (``search_env.wrappers.numeric``): each turn it picks one of ``1 + 2 * n_candidates`` actions
(search the question, search a name found in the passages so far, or answer with such a name), and sees
hashed bags of the question's words and of the words around each candidate name.

Three arms (``--arms``), the same number of env steps each, ``--seeds`` seeds each:

- ``outcome``: ``OutcomeOnly`` (EM of the answer, and the env's -0.1 for an invalid turn); IG is not
  even computed (``ig=False``), so this arm never runs the scorer.
- ``outcome+ig``: ``OutcomePlusIG``: the same, plus ``ig_weight * clip(IG, -ig_clip, ig_clip)`` on every
  search step, IG scored by the bundled SmolLM2-135M (``--scorer bundled``) or by a cheap deterministic
  stand-in (``--scorer fake``, for smoke tests). A policy that searches until it is cut off collects these
  bonuses without ever answering.
- ``outcome+ig-potential``: ``PotentialShapedReward``: the outcome plus ``ig_weight * (gamma * Φ(s') - Φ(s))``
  with ``Φ(s) = score(gold | context of s)`` and ``Φ = 0`` once the episode ends, ``gamma`` the PPO discount:
  every episode's return is the outcome's minus ``ig_weight * Φ(s0)``, so searching earns nothing in total
  (the logged training return includes that constant, ``-ig_weight * Φ(s0) > 0``).

The turn limit is terminal (``TurnLimitAsTerminal``, ``--no-turn-limit-terminal`` to turn it off): the view's
observation holds the turn count, so an episode cut off at ``--max-turns`` cannot go on, but SB3 reads a truncation
as a time limit and adds ``gamma * V(last observation)`` to its last reward. Under potential shaping that value
holds the large positive ``-ig_weight * Φ`` of the last step, which the cut-off step has already been paid.

One scorer is shared by all IG runs, with a large LRU cache and (``--score-cache``, on by default) the on-disk
cache ``search_env.scoring.cache``, so a rerun or an extra seed scores only contexts never seen before. The
questions are a fixed subset and the view freezes IG's random draws per question, so the same (question,
search path) always gives the same contexts: later episodes, and later seeds, are mostly cache hits.

Every ``--eval-every`` env steps each run plays every training question once with the greedy policy
(``deterministic=True``, IG off) and logs the exact match, the answer rate (episodes ended by an answer), the
truncation rate (episodes cut off at ``--max-turns``) and the searches per episode, and the same three over
the last 100 training episodes (``train_*``). At the end: ``curves.csv``, ``curves.png`` (EM, answer rate and
searches vs env steps, mean and min/max over seeds per arm), ``summary.json`` and a table on stdout: the env
steps each arm needs to reach EM >= ``--em-threshold``, its final EM (training and held-out questions) and
its final answer rate, truncation rate and searches.

    python examples/sb3_ablation.py                                  # the full ablation, bundled scorer (~1 h, 2 cores)
    python examples/sb3_ablation.py --scorer fake --total-steps 256 --n-steps 64 --eval-every 128 \\
        --n-questions 8 --seeds 1                                    # a smoke test, seconds
    python examples/sb3_ablation.py --arms outcome+ig-potential      # one arm

Needs stable-baselines3 and matplotlib.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from search_env.data.qa import QADataset
from search_env.data.synthetic import build_world
from search_env.env import SearchQAEnv
from search_env.info_gain import IGConfig
from search_env.training.args import arg, parse_args
from search_env.training.plots import Curve, Panel, plot_panels
from search_env.training.run import seed_everything, write_csv
from search_env.wrappers import OutcomeOnly, OutcomePlusIG, PotentialShapedReward, TurnLimitAsTerminal
from search_env.wrappers.numeric import NumericSearchView

ARMS = ("outcome", "outcome+ig", "outcome+ig-potential")


@dataclass
class Args:
    out_dir: str = arg("runs/sb3_ablation", "where curves.csv, curves.png and summary.json go")
    scorer: str = arg("bundled", "IG scorer: 'bundled' (SmolLM2-135M) or 'fake' (cheap, deterministic)")
    cache_size: int = arg(200_000, "LRU cache entries of the bundled scorer (shared by all runs)")
    score_cache: bool = arg(True, "keep the bundled scorer's scores on disk too (search_env.scoring.cache)")
    max_context_tokens: int = arg(384, "the bundled scorer keeps the last N context tokens (cost grows with N)")
    world_seed: int = arg(0, "build_world(seed=...)")
    hops: int = arg(2, "questions with this many hops")
    n_questions: int = arg(12, "training questions: the first N of that many hops")
    n_heldout: int = arg(40, "held-out questions (the next N), evaluated at the end only")
    max_turns: int = arg(4, "turns per episode")
    turn_limit_terminal: bool = arg(True, "end at --max-turns as terminal (TurnLimitAsTerminal); off: truncated, and "
                                          "SB3 then pays each cut-off episode gamma * V(its last state)")
    topk: int = arg(3, "passages per search")
    n_candidates: int = arg(6, "candidate slots of the numeric view")
    arms: str = arg(",".join(ARMS), "the arms to run, comma-separated")
    ig_weight: float = arg(0.2, "lambda of the IG arms (the outcome arm uses 0)")
    ig_clip: float = arg(1.0, "IG is clipped to [-c, c] nats before weighting")
    ig_baseline: str = arg("previous", "IG baseline: previous, random, none or best")
    n_random: int = arg(3, "random-passage draws per step (baseline 'random' only)")
    seeds: int = arg(3, "seeds per arm (0 .. seeds-1)")
    total_steps: int = arg(12288, "env steps per run")
    n_steps: int = arg(128, "PPO rollout length")
    batch_size: int = arg(64, "PPO minibatch size")
    n_epochs: int = arg(4, "PPO epochs per rollout")
    learning_rate: float = arg(1e-3, "Adam learning rate")
    ent_coef: float = arg(0.01, "entropy bonus")
    gamma: float = arg(1.0, "discount (episodes are at most max_turns long); also the potential arm's gamma")
    eval_every: int = arg(1024, "env steps between greedy evaluations")
    em_threshold: float = arg(0.2, "the table reports the env steps to reach this training EM")
    torch_threads: int = arg(2, "torch.set_num_threads (1 is faster when other jobs share the cores)")


# ------------------------------------------------------------------------------------------ scorers


class FakeScorer:
    """A cheap deterministic stand-in: 1 if the answer is in the latest search's block, plus a value in
    [-0.25, 0.25) fixed by a hash of that block, so every search (and every random draw) gets its own IG and
    potential, and the three arms' rewards differ as they would with a real scorer."""

    def score(self, contexts, answers):
        blocks = [c.rsplit("<search>", 1)[-1] for c in contexts]
        return np.array([float(a.lower() in b.lower()) + zlib.crc32(b.encode()) % 1000 / 2000 - 0.25
                         for b, a in zip(blocks, answers)])


class CountingScorer:
    """Counts the (context, answer) pairs asked for and how many were asked for before (cache hits, when
    the inner cache is large enough to keep everything), and the seconds spent scoring."""

    def __init__(self, inner):
        self.inner, self.seen = inner, set()
        self.requests = self.hits = 0
        self.seconds = 0.0

    def score(self, contexts, answers):
        keys = list(zip(contexts, answers))
        self.requests += len(keys)
        self.hits += sum(k in self.seen for k in keys)
        self.seen.update(keys)
        start = time.perf_counter()
        out = self.inner.score(contexts, answers)
        self.seconds += time.perf_counter() - start
        return out


def make_scorer(args: Args):
    if args.scorer == "fake":
        return CountingScorer(FakeScorer())
    if args.scorer == "bundled":
        from search_env.scoring.transformers_scorer import TransformersScorer

        return CountingScorer(TransformersScorer.from_pretrained(
            "bundled", cache_size=args.cache_size, max_context_tokens=args.max_context_tokens,
            disk_cache=args.score_cache))
    raise ValueError(f"--scorer must be 'bundled' or 'fake', not {args.scorer!r}")


# ------------------------------------------------------------------------------------------ envs


def questions(args: Args) -> tuple[QADataset, QADataset]:
    """The first ``n_questions`` questions with ``hops`` hops of the world (training), and the next ``n_heldout``."""
    world = build_world(seed=args.world_seed)
    pool = [q for q in world.questions if q.metadata["hops"] == args.hops]
    if len(pool) < args.n_questions + args.n_heldout:
        raise ValueError(f"the world has only {len(pool)} {args.hops}-hop questions")
    train = QADataset(pool[: args.n_questions], name="train")
    heldout = QADataset(pool[args.n_questions : args.n_questions + args.n_heldout], name="heldout")
    return train, heldout


def make_env(args: Args, qs: QADataset, arm: str, scorer=None):
    corpus = build_world(seed=args.world_seed).corpus
    if arm == "outcome":
        env = OutcomeOnly(SearchQAEnv(questions=qs, corpus=corpus, topk=args.topk, max_turns=args.max_turns, ig=False))
    else:
        ig = IGConfig(baseline=args.ig_baseline, n_random=args.n_random, score_start=arm == "outcome+ig-potential")
        env = SearchQAEnv(questions=qs, corpus=corpus, topk=args.topk, max_turns=args.max_turns, ig=ig, scorer=scorer)
        if arm == "outcome+ig":
            env = OutcomePlusIG(env, args.ig_weight, ig_clip=args.ig_clip)
        else:
            env = PotentialShapedReward(env, args.ig_weight, gamma=args.gamma)
    view = NumericSearchView(env, n_candidates=args.n_candidates)
    return TurnLimitAsTerminal(view) if args.turn_limit_terminal else view


def episode_stats(infos: list[dict], prefix: str = "") -> dict:
    """Mean EM, answer rate, truncation rate and searches per episode, from each episode's last ``info``."""
    n = max(1, len(infos))
    return {f"{prefix}em": sum(i.get("em", 0.0) for i in infos) / n,
            f"{prefix}answer_rate": sum(i["action_type"] == "answer" for i in infos) / n,
            f"{prefix}trunc_rate": sum(i["action_type"] != "answer" for i in infos) / n,
            f"{prefix}searches": sum(i["n_searches"] for i in infos) / n}


def evaluate(model, env: NumericSearchView) -> dict:
    """``episode_stats`` of the greedy policy over every question of ``env`` once."""
    finals = []
    for i in range(len(env.unwrapped.questions)):
        obs, _ = env.reset(options={"index": i})
        done, info = False, {}
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, _, terminated, truncated, info = env.step(int(action))
            done = terminated or truncated
        finals.append(info)
    return episode_stats(finals)


# ------------------------------------------------------------------------------------------ training


def train_one(args: Args, arm: str, seed: int, scorer, train_qs, heldout_qs) -> tuple[list[dict], dict]:
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback

    seed_everything(seed)
    env = make_env(args, train_qs, arm, scorer)
    eval_env = make_env(args, train_qs, "outcome")
    rows: list[dict] = []
    start = time.perf_counter()
    returns: list[float] = []
    episodes: list[dict] = []  # the last info of each training episode

    def log(step: int, model) -> None:
        recent = episodes[-100:]
        train = {k: v if recent else float("nan")
                 for k, v in episode_stats(recent, "train_").items() if k != "train_em"}
        rows.append({"arm": arm, "ig_weight": 0.0 if arm == "outcome" else args.ig_weight, "seed": seed,
                     "step": step, **evaluate(model, eval_env),
                     "train_return": float(np.mean(returns[-100:])) if returns else float("nan"),
                     **train, "wall_s": round(time.perf_counter() - start, 2)})
        r = rows[-1]
        print(f"  [{arm} seed {seed}] step {step:6d}  EM {r['em']:.3f}  answered {r['answer_rate']:.2f}  "
              f"searches {r['searches']:.2f}  return {r['train_return']:.3f}  train: answered "
              f"{r['train_answer_rate']:.2f} searches {r['train_searches']:.2f}  {r['wall_s']:.0f}s", flush=True)

    class EvalCallback(BaseCallback):
        def __init__(self):
            super().__init__()
            self.next_eval = args.eval_every
            self.episode_return = 0.0

        def _on_step(self) -> bool:
            self.episode_return += float(self.locals["rewards"][0])
            if self.locals["dones"][0]:
                returns.append(self.episode_return)
                episodes.append(self.locals["infos"][0])
                self.episode_return = 0.0
            if self.num_timesteps >= self.next_eval:
                log(self.num_timesteps, self.model)
                self.next_eval += args.eval_every
            return True

    model = PPO("MlpPolicy", env, n_steps=args.n_steps, batch_size=args.batch_size, n_epochs=args.n_epochs,
                learning_rate=args.learning_rate, ent_coef=args.ent_coef, gamma=args.gamma, gae_lambda=0.95,
                policy_kwargs={"net_arch": [64, 64]}, seed=seed, device="cpu", verbose=0)
    log(0, model)
    model.learn(total_timesteps=args.total_steps, callback=EvalCallback())
    if not rows or rows[-1]["step"] != model.num_timesteps:
        log(model.num_timesteps, model)
    heldout = evaluate(model, make_env(args, heldout_qs, "outcome"))
    last = rows[-1]
    return rows, {"arm": arm, "seed": seed, "final_em": last["em"], "heldout_em": heldout["em"],
                  "final_answer_rate": last["answer_rate"], "final_trunc_rate": last["trunc_rate"],
                  "final_searches": last["searches"], "wall_s": time.perf_counter() - start}


def steps_to(rows: list[dict], threshold: float) -> int | None:
    """The first evaluated env step with EM >= threshold (None: never)."""
    return next((r["step"] for r in rows if r["em"] >= threshold), None)


# ------------------------------------------------------------------------------------------ outputs


def plot(rows: list[dict], args: Args, arms: list[str], path: Path) -> None:
    """Greedy EM, answer rate and searches per episode against env steps per arm: the mean over seeds, and the
    min-max band."""
    labels = {"outcome": "outcome", "outcome+ig": f"outcome + {args.ig_weight}·clip(IG, ±{args.ig_clip})",
              "outcome+ig-potential": f"outcome + {args.ig_weight}·(γΦ(s') − Φ(s))"}

    def curves(key: str) -> list[Curve]:
        out = []
        for arm in arms:
            by_step: dict[int, list[float]] = {}
            for r in rows:
                if r["arm"] == arm:
                    by_step.setdefault(r["step"], []).append(r[key])
            steps = sorted(by_step)
            values = [np.asarray(by_step[s]) for s in steps]
            out.append(Curve(f"{labels[arm]} (mean)", steps, [v.mean() for v in values], low=[v.min() for v in values],
                             high=[v.max() for v in values], band_label=f"{arm} (min-max, {args.seeds} seeds)"))
        return out

    title = f"PPO on {args.hops}-hop questions, scorer={args.scorer}, IG baseline={args.ig_baseline}"
    panels = [
        Panel(title, curves("em"), xlabel="env steps", ylabel=f"greedy EM ({args.n_questions} training questions)",
              ylim=(-0.02, 1.02), hline=args.em_threshold, legend_loc="upper left"),
        Panel("episodes ended by an answer (greedy)", curves("answer_rate"), xlabel="env steps",
              ylabel="answer rate (1 - truncation rate)", ylim=(-0.02, 1.02), legend_loc="lower right"),
        Panel("searches per episode (greedy)", curves("searches"), xlabel="env steps", ylabel="searches",
              ylim=(-0.05, args.max_turns + 0.05), legend_loc="upper left"),
    ]
    plot_panels(path, panels, panel_size=(6.4, 4.2), dpi=120, fontsize=9)


def results_table(args: Args, arms: list[str], rows: list[dict], finals: list[dict]) -> list[dict]:
    """Per arm: env steps to EM >= ``em_threshold`` per seed, final and held-out EM, answer rate, truncation rate,
    searches and wall time; printed as a Markdown table."""
    table = []
    print(f"\n| arm | steps to EM >= {args.em_threshold} (per seed) | final EM, mean (min-max) | held-out EM, mean |"
          f" answer rate | truncation rate | searches/episode | wall s |\n|---|---|---|---|---|---|---|---|")
    for arm in arms:
        runs = [f for f in finals if f["arm"] == arm]
        reach = [steps_to([r for r in rows if r["arm"] == arm and r["seed"] == f["seed"]], args.em_threshold)
                 for f in runs]
        em = np.array([f["final_em"] for f in runs])
        held = np.array([f["heldout_em"] for f in runs])
        wall = sum(f["wall_s"] for f in runs)
        behaviour = {k: [f[f"final_{k}"] for f in runs] for k in ("answer_rate", "trunc_rate", "searches")}
        table.append({"arm": arm, "steps_to_threshold": reach, "final_em": em.tolist(), "heldout_em": held.tolist(),
                      **{f"final_{k}": v for k, v in behaviour.items()}, "wall_s": wall})
        reach_s = ", ".join("never" if s is None else str(s) for s in reach)
        print(f"| {arm} | {reach_s} | {em.mean():.3f} ({em.min():.3f}-{em.max():.3f}) | {held.mean():.3f} | "
              + " | ".join(f"{np.mean(v):.2f}" for v in behaviour.values()) + f" | {wall:.0f} |")
    return table


def scoring_stats(scorer: CountingScorer) -> dict:
    """What the scorer was asked for and how it answered: pairs requested, repeats of pairs asked for before in
    this process, pairs served by the on-disk cache, pairs the model scored and the seconds per such pair."""
    disk = getattr(scorer.inner, "disk_cache", None)
    disk_hits = disk.hits if disk is not None else 0
    scored = disk.misses if disk is not None else scorer.requests - scorer.hits
    return {"scoring_s": scorer.seconds, "ig_requests": scorer.requests, "ig_cache_hits": scorer.hits,
            "ig_cache_hit_rate": scorer.hits / scorer.requests if scorer.requests else float("nan"),
            "ig_disk_hits": disk_hits, "ig_pairs_scored": scored,
            "seconds_per_scored_pair": scorer.seconds / scored if scored else float("nan")}


def _reached(row: dict) -> list[int]:
    return [s for s in row["steps_to_threshold"] if s is not None]


def _ratio(a: list[float], b: list[float]) -> str:
    """``mean(a) / mean(b)`` as ``"1.23x"``, or ``"n/a"`` when either is empty or b's mean is 0."""
    if not a or not b or np.mean(b) == 0:
        return "n/a"
    return f"{np.mean(a) / np.mean(b):.2f}x"


# ------------------------------------------------------------------------------------------ main


def main(argv=None) -> dict:
    args = parse_args(Args, argv, description=__doc__.split("\n\n")[0])
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if not arms or any(a not in ARMS for a in arms):
        raise SystemExit(f"--arms must name some of {', '.join(ARMS)}, not {args.arms!r}")
    torch.set_num_threads(args.torch_threads)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_qs, heldout_qs = questions(args)
    t0 = time.perf_counter()
    scorer = make_scorer(args)
    load_s = time.perf_counter() - t0
    print(f"{len(train_qs)} training / {len(heldout_qs)} held-out {args.hops}-hop questions; scorer "
          f"{args.scorer} loaded in {load_s:.1f}s", flush=True)

    rows, finals = [], []
    for arm in arms:
        for seed in range(args.seeds):
            run_rows, final = train_one(args, arm, seed, scorer, train_qs, heldout_qs)
            rows += run_rows
            finals.append(final)
            write_csv(out / "curves.csv", rows)  # after every run, so an interrupted ablation keeps its curves
    wall_s = time.perf_counter() - t0
    plot(rows, args, arms, out / "curves.png")

    table = results_table(args, arms, rows, finals)
    stats = scoring_stats(scorer)
    summary = {"args": dataclasses.asdict(args), "table": table, "wall_s": wall_s, "scorer_load_s": load_s, **stats}
    print(f"\nwall time {wall_s:.0f}s (scorer load {load_s:.0f}s, scoring {scorer.seconds:.0f}s); "
          f"IG pairs requested {stats['ig_requests']}, in-process repeats {stats['ig_cache_hits']} "
          f"({stats['ig_cache_hit_rate']:.1%}), served from disk {stats['ig_disk_hits']}, scored by the model "
          f"{stats['ig_pairs_scored']} ({stats['seconds_per_scored_pair']:.3f} s each)")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    outcome = next((row for row in table if row["arm"] == "outcome"), None)
    for row in table if outcome else []:
        if row is not outcome:
            print(f"{row['arm']} vs outcome: final EM {_ratio(row['final_em'], outcome['final_em'])}, "
                  f"mean steps to EM >= {args.em_threshold} {_ratio(_reached(row), _reached(outcome))} "
                  f"(seeds that got there: {len(_reached(row))}/{args.seeds} vs {len(_reached(outcome))}/{args.seeds})")
    return summary


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
