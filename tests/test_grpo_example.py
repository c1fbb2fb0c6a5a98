"""examples/grpo_ig.py: token bookkeeping of its rollouts, its update, and a CPU smoke run with resume."""

import csv
import math
import os
import shutil
import subprocess
import sys
import zlib
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from search_env import IGConfig
from search_env.records import check_record, read_records
from search_env.training import rollout as rollouts
from search_env.training.credit import Trajectory, assign_credit
from search_env.vector import SearchQAVectorEnv
from tests.scripts import imported  # noqa: E402
from tests.standins import tiny_llama_config

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "grpo_ig.py"


@pytest.fixture(scope="module")
def example():
    with imported("examples/grpo_ig.py") as module:
        yield module


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from search_env.agents.models import bundled_model_dir

    return AutoTokenizer.from_pretrained(bundled_model_dir())


def ids_of(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_cut_turn_keeps_generated_ids_up_to_the_stop(example, tok):
    eos = tok.eos_token_id
    generated = ids_of(
        tok, "<think>I need the founder.</think>\n<search> Pellwick Mills founder </search>\n\nand more"
    ) + [eos, eos]
    ids, text = rollouts.cut_turn(tok, generated, {eos})
    assert ids == generated[: len(ids)]  # a prefix, never re-tokenised
    assert "</search>" in example.decode(tok, ids) and "</search>" not in example.decode(tok, ids[:-1])
    assert text == example.decode(tok, ids) and "more" not in text
    span = rollouts.query_span(tok, ids, text)
    inside = example.decode(tok, ids[span[0] : span[1]])
    assert "<search> Pellwick Mills founder </search>" in inside
    assert "<search>" not in example.decode(tok, ids[span[0] + 1 : span[1]])
    assert "</search>" not in example.decode(tok, ids[span[0] : span[1] - 1])
    # no stop string: up to and including the first end-of-sequence token (then padding)
    plain = ids_of(tok, "I am not sure") + [eos]
    assert rollouts.cut_turn(tok, plain + [eos] * 3, {eos}) == (plain, "I am not sure")
    assert rollouts.query_span(tok, plain, "I am not sure") is None


SCRIPT = [
    "<think>hm</think>\n<search> Karvesh </search>\nleftover words",
    "<answer> {answer} </answer> trailing",
]


def test_rollout_keeps_tokens_exact_and_ig_on_query_tokens(
    example, tok, tiny_questions, tiny_corpus, fake_scorer, monkeypatch, tmp_path
):
    """Scripted generations through the real env: segments, spans, IG and the next turn's context."""
    seen_contexts = []

    def fake_generate(model, tokenizer, contexts, gen_kwargs):
        turn = len(seen_contexts)
        seen_contexts.append([list(c) for c in contexts])
        answers = ["Veltrania", "Osmundia", "Osmundia", "Karvesh"]  # golds: q0 Veltrania, q1 Osmundia
        texts = [SCRIPT[turn].format(answer=answers[i]) for i in range(len(contexts))]
        return [ids_of(tok, t) + [tok.eos_token_id] * 2 for t in texts]

    monkeypatch.setattr(rollouts, "generate", fake_generate)
    venv = SearchQAVectorEnv(4, autoreset_mode="Disabled", questions=tiny_questions, corpus=tiny_corpus,
                             ig=IGConfig(n_random=2), scorer=fake_scorer, max_turns=3)
    model = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=[tok.eos_token_id]))
    items = [tiny_questions[0], tiny_questions[1]]
    trajs, episodes = example.rollout(
        model,
        tok,
        venv,
        items,
        group_size=2,
        seed=7,
        gen_kwargs={},
        prompt_text=lambda p: p,
        timer=example.Timer(torch.device("cpu")),
        amp=nullcontext,
    )

    assert [e["em"] for e in episodes] == [1.0, 0.0, 1.0, 0.0]
    assert [t.group for t in trajs] == ["q0", "q0", "q1", "q1"]
    for i, traj in enumerate(trajs):
        search, env, answer = traj.segments
        assert search.from_policy and not env.from_policy and answer.from_policy
        assert "leftover" not in example.decode(tok, search.ids) and "trailing" not in example.decode(tok, answer.ids)
        assert "<search> Karvesh </search>" in example.decode(tok, search.ids[slice(*search.query_span)])
        observation = example.decode(tok, env.ids)
        assert observation.startswith("\n\n<information>Doc 1(Title: Karvesh)") and env.ids == ids_of(tok, observation)
        assert isinstance(traj.step_ig[0], float) and traj.step_ig[1] is None
        assert venv.envs[i].transcript.endswith(observation + example.decode(tok, answer.ids))
        # the second turn was generated from exactly prompt + first turn + observation ids
        assert seen_contexts[1][i] == traj.prompt_ids + search.ids + env.ids
    batch = assign_credit(trajs, ig_weight=0.5)
    query = batch.token_turns == 0
    ig_term = batch.token_advantages - batch.advantages[:, None]
    np.testing.assert_allclose(
        ig_term[query], np.repeat([0.5 * np.clip(t.step_ig[0], -1, 1) for t in trajs], query.sum(1))
    )
    assert not ig_term[batch.loss_mask & ~query].any()
    # each episode's record: its passages and IG as the env scored them; logged with the advantage its query got
    for episode, traj in zip(episodes, trajs):
        search = check_record(episode["record"])["turns"][0]
        assert search["ig"] == traj.step_ig[0] and len(search["ig_detail"]["logp_random"]) == 2
        assert search["passages"][0]["title"] == "Karvesh" and episode["record"]["em"] == episode["em"]
    assert len(rollouts.log_episodes(tmp_path, 4, 3, train=(episodes, batch), eval=(episodes, None))) == 6
    logged = read_records(tmp_path / "episodes.jsonl")
    assert [(r["step"], r["split"]) for r in logged] == [(4, "train")] * 3 + [(4, "eval")] * 3
    assert [r["turns"][0]["advantage"] for r in logged[:3]] == pytest.approx(
        [batch.advantages[i] + ig_term[i][query[i]][0] for i in range(3)])
    assert "advantage" not in logged[3] and "advantage" not in logged[3]["turns"][0]


