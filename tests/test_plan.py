"""The plan dialect: <plan> parsing (every malformed case of the bad-action battery, in and after a plan), the
env's rules and info, sub-question matching, plan quality against gold decompositions (MuSiQue's too), the
plan-aware reward, the plan-writing teacher, and the warm start's self-bootstrapping (the model's own right
episodes) at a tiny budget."""

import json
import re

import pytest
import torch

from search_env.agents.policy import OraclePolicy, play_episode
from search_env.data import load_questions
from search_env.data.synthetic import build_world
from search_env.env import SearchQAEnv
from search_env.plan import (
    MAX_PLAN_STEPS,
    content_words,
    gold_readings,
    match_sub_question,
    parse_plan,
    plan_coverage,
    plan_quality,
    similarity,
)
from search_env.rewards import RewardConfig
from search_env.training.rollout import build_model
from search_env.training.splits import held_out_split
from search_env.vector import SearchQAVectorEnv
from search_env.wrappers import OutcomeOnly
from tests.scripts import imported
from tests.shared_data import shared_data
from tests.test_actions import INVALID_ACTIONS
from tests.test_warm_start import run_warm_start

PLAN = "<plan>\n1. Which label released After Holmessa?\n2) When was that label founded?\n</plan>\n"
STRING_CASES = [(a, r) for a, r in INVALID_ACTIONS if isinstance(a, str)]


def test_parse_plan():
    assert parse_plan(PLAN + "<search> x </search>") == (
        ["Which label released After Holmessa?", "When was that label founded?"],
        None,
    )
    assert parse_plan("<plan>- one\n* two\n\n3 three</plan>")[0] == ["one", "two", "3 three"]
    assert parse_plan("no plan <search> x </search>") == (None, None)
    assert parse_plan("<think><plan>1. a</plan></think>") == (None, None)  # reasoning, not a plan
    for text, reason in [
        ("<plan>1. a", "unclosed_tag"),
        ("<plan>\n\n  </plan>", "empty"),
        ("<plan>1. <answer>x</answer></plan>", "nested_tags"),
        ("<plan>" + "\n".join(f"{i}. q" for i in range(MAX_PLAN_STEPS + 1)) + "</plan>", "plan_too_long"),
        ("<plan>1. " + "x" * 2500 + "</plan>", "content_too_long"),
    ]:
        steps, bad = parse_plan(text)
        assert steps is None and bad.reason == reason and bad.message


@pytest.fixture
def env():
    return SearchQAEnv(dialect="plan", ig=False, max_turns=6)


@pytest.mark.parametrize("action, reason", STRING_CASES, ids=[r for _, r in STRING_CASES])
def test_battery_after_a_plan_is_invalid_as_without_one(env, action, reason):
    env.reset(seed=0)
    _, reward, terminated, truncated, info = env.step(PLAN + action)
    assert info["action_type"] == "invalid" and info["invalid_reason"] == reason and "plan" not in info
    assert reward == pytest.approx(-0.1) and not terminated and env.plan is None  # the plan did not count


@pytest.mark.parametrize("action, reason", STRING_CASES, ids=[r for _, r in STRING_CASES])
def test_battery_inside_a_plan_never_crashes_and_tags_make_it_invalid(env, action, reason):
    env.reset(seed=0)
    info = env.step(f"<plan>{action}</plan><search> After Holmessa </search>")[4]
    if "<" in action or not action.strip() or not action.strip("\x00\x01"):
        assert info["action_type"] == "invalid" and info["invalid_reason"] in ("nested_tags", "empty", "unclosed_tag")
    else:
        assert info["action_type"] == "search" and info["plan"]


