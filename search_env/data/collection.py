"""The ordered, immutable, id-indexed collection behind Corpus and QADataset."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

from search_env.data.errors import DataFileError, iter_jsonl

T = TypeVar("T")


class IdCollection(Sequence[T], Generic[T]):
    """Items with unique ``.id`` strings, in order; ``get(id)``, ``position(id)`` and ``id in c`` are O(1)."""

    kind = "items"

    def __init__(self, items: Iterable[T], name: str):
        self._items: tuple[T, ...] = tuple(items)
        self.name = name
        self._index: dict[str, int] = {}
        for i, item in enumerate(self._items):
            if item.id in self._index:
                raise ValueError(f"{name}: duplicate id {item.id!r} (positions {self._index[item.id]} and {i})")
            self._index[item.id] = i

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i):  # type: ignore[override]
        return self._items[i]

    def __iter__(self) -> Iterator[T]:
        return iter(self._items)

    def __contains__(self, item_id: object) -> bool:  # type: ignore[override]
        return item_id in self._index

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, {self.kind}={len(self)})"

    def position(self, item_id: str) -> int:
        return self._index[item_id]

    def get(self, item_id: str) -> T:
        return self._items[self._index[item_id]]

    @property
    def ids(self) -> list[str]:
        return list(self._index)

    def to_jsonl(self, path: str | os.PathLike) -> None:
        """Write the items as FlashRAG JSONL, one record per line; the loader reads them back unchanged."""
        with open(path, "w", encoding="utf-8") as f:
            for item in self._items:
                f.write(json.dumps(self.record(item), ensure_ascii=False) + "\n")

    @staticmethod
    def record(item: T) -> dict[str, Any]:
        """An item as a FlashRAG JSONL record."""
        raise NotImplementedError


def parse_records(
    source: str | os.PathLike | Iterable[object], parse: Callable[[object, str, int, int], T], *, empty: str
) -> tuple[list[T], str]:
    """``parse(record, name, line, n_before)`` over a JSONL file or an iterable of dicts, with unique ids.

    Returns the items and the source's name. A duplicate id, or no items at all (``empty`` says so), raises
    :class:`DataFileError` naming the file and the line.
    """
    if isinstance(source, (str, os.PathLike)):
        records: Iterable[tuple[int, object]] = iter_jsonl(Path(source))
        name = str(source)
    else:
        records = ((i + 1, r) for i, r in enumerate(source))
        name = "<records>"
    items: list[T] = []
    seen: dict[str, int] = {}
    for line, record in records:
        item = parse(record, name, line, len(items))
        if item.id in seen:
            raise DataFileError(name, line, f"duplicate id {item.id!r} (first on line {seen[item.id]})")
        seen[item.id] = line
        items.append(item)
    if not items:
        raise DataFileError(name, None, empty)
    return items, name