def scripted_rollout(example, tok, venv, items, monkeypatch, queries, draw_seed=None):
    """A rollout in which rollout i searches ``queries[i]`` and then answers "Osmundia"; returns the trajectories
    and the env's infos at each step."""
    texts = [[f"<search> {q} </search>" for q in queries], ["<answer> Osmundia </answer>"] * len(queries)]
    turn, infos, step = [0], [], venv.step

    def fake_generate(model, tokenizer, contexts, gen_kwargs):
        turn[0] += 1
        return [ids_of(tok, t) + [tok.eos_token_id] for t in texts[turn[0] - 1][: len(contexts)]]

    def recorded(actions):
        out = step(actions)
        infos.append(out[4])
        return out

    monkeypatch.setattr(rollouts, "generate", fake_generate)
    monkeypatch.setattr(venv, "step", recorded)
    model = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=[tok.eos_token_id]))
    trajs, _ = example.rollout(model, tok, venv, items, group_size=len(queries), seed=7, gen_kwargs={},
                               prompt_text=lambda p: p, timer=example.Timer(), amp=nullcontext, draw_seed=draw_seed)
    return trajs, infos


@pytest.mark.parametrize("credit", ["leave-one-out", "sub-answer"])
def test_rollout_puts_the_envs_search_credit_on_the_search_turns(example, tok, tiny_questions, tiny_corpus,
                                                                 fake_scorer, monkeypatch, credit):
    venv = SearchQAVectorEnv(2, autoreset_mode="Disabled", questions=tiny_questions, corpus=tiny_corpus,
                             ig=IGConfig(n_random=2, credit=credit), scorer=fake_scorer, max_turns=3)
    trajs, infos = scripted_rollout(example, tok, venv, [tiny_questions[1]], monkeypatch, ["Karvesh", "Osmundia"])
    credit_values = [infos[-1]["search_credit"][i] for i in range(2)]
    assert [t.step_ig for t in trajs] == [[c[0], None] for c in credit_values]
    if credit == "leave-one-out":  # the final context's view of a search, not the step's own IG
        assert [t.step_ig[0] for t in trajs] != [infos[0]["ig"][i] for i in range(2)]


class BlockScorer:
    """A score that names the documents block a context ends with (a digest of the text after its last query)."""

    def score(self, contexts, answers):
        return np.array([zlib.crc32(c.rsplit("</search>", 1)[-1].encode()) / 2**32 for c in contexts])


