"""Answer scorers: teacher-forced log-probability of a gold answer after a context.

``score(a | C)`` is the weighted mean log-probability (nats per token) of the answer tokens after
``C + "\\n<answer>"``; the first ``head_tokens`` tokens weigh ``head_weight`` (weights rescaled to mean 1): the
tokenization and weighting of :class:`~search_env.scoring.score_format.ScoreFormat`, shared by every scorer.
:mod:`search_env.info_gain` turns it into the IG reward ``score(a | C_real) - mean_j score(a | C_rand_j)``.

:class:`TransformersScorer` works with any Hugging Face causal LM (pass the trainer's policy itself). It
computes logits only at answer positions, runs a prefix shared by several sequences (the history of an
IG step and its counterfactuals) once, and keeps an LRU cache of scores that is dropped whenever the
model's weights change; with ``disk_cache`` it also keeps scores on disk for other processes and later runs
(:mod:`search_env.scoring.cache`). One scorer may be called from many threads at once (the envs of a process share
it): the caches are locked only around lookups and updates, and the forward passes run concurrently.
"""

from __future__ import annotations

import copy
import inspect
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from search_env._cache import built_once
from search_env.scoring.base import Scorer  # noqa: F401  (its home before search_env.scoring)
from search_env.scoring.cache import DiskScoreCache, MemoryScoreCache, model_fingerprint
from search_env.scoring.score_format import ScoreFormat

__all__ = ["TransformersScorer", "default_scorer"]

logger = logging.getLogger(__name__)

# Prefix sharing: a group needs at least this many common tokens, and each group costs one extra
# forward pass, counted as this many tokens when deciding how to split sequences into groups.
_MIN_SHARED_TOKENS = 16
_GROUP_OVERHEAD_TOKENS = 32
_MAX_GROUP = 256
_SAMPLES_PER_PARAM = 8


