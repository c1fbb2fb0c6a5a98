"""A numeric view of :class:`~search_env.env.SearchQAEnv` for stable-baselines3 and other trainers of small
policies that cannot read text: fixed-size float observations and a ``Discrete`` choice of which candidate
entity to search next, or which to give as the answer (:class:`NumericSearchView`, documented on the class).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding

from search_env.retrieval.base import Hit
from search_env.rewards import normalize_answer

__all__ = ["Mention", "NumericSearchView", "TitleMentions"]


# ----------------------------------------------------------------------------------------- mentions


@dataclass(frozen=True)
class Mention:
    """A name found in a retrieved passage: a candidate to search next or to answer with."""

    name: str
    before: tuple[str, ...]  # up to `window` words before it in its sentence
    after: tuple[str, ...]  # up to `window` words after it
    rank: int  # the passage's rank in its search (0 = top)
    order: int  # its position among the mentions of that passage
    is_year: bool = False


_WORD = re.compile(r"\w[\w'’-]*")
_CAPITALISED = re.compile(r"(?<![\w'’-])[A-Z0-9]")
_YEAR = re.compile(r"(?<![\w,.])(1[0-9]{3}|20[0-9]{2})(?![\w,])")
_SENTENCE_END = re.compile(r"[.!?;:()]\s")


class TitleMentions:
    """Finds the corpus titles (entity names) and four-digit years a passage mentions, in order.

    The passage's own title is skipped. Built once per corpus (a dict from first word to titles); results
    are cached per passage id. Works on any corpus whose titles are entity names, as in Wikipedia.
    """

    def __init__(self, titles: Sequence[str], *, years: bool = True, window: int = 3):
        self.years, self.window = years, window
        by_first: dict[str, set[str]] = {}
        for title in titles:
            words = title.split()
            if words and title[0].isupper():
                by_first.setdefault(words[0], set()).add(title)
        self._by_first = {w: sorted(ts, key=len, reverse=True) for w, ts in by_first.items()}
        self._cache: dict[tuple[str, str], list[tuple[str, int, int, bool]]] = {}

    @classmethod
    def from_corpus(cls, corpus, **kwargs) -> TitleMentions:
        return cls([p.title for p in corpus], **kwargs)

    def __call__(self, hits: Sequence[Hit]) -> list[Mention]:
        """The mentions of each hit, hits in rank order, each hit's mentions in text order."""
        mentions = []
        for rank, hit in enumerate(hits):
            text = hit.text
            for order, (name, start, end, is_year) in enumerate(self._spans(hit)):
                before = _words(text[_sentence_start(text, start) : start])[-self.window :]
                after = _words(text[end : _sentence_end(text, end)])[: self.window]
                mentions.append(Mention(name, tuple(before), tuple(after), rank, order, is_year))
        return mentions

    def _spans(self, hit: Hit) -> list[tuple[str, int, int, bool]]:
        key = (hit.doc_id, hit.title)
        if key not in self._cache:
            text, found = hit.text, []
            for m in _CAPITALISED.finditer(text):
                start = m.start()
                word = _WORD.match(text, start)
                for title in self._by_first.get(word.group() if word else "", ()):
                    end = start + len(title)
                    if text.startswith(title, start) and not (
                        end < len(text) and (text[end].isalnum() or text[end] == "_")
                    ):
                        if title != hit.title:
                            found.append((title, start, end, False))
                        break
            if self.years:
                found += [(m.group(), m.start(), m.end(), True) for m in _YEAR.finditer(text)]
            self._cache[key] = sorted(found, key=lambda f: f[1])
        return self._cache[key]


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _sentence_start(text: str, pos: int) -> int:
    ends = [m.end() for m in _SENTENCE_END.finditer(text, 0, pos)]
    return ends[-1] if ends else 0


def _sentence_end(text: str, pos: int) -> int:
    m = _SENTENCE_END.search(text, pos)
    return m.start() + 1 if m else len(text)


# ----------------------------------------------------------------------------------------- features


