import gymnasium as gym
import numpy as np
import pytest

from search_env import IGConfig, SearchQAEnv
from search_env.vector import SearchQAVectorEnv

ACTION_SCRIPT = [
    ["<search>Karvesh</search>", "<search>Omrith salt road</search>", "no tag", "<answer>Veltrania</answer>"],
    [
        "<search>capital of Osmundia</search>",
        "<answer>Omrith</answer>",
        "<search>Sentavo</search>",
        "<search>guild mill</search>",
    ],
    ["<search>Dallowmere</search>", "<search>Quenlar</search>", "<answer>Harrowstan</answer>", "<search>x</search>"],
]


@pytest.mark.parametrize("shared", [False, True])
def test_vector_env_equals_separate_envs(tiny_questions, tiny_corpus, fake_scorer, shared):
    """Unshared: sub-env i draws with seed 11 + i, as a single env does. Shared (the vector env's default): every
    sub-env keys its draws with draw seed 11, as single envs with ``shared_draws=True`` and that draw seed do."""
    kwargs = dict(questions=tiny_questions, corpus=tiny_corpus, scorer=fake_scorer, max_turns=3)
    config = IGConfig(n_random=2, per_document=True)
    venv = SearchQAVectorEnv(4, ig=config if shared else IGConfig(n_random=2, per_document=True, shared_draws=False),
                             **kwargs)
    singles = [SearchQAEnv(ig=IGConfig(n_random=2, per_document=True, shared_draws=shared), **kwargs) for _ in range(4)]
    obs, infos = venv.reset(seed=11)
    for i, env in enumerate(singles):
        o, info = env.reset(seed=11 + i, options={"draw_seed": 11} if shared else None)
        assert obs[i] == o and infos["question_id"][i] == info["question_id"]
    calls_before = fake_scorer.calls
    for turn in range(len(ACTION_SCRIPT[0])):
        actions = [ACTION_SCRIPT[i % 3][turn] for i in range(4)]
        v_obs, v_rew, v_term, v_trunc, v_info = venv.step(actions)
        for i, env in enumerate(singles):
            if env._done:
                env.reset()  # NEXT_STEP autoreset, as the vector env does
                continue
            o, r, term, trunc, info = env.step(actions[i])
            assert (v_obs[i], v_rew[i], v_term[i], v_trunc[i]) == (o, r, term, trunc)
            assert v_info["_action_type"][i] and v_info["action_type"][i] == info["action_type"]
            if info.get("ig") is not None:
                assert v_info["_ig"][i] and v_info["ig"][i] == info["ig"]
                assert v_info["doc_gains"][i] == info["doc_gains"]
            else:
                assert not v_info.get("_ig", np.zeros(4, bool))[i]
    assert fake_scorer.calls > calls_before


def test_one_batched_retrieval_and_scorer_call_per_step(tiny_questions, tiny_corpus, fake_scorer):
    venv = SearchQAVectorEnv(8, questions=tiny_questions, corpus=tiny_corpus, scorer=fake_scorer)
    calls = []
    inner = venv.retriever.batch_search
    venv.envs[0].retriever.batch_search = lambda qs, k: calls.append(len(qs)) or inner(qs, k)
    venv.reset(seed=0)
    before = fake_scorer.calls
    venv.step(["<search>Karvesh</search>"] * 5 + ["<answer>x</answer>", "bad", None])
    assert calls == [5]
    # shared draws: the same query on the same question at the same turn is the same 4 pairs, scored once
    questions = {env.item.id for env in venv.envs[:5]}
    assert fake_scorer.calls == before + 1 and fake_scorer.pairs == 4 * len(questions) < 5 * 4


def test_none_action_skips_and_disabled_mode(tiny_questions, tiny_corpus):
    venv = SearchQAVectorEnv(
        2, autoreset_mode="Disabled", questions=tiny_questions, corpus=tiny_corpus, ig=False, max_turns=2
    )
    venv.reset(seed=0)
    obs, rew, term, trunc, info = venv.step(["<answer>x</answer>", None])
    assert term.tolist() == [True, False] and obs[1] == "" and not info["_action_type"][1]
    assert venv.envs[1].turn == 0
    with pytest.raises(RuntimeError, match="reset"):
        venv.step(["<search>a</search>", "<search>b</search>"])
    venv.reset(options={"reset_mask": np.array([True, False])})
    obs, rew, term, trunc, info = venv.step(["<search>a</search>", "<search>b</search>"])
    assert venv.envs[1].turn == 1 and not term.any()


