"""HTTPRetriever and the retrieval server: the real server on a loopback port, Search-R1-shaped stand-ins,
faults (server stopped, hanging, garbage, HTTP 500) and the env's recovery from them."""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import gymnasium as gym
import pytest
import requests

import search_env  # noqa: F401  (registers the env)
from search_env.data import load_corpus
from search_env.retrieval import Hit, HTTPRetriever, RetrieverUnavailable, make_retriever
from search_env.retrieval.bm25 import BM25Retriever
from search_env.retrieval.http import MalformedResponse, parse_response
from search_env.vector import SearchQAVectorEnv
from tests.servers import free_port

pytest.importorskip("fastapi", reason="the retrieval server needs the `server` extra")
uvicorn = pytest.importorskip("uvicorn", reason="the retrieval server needs the `server` extra")

from search_env.retrieval import server as server_module  # noqa: E402
from search_env.retrieval.server import create_app  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FAST = {"timeout": 0.5, "retries": 1, "backoff": 0.05}  # worst case about 2 * 0.5 s + 0.05 s


class LiveServer:
    """``create_app(retriever)`` under uvicorn in a thread on 127.0.0.1; can be stopped and started again."""

    def __init__(self, retriever, port: int | None = None, **app_kwargs):
        self.retriever, self.app_kwargs = retriever, app_kwargs
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.start()

    def start(self) -> None:
        app = create_app(self.retriever, **self.app_kwargs)
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()


class StandIn:
    """A minimal ``http.server`` retrieval server answering exactly in Search-R1's shape, or with a fault.

    ``mode``: ``"ok"``, ``"hang"`` (no answer until released), ``"garbage"`` (HTML), ``"wrong-shape"``,
    ``"500"`` or ``"422"``. ``docs``: the corpus rows it returns, the first ``topk`` for every query.
    """

    def __init__(self, docs: list[dict], mode: str = "ok"):
        self.docs, self.mode = docs, mode
        self.requests: list[dict] = []
        self.release = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append(payload)
                mode = owner.mode
                if mode == "hang":
                    owner.release.wait(10)
                    mode = owner.mode
                if mode == "500":
                    return self._send(500, b"Internal Server Error", "text/plain")
                if mode == "422":
                    return self._send(422, b'{"detail": "bad request"}')
                if mode == "garbage":
                    return self._send(200, b"<html><body>502 Bad Gateway</body></html>", "text/html")
                if mode == "wrong-shape":
                    return self._send(200, json.dumps({"results": []}).encode())
                queries = payload["queries"] if "queries" in payload else [payload["query"]]
                rows = owner.docs[: payload.get("topk") or 3]
                if payload.get("return_scores", False):
                    result = [[{"document": doc, "score": 10.0 - i} for i, doc in enumerate(rows)] for _ in queries]
                else:
                    result = [list(rows) for _ in queries]
                self._send(200, json.dumps({"result": result}).encode())

            def _send(self, status, body, content_type="application/json"):
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the client gave up (timeout) and closed the socket
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def set_mode(self, mode: str) -> None:
        self.mode = mode
        if mode != "hang":
            self.release.set()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def bm25(tiny_corpus):
    return BM25Retriever(tiny_corpus, cache=False)


@pytest.fixture(scope="module")
def live(bm25):
    server = LiveServer(bm25)
    yield server
    server.stop()


@pytest.fixture
def stand_in(tiny_corpus):
    docs = [{"id": p.id, "contents": p.contents} for p in tiny_corpus]
    servers = []

    def make(mode="ok"):
        servers.append(StandIn(docs, mode))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


QUERIES = ["In which country is Karvesh?", "capital of Osmundia", "river city salt road", "harbour guild", "zzz"]


# -- against the real server -------------------------------------------------------------------


def test_client_matches_in_process(live, bm25):
    client = HTTPRetriever(live.url, **FAST)
    assert client.batch_search(QUERIES, 3) == bm25.batch_search(QUERIES, 3)
    assert client.search(QUERIES[0], 5) == bm25.search(QUERIES[0], 5)
    assert client.search("zzz", 3) == []  # no known word: BM25 returns nothing, and so does the server
    assert client.batch_search([], 3) == [] and client.search("x", 0) == []


