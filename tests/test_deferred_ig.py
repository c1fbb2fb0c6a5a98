"""Deferred IG (``IGConfig(deferred=True)``): the env scores nothing, the trainer scores the requests, and
``finish`` gives the IG the env would have given, bit for bit under the same seeds, for every baseline, in the
single and the vector env; token ids as the scorers tokenize; JSON round trips; clear errors."""

import json

import numpy as np
import pytest

from search_env.env import SearchQAEnv
from search_env.info_gain import Deferred, DeferredIG, IGConfig, finish_deferred
from search_env.rewards import RewardConfig
from search_env.scoring.score_format import ScoreFormat
from search_env.vector import SearchQAVectorEnv

FORMAT = ScoreFormat(max_context_tokens=400)


class CharTokenizer:
    """Each character is a token (its code point modulo 997): enough for exact, model-free token scoring."""

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[ord(c) % 997 for c in text] for text in texts]}


def toy_logprobs(ids, start):
    """A deterministic 'language model': log p of each answer token ``ids[start:]`` given the token before it."""
    return [-((ids[j - 1] * 31 + ids[j]) % 17) / 7 - 0.1 for j in range(start, len(ids))]


class ToyScorer:
    """An in-env scorer computing exactly what a trainer with the toy model computes from the token ids."""

    def __init__(self):
        self.pairs = 0

    def score(self, contexts, answers):
        self.pairs += len(contexts)
        encoded = FORMAT.encode(CharTokenizer(), list(zip(contexts, answers)))
        return np.array([FORMAT.combine(toy_logprobs(ids, start)) for ids, start in encoded])


ACTIONS = ["<search> Karvesh </search>", "<search> Veltrania capital </search>", "no tag here",
           "<search> Karvesh </search>", "<answer> Veltrania </answer>"]
CONFIGS = [dict(baseline="random"), dict(baseline="random", per_document=True), dict(baseline="none"),
           dict(baseline="previous"), dict(baseline="best", per_document=True)]


def make(tiny_corpus, tiny_questions, deferred: bool, ig_weight=0.0, **config):
    scorer = ToyScorer()
    ig = IGConfig(deferred=Deferred(CharTokenizer(), FORMAT), **config) if deferred else IGConfig(**config)
    env = SearchQAEnv(questions=tiny_questions, corpus=tiny_corpus, scorer=scorer, ig=ig, max_turns=6,
                      reward=RewardConfig(ig_weight=ig_weight))
    return env, scorer


def trainer_finish(request: DeferredIG) -> dict:
    """What a trainer does: its model's log-probabilities of each request's answer tokens, from the token ids."""
    logprobs = [toy_logprobs(ids, start) for ids, start in zip(request.token_ids, request.answer_starts)]
    return request.finish(logprobs)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_deferred_ig_equals_in_env_ig_bit_for_bit(tiny_corpus, tiny_questions, config):
    scored, scored_by = make(tiny_corpus, tiny_questions, False, ig_weight=0.5, **config)
    deferred, deferred_by = make(tiny_corpus, tiny_questions, True, ig_weight=0.5, **config)
    for env in (scored, deferred):
        env.reset(seed=3, options={"question_id": "q0"})
    n_requests = 0
    for action in ACTIONS:
        obs_a, reward_a, term_a, trunc_a, a = scored.step(action)
        obs_b, reward_b, term_b, trunc_b, b = deferred.step(action)
        assert (obs_a, term_a, trunc_a) == (obs_b, term_b, trunc_b)
        if a.get("ig") is not None and "ig_request" not in b:  # finished in the env: a gain known without scores
            assert config["baseline"] == "best" and a["ig"] == b["ig"] == 0.0 and a["ig_detail"] == b["ig_detail"]
            continue
        if "ig_request" in b:
            n_requests += 1
            request = b["ig_request"]
            assert b["ig"] is None and "ig_detail" not in b
            done = trainer_finish(request)
            assert done["ig"] == a["ig"] and done["ig_detail"] == a["ig_detail"]  # exact, not approx
            assert done.get("doc_gains") == a.get("doc_gains")
            assert (done.get("doc_gains") is not None) == bool(config.get("per_document"))
            assert reward_b + done["ig_reward"] == reward_a and done["ig_reward"] == 0.5 * a["ig"]
            assert request.finish(scores=scored_by.score(*zip(*request.pairs))) == done
        else:
            assert a.get("ig") is None and reward_a == reward_b
    assert n_requests >= 2 and deferred_by.pairs == 0 and scored_by.pairs > 0  # the deferred env scored nothing


def test_token_ids_are_the_scorers_tokenization(tiny_corpus, tiny_questions):
    env, _ = make(tiny_corpus, tiny_questions, True)
    env.reset(seed=0, options={"question_id": "q1"})
    request = env.step("<search> Omrith </search>")[4]["ig_request"]
    assert len(request.pairs) == 4 == len(request.token_ids)  # the real context and 3 random ones
    for (context, answer), ids, start in zip(request.pairs, request.token_ids, request.answer_starts):
        full = CharTokenizer()([context + FORMAT.answer_prefix])["input_ids"][0][-FORMAT.max_context_tokens :]
        assert ids[:start] == full and ids[start:] == CharTokenizer()([" " + answer])["input_ids"][0]
    assert request.pairs[0][0].endswith("</information>") and request.pairs[0][1] == "Osmundia"


