"""SearchQAEnv: answer a question by searching a corpus, with a step-level information-gain reward."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import gymnasium as gym
import numpy as np

from search_env._http import is_url
from search_env.actions import MAX_ACTION_CHARS, Answer, Invalid, Search, Turn, parse_turn
from search_env.data.corpus import Corpus, load_corpus
from search_env.data.qa import QADataset, QAItem, load_questions, sub_answers
from search_env.dialects import Dialect, get_dialect, invalid_feedback
from search_env.info_gain import IGConfig, InformationGain, PendingIG, SearchStep
from search_env.info_gain.gain import PendingCredit, score_pairs
from search_env.plan import match_sub_question, plan_coverage
from search_env.retrieval import Hit, Retriever, make_retriever
from search_env.rewards import RewardConfig, exact_match, f1_score
from search_env.spaces import UnicodeText

MAX_OBSERVATION_CHARS = 1 << 24


@dataclass
class PendingStep:
    """A parsed, retrieved turn waiting for its IG scores (the vector env scores many at once)."""

    action: Search | Answer | Invalid
    step: SearchStep | None = None  # for a search: what it adds to the IG contexts
    history: list[SearchStep] = field(default_factory=list)  # earlier steps, refine blocks attached
    ig: PendingIG | None = None
    plan: list[str] | None = None  # sub-questions of a <plan> block this turn (the plan dialect)
    credit: PendingCredit | None = None  # on the turn that ends the episode: its search credit

    @property
    def hits(self) -> list[Hit]:
        return list(self.step.hits) if self.step else []

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """The pairs to score before ``complete_step`` (none when they are deferred): the step's IG, then the
        episode's search credit."""
        return (self.ig.pairs if self.ig else []) + (self.credit.pairs if self.credit else [])