def test_server_protocol(live, tiny_corpus):
    single = requests.post(f"{live.url}/retrieve", json={"query": QUERIES[0], "topk": 2, "return_scores": True}).json()
    batch = requests.post(
        f"{live.url}/retrieve", json={"queries": [QUERIES[0]], "topk": 2, "return_scores": True}
    ).json()
    assert single == batch and len(single["result"]) == 1 and len(single["result"][0]) == 2
    entry = single["result"][0][0]
    assert set(entry) == {"document", "score"} and set(entry["document"]) == {"id", "contents", "title", "text"}
    assert entry["document"]["contents"] == tiny_corpus.get(entry["document"]["id"]).contents
    bare = requests.post(f"{live.url}/retrieve", json={"queries": QUERIES[:2], "return_scores": False}).json()
    assert [len(row) for row in bare["result"]] == [3, 3]  # server default topk
    assert set(bare["result"][0][0]) == {"id", "contents", "title", "text"}
    for bad in ({"topk": 3}, {"query": "a", "queries": ["b"]}, {"queries": "not a list"}, {"query": "a", "topk": -1}):
        assert requests.post(f"{live.url}/retrieve", json=bad).status_code == 422
    health = requests.get(f"{live.url}/health").json()
    assert health == {"status": "ok", "retriever": "BM25Retriever", "passages": len(tiny_corpus),
                      "corpus": tiny_corpus.name, "fingerprint": tiny_corpus.fingerprint}


@pytest.mark.parametrize("mmap", [False, True], ids=["in-memory", "mapped"])
def test_health_names_the_corpus_without_its_path(tmp_path, tiny_corpus, mmap):
    """/health gives the corpus's file name, its size and fingerprint, and nothing of the server's directories."""
    path = tmp_path / "private-folder" / "wiki-tiny.jsonl"
    path.parent.mkdir()
    tiny_corpus.to_jsonl(path)
    corpus = load_corpus(str(path), mmap=mmap)
    assert str(tmp_path) in corpus.name  # what the server was given: a path on its disk
    server = LiveServer(BM25Retriever(corpus, cache=False))
    try:
        response = requests.get(f"{server.url}/health")
    finally:
        server.stop()
    assert response.json() == {"status": "ok", "retriever": "BM25Retriever", "passages": len(tiny_corpus),
                               "corpus": "wiki-tiny.jsonl", "fingerprint": tiny_corpus.fingerprint}
    assert "private-folder" not in response.text


def test_client_without_scores(live, bm25):
    hits = HTTPRetriever(live.url, return_scores=False, **FAST).search(QUERIES[0], 3)
    assert [h.doc_id for h in hits] == [h.doc_id for h in bm25.search(QUERIES[0], 3)]
    assert all(h.score == 0.0 for h in hits)


class SlowCounting:
    """Wraps a retriever: counts batch_search calls and takes 50 ms each, so concurrent requests queue."""

    def __init__(self, inner):
        self.inner, self.calls, self.corpus = inner, [], inner.corpus

    def search(self, query, k):
        return self.batch_search([query], k)[0]

    def batch_search(self, queries, k):
        self.calls.append(len(queries))
        time.sleep(0.05)
        return self.inner.batch_search(queries, k)


def test_concurrent_clients_share_batches(bm25):
    counting = SlowCounting(bm25)
    server = LiveServer(counting)
    try:
        client = HTTPRetriever(server.url, timeout=10, retries=0)
        queries = [QUERIES[i % 4] + f" {i}" for i in range(16)]
        results: dict[int, list] = {}
        threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, client.search(queries[i], 3)))
                   for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=20)
        assert [results[i] for i in range(16)] == bm25.batch_search(queries, 3)
        assert sum(counting.calls) == 16 and len(counting.calls) < 16  # requests were merged
    finally:
        server.stop()


