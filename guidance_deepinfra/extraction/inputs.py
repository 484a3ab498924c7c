"""Inputs of a batch extraction: one `Item` (id + text) per record, or a problem that becomes an error record.

Files are read lazily, one record at a time, so a large input never has to fit in memory. A record that
cannot be used (malformed JSON, a missing text field, an empty text, a repeated id, undecodable bytes) is
still yielded, with ``problem`` set and its line number, so that it is reported in the errors file instead
of stopping the batch or vanishing silently.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import ConfigurationError


@dataclass(frozen=True)
class Item:
    """One input: its id (the key results and resumption use), its text, and where it came from."""

    id: str
    text: str
    source: str = ""
    line: int | None = None
    problem: str | None = None


def read_inputs(path: str | Path, *, id_field: str = "id", text_field: str = "text") -> Iterator[Item]:
    """Read a ``.jsonl`` file, a ``.csv`` file (with a header row) or a directory of ``.txt`` files.

    JSONL lines are objects with `text_field` (and optionally `id_field`) or bare JSON strings; CSV rows need
    a `text_field` column. A record without an id gets ``line-<n>`` (its line number). In a directory, every
    ``*.txt`` file below it is one input whose id is its path relative to the directory.
    """
    path = Path(path)
    if path.is_dir():
        items: Iterable[Item] = _read_txt_dir(path)
    elif not path.exists():
        raise ConfigurationError(f"input {str(path)!r} does not exist")
    elif path.suffix.lower() in (".jsonl", ".ndjson"):
        items = _read_jsonl(path, id_field, text_field)
    elif path.suffix.lower() == ".csv":
        items = _read_csv(path, id_field, text_field)
    else:
        raise ConfigurationError(f"input {str(path)!r}: expected a .jsonl or .csv file, or a directory of .txt files")
    return checked(items)


def items_from(inputs: Any) -> Iterator[Item]:
    """Items from what `extract` accepts: texts (ids ``"0"``, ``"1"``...), a mapping id -> text, (id, text)
    pairs, or `Item`s (as `read_inputs` yields)."""
    if isinstance(inputs, (str, bytes, Path)):
        raise ConfigurationError("inputs must be a collection of texts; to read a file use read_inputs(path)")
    if isinstance(inputs, Mapping):
        pairs: Iterable[Any] = inputs.items()
    else:
        pairs = inputs
    items: list[Item] = []
    for index, entry in enumerate(pairs):
        if isinstance(entry, Item):
            items.append(entry)
        elif isinstance(entry, str):
            items.append(Item(str(index), entry, source=f"inputs[{index}]"))
        elif isinstance(entry, tuple) and len(entry) == 2:
            key, text = entry
            if isinstance(text, str):
                items.append(Item(str(key), text, source=f"inputs[{index}]"))
            else:
                items.append(_bad(str(key), f"inputs[{index}]", None, "the text is not a string"))
        else:
            items.append(_bad(str(index), f"inputs[{index}]", None, f"not a text or an (id, text) pair: {entry!r:.80}"))
    return checked(items)


def checked(items: Iterable[Item]) -> Iterator[Item]:
    """Flag empty texts, texts that cannot be sent, and repeated ids: each would waste a request, stop the
    batch (a request that cannot be encoded is refused as a program error) or make resumption ambiguous."""
    seen: dict[str, str] = {}
    for item in items:
        if item.problem is None and not item.text.strip():
            item = _bad(item.id, item.source, item.line, "the text is empty")
        elif item.problem is None and (unsendable := _unencodable(item.text)) is not None:
            item = _bad(item.id, item.source, item.line, unsendable)
        if item.problem is not None:
            # Its own problem is what the user must fix (a malformed line whose fallback id ``line-N`` happens
            # to equal a real id is malformed, not a duplicate); a fallback id claims nothing.
            if item.id not in seen and item.id != f"line-{item.line}":
                seen[item.id] = item.source
        elif item.id in seen:
            item = _bad(item.id, item.source, item.line, f"duplicate id (first seen at {seen[item.id]})")
        else:
            seen[item.id] = item.source
        yield item


def _unencodable(text: str) -> str | None:
    """Why `text` cannot go into a request (a lone surrogate such as JSON's ``"\\ud800"``), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"the text is not valid Unicode ({exc.object[exc.start : exc.end]!r} at character {exc.start})"
    return None


def shard_of(item_id: str, shards: int) -> int:
    """The shard (0..shards-1) an id belongs to: a stable hash, the same in every process and run."""
    digest = hashlib.blake2b(item_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


_SHARD = re.compile(r"([0-9]+)/([0-9]+)", re.ASCII)


def parse_shard(text: str) -> tuple[int, int]:
    """``K/N`` (0 <= K < N, ASCII digits only) as (K, N).

    Strict on purpose: an empty value (an unset shell variable) must not turn sharding off, which would
    make every shard run the whole job; spaces, signs and non-ASCII digits, which ``int`` would accept,
    hint at a mistake in the script that built the value.
    """
    match = _SHARD.fullmatch(text) if isinstance(text, str) else None
    if match is None or not 0 <= int(match.group(1)) < int(match.group(2)):
        raise ConfigurationError(
            f"--shard must be K/N with 0 <= K < N in ASCII digits and nothing else (for example 0/4), got {text!r}"
        )
    return int(match.group(1)), int(match.group(2))


def _bad(item_id: str, source: str, line: int | None, problem: str) -> Item:
    return Item(item_id, "", source=source, line=line, problem=problem)


def _read_jsonl(path: Path, id_field: str, text_field: str) -> Iterator[Item]:
    with path.open("rb") as file:
        for number, raw in enumerate(file, 1):
            where = f"{path.name}:{number}"
            fallback_id = f"line-{number}"
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                yield _bad(fallback_id, where, number, f"not UTF-8: {exc.reason} at byte {exc.start}")
                continue
            except ValueError as exc:
                yield _bad(fallback_id, where, number, f"malformed JSON: {exc}")
                continue
            if isinstance(record, str):
                yield Item(fallback_id, record, source=where, line=number)
                continue
            if not isinstance(record, dict):
                yield _bad(fallback_id, where, number, f"expected a JSON object, got {type(record).__name__}")
                continue
            item_id = _id_of(record.get(id_field), fallback_id)
            text = record.get(text_field)
            if item_id is None:
                yield _bad(fallback_id, where, number, f"field {id_field!r} must be a string or an integer")
            elif not isinstance(text, str):
                problem = f"no {text_field!r} field" if text is None else f"field {text_field!r} is not a string"
                yield _bad(item_id, where, number, problem)
            else:
                yield Item(item_id, text, source=where, line=number)


def _id_of(value: Any, fallback: str) -> str | None:
    if value is None:
        return fallback
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    return str(value)


_BOM = b"\xef\xbb\xbf"


class _CsvLines:
    """The physical lines of a CSV file from a byte offset on, each decoded on its own.

    Decoding line by line means one bad byte costs one row, never the rows before or after it: a line that
    is not UTF-8 is passed on with its bytes escaped (so the CSV parser still sees its delimiters) and
    remembered, and the record it belongs to becomes an error naming that line. `first` and `bad` describe
    the record being parsed: where it started (line number, offset after that line) and its first bad line.
    """

    def __init__(self, file: BinaryIO, number: int, offset: int) -> None:
        self._file = file
        self.number = number  # of the last line handed out
        self.offset = offset  # of the next line
        self.first: tuple[int, int] | None = None
        self.bad: tuple[int, str] | None = None

    def begin_record(self) -> None:
        self.first = None
        self.bad = None

    def __iter__(self) -> _CsvLines:
        return self

    def __next__(self) -> str:
        raw = self._file.readline()
        if not raw:
            raise StopIteration
        self.number += 1
        self.offset += len(raw)
        if self.number == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM) :]
        if self.first is None:
            self.first = (self.number, self.offset)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            if self.bad is None:
                self.bad = (self.number, f"not UTF-8 ({exc.reason} at byte {exc.start + 1} of line {self.number})")
            return raw.decode("utf-8", "surrogateescape")


