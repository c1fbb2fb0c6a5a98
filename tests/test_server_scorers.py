"""search_env.scoring.servers against stand-in servers that answer in vLLM's and SGLang's exact shapes (computed
by a real causal LM): the same scores as the in-process scorer, batching, replicas, retries, clear errors, and an
episode left intact (random draws included) when scoring fails. The real vLLM server: tests/test_vllm_server.py."""

import json
import math
import pickle
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from search_env._http import MalformedResponse
from search_env.agents.models import bundled_model_dir
from search_env.env import SearchQAEnv
from search_env.info_gain import IGConfig
from search_env.scoring.servers import (
    ScorerUnavailable,
    SGLangScorer,
    VLLMScorer,
    parse_sglang_logprobs,
    parse_vllm_logprobs,
)
from search_env.scoring.transformers_scorer import TransformersScorer
from search_env.vector import SearchQAVectorEnv
from tests.servers import free_port
from tests.standins import tiny_llama

FAST = {"timeout": 1.0, "retries": 1, "backoff": 0.05}
PATIENT = {"timeout": 30.0, "retries": 0}  # for requests that score whole IG steps on a busy machine
PAIRS = [("In which country is Karvesh? Karvesh is a river city in Veltrania.", "Veltrania"),
         ("The capital of Osmundia is Omrith.", "Omrith"),
         ("Nothing useful here at all.", "Harrowstan"),
         ("Dallowmere lies on the old salt road", "Veltrania"),
         ("x", "Brisk Hollow")]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(bundled_model_dir())


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_llama(len(tokenizer), initializer_range=0.5)


class StandIn:
    """An ``http.server`` answering ``/v1/completions`` as vLLM does and ``/generate`` as SGLang does, with the
    log-probabilities of ``model``; ``mode``: ok, 500, hang, garbage, short (too few entries), neg-inf."""

    def __init__(self, model, mode="ok"):
        self.model, self.mode, self.requests = model, mode, []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append((self.path, payload))
                if owner.mode == "hang":
                    time.sleep(3)
                if owner.mode == "500":
                    return self._send(500, b"engine dead")
                if owner.mode == "garbage":
                    return self._send(200, b"<html>oops</html>")
                if self.path == "/v1/completions":
                    body = {"choices": [owner.vllm_choice(i, ids) for i, ids in enumerate(payload["prompt"])][::-1]}
                else:
                    body = [
                        owner.sglang_result(ids, s)
                        for ids, s in zip(payload["input_ids"], payload["logprob_start_len"])
                    ]
                self._send(200, json.dumps(body).encode())

            def _send(self, status, body):
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def logprobs(self, ids):
        with torch.no_grad():
            logps = torch.log_softmax(self.model(torch.tensor([ids])).logits[0].float(), dim=-1).double()
        return [None] + [logps[j - 1, ids[j]].item() for j in range(1, len(ids))]

    def vllm_choice(self, index, ids):
        lps = self.logprobs(ids)
        if self.mode == "neg-inf":
            lps[-1] = -9999.0
        rows = [None] + [{str(t): {"logprob": lp, "rank": 1, "decoded_token": "?"}} for t, lp in zip(ids[1:], lps[1:])]
        return {
            "index": index,
            "text": "",
            "logprobs": None,
            "prompt_logprobs": rows[:-1] if self.mode == "short" else rows,
            "finish_reason": "length",
        }

    def sglang_result(self, ids, start):
        lps = self.logprobs(ids)
        rows = [[None, ids[start], None]] + [[lps[j], ids[j], None] for j in range(start + 1, len(ids))]
        return {"text": "", "meta_info": {"input_token_logprobs": rows[:-1] if self.mode == "short" else rows,
                                          "prompt_tokens": len(ids)}}

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def stand_in(model):
    servers = []

    def make(mode="ok"):
        servers.append(StandIn(model, mode))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


