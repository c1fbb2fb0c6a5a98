"""Credit assignment for policy-gradient trainers: GRPO group advantages, IG → per-token advantages, loss masks.

Trainer-agnostic: the array functions take numpy arrays or torch tensors and return the same kind (torch
results keep the input's device). The recipe (IG-Search's, as its authors' reward code computes it):

```
A_i   = (R_i − mean_group R) / (std_group R + eps)                     # group_advantages
A_tok = A_i + λ · clip(IG_t, −c, c)   on the tokens of step t's <search>…</search>
A_tok = A_i                           on the other policy tokens    # token_advantages
loss mask = policy tokens only: prompt, retrieved passages and feedback text are env tokens
```

The IG term is additive, so a group in which every rollout failed (``A_i = 0``) still gets a gradient on
its queries. ``ig_norm`` says what that gradient is in such a group:

- ``"none"``: raw IG, clipped: every scored query gets ``λ·clip(IG)``, its mean over the group included (a mean
  IG of +2.5 nats clipped at 1 is a flat bonus on every search, the decision token too).
- ``"turn"`` (A2TGPO's rule, :func:`normalize_turn_ig`): IG centred per (group, turn index) and divided by
  ``max(std, ig_floor)``: at each turn the terms sum to zero over the group's rollouts, so only differences between
  rollouts at the same turn push; a turn scored in one rollout alone gets 0; differences smaller than the floor
  (the measured draw noise, 0.6 nats/token) stay below 1.
- ``"group"`` (deprecated): z-scores over all scored steps of the group, turns pooled, floor 0.1: first hops, whose
  IG is lower, are pushed down against later answer-bearing ones.

With ``IGConfig(credit=...)`` the env gives ``info["search_credit"]`` at the end of an episode, one value per search;
:meth:`Trajectory.set_search_credit` puts those values where step IG goes, on each search's query tokens.

A :class:`Trajectory` keeps token ids per segment exactly as they were generated (policy) or tokenised (env), so
spans and masks are exact: nothing is decoded and re-tokenised (the BPE drift TRL had to fix,
huggingface/trl#5224).

```python
traj = Trajectory(prompt_ids, group="q17")
traj.add_policy(turn_ids, query_span=(5, 12), ig=info["ig"])  # generated ids; span of <search>…</search>
traj.add_env(obs_ids)                                          # the observation, tokenised once
traj.reward = total_reward
batch = assign_credit(trajectories, pad_id=tok.pad_token_id, ig_weight=0.3, ig_clip=1.0)
batch.input_ids, batch.loss_mask, batch.token_advantages      # (B, L) numpy; batch.to_torch(device)
```
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

__all__ = [
    "CreditBatch",
    "Segment",
    "Trajectory",
    "assign_credit",
    "char_to_token",
    "group_advantages",
    "normalize_step_ig",
    "normalize_turn_ig",
    "token_advantages",
    "token_span",
]

Spread = Literal["query", "turn"]


# ------------------------------------------------------------------------------------ trajectories


@dataclass
class Segment:
    """A run of token ids from one source: the policy (one turn, in the loss) or the env (masked).

    ``query_span``: ``[start, end)`` token indices of the turn's ``<search>…</search>`` within ``ids``.
    """

    ids: list[int]
    from_policy: bool
    query_span: tuple[int, int] | None = None

    def __post_init__(self):
        self.ids = [int(i) for i in self.ids]
        if self.query_span is not None:
            start, end = self.query_span
            if not (self.from_policy and 0 <= start < end <= len(self.ids)):
                raise ValueError(
                    f"query_span {self.query_span} is not a span of this policy segment ({len(self.ids)} tokens)"
                )


@dataclass
class Trajectory:
    """One episode as token ids: the prompt, then policy and env segments in the order they happened.

    ``input_ids`` is their plain concatenation, the exact sequence the model saw. ``step_ig[t]`` is the IG
    of policy turn ``t`` (``None`` when the turn was no scored search); ``group`` identifies the question,
    for group-relative advantages.
    """

    prompt_ids: list[int]
    group: Hashable = None
    reward: float = 0.0
    segments: list[Segment] = field(default_factory=list)
    step_ig: list[float | None] = field(default_factory=list)

    def __post_init__(self):
        self.prompt_ids = [int(i) for i in self.prompt_ids]

    def add_policy(self, ids: Sequence[int], query_span: tuple[int, int] | None = None, ig: float | None = None) -> int:
        """Append a generated turn; returns its turn index."""
        self.segments.append(Segment(list(ids), True, query_span))
        self.step_ig.append(None if ig is None else float(ig))
        return len(self.step_ig) - 1

    def set_search_credit(self, credit: Sequence[float | None]) -> None:
        """Use an episode's ``info["search_credit"]`` (one value per search, in order) as the IG of its search
        turns (those added with a ``query_span``), in order; the other turns keep theirs.

        Raises:
            ValueError: not one value per search turn.
        """
        searches = [t for t, seg in enumerate(s for s in self.segments if s.from_policy) if seg.query_span is not None]
        if len(credit) != len(searches):
            raise ValueError(f"{len(credit)} credit values for {len(searches)} search turns")
        for t, value in zip(searches, credit):
            self.step_ig[t] = None if value is None else float(value)

    def add_env(self, ids: Sequence[int]) -> None:
        """Append env text (passages, feedback) tokenised on its own."""
        self.segments.append(Segment(list(ids), False))

    @property
    def input_ids(self) -> list[int]:
        return self.prompt_ids + [i for s in self.segments for i in s.ids]

    @property
    def completion_ids(self) -> list[int]:
        return [i for s in self.segments for i in s.ids]

    def __len__(self) -> int:
        return len(self.prompt_ids) + sum(len(s.ids) for s in self.segments)

    def segment_slices(self) -> list[slice]:
        """Where each segment lies in ``input_ids``."""
        slices, pos = [], len(self.prompt_ids)
        for seg in self.segments:
            slices.append(slice(pos, pos + len(seg.ids)))
            pos += len(seg.ids)
        return slices

    def loss_mask(self) -> np.ndarray:
        """Bool over ``input_ids``: True exactly on policy tokens."""
        mask = np.zeros(len(self), dtype=bool)
        for seg, where in zip(self.segments, self.segment_slices()):
            mask[where] = seg.from_policy
        return mask

    def env_mask(self) -> np.ndarray:
        """Bool over ``input_ids``: True exactly on env tokens (the prompt is neither)."""
        mask = np.zeros(len(self), dtype=bool)
        for seg, where in zip(self.segments, self.segment_slices()):
            mask[where] = not seg.from_policy
        return mask

    def token_turns(self, spread: Spread = "query") -> np.ndarray:
        """Int64 over ``input_ids``: the turn whose IG a token receives, -1 for none.

        ``spread="query"``: the tokens of each turn's ``<search>…</search>``; ``"turn"``: all of the turn's
        tokens (its reasoning too), for ablations.
        """
        if spread not in ("query", "turn"):
            raise ValueError(f"spread must be 'query' or 'turn', not {spread!r}")
        out = np.full(len(self), -1, dtype=np.int64)
        turn = 0
        for seg, where in zip(self.segments, self.segment_slices()):
            if not seg.from_policy:
                continue
            if spread == "turn":
                out[where] = turn
            elif seg.query_span is not None:
                out[where.start + seg.query_span[0] : where.start + seg.query_span[1]] = turn
            turn += 1
        return out


# ----------------------------------------------------------------------------------- array maths


def _torch_tensor(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _numpy(x: Any) -> np.ndarray:
    if _torch_tensor(x):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _like(result: np.ndarray, ref: Any) -> Any:
    """``result`` as the kind of ``ref``: a tensor on its device (its dtype if floating), or numpy."""
    if _torch_tensor(ref):
        import torch

        dtype = ref.dtype if ref.is_floating_point() else torch.get_default_dtype()
        return torch.as_tensor(result, device=ref.device).to(dtype)
    ref_dtype = getattr(ref, "dtype", None)
    return result.astype(ref_dtype if ref_dtype is not None and np.issubdtype(ref_dtype, np.floating) else np.float64)


def _group_keys(groups: Any, n: int) -> list:
    keys = groups.tolist() if hasattr(groups, "tolist") else list(groups)
    if len(keys) != n:
        raise ValueError(f"got {len(keys)} group ids for {n} rows")
    return keys


def _standardize(values: np.ndarray, scale: bool, eps: float, floor: float = 0.0) -> np.ndarray:
    """``values - mean``, divided by ``max(std, floor) + eps`` when ``scale``; 0 for a single value. Unbiased std."""
    if len(values) == 0:
        return values
    centred = values - values.mean()
    return centred / (max(values.std(ddof=1), floor) + eps) if scale and len(values) > 1 else centred


def group_advantages(rewards: Any, groups: Any, *, scale: bool = True, eps: float = 1e-6) -> Any:
    """GRPO outcome advantages: ``(r − mean) / (std + eps)`` within each group of rollouts.

    ``groups``: one hashable id per rollout (e.g. the question id), a list or an int array/tensor.
    ``scale=False`` leaves out the division (``r − mean``, as in Dr. GRPO). The std is unbiased, as in
    verl and TRL; a group of one rollout gets 0.
    """
    r = _numpy(rewards).reshape(-1)
    keys = _group_keys(groups, len(r))
    out = np.zeros_like(r)
    for key in dict.fromkeys(keys):
        rows = np.array([k == key for k in keys])
        out[rows] = _standardize(r[rows], scale, eps)
    return _like(out, rewards)


IG_STD_FLOOR = 0.1  # nats/token: below it, IG differences within a group are the random baseline's noise


def normalize_step_ig(step_ig: Any, groups: Any, *, floor: float = IG_STD_FLOOR, eps: float = 1e-6) -> Any:
    """Z-score IG over all scored steps of each group's rollouts (NaN = no IG, kept NaN).

    The group's std is floored at ``floor``: steps whose IG differs by less (e.g. the same query with other
    random counterfactual draws) stay close to 0 instead of being blown up to unit z-scores.

    Args:
        step_ig: ``(B, S)``, one row per rollout, one column per turn.
        groups: one id per rollout.
        floor: the smallest std divided by, in nats/token.
        eps: added to the divisor.
    """
    return _normalized_ig(step_ig, groups, floor, eps, per_turn=False)


TURN_IG_FLOOR = 0.6  # nats/token: the sd of IG when only a rollout's own random draws change (measured, unshared)


def normalize_turn_ig(step_ig: Any, groups: Any, *, floor: float = TURN_IG_FLOOR, eps: float = 1e-6) -> Any:
    """IG centred per (group, turn index) and divided by ``max(std, floor) + eps`` (NaN = no IG, kept NaN).

    Each column t of a group's rows is normalised on its own, so a first hop is compared only with the group's other
    first hops. ``floor`` defaults to the draw noise measured with unshared draws (0.6 nats/token): differences the
    draws alone could make stay below 1. With shared draws the same query gets the same IG and a smaller floor may
    be chosen. A turn scored in one rollout only is centred to 0.

    Args:
        step_ig: ``(B, S)``, one row per rollout, one column per turn.
        groups: one id per rollout (the question).
        floor: the smallest std divided by, in nats/token.
        eps: added to the divisor.
    """
    return _normalized_ig(step_ig, groups, floor, eps, per_turn=True)


def _normalized_ig(step_ig: Any, groups: Any, floor: float, eps: float, *, per_turn: bool) -> Any:
    """Each group's scored IG standardised with a floored std: all its turns together, or each turn on its own."""
    ig = _numpy(step_ig)
    if ig.ndim != 2:
        raise ValueError(f"step_ig must be (rollouts, turns), got shape {ig.shape}")
    keys = _group_keys(groups, ig.shape[0])
    out = np.full_like(ig, np.nan)
    column_sets = [[t] for t in range(ig.shape[1])] if per_turn else [list(range(ig.shape[1]))]
    for key in dict.fromkeys(keys):
        rows = np.flatnonzero(np.array([k == key for k in keys]))
        for columns in column_sets:
            block = ig[np.ix_(rows, columns)]
            scored = ~np.isnan(block)
            block[scored] = _standardize(block[scored], True, eps, floor)
            out[np.ix_(rows, columns)] = block
    return _like(out, step_ig)


