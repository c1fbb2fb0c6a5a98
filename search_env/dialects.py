"""Dialects: the text the env writes for the agent (instructions, documents blocks, feedback).

A dialect is the tag set of one paper's agents: ``search-r1`` returns passages in ``<information>``;
``autorefine`` returns them in ``<documents>`` and asks the agent to summarise them in ``<refine>``; ``plan`` asks
for ordered sub-questions in ``<plan>`` before the first search (:mod:`search_env.plan`). Parsing
the agent's own tags (``<search>``, ``<answer>``, ``<think>``) is the same in every dialect (:mod:`search_env.actions`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from search_env.retrieval.base import Hit


def search_block(query: str) -> str:
    """A search as the agent writes it."""
    return f"<search> {query} </search>"


@dataclass(frozen=True)
class Dialect:
    """A tag set: where passages go, whether the agent summarises them in ``<refine>``, and whether it plans its
    sub-questions in ``<plan>`` before searching (:mod:`search_env.plan`)."""

    name: str
    documents_tag: str
    refine_tag: str | None
    instructions: str  # with {topk} and {documents} fields
    plan_tag: str | None = None

    def prompt(self, question: str, topk: int) -> str:
        """The episode's first observation: instructions, then the question."""
        return self.instructions.format(topk=topk, documents=self.documents_tag) + f"Question: {question}\n"

    def documents_block(self, hits: Sequence[Hit]) -> str:
        """The retrieved passages as the agent sees them, Search-R1 style: ``Doc i(Title: t) text``."""
        if hits:
            body = "".join(f"Doc {i}(Title: {h.title}) {h.text}\n" for i, h in enumerate(hits, start=1))
        else:
            body = "No passage matched the query.\n"
        return f"<{self.documents_tag}>{body}</{self.documents_tag}>"

    def observation(self, hits: Sequence[Hit]) -> str:
        """What a search step returns: the documents block between blank lines."""
        return f"\n\n{self.documents_block(hits)}\n\n"

    def worked_example(self) -> str:
        """A worked two-hop episode in this dialect, on a question outside any dataset, for small models."""
        founder = Hit(
            "example-1", "Pellwick Mills", "Pellwick Mills is a textile company founded in 1881 by Ansel Dorrow.", 0.0
        )
        birthplace = Hit("example-2", "Ansel Dorrow", "Ansel Dorrow was born in Castemar, a town in Ruvenia.", 0.0)
        return (
            "Here is an example of how to work.\n"
            "Question: In which country was the founder of Pellwick Mills born?\n"
            + ("<plan>\n1. Who founded Pellwick Mills?\n2. In which country was that founder born?\n</plan>\n"
               if self.plan_tag else "")
            + "<think>I need the founder of Pellwick Mills first.</think>\n"
            + search_block("Pellwick Mills founder") + self.observation([founder])
            + "<think>The founder is Ansel Dorrow. Now I need where he was born.</think>\n"
            + search_block("Ansel Dorrow born") + self.observation([birthplace])
            + "<think>Castemar is in Ruvenia.</think>\n<answer> Ruvenia </answer>\n\n"
            "Now the real task.\n"
        )


_SEARCH_R1 = (
    "Answer the question below. Reason inside <think> and </think> whenever you get new information. "
    "If you need facts you do not have, search by writing <search> your query </search>; the {topk} best "
    "passages come back between <{documents}> and </{documents}>. You may search as often as you need. When you "
    "know the answer, give it alone, with no explanation, between <answer> and </answer>. "
)
_AUTOREFINE = (
    "Answer the question below. Reason inside <think> and </think>. If you need facts you do not have, "
    "search by writing <search> your query </search>; the {topk} best passages come back between "
    "<{documents}> and </{documents}>. After each search, write what the passages tell you that matters for the "
    "question between <refine> and </refine>. You may search as often as you need. When you know the "
    "answer, give it alone between <answer> and </answer>. "
)

_PLAN = (
    "Answer the question below. First, before any search, break the question into the sub-questions you will answer "
    "in order, one per line, between <plan> and </plan>, for example <plan>\n1. Who wrote X?\n2. Where was that "
    "writer born?\n</plan>, then write your first search in the same turn. Reason inside <think> and </think>. "
    "Search by writing <search> your query </search>, one sub-question at a time; the {topk} best passages come back "
    "between <{documents}> and </{documents}>. When you know the answer, give it alone between <answer> and "
    "</answer>. "
)

DIALECTS: dict[str, Dialect] = {
    "search-r1": Dialect("search-r1", "information", None, _SEARCH_R1),
    "autorefine": Dialect("autorefine", "documents", "refine", _AUTOREFINE),
    "plan": Dialect("plan", "information", None, _PLAN, plan_tag="plan"),
}


def get_dialect(name: str | Dialect) -> Dialect:
    """A dialect by name (``"search-r1"``, ``"autorefine"``), or a :class:`Dialect` passed through."""
    if isinstance(name, Dialect):
        return name
    try:
        return DIALECTS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown dialect {name!r}; choose one of {sorted(DIALECTS)}") from None


def invalid_feedback(message: str) -> str:
    """The observation after an invalid turn: what was wrong and how to act."""
    return (
        f"\n\nThat turn had no usable action ({message}). To search, write <search> query </search>; "
        "to finish, write <answer> answer </answer>.\n\n"
    )
