import dataclasses
import re

import pytest
from transformers import AutoTokenizer

from search_env import Answer, QADataset, SearchQAEnv, parse_action
from search_env.agents import models
from search_env.agents.models import load_causal_lm
from search_env.agents.policy import LMPolicy, OraclePolicy, chat_prompt, cut_at_stop, play_episode, play_episodes
from search_env.dialects import get_dialect
from tests.standins import tiny_llama


@pytest.fixture(scope="module")
def tiny_policy():
    tokenizer = AutoTokenizer.from_pretrained(models.bundled_model_dir())
    return tiny_llama(len(tokenizer)), tokenizer


def test_cut_at_stop():
    assert cut_at_stop("<search> q </search> tail <answer>") == "<search> q </search>"
    assert cut_at_stop("no tag") == "no tag"


def test_constrained_turns_are_always_well_formed(tiny_policy):
    model, tokenizer = tiny_policy
    policy = LMPolicy(model, tokenizer, constrained=True, max_new_tokens=6)
    prompt = "Answer the question.\nQuestion: Who founded Pellwick Mills?\n"
    turns = policy.act_batch([prompt, prompt], ["", "<search> a </search>\n\n<information>x</information>\n\n"])
    assert all(t.startswith(("<search>", "<answer>")) and t.endswith(("</search>", "</answer>")) for t in turns)
    assert policy.act(prompt, force="search").startswith("<search>")
    forced = policy.act(prompt, force="answer")
    assert forced.startswith("<answer>") and forced.endswith("</answer>")
    parsed = parse_action(forced)
    assert isinstance(parsed, Answer) or parsed.reason == "empty"  # a random model may write nothing


def test_free_turns_stop_at_the_closing_tag(tiny_policy, monkeypatch):
    policy = LMPolicy(*tiny_policy, max_new_tokens=8)
    text = policy.act("Question: x?\n")
    assert isinstance(text, str) and text.count("</search>") + text.count("</answer>") <= 1
    # generation may run past the first closing tag (a stop string ends on a token boundary): the turn is cut
    monkeypatch.setattr(policy, "_generate", lambda texts: ["<search> a </search> <answer> b </answer>"] * len(texts))
    assert policy.act("Question: x?\n") == "<search> a </search>"


# ----------------------------------------------------------------------------------------- prompts


def test_chat_prompt_puts_the_worked_example_first_and_the_episode_as_the_assistant(tiny_policy):
    _, tokenizer = tiny_policy
    text = chat_prompt(tokenizer, "Question: Who founded X?\n", "<search> X </search>")
    assert text.index(get_dialect("search-r1").worked_example().strip()[:40]) < text.index("Question: Who founded X?")
    assert text.rstrip().endswith("<search> X </search>")
    assert "<|im_start|>assistant" in text  # SmolLM2's chat template, generation prompt added
    bare = chat_prompt(tokenizer, "Question: Q?\n", dialect="autorefine", few_shot=False)
    assert "<refine>" not in bare.split("Question: Q?")[0] and "Pellwick" not in bare
    assert "<documents>" in get_dialect("autorefine").worked_example()
    policy = LMPolicy(*tiny_policy, dialect="autorefine")
    assert policy.prompt_text("Question: Q?\n") == chat_prompt(tokenizer, "Question: Q?\n", dialect="autorefine")


