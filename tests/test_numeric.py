"""search_env.wrappers.numeric: the mentions found in passages and the numeric view for small policies.

Fast: FakeScorer or ig=False everywhere, the bundled model is never loaded."""

import numpy as np
import pytest

from search_env.data.qa import QADataset
from search_env.data.synthetic import build_world
from search_env.env import SearchQAEnv
from search_env.retrieval.base import Hit
from search_env.wrappers import OutcomeOnly, OutcomePlusIG
from search_env.wrappers.numeric import NumericSearchView, TitleMentions


def _assert_sum(reward, info):
    assert reward == pytest.approx(sum(info["reward_components"].values()))


# ----------------------------------------------------------------------------------------- mentions


def test_title_mentions_in_order_with_cues():
    mentions = TitleMentions(["Karvesh", "Brisk Hollow", "Brisk", "Veltrania"])
    hits = [Hit("d1", "Karvesh", "Karvesh lies in Veltrania. It was founded in 1820 near Brisk Hollow.", 1.0)]
    found = mentions(hits)
    assert [m.name for m in found] == ["Veltrania", "1820", "Brisk Hollow"]  # own title skipped, longest title wins
    assert found[0].before == ("karvesh", "lies", "in") and found[0].after == ()
    assert found[1].is_year and found[2].before == ("in", "1820", "near")
    assert all(m.rank == 0 for m in found) and [m.order for m in found] == [0, 1, 2]


# ----------------------------------------------------------------------------------------- numeric view


@pytest.fixture(scope="module")
def world():
    return build_world(seed=0)


@pytest.fixture(scope="module")
def two_hop(world):
    return QADataset([q for q in world.questions if q.metadata["hops"] == 2][:30], name="two-hop")


def _view(world, questions, **kwargs):
    return NumericSearchView(
        OutcomeOnly(SearchQAEnv(questions=questions, corpus=world.corpus, ig=False, max_turns=4)), **kwargs
    )


def _play(view, policy, index):
    obs, _ = view.reset(options={"index": index})
    assert view.observation_space.contains(obs)
    done, info = False, {}
    while not done:
        obs, reward, terminated, truncated, info = view.step(policy(view))
        assert view.observation_space.contains(obs)
        _assert_sum(reward, info)
        done = terminated or truncated
    return info.get("em", 0.0)


def test_oracle_high_em_random_low_em(world, two_hop):
    view = _view(world, two_hop)
    assert view.action_space.n == 13
    oracle = np.mean([_play(view, NumericSearchView.oracle_action, i) for i in range(len(two_hop))])
    rng = np.random.default_rng(0)
    rand = np.mean([_play(view, lambda v: int(rng.integers(v.action_space.n)), i % len(two_hop)) for i in range(90)])
    assert oracle >= 0.8
    assert rand <= 0.1


def test_observation_layout_and_info(world, two_hop):
    view = _view(world, two_hop, n_candidates=4, question_dim=16, cue_dim=8)
    obs, _ = view.reset(seed=3, options={"index": 0})
    assert obs.shape == (16 + 8 + 4 * (9 + 8),) and obs.dtype == np.float32
    assert np.linalg.norm(obs[:16]) == pytest.approx(1.0, abs=1e-5)
    assert obs[16] == 1.0 and obs[16 + 5] == 0.0  # no searches yet, turn 0
    assert not obs[24:].any()  # no candidates yet
    _, _, _, _, info = view.step(4)  # search candidate 4: an empty slot, an invalid turn
    assert info["numeric_action"] == "empty_slot" and info["candidate"] is None and info["action_type"] == "invalid"
    assert info["reward_components"]["format"] == -0.1
    obs, _, _, _, info = view.step(0)
    assert info["numeric_action"] == "search_question" and info["action_type"] == "search"
    assert obs[16 + 1] == 1.0 and obs[16 + 6] == 1.0 and obs[16 + 7] == 0.0  # one search, question searched
    assert view.candidates and obs[24] == 1.0  # slot 0 present
    name = view.candidates[0].name
    _, _, _, _, info = view.step(1)
    assert info["numeric_action"] == "search" and info["candidate"] == name and info["query"] == name
    assert name not in [m.name for m in view.candidates]  # searched names leave the slots
    with pytest.raises(ValueError):
        view.step(9)


def test_reset_seed_picks_questions_reproducibly(world, two_hop):
    view = _view(world, two_hop)

    def ids():
        return [view.reset(seed=7)[1]["question_id"]] + [view.reset()[1]["question_id"] for _ in range(5)]

    assert ids() == ids()
    assert view.reset(options={"question_id": two_hop[5].id})[1]["question_id"] == two_hop[5].id


def test_frozen_ig_draws_repeat(world, two_hop, fake_scorer):
    env = SearchQAEnv(questions=two_hop, corpus=world.corpus, scorer=fake_scorer, max_turns=4)
    view = NumericSearchView(OutcomePlusIG(env, 0.1))
    igs = []
    for seed in (1, 2):
        view.reset(seed=seed, options={"index": 3})
        igs.append(view.step(0)[4]["ig_detail"]["logp_random"])
    assert igs[0] == igs[1]


def test_needs_corpus_or_mentions(tiny_questions):
    with pytest.raises(ValueError):
        NumericSearchView(SearchQAEnv(questions=tiny_questions, ig=False))
