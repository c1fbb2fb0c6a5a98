"""benchmarks/ig_testbed.py: its aggregation on hand-made runs, and the whole study as one command at a tiny budget."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from search_env import build_world
from search_env.training.splits import held_out_split, three_way_split
from tests.scripts import imported  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "ig_testbed.py"


@pytest.fixture(scope="module")
def testbed():
    with imported("benchmarks/ig_testbed.py") as module:
        yield module


@pytest.fixture(scope="module")
def study(testbed):
    """benchmarks/study's modules, as the testbed imports them."""
    import study.gate
    import study.stats

    return study


def test_sign_test_hand_computed(study):
    sign_test = study.stats.sign_test
    assert sign_test([1, 2, 3, 4, 5, 6, 7], [0] * 7) == (7, 0, 2 / 128)  # 2 · (1/2)^7
    assert sign_test([0.2, 0.1, 0.3, 0.0, -0.1, 0.4, 0.5], [0] * 7) == (5, 1, 2 * (1 + 6) / 64)  # tie dropped: n=6
    assert sign_test([1, 1, 0, -1], [0, 0, 0, 0]) == (2, 1, 1.0)  # 2 · (1 + 3) / 8, capped at 1
    assert sign_test([0.5, 0.5], [0.5, 0.5]) == (0, 0, 1.0)


def test_paired_bootstrap_hand_computed(study):
    paired_bootstrap = study.stats.paired_bootstrap
    assert paired_bootstrap([0.3] * 5, [0.2] * 5) == pytest.approx((0.1, 0.1, 0.1))  # every pair differs by 0.1
    # two pairs, differences 0 and 1: resampled means are 0, 0.5, 1 with chances 1/4, 1/2, 1/4
    mean, lo, hi = paired_bootstrap([1.0, 1.0], [1.0, 0.0])
    assert (mean, lo, hi) == (0.5, 0.0, 1.0)
    assert paired_bootstrap([1.0, 1.0], [1.0, 0.0], level=0.4) == (0.5, 0.5, 0.5)  # the middle 40%: all 0.5
    mean, lo, hi = paired_bootstrap([0.5, 0.1, 0.4], [0.1, 0.1, 0.1])  # pairing, not the arms' spread
    assert mean == pytest.approx(0.7 / 3) and 0.0 <= lo < mean < hi <= 0.4 + 1e-12  # differences 0.4, 0, 0.3
    with pytest.raises(ValueError, match="equally long"):
        paired_bootstrap([1.0, 2.0], [1.0])


def test_three_way_split_is_disjoint_and_keeps_the_held_out_part():
    questions = build_world(seed=0).questions
    warm, grpo, held = three_way_split(questions, 200, "2,3", 240)
    train, held_before = held_out_split(questions, 200, "2,3")
    ids = [{q.id for q in part} for part in (warm, grpo, held)]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert [q.id for q in held] == [q.id for q in held_before]  # the held-out part does not move
    assert [q.id for q in warm] + [q.id for q in grpo] == [q.id for q in train]
    assert len(warm) == 240 and len(grpo) == len(train) - 240 > 0
    assert len(three_way_split(questions, 200, "2,3", 0)[0]) == 0
    with pytest.raises(ValueError, match="warm_questions=485"):
        three_way_split(questions, 200, "2,3", len(train))


def test_gate_checks_and_pooled_sd(study):
    gate = study.gate
    assert gate.pooled_sd([[1.0, 3.0], [2.0, 2.0], [5.0]]) == pytest.approx(1.0)  # variances 2 and 0: sqrt(1)
    assert np.isnan(gate.pooled_sd([[1.0], []]))
    figures = {"all_failed_differ": 0.3, "spread_over_noise": 1.2, "answer_hop": {"win_rate": 0.8},
               "bridge_hop": {"win_rate": 0.6},
               "advantage_shares": {"grpo_std": {"ig_share": 0.2, "format_share": 0.3, "outcome_share": 0.5}}}
    assert gate.checks("ig", figures) == {"all_failed_differ": True, "spread_over_noise": True, "answer_hop": True,
                                          "ig_share": False}  # IG below the format penalty's share
    assert gate.checks("subanswer", figures)["bridge_hop"] is False
    figures["spread_over_noise"] = float("nan")  # no search scored twice: no evidence, a failed check
    assert gate.checks("ig", figures)["spread_over_noise"] is False


