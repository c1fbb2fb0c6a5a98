"""The ordered, immutable, id-indexed collection behind Corpus and QADataset."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Generic, TypeVar

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
