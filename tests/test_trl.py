"""search_env.integrations.trl: the environment class driven the way TRL's GRPOTrainer drives it.

What TRL (1.16) does with an `environment_factory` (trl/trainer/grpo_trainer.py):
- calls the factory with no arguments, once to probe and then once per concurrent rollout (pooled, reused);
- exposes every public function of the class except `reset`/`get_reward` as a tool, listed with
  `inspect.getmembers(type(env), predicate=inspect.isfunction)`, and renders the bound methods through
  `tokenizer.apply_chat_template(..., tools=methods)` (`transformers.utils.get_json_schema`);
- calls `env.reset(**row)` with the whole dataset row, appending a returned string to the last user message;
- calls `getattr(env, name)(**arguments)` for each parsed tool call, `str()`-ing the result;
- calls `env.get_reward()` once per finished rollout.
"""

from __future__ import annotations

import inspect
import json
import pickle

import numpy as np
import pytest

from search_env.data.synthetic import build_world
from search_env.info_gain import IGConfig
from search_env.integrations.trl import (
    SearchEnvFactory,
    SearchToolEnv,
    checkpointing_setting,
    make_dataset,
    with_tool_template,
)


def trl_tools(env) -> dict:
    """The tool dict TRL builds for one rollout (same filter as GRPOTrainer._generate_and_score_completions)."""
    return {
        name: getattr(env, name)
        for name, _ in inspect.getmembers(type(env), predicate=inspect.isfunction)
        if name not in ("reset", "get_reward") and not name.startswith("_")
    }


def trl_call(env, name: str, **arguments) -> str:
    """A tool call as TRL makes it: look the tool up by name, call it with the parsed arguments, str() it."""
    return str(trl_tools(env)[name](**arguments))


@pytest.fixture(scope="module")
def world_rows():
    pytest.importorskip("datasets")  # make_dataset builds a datasets.Dataset (the `trl` extra)
    return make_dataset(limit=4)


@pytest.fixture(scope="module")
def tool_tokenizer():
    pytest.importorskip("trl")
    from transformers import AutoTokenizer

    from search_env.agents.models import bundled_model_dir

    return with_tool_template(AutoTokenizer.from_pretrained(bundled_model_dir()))


def tiny_row(i=0, **extra):
    """A row from another QA set than the env's: a question about the conftest tiny corpus."""
    cities = ["Karvesh", "Omrith", "Dallowmere"]
    countries = ["Veltrania", "Osmundia", "Harrowstan"]
    return {"question": f"In which country is {cities[i]}?", "golden_answers": [countries[i]], **extra}


# ------------------------------------------------------------------------------------------ discovery


def test_trl_sees_exactly_search_and_answer_as_tools():
    env = SearchEnvFactory()()
    assert sorted(trl_tools(env)) == ["answer", "search"]
    members = dict(inspect.getmembers(type(env), predicate=inspect.isfunction))
    assert "reset" in members and "get_reward" in members  # TRL requires reset and picks up get_reward


def test_tool_schemas_come_from_type_hints_and_docstrings():
    from transformers.utils import get_json_schema

    env = SearchToolEnv()
    search, answer = (get_json_schema(f)["function"] for f in (env.search, env.answer))
    assert search["name"] == "search" and search["description"]
    assert list(search["parameters"]["properties"]) == ["query"]
    assert search["parameters"]["properties"]["query"]["type"] == "string"
    assert search["parameters"]["properties"]["query"]["description"]
    assert search["parameters"]["required"] == ["query"]
    assert answer["name"] == "answer" and answer["parameters"]["required"] == ["text"]
    assert answer["parameters"]["properties"]["text"]["type"] == "string"


def test_chat_template_renders_the_tools(tool_tokenizer):
    from transformers import AutoTokenizer
    from trl.chat_template_utils import supports_tool_calling

    from search_env.agents.models import bundled_model_dir

    own = AutoTokenizer.from_pretrained(bundled_model_dir())
    assert not supports_tool_calling(own)  # SmolLM2's own template: why with_tool_template exists
    env = SearchToolEnv()
    assert supports_tool_calling(tool_tokenizer) and tool_tokenizer.padding_side == "left"
    text = tool_tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tools=list(trl_tools(env).values()), tokenize=False,
        add_generation_prompt=True,
    )
    assert '"name": "search"' in text and '"name": "answer"' in text and '"query"' in text


