"""search_env.integrations.skyrl: the env through the real skyrl-gym 0.4.0's own make/init/step, the advantage
estimator on hand-computed values, and the whole path through SkyRL's own code (skyrl 0.4.0 and skyrl-train 0.3.1):
its dataset, generator and agent loop with a scripted inference client, its batch layout and its estimator call."""

import asyncio
import contextlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
import types
import typing
from pathlib import Path

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
    centred, _ = adapter.ig_advantage(rewards, mask, index, grpo_norm_by_std=False, epsilon=0.0)
    assert centred[0, 4] == pytest.approx(0.5) and centred[1, 0] == pytest.approx(-0.5)
    assert (advantages[mask == 0] == 0).all()
    with pytest.raises(ValueError, match="same"):
        adapter.ig_advantage(rewards[:, :5], mask, index)


def test_estimator_finds_turns_by_their_rewards_when_the_mask_is_all_ones():
    # SkyRL's layout: response_mask is 1 on observations too; each turn's reward sits on its last token
    mask = np.array([[1] * 9, [0, 0] + [1] * 7])
    rewards = np.zeros(mask.shape)
    rewards[0, 1], rewards[0, 4], rewards[0, 8] = 0.2, adapter.TURN_MARK, 1.0  # IG turn, a turn with 0, outcome
    rewards[1, 3], rewards[1, 8] = 0.2, 0.0  # an IG turn, then a wrong answer: the module docstring's example
    a = 0.5 / (np.sqrt(0.5) + 1e-6)
    for flags in ({}, {"grpo_norm_by_std": True}, {"norm_adv_by_std_in_grpo": True}):
        advantages, _ = adapter.ig_advantage(rewards, mask, ["g", "g"], **flags)
        assert advantages[0].tolist() == pytest.approx([a + 0.2] * 2 + [a] * 7, abs=1e-12)
        assert advantages[1].tolist() == pytest.approx([0, 0] + [-a + 0.2] * 2 + [-a] * 5, abs=1e-12)
        assert np.round(advantages[:, [0, 8, 3]], 4).tolist() == [[0.9071, 0.7071, 0.7071], [0.0, -0.7071, -0.5071]]
    for flags in ({"grpo_norm_by_std": False}, {"norm_adv_by_std_in_grpo": False}):  # Dr. GRPO
        advantages, _ = adapter.ig_advantage(rewards, mask, ["g", "g"], **flags)
        assert np.allclose(advantages[:, [0, 8, 3]], [[0.7, 0.5, 0.5], [0.0, -0.5, -0.3]], atol=1e-6)
    with pytest.raises(ValueError, match="disagree"):
        adapter.ig_advantage(rewards, mask, ["g", "g"], grpo_norm_by_std=False, norm_adv_by_std_in_grpo=True)
    with pytest.raises(ValueError, match="use_kl_in_reward"):
        adapter.ig_advantage(rewards, mask, ["g", "g"], config=types.SimpleNamespace(use_kl_in_reward=True))


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
        extras = {k: v for k, v in row.items() if k != "prompt"}
        return skyrl_gym.make("search_env", env_config=env_config, extras=extras), row

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


def test_a_batch_shares_its_draws_and_the_next_batch_draws_fresh(made):
    """Two rollouts of a group made and started together by skyrl_gym, the same query at the same turn: identical
    IG; once the batch's envs are closed, the next batch draws other random passages."""
    row = adapter.dataset_rows(limit=1)[0]

    def batch(**config):
        envs = [made(row, **config)[0] for _ in range(2)]
        for env in envs:
            env.init(row["prompt"])
        metas = [env.step("<search> a river and a harbour </search>")["metadata"] for env in envs]
        for env in envs:
            env.close()
        return metas, [env.env.ig._records[0].random_blocks for env in envs]  # the random passages each drew

    (first, drawn) = batch()
    assert first[0]["doc_ids"] == first[1]["doc_ids"] and first[0]["ig"] == first[1]["ig"]
    assert first[0]["ig_detail"] == first[1]["ig_detail"] and drawn[0] == drawn[1]
    (second, drawn_next) = batch()
    assert second[0]["ig"] == second[1]["ig"] and drawn_next[0] == drawn_next[1] and drawn_next[0] != drawn[0]
    _, unshared = batch(ig={"n_random": 2, "shared_draws": False})
    assert unshared[0] != unshared[1]
    env, _ = made({**row, "draw_seed": 5})
    env.init(None)
    assert env.env.ig._draw_seed == 5


