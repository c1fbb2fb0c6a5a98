"""search_env.training.distill: the hindsight block and the sibling choice on fixed groups, and the JSD and forward-KL
losses on small logits, checked against values computed by hand, exactly where the masks say."""

import math

import pytest

from search_env.training.distill import (
    Attempt,
    choose_sibling,
    forward_kl,
    hindsight_block,
    masked_jsd,
    with_hindsight,
    with_sibling,
)
from tests.standins import tiny_llama

torch = pytest.importorskip("torch")

GROUP = [Attempt(["After Holmessa"], "1952", False),
         Attempt(["Anna Holm", "Brodamuld Music"], "1941", True),
         Attempt(["Anna Holm", "x" * 100], None, False),
         Attempt(["Brodamuld Music"], "1941", True)]


def test_hindsight_block_exactly():
    assert hindsight_block(GROUP) == "\n".join([
        "Hindsight from 4 earlier attempts at this question (queries, then the outcome):",
        '1. "Anna Holm" -> "Brodamuld Music" -> answered "1941": correct',
        '2. "Brodamuld Music" -> answered "1941": correct',
        '3. "After Holmessa" -> answered "1952": wrong',
        '4. "Anna Holm" -> "' + "x" * 59 + '…" -> no answer (cut off)'])
    short = hindsight_block(GROUP, max_chars=150)
    assert len(short) <= 150 and short.count("\n") == 1 and "1. " in short and "2. " not in short
    assert hindsight_block(GROUP, max_attempts=1).endswith('answered "1941": correct') and hindsight_block([]) == ""
    assert with_hindsight("Question: Q?\n", "B") == "Question: Q?\n\nB\n" and with_hindsight("P", "") == "P"


def test_sibling_choice():
    assert choose_sibling(GROUP, 0) == 3  # wrong: the correct one with the fewest searches
    assert choose_sibling(GROUP, 1) == 3  # correct with 2 searches: a sibling with 1 is more efficient
    assert choose_sibling(GROUP, 3) is None  # already the most efficient
    assert choose_sibling(GROUP, 2) == 3
    assert choose_sibling([Attempt(["a"], "x", False), Attempt(["b"], None, False)], 0) is None
    tie = [Attempt(["a", "b"], "y", False), Attempt(["c"], "x", True), Attempt(["d"], "x", True)]
    assert choose_sibling(tie, 0) == 1
    assert "An earlier attempt" in with_sibling(
        "P", " <search> c </search> "
    ) and "<search> c </search>" in with_sibling("P", "<search> c </search>")


def logits():
    """Two positions over a 2-token vocabulary: position 0 compared, position 1 masked out (wildly different)."""
    student = torch.tensor([[[0.0, 0.0], [10.0, -10.0]]], requires_grad=True)
    teacher = torch.tensor([[[math.log(3.0), 0.0], [-10.0, 10.0]]], requires_grad=True)
    return student, teacher, torch.tensor([[1, 0]])


def test_jsd_by_hand():
    student, teacher, mask = logits()
    p, q = [0.5, 0.5], [0.75, 0.25]
    m = [(a + b) / 2 for a, b in zip(p, q)]
    kl = lambda x, y: sum(a * math.log(a / b) for a, b in zip(x, y))  # noqa: E731
    loss = masked_jsd(student, teacher, mask)
    assert loss.item() == pytest.approx(0.5 * kl(p, m) + 0.5 * kl(q, m), abs=1e-6)
    assert loss.item() == pytest.approx(0.0338213, abs=1e-6)
    loss.backward()
    assert student.grad is not None and teacher.grad is None  # the teacher is a target, not trained
    assert student.grad[0, 1].abs().sum() == 0  # nothing flows from the masked position
    skewed = masked_jsd(student.detach(), teacher.detach(), mask, beta=0.25)
    m = [0.25 * a + 0.75 * b for a, b in zip(p, q)]
    assert skewed.item() == pytest.approx(0.25 * kl(p, m) + 0.75 * kl(q, m), abs=1e-6)
    far = masked_jsd(torch.tensor([[[30.0, -30.0]]]), torch.tensor([[[-30.0, 30.0]]]), torch.tensor([[1]]))
    assert far.item() == pytest.approx(math.log(2), abs=1e-5)  # disjoint distributions: the bound, ln 2
    assert masked_jsd(student, student, mask).item() == pytest.approx(0.0, abs=1e-7)