@pytest.mark.parametrize("kind", [VLLMScorer, SGLangScorer])
def test_server_scores_equal_the_in_process_scorer(stand_in, model, tokenizer, kind):
    server = stand_in()
    scorer = kind(server.url, tokenizer, batch_size=2, **FAST)
    contexts, answers = zip(*PAIRS)
    expected = TransformersScorer(model, tokenizer).score(contexts, answers)
    assert np.allclose(scorer.score(contexts, answers), expected, atol=1e-5)
    assert len(server.requests) == 3  # 5 pairs, 2 a request
    path, payload = server.requests[0]
    encoded = scorer.score_format.encode(tokenizer, PAIRS[:2])
    if kind is VLLMScorer:
        assert path == "/v1/completions" and payload == {"prompt": [ids for ids, _ in encoded], "max_tokens": 1,
                                                         "temperature": 0.0, "prompt_logprobs": 0}
    else:
        assert path == "/generate" and payload["input_ids"] == [ids for ids, _ in encoded]
        assert payload["logprob_start_len"] == [s - 1 for _, s in encoded] and payload["return_logprob"] is True
    assert scorer.score([], []).shape == (0,)


def test_model_name_is_sent_when_given_and_neg_inf_is_read_back(stand_in, tokenizer):
    server = stand_in("neg-inf")
    scorer = VLLMScorer(server.url, tokenizer, model="smollm2", **FAST)
    score = scorer.score(["A context"], ["Veltrania"])[0]
    assert server.requests[0][1]["model"] == "smollm2" and score == -math.inf


def test_replicas_round_robin_and_a_dead_one_is_skipped(stand_in, tokenizer):
    a, b = stand_in(), stand_in()
    scorer = VLLMScorer([a.url, b.url], tokenizer, **FAST)
    for _ in range(4):
        scorer.score(["c"], ["Omrith"])
    assert len(a.requests) == len(b.requests) == 2
    dead = f"http://127.0.0.1:{free_port()}"
    scorer = VLLMScorer([dead, a.url], tokenizer, **FAST)
    assert np.isfinite(scorer.score(["c"], ["Omrith"])).all() and np.isfinite(scorer.score(["d"], ["Omrith"])).all()


@pytest.mark.parametrize("mode, reason", [("500", "HTTP 500"), ("garbage", "body is not JSON"),
                                          ("short", "prompt_logprobs for"), ("hang", "timed out")])
def test_all_attempts_failing_names_each_url_within_the_timeout(stand_in, tokenizer, mode, reason):
    servers = [stand_in(mode), stand_in(mode)]
    scorer = VLLMScorer([s.url for s in servers], tokenizer, **FAST)
    start = time.monotonic()
    with pytest.raises(ScorerUnavailable, match="scoring failed after 2 attempt") as error:
        scorer.score(["c"], ["Omrith"])
    assert time.monotonic() - start < 2 * FAST["timeout"] + FAST["backoff"] + 1.0
    assert len(error.value.failures) == 2 and all(reason in f for f in error.value.failures)
    assert {f.split(": ")[0] for f in error.value.failures} == {f"{s.url}/v1/completions" for s in servers}


def test_parsers_reject_what_does_not_fit():
    encoded = [([5, 6, 7], 2)]
    ok = {"choices": [{"index": 0, "prompt_logprobs": [None, {"6": {"logprob": -1.0}}, {"7": {"logprob": -2.0}}]}]}
    assert parse_vllm_logprobs(ok, encoded) == [[-2.0]]
    for body, message in (
        ({"choices": []}, "expected 1 choices"),
        (
            {"choices": [{"index": 0, "prompt_logprobs": [None, {"6": -1.0}, {"8": -2.0}]}]},
            "no log-probability for token 7",
        ),
        ({"choices": [{"index": 0, "prompt_logprobs": [None, {"6": -1.0}, {"7": "x"}]}]}, "not a log-probability"),
        ([], "no 'choices'"),
    ):
        with pytest.raises(MalformedResponse, match=message):
            parse_vllm_logprobs(body, encoded)
    good = {"meta_info": {"input_token_logprobs": [[None, 6, None], [-0.5, 7, None]]}}
    assert parse_sglang_logprobs(good, encoded) == [[-0.5]] == parse_sglang_logprobs([good], encoded)
    with pytest.raises(MalformedResponse, match="expected token 7"):
        parse_sglang_logprobs({"meta_info": {"input_token_logprobs": [[None, 6, None], [-0.5, 9, None]]}}, encoded)


