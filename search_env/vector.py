"""SearchQAVectorEnv: many SearchQAEnv episodes stepped together, with batched retrieval and IG scoring."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from search_env.actions import Search
from search_env.env import SearchQAEnv
from search_env.info_gain.gain import score_pairs


class SearchQAVectorEnv(VectorEnv):
    """``num_envs`` sub-envs sharing one corpus, retriever and scorer.

    One ``step`` parses every action, runs one ``batch_search`` for all searches and one scorer call for
    all IG contexts (each distinct pair scored once), so its results equal ``num_envs`` separate envs with the same
    seeds (and the same draw seeds).

    Shared draws are on unless the sub-envs' ``IGConfig(shared_draws=False)`` says otherwise: ``reset(seed=s)``
    gives every sub-env it resets draw seed ``s`` (``options={"draw_seed": ...}`` overrides it), so the rollouts of
    one question reset together (a GRPO group) score each turn against the same random passages, and a later
    ``reset`` with another seed (the next training step) draws fresh ones. Sub-envs reset with no seed (autoreset,
    ``seed=None``) draw their own draw seed from their ``np_random``. Observations are
    a tuple of strings (Gymnasium's batching of text spaces); infos are dicts of arrays with ``_key`` masks.

    A ``None`` action leaves that sub-env untouched for this step (reward 0, not done, no info): a trainer
    whose episodes end at different turns steps only the live ones.

    Args:
        num_envs: how many sub-envs.
        autoreset_mode: Gymnasium's ``NEXT_STEP`` (default), ``SAME_STEP`` or ``DISABLED``.
        ig_pool: ``"corpus"`` (default) or ``"batch"``: draw IG's random passages from other questions'
            retrieved blocks in the same step (the IG-Search authors' variant), falling back to the corpus
            when there are none; with ``IGConfig(credit="refine")`` also the (documents, refine) pairs its
            end-of-episode IG swaps in, from the other questions' steps so far.
        **env_kwargs: given to each :class:`SearchQAEnv` (``questions``, ``corpus``, ``scorer``, ...).

    Raises:
        ValueError: ``num_envs`` below 1 or an unknown ``ig_pool``.
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": ["ansi"]}

    def __init__(
        self,
        num_envs: int,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        ig_pool: str = "corpus",
        **env_kwargs: Any,
    ):
        if num_envs < 1:
            raise ValueError(f"num_envs must be at least 1, not {num_envs}")
        if ig_pool not in ("corpus", "batch"):
            raise ValueError(f"ig_pool must be 'corpus' or 'batch', not {ig_pool!r}")
        first = SearchQAEnv(**env_kwargs)
        shared = {
            "questions": first.questions,
            "corpus": first.corpus,
            "retriever": first.retriever,
            "scorer": env_kwargs.get("scorer"),
        }
        self.envs = [first] + [SearchQAEnv(**{**env_kwargs, **shared}) for _ in range(num_envs - 1)]
        for env in self.envs:
            if env.ig and env.ig.config.shared_draws is None:
                env.ig.shared_draws = True
        self.num_envs = num_envs
        self.ig_pool = ig_pool
        self.autoreset_mode = AutoresetMode(autoreset_mode)
        self.metadata = {**self.metadata, "autoreset_mode": self.autoreset_mode}
        self.render_mode = first.render_mode
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._needs_reset = np.zeros(num_envs, dtype=bool)

    @property
    def retriever(self):
        return self.envs[0].retriever

    @property
    def scorer(self):
        return self.envs[0].scorer

    def reset(self, *, seed: int | Sequence[int | None] | None = None, options: dict | None = None):
        seeds = _seeds(seed, self.num_envs)
        options = dict(options or {})
        mask = options.pop("reset_mask", None)
        if isinstance(seed, (int, np.integer)):
            options.setdefault("draw_seed", int(seed))
        mask = np.ones(self.num_envs, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
        observations, infos = [""] * self.num_envs, {}
        for i in np.flatnonzero(mask):
            observations[i], info = self.envs[i].reset(seed=seeds[i], options=options or None)
            infos = self._add_info(infos, info, i)
            self._needs_reset[i] = False
        return tuple(observations), infos

    def step(self, actions: Sequence[Any]):
        if len(actions) != self.num_envs:
            raise ValueError(f"expected {self.num_envs} actions, got {len(actions)}")
        n = self.num_envs
        observations, infos = [""] * n, {}
        rewards, terminated, truncated = np.zeros(n), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)

        to_step = []
        for i, action in enumerate(actions):
            if action is None:
                continue
            if self._needs_reset[i] and self.autoreset_mode == AutoresetMode.NEXT_STEP:
                observations[i], info = self.envs[i].reset()
                infos = self._add_info(infos, info, i)
                self._needs_reset[i] = False
            elif self._needs_reset[i] and self.autoreset_mode == AutoresetMode.DISABLED:
                raise RuntimeError(f"sub-env {i} is done; reset it (options={{'reset_mask': ...}}) or pass None")
            else:
                to_step.append(i)

        states = {i: self.envs[i].np_random.bit_generator.state for i in to_step}
        pending = self._prepare(to_step, actions)
        requests = [pair for i in to_step for pair in pending[i].pairs]
        try:
            scores = score_pairs(self.scorer, requests) if requests else np.empty(0)
        except BaseException:  # the episodes stay as they were, IG's draws included, so the step can be retried
            for i, state in states.items():
                self.envs[i].np_random.bit_generator.state = state
            raise
        offset = 0
        for i in to_step:
            k = len(pending[i].pairs)
            obs, rewards[i], terminated[i], truncated[i], info = self.envs[i].complete_step(
                pending[i], scores[offset : offset + k]
            )
            offset += k
            done = terminated[i] or truncated[i]
            if done and self.autoreset_mode == AutoresetMode.SAME_STEP:
                infos = self._add_info(infos, {"final_obs": obs, "final_info": _vector_info(info)}, i)
                obs, info = self.envs[i].reset()
            else:
                self._needs_reset[i] = done
            observations[i] = obs
            infos = self._add_info(infos, _vector_info(info), i)
        return tuple(observations), rewards, terminated, truncated, infos

    def _prepare(self, indices: list[int], actions: Sequence[Any]) -> dict:
        """Parse (once), batch-retrieve and draw IG counterfactuals for the sub-envs in ``indices``."""
        turns = {i: self.envs[i].parse(actions[i]) for i in indices}
        searches = {i: turn.action.query for i, turn in turns.items() if isinstance(turn.action, Search)}
        topks = {self.envs[i].topk for i in searches}
        hits = {}
        for k in topks:  # one batch per distinct topk (normally one)
            batch = [i for i in searches if self.envs[i].topk == k]
            for i, result in zip(batch, self.retriever.batch_search([searches[i] for i in batch], k)):
                hits[i] = result
        blocks = {i: self.envs[i].dialect.documents_block(hits[i]) for i in searches if hits[i]}
        pending = {}
        for i in indices:
            pool = None
            if self.ig_pool == "batch" and i in searches:
                qid = self.envs[i].item.id
                pool = [b for j, b in blocks.items() if j != i and self.envs[j].item.id != qid] or None
            pending[i] = self.envs[i].prepare_step(turns[i], hits=hits.get(i), pool=pool,
                                                   refine_pool=self._refine_pool(i))
        return pending

    def _refine_pool(self, i: int) -> list[tuple[str, str]] | None:
        """With ``ig_pool="batch"`` and ``IGConfig(credit="refine")``: the (documents, refine) pairs of the other
        questions' steps in the batch so far."""
        env = self.envs[i]
        if self.ig_pool != "batch" or not env.ig or env.ig.config.credit != "refine":
            return None
        qid = env.item.id
        return [(s.documents, s.refine) for other in self.envs if other.item is not None and other.item.id != qid
                for s in other.steps if s.refine] or None

    def render(self) -> tuple[str | None, ...]:
        return tuple(env.render() for env in self.envs)

    def close_extras(self, **kwargs: Any) -> None:
        for env in self.envs:
            env.close()


def _seeds(seed, n: int) -> list[int | None]:
    if seed is None:
        return [None] * n
    if isinstance(seed, (int, np.integer)):
        return [int(seed) + i for i in range(n)]
    seeds = list(seed)
    if len(seeds) != n:
        raise ValueError(f"expected {n} seeds, got {len(seeds)}")
    return seeds


def _vector_info(info: dict) -> dict:
    """Drop ``None`` values: in a vector info, absence is the ``_key`` mask being False."""
    return {k: _vector_info(v) if isinstance(v, dict) else v for k, v in info.items() if v is not None}
