"""Action parsing, the one place that reads agent text: how one turn's text becomes Search, Answer or Invalid,
and, in a dialect with ``<plan>``, the turn's plan (what the env writes back is in :mod:`search_env.dialects`).

How a turn's text becomes an action (every case has one outcome, tested in ``tests/test_actions.py``):

- A dict ``{"kind": "search" | "answer", "text": str}`` is taken as it is (after cleaning, below).
- In a string, ``<think>…</think>`` spans are reasoning: tags inside them are not actions. An unclosed
  ``<think>`` hides the rest of the turn.
- The first *complete* ``<search>…</search>`` or ``<answer>…</answer>`` outside reasoning wins (the one whose
  opening tag comes first). Text after its closing tag is dropped, including further tags.
- Invalid, with a reason code: no tag (``no_tag``); a tag opened but never closed (``unclosed_tag``); tags
  only inside ``<think>`` (``in_think``); another ``search``, ``answer`` or ``think`` tag inside the winning one
  (``nested_tags``); empty or whitespace content (``empty``); content over ``max_content_chars``
  (``content_too_long``); a turn over ``max_action_chars`` (``action_too_long``, not scanned at all); anything but
  a str or such a dict (``bad_type``).
- Tags are lower case and exact (``<search>``, not ``<Search>`` or ``< search >``).
- Control characters and lone surrogates in the content become spaces, runs of whitespace become one space.

Plans (:func:`parse_plan`, :func:`parse_turn` with ``plan_tag="plan"``): the ``<plan>`` block of a turn (outside
``<think>``), one sub-question per line, numbering (``1.``, ``2)``, ``-``, ``*``) dropped. Malformed plans are
invalid turns with the reason codes above (``unclosed_tag``, ``nested_tags`` for any tag inside, ``empty``,
``content_too_long`` for a line over the content limit) or ``plan_too_long`` (over ``MAX_PLAN_STEPS`` lines). A
plan counts only with a valid action after it in the same turn; a search before any plan is ``no_plan``.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass

MAX_ACTION_CHARS = 1 << 20
MAX_CONTENT_CHARS = 2000
MAX_PLAN_STEPS = 10
_NESTABLE_TAGS = ("<search>", "<answer>", "</search>", "</answer>", "<think>", "</think>")


@dataclass(frozen=True)
class Search:
    query: str
    text: str  # the turn's text up to the end of the tag: what goes into the transcript


@dataclass(frozen=True)
class Answer:
    answer: str
    text: str


@dataclass(frozen=True)
class Invalid:
    reason: str  # a short code, see the module docstring
    message: str
    text: str


Action = Search | Answer | Invalid


@dataclass(frozen=True)
class Turn:
    """One parsed turn: its action and, in a dialect with ``<plan>``, the plan it writes (None: no new plan)."""

    action: Action
    plan: list[str] | None = None


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")  # C0/C1 controls, lone surrogates
_SPACES = re.compile(r"\s+")


def clean_content(text: str) -> str:
    """Control characters and lone surrogates to spaces; whitespace collapsed; stripped."""
    return _SPACES.sub(" ", _CONTROL.sub(" ", text)).strip()


def parse_action(
    action: object,
    *,
    max_action_chars: int = MAX_ACTION_CHARS,
    max_content_chars: int = MAX_CONTENT_CHARS,
) -> Action:
    """Turn one turn's text (or a ``{"kind", "text"}`` dict) into Search, Answer or Invalid."""
    if isinstance(action, Mapping):
        return _parse_dict(action, max_content_chars)
    if not isinstance(action, str):
        return Invalid("bad_type", f"an action is a str or a {{'kind', 'text'}} dict, not {type(action).__name__}", "")
    if len(action) > max_action_chars:
        return Invalid(
            "action_too_long",
            f"the turn has {len(action):,} characters, over the limit of {max_action_chars:,}",
            f"[{len(action):,} characters omitted]",
        )
    thinking = _think_spans(action)
    spans = [s for s in (_first_tag(action, kind, thinking) for kind in ("search", "answer")) if s]
    complete = [s for s in spans if s[2] >= 0]
    if not complete:
        if spans:
            kind = min(spans, key=lambda s: s[1])[0]
            return Invalid("unclosed_tag", f"<{kind}> is never closed with </{kind}>", action)
        if "<search>" in action or "<answer>" in action:
            return Invalid("in_think", "tags inside <think>...</think> are reasoning, not actions", action)
        return Invalid("no_tag", "no <search>...</search> or <answer>...</answer> found", action)
    kind, start, close = min(complete, key=lambda s: s[1])
    end = close + len(kind) + 3
    text = action[:end]
    raw = action[start + len(kind) + 2 : close]
    if any(tag in raw for tag in _NESTABLE_TAGS):
        return Invalid("nested_tags", f"another tag inside <{kind}>", text)
    return _make(kind, raw, text, max_content_chars)


