"""The versioned episode record: what play_episode returns, its validation, and reading files of records."""

from __future__ import annotations

import json

import pytest

from search_env.agents.policy import OraclePolicy, play_episode
from search_env.data import load_questions
from search_env.data.errors import DataFileError
from search_env.env import SearchQAEnv
from search_env.info_gain import IGConfig
from search_env.records import SCHEMA_VERSION, check_record, read_records, record_problem, write_records
from tests.standins import FakeScorer


@pytest.fixture(scope="module")
def builtin_records():
    """Two oracle episodes on the built-in world, IG scored (random draws, per-document gains, search credit)."""
    questions = load_questions(None)
    env = SearchQAEnv(scorer=FakeScorer(), topk=2, max_turns=4,
                      ig=IGConfig(per_document=True, credit="leave-one-out", n_random=3))
    oracle = OraclePolicy(questions, think=False)
    two_hop = [q for q in questions if q.metadata.get("hops") == 2][:2]
    return [play_episode(env, oracle, options={"question_id": q.id}) for q in two_hop], two_hop


def test_play_episode_returns_a_valid_v1_record_with_ig_passages_and_credit(builtin_records):
    records, items = builtin_records
    for record, item in zip(records, items):
        assert check_record(record) is record
        assert record["schema_version"] == SCHEMA_VERSION
        assert record["id"] == item.id and record["hops"] == 2 and record["question_type"] == item.metadata["type"]
        assert record["dialect"] == "search-r1" and record["em"] == 1.0
        searches = [t for t in record["turns"] if t["action_type"] == "search"]
        assert len(searches) == record["n_searches"] == 2
        for turn in searches:
            assert [p["doc_id"] for p in turn["passages"]] == turn["doc_ids"] and len(turn["passages"]) == 2
            assert all(p["title"] and p["text"] for p in turn["passages"])
            detail = turn["ig_detail"]
            assert len(detail["logp_random"]) == 3
            assert turn["ig"] == pytest.approx(detail["logp_real"] - sum(detail["logp_random"]) / 3)
            assert len(turn["doc_gains"]) == 2
        assert [t["credit"] for t in searches] == record["search_credit"]
        assert record["return"] == pytest.approx(sum(sum(t["reward_components"].values()) for t in record["turns"]))
        json.dumps(record)  # JSON-ready


def test_invalid_turns_keep_their_reason(tiny_questions, tiny_corpus):
    class Babbler:
        def act(self, prompt, continuation="", *, force=None):
            return "I am not sure."

    env = SearchQAEnv(questions=tiny_questions, corpus=tiny_corpus, ig=False, max_turns=2)
    record = check_record(play_episode(env, Babbler(), options={"question_id": "q0"}))
    assert [t["action_type"] for t in record["turns"]] == ["invalid", "invalid"]
    assert all(isinstance(t["invalid_reason"], str) and t["invalid_reason"] for t in record["turns"])
    assert record["prediction"] is None and record["hops"] is None


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda r: r.pop("schema_version"), "no schema_version"),
        (lambda r: r.update(schema_version=2), "schema_version 2"),
        (lambda r: r.update(em="yes"), "em: expected a finite number"),
        (lambda r: r["turns"][0].update(action_type="think"), "turns[0].action_type"),
        (lambda r: r["turns"][0].pop("passages"), "turns[0].passages: missing"),
        (lambda r: r["turns"][0]["passages"][1].pop("title"), "turns[0].passages[1].title: missing"),
        (lambda r: r["turns"][0]["ig_detail"].update(logp_random=[1.0, "x"]), "turns[0].ig_detail.logp_random"),
        (lambda r: r.update(golden_answers=[1]), "golden_answers"),
    ],
)
def test_a_bad_record_is_named_by_its_field(builtin_records, change, named):
    record = json.loads(json.dumps(builtin_records[0][0]))
    assert record_problem(record) is None
    change(record)
    assert named in record_problem(record)


def test_read_records_jsonl_with_eval_headers_and_json_lists(builtin_records, tmp_path):
    records = builtin_records[0]
    jsonl = tmp_path / "run.jsonl"
    header = {"search_env": "eval", "settings": {"policy": "oracle"}}
    jsonl.write_text("\n".join(json.dumps(x) for x in [header, *records]) + "\n\n")
    assert read_records(jsonl) == records
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps(records, indent=2))
    assert read_records(listed) == records
    written = tmp_path / "out" / "w.jsonl"
    write_records(written, records)
    write_records(written, records[:1], append=True)
    assert read_records(written) == [*records, records[0]]


def test_a_malformed_file_names_the_line(builtin_records, tmp_path):
    good = json.dumps(builtin_records[0][0])
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text(good + "\n" + good[:-5] + "\n")
    with pytest.raises(DataFileError, match=r"bad.jsonl:2: invalid JSON"):
        read_records(bad_json)
    bad_field = tmp_path / "field.jsonl"
    broken = dict(builtin_records[0][0], turns="none")
    bad_field.write_text(good + "\n\n" + json.dumps(broken) + "\n")
    with pytest.raises(DataFileError, match=r"field.jsonl:3: turns: expected a list"):
        read_records(bad_field)
    bad_list = tmp_path / "list.json"
    bad_list.write_text("[\n" + good + ",\n" + json.dumps({"schema_version": 1}) + "\n]")
    with pytest.raises(DataFileError, match=r"list.json:3: record 1: id: missing"):
        read_records(bad_list)
    with pytest.raises(DataFileError, match="is a directory"):
        read_records(tmp_path)
    with pytest.raises(DataFileError, match="records\\[0\\]"):
        write_records(tmp_path / "never.jsonl", [broken])
    assert not (tmp_path / "never.jsonl").exists()
