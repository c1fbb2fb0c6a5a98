"""search_env.wrappers: the reward wrappers, with hand-checkable numbers.

Fast: FakeScorer, TableScorer or ig=False everywhere, the bundled model is never loaded."""

import re

import numpy as np
import pytest

from search_env.env import SearchQAEnv
from search_env.info_gain import IGConfig
from search_env.rewards import RewardConfig
from search_env.wrappers import IGShapedReward, OutcomeOnly, OutcomePlusIG, PotentialShapedReward, TurnLimitAsTerminal

SEARCH = {"kind": "search", "text": "Karvesh country"}
ANSWER_RIGHT = {"kind": "answer", "text": "Veltrania"}  # q0: "In which country is Karvesh?"


@pytest.fixture
def base_env(tiny_corpus, tiny_questions, fake_scorer):
    """The env itself rewards IG with weight 1, so a wrapper that fails to replace it would show."""
    return SearchQAEnv(questions=tiny_questions, corpus=tiny_corpus, scorer=fake_scorer,
                       reward=RewardConfig(ig_weight=1.0), max_turns=4)


def _reset(env):
    return env.reset(seed=0, options={"question_id": "q0"})


def _assert_sum(reward, info):
    assert reward == pytest.approx(sum(info["reward_components"].values()))


# ----------------------------------------------------------------------------------------- rewards


def test_outcome_only_drops_ig(base_env):
    env = OutcomeOnly(base_env)
    _reset(env)
    _, reward, _, _, info = env.step(SEARCH)
    assert info["ig"] is not None and info["ig"] > 0.5  # the env still computes and reports IG
    assert info["reward_components"]["ig"] == 0.0
    assert reward == 0.0
    _assert_sum(reward, info)
    _, reward, terminated, _, info = env.step(ANSWER_RIGHT)
    assert terminated and reward == 1.0 and info["reward_components"] == {"outcome": 1.0, "format": 0.0, "ig": 0.0}


def test_outcome_plus_ig_adds_weighted_clipped_ig(tiny_corpus, tiny_questions, fake_scorer):
    def make():
        return SearchQAEnv(questions=tiny_questions, corpus=tiny_corpus, scorer=fake_scorer,
                           reward=RewardConfig(ig_weight=1.0))

    # unclipped: exactly lambda * IG (not IG + lambda * IG: the env's own IG term is replaced)
    env = OutcomePlusIG(make(), ig_weight=0.5, ig_clip=None)
    _reset(env)
    _, reward, _, _, info = env.step(SEARCH)
    ig = info["ig"]
    assert ig > 0.5
    assert reward == pytest.approx(0.5 * ig)
    assert info["reward_components"] == {"outcome": 0.0, "format": 0.0, "ig": pytest.approx(0.5 * ig)}

    # clipped at 0.3: 0.5 * 0.3
    env = OutcomePlusIG(make(), ig_weight=0.5, ig_clip=0.3)
    _reset(env)
    _, reward, _, _, info = env.step(SEARCH)
    assert info["ig"] == pytest.approx(ig)  # info keeps the raw IG
    assert reward == pytest.approx(0.15)
    _assert_sum(reward, info)

    # an answer adds no IG
    _, reward, _, _, info = env.step(ANSWER_RIGHT)
    assert reward == 1.0 and info["reward_components"]["ig"] == 0.0


def test_negative_ig_is_clipped_from_below(tiny_corpus, tiny_questions, fake_scorer):
    env = OutcomePlusIG(SearchQAEnv(questions=tiny_questions, corpus=tiny_corpus, scorer=fake_scorer,
                                    ig=IGConfig(baseline="previous")), ig_weight=2.0, ig_clip=0.25)
    _reset(env)
    env.step(SEARCH)  # the answer is now in the context
    _, reward, _, _, info = env.step({"kind": "search", "text": "harbour market"})  # filler: IG about -1
    assert info["ig"] < -0.25
    assert reward == pytest.approx(-0.5)


