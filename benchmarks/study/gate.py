"""The IG testbed's gate: can the warm-started policy's own IG carry credit the outcome does not?

Measured on GRPO's questions (never the warm start's), with the study's env and the policy scoring IG on its own
input, as ``examples/grpo_ig.py`` does:

1. **Rollouts**: ``questions x group`` sampled episodes (temperature 1) in a ``SearchQAVectorEnv`` with shared draws
   (draw seed ``draw_seed``).
2. **Replays**: every episode's turns played again in a single env with the same shared draw seed (which gives the
   rollout's IG again, to fp32 noise: ``replay_match`` within 1e-6, ``replay_max_difference``) and with ``draws``
   other draw seeds: the **draw noise** of a search's credit (pooled sd over draw seeds, same query, same turn) for
   step IG and for sub-answer credit.
3. **Figures**: the **within-group spread** at a turn (pooled sd of the credit over a group's rollouts at one turn
   index, shared draws); the share of **all-failed groups** (no rollout right) in which two rollouts' credit at one
   turn differs by more than ``2.77 x`` the draw noise (1.96 sqrt 2: the 95% bound of a difference that the draws
   alone make); **validity** of the policy's own credit (paired, same draw seed: a search for the chain's next gold
   title vs an unrelated title), on **bridge hops** (the first search) and **answer hops** (the last search, after
   gold searches for the earlier hops); and the share of ``|A_tok|`` (summed over policy tokens) from IG, from the
   outcome and from the format penalty, under GRPO's std scaling and Dr. GRPO's centring, with the study's IG
   settings (``ig_weight``, ``ig_norm="turn"``, floor ``TURN_IG_FLOOR``, clip 1). The outcome's part is the group
   advantage of EM alone; the format penalty's, the rest of the reward's advantage.

Pass/fail thresholds, per IG arm, fixed before any gate was run (:data:`THRESHOLDS`); an arm passes when all hold:

- ``all_failed_differ`` >= 0.25: in at least a quarter of all-failed groups the credit tells rollouts apart;
- ``spread_over_noise`` >= 1.0: the within-group spread at a turn is at least the draw noise;
- validity: step IG (arm ``ig``) wins >= 0.75 of answer-hop pairs; sub-answer credit (arm ``subanswer``) wins
  >= 0.65 of bridge-hop pairs and >= 0.75 of answer-hop pairs;
- ``ig_share`` >= 0.10 of ``|A_tok|`` under GRPO's std scaling, and no less than the format penalty's share.

The study runs when at least one IG arm passes.
"""

from __future__ import annotations

from contextlib import nullcontext
from functools import partial

import numpy as np

from search_env import IGConfig, QADataset, SearchQAEnv, SearchQAVectorEnv, TransformersScorer
from search_env.agents.policy import chat_prompt
from search_env.dialects import search_block
from search_env.retrieval import make_retriever
from search_env.training.credit import TURN_IG_FLOOR, assign_credit, group_advantages
from search_env.training.rollout import decode, generation_kwargs, rollout
from search_env.training.run import Timer

DIFFER = 1.96 * np.sqrt(2)  # a difference beyond DIFFER x the draw sd is not the draws' doing (95%)
THRESHOLDS = {"all_failed_differ": 0.25, "spread_over_noise": 1.0, "answer_hop": 0.75, "bridge_hop": 0.65,
              "ig_share": 0.10}
CREDITS = {"ig": "step", "subanswer": "sub-answer"}  # IG arm -> the credit it trains on


def make_env(questions, corpus, retriever, scorer, render, env: dict) -> SearchQAEnv:
    """A single env with shared draws that reports step IG and sub-answer credit."""
    return SearchQAEnv(questions=questions, corpus=corpus, retriever=retriever, scorer=scorer, topk=env["topk"],
                       max_turns=env["max_turns"], dialect="search-r1",
                       ig=IGConfig(n_random=3, render_prefix=render, credit="sub-answer", shared_draws=True))


