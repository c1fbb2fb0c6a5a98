"""How a (context, answer) pair is scored, the same for every scorer and for deferred IG: the token ids a model
reads, and the weighting that turns the answer tokens' log-probabilities into one score.

``score(a | C) = Σ_j w_j · log p(a_j | C + answer_prefix, a_<j) / Σ_j w_j``, with ``w_j = head_weight`` for the
first ``head_tokens`` answer tokens and 1 after (IG-Search's emphasis on the answer's first tokens). The context
is ``C + answer_prefix`` tokenized on its own and cut from the left to ``max_context_tokens``; the answer is
``" " + a.strip()`` tokenized on its own, so its first token carries the space as when a model writes it. No
special tokens are added. numpy only: an env worker that holds no model can build requests with it.

``answer_style="authors"`` reproduces the IG-Search authors' code instead: the context is ``C + answer_prefix + " "``
(``"\n<answer> "``) and the answer ``a.strip()`` is tokenized bare, so the space is a token of the context and the
answer's first token has no leading space. The default stays ``"natural"``: with SmolLM2-135M on 16 held-out 2Wiki
questions it raised the gold-vs-unrelated paired win rate of IG from 0.75 to 0.88 (and a numeric answer is split
as a model would write it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ANSWER_STYLES", "ScoreFormat"]

ANSWER_STYLES = ("natural", "authors")


@dataclass(frozen=True)
class ScoreFormat:
    """The tokenization and weighting of answer scores (see the module docstring).

    Raises:
        ValueError: ``max_context_tokens`` below 1, ``head_tokens`` below 0 or ``head_weight`` not positive.
    """

    answer_prefix: str = "\n<answer>"
    max_context_tokens: int = 4096
    head_tokens: int = 3
    head_weight: float = 3.0
    answer_style: str = "natural"  # or "authors" (see the module docstring)

    def __post_init__(self):
        if self.answer_style not in ANSWER_STYLES:
            raise ValueError(f"answer_style must be one of {ANSWER_STYLES}, not {self.answer_style!r}")
        if self.max_context_tokens < 1:
            raise ValueError(f"max_context_tokens must be >= 1, got {self.max_context_tokens}")
        if self.head_tokens < 0 or not self.head_weight > 0:
            raise ValueError(
                f"head_tokens must be >= 0 and head_weight > 0, got {self.head_tokens}, {self.head_weight}"
            )

    def encode(self, tokenizer: Any, pairs: Sequence[tuple[str, str]]) -> list[tuple[list[int], int]]:
        """``(token ids, answer start)`` of each pair: the answer's tokens are ``ids[start:]``.

        Raises:
            ValueError: an empty answer (nothing to score), or an empty context (nothing for the answer to follow).
        """
        for i, (_, answer) in enumerate(pairs):
            if not answer.strip():
                raise ValueError(f"answer {i} is empty: an empty answer has no tokens to score")
        if not pairs:
            return []
        space = " " if self.answer_style == "authors" else ""
        contexts = tokenizer([c + self.answer_prefix + space for c, _ in pairs], add_special_tokens=False)["input_ids"]
        lead = "" if self.answer_style == "authors" else " "
        answers = tokenizer([lead + a.strip() for _, a in pairs], add_special_tokens=False)["input_ids"]
        encoded = []
        for context, answer in zip(contexts, answers):
            context = list(context)[-self.max_context_tokens :]
            if not context:
                raise ValueError("context + answer_prefix is empty: the first answer token has nothing to follow")
            encoded.append((context + list(answer), len(context)))
        return encoded

    def weights(self, n: int) -> np.ndarray:
        """The weights of ``n`` answer tokens, summing to 1."""
        w = np.ones(n, dtype=np.float64)
        w[: self.head_tokens] = self.head_weight
        return w / w.sum()

    def combine(self, answer_logprobs: Sequence[float]) -> float:
        """The score from the log-probabilities of an answer's tokens, in order (float64, as every scorer does)."""
        lp = np.asarray(answer_logprobs, dtype=np.float64)
        if lp.ndim != 1 or lp.size == 0:
            raise ValueError(
                f"expected the log-probabilities of one answer's tokens (1-D, not empty), got shape {lp.shape}"
            )
        return float(self.weights(lp.size) @ lp)
