"""The retriever interface the env calls: ``search`` and ``batch_search`` returning :class:`Hit` lists."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Hit:
    doc_id: str
    title: str
    text: str
    score: float


@runtime_checkable
class Retriever(Protocol):
    """Anything with these two methods can serve the env. Both must be deterministic."""

    def search(self, query: str, k: int) -> list[Hit]: ...

    def batch_search(self, queries: Sequence[str], k: int) -> list[list[Hit]]: ...


def check_queries(queries: Sequence[str]) -> list[str]:
    """The queries as a list; a non-string raises TypeError (any string, garbage included, is fine)."""
    queries = list(queries)
    for query in queries:
        if not isinstance(query, str):
            raise TypeError(f"queries must be strings, got {type(query).__name__}")
    return queries


class RetrieverUnavailable(RuntimeError):
    """A remote retriever could not answer (after retries); the env step can be retried later."""