def token_advantages(
    advantages: Any,
    token_turns: Any,
    step_ig: Any,
    *,
    ig_weight: float = 0.0,
    ig_clip: float | None = 1.0,
    mask: Any = None,
) -> Any:
    """``A_tok = A_i + ig_weight · clip(step_ig[i, t], −ig_clip, ig_clip)`` where ``token_turns[i, j] = t``.

    Args:
        advantages: ``(B,)`` trajectory advantages.
        token_turns: ``(B, L)`` ints, the turn whose IG token j receives (-1: none), see
            :meth:`Trajectory.token_turns`.
        step_ig: ``(B, S)`` per-turn IG, NaN where a turn has none (it then adds nothing).
        ig_weight: λ; 0 is plain GRPO.
        ig_clip: IG is clipped to ``[-ig_clip, ig_clip]`` first (``None``: no clipping).
        mask: ``(B, L)``, optional; tokens outside it get 0.

    Returns:
        ``(B, L)`` advantages, of the kind of ``advantages`` (numpy, or a tensor on its device).

    Raises:
        ValueError: the shapes do not agree, or ``token_turns`` names a turn ``step_ig`` does not have.
    """
    adv = _numpy(advantages).reshape(-1)
    turns = np.asarray(
        token_turns.detach().cpu().numpy() if _torch_tensor(token_turns) else token_turns, dtype=np.int64
    )
    ig = _numpy(step_ig)
    if turns.ndim != 2 or turns.shape[0] != adv.shape[0] or ig.ndim != 2 or ig.shape[0] != adv.shape[0]:
        raise ValueError(f"shapes do not match: advantages {adv.shape}, token_turns {turns.shape}, step_ig {ig.shape}")
    if turns.max(initial=-1) >= ig.shape[1]:
        raise ValueError(f"token_turns names turn {turns.max()}, but step_ig has {ig.shape[1]} columns")
    term = np.nan_to_num(ig if ig_clip is None else np.clip(ig, -ig_clip, ig_clip), nan=0.0)
    per_token = np.where(turns >= 0, np.take_along_axis(term, np.maximum(turns, 0), axis=1), 0.0)
    out = adv[:, None] + ig_weight * per_token
    if mask is not None:
        out = out * (_numpy(mask) != 0)
    return _like(out, advantages)


