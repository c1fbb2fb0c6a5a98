"""DenseRetriever: retrieval quality on the built-in world, saved indexes, corpus checks, FAISS parity."""

from __future__ import annotations

import importlib.util
import json
import shutil

import gymnasium as gym
import numpy as np
import pytest

import search_env  # noqa: F401  (registers the env)
from search_env._cache import forget
from search_env.data import Corpus, Passage
from search_env.data.synthetic import build_world
from search_env.retrieval import make_retriever
from search_env.retrieval.dense import DenseRetriever, get_dense
from search_env.retrieval.encoder import DEFAULT_ENCODER, Encoder, get_encoder

pytestmark = pytest.mark.slow  # loads the bundled encoder (~2 s) and embeds a few hundred passages


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One intra-op thread: with pytest-xdist workers sharing few cores, more threads stall each other
    (measured on 2 cores under load: a query took ~1 s with 2 threads, 27 ms with 1)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return get_encoder()


@pytest.fixture(scope="module")
def world():
    return build_world(seed=0, n_passages=200)


@pytest.fixture(scope="module")
def world_index(world, encoder, tmp_path_factory):
    """The world's dense index, built once into a folder the tests reload from."""
    directory = tmp_path_factory.mktemp("dense") / "world"
    return DenseRetriever(world.corpus, encoder, cache=directory), directory


@pytest.fixture(scope="module")
def tiny_index(tiny_corpus, encoder, tmp_path_factory):
    directory = tmp_path_factory.mktemp("dense") / "tiny"
    return DenseRetriever(tiny_corpus, encoder, cache=directory), directory


def _ids(results):
    return [[hit.doc_id for hit in hits] for hits in results]


def test_finds_gold_passages_better_than_chance(world, world_index):
    retriever, _ = world_index
    one_hop = [q for q in world.questions if q.metadata["hops"] == 1]
    assert len(one_hop) >= 20
    k = 3
    results = retriever.batch_search([q.question for q in one_hop], k)
    found = [bool(set(q.metadata["supporting_doc_ids"]) & set(ids)) for q, ids in zip(one_hop, _ids(results))]
    recall, chance = np.mean(found), k / len(world.corpus)
    assert recall >= 0.6 and recall > 10 * chance, (recall, chance)


def test_paraphrased_queries_find_their_passage(tiny_index):
    """Queries that share almost no words with the passage still rank it first."""
    retriever, _ = tiny_index
    paraphrases = {
        "Which nation has Karvesh as its seat of government?": "k0",
        "Omrith: the town on the river, set on the ancient salt route": "c1",
    }
    for query, gold in paraphrases.items():
        assert retriever.search(query, 3)[0].doc_id == gold, query


def test_saved_index_reloads_to_identical_results(world, world_index):
    retriever, directory = world_index
    queries = [q.question for q in world.questions[:15]]
    reloaded = DenseRetriever.load(directory, world.corpus)  # encoder settings read from the index
    assert isinstance(reloaded.embeddings, np.memmap)
    assert reloaded.batch_search(queries, 5) == retriever.batch_search(queries, 5)
    in_memory = DenseRetriever.load(directory, world.corpus, mmap=False)
    assert not isinstance(in_memory.embeddings, np.memmap)
    assert in_memory.batch_search(queries, 5) == retriever.batch_search(queries, 5)
    assert {"embeddings.npy", "ids.json", "meta.json"} <= {p.name for p in directory.iterdir()}
    meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))  # the format earlier versions wrote
    assert set(meta) == {"format", "encoder", "fingerprint", "num_docs", "corpus_name", "dtype"}
    assert (meta["format"], meta["fingerprint"], meta["num_docs"]) == (1, world.corpus.fingerprint, len(world.corpus))
    assert meta["encoder"] == retriever.encoder.config() and meta["dtype"] == "float32"


def test_save_copies_the_index(tiny_corpus, tiny_index, tmp_path):
    retriever, _ = tiny_index
    memory_only = DenseRetriever(tiny_corpus, retriever.encoder, cache=False)
    memory_only.save(tmp_path / "copy")
    reloaded = DenseRetriever.load(tmp_path / "copy", tiny_corpus, retriever.encoder)
    np.testing.assert_array_equal(reloaded.embeddings, retriever.embeddings)


