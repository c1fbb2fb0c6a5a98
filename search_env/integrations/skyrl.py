"""SkyRL: a ``skyrl_gym`` text env over :class:`~search_env.SearchQAEnv`, and an advantage estimator that puts each
search turn's IG on that turn's tokens.

**The env** (:class:`SearchQATextEnv`, registered as ``"search_env"`` by :func:`register`). SkyRL makes one per
trajectory, ``SearchQATextEnv(env_config=..., extras=<the dataset row's other columns>)``, then calls
``init(prompt)`` and ``step(response)`` until ``done``. The question comes from the row (``extra_info.question``,
``reward_spec.ground_truth.target``, ``extra_info.question_id``), as :func:`dataset_rows` writes it, so rows may
come from any QA set. Observations are user messages; ``metadata`` is the env's ``info`` (JSON-safe, with
``ig_request`` as a dict under deferred IG). Rewards, per turn (SkyRL puts each on the last token of the turn's
response):

- a turn that does not end the episode: ``ig_weight * clip(IG, -ig_clip, ig_clip)`` (0 when it has no IG) plus
  the format penalty of an invalid turn; a turn whose reward would be exactly 0 gets :data:`TURN_MARK` (-1e-30)
  instead, so that the estimator still sees where it ends;
- the last turn: the outcome (EM by default; 0 when cut off at ``max_turns``) plus its format penalty;
- every turn, with ``plan_weight`` set (the plan dialect), also its plan-aware term (:mod:`search_env.plan`).

SkyRL's built-in GRPO sums a trajectory's token rewards, so with it IG only shifts the trajectory's scalar; for
credit on the turn that searched, register :func:`ig_advantage` and select it as the advantage estimator.

**Settings** (SkyRL's config has a fixed schema for env settings, so they come from, later ones winning): the
defaults below, the JSON in the environment variable ``SEARCH_ENV_SKYRL`` (or a path to a JSON file), ``env_config``,
and the row's ``extras["search_env"]``. ``corpus`` (FlashRAG JSONL; default the built-in world), ``retriever``
(``"bm25"``, ``"dense"`` or a retrieval server URL), ``topk``, ``max_turns``, ``dialect``, ``outcome``,
``format_penalty``, ``ig`` (false, true, or a dict of :class:`~search_env.IGConfig` fields such as ``baseline``,
``n_random``, ``deferred``), ``scorer`` (``None``/``"bundled"``, a model folder, or vLLM server URLs with
``scorer_tokenizer``), ``ig_weight``, ``ig_clip``, ``plan_weight``, ``seed``. The corpus, retriever and scorer
are built once per process and shared.

**Shared draws**: IG's random passages are drawn with ``IGConfig(shared_draws=True)`` unless the ``ig`` setting
says ``shared_draws: false``. SkyRL makes one env per trajectory and closes it when the trajectory ends, and starts
a batch's trajectories together, so every env that begins while another of its batch is still open gets the
same draw seed (:class:`~search_env.integrations.base.DrawRounds`, from the ``seed`` setting); the rollouts of a
group score each turn against the same random passages and the next batch draws fresh ones. A row's
``extras["draw_seed"]`` overrides it.

**Where IG is scored**: by a frozen local scorer in the env worker (``scorer``: a folder), on the rollout vLLM
server (``scorer``: its URL, scoring with the weights being trained), or deferred (``ig: {"deferred": true}``):
the requests ride in ``metadata`` for a custom generator to score in the trainer's own forward pass.

**The estimator** (:func:`ig_advantage`, SkyRL's custom-estimator signature
``(token_level_rewards, response_mask, index, **kwargs) -> (advantages, returns)``). SkyRL's trainer hands it the
per-token rewards, ``response_mask`` (1 on every response token, observations included: only ``loss_mask``, which
the estimator does not get, separates the turns), the group ids, ``grpo_norm_by_std`` and its algorithm config.
So a turn ends where a reward sits (or where a run of ``response_mask == 1`` ends), and the final turn at the
response's last token. The trajectory's outcome is the reward on that last token, group-normalised over rollouts
of the same ``index`` (:func:`search_env.training.credit.group_advantages`; ``grpo_norm_by_std=False`` is Dr.
GRPO); each earlier turn's reward (this env's ``ig_weight * clip(IG)``) is added to that turn's tokens
(:func:`search_env.training.credit.token_advantages`). For two rollouts of a question, one right (outcome 1) and one
wrong (0), whose first turns earned 0.2: the right one's turn-1 tokens get ``0.5 / (std + 1e-6) + 0.2 = 0.9071``, its
last turn's ``0.7071``; the wrong one's ``-0.5071`` and ``-0.7071`` (Dr. GRPO: ``0.7, 0.5, -0.3, -0.5``). It needs
``trainer.algorithm.use_kl_in_reward=false`` (a KL term on every token's reward would hide where turns end) and
per-trajectory rows (``generator.step_wise_trajectories=false``: step-wise, SkyRL keeps only the last step's
reward).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import numpy as np

from search_env._cache import built_once
from search_env.data.qa import QADataset, load_questions
from search_env.dialects import get_dialect
from search_env.integrations import base
from search_env.training.credit import group_advantages, token_advantages

try:  # the estimator and the row helpers work without skyrl-gym
    from skyrl_gym.envs.base_text_env import BaseTextEnv, BaseTextEnvStepOutput
except ImportError:  # pragma: no cover - exercised where skyrl-gym is not installed
    BaseTextEnv, BaseTextEnvStepOutput = object, dict

__all__ = ["ENV_ID", "SETTINGS_VARIABLE", "TURN_MARK", "SearchQATextEnv", "dataset_rows", "ig_advantage", "register",
           "register_advantage_estimator"]

ENV_ID = "search_env"
SETTINGS_VARIABLE = "SEARCH_ENV_SKYRL"
TURN_MARK = -1e-30  # the reward of a non-final turn that earned 0: marks where the turn ends for ig_advantage
DEFAULTS = base.DEFAULTS


def settings(env_config: Mapping | None = None, extras: Mapping | None = None) -> dict:
    """The env's settings: defaults, then ``$SEARCH_ENV_SKYRL``, ``env_config``, ``extras["search_env"]``."""
    known = {k: v for k, v in dict(env_config or {}).items() if k in DEFAULTS}
    return base.make_settings(DEFAULTS, SETTINGS_VARIABLE, known, (extras or {}).get("search_env"))


