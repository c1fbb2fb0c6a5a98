"""stable-baselines3 on the numeric view: check_env, a short PPO run, the potential-shaping arm's env, and a smoke
run of examples/sb3_ablation.py.

Fast and offline: ig=False or a fake scorer, the bundled model is never loaded."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("stable_baselines3")

from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.env_checker import check_env  # noqa: E402

from search_env.data.qa import QADataset  # noqa: E402
from search_env.data.synthetic import build_world  # noqa: E402
from search_env.env import SearchQAEnv  # noqa: E402
from search_env.wrappers import OutcomeOnly, OutcomePlusIG  # noqa: E402
from search_env.wrappers.numeric import NumericSearchView  # noqa: E402
from tests.scripts import imported  # noqa: E402

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


def _mean_return(env, act, passes=1):
    """Mean return of ``act(obs) -> action`` over every question of ``env``, ``passes`` times."""
    n, total = len(env.unwrapped.questions), 0.0
    for _ in range(passes):
        for i in range(n):
            obs, _ = env.reset(options={"index": i})
            done = False
            while not done:
                obs, reward, terminated, truncated, _ = env.step(int(act(obs)))
                total, done = total + reward, terminated or truncated
    return total / (passes * n)


@pytest.mark.parametrize(
    "learning_rate", [3e-4, pytest.param(0.0, marks=pytest.mark.xfail(strict=True, reason="no learning"))]
)
def test_ppo_learns_a_few_hundred_steps(world, fake_scorer, one_thread, learning_rate):
    """640 PPO steps teach the greedy policy what a uniformly random one does not know, above all not to waste
    turns on empty candidate slots (invalid turns, -0.1 each): its mean return on the training questions goes
    from about the random policy's (-0.33) to 0 or more. With ``learning_rate=0`` the same check fails."""
    def make_env(scorer):
        return NumericSearchView(OutcomePlusIG(SearchQAEnv(questions=_questions(world), corpus=world.corpus,
                                                           scorer=scorer, max_turns=4), 0.2, ig_clip=1.0))

    env, eval_env = make_env(fake_scorer), make_env(type(fake_scorer)())
    rng = np.random.default_rng(0)
    random_return = _mean_return(eval_env, lambda obs: rng.integers(eval_env.action_space.n), passes=5)
    model = PPO(
        "MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=2, learning_rate=learning_rate, seed=0, device="cpu"
    )

    def greedy(obs):
        return model.predict(obs, deterministic=True)[0]

    before = _mean_return(eval_env, greedy)
    model.learn(total_timesteps=640)
    after = _mean_return(eval_env, greedy)
    assert model.num_timesteps >= 640 and fake_scorer.calls > 0
    assert after > random_return + 0.2 and after > before + 0.2, (random_return, before, after)


@pytest.fixture(scope="module")
def ex():
    with imported("examples/sb3_ablation.py") as module:
        yield module


class LengthScorer:
    """Deterministic scores that differ from context to context (and are never 0), for Φ."""

    def score(self, contexts, answers):
        return np.array([-(len(c) % 97) / 10 - 0.05 for c in contexts])


def test_potential_arm_env_telescopes_under_the_numeric_view(ex):
    """The example's ``outcome+ig-potential`` env passes check_env, and on random episodes (answers, searches,
    empty slots, cut-offs) its return is the outcome env's minus ``ig_weight * Φ(s0)``, episode by episode."""
    args = ex.Args(n_questions=6, n_heldout=4, ig_weight=0.3)
    train, _ = ex.questions(args)
    check_env(ex.make_env(args, train, "outcome+ig-potential", LengthScorer()))
    shaped, plain = (
        ex.make_env(args, train, "outcome+ig-potential", LengthScorer()),
        ex.make_env(args, train, "outcome"),
    )
    rng, endings = np.random.default_rng(0), set()
    for episode in range(40):
        _, info = shaped.reset(options={"index": episode % 6})
        plain.reset(options={"index": episode % 6})
        phi0, totals, done = info["logp_start"], [0.0, 0.0], False
        assert phi0 != 0
        while not done:
            action = int(rng.integers(shaped.action_space.n))
            _, r_shaped, terminated, truncated, info = shaped.step(action)
            _, r_plain, *_ = plain.step(action)
            totals[0] += r_shaped
            totals[1] += r_plain
            done = terminated or truncated
        endings.add("cut off" if info.get("turn_limit") else info["action_type"])
        assert totals[0] == pytest.approx(totals[1] - 0.3 * phi0, abs=1e-9)
    assert "answer" in endings and "cut off" in endings


