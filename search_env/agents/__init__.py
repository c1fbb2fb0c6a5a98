"""Agents that play the env: language-model policies, the oracle, the episode loop, and the bundled models.

- :mod:`~search_env.agents.policy`: ``chat_prompt``, ``LMPolicy``, ``OraclePolicy``, ``play_episode``,
  ``play_episodes``.
- :mod:`~search_env.agents.models`: ``load_causal_lm`` (the bundled SmolLM2 or any causal LM), ``random_causal_lm``.

Imported on first use: the models pull in torch and transformers.
"""

from __future__ import annotations

import importlib

_NAMES = {"chat_prompt": "policy", "LMPolicy": "policy", "OraclePolicy": "policy", "play_episode": "policy",
          "play_episodes": "policy", "load_causal_lm": "models", "random_causal_lm": "models"}


def __getattr__(name: str):
    if name in _NAMES:
        return getattr(importlib.import_module(f"search_env.agents.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'search_env.agents' has no attribute {name!r}")


__all__ = list(_NAMES)