def test_index_of_another_corpus_is_refused(tiny_corpus, tiny_index):
    _, directory = tiny_index
    changed = Corpus([*tiny_corpus[:-1], Passage("f29", "Notes 29", "Something else entirely.")], name="changed")
    with pytest.raises(ValueError, match="different corpus.*rebuild"):
        DenseRetriever.load(directory, changed)
    with pytest.raises(ValueError, match="different corpus"):
        DenseRetriever.load(directory, Corpus(tiny_corpus[:10], name="subset"))


def test_index_of_another_encoder_is_refused(tiny_corpus, tiny_index):
    _, directory = tiny_index
    other = get_encoder(query_prefix="query: ", passage_prefix="passage: ")
    with pytest.raises(ValueError, match="built with encoder"):
        DenseRetriever.load(directory, tiny_corpus, other)


def test_unrelated_folder_is_refused(tiny_corpus, encoder, tmp_path):
    (tmp_path / "notes.txt").write_text("not an index")
    with pytest.raises(ValueError, match="holds no search_env dense index"):
        DenseRetriever(tiny_corpus, encoder, cache=tmp_path)
    with pytest.raises(FileNotFoundError):
        DenseRetriever.load(tmp_path / "missing", tiny_corpus)


def test_batch_search_matches_search(world, world_index):
    retriever, _ = world_index
    queries = [q.question for q in world.questions[:8]]
    batch = retriever.batch_search(queries, 4)
    single = [retriever.search(q, 4) for q in queries]
    assert _ids(batch) == _ids(single)
    for a, b in zip(batch, single):
        np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=1e-5)