def test_env_rules_and_info(env):
    env.reset(seed=0)
    info = env.step("<search> After Holmessa </search>")[4]
    assert info["invalid_reason"] == "no_plan"
    info = env.step("<search> After Holmessa </search>" + PLAN)[4]  # a plan after the action is not read
    assert info["invalid_reason"] == "no_plan"
    info = env.step(PLAN + "<think>first the label</think><search> After Holmessa </search>")[4]
    assert (
        info["plan"] == ["Which label released After Holmessa?", "When was that label founded?"]
        and info["sub_question"] == 0
    )
    info = env.step("<search> Brodamuld Music founded </search>")[4]
    assert "plan" not in info and info["sub_question"] == 1
    info = env.step("<plan>1. Who founded Brodamuld Music?</plan><search> Brodamuld Music </search>")[4]
    assert info["plan"] == ["Who founded Brodamuld Music?"] and info["sub_question"] == 0  # re-planned
    assert env.step("<answer> 1941 </answer>")[4]["em"] == 1.0
    env.reset(seed=1)
    assert (
        env.plan is None and env.step({"kind": "answer", "text": "x"})[4]["action_type"] == "answer"
    )  # no plan needed to answer
    plain = SearchQAEnv(ig=False)
    plain.reset(seed=0)
    assert plain.step("<search> After Holmessa </search>")[4]["action_type"] == "search"  # other dialects unchanged


def test_match_sub_question():
    plan = ["Which label released After Holmessa?", "When was that label founded?", "Who founded it?"]
    assert match_sub_question("After Holmessa label", plan) == 0
    assert match_sub_question("label founded year", plan) == 1
    assert match_sub_question("zzz", plan) == 0 and match_sub_question("zzz", plan, answered=[0]) == 1


def test_plan_quality_by_hand():
    gold = [{"question": "Which company published Navymisk Cathedrals?"}, {"question": "#1 >> headquarters city"}]
    same = plan_quality(["Which company published Navymisk Cathedrals?", "headquarters city"], gold)
    assert same == {"n_plan": 2.0, "n_gold": 2.0, "count_match": 1.0, "sub_question_f1": 1.0}
    half = plan_quality(["Which company published Navymisk Cathedrals?"], gold)
    assert half["count_match"] == 0.0 and half["sub_question_f1"] == pytest.approx(0.5)
    assert plan_quality([], gold)["sub_question_f1"] == 0.0


def test_similarity_by_hand():
    assert content_words("When was that label founded?") == ("label", "found")  # question words out, stemmed
    assert content_words("#1 >> capital") == ("capit",) and content_words("Who is it?") == ()
    assert similarity("Brodamuld Music founded", "When was that label founded?") == pytest.approx(2 * 1 / (3 + 2))
    assert similarity("Who was her husband's father?", "father of Yang Pu") == pytest.approx(2 * 1 / (2 + 3))
    assert similarity("", "x y") == 0.0 and similarity("What is it?", "What is it?") == 0.0  # no content words


VAN_HOOK = [  # musique_dev_migres_0's decomposition
    {"question": "Van Hook Township >> located in the administrative territorial entity", "answer": "Mountrail County"},
    {"question": "#1 >> capital", "answer": "Stanley"},
]


def test_gold_readings_resolve_references_and_read_relations():
    assert gold_readings(VAN_HOOK) == [
        ["located in the administrative territorial entity of Van Hook Township"],
        ["capital of Mountrail County", "capital of"],  # #1 named, or only referred to
    ]
    assert gold_readings([{"question": "Who wrote X?", "answer": "Ann"}, {"question": "When was #1 born?"}]) == [
        ["Who wrote X?"],
        ["When was Ann born?", "When was born?"],
    ]
    assert gold_readings(["#2 >> capital of", "Y >> shares border with", "#9 >> spouse"]) == [
        ["capital of"], ["shares border with Y"], ["spouse of"]  # no answers (strings), an out-of-range #9
    ]


def test_plan_quality_reads_musique_items_by_hand():
    # step 1 {counti van hook township locat} vs {locat administr territori entiti van hook township}: 2*4/(5+7)
    named = plan_quality(["Which county is Van Hook Township located in?", "What is the capital of Mountrail County?"],
                         VAN_HOOK)
    assert named["sub_question_f1"] == pytest.approx((8 / 12 + 1.0) / 2)
    # "capital of that county" {capit counti}: vs the named reading 2*2/(2+3) = 0.8, vs the referring one 2/3
    referring = plan_quality(["Which county is Van Hook Township located in?", "What is the capital of that county?"],
                             VAN_HOOK)
    assert referring["sub_question_f1"] == pytest.approx((8 / 12 + 0.8) / 2)
    # "the county seat of that county" {counti seat counti} vs {capit mountrail counti}: 2*1/(3+3); a synonym
    # ("seat" for Wikidata's "capital") is not recognised
    seat = plan_quality(["Which county is Van Hook Township located in?", "What is the county seat of that county?"],
                        VAN_HOOK)
    assert seat["sub_question_f1"] == pytest.approx((8 / 12 + 1 / 3) / 2)