class SearchQATextEnv(BaseTextEnv):
    """One search-QA episode as a SkyRL ``BaseTextEnv`` (see the module docstring).

    Raises:
        ValueError: the row has no question or no golden answers, or an unknown setting.
    """

    def __init__(self, env_config: Mapping | None = None, extras: Mapping | None = None):
        super().__init__()
        extras = dict(extras or {})
        self.settings = s = settings(env_config, extras)
        info = dict(extras.get("extra_info") or {})
        truth = (extras.get("reward_spec") or {}).get("ground_truth") or {}
        answers = truth.get("target") if isinstance(truth, Mapping) else truth
        try:
            record = base.question_record(info.get("question") or extras.get("question"),
                                          answers if answers is not None else extras.get("golden_answers"),
                                          info.get("question_id"))
        except ValueError:
            raise ValueError("a search_env row needs extra_info.question and reward_spec.ground_truth.target "
                             "(search_env.integrations.skyrl.dataset_rows writes them)") from None
        self.max_turns = int(extras.get("max_turns") or s["max_turns"])
        self.turns = 0
        self.env = base.question_env({**s, "max_turns": self.max_turns}, record,
                                     ig=base.grouped_ig(base.ig_setting(s["ig"])))
        self.infos: list[dict] = []
        self._draw_seed = extras.get("draw_seed")

    def init(self, prompt: list[dict] | None = None) -> tuple[list[dict], dict]:
        """Start the episode; the row's prompt is kept, or the env's own prompt is the user message."""
        options = {"index": 0}
        if self.env.ig and self.env.ig.shared_draws:
            options["draw_seed"] = (int(self._draw_seed) if self._draw_seed is not None
                                    else draw_rounds(self.settings["seed"]).begin(self))
        obs, info = self.env.reset(seed=self.settings["seed"], options=options)
        self.turns, self.infos = 0, []
        return (list(prompt) if prompt else [{"role": "user", "content": obs}]), {"question_id": info["question_id"]}

    def step(self, action: str) -> BaseTextEnvStepOutput:
        obs, _, terminated, truncated, info = self.env.step(action)
        self.turns += 1
        self.infos.append(info)
        done = bool(terminated or truncated)
        reward = base.turn_reward(info, done, ig_weight=self.settings["ig_weight"], ig_clip=self.settings["ig_clip"])
        if not done:
            reward = reward or TURN_MARK
        return BaseTextEnvStepOutput(observations=[] if done else [{"role": "user", "content": obs}],
                                     reward=float(reward),
                                     done=done, metadata=base.jsonable(info), postprocessed_action=None)

    def get_metrics(self) -> dict[str, float]:
        """Per episode: em, f1, answered, truncated, searches, invalid turns, the number and mean of IG values."""
        return {k: v for k, v in base.episode_metrics(self.infos).items() if k != "ig_sum"}

    def close(self) -> None:
        draw_rounds(self.settings["seed"]).end(self)
        self.env.close()