def test_gym_make_with_url_equals_in_process(live, tiny_corpus, tiny_questions, fake_scorer):
    kwargs = {"questions": tiny_questions, "corpus": tiny_corpus, "scorer": fake_scorer}
    remote = gym.make("search_env:SearchQA-v0", retriever=live.url, **kwargs)
    local = gym.make("search_env:SearchQA-v0", retriever="bm25", **kwargs)
    assert isinstance(remote.unwrapped.retriever, HTTPRetriever)
    assert remote.reset(seed=1) == local.reset(seed=1)
    for action in [
        "<search> Karvesh country </search>",
        "<search> capital Veltrania </search>",
        "<answer> Veltrania </answer>",
    ]:
        assert remote.step(action) == local.step(action)


def test_vector_env_over_http(live, tiny_corpus, tiny_questions, fake_scorer):
    kwargs = {"questions": tiny_questions, "corpus": tiny_corpus, "scorer": fake_scorer}
    remote = SearchQAVectorEnv(3, retriever=live.url, **kwargs)
    local = SearchQAVectorEnv(3, retriever="bm25", **kwargs)
    assert remote.reset(seed=[0, 1, 2])[0] == local.reset(seed=[0, 1, 2])[0]
    actions = ["<search> Karvesh </search>", "<search> Omrith country </search>", None]
    got, want = remote.step(actions), local.step(actions)
    assert got[0] == want[0] and (got[1] == want[1]).all()
    assert [list(x) for x in got[4]["doc_ids"][:2]] == [list(x) for x in want[4]["doc_ids"][:2]]


# -- the serve command: add_arguments, run, main -----------------------------------------------


@pytest.fixture
def served(monkeypatch, tmp_path):
    """Binding the port and ``uvicorn.Server.run`` replaced by recorders: what ``run`` would have served, and how."""
    import socket

    monkeypatch.setenv("SEARCH_ENV_CACHE", str(tmp_path / "cache"))
    calls: dict = {}
    monkeypatch.setattr(server_module, "bind", lambda host, port: calls.update(bound=(host, port)) or socket.socket())

    def serve(self, sockets=None):
        config = self.config
        calls.update(app=config.app, host=config.host, port=config.port, log_level=config.log_level,
                     access_log=config.access_log, sockets=sockets)

    monkeypatch.setattr(uvicorn.Server, "run", serve)
    yield calls
    if "app" in calls:
        calls["app"].state.batcher.close()


def _serve_args(argv):
    parser = argparse.ArgumentParser()
    server_module.add_arguments(parser)
    return parser.parse_args(argv)


def test_run_serves_the_corpus_it_is_given(served, tmp_path, tiny_corpus, bm25):
    tiny_corpus.to_jsonl(tmp_path / "corpus.jsonl")
    args = _serve_args(["--corpus", str(tmp_path / "corpus.jsonl"), "--index-dir", str(tmp_path / "index"),
                        "--host", "0.0.0.0", "--port", "8123", "--max-batch", "7", "--max-wait-ms", "5"])
    assert server_module.run(args) == 0
    app = served["app"]
    assert (served["host"], served["port"], served["access_log"]) == ("0.0.0.0", 8123, False)
    assert served["bound"] == ("0.0.0.0", 8123) and len(served["sockets"]) == 1  # uvicorn listens on the bound one
    assert app.state.retriever.corpus.fingerprint == tiny_corpus.fingerprint
    assert app.state.retriever.batch_search(QUERIES, 3) == bm25.batch_search(QUERIES, 3)
    assert (app.state.batcher.max_batch, app.state.batcher.max_wait) == (7, 0.005)
    assert (tmp_path / "index" / "search_env_bm25.json").exists()  # --index-dir holds the index


def test_run_defaults_to_the_builtin_corpus(served):
    from search_env.data import load_corpus
    from search_env.retrieval.bm25 import BM25Retriever

    assert server_module.run(_serve_args([])) == 0
    retriever = served["app"].state.retriever
    assert isinstance(retriever, BM25Retriever) and retriever.corpus.fingerprint == load_corpus(None).fingerprint
    assert (served["host"], served["port"], served["log_level"]) == ("127.0.0.1", 8000, "info")


