import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from search_env.commands.cli import build_parser, main
from tests.servers import free_port, wait_healthy
from tests.standins import tiny_llama, tiny_llama_config

ROOT = Path(__file__).resolve().parents[1]


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
    """The records of an eval output, after its settings header."""
    header, *records = [json.loads(line) for line in open(path)]
    assert set(header) == {"search_env", "settings"} and header["search_env"] == "eval"
    return records


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
    assert all(
        r["em"] == 1.0 and r["dataset"] == "tinyset" and r["turns"][0]["action_type"] == "search" for r in records
    )
    table = capsys.readouterr().out
    assert "tinyset" in table and "1.000" in table and "4 episodes run, 2 resumed" in table


def table_rows(text):
    """dataset -> n of the table eval printed."""
    rows = [line.split() for line in text.splitlines()]
    return {row[0]: int(row[1]) for row in rows if len(row) == 5 and row[0] != "dataset"}


def test_a_file_in_the_current_folder_names_its_dataset_by_its_stem(qa_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(qa_dir)
    out = tmp_path / "o.jsonl"
    assert main(["eval", "--questions", "./test.jsonl", "--policy", "oracle", "--output", str(out), "--limit", "1"]) \
        == 0
    assert table_rows(capsys.readouterr().out) == {"test": 1}
    assert [r["dataset"] for r in read_records(out)] == ["test"]


def test_eval_resume_honours_limit(qa_dir, tmp_path, capsys):
    """--limit N reports the first N questions, whatever the file already holds; a larger limit runs only the rest."""
    out = tmp_path / "traj.jsonl"
    args = ["eval", "--questions", str(qa_dir / "test.jsonl"), "--policy", "oracle", "--output", str(out)]
    assert main(args + ["--limit", "4"]) == 0
    capsys.readouterr()
    assert main(args + ["--limit", "3"]) == 0
    text = capsys.readouterr().out
    assert table_rows(text) == {"tinyset": 3}
    assert "0 episodes run, 3 resumed" in text and "(1 more there, beyond --limit, not counted)" in text
    assert main(args + ["--limit", "5"]) == 0
    text = capsys.readouterr().out
    assert table_rows(text) == {"tinyset": 5} and "1 episodes run, 4 resumed" in text and "beyond" not in text
    assert [r["id"] for r in read_records(out)] == ["q0", "q1", "q2", "q3", "q4"]


@pytest.mark.parametrize("change, keys", [
    (["--policy", "bundled"], ["constrained", "max_new_tokens", "policy", "temperature"]),
    (["--topk", "2"], ["topk"]),
    (["--seed", "1", "--ig"], ["ig", "seed"]),
    (["--max-turns", "3", "--dialect", "autorefine"], ["dialect", "max_turns"]),
    (["--retriever", "rank-bm25"], ["retriever"]),
])
def test_eval_refuses_a_file_made_with_other_settings(qa_dir, tmp_path, capsys, change, keys):
    out = tmp_path / "traj.jsonl"
    args = ["eval", "--questions", str(qa_dir / "test.jsonl"), "--output", str(out), "--limit", "2"]
    assert main(args + ["--policy", "oracle"]) == 0
    before = out.read_bytes()
    capsys.readouterr()
    assert main([*args, "--policy", "oracle", *change, "--limit", "3"]) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert err.startswith(f"search-env: error: {out} was made with other settings") and err.count("\n") == 1
    named = [part.split(":")[0].strip() for part in err.split("resumed: ")[1].split(". Rerun")[0].split(";")]
    assert named == keys
    assert "another --output, or delete the file" in err and not captured.out
    assert out.read_bytes() == before  # not a record added, nothing cut


def test_eval_refuses_other_data_and_files_without_settings(qa_dir, tmp_path, capsys):
    out = tmp_path / "traj.jsonl"
    args = ["eval", "--questions", str(qa_dir / "test.jsonl"), "--policy", "oracle", "--output", str(out)]
    assert main(args + ["--limit", "2"]) == 0
    with open(qa_dir / "test.jsonl", "a") as f:  # the dataset changed: one more question
        f.write(json.dumps({"id": "q9", "question": "Where?", "golden_answers": ["Here"]}) + "\n")
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "questions[tinyset]: \"6 questions, sha256" in err and '"7 questions, sha256' in err
    old = tmp_path / "old.jsonl"  # what an older search-env wrote: records only
    old.write_text("".join(json.dumps(r) + "\n" for r in read_records(out)))
    before = old.read_bytes()
    assert main(args[:-1] + [str(old)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"search-env: error: {old} has no settings header") and err.count("\n") == 1
    assert old.read_bytes() == before


def eval_record(id_, em, f1, *, searches=1, answered=True, dataset="d"):
    """A version-1 episode record as eval writes it, with only what --compare reads set by hand."""
    turns = [{"text": "<search> q </search>", "action_type": "search", "reward": 0.0, "reward_components": {},
              "query": "q", "doc_ids": [], "passages": []}] * searches
    return {"schema_version": 1, "id": id_, "question": "?", "golden_answers": ["a"],
            "prediction": "a" if answered else None, "em": em, "f1": f1, "n_searches": searches, "return": em,
            "turns": turns, "dataset": dataset}


def test_eval_compare_is_the_hand_computed_table(tmp_path, capsys):
    """Runs A and B share q1 and q2: EM B-A = (1, 0) over them, mean 0.5 and a 95% bootstrap interval [0, 1] (a
    resample of two is 0 or 1 a quarter of the time each); F1 B-A = (0.5, 0.5), so [0.5, 0.5]."""
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    header = json.dumps({"search_env": "eval", "settings": {"policy": "x"}}) + "\n"  # eval's settings line, skipped
    a.write_text(header + "".join(json.dumps(r) + "\n" for r in [
        eval_record("q0", 1.0, 1.0, searches=2), eval_record("q1", 0.0, 0.5), eval_record("q2", 0.0, 0.0, searches=3,
                                                                                           answered=False)]))
    b.write_text("".join(json.dumps(r) + "\n" for r in [
        eval_record("q1", 1.0, 1.0), eval_record("q2", 0.0, 0.5, searches=2), eval_record("q9", 1.0, 1.0, searches=0)]))
    assert main(["eval", "--compare", str(a), str(b)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["run", "n", "EM", "F1", "answered", "searches", "EM", "-", "first", "[95%]", "F1", "-",
                                "first", "[95%]", "n", "paired"]
    assert lines[1].split() == [str(a), "3", "0.333", "0.500", "0.667", "2.00", "(reference)"]
    assert lines[2].split() == [str(b), "3", "0.667", "0.833", "1.000", "1.00", "+0.500", "[+0.000,", "+1.000]",
                                "+0.500", "[+0.500,", "+0.500]", "2"]
    assert "paired bootstrap" in lines[3] and "10,000 resamples" in lines[3]


def test_eval_compare_refuses_runs_that_share_no_question_and_bad_files(tmp_path, capsys):
    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    a.write_text(json.dumps(eval_record("q0", 1.0, 1.0)) + "\n")
    b.write_text(json.dumps(eval_record("q0", 1.0, 1.0, dataset="other")) + "\n")  # same id, another dataset
    assert main(["eval", "--compare", str(a), str(b)]) == 2
    err = capsys.readouterr().err
    assert err == f"search-env: error: {b} shares no questions (dataset, id) with {a}: there is nothing to pair\n"
    c.write_text(json.dumps(eval_record("q0", 1.0, 1.0)) + "\n" + json.dumps({"id": "q1"}) + "\n")
    assert main(["eval", "--compare", str(a), str(c)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"search-env: error: {c}:2: ") and err.count("\n") == 1
    assert main(["eval", "--compare", str(a)]) == 2
    assert "at least two runs" in capsys.readouterr().err
    assert main(["eval", "--compare", str(a), str(a), "--output", str(tmp_path / "o.jsonl")]) == 2
    assert "without --questions and --output" in capsys.readouterr().err
    assert main(["eval", "--output", str(tmp_path / "o.jsonl")]) == 2
    assert capsys.readouterr().err == ("search-env: error: eval needs --questions (or --compare RUN.jsonl ... to "
                                       "compare finished runs)\n")


def test_paired_interval_is_the_bootstrap_of_the_mean():
    from search_env.commands.compare import paired_interval

    mean, low, high = paired_interval([0.0, 1.0, 0.0, 1.0] * 25, seed=0)
    assert mean == 0.5 and 0.39 < low < 0.42 and 0.58 < high < 0.61  # ±1.96·0.05 around 0.5
    assert paired_interval([0.25] * 7, resamples=50) == (0.25, 0.25, 0.25)
    with pytest.raises(ValueError, match="at least one"):
        paired_interval([])


@pytest.fixture
def model_dir(tmp_path):
    """A tiny random causal LM saved with save_pretrained, with the bundled tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from search_env.agents.models import bundled_model_dir

    tokenizer = AutoTokenizer.from_pretrained(bundled_model_dir())
    config = tiny_llama_config(len(tokenizer), layers=1, heads=2, kv_heads=1, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    model_dir = tmp_path / "tiny-lm"
    AutoModelForCausalLM.from_config(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return model_dir


def test_eval_a_model_plays_batches_with_progress_and_keeps_what_the_viewer_needs(qa_dir, model_dir, tmp_path,
                                                                                   capsys):
    """A tiny random model, constrained, 5 episodes in batches of 2 (3 rounds), scoring IG with itself: progress on
    stderr as episodes end, every record a valid v1 record (its junk queries find no passages: the bundled model's
    test below checks passages and IG)."""
    from search_env.records import check_record

    out = tmp_path / "traj.jsonl"
    args = ["eval", "--questions", str(qa_dir / "test.jsonl"), "--policy", str(model_dir), "--output", str(out),
            "--limit", "5", "--max-turns", "3", "--max-new-tokens", "4", "--constrained", "--batch-size", "2",
            "--ig", "--threads", "1", "--seed", "3"]
    assert main(args) == 0
    captured = capsys.readouterr()
    progress = [line for line in captured.err.splitlines() if line.startswith("eval tinyset: ")]
    assert [line.split()[2] for line in progress] == ["1/5", "2/5", "3/5", "4/5", "5/5"]
    assert all("EM " in line and "left" in line for line in progress)
    records = read_records(out)
    assert sorted(r["id"] for r in records) == ["q0", "q1", "q2", "q3", "q4"]
    for r in records:
        check_record(r)
        kinds = [t["action_type"] for t in r["turns"]]
        assert kinds[0] == "search" and kinds[-1] == "answer"  # constrained: search first, answer by the last turn
        assert all([p["doc_id"] for p in t["passages"]] == t["doc_ids"] for t in r["turns"] if "passages" in t)
    header = json.loads(out.read_text().splitlines()[0])["settings"]
    assert header["constrained"] is True and header["seed"] == 3 and header["ig"] is True
    # the same run again, one at a time: nothing to redo, and the settings match (batch size is not one of them)
    assert main([*args[:args.index("--batch-size")], "--batch-size", "1", "--ig", "--seed", "3", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "0 episodes run, 5 resumed" in captured.out and "eval tinyset" not in captured.err


@pytest.mark.slow
def test_eval_bundled_model_constrained_at_a_tiny_budget(tmp_path, capsys):
    """The bundled model on the built-in world, 2 episodes in one batch: constrained by default, so every turn is
    well formed (it was invalid turn after turn unconstrained); with --ig each first search's IG is in its record."""
    out = tmp_path / "traj.jsonl"
    assert main(["eval", "--questions", "builtin", "--policy", "bundled", "--output", str(out), "--limit", "2",
                 "--max-turns", "2", "--max-new-tokens", "12", "--threads", "1", "--ig"]) == 0
    records = read_records(out)
    assert len(records) == 2
    assert all([t["action_type"] for t in r["turns"]] == ["search", "answer"] for r in records)
    searches = [r["turns"][0] for r in records]
    assert all(t["query"] and t["passages"] and t["passages"][0]["text"] for t in searches)
    assert all(t["ig"] is not None and len(t["ig_detail"]["logp_random"]) == 3 for t in searches)  # scored by itself
    assert "eval builtin: 2/2 episodes" in capsys.readouterr().err


def test_eval_refuses_a_negative_temperature(qa_dir, tmp_path, capsys):
    args = ["eval", "--questions", str(qa_dir / "test.jsonl"), "--output", str(tmp_path / "o.jsonl")]
    assert main([*args, "--temperature", "-1"]) == 2
    assert "argument --temperature: must be a finite number of at least 0, got -1" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


def test_eval_a_bad_policy_leaves_no_file_and_a_torn_header_starts_over(qa_dir, tmp_path, capsys):
    out = tmp_path / "traj.jsonl"
    args = ["eval", "--questions", str(qa_dir / "test.jsonl"), "--output", str(out), "--limit", "1"]
    assert main(args + ["--policy", str(tmp_path / "no-model")]) == 2
    assert not out.exists()
    out.write_text('{"search_env": "eval", "sett')  # a crash while the header was written
    assert main(args + ["--policy", "oracle"]) == 0
    assert [r["id"] for r in read_records(out)] == ["q0"]


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


def test_a_refused_retriever_url_is_one_line(qa_dir, tmp_path, capsys):
    """Nothing listens at the URL: one `search-env: error:` line naming it, exit 2, for eval and dig alike."""
    url = f"http://127.0.0.1:{free_port()}"
    common = ["--questions", str(qa_dir / "test.jsonl"), "--retriever", url, "--limit", "1"]
    assert main(["eval", *common, "--policy", "oracle", "--output", str(tmp_path / "e.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("search-env: error: retrieval failed") and url in err and err.count("\n") == 1
    assert main(["dig", *common, "--no-progress", "--output", str(tmp_path / "d.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("search-env: error: retrieval failed") and url in err and err.count("\n") == 1


def test_a_directory_given_as_a_file_is_one_line(qa_dir, tmp_path, capsys):
    out = str(tmp_path / "o.jsonl")
    assert main(["eval", "--questions", str(qa_dir), "--policy", "oracle", "--output", out]) == 2
    assert capsys.readouterr().err == f"search-env: error: --questions {qa_dir}: is a directory, expected a QA file " \
        "(JSONL)\n"
    args = ["eval", "--questions", str(qa_dir / "test.jsonl"), "--policy", "oracle"]
    assert main([*args, "--corpus", str(qa_dir), "--output", out]) == 2
    assert capsys.readouterr().err == f"search-env: error: {qa_dir}: is a directory, expected a file\n"
    assert main([*args, "--output", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"search-env: error: {tmp_path}: is a directory, expected a file\n"


@pytest.mark.parametrize("bad", [["--limit", "0"], ["--limit", "-1"], ["--topk", "x"], ["--bogus"]])
def test_bad_options_are_one_line(qa_dir, tmp_path, capsys, bad):
    out = tmp_path / "o.jsonl"
    assert (
        main(["eval", "--questions", str(qa_dir / "test.jsonl"), "--policy", "oracle", "--output", str(out), *bad]) == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err and "--help" in err
    assert not out.exists()  # nothing ran


def test_serve_errors_are_one_line(tmp_path, capsys):
    pytest.importorskip("fastapi", reason="serve needs the `server` extra")
    assert main(["serve", "--port", "x"]) == 2
    assert (
        capsys.readouterr().err
        == "search-env serve: error: argument --port: invalid int value: 'x' (see search-env serve --help)\n"
    )
    assert main(["serve", "--corpus", str(tmp_path / "none.jsonl")]) == 2
    assert capsys.readouterr().err == f"search-env: error: {tmp_path / 'none.jsonl'}: no such file\n"


def test_serve_on_a_busy_port_is_one_line_and_logs_no_serving(caplog, capsys):
    """The port is bound before anything is built or logged: a busy one is one line naming it, exit 2."""
    pytest.importorskip("fastapi", reason="serve needs the `server` extra")
    import logging
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with caplog.at_level(logging.INFO):
            assert main(["serve", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err == f"search-env: error: cannot serve on 127.0.0.1:{port}: the port is in use (pick another with " \
        "--port)\n"
    assert not [r for r in caplog.records if "serving" in r.getMessage()]


def test_index_build_and_info(qa_dir, tmp_path, capsys):
    assert main(["index", "build", "--corpus", str(qa_dir / "corpus.jsonl"), "--output", str(tmp_path / "idx")]) == 0
    captured = capsys.readouterr()
    assert "bm25 index over 39 passages" in captured.out
    assert "Tokenize texts" in captured.err  # the progress bar
    assert any((tmp_path / "idx").iterdir())
    assert main(["index", "build", "--corpus", str(qa_dir / "corpus.jsonl"), "--output", str(tmp_path / "idx")]) == 0
    assert "Tokenize texts" not in capsys.readouterr().err  # the second time it is loaded, not built
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "gymnasium" in out and "cache dir" in out
    # --mmap: the corpus read from its mapped form; the same corpus fingerprint, so the index built above is found
    assert (
        main(["index", "build", "--corpus", str(qa_dir / "corpus.jsonl"), "--output", str(tmp_path / "idx"), "--mmap"])
        == 0
    )
    captured = capsys.readouterr()
    assert "bm25 index over 39 passages" in captured.out and "Tokenize texts" not in captured.err


@pytest.mark.parametrize("command", [[], ["demo"], ["index", "build"], ["eval"], ["info"], ["serve"]])
def test_help_of_every_command(command):
    result = subprocess.run(
        [sys.executable, "-m", "search_env.commands.cli", *command, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout and "Traceback" not in result.stderr


SUBCOMMANDS = [["demo"], ["index"], ["index", "build"], ["serve"], ["eval"], ["dig"], ["info"]]


def help_options(text: str) -> dict[str, str]:
    """option (its first spelling) -> its help text, from a --help's options section (help wrapped onto the next
    lines when the option's own line is full)."""
    options: dict[str, str] = {}
    current = None
    for line in text.split("\noptions:\n", 1)[1].splitlines():
        if line.startswith("  -"):
            spelling, _, rest = line.strip().partition("  ")
            current = spelling.split(",")[0].split()[0]
            options[current] = rest.strip()
        elif current and line.startswith(" " * 8) and line.strip():
            options[current] = (options[current] + " " + line.strip()).strip()
        else:
            current = None
    return options


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help_describes_each_command_and_every_option_with_its_default(command, capsys):
    import argparse

    assert main([*command, "--help"]) == 0
    text = capsys.readouterr().out
    description = text.split("\n\n")[1]
    assert not description.startswith(("options:", "usage:")) and len(description.split()) >= 5, text
    options = help_options(text)
    assert options and all(options.values()), {o: h for o, h in options.items() if not h}
    parser = build_parser()
    for name in command:
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    for action in parser._actions:
        has_default = not any(action.default is none for none in (None, False, argparse.SUPPRESS))
        if action.option_strings and has_default:
            assert "default" in options[action.option_strings[0]], (action.option_strings, text)
    if command == ["serve"]:
        assert options["--port"] == "TCP port to listen on (default: 8000)"


def test_demo_oracle_runs(capsys):
    assert main(["demo", "--policy", "oracle", "--no-ig", "--episodes", "1"]) == 0
    out = capsys.readouterr().out
    assert "Episode 1" in out and "EM 1" in out and "(2 hops)" in out
    assert "The oracle answered 1 of 1 right" in out and "For contrast" not in out  # no oracle after the oracle
    assert main(["demo", "--policy", "oracle", "--no-ig", "--episodes", "1", "--seed", "2"]) == 0
    out = capsys.readouterr().out
    assert "(1 hop)" in out and "hops" not in out


@pytest.mark.parametrize("command", [["-m", "search_env.commands.demo"], ["-m", "search_env.commands.cli", "demo"],
                                     ["-m", "search_env.demo"]])  # the old module path still runs
def test_demo_refuses_zero_episodes_either_way(command):
    result = subprocess.run([sys.executable, *command, "--episodes", "0"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "argument --episodes: must be at least 1, got 0" in result.stderr


def test_demo_model_acts_and_scores_with_one_model(monkeypatch, capsys):
    """The demo's policy model also scores IG: one load, never the default scorer's second copy."""
    from transformers import AutoTokenizer

    from search_env.agents import models as bundled
    from search_env.commands import demo
    from search_env.scoring import transformers_scorer as scorers

    tokenizer = AutoTokenizer.from_pretrained(bundled.bundled_model_dir())
    from transformers.utils import logging

    tiny = tiny_llama(len(tokenizer), layers=1)
    loads = []  # (name, whether transformers' "Loading weights" bar was on)
    monkeypatch.setattr(bundled, "load_causal_lm",
                        lambda name, **kw: loads.append((name, logging.is_progress_bar_enabled())) or (tiny, tokenizer))
    monkeypatch.setattr(scorers, "default_scorer", lambda *a: pytest.fail("the demo loaded a second model"))
    demo.run_demo("model", episodes=2, seed=0)
    out = capsys.readouterr().out
    assert loads == [("bundled", False)] and logging.is_progress_bar_enabled()  # silenced for the load only
    assert "Episode 1" in out and "Episode 2" in out and "IG " in out and "total reward" in out
    # what the episodes show, then the oracle on the same questions
    summary, contrast = out.split("total reward")[1].split("For contrast, the oracle")
    assert "The model answered 0 of 2 right" in summary and "rarely answers right" in summary
    ids = [line.split(": ")[1].split(" (")[0] for line in out.splitlines() if line.startswith("=== Episode")]
    lines = contrast.strip().splitlines()[1:]
    assert [line.split(":")[0].strip() for line in lines] == ids
    assert all("EM 1" in line and "(IG " in line for line in lines)


@pytest.mark.slow
def test_index_build_dense(qa_dir, tmp_path, capsys):
    from search_env.retrieval.dense import DenseRetriever

    out = tmp_path / "dense"
    assert (
        main(["index", "build", "--corpus", str(qa_dir / "corpus.jsonl"), "--retriever", "dense", "--output", str(out)])
        == 0
    )
    captured = capsys.readouterr()
    assert "dense index over 39 passages" in captured.out and "encoding 39 passages" in captured.err
    from search_env.data import load_corpus

    hits = DenseRetriever(load_corpus(qa_dir / "corpus.jsonl"), cache=out).search("Karvesh river city", 1)
    assert hits[0].doc_id == "c0"


def test_model_errors_are_one_line(qa_dir, tmp_path, capsys):
    args = ["eval", "--questions", str(qa_dir / "test.jsonl"), "--output", str(tmp_path / "o.jsonl")]
    assert main(args + ["--policy", str(tmp_path / "no-model")]) == 2
    err = capsys.readouterr().err
    assert err == f"search-env: error: --policy {tmp_path / 'no-model'}: no such model folder\n"
    assert main(["index", "build", "--corpus", str(tmp_path / "none.jsonl")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_an_unknown_model_name_is_one_line_naming_the_option(qa_dir, tmp_path, capsys, monkeypatch):
    """Offline, a hub name not in the cache fails at once (no 49 s of retries), naming the option and the model."""
    import time

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    common = ["--questions", str(qa_dir / "test.jsonl"), "--limit", "1"]
    assert main(["eval", *common, "--policy", "no/such-model", "--output", str(tmp_path / "e.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("search-env: error: --policy no/such-model: ") and err.count("\n") == 1
    assert main(["dig", *common, "--scorer", "no/such-model", "--output", str(tmp_path / "d.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("search-env: error: --scorer no/such-model: ") and err.count("\n") == 1
    assert time.monotonic() - start < 10
    assert not (tmp_path / "e.jsonl").exists() and not (tmp_path / "d.jsonl").exists()


@pytest.mark.slow
def test_eval_any_hugging_face_model(qa_dir, model_dir, tmp_path, capsys):
    """`--policy DIR`: a causal LM saved with save_pretrained (a tiny random one, with the bundled tokenizer)."""
    out = tmp_path / "traj.jsonl"
    assert main(["eval", "--questions", str(qa_dir / "test.jsonl"), "--policy", str(model_dir), "--output", str(out),
                 "--limit", "2", "--max-turns", "2", "--max-new-tokens", "8"]) == 0
    records = read_records(out)
    assert [r["id"] for r in records] == ["q0", "q1"]
    # the random model's own words (8 tokens, no tag), not the oracle's searches
    assert all(len(r["turns"]) == 2 and r["em"] == 0.0 for r in records)
    assert all(t["text"] and t["action_type"] == "invalid" for r in records for t in r["turns"])
    assert "tinyset" in capsys.readouterr().out


@pytest.mark.slow
def test_serve_then_eval_over_http(qa_dir, tmp_path, capsys):
    """`search-env serve` on the corpus, then `eval --retriever URL` on a QA file with no corpus beside it."""
    pytest.importorskip("fastapi", reason="serve needs the `server` extra")
    import requests

    questions = tmp_path / "remote" / "test.jsonl"
    questions.parent.mkdir()
    questions.write_text((qa_dir / "test.jsonl").read_text())
    url = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SEARCH_ENV_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "search_env.commands.cli", "serve", "--corpus", str(qa_dir / "corpus.jsonl"),
           "--port", url.rsplit(":", 1)[1], "--topk", "2", "--log-level", "warning"]
    server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = tmp_path / "traj.jsonl"
    try:
        wait_healthy(server, url)
        hits = requests.post(f"{url}/retrieve", json={"query": "Karvesh"}).json()["result"][0]
        assert len(hits) == 2 and hits[0]["id"] in {"c0", "k0"}  # --topk is the default k; no scores by default
        assert main(["eval", "--questions", str(questions), "--retriever", url, "--policy", "oracle",
                     "--output", str(out)]) == 0
    finally:
        server.terminate()
        server.wait(timeout=10)
    records = read_records(out)
    assert len(records) == 6 and all(r["em"] == 1.0 for r in records)
    assert all(r["turns"][0]["doc_ids"] for r in records)  # passages came from the server
    assert "remote" in capsys.readouterr().out
