"""benchmarks/study/warm_start.py: the testbed's word-level tokenizer on real env text, the SFT data and loss mask,
and a subprocess smoke run at a tiny budget whose folder grpo_ig.py loads."""

import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

from search_env import QADataset, SearchQAEnv, build_world
from search_env.agents.policy import OraclePolicy, chat_prompt, play_episode
from tests.scripts import imported  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "benchmarks" / "study" / "warm_start.py"
TAGS = ["<search>", "</search>", "<answer>", "</answer>", "<information>", "</information>", "<think>", "</think>",
        "<documents>", "</documents>", "<refine>", "</refine>"]


@pytest.fixture(scope="module")
def ws():
    with imported("benchmarks/study/warm_start.py") as module:
        yield module


@pytest.fixture(scope="module")
def tok(ws):
    return ws.load_tokenizer(0, 3)


@pytest.fixture(scope="module")
def multi_hop():
    world = build_world()
    return QADataset([q for q in world.questions if q.metadata["hops"] in (2, 3)][:40]), world.corpus


def ids_of(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_tokenizer_round_trips_real_transcripts_with_tags_and_newlines_as_tokens(tok, multi_hop):
    questions, corpus = multi_hop
    assert tok.chat_template is None and {tok.pad_token, tok.unk_token, tok.eos_token} == {
        "<|pad|>",
        "<|unk|>",
        "<|endoftext|>",
    }
    for tag in TAGS:
        assert len(ids_of(tok, tag)) == 1 and len(ids_of(tok, " " + tag)) == 1, tag
    assert tok.convert_ids_to_tokens(ids_of(tok, "a\n\nb")).count("\n") == 2
    for dialect in ("search-r1", "autorefine"):
        env = SearchQAEnv(questions=questions, corpus=corpus, ig=False, max_turns=5, dialect=dialect)
        teacher = OraclePolicy(questions, accuracy=0.5, seed=0)  # with <think> text, wrong queries, wrong answers
        for i in range(len(questions)):
            play_episode(env, teacher, options={"index": i})
            text = env.unwrapped.transcript
            for context in (text, chat_prompt(tok, text, few_shot=True), text + "\nI do not know the answer"):
                ids = ids_of(tok, context)
                assert tok.unk_token_id not in ids
                assert tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False) == context
    # an invalid turn and its feedback, and what the IG scorer tokenises (context + "\n<answer>", then " " + answer)
    env.reset(options={"index": 0})
    obs = env.step("I think <search> no end")[0]
    assert tok.decode(ids_of(tok, obs)) == obs and tok.unk_token_id not in ids_of(tok, obs)
    answer = questions[0].golden_answers[0]
    assert ids_of(tok, "x\n<answer>") + ids_of(tok, " " + answer) == ids_of(tok, f"x\n<answer> {answer}")


def test_segments_tokenise_as_the_whole_and_stop_strings_work(tok, multi_hop):
    """grpo_ig tokenises the prompt, each turn and each observation on their own: the pieces must add up to the
    whole, and generation must stop after a closing tag."""
    questions, corpus = multi_hop
    env = SearchQAEnv(questions=questions, corpus=corpus, ig=False, max_turns=4)
    pieces = []
    prompt = env.reset(options={"index": 3})[0]
    for turn in ["<search> " + questions[3].metadata["supporting_titles"][0] + " </search>", "<answer> x </answer>"]:
        pieces += [turn, env.step(turn)[0]]
    head = chat_prompt(tok, prompt, few_shot=False)
    assert sum((ids_of(tok, p) for p in [head, *pieces]), []) == ids_of(tok, head + "".join(pieces))
    stop = transformers.StopStringCriteria(tok, ["</search>", "</answer>"])
    done = ids_of(tok, "<search> Navymisk Cathedrals </search>")
    assert stop(torch.tensor([done]), None).item() and not stop(torch.tensor([done[:-1]]), None).item()


def test_teacher_examples_mask_exactly_the_policy_turns(ws, tok, multi_hop):
    questions, corpus = multi_hop
    args = ws.Args(episodes_per_question=1, accuracy=0.5)
    examples, em = ws.teacher_episodes(tok, list(questions)[:8], corpus, args)
    assert len(examples) == 8 and 0 <= em <= 1
    env = SearchQAEnv(questions=questions, corpus=corpus, ig=False, max_turns=4)
    replay = OraclePolicy(questions, think=False, accuracy=0.5, seed=args.seed)  # same seed: the same episodes
    for item, (ids, mask) in zip(list(questions)[:8], examples):
        record = play_episode(env, replay, options={"question_id": item.id})
        turns = [t["text"] for t in record["turns"]]
        policy = tok.decode([t for t, m in zip(ids, mask) if m])
        assert policy == "".join(turns)
        head = chat_prompt(tok, env.unwrapped._prompt, few_shot=False)
        assert ids == ids_of(tok, head + env.unwrapped.transcript[len(env.unwrapped._prompt) :])
        assert not any(mask[: len(ids_of(tok, head))])
        assert tok.decode(ids[len(mask) - mask[::-1].index(True) - 1 :]).strip() == "</answer>"  # ends on the answer


