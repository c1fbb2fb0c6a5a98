"""Credit across an episode's searches: ``info["search_credit"]`` at the step that ends it.

Every mode reuses each search's own counterfactual draws (the random blocks its step IG was scored against), so
with shared draws the rollouts of a group are compared on the same random passages.

- ``"sub-answer"``: search t is scored with its step-IG contexts against the final answer and against every
  intermediate answer (:func:`~search_env.data.qa.sub_answers`) not yet found before it; its credit is the best
  of those gains. An intermediate answer counts as found once its normalised text occurs in the documents of an
  earlier search (what the agent has read), so a later search is not paid again for a name it already has, and
  the final answer is always a candidate (a search that brings the answer is credited as its step IG is).
- ``"leave-one-out"``: ``v(N) - v(N \\ {t})``, ``v(S)`` being the gold answer's score after the final context in
  which the searches outside ``S`` have their documents replaced by their first ``credit_draws`` random blocks
  (the mean over them; ``baseline="none"``: dropped) and their ``<refine>`` left out.
- ``"shapley"``: the Shapley value of search t in that game, exactly (all ``2**k`` coalitions) up to
  ``shapley_exact`` searches; beyond, the mean marginal gain over ``shapley_permutations`` permutations drawn with
  the draw generator (keyed by question and draw seed when draws are shared). Either way the values sum to
  ``v(N) - v(∅)``.

- ``"refine"`` (the IG-Search authors' IG, autorefine dialect): search t scored after its own ``<refine>``:
  ``score(C_t + refine_t) - mean_j score(C_t with (documents_t, refine_t) swapped for pair j)``, the pairs drawn
  from a pool of other questions' (documents, refine) pairs (the batch), or, without one, the step's own random
  blocks with the refine left out.

A search that got no IG (nothing retrieved, or a search on the last turn, never read) gets ``None`` and is no
player.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from search_env.info_gain.contexts import IGRequests, SearchStep, build_final_context
from search_env.rewards import normalize_answer


@dataclass
class CreditRequests:
    """The pairs to score for an episode's search credit, and how to turn their scores into it (plain data)."""

    mode: str
    n_searches: int
    pairs: list[tuple[str, str]] = field(default_factory=list)
    players: list[int] = field(default_factory=list)  # search indices with credit
    # leave-one-out / shapley: coalitions (sorted member lists) and the [start, end) of their pairs
    coalitions: list[list[int]] = field(default_factory=list)
    spans: list[list[int]] = field(default_factory=list)
    permutations: list[list[int]] | None = None  # Monte Carlo Shapley
    # sub-answer: per player, its baseline, and the [start, end) of each candidate answer's pairs (real first)
    baselines: list[str] = field(default_factory=list)
    answer_spans: list[list[list[int]]] = field(default_factory=list)
    fixed: list[float | None] = field(default_factory=list)  # a player's credit known without scores

    def finish(self, scores: Sequence[float]) -> list[float | None]:
        """One credit per search, in order (``None`` for a search that is no player)."""
        scores = np.asarray(scores, dtype=np.float64)
        if len(scores) != len(self.pairs):
            raise ValueError(f"expected {len(self.pairs)} scores, got {len(scores)}")
        credit: list[float | None] = [None] * self.n_searches
        if self.mode in ("sub-answer", "refine"):
            for k, player in enumerate(self.players):
                if self.fixed[k] is not None:
                    credit[player] = self.fixed[k]
                    continue
                credit[player] = max(_gain(self.baselines[k], scores[a:b]) for a, b in self.answer_spans[k])
            return credit
        value = {tuple(c): float(scores[a:b].mean()) for c, (a, b) in zip(self.coalitions, self.spans)}
        everyone = tuple(self.players)
        if self.mode == "leave-one-out":
            for p in self.players:
                credit[p] = value[everyone] - value[tuple(q for q in self.players if q != p)]
        elif self.permutations is None:
            n = len(self.players)
            for p in self.players:
                others = [q for q in self.players if q != p]
                total = 0.0
                for size in range(n):
                    weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
                    for subset in itertools.combinations(others, size):
                        total += weight * (value[tuple(sorted((*subset, p)))] - value[subset])
                credit[p] = total
        else:
            sums = dict.fromkeys(self.players, 0.0)
            for order in self.permutations:
                for i, p in enumerate(order):
                    sums[p] += value[tuple(sorted(order[: i + 1]))] - value[tuple(sorted(order[:i]))]
            for p in self.players:
                credit[p] = sums[p] / len(self.permutations)
        return credit