def draw_rounds(seed: int | None) -> base.DrawRounds:
    """The process's draw rounds for ``seed`` (SkyRL's generator makes every env of a batch in one process)."""
    return built_once("skyrl-draws", seed, lambda: base.DrawRounds(seed))


def register(env_id: str = ENV_ID) -> None:
    """Register :class:`SearchQATextEnv` with ``skyrl_gym``; call it inside SkyRL's Ray entrypoint, the process whose
    generator makes the envs (``skyrl_gym``'s registry is per process)."""
    import skyrl_gym

    if env_id not in skyrl_gym.registry:
        skyrl_gym.register(id=env_id, entry_point="search_env.integrations.skyrl:SearchQATextEnv")


def dataset_rows(questions: Any = None, *, topk: int = 3, dialect: str = "search-r1", max_turns: int | None = None,
                 env_id: str = ENV_ID, limit: int | None = None) -> list[dict]:
    """SkyRL dataset rows for a QA set (a FlashRAG JSONL path, dicts or a :class:`~search_env.QADataset`; default:
    the built-in world's questions): ``prompt`` (the env's prompt as one user message), ``env_class``,
    ``reward_spec`` (Search-R1's ``{"method": "rule", "ground_truth": {"target": answers}}``), ``extra_info``
    (``question``, ``question_id``) and ``data_source``. Write them with ``pandas.DataFrame(rows).to_parquet``."""
    items = questions if isinstance(questions, QADataset) else load_questions(questions)
    rows = []
    for q in list(items)[:limit]:
        row = {"data_source": "search_env", "env_class": env_id,
               "prompt": [{"role": "user", "content": get_dialect(dialect).prompt(q.question, topk)}],
               "reward_spec": {"method": "rule", "ground_truth": {"target": list(q.golden_answers)}},
               "extra_info": {"question": q.question, "question_id": q.id}}
        if max_turns is not None:
            row["max_turns"] = int(max_turns)
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------- estimator


def _turn_ends(rewards: np.ndarray, mask: np.ndarray) -> list[list[int]]:
    """Per row, the last token of each turn: every non-zero reward inside the response, every end of a run of
    ``mask == 1``, and the response's last token (the final turn's end)."""
    out = []
    for row_rewards, row_mask in zip(rewards, mask):
        inside = row_mask != 0
        if not inside.any():
            out.append([])
            continue
        run_ends = np.flatnonzero(inside & ~np.concatenate([inside[1:], [False]]))
        ends = set(np.flatnonzero(inside & (row_rewards != 0)).tolist()) | set(run_ends.tolist())
        out.append(sorted(e for e in ends if e <= run_ends[-1]))
    return out


