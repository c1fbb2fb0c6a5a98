"""The contexts IG scores for one search step, and the gain from their scores."""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np

from search_env.data.corpus import Corpus
from search_env.dialects import Dialect, search_block
from search_env.info_gain.config import IGConfig
from search_env.retrieval.base import Hit


@dataclass(frozen=True)
class SearchStep:
    """One search as it enters IG contexts."""

    query: str
    documents: str  # the documents block as the agent saw it, tags included
    hits: Sequence[Hit] = ()
    refine: str = ""  # the agent's <refine>…</refine> block after these documents (autorefine)


@dataclass(frozen=True)
class IGResult:
    ig: float | None
    detail: dict
    doc_gains: list[float] | None = None


@dataclass
class IGRequests:
    """The (context, answer) pairs to score for one step, and how to turn their scores into IG."""

    baseline: str
    pairs: list[tuple[str, str]] = field(default_factory=list)
    n_baseline: int = 0  # pairs[1 : 1 + n_baseline] are the baseline contexts
    n_docs: int = 0  # then n_docs single-passage contexts and one no-passage context
    fixed_ig: float | None = None  # set when the gain is known without scoring
    random_blocks: list[str] = field(default_factory=list)  # the random documents blocks drawn (baseline "random")

    def finish(self, scores: Sequence[float]) -> IGResult:
        scores = np.asarray(scores, dtype=np.float64)
        if len(scores) != len(self.pairs):
            raise ValueError(f"expected {len(self.pairs)} scores, got {len(scores)}")
        if self.fixed_ig is not None:
            detail = {"baseline": self.baseline, "logp_real": None, "logp_random": [], "logp_baseline": None}
            return IGResult(self.fixed_ig, detail)
        real, base = float(scores[0]), scores[1 : 1 + self.n_baseline]
        if self.baseline == "best":
            baseline_score = float(base.max())
            ig = max(0.0, real - baseline_score)
        else:
            baseline_score = float(base.mean())
            ig = real - baseline_score
        detail = {
            "baseline": self.baseline,
            "logp_real": real,
            "logp_random": base.tolist() if self.baseline == "random" else [],
            "logp_baseline": baseline_score,
        }
        doc_gains = self.document_gains(scores[1 + self.n_baseline :]) if self.n_docs else None
        return IGResult(ig, detail, doc_gains)

    @property
    def document_pairs(self) -> list[tuple[str, str]]:
        """The pairs ``per_document`` adds: each passage alone, then no passage (empty without ``per_document``)."""
        return self.pairs[1 + self.n_baseline :] if self.n_docs else []

    def document_gains(self, scores: Sequence[float]) -> list[float]:
        """Each passage's gain from the scores of :attr:`document_pairs`: its score alone minus the no-passage one.

        Raises:
            ValueError: not one score per document pair.
        """
        scores = np.asarray(scores, dtype=np.float64)
        if not self.n_docs or len(scores) != self.n_docs + 1:
            raise ValueError(f"expected {self.n_docs + 1} document scores, got {len(scores)}")
        return (scores[:-1] - scores[-1]).tolist()


def build_context(prefix: str, steps: Sequence[SearchStep], last_documents: str | None = None) -> str:
    """``prefix`` then each step's search, documents and refine blocks, joined by newlines.

    ``last_documents`` replaces the last step's documents block (``""`` drops it). The last step's refine is left
    out: it is written after the documents the context ends with.
    """
    replaced = {len(steps) - 1: last_documents} if last_documents is not None else {}
    return build_final_context(prefix, steps, replaced, final_refine=False)


def build_final_context(prefix: str, steps: Sequence[SearchStep], replaced: dict[int, str] | None = None, *,
                        final_refine: bool = True) -> str:
    """``prefix`` then every step's search, documents and refine blocks, with the documents of the steps in
    ``replaced`` (index -> block, ``""`` drops it) replaced and their refine left out (it summarised the real
    ones); ``final_refine=False`` leaves out the last step's refine too."""
    replaced = replaced or {}
    parts = [prefix]
    for i, step in enumerate(steps):
        parts.append(search_block(step.query))
        documents = replaced.get(i, step.documents)
        if documents:
            parts.append(documents)
        if step.refine and i not in replaced and (final_refine or i < len(steps) - 1):
            parts.append(step.refine)
    return "\n".join(parts)


def keyed_rng(*key: Hashable) -> np.random.Generator:
    """A generator seeded by a stable hash (BLAKE2b) of ``key``'s parts: the same on every machine and run."""
    digest = hashlib.blake2b("\x1f".join(map(repr, key)).encode(), digest_size=16).digest()
    return np.random.default_rng(np.frombuffer(digest, dtype=np.uint32).tolist())


def gold_answer(golden_answers: Sequence[str], config: IGConfig) -> str:
    """The golden answer IG scores: ``config.answer_index``, or the last one when there are fewer."""
    return golden_answers[min(config.answer_index, len(golden_answers) - 1)]