def test_plan_quality_on_real_musique_rows():
    questions = load_questions(shared_data("musique_dev_migres200") / "test.jsonl")
    rows = {q.id: q for q in questions}
    assert gold_readings(rows["musique_dev_migres_0"].metadata["question_decomposition"]) == gold_readings(VAN_HOOK)
    crowned = rows["musique_dev_migres_20"].metadata["question_decomposition"]  # "When was #1 crowned?"
    assert gold_readings(crowned)[1] == ["When was Henry III crowned?", "When was crowned?"]
    plan = ["Who is the sibling of Alice de Lusignan, Countess of Surrey?", "When was that sibling crowned?"]
    # {sibl alic de lusignan countess surrey} twice; {sibl crown} vs {crown}: 2*1/(2+1)
    assert plan_quality(plan, crowned)["sub_question_f1"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert plan_quality(plan, rows["musique_dev_migres_2"].metadata["question_decomposition"])["sub_question_f1"] == 0
    items = [q for q in questions if q.metadata.get("question_decomposition")]
    assert len(items) == len(questions) == 200
    for item in items:
        gold = item.metadata["question_decomposition"]
        readings = gold_readings(gold)
        assert all(">>" not in text and "#" not in text for r in readings for text in r)
        for k, (g, r) in enumerate(zip(gold, readings)):
            for ref in {int(n) for n in re.findall(r"#\s*(\d+)", g["question"])}:
                assert ref <= k and gold[ref - 1]["answer"] in r[0]  # the named reading holds the earlier answer
        assert plan_quality([g["question"] for g in gold], gold)["sub_question_f1"] == pytest.approx(1.0)
        assert plan_quality([item.question], gold)["sub_question_f1"] < 1.0  # the question itself is no plan


def test_plan_coverage_by_hand():
    plan = ["Which label released After Holmessa?", "When was that label founded?"]  # {label releas after holmessa}
    assert plan_coverage(plan, []) == 0.0 and plan_coverage(None, [(0, "x")]) == 0.0
    assert plan_coverage(plan, [(0, "After Holmessa")]) == pytest.approx((2 * 2 / 6) / 2)  # F1 2/3 on step 0 of 2
    # the best query per sub-question counts; a query counts only for the sub-question it is anchored to
    assert plan_coverage(plan, [(1, "Brodamuld Music founded"), (1, "label founded"), (0, "label founded")]) == (
        pytest.approx((2 * 1 / 6 + 1.0) / 2)
    )


def test_plan_aware_reward_by_hand():
    env = SearchQAEnv(dialect="plan", ig=False, max_turns=6, reward=RewardConfig(plan_weight=0.5))
    env.reset(seed=0)
    # (turn, sub-question, coverage): F1 {after holmessa} vs step 0 = 2/3; {brodamuld music found} vs step 1
    # {label found} = 2*1/5; {label found} vs step 1 = 1; the same search again adds nothing
    turns = [
        (PLAN + "<search> After Holmessa </search>", 0, (2 / 3) / 2),
        ("<search> Brodamuld Music founded </search>", 1, (2 / 3 + 0.4) / 2),
        ("<search> When was the label founded </search>", 1, (2 / 3 + 1.0) / 2),
        ("<search> After Holmessa </search>", 0, (2 / 3 + 1.0) / 2),
    ]
    previous, total = 0.0, 0.0
    for action, sub_question, coverage in turns:
        _, reward, *_, info = env.step(action)
        assert info["sub_question"] == sub_question and info["plan_coverage"] == pytest.approx(coverage)
        assert info["reward_components"]["plan"] == pytest.approx(0.5 * (coverage - previous)) == pytest.approx(reward)
        previous, total = coverage, total + reward
    assert total == pytest.approx(0.5 * (2 / 3 + 1.0) / 2)  # the terms add up to w times the coverage
    # a re-plan starts the coverage again from 0: the episode's plan terms add up to 0 here
    _, reward, terminated, _, info = env.step("<plan>1. Who founded Brodamuld Music?</plan><answer> 1941 </answer>")
    assert terminated and info["plan_coverage"] == 0.0 and info["reward_components"]["plan"] == pytest.approx(-total)
    assert reward == pytest.approx(1.0 - total)  # EM 1 (the answer's outcome) minus the lost coverage


def test_plan_reward_is_off_by_default_and_kept_by_the_reward_wrappers():
    plain = SearchQAEnv(dialect="plan", ig=False)
    plain.reset(seed=0)
    info = plain.step(PLAN + "<search> After Holmessa </search>")[4]
    assert "plan" not in info["reward_components"] and info["plan_coverage"] == pytest.approx(1 / 3)  # reported only
    wrapped = OutcomeOnly(SearchQAEnv(dialect="plan", ig=False, reward=RewardConfig(plan_weight=0.5)))
    wrapped.reset(seed=0)
    _, reward, *_, info = wrapped.step(PLAN + "<search> After Holmessa </search>")
    assert reward == pytest.approx(0.5 / 3) == pytest.approx(info["reward_components"]["plan"])
    venv = SearchQAVectorEnv(2, dialect="plan", ig=False, reward=RewardConfig(plan_weight=0.5),
                             autoreset_mode="Disabled")  # the vector env's sub-envs get the same reward
    venv.reset(seed=0)
    _, rewards, _, _, infos = venv.step([PLAN + "<search> After Holmessa </search>", "x"])
    assert rewards.tolist() == pytest.approx([0.5 / 3, -0.1]) and infos["plan_coverage"][0] == pytest.approx(1 / 3)
    for bad in (float("nan"), "0.1", None):
        with pytest.raises(ValueError, match="plan_weight"):
            RewardConfig(plan_weight=bad)


def test_the_teacher_writes_plans_and_solves_the_world():
    world = build_world()
    items = [q for q in world.questions if q.metadata["hops"] >= 2][:20]
    env = SearchQAEnv(questions=world.questions, corpus=world.corpus, dialect="plan", ig=False)
    teacher = OraclePolicy(items, think=False, plan=True)
    results = [play_episode(env, teacher, options={"question_id": q.id}) for q in items]
    assert sum(r["em"] for r in results) / len(results) == 1.0
    env.reset(options={"question_id": items[0].id})
    teacher.reset({"question_id": items[0].id})
    info = env.step(teacher.act(env.transcript))[4]
    gold = items[0].metadata["question_decomposition"]
    assert info["plan"] == [g["question"] for g in gold] and plan_quality(info["plan"], gold)["sub_question_f1"] == 1.0


# A seed model that sometimes succeeds: 150 SFT steps on the oracle's episodes of 2 training questions, which a
# 32-wide one-layer model memorises (sampled at temperature 1 it then answers them right about half the time).
SEED_FLAGS = ["--dialect", "plan", "--max-questions", "2", "--accuracy", "1", "--epochs", "150", "--batch-size", "2",
              "--learning-rate", "1e-2", "--heads", "2", "--max-new-tokens", "40", "--ig-questions", "2",
              "--eval-questions", "2"]


@pytest.fixture(scope="module")
def seed_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("seed")
    run_warm_start(folder, *SEED_FLAGS, timeout=600)
    return folder / "ws"


def test_self_episodes_are_the_models_own_right_episodes(seed_model):
    with imported("benchmarks/study/warm_start.py") as ws:
        model, tok = build_model(str(seed_model), seed=0)
        world = build_world()
        items = list(held_out_split(world.questions, 200, "2,3")[0])[:2]  # the seed model's training questions
        args = ws.Args(dialect="plan", episodes_per_question=4, max_new_tokens=40)
        torch.manual_seed(0)
        kept, em, n = ws.self_episodes(model, tok, items, world.corpus, args)
        torch.manual_seed(0)  # the same draws again, every episode with its stats
        trajectories, episodes = ws.play(model, tok, items, world.corpus, args, group_size=4, sample=True)
    right = [(t.input_ids, t.loss_mask().tolist()) for t, e in zip(trajectories, episodes) if e["em"] and e["searches"]]
    assert n == len(episodes) == 8 and em == pytest.approx(sum(e["em"] for e in episodes) / 8)
    assert kept == right and 0 < len(kept) < 8  # some right, some wrong: the filter dropped the wrong ones
    for ids, mask in kept:
        own = tok.decode([t for t, m in zip(ids, mask) if m])
        assert own.startswith("<plan>") and "<search>" in own and own.endswith("</answer>")
        assert tok.decode([t for t, m in zip(ids, mask) if not m]).startswith(ws.get_dialect("plan").prompt(
            items[0].question, 3)[:40])  # the prompt and passages are the env's, not the model's


def test_smoke_self_bootstrapped_warm_start(seed_model, tmp_path):
    out, _ = run_warm_start(tmp_path, "--dialect", "plan", "--trajectories", "self", "--base-model", str(seed_model),
                            "--max-questions", "2", "--episodes-per-question", "4", "--max-new-tokens", "40",
                            "--ig-questions", "2", "--eval-questions", "2", "--self-rounds", "2", timeout=600)
    report = json.loads((tmp_path / "ws" / "warm_start.json").read_text())
    rounds = report["self_rounds"]
    assert report["args"]["trajectories"] == "self" and len(rounds) == 2
    # every round samples 8; the first keeps some; a later round that keeps none ends the bootstrapping
    assert all(r["sampled"] == 8 and r["kept"] <= 8 for r in rounds) and rounds[0]["kept"] > 0
    assert (rounds[1]["kept"] > 0) != ("self-bootstrapping stops after round 1" in out)
    assert report["sft_episodes"] == sum(r["kept"] for r in rounds) and report["teacher_em"] == rounds[0]["em"]
    assert "self-bootstrapped: the model's own sampled EM" in out


@pytest.mark.parametrize("flags, message", [
    (["--trajectories", "self"], "needs a seed model"),
    (["--trajectories", "teacher"], "must be oracle or self"),
    (["--trajectories", "self", "--base-model", "x", "--self-rounds", "0"], "--self-rounds must be at least 1"),
])
def test_self_bootstrapping_refuses_what_it_cannot_do(tmp_path, flags, message):
    with imported("benchmarks/study/warm_start.py") as ws, pytest.raises(SystemExit, match=message):
        ws.main([*flags, "--output", str(tmp_path / "ws")])
    assert not (tmp_path / "ws").exists()


def test_trainer_turn_rewards_carry_the_plan_term():
    from search_env.integrations.base import turn_reward

    env = SearchQAEnv(dialect="plan", ig=False, reward=RewardConfig(plan_weight=0.5))
    env.reset(seed=0)
    _, reward, *_, info = env.step(PLAN + "<search> After Holmessa </search>")
    assert turn_reward(info, False, ig_weight=0.3, ig_clip=1.0) == pytest.approx(reward) == pytest.approx(0.5 / 3)
    _, reward, terminated, _, info = env.step("<answer> 1941 </answer>")
    assert terminated and turn_reward(info, True, ig_weight=0.3, ig_clip=1.0) == pytest.approx(reward)


def test_trainer_settings_turn_the_plan_reward_on():
    from search_env.integrations import base

    record = {"id": "q", "question": "Who founded the label?", "golden_answers": ["x"]}
    for weight, expected in ((0.0, None), (0.5, 0.5 / 3)):
        s = base.make_settings(base.DEFAULTS, None, {"dialect": "plan", "ig": False, "plan_weight": weight})
        env = base.question_env(s, record, resources=(build_world().corpus, "bm25", None))
        env.reset(seed=0)
        parts = env.step(PLAN + "<search> After Holmessa </search>")[4]["reward_components"]
        assert parts.get("plan") == (None if expected is None else pytest.approx(expected))