def test_no_prompt_offers_an_entity_to_copy_and_the_worked_examples_names_are_not_in_the_world():
    """A small model copied "Lisbon" from the instructions' answer example into its search: the instructions name
    no entity now, and the worked example's names appear nowhere in the built-in world (a copied one finds no
    page of its own and is never a gold answer)."""
    from search_env.data import load_corpus, load_questions
    from search_env.dialects import DIALECTS

    for dialect in DIALECTS.values():
        instructions = dialect.prompt("Q?", 3).split("Question: Q?")[0]
        blocks = re.findall(r"<(search|answer)>(.*?)</\1>", instructions)
        # "<search> your query </search>" and "between <answer> and </answer>": nothing a model could copy
        assert {text.strip() for _, text in blocks} == {"your query", "and"}, (dialect.name, blocks)
        assert "Lisbon" not in instructions
    example = get_dialect("search-r1").worked_example()
    names = ["Pellwick Mills", "Ansel Dorrow", "Castemar", "Ruvenia"]
    assert all(name in example for name in names)  # the names this test is about are the example's
    corpus, questions = load_corpus(None), load_questions(None)
    world = " ".join([*(f"{d.title} {d.text}" for d in corpus), *(q.question for q in questions),
                      *(a for q in questions for a in q.golden_answers)])
    assert not [name for name in names if name in world]
    for word in ("Pellwick", "Dorrow", "Castemar", "Ruvenia"):
        assert word not in world


