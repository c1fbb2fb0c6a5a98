"""DIG labels: InfoGain-RAG's confidence and the label rule by hand, rows that score only the contexts they report,
the ranking AUC by hand, resuming after a crash mid-write without duplicates, and ``search-env dig`` end to end."""

import json
import math

import numpy as np
import pytest

from search_env.commands.cli import main
from search_env.data.jsonl import ResumeRefused
from search_env.data.synthetic import build_world
from search_env.env import SearchQAEnv
from search_env.info_gain.dig import dig_env, dig_label, dig_rows, dig_scorer, finished_questions, label, ranking_auc
from search_env.scoring.score_format import ScoreFormat, infogain_confidence
from search_env.scoring.transformers_scorer import TransformersScorer
from tests.standins import bundled_tokenizer, tiny_llama
from tests.test_scorers import token_logprobs


@pytest.fixture(scope="module")
def world():
    return build_world()


def make_env(world, topk=4):
    return dig_env(world.questions, world.corpus, topk=topk)


class RecordingScorer:
    """0.8 when the gold answer is in the context's documents, 0.2 when there are documents without it, 0.3 with no
    documents; keeps every context it scored."""

    def __init__(self):
        self.contexts = []

    def score(self, contexts, answers):
        self.contexts += contexts
        out = []
        for context, answer in zip(contexts, answers):
            documents = context.rsplit("</search>", 1)[1]
            out.append(0.3 if not documents.strip() else 0.8 if answer in documents else 0.2)
        return np.array(out)


def test_infogain_confidence_by_hand():
    lp = np.log([0.5, 0.25, 1.0, 0.5])  # smoothed over 3: 0.375, 7/12, 7/12, 0.75; head k = 3 at 0.75, tail 0.25
    expected = 0.375**0.75 * (7 / 12) ** 0.75 * (7 / 12) ** 0.75 * 0.75**0.25
    assert infogain_confidence(lp) == pytest.approx(expected, rel=1e-12)
    assert infogain_confidence([math.log(0.2)]) == pytest.approx(0.2**0.75)
    assert infogain_confidence(np.log([0.5, 0.5]), window=1, alpha=0.5, head_tokens=1) == pytest.approx(0.5)
    assert ScoreFormat(confidence="infogain").combine(lp) == pytest.approx(expected, rel=1e-12)
    assert ScoreFormat().combine(lp) == pytest.approx((3 * lp[:3].sum() + lp[3]) / 10)  # the log-prob option
    assert 0.0 <= infogain_confidence([-50.0, -50.0]) < 1e-20 and infogain_confidence([0.0, 0.0]) == 1.0
    with pytest.raises(ValueError, match="confidence must be one of"):
        ScoreFormat(confidence="prob")
    with pytest.raises(ValueError, match="alpha must be in"):
        infogain_confidence([0.0], alpha=1.5)
    with pytest.raises(ValueError, match="1-D, not empty"):
        infogain_confidence([])
    with pytest.raises(ValueError, match="confidence must be one of"):
        dig_scorer(RecordingScorer(), "prob")


def test_label_rule_by_hand():
    assert [dig_label(d) for d in (0.4, 1e-9, 0.0, -0.2)] == [1, 1, 0, 0]
    assert [dig_label(d, threshold=0.1) for d in (0.4, 0.1, 0.05)] == [1, 0, 0]


def test_rows_by_hand_scoring_only_the_reported_contexts(world):
    """Each passage alone and no passage: topk + 1 contexts per question, no random passage, DIG and label by hand."""
    items = [q for q in world.questions if q.metadata["hops"] == 2][:3]
    env, scorer = make_env(world), RecordingScorer()
    texts = {p.id: p.text for p in world.corpus}
    for n, item in enumerate(items, 1):
        rows = dig_rows(env, scorer, item, seed=3)
        assert len(rows) == 4 and len(scorer.contexts) == 5 * n == len(set(scorer.contexts))
        answer = item.golden_answers[0]
        assert [r["dig"] for r in rows] == [pytest.approx(0.5 if answer in texts[r["doc_id"]] else -0.1) for r in rows]
        assert [r["label"] for r in rows] == [int(answer in texts[r["doc_id"]]) for r in rows]
        assert all(r["confidence_without"] == 0.3 for r in rows)
        scored = scorer.contexts[-5:]
        for r, context in zip(rows, scored):  # passage i alone, and none of the others
            assert texts[r["doc_id"]] in context
            assert not any(texts[o["doc_id"]] in context for o in rows if o["doc_id"] != r["doc_id"])
        assert not any(texts[r["doc_id"]] in scored[-1] for r in rows) and scored[-1].endswith("</search>")
        assert [r["rank"] for r in rows] == [0, 1, 2, 3] and [r["gold"] for r in rows] == [
            r["doc_id"] in item.supporting_doc_ids for r in rows]
    with pytest.raises(ValueError, match="dig_env"):
        dig_rows(SearchQAEnv(questions=world.questions, corpus=world.corpus, scorer=scorer), scorer, items[0])


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
    env = make_env(world)
    full, _ = label(items, env, fake_scorer, out, progress=False)
    lines = out.read_bytes().splitlines(keepends=True)
    n_last = len(full[items[-1].id])
    torn = b"".join(lines[: len(lines) - n_last + 1]) + lines[-1][:7]  # one row of the last question, a torn line
    out.write_bytes(torn)
    assert set(finished_questions(out)) == {q.id for q in items[:-1]} and out.read_bytes() == torn  # only read
    again, resumed = label(items, env, fake_scorer, out, progress=False)
    assert resumed == 4 and again == full
    header, *rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert header == {"search_env": "dig", "settings": json.loads(lines[0])["settings"]}
    assert len(rows) == len(lines) - 1 and len({(r["question_id"], r["doc_id"]) for r in rows}) == len(rows)


