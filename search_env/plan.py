"""Planned sub-questions (the "Plan" dialect): before any retrieval the agent writes its ordered sub-questions in
a ``<plan>`` block, and each search is anchored to one of them.

- The ``<plan>`` block is read by the one parser of agent text, :func:`search_env.actions.parse_turn`
  (:func:`~search_env.actions.parse_plan`, also importable from here).
- In the ``plan`` dialect (:data:`search_env.dialects.DIALECTS`) the env requires a plan before the first search
  (a search without one is invalid, ``no_plan``); the plan comes in the same turn as an action, before it. A later
  ``<plan>`` replaces the plan. ``info["plan"]`` reports the plan on the turn that set it, ``info["sub_question"]``
  on each search the index of the sub-question it answers (:func:`match_sub_question`), ``info["plan_coverage"]``
  how well the searches so far cover the plan (:func:`plan_coverage`).
- The plan-aware reward, ``RewardConfig(plan_weight=w)``: each step earns ``w`` times the rise in
  :func:`plan_coverage`, so an episode's plan rewards add up to ``w`` times the coverage of its last plan by the
  searches made after it was written (a re-plan starts from 0; searching the same sub-question again adds only
  what it improves). The Plan paper's own formula is not public; this is the project's reading of "a plan-aware
  reward to enforce alignment with sub-questions". It checks searches against the agent's own plan, not the plan
  against the question, so a plan that merely restates the queries is paid in full.
- :func:`plan_quality` compares a plan with a gold decomposition (MuSiQue's ``question_decomposition``, the
  built-in world's too): how many sub-questions each has, and the mean over gold sub-questions of the best
  :func:`similarity` with a planned one. MuSiQue's items are read as written (:func:`gold_readings`): ``"X >> r"``
  is the question "r of X", and ``#k`` is the k-th sub-answer, named or only referred to ("that county").
- :func:`similarity`, the one comparison of a query or plan step with a sub-question: token F1 over stemmed
  content words (question words, auxiliaries, articles and pronouns left out).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache

import Stemmer
from bm25s.stopwords import STOPWORDS_EN

from search_env.actions import MAX_PLAN_STEPS, parse_plan
from search_env.rewards import f1_score

__all__ = ["MAX_PLAN_STEPS", "content_words", "gold_readings", "match_sub_question", "parse_plan", "plan_coverage",
           "plan_quality", "similarity"]

# bm25s's English stopwords, plus the question words, auxiliaries and pronouns sub-questions are phrased with
FUNCTION_WORDS = frozenset(STOPWORDS_EN) | {
    "what", "which", "who", "whom", "whose", "when", "where", "why", "how", "do", "does", "did", "has", "have",
    "had", "were", "been", "being", "am", "he", "she", "him", "her", "his", "hers", "its", "them", "those", "from",
}
_REFERENCE = re.compile(r"#\s*(\d+)")
_STEMMER = Stemmer.Stemmer("english")


@lru_cache(maxsize=4096)
def content_words(text: str) -> tuple[str, ...]:
    """The stemmed words of ``text`` (lower case, ``\\w+``) without :data:`FUNCTION_WORDS`, single letters and
    MuSiQue's ``#k`` references."""
    words = [w for w in re.findall(r"\w+", _REFERENCE.sub(" ", text).lower()) if len(w) > 1 and w not in FUNCTION_WORDS]
    return tuple(_STEMMER.stemWords(words))


def similarity(text: str, sub_question: str) -> float:
    """Token F1 of the :func:`content_words` of ``text`` and ``sub_question`` (0 when either has none)."""
    return f1_score(" ".join(content_words(text)), [" ".join(content_words(sub_question))])


def match_sub_question(query: str, plan: Sequence[str], answered: Sequence[int] = ()) -> int:
    """The index of the sub-question ``query`` answers: the best :func:`similarity` with it, ties going to the first
    not yet ``answered``, then to the earliest."""
    scores = [similarity(query, step) for step in plan]
    best = max(scores)
    tied = [i for i, s in enumerate(scores) if s == best]
    return next((i for i in tied if i not in answered), tied[0])


def plan_coverage(plan: Sequence[str] | None, searches: Sequence[tuple[int, str]]) -> float:
    """How well ``searches`` (``(sub-question index, query)``, anchored by :func:`match_sub_question`) cover
    ``plan``: the mean over its sub-questions of the best :func:`similarity` of a query anchored to it, 0 for one no
    search addressed. In [0, 1]; 0 without a plan. The plan-aware reward pays its rise
    (``RewardConfig.plan_weight``)."""
    if not plan:
        return 0.0
    best = [0.0] * len(plan)
    for k, query in searches:
        best[k] = max(best[k], similarity(query, plan[k]))
    return sum(best) / len(plan)


def gold_readings(gold: Sequence[Mapping | str]) -> list[list[str]]:
    """Each gold sub-question as the texts a plan step may match, read as MuSiQue writes them: ``"X >> r"`` (a
    Wikidata relation) becomes ``"r of X"``, and a ``#k`` reference either names the k-th sub-answer (when the
    decomposition has answers) or is left out, as a plan written before searching refers to it ("that county").
    Strings and items without ``#k`` have one reading."""
    questions = [g["question"] if isinstance(g, Mapping) else str(g) for g in gold]
    answers = [str(g.get("answer") or "") if isinstance(g, Mapping) else "" for g in gold]
    readings = []
    for question in questions:
        if ">>" in question:
            subject, _, relation = question.partition(">>")
            relation, subject = relation.strip(), subject.strip()  # "capital of", "shares border with": no "of"
            joint = " " if relation.split()[-1:] in (["of"], ["with"]) else " of "
            question = relation + joint + subject
        named = _REFERENCE.sub(lambda m: answers[int(m[1]) - 1] if 0 < int(m[1]) <= len(answers) else "", question)
        referring = " ".join(_REFERENCE.sub(" ", question).split())
        readings.append(list(dict.fromkeys([" ".join(named.split()), referring])))
    return readings


def plan_quality(plan: Sequence[str], gold: Sequence[Mapping | str]) -> dict[str, float]:
    """A plan against a gold decomposition (dicts with ``question`` and ``answer``, or strings): ``n_plan``,
    ``n_gold``, ``count_match`` (1.0 when equal) and ``sub_question_f1``, the mean over gold sub-questions (those
    with content words) of the best :func:`similarity` of a planned step with one of its :func:`gold_readings`."""
    readings = [r for r in gold_readings(gold) if any(content_words(text) for text in r)]
    best = [max((similarity(step, text) for step in plan for text in r), default=0.0) for r in readings]
    return {"n_plan": float(len(plan)), "n_gold": float(len(gold)), "count_match": float(len(plan) == len(gold)),
            "sub_question_f1": float(sum(best) / len(best)) if best else 0.0}
