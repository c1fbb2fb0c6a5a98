"""The built-in world: determinism, size, grounded questions, names, and a BM25 sanity check."""

from __future__ import annotations

import collections
import os
import re
import string
import subprocess
import sys
from pathlib import Path

import bm25s
import pytest

from search_env import _cache
from search_env.data import synthetic_words as vocab
from search_env.data.synthetic import _RELATIONS, _SHARES, RELATION_NAMES, YEAR, World, _Builder, _Namer, build_world

# Common English words, plus a few real places and first names, that no generated name may be.
COMMON_WORDS = frozenset("""
the be to of and a in that have it for not on with he as you do at this but his by from they we
say her she or an will my one all would there their what so up out if about who get which go me
when make can like time no just him know take people into year your good some could them see
other than then now look only come its over think also back after use two how our work first well
way even new want because any these give day most us is was are been has had were said did made
man men woman women child world life hand part place case week company system program question
government number night point home water room mother area money story fact month lot right study
book eye job word business issue side kind head house service friend father power hour game line
end member law car city community name president team minute idea kid body information school
face others level office door health person art war history party result change morning reason
research girl guy moment air teacher force education foot boy age policy music market sense nation
plan college interest death experience effect class control care field development role effort
rate heart drug show leader light voice wife police mind price report decision son view relationship
town road arm difference value building action model season society tax director position player
record paper space ground form event official matter center couple site project activity star table
need court oil situation cost industry figure street image phone data picture practice piece land
product doctor wall patient worker news test movie north love support technology step baby computer
type attention film tree source organization hair window evidence population site university river
island garden summer winter silver golden almost amber harbour castle forest
london paris berlin rome madrid vienna prague moscow tokyo cairo sydney boston chicago dallas
texas france germany spain italy russia china india brazil canada mexico egypt kenya norway sweden
poland romania bavaria moldavia pakistan kurdistan salvador odessa vanessa edith daniel maria anna
""".split())

NAME_KINDS = {"person", "city", "country", "university", "company", "band"}
# English words that organisation names are built with ("... University", "... Press", "The ...s")
KIND_WORDS = {"The", "University", "of", "College", "Institute", "Technology", "Press", "Books", "Publishing",
              "House", "Studios", "Pictures", "Films", "Records", "Recordings", "Music", "Industries", "Works",
              "Group", "Holdings", "Company", "Manufacturing", "Quartet", "Ensemble", "Orchestra", "Trio",
              "Collective"}


@pytest.fixture(scope="module")
def world() -> World:
    return build_world()


def _snapshot(w: World):
    return (
        [(p.id, p.title, p.text) for p in w.corpus],
        [(q.id, q.question, q.golden_answers, dict(q.metadata)) for q in w.questions],
    )


def test_same_seed_gives_the_same_world():
    first = _Builder(seed=5, n_passages=600).build()
    second = _Builder(seed=5, n_passages=600).build()
    assert first is not second
    assert _snapshot(first) == _snapshot(second)
    assert first.corpus.fingerprint == second.corpus.fingerprint
    assert first.seed == 5