def test_cut_off_episode_gets_no_outcome_and_deferred_requests_ride_in_metadata(made):
    env, row = made(ig={"deferred": True}, max_turns=2)
    env.init(None)
    out = env.step(f"<search> {row['extra_info']['question']} </search>")
    request = DeferredIG.from_dict(json.loads(json.dumps(out["metadata"]["ig_request"])))
    assert out["metadata"]["ig"] is None and out["reward"] == adapter.TURN_MARK and len(request.pairs) == 4
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


# ------------------------------------------------------------------------------- through SkyRL's own code

RELEASES = {  # where each release keeps its generator, dataset, batch layout, estimators, config and trainer
    "skyrl": {"generator": "skyrl.train.generators.skyrl_gym_generator", "utils": "skyrl.train.generators.utils",
              "dataset": "skyrl.train.dataset.dataset", "preprocess": "skyrl.train.dataset.preprocess",
              "ppo_utils": "skyrl.backends.skyrl_train.utils.ppo_utils", "config": "skyrl.train.config",
              "trainer": "skyrl.train.trainer"},
    "skyrl_train": {"generator": "skyrl_train.generators.skyrl_gym_generator", "utils": "skyrl_train.generators.utils",
                    "dataset": "skyrl_train.dataset", "preprocess": "skyrl_train.dataset.preprocess",
                    "ppo_utils": "skyrl_train.utils.ppo_utils", "config": "skyrl_train.config",
                    "trainer": "skyrl_train.trainer"},
}
CPU_STUBS = ("ray", "pybase64")  # Ray (driver-side registry actor, workers) and a C base64 codec: not used on this path


class _Stub(types.ModuleType):
    """A module whose every attribute is a MagicMock; ``ray.is_initialized()`` is False and ``ray.remote``
    returns what it decorates, so SkyRL's registries stay local, as without ``ray.init``."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        from unittest.mock import MagicMock

        value = MagicMock(name=f"{self.__name__}.{name}")
        setattr(self, name, value)
        return value


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        return importlib.machinery.ModuleSpec(name, self, is_package=True) if name.split(".")[0] in CPU_STUBS else None

    def create_module(self, spec):
        module = _Stub(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        if module.__name__ == "ray":
            module.is_initialized = lambda: False
            module.remote = lambda *a, **k: a[0] if len(a) == 1 and callable(a[0]) and not k else (lambda f: f)


@contextlib.contextmanager
def _cpu_import_shims():
    """While SkyRL's modules import: stub the modules in CPU_STUBS that are not installed, and on Python < 3.12
    let pydantic accept ``typing.TypedDict`` (SkyRL declares Python >= 3.12)."""
    missing = [m for m in CPU_STUBS if importlib.util.find_spec(m) is None]
    finder = _StubFinder()
    if missing:
        sys.meta_path.insert(0, finder)
    typed_dict = typing.TypedDict
    if sys.version_info < (3, 12):
        import typing_extensions

        typing.TypedDict = typing_extensions.TypedDict
    try:
        yield
    finally:
        typing.TypedDict = typed_dict
        if missing:  # the stubs stay only in the modules that imported them
            sys.meta_path.remove(finder)
            for name in [n for n, m in sys.modules.items() if isinstance(m, _Stub)]:
                del sys.modules[name]


def skyrl_release(release: str) -> types.SimpleNamespace:
    """The SkyRL modules of ``release``; skipped where it is not installed, except in CI, where that fails."""
    if importlib.util.find_spec(release) is None:
        if os.environ.get("CI"):
            pytest.fail(f"{release} is not installed (scripts/setup.sh installs it)")
        pytest.skip(f"{release} is not installed (scripts/setup.sh installs it, --no-deps --ignore-requires-python)")
    with _cpu_import_shims():
        modules = {key: importlib.import_module(name) for key, name in RELEASES[release].items()}
    return types.SimpleNamespace(name=release, **modules)


class ScriptedClient:
    """An inference engine client as SkyRL's agent loop calls it: ``generate`` answers each trajectory (told
    apart by its session id, ``"<uid>_<repetition>"``) with the next turn of its script, ending on EOS."""

    def __init__(self, tokenizer, scripts):
        self.tokenizer, self.scripts, self.turns = tokenizer, scripts, {}

    async def generate(self, engine_input, model=None):
        session = engine_input["session_ids"][0]
        turn = self.turns[session] = self.turns.get(session, -1) + 1
        text = self.scripts[session][turn]
        ids = self.tokenizer.encode(text, add_special_tokens=False) + [self.tokenizer.eos_token_id]
        return {"responses": [text + self.tokenizer.eos_token], "response_ids": [ids], "stop_reasons": ["stop"],
                "response_logprobs": None}

    async def finish_session(self, session_id):
        return None


class Transformers4Tokenizer:
    """The tokenizer as transformers 4 behaved, which skyrl-train 0.3.1 was written for: ``apply_chat_template``
    with ``tokenize=True`` returns the ids (transformers 5 returns a ``BatchEncoding`` unless ``return_dict=False``)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __getattr__(self, name):
        if name == "tokenizer":
            raise AttributeError(name)
        return getattr(self.tokenizer, name)

    def apply_chat_template(self, *args, **kwargs):
        kwargs.setdefault("return_dict", False)
        return self.tokenizer.apply_chat_template(*args, **kwargs)


