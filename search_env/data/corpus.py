"""Passage corpora in FlashRAG JSONL: one ``{"id", "contents": "\\"Title\\"\\nText"}`` object a line."""

from __future__ import annotations

import os
from collections.abc import Iterable

from search_env.data.collection import Corpus, Passage, parse_records, split_contents
from search_env.data.errors import DataFileError

__all__ = ["Corpus", "Passage", "load_corpus", "split_contents"]


def load_corpus(source: str | os.PathLike | Corpus | Iterable[dict] | None = None, *, mmap: bool = False) -> Corpus:
    """Load a FlashRAG corpus from a JSONL path, a list of dicts, or pass a Corpus through; ``None`` (or
    ``"builtin"``) is the built-in world's corpus.

    Each record needs ``id`` and either ``contents`` or ``text`` (with an optional ``title``).
    A bad record raises :class:`DataFileError` naming the file, the line and the fault.

    ``mmap=True`` (a path only): a :class:`~search_env.data.mapped.MappedCorpus`, built once into the cache and
    memory-mapped, so a large corpus costs no memory per process (:mod:`search_env.data.mapped`).
    """
    if isinstance(source, Corpus):
        return source
    if mmap:
        if not isinstance(source, (str, os.PathLike)) or source == "builtin":
            raise ValueError("mmap=True needs a corpus JSONL path")
        from search_env.data.mapped import load_mapped_corpus

        return load_mapped_corpus(source)
    if source is None or source == "builtin":
        from search_env.data.synthetic import build_world

        return build_world().corpus
    passages, name = parse_records(source, passage_from_record, empty="the corpus has no passages")
    return Corpus(passages, name=name)


def passage_from_record(record: object, name: str, line: int, _: int) -> Passage:
    """One corpus record as a :class:`Passage` (a ``contents`` field is kept as stored)."""
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
