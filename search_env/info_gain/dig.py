"""DIG labels (InfoGain-RAG's Document Information Gain, arXiv 2509.12765) for a QA set and a corpus, and how well
they rank gold passages: what ``search-env dig`` writes and reports.

For each question the env (:func:`dig_env`) searches the question itself (top ``topk`` passages); its deferred IG
request names each passage alone as the search's documents, and the search with no documents. Only those
``topk + 1`` contexts are scored (:func:`dig_scorer`), and a passage's DIG is its confidence in the gold answer with
the passage minus the confidence without any. The default confidence is InfoGain-RAG's (``"infogain"``:
:func:`~search_env.scoring.score_format.infogain_confidence`, in [0, 1], so DIG is in [-1, 1]); ``"logprob"`` is
the head-weighted mean log-probability the IG reward uses (nats per token, unbounded). A passage's ``label`` is 1
(helpful) when its DIG exceeds ``threshold`` and 0 (useless or harmful) otherwise (:func:`dig_label`): the
paper's classification target, with the sign of the gain (threshold 0) as the cut, as the paper's summaries
describe it ("positive/negative gain"); the paper's exact cut was not in the sources we could read.

One JSONL row per (question, passage): ``question_id``, ``question``, ``doc_id``, ``title``, ``rank`` (BM25's,
from 0), ``n_passages``, ``bm25`` (the retriever's score), ``confidence`` (with the passage),
``confidence_without``, ``dig``, ``label`` and ``gold`` (the passage is one of the question's ``supporting_doc_ids``;
null when the set has none). The file starts with a settings header and is resumed only by a run with the same
settings (:mod:`search_env.data.jsonl`): the questions and corpus, retriever, scorer, confidence, threshold,
``topk``, seed and IG settings.

:func:`ranking_auc` measures a ranking of each question's retrieved passages against its gold ones: over every
(gold, non-gold) pair of passages retrieved for the same question, the share that the score orders right (ties
count one half), pooled over questions that have both kinds.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from typing import Any

from search_env.data.jsonl import ResumableJSONL, read_units
from search_env.data.qa import QAItem
from search_env.env import SearchQAEnv
from search_env.info_gain import IGConfig, search_block
from search_env.info_gain.gain import score_pairs
from search_env.scoring.score_format import CONFIDENCES, ScoreFormat

__all__ = ["CONFIDENCES", "dig_env", "dig_label", "dig_rows", "dig_scorer", "finished_questions", "label",
           "ranking_auc"]

DIG_IG = IGConfig(per_document=True, baseline="none", deferred=True)  # the env only names the contexts


def dig_env(questions: Any, corpus: Any, *, retriever: Any = "bm25", topk: int = 5) -> SearchQAEnv:
    """The env DIG rows are read from: it retrieves ``topk`` passages and scores nothing itself."""
    return SearchQAEnv(questions=questions, corpus=corpus, retriever=retriever, topk=topk, max_turns=2, ig=DIG_IG)


class _OnFirstUse:
    """A scorer built on its first ``score`` call (a run whose retrieval fails loads no model)."""

    def __init__(self, build, score_format: ScoreFormat):
        self._build, self._scorer, self.score_format = build, None, score_format

    def score(self, contexts, answers):
        if self._scorer is None:
            self._scorer = self._build()
        return self._scorer.score(contexts, answers)


def dig_scorer(spec: Any = "bundled", confidence: str = "infogain") -> Any:
    """A scorer of ``confidence`` on the model ``spec`` (a name or folder, or vLLM server URLs), loaded on first
    use; an object with ``score`` is returned as it is.

    Raises:
        ValueError: an unknown ``confidence``.
    """
    if confidence not in CONFIDENCES:
        raise ValueError(f"confidence must be one of {CONFIDENCES}, not {confidence!r}")
    if callable(getattr(spec, "score", None)):
        return spec
    score_format = ScoreFormat(confidence=confidence)
    urls = [spec] if isinstance(spec, str) else list(spec)
    if all(str(u).startswith(("http://", "https://")) for u in urls):
        from search_env.scoring.servers import VLLMScorer

        return _OnFirstUse(lambda: VLLMScorer(urls, "bundled", score_format=score_format), score_format)
    from search_env.scoring.transformers_scorer import TransformersScorer

    return _OnFirstUse(lambda: TransformersScorer.from_pretrained(spec, confidence=confidence), score_format)


def dig_label(dig: float, threshold: float = 0.0) -> int:
    """1 (helpful) when ``dig`` exceeds ``threshold``, else 0 (useless or harmful)."""
    return int(dig > threshold)


def dig_rows(env: SearchQAEnv, scorer: Any, item: QAItem, *, seed: int = 0, threshold: float = 0.0) -> list[dict]:
    """The DIG rows of one question (see the module docstring), scoring with ``scorer`` only the contexts they
    report; ``env`` must be made like :func:`dig_env` (per-document, deferred IG)."""
    _require_per_document(env)
    env.reset(seed=seed, options={"question_id": item.id})
    info = env.step(search_block(item.question))[4]
    request = info.get("ig_request")
    if request is None:  # nothing retrieved
        return []
    requests = request.requests
    scores = score_pairs(scorer, requests.document_pairs)
    gains = requests.document_gains(scores)
    gold = set(item.supporting_doc_ids)
    return [{"question_id": item.id, "question": item.question, "doc_id": doc_id, "title": hit.title, "rank": rank,
             "n_passages": len(info["doc_ids"]), "bm25": score, "confidence": float(with_doc),
             "confidence_without": float(scores[-1]), "dig": gain, "label": dig_label(gain, threshold),
             "gold": (doc_id in gold) if gold else None}
            for rank, (doc_id, score, gain, with_doc, hit) in enumerate(zip(info["doc_ids"], info["doc_scores"], gains,
                                                                            scores, env.steps[-1].hits))]


def _require_per_document(env: SearchQAEnv) -> None:
    config = env.ig_config
    if config is None or not config.per_document or not config.deferred:
        raise ValueError("DIG labels need an env made with ig=IGConfig(per_document=True, deferred=True): dig_env")


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


def label(questions: Iterable[QAItem], env: SearchQAEnv, scorer: Any, output: str | os.PathLike, *, seed: int = 0,
          threshold: float = 0.0, settings: Mapping | None = None,
          progress: bool = True) -> tuple[dict[str, list[dict]], int]:
    """DIG rows of every question into ``output`` (JSONL), resuming an earlier run made with the same settings;
    ``(rows of these questions by question, how many of them were already there)``.

    ``settings`` describe what the env cannot tell (the data, retriever and scorer, as the command names them);
    ``seed``, ``threshold``, ``env.topk``, the env's IG settings and the scorer's confidence are added to them.

    Raises:
        ResumeRefused: ``output`` was made with other settings, by another command, or has no settings header.
    """
    _require_per_document(env)
    confidence = getattr(getattr(scorer, "score_format", None), "confidence", None)
    settings = {**(settings or {}), "seed": seed, "threshold": threshold, "topk": env.topk,
                "ig": ig_settings(env.ig_config), "confidence": confidence}
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
            rows = dig_rows(env, scorer, item, seed=seed, threshold=threshold)
            if rows:  # a question that retrieved nothing has no rows (and costs nothing to redo)
                log.append(rows)
            done[item.id] = rows
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return {q.id: done[q.id] for q in questions}, resumed
