"""Planned sub-questions (the "Plan" dialect): before any retrieval the agent writes its ordered sub-questions in
a ``<plan>`` block, and each search is anchored to one of them.

- The ``<plan>`` block is read by the one parser of agent text, :func:`search_env.actions.parse_turn`
  (:func:`~search_env.actions.parse_plan`, also importable from here).
- In the ``plan`` dialect (:data:`search_env.dialects.DIALECTS`) the env requires a plan before the first search
  (a search without one is invalid, ``no_plan``); the plan comes in the same turn as an action, before it. A later
  ``<plan>`` replaces the plan. ``info["plan"]`` reports the plan on the turn that set it, ``info["sub_question"]``
  on each search the index of the sub-question it answers (:func:`match_sub_question`).
- :func:`plan_quality` compares a plan with a gold decomposition (MuSiQue's ``question_decomposition``, the
  built-in world's too): how many sub-questions each has, and the mean over gold sub-questions of the best token
  F1 with a planned one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from search_env.actions import MAX_PLAN_STEPS, parse_plan
from search_env.rewards import f1_score, normalize_answer

__all__ = ["MAX_PLAN_STEPS", "match_sub_question", "parse_plan", "plan_quality"]


def match_sub_question(query: str, plan: Sequence[str], answered: Sequence[int] = ()) -> int:
    """The index of the sub-question ``query`` answers: the best token F1 with it, ties going to the first not yet
    ``answered``, then to the earliest."""
    scores = [f1_score(query, [step]) for step in plan]
    best = max(scores)
    tied = [i for i, s in enumerate(scores) if s == best]
    return next((i for i in tied if i not in answered), tied[0])


def _plain(question: str) -> str:
    """Without MuSiQue's references to earlier answers (``#1``) and relation arrows (``>>``)."""
    return re.sub(r"#\d+|>>", " ", question)


def plan_quality(plan: Sequence[str], gold: Sequence[Mapping | str]) -> dict[str, float]:
    """A plan against a gold decomposition (dicts with ``question``, or strings; MuSiQue's ``#1`` references are
    dropped before comparing): ``n_plan``, ``n_gold``, ``count_match`` (1.0 when equal) and ``sub_question_f1``,
    the mean over gold sub-questions of the best token F1 with any planned one (both sides without ``#1``)."""
    gold_questions = [_plain(g["question"] if isinstance(g, Mapping) else str(g)) for g in gold]
    steps = [_plain(step) for step in plan]
    best = [max((f1_score(step, [q]) for step in steps), default=0.0) for q in gold_questions if normalize_answer(q)]
    return {"n_plan": float(len(plan)), "n_gold": float(len(gold_questions)),
            "count_match": float(len(plan) == len(gold_questions)),
            "sub_question_f1": float(sum(best) / len(best)) if best else 0.0}
