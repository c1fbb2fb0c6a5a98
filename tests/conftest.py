import os

import numpy as np
import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers on two cores: torch's own thread pool per worker would oversubscribe the machine.
    import torch

    torch.set_num_threads(1)

from search_env.data import Corpus, Passage, load_questions
from tests.standins import FakeScorer

CITIES = ["Karvesh", "Omrith", "Dallowmere", "Sentavo", "Brisk Hollow", "Quenlar"]
COUNTRIES = ["Veltrania", "Osmundia", "Harrowstan"]


@pytest.fixture(autouse=True)
def _mapped_corpora_under_tmp(monkeypatch, tmp_path_factory):
    """Mapped corpora built by a test go to pytest's temporary folder, not the user's cache (whose other contents,
    the converted bundled model above all, the tests do use)."""
    import search_env.data.mapped as mapped

    root = tmp_path_factory.getbasetemp() / "cache"
    monkeypatch.setattr(mapped, "cache_dir", lambda *parts: root.joinpath(*parts))


@pytest.fixture(scope="session")
def tiny_corpus() -> Corpus:
    passages = []
    for i, city in enumerate(CITIES):
        country = COUNTRIES[i % len(COUNTRIES)]
        passages.append(Passage(f"c{i}", city, f"{city} is a river city in {country}, founded on the old salt road."))
    for i, country in enumerate(COUNTRIES):
        passages.append(Passage(f"k{i}", country, f"{country} is a country whose capital is {CITIES[i]}."))
    rng = np.random.default_rng(0)
    filler = "harbour market bridge festival guild orchard mill tower canal quarry".split()
    for i in range(30):
        words = " ".join(rng.choice(filler, size=12))
        passages.append(Passage(f"f{i}", f"Notes {i}", f"Miscellany about {words}."))
    return Corpus(passages, name="tiny")


@pytest.fixture(scope="session")
def tiny_questions():
    return load_questions(
        [
            {"id": f"q{i}", "question": f"In which country is {city}?", "golden_answers": [COUNTRIES[i % 3]],
             "metadata": {"supporting_doc_ids": [f"c{i}"]}}
            for i, city in enumerate(CITIES)
        ]
    )


@pytest.fixture
def fake_scorer():
    return FakeScorer()
