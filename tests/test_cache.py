"""search_env._cache: the on-disk build (load_or_build: missing, stale, damaged, named, raced), cache_key, the LRU,
and the bundled model's conversion going through the same build."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from search_env._cache import LRU, cache_key, load_or_build


def _writer(text: str, calls: list):
    def write(folder: Path) -> None:
        calls.append(folder)
        (folder / "meta.json").write_text(text)

    return write


def _load(folder: Path) -> str:
    text = (folder / "meta.json").read_text()
    if text == "bad":
        raise ValueError("bad metadata")
    return text


def test_missing_folder_is_built_in_a_temporary_folder_then_loaded(tmp_path):
    calls: list = []
    assert load_or_build(tmp_path / "x", "meta.json", explicit=False, what="thing", load=_load,
                         write=_writer("one", calls)) == "one"
    assert calls[0].parent == tmp_path and calls[0].name.startswith(".x.tmp-")  # built beside it, renamed in
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]
    assert load_or_build(tmp_path / "x", "meta.json", explicit=True, what="thing", load=_load,
                         write=_writer("two", calls)) == "one"  # loaded, not built again
    assert len(calls) == 1


def test_an_unusable_cache_folder_is_rebuilt_with_a_warning(tmp_path, caplog):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "meta.json").write_text("bad")
    with caplog.at_level(logging.WARNING):
        assert load_or_build(tmp_path / "x", "meta.json", explicit=False, what="thing", load=_load,
                             write=_writer("good", [])) == "good"
    assert "thing cache" in caplog.text and "bad metadata" in caplog.text and "rebuilding it" in caplog.text
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "leftover").write_text("half a build")  # no marker: rebuilt too
    assert load_or_build(tmp_path / "y", "meta.json", explicit=False, what="thing", load=_load,
                         write=_writer("good", [])) == "good"
    assert not (tmp_path / "y" / "leftover").exists()


def test_a_named_folder_is_never_overwritten(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "meta.json").write_text("bad")
    with pytest.raises(ValueError, match="bad metadata"):
        load_or_build(tmp_path / "x", "meta.json", explicit=True, what="thing", load=_load, write=_writer("g", []))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not empty and holds no search_env thing"):
        load_or_build(tmp_path / "mine", "meta.json", explicit=True, what="thing", load=_load, write=_writer("g", []))
    assert (tmp_path / "x" / "meta.json").read_text() == "bad" and (tmp_path / "mine" / "notes.txt").exists()


def test_a_build_that_fails_leaves_nothing(tmp_path):
    def fail(folder: Path) -> None:
        (folder / "part").write_text("x")
        raise RuntimeError("build failed")

    with pytest.raises(RuntimeError, match="build failed"):
        load_or_build(tmp_path / "x", "meta.json", explicit=False, what="thing", load=_load, write=fail)
    assert list(tmp_path.iterdir()) == []


def test_the_first_of_two_builders_wins(tmp_path):
    """A builder that finds the folder written meanwhile (by another process) drops its copy and reads that one."""
    target = tmp_path / "x"

    def race(folder: Path) -> None:
        target.mkdir()
        (target / "meta.json").write_text("first")
        (folder / "meta.json").write_text("second")

    assert load_or_build(target, "meta.json", explicit=False, what="thing", load=_load, write=race) == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]
    assert load_or_build(tmp_path / "z", "meta.json", explicit=False, what="thing", load=_load,
                         write=_writer("kept", []), reload=False) is None


def test_cache_key():
    key = cache_key("ab" * 32, {"k1": 0.9, "b": 0.4})
    assert key.startswith("ab" * 8 + "-") and len(key) == 16 + 1 + 12
    assert key == cache_key("ab" * 32, {"b": 0.4, "k1": 0.9})  # key order does not matter
    assert key != cache_key("ab" * 32, {"k1": 1.2, "b": 0.4}) and key != cache_key("cd" * 32, {"k1": 0.9, "b": 0.4})


def test_lru_drops_the_least_recently_used():
    lru: LRU[str, int] = LRU(2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1  # a is now the most recent
    lru.put("c", 3)
    assert "b" not in lru and list(lru) == ["a", "c"] and len(lru) == 2
    assert lru.get("b") is None and lru.get("b", -1) == -1
    lru.put("a", 10)
    assert list(lru) == ["c", "a"] and lru.get("a") == 10
    copy = lru.copy()
    lru.clear()
    assert len(lru) == 0 and list(copy) == ["c", "a"]
    none: LRU[str, int] = LRU(0)
    none.put("a", 1)
    assert len(none) == 0


def test_bundled_model_conversion_uses_the_same_build(tmp_path, monkeypatch):
    """A converted-model folder without config.json (an interrupted copy) is converted again, not refused."""
    from search_env.agents import models

    monkeypatch.setenv("SEARCH_ENV_CACHE", str(tmp_path))
    conversions = []

    def fake_convert(gguf, folder):
        conversions.append(folder)
        (folder / "config.json").write_text("{}")

    monkeypatch.setattr(models, "smollm2_gguf", lambda: tmp_path / "model.gguf")
    monkeypatch.setattr(models, "_convert_smollm2", fake_convert)
    target = models._smollm2_target()
    target.mkdir(parents=True, exist_ok=True)
    (target / "stray").write_text("half a copy")
    assert models.bundled_model_dir() == target and (target / "config.json").exists()
    assert not (target / "stray").exists() and len(conversions) == 1 and conversions[0] != target
    assert models.bundled_model_dir() == target and len(conversions) == 1  # converted once


MOVED_NAMES = [("search_env.data.mapped", name, "search_env.data.pread") for name in ("pread_array", "npy_layout")] + [
    ("search_env.retrieval.bm25", name, "search_env.retrieval.bm25_build") for name in ("BUILD_CHUNK", "MAX_PASSES")]


@pytest.mark.parametrize("module,name,new", MOVED_NAMES)
def test_moved_names_still_import_with_a_warning(module, name, new):
    import importlib

    with pytest.warns(DeprecationWarning, match=f"{module}.{name} moved to {new}.{name}"):
        value = getattr(importlib.import_module(module), name)
    assert value is getattr(importlib.import_module(new), name)
    with pytest.raises(AttributeError):
        _ = importlib.import_module(module).no_such_name
