import json

import pytest

from search_env.data import Corpus, DataFileError, Passage, load_corpus, load_questions
from search_env.data.corpus import split_contents
from tests.shared_data import shared_data


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_corpus_round_trip(tmp_path):
    corpus = Corpus([Passage("a", "Karvesh", "A city."), Passage("b", 'Quote "me"', "Text\nwith newline")])
    corpus.to_jsonl(tmp_path / "c.jsonl")
    loaded = load_corpus(tmp_path / "c.jsonl")
    assert list(loaded) == list(corpus)
    assert loaded.fingerprint == corpus.fingerprint
    assert Corpus([Passage("a", "Karvesh", "A city!")]).fingerprint != Corpus([corpus[0]]).fingerprint


def test_split_contents():
    assert split_contents('"Title"\nBody text') == ("Title", "Body text")
    assert split_contents("no title line") == ("", "no title line")


@pytest.mark.parametrize(
    "lines, line_no, reason",
    [
        (['{"id": "1", "contents": "\\"T\\"\\nx"}', "{not json"], 2, "invalid JSON"),
        (['{"contents": "x"}'], 1, "missing 'id'"),
        (['{"id": "1"}'], 1, "missing 'contents'"),
        (['{"id": "1", "contents": 5}'], 1, "must be a string"),
        (
            ['{"id": "1", "contents": "\\"T\\"\\na"}', "", '{"id": "1", "contents": "\\"U\\"\\nb"}'],
            3,
            "duplicate id '1'",
        ),
        (["[1, 2]"], 1, "expected a JSON object"),
    ],
)
def test_bad_corpus_files_name_file_line_and_reason(tmp_path, lines, line_no, reason):
    path = write_lines(tmp_path / "corpus.jsonl", lines)
    with pytest.raises(DataFileError) as err:
        load_corpus(path)
    assert err.value.line == line_no
    assert reason in str(err.value)
    assert str(err.value).startswith(f"{path}:{line_no}: ")


@pytest.mark.parametrize("bad, message", [
    ('{"id": "1", "contents": "no end', "invalid JSON (Unterminated string starting at column 25)"),
    ('{"id": "1", "contents": "a\tb"}', "invalid JSON (Invalid control character at column 27)"),
    ("{not json", "invalid JSON (Expecting property name enclosed in double quotes at column 2)"),
])
def test_bad_json_says_where_in_plain_words(tmp_path, bad, message):
    """One "at" before the column, whatever json's own message ends with (it was "starting at at column 25")."""
    path = tmp_path / "corpus.jsonl"
    path.write_text(bad, encoding="utf-8")  # no newline: a string left open at the end of the file
    for load in (load_corpus, load_questions):
        with pytest.raises(DataFileError) as err:
            load(path)
        assert str(err.value) == f"{path}:1: {message}"


@pytest.mark.parametrize(
    "record, reason",
    [
        ({"id": "1", "golden_answers": ["x"]}, "missing or empty 'question'"),
        ({"id": "1", "question": "  ", "golden_answers": ["x"]}, "missing or empty 'question'"),
        ({"id": "1", "question": "Q?"}, "missing or empty 'golden_answers'"),
        ({"id": "1", "question": "Q?", "golden_answers": []}, "missing or empty 'golden_answers'"),
        ({"id": "1", "question": "Q?", "golden_answers": ["", " "]}, "only empty strings"),
        ({"id": "1", "question": "Q?", "golden_answers": ["x"], "metadata": [1]}, "'metadata' must be an object"),
    ],
)
def test_bad_question_records(tmp_path, record, reason):
    path = write_lines(
        tmp_path / "test.jsonl",
        [json.dumps({"id": "0", "question": "ok?", "golden_answers": ["y"]}), json.dumps(record)],
    )
    with pytest.raises(DataFileError, match=f"test.jsonl:2: .*{reason}"):
        load_questions(path)


