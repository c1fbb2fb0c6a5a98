"""The verl agent loop, run by verl's own code on the CPU: a real ``AgentLoopWorker`` (built from verl's generated
trainer config, with the loops registered through an ``agent_loop_config_path`` YAML) takes a batch that verl's
``RLHFDataset`` and ``collate_fn`` made from :func:`dataset_rows`, runs the episodes against a real vLLM CPU server
(``.venv-vllm``, the bundled SmolLM2) and turns them into the training batch; verl's ``compute_advantage`` then runs
the registered estimator on it. One batch of three episodes, one per IG mode: scored in the env (on the server),
on the server through verl's server manager, and deferred.

Stubbed: only ``ray`` (when it is not installed), as empty modules whose attributes are placeholder classes: verl
imports it at module level for its remote actors and ``DataProto``'s Ray helpers, none of which run here; the worker
is called in-process. vLLM itself runs in its own virtualenv behind HTTP, so nothing of it is imported here.
"""

import asyncio
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import types

import numpy as np
import pytest

from search_env.agents.models import bundled_model_dir
from search_env.env import SearchQAEnv
from search_env.info_gain import DeferredIG, IGConfig, finish_deferred
from search_env.scoring.servers import VLLMScorer
from tests.servers import running_vllm

pytestmark = pytest.mark.slow