def play(env: SearchQAEnv, question_id: str, actions: list[str], draw_seed: int) -> dict:
    """``{"step": {turn: IG}, "sub-answer": {turn: credit}}`` of the searches of ``actions`` played from a reset
    with ``draw_seed``."""
    env.reset(seed=draw_seed, options={"question_id": question_id, "draw_seed": draw_seed})
    step_ig, search_turns, credit = {}, [], []
    for turn, action in enumerate(actions):
        _, _, terminated, truncated, info = env.step(action)
        if info["action_type"] == "search":
            search_turns.append(turn)
            step_ig[turn] = info["ig"]
        if terminated or truncated:
            credit = info.get("search_credit", [])
            break
    return {"step": step_ig, "sub-answer": dict(zip(search_turns, credit))}


def pooled_sd(groups: list[list[float]]) -> float:
    """sqrt of the mean within-list variance (ddof 1) over lists of two or more values; NaN without any."""
    variances = [np.var(g, ddof=1) for g in groups if len(g) > 1]
    return float(np.sqrt(np.mean(variances))) if variances else float("nan")


def validity(env: SearchQAEnv, items, corpus, rng: np.random.Generator, draw_seed: int) -> dict:
    """Paired win rates of a gold vs an unrelated search on bridge hops (the first search) and answer hops (the last,
    after gold searches for the hops before), for step IG and sub-answer credit."""
    wins = {(kind, hop): [] for kind in ("step", "sub-answer") for hop in ("bridge_hop", "answer_hop")}
    for item in items:
        titles = item.metadata["supporting_titles"]
        other = next(t for t in (corpus[int(rng.integers(len(corpus)))].title for _ in range(100)) if t not in titles)
        for hop, before, gold in (("bridge_hop", [], titles[0]), ("answer_hop", titles[:-1], titles[-1])):
            turn = len(before)
            pair = [play(env, item.id, [search_block(t) for t in [*before, last]] + ["<answer> x </answer>"],
                         draw_seed) for last in (gold, other)]
            for kind in ("step", "sub-answer"):
                a, b = (p[kind].get(turn) for p in pair)
                if a is not None and b is not None:
                    wins[(kind, hop)].append(1.0 if a > b else 0.5 if a == b else 0.0)
    return {f"{kind}/{hop}": {"win_rate": float(np.mean(w)) if w else float("nan"), "n": len(w)}
            for (kind, hop), w in wins.items()}


def advantage_shares(trajectories, episodes, credit: dict, ig_weight: float, scale: bool) -> dict:
    """Shares of ``|A_tok|`` over policy tokens from IG, the outcome (EM) and the format penalty (the rest of the
    reward), with ``credit[i]`` (turn -> value) as each rollout's IG, normalised per turn."""
    for traj, values in zip(trajectories, credit):
        traj.step_ig = [values.get(t) for t in range(len(traj.step_ig))]
    batch = assign_credit(trajectories, ig_weight=ig_weight, ig_norm="turn", ig_floor=TURN_IG_FLOOR, scale=scale)
    groups = [t.group for t in trajectories]
    outcome = group_advantages(np.array([e["em"] for e in episodes]), groups, scale=scale)
    tokens = batch.loss_mask.sum(1)
    parts = {"ig": float(np.abs(batch.token_advantages - batch.advantages[:, None])[batch.loss_mask].sum()),
             "outcome": float((np.abs(outcome) * tokens).sum()),
             "format": float((np.abs(batch.advantages - outcome) * tokens).sum())}
    total = sum(parts.values())
    return {f"{k}_share": v / total if total else 0.0 for k, v in parts.items()}


