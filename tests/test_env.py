import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import search_env
from search_env import IGConfig, RetrieverUnavailable, RewardConfig, SearchQAEnv
from tests.shared_data import shared_data

REGISTERED = sorted(k for k, spec in gym.registry.items() if str(spec.entry_point).startswith("search_env"))


def make_env(tiny_questions, tiny_corpus, **kwargs):
    kwargs.setdefault("ig", False)
    return SearchQAEnv(questions=tiny_questions, corpus=tiny_corpus, **kwargs)


@pytest.mark.parametrize("env_id", REGISTERED)
def test_check_env_on_every_registered_id(env_id):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env = gym.make(env_id)
        check_env(env.unwrapped)
    assert not [str(w.message) for w in caught], "unexpected warnings"
    env.close()


def test_ids_are_registered_and_versioned():
    assert "SearchQA-v0" in REGISTERED
    assert all(k.rsplit("-v", 1)[-1].isdigit() for k in REGISTERED)


def test_gym_make_with_own_data(tiny_questions, tiny_corpus):
    env = gym.make(
        "search_env:SearchQA-v0", questions=tiny_questions, corpus=tiny_corpus, ig=False, topk=2, max_turns=3
    )
    obs, info = env.reset(seed=0, options={"question_id": "q1"})
    assert "In which country is Omrith?" in obs and "<search>" in obs
    assert info == {"question_id": "q1", "golden_answers": ["Osmundia"]}
    assert "Osmundia" not in obs  # the answer is never in the observation
    obs, reward, terminated, truncated, info = env.step("<think>look it up</think><search>Omrith</search>")
    assert (reward, terminated, truncated) == (0.0, False, False)
    assert info["action_type"] == "search" and info["query"] == "Omrith" and info["doc_ids"][0] == "c1"
    assert len(info["doc_ids"]) == len(info["doc_scores"]) == 2 and info["ig"] is None
    assert obs.startswith("\n\n<information>Doc 1(Title: Omrith) Omrith is a river city in Osmundia")
    obs, reward, terminated, truncated, info = env.step({"kind": "answer", "text": "osmundia"})
    assert (obs, reward, terminated, truncated) == ("", 1.0, True, False)
    assert info["em"] == 1.0 and info["f1"] == 1.0 and info["prediction"] == "osmundia"
    assert info["turn"] == 2 and info["n_searches"] == 1
    transcript = env.unwrapped.transcript
    assert (
        transcript.index("<search>Omrith</search>")
        < transcript.index("<information>Doc 1")
        < transcript.index("<answer> osmundia </answer>")
    )


def test_info_keys_on_every_step(tiny_questions, tiny_corpus):
    env = make_env(tiny_questions, tiny_corpus, max_turns=5)
    env.reset(seed=1)
    for action, kind in [
        ("<search>Karvesh</search>", "search"),
        ("nothing", "invalid"),
        ("<answer>x</answer>", "answer"),
    ]:
        *_, info = env.step(action)
        assert info["action_type"] == kind
        assert {"turn", "n_searches", "reward_components"} <= set(info)
        assert set(info["reward_components"]) == {"outcome", "format", "ig"}
    assert info["golden_answers"] and "prediction" in info


def test_invalid_turns_penalised_counted_and_never_end_the_episode(tiny_questions, tiny_corpus):
    env = make_env(tiny_questions, tiny_corpus, max_turns=3, reward=RewardConfig(format_penalty=0.25))
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step("I forgot the tags")
    assert (reward, terminated, truncated) == (-0.25, False, False)
    assert info["invalid_reason"] == "no_tag" and "<search>" in obs
    env.step("<search>unclosed")
    obs, reward, terminated, truncated, info = env.step("<search>   </search>")
    assert (terminated, truncated, info["turn"]) == (False, True, 3)  # invalid turns count toward max_turns
    with pytest.raises(RuntimeError, match="reset"):
        env.step("<answer>late</answer>")


