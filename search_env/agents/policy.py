"""Agents that act in the env from its text, and the loop that plays an episode.

- :func:`chat_prompt`: the model input for a turn: the env's prompt as the user message of the model's chat
  template (with a worked example in front), then the episode so far as the assistant's words.
- :class:`LMPolicy`: generates each turn with a causal LM (:func:`search_env.agents.models.load_causal_lm` loads one),
  stopping after ``</search>`` or ``</answer>``.
- :class:`OraclePolicy`: searches the gold passages' titles, then answers (a reference ceiling); with
  ``accuracy`` < 1, a noisy teacher that sometimes searches another entity it has read about.
- :func:`play_episode`: one episode of any policy with an ``act(prompt, continuation)`` method;
  :func:`play_episodes`: many, in a vector env's sub-envs, batched.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from search_env.dialects import Dialect, get_dialect, search_block
from search_env.records import episode_record, turn_record, vector_info_at

STOP_STRINGS = ("</search>", "</answer>")


def chat_prompt(
    tokenizer, prompt: str, continuation: str = "", *, dialect: str | Dialect = "search-r1", few_shot: bool = True
) -> str:
    """The model input for a turn: the prompt as the user's message of the tokenizer's chat template (after
    the dialect's worked example when ``few_shot``), then the episode so far as the assistant's words.

    Args:
        tokenizer: its ``chat_template`` is used; without one the text is plain (prompt, newline, episode).
        prompt: the env's ``reset`` observation.
        continuation: everything after it so far (``env.unwrapped.transcript[len(prompt):]``).
        dialect: whose worked example is shown.
        few_shot: show the worked example.
    """
    user = (get_dialect(dialect).worked_example() if few_shot else "") + prompt
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": user}]
        head = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        head = user + "\n"
    return head + continuation.lstrip()


def stop_criteria(tokenizer):
    """``stopping_criteria`` for ``model.generate`` that end a turn after ``</search>`` or ``</answer>``.

    Build it once per tokenizer: it precomputes tables over the whole vocabulary (about a second).
    """
    from transformers import StoppingCriteriaList, StopStringCriteria

    return StoppingCriteriaList([StopStringCriteria(tokenizer, list(STOP_STRINGS))])


def cut_at_stop(text: str) -> str:
    """The text up to and including the first closing action tag (generation may run a token past it)."""
    ends = [text.find(s) + len(s) for s in STOP_STRINGS if s in text]
    return text[: min(ends)] if ends else text


class LMPolicy:
    """Generates each turn with a Hugging Face causal LM, stopping after ``</search>`` or ``</answer>``.

    Args:
        model: a causal LM (see :func:`load_causal_lm`).
        tokenizer: its tokenizer.
        dialect: the env's dialect (its worked example is shown when ``few_shot``).
        max_new_tokens: tokens per turn.
        temperature: sampling temperature; 0 is greedy.
        few_shot: put the dialect's worked example before the prompt.
        constrained: for models too small to follow the tag format: the model first chooses ``<search>``
            or ``<answer>`` (whichever opening tag it gives the higher log-probability; ``act(...,
            force="search" | "answer")`` imposes one), then writes the content, so every turn is well
            formed and the words are still the model's.
    """

    def __init__(
        self,
        model,
        tokenizer,
        *,
        dialect: str | Dialect = "search-r1",
        max_new_tokens: int = 96,
        temperature: float = 0.0,
        few_shot: bool = True,
        constrained: bool = False,
    ):
        self.model, self.tokenizer = model, tokenizer
        self.dialect = get_dialect(dialect)
        self.max_new_tokens, self.temperature, self.few_shot = max_new_tokens, temperature, few_shot
        self.constrained = constrained
        self._stopping = None

    def prompt_text(self, prompt: str, continuation: str = "") -> str:
        """The model input for this turn (:func:`chat_prompt`)."""
        return chat_prompt(self.tokenizer, prompt, continuation, dialect=self.dialect, few_shot=self.few_shot)

    def act(self, prompt: str, continuation: str = "", *, force: str | None = None) -> str:
        """One turn, given the env's prompt and the episode's text since it."""
        return self.act_batch([prompt], [continuation], force=force)[0]

    def act_batch(self, prompts: Sequence[str], continuations: Sequence[str], *,
                  force: str | Sequence[str | None] | None = None) -> list[str]:
        """One turn for each (prompt, episode-so-far) pair, generated together with left padding; ``force`` is one
        action for all, or one per pair (``None``: the model's choice)."""
        texts = [self.prompt_text(p, c) for p, c in zip(prompts, continuations)]
        if not self.constrained:
            return [cut_at_stop(t) for t in self._generate(texts)]
        forces = [force] * len(texts) if force is None or isinstance(force, str) else list(force)
        if len(forces) != len(texts):
            raise ValueError(f"force: expected one action per prompt ({len(texts)}), got {len(forces)}")
        free = [i for i, f in enumerate(forces) if f is None]
        chosen = dict(zip(free, self._choose_tags([texts[i] for i in free]) if free else []))
        tags = [chosen[i] if f is None else f"<{f}>" for i, f in enumerate(forces)]
        contents = self._generate([t + tag for t, tag in zip(texts, tags)])
        # The content runs to the first tag the model writes (its closing tag, normally).
        return [f"{tag} {c.split('<', 1)[0].strip()} </{tag[1:]}" for tag, c in zip(tags, contents)]

    def _choose_tags(self, texts: Sequence[str]) -> list[str]:
        """The opening tag each context makes more likely: log p("<search>") vs log p("<answer>")."""
        import torch

        options = ("<search>", "<answer>")
        batch = [t + o for t in texts for o in options]
        tok = self._tokenizer_for_batch()
        enc = tok(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(self.model.device)
        lengths = [len(tok(o, add_special_tokens=False)["input_ids"]) for o in options] * len(texts)
        keep = max(lengths) + 1  # logits only where the option tokens are predicted
        with torch.inference_mode():
            logits = self.model(**enc, logits_to_keep=keep).logits[:, :-1].float()
        targets = enc["input_ids"][:, -keep + 1 :]
        token_logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        scores = [float(token_logp[i, -n:].sum()) for i, n in enumerate(lengths)]
        return [options[int(scores[2 * i + 1] > scores[2 * i])] for i in range(len(texts))]

    def _tokenizer_for_batch(self):
        tok = self.tokenizer
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        tok.padding_side = "left"
        return tok

    def _generate(self, texts: Sequence[str]) -> list[str]:
        import torch

        if self._stopping is None:
            self._stopping = stop_criteria(self.tokenizer)
        tok = self._tokenizer_for_batch()
        batch = tok(list(texts), return_tensors="pt", padding=True, add_special_tokens=False).to(self.model.device)
        sampling = (
            {"do_sample": True, "temperature": self.temperature} if self.temperature > 0 else {"do_sample": False}
        )
        with torch.inference_mode():
            out = self.model.generate(
                **batch,
                max_new_tokens=self.max_new_tokens,
                stopping_criteria=self._stopping,
                pad_token_id=tok.pad_token_id,
                **sampling,
            )
        return tok.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)


class OraclePolicy:
    """An agent that knows the gold chain: it searches each gold passage's title in turn
    (``metadata["supporting_titles"]``, as the built-in world and the multi-hop sets have), then answers with
    the first gold answer. It reads only the env's text, like :class:`LMPolicy`: the question is found in the
    prompt, the searches done so far and the passages they returned in the continuation.

    A question without supporting titles is still searched before it is answered (so that a dead retriever shows):
    its gold sub-questions (``metadata.question_decomposition``, MuSiQue's ``#1`` filled in with the earlier
    answers), else the question itself; the policy warns once that it cannot follow gold titles, and
    :meth:`queries` says which source it used.

    With ``accuracy`` below 1 it is a noisy teacher (for warm starts that teach the tag format but not which
    query is right): at each search, with probability ``accuracy`` it searches the correct next entity, the
    first gold title whose passage has not come back yet; otherwise another entity named in the question or in
    the passages so far (capitalised names, none overlapping the correct one; the correct one when there is no
    other, as at a first search whose question names only it). It then answers from what it found: the gold
    answer when the last gold passage came back, else a wrong answer of the same kind from the passages (a
    year for a year, a name otherwise). Draws come from ``np.random.default_rng(seed)``.

    Args:
        questions: the questions it may be asked (a :class:`~search_env.QADataset` or any iterable of items).
        n_searches: searches before answering (default: one per title, or per sub-question; more repeat them
            in order).
        think: write a short ``<think>`` before each search.
        accuracy: probability of searching the correct next entity (1: the oracle, never wrong).
        seed: seed of the noisy teacher's draws.
        plan: write a ``<plan>`` of sub-questions before the first search (the ``plan`` dialect): the question's
            gold decomposition (``metadata.question_decomposition``), else one sub-question per gold title.
    """

    def __init__(self, questions, *, n_searches: int | None = None, think: bool = True, accuracy: float = 1.0,
                 seed: int | None = None, plan: bool = False):
        if not 0.0 <= accuracy <= 1.0:
            raise ValueError(f"accuracy must be in [0, 1], got {accuracy}")
        self._by_question: dict[str, Any] = {}
        self._by_id: dict[str, Any] = {}
        for item in questions:
            self._by_question.setdefault(item.question, item)
            self._by_id[item.id] = item
        self._item = None
        self.n_searches, self.think = n_searches, think
        self.accuracy, self.rng = accuracy, np.random.default_rng(seed)
        self.plan = plan
        self._warned = False

    def reset(self, info: Mapping) -> None:
        """Start an episode: the env's reset ``info`` names the question (two questions may share a text)."""
        self._item = self._by_id.get(info.get("question_id"))

    def item_for(self, prompt: str):
        """The current episode's question (from :meth:`reset`), else the one whose text ends ``prompt``."""
        if self._item is not None:
            return self._item
        text = prompt.rstrip("\n")
        start = len(text)
        while (start := text.rfind("Question: ", 0, start)) >= 0:
            item = self._by_question.get(text[start + len("Question: ") :].strip())
            if item is not None:
                return item
        raise KeyError("OraclePolicy: the prompt's question is not among the questions it was given")

    @staticmethod
    def queries(item) -> tuple[list[str], str]:
        """``(what it searches, where that came from)``: the gold titles (``"supporting_titles"``), else the gold
        sub-questions (``"question_decomposition"``, ``#k`` replaced by the k-th sub-answer), else
        ``[item.question]`` (``"question"``)."""
        titles = [str(t) for t in item.metadata.get("supporting_titles") or []]
        if titles:
            return titles, "supporting_titles"
        steps = [d for d in item.metadata.get("question_decomposition") or [] if isinstance(d, Mapping)]
        answers = [str(d.get("answer", "")) for d in steps]

        def filled(question: str) -> str:
            return re.sub(r"#(\d+)", lambda m: answers[int(m[1]) - 1] if 0 < int(m[1]) <= len(answers) else m[0],
                          question)

        subs = [" ".join(filled(str(d["question"])).split()) for d in steps if d.get("question")]
        return (subs, "question_decomposition") if subs else ([item.question], "question")

    def act(self, prompt: str, continuation: str = "", *, force: str | None = None) -> str:
        item = self.item_for(prompt)
        queries, source = self.queries(item)
        titles = queries if source == "supporting_titles" else []
        if not titles and not self._warned:
            warnings.warn(f"OraclePolicy: question {item.id!r} has no metadata.supporting_titles, so it cannot follow "
                          f"gold titles: it searches the {source.replace('_', ' ')} instead, then answers the gold "
                          "answer (said once)", UserWarning, stacklevel=2)
            self._warned = True
        wanted = len(queries) if self.n_searches is None else self.n_searches
        done = continuation.count("</search>")
        noisy = self.accuracy < 1.0 and bool(titles)  # without gold titles it cannot tell a right search
        found = _passages(continuation) if noisy else {}
        if force == "answer" or (force != "search" and done >= wanted):
            if not noisy or titles[-1] in found:
                return f"<answer> {item.golden_answers[0]} </answer>"
            return f"<answer> {self._wrong_answer(item, found)} </answer>"
        title = queries[done % len(queries)]
        if noisy:
            title = next((t for t in titles if t not in found), title)
            if self.rng.random() >= self.accuracy:
                names = _names([item.question, *found.values()], found)
                others = sorted(n for n in names if n not in title and title not in n)
                title = others[int(self.rng.integers(len(others)))] if others else title
        head = self.plan_block(item, titles) if self.plan and "</plan>" not in continuation else ""
        return head + (f"<think>I should look up {title}.</think>\n" if self.think else "") + search_block(title)

    @staticmethod
    def plan_block(item, titles: Sequence[str]) -> str:
        """The ``<plan>`` it writes: the item's gold decomposition, else one sub-question per title in ``titles``,
        else the question itself."""
        steps = [d["question"] for d in item.metadata.get("question_decomposition") or [] if d.get("question")]
        steps = steps or [f"What does the page on {t} say?" for t in titles] or [item.question]
        return "<plan>\n" + "".join(f"{i}. {' '.join(q.split())}\n" for i, q in enumerate(steps, 1)) + "</plan>\n"

    def _wrong_answer(self, item, found: dict[str, str]) -> str:
        """A wrong answer of the gold's kind (a year, else a name) from the passages and question, drawn at random."""
        golds = {g.lower() for g in item.golden_answers}
        if item.golden_answers[0].isdigit():
            pool = set(_YEAR.findall(" ".join(found.values())))
        else:
            pool = _names([item.question, *found.values()], found)
        options = sorted(p for p in pool if p.lower() not in golds)
        return options[int(self.rng.integers(len(options)))] if options else "unknown"


# What the noisy teacher reads in the env's text: each passage "Doc i(Title: t) text", names, years.
_DOC = re.compile(r"Doc \d+\(Title: (.+?)\) (.*)")
_NAME = re.compile(r"[A-Z][a-z']*(?: (?:of |to |for |the )?[A-Z][a-z']*)*")
_YEAR = re.compile(r"\b\d{4}\b")
_NOT_NAMES = frozenset(
    "A An The It Its He His She Her They Their In On At Set Born Around Critics Filming Founded Other "
    "What Which Who Whom Whose When Where How Question Doc Title No".split()
)


def _passages(continuation: str) -> dict[str, str]:
    """Title -> text of every passage the episode has shown so far."""
    return {m.group(1): m.group(2) for m in _DOC.finditer(continuation)}


def _names(texts: Sequence[str], found: Mapping[str, str]) -> set[str]:
    """Capitalised names in ``texts`` (common sentence-initial words left out), and the titles found."""
    names = {n for text in texts for n in _NAME.findall(text) if n not in _NOT_NAMES}
    return names | set(found)


def play_episode(
    env,
    policy,
    *,
    seed: int | None = None,
    options: Mapping | None = None,
    search_first: bool = False,
    answer_last: bool = False,
    on_step: Callable[[str, float, bool, bool, dict], None] | None = None,
) -> dict:
    """Play one episode of ``policy`` (anything with ``act(prompt, continuation, force=...)``) in ``env``.

    ``search_first`` / ``answer_last`` force a search on the first turn and an answer on the last one (for
    small constrained models). ``on_step(turn_text, reward, terminated, truncated, info)`` is called after every
    step. A policy with a ``reset(info)`` method is given the env's reset ``info`` first (the oracle reads the
    question id there).

    Returns:
        The episode's record, a JSON-ready dict in the documented format (:mod:`search_env.records`, version 1):
        ``id``, ``question``, ``golden_answers``, ``prediction``, ``em``, ``f1``, ``n_searches``, ``return``,
        ``hops``, ``question_type``, ``dialect``, ``search_credit`` and ``turns`` (each: ``text``, ``action_type``,
        ``reward``, ``reward_components``; on searches ``query``, ``doc_ids``, ``passages``, ``ig``, ``ig_detail``,
        ``doc_gains``, ``credit`` as scored; ``invalid_reason`` on invalid turns).
    """
    prompt, reset_info = env.reset(seed=seed, options=dict(options) if options else None)
    if hasattr(policy, "reset"):
        policy.reset(reset_info)
    base = env.unwrapped
    item = base.item
    turns: list[dict] = []
    info: dict = {}
    done = False
    while not done:
        force = _forced(base, search_first, answer_last)
        text = policy.act(prompt, base.transcript[len(prompt) :], force=force)
        _, reward, terminated, truncated, info = env.step(text)
        hits = base.steps[-1].hits if info["action_type"] == "search" else None
        turns.append(turn_record(text, reward, info, hits))
        if on_step is not None:
            on_step(text, reward, terminated, truncated, info)
        done = terminated or truncated
    return episode_record(item, turns, info, dialect=base.dialect.name)


def _forced(env, search_first: bool, answer_last: bool) -> str | None:
    """The action a turn is forced to: a search on the first turn, an answer on the last (when asked)."""
    if answer_last and env.turn == env.max_turns - 1:
        return "answer"
    return "search" if search_first and env.turn == 0 else None


def play_episodes(
    venv,
    policy,
    episodes: Sequence[Mapping],
    *,
    seed: int | None = None,
    search_first: bool = False,
    answer_last: bool = False,
    on_episode: Callable[[int, dict], None] | None = None,
) -> list[dict]:
    """Play one episode per entry of ``episodes`` (its reset ``options``, such as ``{"question_id": ...}``) in the
    sub-envs of ``venv`` (a :class:`~search_env.vector.SearchQAVectorEnv`), as many at once as it has sub-envs: each
    step retrieves (and scores IG) for all of them together, and a policy with ``act_batch`` writes all their
    turns in one call (:class:`LMPolicy` generates them as one batch). A policy with ``reset(info)`` but no
    ``act_batch`` (:class:`OraclePolicy`) follows one episode at a time, so it plays them one by one.

    Every episode is reset with ``seed`` (and draw seed ``seed``: IG's random draws are keyed by the question, so
    they do not depend on which sub-env or batch an episode ran in). ``search_first`` / ``answer_last`` are
    :func:`play_episode`'s. ``on_episode(index, record)`` is called as each episode ends.

    Returns:
        The episodes' records (:mod:`search_env.records`), in the order of ``episodes``.
    """
    from gymnasium.vector import AutoresetMode

    if getattr(venv, "autoreset_mode", None) == AutoresetMode.SAME_STEP:
        raise ValueError("play_episodes needs a vector env that does not reset itself in the step (not SAME_STEP)")
    batched = hasattr(policy, "act_batch")
    width = venv.num_envs if batched or not hasattr(policy, "reset") else 1
    queue = list(enumerate(episodes))[::-1]
    records: list[dict | None] = [None] * len(episodes)
    slots: dict[int, tuple[int, str, list[dict]]] = {}  # sub-env -> (episode index, prompt, its turn records)
    while queue or slots:
        for i in range(width):
            if i in slots or not queue:
                continue
            index, options = queue.pop()
            mask = np.arange(venv.num_envs) == i
            seeds = [seed if j == i else None for j in range(venv.num_envs)]
            extra = {"draw_seed": seed} if seed is not None else {}
            prompts, infos = venv.reset(seed=seeds, options={**options, **extra, "reset_mask": mask})
            if hasattr(policy, "reset"):
                policy.reset(vector_info_at(infos, i))
            slots[i] = (index, prompts[i], [])
        live = sorted(slots)
        envs = [venv.envs[i] for i in live]
        contexts = [(slots[i][1], env.transcript[len(slots[i][1]) :]) for i, env in zip(live, envs)]
        forces = [_forced(env, search_first, answer_last) for env in envs]
        if batched:
            texts = policy.act_batch([p for p, _ in contexts], [c for _, c in contexts], force=forces)
        else:
            texts = [policy.act(p, c, force=f) for (p, c), f in zip(contexts, forces)]
        actions = [None] * venv.num_envs
        for i, text in zip(live, texts):
            actions[i] = text
        _, rewards, terminated, truncated, infos = venv.step(actions)
        for i, env, text in zip(live, envs, texts):
            info = vector_info_at(infos, i)
            hits = env.steps[-1].hits if info["action_type"] == "search" else None
            slots[i][2].append(turn_record(text, rewards[i], info, hits))
            if terminated[i] or truncated[i]:
                index, _, turns = slots.pop(i)
                records[index] = episode_record(env.item, turns, info, dialect=env.dialect.name)
                if on_episode is not None:
                    on_episode(index, records[index])
    return records  # type: ignore[return-value]
