import pytest

from search_env.rewards import RewardConfig, cover_exact_match, exact_match, f1_score, normalize_answer


def test_normalize_answer_squad_rules():
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert normalize_answer("An apple, a day") == "apple day"
    assert normalize_answer("theatre") == "theatre"  # articles only as whole words


def test_exact_match_takes_best_alias():
    assert exact_match("the Beatles", ["Beatles", "The Fab Four"]) == 1.0
    assert exact_match("Fab Four", ["Beatles", "The Fab Four"]) == 1.0
    assert exact_match("Rolling Stones", ["Beatles"]) == 0.0


def test_f1_hand_computed():
    # pred tokens {new, york, city}, gold {new, york}: P = 2/3, R = 1, F1 = 0.8
    assert f1_score("New York City", ["New York"]) == pytest.approx(0.8)
    assert f1_score("Paris", ["London", "paris"]) == 1.0
    assert f1_score("", ["x"]) == 0.0
    assert f1_score("a the", ["x"]) == 0.0


def test_cover_em_whole_words():
    assert cover_exact_match("It was Veltra Osmund, I think", ["Veltra Osmund"]) == 1.0
    assert cover_exact_match("Osmundsen", ["Osmund"]) == 0.0
    assert cover_exact_match("no", ["yes"]) == 0.0


def test_reward_config_components():
    rc = RewardConfig(outcome="f1", outcome_weight=2.0, format_penalty=0.5, ig_weight=0.1)
    assert rc.components(outcome=0.8) == {"outcome": 1.6, "format": 0.0, "ig": 0.0}
    assert rc.components(invalid=True) == {"outcome": 0.0, "format": -0.5, "ig": 0.0}
    assert rc.components(ig=2.0)["ig"] == pytest.approx(0.2)
    assert rc.components(ig=None)["ig"] == 0.0
    assert rc.outcome_score("New York City", ["New York"]) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="outcome"):
        RewardConfig(outcome="bleu")
