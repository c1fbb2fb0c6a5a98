"""search_env: Gymnasium environments for LLM search agents with step-level information-gain rewards.

``import search_env`` registers ``SearchQA-v0``; ``gym.make("search_env:SearchQA-v0")`` does it for you.
Heavy parts (torch, transformers, retrievers) load on first use.
"""

from __future__ import annotations

import importlib

import gymnasium as gym

from search_env.actions import Answer, Invalid, Search, parse_action
from search_env.data import Corpus, DataFileError, Passage, QADataset, QAItem, load_corpus, load_questions
from search_env.env import SearchQAEnv
from search_env.info_gain import IGConfig
from search_env.retrieval import Hit, Retriever, RetrieverUnavailable
from search_env.rewards import RewardConfig, cover_exact_match, exact_match, f1_score, normalize_answer
from search_env.spaces import UnicodeText

__version__ = "0.1.0"

gym.register(
    id="SearchQA-v0",
    entry_point="search_env.env:SearchQAEnv",
    vector_entry_point="search_env.vector:SearchQAVectorEnv",
)

_LAZY = {
    "TransformersScorer": "search_env.scorers",
    "default_scorer": "search_env.scorers",
    "load_bundled_model": "search_env.scorers",
    "BM25Retriever": "search_env.retrieval.bm25",
    "RankBM25Retriever": "search_env.retrieval.bm25",
    "build_world": "search_env.data.synthetic",
    "SearchQAVectorEnv": "search_env.vector",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'search_env' has no attribute {name!r}")


__all__ = [
    "Answer",
    "Corpus",
    "DataFileError",
    "Hit",
    "IGConfig",
    "Invalid",
    "Passage",
    "QADataset",
    "QAItem",
    "Retriever",
    "RetrieverUnavailable",
    "RewardConfig",
    "Search",
    "SearchQAEnv",
    "UnicodeText",
    "cover_exact_match",
    "exact_match",
    "f1_score",
    "load_corpus",
    "load_questions",
    "normalize_answer",
    "parse_action",
    *_LAZY,
]
