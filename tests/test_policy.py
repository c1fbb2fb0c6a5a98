import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from search_env import Answer, parse_action
from search_env import scorers
from search_env.policy import LMPolicy, cut_at_stop


@pytest.fixture(scope="module")
def tiny_policy():
    tokenizer = AutoTokenizer.from_pretrained(scorers.bundled_model_dir())
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