class TransformersScorer:
    """:class:`~search_env.scoring.Scorer` backed by a Hugging Face causal language model.

    The context tokens are those of ``context + answer_prefix``; the answer tokens, those of
    ``" " + answer.strip()`` tokenized on its own, so the leading space belongs to the first answer token
    as when a model writes it. Neither gets special tokens.

    Args:
        model: a causal LM (``AutoModelForCausalLM``); used on its own device and dtype, without
            gradients and in eval mode (its train/eval mode is restored once no call is scoring with it).
        tokenizer: its tokenizer. No special tokens are added: contexts are raw text.
        max_context_tokens: context tokens (including ``answer_prefix``) beyond this are cut from the left.
        head_tokens, head_weight: the first ``head_tokens`` answer tokens weigh ``head_weight``, the rest 1.
        answer_prefix: appended to every context before the answer.
        answer_style: ``"natural"`` (default) or ``"authors"``: how the answer follows the context
            (:class:`~search_env.scoring.score_format.ScoreFormat`); part of the disk cache's fingerprint.
        batch_size: sequences per forward pass.
        share_prefix: run a token prefix common to several sequences once and batch only the suffixes.
        cache_size: LRU cache entries keyed on (context, answer); 0 disables it. The cache is cleared
            automatically when the model's parameters are updated in place (``optimizer.step()``,
            ``load_state_dict``) or replaced; call :meth:`clear_cache` after any other kind of change.
        disk_cache: also keep scores on disk, shared with other processes and later runs
            (:class:`~search_env.scoring.cache.DiskScoreCache`, keyed by :attr:`fingerprint`, the context and the
            answer): ``True`` for the default file under ``cache_dir("scores")``, a path (a file, or a folder),
            or a ``DiskScoreCache``; ``False`` (default) for none. Worth it for a frozen scorer whose pairs
            recur across runs; the fingerprint hashes every weight, once per scorer and again after each change
            the in-memory cache notices, so leave it off when scoring with a policy that is being trained.
        confidence: ``"logprob"`` (default): the weighted mean log-probability; ``"infogain"``: InfoGain-RAG's
            confidence in [0, 1] (:func:`~search_env.scoring.score_format.infogain_confidence`).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_context_tokens: int = 4096,
        head_tokens: int = 3,
        head_weight: float = 3.0,
        answer_prefix: str = "\n<answer>",
        answer_style: str = "natural",
        batch_size: int = 16,
        share_prefix: bool = True,
        cache_size: int = 4096,
        disk_cache: bool | str | os.PathLike | DiskScoreCache = False,
        confidence: str = "logprob",
    ) -> None:
        self.score_format = ScoreFormat(answer_prefix, max_context_tokens, head_tokens, float(head_weight),
                                        answer_style, confidence=confidence)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.share_prefix = share_prefix
        self._cache = MemoryScoreCache(cache_size)
        self._lock = threading.Lock()  # guards _weights_seen and _fingerprint
        self._weights_seen = self._weights_fingerprint()
        if disk_cache is True or isinstance(disk_cache, (str, os.PathLike)):
            disk_cache = DiskScoreCache(None if disk_cache is True else disk_cache)
        elif disk_cache is not False and disk_cache is not None and not isinstance(disk_cache, DiskScoreCache):
            raise TypeError(f"disk_cache must be a bool, a path or a DiskScoreCache, not {type(disk_cache).__name__}")
        self.disk_cache: DiskScoreCache | None = disk_cache if isinstance(disk_cache, DiskScoreCache) else None
        self._fingerprint: str | None = None
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        forward_args = inspect.signature(model.forward).parameters
        self._keeps_logits = "logits_to_keep" in forward_args
        # recent transformers (5.24) call the KV cache argument `cache` and deprecate `past_key_values`
        self._cache_arg = "cache" if "cache" in forward_args else "past_key_values"

    # The scoring settings live in ``score_format`` alone (read-only views, for the fingerprint and callers).
    max_context_tokens = property(lambda self: self.score_format.max_context_tokens)
    head_tokens = property(lambda self: self.score_format.head_tokens)
    head_weight = property(lambda self: self.score_format.head_weight)
    answer_prefix = property(lambda self: self.score_format.answer_prefix)
    answer_style = property(lambda self: self.score_format.answer_style)
    cache_size = property(lambda self: self._cache.size)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        *,
        dtype: torch.dtype | str = torch.float32,
        device: str | torch.device | None = None,
        model_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> TransformersScorer:
        """A scorer on the causal LM :func:`~search_env.agents.models.load_causal_lm` loads for ``name_or_path``
        (``"bundled"``: the bundled SmolLM2-135M-Instruct).

        ``kwargs`` go to :class:`TransformersScorer`; ``model_kwargs`` to ``AutoModelForCausalLM.from_pretrained``.
        """
        from search_env.agents.models import load_causal_lm

        model, tokenizer = load_causal_lm(name_or_path, dtype=dtype, device=device, **(model_kwargs or {}))
        return cls(model, tokenizer, **kwargs)

    # ----------------------------------------------------------------------------------------- public

    def score(self, contexts: Sequence[str], answers: Sequence[str]) -> np.ndarray:
        """Weighted mean answer log-probability (nats/token) for each (context, answer) pair."""
        contexts, answers = list(contexts), list(answers)
        if len(contexts) != len(answers):
            raise ValueError(f"got {len(contexts)} contexts but {len(answers)} answers")
        if not contexts:
            return np.zeros(0, dtype=np.float64)

        keys = list(zip(contexts, answers))
        unique = list(dict.fromkeys(keys))
        weights = self._weights_fingerprint()
        with self._lock:  # the weight check, the lookup and the disk key belong to one state of the model
            if not _same_fingerprint(weights, self._weights_seen):
                self._clear_locked()
                self._weights_seen = weights
            known, generation = self._cache.get(unique)
            missing = [k for k in unique if k not in known]
            disk_key = self._model_fingerprint() if missing and self.disk_cache is not None else None
        fresh = {}
        if disk_key is not None:
            fresh = self.disk_cache.get(disk_key, missing)
            missing = [k for k in missing if k not in fresh]
        if missing:
            computed = dict(zip(missing, self._score_uncached(missing)))
            if disk_key is not None:
                self.disk_cache.put(disk_key, computed)
            fresh.update(computed)
        self._cache.put(fresh, generation)
        known.update(fresh)
        return np.array([known[key] for key in keys], dtype=np.float64)

    def clear_cache(self) -> None:
        """Forget all scores cached in memory, and the model's :attr:`fingerprint` (it is computed again when the
        disk cache is next used, so scores on disk are never those of older weights)."""
        with self._lock:
            self._clear_locked()

    @property
    def fingerprint(self) -> str:
        """The digest of the weights, config, tokenizer and scoring settings that keys the disk cache
        (:func:`~search_env.scoring.cache.model_fingerprint`); computed on first use."""
        with self._lock:
            return self._model_fingerprint()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # --------------------------------------------------------------------------------------- internals

    def _clear_locked(self) -> None:
        self._cache.clear()
        self._fingerprint = None

    def _model_fingerprint(self) -> str:
        """:attr:`fingerprint`, with ``_lock`` held (so threads that need it at once hash the weights once)."""
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(
                self.model, self.tokenizer, max_context_tokens=self.max_context_tokens, head_tokens=self.head_tokens,
                head_weight=self.head_weight, answer_prefix=self.answer_prefix,
                answer_style=self.answer_style,
                **({} if self.score_format.confidence == "logprob" else {"confidence": self.score_format.confidence}))
        return self._fingerprint

    def _weights_fingerprint(self) -> tuple[int, int, torch.Tensor | None]:
        """Cheap signature of the weights, to tell when cached scores are stale.

        In-place updates bump a tensor's version counter and replacing a parameter changes its storage,
        but fused optimizers (``AdamW(fused=True)``, the Hugging Face Trainer default) write without
        bumping versions, so a few sampled values of every parameter are compared as well.
        """
        params = [p for p in self.model.parameters() if p.device.type != "meta"]
        samples = [p.detach().reshape(-1)[:: max(1, p.numel() // _SAMPLES_PER_PARAM)] for p in params]
        return (
            sum(p._version for p in params),
            sum(p.data_ptr() for p in params),
            torch.cat(samples).clone() if samples else None,
        )

    def _encode(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[np.ndarray, int]]:
        """Token ids of each full sequence and the number of context tokens in it."""
        return [
            (np.asarray(ids, dtype=np.int64), start) for ids, start in self.score_format.encode(self.tokenizer, pairs)
        ]

    def _score_uncached(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        encoded = self._encode(pairs)
        groups = _group_by_prefix(encoded) if self.share_prefix else [([i], 0) for i in range(len(encoded))]
        scores = np.empty(len(encoded), dtype=np.float64)
        plain = [i for members, _ in groups if len(members) == 1 for i in members]
        with _eval_mode(self.model), torch.no_grad():
            for members, shared in groups:
                if len(members) > 1:
                    self._score_shared(encoded, members, shared, scores)
            # Longest first, so each batch holds sequences of similar length (less padding).
            plain.sort(key=lambda i: -len(encoded[i][0]))
            for start in range(0, len(plain), self.batch_size):
                chunk = plain[start : start + self.batch_size]
                scores[chunk] = self._answer_scores([encoded[i][0] for i in chunk], [encoded[i][1] for i in chunk])
        return scores

    def _score_shared(self, encoded, members: list[int], shared: int, scores: np.ndarray) -> None:
        """Run ``shared`` common prefix tokens once, then the members' suffixes on its KV cache."""
        prefix = torch.as_tensor(encoded[members[0]][0][:shared], device=self._device)[None]
        _, prefix_cache = self._forward(prefix, torch.ones_like(prefix), None, None)
        chunks = [members[s : s + self.batch_size] for s in range(0, len(members), self.batch_size)]
        for n, chunk in enumerate(chunks):
            cache = prefix_cache if n == len(chunks) - 1 else copy.deepcopy(prefix_cache)
            cache.batch_repeat_interleave(len(chunk))
            scores[chunk] = self._answer_scores(
                [encoded[i][0][shared:] for i in chunk],
                [encoded[i][1] - shared for i in chunk],
                past=cache,
                offset=shared,
            )

    def _answer_scores(
        self, rows: list[np.ndarray], starts: list[int], past: Any = None, offset: int = 0
    ) -> list[float]:
        """Score of the answer ``row[start:]`` of each row, the rows right-padded into one batch.

        ``past``/``offset``: a KV cache of ``offset`` tokens that every row continues.
        """
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), offset + width), dtype=torch.long)
        keep = torch.zeros((len(rows), width), dtype=torch.bool)
        for k, (row, start) in enumerate(zip(rows, starts)):
            ids[k, : len(row)] = torch.as_tensor(row)
            mask[k, : offset + len(row)] = 1
            keep[k, start - 1 : len(row) - 1] = True  # the logits at position j predict token j + 1
        targets = ids[:, 1:][keep[:, :-1]]
        position_ids = (offset + torch.arange(width)).expand(len(rows), width)
        device = self._device
        logits, _ = self._forward(ids.to(device), mask.to(device), position_ids.to(device), past, keep.to(device))
        logps = torch.log_softmax(logits.float(), dim=-1)
        picked = logps.gather(-1, targets.to(device)[:, None])[:, 0].double().cpu().numpy()
        per_row = np.split(picked, np.cumsum([len(r) - s for r, s in zip(rows, starts)])[:-1])
        return [self.score_format.combine(lp) for lp in per_row]

    def _forward(self, ids, mask, position_ids, past, keep=None):
        """(logits at ``keep`` positions as [n_kept, vocab] or None, KV cache)."""
        model = self.model
        want_cache = keep is None
        if self._keeps_logits:
            out = model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=position_ids,
                use_cache=want_cache or past is not None,
                logits_to_keep=keep if keep is not None else 1,
                **{self._cache_arg: past},
            )
            return (out.logits if keep is not None else None), getattr(out, self._cache_arg, None)
        # Models without ``logits_to_keep``: project only the kept hidden states.
        out = model.get_decoder()(
            input_ids=ids, attention_mask=mask, position_ids=position_ids, use_cache=True, **{self._cache_arg: past}
        )
        logits = model.get_output_embeddings()(out.last_hidden_state[keep]) if keep is not None else None
        return logits, getattr(out, self._cache_arg, None)

    @property
    def _device(self) -> torch.device:
        return next(self.model.parameters()).device


