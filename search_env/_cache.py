"""The one mechanism for what search_env builds once: in this process (indexes, models, the world) and on
disk (BM25 and dense indexes, the converted bundled model).

- :func:`built_once` keeps one value per ``(kind, key)`` for the life of the process; :func:`forget` drops them.
- :func:`cache_dir` is where on-disk copies live; :func:`load_or_build` loads an index folder or builds it
  there atomically (:func:`replace_dir`), after :func:`check_index_meta` has matched it to its corpus.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

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
            f"({meta.get('corpus_name')!r}, {meta.get('num_docs')} passages, fingerprint {str(meta.get('fingerprint'))[:16]}…) "
            f"than {corpus.name!r} ({len(corpus)} passages, fingerprint {corpus.fingerprint[:16]}…); rebuild it for this corpus"
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
    directory: str | os.PathLike, meta_file: str, *, explicit: bool, what: str,
    load: Callable[[Path], None], write: Callable[[Path], None], reload: bool = True,
) -> bool:
    """Load the index in ``directory`` with ``load``, or ``write`` it there first (then load it).

    Args:
        directory: the index folder.
        meta_file: the file whose presence marks a complete index.
        explicit: the user named the folder. An unreadable index in the default cache (``False``) is rebuilt
            with a warning; in a named folder it is an error, as is a non-empty named folder with no index.
        what: names the index in messages.
        load: reads the index from a folder (raises when it cannot).
        write: writes the index into a folder.
        reload: read the index back after building it (``False``: the caller already holds it in memory).

    Returns:
        True when the index was built, False when it was loaded.
    """
    directory = Path(directory)
    stale = False
    if (directory / meta_file).exists():
        try:
            load(directory)
            return False
        except Exception as exc:
            if explicit:
                raise
            logger.warning("%s index cache %s is unreadable (%s); rebuilding it", what, directory, exc)
            stale = True
    elif directory.is_dir() and any(directory.iterdir()):
        if explicit:
            raise ValueError(f"{directory} is not empty and holds no search_env {what} index")
        stale = True
    if not replace_dir(directory, write, overwrite=stale):
        logger.info("%s index %s was written by another process meanwhile", what, directory)
    if reload:
        load(directory)
    return True
