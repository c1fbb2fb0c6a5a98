"""stable-baselines3 on the numeric view: check_env, a short PPO run, and a smoke run of examples/sb3_ablation.py.

Fast and offline: ig=False or a fake scorer, the bundled model is never loaded."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("stable_baselines3")

from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.env_checker import check_env  # noqa: E402

from search_env.data.qa import QADataset  # noqa: E402
from search_env.data.synthetic import build_world  # noqa: E402
from search_env.env import SearchQAEnv  # noqa: E402
from search_env.wrappers import NumericSearchView, OutcomeOnly, OutcomePlusIG  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "sb3_ablation.py"


@pytest.fixture(scope="module")
def world():
    return build_world(seed=0)


@pytest.fixture
def one_thread():
    """Tiny MLPs run far faster on one thread, above all on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _questions(world, n=8):
    return QADataset([q for q in world.questions if q.metadata["hops"] == 2][:n], name="two-hop")


def test_check_env_passes(world, fake_scorer):
    qs = _questions(world)
    check_env(NumericSearchView(OutcomeOnly(SearchQAEnv(questions=qs, corpus=world.corpus, ig=False))))
    check_env(NumericSearchView(OutcomePlusIG(SearchQAEnv(questions=qs, corpus=world.corpus, scorer=fake_scorer), 0.2)))


def test_ppo_learns_a_few_hundred_steps(world, fake_scorer, one_thread):
    env = NumericSearchView(OutcomePlusIG(SearchQAEnv(questions=_questions(world), corpus=world.corpus,
                                                      scorer=fake_scorer, max_turns=4), 0.2, ig_clip=1.0))
    model = PPO("MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=2, seed=0, device="cpu")
    model.learn(total_timesteps=320)
    assert model.num_timesteps >= 320
    assert fake_scorer.calls > 0
    obs, _ = env.reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    assert env.action_space.contains(int(action))


def test_example_smoke(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, str(EXAMPLE), "--scorer", "fake", "--total-steps", "256", "--n-steps", "64",
           "--batch-size", "32", "--n-epochs", "2", "--eval-every", "128", "--n-questions", "6",
           "--n-heldout", "4", "--seeds", "2", "--out-dir", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "MPLBACKEND": "Agg"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (out / "curves.png").stat().st_size > 0
    with open(out / "curves.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["arm"] for r in rows} == {"outcome", "outcome+ig"}
    assert {r["seed"] for r in rows} == {"0", "1"}
    assert all(0.0 <= float(r["em"]) <= 1.0 for r in rows)
    assert max(int(r["step"]) for r in rows) >= 256
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ig_requests"] > 0 and 0.0 <= summary["ig_cache_hit_rate"] <= 1.0
    assert all(0.0 <= em <= 1.0 for row in summary["table"] for em in row["final_em"] + row["heldout_em"])
    assert "final EM" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1].startswith("outcome+ig vs outcome: final EM ")