def test_with_tool_template_refuses_a_tokenizer_it_cannot_fix():
    pytest.importorskip("trl")
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    plain = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, "[UNK]")))
    with pytest.raises(ValueError, match="im_start"):
        with_tool_template(plain)


# ------------------------------------------------------------------------------------------ episodes


def test_factory_is_zero_arg_shares_the_index_and_pickles():
    factory = SearchEnvFactory(topk=2)
    a, b = factory(), factory()
    assert a is not b and a._corpus is b._corpus and a._retriever is b._retriever
    clone = pickle.loads(pickle.dumps(factory))
    assert clone._shared is None  # the index is not pickled; the clone rebuilds (or reloads) it once
    c1, c2 = clone(), clone()
    assert c1._retriever is c2._retriever and c1._topk == 2
    env = SearchToolEnv()  # the class itself is a valid zero-argument factory: a working episode
    item = build_world().questions[0]
    env.reset(question=item.question, golden_answers=list(item.golden_answers))
    assert env.search(item.metadata["supporting_titles"][0]).startswith("Doc 1(Title: ")


def test_world_episode_driven_like_trl(world_rows):
    env = SearchEnvFactory()()
    row = world_rows[0]
    item = build_world().questions.get(row["id"])
    assert env.reset(**row) is None  # the row's prompt already holds the question: nothing appended
    assert env.env.item.question == row["question"] and env.env.item.golden_answers == item.golden_answers
    assert env.env.item.id == row["id"]

    passages = trl_call(env, "search", query=row["question"])
    assert passages.startswith("Doc 1(Title: ") and "<information>" not in passages
    assert passages.count("\nDoc ") == 2  # topk=3 passages
    assert env.infos[-1]["action_type"] == "search" and "ig" in env.infos[-1]

    assert trl_call(env, "answer", text=item.golden_answers[0]) == "Answer recorded. The episode is over."
    assert env.prediction == item.golden_answers[0] and env.done
    assert env.get_reward() == 1.0 and env.outcome == 1.0
    # after the end: messages, not exceptions, and the reward does not move
    assert "episode is over" in trl_call(env, "search", query="anything")
    assert "episode is over" in trl_call(env, "answer", text="another")
    assert env.get_reward() == 1.0 and len(env.infos) == 2

    # the pooled instance is reused for the next rollout: a fresh episode
    assert env.reset(**world_rows[1]) is None
    assert env.infos == [] and env.prediction is None and not env.done and env.get_reward() == 0.0
    trl_call(env, "answer", text="certainly not this")
    assert env.get_reward() == 0.0


def test_reset_returns_the_prompt_when_the_row_has_none():
    env = SearchToolEnv()
    # TRL's placeholder prompt when the dataset has no prompt column
    text = env.reset(prompt=[{"role": "user", "content": ""}], **tiny_row())
    assert "Question: In which country is Karvesh?" in text and "`search`" in text and "`answer`" in text
    assert "Question:" in env.reset(**tiny_row())
    assert SearchToolEnv(return_prompt=False).reset(**tiny_row()) is None
    forced = SearchToolEnv(return_prompt=True).reset(prompt=[{"role": "user", "content": "x"}], **tiny_row())
    assert "Karvesh" in forced
    with pytest.raises(ValueError, match="return_prompt"):
        SearchToolEnv(return_prompt="yes")


def test_rows_from_any_qa_set(tiny_corpus):
    env = SearchToolEnv(corpus=tiny_corpus, topk=1)
    # `answer` instead of `golden_answers`, numpy answers, extra columns, a non-dict metadata: all fine
    env.reset(question="In which country is Omrith?", answer="Osmundia", source="other", metadata=None)
    assert env.env.item.golden_answers == ("Osmundia",)
    env.reset(**tiny_row(2, golden_answers=np.array(["Harrowstan", "HS"]), id=7, extra=[1, 2]))
    assert env.env.item.golden_answers == ("Harrowstan", "HS") and env.env.item.id == "7"
    assert "Title: Dallowmere" in env.search("Dallowmere")
    env.answer("harrowstan")
    assert env.get_reward() == 1.0
    with pytest.raises(ValueError, match="question"):
        env.reset(prompt=[{"role": "user", "content": ""}])


