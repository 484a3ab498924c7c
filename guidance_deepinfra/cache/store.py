"""One SQLite file of DeepInfra answers, safe for many threads and processes at once.

Why SQLite: it is in the standard library, one file holds everything, and in WAL mode readers never wait for
a writer while writers in several processes (extraction workers, notebooks) take turns under a busy
timeout. WAL shares memory between the processes of one machine: a file on a network filesystem used from
several hosts is not safe, and each host should have its own. Answers are keyed by `request_key` (the
canonical request body and the base URL, nothing else: the API key and the headers are never part of a key
nor stored) and by the occurrence of that request in a run (see `CacheRun`).

A cache must never make a program fail or lose an answer it paid for: a file that cannot be opened or read
(corrupt, not a database, no permission) gives one warning and every call goes live; a write that fails (a
full disk, a lock held too long) gives one warning and the answer in hand is still returned.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import sqlite3
import sys
import threading
import time
import warnings
import weakref
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError, redact_secrets

logger = logging.getLogger("guidance_deepinfra")

#: The environment variable that turns the cache on: a path, or ``1``/``true``/``on`` for `default_path()`.
ENV_VARIABLE = "GUIDANCE_DEEPINFRA_CACHE"

#: The size bound when none is given (answers are stored compressed; a typical answer takes 1-3 kB).
DEFAULT_MAX_BYTES = 512 * 1024 * 1024

#: How long a writer waits for another process's write before giving up on storing (the answer is kept).
BUSY_TIMEOUT_S = 10.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    key TEXT NOT NULL,
    occurrence INTEGER NOT NULL,
    model TEXT,
    answer BLOB NOT NULL,
    size INTEGER NOT NULL,
    created REAL NOT NULL,
    used REAL NOT NULL,
    PRIMARY KEY (key, occurrence)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS answers_by_use ON answers (used);
"""

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


def default_path() -> Path:
    """``responses.sqlite3`` in the user's cache directory (XDG_CACHE_HOME, ~/Library/Caches, LOCALAPPDATA)."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "guidance-deepinfra" / "responses.sqlite3"


def resolve_path(cache: str | os.PathLike[str] | bool | None) -> Path | None:
    """The cache file asked for: `cache` if given (True for the default place, False for none), else the
    environment's `ENV_VARIABLE`, else none."""
    if cache is None:
        value = os.environ.get(ENV_VARIABLE, "").strip()
        if value.lower() in _FALSE:
            return None
        return default_path() if value.lower() in _TRUE else Path(value).expanduser()
    if cache is True:
        return default_path()
    if cache is False:
        return None
    if isinstance(cache, (str, os.PathLike)):
        if not str(cache).strip():
            raise ConfigurationError("cache must be a file path, True or False, not an empty string")
        return Path(cache).expanduser()
    raise ConfigurationError(f"cache must be a file path, True or False, not {type(cache).__name__}")


