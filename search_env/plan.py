"""Planned sub-questions (the "Plan" dialect): before any retrieval the agent writes its ordered sub-questions in
a ``<plan>`` block, and each search is anchored to one of them.

- :func:`parse_plan` reads the ``<plan>`` block of a turn (outside ``<think>``): one sub-question per line,
  numbering (``1.``, ``2)``, ``-``, ``*``) dropped. Malformed plans are invalid turns, with the action parser's
  reason codes: ``unclosed_tag``, ``nested_tags`` (any tag inside), ``empty``, ``content_too_long`` (a line over
  the content limit), ``plan_too_long`` (over ``MAX_PLAN_STEPS`` lines).
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

from search_env.actions import MAX_CONTENT_CHARS, Invalid, _think_spans, _first_tag, clean_content
from search_env.rewards import f1_score, normalize_answer

__all__ = ["MAX_PLAN_STEPS", "match_sub_question", "parse_plan", "plan_quality"]

MAX_PLAN_STEPS = 10
_NUMBERING = re.compile(r"^\s*(?:\d+\s*[.)]|[-*•])\s*")
_TAGS = re.compile(r"</?\s*(?:search|answer|think|plan|information|documents|refine)\s*>", re.IGNORECASE)


def parse_plan(text: str) -> tuple[list[str] | None, Invalid | None]:
    """``(sub-questions, None)`` for a turn with a well-formed ``<plan>``, ``(None, None)`` for a turn without one,
    ``(None, Invalid)`` for a malformed one (see the module docstring)."""
    if not isinstance(text, str):
        return None, None
    span = _first_tag(text, "plan", _think_spans(text))
    if span is None:
        return None, None
    _, start, close = span
    if close < 0:
        return None, Invalid("unclosed_tag", "<plan> is never closed with </plan>", text)
    raw = text[start + len("<plan>") : close]
    if _TAGS.search(raw):
        return None, Invalid("nested_tags", "another tag inside <plan>", text)
    if len(raw) > 4 * MAX_CONTENT_CHARS * MAX_PLAN_STEPS:
        return None, Invalid("content_too_long", "the plan is too long", text)
    steps = [clean_content(_NUMBERING.sub("", line)) for line in raw.splitlines()]
    steps = [s for s in steps if s]
    if not steps:
        return None, Invalid("empty", "the plan is empty", text)
    if len(steps) > MAX_PLAN_STEPS:
        return None, Invalid("plan_too_long", f"the plan has {len(steps)} sub-questions, over {MAX_PLAN_STEPS}", text)
    if any(len(s) > MAX_CONTENT_CHARS for s in steps):
        return None, Invalid("content_too_long", f"a sub-question is over {MAX_CONTENT_CHARS:,} characters", text)
    return steps, None


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
