"""verifiers 0.4 (``import verifiers.v1 as vf``): a taskset of search-QA questions and a ``vf.Env`` whose
``run()`` steps :class:`~search_env.SearchQAEnv` as the model's user, IG per turn on the trace.

**What verifiers 0.4.0 offers.** The 0.4.0 wheel holds only ``verifiers.v1``: there is no ``MultiTurnEnv``,
``Rubric`` or per-step reward. An environment is a ``vf.Taskset`` (tasks in) plus a ``vf.Env`` whose
``run(task, agents)`` drives ``agents.<role>.interaction(task)`` turn by turn (``await interaction.turn(text)``
returns the model's reply); rewards are named scalars on the trace (``trace.record_reward``) and
``trace.reward`` is their weighted sum, metrics are named floats (``trace.record_metric``). verifiers finds
both by id: ``vf-eval search_env_verifiers`` (or ``--env.taskset.id search_env_verifiers`` wherever a v1 env
config is read) imports the module of that name, takes its exported ``Taskset`` subclass and its
exported ``Env`` subclass (``verifiers/v1/utils/loaders.py``). The top-level module ``search_env_verifiers``
re-exports this module for that; :func:`load_environment` builds the env through the same loader.

**One episode.** The task's prompt is the env's own (``SearchQAEnv.reset``); each reply of the model is one
``env.step`` (retrieval and IG run in a worker thread, off verifiers' event loop); the step's observation
(passages, or feedback after an invalid turn) is the next user message; an answer or ``max_turns`` ends it.
The model runs through the agent's harness, by default verifiers' tool-less chat loop (``null``) in a local
subprocess (``runtime: subprocess``), which calls the model through verifiers' interception server and the
run's OpenAI-compatible client. What lands on the trace:

- rewards ``outcome``, ``format`` and ``ig`` (and ``plan`` when ``plan_weight`` is set): the episode's sums of
  the env's ``info["reward_components"]``, weight 1, so ``trace.reward`` is the env's episode return. ``ig`` is
  ``ig_weight * sum(IG)`` (``ig_weight`` 0 by default: the outcome alone is the reward);
- metrics ``ig_turn_<t>`` (IG of turn *t*, from 1, on every search turn that has one), ``ig_sum``, ``ig_mean``,
  ``ig_steps``, ``em``, ``f1``, ``answered``, ``searches``, ``invalid``;
- ``trace.info["search_env"]``: ``question_id``, ``golden_answers``, ``ig`` (one value or ``None`` per turn)
  and ``steps`` (each step's ``info``, JSON-safe).

A v1 trace has one reward (a trainer writes the advantages onto its message nodes), so per-turn credit has to
come from the ``ig_turn_<t>`` metrics in the trainer's advantage step; verifiers <= 0.3 (the classic
``MultiTurnEnv`` API) is not supported: importing this module there raises ``ImportError``.

**Settings** (``SearchQAConfig``, as ``--env.taskset.<name>`` flags or keyword arguments of
:func:`load_environment`): ``questions`` (FlashRAG JSONL; default the built-in world), ``corpus``,
``retriever``, ``topk``, ``max_turns``, ``dialect``, ``outcome``, ``format_penalty``, ``ig``, ``scorer``
(``None``: the bundled model in this process; a model folder; or vLLM server URLs, which score with the policy's
weights on the rollout server), ``scorer_tokenizer``, ``ig_weight``, ``plan_weight`` (the plan dialect's
plan-aware reward, :mod:`search_env.plan`), ``seed`` (task *i* seeds IG's random
passages with ``seed + i``), ``limit``. The corpus, retriever and scorer are built once per process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from search_env.data.qa import load_questions
from search_env.env import SearchQAEnv
from search_env.integrations import base

try:
    import verifiers.v1 as vf
except ImportError as error:  # pragma: no cover - exercised where verifiers is missing or older
    raise ImportError("search_env.integrations.verifiers needs verifiers >= 0.4 (`verifiers.v1`): "
                      "pip install 'search_env[verifiers]'") from error

__all__ = ["ENV_ID", "SearchQAConfig", "SearchQAData", "SearchQAEnvConfig", "SearchQATask", "SearchQATaskset",
           "SearchQAVerifiersEnv", "load_environment"]

ENV_ID = "search_env_verifiers"  # the module verifiers imports for this taskset id


class SearchQAConfig(vf.TasksetConfig):
    """The taskset's settings (``--env.taskset.<name>``); see the module docstring."""

    questions: str | None = None
    corpus: str | None = None
    retriever: str = "bm25"
    topk: int = 3
    max_turns: int = 4
    dialect: str = "search-r1"
    outcome: str = "em"
    format_penalty: float = 0.1
    ig: bool = True
    scorer: str | list[str] | None = None
    scorer_tokenizer: str | None = None
    ig_weight: float = 0.0
    plan_weight: float = 0.0
    seed: int | None = 0
    limit: int | None = None


