"""The ordered, immutable, id-indexed collections: a :class:`Corpus` of passages (in memory, or memory-mapped by
:mod:`.mapped`, behind one interface) and a :class:`QADataset` of questions, and the one reader of their JSONL
records (loaders: :mod:`.corpus`, :mod:`.qa`)."""

from __future__ import annotations

import hashlib
import json
import os
from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Generic, TypeVar

from search_env.data.errors import DataFileError, iter_jsonl

T = TypeVar("T")


class IdSequence(Sequence[T], Generic[T]):
    """Items with unique ``.id`` strings, in order: by position (``c[i]``), by id (``get``, ``position``,
    ``id in c``), ``ids``, ``name``, written back as JSONL (``to_jsonl``). Subclasses give ``__len__``,
    ``__getitem__`` and ``position``."""

    kind = "items"
    name: str

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __getitem__(self, i): ...  # type: ignore[override]

    @abstractmethod
    def position(self, item_id: str) -> int:
        """The position of the item with id ``item_id``; KeyError when there is none."""

    def get(self, item_id: str) -> T:
        return self[self.position(item_id)]

    def __contains__(self, item_id: object) -> bool:  # type: ignore[override]
        if not isinstance(item_id, str):
            return False
        try:
            self.position(item_id)
        except KeyError:
            return False
        return True

    @property
    def ids(self) -> list[str]:
        return [item.id for item in self]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, {self.kind}={len(self)})"

    def to_jsonl(self, path: str | os.PathLike) -> None:
        """Write the items as FlashRAG JSONL, one record per line; the loader reads them back unchanged."""
        with open(path, "w", encoding="utf-8") as f:
            for item in self:
                f.write(json.dumps(self.record(item), ensure_ascii=False) + "\n")

    @staticmethod
    def record(item: T) -> dict[str, Any]:
        """An item as a FlashRAG JSONL record."""
        raise NotImplementedError


class IdCollection(IdSequence[T]):
    """An :class:`IdSequence` held in memory; ``get(id)``, ``position(id)`` and ``id in c`` are O(1)."""

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

    def position(self, item_id: str) -> int:
        return self._index[item_id]

    @property
    def ids(self) -> list[str]:
        return list(self._index)


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


def split_contents(contents: str) -> tuple[str, str]:
    """Split FlashRAG ``contents`` into (title, text); a first line without quotes is still the title."""
    head, sep, tail = contents.partition("\n")
    if not sep:
        return "", contents.strip()
    head = head.strip()
    if len(head) >= 2 and head[0] == head[-1] == '"':
        head = head[1:-1]
    return head, tail.strip()


@dataclass(frozen=True)
class Passage:
    """A passage: ``title`` and ``text``; ``stored`` keeps a source's ``contents`` when it is not exactly what
    ``contents`` rebuilds from them (a first line without quotes, extra spaces), so it is served back unchanged.
    It takes no part in equality or the corpus fingerprint."""

    id: str
    title: str
    text: str
    stored: str | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_contents(cls, passage_id: str, contents: str) -> Passage:
        """The passage of a FlashRAG ``contents`` field (title on its first line), keeping it as stored."""
        title, text = split_contents(contents)
        return cls(passage_id, title, text, None if f'"{title}"\n{text}' == contents else contents)

    @property
    def contents(self) -> str:
        """The FlashRAG ``contents`` field: as the source stored it, else the title in double quotes, a newline,
        the text."""
        return self.stored if self.stored is not None else f'"{self.title}"\n{self.text}'


