"""The held-out split of a question set that a training run and the models it starts from agree on, and the order
in which a run reads its training questions."""

from __future__ import annotations

import numpy as np

from search_env.data.qa import QADataset


def held_out_split(questions: QADataset, eval_size: int, hops: str | None = None) -> tuple[QADataset, QADataset]:
    """``(train, held-out)``: the first ``min(eval_size, n // 2)`` questions of a fixed permutation (seed 0, the
    same for every run) are held out. ``hops`` (e.g. ``"2,3"``) keeps only questions with these hop counts
    (metadata ``hops``) in both parts, filtered after the split so that the held-out part does not move."""
    order = [int(i) for i in np.random.default_rng(0).permutation(len(questions))]
    n_eval = min(eval_size, len(questions) // 2)
    wanted = {int(h) for h in hops.split(",")} if hops else None

    def part(ids, name):
        kept = [questions[i] for i in ids if wanted is None or questions[i].metadata.get("hops") in wanted]
        return QADataset(kept, name=f"{questions.name}:{name}")

    return part(order[n_eval:], "train"), part(order[:n_eval], "held-out")


def three_way_split(questions: QADataset, eval_size: int, hops: str | None = None,
                    warm_questions: int = 0) -> tuple[QADataset, QADataset, QADataset]:
    """``(warm start's, GRPO's, held-out)``: :func:`held_out_split`, then the first ``warm_questions`` of its training
    part are the warm start's (``benchmarks/study/warm_start.py --max-questions``) and the rest GRPO's, so that
    GRPO trains on questions the warm start never saw. The three parts are disjoint.

    Raises:
        ValueError: ``warm_questions`` negative, or leaving GRPO no question.
    """
    train, held_out = held_out_split(questions, eval_size, hops)
    if not 0 <= warm_questions < len(train):
        raise ValueError(f"warm_questions={warm_questions}: use 0 to {len(train) - 1} (the training part has "
                         f"{len(train)} questions)")
    items = list(train)
    return (QADataset(items[:warm_questions], name=f"{questions.name}:warm"),
            QADataset(items[warm_questions:], name=f"{questions.name}:grpo"), held_out)


def question_at(position: int, n: int, seed: int) -> int:
    """The training stream: epoch after epoch, each a permutation drawn from (seed, epoch)."""
    epoch, k = divmod(position, n)
    return int(np.random.default_rng([seed, epoch]).permutation(n)[k])