def test_sft_lowers_the_loss_and_learns_only_policy_tokens_and_copy_targets(ws, tok, multi_hop):
    questions, corpus = multi_hop
    args = ws.Args(episodes_per_question=1, hidden_size=32, layers=1, intermediate_size=64, epochs=8, batch_size=4,
                   learning_rate=1e-2)
    examples, _ = ws.teacher_episodes(tok, list(questions)[:8], corpus, args)
    model = ws.new_model(tok, args)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two threads on two shared cores can be many times slower
    try:
        losses = ws.sft(model, examples, args, tok)
    finally:
        torch.set_num_threads(threads)
    assert np.mean(losses[-2:]) < 0.7 * np.mean(losses[:2])

    # copy targets: env tokens naming something already in the context, e.g. a passage title the search named
    namelike = np.array([bool(re.fullmatch(ws.NAMELIKE, t)) for t in tok.convert_ids_to_tokens(list(range(len(tok))))])
    ids, mask = examples[0]
    copy = ws.copy_targets(ids, mask, namelike)
    assert not any(c and m for c, m in zip(copy, mask)) and sum(copy) > 5
    assert all(ids[j] in ids[:j] for j in range(len(ids)) if copy[j])
    title = questions[0].metadata["supporting_titles"][0].split()[0]
    assert any(copy[j] for j in range(len(ids)) if tok.convert_ids_to_tokens(ids[j]) == "\u2581" + title)

    # the loss: mean cross-entropy over the policy's tokens, plus copy_weight x the mean over the copy targets
    rows = [(i, m, ws.copy_targets(i, m, namelike)) for i, m in examples[:2]]
    with torch.no_grad():
        policy_ce, copy_ce = [], []
        for ids, mask, copy in rows:
            logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
            policy_ce += [-logp[j - 1, ids[j]].item() for j in range(1, len(ids)) if mask[j]]
            copy_ce += [-logp[j - 1, ids[j]].item() for j in range(1, len(ids)) if copy[j]]
        loss, policy_loss = ws.sft_loss(model, rows, tok.pad_token_id, copy_weight=0.5)
        assert policy_loss.item() == pytest.approx(np.mean(policy_ce), rel=1e-4)
        assert loss.item() == pytest.approx(np.mean(policy_ce) + 0.5 * np.mean(copy_ce), rel=1e-4)
        assert ws.sft_loss(model, rows, tok.pad_token_id)[0].item() == pytest.approx(np.mean(policy_ce), rel=1e-4)
    assert len(policy_ce) == sum(sum(m) for _, m, _ in rows) < 0.2 * sum(len(i) for i, _, _ in rows)


