"""Recording answers into the request cache and replaying them through the same client code as live ones.

A streamed answer is recorded as its chunks, each as the SDK parsed it (``to_dict``: content, logprobs,
usage with ``estimated_cost``, reasoning fields and anything else DeepInfra sent), before any reader
touches them. A replay turns them back into a server-sent event stream that the SDK's own `Stream` parses,
and the transport's chunk checks run on it as on the network's: from there on a cached answer is read,
stopped, validated and retried exactly like a live one, so a cache cannot hand back what a check would
refuse. A non-streamed answer (extraction's fast path) is recorded as its `Completion` fields.

Replayed usage objects carry ``replayed_from_cache: true``, which `DeepInfraUsage` counts as saved cost
instead of spent cost, here and in every observer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from ..cache.store import CacheRun
from ..errors import redact_secrets

#: The field a replayed answer's usage carries (see `DeepInfraUsage.add_chunk_usage`).
REPLAY_MARK = "replayed_from_cache"

#: Format of a stored answer; a record of another version is ignored (a miss).
_VERSION = 1


class ChunkStream:
    """The chunks `Transport.stream_chat` yields when a cache is on, with `from_cache` saying which they are."""

    def __init__(self, chunks: Iterator[Any], *, from_cache: bool) -> None:
        self._chunks = chunks
        self.from_cache = from_cache

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        return next(self._chunks)

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()


class StreamRecorder:
    """Collects one live stream's chunks as they pass; `record` is what the cache keeps."""

    def __init__(self) -> None:
        self.chunks: list[dict[str, Any]] = []
        self.finished = False

    def tee(self, chunks: Iterator[Any]) -> Iterator[Any]:
        for chunk in chunks:
            self.chunks.append(chunk.to_dict(mode="json"))
            yield chunk
        self.finished = True

    def record(self) -> dict[str, Any]:
        """The stored form; `complete` is False when the reader stopped before the end (a client-side stop)."""
        return {"v": _VERSION, "kind": "stream", "complete": self.finished, "chunks": self.chunks}


def holds_secret(record: dict[str, Any]) -> bool:
    """True when a registered API key appears in the answer: a server that echoed it. Such an answer is not
    stored. A streamed answer is checked field by field over all its chunks joined, since a key split across
    chunks is in no single one."""
    texts: dict[str, list[str]] = {}
    for chunk in record.get("chunks") or []:
        for choice in chunk.get("choices") or [] if isinstance(chunk, dict) else []:
            delta = choice.get("delta") if isinstance(choice, dict) else None
            for name, value in (delta or {}).items():
                if isinstance(value, str):
                    texts.setdefault(name, []).append(value)
                elif value is not None:
                    texts.setdefault(name, []).append(json.dumps(value))
    whole = ["".join(parts) for parts in texts.values()]
    whole.append(json.dumps({k: v for k, v in record.items() if k != "chunks"}, ensure_ascii=False))
    return any(redact_secrets(text) != text for text in whole)


def stream_record(stored: Any) -> dict[str, Any] | None:
    """`stored` if it is a streamed answer of this format, else None (treated as a miss)."""
    if isinstance(stored, dict) and stored.get("v") == _VERSION and stored.get("kind") == "stream":
        if isinstance(stored.get("chunks"), list):
            return stored
    return None


def sse_bytes(record: dict[str, Any]) -> bytes:
    """A recorded stream as the server-sent events it came as, each usage object marked as replayed."""
    events = []
    for chunk in record["chunks"]:
        if isinstance(chunk, dict) and isinstance(chunk.get("usage"), dict):
            chunk = {**chunk, "usage": {**chunk["usage"], REPLAY_MARK: True}}
        events.append(b"data: " + json.dumps(chunk, ensure_ascii=False).encode("utf-8", "surrogatepass") + b"\n\n")
    if record.get("complete"):
        events.append(b"data: [DONE]\n\n")
    return b"".join(events)


def completion_record(answer: Any) -> dict[str, Any]:
    """A fast-path `Completion` as the cache keeps it."""
    # The fields one by one (not dataclasses.asdict, which deep-copies every value): they are JSON already.
    return {
        "v": _VERSION,
        "kind": "completion",
        "text": answer.text,
        "finish_reason": answer.finish_reason,
        "usage": answer.usage,
        "logprobs": answer.logprobs,
        "reasoning": answer.reasoning,
    }


def completion_fields(stored: Any) -> dict[str, Any] | None:
    """The `Completion` fields of a stored non-streamed answer (its usage marked as replayed), else None."""
    if not (isinstance(stored, dict) and stored.get("v") == _VERSION and stored.get("kind") == "completion"):
        return None
    fields: dict[str, Any] = {k: stored.get(k) for k in ("text", "finish_reason", "usage", "logprobs", "reasoning")}
    if not isinstance(fields["text"], str):
        return None
    usage = fields["usage"]
    if isinstance(usage, dict):
        fields["usage"] = {**usage, REPLAY_MARK: True}
    return fields


def model_of(body: dict[str, Any]) -> str | None:
    model = body.get("model")
    return model if isinstance(model, str) else None


__all__ = [
    "REPLAY_MARK",
    "CacheRun",
    "ChunkStream",
    "StreamRecorder",
    "completion_fields",
    "completion_record",
    "holds_secret",
    "model_of",
    "sse_bytes",
    "stream_record",
]
