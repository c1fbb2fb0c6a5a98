"""The one mechanism for what search_env builds once: in this process (indexes, models, the world) and on
disk (BM25 and dense indexes, FAISS indexes, mapped corpora, the converted bundled model).

- :func:`built_once` keeps one value per ``(kind, key)`` for the life of the process; :func:`forget` drops them.
- :func:`cache_dir` is where on-disk copies live, :func:`cache_key` names one by its corpus fingerprint and build
  settings; :func:`load_or_build` loads a folder or, when it is missing or cannot be used, builds it into a
  temporary folder renamed into place (:func:`replace_dir`); :func:`check_index_meta` matches an index to its
  corpus.
- :class:`LRU` is the one bounded in-memory cache (least recently used entries go first).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

logger = logging.getLogger(__name__)

_BUILT: dict[tuple[str, Hashable], Any] = {}
_KEY_LOCKS: dict[tuple[str, Hashable], threading.Lock] = {}
_LOCK = threading.Lock()


def cache_dir(*parts: str) -> Path:
    """``$SEARCH_ENV_CACHE`` or ``$XDG_CACHE_HOME/search_env`` (``~/.cache/search_env``), created on use."""
    root = os.environ.get("SEARCH_ENV_CACHE")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "search_env")
    path = Path(root, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_key(fingerprint: str, settings: Mapping[str, Any]) -> str:
    """The folder name of an on-disk copy: the start of the corpus ``fingerprint`` and a digest of the build
    ``settings`` (JSON, sorted keys), so another corpus or other settings get another folder."""
    spec = json.dumps(dict(settings), sort_keys=True)
    return f"{fingerprint[:16]}-{hashlib.sha256(spec.encode()).hexdigest()[:12]}"


def built_once(kind: str, key: Hashable, build: Callable[[], T]) -> T:
    """The value built for ``(kind, key)`` in this process; ``build()`` runs once per key.

    Concurrent callers of one key wait for the first build; different keys build in parallel.
    """
    full = (kind, key)
    with _LOCK:
        if full in _BUILT:
            return _BUILT[full]
        lock = _KEY_LOCKS.setdefault(full, threading.Lock())
    with lock:
        with _LOCK:
            if full in _BUILT:
                return _BUILT[full]
        value = build()
        with _LOCK:
            _BUILT[full] = value
        return value


def forget(kind: str | None = None) -> None:
    """Drop what :func:`built_once` kept (of one ``kind``, or everything); on-disk caches stay."""
    with _LOCK:
        for full in [k for k in _BUILT if kind is None or k[0] == kind]:
            del _BUILT[full]


def replace_dir(directory: str | os.PathLike, write: Callable[[Path], None], *, overwrite: bool) -> bool:
    """Write a directory atomically: ``write(tmp)`` into a sibling temporary folder, then rename it into place.

    Args:
        directory: the folder to create or replace.
        write: fills the temporary folder it is given.
        overwrite: replace a ``directory`` that already holds files (else keep it: another process
            finished the same build first).

    Returns:
        True when the new copy was moved into place, False when it was dropped.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        write(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is a normal folder
        try:
            os.replace(tmp, directory)  # atomic; succeeds when the target is missing or an empty folder
            return True
        except OSError:
            if not overwrite:
                shutil.rmtree(tmp, ignore_errors=True)
                return False
        trash = directory.parent / f".{directory.name}.old-{uuid.uuid4().hex}"
        os.replace(directory, trash)
        os.replace(tmp, directory)
        shutil.rmtree(trash, ignore_errors=True)
        return True
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_index_meta(
    directory: str | os.PathLike, meta_file: str, *, what: str, format_version: int, corpus: Any,
    expect: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Read an index's metadata and refuse it when its format, its corpus or any ``expect`` entry differs.

    Args:
        directory: the index folder.
        meta_file: the metadata file's name in it (JSON, as :func:`index_meta` makes it).
        what: names the index in errors (``"BM25"``, ``"dense"``).
        format_version: the on-disk format this code reads.
        corpus: anything with ``fingerprint``, ``name`` and a length.
        expect: other entries that must match (build parameters).

    Returns:
        The metadata.

    Raises:
        ValueError: another format, another corpus, or another value of an ``expect`` entry.
    """
    meta = json.loads(Path(directory, meta_file).read_text(encoding="utf-8"))
    if meta.get("format") != format_version:
        raise ValueError(f"{what} index {directory} has format {meta.get('format')!r}, expected {format_version}")
    if meta.get("fingerprint") != corpus.fingerprint or meta.get("num_docs") != len(corpus):
        raise ValueError(
            f"{what} index {directory} was built from a different corpus "
            f"({meta.get('corpus_name')!r}, {meta.get('num_docs')} passages, "
            f"fingerprint {str(meta.get('fingerprint'))[:16]}…) than {corpus.name!r} ({len(corpus)} passages, "
            f"fingerprint {corpus.fingerprint[:16]}…); rebuild it for this corpus"
        )
    for key, value in (expect or {}).items():
        if meta.get(key) != value:
            raise ValueError(f"{what} index {directory} was built with {key} {meta.get(key)}, not {value}")
    return meta


def index_meta(*, format_version: int, corpus: Any, **extra: Any) -> dict[str, Any]:
    """The metadata :func:`check_index_meta` reads back: format, corpus fingerprint, size and name, ``extra``."""
    return {"format": format_version, "fingerprint": corpus.fingerprint, "num_docs": len(corpus),
            "corpus_name": corpus.name, **extra}


def load_or_build(
    directory: str | os.PathLike, marker: str, *, explicit: bool, what: str,
    load: Callable[[Path], T], write: Callable[[Path], None], reload: bool = True,
) -> T | None:
    """``load(directory)``, after ``write`` has built the folder when it is missing or cannot be used.

    The build goes into a temporary folder next to ``directory`` that is renamed into place (:func:`replace_dir`),
    so a reader never sees half a folder and concurrent builders leave one complete copy.

    Args:
        directory: the folder.
        marker: the file whose presence marks a complete folder (its metadata).
        explicit: the user named the folder. One that cannot be used in the default cache (``False``) is rebuilt
            with a warning; in a named folder it is an error, as is a non-empty named folder with no ``marker``.
        what: names the folder's contents in messages.
        load: reads the folder; raises when it cannot be used (damaged, stale, built for something else).
        write: fills the (empty, temporary) folder it is given.
        reload: read the folder back after building it (``False``: the caller already holds what it built).

    Returns:
        What ``load`` returned, or None when the folder was built and not read back.
    """
    directory = Path(directory)
    stale = False
    if (directory / marker).exists():
        try:
            return load(directory)
        except Exception as exc:
            if explicit:
                raise
            logger.warning("%s cache %s cannot be used (%s); rebuilding it", what, directory, exc)
            stale = True
    elif directory.is_dir() and any(directory.iterdir()):
        if explicit:
            raise ValueError(f"{directory} is not empty and holds no search_env {what}")
        stale = True
    if not replace_dir(directory, write, overwrite=stale):
        logger.info("%s %s was written by another process meanwhile", what, directory)
    return load(directory) if reload else None


class LRU(Generic[K, V]):
    """At most ``size`` entries, the least recently used dropped first; ``size`` 0 keeps nothing.

    Not locked: a caller shared between threads holds its own lock around each call.
    """

    def __init__(self, size: int):
        self.size = int(size)
        self._data: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K, default: V | None = None) -> V | None:
        """The value of ``key`` (now the most recently used), or ``default``."""
        try:
            self._data.move_to_end(key)
        except KeyError:
            return default
        return self._data[key]

    def put(self, key: K, value: V) -> None:
        """Keep ``value`` as the most recently used, dropping the least recently used past ``size``."""
        if self.size <= 0:
            return
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[K]:
        """Keys, least recently used first."""
        return iter(self._data)

    def copy(self) -> LRU[K, V]:
        other: LRU[K, V] = LRU(self.size)
        other._data = OrderedDict(self._data)
        return other