def test_same_world_in_another_process_with_another_hash_seed():
    code = (
        "from search_env.data.synthetic import build_world\n"
        "w = build_world(5, 600)\n"
        "print(w.corpus.fingerprint)\n"
        "print('|'.join(q.id + ':' + q.question + ':' + q.golden_answers[0] for q in w.questions))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    fingerprint, questions = out.strip().split("\n")
    w = build_world(5, 600)
    assert fingerprint == w.corpus.fingerprint
    assert questions == "|".join(q.id + ":" + q.question + ":" + q.golden_answers[0] for q in w.questions)


def test_different_seeds_give_different_worlds():
    a, b = build_world(1, 600), build_world(2, 600)
    assert a.corpus.fingerprint != b.corpus.fingerprint
    assert [p.text for p in a.corpus] != [p.text for p in b.corpus]
    assert [q.question for q in a.questions] != [q.question for q in b.questions]


def test_build_world_is_built_once():
    assert build_world(0, 3000) is build_world(0, 3000)
    assert build_world() is build_world()
    assert build_world() is build_world(0, 3000) is build_world(seed=0, n_passages=3000)
    assert build_world().seed == 0
    assert build_world(1, 600) is not build_world(1, 601)


def test_forgetting_the_world_builds_a_new_one_with_the_same_content():
    before = build_world(5, 600)
    _cache.forget("world")
    after = build_world(5, 600)
    assert after is not before
    assert after is build_world(5, 600)
    assert _snapshot(after) == _snapshot(before)
    assert after.corpus.fingerprint == before.corpus.fingerprint


@pytest.mark.parametrize("n", [300, 3000, 12000])
def test_corpus_size_is_within_ten_percent(n):
    w = build_world(7, n)
    assert 0.9 * n <= len(w.corpus) <= 1.1 * n
    assert 0.9 * n / 3 <= len(w.questions) <= 1.1 * n / 3
    assert w.corpus.ids == [str(i) for i in range(len(w.corpus))]


def test_too_small_a_world_is_refused():
    with pytest.raises(ValueError):
        build_world(0, 10)


def test_hop_mix(world):
    hops = collections.Counter(q.metadata["hops"] for q in world.questions)
    assert set(hops) == {1, 2, 3}
    total = len(world.questions)
    assert abs(hops[1] / total - 0.4) < 0.05
    assert abs(hops[2] / total - 0.4) < 0.05
    assert abs(hops[3] / total - 0.2) < 0.05
    # several kinds of chain at each depth, over a relation set of 8 to 15
    assert 8 <= len(RELATION_NAMES) <= 15
    for h in (1, 2, 3):
        chains = {q.metadata["type"] for q in world.questions if q.metadata["hops"] == h}
        assert len(chains) >= 8
        assert {name for chain in chains for name in chain.split(">")} <= set(RELATION_NAMES)
    assert {q.metadata["type"] for q in world.questions if q.metadata["hops"] == 1} == set(RELATION_NAMES)


def test_question_ids_and_texts_are_unique(world):
    ids = [q.id for q in world.questions]
    texts = [q.question for q in world.questions]
    assert len(set(ids)) == len(ids)
    assert len(set(texts)) == len(texts)
    for q in world.questions:
        assert re.fullmatch(rf"world0-{q.metadata['hops']}hop-\d{{5,}}", q.id), q.id


def test_every_question_is_grounded_in_its_gold_passages(world):
    corpus = world.corpus
    for q in world.questions:
        meta = q.metadata
        doc_ids, titles = meta["supporting_doc_ids"], meta["supporting_titles"]
        steps = meta["question_decomposition"]
        assert len(doc_ids) == len(titles) == len(steps) == meta["hops"], q
        assert len(meta["type"].split(">")) == meta["hops"]
        assert all(doc_id in corpus for doc_id in doc_ids), q
        assert [corpus.get(doc_id).title for doc_id in doc_ids] == titles, q
        assert q.golden_answers and q.golden_answers[0] == steps[-1]["answer"], q
        assert q.golden_answers[0] in corpus.get(doc_ids[-1]).text, q
        for hop in range(meta["hops"] - 1):
            bridge = steps[hop]["answer"]
            assert bridge == titles[hop + 1], q
            assert bridge in corpus.get(doc_ids[hop]).text, q
            assert bridge.lower() not in q.question.lower(), q
        for hop, step in enumerate(steps):
            assert step["answer"] not in step["question"], q
            assert titles[hop] in step["question"], q
        assert titles[0] in q.question
        for answer in q.golden_answers:
            assert answer.lower() not in q.question.lower(), q


def test_names_are_unique_and_not_english_words(world):
    titles = [p.title for p in world.corpus]
    assert len(set(titles)) == len(titles)
    named = {q.golden_answers[0] for q in world.questions if q.metadata["answer_type"] in NAME_KINDS}
    assert len(named) > 200
    for title in titles:
        assert title.lower() not in COMMON_WORDS, title
    for name in named:
        for token in name.split():
            if token not in KIND_WORDS:
                assert token.lower() not in COMMON_WORDS, name
                assert token.isalpha() and token[0].isupper() and token[1:].islower(), name


def test_passages_are_a_few_sentences(world):
    for p in world.corpus:
        sentences = [s for s in re.split(r"(?<=[.!?])\s+", p.text) if s]
        assert 2 <= len(sentences) <= 5, p
        assert p.text.startswith(p.title) or p.text.startswith("The " + p.title), p


def test_bm25_finds_the_gold_passage_of_single_hop_questions(world):
    corpus = world.corpus
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize([p.contents for p in corpus], stopwords="en", show_progress=False),
                    show_progress=False)
    single = [q for q in world.questions if q.metadata["hops"] == 1]
    queries = bm25s.tokenize([q.question for q in single], stopwords="en", show_progress=False)
    results, _ = retriever.retrieve(queries, k=3, show_progress=False)
    found = sum(corpus.position(q.metadata["supporting_doc_ids"][0]) in row.tolist()
                for q, row in zip(single, results))
    assert found >= 0.8 * len(single)


