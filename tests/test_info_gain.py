import numpy as np
import pytest

from search_env import IGConfig, SearchQAEnv
from search_env.data.corpus import Corpus, Passage
from search_env.dialects import get_dialect
from search_env.info_gain import IGRequests, SearchStep, build_context, step_requests
from search_env.retrieval.base import Hit

R1 = get_dialect("search-r1")


def step(query, *hits):
    hits = [Hit(h, f"T{h}", f"text {h}", 1.0) for h in hits]
    return SearchStep(query, R1.documents_block(hits), tuple(hits))


def test_build_context_layout():
    s1, s2 = step("q1", "a"), step("q2", "b")
    assert build_context("PROMPT", [s1, s2]) == "\n".join(
        ["PROMPT", "<search> q1 </search>", s1.documents, "<search> q2 </search>", s2.documents])
    assert build_context("PROMPT", [s1, s2], "") == "\n".join(
        ["PROMPT", "<search> q1 </search>", s1.documents, "<search> q2 </search>"]
    )
    assert build_context("PROMPT", [s1, s2], "DOCS").endswith("<search> q2 </search>\nDOCS")
    refined = SearchStep("q1", s1.documents, s1.hits, refine="<refine>a is x</refine>")
    assert "<refine>a is x</refine>\n<search> q2" in build_context("P", [refined, s2])
    assert build_context("P", []) == "P"


def plan(baseline, history, current, corpus, **kw):
    return step_requests("P", history, current, ["gold"], config=IGConfig(baseline=baseline, **kw), corpus=corpus,
                          dialect=R1, rng=np.random.default_rng(0))


def test_random_baseline_replaces_only_the_last_documents(tiny_corpus):
    s1 = step("q1", "c0")
    s2 = SearchStep("q2", R1.documents_block([Hit("c1", "Omrith", "x", 1.0), Hit("c2", "D", "y", 1.0)]),
                    (Hit("c1", "Omrith", "x", 1.0), Hit("c2", "D", "y", 1.0)))
    p = plan("random", [s1], s2, tiny_corpus, n_random=3)
    real, *randoms = [c for c, _ in p.pairs]
    assert len(randoms) == 3 and all(a == "gold" for _, a in p.pairs)
    for c in randoms:
        head, docs = c.rsplit("<search> q2 </search>\n", 1)
        assert head == real.rsplit("<search> q2 </search>\n", 1)[0]  # history untouched
        assert docs.count("Doc ") == 2 and "c1" not in docs and "Title: Omrith" not in docs
    result = p.finish([2.0, 0.5, 1.0, 1.5])
    assert result.ig == pytest.approx(1.0)
    assert result.detail == {
        "baseline": "random",
        "logp_real": 2.0,
        "logp_random": [0.5, 1.0, 1.5],
        "logp_baseline": 1.0,
    }


def test_other_baselines(tiny_corpus):
    s1, s2 = step("q1", "a"), step("q2", "b")
    none = plan("none", [s1], s2, tiny_corpus)
    assert [c for c, _ in none.pairs] == [build_context("P", [s1, s2]), build_context("P", [s1, s2], "")]
    prev = plan("previous", [s1], s2, tiny_corpus)
    assert prev.pairs[1][0] == build_context("P", [s1])
    assert prev.finish([1.0, 1.5]).ig == pytest.approx(-0.5)  # a step can lose information
    best = plan("best", [s1], s2, tiny_corpus)
    assert [c for c, _ in best.pairs[1:]] == [build_context("P", []), build_context("P", [s1])]
    assert best.finish([1.0, 0.2, 1.5]).ig == 0.0  # below the best so far counts 0
    assert best.finish([2.0, 0.2, 1.5]).ig == pytest.approx(0.5)
    repeat = plan("best", [s1, s2], step("q2 again", "b", "a"), tiny_corpus)
    assert repeat.pairs == [] and repeat.finish([]).ig == 0.0  # nothing new retrieved: no gain


def test_per_document_gains(tiny_corpus):
    current = step("q", "a", "b")
    p = plan("random", [], current, tiny_corpus, n_random=2, per_document=True)
    contexts = [c for c, _ in p.pairs]
    assert len(contexts) == 1 + 2 + 2 + 1
    assert contexts[3].endswith(R1.documents_block([current.hits[0]])) and contexts[-1].endswith("<search> q </search>")
    result = p.finish([3.0, 1.0, 1.0, 2.5, 0.5, 1.0])
    assert result.doc_gains == pytest.approx([1.5, -0.5]) and result.ig == pytest.approx(2.0)


def test_unscorable_steps(tiny_corpus):
    assert plan("random", [], SearchStep("q", R1.documents_block([]), ()), tiny_corpus) is None
    with pytest.raises(ValueError, match="expected 2 scores"):
        IGRequests("none", pairs=[("a", "b"), ("c", "d")], n_baseline=1).finish([1.0])
    with pytest.raises(ValueError, match="baseline"):
        IGConfig(baseline="oracle")


