"""benchmarks/gpu_ig_run.py at a tiny budget on the CPU: warm start from a base model, both arms, the report; and
the deadline, which stops the arms and still reports."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.scripts import imported

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_ig_run.py"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
       "OMP_NUM_THREADS": "1"}


def run(tmp_path, *flags):
    result = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--output-dir", str(tmp_path), *flags],
                            capture_output=True, text=True, env=ENV, timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout.strip().splitlines(), json.loads((tmp_path / "results.json").read_text())


@pytest.mark.slow
def test_tiny_run_trains_both_arms_from_the_warm_started_base_model(tmp_path):
    lines, results = run(tmp_path)
    assert lines[-1].startswith("IG / outcome: final held-out EM ") and "of the IG arm's step time" in lines[-1]
    warm = results["warm_start"]
    assert (
        warm["args"]["base_model"] == "tiny-random" and warm["vocab_size"] > 40_000
    )  # SmolLM2's tokenizer, not the world's
    assert results["ended"] == {"outcome": "finished", "ig": "finished"}
    for arm, weight in (("outcome", 0), ("ig", 0.3)):
        summary = results["arms"][arm]
        assert summary["steps"] == 2 and [e[0] for e in summary["evals"]] == [1, 2]
        assert set(summary["seconds"]) == {"generate", "retrieve", "ig", "logprob", "update", "step"}
        assert json.loads((tmp_path / "runs" / arm / "args.json").read_text())["ig_weight"] == weight
        assert json.loads((tmp_path / "runs" / arm / "args.json").read_text())["model"] == str(tmp_path / "warm")


@pytest.mark.slow
def test_deadline_stops_the_arms_and_still_reports(tmp_path):
    lines, results = run(tmp_path, "--time-limit", "1")  # the warm start alone outlasts it
    assert results["ended"] == {"outcome": "stopped at the deadline", "ig": "stopped at the deadline"}
    assert lines[-1] == "IG / outcome: no step timed in both arms"


def test_arm_summary_leaves_out_evaluation_and_checkpoint_time():
    with imported("benchmarks/gpu_ig_run.py") as module:
        rows = [{"step": 1.0, "time/step": 3.0, "time/generate": 1.0, "time/ig": 0.5, "train/em": 0.0},
                {"step": 2.0, "time/step": 9.0, "time/generate": 2.0, "time/ig": 1.5, "time/eval": 4.0,
                 "time/checkpoint": 1.0, "eval/em": 0.25, "eval/answered": 1.0, "eval/searches": 2.0, "train/em": 1.0}]
        summary = module.arm_summary(rows)
        assert summary["seconds"]["step"] == pytest.approx(3.5) and summary["seconds"]["ig"] == pytest.approx(1.0)
        assert summary["seconds"]["retrieve"] == 0.0 and summary["evals"] == [(2, 0.25, 1.0, 2.0)]
        assert summary["steps"] == 2 and summary["train_em_last10"] == 0.5
        assert module.arm_summary([]) == {"steps": 0, "evals": [], "seconds": {}}