def run_warm_start(tmp_path, *extra, timeout=120):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}  # two threads on two shared cores can be many times slower
    flags = ["--max-questions", "12", "--episodes-per-question", "1", "--epochs", "1", "--ig-questions", "4",
             "--eval-questions", "4", "--hidden-size", "32", "--layers", "1", "--intermediate-size", "64",
             "--output", str(tmp_path / "ws")]
    start = time.perf_counter()
    result = subprocess.run([sys.executable, str(EXAMPLE), *flags, *extra], capture_output=True, text=True, env=env,
                            timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout, time.perf_counter() - start


def test_the_warm_start_cache_key_follows_settings_and_the_texts_the_model_reads(ws, monkeypatch):
    key = ws.cache_key(ws.Args())
    assert key == ws.cache_key(ws.Args()) and len(key) == 12  # reproducible
    # a change to what the model reads (a dialect's instructions, say) is a new tokenizer and a new warm start
    dialects = ws.DIALECTS.copy()
    before = ws.world_texts(ws.build_world(seed=0), 3, 3)
    longer = dialects["search-r1"].instructions + " for example <answer> Lisbon </answer>."
    monkeypatch.setitem(ws.DIALECTS, "search-r1", dataclasses.replace(dialects["search-r1"], instructions=longer))
    assert ws.world_texts(ws.build_world(seed=0), 3, 3) != before
    ws.texts_fingerprint.cache_clear()
    try:
        assert ws.cache_key(ws.Args()) != key
    finally:
        monkeypatch.undo()
        ws.texts_fingerprint.cache_clear()
    assert ws.cache_key(ws.Args()) == key
    assert ws.tokenizer_version("search-r1") == ws.tokenizer_version("autorefine") == 3
    assert ws.tokenizer_version("plan") == 4 and ws.cache_key(ws.Args(dialect="plan")) != ws.cache_key(ws.Args())
    assert ws.cache_key(ws.Args(keep_correct=True)) != ws.cache_key(ws.Args())


def test_plan_teacher_episodes_open_with_a_plan_the_v4_tokenizer_knows(ws, multi_hop):
    questions, corpus = multi_hop
    tok4 = ws.load_tokenizer(0, 3, "plan")
    args = ws.Args(episodes_per_question=1, accuracy=0.5, dialect="plan")
    items = list(questions)[:10]
    examples, em = ws.teacher_episodes(tok4, items, corpus, args)
    assert len(examples) == 10
    env = SearchQAEnv(questions=questions, corpus=corpus, ig=False, max_turns=4, dialect="plan")
    replay = OraclePolicy(questions, think=False, accuracy=0.5, seed=args.seed, plan=True)
    for item, (ids, mask) in zip(items, examples):
        record = play_episode(env, replay, options={"question_id": item.id})
        assert record["turns"][0]["text"].startswith("<plan>") and {t["action_type"] for t in record["turns"]} <= {
            "search",
            "answer",
        }
        policy = tok4.decode([t for t, m in zip(ids, mask) if m])
        assert policy == "".join(t["text"] for t in record["turns"]) and policy.startswith("<plan>\n1. ")
        assert tok4.unk_token_id not in ids  # every word of the prompt, plan, passages and answer is known
    kept, em_all = ws.teacher_episodes(
        tok4, items, corpus, ws.Args(episodes_per_question=1, accuracy=0.5, dialect="plan", keep_correct=True)
    )
    assert em_all == em and 0 < len(kept) == round(em * len(items)) < len(items)  # only the right ones
    assert [e for e in examples if e in kept] == kept


def test_smoke_warm_start_writes_a_folder_grpo_loads_and_is_cached(tmp_path, tok):
    out, _ = run_warm_start(tmp_path)
    folder = tmp_path / "ws"
    assert out.strip().splitlines()[-1] == f"warm-started model: {folder}"
    assert "IG validity" in out and "before" in out and "after" in out and "valid-tag rate" in out
    report = json.loads((folder / "warm_start.json").read_text())
    for key in ("ig_validity_before", "ig_validity_after"):
        assert report[key]["n"] == 4 and report[key]["win_rate"] * 4 == round(report[key]["win_rate"] * 4)  # k of 4
    assert set(report["eval"]) >= {"em", "answered", "valid_tag_rate", "searches", "truncated"}
    assert report["vocab_size"] == len(tok) and report["sft_episodes"] == 12
    # grpo_ig's loader takes the folder: the same tokenizer, a model of the reported size
    with imported("examples/grpo_ig.py") as grpo:
        model, loaded = grpo.build_model(str(folder), seed=0)
    assert sum(p.numel() for p in model.parameters()) == report["parameters"]
    assert loaded.get_vocab() == tok.get_vocab() and loaded.chat_template is None
    assert model.generation_config.eos_token_id == [tok.eos_token_id]
    again, seconds = run_warm_start(tmp_path)
    assert "(cached)" in again and again.strip().splitlines()[-1] == out.strip().splitlines()[-1]
    # the same --output with another setting is built again, not handed out as the old model
    other, _ = run_warm_start(tmp_path, "--accuracy", "0.7")
    assert "(cached)" not in other and "building it again" in other
    assert json.loads((folder / "warm_start.json").read_text())["cache_key"] != report["cache_key"]


def test_smoke_plan_warm_start_then_grpo_in_the_plan_dialect(tmp_path):
    """The oracle-written plan warm start at a tiny budget (``--keep-correct``: SFT on the noisy oracle's right
    episodes, whose plans are gold decompositions; the self-bootstrapped one is in test_plan.py), then grpo_ig.py
    trains that model in the plan dialect."""
    out, _ = run_warm_start(tmp_path, "--dialect", "plan", "--keep-correct", "--accuracy", "0.7")
    report = json.loads((tmp_path / "ws" / "warm_start.json").read_text())
    assert report["args"]["dialect"] == "plan" and 0 < report["sft_episodes"] < 12  # the wrong ones were dropped
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "grpo_ig.py"),
            "--model",
            str(tmp_path / "ws"),
            "--dialect",
            "plan",
            "--total-steps",
            "1",
            "--questions-per-step",
            "2",
            "--group-size",
            "2",
            "--max-turns",
            "3",
            "--max-new-tokens",
            "40",
            "--eval-every",
            "1",
            "--eval-questions",
            "4",
            "--no-tensorboard",
            "--output-dir",
            str(tmp_path / "runs"),
            "--run-name",
            "plan",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "step    1" in result.stdout and (tmp_path / "runs" / "plan" / "metrics.csv").exists()
