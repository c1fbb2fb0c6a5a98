"""BM25 retrievers: bm25s vs rank-bm25 parity, the tiny-corpus idf bug, caching, edge cases, real data."""

from __future__ import annotations

import json
import multiprocessing
import os

import numpy as np
import pytest

from search_env._cache import cache_dir, forget, replace_dir
from search_env.data import Corpus, Passage, load_corpus, load_questions
from search_env.retrieval.base import Retriever
from search_env.retrieval.bm25 import BM25Retriever, RankBM25Retriever, get_bm25
from tests.shared_data import shared_data

K1, B = 0.9, 0.4


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEARCH_ENV_CACHE", str(tmp_path / "cache"))
    forget("bm25")
    yield
    forget("bm25")


def _random_corpus(n: int = 2000, vocab_size: int = 5000, seed: int = 0) -> Corpus:
    """Passages of 20-80 made-up words drawn from a Zipf-Mandelbrot law, p(rank r) ~ 1 / (r + 10).

    The offset stands in for stopword removal: only one or two terms occur in more than half the
    passages, as with content words in real text (a plain 1/r law puts a few words in ~all of them).
    """
    rng = np.random.default_rng(seed)
    consonants, vowels = list("bcdfghjklmnprstvz"), list("aeiou")
    vocab = sorted(
        {
            "".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(int(rng.integers(2, 5))))
            for _ in range(vocab_size)
        }
    )
    rng.shuffle(vocab)
    weights = 1.0 / (np.arange(1, len(vocab) + 1) + 10)
    weights /= weights.sum()
    passages = []
    for i in range(n):
        words = rng.choice(vocab, size=int(rng.integers(20, 81)), p=weights)
        passages.append(Passage(f"p{i}", " ".join(words[:2]).title(), " ".join(words[2:]) + "."))
    return Corpus(passages, name=f"random-{n}")


def _queries(corpus: Corpus, n: int = 200, seed: int = 1) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for i in rng.integers(0, len(corpus), size=n):
        words = corpus[int(i)].text.rstrip(".").split()
        out.append(" ".join(rng.choice(words, size=3, replace=False)))
    return out


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return _random_corpus()


@pytest.fixture(scope="module")
def queries(corpus) -> list[str]:
    return _queries(corpus)


@pytest.fixture(scope="module")
def retriever(corpus) -> BM25Retriever:
    return BM25Retriever(corpus, cache=False)


def _ids(hits) -> list[str]:
    return [h.doc_id for h in hits]


# -- parity with rank-bm25 ---------------------------------------------------------------------------
#
# rank-bm25's BM25Okapi scores   idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl))
# with idf(t) = log((N - df + 0.5) / (df + 0.5)), and a negative idf replaced by 0.25 * mean idf.
# bm25s "robertson" uses the same idf (clamped at 0 instead of the epsilon floor) and the same
# term-frequency part without the constant (k1 + 1) factor. So for terms in fewer than half the
# passages the two are equal up to that factor; they differ only on very common terms (0 vs a small
# epsilon weight) and float32 vs float64 rounding. bm25s's default "lucene" idf,
# log(1 + (N - df + 0.5) / (df + 0.5)), is always positive and ranks differently, hence "robertson" here.


@pytest.fixture(scope="module")
def robertson(corpus) -> BM25Retriever:
    return BM25Retriever(corpus, k1=K1, b=B, method="robertson", cache=False)


@pytest.fixture(scope="module")
def reference(corpus) -> RankBM25Retriever:
    return RankBM25Retriever(corpus, k1=K1, b=B)


def test_top3_parity_with_rank_bm25(robertson, reference, queries):
    agree = sum(set(_ids(robertson.search(q, 3))) == set(_ids(reference.search(q, 3))) for q in queries)
    rate = agree / len(queries)
    print(f"\nbm25s(robertson) vs rank-bm25 top-3 agreement: {agree}/{len(queries)} = {rate:.1%}")
    assert rate >= 0.95


def test_score_parity_with_rank_bm25(robertson, reference, queries):
    """Where every query term is in fewer than half the passages, scores match up to (k1 + 1)."""
    doc_freqs = reference.bm25.doc_freqs

    def df(term: int) -> int:
        return sum(term in counts for counts in doc_freqs)

    n = len(doc_freqs)
    comparable = [q for q in queries if all(df(t) < n / 2 for t in reference.analyzer.query_ids(q))]
    assert 50 <= len(comparable) < len(queries)
    for q in comparable:
        ours, theirs = robertson.get_scores(q) * (K1 + 1), reference.get_scores(q)
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5, err_msg=q)
        hits = robertson.search(q, 10)
        assert hits, q
        for hit in hits:
            assert hit.score * (K1 + 1) == pytest.approx(theirs[robertson.corpus.position(hit.doc_id)], rel=1e-5)


