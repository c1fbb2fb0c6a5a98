"""A Text space for natural language: Gymnasium's ``Text`` rejects any character outside its charset."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

# Sampled characters: letters, digits, punctuation, the tag characters, whitespace and some non-ASCII,
# so random actions exercise the parser.
_SAMPLE_CHARSET = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    " \n\t.,;:!?'\"()[]{}<>/\\-_=+*&%$#@~`|^"
    "éüßøçñåœłžşğ中文日本語한국어Ωπ∑→€\u200b"
)


class UnicodeText(spaces.Text):
    """Any Python ``str`` of ``min_length`` to ``max_length`` characters."""

    def __init__(self, max_length: int, *, min_length: int = 0, sample_length: int = 256, seed=None):
        super().__init__(max_length, min_length=min_length, charset=_SAMPLE_CHARSET, seed=seed)
        self.sample_length = min(sample_length, max_length)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length

    def sample(self, mask=None, probability=None) -> str:
        """A random string of up to ``sample_length`` characters (short, so checks stay fast)."""
        if mask is not None or probability is not None:
            return super().sample(mask=mask, probability=probability)
        length = int(self.np_random.integers(self.min_length, max(self.min_length, self.sample_length) + 1))
        chars = self.np_random.choice(np.array(list(self.characters)), size=length)
        return "".join(chars.tolist())

    def __repr__(self) -> str:
        return f"UnicodeText({self.min_length}, {self.max_length})"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, UnicodeText) and (
            (self.min_length, self.max_length) == (other.min_length, other.max_length)
        )
