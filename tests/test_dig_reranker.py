"""benchmarks/dig_reranker.py: its bootstrap by hand, and the whole study as one command at a tiny budget, rerun from
its DIG label cache."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.scripts import imported
from tests.shared_data import shared_data

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "dig_reranker.py"


def test_auc_with_interval_pools_pairs_and_resamples_questions():
    rows = [
        {"question_id": "a", "gold": True, "bm25": 1.0, "trained": 3.0},
        {"question_id": "a", "gold": False, "bm25": 2.0, "trained": 1.0},
        {"question_id": "b", "gold": True, "bm25": 5.0, "trained": 2.0},
        {"question_id": "b", "gold": False, "bm25": 4.0, "trained": 1.0},
        {"question_id": "b", "gold": False, "bm25": 6.0, "trained": 0.0},
        {"question_id": "c", "gold": True, "bm25": 1.0, "trained": 1.0},  # no non-gold passage: left out
    ]
    with imported("benchmarks/dig_reranker.py") as bench:
        out = bench.auc_with_interval(rows, ["bm25", "trained"], draws=500, seed=0)
    assert out["questions"] == 2 and out["pairs"] == 3
    assert out["bm25"]["auc"] == pytest.approx(1 / 3) and out["trained"]["auc"] == 1.0
    lo, hi = out["bm25"]["interval"]
    assert lo == pytest.approx(0.0) and hi == pytest.approx(0.5)  # resamples: a only 0, b only 1/2, mixed 1/3
    assert out["trained"]["interval"] == [1.0, 1.0] and out["trained"]["minus_bm25"][0] == pytest.approx(0.5)
    assert "minus_bm25" not in out["bm25"]  # each key against the ones before it only


@pytest.mark.slow
def test_smoke_study_end_to_end_and_rerun_from_the_label_cache(tmp_path):
    data = shared_data("hotpotqa_train_hipporag100").parent
    shared_data("hotpotqa_dev_migres200")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(SCRIPT), "--data", str(data), "--out", str(tmp_path), "--sets", "hotpotqa",
           "--train-limit", "2", "--train-topk", "2", "--dev-limit", "3", "--dev-topk", "3", "--epochs", "1",
           "--bootstrap", "50"]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1].startswith("trained / BM25 AUC: hotpotqa ")
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["train"]["hotpotqa"]["questions"] == 2 and results["train"]["hotpotqa"]["rows"] == 4
    dev = results["dev"]["hotpotqa"]
    for key in ("bm25", "untrained", "trained"):
        lo, hi = dev[key]["interval"]
        assert 0.0 <= lo <= dev[key]["auc"] <= hi <= 1.0
    assert len(results["losses"]) == 1 and np.isfinite(results["losses"][0])
    cache = tmp_path / "hotpotqa.dig.jsonl"
    header, *rows = [json.loads(line) for line in cache.read_text().splitlines()]
    assert header["settings"]["confidence"] == "infogain" and len(rows) == 4
    before = cache.read_bytes()

    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert cache.read_bytes() == before  # every label came from the cache
    assert json.loads((tmp_path / "results.json").read_text())["dev"] == results["dev"]