def request_key(base_url: str, body: dict[str, Any]) -> str:
    """The key of a request: a SHA-256 of the base URL and the body as canonical JSON (sorted keys, no
    spaces). Headers, and so the API key, are not part of it; two bodies that differ only in key order are
    the same request."""
    canonical = json.dumps([base_url, body], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class CacheInfo:
    """What `ResponseCache.info` reports."""

    path: Path
    answers: int
    distinct_requests: int
    stored_bytes: int
    file_bytes: int
    max_bytes: int
    oldest: float | None
    newest: float | None


class ResponseCache:
    """The answers stored in one file. Each thread (and each process after a fork) opens its own connection."""

    def __init__(self, path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes <= 0:
            raise ConfigurationError(f"the cache's max_bytes must be a positive integer, got {max_bytes!r}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._local = threading.local()
        self._lock = threading.Lock()
        self._warned: set[str] = set()
        #: Set once the file proved unreadable: every lookup misses and nothing is written from then on.
        self.disabled = False
        self._writes_since_check = 0
        self._queue: list[tuple[str, int, Any, str | None]] = []
        self._queue_changed = threading.Condition(threading.Lock())
        self._pending = 0
        self._flushing = 0
        self._writer: threading.Thread | None = None
        self._stored_estimate: int | None = None

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.path)!r})"

    # ----------------------------------------------------------------- connections and failures

    def _connection(self) -> sqlite3.Connection:
        opened: tuple[int, sqlite3.Connection] | None = getattr(self._local, "connection", None)
        if opened is not None and opened[0] == os.getpid():
            return opened[1]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        try:
            connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = NORMAL")
            connection.executescript(_SCHEMA)
        except BaseException:
            connection.close()
            raise
        self._local.connection = (os.getpid(), connection)
        return connection

    def _warn_once(self, what: str, exc: BaseException) -> None:
        with self._lock:
            if what in self._warned:
                return
            self._warned.add(what)
        message = f"the request cache {str(self.path)!r} {what} ({type(exc).__name__}: {exc}); calls go live"
        logger.warning(message)
        warnings.warn(message, RuntimeWarning, stacklevel=4)

    def _unreadable(self, exc: BaseException) -> None:
        # A lock held past the busy timeout is a passing state; anything else means the file cannot serve.
        if isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc)):
            self._warn_once("was locked past the busy timeout", exc)
            return
        self.disabled = True
        self._warn_once("cannot be read", exc)

    # ----------------------------------------------------------------- answers

    def lookup(self, key: str, occurrence: int) -> Any | None:
        """The answer stored for (`key`, `occurrence`), or None; a hit marks it as recently used."""
        if self.disabled:
            return None
        try:
            connection = self._connection()
            # fetchall steps the statement to its end, so it holds no read transaction open on this thread's
            # connection when the UPDATE below writes (which could then not commit, keeping the write lock)
            rows = connection.execute(
                "SELECT answer FROM answers WHERE key = ? AND occurrence = ?", (key, occurrence)
            ).fetchall()
            if not rows:
                return None
            answer = _unpacked(rows[0][0])
        except (sqlite3.Error, OSError, ValueError, zlib.error) as exc:
            self._unreadable(exc)
            return None
        try:
            connection.execute(
                "UPDATE answers SET used = ? WHERE key = ? AND occurrence = ?", (time.time(), key, occurrence)
            )
        except sqlite3.Error as exc:  # the answer is read; only its place in the eviction order is lost
            self._warn_once("could not be written", exc)
        return answer

    def store(self, key: str, occurrence: int, answer: Any, *, model: str | None = None) -> bool:
        """Keep `answer` (JSON-able) for (`key`, `occurrence`); False when it could not be written.

        An answer already stored there (another process ran the same request at the same time) is kept.
        """
        return self._store_many([(key, occurrence, answer, model)])

    def store_later(self, key: str, occurrence: int, answer: Any, *, model: str | None = None) -> None:
        """`store`, on a writer thread of this cache: the caller (an event loop with hundreds of requests in
        flight) does not wait for the file, and answers that arrive together share one transaction. `flush`
        waits for what is queued; the process does too at exit."""
        if self.disabled:
            return
        with self._queue_changed:
            self._queue.append((key, occurrence, answer, model))
            self._pending += 1
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_queued, name="request-cache-writer", daemon=True)
                self._writer.start()
                _WRITING.add(self)
            self._queue_changed.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every answer given to `store_later` is written (or failed); False on timeout."""
        with self._queue_changed:
            self._flushing += 1
            self._queue_changed.notify_all()
            try:
                return self._queue_changed.wait_for(lambda: self._pending == 0, timeout)
            finally:
                self._flushing -= 1

    def _write_queued(self) -> None:
        while True:
            with self._queue_changed:
                if not self._queue_changed.wait_for(lambda: bool(self._queue), timeout=5.0):
                    self._writer = None  # idle: the next `store_later` starts another
                    return
                # Answers arrive one by one; a transaction each would cost a commit each (about 0.1 ms of CPU
                # at 200 in flight). Gathering them for a moment makes it one commit per a few hundred.
                self._queue_changed.wait_for(lambda: len(self._queue) >= 512 or self._flushing, timeout=0.05)
                batch, self._queue = self._queue, []
            try:
                self._store_many(batch)
            finally:
                with self._queue_changed:
                    self._pending -= len(batch)
                    self._queue_changed.notify_all()

    def _store_many(self, batch: list[tuple[str, int, Any, str | None]]) -> bool:
        if self.disabled:
            return False
        try:
            now = time.time()
            rows = []
            for key, occurrence, answer, model in batch:
                blob = _packed(answer)
                rows.append((key, occurrence, model, blob, len(blob), now, now))
            connection = self._connection()
            with _immediate(connection):
                connection.executemany(
                    "INSERT OR IGNORE INTO answers (key, occurrence, model, answer, size, created, used) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
            self._after_write(connection, sum(row[4] for row in rows))
        except (sqlite3.Error, OSError, ValueError) as exc:
            if _corrupt(exc):
                self._unreadable(exc)  # stop using the file
            else:  # a full disk, a lock held too long, a read-only file: this answer is not kept, that is all
                self._warn_once("could not be written", exc)
            return False
        return True

    def _after_write(self, connection: sqlite3.Connection, size: int) -> None:
        """Evict the least recently used answers once the stored total passes `max_bytes`.

        The total is read from the file at the first write and every 64th (other processes write too) and
        estimated in between, so a write costs one insert, not a scan.
        """
        with self._lock:
            self._writes_since_check += 1
            estimate = self._stored_estimate
            if estimate is None or self._writes_since_check >= 64:
                estimate = None
                self._writes_since_check = 0
            else:
                estimate += size
                self._stored_estimate = estimate
        if estimate is None:
            estimate = int(connection.execute("SELECT total(size) FROM answers").fetchall()[0][0])
        if estimate > self.max_bytes:
            estimate = self._evict(connection)
        with self._lock:
            self._stored_estimate = estimate

    def _evict(self, connection: sqlite3.Connection) -> int:
        """Delete the least recently used answers down to 90% of `max_bytes`; return what is left."""
        target = int(self.max_bytes * 0.9)
        with _immediate(connection):
            total = int(connection.execute("SELECT total(size) FROM answers").fetchall()[0][0])
            doomed = []
            for key, occurrence, size in connection.execute(
                "SELECT key, occurrence, size FROM answers ORDER BY used ASC"
            ):
                if total <= target:
                    break
                doomed.append((key, occurrence))
                total -= size
            connection.executemany("DELETE FROM answers WHERE key = ? AND occurrence = ?", doomed)
        if doomed:
            logger.info("request cache: %d least recently used answer(s) evicted", len(doomed))
        return total

    def held_prefixes(self) -> set[str] | None:
        """The first 16 hex digits of every key with a stored answer (None when the file cannot be read)."""
        if self.disabled:
            return set()
        try:
            rows = self._connection().execute("SELECT DISTINCT substr(key, 1, 16) FROM answers").fetchall()
        except (sqlite3.Error, OSError) as exc:
            self._unreadable(exc)
            return None
        return {row[0] for row in rows}

    # ----------------------------------------------------------------- maintenance

    def info(self) -> CacheInfo:
        """Counts and sizes of what the file holds (raises sqlite3.Error for an unreadable file)."""
        connection = self._connection()
        answers, distinct, stored, oldest, newest = connection.execute(
            "SELECT count(*), count(DISTINCT key), total(size), min(created), max(created) FROM answers"
        ).fetchall()[0]
        files = [self.path, self.path.with_name(self.path.name + "-wal")]
        return CacheInfo(
            path=self.path,
            answers=int(answers),
            distinct_requests=int(distinct),
            stored_bytes=int(stored),
            file_bytes=sum(p.stat().st_size for p in files if p.exists()),
            max_bytes=self.max_bytes,
            oldest=oldest,
            newest=newest,
        )

    def clear(self, *, older_than: float | None = None) -> int:
        """Delete every answer, or those stored more than `older_than` seconds ago; return how many."""
        connection = self._connection()
        with _immediate(connection):
            if older_than is None:
                removed = connection.execute("DELETE FROM answers").rowcount
            else:
                removed = connection.execute(
                    "DELETE FROM answers WHERE created < ?", (time.time() - older_than,)
                ).rowcount
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        if older_than is None:
            connection.execute("VACUUM")
        with self._lock:
            self._stored_estimate = None
        return int(removed)

    def close(self) -> None:
        """Close this thread's connection (others close when their thread's storage goes)."""
        opened = getattr(self._local, "connection", None)
        if opened is not None:
            opened[1].close()
            self._local.connection = None


#: Answers shorter than this are stored as their JSON: compressing a few hundred bytes saves little and
#: costs the writer (extraction's answers are this short; a streamed answer's chunks are not).
COMPRESS_FROM = 1024


def _packed(answer: Any) -> bytes:
    """An answer as stored: its JSON, zlib-compressed when long (a stored blob starting with ``{`` is plain),
    with this process's API keys masked."""
    # A key a server echoed into an answer is masked, as in extraction's files: never written to disk.
    text = redact_secrets(json.dumps(answer, separators=(",", ":"))).encode("utf-8", "surrogatepass")
    return zlib.compress(text, 1) if len(text) >= COMPRESS_FROM else text


def _unpacked(blob: bytes) -> Any:
    return json.loads(blob if blob[:1] == b"{" else zlib.decompress(blob))


def _corrupt(exc: BaseException) -> bool:
    """True for an error that says the file is not (or no longer) a readable database."""
    text = str(exc).lower()
    return isinstance(exc, sqlite3.DatabaseError) and ("not a database" in text or "malformed" in text)


@contextmanager
def _immediate(connection: sqlite3.Connection) -> Iterator[None]:
    """A write transaction that takes the file's write lock at once (waiting up to the busy timeout)."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


#: Caches with a writer thread: their queued answers are written before the process exits.
_WRITING: weakref.WeakSet[ResponseCache] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    for cache in list(_WRITING):
        cache.flush(timeout=BUSY_TIMEOUT_S)


_OPEN: dict[tuple[str, int], ResponseCache] = {}
_OPEN_LOCK = threading.Lock()


def open_cache(path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES) -> ResponseCache:
    """The process's one `ResponseCache` for `path` (models naming the same file share its connections)."""
    resolved = Path(path).expanduser().absolute()
    with _OPEN_LOCK:
        cache = _OPEN.get((str(resolved), max_bytes))
        if cache is None:
            cache = _OPEN[(str(resolved), max_bytes)] = ResponseCache(resolved, max_bytes=max_bytes)
        return cache


class CacheRun:
    """One run's use of a cache: the k-th time a request is sent in the run, it gets the k-th answer stored
    for that request.

    So a loop sampling the same prompt three times gets three answers, and a re-run gets those three again
    in the same order. A run is a model object and everything derived from it (`DeepInfra.fresh()`,
    ``lm + ...``); each `extract()` batch starts a run of its own (`fresh`).
    """

    def __init__(self, store: ResponseCache) -> None:
        self.store = store
        self._held: set[str] | None = None
        self._seen: dict[str, int] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"CacheRun({str(self.store.path)!r})"

    def fresh(self) -> CacheRun:
        """A new run on the same file, counting from the first answer again."""
        return CacheRun(self.store)

    def preload(self) -> None:
        """Read which requests the file holds answers for, once, so that `may_hold` tells a miss without a
        query: what a batch with hundreds of requests in flight, mostly new ones, does before it starts.
        Answers other processes store later are not seen by this run (their requests go live)."""
        self._held = self.store.held_prefixes()

    def may_hold(self, key: str) -> bool:
        """False when the file surely holds no answer for `key` (known from `preload`), else True."""
        return self._held is None or key[:16] in self._held

    def claim(self, base_url: str, body: dict[str, Any]) -> tuple[str, int]:
        """The key of this request and its occurrence in the run (0 for the first), counted now."""
        key = request_key(base_url, body)
        with self._lock:
            occurrence = self._seen.get(key, 0)
            self._seen[key] = occurrence + 1
        return key, occurrence

    def release(self, key: str, occurrence: int) -> None:
        """Give back an occurrence whose request stored nothing (it failed), so the same request sent again
        (a batch's retry after a 429) is that occurrence again; a re-run then replays it rather than missing."""
        with self._lock:
            if self._seen.get(key) == occurrence + 1:
                self._seen[key] = occurrence