def rows(ems, step_every=2, failed=0.5):
    """metrics.csv rows of one run: a training row per step, held-out EM every ``step_every`` steps."""
    out = []
    for step in range(1, step_every * len(ems) + 1):
        row = {"step": float(step), "time/step": 1.0, "train/all_failed_groups": failed}
        if step % step_every == 0:
            row.update({"eval/em": ems[step // step_every - 1], "eval/answered": 0.9, "eval/truncated": 0.1,
                        "eval/searches": 2.0})
        out.append(row)
    return out


def test_steps_to_threshold_and_summary(testbed):
    assert testbed.steps_to(rows([0.1, 0.3, 0.5]), 0.3, start_em=0.1) == (4.0, True)
    assert testbed.steps_to(rows([0.1, 0.2, 0.25]), 0.3, start_em=0.1) == (6.0, False)  # censored at the last step
    assert testbed.steps_to(rows([0.0]), 0.3, start_em=0.4) == (0.0, True)
    stats = testbed.summarise({1: rows([0.1, 0.4]), 2: rows([0.2, 0.2]), 3: rows([0.3, 0.6])}, 0.35, 0.1)
    assert stats["final_em"]["mean"] == pytest.approx(0.4) and stats["final_em"]["sd"] == pytest.approx(0.2)
    assert stats["steps_to_threshold"]["values"] == [4.0, 4.0, 4.0] and stats["reached"]["values"] == [1.0, 0.0, 1.0]
    assert stats["all_failed_groups"]["mean"] == 0.5 and stats["truncated"]["mean"] == pytest.approx(0.1)
    lo, hi = testbed.ratio_interval([2.0, 2.2, 1.8], [1.0, 1.1, 0.9], np.random.default_rng(0))
    assert 1.6 < lo <= 2.0 <= hi < 2.5
    curve = testbed.curve({1: rows([0.1, 0.3]), 2: rows([0.3, 0.5])}, "eval/em", "x", start=0.0)
    assert list(curve.x) == [0.0, 2.0, 4.0] and np.allclose(curve.y, [0.0, 0.2, 0.4])
    assert np.allclose(np.asarray(curve.high) - curve.y, [0.0, np.sqrt(0.02), np.sqrt(0.02)])


def test_report_gives_each_dialect_its_own_warm_start_and_threshold(testbed, tmp_path):
    """The plan arms start from the plan warm start: their threshold (its EM + 0.10) and steps count from it, and
    ``plan`` is also compared with ``plan_dialect``, once."""
    warm = {"em": 0.0, "answered": 1.0, "valid_tag_rate": 1.0, "truncated": 0.0, "searches": 2.0}
    validity = {"ig_validity_after": {"win_rate": 0.8}, "ig_validity_before": {"win_rate": 0.5}}
    warms = {"search-r1": {"eval": warm, **validity}, "plan": {"eval": dict(warm, em=0.2)}}
    results = {"outcome": {1: rows([0.1, 0.1]), 2: rows([0.0, 0.1])},  # threshold 0.10: reached at step 2 and 4
               "plan_dialect": {1: rows([0.25, 0.3]), 2: rows([0.2, 0.2])},  # threshold 0.30: step 4, censored
               "plan": {1: rows([0.3, 0.3]), 2: rows([0.2, 0.35])}}  # step 2 and 4
    args = testbed.parse(["--arms", "outcome", "plan_dialect", "plan", "--normalisers", "std", "--seeds", "2"])
    text = testbed.report(args, results, warms, tmp_path, None)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["thresholds"] == {"outcome": 0.1, "plan_dialect": 0.3, "plan": 0.3}
    assert saved["arms"]["outcome"]["steps_to_threshold"]["values"] == [2.0, 4.0]
    assert saved["arms"]["plan_dialect"]["steps_to_threshold"]["values"] == [4.0, 4.0]
    assert saved["arms"]["plan_dialect"]["reached"]["values"] == [1.0, 0.0]
    assert saved["arms"]["plan"]["steps_to_threshold"]["values"] == [2.0, 4.0]
    assert set(saved["paired"]) == {"plan_dialect", "plan", "plan vs plan_dialect"}
    assert saved["paired"]["plan vs plan_dialect"]["mean_difference"] == pytest.approx(0.075)  # (0 + 0.15) / 2
    assert "(plan dialect's arms: 0.300)" in text and "(its warm start + 0.10)" in text
    # with plan as the baseline the plan/plan_dialect pair is printed once
    args = testbed.parse(["--arms", "plan", "plan_dialect", "--normalisers", "std", "--seeds", "2"])
    testbed.report(args, {k: results[k] for k in ("plan", "plan_dialect")}, warms, tmp_path, None)
    assert set(json.loads((tmp_path / "results.json").read_text())["paired"]) == {"plan_dialect"}


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


TINY = ["--tiny", "--seeds", "1", "--eval-questions", "4", "--questions-per-step", "2", "--group-size", "2",
        "--gate-questions", "4", "--gate-draws", "2", "--validity-questions", "4"]


def run_testbed(tmp_path, *extra, code=0):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}  # two threads on two shared cores can be many times slower
    cmd = [sys.executable, str(SCRIPT), *TINY, "--output-dir", str(tmp_path), "--warm-args",
           f"--output {tmp_path / 'warm'}", *extra]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == code, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_smoke_gate_only_writes_its_figures_and_a_failed_gate_stops_the_study(tmp_path):
    result = run_testbed(tmp_path, "--gate-only")
    gate = json.loads((tmp_path / "gate.json").read_text())
    assert set(gate["arms"]) == {"ig", "subanswer"} and gate["questions"] == 4 and gate["group_size"] == 2
    # replaying a rollout with its own draw seed gives its IG again, up to fp32 noise (no search lost: not inf);
    # both are NaN when no rollout scored a search (the tiny model may not search)
    largest, match = gate["replay_max_difference"], gate["replay_match"]
    assert (largest < 1e-4 and match > 0.5) or (np.isnan(largest) and np.isnan(match)), (largest, match)
    for figures in gate["arms"].values():
        assert {"draw_noise_sd", "within_group_sd", "all_failed_differ", "bridge_hop", "answer_hop"} <= set(figures)
        assert set(figures["advantage_shares"]) == {"grpo_std", "dr_grpo"}
        assert figures["passed"] == all(figures["checks"].values())
    assert "| draw noise sd (nats/token) |" in (tmp_path / "gate.md").read_text()
    assert result.stdout.strip().splitlines()[-2].startswith("gate ")
    assert not (tmp_path / "runs" / "outcome_s1").exists()
    if not gate["passed"]:  # the tiny model cannot search: its gate fails, and the study refuses to run
        stopped = run_testbed(tmp_path, "--total-steps", "1", code=1)
        assert "the gate failed" in stopped.stderr and not (tmp_path / "runs" / "outcome_s1").exists()