def step_requests(
    prefix: str,
    history: Sequence[SearchStep],
    step: SearchStep,
    golden_answers: Sequence[str],
    *,
    config: IGConfig,
    corpus: Corpus | None,
    dialect: Dialect,
    rng: np.random.Generator,
    pool: Sequence[str] | None = None,
    key: tuple | None = None,
) -> IGRequests | None:
    """What to score for ``step`` (after ``history``).

    Args:
        prefix: the context before the first search (the prompt and the agent's text before ``<search>``).
        history: the earlier search steps of the episode.
        step: this search.
        golden_answers: the answers; ``config.answer_index`` picks the one scored.
        config: the baseline and its settings.
        corpus: where random passages come from (``baseline="random"`` without ``pool``).
        dialect: renders random passages as a documents block.
        rng: draws the random passages.
        pool: documents blocks to draw random baselines from instead of the corpus (the authors' variant:
            other questions' retrieved blocks in the same batch).
        key: shared draws: random block j comes from ``keyed_rng(*key, j)`` instead of ``rng`` (see
            :func:`shared_random_blocks`).

    Returns:
        An :class:`IGRequests` (its ``pairs`` to score, then ``finish(scores)``), or None when the step cannot
        be scored (nothing retrieved, or no random passages to draw).
    """
    if not step.hits:
        return None
    answer = gold_answer(golden_answers, config)
    steps = [*history, step]
    requests = IGRequests(config.baseline)
    if config.baseline == "random":
        if key is None:
            blocks = _random_blocks(step, config.n_random, corpus, dialect, rng, pool)
        else:
            blocks = shared_random_blocks(step, config.n_random, corpus, dialect, key, pool)
        if not blocks:
            return None
        requests.random_blocks = blocks
        baseline_contexts = [build_context(prefix, steps, b) for b in blocks]
    elif config.baseline == "none":
        baseline_contexts = [build_context(prefix, steps, "")]
    elif config.baseline == "previous":
        baseline_contexts = [build_context(prefix, history)]
    else:  # best
        seen = {h.doc_id for s in history for h in s.hits}
        if all(h.doc_id in seen for h in step.hits):
            requests.fixed_ig = 0.0
            return requests
        baseline_contexts = [build_context(prefix, history[:i]) for i in range(len(history) + 1)]
    contexts = [build_context(prefix, steps), *baseline_contexts]
    requests.n_baseline = len(baseline_contexts)
    if config.per_document:
        contexts += [build_context(prefix, steps, dialect.documents_block([h])) for h in step.hits]
        contexts.append(build_context(prefix, steps, ""))
        requests.n_docs = len(step.hits)
    requests.pairs = [(c, answer) for c in contexts]
    return requests


def _random_blocks(
    step: SearchStep,
    n: int,
    corpus: Corpus | None,
    dialect: Dialect,
    rng: np.random.Generator,
    pool: Sequence[str] | None,
) -> list[str]:
    """``n`` documents blocks of random passages, as many as the step retrieved, none of them retrieved."""
    if pool is not None:
        candidates = [b for b in pool if b != step.documents]
        if not candidates:
            return []
        picks = rng.choice(len(candidates), size=n, replace=len(candidates) < n)
        return [candidates[int(i)] for i in picks]
    retrieved, size = _draw_size(step, corpus)
    if size <= 0:
        return []
    blocks = []
    for _ in range(n):
        # Draw a few extra without replacement so that, after dropping retrieved ones, `size` remain.
        draw = rng.choice(len(corpus), size=min(len(corpus), size + len(retrieved)), replace=False)
        passages = [corpus[int(i)] for i in draw if corpus[int(i)].id not in retrieved][:size]
        blocks.append(dialect.documents_block([Hit(p.id, p.title, p.text, 0.0) for p in passages]))
    return blocks


def _draw_size(step: SearchStep, corpus: Corpus | None) -> tuple[set[str], int]:
    """The ids a random block must avoid (the step's own), and how many passages it holds."""
    if corpus is None:
        raise ValueError("random IG baselines need a corpus (or a pool of documents blocks)")
    retrieved = {h.doc_id for h in step.hits}
    return retrieved, min(len(step.hits), len(corpus) - len(retrieved))


_CHUNK = 16  # corpus indices drawn at a time from a keyed stream: fixed, so every rollout reads the same stream


def shared_random_blocks(step: SearchStep, n: int, corpus: Corpus | None, dialect: Dialect, key: tuple,
                         pool: Sequence[str] | None = None) -> list[str]:
    """``n`` documents blocks drawn from keyed streams, the same for every rollout with the same ``key``.

    Block j reads ``keyed_rng(*key, j)``: corpus indices (or, with ``pool``, pool entries), in chunks of a fixed
    size, skipping repeats and passages this step retrieved (a pool entry equal to this step's block), until it has
    as many passages as the step retrieved. So two rollouts differ in a block only where one of them retrieved a
    passage the stream drew, and there the next passage of the same stream takes its place.
    """
    if pool is not None:
        blocks = []
        for j in range(n):
            rng = keyed_rng(*key, j)
            for _ in range(64):
                block = pool[int(rng.integers(len(pool)))]
                if block != step.documents:
                    blocks.append(block)
                    break
        return blocks if len(blocks) == n else []
    retrieved, size = _draw_size(step, corpus)
    if size <= 0:
        return []
    blocks = []
    for j in range(n):
        rng, chosen, seen = keyed_rng(*key, j), [], set()
        while len(chosen) < size:
            for i in rng.integers(len(corpus), size=_CHUNK).tolist():
                passage = corpus[i]
                if i not in seen and passage.id not in retrieved and len(chosen) < size:
                    chosen.append(passage)
                seen.add(i)
        blocks.append(dialect.documents_block([Hit(p.id, p.title, p.text, 0.0) for p in chosen]))
    return blocks