def test_truncation_gives_no_outcome(tiny_questions, tiny_corpus):
    env = make_env(tiny_questions, tiny_corpus, max_turns=2)
    env.reset(seed=0)
    assert env.step("<search>a</search>")[3] is False
    obs, reward, terminated, truncated, info = env.step("<search>b</search>")
    assert (reward, terminated, truncated) == (0.0, False, True)
    assert info["reward_components"]["outcome"] == 0.0


def test_outcome_metric_choice(tiny_questions, tiny_corpus):
    env = make_env(tiny_questions, tiny_corpus, reward=RewardConfig(outcome="f1"))
    env.reset(options={"question_id": "q0"})  # gold: Veltrania
    _, reward, *_ , info = env.step("<answer>Veltrania republic</answer>")
    assert reward == pytest.approx(2 / 3) and info["em"] == 0.0


def test_reset_options(tiny_questions, tiny_corpus):
    env = make_env(tiny_questions, tiny_corpus)
    assert env.reset(options={"index": 2})[1]["question_id"] == "q2"
    assert env.reset(options={"index": -1})[1]["question_id"] == "q5"
    with pytest.raises(KeyError, match="nope"):
        env.reset(options={"question_id": "nope"})
    with pytest.raises(IndexError):
        env.reset(options={"index": 99})
    drawn = {env.reset(seed=s)[1]["question_id"] for s in range(40)}
    assert len(drawn) >= 4  # questions are drawn, not fixed


def scripted_episode(env, seed):
    """Search the question, search the first retrieved title, then answer it."""
    records = []
    obs, info = env.reset(seed=seed)
    records.append((obs, info))
    question = obs.rsplit("Question: ", 1)[1].strip()
    obs, *rest = env.step(f"<think>start</think><search>{question}</search>")
    records.append((obs, *rest))
    title = obs.split("(Title: ", 1)[1].split(")", 1)[0] if "(Title: " in obs else "x"
    records.append(env.step(f"<search>{title}</search>"))
    records.append(env.step(f"<answer>{title}</answer>"))
    return records


