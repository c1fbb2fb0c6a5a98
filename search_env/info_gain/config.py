"""What IG measures, where it is scored and how its contexts are rendered: :class:`IGConfig`."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import InitVar, dataclass, field
from typing import Any, Literal

from search_env.scoring.score_format import ScoreFormat

BASELINES = ("random", "none", "previous", "best")
CREDITS = ("step", "sub-answer", "leave-one-out", "shapley", "refine")


@dataclass(frozen=True)
class Deferred:
    """Score IG outside the env: search steps carry :class:`~search_env.info_gain.DeferredIG` requests instead.

    Args:
        tokenizer: the trainer's tokenizer; requests then also carry their pairs as token ids.
        score_format: how those token ids are built and how answer log-probabilities become a score (an in-env
            scorer has its own).
    """

    tokenizer: Any = field(default=None, compare=False, repr=False)
    score_format: ScoreFormat = ScoreFormat()


@dataclass(frozen=True)
class IGConfig:
    """How IG is computed, in three groups of settings.

    What IG measures:
        n_random: random-passage counterfactuals per step (``baseline="random"``).
        baseline: ``"random"``, ``"none"``, ``"previous"`` or ``"best"`` (see :mod:`search_env.info_gain`).
        per_document: also score each passage alone (``info["doc_gains"]``).
        answer_index: which golden answer is scored (the authors use the first).
        score_start: also score the gold answer after the bare prefix (no searches yet) at ``reset``:
            ``info["logp_start"]``, the potential Φ(s0) that :class:`~search_env.wrappers.PotentialShapedReward`
            starts from. One more scored pair per episode, so off by default.
        shared_draws: draw the random passages from a generator keyed by (question id, turn, draw seed) instead of
            the env's ``np_random``, so every rollout of a group at the same turn scores against the same random
            passages (a passage a rollout retrieved is skipped for the next one of the same keyed stream). The draw
            seed is ``reset(options={"draw_seed": s})``, else the reset ``seed``, else one number drawn from
            ``np_random`` at reset. ``None`` (default): on in :class:`~search_env.vector.SearchQAVectorEnv` (whose
            ``reset(seed=s)`` gives every sub-env draw seed ``s``), off in a single env.
        credit: what ``info["search_credit"]`` holds at the step that ends an episode (answer or truncation), one
            value per search step in order (``None`` for a search that got no IG): ``"step"`` (default) reports
            nothing beyond each step's ``ig``; ``"sub-answer"``: each search's gain for the best answer it can still
            serve, the final one or an intermediate one not yet found (see :mod:`search_env.info_gain.credit`);
            ``"leave-one-out"``: the final context's score minus its score with that search's passages replaced by
            random ones; ``"shapley"``: its Shapley value in the game ``v(S)`` = the final context's score with
            the searches outside ``S`` replaced by random passages (exact up to ``shapley_exact`` searches, Monte
            Carlo over ``shapley_permutations`` permutations beyond); ``"refine"`` (autorefine dialect, the
            IG-Search authors' IG): each search's IG scored after its ``<refine>``, with documents and refine swapped
            jointly for ``n_random`` (documents, refine) pairs of other questions' steps in the batch
            (:class:`~search_env.vector.SearchQAVectorEnv` with ``ig_pool="batch"``); without such a pool the
            step's own random passages with its refine left out.
        credit_draws: random blocks per left-out search (``"leave-one-out"``, ``"shapley"``): the first ones of the
            step's own draws; ``v(S)`` is the mean over them, so 4 searches cost ``1 + 15 · credit_draws`` contexts.
        shapley_exact: the most searches whose Shapley values are computed exactly (``2**k`` coalitions).
        shapley_permutations: permutations sampled beyond that, with the draw generator (keyed when shared).

    Where it is scored:
        deferred: ``None``/``False`` (default): by the env's scorer (in-process or on a server, whichever
            ``scorer`` the env was given). ``True`` or a :class:`Deferred`: nowhere in the env; a search step
            that needs scores gets ``info["ig"] = None`` and ``info["ig_request"]`` to score elsewhere and
            ``finish``. Same seeds, same draws: finishing it with the scores the env's scorer would give yields its
            ``ig`` exactly.

    How contexts are rendered:
        render_prefix: ``render_prefix(prompt, agent_text)`` is the context's start as the scoring model should
            read it, e.g. the policy's own input ``functools.partial(chat_prompt, tokenizer)`` so that IG
            scored by the policy sees its chat template and worked example; ``agent_text`` is what the agent
            wrote before its first ``<search>``. ``None``: the env's prompt and that text as they are.

    ``tokenizer=`` and ``score_format=`` are the old spelling of ``deferred=Deferred(tokenizer, score_format)``;
    they still work and warn.
    """

    n_random: int = 3
    baseline: Literal["random", "none", "previous", "best"] = "random"
    per_document: bool = False
    answer_index: int = 0
    score_start: bool = False
    shared_draws: bool | None = None
    credit: Literal["step", "sub-answer", "leave-one-out", "shapley", "refine"] = "step"
    credit_draws: int = 1
    shapley_exact: int = 4
    shapley_permutations: int = 16
    deferred: Deferred | bool | None = None
    render_prefix: Callable[[str, str], str] | None = None
    tokenizer: InitVar[Any] = None
    score_format: InitVar[ScoreFormat | None] = None

    def __post_init__(self, tokenizer: Any, score_format: ScoreFormat | None):
        if tokenizer is not None or score_format is not None:
            warnings.warn("IGConfig(tokenizer=..., score_format=...) is now "
                          "IGConfig(deferred=Deferred(tokenizer=..., score_format=...))", DeprecationWarning,
                          stacklevel=3)
            if not self.deferred:
                raise ValueError("tokenizer= and score_format= are for deferred requests; use "
                                 "IGConfig(deferred=Deferred(tokenizer=...)) (an in-env scorer has its own)")
            base = self.deferred if isinstance(self.deferred, Deferred) else Deferred()
            object.__setattr__(self, "deferred", Deferred(tokenizer if tokenizer is not None else base.tokenizer,
                                                          score_format or base.score_format))
        elif self.deferred is True:
            object.__setattr__(self, "deferred", Deferred())
        elif not self.deferred:
            object.__setattr__(self, "deferred", None)
        if self.baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {BASELINES}, not {self.baseline!r}")
        if self.credit not in CREDITS:
            raise ValueError(f"credit must be one of {CREDITS}, not {self.credit!r}")
        if self.credit in ("leave-one-out", "shapley", "refine") and self.baseline not in ("random", "none"):
            raise ValueError(f"credit={self.credit!r} leaves searches out with random passages (baseline='random') or "
                             f"none (baseline='none'), not baseline={self.baseline!r}")
        if not 1 <= self.credit_draws <= self.n_random or self.shapley_permutations < 1 or self.shapley_exact < 1:
            raise ValueError("credit_draws must be in [1, n_random]; shapley_exact and shapley_permutations >= 1")
        if self.n_random < 1:
            raise ValueError(f"n_random must be at least 1, not {self.n_random}")
        if self.deferred and self.score_start:
            raise ValueError("score_start scores at reset, in the env; it does not combine with deferred=True")
