"""Information gain of one search step: the contexts to score, and the gain from their scores.

``IG_t = score(a* | C_t^real) - baseline`` where ``C_t^real`` is the prompt up to the agent's first
``<search>``, then the ``<search>`` and documents blocks (and ``<refine>`` blocks, in that dialect) of steps
1..t joined by ``"\\n"``. Baselines:

- ``random`` (default, IG-Search): the mean score of ``n_random`` contexts in which only step t's passages
  are replaced by as many random passages (from the corpus, never the retrieved ones; or from a pool of
  other questions' retrieved blocks).
- ``none``: step t's query kept, its documents block dropped.
- ``previous``: the context before step t (IGPO-style marginal gain).
- ``best``: the best score of any earlier context, gains below it count 0; a step that retrieves only
  passages seen before gains exactly 0 (repeating a query earns nothing).

``per_document`` adds each passage's own gain: score with that passage alone minus score with none
(InfoGain-RAG's DIG). This module only builds requests and reads scores; a ``Scorer`` does the scoring, in the
env, or, with ``IGConfig(deferred=True)``, wherever the trainer likes: the step's ``info["ig_request"]`` is a
:class:`DeferredIG` whose pairs (and token ids) the trainer scores in its own batched forward pass, and
:meth:`DeferredIG.finish` (or :func:`finish_deferred` for a whole batch) gives the ``ig``, ``ig_detail`` and
``doc_gains`` the env would have given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from search_env.dialects import Dialect
from search_env.data.corpus import Corpus
from search_env.retrieval.base import Hit
from search_env.score_format import ScoreFormat

BASELINES = ("random", "none", "previous", "best")


@dataclass(frozen=True)
class IGConfig:
    """How IG is computed.

    Args:
        n_random: random-passage counterfactuals per step (``baseline="random"``).
        baseline: ``"random"``, ``"none"``, ``"previous"`` or ``"best"`` (see the module docstring).
        per_document: also score each passage alone (``info["doc_gains"]``).
        answer_index: which golden answer is scored (the authors use the first).
        render_prefix: ``render_prefix(prompt, agent_text)`` is the context's start as the scoring model should
            read it, e.g. the policy's own input ``functools.partial(chat_prompt, tokenizer)`` so that IG
            scored by the policy sees its chat template and worked example; ``agent_text`` is what the agent
            wrote before its first ``<search>``. ``None``: the env's prompt and that text as they are.
        score_start: also score the gold answer after the bare prefix (no searches yet) at ``reset``:
            ``info["logp_start"]``, the potential Φ(s0) that :class:`~search_env.wrappers.PotentialShapedReward`
            starts from. One more scored pair per episode, so off by default.
        deferred: score nothing in the env: a search step that needs scores gets ``info["ig"] = None`` and
            ``info["ig_request"]``, a :class:`DeferredIG` to score elsewhere and ``finish``. Same seeds, same
            draws: finishing it with the scores the env's scorer would give yields its ``ig`` exactly.
        tokenizer: with ``deferred``, requests also carry the pairs as token ids (``score_format.encode``).
        score_format: how pairs become token ids and answer log-probabilities a score, for deferred requests
            (in-env scoring uses the scorer's own).
    """

    n_random: int = 3
    baseline: Literal["random", "none", "previous", "best"] = "random"
    per_document: bool = False
    answer_index: int = 0
    render_prefix: Callable[[str, str], str] | None = None
    score_start: bool = False
    deferred: bool = False
    tokenizer: Any = field(default=None, compare=False, repr=False)
    score_format: ScoreFormat = ScoreFormat()

    def __post_init__(self):
        if self.baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {BASELINES}, not {self.baseline!r}")
        if self.n_random < 1:
            raise ValueError(f"n_random must be at least 1, not {self.n_random}")
        if self.deferred and self.score_start:
            raise ValueError("score_start scores at reset, in the env; it does not combine with deferred=True")
        if self.tokenizer is not None and not self.deferred:
            raise ValueError("tokenizer= is for deferred requests' token ids; set deferred=True (an in-env scorer "
                             "has its own tokenizer)")


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
class IGPlan:
    """The (context, answer) pairs to score for one step, and how to turn their scores into IG."""

    baseline: str
    requests: list[tuple[str, str]] = field(default_factory=list)
    n_baseline: int = 0  # requests[1 : 1 + n_baseline] are the baseline contexts
    n_docs: int = 0  # then n_docs single-passage contexts and one no-passage context
    fixed_ig: float | None = None  # set when the gain is known without scoring

    def finish(self, scores: Sequence[float]) -> IGResult:
        scores = np.asarray(scores, dtype=np.float64)
        if len(scores) != len(self.requests):
            raise ValueError(f"expected {len(self.requests)} scores, got {len(scores)}")
        if self.fixed_ig is not None:
            return IGResult(self.fixed_ig, {"baseline": self.baseline, "logp_real": None, "logp_random": [], "logp_baseline": None})
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
        doc_gains = None
        if self.n_docs:
            singles = scores[1 + self.n_baseline : 1 + self.n_baseline + self.n_docs]
            doc_gains = (singles - scores[-1]).tolist()
        return IGResult(ig, detail, doc_gains)


@dataclass
class DeferredIG:
    """A search step's IG waiting for scores computed outside the env (``IGConfig(deferred=True)``).

    ``pairs`` are the (context, answer) pairs to score, in order; with a tokenizer in the config, ``token_ids``
    and ``answer_starts`` are the same pairs as ``score_format`` tokenizes them (the answer is
    ``token_ids[i][answer_starts[i]:]``). Plain data: it pickles, and ``to_dict``/``from_dict`` go through JSON.
    """

    plan: IGPlan
    score_format: ScoreFormat = ScoreFormat()
    ig_weight: float = 0.0  # the env's RewardConfig.ig_weight, for the reward term it would have added
    token_ids: list[list[int]] | None = None
    answer_starts: list[int] | None = None

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return self.plan.requests

    def finish(self, answer_logprobs: Sequence[Sequence[float]] | None = None, *, scores: Sequence[float] | None = None) -> dict:
        """``{"ig", "ig_detail", ["doc_gains"], "ig_reward"}`` as the env would have put them in ``info`` (and the
        ``ig`` reward component it would have added), from each pair's answer-token log-probabilities (weighted
        by ``score_format``) or from finished ``scores``.

        Raises:
            ValueError: neither or both given, or not one per pair.
        """
        if (answer_logprobs is None) == (scores is None):
            raise ValueError("give either answer_logprobs (one sequence per pair) or scores (one per pair)")
        if scores is None:
            if len(answer_logprobs) != len(self.pairs):
                raise ValueError(f"expected log-probabilities for {len(self.pairs)} pairs, got {len(answer_logprobs)}")
            scores = [self.score_format.combine(lp) for lp in answer_logprobs]
        result = self.plan.finish(scores)
        out = {"ig": result.ig, "ig_detail": result.detail, "ig_reward": self.ig_weight * result.ig + 0.0}
        if result.doc_gains is not None:
            out["doc_gains"] = result.doc_gains
        return out

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DeferredIG:
        plan = dict(data["plan"])
        plan["requests"] = [tuple(pair) for pair in plan["requests"]]
        return cls(**{**data, "plan": IGPlan(**plan), "score_format": ScoreFormat(**data["score_format"])})


def finish_deferred(
    requests: Sequence[DeferredIG],
    answer_logprobs: Sequence[Sequence[float]] | None = None,
    *,
    scores: Sequence[float] | None = None,
) -> list[dict]:
    """:meth:`DeferredIG.finish` for many requests at once, from the log-probabilities (or scores) of all their
    pairs in one flat list, request after request: the order a trainer scores a whole batch in.

    Raises:
        ValueError: the list is not as long as all the requests' pairs together.
    """
    values = answer_logprobs if scores is None else scores
    if values is None:
        raise ValueError("give either answer_logprobs or scores")
    total = sum(len(r.pairs) for r in requests)
    if len(values) != total:
        raise ValueError(f"the requests hold {total} pairs, got {len(values)} values")
    out, start = [], 0
    for request in requests:
        part = values[start : start + len(request.pairs)]
        start += len(request.pairs)
        out.append(request.finish(part) if scores is None else request.finish(scores=part))
    return out


def search_block(query: str) -> str:
    return f"<search> {query} </search>"


def build_context(prefix: str, steps: Sequence[SearchStep], last_documents: str | None = None) -> str:
    """``prefix`` then each step's search, documents and refine blocks, joined by newlines.

    ``last_documents`` replaces the last step's documents block (``""`` drops it).
    """
    parts = [prefix]
    for i, step in enumerate(steps):
        last = i == len(steps) - 1
        parts.append(search_block(step.query))
        documents = last_documents if last and last_documents is not None else step.documents
        if documents:
            parts.append(documents)
        if step.refine and not last:
            parts.append(step.refine)
    return "\n".join(parts)


def gold_answer(golden_answers: Sequence[str], config: IGConfig) -> str:
    """The golden answer IG scores: ``config.answer_index``, or the last one when there are fewer."""
    return golden_answers[min(config.answer_index, len(golden_answers) - 1)]


def plan_step_gain(
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
) -> IGPlan | None:
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

    Returns:
        An :class:`IGPlan` (its ``requests`` to score, then ``finish(scores)``), or None when the step cannot
        be scored (nothing retrieved, or no random passages to draw).
    """
    if not step.hits:
        return None
    answer = gold_answer(golden_answers, config)
    steps = [*history, step]
    plan = IGPlan(config.baseline)
    if config.baseline == "random":
        blocks = _random_blocks(step, config.n_random, corpus, dialect, rng, pool)
        if not blocks:
            return None
        baseline_contexts = [build_context(prefix, steps, b) for b in blocks]
    elif config.baseline == "none":
        baseline_contexts = [build_context(prefix, steps, "")]
    elif config.baseline == "previous":
        baseline_contexts = [build_context(prefix, history)]
    else:  # best
        seen = {h.doc_id for s in history for h in s.hits}
        if all(h.doc_id in seen for h in step.hits):
            plan.fixed_ig = 0.0
            return plan
        baseline_contexts = [build_context(prefix, history[:i]) for i in range(len(history) + 1)]
    contexts = [build_context(prefix, steps), *baseline_contexts]
    plan.n_baseline = len(baseline_contexts)
    if config.per_document:
        contexts += [build_context(prefix, steps, dialect.documents_block([h])) for h in step.hits]
        contexts.append(build_context(prefix, steps, ""))
        plan.n_docs = len(step.hits)
    plan.requests = [(c, answer) for c in contexts]
    return plan


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
    if corpus is None:
        raise ValueError("random IG baselines need a corpus (or a pool of documents blocks)")
    retrieved = {h.doc_id for h in step.hits}
    size = min(len(step.hits), len(corpus) - len(retrieved))
    if size <= 0:
        return []
    blocks = []
    for _ in range(n):
        # Draw a few extra without replacement so that, after dropping retrieved ones, `size` remain.
        draw = rng.choice(len(corpus), size=min(len(corpus), size + len(retrieved)), replace=False)
        passages = [corpus[int(i)] for i in draw if corpus[int(i)].id not in retrieved][:size]
        blocks.append(dialect.documents_block([Hit(p.id, p.title, p.text, 0.0) for p in passages]))
    return blocks
