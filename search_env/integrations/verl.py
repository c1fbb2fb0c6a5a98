"""verl (0.9): an agent loop that plays :class:`~search_env.SearchQAEnv` through verl's rollout servers, with each
turn's reward (``ig_weight * clip(IG)``; the outcome on the last turn; plus the plan-aware term with
``plan_weight``) on that turn's last token.

**The loop** (:class:`SearchEnvAgentLoop`, registered with verl's ``register`` as ``"search_env_agent"``; select it
with the dataset column ``agent_name`` or ``actor_rollout_ref.rollout.agent.default_agent_loop``, and make a verl
process import it with ``actor_rollout_ref.rollout.agent.agent_loop_config_path``, a YAML list of
``{name, _target_, <settings>}``). verl builds one per trajectory and calls ``run(sampling_params, **row)``. The
row's ``raw_prompt`` is tokenized by verl's own chat-template builder; then each turn is generated with
``server_manager.generate(request_id, prompt_ids=prompt + response so far, sampling_params)`` (one ``request_id``
per trajectory, so a replica's prefix cache serves it), decoded, and stepped in the env; the observation
(passages or feedback) is tokenized with ``add_special_tokens=False`` and appended. ``turn_prefix`` (e.g.
``"<think>"``, or ``"<search>"`` for a model too small to find the format) is put before each turn as env tokens
and read as the start of its action. ``response_mask`` is 1 on generated tokens and 0 on the env's (observation,
prefix); ``response_logprobs`` are the server's (0 on the env's tokens). Generation stops at ``</search>`` /
``</answer>`` (``stop``), and the response never exceeds ``rollout.response_length``: a turn after which nothing
more fits ends the trajectory (outcome 0, no IG).

**What verl reads and what reaches the loss.** ``AgentLoopOutput.reward_score`` is the sum of the turn rewards, so
verl's ``AgentLoopWorker._postprocess`` writes it at the last response token as ``rm_scores``; the trainer takes
``rm_scores`` as ``token_level_scores`` and ``token_level_rewards`` (minus a KL term with ``use_kl_in_reward``),
and with GRPO sums them per trajectory: IG then only shifts the trajectory's scalar. For credit on the turn that
searched:

- ``agent_loop_manager_class`` (under ``actor_rollout_ref.rollout.agent``) set to
  ``search_env.integrations.verl.SearchEnvAgentLoopManager`` makes the workers (:class:`SearchEnvAgentLoopWorker`)
  rewrite ``rm_scores`` with each turn's reward on its last policy token (``extra_fields["search_env_turn_rewards"]``:
  ``[position, reward]`` pairs); the row sums are unchanged, so GRPO gives the same advantages as before;
- ``algorithm.adv_estimator=search_env_ig`` (registered with verl's ``register_adv_est`` when this module is
  imported, which selecting the manager class does in the trainer's process) is
  :func:`search_env.integrations.skyrl.ig_advantage`: the group-normalised outcome (the reward on the last turn's
  last token, grouped by ``uid``) on every policy token, plus each earlier turn's reward on that turn's tokens,
  i.e. ``A_tok = A_traj + ig_weight * clip(IG_t)`` as :mod:`search_env.training.credit` computes it. That is the
  advantage verl's policy loss multiplies with the ratio on the tokens where ``response_mask`` is 1.

``extra_fields`` also holds ``turn_scores`` (the turn rewards), ``actions`` (each turn's text, prefix included) and
``reward_extra_info`` (em, f1, answered, searches, invalid, ig_steps, ig_mean: verl logs them per step).

**Settings**, later ones winning: :data:`search_env.integrations.base.DEFAULTS` plus ``stop``,
``max_tokens_per_turn`` and ``turn_prefix``, the JSON in ``$SEARCH_ENV_VERL`` (or a path to a JSON file), the
extra keys of the loop's YAML entry, and the row's ``extra_info["search_env"]``. The question comes from
``extra_info.question``, the answers from ``reward_model.ground_truth`` (verl's column; :func:`dataset_rows` writes
rows). ``seed`` seeds IG's random passages (``None``: fresh draws per episode).

**Where IG is scored** (``scorer``): a folder (a frozen model in the agent-loop worker) or vLLM URLs, as in SkyRL;
``"server"``: on verl's rollout servers with the weights being trained, through the same ``server_manager`` with
``prompt_logprobs`` (:func:`score_requests`), right after the step; or deferred (``ig: {"deferred": true}``): a
search's :class:`~search_env.info_gain.DeferredIG` (with token ids in the policy's tokenizer) goes to
``extra_fields["ig_requests"]`` as ``{"position", "request": DeferredIG.to_dict()}`` for the trainer to score in its
own forward pass and finish with :func:`~search_env.info_gain.finish_deferred`; the turn reward then has no IG term.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import uuid4

import numpy as np

from search_env.dialects import get_dialect
from search_env.env import SearchQAEnv
from search_env.info_gain import DeferredIG
from search_env.integrations import base, skyrl

try:  # the row helpers and the estimator work without verl
    from verl.experimental.agent_loop.agent_loop import (
        AgentLoopBase,
        AgentLoopManager,
        AgentLoopMetrics,
        AgentLoopOutput,
        AgentLoopWorker,
        register,
    )
except ImportError:  # pragma: no cover - exercised where verl (or ray) is not installed
    AgentLoopBase = AgentLoopManager = AgentLoopWorker = object
    AgentLoopMetrics = AgentLoopOutput = None

    def register(name):
        return lambda cls: cls

__all__ = ["AGENT_NAME", "ADVANTAGE_ESTIMATOR", "SearchEnvAgentLoop", "SearchEnvAgentLoopManager",
           "SearchEnvAgentLoopWorker", "dataset_rows", "ig_advantage", "place_turn_rewards", "score_requests",
           "settings"]

AGENT_NAME = "search_env_agent"
ADVANTAGE_ESTIMATOR = "search_env_ig"
SETTINGS_VARIABLE = "SEARCH_ENV_VERL"
TURN_REWARDS = "search_env_turn_rewards"
DEFAULTS = {**base.DEFAULTS, "stop": ["</search>", "</answer>"], "max_tokens_per_turn": None, "turn_prefix": ""}
SCORE_PARAMS = {"max_tokens": 1, "temperature": 1.0, "prompt_logprobs": 0}


def settings(*layers: Mapping | None) -> dict:
    """:data:`DEFAULTS`, then ``$SEARCH_ENV_VERL``, then each layer in turn.

    Raises:
        ValueError: an unknown setting.
    """
    return base.make_settings(DEFAULTS, SETTINGS_VARIABLE, *layers)


async def score_requests(server_manager: Any, requests: Sequence[DeferredIG]) -> list[list[float]]:
    """The answer-token log-probabilities of every pair of ``requests`` (flat, request after request, as
    :func:`~search_env.info_gain.finish_deferred` takes them), from verl's server manager with
    ``prompt_logprobs: 0``: ``extra_fields["prompt_logprobs"][i]`` is ``[log p(token i+1)]``.

    Raises:
        ValueError: a request has no token ids, or the server's ``prompt_ids`` do not match the ones sent.
    """
    async def one(ids: list[int], start: int) -> list[float]:
        out = await server_manager.generate(request_id=uuid4().hex, prompt_ids=list(ids),
                                            sampling_params=dict(SCORE_PARAMS))
        rows, echoed = out.extra_fields["prompt_logprobs"], out.extra_fields.get("prompt_ids")
        if echoed is not None and [row[0] for row in echoed[start - 1 : len(ids) - 1]] != list(ids[start:]):
            raise ValueError("the server's prompt_ids do not match the answer tokens sent")
        return [float(rows[j - 1][0]) for j in range(start, len(ids))]

    if any(r.token_ids is None for r in requests):
        raise ValueError("requests need token ids: IGConfig(deferred=True, tokenizer=the policy's tokenizer)")
    pairs = [(ids, start) for r in requests for ids, start in zip(r.token_ids, r.answer_starts)]
    return list(await asyncio.gather(*(one(ids, start) for ids, start in pairs)))


def _record(row: Mapping) -> dict:
    """The question of a verl row: ``extra_info.question`` and ``reward_model.ground_truth``."""
    info = dict(row.get("extra_info") or {})
    truth = (row.get("reward_model") or {}).get("ground_truth")
    if isinstance(truth, Mapping):
        truth = truth.get("target")
    try:
        return base.question_record(info.get("question") or row.get("question"), truth, info.get("question_id"))
    except ValueError:
        raise ValueError("a search_env row needs extra_info.question and reward_model.ground_truth "
                         "(search_env.integrations.verl.dataset_rows writes them)") from None


@register(AGENT_NAME)
class SearchEnvAgentLoop(AgentLoopBase):
    """One search-QA episode per verl trajectory (see the module docstring). Keyword arguments named in
    :data:`DEFAULTS` (the YAML entry's extra keys) are settings; the rest go to ``AgentLoopBase``."""

    def __init__(self, *args: Any, **kwargs: Any):
        own = {k: kwargs.pop(k) for k in list(kwargs) if k in DEFAULTS}
        kwargs.pop("tools", None)
        super().__init__(*args, **kwargs)
        self.settings = settings(own)
        self.response_length = int(self.rollout_config.response_length)

    def make_env(self, s: dict, row: Mapping) -> SearchQAEnv:
        """The env for this row: its question only, over the corpus, retriever and scorer shared by the process."""
        on_server = s["scorer"] == "server"
        ig = s["ig"]
        deferred = on_server or isinstance(ig, Mapping) and ig.get("deferred")
        ig = base.ig_setting({} if on_server and not isinstance(ig, Mapping) else ig,
                             deferred_tokenizer=self.tokenizer if deferred else None)
        return base.question_env({**s, "scorer": None} if on_server else s, _record(row), ig=ig)

    @staticmethod
    def turn_reward(info: Mapping, final: bool, s: Mapping) -> float:
        """:func:`search_env.integrations.base.turn_reward` with this loop's ``ig_weight`` and ``ig_clip``."""
        return base.turn_reward(info, final, ig_weight=s["ig_weight"], ig_clip=s["ig_clip"])

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput:
        s = settings(self.settings, (kwargs.get("extra_info") or {}).get("search_env"))
        env = await self.loop.run_in_executor(None, self.make_env, s, kwargs)
        prompt, _ = env.reset(seed=s["seed"], options={"index": 0})
        messages = list(kwargs.get("raw_prompt") or [{"role": "user", "content": prompt}])
        prompt_ids = await self.ct_build_initial_tokens(messages)
        request_id = uuid4().hex
        response_ids: list[int] = []
        mask: list[int] = []
        logprobs: list[float] | None = []
        turns: list[list] = []
        infos: list[dict] = []
        actions: list[str] = []
        requests: list[dict] = []
        generate_seconds = 0.0
        prefix = s["turn_prefix"] or ""
        prefix_ids = self.tokenizer.encode(prefix, add_special_tokens=False) if prefix else []
        for _ in range(int(s["max_turns"])):
            budget = self.response_length - len(response_ids) - len(prefix_ids)
            if budget <= 0:
                break
            response_ids += prefix_ids
            mask += [0] * len(prefix_ids)
            logprobs = logprobs + [0.0] * len(prefix_ids) if logprobs is not None else None
            params = {**sampling_params, "max_tokens": min(budget, s["max_tokens_per_turn"] or budget)}
            if s["stop"]:
                params.update(stop=list(s["stop"]), include_stop_str_in_output=True)
            start = self.loop.time()
            out = await self.server_manager.generate(request_id=request_id, prompt_ids=prompt_ids + response_ids,
                                                     sampling_params=params)
            generate_seconds += self.loop.time() - start
            tokens = list(out.token_ids)[:budget]
            if not tokens:
                break
            response_ids += tokens
            mask += [1] * len(tokens)
            logprobs = logprobs + list(out.log_probs)[: len(tokens)] if logprobs is not None and out.log_probs else None
            text = prefix + self.tokenizer.decode(tokens, skip_special_tokens=True)
            obs, _, terminated, truncated, info = await self.loop.run_in_executor(None, env.step, text)
            obs_ids = [] if terminated or truncated else self.tokenizer.encode(obs, add_special_tokens=False)
            room = self.response_length - len(response_ids) - len(prefix_ids)
            final = terminated or truncated or len(obs_ids) >= room
            request = info.pop("ig_request", None)
            if request is not None and not final and s["scorer"] == "server":
                finished = request.finish(await score_requests(self.server_manager, [request]))
                info.update({k: v for k, v in finished.items() if k != "ig_reward"})
            elif request is not None and not final:
                requests.append({"position": len(response_ids) - 1, "request": request.to_dict()})
            turns.append([len(response_ids) - 1, self.turn_reward(info, final, s)])
            infos.append(info)
            actions.append(text)
            if final:
                break
            response_ids += obs_ids
            mask += [0] * len(obs_ids)
            logprobs = logprobs + [0.0] * len(obs_ids) if logprobs is not None else None
        env.close()
        extra = {TURN_REWARDS: turns, "turn_scores": [r for _, r in turns], "ig_requests": requests,
                 "actions": actions, "reward_extra_info": _metrics(infos)}
        return AgentLoopOutput(prompt_ids=prompt_ids, response_ids=response_ids, response_mask=mask,
                               response_logprobs=logprobs or None, reward_score=float(sum(r for _, r in turns)),
                               num_turns=2 * len(turns), metrics=AgentLoopMetrics(generate_sequences=generate_seconds),
                               extra_fields=extra)


def _metrics(infos: Sequence[Mapping]) -> dict[str, float]:
    keep = ("em", "f1", "answered", "searches", "invalid", "ig_steps", "ig_mean")
    return {k: v for k, v in base.episode_metrics(infos).items() if k in keep}


def place_turn_rewards(data: Any) -> Any:
    """``data.batch["rm_scores"]`` with each turn's reward on its last token, for the rows this loop played
    (``non_tensor_batch["search_env_turn_rewards"]``); other rows are left as they are. Returns ``data``."""
    column = data.non_tensor_batch.get(TURN_REWARDS)
    if column is None or "rm_scores" not in data.batch.keys():
        return data
    scores = data.batch["rm_scores"]
    for i, turns in enumerate(column):
        if turns:
            scores[i] = 0.0
            for position, reward in turns:
                scores[i, int(position)] += float(reward)
    return data


class SearchEnvAgentLoopWorker(AgentLoopWorker):
    """verl's ``AgentLoopWorker`` whose batch carries the turn rewards in ``rm_scores`` (:func:`place_turn_rewards`)."""

    def _postprocess(self, inputs, input_non_tensor_batch=None, validate=False):
        return place_turn_rewards(super()._postprocess(inputs, input_non_tensor_batch, validate))


class SearchEnvAgentLoopManager(AgentLoopManager):
    """verl's ``AgentLoopManager`` with :class:`SearchEnvAgentLoopWorker` workers (``agent_loop_manager_class``)."""

    def __init__(self, *args: Any, **kwargs: Any):
        import ray

        self.agent_loop_workers_class = ray.remote(SearchEnvAgentLoopWorker)
        super().__init__(*args, **kwargs)


def ig_advantage(token_level_rewards: Any, response_mask: Any, index: Any = None, config: Any = None,
                 **kwargs: Any) -> tuple[Any, Any]:
    """verl's advantage-estimator signature over :func:`search_env.integrations.skyrl.ig_advantage` (turn rewards
    as given; ``config.norm_adv_by_std_in_grpo`` honoured); ``index`` is verl's ``uid``."""
    norm = config.get("norm_adv_by_std_in_grpo", True) if config is not None else True
    if index is None:
        index = np.arange(len(token_level_rewards))
    return skyrl.ig_advantage(token_level_rewards, response_mask, index, ig_weight=1.0, norm_adv_by_std_in_grpo=norm)


def _register_advantage_estimator(name: str = ADVANTAGE_ESTIMATOR) -> None:
    from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY, register_adv_est

    if ADV_ESTIMATOR_REGISTRY.get(name) is not ig_advantage:
        register_adv_est(name)(ig_advantage)


if AgentLoopOutput is not None:
    _register_advantage_estimator()


def dataset_rows(questions: Any = None, *, topk: int = 3, dialect: str = "search-r1", agent_name: str = AGENT_NAME,
                 few_shot: bool = False, limit: int | None = None) -> list[dict]:
    """verl RL dataset rows for a QA set (as :func:`search_env.integrations.skyrl.dataset_rows` takes it):
    ``prompt`` (one user message), ``data_source``, ``agent_name``, ``reward_model``
    (``{"style": "rule", "ground_truth": answers}``) and ``extra_info`` (``question``, ``question_id``, ``index``).
    ``few_shot`` puts the dialect's worked example before the prompt. Write them with
    ``pandas.DataFrame(rows).to_parquet`` for ``data.train_files``."""
    example = get_dialect(dialect).worked_example() if few_shot else ""
    rows = []
    for i, row in enumerate(skyrl.dataset_rows(questions, topk=topk, dialect=dialect, limit=limit)):
        prompt = [{"role": "user", "content": example + row["prompt"][0]["content"]}]
        rows.append({"data_source": row["data_source"], "agent_name": agent_name, "prompt": prompt,
                     "reward_model": {"style": "rule", "ground_truth": row["reward_spec"]["ground_truth"]["target"]},
                     "extra_info": {**row["extra_info"], "index": i}})
    return rows
