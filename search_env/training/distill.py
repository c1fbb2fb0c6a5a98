"""Self-distillation signals for search agents, beside IG: what the teacher sees and the token-level losses.

Two methods from recent papers (described from their abstracts; the papers' code is not public), each built as
described, every choice an argument:

- **Hindsight self-distillation** (SD-Search): the same model plays a student (the inference-time context) and a
  teacher that also reads a *hindsight block*, a compact summary of the queries and outcomes of the group of
  rollouts sampled for the same question (:func:`hindsight_block`, :func:`with_hindsight`). The student matches
  the teacher at the search-query tokens by the token-level Jensen-Shannon divergence (:func:`masked_jsd`), on
  top of GRPO's reward.
- **Sibling-context self-distillation** (Search-E1's OFSD): after a GRPO round the policy is aligned, by a
  token-level forward KL over its response tokens (:func:`forward_kl`), with its own distribution under a
  privileged context that shows a more efficient sibling: a rollout of the same question that succeeded with
  fewer searches (:func:`choose_sibling`, :func:`with_sibling`).

The losses take logits of shape ``(B, L, V)`` at the same positions for student and teacher (the teacher's
context is longer, so its logits are gathered at the positions of the student's tokens first) and a ``(B, L)``
mask; the teacher is never differentiated (``detach``). They return the mean over masked tokens (0 when none).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "Attempt",
    "choose_sibling",
    "distill_loss",
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


def _masked_mean(values, mask):
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1)


def masked_jsd(student_logits, teacher_logits, mask, *, beta: float = 0.5, temperature: float = 1.0):
    """Token-level generalised Jensen-Shannon divergence, ``beta·KL(p_s‖m) + (1−beta)·KL(p_t‖m)`` with
    ``m = beta·p_s + (1−beta)·p_t``, averaged over the tokens where ``mask`` is true (SD-Search: the query
    tokens). ``beta=0.5`` is the symmetric JSD, bounded by ln 2."""
    import torch

    if not 0 < beta < 1:
        raise ValueError(f"beta must be in (0, 1), not {beta}")
    log_s = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    log_t = torch.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    log_m = torch.logsumexp(
        torch.stack([log_s + torch.log(torch.tensor(beta)), log_t + torch.log(torch.tensor(1 - beta))]), dim=0
    )
    kl_s = (log_s.exp() * (log_s - log_m)).sum(-1)
    kl_t = (log_t.exp() * (log_t - log_m)).sum(-1)
    return _masked_mean(beta * kl_s + (1 - beta) * kl_t, mask)


def forward_kl(student_logits, teacher_logits, mask, *, temperature: float = 1.0):
    """Token-level forward KL ``KL(p_teacher‖p_student)`` averaged over the tokens where ``mask`` is true (OFSD:
    the response tokens); only the student gets gradients."""
    import torch

    log_s = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    log_t = torch.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    return _masked_mean((log_t.exp() * (log_t - log_s)).sum(-1), mask)


def distill_loss(model, student_ids, student_mask, teacher_ids, offsets, *, kind: str = "jsd", beta: float = 0.5,
                 temperature: float = 1.0):
    """The self-distillation loss of a batch: the model reads each sequence twice, as the student (its own
    context) and as the teacher (a longer prompt, the same tokens after it), and the student's next-token
    distribution before each token where ``student_mask`` is true is matched to the teacher's before the same
    token (:func:`masked_jsd` for ``kind="jsd"``, SD-Search; :func:`forward_kl` for ``kind="fkl"``, OFSD).

    Args:
        model: a causal LM (the policy); the teacher pass runs without gradients.
        student_ids, teacher_ids: ``(B, Ls)`` and ``(B, Lt)`` token ids, right-padded (pad positions are never read).
        student_mask: ``(B, Ls)``, true on the tokens whose prediction is distilled (never position 0).
        offsets: ``(B,)`` ints, the teacher prompt's length minus the student's: token ``j`` of a student row is
            token ``j + offsets[b]`` of its teacher row.
    """
    import torch

    if kind not in ("jsd", "fkl"):
        raise ValueError(f"kind must be 'jsd' or 'fkl', not {kind!r}")
    rows, cols = torch.nonzero(student_mask, as_tuple=True)
    if rows.numel() == 0:
        return torch.zeros((), device=student_ids.device)
    if (cols < 1).any():
        raise ValueError("position 0 has no prediction to distill")
    t_cols = cols + torch.as_tensor(offsets, device=cols.device)[rows]
    if (t_cols >= teacher_ids.shape[1]).any():
        raise ValueError("offsets put a distilled token past the end of its teacher row")
    student = model(input_ids=student_ids).logits[rows, cols - 1]
    with torch.no_grad():
        teacher = model(input_ids=teacher_ids).logits[rows, t_cols - 1]
    ones = torch.ones(1, rows.numel(), device=student.device)
    if kind == "jsd":
        return masked_jsd(student[None], teacher[None], ones, beta=beta, temperature=temperature)
    return forward_kl(student[None], teacher[None], ones, temperature=temperature)


def teacher_rows(trajectories, teacher_prompts, *, queries_only: bool, pad_id: int):
    """The inputs of :func:`distill_loss` for a batch of :class:`~search_env.training.credit.Trajectory`:
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
                    *, kind: str) -> list[str | None]:
    """Each rollout's teacher prompt (env text, before the policy's own rendering), rollouts in groups of
    ``group_size`` consecutive ones: ``kind="hindsight"``, the prompt with its group's :func:`hindsight_block`;
    ``kind="sibling"``, the prompt with its :func:`choose_sibling` sibling's ``completion``, or None without one."""
    if kind not in ("hindsight", "sibling"):
        raise ValueError(f"kind must be 'hindsight' or 'sibling', not {kind!r}")
    out: list[str | None] = []
    for start in range(0, len(attempts), group_size):
        group = list(attempts[start : start + group_size])
        block = hindsight_block(group) if kind == "hindsight" else ""
        for i in range(len(group)):
            prompt = prompts[start + i]
            if kind == "hindsight":
                out.append(with_hindsight(prompt, block))
            else:
                j = choose_sibling(group, i)
                out.append(None if j is None else with_sibling(prompt, completions[start + j]))
    return out