class _StubModule(types.ModuleType):
    """A module whose every public attribute is an empty class (``ray.actor.ActorHandle``, ``ray.ObjectRef``...)."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        value = type(name, (), {"__init__": lambda self, *args, **kwargs: None})
        setattr(self, name, value)
        return value


class _RayStub(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name == "ray" or name.startswith("ray."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        return _StubModule(spec.name)

    def exec_module(self, module):
        module.__path__ = []
        if module.__name__ == "ray":  # ray.remote(cls) / @ray.remote(...): leave the class as it is
            module.remote = lambda *args, **kwargs: args[0] if args and callable(args[0]) else (lambda f: f)


def _import_verl():
    """Import verl's modules (and the adapter) with ``ray`` stubbed when it is missing; the stub is then taken
    out of ``sys.meta_path`` and ``sys.modules`` (verl's modules keep their references), so other tests see no ray."""
    stub = _RayStub() if importlib.util.find_spec("ray") is None else None
    if stub:
        sys.meta_path.insert(0, stub)
    try:
        # the adapter first, as before (import order kept on purpose)
        import search_env.integrations.verl  # noqa: F401, I001
        import verl.trainer.ppo.ray_trainer  # noqa: F401
    except ImportError as error:
        message = f"verl 0.9.1 is not importable ({error}): run `bash scripts/setup.sh` (make test does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message, allow_module_level=True)
    finally:
        if stub:
            sys.meta_path.remove(stub)
            for name in [n for n in sys.modules if n == "ray" or n.startswith("ray.")]:
                del sys.modules[name]


_import_verl()

from omegaconf import OmegaConf  # noqa: E402
from verl import DataProto  # noqa: E402
from verl.experimental.agent_loop.agent_loop import _agent_loop_registry  # noqa: E402
from verl.trainer.ppo.ray_trainer import compute_advantage  # noqa: E402
from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn  # noqa: E402
from verl.workers.rollout.replica import TokenOutput  # noqa: E402

from search_env.integrations import verl as adapter  # noqa: E402

MAX_TURNS, RESPONSE_LENGTH, PREFIX = 2, 600, "<search>"
YAML = f"""
- name: search_env_agent
  _target_: search_env.integrations.verl.SearchEnvAgentLoop
  max_turns: {MAX_TURNS}
  max_tokens_per_turn: 24
  turn_prefix: "{PREFIX}"
  seed: 0
  ig: {{n_random: 1}}
  ig_weight: 0.5
- name: search_env_deferred
  _target_: search_env.integrations.verl.SearchEnvAgentLoop
  max_turns: {MAX_TURNS}
  max_tokens_per_turn: 24
  turn_prefix: "{PREFIX}"
  seed: 0
  ig: {{deferred: true, n_random: 1}}
"""


class CompletionsServerManager:
    """Stands in for verl's ``LLMServerClient``: ``generate`` sends the token ids to vLLM's ``/v1/completions`` and
    answers with verl's ``TokenOutput`` as verl's vLLM server fills it (``log_probs`` when ``logprobs`` is asked;
    ``extra_fields["prompt_logprobs"]`` / ``["prompt_ids"]`` shifted by one with a pad at the end, as
    ``verl.workers.rollout.vllm_rollout.utils.extract_prompt_logprobs`` writes them)."""

    def __init__(self, url: str):
        self.url = url

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
        import requests

        params = dict(sampling_params)
        logprobs = bool(params.pop("logprobs", False))
        body = {"prompt": list(prompt_ids), "max_tokens": params.pop("max_tokens"), "return_token_ids": True,
                **{k: params[k] for k in ("temperature", "top_p", "top_k", "stop", "include_stop_str_in_output",
                                          "prompt_logprobs", "repetition_penalty") if k in params}}
        if logprobs:
            body["logprobs"] = 0
        response = await asyncio.to_thread(requests.post, f"{self.url}/v1/completions", json=body, timeout=300)
        response.raise_for_status()
        choice = response.json()["choices"][0]
        extra = {"global_steps": 0}
        if "prompt_logprobs" in params:
            rows = choice["prompt_logprobs"][1:]
            extra["prompt_logprobs"] = [[row[next(iter(row))]["logprob"]] for row in rows] + [[0.0]]
            extra["prompt_ids"] = [[int(next(iter(row)))] for row in rows] + [[0]]
        return TokenOutput(token_ids=choice["token_ids"], stop_reason="completed", extra_fields=extra,
                           log_probs=choice["logprobs"]["token_logprobs"] if logprobs else None)


class RecordingWorker(adapter.SearchEnvAgentLoopWorker):
    """Keeps each loop's ``AgentLoopOutput`` as it left ``run`` (before verl pads it), by the row's index."""

    outputs: dict

    async def _agent_loop_postprocess(self, output, validate, **kwargs):
        self.outputs[int(kwargs["index"])] = output.model_copy(deep=True)
        return await super()._agent_loop_postprocess(output, validate, **kwargs)


@pytest.fixture(scope="module")
def server():
    with running_vllm(bundled_model_dir()) as url:
        yield url


@pytest.fixture(scope="module")
def rollout(server, tmp_path_factory):
    """(worker, its outputs in the order of the rows, the batch verl built, the rows)."""
    import pandas
    import verl

    folder = tmp_path_factory.mktemp("verl")
    (folder / "agents.yaml").write_text(YAML)
    rows = adapter.dataset_rows(limit=3, few_shot=True)
    modes = [("search_env_agent", {"scorer": server}), ("search_env_agent", {"scorer": "server"}),
             ("search_env_deferred", {})]
    for row, (name, overrides) in zip(rows, modes):
        row["agent_name"], row["extra_info"]["search_env"] = name, overrides
    pandas.DataFrame(rows).to_parquet(folder / "train.parquet")

    config = OmegaConf.load(os.path.join(os.path.dirname(verl.__file__), "trainer/config/_generated_ppo_trainer.yaml"))
    rollout_config = config.actor_rollout_ref.rollout
    config.actor_rollout_ref.model.path = str(bundled_model_dir())
    rollout_config.update(name="vllm", prompt_length=1024, response_length=RESPONSE_LENGTH, temperature=0.0,
                          calculate_log_probs=True)
    rollout_config.agent.agent_loop_config_path = str(folder / "agents.yaml")
    worker = RecordingWorker(config, llm_client=CompletionsServerManager(server))
    worker.outputs = {}

    dataset = RLHFDataset(data_files=str(folder / "train.parquet"), tokenizer=worker.tokenizer, config=config.data)
    batch = DataProto.from_single_dict(collate_fn([dataset[i] for i in range(len(dataset))]))
    batch.meta_info["global_steps"] = 0
    output = asyncio.run(worker.generate_sequences(batch))
    worker.outputs = [worker.outputs[i] for i in range(len(rows))]
    return worker, output, rows


def _replay_env(server, ig):
    return SearchQAEnv(max_turns=MAX_TURNS, ig=ig, scorer=VLLMScorer(server, "bundled"))


def _runs(mask):
    """[start, end) runs of equal values in a 0/1 list, as (value, start, end)."""
    edges = [0] + [i for i in range(1, len(mask)) if mask[i] != mask[i - 1]] + [len(mask)]
    return [(mask[a], a, b) for a, b in zip(edges, edges[1:])]


def test_the_loops_are_registered_by_name(rollout):
    assert _agent_loop_registry["search_env_agent"]["_target_"] == "search_env.integrations.verl.SearchEnvAgentLoop"
    assert _agent_loop_registry["search_env_deferred"]["ig"] == {
        "deferred": True,
        "n_random": 1,
    }  # the YAML entry verl loaded


def test_masks_tokens_and_rewards_line_up_with_the_env(rollout, server):
    worker, _, rows = rollout
    tok = worker.tokenizer
    prefix = tok.encode(PREFIX, add_special_tokens=False)
    searches = 0
    for out, row in zip(worker.outputs, rows):
        ids, mask, logprobs = out.response_ids, out.response_mask, out.response_logprobs
        assert len(ids) == len(mask) == len(logprobs) and 0 < len(ids) <= RESPONSE_LENGTH
        actions, turns = out.extra_fields["actions"], out.extra_fields[adapter.TURN_REWARDS]
        runs = _runs(mask)  # env tokens (prefix; observation + prefix; ...) and policy tokens, alternating
        assert [v for v, _, _ in runs] == [0, 1] * len(actions) and len(turns) == len(actions)
        assert all(lp == 0.0 for v, a, b in runs if v == 0 for lp in logprobs[a:b])
        assert all(np.isfinite(lp) and lp <= 0 for v, a, b in runs if v == 1 for lp in logprobs[a:b])

        deferred = row["agent_name"] == "search_env_deferred"
        env = _replay_env(server, IGConfig(n_random=1))
        env.reset(seed=0, options={"question_id": row["extra_info"]["question_id"]})
        obs = ""
        for t, (action, (position, reward)) in enumerate(zip(actions, turns)):
            (_, e0, e1), (_, p0, p1) = runs[2 * t], runs[2 * t + 1]
            # the env tokens are exactly the tokenized observation, then the turn prefix
            assert ids[e0:e1] == (tok.encode(obs, add_special_tokens=False) if t else []) + prefix
            assert PREFIX + tok.decode(ids[p0:p1], skip_special_tokens=True) == action and position == p1 - 1
            obs, _, terminated, truncated, info = env.step(action)
            searches += info["action_type"] == "search"
            parts, ig = info["reward_components"], info.get("ig")
            gain = 0.5 * np.clip(ig, -1, 1) if ig is not None and not deferred else 0.0
            last = t == len(actions) - 1
            assert reward == pytest.approx(parts["outcome"] + parts["format"] if last else parts["format"] + gain,
                                           abs=2e-3)
        assert terminated or truncated
        assert out.reward_score == pytest.approx(sum(r for _, r in turns))
        assert out.extra_fields["reward_extra_info"]["searches"] == len(env.steps)
    assert searches >= 3, "too few searches for this test to check IG"


def test_the_batch_carries_each_turn_reward_on_its_last_token(rollout):
    worker, batch, _ = rollout
    prompt_length = batch.batch["prompts"].shape[1]
    for i, out in enumerate(worker.outputs):
        n = int(batch.batch["attention_mask"][i, prompt_length:].sum())
        assert batch.batch["responses"][i, :n].tolist() == out.response_ids
        assert batch.batch["response_mask"][i, :n].tolist() == out.response_mask
        expected = np.zeros(batch.batch["rm_scores"].shape[1])
        for position, reward in out.extra_fields[adapter.TURN_REWARDS]:
            expected[position] += reward
        assert np.allclose(batch.batch["rm_scores"][i].numpy(), expected, atol=1e-6)
        assert float(batch.batch["rm_scores"][i].sum()) == pytest.approx(out.reward_score, abs=1e-5)
    assert batch.non_tensor_batch["em"].shape == (3,) and "searches" in batch.meta_info["reward_extra_keys"]


def test_deferred_requests_round_trip(rollout, server):
    worker, batch, rows = rollout
    column = batch.non_tensor_batch["ig_requests"]
    (i,) = [k for k, row in enumerate(rows) if row["agent_name"] == "search_env_deferred"]
    carried = column[i]
    assert all(not c for k, c in enumerate(column) if k != i)  # IG scored in the loop leaves no requests
    if not carried:
        pytest.skip("the deferred episode made no scorable search")
    requests = [DeferredIG.from_dict(c["request"]) for c in carried]
    logprobs = asyncio.run(adapter.score_requests(worker.llm_client, requests))
    finished = finish_deferred(requests, logprobs)
    assert all(np.isfinite(f["ig"]) for f in finished)
    # the same episode with IG scored in the env, on the same server, gives the same IG
    env = _replay_env(server, IGConfig(n_random=1))
    env.reset(seed=0, options={"question_id": rows[i]["extra_info"]["question_id"]})
    in_env = [env.step(a)[4].get("ig") for a in worker.outputs[i].extra_fields["actions"]]
    assert [round(f["ig"], 3) for f in finished] == [round(g, 3) for g in in_env if g is not None]
    mask = worker.outputs[i].response_mask
    assert all(mask[c["position"]] == 1 and mask[c["position"] + 1] == 0 for c in carried)


def test_the_registered_estimator_puts_each_turn_reward_on_its_tokens(rollout):
    from verl.trainer.config import AlgoConfig

    worker, batch, _ = rollout
    data = DataProto(batch=batch.batch.clone(), non_tensor_batch={"uid": np.array(["q"] * 3, dtype=object)})
    data.batch["token_level_rewards"] = data.batch["rm_scores"].clone()
    first_end = worker.outputs[0].extra_fields[adapter.TURN_REWARDS][-1][0]
    data.batch["token_level_rewards"][0, first_end] += 1.0  # one rollout of the group succeeds: outcomes differ
    config = AlgoConfig(adv_estimator=adapter.ADVANTAGE_ESTIMATOR)
    ours = compute_advantage(data, adv_estimator=adapter.ADVANTAGE_ESTIMATOR, config=config).batch["advantages"]
    outcome_only = data.batch["rm_scores"].clone() * 0
    for i, out in enumerate(worker.outputs):
        position, reward = out.extra_fields[adapter.TURN_REWARDS][-1]
        outcome_only[i, position] = reward + (1.0 if i == 0 else 0.0)
    grpo = DataProto(batch=data.batch.clone(), non_tensor_batch=dict(data.non_tensor_batch))
    grpo.batch["token_level_rewards"] = outcome_only
    grpo = compute_advantage(grpo, adv_estimator="grpo", config=AlgoConfig(adv_estimator="grpo")).batch["advantages"]
    for i, out in enumerate(worker.outputs):
        mask = out.response_mask
        runs = [(a, b) for v, a, b in _runs(mask) if v == 1]
        base = grpo[i, runs[-1][0]].item()
        for (a, b), (_, reward) in zip(runs, out.extra_fields[adapter.TURN_REWARDS]):
            extra = 0.0 if (a, b) == runs[-1] else reward
            assert np.allclose(ours[i, a:b].numpy(), base + extra, atol=1e-5)
        assert all(ours[i, a:b].abs().max() == 0 for v, a, b in _runs(mask) if v == 0)
        assert np.allclose(grpo[i, runs[0][0]].item(), base, atol=1e-6) and abs(base) > 0.1