# ------------------------------------------------------------------------------------- batching


@dataclass
class CreditBatch:
    """Right-padded ``(B, L)`` arrays of a batch of trajectories, with their advantages (numpy)."""

    input_ids: np.ndarray  # int64
    attention_mask: np.ndarray  # bool: real tokens
    loss_mask: np.ndarray  # bool: policy tokens
    token_turns: np.ndarray  # int64, -1 where no IG applies
    step_ig: np.ndarray  # (B, S) float64, NaN where a turn has no IG
    rewards: np.ndarray  # (B,)
    groups: list
    prompt_lengths: np.ndarray  # (B,)
    advantages: np.ndarray  # (B,) trajectory-level
    token_advantages: np.ndarray  # (B, L), 0 outside loss_mask

    def to_torch(self, device: Any = None) -> dict[str, Any]:
        """The ``(B, L)`` and ``(B,)`` arrays as torch tensors (float32 for floats)."""
        import torch

        names = ("input_ids", "attention_mask", "loss_mask", "token_turns", "step_ig", "rewards", "prompt_lengths",
                 "advantages", "token_advantages")
        out = {}
        for name in names:
            value = torch.as_tensor(getattr(self, name), device=device)
            out[name] = value.float() if value.is_floating_point() else value
        return out


def assign_credit(
    trajectories: Sequence[Trajectory],
    *,
    pad_id: int = 0,
    ig_weight: float = 0.0,
    ig_clip: float | None = 1.0,
    ig_norm: Literal["none", "turn", "group"] = "none",
    ig_floor: float = TURN_IG_FLOOR,
    spread: Spread = "query",
    scale: bool = True,
    eps: float = 1e-6,
) -> CreditBatch:
    """Pad trajectories and compute GRPO advantages with the IG term on query tokens.

    ``ig_norm="turn"`` normalises IG per (group, turn index) with std floor ``ig_floor`` before clipping
    (:func:`normalize_turn_ig`); ``"group"`` (deprecated: it pools turns) z-scores over each group's steps with
    floor 0.1. ``spread="turn"`` puts a step's IG on all of its turn's tokens. Trajectories are grouped by
    ``Trajectory.group``.
    """
    if ig_norm not in ("none", "turn", "group"):
        raise ValueError(f"ig_norm must be 'none', 'turn' or 'group', not {ig_norm!r}")
    if ig_norm == "group":
        warnings.warn("assign_credit(ig_norm='group') pools a group's turns; use ig_norm='turn' (per turn index)",
                      DeprecationWarning, stacklevel=2)
    if not trajectories:
        raise ValueError("no trajectories")
    n, width = len(trajectories), max(len(t) for t in trajectories)
    turns = max(1, max(len(t.step_ig) for t in trajectories))
    input_ids = np.full((n, width), pad_id, dtype=np.int64)
    attention = np.zeros((n, width), dtype=bool)
    loss_mask = np.zeros((n, width), dtype=bool)
    token_turns = np.full((n, width), -1, dtype=np.int64)
    step_ig = np.full((n, turns), np.nan)
    for i, traj in enumerate(trajectories):
        length = len(traj)
        input_ids[i, :length] = traj.input_ids
        attention[i, :length] = True
        loss_mask[i, :length] = traj.loss_mask()
        token_turns[i, :length] = traj.token_turns(spread)
        step_ig[i, : len(traj.step_ig)] = [np.nan if g is None else g for g in traj.step_ig]
    rewards = np.array([t.reward for t in trajectories], dtype=np.float64)
    groups = [t.group for t in trajectories]
    advantages = group_advantages(rewards, groups, scale=scale, eps=eps)
    if ig_norm == "turn":
        ig = normalize_turn_ig(step_ig, groups, floor=ig_floor, eps=eps)
    else:
        ig = normalize_step_ig(step_ig, groups, eps=eps) if ig_norm == "group" else step_ig
    per_token = token_advantages(advantages, token_turns, ig, ig_weight=ig_weight, ig_clip=ig_clip, mask=loss_mask)
    return CreditBatch(
        input_ids, attention, loss_mask, token_turns, step_ig, rewards, groups,
        np.array([len(t.prompt_ids) for t in trajectories]), advantages, per_token,
    )


