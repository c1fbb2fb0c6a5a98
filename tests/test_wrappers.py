"""search_env.wrappers: the reward wrappers, with hand-checkable numbers.

Fast: FakeScorer or ig=False everywhere, the bundled model is never loaded."""

import pytest

from search_env.env import SearchQAEnv
from search_env.info_gain import IGConfig
from search_env.rewards import RewardConfig
from search_env.wrappers import IGShapedReward, OutcomeOnly, OutcomePlusIG

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
    for wrapper, penalty in ((OutcomePlusIG(base_env, 0.2), -0.1), (OutcomePlusIG(base_env, 0.2, format_penalty=False), 0.0)):
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