def _scripts(questions):
    """Per trajectory: each group has a correct and a wrong rollout; among the turns, a search with IG, an
    invalid turn (format penalty) and a search that finds nothing (reward 0, sent as TURN_MARK)."""
    q0, q1 = questions
    t0, gold0 = q0.metadata["supporting_titles"], q0.golden_answers[0]
    t1, gold1 = q1.metadata["supporting_titles"], q1.golden_answers[0]
    return {"0_0": [f"<search> {t0[0]} </search>", f"<search> {t0[1]} </search>", f"<answer> {gold0} </answer>"],
            "0_1": ["<search> zzqx qqvv </search>", f"<search> {t0[2]} </search>", "<answer> Nowhere </answer>"],
            "1_0": ["no tags at all", f"<search> {t1[0]} </search>", f"<answer> {gold1} </answer>"],
            "1_1": [f"<search> {t1[0]} </search>", "<answer> Nowhere </answer>"]}


def _trainer_config(sky, multi_turn: bool):
    """The trainer's config as each release builds it (its defaults), for 2 prompts of 2 rollouts, 4 turns."""
    overrides = {"generator.max_turns": 4, "generator.max_input_length": 8192, "generator.n_samples_per_prompt": 2,
                 "generator.use_conversation_multi_turn": multi_turn, "trainer.train_batch_size": 2,
                 "trainer.policy_mini_batch_size": 2, "trainer.logger": "console"}
    if sky.name == "skyrl":
        cfg = sky.config.SkyRLTrainConfig.from_cli_overrides([f"{k}={str(v).lower()}" for k, v in overrides.items()])
        cfg.generator.sampling_params.logprobs = None
        return cfg
    from omegaconf import OmegaConf

    root = Path(sky.config.__file__).parent
    cfg = OmegaConf.load(root / "ppo_base_config.yaml")  # what hydra composes, with its skyrl_gym defaults
    cfg.environment.skyrl_gym = OmegaConf.load(root / "skyrl_gym_config" / "default.yaml")
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value)
    return cfg


def _trainer(sky, cfg, tokenizer):
    """SkyRL's RayPPOTrainer without its Ray workers (not built: only its batch and advantage methods run)."""
    trainer = object.__new__(sky.trainer.RayPPOTrainer)
    trainer.cfg, trainer.tokenizer, trainer.all_metrics = cfg, tokenizer, {}
    one_rank = types.SimpleNamespace(actor_infos=[types.SimpleNamespace(rank=types.SimpleNamespace(dp_size=1))])
    trainer.policy_model, trainer.critic_model, trainer.ref_model = one_rank, None, None  # skyrl-train 0.3.1
    trainer.dispatch = types.SimpleNamespace(get_lcm_dp_size=lambda: 1)  # skyrl 0.4.0: one data-parallel rank
    return trainer


