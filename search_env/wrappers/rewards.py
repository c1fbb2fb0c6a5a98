"""Reward wrappers for :class:`~search_env.env.SearchQAEnv` (any policy, text or numeric).

- :class:`IGShapedReward` rewrites each step's reward as ``outcome + format + ig_weight * clip(IG)``.
- :class:`OutcomeOnly` (``ig_weight=0``) and :class:`OutcomePlusIG` are its two usual settings.
- :class:`PotentialShapedReward` adds ``ig_weight * (gamma * Φ(s') - Φ(s))`` instead, with ``Φ(s)`` the score of
  the gold answer given the context of ``s``: potential-based shaping, which leaves the optimal policy unchanged.
- :class:`TurnLimitAsTerminal` reports the end at ``max_turns`` as a termination, for trainers that bootstrap
  truncated episodes when the observation carries the turn count.

They only transform the reward, from what the env reports in ``info``: which IG the env computes (its baseline,
its draws) is set where the env is made, ``SearchQAEnv(ig=IGConfig(...))``. The numeric view for small policies
is :class:`search_env.wrappers.numeric.NumericSearchView`.
"""

from __future__ import annotations

import gymnasium as gym

from search_env.rewards import clipped_ig

__all__ = ["IGShapedReward", "OutcomeOnly", "OutcomePlusIG", "PotentialShapedReward", "TurnLimitAsTerminal"]


class IGShapedReward(gym.Wrapper):
    """``reward = outcome + format + ig_weight * clip(IG, -ig_clip, ig_clip)`` on every step.

    ``outcome`` and ``format`` are the env's own (weighted) components; the env's own ``ig`` component is
    replaced, so IG is never counted twice. ``info["reward_components"]["ig"]`` holds the new IG term, so
    the reward is still the sum of the components. A step without IG (an answer, IG off, nothing
    retrieved) adds 0.

    Args:
        env: a :class:`SearchQAEnv`, possibly wrapped.
        ig_weight: λ, the weight of the IG term (0: outcome only).
        ig_clip: IG is clipped to ``[-ig_clip, ig_clip]`` nats first (``None``: no clipping).
        format_penalty: keep the env's penalty for invalid turns (``False`` drops it).
    """

    def __init__(
        self,
        env: gym.Env,
        ig_weight: float = 0.0,
        *,
        ig_clip: float | None = None,
        format_penalty: bool = True,
    ):
        super().__init__(env)
        if ig_clip is not None and ig_clip <= 0:
            raise ValueError(f"ig_clip must be positive or None, not {ig_clip}")
        self.ig_weight, self.ig_clip, self.format_penalty = float(ig_weight), ig_clip, format_penalty

    def step(self, action):
        obs, _, terminated, truncated, info = self.env.step(action)
        components = dict(info["reward_components"])
        components["ig"], extra = self._ig_term(info, terminated, truncated)
        if not self.format_penalty:
            components["format"] = 0.0
        info = {**info, **extra, "reward_components": components}
        return obs, float(sum(components.values())), terminated, truncated, info

    def _ig_term(self, info: dict, terminated: bool, truncated: bool) -> tuple[float, dict]:
        """This step's ``ig`` reward component, and entries to add to ``info``."""
        return clipped_ig(info.get("ig"), self.ig_weight, self.ig_clip), {}


class OutcomeOnly(IGShapedReward):
    """The outcome (and format penalty) only: IG, if the env computes it, stays in ``info`` unrewarded.
    Make the env with ``ig=False`` to skip scoring altogether."""

    def __init__(self, env: gym.Env, *, format_penalty: bool = True):
        super().__init__(env, 0.0, format_penalty=format_penalty)


class OutcomePlusIG(IGShapedReward):
    """Outcome plus ``ig_weight * clip(IG)`` on each search step (IG-Search's dense credit, as a reward)."""

    def __init__(
        self,
        env: gym.Env,
        ig_weight: float = 0.1,
        *,
        ig_clip: float | None = 5.0,
        format_penalty: bool = True,
    ):
        super().__init__(env, ig_weight, ig_clip=ig_clip, format_penalty=format_penalty)


