"""examples/trl_grpo.py: a tiny-budget run of the script as a user runs it (TRL's GRPOTrainer, the search tools)."""

import json
import os
import subprocess
import sys

import pytest

from tests.scripts import ROOT

pytest.importorskip("trl")
pytest.importorskip("datasets")

EXAMPLE = ROOT / "examples" / "trl_grpo.py"


def test_two_grpo_steps_with_a_tiny_random_model(tmp_path):
    """Two real GRPOTrainer steps on CPU (~1 min, most of it importing TRL); the random model makes no tool
    calls, so the rewards are 0: this checks the script's wiring (template, dataset, factory, config, summary)."""
    cmd = [sys.executable, str(EXAMPLE), "--model", "tiny-random", "--max-steps", "2", "--num-generations", "2",
           "--batch-size", "2", "--max-completion-length", "32", "--max-tool-calls", "2", "--limit", "4",
           "--ig-weight", "0.1", "--output-dir", str(tmp_path)]
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))  # this checkout's package
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": pythonpath, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps"] == 2 and len(summary["reward"]) == len(summary["tool_calls"]) == 2
    assert "step 1: reward +0.000" in proc.stdout and "step 2: reward" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1].startswith("2 GRPO steps; summary in ")