def test_the_arms_reward_streams_differ_under_the_fake_scorer(ex):
    """The same actions in the three arms' envs, with the example's fake scorer: the episodes are the same, the
    rewards are not; the IG arm's reward is the outcome arm's plus ``ig_weight * clip(IG)`` on each search, and the
    fake IG differs from search to search."""
    args = ex.Args(n_questions=6, n_heldout=4, scorer="fake")
    train, _ = ex.questions(args)
    envs = {arm: ex.make_env(args, train, arm, ex.make_scorer(args)) for arm in ex.ARMS}
    rng, streams, igs = np.random.default_rng(0), {arm: [] for arm in ex.ARMS}, []
    for episode in range(30):
        for env in envs.values():
            env.reset(options={"index": episode % 6})
        done = False
        while not done:
            action = int(rng.integers(envs["outcome"].action_space.n))
            steps = {arm: env.step(action) for arm, env in envs.items()}
            for arm, (_, reward, *_) in steps.items():
                streams[arm].append(reward)
            assert len({(s[2], s[3], s[4]["action_type"]) for s in steps.values()}) == 1  # the same episode
            _, reward, terminated, truncated, info = steps["outcome+ig"]
            ig_term = 0.0 if info.get("ig") is None else args.ig_weight * float(np.clip(info["ig"], -args.ig_clip,
                                                                                        args.ig_clip))
            assert reward == pytest.approx(steps["outcome"][1] + ig_term, abs=1e-12)
            igs += [info["ig"]] if info.get("ig") is not None else []
            done = terminated or truncated
    assert len(igs) >= 8 and len({round(ig, 6) for ig in igs}) > len(igs) // 2  # IG differs by query
    outcome, ig, potential = (np.array(streams[arm]) for arm in ex.ARMS)
    assert not np.array_equal(outcome, ig) and not np.array_equal(outcome, potential)
    assert not np.array_equal(ig, potential)


@pytest.mark.parametrize("terminal", [True, False])
def test_cut_off_episodes_are_bootstrapped_by_sb3_only_when_truncated(ex, terminal):
    """SB3 adds gamma * V(last obs) to the last reward where ``TimeLimit.truncated``; the example's default
    (``TurnLimitAsTerminal``) ends at the turn limit with a termination, so no such bonus."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    args = ex.Args(n_questions=2, n_heldout=1, turn_limit_terminal=terminal)
    train, _ = ex.questions(args)
    venv = DummyVecEnv([lambda: ex.make_env(args, train, "outcome")])
    venv.reset()
    for turn in range(args.max_turns):
        _, _, dones, infos = venv.step(np.array([0]))  # search the question, every turn
        assert dones[0] == (turn == args.max_turns - 1)
    assert infos[0]["TimeLimit.truncated"] is (not terminal) and infos[0].get("turn_limit", False) is terminal


def ex_arms():
    return ["outcome", "outcome+ig", "outcome+ig-potential"]


def test_example_smoke(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, str(EXAMPLE), "--scorer", "fake", "--total-steps", "256", "--n-steps", "64",
           "--batch-size", "32", "--n-epochs", "2", "--eval-every", "128", "--n-questions", "6",
           "--n-heldout", "4", "--seeds", "2", "--torch-threads", "1", "--out-dir", str(out)]
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))  # this checkout's package
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT,  # ~30 s CPU; loaded: 90 s wall
                          env={**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": pythonpath})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (out / "curves.png").stat().st_size > 0
    with open(out / "curves.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["arm"] for r in rows} == {"outcome", "outcome+ig", "outcome+ig-potential"}
    assert {r["seed"] for r in rows} == {"0", "1"}
    returns = {arm: [r["train_return"] for r in rows if r["arm"] == arm and int(r["step"]) > 0] for arm in ex_arms()}
    assert len({tuple(v) for v in returns.values()}) == 3  # the fake scorer's IG makes the arms' returns differ
    for r in rows:
        for key in ("em", "answer_rate", "trunc_rate"):
            assert float(r[key]) * 6 == pytest.approx(round(float(r[key]) * 6))  # k of the 6 questions
        assert float(r["answer_rate"]) + float(r["trunc_rate"]) == pytest.approx(1.0)  # an episode ends one way
        assert float(r["em"]) <= float(r["answer_rate"])  # only an answer can be right
        assert 0 <= float(r["searches"]) <= 4  # at most max_turns
        if int(r["step"]) > 0:  # training episodes were played before each later evaluation
            assert 0 <= float(r["train_answer_rate"]) <= 1 and 0 <= float(r["train_searches"]) <= 4
    assert max(int(r["step"]) for r in rows) >= 256
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ig_requests"] > 0
    assert summary["ig_cache_hit_rate"] == pytest.approx(summary["ig_cache_hits"] / summary["ig_requests"])
    assert summary["ig_pairs_scored"] > 0 and summary["ig_disk_hits"] == 0  # the fake scorer has no disk cache
    assert [row["arm"] for row in summary["table"]] == ["outcome", "outcome+ig", "outcome+ig-potential"]
    for row in summary["table"]:
        last = [[r for r in rows if r["arm"] == row["arm"] and r["seed"] == str(seed)][-1] for seed in (0, 1)]
        for key in ("em", "answer_rate", "trunc_rate", "searches"):  # the table reports each run's last evaluation
            assert row[f"final_{key}"] == pytest.approx([float(r[key]) for r in last])
        assert all(em * 4 == pytest.approx(round(em * 4)) for em in row["heldout_em"])  # k of the 4 held out
    assert "final EM" in proc.stdout and "| truncation rate |" in proc.stdout
    last_lines = proc.stdout.strip().splitlines()[-2:]
    assert last_lines[0].startswith("outcome+ig vs outcome: final EM ")
    assert last_lines[1].startswith("outcome+ig-potential vs outcome: final EM ")
