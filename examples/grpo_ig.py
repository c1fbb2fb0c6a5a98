"""GRPO for a search agent, with information-gain (IG) credit on each search query.

One file, read top to bottom. Each training step:

1. **Rollout**: ``questions_per_step`` training questions, ``group_size`` sampled episodes each, played in a
   ``SearchQAVectorEnv``. Every turn is generated until ``</search>`` or ``</answer>``; the env retrieves
   passages and scores each search's IG with the policy itself (``TransformersScorer(policy, tokenizer)``).
   Token ids are kept exactly as generated (policy turns) and as tokenised once (env text): the context of the
   next turn is their concatenation, never a re-tokenised transcript.
2. **Credit** (``search_env.credit``): GRPO advantages from the episode rewards, plus
   ``ig_weight · clip(IG_t, −c, c)`` on the tokens of search t's ``<search>…</search>``; env tokens are
   masked out of the loss. ``--ig-weight 0`` is plain GRPO.
3. **Update**: PPO-clip token-mean loss with a k3 KL penalty to a frozen copy of the initial model.

Every ``--eval-every`` steps: greedy exact match on a held-out split; every ``--save-every`` steps a
checkpoint (model, optimizer, RNG states, step, data position) that ``--resume`` continues from. Logs go to
TensorBoard and ``metrics.csv`` in the run folder, with the seconds spent per step on generation, retrieval,
IG scoring and the update; ``curves.png`` is drawn at the end.

    python examples/grpo_ig.py                                   # Qwen2.5-0.5B-Instruct (downloads it)
    python examples/grpo_ig.py --model bundled --total-steps 20  # offline: the bundled SmolLM2-135M-Instruct
    python examples/grpo_ig.py --model bundled --ig-weight 0     # the plain GRPO baseline
    python examples/grpo_ig.py --model tiny-random --total-steps 2 --questions-per-step 2 --group-size 2 \\
        --max-turns 2 --max-new-tokens 16 --eval-every 2 --eval-questions 4   # a smoke test, seconds on a CPU

Needs ``pip install "search_env[examples]"`` (matplotlib, tensorboard).
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import json
import os
import random
import shutil
import time
from collections import defaultdict
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import transformers

from search_env import IGConfig, Search, load_corpus, load_questions, parse_action
from search_env.credit import Trajectory, assign_credit, token_span
from search_env.data.qa import QADataset
from search_env.policy import STOP_STRINGS, LMPolicy
from search_env.retrieval import make_retriever
from search_env.vector import SearchQAVectorEnv


def arg(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass
class Args:
    # run
    exp_name: str = arg("grpo_ig", "experiment name, the first part of the run name")
    run_name: str | None = arg(None, "run folder name under --output-dir (default: exp, model, IG weight and seed)")
    output_dir: str = arg("runs", "where run folders go")
    seed: int = arg(1, "seed of sampling, data order and random initialisation")
    resume: bool = arg(False, "continue from the run folder's last checkpoint")
    # model
    model: str = arg("Qwen/Qwen2.5-0.5B-Instruct", "a Hugging Face causal LM, or bundled | tiny-random | random-0.5b")
    device: str = arg("auto", "cuda, cpu or auto")
    precision: str = arg("auto", "fp32 | bf16-mixed (fp32 weights, bf16 compute) | bf16; auto: bf16-mixed on GPU, fp32 on CPU")
    gradient_checkpointing: bool = arg(True, "recompute activations in the backward pass (GPU only)")
    # data and env
    questions: str | None = arg(None, "FlashRAG QA JSONL (default: the built-in world's questions)")
    corpus: str | None = arg(None, "FlashRAG corpus JSONL (default: the built-in world's corpus)")
    world_seed: int = arg(0, "seed of the built-in world")
    eval_size: int = arg(200, "questions held out for evaluation (a fixed split, the same for every seed)")
    template: str = arg("search-r1", "tag dialect: search-r1 or autorefine")
    topk: int = arg(3, "passages per search")
    max_turns: int = arg(4, "turns per episode")
    few_shot: bool = arg(True, "show a worked example in the prompt (helps small models)")
    max_new_tokens: int = arg(128, "tokens per generated turn")
    temperature: float = arg(1.0, "sampling temperature of rollouts (evaluation is greedy)")
    # GRPO
    total_steps: int = arg(100, "training steps")
    questions_per_step: int = arg(8, "questions per step")
    group_size: int = arg(5, "sampled episodes per question (G)")
    learning_rate: float = arg(1e-6, "AdamW learning rate")
    update_epochs: int = arg(1, "passes over each batch (more than 1 makes the PPO ratio and clipping matter)")
    micro_batch_size: int = arg(4, "trajectories per forward/backward pass (gradient accumulation)")
    clip_eps: float = arg(0.2, "PPO clip range")
    kl_coef: float = arg(0.001, "weight of the k3 KL penalty to the initial model (0: no reference model)")
    max_grad_norm: float = arg(1.0, "gradient clipping")
    scale_rewards: bool = arg(True, "divide group-centred rewards by the group std (GRPO); off: Dr. GRPO")
    # IG credit
    ig_weight: float = arg(0.3, "lambda: IG added to the advantages of search-query tokens (0: plain GRPO)")
    ig_clip: float = arg(1.0, "clip IG to [-c, c] nats/token")
    ig_norm: str = arg("none", "none | group: z-score IG over each question's steps first")
    ig_spread: str = arg("query", "query | turn: IG on the <search> tokens only, or on the whole turn")
    ig_n_random: int = arg(3, "random-passage counterfactuals per search step")
    ig_pool: str = arg("corpus", "corpus | batch: where counterfactual passages come from")
    log_ig: bool = arg(False, "score IG even when --ig-weight is 0 (to log it; costs the IG time)")
    # evaluation, checkpoints, logs
    eval_every: int = arg(10, "evaluate every N steps (and at the last step)")
    eval_questions: int = arg(64, "held-out questions per evaluation")
    eval_batch_size: int = arg(32, "episodes generated together during evaluation")
    save_every: int | None = arg(None, "checkpoint every N steps (default: --eval-every) and at the last step")
    keep_checkpoints: int = arg(2, "checkpoints kept in the run folder")
    tensorboard: bool = arg(True, "write TensorBoard logs")


def parse_args(argv=None) -> Args:
    """An ``Args`` from the command line: ``--field-name value``; ``--flag`` / ``--no-flag`` for booleans."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for f in dataclasses.fields(Args):
        name = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata['help']} (default: {f.default})"
        if f.type in (bool, "bool"):
            parser.add_argument(name, action=argparse.BooleanOptionalAction, default=f.default, help=help_text)
        else:
            kind = {"int": int, "float": float}.get(str(f.type).split(" |")[0], str)
            parser.add_argument(name, type=kind, default=f.default, help=help_text)
    return Args(**vars(parser.parse_args(argv)))