def test_same_step_autoreset_reports_final_info(tiny_questions, tiny_corpus):
    venv = SearchQAVectorEnv(2, autoreset_mode="SameStep", questions=tiny_questions, corpus=tiny_corpus, ig=False)
    venv.reset(seed=0)
    obs, rew, term, trunc, info = venv.step(["<answer>x</answer>", "<search>a</search>"])
    assert term[0] and "Question:" in obs[0] and info["_final_info"][0]
    assert info["final_info"]["action_type"][0] == "answer"


def test_batch_pool_draws_other_questions_blocks(tiny_questions, tiny_corpus, fake_scorer):
    venv = SearchQAVectorEnv(3, ig_pool="batch", questions=tiny_questions, corpus=tiny_corpus, scorer=fake_scorer)
    venv.reset(options={"index": 0})  # the same question everywhere: no pool, corpus fallback
    obs, rew, term, trunc, info = venv.step(["<search>Karvesh</search>"] * 3)
    assert info["_ig"].all()
    venv.reset(seed=0)
    for i, env in enumerate(venv.envs):
        env.reset(options={"index": i})
    obs, rew, term, trunc, info = venv.step(
        ["<search>Karvesh</search>", "<search>Omrith</search>", "<search>Dallowmere</search>"]
    )
    # the pool holds the other two envs' blocks: the Karvesh env's random contexts contain their passages
    karvesh_random = [
        c
        for c, _ in venv.envs[0]
        .prepare_step("<search>Karvesh</search>", pool=["<information>Doc 1(Title: Z) zz\n</information>"])
        .pairs[1:]
    ]
    assert all("Title: Z" in c for c in karvesh_random)


def test_make_vec_uses_the_vector_entry_point(tiny_questions, tiny_corpus):
    envs = gym.make_vec("search_env:SearchQA-v0", num_envs=3, vectorization_mode="vector_entry_point",
                        questions=tiny_questions, corpus=tiny_corpus, ig=False)
    assert isinstance(envs.unwrapped, SearchQAVectorEnv) and envs.num_envs == 3
    obs, infos = envs.reset(seed=0)
    assert len(obs) == 3 and all("Question:" in o for o in obs)
    envs.close()


class CountingRetriever:
    """Wraps a retriever, counting the queries it is asked."""

    def __init__(self, inner):
        self.inner, self.queries = inner, []

    def search(self, query, k):
        self.queries.append(query)
        return self.inner.search(query, k)

    def batch_search(self, queries, k):
        self.queries += list(queries)
        return self.inner.batch_search(queries, k)


def test_vector_env_parses_once_and_retrieves_only_accepted_searches(tiny_questions, tiny_corpus, monkeypatch):
    import search_env.env as env_module
    from search_env.retrieval import make_retriever

    retriever = CountingRetriever(make_retriever("bm25", tiny_corpus))
    venv = SearchQAVectorEnv(3, autoreset_mode="Disabled", questions=tiny_questions, corpus=tiny_corpus,
                             retriever=retriever, ig=False, dialect="plan")
    venv.reset(seed=0)
    calls = []
    real_parse = env_module.parse_turn
    monkeypatch.setattr(env_module, "parse_turn", lambda *a, **k: calls.append(a) or real_parse(*a, **k))
    plan = "<plan>\n1. Where is Karvesh?\n</plan>"
    _, _, _, _, infos = venv.step([f"{plan}<search> Karvesh </search>", "<search> Omrith </search>", "no tag"])
    assert len(calls) == 3  # one parse per sub-env
    assert retriever.queries == ["Karvesh"]  # the search before any plan (no_plan) retrieves nothing
    assert list(infos["action_type"]) == ["search", "invalid", "invalid"]
    assert infos["invalid_reason"][1] == "no_plan"