def test_forward_kl_by_hand():
    student, teacher, mask = logits()
    loss = forward_kl(student, teacher, mask)
    assert loss.item() == pytest.approx(0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5), abs=1e-6)
    both = forward_kl(student, teacher, torch.tensor([[1, 1]]))
    second = 20.0 * (1 - 2 * torch.sigmoid(torch.tensor(-20.0))).item()  # KL of two opposite near-one-hots
    assert both.item() == pytest.approx((loss.item() + second) / 2, rel=1e-4)
    assert forward_kl(student, teacher, torch.zeros(1, 2)).item() == 0.0  # no masked token: 0, not NaN
    with pytest.raises(ValueError, match="beta"):
        masked_jsd(student, teacher, mask, beta=1.0)


def tiny_model():

    return tiny_llama(50, hidden=16, layers=1, heads=2, intermediate=32, initializer_range=0.5)


def test_distill_loss_reads_the_same_tokens_after_a_longer_prompt():
    from search_env.training.distill import distill_loss

    model = tiny_model()
    prompt, hint, completion = [3, 4, 5], [9, 9, 8, 7], [11, 12, 13, 14]
    student = torch.tensor([prompt + completion])
    mask = torch.tensor([[0, 0, 0, 0, 1, 1, 0]])  # tokens 12 and 13: a "query"
    same = distill_loss(model, student, mask, student.clone(), [0])
    assert same.item() == pytest.approx(0.0, abs=1e-7)  # teacher = student: nothing to learn
    teacher = torch.tensor([prompt + hint + completion])
    for kind, ref in (("jsd", masked_jsd), ("fkl", forward_kl)):
        loss = distill_loss(model, student, mask, teacher, [len(hint)], kind=kind)
        with torch.no_grad():
            s_logits = model(input_ids=student).logits[0, [3, 4]]  # the positions predicting 12 and 13
            t_logits = model(input_ids=teacher).logits[0, [7, 8]]  # the same, after the hint
        assert loss.item() == pytest.approx(ref(s_logits[None], t_logits[None], torch.ones(1, 2)).item(), rel=1e-5)
        assert loss.item() > 1e-4
    model.zero_grad()
    distill_loss(model, student, mask, teacher, [len(hint)]).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert distill_loss(model, student, torch.zeros_like(mask), teacher, [4]).item() == 0.0
    with pytest.raises(ValueError, match="past the end"):
        distill_loss(model, student, mask, student, [3])
    with pytest.raises(ValueError, match="kind"):
        distill_loss(model, student, mask, teacher, [4], kind="rkl")


def test_teacher_rows():
    from search_env.training.credit import Trajectory
    from search_env.training.distill import teacher_rows

    a = Trajectory([1, 2], group="q")
    a.add_policy([10, 11, 12, 13], query_span=(1, 3))
    a.add_env([20, 21])
    a.add_policy([14, 15])
    b = Trajectory([1, 2, 3], group="q")
    b.add_policy([16, 17], query_span=(0, 2))
    s, m, t, off = teacher_rows([a, b], [[7, 8, 9, 1, 2], None], queries_only=True, pad_id=0)
    assert s.tolist() == [[1, 2, 10, 11, 12, 13, 20, 21, 14, 15], [1, 2, 3, 16, 17, 0, 0, 0, 0, 0]]
    assert m.tolist()[0] == [0, 0, 0, 1, 1, 0, 0, 0, 0, 0] and not m[1].any()  # a's query tokens; b has no teacher
    assert t.tolist()[0] == [7, 8, 9, 1, 2, 10, 11, 12, 13, 20, 21, 14, 15] and off.tolist() == [3, 0]
    assert [t[0, j + 3].item() for j in range(10)] == s[
        0
    ].tolist()  # token j of the student is token j + offset of the teacher
    _, m_all, _, _ = teacher_rows([a], [[5, 1, 2]], queries_only=False, pad_id=0)
    assert m_all.tolist() == [[0, 0, 1, 1, 1, 1, 0, 0, 1, 1]]  # every policy token, no env or prompt token


def test_teacher_prompts_per_group():
    from search_env.training.distill import teacher_prompts

    attempts = GROUP + GROUP[:2]  # two groups: of 4, and of 2
    prompts = [f"P{i}" for i in range(6)]
    completions = [f"C{i}" for i in range(6)]
    hind = teacher_prompts(attempts, prompts, completions, 4, kind="hindsight")
    assert hind[0] == with_hindsight("P0", hindsight_block(GROUP)) and hind[3].startswith("P3\n\nHindsight from 4")
    assert hind[4] == with_hindsight("P4", hindsight_block(GROUP[:2])) and "from 2 earlier" in hind[5]
    sib = teacher_prompts(attempts, prompts, completions, 4, kind="sibling")
    assert (
        sib[0] == with_sibling("P0", "C3") and sib[3] is None and sib[4] == with_sibling("P4", "C5") and sib[5] is None
    )
    with pytest.raises(ValueError, match="kind"):
        teacher_prompts(attempts, prompts, completions, 4, kind="both")
