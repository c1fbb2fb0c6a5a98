"""A corpus stored once on disk and memory-mapped: ``load_corpus(path, mmap=True)``.

Built once from a FlashRAG JSONL file, streaming (memory bounded by a few arrays of 8 bytes per passage), into a
folder of the cache (``cache_dir("corpora")``) or one you name:

- ``contents.bin``: every passage's ``contents`` as stored in the file (UTF-8, back to back), ``offsets.npy``;
- ``ids.bin`` and ``id_offsets.npy``: the ids the same way;
- ``id_hashes.npy`` (sorted 64-bit hashes of the ids) and ``id_order.npy`` (their positions): id lookup by binary
  search, with the id itself compared, so no dictionary of ids is held in memory;
- ``meta.json``: the format, the source file's size, modification time and digests of its first and last MiB,
  the corpus fingerprint (:func:`~search_env.data.collection.corpus_fingerprint`, as the in-memory corpus has it,
  so indexes are shared between the two) and the sizes every file must have.

Every process that opens the folder reads the same files, so the operating system keeps one copy of their pages
(the page cache) for all of them. The per-passage arrays are memory-mapped; a passage's text and id are read with
``pread`` (:mod:`search_env.data.pread`) rather than through a map, so a few thousand random draws do not put
hundreds of MB of shared pages in every process's RSS. A folder whose source changed, or whose files do not have the
sizes ``meta.json`` records, is rebuilt (:func:`search_env._cache.load_or_build`), never read.
:class:`MappedCorpus` implements the :class:`~search_env.data.collection.Corpus` interface (length, indexing, id
lookup, iteration, fingerprint), so the env, the vector env, IG's random draws, the retrievers and the server use
it unchanged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from array import array
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from search_env._cache import cache_dir, load_or_build
from search_env._moved import moved_names
from search_env.data.collection import Corpus, Passage, corpus_fingerprint, passage_from_record
from search_env.data.errors import DataFileError, iter_jsonl
from search_env.data.pread import pread

__all__ = ["MappedCorpus", "build_mapped_corpus", "load_mapped_corpus"]

logger = logging.getLogger(__name__)

FORMAT = 1
_EDGE = 1 << 20  # bytes of the source's head and tail that are hashed to notice a changed file


def _id_hash(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def source_signature(path: str | os.PathLike) -> dict:
    """What identifies a version of the source file without reading it all: size, mtime, head and tail digests."""
    path = Path(path)
    stat = path.stat()
    with open(path, "rb") as f:
        head = f.read(_EDGE)
        f.seek(max(0, stat.st_size - _EDGE))
        tail = f.read(_EDGE)
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "head": hashlib.sha256(head).hexdigest(),
            "tail": hashlib.sha256(tail).hexdigest()}


def build_mapped_corpus(source: str | os.PathLike, folder: str | os.PathLike) -> None:
    """Write the mapped form of the FlashRAG corpus JSONL ``source`` into ``folder`` (which must be new or empty).

    Raises:
        DataFileError: a bad record, a duplicate id or an empty corpus, naming the file and the line.
    """
    source, folder = Path(source), Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = str(source)
    offsets, id_offsets, hashes, lines = array("q", [0]), array("q", [0]), array("Q"), array("q")
    with open(folder / "contents.bin", "wb") as contents_file, open(folder / "ids.bin", "wb") as ids_file:

        def written() -> Iterator[Passage]:
            """The source's passages, each written to the files as it is read."""
            for line, record in iter_jsonl(source):
                passage = passage_from_record(record, name, line)
                data = passage.contents.encode("utf-8", "surrogatepass")
                contents_file.write(data)
                offsets.append(offsets[-1] + len(data))
                id_bytes = passage.id.encode("utf-8", "surrogatepass")
                ids_file.write(id_bytes)
                id_offsets.append(id_offsets[-1] + len(id_bytes))
                hashes.append(_id_hash(id_bytes))
                lines.append(line)
                yield passage

        fingerprint = corpus_fingerprint(written())
    if not hashes:
        raise DataFileError(name, None, "the corpus has no passages")
    hash_array = np.frombuffer(hashes, dtype=np.uint64)
    order = np.argsort(hash_array, kind="stable")
    sorted_hashes = hash_array[order]
    ids = np.memmap(folder / "ids.bin", dtype=np.uint8, mode="r") if id_offsets[-1] else np.zeros(0, np.uint8)
    id_off = np.frombuffer(id_offsets, dtype=np.int64)
    for k in np.flatnonzero(sorted_hashes[1:] == sorted_hashes[:-1]):  # equal hashes: compare the ids themselves
        a, b = sorted(int(i) for i in order[k : k + 2])
        if bytes(ids[id_off[a] : id_off[a + 1]]) == bytes(ids[id_off[b] : id_off[b + 1]]):
            raise DataFileError(name, lines[b], f"duplicate id {bytes(ids[id_off[b]:id_off[b + 1]]).decode()!r} "
                                                f"(first on line {lines[a]})")
    del ids
    np.save(folder / "offsets.npy", np.frombuffer(offsets, dtype=np.int64))
    np.save(folder / "id_offsets.npy", id_off)
    np.save(folder / "id_hashes.npy", sorted_hashes)
    np.save(folder / "id_order.npy", order.astype(np.int64))
    files = ("contents.bin", "ids.bin", "offsets.npy", "id_offsets.npy", "id_hashes.npy", "id_order.npy")
    meta = {"format": FORMAT, "name": name, "num_docs": len(hashes), "fingerprint": fingerprint,
            "source": source_signature(source), "sizes": {f: (folder / f).stat().st_size for f in files}}
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))


