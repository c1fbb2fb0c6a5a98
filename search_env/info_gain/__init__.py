"""Information gain of a search step: what IG measures, the contexts it scores, and deferred requests.

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
(InfoGain-RAG's DIG). This package only builds requests and reads scores; a ``Scorer`` does the scoring, in the
env, or, with ``IGConfig(deferred=True)``, wherever the trainer likes: the step's ``info["ig_request"]`` is a
:class:`DeferredIG` whose pairs (and token ids) the trainer scores in its own batched forward pass, and
:meth:`DeferredIG.finish` (or :func:`finish_deferred` for a whole batch) gives the ``ig``, ``ig_detail`` and
``doc_gains`` the env would have given.

- :mod:`~search_env.info_gain.config`: :class:`IGConfig`, :class:`Deferred`.
- :mod:`~search_env.info_gain.contexts`: :class:`SearchStep`, :func:`build_context`, :func:`step_requests`,
  :class:`IGRequests`.
- :mod:`~search_env.info_gain.credit`: credit across an episode's searches (sub-answer, leave-one-out, Shapley).
- :mod:`~search_env.info_gain.dig`: DIG labels of retrieved passages (``search-env dig``) and their ranking AUC.
- :mod:`~search_env.info_gain.deferred`: :class:`DeferredIG`, :class:`DeferredCredit`, :func:`finish_deferred`.
- :mod:`~search_env.info_gain.gain`: :class:`InformationGain`, what the env calls.
"""

from __future__ import annotations

import warnings

from search_env.info_gain.config import BASELINES, CREDITS, Deferred, IGConfig
from search_env.info_gain.contexts import (
    IGRequests,
    IGResult,
    SearchStep,
    build_context,
    gold_answer,
    keyed_rng,
    step_requests,
)
from search_env.info_gain.credit import CreditRequests
from search_env.info_gain.deferred import DeferredCredit, DeferredIG, finish_deferred
from search_env.info_gain.gain import InformationGain, PendingIG, score_pairs

__all__ = ["BASELINES", "CREDITS", "CreditRequests", "Deferred", "DeferredCredit", "DeferredIG", "IGConfig",
           "IGRequests", "IGResult", "InformationGain", "PendingIG", "SearchStep", "build_context", "finish_deferred",
           "gold_answer", "keyed_rng", "score_pairs", "step_requests"]

_RENAMED = {"IGPlan": ("IGRequests", IGRequests), "plan_step_gain": ("step_requests", step_requests)}


def __getattr__(name: str):
    if name in _RENAMED:
        new, value = _RENAMED[name]
        warnings.warn(f"search_env.info_gain.{name} is now {new}", DeprecationWarning, stacklevel=2)
        return value
    if name == "search_block":
        from search_env.dialects import search_block

        return search_block
    raise AttributeError(f"module 'search_env.info_gain' has no attribute {name!r}")
