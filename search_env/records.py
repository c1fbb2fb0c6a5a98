"""The episode record (format version 1): what one episode did, as JSON, for ``search-env eval``'s output, a
training run's sample episodes and ``search-env view``.

One record is a JSON object::

    {"schema_version": 1, "id": str, "question": str, "golden_answers": [str, ...],
     "prediction": str | null, "em": float, "f1": float, "n_searches": int, "return": float,
     "hops": int | null, "question_type": str | null, "dialect": str | null,
     "search_credit": [float | null, ...] | null, "turns": [TURN, ...], ...}

and each turn::

    {"text": str, "action_type": "search" | "answer" | "invalid", "reward": float,
     "reward_components": {name: float}, "query": str, "doc_ids": [str], "passages": [PASSAGE],
     "ig": float | null, "ig_detail": {"baseline": str, "logp_real": float | null, "logp_random": [float],
     "logp_baseline": float | null}, "doc_gains": [float] | null, "credit": float | null,
     "invalid_reason": str}

with ``PASSAGE = {"doc_id": str, "title": str, "text": str, "score": float}``. ``query``, ``doc_ids``,
``passages``, ``ig``, ``ig_detail``, ``doc_gains`` and ``credit`` are on search turns only (``ig_detail`` when IG
was scored, ``doc_gains`` with ``IGConfig(per_document=True)``, ``credit`` when the env gave search credit);
``invalid_reason`` on invalid turns only. ``hops`` is the question's ``metadata.hops``, else the length of its
``question_decomposition`` or ``supporting_titles``; ``question_type`` its ``metadata.type``. Any other key (such as
eval's ``dataset`` or a training run's ``step``) is kept as it is.

:func:`episode_record` builds one from an env's step infos; :func:`check_record` validates a dict;
:func:`read_records` reads a JSONL file or a JSON list of them, raising
:class:`~search_env.data.errors.DataFileError` that names the file, the line (or list index) and the field.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from search_env.data.errors import DataFileError, iter_jsonl

SCHEMA_VERSION = 1
ACTION_TYPES = ("search", "answer", "invalid")
_HEADER_KEY = "search_env"  # a ResumableJSONL settings line (search_env.data.jsonl), skipped when reading


def passage(hit) -> dict:
    """A retrieved passage (a :class:`~search_env.retrieval.base.Hit`) as a record's ``PASSAGE``."""
    return {"doc_id": str(hit.doc_id), "title": str(hit.title), "text": str(hit.text), "score": float(hit.score)}


def turn_record(text: str, reward: float, info: Mapping, hits: Sequence | None = None) -> dict:
    """One turn of a record from the policy's ``text``, the step's ``reward`` and ``info`` (a single env's, not a
    vector env's) and, on a search, the passages it returned (``hits``)."""
    kind = info["action_type"]
    components = {k: float(v) for k, v in (info.get("reward_components") or {}).items()}
    turn: dict[str, Any] = {"text": text, "action_type": kind, "reward": float(reward), "reward_components": components}
    if kind == "search":
        turn["query"] = info.get("query")
        turn["doc_ids"] = [str(d) for d in info.get("doc_ids") or []]
        turn["passages"] = [passage(h) for h in hits or []]
        turn["ig"] = _float(info.get("ig"))
        if info.get("ig_detail") is not None:
            detail = info["ig_detail"]
            turn["ig_detail"] = {"baseline": detail.get("baseline"), "logp_real": _float(detail.get("logp_real")),
                                 "logp_random": [float(x) for x in detail.get("logp_random") or []],
                                 "logp_baseline": _float(detail.get("logp_baseline"))}
        if info.get("doc_gains") is not None:
            turn["doc_gains"] = [float(x) for x in info["doc_gains"]]
    elif kind == "invalid":
        turn["invalid_reason"] = info.get("invalid_reason")
    return turn


