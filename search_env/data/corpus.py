"""Passage corpora in FlashRAG JSONL: one ``{"id", "contents": "\\"Title\\"\\nText"}`` object a line."""

from __future__ import annotations

import os
from collections.abc import Iterable

from search_env.data.collection import Corpus, Passage, parse_records, passage_from_record, split_contents

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