class SearchQAEnv(gym.Env[str, str]):
    """
    ## Description

    An agent answers a question by searching a passage corpus. Each turn it writes text that ends in
    ``<search> query </search>`` or ``<answer> text </answer>``; a search returns the top ``topk`` passages,
    an answer ends the episode. Every search step also gets an information-gain (IG) reward: how much the
    retrieved passages raise a language model's log-probability of the gold answer, against the same
    context with random passages in their place (IG-Search, arXiv 2604.15148). With no arguments the env
    plays on a built-in world of fictional people, places, organisations and works, so a model cannot
    answer from memory.

    ## Action Space

    ``UnicodeText(max_action_chars)``: the text the policy generated this turn, reasoning included (only the first
    complete ``<search>``/``<answer>`` tag outside ``<think>`` counts; see ``search_env.actions``), or a dict
    ``{"kind": "search" | "answer", "text": str}``.

    ## Observation Space

    ``UnicodeText(2**24)``. ``reset`` returns the prompt (instructions and the question); ``step`` returns
    only the text to append to the context: ``"\\n\\n<information>Doc 1(Title: …) …</information>\\n\\n"``
    after a search (``<documents>`` in the ``autorefine`` dialect), feedback after an invalid turn, ``""``
    after an answer. ``env.unwrapped.transcript`` holds the whole context so far.

    ## Rewards

    ``reward = Σ components`` (``info["reward_components"]``, see :class:`RewardConfig`): ``outcome``
    (EM of the answer by default, 0 when cut off), ``format`` (``-0.1`` per invalid turn) and ``ig``
    (``ig_weight · IG``, weight 0 by default); in the ``plan`` dialect, with ``RewardConfig(plan_weight=w)``, also
    ``plan`` (``w`` times the step's rise in ``info["plan_coverage"]``, the plan-aware reward). IG itself is in
    ``info["ig"]`` on search steps; it is ``None`` for a search on the last turn, whose passages the agent never
    reads (the episode is truncated). With ``IGConfig(deferred=True)`` the env scores nothing: ``info["ig"]`` is
    ``None`` and ``info["ig_request"]``
    (:class:`~search_env.info_gain.DeferredIG`) holds what to score; its ``finish`` gives the IG.
    ``info["ig_detail"]["logp_real"]`` is the score of the gold answer given the context after the search; with
    ``IGConfig(score_start=True)``, ``reset``'s ``info["logp_start"]`` is that score before any search (the prefix
    alone), so the two give the potential of every state for ``PotentialShapedReward``. With
    ``IGConfig(credit="sub-answer" | "leave-one-out" | "shapley")`` the step that ends the episode also has
    ``info["search_credit"]``, one value per search step in order (deferred: ``info["credit_request"]``).

    ## Starting State

    A question drawn uniformly with ``self.np_random``, or chosen by ``options={"question_id": id}`` or
    ``options={"index": i}``. ``options={"draw_seed": s}`` keys IG's shared random draws (``IGConfig.shared_draws``;
    default: the reset ``seed``).

    ## Episode End

    Terminated when the agent answers. Truncated after ``max_turns`` turns without an answer (invalid
    turns count). An invalid turn neither terminates nor truncates by itself.

    ## Arguments

    ```python
    gym.make("search_env:SearchQA-v0", questions=None, corpus=None, retriever="bm25", topk=3, max_turns=4,
             dialect="search-r1", reward=None, ig=True, scorer=None, max_action_chars=2**20, render_mode=None)
    ```

    Args:
        questions: FlashRAG QA JSONL path, list of dicts or :class:`QADataset` (default: the built-in world's).
        corpus: FlashRAG corpus JSONL path or :class:`Corpus` (default: the built-in world's). Without one,
            ``retriever`` must be remote and ``ig`` must not use random-passage baselines.
        retriever: ``"bm25"`` (bm25s), ``"rank-bm25"``, ``"dense"`` (bundled MiniLM encoder), a Search-R1
            server URL or list of replica URLs, or any object with ``search``/``batch_search``.
        topk: passages per search.
        max_turns: turns before the episode is truncated (invalid turns count).
        dialect: ``"search-r1"`` (``<information>``), ``"autorefine"`` (``<documents>``, ``<refine>``) or ``"plan"``
            (sub-questions in ``<plan>`` before the first search; ``info["plan"]``, ``info["sub_question"]``), or a
            :class:`~search_env.dialects.Dialect`. ``template=`` is its deprecated old name.
        reward: :class:`RewardConfig` (outcome metric, format penalty, IG weight, plan-aware reward weight).
        ig: ``True`` (default :class:`IGConfig`), ``False`` (no scoring, no model loaded) or an :class:`IGConfig`.
        scorer: the model that scores IG: ``None`` (the bundled SmolLM2-135M-Instruct), a model name or folder
            (loaded once per process and shared), or a scorer object such as
            ``TransformersScorer(policy, tokenizer)`` to score with the policy being trained.
        max_action_chars: longer actions are ``Invalid`` (``reason="too_long"``); also the action space's size.
        render_mode: ``"ansi"`` (``render()`` returns the transcript) or ``"human"`` (prints each turn).

    Raises:
        ValueError: ``topk`` or ``max_turns`` below 1, an unknown ``render_mode`` or ``dialect``, a corpus
            without questions, or random-passage IG without a corpus.

    A remote retriever or scorer that fails raises ``RetrieverUnavailable`` or ``ScorerUnavailable`` from ``step``
    and leaves the episode as it was (the random draws of IG's baselines too), so the step can be retried.

    ## Example

    >>> import gymnasium as gym
    >>> env = gym.make("search_env:SearchQA-v0", ig=False)
    >>> prompt, info = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step("<search> After Holmessa </search>")
    >>> info["action_type"], obs.lstrip().startswith("<information>")
    ('search', True)
    >>> obs, reward, terminated, truncated, info = env.step("<answer> I do not know </answer>")
    >>> terminated, reward, info["em"]
    (True, 0.0, 0.0)

    ## Vectorized environment

    ``gym.make_vec("search_env:SearchQA-v0", num_envs=8, vectorization_mode="vector_entry_point")`` (or
    :class:`~search_env.vector.SearchQAVectorEnv` directly) steps many episodes together over one corpus,
    retriever and scorer: one ``batch_search`` for all searches and one scorer call for all IG contexts per
    step, with the same results as separate envs with the same seeds. A ``None`` action leaves a sub-env as it
    is, so episodes that end at different turns can be stepped together.

    ## Version History

    - v0: initial release.
    """

    metadata = {"render_modes": ["ansi", "human"], "render_fps": 1}

    def __init__(
        self,
        questions: str | Sequence[Mapping] | QADataset | None = None,
        corpus: str | Corpus | None = None,
        retriever: str | Retriever = "bm25",
        topk: int = 3,
        max_turns: int = 4,
        dialect: str | Dialect = "search-r1",
        reward: RewardConfig | None = None,
        ig: bool | IGConfig = True,
        scorer: Any = None,
        max_action_chars: int = MAX_ACTION_CHARS,
        render_mode: str | None = None,
        template: str | None = None,
    ):
        if template is not None:
            warnings.warn("SearchQAEnv(template=...) is now dialect=...; template= will be removed",
                          DeprecationWarning, stacklevel=2)
            dialect = template
        if topk < 1 or max_turns < 1:
            raise ValueError(f"topk and max_turns must be at least 1 (got topk={topk}, max_turns={max_turns})")
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, not {render_mode!r}")
        self.questions, self.corpus = _resolve_data(questions, corpus)
        self.retriever = make_retriever(retriever, self.corpus)
        self.topk, self.max_turns = topk, max_turns
        self.dialect = get_dialect(dialect)
        self.reward_config = reward or RewardConfig()
        if isinstance(scorer, str) and not is_url(scorer):
            from search_env.agents.models import check_model

            check_model(scorer, "scorer")  # a name that names no model fails here, at once, not at the first step
        config = IGConfig() if ig is True else (ig or None)
        self.ig = config and InformationGain(config, corpus=self.corpus, dialect=self.dialect, scorer=scorer,
                                             ig_weight=self.reward_config.ig_weight)
        self._scorer = scorer
        self.max_action_chars = max_action_chars
        self.render_mode = render_mode
        self.action_space = UnicodeText(max_action_chars)
        self.observation_space = UnicodeText(MAX_OBSERVATION_CHARS)

        self.item: QAItem | None = None
        self.transcript = self._prompt = ""
        self.steps: list[SearchStep] = []
        self.turn = 0
        self._prefix: str | None = None
        self._done = True
        self.plan: list[str] | None = None  # the plan dialect's sub-questions, once written
        self._plan_searches: list[tuple[int, str]] = []  # (sub-question, query) of each search since the plan

    @property
    def ig_config(self) -> IGConfig | None:
        return self.ig.config if self.ig else None

    @property
    def scorer(self):
        """The IG scorer, loaded on first use so that ``gym.make(..., ig=False)`` never loads a model."""
        return self.ig.scorer if self.ig else self._scorer

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[str, dict]:
        super().reset(seed=seed)
        self.item = self._choose_question(options or {})
        self.transcript = self._prompt = self.dialect.prompt(self.item.question, self.topk)
        self.steps, self.turn, self._prefix, self._done = [], 0, None, False
        self.plan, self._plan_searches = None, []
        self._render(self.transcript)
        info = {"question_id": self.item.id, "golden_answers": list(self.item.golden_answers)}
        if self.ig:
            info.update(self.ig.start(self.ig.render_prefix(self._prompt, ""), self.item.golden_answers,
                                      question_id=self.item.id, draw_seed=(options or {}).get("draw_seed", seed),
                                      sub_answers=sub_answers(self.item), rng=self.np_random))
        return self.transcript, info

    def step(self, action: str | Mapping) -> tuple[str, float, bool, bool, dict]:
        state = self.np_random.bit_generator.state
        pending = self.prepare_step(action)
        try:
            scores = score_pairs(self.scorer, pending.pairs) if pending.pairs else np.empty(0)
        except BaseException:  # e.g. ScorerUnavailable: the episode stays as it was, IG's draws included
            self.np_random.bit_generator.state = state
            raise
        return self.complete_step(pending, scores)

    def parse(self, action: str | Mapping) -> Turn:
        """The turn's action (and, in a dialect with ``<plan>``, its plan), as this episode reads it now."""
        return parse_turn(action, plan_tag=self.dialect.plan_tag, planned=self.plan is not None,
                          max_action_chars=self.max_action_chars)

    def prepare_step(
        self, action: str | Mapping | Turn, hits: Sequence[Hit] | None = None, pool: Sequence[str] | None = None,
        refine_pool: Sequence[tuple[str, str]] | None = None,
    ) -> PendingStep:
        """Parse the turn (unless it is a :class:`Turn` from :meth:`parse`), retrieve (unless ``hits`` are given)
        and draw the IG counterfactuals.

        Nothing about the episode changes here, so a step whose retrieval raised can simply be retried.
        ``pool``: documents blocks to draw IG baselines from instead of the corpus (vector env option);
        ``refine_pool``: other questions' (documents, refine) pairs, for ``IGConfig(credit="refine")``.
        """
        if self._done:
            raise RuntimeError("the episode is over; call reset() before step()")
        turn = action if isinstance(action, Turn) else self.parse(action)
        parsed = turn.action
        pending = PendingStep(parsed, history=self._history_with_refine(parsed.text), plan=turn.plan)
        if isinstance(parsed, Search):
            if hits is None:
                hits = self.retriever.search(parsed.query, self.topk)
            pending.step = SearchStep(parsed.query, self.dialect.documents_block(hits), tuple(hits))
            # A search on the last turn truncates the episode: its passages are never read, so it gains nothing.
            if self.ig and self.turn + 1 < self.max_turns:
                pending.ig = self.ig.prepare(self._prefix_for(parsed), pending.history, pending.step,
                                             self.item.golden_answers, rng=self.np_random, pool=pool,
                                             turn=self.turn + 1)
        if self.ig and (isinstance(parsed, Answer) or self.turn + 1 >= self.max_turns):  # the episode ends here
            pending.credit = self.ig.prepare_credit(self._prefix, pending.history, self.item.golden_answers,
                                                    rng=self.np_random, pool=refine_pool)
        return pending

    def complete_step(self, pending: PendingStep, scores: np.ndarray) -> tuple[str, float, bool, bool, dict]:
        """Apply a prepared turn given the scores of ``pending.requests``; the second half of ``step``."""
        action, rc = pending.action, self.reward_config
        self.turn += 1
        info: dict[str, Any] = {"action_type": None, "turn": self.turn}
        coverage = plan_coverage(self.plan, self._plan_searches)
        if pending.plan is not None:
            self.plan, self._plan_searches = pending.plan, []
            info["plan"] = list(pending.plan)
        if isinstance(action, Search) and self.plan:
            info["sub_question"] = match_sub_question(action.query, self.plan, [k for k, _ in self._plan_searches])
            self._plan_searches.append((info["sub_question"], action.query))
        if self.plan:
            info["plan_coverage"] = plan_coverage(self.plan, self._plan_searches)
        plan_gain = info.get("plan_coverage", 0.0) - coverage
        terminated = False
        self.steps = pending.history
        if isinstance(action, Search):
            if self.ig:
                self._prefix = self._prefix_for(action)
            self.steps.append(pending.step)
            obs = self.dialect.observation(pending.hits)
            info.update(
                action_type="search",
                query=action.query,
                doc_ids=[h.doc_id for h in pending.hits],
                doc_scores=[float(h.score) for h in pending.hits],
            )
            info.update(self.ig.finish(pending.ig, scores[: len(pending.ig.pairs) if pending.ig else 0])
                        if self.ig else {"ig": None})
            components = rc.components(ig=info["ig"], plan=plan_gain)
        elif isinstance(action, Answer):
            golds = self.item.golden_answers
            components = rc.components(outcome=rc.outcome_score(action.answer, golds), plan=plan_gain)
            obs, terminated = "", True
            info.update(
                action_type="answer",
                prediction=action.answer,
                em=exact_match(action.answer, golds),
                f1=f1_score(action.answer, golds),
                golden_answers=list(golds),
            )
        else:
            components = rc.components(invalid=True)
            obs = invalid_feedback(action.message)
            info.update(action_type="invalid", invalid_reason=action.reason)
        truncated = not terminated and self.turn >= self.max_turns
        self._done = terminated or truncated
        if pending.credit is not None:
            info.update(self.ig.finish_credit(pending.credit, scores[len(pending.ig.pairs) if pending.ig else 0 :]))
        info["n_searches"] = len(self.steps)
        info["reward_components"] = components
        self.transcript += action.text + obs
        self._render(action.text + obs)
        return obs, float(sum(components.values())), terminated, truncated, info

    def render(self) -> str | None:
        if self.render_mode == "ansi":
            return self.transcript
        return None

    def _render(self, text: str) -> None:
        if self.render_mode == "human":
            print(text, end="", flush=True)

    def _choose_question(self, options: Mapping) -> QAItem:
        if "question_id" in options:
            qid = options["question_id"]
            if qid not in self.questions:
                raise KeyError(f"no question with id {qid!r} in {self.questions.name}")
            return self.questions.get(qid)
        if "index" in options:
            index = int(options["index"])
            if not -len(self.questions) <= index < len(self.questions):
                raise IndexError(f"question index {index} out of range for {len(self.questions)} questions")
            return self.questions[index]
        return self.questions[int(self.np_random.integers(len(self.questions)))]

    def _prefix_for(self, action: Search) -> str:
        """The IG context prefix: the prompt plus the agent's text before its first ``<search>``."""
        if self._prefix is None:
            before = action.text.rsplit("<search>", 1)[0] if "<search>" in action.text else ""
            return self.ig.render_prefix(self._prompt, self.transcript[len(self._prompt) :] + before)
        return self._prefix

    def _history_with_refine(self, text: str) -> list[SearchStep]:
        """The steps so far; in the autorefine dialect the last one gets the ``<refine>`` of this turn."""
        steps = list(self.steps)
        tag = self.dialect.refine_tag
        if tag and steps and not steps[-1].refine:
            start = text.find(f"<{tag}>")
            end = text.find(f"</{tag}>", start)
            if 0 <= start < end:
                steps[-1] = replace(steps[-1], refine=text[start : end + len(tag) + 3])
        return steps


def _resolve_data(questions, corpus) -> tuple[QADataset, Corpus | None]:
    if questions is None and corpus is None:
        return load_questions(None), load_corpus(None)
    if questions is None:
        raise ValueError("a corpus was given without questions; pass `questions` too (FlashRAG QA JSONL)")
    return load_questions(questions), (load_corpus(corpus) if corpus is not None else None)
