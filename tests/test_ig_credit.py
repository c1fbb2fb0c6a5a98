"""Shared counterfactual draws, duplicate pairs scored once, credit across lookups (sub-answer, leave-one-out,
Shapley) in the single, vector and deferred env, sub-answers from data, and the authors' answer tokenisation."""

import json

import numpy as np
import pytest

from search_env import IGConfig, SearchQAEnv
from search_env.data import Corpus, Passage, load_questions
from search_env.data.qa import sub_answers
from search_env.dialects import get_dialect
from search_env.info_gain import Deferred, SearchStep, finish_deferred
from search_env.info_gain.contexts import shared_random_blocks
from search_env.info_gain.deferred import DeferredCredit
from search_env.info_gain.gain import score_pairs
from search_env.retrieval.base import Hit
from search_env.scoring.score_format import ScoreFormat
from search_env.vector import SearchQAVectorEnv

R1 = get_dialect("search-r1")
MARKERS = ["alphafact", "betafact", "gammafact", "deltafact", "epsilonfact"]


def corpus_with(*specials: tuple[str, str, str], n_filler: int = 30) -> Corpus:
    filler = [Passage(f"f{i}", f"Notes {i}", f"Miscellany number {i} about harbours and mills.")
              for i in range(n_filler)]
    return Corpus([Passage(*s) for s in specials] + filler, name="toy")


class GameScorer:
    """score(context) = Σ weights of the markers in its passages (upper case there, lower case in queries) + bonus
    when every marker of ``pair`` is in them. Counts pairs."""

    def __init__(self, weights, pair=(), bonus=0.0):
        self.weights, self.pair, self.bonus, self.pairs = weights, pair, bonus, 0

    def score(self, contexts, answers):
        self.pairs += len(contexts)
        out = []
        for c in contexts:
            value = sum(w for m, w in self.weights.items() if m.upper() in c)
            out.append(value + (self.bonus if self.pair and all(m.upper() in c for m in self.pair) else 0.0))
        return np.array(out, dtype=np.float64)


class LastBlockScorer:
    """score(context, answer) = 1 if the answer is in the context's last documents block, else 0."""

    def score(self, contexts, answers):
        return np.array([float(a.lower() in c.rsplit("<search>", 1)[-1].lower()) for c, a in zip(contexts, answers)])


def marker_env(n, scorer, credit, **config):
    # many fillers: a left-out search's random passage is then (with these seeds) never another search's fact
    corpus = corpus_with(*[(f"m{i}", f"Fact {i}", f"The {MARKERS[i].upper()} holds.") for i in range(n)], n_filler=1000)
    questions = load_questions([{"id": "q", "question": "What joins the facts?", "golden_answers": ["Zorbland"]}])
    return SearchQAEnv(questions=questions, corpus=corpus, scorer=scorer, topk=1, max_turns=n + 1,
                       ig=IGConfig(credit=credit, **config))


def play(env, queries, seed=0):
    env.reset(seed=seed)
    infos = [env.step(f"<search> {q} </search>")[4] for q in queries]
    return infos, env.step("<answer> Zorbland </answer>")[4]


# --------------------------------------------------------------------------------------------- shared draws


def shared_env(tiny_questions, tiny_corpus, **config):
    return SearchQAEnv(questions=tiny_questions, corpus=tiny_corpus, scorer=LastBlockScorer(),
                       ig=IGConfig(shared_draws=True, **config))