def _csv_header(path: Path, file: BinaryIO) -> tuple[list[str], int, int]:
    """The header row, and the line number and byte offset where the data rows start."""
    lines = _CsvLines(file, 0, 0)
    try:
        header = next(csv.reader(lines, strict=True), [])
    except csv.Error as exc:
        raise ConfigurationError(f"input {str(path)!r}: unreadable header: {exc}") from None
    if lines.bad is not None:
        raise ConfigurationError(f"input {str(path)!r}: unreadable header: {lines.bad[1]}")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise ConfigurationError(
            f"input {str(path)!r}: the header repeats the column(s) {', '.join(map(repr, repeated))}; "
            "each column needs its own name, or which value is the id or the text would be a guess"
        )
    return header, lines.number, lines.offset


def _read_csv(path: Path, id_field: str, text_field: str) -> Iterator[Item]:
    """Rows of a CSV file, read strictly, one error record per row that cannot be read.

    A quoted field may span lines, so a quote left open swallows every later line until the parser meets
    the end of the file or a stray quote. When that happens the row where the record started is reported,
    and parsing starts again on the line after it, so the rows it swallowed are still read.
    """
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # long documents are normal inputs
    with path.open("rb") as file:
        header, number, offset = _csv_header(path, file)
        if text_field not in header:
            raise ConfigurationError(f"input {str(path)!r}: the header has no {text_field!r} column: {header}")
        while True:
            file.seek(offset)
            lines = _CsvLines(file, number, offset)
            reader = csv.reader(lines, strict=True)
            restart: tuple[int, int] | None = None
            while True:
                lines.begin_record()
                try:
                    row = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:
                    start, after_start = lines.first or (lines.number, lines.offset)
                    swallowed = lines.number > start
                    problem = f"malformed CSV: {exc}"
                    if "unexpected end of data" in str(exc):
                        problem = "malformed CSV: a quoted field opened on this line is never closed"
                    yield _bad(f"line-{start}", f"{path.name}:{start}", start, problem)
                    if swallowed:
                        restart = (start, after_start)
                        break
                    continue
                start = lines.first[0] if lines.first is not None else lines.number
                where = f"{path.name}:{start}"
                if not row:
                    continue
                if lines.bad is not None:
                    yield _bad(f"line-{start}", where, start, lines.bad[1])
                    continue
                if len(row) != len(header):
                    yield _bad(f"line-{start}", where, start, f"{len(row)} fields where the header has {len(header)}")
                    continue
                record = dict(zip(header, row, strict=True))
                yield Item(record.get(id_field) or f"line-{start}", record[text_field], source=where, line=start)
            if restart is None:
                return
            number, offset = restart


def _read_txt_dir(path: Path) -> Iterator[Item]:
    files = sorted(p for p in path.rglob("*.txt") if p.is_file())
    if not files:
        raise ConfigurationError(f"input directory {str(path)!r} holds no .txt files")
    for file in files:
        item_id = file.relative_to(path).as_posix()
        try:
            text = file.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            yield _bad(item_id, item_id, None, f"not UTF-8: {exc.reason} at byte {exc.start}")
            continue
        yield Item(item_id, text, source=item_id)
