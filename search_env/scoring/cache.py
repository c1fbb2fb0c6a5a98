"""Caches of answer scores: :class:`MemoryScoreCache`, the scorers' in-memory LRU cache (safe to share between
threads), and :class:`DiskScoreCache`, a persistent on-disk cache shared by processes: reruns and extra seeds of a
study with a frozen scorer do not run the model again for a (context, answer) pair it has scored before.

Entries are keyed by a **model fingerprint** (:func:`model_fingerprint`: a digest of the weights, the model's
config, the tokenizer and the scoring settings, so any change to one of them gives new keys), the context and the
answer. How pairs are batched (batch size, prefix sharing) is not part of the key: it moves a score only by float
rounding (under 1e-5), so a stored value can differ in its last digits from one computed afresh in another batch.
:class:`DiskScoreCache` keeps them in one SQLite file in write-ahead-log mode: any number of processes read and
write it at once (writers take turns, waiting up to ``timeout`` seconds), a crash loses at most the
batch being written, and values come back bit for bit (SQLite stores float64). The default file is
``scores.sqlite3`` in :func:`search_env._cache.cache_dir` ``("scores")``. Use it on a local disk: SQLite's
locking is unreliable on network file systems.

``TransformersScorer(model, tokenizer, disk_cache=True)`` (or a path) uses it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from search_env._cache import LRU, cache_dir

__all__ = ["DiskScoreCache", "MemoryScoreCache", "model_fingerprint"]

logger = logging.getLogger(__name__)

FILE_NAME = "scores.sqlite3"
_FORMAT = 1  # bump when the meaning of a key or a value changes
_CHUNK = 500  # keys per SELECT (SQLite limits the number of parameters)
_HASH_CHUNK = 1 << 24  # bytes of a tensor hashed at a time


def model_fingerprint(model: Any, tokenizer: Any, **settings: Any) -> str:
    """A hex digest that changes whenever a score could: the weights and buffers (every byte), the model's class
    and config, the tokenizer, ``settings`` (the scorer's options) and the torch and transformers versions.

    Hashing reads every parameter once (about a second for 135M float32 parameters on a CPU).
    """
    import torch
    import transformers

    digest = hashlib.blake2b(digest_size=32)
    config = getattr(model, "config", None)
    config = config.to_dict() if hasattr(config, "to_dict") else {}
    config.pop("_name_or_path", None)  # where it was loaded from does not change a score
    header = {
        "format": _FORMAT,
        "class": type(model).__qualname__,
        "config": config,
        "tokenizer": _tokenizer_digest(tokenizer),
        "settings": settings,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    digest.update(json.dumps(header, sort_keys=True, default=str).encode())
    tensors = [*model.named_parameters(), *model.named_buffers()]
    with torch.no_grad():
        for name, tensor in tensors:
            if tensor.device.type == "meta":
                continue
            digest.update(f"\0{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0{tensor.device.type}\0".encode())
            flat = tensor.detach().reshape(-1)
            step = max(1, _HASH_CHUNK // max(1, flat.element_size()))
            for start in range(0, flat.numel(), step):
                part = flat[start : start + step].cpu().contiguous()
                digest.update(part.view(torch.uint8).numpy().data if part.numel() else b"")
    return digest.hexdigest()


def _tokenizer_digest(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        text = backend.to_str()
    else:  # a slow tokenizer: its vocabulary and special tokens
        text = json.dumps([type(tokenizer).__qualname__, sorted(tokenizer.get_vocab().items()),
                           getattr(tokenizer, "all_special_tokens", [])])
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def pair_key(context: str, answer: str) -> bytes:
    """The 16-byte digest that stands for one (context, answer) pair."""
    digest = hashlib.blake2b(digest_size=16)
    ctx = context.encode("utf-8", "surrogatepass")
    digest.update(len(ctx).to_bytes(8, "little"))
    digest.update(ctx)
    digest.update(answer.encode("utf-8", "surrogatepass"))
    return digest.digest()


class MemoryScoreCache:
    """The ``size`` most recently used scores by (context, answer), in memory (an :class:`~search_env._cache.LRU`);
    one lock makes it safe to share between threads (each call holds it only for dictionary operations, never while
    a score is computed).

    :meth:`get` also returns the cache's generation, which :meth:`clear` advances; :meth:`put` drops scores looked
    up in an older generation, so scores computed before a ``clear`` (for weights since changed) are never kept.
    ``size`` 0 keeps nothing.
    """

    def __init__(self, size: int):
        self._data: LRU[tuple[str, str], float] = LRU(size)
        self._generation = 0
        self._lock = threading.Lock()

    def get(self, pairs: Iterable[tuple[str, str]]) -> tuple[dict[tuple[str, str], float], int]:
        """(the cached scores of those ``pairs`` that have one, marked most recently used; the generation)."""
        found: dict[tuple[str, str], float] = {}
        with self._lock:
            if len(self._data):
                for pair in pairs:
                    value = self._data.get(pair)
                    if value is not None:
                        found[pair] = value
            return found, self._generation

    def put(self, scores: Mapping[tuple[str, str], float], generation: int) -> None:
        """Keep ``scores`` (evicting the least recently used) unless :meth:`clear` ran since ``generation``."""
        if self.size <= 0 or not scores:
            return
        with self._lock:
            if generation != self._generation:
                return
            for pair, value in scores.items():
                self._data.put(pair, value)

    def clear(self) -> None:
        """Forget every score and start a new generation."""
        with self._lock:
            self._data.clear()
            self._generation += 1

    @property
    def size(self) -> int:
        return self._data.size

    def __len__(self) -> int:
        return len(self._data)

    def __getstate__(self) -> dict:
        with self._lock:
            state = {**self.__dict__, "_data": self._data.copy()}
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


class DiskScoreCache:
    """Scores on disk, by (model fingerprint, context, answer); safe when several processes use one file.

    Args:
        path: the SQLite file, or a folder to hold ``scores.sqlite3`` (``None``: the one in
            ``cache_dir("scores")``). A default-location file that cannot be opened as a database is moved aside
            with a warning and a new one started; one named here raises.
        timeout: seconds a write (or the first set-up) waits for other processes before it gives up.

    Attributes:
        hits, misses: pairs found and not found by :meth:`get` in this process.
        writes: pairs handed to :meth:`put` in this process.
    """

    def __init__(self, path: str | os.PathLike | None = None, *, timeout: float = 120.0):
        explicit = path is not None
        path = Path(path) if explicit else cache_dir("scores") / FILE_NAME
        if path.is_dir():
            path = path / FILE_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.timeout = path, float(timeout)
        self.hits = self.misses = self.writes = 0
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        try:
            self._connection()
        except sqlite3.DatabaseError as exc:
            if explicit or isinstance(exc, sqlite3.OperationalError):
                raise
            aside = path.with_name(f"{path.name}.broken-{uuid.uuid4().hex[:8]}")
            logger.warning("score cache %s is not readable (%s); moved to %s, starting a new one", path, exc, aside)
            self.close()
            os.replace(path, aside)
            self._connection()

    def get(self, fingerprint: str, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], float]:
        """The cached scores of those ``pairs`` that have one."""
        keys = {pair_key(c, a): (c, a) for c, a in pairs}
        found: dict[tuple[str, str], float] = {}
        digests = list(keys)
        with self._lock:
            conn = self._connection()
            for start in range(0, len(digests), _CHUNK):
                chunk = digests[start : start + _CHUNK]
                query = f"SELECT key, value FROM scores WHERE model = ? AND key IN ({','.join('?' * len(chunk))})"
                rows = _retry(
                    lambda query=query, chunk=chunk: conn.execute(query, [fingerprint, *chunk]).fetchall(), self.timeout
                )
                found.update((keys[bytes(k)], float(v)) for k, v in rows)
            self.hits += len(found)
            self.misses += len(keys) - len(found)
        return found

    def put(self, fingerprint: str, scores: Mapping[tuple[str, str], float]) -> None:
        """Store ``scores`` (non-finite ones are skipped) in one transaction; pairs already stored keep their value."""
        rows = [(fingerprint, pair_key(c, a), float(v)) for (c, a), v in scores.items() if _finite(v)]
        if not rows:
            return
        with self._lock:
            conn = self._connection()
            _retry(lambda: self._write(conn, rows), self.timeout)
            self.writes += len(rows)

    def __len__(self) -> int:
        with self._lock:
            return self._connection().execute("SELECT COUNT(*) FROM scores").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.update(_conn=None, _pid=-1, _lock=None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"DiskScoreCache({str(self.path)!r}, hits={self.hits}, misses={self.misses}, writes={self.writes})"

    # --------------------------------------------------------------------------------------- internals

    @staticmethod
    def _write(conn: sqlite3.Connection, rows: Iterable[tuple]) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany("INSERT OR IGNORE INTO scores (model, key, value) VALUES (?, ?, ?)", rows)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _connection(self) -> sqlite3.Connection:
        """This process's connection (a forked child opens its own), set up on first use."""
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False)
        try:
            # Switching to WAL needs a moment alone with the file, and SQLite does not wait for it: retry.
            _retry(lambda: conn.execute("PRAGMA journal_mode=WAL"), self.timeout)
            conn.execute("PRAGMA synchronous=NORMAL")  # with WAL: safe against crashes, not power cuts
            _retry(lambda: conn.execute(
                "CREATE TABLE IF NOT EXISTS scores (model TEXT NOT NULL, key BLOB NOT NULL, value REAL NOT NULL, "
                "PRIMARY KEY (model, key)) WITHOUT ROWID"), self.timeout)
        except BaseException:
            conn.close()
            raise
        self._conn, self._pid = conn, os.getpid()
        return conn


def _finite(value: float) -> bool:
    return value == value and abs(value) != float("inf")


def _retry(action, timeout: float):
    """``action()``, retried while SQLite says the database is locked or busy, for up to ``timeout`` seconds."""
    deadline, pause = time.monotonic() + timeout, 0.005
    while True:
        try:
            return action()
        except sqlite3.OperationalError as exc:
            message = str(exc).lower()
            if ("locked" not in message and "busy" not in message) or time.monotonic() > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.25)