def test_same_query_same_turn_of_a_group_gets_identical_contexts_and_ig(tiny_questions, tiny_corpus):
    venv = SearchQAVectorEnv(4, questions=tiny_questions, corpus=tiny_corpus, scorer=LastBlockScorer())
    venv.reset(seed=7, options={"question_id": "q0"})  # one GRPO group: four rollouts of q0
    actions = ["<search> Karvesh </search>", "<search> Karvesh </search>", "<search> Omrith </search>",
               "<search> Omrith </search>"]
    pending = venv._prepare(list(range(4)), actions)
    assert pending[0].pairs == pending[1].pairs and pending[2].pairs == pending[3].pairs
    _, _, _, _, infos = venv.step(actions)
    detail = infos["ig_detail"]
    assert infos["ig"][0] == infos["ig"][1] and detail["logp_random"][0] == detail["logp_random"][1]
    # unshared, as before: each rollout draws its own
    own = SearchQAVectorEnv(2, questions=tiny_questions, corpus=tiny_corpus, ig=IGConfig(shared_draws=False),
                            scorer=GameScorer({}))
    own.reset(seed=7, options={"question_id": "q0"})
    mine = own._prepare([0, 1], actions[:2])
    assert mine[0].pairs[0] == mine[1].pairs[0] and mine[0].pairs[1:] != mine[1].pairs[1:]


def test_draws_are_keyed_by_question_turn_and_draw_seed(tiny_questions, tiny_corpus):
    def randoms(seed, qid="q0", turns=1):
        env = shared_env(tiny_questions, tiny_corpus)
        env.reset(seed=seed, options={"question_id": qid})
        for _ in range(turns - 1):
            env.step("bad")
        return [c for c, _ in env.prepare_step("<search> Karvesh </search>").pairs[1:]]

    base = randoms(1)
    assert randoms(1) == base and randoms(2) != base and randoms(1, turns=2) != base
    blocks = [c.rsplit("</search>\n", 1)[-1] for c in randoms(1, qid="q1")]
    assert blocks != [c.rsplit("</search>\n", 1)[-1] for c in base]
    env = shared_env(tiny_questions, tiny_corpus)  # an explicit draw seed wins over the reset seed
    env.reset(seed=99, options={"question_id": "q0", "draw_seed": 1})
    assert [c for c, _ in env.prepare_step("<search> Karvesh </search>").pairs[1:]] == base


def test_shared_draws_never_hold_a_retrieved_passage_and_replace_it_from_the_same_stream(tiny_corpus):
    def hits(*ids):
        return tuple(Hit(i, tiny_corpus.get(i).title, tiny_corpus.get(i).text, 1.0) for i in ids)

    def ids_in(block):
        return [p.id for p in tiny_corpus if f"(Title: {p.title})" in block]

    key = ("q0", 1, 5)
    other = SearchStep("x", "docs", hits("c0", "c1", "c2"))
    first = [ids_in(b) for b in shared_random_blocks(other, 3, tiny_corpus, R1, key)]
    drawn = first[0][0]  # a passage this stream draws first; a rollout that retrieved it must not see it
    mine = SearchStep("y", "docs", hits(drawn, "c1", "c2"))
    second = [ids_in(b) for b in shared_random_blocks(mine, 3, tiny_corpus, R1, key)]
    assert drawn not in second[0] and set(first[0]) - {drawn} <= set(second[0]) and len(second[0]) == 3
    assert second[1:] == first[1:] or drawn in sum(first[1:], [])
    for seed in range(40):
        for block in shared_random_blocks(mine, 3, tiny_corpus, R1, ("q", 1, seed)):
            assert not {drawn, "c1", "c2"} & set(ids_in(block)) and block.count("Doc ") == 3


def test_identical_pairs_are_scored_once():
    scorer = GameScorer({"a": 1.0, "b": 2.0})
    pairs = [("A", "x"), ("B", "x"), ("A", "x"), ("A", "y"), ("B", "x")]
    np.testing.assert_array_equal(score_pairs(scorer, pairs), [1.0, 2.0, 1.0, 1.0, 2.0])
    assert scorer.pairs == 3


# ------------------------------------------------------------------------------------------ credit modes