class SearchQAData(vf.TaskData):
    """One question: what the env needs to replay it (the prompt is the env's own)."""

    question_id: str
    question: str
    golden_answers: list[str]
    seed: int | None = None


class SearchQATask(vf.Task[SearchQAData, vf.State, vf.TaskConfig]):
    """A search-QA task."""


class SearchQATaskset(vf.Taskset[SearchQATask, SearchQAConfig]):
    """The QA set's questions (the built-in world's by default), each prompted as ``SearchQAEnv.reset`` does."""

    def load(self) -> Iterator[SearchQATask]:
        c = self.config
        corpus, retriever, _ = _shared(c)
        env = SearchQAEnv(questions=load_questions(c.questions), corpus=corpus, retriever=retriever, topk=c.topk,
                          dialect=c.dialect, ig=False)
        for i in range(len(env.questions) if c.limit is None else min(c.limit, len(env.questions))):
            prompt, info = env.reset(options={"index": i})
            yield SearchQATask(SearchQAData(name=f"search_env#{i}", id=info["question_id"], prompt=prompt,
                                            question_id=info["question_id"], question=env.item.question,
                                            golden_answers=info["golden_answers"],
                                            seed=None if c.seed is None else c.seed + i), c.task)


class SearchQAEnvConfig(vf.EnvConfig):
    """The env's one role, ``player``: verifiers' tool-less chat loop in a local subprocess by default."""

    player: vf.AgentConfig = vf.AgentConfig(harness={"id": "null"}, runtime=vf.SubprocessConfig())


class SearchQAVerifiersEnv(vf.Env[SearchQAEnvConfig]):
    """Plays one :class:`~search_env.SearchQAEnv` episode per task, the env answering each model turn."""

    async def run(self, task: SearchQATask, agents: vf.Agents) -> None:
        c, data = self.taskset.config, task.data
        record = base.question_record(data.question, list(data.golden_answers), data.question_id)
        env = base.question_env(_settings(c), record, resources=_shared(c), ig=c.ig, ig_weight=c.ig_weight)
        env.reset(seed=data.seed, options={"index": 0})
        infos: list[dict] = []
        async with agents.player.interaction(task) as interaction:
            segment = await interaction.turn()  # the task's prompt opens the exchange
            while not segment.terminated:
                obs, _, terminated, truncated, info = await asyncio.to_thread(env.step, segment.last_reply)
                infos.append(info)
                if info.get("ig") is not None:
                    interaction.trace.record_metric(f"ig_turn_{len(infos)}", info["ig"])
                if terminated or truncated:
                    break
                segment = await interaction.turn(obs)
        _record_episode(interaction.trace, infos, data)


def _record_episode(trace: Any, infos: list[dict], data: SearchQAData) -> None:
    """Rewards (the env's summed components), metrics and per-turn detail of a finished episode."""
    for name in ("outcome", "format", "ig", "plan"):
        if name != "plan" or any(name in i["reward_components"] for i in infos):
            trace.record_reward(name, sum(i["reward_components"].get(name, 0.0) for i in infos))
    igs = [i.get("ig") for i in infos]
    metrics = base.episode_metrics(infos)
    trace.record_metrics({**{k: metrics[k] for k in ("ig_sum", "ig_mean", "em", "f1", "answered")},
                          **{k: int(metrics[k]) for k in ("ig_steps", "searches", "invalid")}})
    trace.info["search_env"] = {"question_id": data.question_id, "golden_answers": list(data.golden_answers),
                                "ig": igs, "steps": [base.jsonable(i) for i in infos]}


def _settings(c: SearchQAConfig) -> dict:
    return {k: getattr(c, k) for k in base.DEFAULTS if hasattr(c, k)} | {"ig_clip": None}


def _shared(c: SearchQAConfig) -> tuple[Any, Any, Any]:
    """(corpus, retriever, scorer) for these settings, built once per process."""
    return base.shared_resources(c.corpus, c.retriever, c.scorer, c.scorer_tokenizer)


def load_environment(**settings: Any) -> SearchQAVerifiersEnv:
    """The env, built by verifiers' own loader from the taskset id and ``settings`` (``SearchQAConfig`` fields;
    ``player`` takes an agent config, e.g. ``{"max_turns": 4}``)."""
    player = settings.pop("player", None)
    raw: dict[str, Any] = {"taskset": {"id": ENV_ID, **settings}}
    if player is not None:
        raw["player"] = player
    return vf.load_environment(vf.resolve_env_config(raw))

