"""One shard's part of an input, read by that shard alone: the disjoint partitions Dask's shards run.

A JSONL file is cut into `shards` byte ranges of equal size, each moved to a line start (`inputs.Span`), so
a shard reads its own lines and at most the end of one line before them; a directory of ``.txt`` files is
cut into runs of consecutive files in reading order. Ids are those a whole read gives (`read_inputs`), so
a shard's output file resumes as before. A CSV file is still filtered by id hash over a whole read: a
quoted field may hold newlines, so a byte offset cannot be told to be a row's start without reading from
the header. An id repeated in two partitions is not seen as a repeat (each shard checks its own part).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigurationError
from .inputs import Item, Span, _read_jsonl, _read_txt_dir, checked, read_inputs, shard_of, txt_files


@dataclass
class Partition:
    """The items of one shard and what reading them took (`span` for a JSONL file, else None)."""

    items: Iterator[Item]
    span: Span | None
    kind: str  # "bytes", "files" or "hash"


def partition(
    path: str | Path, shard: int, shards: int, *, id_field: str = "id", text_field: str = "text"
) -> Partition:
    """Shard `shard` (0..shards-1) of the input at `path`; the same arguments give the same part anywhere."""
    if not 0 <= shard < shards:
        raise ConfigurationError(f"shard must be 0 <= K < N, got {shard}/{shards}")
    path = Path(path)
    if path.is_dir():
        files = txt_files(path)
        mine = files[shard * len(files) // shards : (shard + 1) * len(files) // shards]
        return Partition(checked(_read_txt_dir(path, mine)), None, "files")
    if path.exists() and path.suffix.lower() in (".jsonl", ".ndjson"):
        size = path.stat().st_size
        span = Span(path, shard * size // shards, (shard + 1) * size // shards)
        return Partition(checked(_read_jsonl(path, id_field, text_field, span)), span, "bytes")
    items = read_inputs(path, id_field=id_field, text_field=text_field)
    return Partition((item for item in items if shard_of(item.id, shards) == shard), None, "hash")
