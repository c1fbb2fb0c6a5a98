"""search-env view: the page opened in headless Chromium (Debian's package, driven by Playwright), as a person
sees it, for eval output, a training run's logged episodes and a hand-written record list; and its errors.

Outside CI a missing Chromium or Playwright skips the browser tests with the reason; in CI (``CI`` set) it fails them.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from search_env.commands import cli
from search_env.viewer import load_run, render_html
from tests.test_grpo_example import run_example

CHROMIUM = os.environ.get("SEARCH_ENV_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def _missing(reason: str):
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[dev]')")
    if not os.path.exists(CHROMIUM):
        _missing(f"no Chromium at {CHROMIUM} (apt-get install -y chromium, as root; or set SEARCH_ENV_CHROMIUM)")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        chromium.close()


class Page:
    """A viewer page opened in the browser, with every console error and uncaught exception it produced."""

    def __init__(self, browser, path):
        self.page = browser.new_page(viewport={"width": 1400, "height": 900})
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(path.as_uri())
        self.page.wait_for_selector("body[data-ready='1']", timeout=10_000)

    def count(self) -> str:
        return self.page.text_content("#count")

    def rows(self) -> list[str]:
        return self.page.locator("#list-inner .row").all_inner_texts()

    def ids(self) -> list[str]:
        return [q.split(" · ")[0] for q in self.page.locator("#list-inner .row .q").all_inner_texts()]

    def plotted(self, plot: str) -> int:
        """Marks drawn in the plot (dots, bars, points): its ``data-points``, checked against the SVG itself."""
        svg = self.page.locator(f"#{plot}")
        marks = svg.locator("circle, rect").count()
        points = int(svg.get_attribute("data-points") or 0)
        assert marks >= points, (plot, marks, points)
        return points

    def choose(self, select: str, value: str) -> None:
        self.page.select_option(f"#{select}", value)

    def open_first_passage(self) -> str:
        passage = self.page.locator("details.passage").first
        text = passage.locator(".text")
        assert passage.get_attribute("open") is None and not text.is_visible()  # folded
        passage.locator("summary").click()
        assert passage.get_attribute("open") is not None and text.is_visible()
        return text.inner_text()


def view(tmp_path, run, name="report.html"):
    out = tmp_path / name
    assert cli.main(["view", str(run), "-o", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def eval_output(tmp_path_factory):
    """``search-env eval`` of the oracle on 12 built-in questions."""
    out = tmp_path_factory.mktemp("eval") / "oracle.jsonl"
    assert cli.main(["eval", "--questions", "builtin", "--policy", "oracle", "--limit", "12", "--output",
                     str(out)]) == 0
    return out


def test_eval_output_in_the_browser(browser, eval_output, tmp_path):
    page = Page(browser, view(tmp_path, eval_output))
    assert page.count() == "12 episodes"
    rows = page.rows()
    assert len(rows) == 12 and all("world0-" in r for r in rows)
    assert page.plotted("plot-searches") >= 1
    text = page.open_first_passage()
    assert len(text) > 20
    # the oracle answers every question right: "wrong" leaves none, "correct" all
    page.choose("f-outcome", "wrong")
    assert page.count() == "0 of 12 episodes" and page.rows() == []
    assert "No episode matches" in page.page.text_content("#detail")
    page.choose("f-outcome", "correct")
    assert page.count() == "12 episodes"
    # a hops filter keeps only the episodes of that many hops
    hops = {r["hops"] for r in load_run(eval_output).records}
    assert len(hops) > 1
    one = min(hops)
    page.choose("f-hops", str(one))
    expected = sum(r["hops"] == one for r in load_run(eval_output).records)
    assert page.count() == f"{expected} of 12 episodes" and len(page.rows()) == expected
    assert page.errors == []


@pytest.fixture(scope="module")
def hand_written(tmp_path_factory):
    """Two records written by hand (a JSON list): a right answer after a search with IG against 3 draws and
    per-document gains, and a wrong one after an invalid turn."""
    passage = {"doc_id": "7", "title": "Lisbon", "text": "Lisbon is the capital of Portugal.", "score": 4.2}
    search = {"text": "<search> Portugal capital </search>", "action_type": "search", "reward": 0.0,
              "reward_components": {"outcome": 0.0, "ig": 0.0}, "query": "Portugal capital", "doc_ids": ["7"],
              "passages": [passage], "ig": 1.5, "ig_detail": {"baseline": "random", "logp_real": -0.5,
                                                              "logp_random": [-2.5, -1.5, -2.0], "logp_baseline": -2.0},
              "doc_gains": [1.2], "credit": 0.9}
    answer = {"text": "<answer> Lisbon </answer>", "action_type": "answer", "reward": 1.0,
              "reward_components": {"outcome": 1.0}}
    wrong = dict(answer, text="<answer> Porto </answer>", reward=0.0, reward_components={"outcome": 0.0})
    invalid = {"text": "hmm", "action_type": "invalid", "reward": -0.1, "reward_components": {"format": -0.1},
               "invalid_reason": "no action tag"}
    common = {"schema_version": 1, "golden_answers": ["Lisbon"], "hops": 1, "question_type": "capital",
              "dialect": "search-r1", "search_credit": None}
    records = [
        {**common, "id": "a", "question": "What is the capital of Portugal?", "prediction": "Lisbon", "em": 1.0,
         "f1": 1.0, "n_searches": 1, "return": 1.0, "search_credit": [0.9], "turns": [search, answer]},
        {**common, "id": "b", "question": "Which city is Portugal's capital?", "prediction": "Porto", "em": 0.0,
         "f1": 0.0, "n_searches": 1, "return": -0.1,
         "turns": [invalid, dict(search, ig=-0.3, credit=-0.2), wrong]},
    ]
    path = tmp_path_factory.mktemp("hand") / "records.json"
    path.write_text(json.dumps(records, indent=1))
    return path


def test_hand_written_records_in_the_browser(browser, hand_written, tmp_path):
    page = Page(browser, view(tmp_path, hand_written))
    assert page.count() == "2 episodes"
    assert page.plotted("plot-ig-outcome") == 2 and page.plotted("plot-ig-turn") == 2
    assert page.plotted("plot-searches") == 1
    detail = page.page.text_content("#detail")
    assert "IG +1.500" in detail and "credit +0.900" in detail and "random -2.500, -1.500, -2.000" in detail
    assert page.page.locator("svg.igstrip circle").count() == 4  # 3 draws and the real passages
    assert page.open_first_passage() == "Lisbon is the capital of Portugal."
    assert "gain +1.200" in page.page.text_content("details.passage summary")
    # sorted by total credit, low first: b before a
    page.choose("sort", "credit-asc")
    assert page.ids() == ["b", "a"]
    page.choose("f-outcome", "wrong")
    assert page.count() == "1 of 2 episodes"
    detail = page.page.text_content("#detail")
    assert "invalid: no action tag" in detail and "Porto" in detail
    assert page.plotted("plot-ig-outcome") == 1
    assert page.errors == []


@pytest.fixture(scope="module")
def training_run(tmp_path_factory):
    """A two-step grpo_ig.py run (tiny random model) that evaluates at step 2: its episodes.jsonl and metrics.csv."""
    root = tmp_path_factory.mktemp("train")
    run_example(root, "--total-steps", "2", "--no-tensorboard")
    return root / "smoke"


def test_training_run_in_the_browser(browser, training_run, tmp_path):
    run = load_run(training_run)
    assert len(run.records) == 8 and len(run.metrics) == 2
    page = Page(browser, view(tmp_path, training_run))
    assert page.count() == "8 episodes"
    assert page.plotted("plot-curves") == 1  # eval/em, logged at step 2 only
    page.choose("metric", "train/reward")
    assert page.plotted("plot-curves") == 2
    page.choose("f-split", "eval")
    assert page.count() == "4 of 8 episodes" and len(page.rows()) == 4
    assert page.errors == []


def test_ten_thousand_rows_are_drawn_lazily(browser, hand_written, tmp_path):
    records = load_run(hand_written).records
    many = [dict(records[i % 2], id=f"e{i}") for i in range(10_000)]
    path = tmp_path / "many.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in many))
    page = Page(browser, view(tmp_path, path))
    assert page.count() == "10000 episodes"
    assert 10 < len(page.rows()) < 100  # only those in view
    page.page.locator("#list").evaluate("el => el.scrollTop = 28 * 9000")
    page.page.wait_for_function("document.querySelector('#list-inner .row').dataset.k > 8000")
    assert any("e9000" in r for r in page.rows())
    assert page.errors == []


def test_the_page_needs_no_network_and_no_text_closes_its_script(hand_written, tmp_path):
    run = load_run(hand_written)
    run.records[0]["question"] = "</script><script>alert(1)</script>"
    html = render_html(run)
    assert html.lower().count("</script>") == 2  # the data's and the viewer's own
    assert "http://" not in html and "https://" not in html and "src=" not in html


def test_a_malformed_record_file_is_one_error_line_naming_the_line(tmp_path, capsys, hand_written):
    good = json.dumps(json.loads(hand_written.read_text())[0])
    bad = tmp_path / "bad.jsonl"
    bad.write_text(good + "\n" + good.replace('"em": 1.0', '"em": "yes"') + "\n")
    assert cli.main(["view", str(bad), "-o", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("search-env: error: ")
    assert f"{bad}:2: em: expected a finite number" in err
    assert not (tmp_path / "r.html").exists()
    for run, named in [(tmp_path / "nothing.jsonl", "no such file"), (tmp_path, "not a training run folder")]:
        assert cli.main(["view", str(run), "-o", str(tmp_path / "r.html")]) == 2
        assert named in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert cli.main(["view", str(empty)]) == 2
    assert "no episode records" in capsys.readouterr().err