def _parse_dict(action: Mapping, max_content_chars: int) -> Action:
    kind, raw = action.get("kind"), action.get("text")
    if kind not in ("search", "answer") or not isinstance(raw, str):
        return Invalid("bad_type", "a dict action needs kind 'search' or 'answer' and a str 'text'", "")
    return _make(kind, raw, f"<{kind}> {raw} </{kind}>", max_content_chars)


def _make(kind: str, raw: str, text: str, max_content_chars: int) -> Action:
    if len(raw) > 4 * max_content_chars:  # skip cleaning huge content
        return Invalid("content_too_long", f"the {kind} has over {max_content_chars:,} characters", text)
    content = clean_content(raw)
    if not content:
        return Invalid("empty", f"the {kind} is empty", text)
    if len(content) > max_content_chars:
        return Invalid(
            "content_too_long", f"the {kind} has {len(content):,} characters, over {max_content_chars:,}", text
        )
    return Search(content, text) if kind == "search" else Answer(content, text)


def _think_spans(text: str) -> list[int]:
    """Flat sorted boundaries [start0, end0, start1, end1, …] of <think> spans; unclosed runs to the end."""
    bounds: list[int] = []
    pos = 0
    while (start := text.find("<think>", pos)) >= 0:
        close = text.find("</think>", start + 7)
        end = len(text) if close < 0 else close + 8
        bounds += [start, end]
        pos = end
    return bounds


def _inside(bounds: list[int], pos: int) -> bool:
    return bisect_right(bounds, pos) % 2 == 1


def _first_tag(text: str, kind: str, thinking: list[int]) -> tuple[str, int, int] | None:
    """(kind, position of the opening tag, position of its closing tag or -1), outside <think> spans."""
    opening, closing = f"<{kind}>", f"</{kind}>"
    pos = 0
    while (start := text.find(opening, pos)) >= 0:
        if not _inside(thinking, start):
            return kind, start, text.find(closing, start + len(opening))
        pos = thinking[bisect_right(thinking, start)]  # jump past the enclosing <think> span
    return None


_NUMBERING = re.compile(r"^\s*(?:\d+\s*[.)]|[-*•])\s*")
_PLAN_INNER_TAGS = re.compile(r"</?\s*(?:search|answer|think|plan|information|documents|refine)\s*>", re.IGNORECASE)


def parse_plan(text: object) -> tuple[list[str] | None, Invalid | None]:
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
    if _PLAN_INNER_TAGS.search(raw):
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


def parse_turn(
    action: object,
    *,
    plan_tag: str | None = None,
    planned: bool = False,
    max_action_chars: int = MAX_ACTION_CHARS,
) -> Turn:
    """One turn's action and plan. Without ``plan_tag`` this is :func:`parse_action`; with it, a malformed plan makes
    the turn invalid, a plan after the action is not read, and a search is ``no_plan`` unless the turn writes a
    plan or one was written before (``planned``)."""
    parsed = parse_action(action, max_action_chars=max_action_chars)
    if not plan_tag or isinstance(parsed, Invalid) and parsed.reason in ("action_too_long", "bad_type"):
        return Turn(parsed)
    plan, bad = parse_plan(action)
    if bad is not None:
        return Turn(bad)
    if isinstance(parsed, Invalid):  # a plan counts only with a valid action after it
        return Turn(parsed)
    if plan is not None and f"</{plan_tag}>" not in parsed.text:  # a plan after the action is not read
        plan = None
    if isinstance(parsed, Search) and plan is None and not planned:
        message = f"write your sub-questions between <{plan_tag}> and </{plan_tag}> before the first search"
        return Turn(Invalid("no_plan", message, parsed.text))
    return Turn(parsed, plan)