def _env_with_baseline(tiny_corpus, tiny_questions, fake_scorer, baseline):
    return SearchQAEnv(questions=tiny_questions, corpus=tiny_corpus, scorer=fake_scorer,
                       ig=IGConfig(baseline=baseline), reward=RewardConfig(ig_weight=1.0))


@pytest.mark.parametrize("baseline", ["none", "previous", "best", "random"])
def test_wrapper_weights_the_ig_of_the_env_baseline(tiny_corpus, tiny_questions, fake_scorer, baseline):
    inner = _env_with_baseline(tiny_corpus, tiny_questions, fake_scorer, baseline)
    env = IGShapedReward(inner, 0.1)
    _reset(env)
    _, reward, _, _, info = env.step(SEARCH)
    assert info["ig_detail"]["baseline"] == baseline
    assert reward == pytest.approx(0.1 * info["ig"])
    assert inner.ig_config == IGConfig(baseline=baseline)  # the wrapper only reads the env's IG


def test_ig_baselines_give_different_gains(tiny_corpus, tiny_questions, fake_scorer):
    def repeat_search_ig(baseline):
        env = IGShapedReward(_env_with_baseline(tiny_corpus, tiny_questions, fake_scorer, baseline), 1.0)
        _reset(env)
        env.step(SEARCH)
        return env.step(SEARCH)[4]  # the same passages again

    repeat_previous, repeat_random = repeat_search_ig("previous"), repeat_search_ig("random")
    assert repeat_previous["ig_detail"]["baseline"] == "previous"
    assert abs(repeat_previous["ig"]) < 0.01 < 0.5 < repeat_random["ig"]  # little marginal gain; vs random: large


def test_wrapper_does_not_turn_ig_on(tiny_corpus, tiny_questions, fake_scorer):
    inner = SearchQAEnv(questions=tiny_questions, corpus=tiny_corpus, scorer=fake_scorer, ig=False)
    env = IGShapedReward(inner, 1.0)
    _reset(env)
    _, reward, _, _, info = env.step(SEARCH)
    assert inner.ig_config is None and info["ig"] is None and reward == 0.0


def test_reward_is_sum_of_components_and_format_penalty(base_env):
    for wrapper, penalty in (
        (OutcomePlusIG(base_env, 0.2), -0.1),
        (OutcomePlusIG(base_env, 0.2, format_penalty=False), 0.0),
    ):
        _reset(wrapper)
        for action in (SEARCH, "no tags at all", {"kind": "search", "text": "Omrith"}, ANSWER_RIGHT):
            _, reward, terminated, truncated, info = wrapper.step(action)
            _assert_sum(reward, info)
            if info["action_type"] == "invalid":
                assert info["reward_components"]["format"] == penalty
        assert terminated


def test_ig_off_adds_nothing(tiny_corpus, tiny_questions):
    env = OutcomePlusIG(SearchQAEnv(questions=tiny_questions, corpus=tiny_corpus, ig=False), 0.5)
    _reset(env)
    _, reward, _, _, info = env.step(SEARCH)
    assert info["ig"] is None and reward == 0.0


def test_bad_clip_raises(base_env):
    with pytest.raises(ValueError):
        IGShapedReward(base_env, 0.1, ig_clip=0)


# ------------------------------------------------------------------------------ potential-based shaping

START = -3.0  # Φ(s0): the score of the gold answer after the bare prompt
PHI = {"Karvesh country": -0.5, "harbour market": -2.5, "Omrith": -1.25}  # Φ after a search, by its query


class TableScorer:
    """The score of a context is set by its last search: ``PHI[query]``, or ``START`` before any search (the
    prompt's own ``<search> query </search>`` example is not in the table). Exact binary fractions, so the
    hand-computed returns below hold to the last bit."""

    def score(self, contexts, answers):
        out = []
        for context in contexts:
            queries = [q for q in re.findall(r"<search> (.*?) </search>", context) if q in PHI]
            out.append(PHI[queries[-1]] if queries else START)
        return np.array(out)


