"""Wrappers around :class:`~search_env.SearchQAEnv`: reward wrappers for ablations (they transform outputs only) and
:class:`~search_env.wrappers.numeric.NumericSearchView`, a ``Box``/``Discrete`` view for stable-baselines3."""

from search_env.wrappers.numeric import NumericSearchView
from search_env.wrappers.rewards import (
                                         IGShapedReward,
                                         OutcomeOnly,
                                         OutcomePlusIG,
                                         PotentialShapedReward,
                                         TurnLimitAsTerminal,
)

__all__ = [
    "IGShapedReward",
    "NumericSearchView",
    "OutcomeOnly",
    "OutcomePlusIG",
    "PotentialShapedReward",
    "TurnLimitAsTerminal",
]