def _gain(baseline: str, scores: np.ndarray) -> float:
    real, base = float(scores[0]), scores[1:]
    if baseline == "best":
        return max(0.0, real - float(base.max()))
    return real - float(base.mean())


def found_before(steps: Sequence[SearchStep], answer: str) -> list[bool]:
    """``out[t]``: whether ``answer`` (normalised) occurs in the documents of a search before t."""
    target, out, seen = f" {normalize_answer(answer)} ", [], False
    for step in steps:
        out.append(seen)
        seen = seen or target in f" {normalize_answer(step.documents)} "
    return out


def credit_requests(mode: str, prefix: str, steps: Sequence[SearchStep], records: Sequence[IGRequests | None],
                    answer: str, *, sub_answers: Sequence[str] = (), draws: int = 1, exact: int = 4,
                    permutations: int = 16, rng: np.random.Generator | None = None,
                    pool: Sequence[tuple[str, str]] | None = None, n_random: int = 3) -> CreditRequests:
    """The requests for ``mode`` over ``steps`` (the searches whose passages were read), given each one's step-IG
    requests ``records`` (``None``: no IG, no credit) and the gold ``answer``; ``pool``: (documents, refine) pairs
    of other questions for ``"refine"``, ``n_random`` of them drawn per search with ``rng``."""
    requests = CreditRequests(mode, len(records))
    requests.players = [t for t, r in enumerate(records) if r is not None and t < len(steps)]
    if not requests.players:
        return requests
    if mode == "refine":
        rng = rng if rng is not None else np.random.default_rng(0)
        for t in requests.players:
            record, step = records[t], steps[t]
            candidates = [p for p in pool or () if p != (step.documents, step.refine)]
            if candidates:
                picks = rng.choice(len(candidates), size=n_random, replace=len(candidates) < n_random)
                swaps = [candidates[int(i)] for i in picks]
            else:
                swaps = [(b, "") for b in record.random_blocks] or [("", "")]
            contexts = [build_final_context(prefix, steps[: t + 1])]
            contexts += [build_final_context(prefix, [*steps[:t], replace(step, documents=d, refine=r)])
                         for d, r in swaps]
            requests.baselines.append("random")
            requests.fixed.append(None)
            requests.answer_spans.append([[len(requests.pairs), len(requests.pairs) + len(contexts)]])
            requests.pairs += [(c, answer) for c in contexts]
        return requests
    if mode == "sub-answer":
        final = normalize_answer(answer)
        subs = list(dict.fromkeys(a for a in sub_answers if normalize_answer(a) not in ("", final)))
        found = {a: found_before(steps, a) for a in subs}
        for t in requests.players:
            record = records[t]
            requests.baselines.append(record.baseline)
            requests.fixed.append(record.fixed_ig)
            spans = []
            if record.fixed_ig is None:
                contexts = [c for c, _ in record.pairs[: 1 + record.n_baseline]]
                for candidate in [answer] + [a for a in subs if not found[a][t]]:
                    spans.append([len(requests.pairs), len(requests.pairs) + len(contexts)])
                    requests.pairs += [(c, candidate) for c in contexts]
            requests.answer_spans.append(spans)
        return requests
    players = requests.players
    if mode == "leave-one-out":
        coalitions = [tuple(players)] + [tuple(q for q in players if q != p) for p in players]
    elif len(players) <= exact:
        coalitions = [c for size in range(len(players) + 1) for c in itertools.combinations(players, size)]
    else:
        rng = rng if rng is not None else np.random.default_rng(0)
        requests.permutations = [[players[i] for i in rng.permutation(len(players))] for _ in range(permutations)]
        coalitions = list(dict.fromkeys(tuple(sorted(order[:i])) for order in requests.permutations
                                        for i in range(len(players) + 1)))
    for coalition in coalitions:
        out = [p for p in players if p not in coalition]
        n = 1 if not out or records[out[0]].baseline == "none" else draws
        start = len(requests.pairs)
        for j in range(n):
            replaced = {p: (records[p].random_blocks[j] if records[p].baseline == "random" else "") for p in out}
            requests.pairs.append((build_final_context(prefix, steps, replaced), answer))
        requests.coalitions.append(list(coalition))
        requests.spans.append([start, start + n])
    return requests