def _stemmer() -> Callable[[str], str]:
    import Stemmer

    return Stemmer.Stemmer("english").stemWord


def _bucket(token: str, dim: int) -> int:
    return zlib.crc32(token.encode("utf-8", "surrogatepass")) % dim


def _hashed(tokens: Sequence[str], dim: int) -> np.ndarray:
    """Unit-norm hashed bag of tokens (counts, then L2-normalised); zeros when there are none."""
    vec = np.zeros(dim, dtype=np.float32)
    for token in tokens:
        vec[_bucket(token, dim)] += 1.0
    norm = float(np.linalg.norm(vec))
    return vec / norm if norm else vec


# ----------------------------------------------------------------------------------------- numeric view

_SLOT_SCALARS = (
    "present",
    "is_year",
    "in_question",
    "latest_search",
    "rank_0",
    "rank_1",
    "rank_2+",
    "order",
    "overlap",
)


class NumericSearchView(gym.Wrapper):
    """A numeric view of :class:`SearchQAEnv` for policies that cannot read text (stable-baselines3).

    **The decision.** Each turn the policy picks one of ``1 + 2 * n_candidates`` actions:

    - ``0``: search the question text itself;
    - ``1 … n``: search candidate *i*, a name (``TitleMentions``: a corpus title or a year) found in the
      passages retrieved so far;
    - ``n+1 … 2n``: answer with candidate *i* and end the episode.

    Candidates are the names mentioned in the latest search's passages (top passage first, in text
    order), then those of earlier searches, without repeats and without names already searched; the
    first ``n_candidates`` fill the slots. On the built-in world this turns a multi-hop question (*"In
    which country is the headquarters city of the publisher of X?"*) into following a chain: search the
    question (which finds X's page), pick among the 3–7 names X's page mentions the one that is its
    publisher, search it, pick its headquarters city, search it, answer with the country. Every choice can
    be wrong: following the wrong name leads to the wrong page, answering too early or with the wrong
    name scores 0, an empty slot is an invalid turn (the env's format penalty, and the turn is used), and
    ``max_turns`` cuts the episode off. The policy must learn, from the question's words and the words
    around each mention (*"published by"*, *"headquarters in"*, *"born in"*), which name each hop needs
    and when the chain is done: a uniformly random policy almost never answers right, while following
    the gold chain (:meth:`NumericSearchView.oracle_action`) answers most questions.

    **Observation** (``Box(0, 1, (dim,), float32)``), cheap to compute (no encoder), in order:

    - the question: hashed bag of stemmed words and word pairs, ``question_dim`` floats, unit norm;
    - progress: searches so far (one-hot, 0 to 4+), turn / ``max_turns``, whether the question was
      searched, whether the last turn was invalid (8 floats);
    - per candidate slot (``n_candidates`` times): ``present``, ``is_year``, ``in_question`` (the name is in
      the question), ``latest_search`` (found by the latest search), passage rank one-hot (0, 1, 2+),
      ``order`` (its position among its passage's mentions, / 8), ``overlap`` (share of long words around
      it whose stems occur in the question), then a hashed bag of the ``window`` words before (``b:``)
      and after (``a:``) it in its sentence (``cue_dim`` floats, unit norm).

    **Reward** is the wrapped env's, unchanged: wrap the env in :class:`OutcomeOnly` or
    :class:`OutcomePlusIG` first. **info** is the env's plus ``numeric_action`` (``"search_question"``,
    ``"search"``, ``"answer"`` or ``"empty_slot"``) and ``candidate`` (the name chosen, or ``None``).

    **IG draws.** With ``freeze_ig_draws=True`` (default) each episode resets the env with a seed given
    by the question's index, so IG's random counterfactual passages are the same whenever the same
    question is searched along the same path. With a fixed set of questions and a discrete action set
    the IG contexts then repeat, and a scorer's cache (``TransformersScorer(cache_size=...)``) serves
    later episodes without running the model. It is a fixed sample of ``n_random`` draws per
    (question, path), common to all episodes; ``False`` draws afresh from the env's generator.

    Args:
        env: a :class:`SearchQAEnv` (possibly inside reward wrappers); needs its ``corpus`` unless
            ``mentions`` is given.
        n_candidates: candidate slots.
        question_dim: size of the hashed question vector.
        cue_dim: size of each candidate's hashed cue vector.
        window: words before and after a mention that form its cue.
        mentions: a callable ``hits -> list[Mention]`` (default :class:`TitleMentions` over the corpus).
        freeze_ig_draws: see above.
    """

    def __init__(
        self,
        env: gym.Env,
        n_candidates: int = 6,
        *,
        question_dim: int = 128,
        cue_dim: int = 32,
        window: int = 3,
        mentions: Callable[[Sequence[Hit]], list[Mention]] | None = None,
        freeze_ig_draws: bool = True,
    ):
        super().__init__(env)
        if n_candidates < 1:
            raise ValueError(f"n_candidates must be at least 1, not {n_candidates}")
        base = env.unwrapped
        if mentions is None:
            if base.corpus is None:
                raise ValueError("NumericSearchView needs the env's corpus to find names, or a `mentions` callable")
            mentions = TitleMentions.from_corpus(base.corpus, window=window)
        self.n_candidates, self.question_dim, self.cue_dim = n_candidates, question_dim, cue_dim
        self.mentions, self.freeze_ig_draws = mentions, freeze_ig_draws
        self._stem = _stemmer()
        self._slot_dim = len(_SLOT_SCALARS) + cue_dim
        self._progress_dim = 8
        dim = question_dim + self._progress_dim + n_candidates * self._slot_dim
        self.action_space = spaces.Discrete(1 + 2 * n_candidates)
        self.observation_space = spaces.Box(0.0, 1.0, (dim,), dtype=np.float32)
        self._rng: np.random.Generator | None = None
        self._reset_state("")

    # -- gymnasium API ---------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        if seed is not None or self._rng is None:
            self._rng, _ = seeding.np_random(seed)  # picks the questions (the env's own generator is reseeded)
        base, options = self.env.unwrapped, dict(options or {})
        if "question_id" in options:
            options["index"] = base.questions.position(options.pop("question_id"))
        if "index" not in options:
            options["index"] = int(self._rng.integers(len(base.questions)))
        index = int(options["index"]) % len(base.questions)
        inner_seed = index if self.freeze_ig_draws else int(self._rng.integers(2**31))
        _, info = self.env.reset(seed=inner_seed, options=options)
        self._reset_state(base.item.question)
        return self._observation(), info

    def step(self, action) -> tuple[np.ndarray, float, bool, bool, dict]:
        action = int(action)
        if not 0 <= action < self.action_space.n:
            raise ValueError(f"action {action} is outside Discrete({self.action_space.n})")
        kind, name = self.describe(action)
        if kind == "search_question":
            inner = {"kind": "search", "text": self._question}
        elif name is None:
            inner = {"kind": "search" if kind == "search" else "answer", "text": ""}  # an invalid, empty turn
            kind = "empty_slot"
        else:
            inner = {"kind": kind, "text": name}
        _, reward, terminated, truncated, info = self.env.step(inner)
        self._after_step(kind, name, info)
        info = {**info, "numeric_action": kind, "candidate": name}
        return self._observation(), reward, terminated, truncated, info

    # -- public helpers --------------------------------------------------------------------------

    @property
    def candidates(self) -> list[Mention]:
        """The mentions in the candidate slots now (at most ``n_candidates``)."""
        return list(self._slots)

    def oracle_action(self) -> int:
        """The action a policy that knows the gold chain takes now (for tests and reference ceilings).

        Needs questions with ``metadata["supporting_titles"]`` (the built-in world's): search the question
        first, then the next bridge entity of the chain while it is a candidate, then answer with a candidate
        that is a gold answer; search the question again when stuck.
        """
        if not self._question_searched:
            return 0
        item = self.env.unwrapped.item
        golds = {normalize_answer(a) for a in item.golden_answers}
        names = [normalize_answer(m.name) for m in self.candidates]
        bridges = [normalize_answer(t) for t in item.metadata.get("supporting_titles", [])[1:]]
        for bridge in bridges:
            if bridge not in self._searched:
                return 1 + names.index(bridge) if bridge in names else 0
        for i, name in enumerate(names):
            if name in golds:
                return 1 + self.n_candidates + i
        return 0

    def describe(self, action: int) -> tuple[str, str | None]:
        """``(kind, name)`` of an action: kind ``"search_question"``, ``"search"`` or ``"answer"``; name
        ``None`` for an empty slot (and for the question search)."""
        if action == 0:
            return "search_question", None
        kind = "search" if action <= self.n_candidates else "answer"
        slot = (action - 1) % self.n_candidates
        return kind, (self._slots[slot].name if slot < len(self._slots) else None)

    # -- state -----------------------------------------------------------------------------------

    def _reset_state(self, question: str) -> None:
        self._question = question
        words = _words(question)
        self._q_stems = {self._stem(w) for w in words if len(w) >= 4}
        stems = [self._stem(w) for w in words]
        self._q_vec = _hashed(stems + [f"{a}_{b}" for a, b in zip(stems, stems[1:])], self.question_dim)
        self._q_norm = normalize_answer(question)
        self._steps: list[list[Mention]] = []  # the mentions of each search, newest last
        self._searched: set[str] = set()
        self._slots: list[Mention] = []
        self._n_searches = self._turn = 0
        self._question_searched = self._last_invalid = False

    def _after_step(self, kind: str, name: str | None, info: dict) -> None:
        self._turn = info.get("turn", self._turn + 1)
        self._last_invalid = info.get("action_type") == "invalid"
        if info.get("action_type") != "search":
            return
        self._n_searches += 1
        if kind == "search_question":
            self._question_searched = True
        else:
            self._searched.add(normalize_answer(name))
        steps = self.env.unwrapped.steps
        self._steps.append(self.mentions(steps[-1].hits) if steps else [])
        self._slots = self._fill_slots()

    def _fill_slots(self) -> list[Mention]:
        slots, seen = [], set(self._searched)
        for mentions in reversed(self._steps):
            for mention in mentions:
                key = normalize_answer(mention.name)
                if key and key not in seen:
                    seen.add(key)
                    slots.append(mention)
                    if len(slots) == self.n_candidates:
                        return slots
        return slots

    # -- features --------------------------------------------------------------------------------

    def _observation(self) -> np.ndarray:
        x = np.zeros(self.observation_space.shape, dtype=np.float32)
        x[: self.question_dim] = self._q_vec
        p = self.question_dim
        x[p + min(self._n_searches, 4)] = 1.0
        x[p + 5] = min(1.0, self._turn / self.env.unwrapped.max_turns)
        x[p + 6] = float(self._question_searched)
        x[p + 7] = float(self._last_invalid)
        latest = self._steps[-1] if self._steps else []
        for i, mention in enumerate(self._slots):
            s = self.question_dim + self._progress_dim + i * self._slot_dim
            x[s : s + self._slot_dim] = self._slot_features(mention, any(m is mention for m in latest))
        return x

    def _slot_features(self, mention: Mention, latest: bool) -> np.ndarray:
        cue = [*mention.before, *mention.after]
        long_stems = [self._stem(w) for w in cue if len(w) >= 4]
        overlap = sum(s in self._q_stems for s in long_stems) / len(long_stems) if long_stems else 0.0
        scalars = [
            1.0,
            float(mention.is_year),
            float(f" {normalize_answer(mention.name)} " in f" {self._q_norm} "),
            float(latest),
            float(mention.rank == 0),
            float(mention.rank == 1),
            float(mention.rank >= 2),
            min(1.0, mention.order / 8),
            overlap,
        ]
        tokens = [f"b:{self._stem(w)}" for w in mention.before] + [f"a:{self._stem(w)}" for w in mention.after]
        return np.concatenate([np.asarray(scalars, dtype=np.float32), _hashed(tokens, self.cue_dim)])