def test_json_round_trip_and_batch_finish(tiny_corpus, tiny_questions):
    env, _ = make(tiny_corpus, tiny_questions, True, per_document=True)
    requests = []
    for qid in ("q0", "q2"):
        env.reset(seed=1, options={"question_id": qid})
        requests.append(env.step("<search> Karvesh Dallowmere </search>")[4]["ig_request"])
    copies = [DeferredIG.from_dict(json.loads(json.dumps(r.to_dict()))) for r in requests]
    assert copies == requests
    flat = [toy_logprobs(ids, s) for r in requests for ids, s in zip(r.token_ids, r.answer_starts)]
    assert finish_deferred(copies, flat) == [trainer_finish(r) for r in requests]
    scores = [FORMAT.combine(lp) for lp in flat]
    assert finish_deferred(requests, scores=scores) == [trainer_finish(r) for r in requests]
    with pytest.raises(ValueError, match="hold 16 pairs, got 15"):
        finish_deferred(requests, flat[:-1])
    with pytest.raises(ValueError, match="expected log-probabilities for 8 pairs"):
        requests[0].finish(flat[:3])
    with pytest.raises(ValueError, match="either"):
        requests[0].finish()


def test_vector_env_defers_too(tiny_corpus, tiny_questions):
    def venv(deferred):
        scorer = ToyScorer()
        ig = IGConfig(deferred=Deferred(CharTokenizer(), FORMAT)) if deferred else IGConfig()
        return SearchQAVectorEnv(
            3, questions=tiny_questions, corpus=tiny_corpus, scorer=scorer, ig=ig, ig_pool="batch"
        ), scorer

    (scored, _), (deferred, deferred_by) = venv(False), venv(True)
    for v in (scored, deferred):
        v.reset(seed=5)
    actions = ["<search> Karvesh </search>", "<answer> x </answer>", "<search> Quenlar country </search>"]
    _, _, _, _, a = scored.step(actions)
    _, _, _, _, b = deferred.step(actions)
    assert list(b["_ig_request"]) == [True, False, True] and deferred_by.pairs == 0
    for i in (0, 2):
        assert trainer_finish(b["ig_request"][i])["ig"] == a["ig"][i]


def test_no_request_for_a_search_on_the_last_turn(tiny_corpus, tiny_questions):
    env, _ = make(tiny_corpus, tiny_questions, True)
    env.max_turns = 1
    env.reset(seed=0)
    _, _, _, truncated, info = env.step("<search> Karvesh </search>")
    assert truncated and info["ig"] is None and "ig_request" not in info


def test_config_errors():
    with pytest.raises(ValueError, match="score_start"):
        IGConfig(deferred=True, score_start=True)
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="for deferred requests"):
        IGConfig(tokenizer=CharTokenizer())
    with pytest.warns(DeprecationWarning, match="Deferred"):  # the old spelling still works
        old = IGConfig(deferred=True, tokenizer=CharTokenizer(), score_format=FORMAT)
    assert old == IGConfig(deferred=Deferred(CharTokenizer(), FORMAT)) and old.deferred.score_format == FORMAT
    assert IGConfig(deferred=True).deferred == Deferred() and IGConfig(deferred=False).deferred is None
    with pytest.raises(ValueError, match="max_context_tokens"):
        ScoreFormat(max_context_tokens=0)
    with pytest.raises(ValueError, match="empty"):
        FORMAT.encode(CharTokenizer(), [("context", "  ")])
    with pytest.raises(ValueError, match="not empty"):
        FORMAT.combine([])


def test_a_trainers_own_forward_pass_gives_the_in_env_ig(tiny_corpus, tiny_questions):
    """With a real causal LM: the trainer runs its model on ``token_ids`` (one full forward per pair, as it would
    in its own batched pass) and gets the IG the env's ``TransformersScorer`` computes, to float32 precision."""
    torch = pytest.importorskip("torch")
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from search_env.agents.models import bundled_model_dir
    from search_env.scoring.transformers_scorer import TransformersScorer

    tokenizer = AutoTokenizer.from_pretrained(bundled_model_dir())
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=64,
            initializer_range=0.5,
        )
    ).eval()
    scorer = TransformersScorer(model, tokenizer)
    envs = [SearchQAEnv(questions=tiny_questions, corpus=tiny_corpus, scorer=scorer, ig=config)
            for config in (IGConfig(), IGConfig(deferred=Deferred(tokenizer, scorer.score_format)))]
    for env in envs:
        env.reset(seed=2, options={"question_id": "q3"})
    in_env, deferred = [env.step("<search> Sentavo </search>")[4] for env in envs]
    request = deferred["ig_request"]
    logprobs = []
    with torch.no_grad():
        for ids, start in zip(request.token_ids, request.answer_starts):
            logps = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1).double()
            logprobs.append([logps[j - 1, ids[j]].item() for j in range(start, len(ids))])
    done = request.finish(logprobs)
    assert done["ig"] == pytest.approx(in_env["ig"], abs=1e-5) and abs(in_env["ig"]) > 1e-3
    assert done["ig_detail"]["logp_random"] == pytest.approx(in_env["ig_detail"]["logp_random"], abs=1e-5)


def test_requests_use_the_trainers_rendering_of_the_prompt(tiny_corpus, tiny_questions):
    render = lambda prompt, agent_text: "<|system|>policy input\n" + prompt + agent_text  # noqa: E731
    ig = IGConfig(deferred=Deferred(CharTokenizer(), FORMAT), render_prefix=render)
    env = SearchQAEnv(questions=tiny_questions, corpus=tiny_corpus, ig=ig)
    prompt, _ = env.reset(seed=0, options={"question_id": "q0"})
    request = env.step("<think>look it up</think><search> Karvesh </search>")[4]["ig_request"]
    for context, _ in request.pairs:
        assert context.startswith("<|system|>policy input\n" + prompt + "<think>look it up</think>")