def _group_by_prefix(encoded: Sequence[tuple[np.ndarray, int]]) -> list[tuple[list[int], int]]:
    """Split sequences into (members, shared prefix length) groups, minimising tokens run.

    Sequences are sorted so that those with long common prefixes are adjacent; a dynamic programme
    then picks contiguous groups. A group of G sequences with P common tokens costs
    P + G * (longest suffix) + overhead (suffixes are padded to the longest); a lone sequence costs its
    length. The shared prefix always leaves the last context token in the suffix, whose logits are needed.
    """
    order = sorted(range(len(encoded)), key=lambda i: encoded[i][0].tolist())
    seqs = [encoded[i][0] for i in order]
    lengths = [len(s) for s in seqs]
    caps = [encoded[i][1] - 1 for i in order]
    lcp = [_common_prefix(a, b) for a, b in zip(seqs, seqs[1:])]  # lcp[i]: seqs[i] vs seqs[i + 1]

    n = len(seqs)
    best = [0.0] * (n + 1)
    choice = [(0, 0)] * (n + 1)  # (start of the last group, its shared length)
    for j in range(1, n + 1):
        best[j], choice[j] = best[j - 1] + lengths[j - 1], (j - 1, 0)
        shared, longest = caps[j - 1], lengths[j - 1]
        for i in range(j - 2, max(-1, j - 1 - _MAX_GROUP), -1):
            shared = min(shared, lcp[i], caps[i])
            if shared < _MIN_SHARED_TOKENS:
                break  # only shrinks as the group grows
            longest = max(longest, lengths[i])
            cost = best[i] + shared + (j - i) * (longest - shared) + _GROUP_OVERHEAD_TOKENS
            if cost < best[j]:
                best[j], choice[j] = cost, (i, shared)

    groups = []
    j = n
    while j > 0:
        i, shared = choice[j]
        groups.append(([order[k] for k in range(i, j)], shared))
        j = i
    return groups[::-1]