def test_server_main_has_its_own_parser(monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(server_module, "run", lambda args: seen.append(args) or 7)
    assert server_module.main(["--retriever", "dense", "--index", "hnsw", "--topk", "5"]) == 7
    assert (seen[0].retriever, seen[0].index, seen[0].topk, seen[0].corpus) == ("dense", "hnsw", 5, None)
    with pytest.raises(SystemExit) as bad:
        server_module.main(["--topk", "0"])
    assert bad.value.code == 2
    prog = "python -m search_env.retrieval.server"
    assert capsys.readouterr().err == f"{prog}: error: argument --topk: must be at least 1, got 0 (see {prog} --help)\n"
    assert len(seen) == 1  # a bad argument never reaches run


# -- against Search-R1-shaped stand-ins --------------------------------------------------------


def test_search_r1_response_shape(stand_in, tiny_corpus):
    server = stand_in()
    hits = HTTPRetriever(server.url, **FAST).batch_search(["a", "b"], 2)
    assert server.requests == [{"queries": ["a", "b"], "topk": 2, "return_scores": True}]
    first = tiny_corpus[0]
    assert hits[0][0].doc_id == first.id and hits[0][0].title == first.title and hits[0][0].text == first.text
    assert [h.score for h in hits[1]] == [10.0, 9.0]
    bare = HTTPRetriever(server.url, return_scores=False, **FAST).search("a", 2)
    assert [h.doc_id for h in bare] == [p.id for p in tiny_corpus[:2]] and bare[0].score == 0.0


def test_round_robin_over_replicas(stand_in):
    a, b = stand_in(), stand_in()
    client = make_retriever([a.url, b.url])
    assert isinstance(client, HTTPRetriever)
    for _ in range(10):
        client.search("q", 3)
    assert len(a.requests) == len(b.requests) == 5


def test_failover_to_a_live_replica(stand_in):
    dead, good = f"http://127.0.0.1:{free_port()}", stand_in()
    client = HTTPRetriever([dead, good.url], **FAST)
    for _ in range(4):
        assert len(client.search("q", 2)) == 2  # every other call starts at the dead one and moves on
    assert len(good.requests) == 4


def test_all_replicas_down_names_each(stand_in):
    urls = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]
    with pytest.raises(RetrieverUnavailable) as error:
        HTTPRetriever(urls, **FAST).search("q", 2)
    message = str(error.value)
    assert "after 2 attempt(s)" in message and "connection failed" in message
    assert all(f"{url}/retrieve" in message for url in urls)


def test_client_errors_are_not_retried(stand_in):
    server = stand_in("422")
    with pytest.raises(RetrieverUnavailable, match=r"HTTP 422.*bad request.*not retried"):
        HTTPRetriever(server.url, timeout=0.5, retries=3).search("q", 2)
    assert len(server.requests) == 1


def test_large_batches_are_split(stand_in):
    server = stand_in()
    hits = HTTPRetriever(server.url, batch_size=2, **FAST).batch_search([f"q{i}" for i in range(5)], 1)
    assert len(hits) == 5 and [len(r["queries"]) for r in server.requests] == [2, 2, 1]


@pytest.mark.parametrize(
    ("body", "n", "message"),
    [
        ([], 1, "expected a JSON object with 'result'"),
        ({"results": []}, 1, "expected a JSON object with 'result'"),
        ({"result": "x"}, 1, "'result' is a str"),
        ({"result": [[]]}, 2, "1 lists for 2 queries"),
        ({"result": [["doc"]]}, 1, r"result\[0\]\[0\] is a str"),
        ({"result": [[{"document": {"contents": "x"}}]]}, 1, "has no 'id'"),
        ({"result": [[{"document": {"id": 1}}]]}, 1, "no string 'contents'"),
        ({"result": [[{"document": {"id": 1, "contents": "x"}, "score": "high"}]]}, 1, "not a number"),
    ],
)
def test_malformed_responses(body, n, message):
    with pytest.raises(MalformedResponse, match=message):
        parse_response(body, n, 3)


def test_parse_response_variants():
    flat = {"result": [{"document": {"id": 7, "contents": '"T"\nbody'}, "score": 1}]}  # single-query servers
    assert parse_response(flat, 1, 3)[0][0].doc_id == "7"
    titled = {"result": [[{"id": "a", "title": "T", "text": "body"}]]}
    hit = parse_response(titled, 1, 3)[0][0]
    assert (hit.title, hit.text, hit.score) == ("T", "body", 0.0)
    many = {"result": [[{"id": str(i), "contents": "x"} for i in range(5)]]}
    assert len(parse_response(many, 1, 2)[0]) == 2  # a server returning more than topk is cut


