"""Append-only JSONL record files that survive a kill at any moment.

Every record is one line written with a single ``write`` and made durable with ``fsync`` before the writer
returns, under a lock, so records from many threads never interleave. A kill can therefore leave at most a
torn last line (no newline); `RecordLog.open` detects it and cuts it off, so the record it belonged to is
redone rather than read half-written. An exclusive lock on the file stops two runs from appending to the
same output at once (which would write records twice).

A write that fails (a full disk, a quota, an I/O error) or stops short is rolled back: the file is cut back to
the end of the last complete record, so a later record is never glued onto a torn piece, and the log refuses
further records; the caller stops the run with `OutputWriteError`, keeping what was written.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError, OutputWriteError, redact_secrets

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger("guidance_deepinfra")


@dataclass
class Recovered:
    """What an existing record file held: its records by id, and what had to be ignored or cut."""

    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    torn_bytes: int = 0
    unreadable_lines: list[int] = field(default_factory=list)
    repeated_ids: list[str] = field(default_factory=list)


def scan(path: Path) -> tuple[Recovered, int]:
    """Read the records of `path` and the byte length of its intact part (up to the last newline)."""
    found = Recovered()
    if not path.exists():
        return found, 0
    data = path.read_bytes()
    intact = data.rfind(b"\n") + 1
    found.torn_bytes = len(data) - intact
    for number, raw in enumerate(data[:intact].splitlines(), 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except ValueError:
            found.unreadable_lines.append(number)
            continue
        if not isinstance(record, dict) or not isinstance(record.get("id"), str):
            found.unreadable_lines.append(number)
            continue
        if record["id"] in found.records:
            found.repeated_ids.append(record["id"])
            continue
        found.records[record["id"]] = record
    return found, intact


def read_records(path: str | Path) -> Iterator[dict[str, Any]]:
    """The complete records of a record file, in file order, skipping a torn last line."""
    recovered, _ = scan(Path(path))
    yield from recovered.records.values()


class RecordLog:
    """An open record file: `append` one dict per finished record (durable on return)."""

    def __init__(self, path: Path, fd: int, *, created: bool = False) -> None:
        self.path = path
        self._fd = fd
        #: The file is this run's own (it did not exist, or it is a fresh errors file): closed with no
        #: record written, it is removed, so a run leaves no empty file behind.
        self._created = created
        self._lock = threading.Lock()
        self.written = 0
        #: Byte length of the file up to the end of its last complete record.
        self._size = os.fstat(fd).st_size
        self._failure: OutputWriteError | None = None

    @classmethod
    def open(cls, path: str | Path, *, fresh: bool = False) -> tuple[RecordLog, Recovered]:
        """Open `path` for appending (created if missing), after cutting off a torn last line.

        With `fresh`, the file is emptied instead (used for the errors file, which describes one run).
        """
        path = Path(path)
        if path.parent and not path.parent.exists():
            raise ConfigurationError(f"the directory of {str(path)!r} does not exist")
        if path.is_dir():
            raise ConfigurationError(f"{str(path)!r} is a directory; records go to a file")
        existed = path.exists()
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise ConfigurationError(f"cannot open {str(path)!r} for writing: {exc.strerror}") from None
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise ConfigurationError(f"{str(path)!r} is being written by another run") from None
                if not _still_at(fd, path):  # an empty file its run removed as this one opened it
                    raise ConfigurationError(f"{str(path)!r} is being written by another run")
            if fresh:
                os.ftruncate(fd, 0)
                recovered = Recovered()
            else:
                recovered, intact = scan(path)
                if recovered.torn_bytes:
                    logger.warning(
                        "%s: cut a torn last line (%d bytes) left by an interrupted run; its input is redone",
                        path,
                        recovered.torn_bytes,
                    )
                    os.ftruncate(fd, intact)
                if recovered.unreadable_lines:
                    logger.warning("%s: ignored unreadable lines %s", path, recovered.unreadable_lines[:20])
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd, created=fresh or not existed), recovered

    def append(self, record: dict[str, Any]) -> None:
        self.append_many([record])

    def append_many(self, records: list[dict[str, Any]]) -> None:
        """Append whole lines, one write and one fsync for all (the batch writes the records finished meanwhile).

        A failed or short write is rolled back to the last complete record, as for one record.
        """
        # The API key is never written, even if a server echoed it into a text.
        data = b"".join(_line(redact_secrets(record)) for record in records)
        with self._lock:
            if self._failure is not None:
                raise self._failure
            try:
                view = memoryview(data)
                while view:
                    done = os.write(self._fd, view)
                    if done <= 0:
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                    view = view[done:]
                os.fsync(self._fd)
            except OSError as exc:
                self._failure = self._roll_back(exc)
                raise self._failure from None
            self._size += len(data)
            self.written += len(records)

    def _roll_back(self, exc: OSError) -> OutputWriteError:
        """Cut the file back to its last complete record after a failed or short write; say what is kept."""
        reason = exc.strerror or str(exc)
        try:
            os.ftruncate(self._fd, self._size)
            os.fsync(self._fd)
            cleanup = "the partial record was removed"
        except OSError:
            cleanup = "the partial record could not be removed now and is cut off when the file is next opened"
        return OutputWriteError(
            f"could not write a record to {str(self.path)!r}: {reason} (errno {exc.errno}); {cleanup}. Every "
            f"record written before it is kept ({self.written} in this run), and a rerun with the same output "
            "resumes after them once the problem is fixed",
            errno=exc.errno,
        )

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                if self._created and self._size == 0:
                    try:  # removed while the lock is held, so no other run is writing to it
                        os.unlink(self.path)
                    except OSError:
                        pass
                os.close(self._fd)  # also releases the lock
                self._fd = -1

    def __enter__(self) -> RecordLog:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _still_at(fd: int, path: Path) -> bool:
    """Whether the file open as `fd` is still the one at `path` (not one removed meanwhile)."""
    try:
        here, opened = os.stat(path), os.fstat(fd)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (opened.st_dev, opened.st_ino)


def _line(record: dict[str, Any]) -> bytes:
    text = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (a model's "\ud800" escape) can only be written escaped
        return (json.dumps(record, separators=(",", ":")) + "\n").encode("ascii")