# -- rank-bm25's idf on tiny corpora -----------------------------------------------------------------


TINY = Corpus(
    [
        Passage("paris", "Paris", "Paris is the capital of France."),
        Passage("berlin", "Berlin", "Berlin is the capital of Germany."),
    ],
    name="tiny",
)


def test_rank_bm25_scores_zero_on_tiny_corpus():
    """Upstream bug pinned: with N=2 a term in one passage has idf log(1.5/1.5) = 0, so BM25Okapi
    scores the obviously matching passage 0. If this starts failing, rank-bm25 fixed its idf."""
    reference = RankBM25Retriever(TINY)
    scores = reference.bm25.get_scores(reference.analyzer.query_ids("Paris France"))
    assert np.all(scores == 0)
    assert reference.search("Paris France", 2) == []  # zero scores are never returned as hits

    hits = BM25Retriever(TINY, cache=False).search("Paris France", 2)
    assert _ids(hits) == ["paris"]
    assert hits[0].score > 0


# -- save, load, cache ---------------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path, corpus, retriever, queries):
    retriever.save(tmp_path / "index")
    for mmap in (False, True):
        loaded = BM25Retriever.load(tmp_path / "index", corpus, mmap=mmap)
        assert loaded.batch_search(queries, 10) == retriever.batch_search(queries, 10)
        for q in queries[:40]:  # mapped: posting lists read from the files, summed as bm25s sums them
            assert np.array_equal(loaded.get_scores(q), retriever.get_scores(q))
        assert loaded.analyzer.tokenizer.word_to_id == retriever.analyzer.tokenizer.word_to_id