def test_smoke_study_runs_every_arm_and_normaliser_aggregates_and_reruns_from_its_runs(tmp_path):
    extra = ["--total-steps", "2", "--eval-every", "1", "--learning-rate", "1e-3", "--ignore-gate"]
    result = run_testbed(tmp_path, *extra)
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("IG - outcome (GRPO std): final held-out EM ") and "sign test" in last
    assert "step time x" in last and "(IG-Search paper: x1.064)" in last
    runs = tmp_path / "runs"
    for name, weight, norm, credit, scale in (("outcome", 0.0, "none", "step", True), ("ig", 0.3, "turn", "step", True),
                                              ("subanswer", 0.3, "turn", "sub-answer", True),
                                              ("outcome-dr", 0.0, "none", "step", False),
                                              ("ig-dr", 0.3, "turn", "step", False),
                                              ("subanswer-dr", 0.3, "turn", "sub-answer", False)):
        run = runs / f"{name}_s1"
        args = json.loads((run / "args.json").read_text())
        assert (args["ig_weight"], args["ig_credit"], args["scale_rewards"], args["hops"]) == (weight, credit, scale,
                                                                                               "2,3"), name
        assert args["ig_norm"] == norm and args["warm_questions"] == 16 and args["shared_draws"]
        metrics = read(run / "metrics.csv")
        assert [int(r["step"]) for r in metrics] == [1, 2]
        assert all(r["eval/truncated"] != "" and r["train/all_failed_groups"] != "" for r in metrics)
        log = (run / "stdout.log").read_text()
        assert (f"IG on (weight {weight:g})" if weight else "IG off (weight 0)") in log
        assert weight or not any(float(r["ig/n_steps"]) for r in metrics)
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["arms"]) == {"outcome", "ig", "subanswer", "outcome-dr", "ig-dr", "subanswer-dr"}
    assert set(results["paired"]) == {"ig", "subanswer", "ig-dr", "subanswer-dr"} and results["gate"] is not None
    assert results["threshold"] == pytest.approx(results["warm_start"]["eval"]["em"] + 0.1)
    assert (tmp_path / "ig_testbed.png").stat().st_size > 0
    table = (tmp_path / "results.md").read_text()
    assert "| outcome only (--ig-weight 0), GRPO std |" in table and "| outcome + per-turn IG" in table
    assert "sub-answer - outcome (Dr. GRPO): final held-out EM" in table

    again = run_testbed(tmp_path, *extra)
    assert again.stdout.count("done before") == 6 and "(cached)" in again.stdout
    assert again.stdout.strip().splitlines()[-1] == last


