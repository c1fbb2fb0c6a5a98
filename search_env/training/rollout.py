"""Token-exact multi-turn rollouts of a Hugging Face causal LM in a ``SearchQAVectorEnv``: the policy's turns are
kept as generated (cut after ``</search>`` or ``</answer>``) and the env's text as tokenised once, never
re-tokenised, into :class:`search_env.training.credit.Trajectory` objects with each search's query span and IG;
each episode's record (:mod:`search_env.records`), a sample of which :func:`log_episodes` appends to a run folder's
``episodes.jsonl``."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch
import transformers

from search_env.actions import Search, parse_action
from search_env.agents.models import RANDOM_MODELS, load_causal_lm, random_causal_lm
from search_env.agents.policy import STOP_STRINGS, cut_at_stop, stop_criteria
from search_env.records import episode_record, read_records, turn_record, vector_info_at, write_records
from search_env.training.credit import Trajectory, token_span

EPISODE_STATS = ("em", "answered", "searches", "invalid", "truncated")


def build_model(name: str, seed: int):
    """``(model, tokenizer)``: ``load_causal_lm(name)`` (a hub name, a folder, ``bundled``), or the random
    ``tiny-random`` (smoke tests) or ``random-0.5b`` (GPU timings) of ``search_env.agents.models.random_causal_lm``;
    with a pad token and a clean generation config (the model's own top-k, top-p or repetition penalty would
    bias the sampling)."""
    model, tokenizer = random_causal_lm(name, seed) if name in RANDOM_MODELS else load_causal_lm(name)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    eos = model.generation_config.eos_token_id
    eos_ids = sorted({tokenizer.eos_token_id, *([eos] if isinstance(eos, int) else eos or [])} - {None})
    model.generation_config = transformers.GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=eos_ids,
                                                            pad_token_id=tokenizer.pad_token_id)
    return model, tokenizer


def rollout(model, tokenizer, venv, items, *, group_size, seed, gen_kwargs, prompt_text, timer, amp,
            draw_seed: int | None = None):
    """``(trajectories, episode stats)`` of ``group_size`` episodes per question of ``items``, in ``venv`` (one
    sub-env per episode, autoreset off); ``prompt_text(first observation)`` is the model's input. Generation is
    timed as ``timer("generate")``; ``amp()`` is the autocast context of generation and of the env's scoring.
    Each episode's stats hold its ``record`` (:mod:`search_env.records`) under that key.

    ``draw_seed`` keys IG's shared random passages (default: ``seed``), so every rollout of a group at a turn
    scores against the same ones. Where the env gives ``info["search_credit"]`` at an episode's end (``IGConfig(
    credit=...)``), it replaces the IG of that episode's search turns (:meth:`Trajectory.set_search_credit`)."""
    eos_ids = set(model.generation_config.eos_token_id)
    trajectories: list[Trajectory] = []
    prompts: list[str] = []  # the env's, per episode (self-distillation's teachers extend it)
    for q, item in enumerate(items):
        mask = np.zeros(venv.num_envs, dtype=bool)
        mask[q * group_size : (q + 1) * group_size] = True
        options = {"reset_mask": mask, "question_id": item.id, "draw_seed": seed if draw_seed is None else draw_seed}
        observations, _ = venv.reset(seed=seed, options=options)
        prompt_ids = tokenizer(prompt_text(observations[q * group_size]), add_special_tokens=False)["input_ids"]
        trajectories += [Trajectory(prompt_ids, group=item.id) for _ in range(group_size)]
        prompts += [observations[q * group_size]] * group_size
    episodes = [{**dict.fromkeys(EPISODE_STATS, 0.0), "queries": [], "answer": None, "prompt": prompt}
                for prompt in prompts]

    turn_records: list[list[dict]] = [[] for _ in trajectories]
    active = list(range(len(trajectories)))
    while active:
        with timer("generate"), amp():
            new_ids = generate(model, tokenizer, [trajectories[i].input_ids for i in active], gen_kwargs)
        turns = {i: cut_turn(tokenizer, ids, eos_ids) for i, ids in zip(active, new_ids)}
        actions = [turns[i][1] if i in turns else None for i in range(venv.num_envs)]
        with amp():
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
            env, info = venv.envs[i], vector_info_at(infos, i)
            hits = env.steps[-1].hits if kind == "search" else None
            turn_records[i].append(turn_record(text, rewards[i], info, hits))
            if infos.get("_search_credit", np.zeros(venv.num_envs, bool))[i]:
                trajectories[i].set_search_credit(infos["search_credit"][i])
            if not (terminated[i] or truncated[i]):
                trajectories[i].add_env(tokenizer(observations[i], add_special_tokens=False)["input_ids"])
            else:
                stats["record"] = episode_record(env.item, turn_records[i], info, dialect=env.dialect.name)
        active = [i for i in active if not (terminated[i] or truncated[i])]
    return trajectories, episodes


def log_episodes(run_dir: str | Path, step: int, n: int, **splits: tuple[Sequence[dict], object]) -> list[dict]:
    """Write to ``run_dir/episodes.jsonl`` the records (:mod:`search_env.records`) of the first ``n`` episodes of
    each split (``name=(episodes, batch)``: :func:`rollout`'s stats, each holding its ``record``), each with ``step``
    and ``split``, after the file's records of earlier steps (those of this step or later, from a run that is being
    resumed, are dropped). With the split's ``batch`` (the :class:`~search_env.training.credit.CreditBatch` of
    those episodes, in order; ``None`` for none) each record also gets its ``advantage`` and each search turn whose
    query tokens got one the ``advantage`` those tokens were given (outcome advantage plus the IG term). Returns the
    records written."""
    path = Path(run_dir) / "episodes.jsonl"
    chosen = [r for r in read_records(path) if r.get("step", step) < step] if path.exists() else []
    kept = len(chosen)
    for split, (episodes, batch) in splits.items():
        for i, episode in enumerate(episodes[: max(n, 0)]):
            record = dict(episode["record"], step=step, split=split)
            if batch is not None:
                record["advantage"] = float(batch.advantages[i])
                record["turns"] = [dict(turn) for turn in record["turns"]]
                for t, turn in enumerate(record["turns"]):
                    tokens = np.flatnonzero(batch.token_turns[i] == t)
                    if turn["action_type"] == "search" and len(tokens):
                        turn["advantage"] = float(batch.token_advantages[i, tokens[0]])
            chosen.append(record)
    write_records(path, chosen)
    return chosen[kept:]


def generation_kwargs(model, tokenizer, max_new_tokens: int, temperature: float) -> tuple[dict, dict]:
    """``generate`` keywords of the rollouts (sampled at ``temperature``, no top-k or top-p) and of evaluation
    (greedy), both stopping after ``</search>`` or ``</answer>``."""
    stop = stop_criteria(tokenizer)
    common = dict(max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                  eos_token_id=model.generation_config.eos_token_id)
    sample = transformers.GenerationConfig(do_sample=True, temperature=temperature, top_k=0, top_p=1.0, **common)
    greedy = transformers.GenerationConfig(do_sample=False, **common)
    return [{"generation_config": config, "stopping_criteria": stop} for config in (sample, greedy)]


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