def test_shapley_and_leave_one_out_when_the_answer_needs_both_passages():
    """v(S) = 2 when both facts are in the final context, else 0: Shapley gives each half the joint gain, leave-one-out
    the whole of it; step IG credits only the second lookup."""
    game = dict(weights={}, pair=("alphafact", "betafact"), bonus=2.0)
    credit = {}
    for mode in ("step", "leave-one-out", "shapley"):
        searches, end = play(marker_env(2, GameScorer(**game), mode), ["alphafact", "betafact"])
        credit[mode] = end.get("search_credit")
        assert [i["ig"] for i in searches] == [0.0, 2.0]
    assert credit["step"] is None
    assert credit["shapley"] == [1.0, 1.0] and credit["leave-one-out"] == [2.0, 2.0]


def test_exact_shapley_by_hand_and_its_sum():
    """v = [alpha] + 2·[beta and gamma]: φ = (1, 1, 1); the values sum to v(all) − v(none) = 3."""
    scorer = GameScorer({"alphafact": 1.0}, pair=("betafact", "gammafact"), bonus=2.0)
    _, end = play(marker_env(3, scorer, "shapley"), ["alphafact", "betafact", "gammafact"])
    assert end["search_credit"] == pytest.approx([1.0, 1.0, 1.0], abs=1e-12)
    assert scorer.pairs == 3 * (1 + 3) + 8  # 3 step IGs of 1 + 3 contexts, then the 2**3 coalitions


def test_monte_carlo_shapley_beyond_four_searches_keeps_the_sum():
    weights = {"alphafact": 0.5, "betafact": 1.0, "gammafact": 0.25, "deltafact": 2.0, "epsilonfact": -0.75}
    scorer = GameScorer(weights, pair=("alphafact", "betafact"), bonus=1.5)
    _, end = play(marker_env(5, scorer, "shapley", shapley_permutations=6), MARKERS)
    credit = end["search_credit"]
    assert sum(credit) == pytest.approx(sum(weights.values()) + 1.5, abs=1e-9)
    assert credit[2:] == pytest.approx([0.25, 2.0, -0.75], abs=1e-12)  # additive players: exact in every permutation
    assert credit[0] + credit[1] == pytest.approx(1.5 + 1.5, abs=1e-12)
    _, again = play(marker_env(5, scorer, "shapley", shapley_permutations=6), MARKERS)
    assert again["search_credit"] == credit  # permutations from the env's np_random: same seed, same values


def chain_env(scorer=None, credit="sub-answer", dialect="search-r1", **config):
    corpus = corpus_with(("b", "Orlan", "Orlan was born in Quillhaven."),
                         ("a", "Quillhaven", "Quillhaven is a town of Zorbland."))
    questions = load_questions([{"id": "chain", "question": "Where is the birthplace of Orlan?",
                                 "golden_answers": ["Zorbland"], "metadata": {"sub_answers": ["Quillhaven"]}}])
    return SearchQAEnv(questions=questions, corpus=corpus, scorer=scorer or LastBlockScorer(), topk=1, max_turns=5,
                       dialect=dialect, ig=IGConfig(credit=credit, **config))


def test_sub_answer_credit_on_a_toy_chain():
    """Search 1 finds the bridge (Quillhaven, not yet found: gain 1), search 2 the answer (gain 1 for Zorbland;
    Quillhaven was found by search 1, so it no longer counts), search 3 repeats search 1 (gain 0 for the answer,
    and the bridge is already found). Step IG credits only search 2."""
    env = chain_env()
    env.reset(seed=0)
    steps = [env.step(f"<search> {q} </search>")[4] for q in ("Orlan", "Quillhaven town", "Orlan")]
    end = env.step("<answer> Zorbland </answer>")[4]
    assert [s["ig"] for s in steps] == [0.0, 1.0, 0.0]
    assert end["search_credit"] == [1.0, 1.0, 0.0]


def test_truncated_episodes_get_credit_and_a_last_turn_search_gets_none():
    env = chain_env()
    env.max_turns = 3
    env.reset(seed=0)
    env.step("<search> Orlan </search>")
    env.step("<search> Quillhaven town </search>")
    _, _, _, truncated, info = env.step("<search> Orlan </search>")
    assert truncated and info["ig"] is None and info["search_credit"] == [1.0, 1.0, None]


