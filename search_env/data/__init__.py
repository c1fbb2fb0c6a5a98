"""Corpora, question sets and the built-in world."""

from search_env.data.corpus import Corpus, Passage, load_corpus
from search_env.data.errors import DataFileError
from search_env.data.qa import QADataset, QAItem, load_hf_questions, load_questions

__all__ = [
    "Corpus",
    "DataFileError",
    "Passage",
    "QADataset",
    "QAItem",
    "load_corpus",
    "load_hf_questions",
    "load_questions",
]