def _slots(template: str) -> list[str | None]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]


def test_relations_file_agrees_with_the_builder():
    """relations.json: one {x} per template, the forms nesting needs, and names and kinds the builder uses."""
    assert len({(r.name, r.domain) for r in _RELATIONS}) == len(_RELATIONS)
    assert RELATION_NAMES == tuple(dict.fromkeys(r.name for r in _RELATIONS))
    builder = _Builder(seed=3, n_passages=300)
    builder.build()
    reached = {r.range for r in _RELATIONS}  # kinds a hop can lead to
    for rel in _RELATIONS:
        assert rel.questions and all(_slots(t) == ["x"] and t.endswith("?") for t in rel.questions), rel
        assert all(_slots(t) == ["x"] for t in rel.phrases), rel
        if rel.range != YEAR:  # its value can be a middle hop, written as a phrase
            assert rel.phrases, rel
        if rel.domain in reached:  # its subject can be a phrase holding a clause: the slot must come last
            assert any(t.endswith("{x}?") for t in rel.questions), rel
            if rel.range != YEAR:
                assert any(t.endswith("{x}") for t in rel.phrases), rel
        values = [e.facts[rel.name] for e in builder.of[rel.domain] if rel.name in e.facts]
        assert values, rel  # a name the builder never sets would silently never be asked
        assert all(isinstance(v, int) if rel.range == YEAR else v.kind == rel.range for v in values), rel
    assert {r.domain for r in _RELATIONS} == {kind for kind, _ in _SHARES}


class _Scripted:
    """A stand-in for the builder's random draws that picks what it is told, in order."""

    def __init__(self, picks):
        self._picks = iter(picks)

    def choice(self, seq):
        pick = next(self._picks)
        assert pick in seq
        return pick


def test_blocked_names_file_loads_and_no_blocked_word_is_given_out():
    """blocked_names.txt: its words (header skipped) are words of the grammar, and the namer skips them."""
    grammar = re.compile("|".join("".join("(?:" + "|".join(map(re.escape, slot)) + ")" for slot in pattern)
                                  for patterns in vocab.GRAMMAR.values() for pattern in set(patterns)))
    assert len(vocab.BLOCKED) > 250
    assert all(grammar.fullmatch(word) for word in vocab.BLOCKED), sorted(w for w in vocab.BLOCKED
                                                                         if not grammar.fullmatch(w))
    short = vocab.GRAMMAR["female"][0]  # onset, vowel, medial, ending
    assert "akira" in vocab.BLOCKED and "akessa" not in vocab.BLOCKED
    namer = _Namer(_Scripted([short, "", "a", "k", "ira", short, "", "a", "k", "essa"]))
    assert namer.word("female") == "Akessa"