# -- faults during an episode --------------------------------------------------------------------

SEARCH_1, SEARCH_2 = "<search> Karvesh </search>", "<think>next</think><search> Veltrania capital </search>"


def _env(url, tiny_corpus, tiny_questions, fake_scorer):
    retriever = HTTPRetriever(url, **FAST)
    return gym.make("search_env:SearchQA-v0", questions=tiny_questions, corpus=tiny_corpus, retriever=retriever,
                    scorer=fake_scorer)


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("stopped", "connection failed"),
        ("hang", r"timed out after 0.5 s"),
        ("garbage", "malformed response.*not JSON"),
        ("wrong-shape", "malformed response"),
        ("500", "HTTP 500"),
    ],
)
def test_env_step_fails_cleanly_and_can_be_retried(fault, message, bm25, stand_in, tiny_corpus, tiny_questions,
                                                    fake_scorer):
    if fault == "stopped":
        server = LiveServer(bm25)
        break_server, mend_server = server.stop, server.start
    else:
        server = stand_in()
        break_server, mend_server = (lambda: server.set_mode(fault)), (lambda: server.set_mode("ok"))
    try:
        reference = _env(server.url, tiny_corpus, tiny_questions, fake_scorer)
        reference.reset(seed=5)
        want = [reference.step(SEARCH_1), reference.step(SEARCH_2)]

        env = _env(server.url, tiny_corpus, tiny_questions, fake_scorer)
        env.reset(seed=5)
        assert env.step(SEARCH_1) == want[0]
        before = (env.unwrapped.turn, env.unwrapped.transcript, list(env.unwrapped.steps))

        break_server()
        start = time.monotonic()
        with pytest.raises(RetrieverUnavailable, match=message) as error:
            env.step(SEARCH_2)
        elapsed = time.monotonic() - start
        assert elapsed < 2 * FAST["timeout"] + FAST["backoff"] + 1.0, elapsed  # within the timeout budget
        assert server.url in str(error.value)
        assert (env.unwrapped.turn, env.unwrapped.transcript, list(env.unwrapped.steps)) == before

        mend_server()
        assert env.step(SEARCH_2) == want[1]  # the same step, retried, as if nothing had happened
    finally:
        if fault == "stopped":
            server.stop()


# -- packaging ---------------------------------------------------------------------------------


def test_pickle_and_urls():
    client = HTTPRetriever(["http://127.0.0.1:1", "https://example.org/api/search/"], timeout=2)
    assert client.urls == ["http://127.0.0.1:1/retrieve", "https://example.org/api/search/"]
    clone = pickle.loads(pickle.dumps(client))
    assert clone.urls == client.urls and clone.timeout == 2
    assert isinstance(make_retriever("http://127.0.0.1:1"), HTTPRetriever)
    with pytest.raises(ValueError, match="unknown retriever"):
        make_retriever("ftp://x")
    with pytest.raises(ValueError):
        HTTPRetriever([])


