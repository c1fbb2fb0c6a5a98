"""Answer normalisation, EM / F1 / cover-EM, and how reward components combine into one reward."""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split())


def exact_match(prediction: str, golden_answers: Sequence[str]) -> float:
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in golden_answers))


def cover_exact_match(prediction: str, golden_answers: Sequence[str]) -> float:
    """1 when a normalised gold answer occurs, as whole words, inside the normalised prediction."""
    pred = f" {normalize_answer(prediction)} "
    return float(any(g and f" {g} " in pred for g in map(normalize_answer, golden_answers)))


def f1_score(prediction: str, golden_answers: Sequence[str]) -> float:
    """Token-level F1, the best over the gold answers."""
    pred = normalize_answer(prediction).split()
    best = 0.0
    for gold in golden_answers:
        ref = normalize_answer(gold).split()
        common = sum((Counter(pred) & Counter(ref)).values())
        if common:
            precision, recall = common / len(pred), common / len(ref)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


OUTCOME_METRICS = {"em": exact_match, "f1": f1_score, "cover_em": cover_exact_match}


def clipped_ig(ig: float | None, weight: float, clip: float | None) -> float:
    """``weight * clip(ig, -clip, clip)`` (``clip`` ``None``: no clipping); 0 without IG. The IG reward term of
    :class:`~search_env.wrappers.IGShapedReward` and of the trainer adapters' turn rewards."""
    if ig is None:
        return 0.0
    return weight * (float(ig) if clip is None else min(max(float(ig), -clip), clip))


@dataclass(frozen=True)
class RewardConfig:
    """Weights of the reward components; ``reward`` is the sum of the weighted components.

    - ``outcome``: the metric of the final answer (``"em"``, ``"f1"`` or ``"cover_em"``), times
      ``outcome_weight``; 0 for an episode cut off at ``max_turns``.
    - ``format``: ``-format_penalty`` on each invalid turn.
    - ``ig``: ``ig_weight * IG`` on each scored search step. 0 by default: IG is in ``info["ig"]`` for
      trainers that assign it to tokens themselves.
    - ``plan`` (only with ``plan_weight``, in the ``plan`` dialect): ``plan_weight`` times the step's rise in
      :func:`search_env.plan.plan_coverage`, how well the searches cover the agent's ``<plan>``; the plan-aware
      reward, whose terms add up to ``plan_weight`` times the final coverage (at most ``plan_weight``).
    """

    outcome: str = "em"
    outcome_weight: float = 1.0
    format_penalty: float = 0.1
    ig_weight: float = 0.0
    plan_weight: float = 0.0

    def __post_init__(self):
        if self.outcome not in OUTCOME_METRICS:
            raise ValueError(f"outcome must be one of {sorted(OUTCOME_METRICS)}, not {self.outcome!r}")
        if not (isinstance(self.plan_weight, (int, float)) and math.isfinite(self.plan_weight)):
            raise ValueError(f"plan_weight must be a finite number, not {self.plan_weight!r}")

    def outcome_score(self, prediction: str, golden_answers: Sequence[str]) -> float:
        return OUTCOME_METRICS[self.outcome](prediction, golden_answers)

    def components(
        self, *, outcome: float = 0.0, invalid: bool = False, ig: float | None = None, plan: float = 0.0
    ) -> dict[str, float]:
        """The weighted components; ``plan`` is the step's rise in plan coverage (its key only with ``plan_weight``)."""
        out = {
            "outcome": self.outcome_weight * outcome,
            "format": -self.format_penalty if invalid else 0.0,
            "ig": self.ig_weight * ig + 0.0 if ig is not None else 0.0,  # + 0.0: never -0.0
        }
        if self.plan_weight:
            out["plan"] = self.plan_weight * plan + 0.0
        return out
