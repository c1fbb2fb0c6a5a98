"""Self-distillation signals for search agents, beside IG: what the teacher sees and the token-level losses.

Two methods from recent papers (described from their abstracts; the papers' code is not public), each built as
described, every choice an argument:

- **Hindsight self-distillation** (SD-Search): the same model plays a student (the inference-time context) and a
  teacher that also reads a *hindsight block*, a compact summary of the queries and outcomes of the other rollouts
  sampled for the same question (:func:`hindsight_block`, :func:`teacher_prompts`; a rollout's own attempt is left
  out of its own teacher's block unless ``keep_own``). The student matches the teacher at the search-query tokens
  by the token-level Jensen-Shannon divergence (:func:`masked_jsd`, ``beta=0.5``), on top of GRPO's reward.
- **Sibling-context self-distillation** (Search-E1's OFSD): in separate rounds between GRPO's
  (:func:`distill_schedule`), the policy is aligned, by a token-level forward KL over its response tokens
  (:func:`forward_kl`), with its own distribution under a privileged context that shows a more efficient sibling:
  a rollout of the same question that succeeded with fewer searches (:func:`choose_sibling`, :func:`with_sibling`).

The losses take logits of shape ``(B, L, V)`` at the same positions for student and teacher and a ``(B, L)`` mask;
the teacher is never differentiated (``detach``). :class:`DistillBatch` runs them over a batch in micro-batches,
with the teacher at the step's pre-update weights. :func:`direction_probe` measures which way a teacher moves a
successful and a failed query (``benchmarks/distill_probe.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

__all__ = [
    "METHODS",
    "Attempt",
    "DistillBatch",
    "choose_sibling",
    "continuation_logprobs",
    "direction_probe",
    "distill_schedule",
    "forward_kl",
    "hindsight_block",
    "masked_jsd",
    "teacher_prompts",
    "teacher_rows",
    "with_hindsight",
    "with_sibling",
]

HINDSIGHT_HEADER = "Hindsight from {n} earlier attempts at this question (queries, then the outcome):"


@dataclass(frozen=True)
class Attempt:
    """One rollout as the hindsight block and the sibling choice read it."""

    queries: Sequence[str]
    answer: str | None  # None: cut off without an answer
    correct: bool


def hindsight_block(attempts: Sequence[Attempt], *, max_attempts: int = 8, max_query_chars: int = 60,
                    max_chars: int = 1200) -> str:
    """The SD-Search teacher's extra context: each attempt's queries in order, its answer and whether it was right.

    Bounded: at most ``max_attempts`` attempts (correct ones first, then the rest, each in their order), queries
    cut to ``max_query_chars`` characters, and whole lines dropped from the end so the block is at most
    ``max_chars`` characters. Format::

        Hindsight from 3 earlier attempts at this question (queries, then the outcome):
        1. "Anna Holm" -> "Brodamuld Music" -> answered "1941": correct
        2. "After Holmessa" -> answered "1952": wrong
        3. "Anna Holm" -> no answer (cut off)
    """
    chosen = ([a for a in attempts if a.correct] + [a for a in attempts if not a.correct])[:max_attempts]

    def cut(text: str) -> str:
        text = " ".join(text.split())
        return text if len(text) <= max_query_chars else text[: max_query_chars - 1] + "…"

    lines = [HINDSIGHT_HEADER.format(n=len(chosen))]
    for i, attempt in enumerate(chosen, 1):
        steps = [f'"{cut(q)}"' for q in attempt.queries]
        end = "no answer (cut off)" if attempt.answer is None else \
            f'answered "{cut(attempt.answer)}": {"correct" if attempt.correct else "wrong"}'
        lines.append(f"{i}. " + " -> ".join([*steps, end]))
    while len("\n".join(lines)) > max_chars and len(lines) > 1:
        lines.pop()
    return "\n".join(lines) if len(lines) > 1 else ""


def with_hindsight(prompt: str, block: str) -> str:
    """The teacher's prompt: the student's, then the hindsight block (nothing added when the block is empty)."""
    return f"{prompt.rstrip()}\n\n{block}\n" if block else prompt


def choose_sibling(attempts: Sequence[Attempt], index: int) -> int | None:
    """The OFSD sibling of rollout ``index``: the correct rollout of the group with the fewest searches, when it
    searched fewer times than ``index`` did (or ``index`` was wrong); ties go to the earliest. None: no such one."""
    mine = attempts[index]
    best = None
    for j, other in enumerate(attempts):
        if j == index or not other.correct:
            continue
        if best is None or len(other.queries) < len(attempts[best].queries):
            best = j
    if best is None or (mine.correct and len(attempts[best].queries) >= len(mine.queries)):
        return None
    return best


def with_sibling(prompt: str, sibling_transcript: str) -> str:
    """The privileged prompt of OFSD: the student's, then a sibling's successful episode as a worked example."""
    return (f"{prompt.rstrip()}\n\nAn earlier attempt at this question that found the answer with few searches:\n"
            f"{sibling_transcript.strip()}\n")


def _upcast(logits):
    """fp32 for half-precision logits (fp64 stays fp64)."""
    import torch

    return logits if logits.dtype == torch.float64 else logits.float()


def _masked_mean(values, mask):
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1)


def masked_jsd(student_logits, teacher_logits, mask, *, beta: float = 0.5, temperature: float = 1.0):
    """Token-level generalised Jensen-Shannon divergence in GKD's and TRL's convention (``GKDTrainer.
    generalized_jsd_loss``): ``beta·KL(p_t‖m) + (1−beta)·KL(p_s‖m)`` with ``m = beta·p_t + (1−beta)·p_s``,
    averaged over the tokens where ``mask`` is true. ``beta=0``: the forward KL ``KL(p_t‖p_s)``; ``beta=1``: the
    reverse KL ``KL(p_s‖p_t)``; ``beta=0.5``: the symmetric JSD (SD-Search), bounded by ln 2."""
    import torch

    if not 0 <= beta <= 1:
        raise ValueError(f"beta must be in [0, 1], not {beta}")
    log_s = torch.log_softmax(_upcast(student_logits) / temperature, dim=-1)
    log_t = torch.log_softmax(_upcast(teacher_logits.detach()) / temperature, dim=-1)
    if beta == 0:
        return _masked_mean((log_t.exp() * (log_t - log_s)).sum(-1), mask)
    if beta == 1:
        return _masked_mean((log_s.exp() * (log_s - log_t)).sum(-1), mask)
    log_m = torch.logsumexp(torch.stack([log_t + math.log(beta), log_s + math.log1p(-beta)]), dim=0)
    kl_t = (log_t.exp() * (log_t - log_m)).sum(-1)
    kl_s = (log_s.exp() * (log_s - log_m)).sum(-1)
    return _masked_mean(beta * kl_t + (1 - beta) * kl_s, mask)


def forward_kl(student_logits, teacher_logits, mask, *, temperature: float = 1.0):
    """Token-level forward KL ``KL(p_teacher‖p_student)`` averaged over the tokens where ``mask`` is true (OFSD:
    the response tokens): :func:`masked_jsd` at ``beta=0``."""
    return masked_jsd(student_logits, teacher_logits, mask, beta=0.0, temperature=temperature)


def logits_at(model, input_ids, rows, positions):
    """``(N, V)``: the logits of ``model`` at ``(rows[k], positions[k])`` of ``input_ids``, computed from the first
    of those positions on only (``logits_to_keep``); ``input_ids`` may be cut right after the last one."""
    first = int(positions.min())
    logits = model(input_ids=input_ids, use_cache=False, logits_to_keep=input_ids.shape[1] - first).logits
    return logits[rows, positions - first]


class DistillBatch:
    """One batch's self-distillation loss: the model reads each sequence twice, as the student (its own context)
    and as the teacher (a longer prompt, the same tokens after it), and the student's next-token distribution
    before each token where ``student_mask`` is true is matched to the teacher's before the same token by
    :func:`masked_jsd` at ``beta`` (0.5, SD-Search's JSD; 0, OFSD's forward KL).

    Micro-batched like the GRPO update: ``micro_batch_size`` rows per forward, logits only from each micro-batch's
    first distilled position on, and only those positions kept; the loss is the mean over all distilled tokens of
    the batch. The teacher is the model's weights before the step's update: its logits are computed without
    gradients in the first :meth:`backward` (before ``optimizer.step()``) and, when ``passes`` > 1 (several
    update epochs), kept for the later ones (``N × V`` floats), so it never drifts with the student within a step.
    Pre-update weights rather than an EMA copy: the same policy as both roles (SD-Search, Search-E1), no second
    model in memory; across steps the teacher follows the policy, as on-policy self-distillation does.

    Args:
        student_ids, teacher_ids: ``(B, Ls)`` and ``(B, Lt)`` token ids, right-padded (pad positions are never read).
        student_mask: ``(B, Ls)``, true on the tokens whose prediction is distilled (never position 0).
        offsets: ``(B,)`` ints, the teacher prompt's length minus the student's: token ``j`` of a student row is
            token ``j + offsets[b]`` of its teacher row.
    """

    def __init__(self, student_ids, student_mask, teacher_ids, offsets, *, beta: float = 0.5,
                 temperature: float = 1.0, micro_batch_size: int = 4, passes: int = 1):
        import torch

        if not 0 <= beta <= 1:
            raise ValueError(f"beta must be in [0, 1], not {beta}")
        if micro_batch_size < 1 or passes < 1:
            raise ValueError(f"micro_batch_size and passes must be positive, not {micro_batch_size}, {passes}")
        offsets = torch.as_tensor(offsets, device=student_ids.device)
        rows, cols = torch.nonzero(student_mask, as_tuple=True)
        if (cols < 1).any():
            raise ValueError("position 0 has no prediction to distill")
        if (cols + offsets[rows] >= teacher_ids.shape[1]).any():
            raise ValueError("offsets put a distilled token past the end of its teacher row")
        self.student_ids, self.student_mask, self.teacher_ids = student_ids, student_mask, teacher_ids
        self.offsets = offsets
        self.beta, self.temperature, self.passes_left = beta, temperature, passes
        self.n_tokens = rows.numel()
        self.micro_batches = []  # (first row, rows within it, distilled columns)
        for s in range(0, student_ids.shape[0], micro_batch_size):
            r, c = torch.nonzero(student_mask[s : s + micro_batch_size], as_tuple=True)
            if r.numel():
                self.micro_batches.append((s, r, c))
        self.size, self.teachers = micro_batch_size, {}

    def teacher_logits(self, model, k: int):
        """The teacher's logits (no gradient) at micro-batch ``k``'s distilled positions, computed once per step."""
        import torch

        if k not in self.teachers:
            s, rows, cols = self.micro_batches[k]
            t_cols = cols + self.offsets[s + rows]
            with torch.no_grad():
                ids = self.teacher_ids[s : s + self.size, : int(t_cols.max())]
                self.teachers[k] = _upcast(logits_at(model, ids, rows, t_cols - 1))
        return self.teachers[k]

    def backward(self, model, weight: float = 1.0, autocast=nullcontext) -> float:
        """Accumulates the gradient of ``weight`` × the loss into the model's ``.grad``, one micro-batch at a time,
        and returns ``weight`` × the loss (0.0 when no token is distilled)."""
        if self.passes_left < 1:
            raise RuntimeError("every pass of this batch is done: its teacher logits were released")
        total = 0.0
        for k, (s, rows, cols) in enumerate(self.micro_batches):
            with autocast():
                teacher = self.teacher_logits(model, k)
                student = logits_at(model, self.student_ids[s : s + self.size, : int(cols.max())], rows, cols - 1)
            ones = student.new_ones(1, rows.numel())
            loss = masked_jsd(student[None], teacher[None], ones, beta=self.beta, temperature=self.temperature)
            loss = loss * (weight * rows.numel() / self.n_tokens)
            if loss.requires_grad:
                loss.backward()
            total += loss.item()
        self.passes_left -= 1
        if not self.passes_left:
            self.teachers.clear()
        return total


def teacher_rows(trajectories, teacher_prompts, *, queries_only: bool, pad_id: int):
    """The inputs of :class:`DistillBatch` for a batch of :class:`~search_env.training.credit.Trajectory`:
    ``(student_ids, student_mask, teacher_ids, offsets)`` tensors, right-padded with ``pad_id``.

    A trajectory's teacher row is its completion (policy and env tokens, as generated and tokenised) after
    ``teacher_prompts[i]`` (token ids) instead of its own prompt. The mask covers its search-query tokens
    (``queries_only``, SD-Search) or all its policy tokens (OFSD); a trajectory whose teacher prompt is ``None``
    (no sibling to learn from) gets an empty mask.
    """
    import torch

    students, masks, teachers, offsets = [], [], [], []
    for traj, prompt in zip(trajectories, teacher_prompts):
        mask = [0] * len(traj.prompt_ids)
        for seg in traj.segments:
            part = [0] * len(seg.ids)
            if seg.from_policy and prompt is not None:
                if not queries_only:
                    part = [1] * len(seg.ids)
                elif seg.query_span is not None:
                    start, end = seg.query_span
                    part[start:end] = [1] * (end - start)
            mask += part
        students.append(traj.input_ids)
        masks.append(mask)
        teachers.append(list(prompt if prompt is not None else traj.prompt_ids) + traj.completion_ids)
        offsets.append(len(teachers[-1]) - len(students[-1]))
    pad = lambda rows, fill: torch.tensor([r + [fill] * (max(map(len, rows)) - len(r)) for r in rows])  # noqa: E731
    return pad(students, pad_id), pad(masks, 0).bool(), pad(teachers, pad_id), torch.tensor(offsets)


def teacher_prompts(attempts: Sequence[Attempt], prompts: Sequence[str], completions: Sequence[str], group_size: int,
                    *, kind: str, keep_own: bool = False) -> list[str | None]:
    """Each rollout's teacher prompt (env text, before the policy's own rendering), rollouts in groups of
    ``group_size`` consecutive ones: ``kind="hindsight"``, the prompt with a :func:`hindsight_block` of its group's
    *other* attempts (``keep_own``: all of them, its own included, which a copying model then repeats whether it
    failed or not); ``kind="sibling"``, the prompt with its :func:`choose_sibling` sibling's ``completion``, or None
    without one."""
    if kind not in ("hindsight", "sibling"):
        raise ValueError(f"kind must be 'hindsight' or 'sibling', not {kind!r}")
    out: list[str | None] = []
    for start in range(0, len(attempts), group_size):
        group = list(attempts[start : start + group_size])
        for i in range(len(group)):
            prompt = prompts[start + i]
            if kind == "hindsight":
                shown = group if keep_own else group[:i] + group[i + 1 :]
                out.append(with_hindsight(prompt, hindsight_block(shown)))
            else:
                j = choose_sibling(group, i)
                out.append(None if j is None else with_sibling(prompt, completions[start + j]))
    return out


# The methods' recipes: divergence (masked_jsd's beta), distilled tokens, and when the loss is trained.
METHODS = {"hindsight": {"beta": 0.5, "queries_only": True}, "sibling": {"beta": 0.0, "queries_only": False}}
ROUND_EVERY = 5  # sibling rounds: every 5th step (4 GRPO steps, then a distillation round); the project's choice


def distill_schedule(method: str, schedule: str = "paper", every: int | None = None) -> tuple[int, bool]:
    """``(every, alone)``: distil on every ``every``-th step, ``alone`` (separate rounds, the distillation loss the
    only one trained) or added to that step's GRPO loss. ``schedule="paper"``: hindsight joins every GRPO step
    (SD-Search: a dense signal within the RL loop), sibling runs separate rounds every ``ROUND_EVERY`` steps
    (Search-E1: GRPO interleaved with self-distillation rounds; the round length is not in its abstract);
    ``"rounds"`` or ``"joint"`` choose either for either method; ``every`` overrides the step interval.
    ``method="none"``: ``(0, False)``, never."""
    if method not in (*METHODS, "none"):
        raise ValueError(f"method must be none, hindsight or sibling, not {method!r}")
    if schedule not in ("paper", "rounds", "joint"):
        raise ValueError(f"schedule must be paper, rounds or joint, not {schedule!r}")
    if method == "none":
        return 0, False
    alone = schedule == "rounds" or (schedule == "paper" and method == "sibling")
    every = (ROUND_EVERY if alone else 1) if every is None else every
    if every < 1:
        raise ValueError(f"every must be a positive number of steps, not {every}")
    return every, alone


def search_turn(query: str) -> str:
    """A first turn that only searches, as the probe scores it."""
    return f"<search> {query} </search>"


def continuation_logprobs(model, context: Sequence[int], continuations: Sequence[Sequence[int]]) -> list[float]:
    """``log p(continuation | context)`` (nats, summed over its tokens) of each continuation, one forward pass."""
    import torch

    rows = [list(context) + list(c) for c in continuations]
    ids = torch.tensor([r + [0] * (max(map(len, rows)) - len(r)) for r in rows])
    r, c = zip(*[(b, len(context) + j) for b, cont in enumerate(continuations) for j in range(len(cont))])
    rows_t, cols = torch.tensor(r), torch.tensor(c)
    with torch.no_grad():
        logp = torch.log_softmax(logits_at(model, ids, rows_t, cols - 1).float(), dim=-1)
    picked = logp[torch.arange(len(r)), ids[rows_t, cols]]
    return [float(picked[rows_t == b].sum()) for b in range(len(continuations))]


PROBE_TEACHERS = ("hindsight", "hindsight+own", "hindsight/successful", "sibling")


def direction_probe(model, encode, prompt: str, success: tuple[Attempt, str], failure: tuple[Attempt, str],
                    render=lambda text: text) -> dict[str, tuple[float, float]]:
    """Which way each teacher moves the first search of a successful and of a failed attempt at one question,
    relative to the student: ``{teacher: (Δ successful query, Δ failed query)}`` with
    ``Δ = log p_teacher − log p_student`` of :func:`search_turn` right after the prompt. The teacher raises the
    successful query above the failed one when the first is larger.

    Teachers (:data:`PROBE_TEACHERS`, prompts from :func:`teacher_prompts`): ``"hindsight"``, the failed rollout's
    (its block shows the successful attempt only); ``"hindsight+own"``, with ``keep_own`` (both attempts, the same
    block for both rollouts); ``"hindsight/successful"``, the successful rollout's (the failed attempt only);
    ``"sibling"``, the failed rollout's, reading the successful completion.

    Args:
        encode: text -> token ids; render: the env prompt -> the policy's input (e.g. its chat template).
        success, failure: ``(Attempt, completion text)``, each attempt's first query its first search.
    """
    attempts, completions = [success[0], failure[0]], [success[1], failure[1]]
    own_out = teacher_prompts(attempts, [prompt] * 2, completions, 2, kind="hindsight")
    own_in = teacher_prompts(attempts, [prompt] * 2, completions, 2, kind="hindsight", keep_own=True)
    sibling = teacher_prompts(attempts, [prompt] * 2, completions, 2, kind="sibling")
    contexts = {"student": prompt, "hindsight": own_out[1], "hindsight+own": own_in[1],
                "hindsight/successful": own_out[0], "sibling": sibling[1]}
    turns = [encode(search_turn(a.queries[0])) for a in attempts]
    logp = {name: continuation_logprobs(model, encode(render(text)), turns) for name, text in contexts.items()}
    return {name: (logp[name][0] - logp["student"][0], logp[name][1] - logp["student"][1])
            for name in PROBE_TEACHERS}
