"""search_env: Gymnasium environments for LLM search agents with step-level information-gain rewards.

``import search_env`` registers ``SearchQA-v0``; ``gym.make("search_env:SearchQA-v0")`` does it for you.
Heavy parts (torch, transformers, retrievers) load on first use.
"""

from __future__ import annotations

import importlib

import gymnasium as gym

from search_env import _moved
from search_env.actions import Answer, Invalid, Search, parse_action
from search_env.data import Corpus, QADataset, load_corpus, load_questions
from search_env.env import SearchQAEnv
from search_env.info_gain import IGConfig
from search_env.retrieval import Hit, Retriever, RetrieverUnavailable
from search_env.rewards import RewardConfig, exact_match, f1_score
from search_env.scoring import ScorerUnavailable

__version__ = "0.1.0"

_moved.install()  # old module paths (search_env.policy, ...) keep working for one release, with a warning

gym.register(
    id="SearchQA-v0",
    entry_point="search_env.env:SearchQAEnv",
    vector_entry_point="search_env.vector:SearchQAVectorEnv",
)

_LAZY = {  # imported on first use: they pull in torch, transformers or the world generator
    "SearchQAVectorEnv": "search_env.vector",
    "build_world": "search_env.data.synthetic",
    "TransformersScorer": "search_env.scoring.transformers_scorer",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'search_env' has no attribute {name!r}")


__all__ = [
    # environments
    "SearchQAEnv",
    "SearchQAVectorEnv",
    # actions
    "parse_action",
    "Search",
    "Answer",
    "Invalid",
    # data
    "load_questions",
    "load_corpus",
    "build_world",
    "QADataset",
    "Corpus",
    # retrieval
    "Retriever",
    "Hit",
    "RetrieverUnavailable",
    "ScorerUnavailable",
    # rewards and scoring
    "RewardConfig",
    "IGConfig",
    "exact_match",
    "f1_score",
    "TransformersScorer",
]