def test_resume_only_with_the_same_settings(world, fake_scorer, tmp_path):
    """Another seed, threshold, topk or caller's setting is refused by name; the same ones resume, and only the
    questions asked for are returned."""
    out = tmp_path / "dig.jsonl"
    items = world.questions[:4]
    env = make_env(world)
    full, _ = label(items, env, fake_scorer, out, seed=1, settings={"scorer": "fake"}, progress=False)
    before = out.read_bytes()
    with pytest.raises(ResumeRefused, match=r"other settings, so it is not resumed: seed: 1 in the file, 2 now\. "):
        label(items, env, fake_scorer, out, seed=2, settings={"scorer": "fake"}, progress=False)
    with pytest.raises(ResumeRefused, match=r'resumed: scorer: "fake" in the file, "bundled" now\. '):
        label(items, env, fake_scorer, out, seed=1, settings={"scorer": "bundled"}, progress=False)
    with pytest.raises(ResumeRefused, match=r"resumed: threshold: 0\.0 in the file, 0\.1 now; topk: 4 in the file, 3"):
        label(items, make_env(world, topk=3), fake_scorer, out, seed=1, threshold=0.1, settings={"scorer": "fake"},
              progress=False)
    assert out.read_bytes() == before
    some, resumed = label(items[:2], env, fake_scorer, out, seed=1, settings={"scorer": "fake"}, progress=False)
    assert resumed == 2 and some == {q.id: full[q.id] for q in items[:2]} and out.read_bytes() == before
    old = tmp_path / "old.jsonl"  # an older search-env's rows: no settings line
    old.write_bytes(b"".join(before.splitlines(keepends=True)[1:]))
    with pytest.raises(ResumeRefused, match="has no settings header"):
        label(items, env, fake_scorer, old, seed=1, settings={"scorer": "fake"}, progress=False)


@pytest.mark.slow
def test_cli_end_to_end_with_the_bundled_scorer(tmp_path, capsys):
    out = tmp_path / "dig.jsonl"
    assert main(["dig", "--questions", "builtin", "--corpus", "builtin", "--output", str(out), "--limit", "2",
                 "--topk", "2", "--no-progress"]) == 0
    text = capsys.readouterr().out
    header, *rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert header["search_env"] == "dig" and header["settings"]["scorer"] == "bundled"
    assert header["settings"]["confidence"] == "infogain" and header["settings"]["threshold"] == 0.0
    assert len(rows) == 4 and all(-1 <= r["dig"] <= 1 for r in rows) and "2 questions, 4" in text
    assert all(r["dig"] == pytest.approx(r["confidence"] - r["confidence_without"]) for r in rows)
    assert [r["label"] for r in rows] == [int(r["dig"] > 0) for r in rows]
    logprob = tmp_path / "logprob.jsonl"  # today's mean-log-prob difference, kept as an option
    assert main(["dig", "--questions", "builtin", "--corpus", "builtin", "--output", str(logprob), "--limit", "2",
                 "--topk", "2", "--no-progress", "--confidence", "logprob"]) == 0
    header_lp, *rows_lp = [json.loads(line) for line in logprob.read_text().splitlines()]
    assert header_lp["settings"]["confidence"] == "logprob" and [r["doc_id"] for r in rows_lp] == [
        r["doc_id"] for r in rows]
    assert all(r["confidence"] < 0 for r in rows_lp)  # log-probabilities, not probabilities
    capsys.readouterr()
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


def test_the_scorer_computes_the_infogain_confidence_from_its_own_log_probabilities():
    """TransformersScorer(confidence="infogain") = infogain_confidence of the answer tokens' log-probabilities from a
    full-sequence forward; its disk-cache fingerprint differs from the log-prob scorer's."""
    tokenizer = bundled_tokenizer()
    model = tiny_llama(len(tokenizer), seed=0, max_position_embeddings=512, initializer_range=0.5)
    contexts = ["The river passes the old castle.", "A painter lived in the harbour village."]
    answers = ["the castle library", "Lisbon"]
    infogain = TransformersScorer(model, tokenizer, confidence="infogain")
    expected = [infogain_confidence(token_logprobs(model, tokenizer, c, a)) for c, a in zip(contexts, answers)]
    assert infogain.score(contexts, answers) == pytest.approx(expected, rel=1e-6)
    assert all(0 < e < 1 for e in expected)
    assert infogain.fingerprint != TransformersScorer(model, tokenizer).fingerprint