def test_load_causal_lm_refuses_a_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        load_causal_lm(str(tmp_path / "nothing-here"))


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty local Hugging Face cache, and a hub that must not be asked unless a test says so."""
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(models, "_FOUND", set())
    monkeypatch.setattr(huggingface_hub, "model_info", lambda *a, **k: pytest.fail("the hub was asked"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return tmp_path / "hub"


def test_an_unknown_model_name_fails_at_once_naming_it(hub_cache, monkeypatch):
    """Offline and not in the cache: at once, naming the option and the model (no download, no retries)."""
    import time

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(models.ModelNotFound, match=r"--policy no/such-model: .*not in the local Hugging Face cache"):
        models.check_model("no/such-model", "--policy")
    with pytest.raises(FileNotFoundError, match="no/such-model.*HF_HUB_OFFLINE is set"):
        load_causal_lm("no/such-model")
    with pytest.raises(FileNotFoundError, match="^scorer no/such-model: "):  # at construction, not the first step
        SearchQAEnv(scorer="no/such-model")
    import gymnasium as gym

    with pytest.raises(FileNotFoundError, match="^scorer no/such-model: "):
        gym.make("search_env:SearchQA-v0", scorer="no/such-model")
    assert time.monotonic() - start < 5
    # online, the hub is asked once, briefly: a name it does not know, or a hub it cannot reach, fails as clearly
    monkeypatch.delenv("HF_HUB_OFFLINE")
    import huggingface_hub
    from huggingface_hub.errors import RepositoryNotFoundError

    def unknown(name, timeout):
        assert timeout <= 5
        error = RepositoryNotFoundError.__new__(RepositoryNotFoundError)
        Exception.__init__(error, "404")
        raise error

    monkeypatch.setattr(huggingface_hub, "model_info", unknown)
    with pytest.raises(models.ModelNotFound, match="--scorer no/such-model: .*nor on the Hugging Face hub"):
        models.check_model("no/such-model", "--scorer")

    def unreachable(name, timeout):
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(huggingface_hub, "model_info", unreachable)
    with pytest.raises(models.ModelNotFound, match="hub cannot be reached .Name or service not known"):
        models.check_model("no/such-model", "--scorer")
    with pytest.raises(models.ModelNotFound, match="not 'bundled', a model folder or a Hugging Face model name"):
        models.check_model("no such model!", "--policy")


def test_a_model_in_the_local_cache_or_a_folder_passes_without_the_hub(hub_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snapshot = hub_cache / "models--some--model" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (hub_cache / "models--some--model" / "refs").mkdir()
    (hub_cache / "models--some--model" / "refs" / "main").write_text("abc")
    for name in ["some/model", "bundled", str(tmp_path)]:
        models.check_model(name, "--policy")
    with pytest.raises(models.ModelNotFound, match="no such model folder"):
        models.check_model(str(tmp_path / "nothing-here"), "--policy")


# ----------------------------------------------------------------------------------------- oracle and episodes


def test_oracle_without_gold_titles_searches_before_answering(tiny_questions, tiny_corpus):
    """No metadata.supporting_titles: it searches the question (or the gold sub-questions), and says so once."""
    env = SearchQAEnv(questions=tiny_questions, corpus=tiny_corpus, ig=False, max_turns=4)
    oracle = OraclePolicy(tiny_questions, think=False)
    with pytest.warns(UserWarning, match="no metadata.supporting_titles, so it cannot follow gold titles") as said:
        records = [play_episode(env, oracle, options={"index": i}) for i in range(2)]
    assert len([w for w in said if "OraclePolicy" in str(w.message)]) == 1  # once, not per episode
    for record, item in zip(records, tiny_questions):
        assert record["n_searches"] >= 1 and record["turns"][0]["query"] == item.question
        assert record["turns"][0]["doc_ids"] and record["turns"][-1]["action_type"] == "answer"
    assert OraclePolicy.queries(tiny_questions[0]) == ([tiny_questions[0].question], "question")
    decomposed = dataclasses.replace(tiny_questions[0], metadata={"question_decomposition": [
        {"question": "Which river flows through Karvesh?", "answer": "Olm"},
        {"question": "Which country is #1 in?", "answer": "Norvia"}]})
    assert OraclePolicy.queries(decomposed) == (
        ["Which river flows through Karvesh?", "Which country is Olm in?"], "question_decomposition")


def test_oracle_plays_the_gold_chain_and_answers(tiny_questions, tiny_corpus):
    titles = {q.id: [tiny_corpus.get(d).title for d in q.metadata["supporting_doc_ids"]] for q in tiny_questions}
    questions = QADataset([dataclasses.replace(q, metadata={**q.metadata, "supporting_titles": titles[q.id]})
                           for q in tiny_questions])
    env = SearchQAEnv(questions=questions, corpus=tiny_corpus, ig=False, max_turns=4)
    steps = []
    record = play_episode(env, OraclePolicy(questions), seed=0, options={"index": 1},
                          on_step=lambda text, reward, terminated, truncated, info: steps.append(info["action_type"]))
    item = questions[1]
    assert record["id"] == item.id and record["em"] == 1.0 and record["prediction"] == item.golden_answers[0]
    assert [t["query"] for t in record["turns"][:-1]] == titles[item.id]
    assert steps == ["search"] * len(titles[item.id]) + ["answer"] and record["n_searches"] == len(titles[item.id])
    assert record["return"] == pytest.approx(sum(t["reward"] for t in record["turns"])) == 1.0

    capped = play_episode(env, OraclePolicy(questions, n_searches=0), options={"index": 1})
    assert [t["action_type"] for t in capped["turns"]] == ["answer"]
    forced = OraclePolicy(questions).act(env.reset(options={"index": 1})[0], force="answer")
    assert forced == f"<answer> {item.golden_answers[0]} </answer>"
    with pytest.raises(KeyError, match="not among the questions"):
        OraclePolicy(questions[:1]).act("Question: something else entirely?\n")


class ForceFollower:
    """Searches or answers when told to, else writes no tag (an invalid turn); records what it was told."""

    def __init__(self):
        self.forces = []

    def act(self, prompt, continuation="", *, force=None):
        self.forces.append(force)
        return {"search": "<search> Karvesh </search>", "answer": "<answer> Veltrania </answer>"}.get(force, "hmm")


def test_play_episode_forces_search_first_and_answer_last(tiny_questions, tiny_corpus):
    env = SearchQAEnv(questions=tiny_questions, corpus=tiny_corpus, ig=False, max_turns=3)
    policy = ForceFollower()
    record = play_episode(env, policy, seed=0, options={"question_id": "q0"}, search_first=True, answer_last=True)
    assert policy.forces == ["search", None, "answer"]
    assert [t["action_type"] for t in record["turns"]] == ["search", "invalid", "answer"] and record["em"] == 1.0
    free = ForceFollower()
    record = play_episode(env, free, seed=0, options={"question_id": "q0"})
    assert free.forces == [None, None, None] and record["prediction"] is None  # truncated, never forced


@pytest.mark.filterwarnings("ignore:OraclePolicy")  # the tiny questions have no gold titles: it searches them
def test_play_episodes_in_a_vector_env_gives_each_episode_the_record_play_episode_gives(tiny_questions, tiny_corpus):
    """The oracle one episode at a time (it follows one question), in order, each as play_episode plays it."""
    from search_env import SearchQAVectorEnv

    venv = SearchQAVectorEnv(3, autoreset_mode="Disabled", questions=tiny_questions, corpus=tiny_corpus, ig=False)
    env = SearchQAEnv(questions=tiny_questions, corpus=tiny_corpus, ig=False)
    ids = [q.id for q in tiny_questions][::-1]
    ended = []
    records = play_episodes(venv, OraclePolicy(tiny_questions), [{"question_id": i} for i in ids], seed=3,
                            on_episode=lambda index, record: ended.append((index, record["id"])))
    assert [r["id"] for r in records] == ids and ended == list(enumerate(ids))
    assert records == [play_episode(env, OraclePolicy(tiny_questions), seed=3, options={"question_id": i}) for i in ids]
    assert all(r["em"] == 1.0 and r["turns"][0]["passages"] for r in records)
    with pytest.raises(ValueError, match="SAME_STEP"):
        play_episodes(SearchQAVectorEnv(2, autoreset_mode="SameStep", questions=tiny_questions, corpus=tiny_corpus,
                                        ig=False), OraclePolicy(tiny_questions), [{"question_id": "q0"}])


def test_play_episodes_batches_a_model_and_refills_sub_envs_as_episodes_end(tiny_policy, tiny_questions, tiny_corpus):
    """Five constrained episodes in three sub-envs: the model writes every live episode's turn in one call, the
    forcing of play_episode holds per episode, and each record is the one play_episode gives alone (greedy)."""
    from search_env import SearchQAVectorEnv

    policy = LMPolicy(*tiny_policy, constrained=True, max_new_tokens=4)
    calls = []
    act_batch = policy.act_batch
    policy.act_batch = lambda prompts, conts, force=None: calls.append(list(force)) or act_batch(prompts, conts,
                                                                                                  force=force)
    venv = SearchQAVectorEnv(3, autoreset_mode="Disabled", questions=tiny_questions, corpus=tiny_corpus, ig=False,
                             max_turns=2)
    ids = ["q0", "q1", "q2", "q3", "q4"]
    records = play_episodes(venv, policy, [{"question_id": i} for i in ids], seed=0, search_first=True,
                            answer_last=True)
    assert calls[:2] == [["search"] * 3, ["answer"] * 3] and calls[2] == ["search", "search"]  # 3 live, then 2
    assert len(calls) == 4 and all(len(c) <= 3 for c in calls)
    assert all([t["action_type"] for t in r["turns"]] == ["search", "answer"] for r in records)
    env = SearchQAEnv(questions=tiny_questions, corpus=tiny_corpus, ig=False, max_turns=2)
    alone = [play_episode(env, LMPolicy(*tiny_policy, constrained=True, max_new_tokens=4), seed=0,
                          options={"question_id": i}, search_first=True, answer_last=True) for i in ids]
    assert [[t["text"] for t in r["turns"]] for r in records] == [[t["text"] for t in r["turns"]] for r in alone]


def test_act_batch_takes_one_force_per_prompt(tiny_policy):
    policy = LMPolicy(*tiny_policy, constrained=True, max_new_tokens=3)
    turns = policy.act_batch(["Question: a?\n"] * 3, ["", "", ""], force=["answer", None, "search"])
    assert turns[0].startswith("<answer>") and turns[2].startswith("<search>")
    assert turns[1].startswith(("<search>", "<answer>"))
    with pytest.raises(ValueError, match="one action per prompt"):
        policy.act_batch(["Question: a?\n"] * 2, ["", ""], force=["answer"])


# ----------------------------------------------------------------------------------------- noisy teacher


@pytest.fixture(scope="module")
def world_multi_hop():
    from search_env import build_world

    world = build_world()
    items = [q for q in world.questions if q.metadata["hops"] in (2, 3)][:60]
    return QADataset(items), world.corpus


def test_noisy_teacher_searches_the_right_entity_at_its_accuracy_and_answers_from_what_it_found(world_multi_hop):
    questions, corpus = world_multi_hop
    env = SearchQAEnv(questions=questions, corpus=corpus, ig=False, max_turns=4)
    teacher = OraclePolicy(questions, think=False, accuracy=0.5, seed=3)
    right = wrong = 0
    ems = {True: [], False: []}
    for item in questions:
        titles = item.metadata["supporting_titles"]
        seen = []  # the transcript after each step: what the next turn was chosen from
        record = play_episode(env, teacher, options={"question_id": item.id},
                              on_step=lambda *_, seen=seen: seen.append(env.unwrapped.transcript))
        searches, answer = record["turns"][:-1], record["turns"][-1]
        assert [t["action_type"] for t in record["turns"]] == ["search"] * len(titles) + ["answer"]
        assert searches[0]["query"] == titles[0]  # the question names only the first entity: nothing else to pick
        for k, (before, turn) in enumerate(zip(seen, searches[1:]), start=1):
            shown = set(re.findall(r"Doc \d+\(Title: (.+?)\) ", before))
            target = next((t for t in titles if t not in shown), titles[k % len(titles)])
            if turn["query"] == target:
                right += 1
            else:  # another entity the episode has named so far, never the right one
                wrong += 1
                assert turn["query"] in before and target not in turn["query"]
        found_last = f"(Title: {titles[-1]})" in seen[-1]
        assert (record["em"] == 1.0) == found_last  # gold exactly when the answer's passage was read
        if not found_last:
            assert answer["text"] != f"<answer> {item.golden_answers[0]} </answer>"
            if item.golden_answers[0].isdigit():
                assert re.fullmatch(r"<answer> \d{4} </answer>", answer["text"])
        ems[found_last].append(record["em"])
    assert 0.3 < right / (right + wrong) < 0.7 and wrong >= 10  # p = 0.5 over the later searches
    assert ems[True] and ems[False]


def test_noisy_teacher_is_seeded_and_accuracy_one_is_the_oracle(world_multi_hop):
    questions, corpus = world_multi_hop
    env = SearchQAEnv(questions=questions, corpus=corpus, ig=False, max_turns=4)

    def queries(policy):
        return [[t["text"] for t in play_episode(env, policy, options={"index": i})["turns"]] for i in range(20)]

    assert queries(OraclePolicy(questions, accuracy=0.3, seed=1)) == queries(
        OraclePolicy(questions, accuracy=0.3, seed=1)
    )
    assert queries(OraclePolicy(questions, accuracy=0.3, seed=1)) != queries(
        OraclePolicy(questions, accuracy=0.3, seed=2)
    )
    oracle = [
        play_episode(env, OraclePolicy(questions, think=False, accuracy=1.0, seed=5), options={"index": i})
        for i in range(20)
    ]
    assert all(r["em"] == 1.0 for r in oracle)
    assert all(
        [t["query"] for t in r["turns"][:-1]] == questions[i].metadata["supporting_titles"]
        for i, r in enumerate(oracle)
    )
    with pytest.raises(ValueError, match="accuracy"):
        OraclePolicy(questions, accuracy=1.5)


def test_oracle_tells_apart_questions_that_share_a_text(tiny_corpus):
    """Real sets repeat question texts with other answers (PopQA): the oracle follows the reset's question id."""
    from search_env.data import QAItem

    questions = QADataset([QAItem("a", "Who wrote it?", ("Alpha",), {"supporting_titles": ["Karvesh"]}),
                           QAItem("b", "Who wrote it?", ("Beta",), {"supporting_titles": ["Omrith"]})])
    env = SearchQAEnv(questions=questions, corpus=tiny_corpus, ig=False)
    oracle = OraclePolicy(questions)
    records = [play_episode(env, oracle, options={"question_id": qid}) for qid in ("b", "a", "b")]
    assert [r["prediction"] for r in records] == ["Beta", "Alpha", "Beta"]
    assert [r["turns"][0]["query"] for r in records] == ["Omrith", "Karvesh", "Omrith"]
