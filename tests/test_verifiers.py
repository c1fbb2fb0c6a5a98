"""verifiers 0.4 end to end: ``vf-eval search_env_verifiers`` (verifiers' own CLI, loader by name, rollout loop,
chat harness and OpenAI-compatible client) plays two episodes against a real vLLM CPU server (``.venv-vllm``) on the
bundled SmolLM2, IG scored on the same server; each trace's messages, per-turn IG and reward equal a replay of the
model's replies through ``SearchQAEnv``. The server starts once for the file (~40-60 s), the eval takes ~1-2 min."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from search_env.agents.models import bundled_model_dir
from search_env.data.corpus import load_corpus
from search_env.data.qa import load_questions
from search_env.env import SearchQAEnv
from search_env.rewards import RewardConfig
from search_env.scoring.servers import VLLMScorer
from tests.servers import running_vllm

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
# vLLM's structured outputs make the 135M model search every turn (left free, it answers at once), so the episodes
# get IG on their searches before the last turn and are cut off at MAX_TURNS (outcome 0)
SEARCH_ONLY = "<search> [A-Za-z ]{1,40} </search>"
MAX_TURNS = 3
IG_WEIGHT = 0.5


def vf_eval() -> Path:
    """verifiers' ``vf-eval`` beside this interpreter (``pip install 'search_env[verifiers]'``); in CI its absence
    fails, elsewhere it skips."""
    path = Path(sys.executable).parent / "vf-eval"
    if importlib.util.find_spec("verifiers") is None or importlib.util.find_spec("verifiers.v1") is None \
            or not path.exists() or not (path.parent / "uv").exists():
        message = "verifiers >= 0.4 (with vf-eval and uv) is not installed: pip install -e '.[verifiers]'"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def server():
    vf_eval()
    with running_vllm(bundled_model_dir()) as url:
        yield url


def run_vf_eval(server: str, out: Path, *flags: str) -> list[dict]:
    """The episodes ``vf-eval`` wrote (its traces.jsonl) for the README's command on ``server`` plus ``flags``: two
    questions of the built-in world, one rollout each, greedy."""
    from tests.test_readme import command

    readme = command("vf-eval search_env_verifiers")  # the README's command, run as written on this server
    assert readme[0].startswith("PATH=") and readme[1] == ".venv/bin/vf-eval"
    cmd = [str(vf_eval()), *[a.replace("http://127.0.0.1:8000", server) for a in readme[2:]]]
    cmd[cmd.index("-m") + 1] = str(bundled_model_dir())
    assert cmd[cmd.index("--env.taskset.max-turns") + 1] == str(MAX_TURNS)
    cmd += ["-r", "1", "--sampling.temperature", "0", *flags, "-o", str(out), "--run.name", "t"]
    # the harness's chat program runs through uv (installed beside vf-eval); the checkout's search_env comes first
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    run = subprocess.run(cmd, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return [json.loads(line) for line in (out / "t" / "traces.jsonl").read_text().splitlines()]


def replay(trace: dict, data: dict, **env_settings) -> tuple[list[str], list[dict], float]:
    """The trace's assistant messages replayed through ``SearchQAEnv``: the replies, each step's info and the
    episode's return; the observations must be the trace's user messages."""
    env = SearchQAEnv(questions=load_questions([{"id": data["question_id"], "question": data["question"],
                                                 "golden_answers": data["golden_answers"]}]),
                      corpus=load_corpus(None), max_turns=MAX_TURNS, **env_settings)
    prompt, _ = env.reset(seed=data["seed"], options={"index": 0})
    messages = [n["message"] for n in trace["nodes"]]
    replies = [m["content"].strip() for m in messages if m["role"] == "assistant"]
    users = [m["content"] for m in messages[1:] if m["role"] == "user"]
    assert (messages[0]["role"], messages[0]["content"]) == ("user", prompt)  # the env's own prompt opens it
    assert 1 <= len(replies) <= MAX_TURNS and len(users) == len(replies) - 1
    infos, returns = [], 0.0
    for t, reply in enumerate(replies):
        obs, reward, terminated, truncated, info = env.step(reply)
        infos.append(info)
        returns += reward
        if t < len(users):
            assert users[t] == obs  # the env's observation is the next user message, as the env wrote it
    assert terminated or truncated  # the env, not verifiers, ended the episode
    return replies, infos, returns


@pytest.fixture(scope="module")
def episodes(server, tmp_path_factory):
    return run_vf_eval(server, tmp_path_factory.mktemp("vf-eval"), "--env.taskset.ig-weight", str(IG_WEIGHT),
                       "--sampling.structured-outputs.regex", SEARCH_ONLY)


def test_vf_eval_plays_the_env_by_name_with_per_turn_ig_and_the_env_return_as_reward(server, episodes):
    assert len(episodes) == 2 and all(e["ok"] and len(e["traces"]) == 1 for e in episodes)
    scorer = VLLMScorer(server, "bundled")
    igs_seen = []
    for episode in episodes:
        trace, data = episode["traces"][0], episode["task"]["data"]
        replies, infos, returns = replay(trace, data, scorer=scorer, reward=RewardConfig(ig_weight=IG_WEIGHT))
        igs, info = [i.get("ig") for i in infos], infos[-1]
        recorded = trace["info"]["search_env"]["ig"]
        assert [g is None for g in recorded] == [g is None for g in igs]
        assert all(abs(a - b) < 1e-3 for a, b in zip(recorded, igs) if a is not None)
        for t, g in enumerate(recorded, 1):  # per-turn IG as named metrics
            assert (f"ig_turn_{t}" in trace["metrics"]) == (g is not None)
            assert g is None or trace["metrics"][f"ig_turn_{t}"] == g
        rewards = {name: r["score"] * r["weight"] for name, r in trace["rewards"].items()}
        scored = [g for g in recorded if g is not None]
        assert set(rewards) == {"outcome", "format", "ig"} and abs(rewards["ig"] - IG_WEIGHT * sum(scored)) < 1e-9
        assert rewards["outcome"] == info["reward_components"]["outcome"] == float(info.get("em", 0.0))
        assert abs(sum(rewards.values()) - returns) < 1e-3  # trace.reward is the env's episode return
        assert trace["metrics"]["ig_steps"] == len(scored) and trace["metrics"]["searches"] == len(replies)
        igs_seen += scored
    assert len(igs_seen) >= 2 and len(set(igs_seen)) > 1  # the episodes searched and got distinct IG values


# Every turn writes a one-step plan and a search that share the content word "founder", so each search covers its
# plan in part. A later plan replaces the earlier one, and an episode's plan rewards add up to the weight times the
# last plan's coverage.
PLAN_AND_SEARCH = ("<plan>\\n1\\. Who is the founder of [A-Za-z]{2,20}\\n</plan>\\n"
                   "<search> founder of [A-Za-z]{2,20} </search>")
PLAN_WEIGHT = 0.3


def test_vf_eval_pays_the_plan_aware_reward_as_the_env_does(server, tmp_path):
    episodes = run_vf_eval(server, tmp_path, "--env.taskset.dialect", "plan", "--env.taskset.plan-weight",
                           str(PLAN_WEIGHT), "--env.taskset.ig", "false", "--sampling.max-tokens", "96",
                           "--sampling.structured-outputs.regex", PLAN_AND_SEARCH)
    assert len(episodes) == 2 and all(e["ok"] and len(e["traces"]) == 1 for e in episodes)
    for episode in episodes:
        trace, data = episode["traces"][0], episode["task"]["data"]
        replies, infos, returns = replay(trace, data, dialect="plan", ig=False,
                                         reward=RewardConfig(plan_weight=PLAN_WEIGHT))
        assert all(r.startswith("<plan>") for r in replies) and all(i.get("plan") for i in infos)
        rewards = {name: r["score"] * r["weight"] for name, r in trace["rewards"].items()}
        assert set(rewards) == {"outcome", "format", "ig", "plan"} and rewards["ig"] == 0.0
        assert abs(rewards["plan"] - sum(i["reward_components"]["plan"] for i in infos)) < 1e-9
        assert abs(sum(rewards.values()) - returns) < 1e-9  # the plan term is in the env's return, once
        coverage = infos[-1]["plan_coverage"]
        assert coverage > 0 and abs(rewards["plan"] - PLAN_WEIGHT * coverage) < 1e-9  # the term was really paid


def test_the_taskset_takes_every_adapter_setting():
    vf_eval()
    from search_env.integrations import base
    from search_env.integrations.verifiers import SearchQAConfig

    # ig_clip is left out on purpose: the trace records IG unclipped (``_settings`` sets it to None)
    assert set(base.DEFAULTS) - {"ig_clip"} <= set(SearchQAConfig.model_fields)


def test_load_environment_builds_the_env_through_verifiers_loader():
    vf_eval()
    from search_env.integrations.verifiers import SearchQAVerifiersEnv, load_environment

    env = load_environment(limit=2, topk=2, ig=False, player={"max_turns": 5})
    tasks = list(env.taskset)
    assert isinstance(env, SearchQAVerifiersEnv) and env.config.player.max_turns == 5 and len(tasks) == 2
    world = SearchQAEnv(topk=2, ig=False)
    for i, task in enumerate(tasks):
        prompt, info = world.reset(options={"index": i})
        assert task.data.prompt == prompt and task.data.golden_answers == info["golden_answers"]
        assert task.data.seed == i