class CharTokenizer:
    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[ord(c) % 997 for c in text] for text in texts]}


@pytest.mark.parametrize("mode", ["sub-answer", "leave-one-out", "shapley"])
def test_deferred_credit_equals_in_env_credit_exactly(mode):
    scorer = GameScorer({"alphafact": 0.3, "gammafact": -0.2}, pair=("alphafact", "betafact"), bonus=1.7)
    _, in_env = play(marker_env(3, scorer, mode), ["alphafact", "betafact", "gammafact"], seed=4)
    deferred_env = marker_env(3, GameScorer({}), mode, deferred=Deferred(CharTokenizer()))
    _, end = play(deferred_env, ["alphafact", "betafact", "gammafact"], seed=4)
    request = end["credit_request"]
    assert "search_credit" not in end and len(request.token_ids) == len(request.pairs) > 0
    done = request.finish(scores=scorer.score(*zip(*request.pairs)))
    assert done["search_credit"] == in_env["search_credit"]  # exact
    copy = DeferredCredit.from_dict(json.loads(json.dumps(request.to_dict())))
    assert copy == request and finish_deferred([copy], scores=scorer.score(*zip(*request.pairs)))[0] == done


@pytest.mark.parametrize("mode", ["sub-answer", "shapley"])
def test_vector_env_credit_equals_single_envs(mode):
    venv = SearchQAVectorEnv(2, questions=chain_env().questions, corpus=chain_env().corpus, scorer=LastBlockScorer(),
                             topk=1, max_turns=5, ig=IGConfig(credit=mode))
    singles = [chain_env(credit=mode, shared_draws=True) for _ in range(2)]
    venv.reset(seed=3)
    for i, env in enumerate(singles):
        env.reset(seed=3 + i, options={"draw_seed": 3})
    script = [["<search> Orlan </search>", "<search> Quillhaven town </search>"],
              ["<search> Quillhaven town </search>", "<search> Orlan </search>"],
              ["<answer> Zorbland </answer>", "<answer> no </answer>"]]
    for actions in script:
        _, _, _, _, v_info = venv.step(actions)
        s_infos = [env.step(a)[4] for env, a in zip(singles, actions)]
    assert [list(v_info["search_credit"][i]) for i in range(2)] == [s["search_credit"] for s in s_infos]


def test_refine_credit_scores_after_the_refine_and_swaps_documents_and_refine_jointly():
    """The passage names only the bridge; the agent's refine names the answer. Step IG (scored before the refine)
    is 0; scored after it, against the step's random passages with the refine left out, it is 1."""
    env = chain_env(credit="refine", dialect="autorefine")
    env.reset(seed=0)
    step = env.step("<search> Orlan </search>")[4]
    end = env.step("<refine> Orlan was born in Quillhaven, a town of Zorbland </refine><answer> Zorbland </answer>")[4]
    assert step["ig"] == 0.0 and end["search_credit"] == [1.0]
    # with a pool of other questions' (documents, refine) pairs: both drawn (2 of 2), one names the answer
    from search_env.info_gain.credit import credit_requests

    steps, records = env.steps, env.ig._records
    pool = [("<documents>x</documents>", "<refine> Zorbland </refine>"),
            ("<documents>y</documents>", "<refine>no</refine>")]
    requests = credit_requests("refine", env._prefix, steps, records, "Zorbland", pool=pool, n_random=2,
                               rng=np.random.default_rng(0))
    contexts = [c for c, _ in requests.pairs]
    assert contexts[0].endswith("a town of Zorbland </refine>") and len(contexts) == 3
    assert sorted(c.rsplit("</search>\n", 1)[-1] for c in contexts[1:]) == sorted("\n".join(p) for p in pool)
    assert requests.finish(LastBlockScorer().score(*zip(*requests.pairs))) == [0.5]


# -------------------------------------------------------------------------------------- sub-answers from data


