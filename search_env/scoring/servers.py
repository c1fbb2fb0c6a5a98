"""Scorers on inference servers: the answer log-probabilities IG needs, from the vLLM or SGLang server that
already serves a trainer's rollouts (or a frozen scorer model), instead of a model in the env's process.

Both send token ids built client-side by :class:`~search_env.scoring.score_format.ScoreFormat` with the served model's
tokenizer, never text (the server would tokenize the context and the answer together, differently), read the
log-probability of each answer token, and apply the head weighting here, so their scores are those of
:class:`~search_env.scoring.transformers_scorer.TransformersScorer` on the same model.

- :class:`VLLMScorer`: ``POST /v1/completions`` (OpenAI-compatible) with token-id prompts, ``max_tokens: 1`` and
  ``prompt_logprobs: 0``; ``choices[i].prompt_logprobs[j]`` is ``{"<token id>": {"logprob": …}}`` for prompt
  position j (entry 0 is ``null``); vLLM clamps ``-inf`` to ``-9999.0``, read back as ``-inf``. vLLM does not
  reuse its prefix cache for such requests: every pair pays a full prefill.
- :class:`SGLangScorer`: ``POST /generate`` with ``input_ids``, ``return_logprob`` and ``logprob_start_len`` =
  the answer start − 1, which lets SGLang's radix cache serve the shared context;
  ``meta_info.input_token_logprobs`` is ``[[logprob, token id, text], …]`` from that position on, entry 0 ``null``.

Many pairs go in one request (``batch_size``). Replicas are used round robin, with timeouts and bounded retries
with backoff (:mod:`search_env._http`, shared with the HTTP retriever); when every attempt fails,
:class:`ScorerUnavailable` names each URL and what went wrong, and the env raises it out of ``step`` with the
episode as it was (its random draws too), so the step can be retried. No cache by default: a rollout server's
weights change during training without the client knowing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from search_env._http import JSONClient, MalformedResponse, endpoint
from search_env.scoring.base import ScorerUnavailable
from search_env.scoring.cache import MemoryScoreCache
from search_env.scoring.score_format import ScoreFormat

__all__ = ["SGLangScorer", "ScorerUnavailable", "VLLMScorer", "parse_sglang_logprobs", "parse_vllm_logprobs"]

VLLM_NEG_INF = -9999.0  # what vLLM sends for -inf (clamp_prompt_logprobs)


def _logprob(value: Any, where: str) -> float:
    if isinstance(value, dict):
        value = value.get("logprob")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise MalformedResponse(f"{where} is not a log-probability: {value!r}")
    return -math.inf if value <= VLLM_NEG_INF else float(value)


def parse_vllm_logprobs(body: Any, encoded: Sequence[tuple[Sequence[int], int]]) -> list[list[float]]:
    """Each pair's answer-token log-probabilities from a vLLM ``/v1/completions`` response to the prompts
    ``[ids for ids, _ in encoded]``; :class:`MalformedResponse` says what does not fit."""
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list) or len(choices) != len(encoded):
        got = f"{len(choices)} choices" if isinstance(choices, list) else f"no 'choices' list ({type(body).__name__})"
        raise MalformedResponse(f"expected {len(encoded)} choices, got {got}")
    if all(isinstance(c, dict) and isinstance(c.get("index"), int) for c in choices):
        choices = sorted(choices, key=lambda c: c["index"])
    out = []
    for i, ((ids, start), choice) in enumerate(zip(encoded, choices)):
        rows = choice.get("prompt_logprobs") if isinstance(choice, dict) else None
        if not isinstance(rows, list) or len(rows) != len(ids):
            size = len(rows) if isinstance(rows, list) else "no"
            raise MalformedResponse(
                f"choice {i}: {size} prompt_logprobs for {len(ids)} prompt tokens (was prompt_logprobs asked?)"
            )
        answer = []
        for j in range(start, len(ids)):
            row = rows[j]
            entry = row.get(str(ids[j]), row.get(ids[j])) if isinstance(row, dict) else None
            if entry is None:
                raise MalformedResponse(f"choice {i}: prompt position {j} has no log-probability for token {ids[j]}")
            answer.append(_logprob(entry, f"choice {i} position {j}"))
        out.append(answer)
    return out


def parse_sglang_logprobs(body: Any, encoded: Sequence[tuple[Sequence[int], int]]) -> list[list[float]]:
    """Each pair's answer-token log-probabilities from an SGLang ``/generate`` response to ``input_ids`` with
    ``logprob_start_len`` = answer start − 1 (a list of results, or one object for a single prompt)."""
    results = [body] if isinstance(body, dict) and len(encoded) == 1 else body
    if not isinstance(results, list) or len(results) != len(encoded):
        got = f"{len(results)} results" if isinstance(results, list) else f"a {type(body).__name__}"
        raise MalformedResponse(f"expected {len(encoded)} results, got {got}")
    out = []
    for i, ((ids, start), result) in enumerate(zip(encoded, results)):
        meta = result.get("meta_info") if isinstance(result, dict) else None
        rows = meta.get("input_token_logprobs") if isinstance(meta, dict) else None
        n = len(ids) - start
        if not isinstance(rows, list) or len(rows) < n + 1:
            size = len(rows) if isinstance(rows, list) else "no"
            raise MalformedResponse(
                f"result {i}: {size} input_token_logprobs, need {n + 1} (was return_logprob asked?)"
            )
        answer = []
        for k in range(1, n + 1):
            row, token = rows[k], ids[start - 1 + k]
            if not isinstance(row, (list, tuple)) or len(row) < 2 or row[1] != token:
                raise MalformedResponse(f"result {i}: entry {k} is {row!r}, expected token {token}")
            answer.append(_logprob(row[0], f"result {i} entry {k}"))
        out.append(answer)
    return out


class _ServerScorer:
    """The client side both servers share: encoding, batching, the HTTP client, weighting, an optional cache."""

    default_path = ""
    parse = staticmethod(parse_vllm_logprobs)

    def __init__(self, urls: str | Sequence[str], tokenizer: Any, *, score_format: ScoreFormat = ScoreFormat(),
                 batch_size: int = 64, timeout: float = 60.0, retries: int = 2, backoff: float = 0.5,
                 max_backoff: float = 5.0, pool_size: int = 8, cache_size: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        urls = [urls] if isinstance(urls, str) else list(urls)
        self.client = JSONClient([endpoint(u, self.default_path) for u in urls], timeout=timeout, retries=retries,
                                 backoff=backoff, max_backoff=max_backoff, pool_size=pool_size,
                                 error=ScorerUnavailable, what="scoring")
        if isinstance(tokenizer, str):
            tokenizer = _load_tokenizer(tokenizer)
        self.tokenizer, self.score_format = tokenizer, score_format
        self.batch_size = int(batch_size)
        self._cache = MemoryScoreCache(cache_size)

    cache_size = property(lambda self: self._cache.size)

    @property
    def urls(self) -> list[str]:
        return self.client.urls

    def score(self, contexts: Sequence[str], answers: Sequence[str]) -> np.ndarray:
        """Weighted mean answer log-probability (nats/token) of each (context, answer) pair.

        Raises:
            ScorerUnavailable: every attempt failed (each URL and its error named).
            ValueError: different numbers of contexts and answers, or an empty answer.
        """
        pairs = list(zip(contexts, answers))
        if len(contexts) != len(answers):
            raise ValueError(f"got {len(contexts)} contexts but {len(answers)} answers")
        unique = list(dict.fromkeys(pairs))
        known, generation = self._cache.get(unique)
        missing = [p for p in unique if p not in known]
        encoded = self.score_format.encode(self.tokenizer, missing)
        fresh = {}
        for s in range(0, len(missing), self.batch_size):
            batch = encoded[s : s + self.batch_size]
            logprobs = self.client.post(self.payload(batch), lambda body, b=batch: self.parse(body, b))
            fresh.update(zip(missing[s : s + self.batch_size], map(self.score_format.combine, logprobs)))
        self._cache.put(fresh, generation)
        known.update(fresh)
        return np.array([known[p] for p in pairs], dtype=np.float64)

    def payload(self, batch: Sequence[tuple[list[int], int]]) -> dict:
        raise NotImplementedError

    def close(self) -> None:
        self.client.close()


class VLLMScorer(_ServerScorer):
    """A :class:`~search_env.scoring.transformers_scorer.Scorer` on vLLM's OpenAI-compatible server(s) (see the module
    docstring).

    Args:
        urls: ``http://host:port`` (``/v1/completions`` is added) or full endpoint URLs; several are replicas.
        tokenizer: the served model's tokenizer, or its name or folder (``"bundled"``: the bundled SmolLM2).
        model: the served model's name, sent as ``model`` (``None``: left out; vLLM then uses the one it serves).
        score_format: tokenization and weighting (the same as the in-process scorer's by default).
        batch_size: pairs per request (vLLM caps prompts per request with ``VLLM_MAX_COMPLETION_PROMPTS``).
        timeout, retries, backoff, max_backoff, pool_size: per attempt, as :class:`~search_env._http.JSONClient`.
        cache_size: LRU cache entries keyed on (context, answer); 0 (default) for none.
    """

    default_path = "/v1/completions"
    parse = staticmethod(parse_vllm_logprobs)

    def __init__(self, urls: str | Sequence[str], tokenizer: Any, *, model: str | None = None, **kwargs: Any):
        super().__init__(urls, tokenizer, **kwargs)
        self.model = model

    def payload(self, batch):
        body = {"prompt": [ids for ids, _ in batch], "max_tokens": 1, "temperature": 0.0, "prompt_logprobs": 0}
        return {**body, "model": self.model} if self.model else body


class SGLangScorer(_ServerScorer):
    """A :class:`~search_env.scoring.transformers_scorer.Scorer` on SGLang's native ``/generate`` (see the module
    docstring); the arguments are :class:`VLLMScorer`'s, without ``model``."""

    default_path = "/generate"
    parse = staticmethod(parse_sglang_logprobs)

    def payload(self, batch):
        return {"input_ids": [ids for ids, _ in batch], "sampling_params": {"max_new_tokens": 1, "temperature": 0.0},
                "return_logprob": True, "logprob_start_len": [start - 1 for _, start in batch], "top_logprobs_num": 0}


def _load_tokenizer(name: str):
    from transformers import AutoTokenizer

    if name == "bundled":
        from search_env.agents.models import bundled_model_dir

        name = str(bundled_model_dir())
    return AutoTokenizer.from_pretrained(name)
