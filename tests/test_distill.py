"""search_env.training.distill: the hindsight block and the sibling choice on fixed groups; the generalised JSD (TRL's
convention) and forward KL on small logits against values computed by hand and against TRL's own function; the
micro-batched loss against a full-batch one; the teacher fixed within a step; the schedules; and the direction
probe on a stand-in LM that copies its context, so which way each teacher points is known."""

import math
import re
from types import SimpleNamespace

import pytest

from search_env.training.distill import (
    Attempt,
    DistillBatch,
    choose_sibling,
    direction_probe,
    distill_schedule,
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


def kl(x, y):
    return sum(a * math.log(a / b) for a, b in zip(x, y))


def test_jsd_by_hand_in_trls_convention():
    student, teacher, mask = logits()
    p, q = [0.5, 0.5], [0.75, 0.25]  # student, teacher
    m = [(a + b) / 2 for a, b in zip(p, q)]
    loss = masked_jsd(student, teacher, mask)
    assert loss.item() == pytest.approx(0.5 * kl(q, m) + 0.5 * kl(p, m), abs=1e-6)
    assert loss.item() == pytest.approx(0.0338213, abs=1e-6)
    loss.backward()
    assert student.grad is not None and teacher.grad is None  # the teacher is a target, not trained
    assert student.grad[0, 1].abs().sum() == 0  # nothing flows from the masked position
    # beta weights the teacher: m = beta·p_t + (1 − beta)·p_s, loss = beta·KL(p_t‖m) + (1 − beta)·KL(p_s‖m)
    m = [0.25 * b + 0.75 * a for a, b in zip(p, q)]  # [0.5625, 0.4375]
    skewed = masked_jsd(student.detach(), teacher.detach(), mask, beta=0.25)
    assert skewed.item() == pytest.approx(0.25 * kl(q, m) + 0.75 * kl(p, m), abs=1e-6)
    assert skewed.item() == pytest.approx(0.0248700, abs=1e-6)
    old_m = [0.25 * a + 0.75 * b for a, b in zip(p, q)]  # the old, mirrored convention: beta weighted the student
    assert abs(skewed.item() - (0.25 * kl(p, old_m) + 0.75 * kl(q, old_m))) > 1e-3
    # the ends: beta = 0 is the forward KL(teacher‖student), beta = 1 the reverse KL(student‖teacher)
    assert masked_jsd(student, teacher, mask, beta=0.0).item() == pytest.approx(kl(q, p), abs=1e-6)
    assert masked_jsd(student, teacher, mask, beta=1.0).item() == pytest.approx(kl(p, q), abs=1e-6)
    assert kl(q, p) == pytest.approx(0.1308120, abs=1e-6) and kl(p, q) == pytest.approx(0.1438410, abs=1e-6)
    far = masked_jsd(torch.tensor([[[30.0, -30.0]]]), torch.tensor([[[-30.0, 30.0]]]), torch.tensor([[1]]))
    assert far.item() == pytest.approx(math.log(2), abs=1e-5)  # disjoint distributions: the bound, ln 2
    assert masked_jsd(student, student, mask).item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="beta"):
        masked_jsd(student, teacher, mask, beta=1.5)


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_jsd_equals_trls_generalized_jsd_loss(beta, monkeypatch):
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    gkd = pytest.importorskip("trl.experimental.gkd")
    gen = torch.Generator().manual_seed(3)
    student, teacher = torch.randn(2, 5, 7, generator=gen) * 2, torch.randn(2, 5, 7, generator=gen) * 2
    mask = torch.rand(2, 5, generator=gen) > 0.4
    labels = torch.where(mask, 1, -100)
    for temperature in (1.0, 2.0):
        ours = masked_jsd(student, teacher, mask, beta=beta, temperature=temperature)
        trl = gkd.GKDTrainer.generalized_jsd_loss(student, teacher, labels=labels, beta=beta, temperature=temperature)
        assert ours.item() == pytest.approx(trl.item(), abs=1e-6)


def test_forward_kl_by_hand():
    student, teacher, mask = logits()
    loss = forward_kl(student, teacher, mask)
    assert loss.item() == pytest.approx(0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5), abs=1e-6)
    both = forward_kl(student, teacher, torch.tensor([[1, 1]]))
    second = 20.0 * (1 - 2 * torch.sigmoid(torch.tensor(-20.0))).item()  # KL of two opposite near-one-hots
    assert both.item() == pytest.approx((loss.item() + second) / 2, rel=1e-4)
    assert forward_kl(student, teacher, torch.zeros(1, 2)).item() == 0.0  # no masked token: 0, not NaN


def tiny_model():
    return tiny_llama(50, hidden=16, layers=1, heads=2, intermediate=32, initializer_range=0.5)