class PotentialShapedReward(IGShapedReward):
    """``reward = outcome + format + ig_weight * (gamma * Φ(s') - Φ(s))``: potential-based shaping (Ng, Harada
    & Russell, 1999) with ``Φ(s) = score(gold | context of s)``.

    The context of a state is the one IG scores: the prefix (prompt, and what the agent wrote before its first
    search), then the search and passage blocks so far. Φ is read from ``info``, never from the env itself:

    - the start state ``s0``: ``info["logp_start"]`` returned by ``reset``, the score of the gold answer after
      the bare prefix (the env reports it when made with ``IGConfig(score_start=True)``);
    - after a scored search: ``info["ig_detail"]["logp_real"]``, the score with that search's passages;
    - after an invalid turn, or a search that was not scored (nothing retrieved; under the ``best`` baseline,
      only passages seen before): unchanged, as the passages in the context are;
    - after the last step (an answer, or any turn that reaches ``max_turns``): 0, ``Φ(terminal) = 0``.

    So the shaping terms telescope: with ``gamma`` equal to the trainer's discount, the discounted return of any
    episode, however it ends, is the unshaped one minus ``ig_weight * Φ(s0)``, a constant per question. The
    optimal policy is unchanged, and, unlike :class:`OutcomePlusIG`, searching until the episode is cut off
    earns nothing in total: a search that raises Φ is paid at once and paid back at the end. The terms are not
    clipped (clipping would break the telescoping); Φ is a log-probability, so the last step's term,
    ``-ig_weight * Φ``, is positive and grows with how unlikely the gold answer still is.

    ``info["reward_components"]["ig"]`` holds ``ig_weight * F`` and ``info["potential"]`` holds ``phi`` (Φ(s)),
    ``phi_next`` (Φ(s')) and ``shaping`` (``F = gamma * phi_next - phi``).

    Args:
        env: a :class:`SearchQAEnv` with IG on and ``IGConfig(score_start=True)``, possibly wrapped.
        ig_weight: λ, the weight of the shaping term.
        gamma: the discount of the trainer that consumes the rewards, in (0, 1].
        format_penalty: keep the env's penalty for invalid turns (``False`` drops it).

    Raises:
        ValueError: ``gamma`` outside (0, 1]; from ``reset``, an env that does not report ``logp_start``.
    """

    def __init__(self, env: gym.Env, ig_weight: float = 0.1, *, gamma: float = 1.0, format_penalty: bool = True):
        super().__init__(env, ig_weight, format_penalty=format_penalty)
        if not 0 < gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], not {gamma}")
        self.gamma = float(gamma)
        self._phi: float | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        if info.get("logp_start") is None:
            raise ValueError(
                "PotentialShapedReward needs Φ(s0), info['logp_start'] from reset: make the env with IG on and "
                "ig=IGConfig(score_start=True)"
            )
        self._phi = float(info["logp_start"])
        return obs, info

    def _ig_term(self, info: dict, terminated: bool, truncated: bool) -> tuple[float, dict]:
        if self._phi is None:
            raise RuntimeError("call reset() before step()")
        phi = phi_next = self._phi
        real = (info.get("ig_detail") or {}).get("logp_real") if info.get("action_type") == "search" else None
        if terminated or truncated:
            phi_next = 0.0
        elif real is not None:
            phi_next = float(real)
        self._phi = phi_next
        shaping = self.gamma * phi_next - phi
        return self.ig_weight * shaping, {"potential": {"phi": phi, "phi_next": phi_next, "shaping": shaping}}


class TurnLimitAsTerminal(gym.Wrapper):
    """Report the end of an episode at ``max_turns`` as ``terminated`` instead of ``truncated``.

    ``SearchQAEnv`` truncates at its turn limit, as Gymnasium's time limits do. Trainers that follow that contract
    bootstrap a truncated episode: stable-baselines3's PPO adds ``gamma * V(last observation)`` to its last reward,
    as if the episode went on. When the observation carries the turn count (``NumericSearchView`` does; a text
    policy's transcript does), the turn limit is part of the task and ending there is terminal: the bootstrap pays
    every cut-off episode the value of a state it can never continue from. Under :class:`PotentialShapedReward`
    that value includes the last step's ``-ig_weight * Φ`` (positive, and large), so cut-off episodes get it twice.
    ``info["turn_limit"]`` is True on such a step. Rewards and observations are unchanged.
    """

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if truncated and not terminated:
            info = {**info, "turn_limit": True}
            terminated, truncated = True, False
        return obs, reward, terminated, truncated, info