def test_duplicate_question_ids_and_missing_file(tmp_path):
    row = json.dumps({"id": "7", "question": "Q?", "golden_answers": ["a"]})
    with pytest.raises(DataFileError, match=r":2: duplicate id '7' \(first on line 1\)"):
        load_questions(write_lines(tmp_path / "q.jsonl", [row, row]))
    with pytest.raises(DataFileError, match="no such file"):
        load_questions(tmp_path / "missing.jsonl")
    (tmp_path / "latin1.jsonl").write_bytes(b'{"id": "1", "question": "caf\xe9?", "golden_answers": ["x"]}\n')
    with pytest.raises(DataFileError, match="latin1.jsonl:1: not UTF-8"):
        load_questions(tmp_path / "latin1.jsonl")
    with pytest.raises(DataFileError, match="no questions"):
        load_questions(write_lines(tmp_path / "empty.jsonl", ["", "  "]))


def test_questions_from_dicts():
    qs = load_questions(
        [{"question": "Q1?", "golden_answers": "A"}, {"id": 5, "question": "Q2?", "answer": ["B", "b2"]}]
    )
    assert [q.id for q in qs] == ["q0", "5"]
    assert qs.get("5").golden_answers == ("B", "b2")
    assert qs[0].golden_answers == ("A",)


def test_real_multihop_set_loads():
    folder = shared_data("hotpotqa_train_hipporag100")
    corpus, questions = load_corpus(folder / "corpus.jsonl"), load_questions(folder / "test.jsonl")
    assert len(corpus) == 994 and len(questions) == 100
    for item in questions:
        assert item.supporting_doc_ids and all(d in corpus for d in item.supporting_doc_ids)


def test_hugging_face_loader_takes_data_files(tmp_path):
    """``data_files=`` goes to ``datasets.load_dataset`` with the builder named first (JSON and CSV files here)."""
    pytest.importorskip("datasets")
    from search_env.data import load_hf_questions

    rows = [{"id": "a", "question": "Q1?", "golden_answers": ["x"]},
            {"id": "b", "question": "Q2?", "golden_answers": ["y"]}]
    jsonl = write_lines(tmp_path / "qa.jsonl", [json.dumps(r) for r in rows])
    loaded = load_hf_questions("json", data_files=str(jsonl))
    assert [(q.id, q.question, q.golden_answers) for q in loaded] == [("a", "Q1?", ("x",)), ("b", "Q2?", ("y",))]
    csv = write_lines(tmp_path / "qa.csv", ["id,question,answer", "a,Q1?,x", "b,Q2?,y"])
    from_csv = load_hf_questions("csv", data_files={"test": str(csv)}, answers_key="answer", limit=1)
    assert [(q.id, q.golden_answers) for q in from_csv] == [("a", ("x",))]
    with pytest.raises(DataFileError, match="no split 'dev'"):
        load_hf_questions("csv", data_files={"test": str(csv), "train": str(csv)}, split="dev")


def test_hugging_face_loader_reads_local_files_and_saved_datasets(tmp_path):
    datasets = pytest.importorskip("datasets")
    from search_env.data import load_hf_questions

    rows = [
        {"id": "a", "question": "Q1?", "golden_answers": ["x"]},
        {"id": "b", "question": "Q2?", "golden_answers": ["y", "z"]},
    ]
    path = write_lines(tmp_path / "qa.jsonl", [json.dumps(r) for r in rows])
    from_file = load_hf_questions(str(path))
    assert [(q.id, q.golden_answers) for q in from_file] == [("a", ("x",)), ("b", ("y", "z"))]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    assert [q.id for q in load_hf_questions(str(tmp_path / "saved"), limit=1)] == ["a"]
    datasets.Dataset.from_list([{"q": "Q?", "ans": []}]).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(DataFileError, match=":1: missing or empty 'golden_answers'"):
        load_hf_questions(str(tmp_path / "bad"), question_key="q", answers_key="ans")