def test_distill_batch_reads_the_same_tokens_after_a_longer_prompt():
    model = tiny_model()
    prompt, hint, completion = [3, 4, 5], [9, 9, 8, 7], [11, 12, 13, 14]
    student = torch.tensor([prompt + completion])
    mask = torch.tensor([[0, 0, 0, 0, 1, 1, 0]])  # tokens 12 and 13: a "query"
    assert DistillBatch(student, mask, student.clone(), [0]).backward(model) == pytest.approx(0.0, abs=1e-7)
    teacher = torch.tensor([prompt + hint + completion])
    with torch.no_grad():
        s_logits = model(input_ids=student).logits[0, [3, 4]]  # the positions predicting 12 and 13
        t_logits = model(input_ids=teacher).logits[0, [7, 8]]  # the same, after the hint
    for beta in (0.5, 0.0):
        model.zero_grad()
        loss = DistillBatch(student, mask, teacher, [len(hint)], beta=beta).backward(model)
        assert loss == pytest.approx(masked_jsd(s_logits[None], t_logits[None], torch.ones(1, 2), beta=beta).item(),
                                     rel=1e-5)
        assert loss > 1e-4 and any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert DistillBatch(student, torch.zeros_like(mask), teacher, [4]).backward(model) == 0.0
    with pytest.raises(ValueError, match="past the end"):
        DistillBatch(student, mask, student, [3])
    with pytest.raises(ValueError, match="position 0"):
        DistillBatch(student, torch.tensor([[1, 0, 0, 0, 0, 0, 0]]), teacher, [4])
    with pytest.raises(ValueError, match="beta"):
        DistillBatch(student, mask, teacher, [4], beta=-0.1)


def ragged_batch():
    """Five rows of different lengths, right-padded, with teacher prompts of different lengths."""
    gen = torch.Generator().manual_seed(0)
    students, masks, teachers, offsets = [], [], [], []
    for b, (n_prompt, n_done, n_hint) in enumerate([(3, 6, 2), (4, 3, 5), (2, 8, 0), (5, 5, 3), (3, 2, 4)]):
        prompt, done = torch.randint(1, 50, (n_prompt,), generator=gen), torch.randint(1, 50, (n_done,), generator=gen)
        hint = torch.randint(1, 50, (n_hint,), generator=gen)
        students.append(torch.cat([prompt, done]).tolist())
        masks.append([0] * n_prompt + [int(j % 3 != 1) for j in range(n_done)] if b != 4 else [0] * (n_prompt + n_done))
        teachers.append(torch.cat([prompt, hint, done]).tolist())
        offsets.append(n_hint)
    pad = lambda rows: torch.tensor([r + [0] * (max(map(len, rows)) - len(r)) for r in rows])  # noqa: E731
    return pad(students), pad(masks).bool(), pad(teachers), torch.tensor(offsets)


@pytest.mark.parametrize("beta", [0.5, 0.0])
def test_micro_batched_loss_equals_the_full_batch_one(beta):
    student, mask, teacher, offsets = ragged_batch()
    model = tiny_model().double()  # fp64, so that the comparison sees the computation, not fp32 rounding
    # The reference: one full-batch pass, full logits everywhere, the distilled positions gathered by hand.
    rows, cols = torch.nonzero(mask, as_tuple=True)
    model.zero_grad()
    s_logits = model(input_ids=student).logits[rows, cols - 1]
    with torch.no_grad():
        t_logits = model(input_ids=teacher).logits[rows, cols + offsets[rows] - 1]
    full = 0.3 * masked_jsd(s_logits[None], t_logits[None], torch.ones(1, rows.numel()), beta=beta)
    full.backward()
    ref_grads = [p.grad.clone() for p in model.parameters()]
    for size in (1, 2, 4, 8):
        model.zero_grad()
        value = DistillBatch(student, mask, teacher, offsets, beta=beta, micro_batch_size=size).backward(model, 0.3)
        assert value == pytest.approx(full.item(), abs=1e-6)
        for p, ref in zip(model.parameters(), ref_grads):
            assert torch.allclose(p.grad, ref, atol=1e-6, rtol=0)


def test_the_teacher_stays_at_the_pre_update_weights_within_a_step():
    student, mask, teacher, offsets = ragged_batch()
    model = tiny_model()
    rows, cols = torch.nonzero(mask, as_tuple=True)
    with torch.no_grad():
        before = model(input_ids=teacher).logits[rows, cols + offsets[rows] - 1]
    batch = DistillBatch(student, mask, teacher, offsets, micro_batch_size=2, passes=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=5.0)
    first = batch.backward(model)
    optimizer.step()  # a large step: the shared-weight teacher would move with it
    model.zero_grad()
    second = batch.backward(model)
    with torch.no_grad():
        s_now = model(input_ids=student).logits[rows, cols - 1]
        after = model(input_ids=teacher).logits[rows, cols + offsets[rows] - 1]
    ones = torch.ones(1, rows.numel())
    assert (after - before).abs().max() > 0.1  # the weights did move
    assert second == pytest.approx(masked_jsd(s_now[None], before[None], ones).item(), abs=1e-6)  # frozen teacher
    assert abs(second - masked_jsd(s_now[None], after[None], ones).item()) > 1e-4  # not the moved one
    assert second < first  # the step moved the student toward the fixed teacher
    with pytest.raises(RuntimeError, match="every pass"):
        batch.backward(model)


