"""search_env.data.mapped: the memory-mapped corpus gives what the in-memory one gives (passages, lookups,
fingerprint, env episodes, IG draws, retrieval), keeps contents as stored, and a stale or damaged folder is rebuilt,
never read."""

import json
import logging
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

from search_env.data import Passage, load_corpus
from search_env.data.collection import Corpus, MemoryCorpus, corpus_fingerprint
from search_env.data.errors import DataFileError
from search_env.data.mapped import MappedCorpus, load_mapped_corpus
from search_env.env import SearchQAEnv
from search_env.info_gain import IGConfig
from search_env.retrieval.bm25 import BM25Retriever


@pytest.fixture
def source(tmp_path, tiny_corpus):
    path = tmp_path / "corpus.jsonl"
    tiny_corpus.to_jsonl(path)
    with open(path, "a", encoding="utf-8") as f:  # rows a rebuilt "contents" would change
        f.write(json.dumps({"id": "odd1", "contents": "no title line here, Karvesh"}) + "\n")
        f.write(json.dumps({"id": "odd2", "contents": "Title without quotes\nBody  text about Omrith "}) + "\n")
        f.write(json.dumps({"id": "ünï", "title": "Ünicode", "text": "Veltrania ✓"}) + "\n")
    return path


def test_the_same_corpus_as_in_memory(source, tmp_path):
    memory, mapped = load_corpus(source), load_mapped_corpus(source, tmp_path / "mapped")
    assert isinstance(mapped, MappedCorpus) and isinstance(mapped, Corpus)
    assert len(mapped) == len(memory) and list(mapped) == list(memory) and mapped.ids == memory.ids
    assert mapped.fingerprint == memory.fingerprint and mapped.name == memory.name
    for i in (0, 5, -1, len(memory) - 3):
        assert mapped[i] == memory[i] and mapped[i].contents == memory[i].contents
    assert mapped[2:6] == list(memory[2:6])
    for pid in ("c0", "k2", "odd1", "ünï"):
        assert pid in mapped and mapped.position(pid) == memory.position(pid) and mapped.get(pid) == memory.get(pid)
    assert "nope" not in mapped and 3 not in mapped
    with pytest.raises(KeyError):
        mapped.get("nope")
    with pytest.raises(IndexError):
        mapped[len(mapped)]
    assert mapped.get("odd1").contents == "no title line here, Karvesh"  # as stored, not rebuilt
    assert mapped.get("odd2").contents == "Title without quotes\nBody  text about Omrith "
    assert memory.get("odd2").contents == mapped.get("odd2").contents


def test_one_corpus_interface_and_one_fingerprint(source, tmp_path):
    """Both corpora implement Corpus; the mapped one holds none of the in-memory one's parts; the fingerprint the
    build recorded is corpus_fingerprint's over the passages, as the in-memory corpus computes it."""
    memory, mapped = load_corpus(source), load_mapped_corpus(source, tmp_path / "mapped")
    assert type(memory) is MemoryCorpus and isinstance(memory, Corpus)
    assert isinstance(mapped, Corpus) and not isinstance(mapped, MemoryCorpus) and not hasattr(mapped, "_items")
    assert mapped.fingerprint == corpus_fingerprint(mapped) == corpus_fingerprint(memory) == memory.fingerprint
    changed = Corpus([*memory[:-1], Passage(memory[-1].id, memory[-1].title, memory[-1].text + ".")])
    assert changed.fingerprint != memory.fingerprint
    assert Corpus(list(memory), name="other").fingerprint == memory.fingerprint  # the name is not part of it
    assert Corpus.__abstractmethods__ == {"__len__", "__getitem__", "position", "fingerprint"}  # what to implement


def test_episodes_ig_draws_and_retrieval_are_identical(source, tmp_path, tiny_questions, fake_scorer):
    memory, mapped = load_corpus(source), load_corpus(source, mmap=True)
    assert isinstance(mapped, MappedCorpus)
    queries = ["Karvesh", "capital of Osmundia", "harbour guild", "Omrith", "Veltrania"]
    assert BM25Retriever(memory, cache=False).batch_search(queries, 4) == BM25Retriever(
        mapped, cache=False
    ).batch_search(queries, 4)
    runs = []
    for corpus in (memory, mapped):
        env = SearchQAEnv(
            questions=tiny_questions, corpus=corpus, scorer=fake_scorer, ig=IGConfig(n_random=3, per_document=True)
        )
        steps = []
        for seed in range(3):
            env.reset(seed=seed)
            for action in (
                "<search> Karvesh </search>",
                "<search> Omrith capital </search>",
                "<answer> Veltrania </answer>",
            ):
                obs, reward, term, trunc, info = env.step(action)
                steps.append((obs, reward, term, info.get("ig"), info.get("ig_detail"), info.get("doc_gains")))
        runs.append(steps)
    assert runs[0] == runs[1]


