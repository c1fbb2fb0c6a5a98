"""What every trainer adapter shares: its settings, the resources one process shares, one question's env from a
dataset row, the reward of each turn and the metrics of an episode.

The adapters (:mod:`~search_env.integrations.trl`, :mod:`~search_env.integrations.skyrl`,
:mod:`~search_env.integrations.verl`, :mod:`~search_env.integrations.verifiers`) differ only in how their trainer
calls them; the rules below are theirs alike.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import threading
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from search_env._cache import built_once
from search_env.data.corpus import load_corpus
from search_env.data.qa import load_questions
from search_env.env import SearchQAEnv
from search_env.info_gain import Deferred, IGConfig
from search_env.retrieval import make_retriever
from search_env.rewards import RewardConfig, clipped_ig
from search_env.scoring import make_scorer

__all__ = ["DEFAULTS", "DrawRounds", "episode_metrics", "grouped_ig", "jsonable", "make_settings", "question_env",
           "question_record", "shared_resources", "turn_reward"]

DEFAULTS = {"corpus": None, "retriever": "bm25", "topk": 3, "max_turns": 4, "dialect": "search-r1", "outcome": "em",
            "format_penalty": 0.1, "ig": True, "scorer": None, "scorer_tokenizer": None, "ig_weight": 0.3,
            "ig_clip": 1.0, "seed": None, "plan_weight": 0.0}


def make_settings(defaults: Mapping, variable: str | None, *layers: Mapping | None) -> dict:
    """``defaults``, then the JSON (or JSON file) in ``$variable``, then each layer in turn.

    Raises:
        ValueError: a setting not in ``defaults``.
    """
    out = dict(defaults)
    raw = os.environ.get(variable) if variable else None
    if raw:
        out.update(json.loads(raw if raw.lstrip().startswith("{") else Path(raw).read_text()))
    for layer in layers:
        out.update(dict(layer or {}))
    unknown = sorted(set(out) - set(defaults))
    if unknown:
        raise ValueError(f"unknown search_env settings {unknown}; known: {sorted(defaults)}")
    return out


def shared_resources(corpus: Any = None, retriever: Any = "bm25", scorer: Any = None,
                     scorer_tokenizer: Any = None) -> tuple[Any, Any, Any]:
    """(corpus, retriever, scorer) for these settings, built once per process and shared by every env in it (each
    is safe to call from many threads). ``scorer`` ``None`` stays ``None``: the env loads the bundled model when
    it first scores."""
    def build():
        loaded = load_corpus(corpus)
        made = None if scorer is None else make_scorer(scorer, tokenizer=scorer_tokenizer)
        return loaded, make_retriever(retriever, loaded), made

    # objects (a Corpus, a retriever, a scorer) are shared by identity, settings by value
    key = json.dumps([corpus, retriever, scorer, scorer_tokenizer], sort_keys=True,
                     default=lambda obj: f"{type(obj).__name__}@{id(obj)}")
    return built_once("adapter-shared", key, build)


def question_record(question: Any, answers: Any, question_id: Any = None, **fields: Any) -> dict:
    """A QA record from a trainer's row: the question, its golden answers (a string, a list or an array), an id.

    Raises:
        ValueError: no question or no answers.
    """
    if answers is not None and not isinstance(answers, str):
        answers = [str(a) for a in np.asarray(answers, dtype=object).reshape(-1).tolist()]
    elif answers is not None:
        answers = [answers]
    if not question or not answers:
        raise ValueError("a search_env row needs a question and its golden answers")
    if question_id is None:  # stable per question, so shared IG draws stay keyed by question without an id column
        question_id = "q-" + hashlib.sha1(str(question).encode()).hexdigest()[:12]
    return {"id": str(question_id), "question": str(question), "golden_answers": answers, **fields}


def ig_setting(value: Any, *, deferred_tokenizer: Any = None) -> bool | IGConfig:
    """The env's ``ig`` from a setting: a bool, or a dict of :class:`~search_env.IGConfig` fields. With
    ``deferred_tokenizer`` the requests are deferred and carry that tokenizer's ids."""
    fields = dict(value) if isinstance(value, Mapping) else None
    if deferred_tokenizer is not None and (fields is not None and fields.get("deferred") or fields is None):
        fields = {**(fields or {}), "deferred": Deferred(tokenizer=deferred_tokenizer)}
    return IGConfig(**fields) if fields is not None else bool(value)


def grouped_ig(ig: bool | IGConfig) -> bool | IGConfig:
    """``ig`` with shared draws on where it leaves them unset (``True`` or ``shared_draws=None``): a trainer's
    rollouts come in groups, whose IG differences should carry no draw noise."""
    if ig is True:
        return IGConfig(shared_draws=True)
    if isinstance(ig, IGConfig) and ig.shared_draws is None:
        return dataclasses.replace(ig, shared_draws=True)
    return ig