def run_gate(model, tokenizer, questions: QADataset, corpus, *, group_size: int, draws: int,
             validity_questions: QADataset,
             ig_weight: float, env: dict, draw_seed: int = 1) -> dict:
    """The gate's figures and verdicts (see the module docstring): rollouts on ``questions``, validity on
    ``validity_questions`` (both GRPO's)."""
    render = partial(chat_prompt, tokenizer, dialect="search-r1", few_shot=False)
    scorer, retriever = TransformersScorer(model, tokenizer), make_retriever("bm25", corpus)
    items = list(questions)
    venv = SearchQAVectorEnv(len(items) * group_size, questions=questions, corpus=corpus, retriever=retriever,
                             scorer=scorer, topk=env["topk"], max_turns=env["max_turns"], autoreset_mode="Disabled",
                             ig=IGConfig(n_random=3, render_prefix=render, shared_draws=True))
    sample, _ = generation_kwargs(model, tokenizer, env["max_new_tokens"], 1.0)
    model.eval()
    trajectories, episodes = rollout(model, tokenizer, venv, items, group_size=group_size, seed=draw_seed,
                                     gen_kwargs=sample, prompt_text=render, timer=Timer(), amp=nullcontext,
                                     draw_seed=draw_seed)
    union = {q.id: q for q in [*items, *validity_questions]}
    single = make_env(QADataset(list(union.values())), corpus, retriever, scorer, render, env)
    shared, noise, differences = [], {"step": [], "sub-answer": []}, []
    for traj in trajectories:
        actions = [decode(tokenizer, s.ids) for s in traj.segments if s.from_policy]
        plays = [play(single, traj.group, actions, draw_seed + k) for k in range(draws + 1)]
        shared.append(plays[0])
        again = [(plays[0]["step"].get(t), g) for t, g in enumerate(traj.step_ig) if g is not None]
        differences += [abs(a - g) if a is not None else float("inf") for a, g in again]
        for kind in noise:
            noise[kind] += [[p[kind][t] for p in plays[1:] if p[kind].get(t) is not None] for t in plays[0][kind]]
    em = np.reshape([e["em"] for e in episodes], (len(items), group_size))
    out = {"questions": len(items), "group_size": group_size, "draws": draws,
           "replay_match": float(np.mean(np.less(differences, 1e-6))) if differences else float("nan"),
           "replay_max_difference": float(np.max(differences)) if differences else float("nan"),
           "train_em": float(em.mean()), "all_failed_groups": float((em.max(1) == 0).mean()),
           "searches": float(np.mean([e["searches"] for e in episodes])), "arms": {}}
    rng = np.random.default_rng(draw_seed)
    valid = validity(single, list(validity_questions), corpus, rng, draw_seed)
    for arm, kind in CREDITS.items():
        sd_draw = pooled_sd(noise[kind])
        rollouts = [shared[q * group_size : (q + 1) * group_size] for q in range(len(items))]
        by_turn = [[[v for v in (r[kind].get(t) for r in group) if v is not None] for t in range(env["max_turns"])]
                   for group in rollouts]
        spread = pooled_sd([turn for group in by_turn for turn in group])
        failed = [group for q, group in enumerate(by_turn) if em[q].max() == 0 and any(len(t) > 1 for t in group)]
        differ = [any(len(t) > 1 and max(t) - min(t) > DIFFER * sd_draw for t in group) for group in failed]
        shares = {name: advantage_shares(trajectories, episodes, [s[kind] for s in shared], ig_weight, scale)
                  for name, scale in (("grpo_std", True), ("dr_grpo", False))}
        ratio = spread / sd_draw if sd_draw > 0 else float("inf") if sd_draw == 0 else float("nan")
        figures = {"draw_noise_sd": sd_draw, "within_group_sd": spread, "spread_over_noise": ratio,
                   "all_failed_scored_groups": len(failed),
                   "all_failed_differ": float(np.mean(differ)) if differ else 0.0,
                   "bridge_hop": valid[f"{kind}/bridge_hop"], "answer_hop": valid[f"{kind}/answer_hop"],
                   "advantage_shares": shares}
        figures["checks"] = checks(arm, figures)
        figures["passed"] = all(figures["checks"].values())
        out["arms"][arm] = figures
    out["passed"] = any(a["passed"] for a in out["arms"].values())
    return out


