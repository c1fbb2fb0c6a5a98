"""The env's IG: one object the env calls at a few named points: ``start`` (reset), ``prepare`` and ``finish`` (each
search), ``prepare_credit`` and ``finish_credit`` (the step that ends the episode)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from search_env.data.corpus import Corpus
from search_env.dialects import Dialect
from search_env.info_gain.config import IGConfig
from search_env.info_gain.contexts import IGRequests, SearchStep, gold_answer, keyed_rng, step_requests
from search_env.info_gain.credit import CreditRequests, credit_requests
from search_env.info_gain.deferred import DeferredCredit, DeferredIG
from search_env.scoring import make_scorer


def score_pairs(scorer: Any, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
    """``scorer``'s scores of ``pairs``, in one call that scores each distinct (context, answer) pair once."""
    if not pairs:
        return np.empty(0)
    unique = list(dict.fromkeys(pairs))
    scores = np.asarray(scorer.score(*zip(*unique)), dtype=np.float64)
    where = {pair: i for i, pair in enumerate(unique)}
    return scores[[where[pair] for pair in pairs]]


@dataclass
class PendingIG:
    """A search step's IG between :meth:`InformationGain.prepare` and :meth:`InformationGain.finish`."""

    requests: IGRequests
    deferred: bool  # scored outside the env: finish hands out a DeferredIG

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """What the env's scorer must score before ``finish`` (nothing when deferred)."""
        return [] if self.deferred else self.requests.pairs


@dataclass
class PendingCredit:
    """An episode's search credit between :meth:`InformationGain.prepare_credit` and ``finish_credit``."""

    requests: CreditRequests
    deferred: bool

    @property
    def pairs(self) -> list[tuple[str, str]]:
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
        self.shared_draws = bool(config.shared_draws)  # the vector env turns it on where config leaves it None
        self._question_id: str | None = None
        self._draw_seed: int | None = None
        self._sub_answers: tuple[str, ...] = ()
        self._records: list[IGRequests | None] = []  # each committed search's requests (None: no IG)

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

    def start(self, prefix: str, golden_answers: Sequence[str], *, question_id: str | None = None,
              draw_seed: int | None = None, sub_answers: Sequence[str] = (),
              rng: np.random.Generator | None = None) -> dict:
        """A new episode. ``draw_seed`` keys shared draws (``None``: one number drawn from ``rng``, when shared);
        ``sub_answers`` are the intermediate answers ``credit="sub-answer"`` scores. Returns ``reset``'s IG keys:
        ``logp_start`` (the gold answer's score after the bare prefix) when asked for."""
        self._question_id, self._sub_answers, self._records = question_id, tuple(sub_answers), []
        if self.shared_draws and draw_seed is None and rng is not None:
            draw_seed = int(rng.integers(2**63))
        self._draw_seed = draw_seed
        if not self.config.score_start:
            return {}
        return {"logp_start": float(self.scorer.score([prefix], [gold_answer(golden_answers, self.config)])[0])}

    def prepare(self, prefix: str, history: Sequence[SearchStep], step: SearchStep, golden_answers: Sequence[str],
                *, rng: np.random.Generator, pool: Sequence[str] | None = None, turn: int = 0) -> PendingIG | None:
        """What to score for a search at ``turn``, drawing its counterfactuals with ``rng`` (or, shared, from the
        stream keyed by question, ``turn`` and draw seed); None when it cannot be scored."""
        key = (self._question_id, turn, self._draw_seed) if self.shared_draws else None
        requests = step_requests(prefix, history, step, golden_answers, config=self.config, corpus=self.corpus,
                                 dialect=self.dialect, rng=rng, pool=pool, key=key)
        if requests is None:
            return None
        # Requests with nothing to score (a fixed gain) are finished in the env, deferred or not.
        return PendingIG(requests, deferred=bool(self.config.deferred and requests.pairs))

    def finish(self, pending: PendingIG | None, scores: np.ndarray) -> dict:
        """A search step's IG keys of ``info``: ``ig`` and ``ig_detail`` (and ``doc_gains``), or, deferred,
        ``ig: None`` and ``ig_request``."""
        self._records.append(pending.requests if pending is not None else None)
        if pending is None:
            return {"ig": None}
        if pending.deferred:
            return {"ig": None, "ig_request": self._deferred(pending.requests)}
        result = pending.requests.finish(scores)
        info = {"ig": result.ig, "ig_detail": result.detail}
        if result.doc_gains is not None:
            info["doc_gains"] = result.doc_gains
        return info

    def prepare_credit(self, prefix: str | None, steps: Sequence[SearchStep], golden_answers: Sequence[str], *,
                       rng: np.random.Generator, pool: Sequence[tuple[str, str]] | None = None) -> PendingCredit | None:
        """At the step that ends the episode: what to score for ``info["search_credit"]`` over ``steps`` (the
        searches whose passages were read; ``pool``: other questions' (documents, refine) pairs, for
        ``credit="refine"``); None for ``credit="step"``."""
        if self.config.credit == "step":
            return None
        c = self.config
        if self.shared_draws:
            rng = keyed_rng(self._question_id, "shapley", self._draw_seed)
        requests = credit_requests(c.credit, prefix or "", steps, self._records[: len(steps)],
                                   gold_answer(golden_answers, c), sub_answers=self._sub_answers, draws=c.credit_draws,
                                   exact=c.shapley_exact, permutations=c.shapley_permutations, rng=rng,
                                   pool=pool, n_random=c.n_random)
        return PendingCredit(requests, deferred=bool(c.deferred and requests.pairs))

    def finish_credit(self, pending: PendingCredit | None, scores: np.ndarray) -> dict:
        """The end step's credit keys: ``search_credit`` (one value per search of the episode, ``None`` past the
        searches it covers), or, deferred, ``credit_request``."""
        if pending is None:
            return {}
        pad = [None] * (len(self._records) - pending.requests.n_searches)
        if pending.deferred:
            return {"credit_request": self._deferred(pending.requests, pad=len(pad))}
        return {"search_credit": pending.requests.finish(scores) + pad}

    def _deferred(self, requests: IGRequests | CreditRequests, pad: int = 0) -> DeferredIG | DeferredCredit:
        deferred = self.config.deferred
        if isinstance(requests, CreditRequests):
            requests.n_searches += pad  # the searches after those it covers get None
            request = DeferredCredit(requests, deferred.score_format)
        else:
            request = DeferredIG(requests, deferred.score_format, ig_weight=self.ig_weight)
        if deferred.tokenizer is not None:
            encoded = deferred.score_format.encode(deferred.tokenizer, requests.pairs)
            request.token_ids, request.answer_starts = [ids for ids, _ in encoded], [start for _, start in encoded]
        return request
