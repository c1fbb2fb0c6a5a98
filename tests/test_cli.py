import json
import subprocess
import sys

import pytest

from search_env.cli import main


@pytest.fixture
def qa_dir(tmp_path, tiny_corpus, tiny_questions):
    folder = tmp_path / "tinyset"
    folder.mkdir()
    tiny_corpus.to_jsonl(folder / "corpus.jsonl")
    with open(folder / "test.jsonl", "w") as f:
        for q in tiny_questions:
            titles = [tiny_corpus.get(d).title for d in q.metadata["supporting_doc_ids"]]
            f.write(json.dumps({"id": q.id, "question": q.question, "golden_answers": list(q.golden_answers),
                                "metadata": {"supporting_titles": titles}}) + "\n")
    return folder


def read_records(path):
    return [json.loads(line) for line in open(path)]


def test_eval_prints_table_and_resumes_without_redoing_or_losing(qa_dir, tmp_path, capsys):
    out = tmp_path / "runs" / "traj.jsonl"
    args = ["eval", "--questions", str(qa_dir / "test.jsonl"), "--policy", "oracle", "--output", str(out)]
    assert main(args + ["--limit", "2"]) == 0  # an interrupted run: 2 of 6 done
    first = read_records(out)
    assert [r["id"] for r in first] == ["q0", "q1"]
    with open(out, "a") as f:
        f.write('{"id": "q2", "dataset": "tinys')  # a crash in the middle of writing a record
    assert main(args) == 0
    records = read_records(out)
    assert [r["id"] for r in records] == ["q0", "q1", "q2", "q3", "q4", "q5"]  # no repeats, none lost
    assert records[:2] == first
    assert all(r["em"] == 1.0 and r["dataset"] == "tinyset" and r["turns"][0]["action_type"] == "search" for r in records)
    table = capsys.readouterr().out
    assert "tinyset" in table and "1.000" in table and "4 episodes run, 2 resumed" in table


def test_bad_arguments_give_one_clear_line(tmp_path, capsys):
    assert main(["eval", "--questions", str(tmp_path / "missing.jsonl"), "--output", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("search-env: error: no such QA file") and "Traceback" not in err and err.count("\n") == 1
    bad = tmp_path / "bad" / "test.jsonl"
    bad.parent.mkdir()
    bad.write_text('{"id": 1, "question": "Q?"}\n')
    (bad.parent / "corpus.jsonl").write_text('{"id": "0", "contents": "\\"T\\"\\nx"}\n')
    assert main(["eval", "--questions", str(bad), "--policy", "oracle", "--output", str(tmp_path / "o.jsonl")]) == 2
    assert "test.jsonl:1: missing or empty 'golden_answers'" in capsys.readouterr().err


def test_index_build_and_info(qa_dir, tmp_path, capsys):
    assert main(["index", "build", "--corpus", str(qa_dir / "corpus.jsonl"), "--output", str(tmp_path / "idx")]) == 0
    assert "bm25 index over 39 passages" in capsys.readouterr().out
    assert any((tmp_path / "idx").iterdir())
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "gymnasium" in out and "cache dir" in out


@pytest.mark.parametrize("command", [[], ["demo"], ["index", "build"], ["eval"], ["info"], ["serve"]])
def test_help_of_every_command(command):
    result = subprocess.run([sys.executable, "-m", "search_env.cli", *command, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout and "Traceback" not in result.stderr


def test_demo_oracle_runs(capsys):
    assert main(["demo", "--policy", "oracle", "--no-ig", "--episodes", "1"]) == 0
    out = capsys.readouterr().out
    assert "Episode 1" in out and "EM 1" in out