def _potential_env(tiny_corpus, tiny_questions, *, max_turns=5, baseline="random", ig_weight=0.5, gamma=1.0):
    scorer = TableScorer()
    inner = SearchQAEnv(questions=tiny_questions, corpus=tiny_corpus, scorer=scorer, max_turns=max_turns,
                        ig=IGConfig(baseline=baseline, score_start=True), reward=RewardConfig(ig_weight=1.0))
    return PotentialShapedReward(inner, ig_weight, gamma=gamma)


def _play(env, actions):
    """(rewards, infos, terminated, truncated) of one episode of q0."""
    _reset(env)
    rewards, infos = [], []
    for action in actions:
        _, reward, terminated, truncated, info = env.step(action)
        rewards.append(reward)
        infos.append(info)
    return rewards, infos, terminated, truncated


def _unshaped(tiny_corpus, tiny_questions, actions, max_turns):
    env = OutcomeOnly(SearchQAEnv(questions=tiny_questions, corpus=tiny_corpus, ig=False, max_turns=max_turns))
    return _play(env, actions)[0]


SEARCH_HARBOUR = {"kind": "search", "text": "harbour market"}
SEARCH_OMRITH = {"kind": "search", "text": "Omrith"}
INVALID = "no tags at all"


@pytest.mark.parametrize("baseline", ["random", "previous", "none"])
def test_potential_shaping_telescopes_on_an_answered_episode(tiny_corpus, tiny_questions, baseline):
    actions = [SEARCH, INVALID, SEARCH_HARBOUR, ANSWER_RIGHT]
    env = _potential_env(tiny_corpus, tiny_questions, baseline=baseline)
    rewards, infos, terminated, truncated = _play(env, actions)
    assert terminated and not truncated
    # Φ: -3 (start), -0.5 (search), -0.5 (invalid: unchanged), -2.5 (search), 0 (answer: terminal)
    assert [i["potential"]["phi_next"] for i in infos] == [-0.5, -0.5, -2.5, 0.0]
    assert [i["potential"]["shaping"] for i in infos] == [2.5, 0.0, -2.0, 2.5]
    # 0.5 * F on top of outcome and format: 1.25, -0.1, -1.0, 1 + 1.25
    assert rewards == pytest.approx([1.25, -0.1, -1.0, 2.25], abs=1e-12)
    for reward, info in zip(rewards, infos):
        _assert_sum(reward, info)
    unshaped = _unshaped(tiny_corpus, tiny_questions, actions, max_turns=5)
    assert unshaped == [0.0, -0.1, 0.0, 1.0]
    assert sum(rewards) == pytest.approx(sum(unshaped) - 0.5 * START, abs=1e-12)  # 2.4 == 0.9 + 1.5


@pytest.mark.parametrize("last", [INVALID, SEARCH_HARBOUR], ids=["invalid", "search"])
def test_potential_shaping_telescopes_on_a_truncated_episode(tiny_corpus, tiny_questions, last):
    actions = [SEARCH, SEARCH_OMRITH, last]  # the third turn is the last: the episode is cut off
    env = _potential_env(tiny_corpus, tiny_questions, max_turns=3)
    rewards, infos, terminated, truncated = _play(env, actions)
    assert truncated and not terminated
    assert infos[-1].get("ig") is None  # a search on the last turn is not scored; it ends the episode either way
    assert [i["potential"]["phi_next"] for i in infos] == [-0.5, -1.25, 0.0]
    assert [i["potential"]["shaping"] for i in infos] == [2.5, -0.75, 1.25]
    unshaped = _unshaped(tiny_corpus, tiny_questions, actions, max_turns=3)
    assert sum(rewards) == pytest.approx(sum(unshaped) - 0.5 * START, abs=1e-12)
    # searching until cut off earns no more than the constant -λ·Φ(s0), which an answer also gets
    answered = _play(_potential_env(tiny_corpus, tiny_questions), [ANSWER_RIGHT])[0]
    assert answered == pytest.approx([1.0 - 0.5 * START], abs=1e-12)