def test_schedules():
    assert distill_schedule("hindsight") == (1, False)  # SD-Search: within every GRPO step
    assert distill_schedule("sibling") == (5, True)  # Search-E1: separate rounds between GRPO's
    assert distill_schedule("sibling", "joint") == (1, False)  # the old every-step mode, only when asked for
    assert distill_schedule("hindsight", "rounds", 3) == (3, True)
    assert distill_schedule("none", "paper", None) == (0, False)
    for bad, match in ((("plan",), "method"), (("sibling", "often"), "schedule"), (("sibling", "rounds", 0), "every")):
        with pytest.raises(ValueError, match=match):
            distill_schedule(*bad)


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
    assert hind[0] == "\n".join([  # rollout 0 failed with "After Holmessa": its teacher sees the three others only
        "P0", "", "Hindsight from 3 earlier attempts at this question (queries, then the outcome):",
        '1. "Anna Holm" -> "Brodamuld Music" -> answered "1941": correct',
        '2. "Brodamuld Music" -> answered "1941": correct',
        '3. "Anna Holm" -> "' + "x" * 59 + '…" -> no answer (cut off)', ""])
    assert all("After Holmessa" in t for t in hind[1:4]) and "Hindsight from 3" in hind[3]
    assert hind[4] == with_hindsight("P4", hindsight_block(GROUP[1:2])) and "from 1 earlier" in hind[5]
    assert hind[3].count("Brodamuld Music") == 1 and "After Holmessa" in hind[5]  # rollout 3's own left out
    kept = teacher_prompts(attempts, prompts, completions, 4, kind="hindsight", keep_own=True)
    assert kept[0] == with_hindsight("P0", hindsight_block(GROUP)) and kept[3].startswith("P3\n\nHindsight from 4")
    assert kept[4] == with_hindsight("P4", hindsight_block(GROUP[:2]))
    assert teacher_prompts([GROUP[0]], ["P"], ["C"], 1, kind="hindsight") == ["P"]  # alone: no block, no teacher gap
    sib = teacher_prompts(attempts, prompts, completions, 4, kind="sibling")
    assert (
        sib[0] == with_sibling("P0", "C3") and sib[3] is None and sib[4] == with_sibling("P4", "C5") and sib[5] is None
    )
    with pytest.raises(ValueError, match="kind"):
        teacher_prompts(attempts, prompts, completions, 4, kind="both")


class CopyLM(torch.nn.Module):
    """A stand-in LM that copies its context: after position t it draws a token it has read, ``x_s``, with weight
    ``decay^(t−s)`` (plus ``floor`` for every token), so what it read recently it repeats, whatever the text says
    about it (as the bundled model did with the hindsight block)."""

    def __init__(self, vocab_size: int, decay: float = 0.9, floor: float = 1e-3):
        super().__init__()
        self.vocab_size, self.decay, self.floor = vocab_size, decay, floor

    def forward(self, input_ids, logits_to_keep: int = 0, **_):
        t = torch.arange(input_ids.shape[1])
        weights = torch.where(t[None] <= t[:, None], self.decay ** (t[:, None] - t[None]).clamp(min=0).float(), 0.0)
        onehot = torch.nn.functional.one_hot(input_ids, self.vocab_size).float()
        logits = torch.log(torch.einsum("ts,bsv->btv", weights, onehot) + self.floor)
        return SimpleNamespace(logits=logits[:, -logits_to_keep:] if logits_to_keep else logits)


def word_ids():
    """A word-level tokenizer whose vocabulary grows as it reads."""
    vocab: dict[str, int] = {}
    return lambda text: [vocab.setdefault(w, len(vocab)) for w in re.findall(r"\w+|[^\w\s]", text)]


def test_direction_probe_on_a_model_that_copies_its_context():
    """A copying teacher raises whichever query its context shows last. The failed rollout's default teacher
    shows only the successful attempt: it raises the successful query above the failed one. With its own attempt
    kept, the block lists the failure last, and the direction flips. The successful rollout's default teacher
    (only the failure shown) and the sibling teacher (the success shown) point as their contexts do."""
    prompt = "Answer the question. Question: Which river flows through the capital of Veltrania?"
    success = (Attempt(["Rask Omber"], "Omber", True),
               "<search> Rask Omber </search>\n\n<information>Doc 1(Title: Rask) The capital of Veltrania, on "
               "the Omber.</information>\n\n<answer> Omber </answer>")
    failure = (Attempt(["Quenlar lakes"], "Dallow", False), "<search> Quenlar lakes </search>")
    deltas = direction_probe(CopyLM(512), word_ids(), prompt, success, failure)
    assert set(deltas) == {"hindsight", "hindsight+own", "hindsight/successful", "sibling"}
    up = {name: d_success > d_failure for name, (d_success, d_failure) in deltas.items()}
    assert up == {"hindsight": True, "hindsight+own": False, "hindsight/successful": False, "sibling": True}
    assert deltas["hindsight"][0] > deltas["hindsight"][1] + 5  # by a wide margin (nats), not a rounding
    assert deltas["hindsight+own"][1] > deltas["hindsight+own"][0] > deltas["hindsight"][1]  # the last one copied most