def passage_from_record(record: object, name: str, line: int, _: int = 0) -> Passage:
    """One FlashRAG corpus record (``id`` and ``contents``, or ``text`` and an optional ``title``) as a
    :class:`Passage`, its ``contents`` kept as stored; a bad record raises :class:`DataFileError`."""
    if not isinstance(record, dict):
        raise DataFileError(name, line, f"expected a JSON object, got {type(record).__name__}")
    if "id" not in record:
        raise DataFileError(name, line, "missing 'id'")
    doc_id = str(record["id"])
    if "contents" in record:
        contents = record["contents"]
        if not isinstance(contents, str):
            raise DataFileError(name, line, f"'contents' must be a string, got {type(contents).__name__}")
        passage = Passage.from_contents(doc_id, contents)
    elif "text" in record:
        if not isinstance(record["text"], str):
            raise DataFileError(name, line, f"'text' must be a string, got {type(record['text']).__name__}")
        passage = Passage(doc_id, str(record.get("title", "")), record["text"])
    else:
        raise DataFileError(name, line, "missing 'contents' (or 'text')")
    if not (passage.title or passage.text).strip():
        raise DataFileError(name, line, f"passage {doc_id!r} is empty")
    return passage


def corpus_fingerprint(passages: Iterable[Passage]) -> str:
    """A sha256 over the passages' ids, titles and texts, in order (each part length-prefixed): the key of the
    on-disk indexes built from a corpus, the same for a corpus in memory and its mapped copy."""
    digest = hashlib.sha256()
    for p in passages:
        for part in (p.id, p.title, p.text):
            data = part.encode("utf-8", "surrogatepass")
            digest.update(len(data).to_bytes(8, "little"))
            digest.update(data)
    return digest.hexdigest()


class Corpus(IdSequence[Passage]):
    """An ordered, immutable collection of passages with unique ids: what the env, IG, the retrievers and the
    server read. ``Corpus(passages, name)`` makes one in memory (a :class:`MemoryCorpus`);
    :class:`~search_env.data.mapped.MappedCorpus` keeps one on disk. Both have ``len``, ``c[i]``, iteration,
    ``get``/``position``/``in`` by id, ``ids``, ``name``, ``fingerprint`` (:func:`corpus_fingerprint`) and
    ``to_jsonl``."""

    kind = "passages"

    def __new__(cls, *args: Any, **kwargs: Any):
        return super().__new__(MemoryCorpus if cls is Corpus else cls)

    @property
    @abstractmethod
    def fingerprint(self) -> str:
        """:func:`corpus_fingerprint` of the passages."""

    @staticmethod
    def record(item: Passage) -> dict[str, str]:
        return {"id": item.id, "contents": item.contents}


class MemoryCorpus(IdCollection[Passage], Corpus):
    """A :class:`Corpus` held in memory (what ``Corpus(passages, name)`` makes)."""

    def __init__(self, passages: Iterable[Passage], name: str = "corpus"):
        super().__init__(passages, name)

    @cached_property
    def fingerprint(self) -> str:
        return corpus_fingerprint(self._items)


@dataclass(frozen=True)
class QAItem:
    id: str
    question: str
    golden_answers: tuple[str, ...]
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def supporting_doc_ids(self) -> tuple[str, ...]:
        """Gold passage ids, when the set has them (``metadata.supporting_doc_ids``)."""
        return tuple(str(i) for i in self.metadata.get("supporting_doc_ids", ()))


class QADataset(IdCollection[QAItem]):
    """An ordered, immutable collection of questions with unique ids."""

    kind = "questions"

    def __init__(self, items: Iterable[QAItem], name: str = "questions"):
        super().__init__(items, name)

    @cached_property
    def fingerprint(self) -> str:
        """A sha256 over the questions' records (ids, questions, answers, metadata), in order."""
        digest = hashlib.sha256()
        for item in self._items:
            line = json.dumps(self.record(item), sort_keys=True, ensure_ascii=False, default=str) + "\n"
            digest.update(line.encode("utf-8", "surrogatepass"))
        return digest.hexdigest()

    @staticmethod
    def record(item: QAItem) -> dict[str, Any]:
        return {"id": item.id, "question": item.question, "golden_answers": list(item.golden_answers),
                "metadata": dict(item.metadata)}
