"""The size and time bounds both transports apply to what a server sends back, defined once.

The streamed path (`client.Transport`, the openai SDK over httpx) and the extraction fast path
(`aio.AsyncTransport`, aiohttp) read the same bounds from here, so a server cannot get past one path with
what the other refuses:

- an error body, or a body of the wrong content type, is read up to `BODY_READ_LIMIT` bytes (it is only
  quoted in a message);
- a whole answer (a non-streamed chat completion, or all the bytes of an event stream) may be at most
  `ANSWER_LIMIT` bytes, checked against ``content-length`` before reading and again while reading;
- nothing is decompressed: both ask for ``Accept-Encoding: identity``, and a 2xx answer that comes
  compressed all the same is refused (`compressed_error`) rather than inflated, so a small body cannot
  grow into gigabytes in memory;
- every attempt has a deadline: `attempt_seconds` gives ``timeout``, or the stream deadline when ``timeout``
  is None.
"""

from __future__ import annotations

from ..errors import ProtocolError

#: How much of an unexpected or error body is read: enough for any message, bounded for a runaway server.
BODY_READ_LIMIT = 64 * 1024

#: The most bytes one answer may take. DeepInfra caps an answer at 16,384 tokens; with 20 log-probability
#: alternatives per token that is about 29 MiB as a non-streamed completion and 33 MiB as an event stream
#: (tests/unit/transport/test_both_paths.py builds both), so the largest real answer fits with room to spare
#: and a runaway server stops here.
ANSWER_LIMIT = 64 * 1024 * 1024

#: What both transports ask for: the body as sent, never compressed.
ACCEPT_ENCODING = "identity"


def attempt_seconds(timeout: float | None, stream_deadline: float | None) -> float | None:
    """The total seconds one attempt may take until its answer (or, streamed, its headers) has arrived.

    ``timeout`` when set; with ``timeout=None`` the stream deadline still bounds it, as it bounds a streamed
    answer's body, so switching the timeout off never leaves a request that can hang for ever. Only both
    None (asked for explicitly) means no bound.
    """
    return timeout if timeout is not None else stream_deadline


def deadline_reason(timeout: float | None, stream_deadline: float | None) -> str:
    """The sentence a passed `attempt_seconds` deadline is reported with."""
    if timeout is not None:
        return f"the server did not deliver its response within timeout={timeout:g} s"
    return f"the server did not deliver its response within stream_deadline={stream_deadline:g} s (timeout=None)"


def is_compressed(content_encoding: str) -> bool:
    """True when a ``content-encoding`` header says the body is not sent as is."""
    return bool(content_encoding) and content_encoding.strip().lower() not in ("identity", "")


def compressed_error(content_encoding: str, status: int, *, model: str | None) -> ProtocolError:
    """The error for a 2xx answer that came compressed though ``identity`` was asked for."""
    return ProtocolError(
        f"the answer came compressed (content-encoding {content_encoding[:40]!r}) though it was asked for "
        "uncompressed; compressed answers are refused rather than inflated, which has no size bound",
        status=status,
        model=model,
    )


def too_large_error(size: int, status: int, *, model: str | None, announced: bool = False) -> ProtocolError:
    """The error for an answer past `ANSWER_LIMIT` (`announced`: its content-length said so before any read)."""
    how = f"announces {size:,} bytes" if announced else f"went past {size:,} bytes"
    return ProtocolError(
        f"the answer {how}, more than the limit of {ANSWER_LIMIT:,} bytes (ANSWER_LIMIT); it was not read further",
        status=status,
        model=model,
    )


def announced_length(value: str | None) -> int | None:
    """A ``content-length`` header as a number, None when absent or not a number."""
    if value is None:
        return None
    value = value.strip()
    return int(value) if value.isdigit() else None
