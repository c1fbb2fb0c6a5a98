"""What every scorer is: the :class:`Scorer` protocol, and :class:`ScorerUnavailable`, raised when scoring on
servers fails (both also in :mod:`search_env.scoring`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["Scorer", "ScorerUnavailable"]


@runtime_checkable
class Scorer(Protocol):
    """Scores answers given contexts."""

    def score(self, contexts: Sequence[str], answers: Sequence[str]) -> np.ndarray:
        """Float64 array, one score per (context, answer) pair, in input order."""
        ...


class ScorerUnavailable(RuntimeError):
    """Every attempt to score on the server(s) failed; ``failures`` lists each URL and why."""

    failures: list[str]