def _run_skyrl(sky, tmp_path, monkeypatch, fake_scorer, multi_turn):
    """Rows -> parquet -> SkyRL's PromptDataset -> prepare_generator_input -> SkyRLGymGenerator.generate -> the
    trainer's postprocess_generator_output and convert_to_training_input, as SkyRL's training step chains them.
    Returns the trainer, its batch, the uids and, per trajectory, the rewards the env gave its turns."""
    import pandas
    from transformers import AutoTokenizer

    from search_env.agents.models import bundled_model_dir
    from search_env.data import load_questions

    monkeypatch.setitem(adapter.DEFAULTS, "scorer", fake_scorer)
    monkeypatch.setitem(adapter.DEFAULTS, "ig", {"n_random": 2})
    given, draw_seeds = {}, set()
    step = adapter.SearchQATextEnv.step

    def recording_step(self, action):
        out = step(self, action)
        given.setdefault(id(self), []).append((action, out["reward"]))
        draw_seeds.add(self.env.ig._draw_seed)
        return out

    monkeypatch.setattr(adapter.SearchQATextEnv, "step", recording_step)
    adapter.register()
    questions = list(load_questions(None))[:2]
    path = tmp_path / "train.parquet"
    pandas.DataFrame(adapter.dataset_rows(limit=2)).to_parquet(path)
    tokenizer = AutoTokenizer.from_pretrained(bundled_model_dir())
    if sky.name == "skyrl_train":
        tokenizer = Transformers4Tokenizer(tokenizer)
    dataset = sky.dataset.PromptDataset([str(path)], tokenizer, max_prompt_length=4096, num_workers=1)
    prompts = dataset.collate_fn([dataset[i] for i in range(len(dataset))])
    generator_input, uids = sky.utils.prepare_generator_input(prompts, 2, None, "search_env", "train", 0)
    scripts = _scripts(questions)
    cfg = _trainer_config(sky, multi_turn)
    client = ScriptedClient(tokenizer, scripts)
    extra = {} if sky.name == "skyrl" else {"model_name": "policy"}
    generator = sky.generator.SkyRLGymGenerator(cfg.generator, cfg.environment.skyrl_gym, client, tokenizer, **extra)
    output = asyncio.run(generator.generate(generator_input, disable_tqdm=True))
    assert all(isinstance(r, list) for r in output["rewards"])  # per-token rewards
    trainer = _trainer(sky, cfg, tokenizer)
    if sky.name == "skyrl":
        output, uids = trainer.postprocess_generator_output(output, uids)
    else:
        output = trainer.postprocess_generator_output(output, uids)
    batch = trainer.convert_to_training_input(output, uids)
    batch["values"] = None  # fwd_logprobs_values_reward's value without a critic
    by_first_action = {turns[0][0].removesuffix(tokenizer.eos_token): [r for _, r in turns] for turns in given.values()}
    turn_rewards = [by_first_action[scripts[f"{t.instance_id}_{t.repetition_id}"][0]]
                    for t in generator_input["trajectory_ids"]]
    assert len(draw_seeds) == 1  # SkyRL's generator starts a batch's envs together: one round of shared draws
    return trainer, batch, uids, turn_rewards