def test_tools_before_reset_answer_with_a_message():
    env = SearchToolEnv()
    assert "not been reset" in trl_call(env, "search", query="x")
    assert "not been reset" in trl_call(env, "answer", text="x")
    assert env.get_reward() == 0.0 and env.done


def test_search_budget_keeps_a_turn_for_the_answer(tiny_corpus):
    env = SearchToolEnv(corpus=tiny_corpus, max_searches=1, topk=1)
    env.reset(**tiny_row())
    assert env.search("Karvesh").startswith("Doc 1(Title: Karvesh)")
    assert "No searches left" in env.search("Karvesh again")
    assert len(env.infos) == 1 and not env.done
    env.answer("Veltrania")
    assert env.get_reward() == 1.0


def test_no_answer_means_no_outcome_and_invalid_calls_cost_the_format_penalty(tiny_corpus):
    env = SearchToolEnv(corpus=tiny_corpus, max_searches=2)
    env.reset(**tiny_row())
    feedback = env.search("   ")
    assert env.infos[-1]["action_type"] == "invalid" and "empty" in feedback
    assert env.answer("") and not env.done  # an empty answer does not end the episode
    assert env.get_reward() == pytest.approx(-0.2)
    # invalid calls use turns: no search left, and one more empty answer cuts the episode off without an outcome
    assert "No searches left" in env.search("Karvesh")
    env.answer(" ")
    assert env.done and env.prediction is None and env.get_reward() == pytest.approx(-0.3)
    assert "turn limit" in env.answer("Veltrania") and env.get_reward() == pytest.approx(-0.3)


# ------------------------------------------------------------------------------------------ IG


def test_ig_is_off_by_default_so_no_scorer_is_loaded():
    env = SearchToolEnv()
    env.reset(**tiny_row())
    env.search("Karvesh")
    assert env.env.ig_config is None and env.env._scorer is None and env.igs == []


def test_get_reward_adds_the_weighted_ig_sum(tiny_corpus, fake_scorer):
    env = SearchEnvFactory(corpus=tiny_corpus, ig_weight=0.5, scorer=fake_scorer, topk=1, seed=0)()
    env.reset(**tiny_row())
    env.search("Karvesh river city")  # the passage holds the answer: FakeScorer gives it ~1 over random docs
    env.search("harbour market")
    env.answer("Veltrania")
    assert fake_scorer.calls == 2 and len(env.igs) == 2 and env.igs[0] > 0.5
    assert env.get_reward() == pytest.approx(1.0 + 0.5 * sum(env.igs))
    assert env.get_reward() == pytest.approx(sum(sum(i["reward_components"].values()) for i in env.infos))

    # IG recorded for logging but kept out of the reward
    logged = SearchToolEnv(corpus=tiny_corpus, ig=True, scorer=fake_scorer, topk=1)
    logged.reset(**tiny_row())
    logged.search("Karvesh")
    logged.answer("Veltrania")
    assert len(logged.igs) == 1 and logged.get_reward() == 1.0


def test_a_batch_shares_its_draws_and_the_next_batch_draws_fresh(tiny_corpus, fake_scorer):
    """Two rollouts of a group (same row, one batch), the same query at the same turn: identical IG; the next
    batch (the pooled instances reset again) draws other random passages."""
    factory = SearchEnvFactory(corpus=tiny_corpus, ig_weight=0.5, scorer=fake_scorer, topk=1)  # envs: fresh entropy
    envs = [factory() for _ in range(4)]

    def batch(rows):
        for env, row in zip(envs, rows):
            env.reset(**row)
            env.search("harbour market")  # the retrieved passage lacks the answer: IG depends on the draws
        return [env.infos[0] for env in envs], [env.env.ig._records[0].random_blocks for env in envs]

    rows = [tiny_row(0), tiny_row(0), tiny_row(1), tiny_row(1)]
    infos, drawn = batch(rows)
    assert envs[0].env.ig.shared_draws and infos[0]["doc_ids"] == infos[1]["doc_ids"]
    assert infos[0]["ig"] == infos[1]["ig"] and infos[2]["ig"] == infos[3]["ig"]
    assert drawn[0] == drawn[1] and drawn[2] == drawn[3] and infos[0]["ig_detail"] == infos[1]["ig_detail"]
    next_infos, drawn_next = batch(rows)
    assert next_infos[0]["ig"] == next_infos[1]["ig"] and drawn_next[0] == drawn_next[1] != drawn[0]
    # without shared draws the two rollouts of a group draw their own random passages
    a, b = (SearchToolEnv(corpus=tiny_corpus, ig=IGConfig(shared_draws=False), scorer=fake_scorer, topk=1, seed=seed)
            for seed in (1, 2))
    for env in (a, b):
        env.reset(**tiny_row(0))
        env.search("harbour market")
    assert a.env.ig._records[0].random_blocks != b.env.ig._records[0].random_blocks and not a.env.ig.shared_draws
    given = SearchToolEnv(corpus=tiny_corpus, ig=True, scorer=fake_scorer, topk=1)
    given.reset(**tiny_row(0), draw_seed=11)
    assert given.env.ig._draw_seed == 11


