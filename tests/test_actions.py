import pytest

from search_env.actions import Answer, Invalid, Search, clean_content, parse_action
from search_env.dialects import DIALECTS, get_dialect
from search_env.retrieval.base import Hit


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<search>capital of Karvesh</search>", Search("capital of Karvesh", "<search>capital of Karvesh</search>")),
        (
            "<think>I need facts</think>\n<search> who founded X </search>",
            Search("who founded X", "<think>I need facts</think>\n<search> who founded X </search>"),
        ),
        ("<answer> Lisbon </answer>", Answer("Lisbon", "<answer> Lisbon </answer>")),
        ("<search>q1</search> then <search>q2</search>", Search("q1", "<search>q1</search>")),  # first wins
        ("<answer>a</answer><search>q</search>", Answer("a", "<answer>a</answer>")),
        ("<search>q</search><information>made up</information>", Search("q", "<search>q</search>")),
        ("I will <answer> later, <search>q</search>", Search("q", "I will <answer> later, <search>q</search>")),
        (
            "<think><search>x</search></think><answer>y</answer>",
            Answer("y", "<think><search>x</search></think><answer>y</answer>"),
        ),
        (
            "<search>a\x00b\x1f\x7fc\ud800d\n\te</search>",
            Search("a b c d e", "<search>a\x00b\x1f\x7fc\ud800d\n\te</search>"),
        ),
        ("<search>  ünïcödé 中文  </search>", Search("ünïcödé 中文", "<search>  ünïcödé 中文  </search>")),
    ],
)
def test_valid_actions(text, expected):
    assert parse_action(text) == expected


INVALID_ACTIONS = [
        ("", "no_tag"),
        ("just words", "no_tag"),
        ("<Search>q</Search>", "no_tag"),
        ("<search>q", "unclosed_tag"),
        ("<answer>q</search>", "unclosed_tag"),
        ("<search>   </search>", "empty"),
        ("<answer>\x00\x01</answer>", "empty"),
        ("<think><search>q</search></think>", "in_think"),
        ("<think>still thinking <search>q</search>", "in_think"),
        ("<search>a <search>b</search>", "nested_tags"),
        ("<answer><search>x</search></answer>", "nested_tags"),
        ("<search>a <think> b</search>", "nested_tags"),
        ("<search>" + "x" * 3000 + "</search>", "content_too_long"),
        ("<search>" + "x" * 100_000 + "</search>", "content_too_long"),
        (None, "bad_type"),
        (42, "bad_type"),
        ({"kind": "jump", "text": "x"}, "bad_type"),
        ({"kind": "search"}, "bad_type"),
        ({"kind": "answer", "text": "  "}, "empty"),
]


@pytest.mark.parametrize("action, reason", INVALID_ACTIONS)
def test_invalid_actions(action, reason):
    parsed = parse_action(action)
    assert isinstance(parsed, Invalid)
    assert parsed.reason == reason
    assert parsed.message


def test_dict_actions_render_as_tags():
    assert parse_action({"kind": "search", "text": "who"}) == Search("who", "<search> who </search>")
    assert parse_action({"kind": "answer", "text": "Y"}) == Answer("Y", "<answer> Y </answer>")


def test_one_megabyte_turns():
    limit = 1 << 20
    body = "<search>needle</search>"
    at_limit = "x" * (limit - len(body)) + body
    assert parse_action(at_limit) == Search("needle", at_limit)
    over = parse_action("x" * (limit + 1))
    assert isinstance(over, Invalid) and over.reason == "action_too_long"
    assert len(over.text) < 100  # the transcript gets a note, not a megabyte
    soup = "<search><think></search><answer>" * (limit // 32)
    assert isinstance(parse_action(soup), Invalid)


def test_clean_content():
    assert clean_content(" a\r\n\x0b b \u2028 ") == "a b"


def test_dialects_format_passages():
    hits = [Hit("7", "Karvesh", "A city.", 2.0), Hit("9", "Osmund", "A person.", 1.0)]
    r1, ar = get_dialect("search-r1"), get_dialect("autorefine")
    assert (
        r1.observation(hits)
        == "\n\n<information>Doc 1(Title: Karvesh) A city.\nDoc 2(Title: Osmund) A person.\n</information>\n\n"
    )
    assert ar.documents_block(hits).startswith("<documents>Doc 1(Title: Karvesh)")
    assert "<refine>" in ar.prompt("q?", 3) and "<refine>" not in r1.prompt("q?", 3)
    assert r1.prompt("Who is X?", 5).endswith("Question: Who is X?\n") and "5 best" in r1.prompt("Who is X?", 5)
    assert "No passage" in r1.documents_block([])
    with pytest.raises(ValueError, match="search-r1"):
        get_dialect("react")
    assert set(DIALECTS) == {"search-r1", "autorefine", "plan"}
    assert "<plan>" in get_dialect("plan").prompt("q?", 3) and "<plan>" in get_dialect("plan").worked_example()
    assert "<plan>" not in r1.worked_example()
