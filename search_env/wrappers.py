"""Reward wrappers for :class:`~search_env.env.SearchQAEnv` (any policy, text or numeric).

- :class:`IGShapedReward` rewrites each step's reward as ``outcome + format + ig_weight * clip(IG)``.
- :class:`OutcomeOnly` (``ig_weight=0``) and :class:`OutcomePlusIG` are its two usual settings.

They only transform the reward: which IG the env computes (its baseline, its draws) is set where the env
is made, ``SearchQAEnv(ig=IGConfig(...))``. The numeric view for small policies is
:class:`search_env.numeric.NumericSearchView`.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

__all__ = ["IGShapedReward", "OutcomeOnly", "OutcomePlusIG"]


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
        ig = info.get("ig")
        if ig is not None and self.ig_clip is not None:
            ig = float(np.clip(ig, -self.ig_clip, self.ig_clip))
        components["ig"] = self.ig_weight * ig if ig is not None else 0.0
        if not self.format_penalty:
            components["format"] = 0.0
        info = {**info, "reward_components": components}
        return obs, float(sum(components.values())), terminated, truncated, info


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
