"""A tool-calling search environment for TRL's ``GRPOTrainer(environment_factory=...)``.

TRL (>= 1.8; verified with 1.16.0) drives an environment class like this (``trl/trainer/grpo_trainer.py``):

1. ``environment_factory()`` is called with no arguments, once to probe the class and then once per concurrent
   rollout; instances are pooled and reused across batches.
2. Every public *function* of the class except ``reset`` and ``get_reward`` becomes a tool. Its schema is built by
   ``transformers.utils.get_json_schema`` from the type hints and the Google-style docstring, and the model calls
   it through its chat template's native tool calling. Here the tools are :meth:`SearchToolEnv.search` and
   :meth:`SearchToolEnv.answer`; everything else is private or a property.
3. Before each rollout, ``reset(**row)`` is called with the dataset row (``prompt``, ``question``,
   ``golden_answers`` and any other columns). A returned string is appended to the last user message.
4. A tool's return value becomes the tool message (``str(result)``); an exception becomes ``{"error": ...}``.
5. After the rollout, ``get_reward()`` is called once; its float is a reward column named after the class
   (weight 1), summed with any ``reward_funcs``.

Each ``reset`` builds a :class:`~search_env.SearchQAEnv` whose only question is the row's, over a corpus fixed at
construction (the built-in world by default), so the rows may come from any QA set. The corpus, the retriever and
the IG scorer are shared by all episodes and instances (BM25 indexes and the default scorer are cached per
process), so a reset costs little.

Example::

    from trl import GRPOConfig, GRPOTrainer
    from search_env.integrations.trl import SearchEnvFactory, make_dataset

    trainer = GRPOTrainer(
        model="Qwen/Qwen3-0.6B",
        train_dataset=make_dataset(),  # the built-in world's questions, with a tool-use prompt
        environment_factory=SearchEnvFactory(ig_weight=0.1),
        args=GRPOConfig(max_completion_length=1024, max_tool_calling_iterations=4),
    )

TRL takes one scalar per rollout, so the step-level IG rewards are folded into :meth:`SearchToolEnv.get_reward`
as ``ig_weight * sum(IG)``; per-step values stay in ``env.igs`` / ``env.infos`` for logging.

IG's random passages are shared draws (``IGConfig(shared_draws=True)`` unless the config says otherwise): every
episode TRL resets in one batch gets the same draw seed (:class:`~search_env.integrations.base.DrawRounds`: a
batch ends when a pooled instance is reset again), so the rollouts of a group score each turn against the same
random passages and the next batch draws fresh ones. A ``draw_seed`` column in the row overrides it.

Small chat models' own templates often cannot render tools (SmolLM2's: ``ValueError: ... does not support tool
calling``); :func:`with_tool_template` gives such a tokenizer TRL's Qwen2.5 template, which TRL parses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from search_env._cache import built_once
from search_env.data.corpus import Corpus, load_corpus
from search_env.data.qa import QADataset, load_questions
from search_env.env import SearchQAEnv
from search_env.info_gain import IGConfig
from search_env.integrations import base
from search_env.retrieval import Retriever, make_retriever
from search_env.rewards import RewardConfig

__all__ = ["TOOL_PROMPT", "SearchEnvFactory", "SearchToolEnv", "checkpointing_setting", "make_dataset",
           "with_tool_template"]

TOOL_PROMPT = (
    "Answer the question below. You can call the `search` tool to look up passages in a corpus; each call returns "
    "the top {topk} passages for your query. Search as many times as you need (at most {max_searches} times), then "
    "call the `answer` tool once with a short final answer: a few words, no explanation.\n"
    "Question: {question}\n"
)


class SearchToolEnv:
    """One search-QA episode at a time, exposed as the tools ``search(query)`` and ``answer(text)``.

    Args:
        corpus: FlashRAG corpus JSONL path or :class:`~search_env.Corpus` (default: the built-in world's).
        retriever: ``"bm25"`` (default), ``"rank-bm25"``, ``"dense"``, a Search-R1 server URL or a
            :class:`~search_env.Retriever` object.
        topk: passages per search.
        max_searches: searches allowed per episode; one more turn is always kept for ``answer``.
        ig_weight: weight of the summed step IG in :meth:`get_reward` (``None``: ``reward.ig_weight``, i.e. 0).
        ig: compute IG on each search (``True``, ``False`` or an :class:`~search_env.IGConfig`). ``None``:
            only when the IG weight is not 0, so that by default no scoring model is ever loaded.
        scorer: the IG scorer (default: the bundled SmolLM2-135M-Instruct, loaded on the first scored search).
        reward: :class:`~search_env.RewardConfig` (outcome metric and weight, format penalty).
        dialect: how retrieved passages are tagged (``"search-r1"`` or ``"autorefine"``).
        prompt: instruction template with ``{question}``, ``{topk}`` and ``{max_searches}`` fields.
        return_prompt: what ``reset`` returns. ``"auto"``: the formatted prompt when the row has no (or an
            empty) ``prompt``, else ``None``; ``True``: always the prompt; ``False``: always ``None``.
        seed: seeds episode ``i``'s env with ``seed + i`` (``None``: fresh entropy) and the shared draws' rounds
            (``None``: 0), so that processes with the same seed draw alike.
        draws: the draw rounds this instance shares (:class:`SearchEnvFactory` gives its instances one; default:
            one per ``seed`` per process).
    """

    def __init__(
        self,
        corpus: str | Corpus | None = None,
        *,
        retriever: str | Retriever = "bm25",
        topk: int = 3,
        max_searches: int = 3,
        ig_weight: float | None = None,
        ig: bool | IGConfig | None = None,
        scorer: Any = None,
        reward: RewardConfig | None = None,
        dialect: str = "search-r1",
        prompt: str = TOOL_PROMPT,
        return_prompt: bool | str = "auto",
        seed: int | None = None,
        draws: base.DrawRounds | None = None,
    ):
        if max_searches < 0 or topk < 1:
            raise ValueError(f"need topk >= 1 and max_searches >= 0 (got topk={topk}, max_searches={max_searches})")
        if return_prompt not in (True, False, "auto"):
            raise ValueError(f"return_prompt must be True, False or 'auto', not {return_prompt!r}")
        self._corpus = load_corpus(corpus)
        self._retriever = make_retriever(retriever, self._corpus)
        reward = reward or RewardConfig()
        if ig_weight is not None:
            reward = dataclasses.replace(reward, ig_weight=float(ig_weight))
        self._reward = reward
        self._ig = base.grouped_ig((reward.ig_weight != 0) if ig is None else ig)
        self._draws = draws or built_once("trl-draws", seed, lambda: base.DrawRounds(seed))
        self._scorer = scorer
        self._topk, self._max_searches = topk, max_searches
        self._dialect, self._prompt, self._return_prompt = dialect, prompt, return_prompt
        self._seed, self._episodes = seed, 0

        self.env: SearchQAEnv | None = None  # the current episode's env
        self.infos: list[dict] = []  # the env's info dict of every step of the episode
        self.prediction: str | None = None  # the recorded answer
        self._return = 0.0
        self._over = True

    # ------------------------------------------------------------------------------------------ TRL API

    def reset(self, question: str | None = None, golden_answers: Any = None, **row: Any) -> str | None:
        """Start an episode on a dataset row with ``question`` and ``golden_answers`` (or ``answer``).

        Other columns are ignored, except ``id`` and ``metadata`` (kept on the question), ``prompt`` (see
        ``return_prompt``) and ``draw_seed`` (keys IG's shared draws instead of the batch's round). Returns the
        tool-use prompt or ``None``.
        """
        if question is None:
            raise ValueError(
                "SearchToolEnv.reset needs the row's `question` (and `golden_answers`); build the training set with "
                "search_env.integrations.trl.make_dataset(...) or add those columns to yours"
            )
        extra = {"metadata": row["metadata"]} if isinstance(row.get("metadata"), Mapping) else {}
        record = base.question_record(
            question, golden_answers if golden_answers is not None else row.get("answer"), row.get("id"), **extra
        )
        settings = {**base.DEFAULTS, "topk": self._topk, "max_turns": self._max_searches + 1, "dialect": self._dialect}
        self.env = base.question_env(settings, record, resources=(self._corpus, self._retriever, self._scorer),
                                     ig=self._ig, reward=self._reward)
        seed = None if self._seed is None else self._seed + self._episodes
        self._episodes += 1
        options = {"index": 0}
        if self.env.ig and self.env.ig.shared_draws:
            given = row.get("draw_seed")
            options["draw_seed"] = self._draws.begin(self) if given is None else int(given)
        self.env.reset(seed=seed, options=options)
        self.infos, self.prediction, self._return, self._over = [], None, 0.0, False
        if self._return_prompt is False or (self._return_prompt == "auto" and _has_prompt(row.get("prompt"))):
            return None
        return self._format_prompt(self.env.questions[0].question)

    def search(self, query: str) -> str:
        """Search the corpus for passages relevant to a query.

        Args:
            query: A short search query, such as a name or a few keywords.

        Returns:
            The top passages, one per line, as "Doc i(Title: title) text".
        """
        closed = self._closed_message()
        if closed:
            return closed
        if self.env.turn >= self.env.max_turns - 1:
            return (
                f"No searches left (the limit is {self._max_searches}). "
                "Call the `answer` tool with your final answer now."
            )
        obs = self._step("search", query)
        tag = self.env.dialect.documents_tag
        return obs.strip().removeprefix(f"<{tag}>").removesuffix(f"</{tag}>").strip()

    def answer(self, text: str) -> str:
        """Give the final answer to the question. This ends the episode.

        Args:
            text: The final answer: a few words, no explanation.

        Returns:
            A confirmation that the answer was recorded.
        """
        closed = self._closed_message()
        if closed:
            return closed
        obs = self._step("answer", text)
        if self.infos[-1]["action_type"] == "answer":
            self.prediction = self.infos[-1]["prediction"]
            return "Answer recorded. The episode is over."
        return obs.strip()  # an empty answer: the env's feedback, the episode goes on

    def get_reward(self) -> float:
        """The episode return of the wrapped env: outcome (EM of the answer by default, 0 without one)
        + ``ig_weight * sum(IG)`` + the format penalty of any invalid call (e.g. an empty query)."""
        return float(self._return)

    # ------------------------------------------------------------------------------------------ inspection
    # Properties and private methods only: TRL exposes every public function of the class as a tool.

    @property
    def done(self) -> bool:
        """Whether the episode has ended (answered, or out of turns)."""
        return self.env is None or self._over

    @property
    def igs(self) -> list[float]:
        """The IG of each scored search step of the episode."""
        return [info["ig"] for info in self.infos if info.get("ig") is not None]

    @property
    def outcome(self) -> float:
        """The outcome component of the reward (0 until an answer is recorded)."""
        return float(sum(info["reward_components"]["outcome"] for info in self.infos))

    def _format_prompt(self, question: str) -> str:
        return self._prompt.format(question=question, topk=self._topk, max_searches=self._max_searches)

    def _step(self, kind: str, text: Any) -> str:
        obs, reward, terminated, truncated, info = self.env.step({"kind": kind, "text": str(text)})
        self._over = terminated or truncated
        self._return += reward
        self.infos.append(info)
        return obs

    def _closed_message(self) -> str | None:
        if self.env is None:
            return "The environment has not been reset: there is no question yet."
        if not self._over:
            return None
        if self.prediction is not None:
            return "The episode is over: an answer was already recorded. No more tool calls are needed."
        return "The episode is over: the turn limit was reached. No more tool calls are accepted."


class SearchEnvFactory:
    """A picklable zero-argument factory for ``GRPOTrainer(environment_factory=...)``.

    ``SearchEnvFactory(corpus=..., ig_weight=..., **kwargs)`` takes :class:`SearchToolEnv`'s arguments; the corpus
    and the retriever are loaded once, on the first call, and shared by every instance it makes (a
    ``functools.partial(SearchToolEnv, ...)`` works too, but loads a corpus given as a path once per instance).
    When pickled (``AsyncGRPOTrainer`` workers), a corpus given as a path is reloaded on the other side.
    """

    def __init__(self, corpus: str | Corpus | None = None, **env_kwargs: Any):
        self.corpus = corpus
        self.env_kwargs = env_kwargs
        self._shared: dict[str, Any] | None = None

    def __call__(self) -> SearchToolEnv:
        kwargs = dict(self.env_kwargs)
        if self._shared is None:
            draws = base.DrawRounds(kwargs.get("seed"))
            probe = SearchToolEnv(self.corpus, draws=draws, **kwargs)
            self._shared = {"corpus": probe._corpus, "retriever": probe._retriever, "draws": draws}
            return probe
        kwargs["draws"] = self._shared["draws"]
        kwargs["retriever"] = self._shared["retriever"]
        return SearchToolEnv(self._shared["corpus"], **kwargs)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_shared"] = None
        return state


def make_dataset(
    questions: str | QADataset | Iterable[Mapping] | None = None,
    *,
    topk: int = 3,
    max_searches: int = 3,
    prompt: str = TOOL_PROMPT,
    limit: int | None = None,
):
    """A ``datasets.Dataset`` for ``GRPOTrainer``: columns ``prompt`` (one user message with the tool-use
    instructions), ``question``, ``golden_answers`` and ``id``. ``questions``: a FlashRAG QA JSONL path, a list
    of dicts or a :class:`~search_env.QADataset` (default: the built-in world's questions)."""
    import datasets

    items = list(load_questions(questions))[:limit]
    return datasets.Dataset.from_list(
        [
            {
                "prompt": [
                    {
                        "role": "user",
                        "content": prompt.format(question=q.question, topk=topk, max_searches=max_searches),
                    }
                ],
                "question": q.question,
                "golden_answers": list(q.golden_answers),
                "id": q.id,
            }
            for q in items
        ]
    )


def checkpointing_setting(config_class: Any, on: bool) -> dict[str, bool]:
    """``{name: on}`` for the activation-checkpointing field of ``GRPOConfig`` (``config_class``): TRL turns it on
    by default, and transformers 5.24 renamed ``gradient_checkpointing`` to ``activation_checkpointing``."""
    names = {f.name for f in dataclasses.fields(config_class)}
    return {"activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing": on}


def with_tool_template(tokenizer: Any) -> Any:
    """``tokenizer``, given TRL's Qwen2.5 chat template when its own cannot render tools (TRL parses that
    template's ``<tool_call>`` blocks; it uses ``<|im_start|>``/``<|im_end|>``, which ChatML tokenizers such as
    SmolLM2's have). Left-pads, as TRL generates. Needs ``trl``.

    Raises:
        ValueError: the tokenizer has no ``<|im_start|>``/``<|im_end|>`` tokens for the template to use.
    """
    from trl.chat_template_utils import qwen2_5_chat_template, supports_tool_calling

    if not supports_tool_calling(tokenizer):
        vocab = tokenizer.get_vocab()
        missing = [t for t in ("<|im_start|>", "<|im_end|>") if t not in vocab]
        if missing:
            raise ValueError(f"the tokenizer's chat template cannot call tools and it lacks {missing} for the Qwen2.5 "
                             "template; give it a tool-calling chat template")
        tokenizer.chat_template = qwen2_5_chat_template
    tokenizer.padding_side = "left"
    return tokenizer


def _has_prompt(prompt: Any) -> bool:
    """Whether a row's ``prompt`` carries text (TRL puts an empty user message there when the row has none)."""
    if prompt is None:
        return False
    if isinstance(prompt, str):
        return bool(prompt.strip())
    if isinstance(prompt, Sequence) and prompt:
        content = prompt[-1].get("content") if isinstance(prompt[-1], Mapping) else prompt[-1]
        if isinstance(content, list):
            return any(isinstance(p, Mapping) and str(p.get("text", "")).strip() for p in content)
        return bool(str(content or "").strip())
    return False