def test_potential_shaping_with_a_discount(tiny_corpus, tiny_questions):
    gamma, actions = 0.9, [SEARCH, INVALID, SEARCH_HARBOUR, ANSWER_RIGHT]
    env = _potential_env(tiny_corpus, tiny_questions, ig_weight=1.0, gamma=gamma)
    rewards, infos, _, _ = _play(env, actions)
    # F = 0.9 Φ(s') - Φ(s): 0.9(-0.5) + 3, 0.9(-0.5) + 0.5, 0.9(-2.5) + 0.5, 0 + 2.5
    assert [i["potential"]["shaping"] for i in infos] == pytest.approx([2.55, 0.05, -1.75, 2.5], abs=1e-12)
    assert rewards == pytest.approx([2.55, -0.05, -1.75, 3.5], abs=1e-12)
    discounted = sum(gamma**t * r for t, r in enumerate(rewards))
    unshaped = sum(gamma**t * r for t, r in enumerate(_unshaped(tiny_corpus, tiny_questions, actions, max_turns=5)))
    assert discounted == pytest.approx(3.639, abs=1e-12)  # 2.55 - 0.045 - 1.4175 + 2.5515
    assert discounted == pytest.approx(unshaped - START, abs=1e-12)  # 0.639 + 3


def test_potential_is_unchanged_by_a_search_that_is_not_scored(tiny_corpus, tiny_questions):
    """Under the ``best`` baseline, a search that finds only passages seen before gains exactly 0 without
    scoring, so no ``logp_real``: Φ stays as it was."""
    env = _potential_env(tiny_corpus, tiny_questions, baseline="best", ig_weight=1.0)
    _, infos, _, _ = _play(env, [SEARCH, SEARCH])
    assert infos[1]["ig"] == 0.0 and infos[1]["ig_detail"]["logp_real"] is None
    assert infos[1]["potential"] == {"phi": -0.5, "phi_next": -0.5, "shaping": 0.0}


def test_potential_shaping_needs_the_start_score(tiny_corpus, tiny_questions, fake_scorer):
    bare = SearchQAEnv(questions=tiny_questions, corpus=tiny_corpus, scorer=fake_scorer)
    with pytest.raises(ValueError, match="logp_start"):
        _reset(PotentialShapedReward(bare))
    with pytest.raises(RuntimeError, match="reset"):
        PotentialShapedReward(bare).step(SEARCH)
    for gamma in (0.0, 1.5):
        with pytest.raises(ValueError, match="gamma"):
            PotentialShapedReward(bare, gamma=gamma)


def test_turn_limit_as_terminal_changes_only_the_cut_off_step(tiny_corpus, tiny_questions, fake_scorer):
    def make():
        return SearchQAEnv(questions=tiny_questions, corpus=tiny_corpus, scorer=fake_scorer, max_turns=2)

    wrapped, plain = TurnLimitAsTerminal(make()), make()
    for env in (wrapped, plain):
        _reset(env)
    first = [env.step(SEARCH) for env in (wrapped, plain)]
    assert first[0][1:4] == first[1][1:4] == (first[1][1], False, False)
    (_, r_w, term_w, trunc_w, info_w), (_, r_p, term_p, trunc_p, info_p) = [
        env.step(SEARCH) for env in (wrapped, plain)
    ]
    assert (term_p, trunc_p) == (False, True) and "turn_limit" not in info_p
    assert (term_w, trunc_w) == (True, False) and info_w["turn_limit"] is True and r_w == r_p
    _reset(wrapped)
    _, _, terminated, truncated, info = wrapped.step(ANSWER_RIGHT)  # an answer ends the episode as before
    assert (terminated, truncated) == (True, False) and "turn_limit" not in info
