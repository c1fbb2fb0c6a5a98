"""The env's IG: one object the env calls at three points (the start score, prepare, finish)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from search_env.data.corpus import Corpus
from search_env.dialects import Dialect
from search_env.info_gain.config import IGConfig
from search_env.info_gain.contexts import IGRequests, SearchStep, gold_answer, step_requests
from search_env.info_gain.deferred import DeferredIG
from search_env.scoring import make_scorer


@dataclass
class PendingIG:
    """A search step's IG between :meth:`InformationGain.prepare` and :meth:`InformationGain.finish`."""

    requests: IGRequests
    deferred: bool  # scored outside the env: finish hands out a DeferredIG

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """What the env's scorer must score before ``finish`` (nothing when deferred)."""
        return [] if self.deferred else self.requests.pairs


class InformationGain:
    """IG for one env: renders the context prefix, builds each search's requests, turns scores into ``info`` keys.

    Args:
        config: what IG measures, where it is scored and how contexts are rendered.
        corpus: where random passages are drawn from.
        dialect: renders those passages as a documents block.
        scorer: the model that scores in the env, anything :func:`~search_env.scoring.make_scorer` takes (``None``:
            the bundled model; a model name or folder; vLLM server URLs; a scorer object), built on first use.
        ig_weight: the reward's IG weight, carried by deferred requests for the reward term they finish into.

    Raises:
        ValueError: random-passage baselines without a corpus.
    """

    def __init__(self, config: IGConfig, *, corpus: Corpus | None, dialect: Dialect, scorer: Any = None,
                 ig_weight: float = 0.0):
        if corpus is None and config.baseline == "random":
            raise ValueError("IG with random-passage baselines needs `corpus`; pass one, or ig=False")
        self.config, self.corpus, self.dialect, self.ig_weight = config, corpus, dialect, ig_weight
        self._scorer = scorer

    @property
    def scorer(self):
        """The scorer, loaded on first use."""
        if not callable(getattr(self._scorer, "score", None)):
            self._scorer = make_scorer(self._scorer)
        return self._scorer

    def render_prefix(self, prompt: str, agent_text: str) -> str:
        """The start of every IG context: the prompt and what the agent wrote before its first ``<search>``."""
        render = self.config.render_prefix
        return (prompt + agent_text if render is None else render(prompt, agent_text)).rstrip()

    def start(self, prefix: str, golden_answers: Sequence[str]) -> dict:
        """``reset``'s IG keys: ``logp_start`` (the gold answer's score after the bare prefix) when asked for."""
        if not self.config.score_start:
            return {}
        return {"logp_start": float(self.scorer.score([prefix], [gold_answer(golden_answers, self.config)])[0])}

    def prepare(self, prefix: str, history: Sequence[SearchStep], step: SearchStep, golden_answers: Sequence[str],
                *, rng: np.random.Generator, pool: Sequence[str] | None = None) -> PendingIG | None:
        """What to score for a search, drawing its counterfactuals with ``rng``; None when it cannot be scored."""
        requests = step_requests(prefix, history, step, golden_answers, config=self.config, corpus=self.corpus,
                                 dialect=self.dialect, rng=rng, pool=pool)
        if requests is None:
            return None
        # Requests with nothing to score (a fixed gain) are finished in the env, deferred or not.
        return PendingIG(requests, deferred=bool(self.config.deferred and requests.pairs))

    def finish(self, pending: PendingIG | None, scores: np.ndarray) -> dict:
        """A search step's IG keys of ``info``: ``ig`` and ``ig_detail`` (and ``doc_gains``), or, deferred,
        ``ig: None`` and ``ig_request``."""
        if pending is None:
            return {"ig": None}
        if pending.deferred:
            return {"ig": None, "ig_request": self._deferred(pending.requests)}
        result = pending.requests.finish(scores)
        info = {"ig": result.ig, "ig_detail": result.detail}
        if result.doc_gains is not None:
            info["doc_gains"] = result.doc_gains
        return info

    def _deferred(self, requests: IGRequests) -> DeferredIG:
        deferred = self.config.deferred
        request = DeferredIG(requests, deferred.score_format, ig_weight=self.ig_weight)
        if deferred.tokenizer is not None:
            encoded = deferred.score_format.encode(deferred.tokenizer, requests.pairs)
            request.token_ids, request.answer_starts = [ids for ids, _ in encoded], [start for _, start in encoded]
        return request