def checks(arm: str, f: dict) -> dict:
    """Each threshold of :data:`THRESHOLDS` that applies to ``arm``: met or not."""
    share = f["advantage_shares"]["grpo_std"]
    out = {"all_failed_differ": f["all_failed_differ"] >= THRESHOLDS["all_failed_differ"],
           "spread_over_noise": f["spread_over_noise"] >= THRESHOLDS["spread_over_noise"],
           "answer_hop": f["answer_hop"]["win_rate"] >= THRESHOLDS["answer_hop"],
           "ig_share": share["ig_share"] >= THRESHOLDS["ig_share"] and share["ig_share"] >= share["format_share"]}
    if arm == "subanswer":
        out["bridge_hop"] = f["bridge_hop"]["win_rate"] >= THRESHOLDS["bridge_hop"]
    return out


def replay_max(gate: dict) -> str:
    """The replays' largest difference from the rollout's IG: fp32 noise (a replay scores a context in another batch,
    or alone where the cache evicted it), unless it is large or a search went missing (inf)."""
    value = gate.get("replay_max_difference")
    return "" if value is None else f" (largest difference {value:.2g} nats/token)"


def describe(gate: dict) -> list[str]:
    """The gate as table lines (markdown) and a verdict line."""
    lines = [f"gate: {gate['questions']} GRPO questions x {gate['group_size']} rollouts, {gate['draws']} other draw "
             f"seeds; train EM {gate['train_em']:.3f}, all-failed groups {gate['all_failed_groups']:.2f}, searches/ep "
             f"{gate['searches']:.2f}; replay reproduces the rollout's IG to 1e-6 in {gate['replay_match']:.2f} of "
             f"searches{replay_max(gate)}",
             "", "| figure (threshold) | ig (step IG) | subanswer (sub-answer credit) |", "|---|---|---|"]
    arms = [gate["arms"][a] for a in ("ig", "subanswer")]

    def row(name, value):
        lines.append(f"| {name} | " + " | ".join(value(a) for a in arms) + " |")

    mark = lambda a, k: "" if k not in a["checks"] else (" ✓" if a["checks"][k] else " ✗")  # noqa: E731
    row("draw noise sd (nats/token)", lambda a: f"{a['draw_noise_sd']:.3f}")
    row("within-group sd at a turn", lambda a: f"{a['within_group_sd']:.3f}")
    row(f"spread / noise (>= {THRESHOLDS['spread_over_noise']:g})",
        lambda a: f"{a['spread_over_noise']:.2f}{mark(a, 'spread_over_noise')}")
    row(f"all-failed groups told apart (>= {THRESHOLDS['all_failed_differ']:g})",
        lambda a: f"{a['all_failed_differ']:.2f} of {a['all_failed_scored_groups']}{mark(a, 'all_failed_differ')}")
    for hop in ("bridge_hop", "answer_hop"):
        row(f"validity, {hop.replace('_', ' ')} (>= {THRESHOLDS[hop]:g})",
            lambda a, hop=hop: f"{a[hop]['win_rate']:.2f} (n={a[hop]['n']}){mark(a, hop)}")
    for norm in ("grpo_std", "dr_grpo"):
        row(f"share of abs(A_tok): IG / outcome / format, {norm}",
            lambda a, norm=norm: "{ig_share:.2f} / {outcome_share:.2f} / {format_share:.2f}".format(
                **a["advantage_shares"][norm]) + (mark(a, "ig_share") if norm == "grpo_std" else ""))
    row("passed", lambda a: "yes" if a["passed"] else "no")
    verdict = "PASSED" if gate["passed"] else "FAILED"
    return lines + ["", f"gate {verdict}: " + ", ".join(f"{arm} {'passes' if a['passed'] else 'fails'}"
                                                        for arm, a in gate["arms"].items())]