def test_a_groups_rollouts_share_their_draws_at_a_turn(example, tok, tiny_questions, tiny_corpus, monkeypatch):
    """The same query at the same turn of a group: the same random passages, the same IG; another draw seed
    draws other passages."""
    drawn = []
    for draw_seed in (1, 1, 2):
        venv = SearchQAVectorEnv(3, autoreset_mode="Disabled", questions=tiny_questions, corpus=tiny_corpus,
                                 ig=IGConfig(n_random=2), scorer=BlockScorer(), max_turns=3)
        trajs, infos = scripted_rollout(example, tok, venv, [tiny_questions[1]], monkeypatch,
                                        ["Karvesh", "Karvesh", "Osmundia"], draw_seed=draw_seed)
        assert trajs[0].step_ig[0] == trajs[1].step_ig[0] != trajs[2].step_ig[0]
        drawn.append([list(infos[0]["ig_detail"]["logp_random"][i]) for i in range(3)])
    assert drawn[0][0] == drawn[0][1] == drawn[1][0]  # keyed by (question, turn, draw seed)
    assert drawn[2][0] != drawn[0][0]


def test_grpo_update_changes_the_policy_and_stays_finite(example):
    model, tok = example.build_model("tiny-random", seed=0)
    ref = example.copy.deepcopy(model).requires_grad_(False)
    args = example.Args(micro_batch_size=2, learning_rate=1e-2, update_epochs=2, kl_coef=0.1)
    trajs = []
    for i, reward in enumerate([1.0, 0.0, 0.0, 1.0]):
        traj = Trajectory([5, 6, 7, 8][: 2 + i % 2], group=i // 2, reward=reward)
        traj.add_policy([100 + i, 200, 300], query_span=(1, 3), ig=0.1 * i)
        traj.add_env([400, 401])
        traj.add_policy([500, 501])
        trajs.append(traj)
    batch = assign_credit(trajs, pad_id=tok.pad_token_id, ig_weight=0.3).to_torch()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate)
    before = [p.detach().clone() for p in model.parameters()]
    timer = example.Timer(torch.device("cpu"))
    first = example.grpo_update(model, ref, optimizer, batch, args, timer, nullcontext)
    second = example.grpo_update(model, ref, optimizer, batch, args, timer, nullcontext)
    assert all(math.isfinite(v) for v in [*first.values(), *second.values()])
    assert second["loss/kl"] > 0 and first["loss/grad_norm"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert timer.seconds["logprob"] > 0 and timer.seconds["update"] > 0 and timer.seconds["generate"] == 0


def test_token_logprobs_match_a_plain_forward(example):
    model, _ = example.build_model("tiny-random", seed=0)
    ids = torch.tensor([[3, 9, 27, 81, 243, 5], [7, 11, 13, 17, 0, 0]])
    mask = torch.tensor([[1] * 6, [1, 1, 1, 1, 0, 0]])
    with torch.no_grad():
        got = example.token_logprobs(model, ids, mask, start=2)
        full = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)
    want = full[:, :-1].gather(-1, ids[:, 1:, None])[..., 0]
    torch.testing.assert_close(got[:, 2:], want[:, 1:], rtol=1e-4, atol=1e-5)
    assert (got[:, :2] == 0).all()


SMOKE = ["--model", "tiny-random", "--questions-per-step", "2", "--group-size", "2", "--max-turns", "2",
         "--max-new-tokens", "16", "--eval-every", "2", "--eval-questions", "4", "--run-name", "smoke"]