def test_sub_answers_from_each_kind_of_metadata():
    items = load_questions([
        {"id": "m", "question": "Seat of the county of X?", "golden_answers": ["Stanley"], "metadata": {
            "question_decomposition": [{"answer": "Mountrail County"}, {"answer": "Stanley"}]}},
        {"id": "w", "question": "Which film's director is younger, A or B?", "golden_answers": ["B"], "metadata": {
            "evidences": [["A", "director", "P"], ["B", "director", "Q"], ["P", "date of birth", "1932"]]}},
        {"id": "h", "question": "What was the club Leonard Francis played for called?", "golden_answers": ["Spurs"],
         "metadata": {"type": "bridge", "supporting_titles": ["Len Worley", "Leonard Francis (footballer)"]}},
        {"id": "s", "question": "q?", "golden_answers": ["a"], "metadata": {"sub_answers": ["b", "a", "b"]}},
        {"id": "n", "question": "q?", "golden_answers": ["a"]},
    ])
    assert [sub_answers(items.get(i)) for i in "mwhsn"] == [("Mountrail County",), ("P", "Q", "1932"),
                                                            ("Len Worley",), ("b",), ()]


# ------------------------------------------------------------------------------------- authors' tokenisation


def test_authors_answer_style_moves_the_space_into_the_context():
    natural, authors = ScoreFormat(), ScoreFormat(answer_style="authors")
    tok = CharTokenizer()
    (ids_n, start_n), = natural.encode(tok, [("C", "Zorb")])
    (ids_a, start_a), = authors.encode(tok, [("C", "Zorb")])
    assert ids_n[start_n:] == tok([" Zorb"])["input_ids"][0] and ids_n[:start_n] == tok(["C\n<answer>"])["input_ids"][0]
    assert ids_a[start_a:] == tok(["Zorb"])["input_ids"][0] and ids_a[:start_a] == tok(["C\n<answer> "])["input_ids"][0]
    with pytest.raises(ValueError, match="answer_style"):
        ScoreFormat(answer_style="other")


def test_authors_answer_style_with_the_bundled_tokenizer():
    transformers = pytest.importorskip("transformers")
    from search_env.agents.models import bundled_model_dir

    tok = transformers.AutoTokenizer.from_pretrained(bundled_model_dir())
    (ids_n, start_n), = ScoreFormat().encode(tok, [("Q", "0.47")])
    (ids_a, start_a), = ScoreFormat(answer_style="authors").encode(tok, [("Q", "0.47")])
    bare = tok("0.47", add_special_tokens=False)["input_ids"]
    assert ids_a[start_a:] == bare and ids_n[start_n:] == tok(" 0.47", add_special_tokens=False)["input_ids"]
    assert ids_n[start_n:] != ids_a[start_a:]
    assert ids_a[:start_a] == tok("Q\n<answer> ", add_special_tokens=False)["input_ids"]


def test_vector_env_defers_credit_too():
    def venv(**config):
        return SearchQAVectorEnv(2, questions=chain_env().questions, corpus=chain_env().corpus,
                                 scorer=LastBlockScorer(), topk=1, max_turns=5, ig=IGConfig(credit="shapley", **config))

    scored, deferred = venv(), venv(deferred=Deferred(CharTokenizer()))
    script = [["<search> Orlan </search>", "<search> Quillhaven town </search>"],
              ["<search> Quillhaven town </search>", "<answer> no </answer>"],
              ["<answer> Zorbland </answer>", None]]
    for v in (scored, deferred):
        v.reset(seed=3)
    checked = 0
    for actions in script:
        a = scored.step(actions)[4]
        b = deferred.step(actions)[4]
        for i in np.flatnonzero(a.get("_search_credit", np.zeros(2, bool))):
            request = b["credit_request"][i]
            done = request.finish(scores=LastBlockScorer().score(*zip(*request.pairs)))
            assert list(a["search_credit"][i]) == done["search_credit"] and "search_credit" not in b
            checked += 1
    assert checked == 2