def _same_fingerprint(a, b) -> bool:
    if a[:2] != b[:2]:
        return False
    if a[2] is None or b[2] is None:
        return a[2] is b[2]
    return torch.equal(a[2], b[2])


def _common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    m = min(len(a), len(b))
    diff = np.flatnonzero(a[:m] != b[:m])
    return int(diff[0]) if diff.size else m


_MODES_LOCK = threading.Lock()
_IN_EVAL: dict[int, list] = {}  # id(model) -> [callers inside _eval_mode, the modes to restore]


@contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode (no dropout) inside; every submodule's own mode restored when the last of the threads inside
    (for this model) leaves, so no thread's forward pass runs in a mode another thread restored."""
    with _MODES_LOCK:
        entry = _IN_EVAL.get(id(model))
        if entry is None:
            entry = _IN_EVAL[id(model)] = [0, [(m, m.training) for m in model.modules()]]
            model.eval()
        entry[0] += 1
    try:
        yield
    finally:
        with _MODES_LOCK:
            entry[0] -= 1
            if entry[0] == 0:
                del _IN_EVAL[id(model)]
                for module, training in entry[1]:
                    module.training = training


def default_scorer(name: str = "bundled") -> TransformersScorer:
    """The process-wide :class:`TransformersScorer` on the model ``name`` (default: the bundled
    SmolLM2-135M-Instruct), loaded on the first call; every env given the same name shares it."""
    return built_once("scorer", name, lambda: TransformersScorer.from_pretrained(name))
