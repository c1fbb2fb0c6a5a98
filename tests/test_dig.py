"""DIG labels: rows per (question, passage) equal to the env's doc_gains, the ranking AUC by hand, resuming after
a crash mid-write without duplicates, and ``search-env dig`` end to end."""

import json

import pytest

from search_env.commands.cli import main
from search_env.commands.dig import dig_rows, finished_questions, label, ranking_auc
from search_env.commands.jsonl import ResumeRefused
from search_env.data.synthetic import build_world
from search_env.env import SearchQAEnv
from search_env.info_gain import IGConfig


@pytest.fixture(scope="module")
def world():
    return build_world()


def make_env(world, scorer):
    return SearchQAEnv(questions=world.questions, corpus=world.corpus, topk=4, max_turns=2, scorer=scorer,
                       ig=IGConfig(per_document=True))


def test_rows_are_the_envs_doc_gains(world, fake_scorer):
    item = world.questions[5]
    rows = dig_rows(make_env(world, fake_scorer), item, seed=3)
    env = make_env(world, fake_scorer)
    env.reset(seed=3, options={"question_id": item.id})
    info = env.step(f"<search> {item.question} </search>")[4]
    assert [r["doc_id"] for r in rows] == info["doc_ids"] and [r["dig"] for r in rows] == info["doc_gains"]
    assert [r["rank"] for r in rows] == list(range(len(rows))) and all(r["n_passages"] == len(rows) for r in rows)
    assert [r["gold"] for r in rows] == [d in item.supporting_doc_ids for d in info["doc_ids"]]
    with pytest.raises(ValueError, match="per_document"):
        dig_rows(SearchQAEnv(questions=world.questions, corpus=world.corpus, scorer=fake_scorer), item)


def test_ranking_auc_by_hand():
    rows = [
        {"question_id": "a", "gold": True, "dig": 0.5, "bm25": 1.0},
        {"question_id": "a", "gold": False, "dig": 0.1, "bm25": 2.0},
        {"question_id": "a", "gold": False, "dig": 0.5, "bm25": 3.0},
        {"question_id": "b", "gold": True, "dig": -1.0, "bm25": 5.0},
        {"question_id": "b", "gold": False, "dig": 0.0, "bm25": 4.0},
        {"question_id": "c", "gold": True, "dig": 1.0, "bm25": 1.0},  # no non-gold passage: no pair
        {"question_id": "d", "gold": None, "dig": 1.0, "bm25": 1.0},
    ]
    assert ranking_auc(rows, "dig") == (pytest.approx((1 + 0.5 + 0) / 3), 3)
    assert ranking_auc(rows, "bm25") == (pytest.approx(1 / 3), 3)
    auc, pairs = ranking_auc([], "dig")
    assert pairs == 0 and auc != auc


def test_resume_after_a_crash_mid_write(world, fake_scorer, tmp_path):
    out = tmp_path / "dig.jsonl"
    items = [q for q in world.questions if q.metadata["hops"] == 2][:5]
    env = make_env(world, fake_scorer)
    full, _ = label(items, env, out, progress=False)
    lines = out.read_bytes().splitlines(keepends=True)
    n_last = len(full[items[-1].id])
    torn = b"".join(lines[: len(lines) - n_last + 1]) + lines[-1][:7]  # one row of the last question, a torn line
    out.write_bytes(torn)
    assert set(finished_questions(out)) == {q.id for q in items[:-1]} and out.read_bytes() == torn  # only read
    again, resumed = label(items, env, out, progress=False)
    assert resumed == 4 and again == full
    header, *rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert header == {"search_env": "dig", "settings": json.loads(lines[0])["settings"]}
    assert len(rows) == len(lines) - 1 and len({(r["question_id"], r["doc_id"]) for r in rows}) == len(rows)


def test_resume_only_with_the_same_settings(world, fake_scorer, tmp_path):
    """Another seed, topk, IG setting or caller's setting is refused by name; the same ones resume, and only the
    questions asked for are returned."""
    out = tmp_path / "dig.jsonl"
    items = world.questions[:4]
    env = make_env(world, fake_scorer)
    full, _ = label(items, env, out, seed=1, settings={"scorer": "fake"}, progress=False)
    before = out.read_bytes()
    with pytest.raises(ResumeRefused, match=r"other settings, so it is not resumed: seed: 1 in the file, 2 now\. "):
        label(items, env, out, seed=2, settings={"scorer": "fake"}, progress=False)
    with pytest.raises(ResumeRefused, match=r'resumed: scorer: "fake" in the file, "bundled" now\. '):
        label(items, env, out, seed=1, settings={"scorer": "bundled"}, progress=False)
    other = SearchQAEnv(questions=world.questions, corpus=world.corpus, topk=3, max_turns=2, scorer=fake_scorer,
                        ig=IGConfig(per_document=True, n_random=2))
    with pytest.raises(ResumeRefused, match=r"resumed: ig\.n_random: 3 in the file, 2 now; topk: 4 in the file, 3 now"):
        label(items, other, out, seed=1, settings={"scorer": "fake"}, progress=False)
    assert out.read_bytes() == before
    some, resumed = label(items[:2], env, out, seed=1, settings={"scorer": "fake"}, progress=False)
    assert resumed == 2 and some == {q.id: full[q.id] for q in items[:2]} and out.read_bytes() == before
    old = tmp_path / "old.jsonl"  # an older search-env's rows: no settings line
    old.write_bytes(b"".join(before.splitlines(keepends=True)[1:]))
    with pytest.raises(ResumeRefused, match="has no settings header"):
        label(items, env, old, seed=1, settings={"scorer": "fake"}, progress=False)


@pytest.mark.slow
def test_cli_end_to_end_with_the_bundled_scorer(tmp_path, capsys):
    out = tmp_path / "dig.jsonl"
    assert main(["dig", "--questions", "builtin", "--corpus", "builtin", "--output", str(out), "--limit", "2",
                 "--topk", "2", "--no-progress"]) == 0
    text = capsys.readouterr().out
    header, *rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert header["search_env"] == "dig" and header["settings"]["scorer"] == "bundled"
    assert len(rows) == 4 and all(isinstance(r["dig"], float) for r in rows) and "2 questions, 4" in text
    again = ["dig", "--questions", "builtin", "--corpus", "builtin", "--output", str(out), "--topk", "2",
             "--no-progress"]
    assert main(again + ["--limit", "1"]) == 0
    assert "1 questions, 2 (question, passage) rows" in capsys.readouterr().out  # --limit 1: one question reported
    assert main(again + ["--limit", "2", "--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert err == (f"search-env: error: {out} was made with other settings, so it is not resumed: seed: 0 in the "
                   "file, 1 now. Rerun with the file's settings, or write to another --output, or delete the file to "
                   "start over\n")
    assert len(out.read_text().splitlines()) == 5
