"""benchmarks/ig_testbed.py: its aggregation on hand-made runs, and the whole study as one command at a tiny budget."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.scripts import imported  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "ig_testbed.py"


@pytest.fixture(scope="module")
def testbed():
    with imported("benchmarks/ig_testbed.py") as module:
        yield module


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


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_smoke_study_runs_both_arms_aggregates_and_reruns_from_its_runs(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}  # two threads on two shared cores can be many times slower
    cmd = [sys.executable, str(SCRIPT), "--tiny", "--seeds", "1", "--total-steps", "2", "--eval-every", "1",
           "--eval-questions", "4", "--questions-per-step", "2", "--group-size", "2", "--output-dir", str(tmp_path),
           "--warm-args", f"--output {tmp_path / 'warm'}", "--learning-rate", "1e-3"]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("IG / outcome: steps to held-out EM >= ") and "final held-out EM" in last and "(n=1)" in last
    runs = tmp_path / "runs"
    for arm, weight in (("outcome", 0.0), ("ig", 0.3)):
        for seed in (1,):
            run = runs / f"{arm}_s{seed}"
            assert json.loads((run / "args.json").read_text())["ig_weight"] == weight
            assert json.loads((run / "args.json").read_text())["hops"] == "2,3"
            metrics = read(run / "metrics.csv")
            assert [int(r["step"]) for r in metrics] == [1, 2]
            assert all(r["eval/truncated"] != "" and r["train/all_failed_groups"] != "" for r in metrics)
            log = (run / "stdout.log").read_text()
            assert (f"IG on (weight {weight:g})" if weight else "IG off (weight 0)") in log
            assert weight or not any(float(r["ig/n_steps"]) for r in metrics)
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["arms"]) == {"outcome", "ig"} and len(results["arms"]["ig"]["final_em"]["values"]) == 1
    assert results["threshold"] == pytest.approx(results["warm_start"]["eval"]["em"] + 0.1)
    assert (tmp_path / "ig_testbed.png").stat().st_size > 0
    table = (tmp_path / "results.md").read_text()
    assert "| outcome only (--ig-weight 0) |" in table and "| outcome + IG" in table

    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert again.stdout.count("done before") == 2 and "(cached)" in again.stdout
    assert again.stdout.strip().splitlines()[-1] == last


def test_self_distillation_arms_run_in_the_testbed_and_are_compared_with_the_first(tmp_path):
    """--arms: the self-distillation arms (grpo_ig.py's --distill options) beside outcome, at a tiny budget."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(SCRIPT), "--tiny", "--seeds", "1", "--total-steps", "1", "--eval-every", "1",
           "--eval-questions", "4", "--questions-per-step", "2", "--group-size", "2", "--output-dir", str(tmp_path),
           "--warm-args", f"--output {tmp_path / 'warm'}", "--arms", "outcome", "hindsight", "sibling"]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for arm, kind in (("outcome", "none"), ("hindsight", "hindsight"), ("sibling", "sibling")):
        args = json.loads((tmp_path / "runs" / f"{arm}_s1" / "args.json").read_text())
        assert args["distill"] == kind and args["ig_weight"] == 0.0
        assert ("loss/distill" in read(tmp_path / "runs" / f"{arm}_s1" / "metrics.csv")[0]) == (kind != "none")
    assert not (tmp_path / "runs" / "ig_s1").exists()
    lines = result.stdout.strip().splitlines()
    assert lines[-1].startswith("hindsight / outcome: ") and any(
        line.startswith("sibling / outcome: ") for line in lines
    )
    table = (tmp_path / "results.md").read_text()
    assert "| outcome + hindsight JSD (--distill hindsight) |" in table and "| outcome + sibling KL" in table