# ------------------------------------------------------------------------------------------ models


def bundled_tokenizer():
    """The bundled SmolLM2 tokenizer alone (no model load): for the randomly initialised models."""
    from transformers import AutoTokenizer

    from search_env.scorers import bundled_model_dir

    return AutoTokenizer.from_pretrained(bundled_model_dir())


def build_model(name: str, seed: int):
    """``(model, tokenizer)``: a hub model, ``bundled`` (SmolLM2-135M-Instruct), or a random model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaConfig, Qwen2Config

    if name == "bundled":
        from search_env.scorers import load_bundled_model

        model, tokenizer = load_bundled_model()
    elif name in ("tiny-random", "random-0.5b"):
        tokenizer = bundled_tokenizer()
        ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        if name == "tiny-random":  # 3M parameters, for smoke tests
            config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
                                 tie_word_embeddings=True, **ids)
        else:  # Qwen2.5-0.5B's transformer with the bundled 49k vocabulary (0.40B parameters), for GPU timings
            config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                                 num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                                 rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=True, **ids)
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    else:
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # A clean generation config: the model's own defaults (top-k, top-p, repetition penalty) would make the
    # sampled distribution differ from the one the loss computes.
    eos = model.generation_config.eos_token_id
    eos_ids = sorted({tokenizer.eos_token_id, *([eos] if isinstance(eos, int) else eos or [])} - {None})
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=eos_ids,
                                               pad_token_id=tokenizer.pad_token_id)
    return model, tokenizer


# -------------------------------------------------------------------------------------------- data


def load_data(args: Args):
    """``(train questions, held-out questions, corpus)``; the held-out split is fixed by a seed of 0."""
    if args.questions is None:
        from search_env.data.synthetic import build_world

        world = build_world(seed=args.world_seed)
        questions, corpus = world.questions, world.corpus
    else:
        if args.corpus is None:
            raise SystemExit("--questions needs --corpus")
        questions, corpus = load_questions(args.questions), load_corpus(args.corpus)
    order = np.random.default_rng(0).permutation(len(questions))
    n_eval = min(args.eval_size, len(questions) // 2)
    held_out = QADataset([questions[int(i)] for i in order[:n_eval]], name=f"{questions.name}:held-out")
    train = QADataset([questions[int(i)] for i in order[n_eval:]], name=f"{questions.name}:train")
    return train, held_out, corpus


def question_at(position: int, n: int, seed: int) -> int:
    """The training stream: epoch after epoch, each a permutation drawn from (seed, epoch)."""
    epoch, k = divmod(position, n)
    return int(np.random.default_rng([seed, epoch]).permutation(n)[k])


# ------------------------------------------------------------------------------------------ timing


class Timer:
    """Seconds per phase, summed over a step; synchronises the GPU so that time lands where it is spent."""

    PHASES = ("generate", "retrieve", "ig", "logprob", "update")  # always logged, 0 when unused

    def __init__(self, device: torch.device):
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self.reset()

    def reset(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float, dict.fromkeys(self.PHASES, 0.0))

    @contextmanager
    def __call__(self, phase: str):
        self.sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self.sync()
            self.seconds[phase] += time.perf_counter() - start


class TimedRetriever:
    """A retriever that adds its seconds to ``timer["retrieve"]``."""

    def __init__(self, inner, timer: Timer):
        self.inner, self.timer = inner, timer

    def search(self, query, k):
        with self.timer("retrieve"):
            return self.inner.search(query, k)

    def batch_search(self, queries, k):
        with self.timer("retrieve"):
            return self.inner.batch_search(queries, k)


class TimedScorer:
    """An IG scorer that adds its seconds to ``timer["ig"]``."""

    def __init__(self, inner, timer: Timer):
        self.inner, self.timer = inner, timer

    def score(self, contexts, answers):
        with self.timer("ig"):
            return self.inner.score(contexts, answers)


# ----------------------------------------------------------------------------------------- rollout


def decode(tokenizer, ids) -> str:
    return tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)


def cut_turn(tokenizer, new_ids, eos_ids) -> tuple[list[int], str]:
    """The generated ids of one turn up to the token that completes ``</search>``/``</answer>`` (or up to
    an end-of-sequence token, or all of them), and their text. Padding after a stop is dropped; the ids
    themselves are never changed."""
    ids = list(new_ids)
    eos_at = [k for k, t in enumerate(ids) if t in eos_ids]
    if eos_at:
        ids = ids[: eos_at[0] + 1]
    text = decode(tokenizer, ids)
    ends = [text.find(s) + len(s) for s in STOP_STRINGS if s in text]
    if ends:
        last = token_span(lambda x: decode(tokenizer, x), ids, min(ends) - 1, min(ends))[1]
        ids = ids[:last]
        text = decode(tokenizer, ids)
    return ids, text


def query_span(tokenizer, ids, text) -> tuple[int, int] | None:
    """Token span of the turn's ``<search>…</search>`` (the one the env acted on), from the turn's own
    decoding: the env gets ``text``, the same characters, so its parse finds the same tag."""
    action = parse_action(text)
    if not isinstance(action, Search):
        return None
    start = action.text.rfind("<search>")
    return token_span(lambda x: decode(tokenizer, x), ids, start, len(action.text))


@torch.inference_mode()
def generate(model, tokenizer, contexts: list[list[int]], gen_kwargs: dict) -> list[list[int]]:
    """One turn for each context (token ids), left-padded into one batch; returns the new ids (uncut)."""
    width = max(len(c) for c in contexts)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(c)) + c for c in contexts], device=model.device)
    attention = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in contexts], device=model.device)
    out = model.generate(input_ids=input_ids, attention_mask=attention, **gen_kwargs)
    return out[:, width:].tolist()


def rollout(model, tokenizer, venv, items, group_size, seed, gen_kwargs, prompt_text, timer, amp):
    """Play ``group_size`` episodes of each question in ``items``; returns (trajectories, episode stats)."""
    eos_ids = set(model.generation_config.eos_token_id)
    trajectories: list[Trajectory] = []
    for q, item in enumerate(items):
        mask = np.zeros(venv.num_envs, dtype=bool)
        mask[q * group_size : (q + 1) * group_size] = True
        observations, _ = venv.reset(seed=seed, options={"reset_mask": mask, "question_id": item.id})
        prompt_ids = tokenizer(prompt_text(observations[q * group_size]), add_special_tokens=False)["input_ids"]
        trajectories += [Trajectory(prompt_ids, group=item.id) for _ in range(group_size)]
    episodes = [{"em": 0.0, "answered": 0.0, "searches": 0.0, "invalid": 0.0, "turns": 0.0} for _ in trajectories]

    active = list(range(len(trajectories)))
    while active:
        with timer("generate"), amp():
            new_ids = generate(model, tokenizer, [trajectories[i].input_ids for i in active], gen_kwargs)
        turns = {i: cut_turn(tokenizer, ids, eos_ids) for i, ids in zip(active, new_ids)}
        actions = [turns[i][1] if i in turns else None for i in range(venv.num_envs)]
        with amp():  # retrieval and IG scoring are timed inside, by the wrappers
            observations, rewards, terminated, truncated, infos = venv.step(actions)
        for i in active:
            ids, text = turns[i]
            kind = infos["action_type"][i]
            ig = infos["ig"][i] if infos.get("_ig", np.zeros(venv.num_envs, bool))[i] else None
            trajectories[i].add_policy(ids, query_span(tokenizer, ids, text) if kind == "search" else None, ig)
            trajectories[i].reward += float(rewards[i])
            stats = episodes[i]
            stats["turns"] += 1
            stats["searches"] += kind == "search"
            stats["invalid"] += kind == "invalid"
            if kind == "answer":
                stats["answered"], stats["em"] = 1.0, float(infos["em"][i])
            if not (terminated[i] or truncated[i]):
                trajectories[i].add_env(tokenizer(observations[i], add_special_tokens=False)["input_ids"])
        active = [i for i in active if not (terminated[i] or truncated[i])]
    return trajectories, episodes


def evaluate(model, tokenizer, venv, items, gen_kwargs, prompt_text, amp, device) -> dict:
    """Greedy exact match on ``items``, ``venv.num_envs`` episodes at a time."""
    episodes = []
    for start in range(0, len(items), venv.num_envs):
        chunk = items[start : start + venv.num_envs]
        _, stats = rollout(model, tokenizer, venv, chunk, 1, 0, gen_kwargs, prompt_text, Timer(device), amp)
        episodes += stats
    return {"eval/em": float(np.mean([e["em"] for e in episodes])),
            "eval/answered": float(np.mean([e["answered"] for e in episodes])),
            "eval/searches": float(np.mean([e["searches"] for e in episodes]))}


# -------------------------------------------------------------------------------------------- loss


def token_logprobs(model, input_ids, attention_mask, start: int) -> torch.Tensor:
    """``(B, L)``: log p(token j | tokens < j) for j >= ``start`` (0 before); logits only where needed."""
    width = input_ids.shape[1]
    out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, logits_to_keep=width - start + 1)
    logits = out.logits[:, :-1].float()  # positions start-1 … L-2 predict tokens start … L-1
    targets = input_ids[:, start:]
    picked = logits.gather(-1, targets[..., None])[..., 0] - torch.logsumexp(logits, dim=-1)
    return torch.nn.functional.pad(picked, (start, 0))


def micro_batches(batch: dict, size: int):
    """Slices of the batch, each cut to its own longest sequence, with the first position of any loss token."""
    for s in range(0, batch["input_ids"].shape[0], size):
        mb = {k: v[s : s + size] for k, v in batch.items() if v.dim() == 2}
        width = int(mb["attention_mask"].sum(1).max())
        mb = {k: v[:, :width] for k, v in mb.items()}
        mb["start"] = int(batch["prompt_lengths"][s : s + size].min())
        yield mb


def grpo_update(model, ref_model, optimizer, batch: dict, args: Args, timer: Timer, amp) -> dict:
    """PPO-clip token-mean loss plus ``kl_coef`` · k3 KL to the reference, over all policy tokens."""
    mbs = list(micro_batches(batch, args.micro_batch_size))
    n_tokens = batch["loss_mask"].sum().clamp(min=1)
    with timer("logprob"), torch.no_grad(), amp():
        ref = [token_logprobs(ref_model, mb["input_ids"], mb["attention_mask"], mb["start"]) for mb in mbs] if args.kl_coef else None
        # With one pass the old policy is the current one: its log-probs are the detached current ones.
        old = [token_logprobs(model, mb["input_ids"], mb["attention_mask"], mb["start"]) for mb in mbs] if args.update_epochs > 1 else None
    sums = defaultdict(float)
    with timer("update"):
        for _ in range(args.update_epochs):
            optimizer.zero_grad(set_to_none=True)
            for k, mb in enumerate(mbs):
                with amp():
                    logp = token_logprobs(model, mb["input_ids"], mb["attention_mask"], mb["start"])
                mask = mb["loss_mask"].float()
                ratio = torch.exp(logp - (old[k] if old else logp.detach()))
                adv = mb["token_advantages"]
                pg = -torch.min(ratio * adv, ratio.clamp(1 - args.clip_eps, 1 + args.clip_eps) * adv)
                kl = torch.zeros_like(pg)
                if ref:
                    log_ratio = (ref[k] - logp).clamp(-20, 20)
                    kl = torch.exp(log_ratio) - log_ratio - 1  # k3, "low_var_kl"
                loss = ((pg + args.kl_coef * kl) * mask).sum() / n_tokens
                loss.backward()
                sums["loss/total"] += loss.item()
                sums["loss/pg"] += ((pg * mask).sum() / n_tokens).item()
                sums["loss/kl"] += ((kl * mask).sum() / n_tokens).item()
                sums["loss/clipfrac"] += ((((ratio - 1).abs() > args.clip_eps).float() * mask).sum() / n_tokens).item()
            sums["loss/grad_norm"] += float(torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm))
            optimizer.step()
    return {k: v / args.update_epochs for k, v in sums.items()}


# ----------------------------------------------------------------------------------- checkpoints


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: Path, step: int, data_pos: int, model, tokenizer, optimizer, keep: int) -> Path:
    """``checkpoints/step_N``: the model (Hugging Face format), optimizer, RNG states, step, data position.
    Written to a temporary folder and renamed, so a checkpoint is complete or absent."""
    root = run_dir / "checkpoints"
    final, tmp = root / f"step_{step:06d}", root / f".step_{step:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    torch.save({"step": step, "data_pos": data_pos, "optimizer": optimizer.state_dict(), "rng": rng_state()},
               tmp / "trainer_state.pt")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in sorted(root.glob("step_*"))[:-keep]:
        shutil.rmtree(old)
    return final


def last_checkpoint(run_dir: Path) -> Path | None:
    done = sorted(p for p in (run_dir / "checkpoints").glob("step_*") if (p / "trainer_state.pt").exists())
    return done[-1] if done else None


# --------------------------------------------------------------------------------------- logging


def write_csv(path: Path, history: list[dict]) -> None:
    keys = ["step"] + sorted({k for row in history for k in row} - {"step"})
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)


def read_csv(path: Path, up_to_step: int) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]
    return [dict(row, step=int(row["step"])) for row in rows if row["step"] <= up_to_step]


def plot_curves(history: list[dict], path: Path, title: str) -> None:
    """Reward, EM, IG and seconds per phase against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(key):
        rows = [r for r in history if key in r]
        return [r["step"] for r in rows], [r[key] for r in rows]

    fig, axes = plt.subplots(1, 4, figsize=(20, 4))
    panels = [
        ("reward", [("train/reward", "train reward")]),
        ("exact match", [("train/em", "train EM"), ("eval/em", "held-out EM (greedy)")]),
        ("information gain (nats/token)", [("ig/mean", "mean IG per search"), ("ig/positive_ratio", "share of IG > 0")]),
    ]
    for ax, (name, keys) in zip(axes, panels):
        for key, label in keys:
            x, y = series(key)
            if x:
                ax.plot(x, y, marker="o" if len(x) < 30 else None, label=label)
        ax.set_title(name)
        ax.set_xlabel("step")
        if ax.lines:
            ax.legend()
        else:
            ax.text(0.5, 0.5, "nothing logged", ha="center", va="center", transform=ax.transAxes)
    phases = ["generate", "retrieve", "ig", "logprob", "update", "eval"]
    steps = [r["step"] for r in history]
    axes[3].stackplot(steps, *[[r.get(f"time/{p}", 0.0) for r in history] for p in phases], labels=phases)
    axes[3].set_title("seconds per step")
    axes[3].set_xlabel("step")
    axes[3].legend(loc="upper left")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def ig_metrics(batch, ig_weight: float) -> dict:
    """IG statistics over scored search steps, and the share of the IG term in |A_tok| on policy tokens."""
    ig = batch.step_ig[~np.isnan(batch.step_ig)]
    out = {"ig/n_steps": float(ig.size)}
    if ig.size:
        out.update({"ig/mean": float(ig.mean()), "ig/std": float(ig.std()), "ig/positive_ratio": float((ig > 0).mean())})
    mask = batch.loss_mask
    term = np.abs(batch.token_advantages - batch.advantages[:, None])[mask].sum()
    total = np.abs(batch.token_advantages)[mask].sum()
    out["ig/share_of_advantage"] = float(term / total) if total > 0 and ig_weight else 0.0
    return out


