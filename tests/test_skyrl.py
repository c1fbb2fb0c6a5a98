"""search_env.integrations.skyrl: the env through the real skyrl-gym 0.4.0's own make/init/step, and the
advantage estimator on hand-computed values (no SkyRL needed for it)."""

import json

import numpy as np
import pytest

from search_env.info_gain import DeferredIG
from search_env.integrations import skyrl as adapter


def estimator_case():
    mask = np.array([[1, 1, 0, 0, 1, 1, 1, 0, 0, 0],
                     [1, 1, 1, 0, 0, 0, 0, 0, 0, 0],
                     [1, 0, 1, 1, 0, 1, 0, 0, 0, 0],
                     [1, 1, 0, 1, 0, 0, 0, 0, 0, 0]])
    rewards = np.zeros(mask.shape)
    rewards[0, 1], rewards[0, 6] = 0.3, 1.0  # an IG turn, then the outcome
    rewards[1, 2] = 0.0  # one turn, outcome 0
    rewards[2, 0], rewards[2, 3], rewards[2, 5] = -0.2, 0.1, 1.0
    rewards[3, 1], rewards[3, 3] = 0.05, 1.0
    a = 0.5 / (np.sqrt(0.5) + 1e-6)  # group "a": outcomes 1 and 0; group "b": 1 and 1 (advantage 0)
    expected = np.zeros(mask.shape)
    expected[0, 0:2], expected[0, 4:7] = a + 0.3, a
    expected[1, 0:3] = -a
    expected[2, 0], expected[2, 2:4], expected[2, 5] = -0.2, 0.1, 0.0
    expected[3, 0:2], expected[3, 3] = 0.05, 0.0
    return rewards, mask, np.array(["a", "a", "b", "b"]), expected


def test_estimator_by_hand():
    rewards, mask, index, expected = estimator_case()
    advantages, returns = adapter.ig_advantage(rewards, mask, index)
    assert np.allclose(advantages, expected, atol=1e-12) and np.array_equal(advantages, returns)
    half, _ = adapter.ig_advantage(rewards, mask, index, ig_weight=0.5)
    assert half[0, 0] == pytest.approx(expected[0, 4] + 0.15) and half[2, 0] == pytest.approx(-0.1)
    centred, _ = adapter.ig_advantage(rewards, mask, index, norm_adv_by_std_in_grpo=False, epsilon=0.0)
    assert centred[0, 4] == pytest.approx(0.5) and centred[1, 0] == pytest.approx(-0.5)
    assert (advantages[mask == 0] == 0).all()
    with pytest.raises(ValueError, match="same"):
        adapter.ig_advantage(rewards[:, :5], mask, index)


def test_estimator_on_tensors_keeps_their_kind():
    torch = pytest.importorskip("torch")
    rewards, mask, index, expected = estimator_case()
    advantages, _ = adapter.ig_advantage(torch.tensor(rewards, dtype=torch.float32), torch.tensor(mask), index)
    assert advantages.dtype == torch.float32 and torch.allclose(advantages, torch.tensor(expected, dtype=torch.float32))


def test_dataset_rows():
    rows = adapter.dataset_rows(limit=3, max_turns=5)
    assert len(rows) == 3 and json.loads(json.dumps(rows)) == rows
    row = rows[0]
    assert row["env_class"] == "search_env" and row["max_turns"] == 5
    assert row["prompt"][0]["role"] == "user" and row["extra_info"]["question"] in row["prompt"][0]["content"]
    assert row["reward_spec"]["ground_truth"]["target"] and row["extra_info"]["question_id"]


skyrl_gym = pytest.importorskip("skyrl_gym")


@pytest.fixture
def made(fake_scorer):
    adapter.register()

    def make(row=None, **config):
        row = row or adapter.dataset_rows(limit=1)[0]
        env_config = {"scorer": fake_scorer, "ig": {"n_random": 2}, **config}
        return skyrl_gym.make("search_env", env_config=env_config, extras={k: v for k, v in row.items() if k != "prompt"}), row

    return make


def test_real_steps_through_skyrl_gym(made):
    env, row = made()
    assert isinstance(env, skyrl_gym.envs.base_text_env.BaseTextEnv) and "search_env" in skyrl_gym.registry
    prompt, meta = env.init(row["prompt"])
    assert prompt == row["prompt"] and meta["question_id"] == row["extra_info"]["question_id"]
    from search_env import build_world

    gold = build_world().questions.get(row["extra_info"]["question_id"]).metadata["supporting_titles"][0]
    out = env.step(f"<think>find it</think><search> {gold} </search>")
    assert not out["done"] and len(out["observations"]) == 1 and out["observations"][0]["role"] == "user"
    assert "<information>" in out["observations"][0]["content"]
    meta = out["metadata"]
    assert meta["action_type"] == "search" and meta["ig"] is not None
    assert out["reward"] == pytest.approx(0.3 * float(np.clip(meta["ig"], -1, 1)))
    json.dumps(meta)
    out = env.step("no tags at all")
    assert out["reward"] == pytest.approx(-0.1) and not out["done"] and out["metadata"]["action_type"] == "invalid"
    answer = row["reward_spec"]["ground_truth"]["target"][0]
    out = env.step(f"<answer> {answer} </answer>")
    assert out["done"] and out["observations"] == [] and out["reward"] == 1.0 and out["metadata"]["em"] == 1.0
    metrics = env.get_metrics()
    assert metrics == {"em": 1.0, "f1": 1.0, "answered": 1.0, "truncated": 0.0, "searches": 1.0, "invalid": 1.0,
                       "ig_steps": 1.0, "ig_mean": pytest.approx(meta["ig"])}
    assert type(env).aggregate_metrics([metrics, {**metrics, "em": 0.0}])["em"] == 0.5


def test_cut_off_episode_gets_no_outcome_and_deferred_requests_ride_in_metadata(made):
    env, row = made(ig={"deferred": True}, max_turns=2)
    env.init(None)
    out = env.step(f"<search> {row['extra_info']['question']} </search>")
    request = DeferredIG.from_dict(json.loads(json.dumps(out["metadata"]["ig_request"])))
    assert out["metadata"]["ig"] is None and out["reward"] == 0.0 and len(request.pairs) == 4
    out = env.step("<search> more </search>")
    assert out["done"] and out["reward"] == 0.0 and env.get_metrics()["truncated"] == 1.0


def test_settings_from_the_environment_and_bad_rows(made, monkeypatch):
    monkeypatch.setenv(adapter.SETTINGS_VARIABLE, json.dumps({"topk": 1, "max_turns": 3}))
    env, _ = made()
    assert env.env.topk == 1 and env.max_turns == 3
    with pytest.raises(ValueError, match="unknown search_env settings"):
        made(row={**adapter.dataset_rows(limit=1)[0], "search_env": {"topK": 2}})
    with pytest.raises(ValueError, match="extra_info.question"):
        made(row={"env_class": "search_env", "reward_spec": {"ground_truth": {"target": ["x"]}}})