class MappedCorpus(Corpus):
    """The :class:`Corpus` of a mapped folder: passages stay on disk, memory-mapped (see the module docstring).

    Raises:
        ValueError: ``folder`` holds no complete mapped corpus of this format, or a file has the wrong size.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        meta_path = self.folder / "meta.json"
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{self.folder}: no mapped corpus here ({exc})") from None
        if meta.get("format") != FORMAT:
            raise ValueError(f"{self.folder}: mapped corpus format {meta.get('format')}, this code reads {FORMAT}")
        for file, size in meta["sizes"].items():
            path = self.folder / file
            if not path.exists() or path.stat().st_size != size:
                raise ValueError(f"{self.folder}: {file} is missing or has the wrong size (corrupted)")
        self.meta, self.name, self._fingerprint = meta, meta["name"], meta["fingerprint"]
        n = int(meta["num_docs"])
        self._offsets, self._id_offsets = self._map_npy("offsets.npy"), self._map_npy("id_offsets.npy")
        self._hashes, self._order = self._map_npy("id_hashes.npy"), self._map_npy("id_order.npy")
        if not (len(self._offsets) == len(self._id_offsets) == n + 1 and len(self._hashes) == len(self._order) == n):
            raise ValueError(f"{self.folder}: arrays do not match num_docs={n} (corrupted)")
        self._contents = self._open("contents.bin", int(self._offsets[-1]))
        self._ids = self._open("ids.bin", int(self._id_offsets[-1]))
        self._n = n

    def _open(self, file: str, size: int):
        if (self.folder / file).stat().st_size != size:
            raise ValueError(f"{self.folder}: {file} does not match its offsets (corrupted)")
        return open(self.folder / file, "rb", buffering=0)

    def __reduce__(self):
        # A copy in another process (gymnasium's AsyncVectorEnv, multiprocessing) opens the same files again and
        # shares their pages, instead of receiving every passage through a pipe.
        return type(self), (self.folder,)

    def _map_npy(self, file: str) -> np.ndarray:
        try:
            return np.load(self.folder / file, mmap_mode="r")
        except ValueError as exc:
            raise ValueError(f"{self.folder}: {file}: {exc} (corrupted)") from None

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._n))]
        i = int(i)
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(f"passage index {i} out of range for {self._n} passages")
        return Passage.from_contents(self.id_at(i), self.stored_contents(i))

    def __iter__(self) -> Iterator[Passage]:
        # Read in order through a file object, not the map: a pass over the whole corpus (an index build) then
        # leaves no file pages mapped in this process.
        with open(self.folder / "contents.bin", "rb") as f:
            for i in range(self._n):
                size = int(self._offsets[i + 1] - self._offsets[i])
                yield Passage.from_contents(self.id_at(i), f.read(size).decode("utf-8", "surrogatepass"))

    def _id_bytes(self, i: int) -> bytes:
        start, end = int(self._id_offsets[i]), int(self._id_offsets[i + 1])
        return pread(self._ids, end - start, start)

    def id_at(self, i: int) -> str:
        return self._id_bytes(i).decode("utf-8", "surrogatepass")

    def stored_contents(self, i: int) -> str:
        """Passage ``i``'s ``contents`` exactly as the source file has it."""
        start, end = int(self._offsets[i]), int(self._offsets[i + 1])
        return pread(self._contents, end - start, start).decode("utf-8", "surrogatepass")

    def _find(self, item_id: str) -> int | None:
        data = item_id.encode("utf-8", "surrogatepass")
        h = np.uint64(_id_hash(data))
        k = int(np.searchsorted(self._hashes, h))
        while k < self._n and self._hashes[k] == h:
            position = int(self._order[k])
            if self._id_bytes(position) == data:
                return position
            k += 1
        return None

    def position(self, item_id: str) -> int:
        found = self._find(item_id)
        if found is None:
            raise KeyError(item_id)
        return found

    @property
    def ids(self) -> list[str]:
        return [self.id_at(i) for i in range(self._n)]

    @property
    def fingerprint(self) -> str:
        return self._fingerprint


def load_mapped_corpus(source: str | os.PathLike, folder: str | os.PathLike | None = None) -> MappedCorpus:
    """The mapped form of ``source`` (a FlashRAG corpus JSONL), built on first use and rebuilt when the source
    changed or the folder is damaged; ``folder`` defaults to ``cache_dir("corpora")/<name>-<hash of the path>``."""
    source = Path(source).resolve()
    if not source.exists():
        raise DataFileError(str(source), None, "no such file")
    if folder is None:
        folder = cache_dir("corpora") / f"{source.stem}-{hashlib.sha256(str(source).encode()).hexdigest()[:12]}"
    folder = Path(folder)

    def load(folder: Path) -> MappedCorpus:
        corpus = MappedCorpus(folder)
        if corpus.meta["source"] != source_signature(source):
            raise ValueError(f"{source} changed since {folder} was built")
        return corpus

    def build(tmp: Path) -> None:
        logger.warning("search_env: building the memory-mapped corpus %s from %s (once)", folder, source)
        build_mapped_corpus(source, tmp)

    # A mapped folder is always a derived copy of its source: one that cannot be used is rebuilt, named or not.
    return load_or_build(folder, "meta.json", explicit=False, what="memory-mapped corpus", load=load, write=build)


__getattr__ = moved_names(__name__, {"npy_layout": "search_env.data.pread", "pread_array": "search_env.data.pread"})