def test_self_distillation_arms_run_in_the_testbed_and_are_compared_with_the_first(tmp_path):
    """--arms: the self-distillation arms (grpo_ig.py's --distill options) beside outcome, at a tiny budget; without
    an IG arm no gate is needed."""
    # sibling's default is the paper's separate rounds, every 5th step: a 1-step run distils at --distill-every 1
    result = run_testbed(tmp_path, "--total-steps", "1", "--eval-every", "1", "--arms", "outcome", "hindsight",
                         "sibling", "--normalisers", "std", "--grpo-args", "--distill-every 1")
    for arm, kind in (("outcome", "none"), ("hindsight", "hindsight"), ("sibling", "sibling")):
        args = json.loads((tmp_path / "runs" / f"{arm}_s1" / "args.json").read_text())
        assert args["distill"] == kind and args["ig_weight"] == 0.0
        assert ("loss/distill" in read(tmp_path / "runs" / f"{arm}_s1" / "metrics.csv")[0]) == (kind != "none")
    assert not (tmp_path / "runs" / "ig_s1").exists() and not (tmp_path / "gate.json").exists()
    lines = result.stdout.strip().splitlines()
    assert lines[-1].startswith("hindsight - outcome (GRPO std): ") and any(
        line.startswith("sibling - outcome (GRPO std): ") for line in lines
    )
    table = (tmp_path / "results.md").read_text()
    assert "| outcome + hindsight JSD (--distill hindsight; own attempt left out), GRPO std |" in table
    assert "| outcome + sibling KL (--distill sibling; separate rounds, every 5th step), GRPO std |" in table


def test_plan_arms_start_from_their_own_plan_dialect_warm_start_and_are_compared_with_each_other(tmp_path):
    """--arms plan_dialect plan: Plan Before Search's dialect, alone and with its plan-aware reward, from a warm start
    in the plan dialect (its own folder), at a tiny budget; ``plan`` is compared with ``outcome`` and with
    ``plan_dialect`` (the reward alone)."""
    result = run_testbed(tmp_path, "--total-steps", "1", "--eval-every", "1", "--arms", "outcome", "plan_dialect",
                         "plan", "--normalisers", "std")
    plan_warm = json.loads((tmp_path / "warm-plan" / "warm_start.json").read_text())
    assert plan_warm["args"]["dialect"] == "plan" and (tmp_path / "warm" / "warm_start.json").exists()
    expected = (("outcome", 0.0, "search-r1", "warm"), ("plan_dialect", 0.0, "plan", "warm-plan"),
                ("plan", 0.3, "plan", "warm-plan"))
    for arm, weight, dialect, model in expected:
        args = json.loads((tmp_path / "runs" / f"{arm}_s1" / "args.json").read_text())
        assert (args["dialect"], args["plan_weight"], Path(args["model"]).name) == (dialect, weight, model)
        assert args["max_new_tokens"] == (40 if dialect == "plan" else 12)
    lines = result.stdout.strip().splitlines()
    assert lines[-1].startswith("plan dialect - outcome (GRPO std): ")
    assert any(line.startswith("plan + plan reward - plan dialect (GRPO std): ") for line in lines)
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["paired"]) == {"plan_dialect", "plan", "plan vs plan_dialect"}
    assert set(results["warm_starts"]) == {"search-r1", "plan"} and not (tmp_path / "gate.json").exists()


def test_advantage_shares_hand_computed(study):
    """One all-failed group of two rollouts, one with an invalid turn (reward -0.1), IG credit 1 and 0 on a 2-token
    query of a 3-token turn. GRPO: format advantages ±0.7071 on 3 tokens each; per-turn IG z-scores ±0.7071 (std
    0.7071 > floor 0.6) times 0.3 on 2 tokens each: IG's share 1.2 / 7.2. Dr. GRPO: format ±0.05, IG unchanged."""
    from search_env.training.credit import Trajectory

    trajectories = []
    for reward in (0.0, -0.1):
        trajectories.append(Trajectory([1, 2], group="g", reward=reward))
        trajectories[-1].add_policy([3, 4, 5], query_span=(0, 2), ig=0.0)
    episodes = [{"em": 0.0}, {"em": 0.0}]
    grpo = study.gate.advantage_shares(trajectories, episodes, [{0: 1.0}, {0: 0.0}], 0.3, scale=True)
    assert grpo == pytest.approx({"ig_share": 1 / 6, "outcome_share": 0.0, "format_share": 5 / 6}, rel=1e-4)
    dr = study.gate.advantage_shares(trajectories, episodes, [{0: 1.0}, {0: 0.0}], 0.3, scale=False)
    ig = 1.2 * np.sqrt(0.5)
    assert dr == pytest.approx({"ig_share": ig / (ig + 0.3), "outcome_share": 0.0, "format_share": 0.3 / (ig + 0.3)},
                               rel=1e-4)
