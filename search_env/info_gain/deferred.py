"""Deferred IG: a search step's scoring requests carried out of the env, and finished from scores made elsewhere."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from search_env.info_gain.contexts import IGRequests
from search_env.info_gain.credit import CreditRequests
from search_env.scoring.score_format import ScoreFormat


class _DeferredScores:
    """What both kinds of deferred request share: their ``pairs``, scores from the pairs' answer-token
    log-probabilities, and ``to_dict``."""

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return self.requests.pairs

    def _scores(self, answer_logprobs: Sequence[Sequence[float]] | None, scores: Sequence[float] | None) -> list:
        """Raises ValueError: neither or both given, or not one per pair."""
        if (answer_logprobs is None) == (scores is None):
            raise ValueError("give either answer_logprobs (one sequence per pair) or scores (one per pair)")
        if scores is not None:
            return list(scores)
        if len(answer_logprobs) != len(self.pairs):
            raise ValueError(f"expected log-probabilities for {len(self.pairs)} pairs, got {len(answer_logprobs)}")
        return [self.score_format.combine(lp) for lp in answer_logprobs]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DeferredIG(_DeferredScores):
    """A search step's IG waiting for scores computed outside the env (``IGConfig(deferred=True)``).

    ``pairs`` are the (context, answer) pairs to score, in order; with a tokenizer (``Deferred(tokenizer=...)``),
    ``token_ids``
    and ``answer_starts`` are the same pairs as ``score_format`` tokenizes them (the answer is
    ``token_ids[i][answer_starts[i]:]``). Plain data: it pickles, and ``to_dict``/``from_dict`` go through JSON.
    """

    requests: IGRequests
    score_format: ScoreFormat = ScoreFormat()
    ig_weight: float = 0.0  # the env's RewardConfig.ig_weight, for the reward term it would have added
    token_ids: list[list[int]] | None = None
    answer_starts: list[int] | None = None

    def finish(
        self, answer_logprobs: Sequence[Sequence[float]] | None = None, *, scores: Sequence[float] | None = None
    ) -> dict:
        """``{"ig", "ig_detail", ["doc_gains"], "ig_reward"}`` as the env would have put them in ``info`` (and the
        ``ig`` reward component it would have added), from each pair's answer-token log-probabilities (weighted
        by ``score_format``) or from finished ``scores``.

        Raises:
            ValueError: neither or both given, or not one per pair.
        """
        result = self.requests.finish(self._scores(answer_logprobs, scores))
        out = {"ig": result.ig, "ig_detail": result.detail, "ig_reward": self.ig_weight * result.ig + 0.0}
        if result.doc_gains is not None:
            out["doc_gains"] = result.doc_gains
        return out

    @classmethod
    def from_dict(cls, data: dict) -> DeferredIG:
        data = dict(data)
        requests = dict(data.pop("requests", None) or data.pop("plan"))  # "plan": the key before 0.2
        requests["pairs"] = [tuple(pair) for pair in requests.pop("pairs", None) or requests.pop("requests")]
        return cls(**{**data, "requests": IGRequests(**requests), "score_format": ScoreFormat(**data["score_format"])})


@dataclass
class DeferredCredit(_DeferredScores):
    """An episode's search credit waiting for scores computed outside the env (``IGConfig(deferred=True)`` with a
    ``credit`` mode): ``info["credit_request"]`` at the step that ends the episode. The same plain data as
    :class:`DeferredIG`; ``finish`` gives ``{"search_credit": [...]}`` as the env would have put it in ``info``."""

    requests: CreditRequests
    score_format: ScoreFormat = ScoreFormat()
    token_ids: list[list[int]] | None = None
    answer_starts: list[int] | None = None

    def finish(
        self, answer_logprobs: Sequence[Sequence[float]] | None = None, *, scores: Sequence[float] | None = None
    ) -> dict:
        """``{"search_credit": [...]}`` from each pair's answer-token log-probabilities or from finished ``scores``."""
        return {"search_credit": self.requests.finish(self._scores(answer_logprobs, scores))}

    @classmethod
    def from_dict(cls, data: dict) -> DeferredCredit:
        requests = dict(data["requests"])
        requests["pairs"] = [tuple(pair) for pair in requests["pairs"]]
        return cls(**{**data, "requests": CreditRequests(**requests),
                      "score_format": ScoreFormat(**data["score_format"])})


def finish_deferred(
    requests: Sequence[DeferredIG | DeferredCredit],
    answer_logprobs: Sequence[Sequence[float]] | None = None,
    *,
    scores: Sequence[float] | None = None,
) -> list[dict]:
    """:meth:`DeferredIG.finish` (or :meth:`DeferredCredit.finish`) for many requests at once, from the
    log-probabilities (or scores) of all their
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