def test_server_module_stands_alone():
    """``python -m search_env.retrieval.server`` works, and the server module never imports the CLI."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = ("import sys, search_env.retrieval.server; "
            "assert 'search_env.commands.cli' not in sys.modules, 'imports the CLI'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env=env)
    shown = subprocess.run([sys.executable, "-m", "search_env.retrieval.server", "--help"], cwd=ROOT, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert shown.startswith("usage: python -m search_env.retrieval.server")
    assert all(option in shown for option in ("--corpus", "--retriever", "--index-dir", "--max-wait-ms"))


def test_import_stays_light():
    code = ("import sys, search_env; heavy = {'torch', 'faiss', 'fastapi', 'uvicorn', 'httpx', 'requests', "
            "'transformers'} & set(sys.modules); assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


# -- Search-R1's contract at any batch size (issue 13) ------------------------------------------


@pytest.mark.parametrize("raw", ['{"queries": ["a"], "topk": 1e999}', '{"queries": ["a"], "topk": NaN}',
                                 '{"queries": ["a"], "topk": Infinity}', '{"queries": [1e999]}',
                                 '{"query": "a", "return_scores": NaN}', '{"queries": ["a"], "topk": -Infinity}'])
def test_non_finite_numbers_get_422_not_500(live, raw):
    response = requests.post(f"{live.url}/retrieve", data=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["msg"]


def test_search_r1_defaults(live, bm25):
    response = requests.post(f"{live.url}/retrieve", json={"queries": [QUERIES[0]], "topk": 0}).json()
    row = response["result"][0]  # no scores unless asked, and topk 0 is the server's default (3)
    assert [doc["id"] for doc in row] == [h.doc_id for h in bm25.search(QUERIES[0], 3)] and "score" not in row[0]


def test_a_turns_whole_batch_is_answered_and_the_limit_is_configurable(bm25):
    server = LiveServer(bm25, max_batch=64, max_queries=6_000)
    try:
        queries = [QUERIES[i % 4] for i in range(5_120)]  # Search-R1: train_batch_size 1024 x n_agent 5
        result = requests.post(f"{server.url}/retrieve", json={"queries": queries, "topk": 2}).json()["result"]
        expected = {q: [h.doc_id for h in bm25.search(q, 2)] for q in QUERIES[:4]}
        assert len(result) == 5_120 and all([d["id"] for d in row] == expected[q] for q, row in zip(queries, result))
        too_many = requests.post(f"{server.url}/retrieve", json={"queries": ["a"] * 6_001})
        assert too_many.status_code == 422 and "6000" in too_many.json()["detail"][0]["msg"]
    finally:
        server.stop()


def test_error_echo_is_capped_and_large_bodies_get_413(bm25):
    server = LiveServer(bm25, max_body_bytes=1_000_000)
    try:
        bad = requests.post(f"{server.url}/retrieve", json={"queries": "x" * 900_000})
        assert bad.status_code == 422 and len(bad.content) < 2_000
        huge = requests.post(f"{server.url}/retrieve", json={"queries": ["a" * 1000] * 2_000})
        assert huge.status_code == 413 and "1000000" in huge.json()["detail"]
        streamed = requests.post(f"{server.url}/retrieve", data=(b"x" * 100_000 for _ in range(20)),
                                 headers={"Content-Type": "application/json"})  # chunked: no Content-Length
        assert streamed.status_code == 413
        assert requests.post(f"{server.url}/retrieve", json={"query": QUERIES[0]}).status_code == 200
    finally:
        server.stop()


def test_a_large_request_does_not_starve_a_small_one():
    class Slow:
        def __init__(self):
            self.sizes = []

        def batch_search(self, queries, k):
            self.sizes.append(len(queries))
            time.sleep(0.02)
            return [[Hit(q, "", "", 0.0)] for q in queries]

    retriever = Slow()
    batcher = server_module.QueryBatcher(retriever, max_batch=50)
    big = batcher.submit([f"q{i}" for i in range(2_000)], 1)  # 40 batches alone
    time.sleep(0.1)
    small = batcher.submit(["one"], 1)
    assert small.result(timeout=10) == [[Hit("one", "", "", 0.0)]]
    assert not big.done()  # answered between two chunks of the large request, not after all of them
    assert [row[0].doc_id for row in big.result(timeout=30)] == [f"q{i}" for i in range(2_000)]
    assert max(retriever.sizes) <= 50
    batcher.close()


def test_documents_come_back_with_contents_as_stored(tmp_path):
    path = tmp_path / "corpus.jsonl"
    rows = [
        {"id": "a", "contents": "no quoted title, Karvesh river"},
        {"id": "b", "contents": "Plain title\nOmrith  text "},
        {"id": "c", "contents": '"Quoted"\nVeltrania'},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for mmap in (False, True):
        corpus = load_corpus(path, mmap=mmap)
        server = LiveServer(BM25Retriever(corpus, cache=False))
        try:
            result = requests.post(
                f"{server.url}/retrieve", json={"queries": ["Karvesh", "Omrith", "Veltrania"], "topk": 1}
            ).json()
            docs = [row[0] for row in result["result"]]
            assert [d["contents"] for d in docs] == [r["contents"] for r in rows]
            assert (docs[1]["title"], docs[1]["text"]) == ("Plain title", "Omrith  text")
        finally:
            server.stop()
