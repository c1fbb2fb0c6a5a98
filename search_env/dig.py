"""DIG labels (InfoGain-RAG's Document Information Gain) for a QA set and a corpus, and how well they rank gold
passages: what ``search-env dig`` writes and reports.

For each question the env searches the question itself (top ``topk`` passages) with
``IGConfig(per_document=True)``, and each retrieved passage's DIG is its ``doc_gains`` entry: the score of the
gold answer with that passage alone as the search's documents minus the score with no documents
(:mod:`search_env.info_gain`), scored by the model the env is given. One JSONL row per (question, passage):
``question_id``, ``question``, ``doc_id``, ``title``, ``rank`` (BM25's, from 0), ``n_passages``, ``bm25`` (the
retriever's score), ``dig`` and ``gold`` (the passage is one of the question's ``supporting_doc_ids``; null when
the set has none).

:func:`ranking_auc` measures a ranking of each question's retrieved passages against its gold ones: over every
(gold, non-gold) pair of passages retrieved for the same question, the share that the score orders right (ties
count one half), pooled over questions that have both kinds.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from search_env.data.qa import QAItem
from search_env.env import SearchQAEnv
from search_env.info_gain import search_block

__all__ = ["dig_rows", "finished_questions", "label", "ranking_auc"]


def dig_rows(env: SearchQAEnv, item: QAItem, *, seed: int = 0) -> list[dict]:
    """The DIG rows of one question (see the module docstring); ``env`` must score IG with ``per_document=True``."""
    if env.ig_config is None or not env.ig_config.per_document:
        raise ValueError("DIG labels need an env made with ig=IGConfig(per_document=True)")
    env.reset(seed=seed, options={"question_id": item.id})
    info = env.step(search_block(item.question))[4]
    gains = info.get("doc_gains") or [None] * len(info["doc_ids"])
    gold = set(item.supporting_doc_ids)
    return [{"question_id": item.id, "question": item.question, "doc_id": doc_id, "title": hit.title, "rank": rank,
             "n_passages": len(info["doc_ids"]), "bm25": score, "dig": gain, "gold": (doc_id in gold) if gold else None}
            for rank, (doc_id, score, gain, hit) in enumerate(zip(info["doc_ids"], info["doc_scores"], gains,
                                                                  env.steps[-1].hits))]


def finished_questions(path: str | os.PathLike) -> dict[str, list[dict]]:
    """The rows of an earlier run, by question, keeping only questions whose rows are all there; the file is cut
    back to the end of the last complete question (a crash mid-write leaves a torn or partial tail)."""
    path = Path(path)
    done: dict[str, list[dict]] = {}
    if not path.exists():
        return done
    good, offset, group = 0, 0, []
    with open(path, "rb") as f:
        for raw in f:
            try:
                row = json.loads(raw) if raw.endswith(b"\n") else None
            except ValueError:
                row = None
            if row is None:
                break
            group.append(row)
            offset += len(raw)
            if len(group) == row["n_passages"] or row["n_passages"] == 0:
                done[row["question_id"]] = group
                good, group = offset, []
    if good != path.stat().st_size:
        with open(path, "r+b") as f:
            f.truncate(good)
    return done


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


def write_rows(out, rows: Sequence[dict]) -> None:
    """Append one question's rows in one write, then flush to disk (a crash loses at most this question)."""
    out.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    out.flush()
    os.fsync(out.fileno())


def label(questions: Iterable[QAItem], env: SearchQAEnv, output: str | os.PathLike, *, seed: int = 0,
          progress: bool = True) -> tuple[dict[str, list[dict]], int]:
    """DIG rows of every question into ``output`` (JSONL), resuming an earlier run; ``(rows by question, how
    many were already there)``."""
    done = finished_questions(output)
    resumed = len(done)
    items = [q for q in questions if q.id not in done]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(items) + resumed, initial=resumed, desc="DIG", unit="question")
    with open(output, "a", encoding="utf-8") as out:
        for item in items:
            rows = dig_rows(env, item, seed=seed)
            write_rows(out, rows)
            done[item.id] = rows
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return done, resumed
