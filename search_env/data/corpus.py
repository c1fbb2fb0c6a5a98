"""Passage corpora in FlashRAG JSONL: one ``{"id", "contents": "\\"Title\\"\\nText"}`` object a line."""

from __future__ import annotations

import os
from collections.abc import Iterable

from search_env.data.collection import Corpus, Passage, parse_records
from search_env.data.errors import DataFileError

__all__ = ["Corpus", "Passage", "load_corpus", "split_contents"]


def split_contents(contents: str) -> tuple[str, str]:
    """Split FlashRAG ``contents`` into (title, text); a first line without quotes is still the title."""
    head, sep, tail = contents.partition("\n")
    if not sep:
        return "", contents.strip()
    head = head.strip()
    if len(head) >= 2 and head[0] == head[-1] == '"':
        head = head[1:-1]
    return head, tail.strip()


def load_corpus(source: str | os.PathLike | Corpus | Iterable[dict] | None = None) -> Corpus:
    """Load a FlashRAG corpus from a JSONL path, a list of dicts, or pass a Corpus through; ``None`` (or
    ``"builtin"``) is the built-in world's corpus.

    Each record needs ``id`` and either ``contents`` or ``text`` (with an optional ``title``).
    A bad record raises :class:`DataFileError` naming the file, the line and the fault.
    """
    if isinstance(source, Corpus):
        return source
    if source is None or source == "builtin":
        from search_env.data.synthetic import build_world

        return build_world().corpus
    passages, name = parse_records(source, _passage_from_record, empty="the corpus has no passages")
    return Corpus(passages, name=name)


def _passage_from_record(record: object, name: str, line: int, _: int) -> Passage:
    if not isinstance(record, dict):
        raise DataFileError(name, line, f"expected a JSON object, got {type(record).__name__}")
    if "id" not in record:
        raise DataFileError(name, line, "missing 'id'")
    doc_id = str(record["id"])
    if "contents" in record:
        contents = record["contents"]
        if not isinstance(contents, str):
            raise DataFileError(name, line, f"'contents' must be a string, got {type(contents).__name__}")
        title, text = split_contents(contents)
    elif "text" in record:
        title, text = str(record.get("title", "")), record["text"]
        if not isinstance(text, str):
            raise DataFileError(name, line, f"'text' must be a string, got {type(text).__name__}")
    else:
        raise DataFileError(name, line, "missing 'contents' (or 'text')")
    if not (title or text).strip():
        raise DataFileError(name, line, f"passage {doc_id!r} is empty")
    return Passage(doc_id, title, text)