def test_a_failed_scoring_call_leaves_the_episode_and_its_draws_intact(
    stand_in, tokenizer, tiny_corpus, tiny_questions
):
    server = stand_in("500")
    failing = SearchQAEnv(questions=tiny_questions, corpus=tiny_corpus, ig=IGConfig(),
                          scorer=VLLMScorer(server.url, tokenizer, **PATIENT))
    never_failed = SearchQAEnv(questions=tiny_questions, corpus=tiny_corpus, ig=IGConfig(),
                               scorer=VLLMScorer(server.url, tokenizer, **PATIENT))
    for env in (failing, never_failed):
        env.reset(seed=4, options={"question_id": "q2"})
    before = (failing.transcript, failing.turn, list(failing.steps))
    with pytest.raises(ScorerUnavailable):
        failing.step("<search> Dallowmere </search>")
    assert (failing.transcript, failing.turn, list(failing.steps)) == before
    server.mode = "ok"
    retried, fresh = failing.step("<search> Dallowmere </search>"), never_failed.step("<search> Dallowmere </search>")
    assert retried[0] == fresh[0] and retried[4]["ig"] == fresh[4]["ig"] and retried[4]["ig"] is not None


def test_the_vector_env_restores_every_sub_envs_draws(stand_in, tokenizer, tiny_corpus, tiny_questions):
    server = stand_in("500")
    scorer = VLLMScorer(server.url, tokenizer, **PATIENT)
    venvs = [SearchQAVectorEnv(2, questions=tiny_questions, corpus=tiny_corpus, scorer=scorer) for _ in range(2)]
    for venv in venvs:
        venv.reset(seed=1)
    actions = ["<search> Karvesh </search>", "<search> Quenlar </search>"]
    with pytest.raises(ScorerUnavailable):
        venvs[0].step(actions)
    server.mode = "ok"
    assert list(venvs[0].step(actions)[4]["ig"]) == list(venvs[1].step(actions)[4]["ig"])


def test_pickles_for_worker_processes(stand_in, tokenizer):
    server = stand_in()
    scorer = pickle.loads(pickle.dumps(VLLMScorer(server.url, tokenizer, **FAST)))
    assert np.isfinite(scorer.score(["c"], ["Omrith"])).all()


def test_the_vllm_launcher_reports_a_missing_interpreter_and_a_server_that_exits(tmp_path):
    import sys

    from search_env.scoring.vllm_launch import start_vllm

    with pytest.raises(FileNotFoundError, match="no Python at .*nowhere"):
        start_vllm(bundled_model_dir(), python=tmp_path / "nowhere" / "python")
    # this interpreter has no vLLM: the server exits at once, and the error carries its log
    with pytest.raises(RuntimeError, match="(?s)vLLM did not come up \\(exit 1\\).*No module named 'vllm'"):
        start_vllm(bundled_model_dir(), python=sys.executable, timeout=60)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(OSError):
            start_vllm(bundled_model_dir(), python=sys.executable, port=busy.getsockname()[1])


def test_the_vllm_launcher_stops_a_server_that_is_not_up_in_time_with_its_workers(tmp_path, monkeypatch):
    import sys

    from search_env.scoring.vllm_launch import start_vllm

    # a stand-in "vllm" whose server starts a worker and never answers /health
    server = tmp_path / "vllm" / "entrypoints" / "openai"
    server.mkdir(parents=True)
    for folder in (server, server.parent, server.parent.parent):
        (folder / "__init__.py").write_text("")
    worker = tmp_path / "worker.pid"
    (server / "api_server.py").write_text(
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        f"open({str(worker)!r}, 'w').write(str(p.pid))\n"
        "print('starting up', flush=True)\n"
        "time.sleep(120)\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="(?s)vLLM was not up within 5 s.*starting up"):
        start_vllm(bundled_model_dir(), python=sys.executable, timeout=5)
    pid = int(worker.read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:  # gone, or a zombie nobody has reaped yet (where init does not reap)
            if open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        except FileNotFoundError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the server's worker {pid} outlived the server")