def _runs(row):
    """``[start, end)`` runs of ones."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], (np.asarray(row) != 0).astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


@pytest.mark.parametrize("multi_turn", [True, False], ids=["conversation", "one-message"])
@pytest.mark.parametrize("release", ["skyrl", "skyrl_train"])
def test_per_turn_credit_through_skyrl(release, multi_turn, tmp_path, monkeypatch, fake_scorer):
    sky = skyrl_release(release)
    torch = pytest.importorskip("torch")
    trainer, batch, uids, turn_rewards = _run_skyrl(sky, tmp_path, monkeypatch, fake_scorer, multi_turn)
    response_mask, rewards, loss_mask = batch["response_mask"], batch["rewards"], batch["loss_mask"]
    assert (response_mask.sum(-1) > loss_mask.sum(-1)).all()  # observations are in SkyRL's response mask
    assert [len(t) for t in turn_rewards] == [3, 3, 3, 2]
    assert turn_rewards[1][0] == adapter.TURN_MARK and turn_rewards[2][0] == pytest.approx(-0.1)
    assert turn_rewards[1][1] > 0.25  # the page that names the answer: 0.3 * IG with IG near 1
    adapter.register_advantage_estimator("search_env_ig")
    adapter.register_advantage_estimator("search_env_ig")  # again, as a Ray worker re-importing the module would
    registry = sky.ppo_utils.AdvantageEstimatorRegistry
    assert registry.get("search_env_ig") is adapter.ig_advantage
    outcomes = np.array([t[-1] for t in turn_rewards])
    assert outcomes.tolist() == [1.0, 0.0, 1.0, 0.0] and uids == ["0", "0", "1", "1"]
    algorithm = trainer.cfg.trainer.algorithm
    algorithm.advantage_estimator = "search_env_ig"
    for norm_by_std in (True, False):
        algorithm.grpo_norm_by_std = norm_by_std
        batch = trainer.compute_advantages_and_returns(batch)  # the trainer's own call of the estimator
        advantages, returns = batch["advantages"], batch["returns"]
        call = dict(response_mask=response_mask, index=uids, config=algorithm, values=None, gamma=algorithm.gamma,
                    lambd=algorithm.lambd, grpo_norm_by_std=norm_by_std)
        assert advantages.shape == rewards.shape and torch.equal(advantages, returns)
        a = 0.5 / (np.std([1.0, 0.0], ddof=1) + 1e-6) if norm_by_std else 0.5  # each group: outcomes 1 and 0
        only_outcome = torch.zeros_like(rewards)
        for i, row in enumerate(response_mask):
            only_outcome[i, int(torch.nonzero(row)[-1])] = rewards[i, int(torch.nonzero(row)[-1])]
        grpo, _ = sky.ppo_utils.compute_advantages_and_returns(
            token_level_rewards=only_outcome, adv_estimator="grpo", **call)
        for i, (row, turns) in enumerate(zip(loss_mask, turn_rewards)):
            runs = _runs(row)
            assert len(runs) == len(turns)
            sign = 1.0 if outcomes[i] == 1.0 else -1.0
            for t, (start, end) in enumerate(runs):
                expected = sign * a + (turns[t] if t < len(runs) - 1 else 0.0)
                assert advantages[i, start:end].double().numpy() == pytest.approx(expected, abs=1e-6), (i, t)
            start, end = runs[-1]
            assert torch.allclose(advantages[i, start:end], grpo[i, start:end], atol=1e-6)  # SkyRL's own GRPO
        assert (advantages[response_mask == 0] == 0).all()


def test_registration_is_idempotent():
    sky = skyrl_release("skyrl")
    registry = sky.ppo_utils.AdvantageEstimatorRegistry
    for _ in range(2):
        adapter.register_advantage_estimator("search_env_ig_test", ig_weight=0.5)
    assert registry.get("search_env_ig_test").keywords == {"ig_weight": 0.5}
    adapter.register_advantage_estimator("search_env_ig_test", ig_weight=2.0)  # other defaults replace
    assert registry.get("search_env_ig_test").keywords == {"ig_weight": 2.0}
    with pytest.raises(ValueError, match="another function"):
        adapter.register_advantage_estimator("grpo")
    assert registry.get("grpo") is not adapter.ig_advantage
    registry.unregister("search_env_ig_test")


def test_skyrl_main_validates_the_estimator_registered_in_the_driver():
    sky = skyrl_release("skyrl")
    with _cpu_import_shims():
        from skyrl.train.utils.utils import validate_cfg
    registry = sky.ppo_utils.AdvantageEstimatorRegistry
    if "search_env_ig" in registry.list_available():
        registry.unregister("search_env_ig")
    cfg = sky.config.SkyRLTrainConfig.from_cli_overrides(
        ["trainer.algorithm.advantage_estimator=search_env_ig", "environment.env_class=search_env",
         "trainer.logger=console", "generator.max_turns=4"])
    with pytest.raises(AssertionError, match="invalid advantage_estimator: search_env_ig"):
        validate_cfg(cfg)  # what SkyRL's main() runs in the driver, before Ray starts
    adapter.register_advantage_estimator("search_env_ig")
    validate_cfg(cfg)
