"""Scoring a gold answer after a context: the :class:`Scorer` protocol, :func:`make_scorer`, and the scorers.

- :mod:`~search_env.scoring.base`: the :class:`Scorer` protocol and :class:`ScorerUnavailable`.
- :mod:`~search_env.scoring.transformers_scorer`: :class:`TransformersScorer`, any Hugging Face causal LM
  in-process (the trainer's policy itself, or a frozen model); ``default_scorer``, one per model per process.
- :mod:`~search_env.scoring.servers`: :class:`VLLMScorer`, :class:`SGLangScorer`, scoring on inference servers.
- :mod:`~search_env.scoring.score_format`: :class:`ScoreFormat`, the tokenization and head weighting every scorer
  and deferred request shares.
- :mod:`~search_env.scoring.cache`: the locked in-memory LRU and the SQLite disk cache of scores.

Scorers and their models load on first use: importing this package pulls in no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from search_env.scoring.base import Scorer, ScorerUnavailable

__all__ = ["SGLangScorer", "ScoreFormat", "Scorer", "ScorerUnavailable", "TransformersScorer", "VLLMScorer",
           "make_scorer"]


def make_scorer(spec: Any = None, *, tokenizer: Any = None) -> Scorer:
    """The scorer ``spec`` names, built once per process for the same spec (every env given it shares it).

    Args:
        spec: ``None`` or ``"bundled"`` (the bundled SmolLM2-135M-Instruct); a Hugging Face model name or folder
            (in-process); a vLLM server URL or a list of replica URLs; or an object with ``score`` (returned as
            it is).
        tokenizer: for server URLs, the served model's tokenizer (an object, or a name or folder; default the
            bundled model's).

    Raises:
        TypeError: ``spec`` is none of these.
    """
    if spec is not None and not isinstance(spec, (str, list, tuple)):
        if not callable(getattr(spec, "score", None)):
            raise TypeError(f"a scorer is a model name or folder, server URL(s) or an object with score(), "
                            f"not {type(spec).__name__}")
        return spec
    urls = [spec] if isinstance(spec, str) else list(spec or [])
    if spec is not None and all(isinstance(u, str) and u.startswith(("http://", "https://")) for u in urls):
        from search_env._cache import built_once
        from search_env.scoring.servers import VLLMScorer

        key = (tuple(urls), tokenizer if isinstance(tokenizer, (str, type(None))) else id(tokenizer))
        return built_once("server-scorer", repr(key), lambda: VLLMScorer(urls, tokenizer or "bundled"))
    if isinstance(spec, (list, tuple)):
        raise TypeError(f"a list of scorers must be server URLs (http:// or https://), got {spec!r}")
    from search_env.scoring.transformers_scorer import default_scorer

    return default_scorer(spec or "bundled")


_LAZY = {"TransformersScorer": "transformers_scorer", "VLLMScorer": "servers", "SGLangScorer": "servers",
         "ScoreFormat": "score_format"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"search_env.scoring.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'search_env.scoring' has no attribute {name!r}")