def test_edge_cases(tiny_corpus, tiny_index):
    retriever, _ = tiny_index
    assert len(retriever.search("river city", 1000)) == len(tiny_corpus)  # k clamped to the corpus
    assert retriever.search("river city", 0) == []
    assert retriever.batch_search([], 3) == []
    assert len(retriever.search("", 2)) == 2  # an empty query still has a vector
    hits = retriever.search("Karvesh", 5)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # a score is the cosine similarity of the unit query and passage vectors, and these are the 5 best of them
    query = retriever.encoder.encode(["Karvesh"], "query")[0]
    cosines = np.asarray(retriever.embeddings) @ query
    np.testing.assert_allclose(np.linalg.norm(retriever.embeddings, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose([h.score for h in hits], np.sort(cosines)[::-1][:5], atol=1e-5)
    assert [h.doc_id for h in hits] == [tiny_corpus[int(i)].id for i in np.argsort(-cosines, kind="stable")[:5]]
    with pytest.raises(TypeError):
        retriever.batch_search(["ok", 3], 2)


def test_duplicate_passages_tie_by_position(encoder):
    corpus = Corpus([Passage(f"d{i}", "Same", "An identical passage.") for i in range(5)]
                    + [Passage("x", "Other", "Something different.")], name="dups")
    retriever = DenseRetriever(corpus, encoder, cache=False)
    assert [h.doc_id for h in retriever.search("identical passage", 3)] == ["d0", "d1", "d2"]


def test_encoder_vectors(encoder):
    vectors = encoder.encode(["a river city", "a country"], "passage")
    assert vectors.shape == (2, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert encoder.pooling == "mean"  # read from the bundled sentence-transformers config
    assert get_encoder("bundled") is encoder and encoder.name == DEFAULT_ENCODER  # one model per settings
    prefixed = get_encoder(query_prefix="query: ")
    assert not np.allclose(prefixed.encode(["a river city"]), encoder.encode(["a river city"]))
    with pytest.raises(ValueError, match="kind"):
        encoder.encode(["x"], "document")


def test_cache_dir_is_reused(tiny_corpus, encoder, tmp_path, monkeypatch):
    monkeypatch.setenv("SEARCH_ENV_CACHE", str(tmp_path))
    forget("dense")
    first = DenseRetriever(tiny_corpus, encoder)
    assert first.directory.parent == tmp_path / "dense"
    calls = []
    with monkeypatch.context() as patch:
        def counting_encode(texts, kind="query", **kwargs):
            calls.append(kind)
            return Encoder.encode(encoder, texts, kind, **kwargs)

        patch.setattr(encoder, "encode", counting_encode)
        second = DenseRetriever(tiny_corpus, encoder)
    assert "passage" not in calls  # loaded, not re-embedded
    np.testing.assert_array_equal(first.embeddings, second.embeddings)
    shared = get_dense(tiny_corpus)
    assert get_dense(tiny_corpus) is shared
    forget("dense")  # dropped from the process: made again (loaded from the cache folder)
    assert get_dense(tiny_corpus) is not shared
    (first.directory / "meta.json").write_text("{")  # a damaged cache entry is rebuilt, not fatal
    rebuilt = DenseRetriever(tiny_corpus, encoder, cache=True)
    np.testing.assert_array_equal(rebuilt.embeddings, first.embeddings)
    forget("dense")


def test_gym_make_with_dense_retriever(tiny_corpus, tiny_questions, tmp_path, monkeypatch):
    monkeypatch.setenv("SEARCH_ENV_CACHE", str(tmp_path))
    forget("dense")
    env = gym.make("search_env:SearchQA-v0", questions=tiny_questions, corpus=tiny_corpus, retriever="dense", ig=False)
    env.reset(seed=0, options={"question_id": "q0"})
    _, _, _, _, info = env.step("<search> In which country is the river city Karvesh? </search>")
    assert info["action_type"] == "search" and "c0" in info["doc_ids"]
    assert isinstance(env.unwrapped.retriever, DenseRetriever)
    with pytest.raises(ValueError, match="pass `corpus`"):
        make_retriever("dense")
    forget("dense")


needs_faiss = pytest.mark.skipif(
    importlib.util.find_spec("faiss") is None, reason="FAISS indexes need faiss-cpu (the `dense` extra)"
)


@pytest.fixture(scope="module")
def query_vectors(world, encoder):
    return encoder.encode([q.question for q in world.questions], "query")


@needs_faiss
def test_faiss_flat_equals_numpy(world, world_index, query_vectors):
    retriever, directory = world_index
    flat = DenseRetriever.load(directory, world.corpus, index="flat")
    exact_pos, exact_scores = retriever.search_vectors(query_vectors, 5)
    pos, scores = flat.search_vectors(query_vectors, 5)
    np.testing.assert_array_equal(pos, exact_pos)
    np.testing.assert_allclose(scores, exact_scores, atol=1e-5)
    queries = [q.question for q in world.questions[:10]]
    assert _ids(flat.batch_search(queries, 3)) == _ids(retriever.batch_search(queries, 3))


@needs_faiss
@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_faiss_approximate_indexes(world, world_index, query_vectors, kind):
    retriever, directory = world_index
    approx = DenseRetriever.load(directory, world.corpus, index=kind)
    exact_pos, _ = retriever.search_vectors(query_vectors, 5)
    pos, scores = approx.search_vectors(query_vectors, 5)
    overlap = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(exact_pos.tolist(), pos.tolist())])
    assert overlap >= 0.9, overlap
    saved = [p for p in directory.iterdir() if p.name.startswith(f"faiss-{kind}")]
    assert len(saved) == 1 and [f.name for f in saved[0].iterdir()] == ["index.faiss"]  # built once, beside them
    assert not [p for p in directory.iterdir() if p.name.startswith(".")]  # no temporary folder left behind
    again = DenseRetriever.load(directory, world.corpus, index=kind)
    np.testing.assert_array_equal(again.search_vectors(query_vectors, 5)[0], pos)
    shutil.rmtree(saved[0])


def test_faiss_missing_gives_install_hint(tiny_corpus, encoder, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` fail
    with pytest.raises(ImportError, match=r"search_env\[dense\]"):
        DenseRetriever(tiny_corpus, encoder, index="hnsw", cache=False)
    with pytest.raises(ValueError, match="index must be one of"):
        DenseRetriever(tiny_corpus, encoder, index="annoy", cache=False)
