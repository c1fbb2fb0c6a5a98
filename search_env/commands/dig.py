"""DIG labels (InfoGain-RAG's Document Information Gain) for a QA set and a corpus, and how well they rank gold
passages: what ``search-env dig`` writes and reports.

For each question the env searches the question itself (top ``topk`` passages) with
``IGConfig(per_document=True)``, and each retrieved passage's DIG is its ``doc_gains`` entry: the score of the
gold answer with that passage alone as the search's documents minus the score with no documents
(:mod:`search_env.info_gain`), scored by the model the env is given. One JSONL row per (question, passage):
``question_id``, ``question``, ``doc_id``, ``title``, ``rank`` (BM25's, from 0), ``n_passages``, ``bm25`` (the
retriever's score), ``dig`` and ``gold`` (the passage is one of the question's ``supporting_doc_ids``; null when
the set has none). The file starts with a settings header and is resumed only by a run with the same settings
(:mod:`search_env.commands.jsonl`): the questions and corpus, retriever, scorer, ``topk``, seed and IG settings.

:func:`ranking_auc` measures a ranking of each question's retrieved passages against its gold ones: over every
(gold, non-gold) pair of passages retrieved for the same question, the share that the score orders right (ties
count one half), pooled over questions that have both kinds.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping

from search_env.commands.jsonl import ResumableJSONL, read_units
from search_env.data.qa import QAItem
from search_env.env import SearchQAEnv
from search_env.info_gain import IGConfig, search_block

__all__ = ["dig_rows", "finished_questions", "label", "ranking_auc"]


def dig_rows(env: SearchQAEnv, item: QAItem, *, seed: int = 0) -> list[dict]:
    """The DIG rows of one question (see the module docstring); ``env`` must score IG with ``per_document=True``."""
    _require_per_document(env)
    env.reset(seed=seed, options={"question_id": item.id})
    info = env.step(search_block(item.question))[4]
    gains = info.get("doc_gains") or [None] * len(info["doc_ids"])
    gold = set(item.supporting_doc_ids)
    return [{"question_id": item.id, "question": item.question, "doc_id": doc_id, "title": hit.title, "rank": rank,
             "n_passages": len(info["doc_ids"]), "bm25": score, "dig": gain, "gold": (doc_id in gold) if gold else None}
            for rank, (doc_id, score, gain, hit) in enumerate(zip(info["doc_ids"], info["doc_scores"], gains,
                                                                  env.steps[-1].hits))]


def _require_per_document(env: SearchQAEnv) -> None:
    if env.ig_config is None or not env.ig_config.per_document:
        raise ValueError("DIG labels need an env made with ig=IGConfig(per_document=True)")


def _question_complete(rows: list[dict]) -> bool:
    return len(rows) == rows[-1]["n_passages"]


def finished_questions(path: str | os.PathLike) -> dict[str, list[dict]]:
    """The rows of an earlier run, by question, keeping only questions whose rows are all there (a crash mid-write
    leaves a torn or partial tail, which the next :func:`label` cuts off); the file is neither checked nor changed."""
    if not os.path.exists(path):
        return {}
    _, units, _ = read_units(path, _question_complete)
    return {rows[0]["question_id"]: rows for rows in units}


def ranking_auc(rows: Iterable[dict], key: str) -> tuple[float, int]:
    """``(AUC, pairs)`` of ranking each question's gold passages above its other retrieved ones by ``key``
    (``"dig"``, or ``"bm25"``); NaN when no question has both a gold and a non-gold passage scored."""
    by_question: dict[str, list[dict]] = {}
    for row in rows:
        if row.get("gold") is not None and row.get(key) is not None:
            by_question.setdefault(row["question_id"], []).append(row)
    right, pairs = 0.0, 0
    for group in by_question.values():
        gold = [r[key] for r in group if r["gold"]]
        other = [r[key] for r in group if not r["gold"]]
        for g in gold:
            for o in other:
                right += 1.0 if g > o else 0.5 if g == o else 0.0
                pairs += 1
    return (right / pairs if pairs else float("nan")), pairs


def ig_settings(config: IGConfig) -> dict:
    """An IG configuration as plain values, for a settings header (functions by their qualified names)."""
    def plain(value):
        if callable(value):
            return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', repr(value))}"
        return repr(value) if dataclasses.is_dataclass(value) else value

    return {f.name: plain(getattr(config, f.name)) for f in dataclasses.fields(config) if f.repr}


def label(questions: Iterable[QAItem], env: SearchQAEnv, output: str | os.PathLike, *, seed: int = 0,
          settings: Mapping | None = None, progress: bool = True) -> tuple[dict[str, list[dict]], int]:
    """DIG rows of every question into ``output`` (JSONL), resuming an earlier run made with the same settings;
    ``(rows of these questions by question, how many of them were already there)``.

    ``settings`` describe what the env cannot tell (the data, retriever and scorer, as the command names them);
    ``seed``, ``env.topk`` and the env's IG settings are added to them.

    Raises:
        ResumeRefused: ``output`` was made with other settings, by another command, or has no settings header.
    """
    _require_per_document(env)
    settings = {**(settings or {}), "seed": seed, "topk": env.topk, "ig": ig_settings(env.ig_config)}
    log = ResumableJSONL(output, "dig", settings, complete=_question_complete)
    earlier = {rows[0]["question_id"]: rows for rows in log.units}
    questions = list(questions)
    done = {q.id: earlier[q.id] for q in questions if q.id in earlier}
    resumed = len(done)
    items = [q for q in questions if q.id not in done]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(items) + resumed, initial=resumed, desc="DIG", unit="question")
    with log:
        for item in items:
            rows = dig_rows(env, item, seed=seed)
            log.append(rows)
            done[item.id] = rows
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return {q.id: done[q.id] for q in questions}, resumed