def episode_record(item, turns: Sequence[dict], last_info: Mapping, *, dialect: str | None = None, **extra) -> dict:
    """The record of an episode of question ``item`` (a :class:`~search_env.data.collection.QAItem`) whose turns
    are ``turns`` (:func:`turn_record`) and whose last step's info is ``last_info``; its ``search_credit`` (when the
    env gave one) is also put on each search turn as ``credit``. ``extra`` keys are added as they are."""
    turns = [dict(t) for t in turns]
    credit = last_info.get("search_credit")
    if credit is not None:
        credit = [_float(c) for c in credit]
        for turn, value in zip((t for t in turns if t["action_type"] == "search"), credit):
            turn["credit"] = value
    meta = item.metadata or {}
    return {
        "schema_version": SCHEMA_VERSION,
        "id": str(item.id),
        "question": item.question,
        "golden_answers": list(item.golden_answers),
        "prediction": last_info.get("prediction"),
        "em": float(last_info.get("em", 0.0)),
        "f1": float(last_info.get("f1", 0.0)),
        "n_searches": sum(t["action_type"] == "search" for t in turns),
        "return": float(sum(t["reward"] for t in turns)),
        "hops": _hops(meta),
        "question_type": str(meta["type"]) if meta.get("type") is not None else None,
        "dialect": dialect,
        "search_credit": credit,
        "turns": turns,
        **extra,
    }


def vector_info_at(infos: Mapping, i: int) -> dict:
    """Sub-env ``i``'s info out of a vector env's batched ``infos`` (dicts of arrays with ``_key`` masks)."""
    out = {}
    for key, value in infos.items():
        mask = infos.get(f"_{key}")
        if key.startswith("_") or (mask is not None and not mask[i]):
            continue
        out[key] = vector_info_at(value, i) if isinstance(value, Mapping) else _plain(value[i])
    return out


def _plain(x):
    return x.item() if hasattr(x, "item") and getattr(x, "ndim", 1) == 0 else x


def _hops(meta: Mapping) -> int | None:
    if isinstance(meta.get("hops"), int | float) and not isinstance(meta.get("hops"), bool):
        return int(meta["hops"])
    for key in ("question_decomposition", "supporting_titles"):
        if meta.get(key):
            return len(meta[key])
    return None


def _float(x) -> float | None:
    return None if x is None else float(x)


# --- validation -------------------------------------------------------------------------------------------------