# ------------------------------------------------------------------------------------------ GRPOTrainer


def test_one_grpo_step_on_cpu(tool_tokenizer, tmp_path, monkeypatch, fake_scorer):
    """One real GRPOTrainer step: a tiny random Qwen2 whose `generate` is scripted to call the tools (a random
    model would never emit a well-formed tool call), so TRL's own parsing, tool loop and reward path run."""
    pytest.importorskip("datasets")
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    tok = tool_tokenizer
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=4096, tie_word_embeddings=True,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
    )
    model = Qwen2ForCausalLM(config)
    dataset = make_dataset(limit=2, topk=1)
    golds = {row["question"]: row["golden_answers"][0] for row in dataset}
    seen_prompts, times_seen = [], {}

    def scripted_generate(input_ids, attention_mask=None, **_):
        replies = []
        for ids, mask in zip(input_ids, attention_mask):
            text = tok.decode(ids[mask.bool()])
            seen_prompts.append(text)
            question = next(q for q in golds if q in text)
            turn = text.count("<tool_response>")
            if turn == 0:
                call = {"name": "search", "arguments": {"query": question}}
            elif turn == 1:  # the two rollouts of a prompt: the first answers right, the second wrong
                k = times_seen[text] = times_seen.get(text, -1) + 1
                call = {"name": "answer", "arguments": {"text": golds[question] if k == 0 else "no idea"}}
            else:
                call = None
            reply = f"<tool_call>\n{json.dumps(call)}\n</tool_call>" if call else "Done."
            replies.append(tok(reply + "<|im_end|>", add_special_tokens=False)["input_ids"])
        width = max(map(len, replies))
        tail = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in replies])
        return torch.cat([input_ids, tail], dim=1)

    model.generate = scripted_generate
    args = GRPOConfig(
        output_dir=str(tmp_path), use_cpu=True, per_device_train_batch_size=2, num_generations=2, max_steps=1,
        max_completion_length=768, max_tool_calling_iterations=4, report_to="none", logging_steps=1,
        save_strategy="no", bf16=False, seed=0,
        **checkpointing_setting(GRPOConfig, False),
    )
    factory = SearchEnvFactory(topk=1, max_searches=2, ig_weight=0.5, scorer=fake_scorer, seed=0)
    trainer = GRPOTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=tok, environment_factory=factory
    )
    trainer.train()

    logs = trainer.state.log_history[0]
    envs = trainer._environment_pool[None]
    assert len(envs) == 2  # one per rollout of the batch; the probe instance was reused
    assert logs["tools/call_frequency"] == 2 and logs["tools/failure_frequency"] == 0
    assert sorted(e.prediction for e in envs) == sorted(["no idea", golds[envs[0].env.item.question]])
    assert all([i["action_type"] for i in e.infos] == ["search", "answer"] and len(e.igs) == 1 for e in envs)
    rewards = [e.get_reward() for e in envs]
    assert sorted(e.outcome for e in envs) == [0.0, 1.0]
    assert rewards == pytest.approx([e.outcome + 0.5 * e.igs[0] for e in envs])
    assert logs["rewards/SearchToolEnv/mean"] == pytest.approx(np.mean(rewards), abs=1e-5)
    assert np.isfinite(logs["loss"])
    # the search results went back to the model as the tool message of its second turn
    assert any("<tool_response>\nDoc 1(Title: " in p for p in seen_prompts)
