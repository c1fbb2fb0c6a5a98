"""The resumable JSONL output of eval and dig: a settings header, units appended and resumed, torn tails cut, and
files made otherwise (other settings, another command, no header, a bad line) refused and left unchanged."""

import json

import pytest

from search_env.data.jsonl import ResumableJSONL, ResumeRefused, settings_diff

SETTINGS = {"policy": "oracle", "topk": 3, "ig": {"n_random": 3, "baseline": "random"}}


def write(path, units, settings=SETTINGS, kind="eval", complete=None):
    with ResumableJSONL(path, kind, settings, complete) as log:
        for unit in units:
            log.append(unit)
    return path


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_units_resume_and_a_torn_or_partial_tail_is_cut(tmp_path):
    pairs = lambda rows: len(rows) == 2  # noqa: E731  (units of two rows, as dig writes a question's passages)
    path = write(tmp_path / "out.jsonl", [[{"q": 1}, {"q": 1}], [{"q": 2}, {"q": 2}]], complete=pairs)
    assert lines(path)[0] == {"search_env": "eval", "settings": SETTINGS}
    complete = path.read_bytes()
    with open(path, "a") as f:
        f.write('{"q": 3}\n{"q": 3, "ha')  # one row of a third unit, then a torn line
    log = ResumableJSONL(path, "eval", SETTINGS, pairs)
    assert log.units == [[{"q": 1}, {"q": 1}], [{"q": 2}, {"q": 2}]] and path.read_bytes() == complete
    write(path, [[{"q": 3}, {"q": 3}]], complete=pairs)
    assert [r["q"] for r in lines(path)[1:]] == [1, 1, 2, 2, 3, 3]


def test_concatenated_files_of_the_same_settings_resume_others_are_refused(tmp_path):
    a, b = write(tmp_path / "a.jsonl", [[{"i": 0}]]), write(tmp_path / "b.jsonl", [[{"i": 1}]])
    both = tmp_path / "both.jsonl"
    both.write_bytes(a.read_bytes() + b.read_bytes())
    assert ResumableJSONL(both, "eval", SETTINGS).units == [[{"i": 0}], [{"i": 1}]]
    other = write(tmp_path / "c.jsonl", [[{"i": 2}]], settings={**SETTINGS, "topk": 5})
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_bytes(a.read_bytes() + other.read_bytes())
    with pytest.raises(ResumeRefused, match=r"other settings, so it is not resumed: topk: 5 in the file, 3 now\."):
        ResumableJSONL(mixed, "eval", SETTINGS)


def test_refusals_name_what_differs_and_change_nothing(tmp_path):
    path = write(tmp_path / "out.jsonl", [[{"i": 0}]])
    before = path.read_bytes()
    changed = {**SETTINGS, "policy": "bundled", "ig": {"n_random": 2, "baseline": "random"}, "seed": 1}
    with pytest.raises(ResumeRefused) as error:
        ResumableJSONL(path, "eval", changed)
    assert str(error.value) == (f'{path} was made with other settings, so it is not resumed: ig.n_random: 3 in the '
                                f'file, 2 now; policy: "oracle" in the file, "bundled" now; seed: (absent) in the '
                                f"file, 1 now. Rerun with the file's settings, or write to another --output, or delete "
                                f"the file to start over")
    with pytest.raises(ResumeRefused, match="holds search-env eval output, not dig"):
        ResumableJSONL(path, "dig", SETTINGS)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(before + b"not json\n" + before.splitlines(keepends=True)[1])
    with pytest.raises(ResumeRefused, match=r"bad.jsonl:3: not a JSON line"):
        ResumableJSONL(bad, "eval", SETTINGS)
    notes = tmp_path / "notes.txt"  # not ours, one line without a newline: refused, not taken for a torn line
    notes.write_text("my notes")
    with pytest.raises(ResumeRefused, match="has no settings header"):
        ResumableJSONL(notes, "eval", SETTINGS)
    assert path.read_bytes() == before and notes.read_text() == "my notes"


def test_a_file_without_records_starts_over(tmp_path):
    path = write(tmp_path / "out.jsonl", [], settings={"policy": "typo"})
    write(path, [[{"i": 0}]])
    assert lines(path) == [{"search_env": "eval", "settings": SETTINGS}, {"i": 0}]


def test_settings_diff():
    assert settings_diff({"a": 1, "b": {"c": 2}}, {"a": 1, "b": {"c": 2}}) == []
    assert settings_diff({"a": "x" * 100}, {"a": "y"}) == [f'a: "{"x" * 76}... in the file, "y" now']