def ig_advantage(token_level_rewards: Any, response_mask: Any, index: Any, *, ig_weight: float = 1.0,
                 grpo_norm_by_std: bool | None = None, norm_adv_by_std_in_grpo: bool | None = None,
                 epsilon: float = 1e-6, config: Any = None, **_: Any) -> tuple[Any, Any]:
    """SkyRL custom advantage estimator: group-normalised outcome on every response token, plus each non-final
    turn's reward (``ig_weight`` times it) on that turn's tokens. ``(advantages, returns)``, both ``(B, L)``, of
    the input's kind.

    A turn ends at its last token, where SkyRL puts the turn's reward; the final turn ends at the response's
    last token. Turns are found from the rewards SkyRL hands the estimator: a non-zero reward (this env marks a
    turn whose reward would be 0 with :data:`TURN_MARK`) or the end of a run of ``response_mask == 1`` ends a
    turn. A turn's tokens run from just after the previous turn's end, so the observation tokens before a turn
    (masked out of SkyRL's loss by ``loss_mask``) take that turn's value.

    Args:
        token_level_rewards: ``(B, L)``: each turn's reward on its last token (SkyRL's per-turn rewards).
        response_mask: ``(B, L)``: 1 on the response's tokens (in SkyRL, observations included), 0 on padding.
        index: ``(B,)`` group ids (rollouts of the same prompt share one).
        ig_weight: scales the turn rewards (1: as the env gave them, already ``ig_weight * clip(IG)``).
        grpo_norm_by_std: divide by the group's std (GRPO, the default); False: only centre (Dr. GRPO).
            SkyRL passes ``trainer.algorithm.grpo_norm_by_std``.
        norm_adv_by_std_in_grpo: verl's name for ``grpo_norm_by_std``.
        epsilon: added to the std.
        config: SkyRL's algorithm config; ``use_kl_in_reward`` must be off (a KL term on every token's reward
            would hide where the turns end).

    Raises:
        ValueError: the shapes differ, the two std flags disagree, or ``config.use_kl_in_reward`` is on.
    """
    if config is not None and bool(getattr(config, "use_kl_in_reward", False)):
        raise ValueError("ig_advantage finds turns by their rewards; set trainer.algorithm.use_kl_in_reward=false "
                         "(use the KL loss, use_kl_loss, instead)")
    flags = {f for f in (grpo_norm_by_std, norm_adv_by_std_in_grpo) if f is not None}
    if len(flags) > 1:
        raise ValueError("grpo_norm_by_std and norm_adv_by_std_in_grpo disagree; set only SkyRL's "
                         "trainer.algorithm.grpo_norm_by_std")
    scale = bool(flags.pop()) if flags else True
    torch_in = hasattr(token_level_rewards, "detach")
    rewards = token_level_rewards.detach().cpu().double().numpy() if torch_in else np.asarray(token_level_rewards,
                                                                                              np.float64)
    mask = response_mask.detach().cpu().numpy() if hasattr(response_mask, "detach") else np.asarray(response_mask)
    if rewards.shape != mask.shape or rewards.ndim != 2:
        raise ValueError(f"token_level_rewards {rewards.shape} and response_mask {mask.shape} must be the same (B, L)")
    ends = _turn_ends(rewards, mask)
    n_turns = max([len(e) for e in ends] + [1])
    outcome = np.zeros(len(rewards))
    step = np.full((len(rewards), n_turns), np.nan)
    token_turns = np.full(rewards.shape, -1, dtype=np.int64)
    for i, row_ends in enumerate(ends):
        start = 0
        for t, end in enumerate(row_ends):
            if t == len(row_ends) - 1:
                outcome[i] = rewards[i, end]
            else:
                step[i, t] = rewards[i, end]
                token_turns[i, start:end + 1] = t
            start = end + 1
    keys = index.tolist() if hasattr(index, "tolist") else list(index)
    advantages = group_advantages(outcome, keys, scale=scale, eps=epsilon)
    out = token_advantages(advantages, token_turns, step, ig_weight=ig_weight, ig_clip=None, mask=mask)
    if torch_in:
        import torch

        out = torch.as_tensor(out, device=token_level_rewards.device, dtype=token_level_rewards.dtype)
    return out, out


REGISTRIES = ("skyrl.backends.skyrl_train.utils.ppo_utils", "skyrl_train.utils.ppo_utils")  # skyrl, skyrl-train


def _ours(func: Any) -> tuple | None:
    """``(ig_advantage, defaults)`` if ``func`` is :func:`ig_advantage` or a partial of it, else None."""
    if func is ig_advantage:
        return ig_advantage, {}
    if isinstance(func, partial) and func.func is ig_advantage and not func.args:
        return ig_advantage, dict(func.keywords)
    return None


def register_advantage_estimator(name: str = "search_env_ig", **defaults: Any) -> None:
    """Register :func:`ig_advantage` (with ``defaults``, e.g. ``ig_weight``) under ``name`` in the
    ``AdvantageEstimatorRegistry`` of every SkyRL installed (``skyrl``, ``skyrl-train``); then set
    ``trainer.algorithm.advantage_estimator`` to ``name``.

    Call it in the driver before SkyRL's ``validate_cfg`` (at the top of the module that runs ``main()``, as
    SkyRL's custom-estimator example does): ``initialize_ray`` then copies the registry to its Ray actor, from
    which the trainer reads it. Calling it again is safe: the same registration is a no-op, other ``defaults``
    replace the earlier ones.

    Raises:
        ImportError: no SkyRL is installed (or its ``ppo_utils`` does not import).
        ValueError: ``name`` is registered to an estimator that is not :func:`ig_advantage`.
    """
    import importlib

    func = partial(ig_advantage, **defaults) if defaults else ig_advantage
    errors, done = [], 0
    for module in REGISTRIES:
        try:
            registry = importlib.import_module(module).AdvantageEstimatorRegistry
        except (ImportError, AttributeError) as e:
            errors.append(f"{module}: {type(e).__name__}: {e}")
            continue
        if name in registry.list_available():
            existing = _ours(registry.get(name))
            if existing is None:
                raise ValueError(f"advantage estimator {name!r} is already registered in {module} to another function")
            if existing == _ours(func):
                done += 1
                continue
            registry.unregister(name)
        registry.register(name, func)
        done += 1
    if not done:
        raise ImportError("SkyRL's AdvantageEstimatorRegistry did not import (pip install skyrl, Python >= 3.12; "
                          "or skyrl-train): " + "; ".join(errors))