class DrawRounds:
    """The draw seed of each episode a trainer starts, the same for every rollout of a batch (so a group's rollouts
    at a turn score against the same random passages) and new for the next batch.

    A round is the batch: it ends when an env that already began in it begins again (a trainer that pools and
    reuses its envs, TRL) or when every env that began in it has ended, closed or garbage-collected (a trainer that
    makes one env per rollout and closes it, SkyRL). Round ``r`` of seed ``s`` gets draw seed
    ``SeedSequence([s, r])``'s first word. Safe from many threads."""

    def __init__(self, seed: int | None = None):
        self.seed = 0 if seed is None else int(seed)
        self.round = -1
        self._begun: set[int] = set()
        self._open: set[int] = set()
        self._lock = threading.Lock()

    def begin(self, env: Any) -> int:
        """``env`` starts an episode: its draw seed."""
        with self._lock:
            if self.round < 0 or id(env) in self._begun or not self._open:
                self.round, self._begun = self.round + 1, set()
            if id(env) not in self._open:
                weakref.finalize(env, self._forget, id(env))
            self._begun.add(id(env))
            self._open.add(id(env))
            return int(np.random.SeedSequence([self.seed, self.round]).generate_state(1)[0])

    def end(self, env: Any) -> None:
        """``env`` is closed (it cannot begin again: a new object may reuse its id)."""
        self._forget(id(env))

    def _forget(self, key: int) -> None:
        with self._lock:
            self._open.discard(key)
            self._begun.discard(key)


def question_env(s: Mapping, record: Mapping, *, resources: tuple | None = None, ig: Any = None,
                 ig_weight: float = 0.0, reward: RewardConfig | None = None) -> SearchQAEnv:
    """One question's env over the process's shared corpus, retriever and scorer (settings ``s`` as in
    :data:`DEFAULTS`; ``resources``: that triple, given). ``ig`` overrides ``ig_setting(s["ig"])``; the env's own
    reward is ``reward``, or the settings' outcome and format penalty with ``ig_weight``."""
    corpus, retriever, scorer = resources or shared_resources(s["corpus"], s["retriever"], s["scorer"],
                                                              s["scorer_tokenizer"])
    reward = reward or RewardConfig(outcome=s["outcome"], format_penalty=s["format_penalty"], ig_weight=ig_weight,
                                    plan_weight=s.get("plan_weight", 0.0))
    return SearchQAEnv(questions=load_questions([dict(record)]), corpus=corpus, retriever=retriever, topk=s["topk"],
                       max_turns=int(s["max_turns"]), dialect=s["dialect"],
                       ig=ig_setting(s["ig"]) if ig is None else ig, scorer=scorer, reward=reward)


def turn_reward(info: Mapping, final: bool, *, ig_weight: float, ig_clip: float | None) -> float:
    """A turn's reward for a trainer that takes one per turn: the last turn's outcome plus its format penalty; an
    earlier turn's format penalty plus ``ig_weight * clip(IG)`` (nothing without IG). Every turn adds its plan-aware
    term (``RewardConfig(plan_weight=...)``) when the env pays one."""
    parts = info["reward_components"]
    plan = parts.get("plan", 0.0)
    if final:
        return float(parts["outcome"] + parts["format"] + plan)
    return float(parts["format"] + plan + clipped_ig(info.get("ig"), ig_weight, ig_clip))


def episode_metrics(infos: Sequence[Mapping]) -> dict[str, float]:
    """Per episode: em, f1, answered, truncated, searches, invalid turns, the number, sum and mean of IG values."""
    last = infos[-1] if infos else {}
    igs = [i["ig"] for i in infos if i.get("ig") is not None]
    return {"em": float(last.get("em", 0.0)), "f1": float(last.get("f1", 0.0)),
            "answered": float(last.get("action_type") == "answer"),
            "truncated": float(bool(infos) and last.get("action_type") != "answer"),
            "searches": float(sum(i["action_type"] == "search" for i in infos)),
            "invalid": float(sum(i["action_type"] == "invalid" for i in infos)),
            "ig_steps": float(len(igs)), "ig_sum": float(sum(igs)), "ig_mean": float(np.mean(igs)) if igs else 0.0}


def jsonable(info: Mapping) -> dict:
    """A step's ``info`` as JSON can carry it: a deferred request as its dict, non-finite floats as ``None``."""
    out = {}
    for key, value in info.items():
        if key == "ig_request":
            value = value.to_dict()
        elif isinstance(value, float) and not math.isfinite(value):
            value = None
        out[key] = value
    return out