def _number(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


_CHECKS = {"str": lambda v: isinstance(v, str), "number": _number, "list": lambda v: isinstance(v, list),
           "int": lambda v: isinstance(v, int) and not isinstance(v, bool), "dict": lambda v: isinstance(v, dict)}


def _is(kind: str, x) -> bool:
    if kind[-1] == "?":
        return x is None or _CHECKS[kind[:-1]](x)
    return _CHECKS[kind](x)


_EPISODE_FIELDS = {"id": "str", "question": "str", "golden_answers": "list", "prediction": "str?", "em": "number",
                   "f1": "number", "n_searches": "int", "return": "number", "hops": "int?", "question_type": "str?",
                   "dialect": "str?", "search_credit": "list?", "turns": "list"}
_TURN_FIELDS = {"text": "str", "action_type": "str", "reward": "number", "reward_components": "dict"}
_SEARCH_FIELDS = {"query": "str", "doc_ids": "list", "passages": "list", "ig": "number?", "ig_detail": "dict?",
                  "doc_gains": "list?", "credit": "number?"}
_PASSAGE_FIELDS = {"doc_id": "str", "title": "str", "text": "str", "score": "number"}


def record_problem(record: object) -> str | None:
    """What is wrong with ``record`` as a version-1 episode record (naming the field), or ``None``."""
    if not isinstance(record, dict):
        return f"expected an episode record (a JSON object), got {type(record).__name__}"
    version = record.get("schema_version")
    if version != SCHEMA_VERSION:
        got = "no schema_version" if "schema_version" not in record else f"schema_version {version!r}"
        return f"{got}: not a search_env episode record version {SCHEMA_VERSION}"
    problem = _fields(record, _EPISODE_FIELDS, "")
    if problem:
        return problem
    if not all(isinstance(a, str) for a in record["golden_answers"]):
        return "golden_answers: expected a list of strings"
    for i, turn in enumerate(record["turns"]):
        where = f"turns[{i}]"
        if not isinstance(turn, dict):
            return f"{where}: expected an object, got {type(turn).__name__}"
        problem = _fields(turn, _TURN_FIELDS, where + ".")
        if problem:
            return problem
        if not all(map(_number, turn["reward_components"].values())):
            return f"{where}.reward_components: expected finite numbers"
        if turn["action_type"] not in ACTION_TYPES:
            return f"{where}.action_type: expected one of {', '.join(ACTION_TYPES)}, got {turn['action_type']!r}"
        if turn["action_type"] == "search":
            problem = _fields(turn, _SEARCH_FIELDS, where + ".", required=("query", "doc_ids", "passages"))
            problem = problem or _search_problem(turn, where)
            if problem:
                return problem
    return None


def _search_problem(turn: dict, where: str) -> str | None:
    for j, p in enumerate(turn["passages"]):
        if not isinstance(p, dict):
            return f"{where}.passages[{j}]: expected an object, got {type(p).__name__}"
        problem = _fields(p, _PASSAGE_FIELDS, f"{where}.passages[{j}].")
        if problem:
            return problem
    detail = turn.get("ig_detail")
    if detail is not None:
        for key in ("logp_real", "logp_baseline"):
            if not _is("number?", detail.get(key)):
                return f"{where}.ig_detail.{key}: expected a finite number or null, got {detail.get(key)!r}"
        if not (isinstance(detail.get("logp_random", []), list) and all(map(_number, detail.get("logp_random", [])))):
            return f"{where}.ig_detail.logp_random: expected a list of numbers"
    if turn.get("doc_gains") is not None and not all(map(_number, turn["doc_gains"])):
        return f"{where}.doc_gains: expected a list of numbers"
    return None


def _fields(obj: dict, fields: Mapping[str, str], where: str, required: Sequence[str] | None = None) -> str | None:
    for key, kind in fields.items():
        needed = key in required if required is not None else not kind.endswith("?")
        if key not in obj:
            if needed:
                return f"{where}{key}: missing"
            continue
        if not _is(kind, obj[key]):
            want = {"str": "a string", "number": "a finite number", "int": "an integer", "list": "a list",
                    "dict": "an object"}[kind.rstrip("?")] + (" or null" if kind.endswith("?") else "")
            shown = json.dumps(obj[key])[:60] if _jsonable(obj[key]) else repr(obj[key])[:60]
            return f"{where}{key}: expected {want}, got {shown}"
    return None


def _jsonable(x) -> bool:
    try:
        json.dumps(x)
        return True
    except (TypeError, ValueError):
        return False


def check_record(record: object, source: str = "record", line: int | None = None) -> dict:
    """``record`` itself if it is a valid version-1 episode record, else :class:`DataFileError` naming ``source``,
    ``line`` and the field."""
    problem = record_problem(record)
    if problem:
        raise DataFileError(source, line, problem)
    return record  # type: ignore[return-value]


# --- files ------------------------------------------------------------------------------------------------------

def read_records(path: str | os.PathLike) -> list[dict]:
    """The episode records of a file: JSONL (one record a line; ``search-env eval``'s settings lines are skipped)
    or a JSON list of records. A bad line or record raises :class:`DataFileError` naming the file and the line (for
    a JSON list, the line where the bad record starts)."""
    path = Path(path)
    if path.is_dir():
        raise DataFileError(str(path), None, "is a directory, expected a file of episode records")
    if not path.exists():
        raise DataFileError(str(path), None, "no such file")
    with open(path, "rb") as f:
        head = f.read(4096).lstrip()
    if head.startswith(b"["):
        return _read_list(path)
    records = []
    for line, obj in iter_jsonl(path):
        if isinstance(obj, dict) and _HEADER_KEY in obj and "settings" in obj:
            continue
        records.append(check_record(obj, str(path), line))
    return records


def _read_list(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    try:
        items = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataFileError(str(path), e.lineno, f"invalid JSON ({e.msg} at column {e.colno})") from None
    decoder, records, pos = json.JSONDecoder(), [], text.index("[") + 1
    for i, item in enumerate(items):
        while text[pos] in " \t\r\n,":  # find where item i starts, for the error's line number
            pos += 1
        line = text.count("\n", 0, pos) + 1
        _, pos = decoder.raw_decode(text, pos)
        problem = record_problem(item)
        if problem:
            raise DataFileError(str(path), line, f"record {i}: {problem}")
        records.append(item)
    return records


def write_records(path: str | os.PathLike, records: Sequence[Mapping], *, append: bool = False) -> None:
    """Write (or append) ``records`` as JSONL, each checked first (a bad one raises before anything is written)."""
    for i, record in enumerate(records):
        check_record(dict(record), f"records[{i}]")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a" if append else "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