def test_same_seed_same_episode_bit_for_bit(tiny_questions, tiny_corpus, fake_scorer):
    def run(seed):
        env = make_env(tiny_questions, tiny_corpus, ig=IGConfig(n_random=3), scorer=fake_scorer)
        return [scripted_episode(env, s) for s in (seed, seed + 1, seed + 2)]

    a, b, c = run(3), run(3), run(4)
    assert repr(a) == repr(b)
    assert repr(a) != repr(c)
    igs = [r[4]["ig"] for episode in a for r in episode[1:3]]
    assert all(isinstance(ig, float) for ig in igs)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    actions=st.lists(
        st.one_of(
            st.text(max_size=300),
            st.lists(
                st.sampled_from(
                    ["<search>", "</search>", "<answer>", "</answer>", "<think>", "</think>", "x", " ", "\x00", "é"]
                ),
                max_size=40,
            ).map("".join),
            st.builds(
                lambda k, t: {"kind": k, "text": t},
                st.sampled_from(["search", "answer", "other"]),
                st.text(max_size=50),
            ),
            st.builds(
                lambda n, tail: "y" * n + tail,
                st.sampled_from([10, 5000, 1 << 20]),
                st.sampled_from(["", "<search>q</search>"]),
            ),
            st.none(),
            st.integers(),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_fuzzed_steps_never_raise(tiny_questions, tiny_corpus, fake_scorer, actions):
    env = make_env(tiny_questions, tiny_corpus, ig=True, scorer=fake_scorer, max_turns=4)
    env.reset(seed=0)
    for action in actions:
        result = env.step(action)
        obs, reward, terminated, truncated, info = result
        assert len(result) == 5 and env.observation_space.contains(obs)
        assert isinstance(reward, float) and math.isfinite(reward)
        assert isinstance(terminated, bool) and isinstance(truncated, bool)
        assert info["action_type"] in ("search", "answer", "invalid")
        if terminated or truncated:
            break


def test_render_modes(tiny_questions, tiny_corpus, capsys):
    env = make_env(tiny_questions, tiny_corpus, render_mode="ansi")
    env.reset(seed=0)
    env.step("<search>Quenlar</search>")
    assert env.render() == env.transcript and "Quenlar" in env.render()
    human = make_env(tiny_questions, tiny_corpus, render_mode="human")
    human.reset(seed=0)
    human.step("<search>Quenlar</search>")
    assert capsys.readouterr().out == human.transcript
    with pytest.raises(ValueError, match="render_mode"):
        make_env(tiny_questions, tiny_corpus, render_mode="rgb_array")


def test_bad_construction_arguments(tiny_questions, tiny_corpus):
    with pytest.raises(ValueError, match="questions"):
        SearchQAEnv(corpus=tiny_corpus, ig=False)
    with pytest.raises(ValueError, match="corpus"):
        SearchQAEnv(questions=tiny_questions, ig=False)
    with pytest.raises(ValueError, match="unknown retriever"):
        make_env(tiny_questions, tiny_corpus, retriever="google")
    with pytest.raises(TypeError, match="batch_search"):
        make_env(tiny_questions, tiny_corpus, retriever=object())
    with pytest.raises(ValueError, match="unknown dialect 'react'"):
        make_env(tiny_questions, tiny_corpus, dialect="react")
    with pytest.raises(ValueError, match="topk"):
        make_env(tiny_questions, tiny_corpus, topk=0)


def test_template_is_the_deprecated_name_of_dialect(tiny_questions, tiny_corpus):
    with pytest.warns(DeprecationWarning, match="dialect"):
        env = make_env(tiny_questions, tiny_corpus, template="autorefine", ig=False)
    assert env.dialect.name == "autorefine"
    prompt, _ = env.reset(seed=0)
    assert "<refine>" in prompt
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="unknown dialect"):
        make_env(tiny_questions, tiny_corpus, template="react", ig=False)


class FlakyRetriever:
    """Fails while ``down`` is set, like a remote retriever that went away."""

    def __init__(self, inner):
        self.inner, self.down = inner, False

    def search(self, query, k):
        if self.down:
            raise RetrieverUnavailable("retriever down")
        return self.inner.search(query, k)

    def batch_search(self, queries, k):
        return [self.search(q, k) for q in queries]


def test_failed_retrieval_leaves_the_episode_intact(tiny_questions, tiny_corpus, fake_scorer):
    from search_env.retrieval.bm25 import get_bm25

    retriever = FlakyRetriever(get_bm25(tiny_corpus))
    env = make_env(tiny_questions, tiny_corpus, retriever=retriever, ig=True, scorer=fake_scorer)
    env.reset(seed=0)
    env.step("<search>Karvesh</search>")
    before = (env.transcript, env.turn, list(env.steps))
    retriever.down = True
    with pytest.raises(RetrieverUnavailable):
        env.step("<search>Omrith</search>")
    assert (env.transcript, env.turn, list(env.steps)) == before
    retriever.down = False
    _, _, _, _, info = env.step("<search>Omrith</search>")
    assert info["turn"] == 2 and info["n_searches"] == 2


class EmptyRetriever:
    def search(self, query, k):
        return []

    def batch_search(self, queries, k):
        return [[] for _ in queries]


def test_ig_in_info_and_reward(tiny_questions, tiny_corpus, fake_scorer):
    env = make_env(
        tiny_questions, tiny_corpus, ig=IGConfig(n_random=3), scorer=fake_scorer, reward=RewardConfig(ig_weight=0.5)
    )
    env.reset(seed=0, options={"question_id": "q0"})  # Karvesh, in Veltrania
    _, reward, _, _, info = env.step("<search>Karvesh river city</search>")
    assert info["doc_ids"][0] == "c0"
    detail = info["ig_detail"]
    assert detail["baseline"] == "random" and len(detail["logp_random"]) == 3
    assert detail["logp_real"] > 1.0 - 1e-3  # the gold passage holds the answer
    assert info["ig"] == pytest.approx(detail["logp_real"] - np.mean(detail["logp_random"]))
    assert info["ig"] > 0  # random passages rarely hold the answer (seeded, so never flaky)
    assert reward == pytest.approx(0.5 * info["ig"]) and info["reward_components"]["ig"] == pytest.approx(
        0.5 * info["ig"]
    )

    empty = make_env(tiny_questions, tiny_corpus, retriever=EmptyRetriever(), ig=True, scorer=fake_scorer)
    empty.reset(seed=0)
    calls = fake_scorer.calls
    obs, reward, *_, info = empty.step("<search>zzz</search>")
    assert info["ig"] is None and "ig_detail" not in info and reward == 0.0 and "No passage" in obs
    assert fake_scorer.calls == calls  # nothing scored


def test_ig_off_never_loads_a_scorer(tiny_questions, tiny_corpus):
    env = make_env(tiny_questions, tiny_corpus, ig=False)
    env.reset(seed=0)
    assert env.step("<search>Karvesh</search>")[4]["ig"] is None
    assert env.scorer is None


def test_default_env_uses_the_builtin_world():
    env = gym.make("search_env:SearchQA-v0", ig=False)
    obs, info = env.reset(seed=0)
    world = search_env.build_world()
    item = world.questions.get(info["question_id"])
    assert item.question in obs and list(item.golden_answers) == info["golden_answers"]
    _, _, _, _, step_info = env.step(f"<search>{item.question}</search>")
    assert step_info["doc_ids"] and all(d in world.corpus for d in step_info["doc_ids"])


def test_real_hotpotqa_env_outcomes():
    folder = shared_data("hotpotqa_train_hipporag100")
    env = gym.make("search_env:SearchQA-v0", questions=folder / "test.jsonl", corpus=folder / "corpus.jsonl", ig=False)
    questions = env.unwrapped.questions
    found = total = 0
    for i, item in enumerate(questions):
        if i < 30:
            env.reset(options={"index": i})
            assert env.step(f"<answer>{item.golden_answers[0]}</answer>")[4]["em"] == 1.0
            env.reset(options={"index": i})
            assert env.step("<answer>Zanzibar Quartet Orchestra</answer>")[4]["em"] == 0.0
        for doc_id in item.supporting_doc_ids:
            env.reset(options={"index": i})
            title = env.unwrapped.corpus.get(doc_id).title
            found += doc_id in env.step(f"<search>{title}</search>")[4]["doc_ids"]
            total += 1
    assert found / total >= 0.90, f"gold title search found {found}/{total}"


def test_a_search_on_the_last_turn_earns_no_ig(tiny_questions, tiny_corpus, fake_scorer):
    """Its passages are never shown (the episode is truncated), so IG there could only teach "keep searching"."""
    env = make_env(tiny_questions, tiny_corpus, ig=True, scorer=fake_scorer, max_turns=2,
                   reward=RewardConfig(ig_weight=1.0))
    env.reset(seed=0, options={"question_id": "q0"})
    first = env.step("<search>Karvesh country</search>")[4]
    calls = fake_scorer.calls
    _, reward, terminated, truncated, last = env.step("<search>Karvesh country</search>")
    assert first["ig"] is not None and first["ig"] > 0.5
    assert truncated and not terminated and last["action_type"] == "search"
    assert last["ig"] is None and "ig_detail" not in last and reward == 0.0
    assert fake_scorer.calls == calls  # nothing was scored for it


def test_docstring_example_runs():
    import doctest

    import search_env.env

    result = doctest.testmod(search_env.env, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 5 and result.failed == 0