# --------------------------------------------------------------------------- characters → tokens


def char_to_token(decode: Callable[[Sequence[int]], str], ids: Sequence[int], char: int) -> int:
    """Index of the token of ``ids`` whose decoded text holds character ``char`` of ``decode(ids)``.

    Binary search over prefix decodings (``O(log n)`` decodes), so the ids are never re-tokenised.
    ``decode`` must map a prefix of ``ids`` to a prefix of the full text (true of byte-level BPE and
    SentencePiece decoders with ``clean_up_tokenization_spaces=False``).
    """
    ids = list(ids)
    if not 0 <= char < len(decode(ids)):
        raise IndexError(f"character {char} is outside the decoded text")
    lo, hi = 0, len(ids) - 1  # answer: the smallest k with len(decode(ids[:k + 1])) > char
    while lo < hi:
        mid = (lo + hi) // 2
        if len(decode(ids[: mid + 1])) > char:
            hi = mid
        else:
            lo = mid + 1
    return lo


def token_span(decode: Callable[[Sequence[int]], str], ids: Sequence[int], start: int, end: int) -> tuple[int, int]:
    """``[first, last + 1)``: the tokens covering characters ``[start, end)`` of ``decode(ids)``."""
    if not 0 <= start < end:
        raise ValueError(f"empty or negative character span [{start}, {end})")
    return char_to_token(decode, ids, start), char_to_token(decode, ids, end - 1) + 1