def test_a_pickled_corpus_reopens_the_files(source, tmp_path):
    mapped = load_mapped_corpus(source, tmp_path / "mapped")
    data = pickle.dumps(mapped)
    assert len(data) < 1000  # the folder, not the passages
    copy = pickle.loads(data)
    assert isinstance(copy, MappedCorpus) and list(copy) == list(mapped) and copy.fingerprint == mapped.fingerprint


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
def test_reading_passages_maps_no_text_pages(source, tmp_path):
    """Passages are read with pread: nothing of contents.bin or ids.bin is mapped, so random draws cost no RSS."""
    mapped = load_mapped_corpus(source, tmp_path / "mapped")
    rng = np.random.default_rng(0)
    texts = [mapped[int(i)].text for i in rng.integers(0, len(mapped), 50)]
    assert all(isinstance(t, str) for t in texts) and mapped.get("ünï").text == "Veltrania ✓"
    maps = Path("/proc/self/maps").read_text()
    assert str(tmp_path / "mapped" / "offsets.npy") in maps  # the arrays are mapped
    assert "contents.bin" not in maps and "ids.bin" not in maps


def test_a_changed_source_is_rebuilt(source, tmp_path):
    folder = tmp_path / "mapped"
    first = load_mapped_corpus(source, folder)
    n = len(first)
    with open(source, "a", encoding="utf-8") as f:
        f.write(json.dumps({"id": "new", "contents": '"New"\nA new passage.'}) + "\n")
    again = load_mapped_corpus(source, folder)
    assert len(again) == n + 1 and again.get("new").text == "A new passage."


@pytest.mark.parametrize("damage", ["truncate", "meta", "delete"])
def test_a_damaged_folder_is_detected_and_rebuilt_never_read(source, tmp_path, damage, caplog):
    folder = tmp_path / "mapped"
    load_mapped_corpus(source, folder)
    if damage == "truncate":
        with open(folder / "contents.bin", "r+b") as f:
            f.truncate(10)
    elif damage == "meta":
        (folder / "meta.json").write_text("{not json")
    else:
        (folder / "id_order.npy").unlink()
    with pytest.raises(ValueError):
        MappedCorpus(folder)
    with caplog.at_level(logging.WARNING):
        rebuilt = load_mapped_corpus(source, folder)
    assert list(rebuilt) == list(load_corpus(source)) and "building the memory-mapped corpus" in caplog.text


MAPPED_FILES = ["contents.bin", "ids.bin", "offsets.npy", "id_offsets.npy", "id_hashes.npy", "id_order.npy"]


@pytest.mark.parametrize("file", MAPPED_FILES)
@pytest.mark.parametrize("meta_agrees", [False, True], ids=["meta-size", "own-size"])
def test_a_truncated_file_is_named_and_rebuilt(source, tmp_path, file, meta_agrees, caplog):
    """A file cut short is refused by name, whether meta.json's recorded size shows it or (meta.json rewritten to
    the short size) only the offsets or the array header do; load_mapped_corpus then rebuilds the folder."""
    folder = tmp_path / "mapped"
    load_mapped_corpus(source, folder)
    path = folder / file
    short = path.stat().st_size - 3
    with open(path, "r+b") as f:
        f.truncate(short)
    if meta_agrees:
        meta = json.loads((folder / "meta.json").read_text())
        meta["sizes"][file] = short
        (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=rf"{file}.*\(corrupted\)"):
        MappedCorpus(folder)
    with caplog.at_level(logging.WARNING):
        rebuilt = load_mapped_corpus(source, folder)
    assert list(rebuilt) == list(load_corpus(source)) and "rebuilding it" in caplog.text


@pytest.mark.parametrize("file", MAPPED_FILES)
def test_a_file_grown_past_its_recorded_size_is_refused(source, tmp_path, file):
    """Bytes appended to a file (an array's header still reads) are caught by the sizes meta.json recorded."""
    folder = tmp_path / "mapped"
    load_mapped_corpus(source, folder)
    with open(folder / file, "ab") as f:
        f.write(b"\0" * 8)
    with pytest.raises(ValueError, match=rf"{file}.*\(corrupted\)"):
        MappedCorpus(folder)


def test_bad_sources(tmp_path):
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": "a", "contents": "x"}\n{"id": "b", "contents": "y"}\n{"id": "a", "contents": "z"}\n')
    with pytest.raises(DataFileError, match=r"dup.jsonl:3: duplicate id 'a' \(first on line 1\)"):
        load_mapped_corpus(dup, tmp_path / "m1")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "contents": "x"}\n{"id": "b"}\n')
    with pytest.raises(DataFileError, match="bad.jsonl:2: missing 'contents'"):
        load_mapped_corpus(bad, tmp_path / "m2")
    with pytest.raises(DataFileError, match="no such file"):
        load_mapped_corpus(tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="needs a corpus JSONL path"):
        load_corpus([{"id": "a", "contents": "x"}], mmap=True)


def test_many_passages_lookup(tmp_path):
    path = tmp_path / "big.jsonl"
    with open(path, "w") as f:
        for i in range(5000):
            f.write(json.dumps({"id": f"doc-{i}", "contents": f'"T{i}"\nText {i}'}) + "\n")
    mapped = load_mapped_corpus(path, tmp_path / "m")
    rng = np.random.default_rng(0)
    for i in rng.integers(0, 5000, size=200):
        assert mapped.position(f"doc-{i}") == i and mapped[int(i)].text == f"Text {i}"