def test_index_metadata_format_is_unchanged(tmp_path, corpus, retriever):
    """The metadata file keeps the keys earlier versions wrote, so indexes already cached still load."""
    retriever.save(tmp_path / "index")
    meta = json.loads((tmp_path / "index" / "search_env_bm25.json").read_text(encoding="utf-8"))
    assert set(meta) == {"format", "bm25s", "fingerprint", "num_docs", "corpus_name", "params"}
    assert (meta["format"], meta["fingerprint"], meta["num_docs"]) == (1, corpus.fingerprint, len(corpus))
    assert meta["params"] == retriever.params
    meta["params"] = {**meta["params"], "k1": 1.5}  # an index built with other parameters is refused by a build
    (tmp_path / "index" / "search_env_bm25.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(ValueError, match="built with params"):
        BM25Retriever(corpus, cache=tmp_path / "index")
    meta["format"] = 0
    (tmp_path / "index" / "search_env_bm25.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(ValueError, match="has format 0, expected 1"):
        BM25Retriever.load(tmp_path / "index", corpus)


def test_load_refuses_another_corpus(tmp_path, corpus, retriever):
    retriever.save(tmp_path / "index")
    other = Corpus(list(corpus)[:-1], name="shorter")
    with pytest.raises(ValueError, match="different corpus"):
        BM25Retriever.load(tmp_path / "index", other)
    with pytest.raises(ValueError, match="different corpus"):
        BM25Retriever(other, cache=tmp_path / "index")


def test_save_replaces_an_existing_index(tmp_path, retriever, queries):
    BM25Retriever(TINY, cache=False).save(tmp_path / "index")
    retriever.save(tmp_path / "index")
    loaded = BM25Retriever.load(tmp_path / "index", retriever.corpus)
    assert loaded.search(queries[0], 5) == retriever.search(queries[0], 5)
    assert [p.name for p in tmp_path.iterdir()] == ["index"]  # no temp or trash dirs left behind


def _no_build(self):
    raise AssertionError("index rebuilt instead of loaded from the cache")


def test_cache_dir_is_reused(tmp_path, monkeypatch, corpus, queries):
    first = BM25Retriever(corpus)
    other = BM25Retriever(corpus, k1=1.2)
    assert first.directory is not None and first.directory.parent == tmp_path / "cache" / "bm25"
    assert first.directory.name.startswith(corpus.fingerprint[:16])
    assert other.directory != first.directory  # parameters are part of the key
    monkeypatch.setattr(BM25Retriever, "_build", _no_build)
    second = BM25Retriever(corpus)
    assert second.directory == first.directory
    assert second.batch_search(queries, 5) == first.batch_search(queries, 5)
    assert BM25Retriever(corpus, k1=1.2).batch_search(queries, 5) == other.batch_search(queries, 5)
    with pytest.raises(AssertionError, match="rebuilt"):  # a new parameter set is built, not loaded
        BM25Retriever(corpus, b=0.75)


def test_explicit_cache_dir_is_reused(tmp_path, monkeypatch, corpus, queries):
    first = BM25Retriever(corpus, cache=tmp_path / "mine")
    assert (tmp_path / "mine").is_dir()
    monkeypatch.setattr(BM25Retriever, "_build", _no_build)
    second = BM25Retriever(corpus, cache=str(tmp_path / "mine"))
    assert second.search(queries[0], 5) == first.search(queries[0], 5)
    assert not (tmp_path / "cache" / "bm25").exists()
    (tmp_path / "unrelated").mkdir()
    (tmp_path / "unrelated" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not empty"):
        BM25Retriever(corpus, cache=tmp_path / "unrelated")
    assert (tmp_path / "unrelated" / "notes.txt").read_text() == "keep me"


def test_cache_false_writes_nothing(tmp_path, corpus):
    BM25Retriever(TINY, cache=False)
    assert not (tmp_path / "cache" / "bm25").exists() or not any((tmp_path / "cache" / "bm25").iterdir())


def test_corrupt_cache_is_rebuilt(corpus, queries):
    first = BM25Retriever(corpus)
    (first.directory / "data.csc.index.npy").write_bytes(b"garbage")
    second = BM25Retriever(corpus)
    assert second.search(queries[0], 5) == first.search(queries[0], 5)
    assert BM25Retriever.load(first.directory, corpus).search(queries[0], 5) == first.search(queries[0], 5)


def test_replace_dir_keeps_the_first_writer(tmp_path):
    target = tmp_path / "idx"

    def writer(text):
        return lambda d: (d / "f.txt").write_text(text)

    assert replace_dir(target, writer("one"), overwrite=False)
    assert not replace_dir(target, writer("two"), overwrite=False)
    assert (target / "f.txt").read_text() == "one"
    assert replace_dir(target, writer("three"), overwrite=True)
    assert (target / "f.txt").read_text() == "three"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]


def _build_in_child(corpus, queue):
    queue.put(_ids(BM25Retriever(corpus).search("zero one", 5)))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_concurrent_builds_leave_one_valid_index(corpus):
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_build_in_child, args=(corpus, queue)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    results = [queue.get(timeout=5) for _ in procs]
    assert all(r == results[0] for r in results)
    entries = list(cache_dir("bm25").iterdir())
    assert len(entries) == 1, entries
    assert BM25Retriever.load(entries[0], corpus).search("zero one", 5) == BM25Retriever(corpus).search("zero one", 5)


def test_get_bm25_builds_once(monkeypatch, corpus):
    builds = []
    real_build = BM25Retriever._build
    monkeypatch.setattr(BM25Retriever, "_build", lambda self: (builds.append(1), real_build(self)))
    a = get_bm25(corpus, cache=False)
    assert get_bm25(corpus, cache=False, k1=0.9, b=0.4) is a  # defaults spelled out: the same key
    assert get_bm25(Corpus(list(corpus), name="copy"), "bm25s", cache=False) is a  # same fingerprint
    assert len(builds) == 1
    assert get_bm25(corpus, cache=False, k1=1.2) is not a
    assert len(builds) == 2
    forget("bm25")  # the process-level memo is dropped: the next call builds again
    assert get_bm25(corpus, cache=False) is not a
    assert len(builds) == 3
    ref = get_bm25(TINY, "rank_bm25")
    assert isinstance(ref, RankBM25Retriever) and get_bm25(TINY, "rank_bm25") is ref
    with pytest.raises(ValueError, match="backend"):
        get_bm25(corpus, "elastic")


# -- search behaviour ----------------------------------------------------------------------------------


def test_protocol():
    assert isinstance(BM25Retriever(TINY, cache=False), Retriever)
    assert isinstance(RankBM25Retriever(TINY), Retriever)
    half = type("SearchOnly", (), {"search": lambda self, query, k: []})()
    assert not isinstance(half, Retriever)  # batch_search is part of the protocol too


def test_title_is_indexed():
    corpus = Corpus(
        [
            Passage("a", "Zanzibar Quokka", "An island animal."),
            Passage("b", "Other", "Nothing to see here, an animal."),
            Passage("c", "Third", "Still nothing."),
        ]
    )
    assert _ids(BM25Retriever(corpus, cache=False).search("zanzibar", 3)) == ["a"]
    assert _ids(RankBM25Retriever(corpus).search("quokka", 3)) == ["a"]


def test_k_is_clamped(retriever, corpus):
    assert retriever.search("Paris", 0) == []
    assert retriever.search(corpus[0].title, -5) == []
    assert retriever.batch_search([corpus[0].title, "x"], 0) == [[], []]
    tiny = BM25Retriever(TINY, cache=False)
    hits = tiny.search("capital paris", 10**9)
    assert _ids(hits) == ["paris", "berlin"] and hits[0].score > hits[1].score > 0
    common = corpus[0].text.split()[0]
    many = retriever.search(common, 10**9)
    assert len(many) == np.count_nonzero(retriever.get_scores(common) > 0) > 0  # every match, no more
    assert all(h.score > 0 for h in many)
    assert [h.score for h in many] == sorted((h.score for h in many), reverse=True)


GARBAGE = [
    "",
    "   \n\t ",
    "!!! ??? ... ---",
    "the of and is a",  # only stopwords
    "qqqqxz vvvvvvw",  # unknown words
    "\x00\x01\x02",
    "\ud800\udfff lone surrogates \udc80",
    "日本語のテキスト 中文 العربية emoji 🤖🔍",
    "<search>'; DROP TABLE passages; --</search>",
    "a" * 10_000,
]


@pytest.mark.parametrize("backend", [BM25Retriever, RankBM25Retriever])
def test_garbage_queries_never_raise(backend):
    kwargs = {"cache": False} if backend is BM25Retriever else {}
    r = backend(TINY, **kwargs)
    for q in GARBAGE:
        assert r.search(q, 5) == [], q
    assert r.batch_search(GARBAGE, 5) == [r.search(q, 5) for q in GARBAGE]


def test_huge_and_random_queries(retriever, corpus):
    rng = np.random.default_rng(7)
    codepoints = rng.integers(0, 0x110000, size=200_000)
    noise = "".join(map(chr, codepoints.tolist()))
    passage = corpus[3]
    huge = " ".join([f"{passage.title} {passage.text}"] * 6000)  # > 1 MB of known words
    tok = retriever.analyzer.tokenizer
    sizes = (len(tok.word_to_id), len(tok.word_to_stem), len(tok.stem_to_sid))
    scores = retriever.get_scores(noise)
    expected = [corpus[int(i)].id for i in np.argsort(-scores, kind="stable")[:5] if scores[i] > 0]
    assert _ids(retriever.search(noise, 5)) == expected  # the best positive scores, ties by position
    hits = retriever.search(huge, 5)
    assert len(huge) > 1_000_000 and _ids(hits)[0] == passage.id
    assert retriever.search("unseenword " * 1000 + "anotherone", 5) == []
    assert (len(tok.word_to_id), len(tok.word_to_stem), len(tok.stem_to_sid)) == sizes  # vocab not grown


def test_batch_equals_single(retriever, queries):
    mixed = queries[:100] + ["", "!!!"] + queries[100:]
    batched = retriever.batch_search(mixed, 7)
    assert batched == [retriever.search(q, 7) for q in mixed]
    assert batched[100] == [] and batched[101] == []
    assert retriever.batch_search([], 5) == []


def test_query_words_use_the_index_vocabulary(retriever, corpus):
    """A query is tokenized with the index's own tokenizer (stemmed, known ids), not a fresh vocab."""
    passage = corpus[42]
    assert _ids(retriever.search(f"{passage.title} {passage.text}", 1)) == [passage.id]
    stemmed = BM25Retriever(
        Corpus([Passage("r", "", "The runner was running."), Passage("s", "", "Swim.")]), cache=False
    )
    assert _ids(stemmed.search("runs", 2)) == ["r"]  # "runs" is unseen but stems to "run"


def test_ties_are_broken_by_corpus_position():
    """60 identical passages tie; whatever k, the earliest positions win, on both backends."""
    rng = np.random.default_rng(3)
    passages = [Passage(f"other{i}", "", f"cherry plum {i}") for i in range(140)]
    slots = sorted(rng.choice(200, size=60, replace=False).tolist())
    for n, slot in enumerate(slots):
        passages.insert(slot, Passage(f"dup{n}", "", "apple banana"))
    corpus = Corpus(passages)
    dup_ids = [p.id for p in corpus if p.id.startswith("dup")]
    fast, ref = BM25Retriever(corpus, cache=False), RankBM25Retriever(corpus)
    for k in (1, 3, 20, 59, 60, 200):
        assert _ids(fast.search("apple", k)) == dup_ids[:k]
        assert _ids(ref.search("apple", k)) == dup_ids[:k]
        assert fast.search("banana apple", k) == fast.search("banana apple", k)


def test_results_are_deterministic(corpus, queries):
    a = BM25Retriever(corpus, cache=False).batch_search(queries, 10)
    b = BM25Retriever(corpus, cache=False).batch_search(queries, 10)
    assert a == b


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="method"):
        BM25Retriever(TINY, method="bm25+", cache=False)
    with pytest.raises(ValueError, match="empty corpus"):
        BM25Retriever(Corpus([]), cache=False)
    with pytest.raises(TypeError):
        BM25Retriever(TINY, cache=False).search(None, 3)  # type: ignore[arg-type]


# -- real data -----------------------------------------------------------------------------------------


@pytest.mark.shared_data
def test_titles_find_their_passages_on_hotpotqa():
    folder = shared_data("hotpotqa_train_hipporag100")
    corpus = load_corpus(folder / "corpus.jsonl")
    questions = load_questions(folder / "test.jsonl")
    retriever = BM25Retriever(corpus)
    gold = sorted({doc_id for item in questions for doc_id in item.metadata["supporting_doc_ids"]})
    titles = [corpus.get(doc_id).title for doc_id in gold]
    assert set(titles) <= {t for item in questions for t in item.metadata["supporting_titles"]}
    results = retriever.batch_search(titles, 3)
    found = sum(doc_id in _ids(hits) for doc_id, hits in zip(gold, results))
    rate = found / len(gold)
    print(f"\nhotpotqa_train_hipporag100: title -> own passage in top 3 for {found}/{len(gold)} = {rate:.1%}")
    assert rate >= 0.90


# -- the bounded-memory build equals bm25s's own index ------------------------------------------------


@pytest.mark.parametrize("method,on_disk", [("lucene", False), ("robertson", False), ("atire", False),
                                            ("lucene", True), ("atire", True)])
def test_chunked_build_gives_bm25s_own_index_array_for_array(monkeypatch, tmp_path, corpus, queries, method, on_disk):
    """The build tokenizes in chunks and assembles the score matrix itself a bucket of terms at a time (on disk
    when the index is memory-mapped); bm25s's ``index`` over all the token lists at once (the old build) must give
    the same arrays, vocabulary and results."""
    import bm25s

    from search_env.retrieval import bm25 as module
    from search_env.retrieval import bm25_build

    passages = list(corpus)[:600] + [Passage("empty-ish", "", "the of and"), Passage("dup", "Xyz", "xyz xyz xyz abc")]
    small = Corpus(passages, name="chunked")
    monkeypatch.setattr(bm25_build, "BUILD_CHUNK", 37)  # many chunks, one of them partial
    monkeypatch.setattr(bm25_build, "BUCKET_PAIRS", 1000)  # many buckets, many passes over the pairs
    monkeypatch.setattr(bm25_build, "MAX_PASSES", 1000)
    built = BM25Retriever(small, method=method, cache=tmp_path / "index" if on_disk else False, mmap=on_disk)
    if on_disk:
        assert isinstance(built._bm25.scores["data"], np.memmap)  # read back from the files the build wrote
        assert sorted(f.name for f in (tmp_path / "index").iterdir() if not f.suffix == ".json") == [
            "data.csc.index.npy", "indices.csc.index.npy", "indptr.csc.index.npy"]  # no scratch left behind

    analyzer = module._Analyzer("english", "en")
    analyzer.tokenizer.reset_vocab()
    ids = analyzer.tokenizer.tokenize([module._passage_text(p) for p in small], update_vocab=True, return_as="ids",
                                      allow_empty=True, show_progress=False)
    reference = bm25s.BM25(k1=0.9, b=0.4, method=method, backend="numpy")
    reference.index(bm25s.tokenization.Tokenized(ids=ids, vocab=analyzer.vocab), show_progress=False)

    ours = built._bm25
    for key in ("data", "indices", "indptr"):
        assert ours.scores[key].dtype == reference.scores[key].dtype
        assert np.array_equal(ours.scores[key], reference.scores[key]), key
    assert ours.scores["num_docs"] == reference.scores["num_docs"] and ours.vocab_dict == reference.vocab_dict
    for q in queries[:50] + ["xyz abc", "zzz"]:
        assert np.array_equal(built.get_scores(q), reference.get_scores(analyzer.query_ids(q)) if analyzer.query_ids(q)
                              else np.zeros(len(small)))
