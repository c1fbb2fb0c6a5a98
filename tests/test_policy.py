import dataclasses

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from search_env import Answer, QADataset, SearchQAEnv, bundled, parse_action
from search_env.dialects import get_dialect
from search_env.policy import LMPolicy, OraclePolicy, chat_prompt, cut_at_stop, load_causal_lm, play_episode


@pytest.fixture(scope="module")
def tiny_policy():
    tokenizer = AutoTokenizer.from_pretrained(bundled.bundled_model_dir())
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=64)
    return LlamaForCausalLM(config).eval(), tokenizer


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


def test_free_turns_stop_at_the_closing_tag(tiny_policy):
    model, tokenizer = tiny_policy
    text = LMPolicy(model, tokenizer, max_new_tokens=8).act("Question: x?\n")
    assert isinstance(text, str) and text.count("</search>") + text.count("</answer>") <= 1


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


def test_load_causal_lm_refuses_a_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        load_causal_lm(str(tmp_path / "nothing-here"))


# ----------------------------------------------------------------------------------------- oracle and episodes


def test_oracle_plays_the_gold_chain_and_answers(tiny_questions, tiny_corpus):
    titles = {q.id: [tiny_corpus.get(d).title for d in q.metadata["supporting_doc_ids"]] for q in tiny_questions}
    questions = QADataset([dataclasses.replace(q, metadata={**q.metadata, "supporting_titles": titles[q.id]})
                           for q in tiny_questions])
    env = SearchQAEnv(questions=questions, corpus=tiny_corpus, ig=False, max_turns=4)
    steps = []
    record = play_episode(env, OraclePolicy(questions), seed=0, options={"index": 1},
                          on_step=lambda text, reward, info: steps.append(info["action_type"]))
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


def test_play_episode_forces_search_first_and_answer_last(tiny_policy, tiny_questions, tiny_corpus):
    env = SearchQAEnv(questions=tiny_questions, corpus=tiny_corpus, ig=False, max_turns=3)
    policy = LMPolicy(*tiny_policy, constrained=True, max_new_tokens=4)
    record = play_episode(env, policy, seed=0, search_first=True, answer_last=True)
    kinds = [t["action_type"] for t in record["turns"]]
    assert kinds[0] in ("search", "invalid") and record["turns"][0]["text"].startswith("<search>")
    assert record["turns"][-1]["text"].startswith("<answer>") or kinds[-1] == "answer"