# ------------------------------------------------------------------------------------------- main


def main(argv=None) -> None:
    args = parse_args(argv)
    tag = args.model.rstrip("/").split("/")[-1]
    run_dir = Path(args.output_dir) / (args.run_name or f"{args.exp_name}__{tag}__ig{args.ig_weight:g}__s{args.seed}")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "args.json").write_text(json.dumps(dataclasses.asdict(args), indent=2))
    transformers.utils.logging.disable_progress_bar()
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)

    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    precision = args.precision if args.precision != "auto" else ("bf16-mixed" if device.type == "cuda" else "fp32")

    def amp():
        return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16-mixed" else nullcontext()

    # Model, frozen reference (the initial weights), optimizer; a resumed run loads the policy's weights.
    model, tokenizer = build_model(args.model, args.seed)
    ckpt = last_checkpoint(run_dir) if args.resume else None
    ref_model = copy.deepcopy(model).eval().requires_grad_(False) if args.kl_coef else None
    if ckpt is not None:
        from transformers import AutoModelForCausalLM

        generation_config = model.generation_config
        model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32)
        model.generation_config = generation_config
    if precision == "bf16":
        model.to(torch.bfloat16)
    if ref_model is not None and precision != "fp32":
        ref_model.to(torch.bfloat16)
    model.to(device)
    if ref_model is not None:
        ref_model.to(device)
    if device.type == "cuda" and args.gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.24 renamed it
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate)
    n_params = sum(p.numel() for p in model.parameters())

    # Data and envs. IG is scored with the policy itself; the wrappers time retrieval and scoring.
    train_set, eval_set, corpus = load_data(args)
    timer = Timer(device)  # seconds per phase of the current step
    retriever = make_retriever("bm25", corpus)
    score_ig = args.ig_weight != 0 or args.log_ig
    scorer = None
    if score_ig:
        from search_env.scorers import TransformersScorer

        scorer = TimedScorer(TransformersScorer(model, tokenizer), timer)
    env_kwargs = dict(corpus=corpus, topk=args.topk, max_turns=args.max_turns, template=args.template)
    venv = SearchQAVectorEnv(args.questions_per_step * args.group_size, autoreset_mode="Disabled", ig_pool=args.ig_pool,
                             questions=train_set, retriever=TimedRetriever(retriever, timer),
                             ig=IGConfig(n_random=args.ig_n_random) if score_ig else False, scorer=scorer, **env_kwargs)
    eval_venv = SearchQAVectorEnv(min(args.eval_batch_size, args.eval_questions), autoreset_mode="Disabled",
                                  questions=eval_set, retriever=retriever, ig=False, **env_kwargs)
    prompt_text = LMPolicy(model, tokenizer, template=args.template, few_shot=args.few_shot).prompt_text
    from transformers import GenerationConfig, StoppingCriteriaList, StopStringCriteria

    # Stop at </search> or </answer>; the criterion is built once (building it costs about a second).
    stop = StoppingCriteriaList([StopStringCriteria(tokenizer, list(STOP_STRINGS))])
    common = dict(max_new_tokens=args.max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                  eos_token_id=model.generation_config.eos_token_id)
    sample = dict(generation_config=GenerationConfig(do_sample=True, temperature=args.temperature, top_k=0, top_p=1.0,
                                                     **common), stopping_criteria=stop)
    greedy = dict(generation_config=GenerationConfig(do_sample=False, **common), stopping_criteria=stop)
    eval_items = list(eval_set)[: args.eval_questions]

    # Resume: step, data position and RNG states come from the checkpoint, logged rows up to its step are kept.
    start_step, data_pos = 1, 0
    if ckpt is not None:
        state = torch.load(ckpt / "trainer_state.pt", weights_only=False)
        optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        start_step, data_pos = state["step"] + 1, state["data_pos"]
        print(f"resumed from {ckpt} at step {start_step}")
    elif args.resume:
        print(f"no checkpoint in {run_dir}; starting from step 1")
    history = read_csv(run_dir / "metrics.csv", start_step - 1)
    writer = None
    if args.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tb"), purge_step=start_step if ckpt is not None else None)
        if ckpt is None:
            writer.add_text("args", "\n".join(f"{k}: {v}" for k, v in dataclasses.asdict(args).items()))
    print(f"{args.model}: {n_params / 1e6:.1f}M parameters on {device} ({precision}); {len(train_set)} training and "
          f"{len(eval_set)} held-out questions; {venv.num_envs} episodes a step; IG {'on' if score_ig else 'off'} "
          f"(weight {args.ig_weight:g}); run folder {run_dir}")

    save_every = args.save_every or args.eval_every
    for step in range(start_step, args.total_steps + 1):
        step_start = time.perf_counter()
        timer.reset()
        items = [train_set[question_at(data_pos + k, len(train_set), args.seed)] for k in range(args.questions_per_step)]
        data_pos += args.questions_per_step

        # 1. Rollout: G sampled episodes per question; IG comes back in info["ig"] of each search step.
        model.eval()
        trajectories, episodes = rollout(model, tokenizer, venv, items, args.group_size, 10_000 * step, sample,
                                         prompt_text, timer, amp)

        # 2. Credit: group-relative advantages, IG on the query tokens, env tokens masked out.
        batch = assign_credit(trajectories, pad_id=tokenizer.pad_token_id, ig_weight=args.ig_weight, ig_clip=args.ig_clip,
                              ig_norm=args.ig_norm, spread=args.ig_spread, scale=args.scale_rewards)

        # 3. Update.
        model.train()
        metrics = grpo_update(model, ref_model, optimizer, batch.to_torch(device), args, timer, amp)

        rewards = batch.rewards.reshape(-1, args.group_size)
        metrics.update({
            "train/reward": float(batch.rewards.mean()),
            "train/em": float(np.mean([e["em"] for e in episodes])),
            "train/answered": float(np.mean([e["answered"] for e in episodes])),
            "train/searches": float(np.mean([e["searches"] for e in episodes])),
            "train/invalid": float(np.mean([e["invalid"] for e in episodes])),
            "train/tokens": float(batch.attention_mask.sum(1).mean()),
            "train/policy_tokens": float(batch.loss_mask.sum(1).mean()),
            "train/flat_groups": float(np.mean(rewards.max(1) == rewards.min(1))),
            **ig_metrics(batch, args.ig_weight),
        })
        if step % args.eval_every == 0 or step == args.total_steps:
            model.eval()
            with timer("eval"):
                metrics.update(evaluate(model, tokenizer, eval_venv, eval_items, greedy, prompt_text, amp, device))
        if step % save_every == 0 or step == args.total_steps:
            with timer("checkpoint"):
                save_checkpoint(run_dir, step, data_pos, model, tokenizer, optimizer, args.keep_checkpoints)
        metrics.update({f"time/{k}": v for k, v in timer.seconds.items()})
        metrics["time/step"] = time.perf_counter() - step_start

        history.append({"step": step, **metrics})
        write_csv(run_dir / "metrics.csv", history)
        if writer is not None:
            for key, value in metrics.items():
                writer.add_scalar(key, value, step)
            writer.flush()
        t = timer.seconds
        print(f"step {step:>4} | reward {metrics['train/reward']:+.3f} em {metrics['train/em']:.2f} "
              f"searches {metrics['train/searches']:.1f} | ig {metrics.get('ig/mean', float('nan')):+.3f} "
              f"(n={metrics['ig/n_steps']:.0f}) | loss {metrics['loss/total']:+.4f} kl {metrics['loss/kl']:.4f}"
              + (f" | eval em {metrics['eval/em']:.3f}" if "eval/em" in metrics else "")
              + f" | s: gen {t['generate']:.1f} ret {t['retrieve']:.2f} ig {t['ig']:.1f} "
              f"logp {t['logprob']:.1f} upd {t['update']:.1f} total {metrics['time/step']:.1f}", flush=True)

    if writer is not None:
        writer.close()
    if history:
        plot_curves(history, run_dir / "curves.png", run_dir.name)
        print(f"curves: {run_dir / 'curves.png'}; metrics: {run_dir / 'metrics.csv'}")


if __name__ == "__main__":
    main()
