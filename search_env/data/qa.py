"""Question sets in FlashRAG JSONL: ``{"id", "question", "golden_answers": [...], "metadata": {...}}``.

Intermediate answers (:func:`sub_answers`) come from ``metadata.sub_answers`` (a list of strings, for any data), or
are derived from what the set records: MuSiQue's and the built-in world's ``question_decomposition`` answers,
2Wiki's ``evidences`` triples (their objects), HotpotQA bridge questions' supporting titles not named in the question.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from search_env.data.collection import QADataset, QAItem, parse_records
from search_env.data.errors import DataFileError

__all__ = ["QADataset", "QAItem", "load_hf_questions", "load_questions", "qa_item_from_record", "sub_answers"]


def sub_answers(item: QAItem) -> tuple[str, ...]:
    """The answers of a question's intermediate hops, in order, without the final answer; ``()`` where unknown.

    ``metadata["sub_answers"]`` (strings) when given; else the ``answer`` of each ``question_decomposition`` entry
    (MuSiQue, the built-in world); else the object of each ``evidences`` triple (2Wiki: a bridge entity, or a
    compared date or place); else, for a HotpotQA ``bridge`` question, each supporting title (its parenthesised
    part dropped) of which fewer than half the words occur in the question: the bridge entity the question does not
    name.
    """
    from search_env.rewards import normalize_answer

    meta = item.metadata
    if meta.get("sub_answers") is not None:
        found = [str(a) for a in meta["sub_answers"]]
    elif meta.get("question_decomposition"):
        found = [str(d.get("answer", "")) for d in meta["question_decomposition"] if isinstance(d, Mapping)]
    elif meta.get("evidences"):
        found = [str(e[2]) for e in meta["evidences"] if isinstance(e, (list, tuple)) and len(e) == 3]
    elif meta.get("type") == "bridge" and meta.get("supporting_titles"):
        words = set(normalize_answer(item.question).split())
        found = []
        for title in meta["supporting_titles"]:
            name = str(title).split(" (")[0]
            title_words = normalize_answer(name).split()
            if title_words and sum(w in words for w in title_words) < len(title_words) / 2:
                found.append(name)
    else:
        found = []
    finals = {normalize_answer(a) for a in item.golden_answers}
    out = [a.strip() for a in found if normalize_answer(a) and normalize_answer(a) not in finals]
    return tuple(dict.fromkeys(out))


def load_questions(source: str | os.PathLike | QADataset | Iterable[Mapping] | None = None) -> QADataset:
    """Load questions from a FlashRAG JSONL path, a list of dicts, or pass a QADataset through; ``None`` (or
    ``"builtin"``) is the built-in world's questions.

    A bad record (bad JSON, missing ``question``, empty ``golden_answers``, duplicate id) raises
    :class:`DataFileError` naming the file, the line and the fault.
    """
    if isinstance(source, QADataset):
        return source
    if source is None or source == "builtin":
        from search_env.data.synthetic import build_world

        return build_world().questions
    items, name = parse_records(
        source, lambda record, name, line, n: qa_item_from_record(record, name, line, default_id=f"q{n}"),
        empty="no questions",
    )
    return QADataset(items, name=name)


def qa_item_from_record(record: object, name: str, line: int | None, default_id: str) -> QAItem:
    """Validate one record; ``answer`` (a string) is accepted where ``golden_answers`` is missing."""
    if not isinstance(record, Mapping):
        raise DataFileError(name, line, f"expected a JSON object, got {type(record).__name__}")
    question = record.get("question")
    if not isinstance(question, str) or not question.strip():
        raise DataFileError(name, line, "missing or empty 'question'")
    answers = record.get("golden_answers", record.get("answer"))
    if isinstance(answers, str):
        answers = [answers]
    if not isinstance(answers, (list, tuple)) or not answers:
        raise DataFileError(name, line, "missing or empty 'golden_answers'")
    answers = [str(a) for a in answers if str(a).strip()]
    if not answers:
        raise DataFileError(name, line, "'golden_answers' holds only empty strings")
    metadata = record.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise DataFileError(name, line, f"'metadata' must be an object, got {type(metadata).__name__}")
    qid = str(record["id"]) if record.get("id") is not None else default_id
    return QAItem(qid, question.strip(), tuple(answers), dict(metadata))


def load_hf_questions(
    name_or_path: str,
    split: str = "test",
    *,
    config: str | None = None,
    question_key: str = "question",
    answers_key: str = "golden_answers",
    limit: int | None = None,
    data_files: str | os.PathLike | list | dict | None = None,
) -> QADataset:
    """Load questions with Hugging Face ``datasets``: a local dataset dir (``save_to_disk``), a local
    data file, or a hub name (needs network). Rows are validated like JSONL records.

    ``data_files`` goes to ``datasets.load_dataset(name_or_path, config, data_files=...)`` as it is: a builder and
    its files (``load_hf_questions("csv", data_files="qa.csv")``), or some files of a dataset. Files without named
    splits are one split (``train``), used whatever ``split`` says.
    """
    try:
        import datasets  # heavy; only here
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("load_hf_questions needs `datasets`: pip install 'search_env[hf]'") from e

    path = Path(name_or_path)
    if data_files is not None:
        files = os.fspath(data_files) if isinstance(data_files, os.PathLike) else data_files
        ds = datasets.load_dataset(name_or_path, config, data_files=files)
        if split not in ds and len(ds) != 1:
            raise DataFileError(name_or_path, None, f"no split {split!r} in data_files (splits: {sorted(ds)})")
        ds = ds[split] if split in ds else next(iter(ds.values()))
    elif path.is_dir() and (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[split]
    elif path.is_file():
        fmt = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}.get(path.suffix, "json")
        ds = datasets.load_dataset(fmt, data_files=str(path), split="train")
    else:
        ds = datasets.load_dataset(name_or_path, config, split=split)
    items: list[QAItem] = []
    seen: set[str] = set()
    for i, row in enumerate(ds):
        if limit is not None and i >= limit:
            break
        record = dict(row)
        record["question"] = row.get(question_key)
        record["golden_answers"] = row.get(answers_key, row.get("answer"))
        item = qa_item_from_record(record, name_or_path, i + 1, default_id=f"{split}_{i}")
        if item.id in seen:
            raise DataFileError(name_or_path, i + 1, f"duplicate id {item.id!r}")
        seen.add(item.id)
        items.append(item)
    if not items:
        raise DataFileError(name_or_path, None, "no questions")
    return QADataset(items, name=name_or_path)