def run_example(tmp_path, *extra):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, str(EXAMPLE), *SMOKE, "--output-dir", str(tmp_path), *extra],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_smoke_run_and_resume(tmp_path):
    """CleanRL-style smoke run on CPU with a tiny random model, then --resume from the step-2 checkpoint.

    The first run does 3 steps with a checkpoint after each; dropping the last checkpoint is a run that
    died after logging step 3 but before saving it. The resumed run must redo exactly step 3, the same way.
    """
    out = run_example(tmp_path, "--total-steps", "3", "--save-every", "1", "--checkpoint-every", "1")
    run = tmp_path / "smoke"
    straight = read_rows(run / "metrics.csv")
    assert [int(r["step"]) for r in straight] == [1, 2, 3]
    assert all(math.isfinite(float(r["loss/total"])) for r in straight)
    assert {"time/generate", "time/retrieve", "time/update", "time/step", "eval/em"} <= set(straight[1])
    assert (run / "checkpoints" / "step_000002" / "trainer_state.pt").exists()
    assert (run / "curves.png").stat().st_size > 0
    assert list((run / "tb").glob("events.out.tfevents.*"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb"), size_guidance={"tensors": 0}).Reload()
    samples = [e for tag in ("episodes/train/text_summary", "episodes/eval/text_summary") for e in events.Tensors(tag)]
    assert [e.step for e in samples] == [2, 3, 2, 3] and b"- turn 1 " in samples[0].tensor_proto.string_val[0]
    assert "step    1" in out and "step    3" in out
    logged = [(r["step"], r["split"]) for r in read_records(run / "episodes.jsonl")]
    assert logged == [(s, split) for s in (2, 3) for split in ("train", "eval") for _ in range(4)]

    shutil.rmtree(run / "checkpoints" / "step_000003")
    out = run_example(tmp_path, "--total-steps", "3", "--resume")
    assert "at step 3" in out and "step    2" not in out and "step    3" in out
    resumed = read_rows(run / "metrics.csv")
    assert [int(r["step"]) for r in resumed] == [1, 2, 3]  # step 3 redone once, not appended twice
    assert [(r["step"], r["split"]) for r in read_records(run / "episodes.jsonl")] == logged
    assert (run / "checkpoints" / "step_000003" / "trainer_state.pt").exists()
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step_000003"]  # by default the last one only
    # the same step 3 as the uninterrupted run: same questions (data position) and samples (RNG states)
    for key in ("train/tokens", "train/policy_tokens", "train/reward", "loss/total"):
        assert [r[key] for r in resumed] == [r[key] for r in straight], key


# ------------------------------------------------------------------------- the loop is exact (grpo-review.md)


def test_logprobs_are_those_of_the_temperature_that_sampled(example, monkeypatch):
    model, tok = example.build_model("tiny-random", seed=0)
    torch.manual_seed(0)
    prompt = torch.tensor([[5, 17, 99, 250]])
    out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=True, temperature=0.7,
                         top_k=0, top_p=1.0, max_new_tokens=6, min_new_tokens=6, output_scores=True,
                         return_dict_in_generate=True, pad_token_id=tok.pad_token_id)
    new = out.sequences[0, 4:]
    sampled = torch.stack([torch.log_softmax(s[0].float(), -1)[t] for s, t in zip(out.scores, new)])
    with torch.no_grad():
        got = example.token_logprobs(model, out.sequences, torch.ones_like(out.sequences), 4, temperature=0.7)[0, 4:]
    torch.testing.assert_close(got, sampled, rtol=0, atol=1e-4)
    assert (
        got - example.token_logprobs(model, out.sequences, torch.ones_like(out.sequences), 4)[0, 4:]
    ).abs().max() > 1e-2

    seen = []
    real = example.token_logprobs
    monkeypatch.setattr(example, "token_logprobs", lambda *a: seen.append(a[4]) or real(*a))
    traj = Trajectory([5, 6, 7], group=0, reward=1.0)
    traj.add_policy([100, 200, 300])
    batch = assign_credit([traj, traj], pad_id=tok.pad_token_id).to_torch()
    args = example.Args(temperature=0.7, kl_coef=0.1, update_epochs=2)
    example.grpo_update(model, model, torch.optim.AdamW(model.parameters()), batch, args, example.Timer(), nullcontext)
    assert seen and set(seen) == {0.7}  # policy, old policy and reference alike


def test_bf16_weights_are_refused(example):
    with pytest.raises(SystemExit, match="fp32 or bf16-mixed"):
        example.load_models(example.Args(model="tiny-random"), torch.device("cpu"), "bf16")


def test_reference_is_exactly_the_initial_policy_under_bf16_mixed(example):
    model, ref, _ = example.load_models(
        example.Args(model="tiny-random", kl_coef=0.1), torch.device("cpu"), "bf16-mixed"
    )
    assert {p.dtype for p in ref.parameters()} == {p.dtype for p in model.parameters()} == {torch.float32}
    ids = torch.tensor([[3, 9, 27, 81, 243, 5]])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        a = example.token_logprobs(model, ids, torch.ones_like(ids), 1)
        b = example.token_logprobs(ref, ids, torch.ones_like(ids), 1)
    assert torch.equal(a, b)  # k3 KL exactly 0 at step 0


def test_dropout_is_off_in_the_update(example, tmp_path):
    from transformers import LlamaForCausalLM

    tok = example.build_model("tiny-random", seed=0)[1]
    config = tiny_llama_config(len(tok), layers=1, attention_dropout=0.5)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    model, _, _ = example.load_models(example.Args(model=str(tmp_path / "m"), kl_coef=0.0), torch.device("cpu"), "fp32")
    model.train()
    ids = torch.tensor([[3, 9, 27, 81, 243, 5]])
    torch.testing.assert_close(model(input_ids=ids).logits, model(input_ids=ids).logits, rtol=0, atol=0)


# ------------------------------------------------------------------------- what the IG testbed study needs


def test_hops_restricts_both_splits_without_moving_the_held_out_split(example):
    all_train, all_eval, _ = example.load_data(example.Args())
    train, held_out, _ = example.load_data(example.Args(hops="2,3"))
    assert {q.metadata["hops"] for q in [*train, *held_out]} == {2, 3}
    assert [q.id for q in held_out] == [q.id for q in all_eval if q.metadata["hops"] in (2, 3)]
    assert [q.id for q in train] == [q.id for q in all_train if q.metadata["hops"] in (2, 3)]
    assert len(example.load_data(example.Args(hops="1"))[0]) == len(all_train) - len(train)


def test_rollout_counts_truncation_and_step_metrics_count_all_failed_groups(example, tok, tiny_questions, tiny_corpus,
                                                                          monkeypatch):
    monkeypatch.setattr(
        rollouts, "generate", lambda m, t, contexts, g: [ids_of(tok, "<search> Karvesh </search>")] * len(contexts)
    )
    venv = SearchQAVectorEnv(
        2, autoreset_mode="Disabled", questions=tiny_questions, corpus=tiny_corpus, ig=False, max_turns=2
    )
    model = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=[tok.eos_token_id]))
    _, episodes = example.rollout(model, tok, venv, [tiny_questions[0]], group_size=2, seed=0, gen_kwargs={},
                                  prompt_text=lambda p: p, timer=example.Timer(), amp=nullcontext)
    assert [(e["truncated"], e["answered"], e["searches"]) for e in episodes] == [(1.0, 0.0, 2.0)] * 2

    outcomes = [(0.0, 1.0), (0.0, 0.0), (1.0, 1.0), (0.0, 1.0), (0.0, 0.0), (0.0, 0.0)]  # (em, answered); groups of 2
    episodes = [{"em": em, "answered": a, "searches": 1.0, "invalid": 0.0, "truncated": 1.0 - a} for em, a in outcomes]
    trajs = []
    for i, (em, _) in enumerate(outcomes):
        trajs.append(Trajectory([5, 6], group=i // 2, reward=em))
        trajs[-1].add_policy([7, 8])
    metrics = example.step_metrics(assign_credit(trajs, pad_id=0), episodes, example.Args(group_size=2, ig_weight=0.0))
    assert metrics["train/all_failed_groups"] == pytest.approx(2 / 3)  # groups 0 and 2: every rollout failed
    assert metrics["train/truncated"] == pytest.approx(0.5) and metrics["train/em"] == pytest.approx(1 / 6)


# ------------------------------------------------------------------------------- self-distillation options


def test_distill_options_add_their_loss_to_the_update(example, tok):
    prompt = "Question: In which country is Karvesh?\n"
    trajs, episodes = [], []
    for i, (em, queries) in enumerate(
        [(1.0, ["Karvesh"]), (0.0, ["Omrith", "Quenlar"]), (1.0, ["Karvesh", "Veltrania"]), (0.0, ["Dallowmere"])]
    ):
        traj = Trajectory(ids_of(tok, prompt), group=i // 2, reward=em)
        for q in queries:
            ids = ids_of(tok, f"<search> {q} </search>")
            traj.add_policy(ids, query_span=(0, len(ids)), ig=0.1)
            traj.add_env(ids_of(tok, "\n\n<information>Doc 1(Title: X) y\n</information>\n\n"))
        traj.add_policy(ids_of(tok, "<answer> Veltrania </answer>"))
        trajs.append(traj)
        episodes.append({"em": em, "queries": queries, "answer": "Veltrania" if em else "Osmundia", "prompt": prompt})
    for kind, taught in (("hindsight", [True, True, True, True]), ("sibling", [False, True, False, True])):
        model, _ = example.build_model("tiny-random", seed=0)
        args = example.Args(distill=kind, distill_weight=1.0, group_size=2, micro_batch_size=2, learning_rate=1e-2,
                            kl_coef=0.0)
        inputs = partial(example.distill_inputs, trajs, episodes, args, tok, lambda p: p, torch.device("cpu"))
        distill = inputs()
        mask, offsets = distill.student_mask, distill.offsets
        three = example.distill_inputs(trajs, episodes, example.Args(**{**vars(args), "update_epochs": 3}), tok,
                                       lambda p: p, torch.device("cpu"))
        assert three.passes_left == 3 and distill.beta == (0.5 if kind == "hindsight" else 0.0)  # teacher kept 3 passes
        assert [bool(m.any()) for m in mask] == taught  # sibling: only rollouts with a more efficient correct sibling
        assert (offsets[torch.tensor(taught)] > 0).all()
        if kind == "hindsight":  # on the query tokens only
            assert mask[0].sum() == len(ids_of(tok, "<search> Karvesh </search>"))
        batch = assign_credit(trajs, pad_id=tok.pad_token_id).to_torch()
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate)
        metrics = example.grpo_update(model, None, optimizer, batch, args, example.Timer(torch.device("cpu")),
                                      nullcontext, distill)
        assert metrics["loss/distill"] > 0 and math.isfinite(metrics["loss/total"])
        # A distillation-only round (--distill-only): the gradient is the distillation loss's alone.
        for policy_loss in (True, False):
            grads = []
            for with_distill in (True, False):
                model.zero_grad(set_to_none=True)
                sgd = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: read the gradients, keep the weights
                example.grpo_update(model, None, sgd, batch, args, example.Timer(torch.device("cpu")), nullcontext,
                                    inputs() if with_distill else None, policy_loss=policy_loss)
                grads.append(
                    [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]
                )
            only_policy = any(g.abs().sum() > 0 for g in grads[1])
            assert only_policy == policy_loss  # without the policy loss and without distillation: no gradient at all


@pytest.mark.parametrize("kind", ["hindsight", "sibling"])
def test_smoke_run_with_distillation(tmp_path, kind):
    every = ["--distill-every", "1"] if kind == "sibling" else []  # sibling's rounds: every 5th step by default
    out = run_example(tmp_path, "--total-steps", "1", "--distill", kind, "--distill-weight", "0.5", *every)
    rows = read_rows(tmp_path / "smoke" / "metrics.csv")
    assert "step    1" in out and "loss/distill" in rows[0] and math.isfinite(float(rows[0]["loss/distill"]))


def test_smoke_run_with_separate_distillation_rounds(tmp_path):
    """OFSD's interleaving, sibling's default: every 2nd step trains on the sibling KL alone; the others are GRPO."""
    run_example(tmp_path, "--total-steps", "2", "--distill", "sibling", "--distill-every", "2", "--distill-weight", "1")
    rows = read_rows(tmp_path / "smoke" / "metrics.csv")
    assert rows[0].get("loss/distill", "") == "" and math.isfinite(float(rows[1]["loss/distill"]))


def test_smoke_run_with_a_frozen_ig_scorer(tmp_path):
    out = run_example(tmp_path, "--total-steps", "1", "--ig-scorer", "bundled", "--ig-weight", "0.3")
    assert "step    1" in out and "IG on (weight 0.3)" in out


def test_a_bad_distillation_schedule_is_a_clear_error(example):
    with pytest.raises(SystemExit, match="schedule must be paper, rounds or joint"):
        example.main(["--distill", "sibling", "--distill-schedule", "often"])
    with pytest.raises(SystemExit, match="positive number of steps"):
        example.main(["--distill", "hindsight", "--distill-every", "0"])
    with pytest.raises(SystemExit, match="method must be none, hindsight or sibling"):
        example.main(["--distill", "plan"])


def test_plan_weight_reaches_both_envs(example, tok, tiny_questions, tiny_corpus):
    model, _ = example.build_model("tiny-random", seed=0)
    args = example.Args(dialect="plan", plan_weight=0.5, ig_weight=0.0, questions_per_step=1, group_size=2,
                        eval_questions=2)
    venv, eval_venv = example.make_envs(args, model, tok, str, tiny_corpus, tiny_questions, tiny_questions,
                                        example.Timer(), "cpu")
    assert {e.reward_config.plan_weight for e in [*venv.envs, *eval_venv.envs]} == {0.5}
    venv.reset(seed=0, options={"question_id": tiny_questions[0].id})
    info = venv.envs[0].step("<plan>1. Who is Karvesh?</plan><search> Karvesh </search>")[4]
    assert info["reward_components"]["plan"] == pytest.approx(0.5 * info["plan_coverage"]) and info["plan_coverage"] > 0