def test_counterfactual_draws_follow_the_env_seed(tiny_questions, tiny_corpus, fake_scorer):
    def contexts(seed):
        env = SearchQAEnv(questions=tiny_questions, corpus=tiny_corpus, scorer=fake_scorer)
        env.reset(seed=seed, options={"index": 0})
        return env.prepare_step("<search>Karvesh</search>").pairs

    assert contexts(5) == contexts(5)
    assert contexts(5) != contexts(6)


def test_ig_env_repeat_query_earns_nothing_under_best(tiny_questions, tiny_corpus, fake_scorer):
    env = SearchQAEnv(questions=tiny_questions, corpus=tiny_corpus, scorer=fake_scorer, ig=IGConfig(baseline="best"))
    env.reset(seed=0, options={"index": 0})
    first = env.step("<search>Karvesh</search>")[4]["ig"]
    again = env.step("<search>Karvesh</search>")[4]
    assert first > 0 and again["ig"] == 0.0 and again["ig_detail"]["baseline"] == "best"


@pytest.mark.slow
def test_bundled_model_prefers_gold_passages_on_the_builtin_world():
    """With the real bundled scorer: searching the passage that holds the answer beats searching an
    unrelated passage for at least 80% of 20 questions."""
    from search_env.data.synthetic import build_world

    world = build_world()
    env = SearchQAEnv(max_turns=2)
    rng = np.random.default_rng(0)
    wins, gains = 0, []
    for item in list(world.questions)[:20]:
        pair = []
        for title in (item.metadata["supporting_titles"][-1], world.corpus[int(rng.integers(len(world.corpus)))].title):
            env.reset(seed=1, options={"question_id": item.id})
            pair.append(env.step(f"<search> {title} </search>")[4]["ig"])
        wins += pair[0] > pair[1]
        gains.append(pair)
    assert wins >= 16, gains


def test_random_counterfactuals_never_hold_a_retrieved_passage():
    """IG's random passages stand for "not what was retrieved": with 4 passages and 3 retrieved, every
    random block must be the fourth passage alone (a draw without the filter is a retrieved one 3 times in 4)."""
    passages = [Passage(f"d{i}", f"Title{i}", f"text number {i}") for i in range(4)]
    corpus = Corpus(passages, name="four")
    hits = tuple(Hit(p.id, p.title, p.text, 1.0) for p in passages[:3])
    current = SearchStep("q", R1.documents_block(hits), hits)
    requests = plan("random", [], current, corpus, n_random=40).pairs
    assert len(requests) == 41
    only_unretrieved = R1.documents_block([Hit("d3", "Title3", "text number 3", 0.0)])
    for context, _ in requests[1:]:
        assert context.endswith(only_unretrieved), context


def test_random_counterfactuals_from_a_pool_skip_the_step_own_block():
    hits = (Hit("d0", "Title0", "text", 1.0),)
    current = SearchStep("q", R1.documents_block(hits), hits)
    other = R1.documents_block([Hit("d9", "Other", "elsewhere", 1.0)])
    got = step_requests("P", [], current, ["gold"], config=IGConfig(n_random=20), corpus=None, dialect=R1,
                         rng=np.random.default_rng(0), pool=[current.documents, other, current.documents])
    assert all(context.endswith(other) for context, _ in got.pairs[1:])


class RecordingScorer:
    """Scores 0 and keeps every context it was asked about."""

    def __init__(self):
        self.contexts = []

    def score(self, contexts, answers):
        self.contexts += list(contexts)
        return np.zeros(len(contexts))


def test_render_prefix_gives_the_scorer_the_policy_view_of_the_prompt(tiny_questions, tiny_corpus):
    render = lambda prompt, text: f"<|user|>{prompt}<|assistant|>{text}"  # noqa: E731
    for config, head in ((IGConfig(render_prefix=render), "<|user|>"), (IGConfig(), "")):
        scorer = RecordingScorer()
        env = SearchQAEnv(questions=tiny_questions, corpus=tiny_corpus, scorer=scorer, ig=config, max_turns=4)
        prompt, _ = env.reset(seed=0, options={"question_id": "q0"})
        env.step("<think>look it up</think><search>Karvesh</search>")
        env.step("<search>Omrith</search>")
        expected = (
            f"<|user|>{prompt}<|assistant|><think>look it up</think>" if head else prompt + "<think>look it up</think>"
        )
        assert len(scorer.contexts) == 8 and all(c.startswith(expected) for c in scorer.contexts)
        assert all("<search> Karvesh </search>" in c or "<search>Karvesh</search>" in c for c in scorer.contexts)
