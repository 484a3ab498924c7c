"""Bad servers: every broken answer ends in a typed error or a correct retry, never a hang or a crash.

Each test scripts the loopback fake server (real openai SDK over real HTTP), runs a one-gen program and
checks the error type, the number of requests the server received, the backoff delays asked for, and that
the failed call left no capture and no text behind in the program.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from guidance import assistant, gen, select, user

import guidance_deepinfra
from guidance_deepinfra import (
    APIError,
    AuthenticationError,
    ConfigurationError,
    ContextLengthError,
    DeepInfra,
    DeepInfraError,
    InvalidParameterError,
    ModelNotFoundError,
    ProtocolError,
    RateLimitError,
    RequestTimeoutError,
    ServerError,
    UnsupportedFeatureError,
)
from guidance_deepinfra.testing import FakeDeepInfra, Reply

MakeModel = Callable[..., DeepInfra]


def _chunk(choices: Any = None, **extra: Any) -> bytes:
    event = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    event["choices"] = choices if choices is not None else []
    event.update(extra)
    return b"data: " + json.dumps(event).encode() + b"\n\n"


def _text_choice(text: str, finish: str | None = None) -> list[dict[str, Any]]:
    return [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]


DONE = b"data: [DONE]\n\n"


def _ready(make_model: MakeModel, **kwargs: Any) -> DeepInfra:
    lm = make_model(**kwargs)
    with user():
        lm += "Say hello."
    return lm


def _run_failing(lm: DeepInfra, error: type[DeepInfraError]) -> DeepInfraError:
    """Run a gen that must fail with `error`; check the program was left untouched."""
    before = str(lm)
    with pytest.raises(error) as info:
        with assistant():
            lm + "Reply: " + gen("answer", max_tokens=20)
    assert str(lm) == before, "a failed call changed the program"
    with pytest.raises(KeyError):
        lm["answer"]
    return info.value


def _run_ok(lm: DeepInfra) -> DeepInfra:
    with assistant():
        return lm + gen("answer", max_tokens=20)


# --------------------------------------------------------------------------- malformed streams


@pytest.mark.parametrize(
    ("lines", "fragment"),
    [
        ([b"data: {not json\n\n", DONE], "malformed server-sent event"),
        ([_chunk(_text_choice("Hel")), b'data: {"id": 1, "cho\n\n', DONE], "malformed server-sent event"),
        ([b"data: 42\n\n", DONE], "not a chat.completion.chunk"),
        ([b"data: [1, 2]\n\n", DONE], "not a chat.completion.chunk"),
        ([_chunk("abc"), DONE], "`choices` is str"),
        ([_chunk([{"index": 0}]), DONE], "no `delta`"),
        ([_chunk(["x"]), DONE], "a choice is str"),
        ([_chunk(_text_choice(5)), DONE], "`delta.content` is int"),  # type: ignore[arg-type]
        ([_chunk([{"index": 0, "delta": {}, "finish_reason": 3}]), DONE], "`finish_reason` is int"),
        ([_chunk(_text_choice("x", "stop"), usage="lots"), DONE], "`usage` is str"),
        ([_chunk(_text_choice("x", "stop"), usage={"total_tokens": 3}), DONE], "usage.prompt_tokens"),
        (
            [_chunk([{"index": 0, "delta": {"tool_calls": "call"}, "finish_reason": None}]), DONE],
            "tool_calls",
        ),
    ],
    ids=[
        "bad-json",
        "bad-json-after-text",
        "number",
        "array",
        "choices-string",
        "choice-without-delta",
        "choice-string",
        "content-int",
        "finish-int",
        "usage-string",
        "usage-without-counts",
        "tool-calls-string",
    ],
)
def test_malformed_stream_is_a_protocol_error(
    fake: FakeDeepInfra, make_model: MakeModel, sleeps: list[float], lines: list[bytes], fragment: str
) -> None:
    fake.push(Reply.sse(lines))
    error = _run_failing(_ready(make_model), ProtocolError)
    assert fragment in str(error)
    assert len(fake.requests) == 1 and sleeps == []


def test_stream_cut_mid_json(fake: FakeDeepInfra, make_model: MakeModel, sleeps: list[float]) -> None:
    fake.push(Reply.sse([_chunk(_text_choice("Hello, wo")), b'data: {"id": "chatcmpl-x", "choi'], cut=True))
    error = _run_failing(_ready(make_model), ProtocolError)
    assert "broke off after 1 chunks" in str(error)
    assert len(fake.requests) == 1 and sleeps == []


def test_text_reply_cut_before_done(fake: FakeDeepInfra, make_model: MakeModel) -> None:
    fake.push(Reply.text("Hello there, how are you?", cut=True))
    error = _run_failing(_ready(make_model), ProtocolError)
    assert "broke off" in str(error)
    assert len(fake.requests) == 1


def test_stream_ending_without_finish_reason_is_refused(fake: FakeDeepInfra, make_model: MakeModel) -> None:
    fake.push(Reply.sse([_chunk(_text_choice("Hello, wo")), DONE]))
    error = _run_failing(_ready(make_model), ProtocolError)
    assert "without a finish_reason" in str(error)
    assert len(fake.requests) == 1


def test_empty_choices_is_a_protocol_error(fake: FakeDeepInfra, make_model: MakeModel) -> None:
    usage = {"prompt_tokens": 3, "completion_tokens": 0, "total_tokens": 3}
    fake.push(Reply.sse([_chunk([]), _chunk([], usage=usage), DONE]))
    error = _run_failing(_ready(make_model), ProtocolError)
    assert "no choices" in str(error)
    assert len(fake.requests) == 1


def test_stream_without_any_event(fake: FakeDeepInfra, make_model: MakeModel) -> None:
    fake.push(Reply.sse([DONE]))
    error = _run_failing(_ready(make_model), ProtocolError)
    assert "without sending any chunk" in str(error)


def test_usage_only_chunk_after_the_answer_is_fine(fake: FakeDeepInfra, make_model: MakeModel) -> None:
    """OpenAI-style trailing usage chunk with empty choices is valid, not a protocol error."""
    usage = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
    fake.push(Reply.sse([_chunk(_text_choice("Hi!")), _chunk(_text_choice("", "stop")), _chunk([], usage=usage), DONE]))
    lm = _run_ok(_ready(make_model))
    assert lm["answer"] == "Hi!"
    assert lm.usage.prompt_tokens == 7 and lm.usage.completion_tokens == 2


def test_garbled_logprobs_are_dropped_not_fatal(fake: FakeDeepInfra, make_model: MakeModel) -> None:
    bad = {"content": [{"token": "Hi", "logprob": None, "top_logprobs": None}]}
    choice = [{"index": 0, "delta": {"content": "Hi"}, "logprobs": bad, "finish_reason": "stop"}]
    fake.push(Reply.sse([_chunk(choice), DONE]))
    lm = _run_ok(_ready(make_model, logprobs=True))
    assert lm["answer"] == "Hi"
    assert fake.last["logprobs"] is True


def test_error_event_inside_the_stream(fake: FakeDeepInfra, make_model: MakeModel) -> None:
    fake.push(Reply.sse([_chunk(_text_choice("Hel")), b'data: {"error": {"message": "engine crashed"}}\n\n']))
    error = _run_failing(_ready(make_model), APIError)
    assert "engine crashed" in str(error) and "mid-stream" in str(error)
    assert len(fake.requests) == 1


def test_error_event_with_a_status_code_is_typed(fake: FakeDeepInfra, make_model: MakeModel) -> None:
    event = {"error": {"message": "Model busy, retry later", "code": 503}}
    fake.push(Reply.sse([b"data: " + json.dumps(event).encode() + b"\n\n"]))
    error = _run_failing(_ready(make_model), ServerError)
    assert "Model busy" in str(error) and error.status == 503
    assert len(fake.requests) == 1  # text may already have been shown: a stream is never retried


# --------------------------------------------------------------------------- wrong bodies and content types


def test_200_with_html_body(fake: FakeDeepInfra, make_model: MakeModel, sleeps: list[float]) -> None:
    page = b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1>nginx</body></html>"
    fake.push(Reply.raw(200, page, "text/html; charset=utf-8"))
    error = _run_failing(_ready(make_model), ProtocolError)
    assert "text/html" in str(error) and "502 Bad Gateway" in str(error) and "<h1>" not in str(error)
    assert len(fake.requests) == 1 and sleeps == []


def test_html_sent_as_event_stream(fake: FakeDeepInfra, make_model: MakeModel) -> None:
    fake.push(Reply.raw(200, b"<html><body>maintenance</body></html>", "text/event-stream"))
    _run_failing(_ready(make_model), ProtocolError)
    assert len(fake.requests) == 1


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (
            json.dumps(
                {
                    "id": "x",
                    "object": "chat.completion",
                    "created": 1,
                    "model": "m",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "hi"},
                            "finish_reason": "stop",
                        }
                    ],
                }
            ).encode(),
            "application/json",
        ),
        (b"data: hello\n\n", "text/plain"),
        (b"data: hello\n\n", ""),
    ],
    ids=["json-completion", "text-plain", "no-content-type"],
)
def test_wrong_content_type(fake: FakeDeepInfra, make_model: MakeModel, body: bytes, content_type: str) -> None:
    reply = Reply.raw(200, body, content_type) if content_type else Reply(status=200, body=body, headers={})
    fake.push(reply)
    error = _run_failing(_ready(make_model), ProtocolError)
    assert "expected a server-sent event stream" in str(error)
    assert repr(content_type or "(none)") in str(error)
    assert len(fake.requests) == 1


# --------------------------------------------------------------------------- size


def test_huge_streamed_answer_arrives_whole(fake: FakeDeepInfra, make_model: MakeModel) -> None:
    text = "".join(f"line {i:07d}\n" for i in range(150_000))  # about 2 MB
    fake.push(Reply.text(text, chunk_size=256 * 1024))
    lm = _run_ok(_ready(make_model))
    assert lm["answer"] == text
    assert len(fake.requests) == 1


def test_huge_single_event_line(fake: FakeDeepInfra, make_model: MakeModel) -> None:
    text = "x" * 1_000_000
    fake.push(Reply.sse([_chunk(_text_choice(text, "stop")), DONE]))
    lm = _run_ok(_ready(make_model))
    assert lm["answer"] == text


def test_huge_error_and_garbage_bodies_give_short_messages(fake: FakeDeepInfra, make_model: MakeModel) -> None:
    fake.push(Reply.raw(400, b"E" * 5_000_000, "text/plain"))
    error = _run_failing(_ready(make_model), InvalidParameterError)
    assert len(str(error)) < 400
    fake.push(Reply.raw(200, b"<html><body>" + b"junk " * 1_000_000 + b"</body></html>", "text/html"))
    error = _run_failing(_ready(make_model), ProtocolError)
    assert len(str(error)) < 400
    assert len(fake.requests) == 2


# --------------------------------------------------------------------------- timeouts


def test_hung_stream_times_out(fake: FakeDeepInfra, make_model: MakeModel, sleeps: list[float]) -> None:
    fake.push(Reply.hanging(5))
    error = _run_failing(_ready(make_model, timeout=0.3), RequestTimeoutError)
    assert "stalled" in str(error)
    assert len(fake.requests) == 1 and sleeps == []  # text may have been shown: no retry mid-stream


@pytest.mark.slow  # waits for a timeout to end a hung request
def test_hung_connection_before_headers_is_retried_then_times_out(
    fake: FakeDeepInfra, make_model: MakeModel, sleeps: list[float]
) -> None:
    fake.push(Reply.hanging(5, before_headers=True), Reply.hanging(5, before_headers=True))
    error = _run_failing(_ready(make_model, timeout=0.3, max_retries=1), RequestTimeoutError)
    assert "after 2 attempts" in str(error)
    assert len(fake.requests) == 2 and len(sleeps) == 1


@pytest.mark.slow  # waits for a timeout to end a hung request
def test_stream_stalling_after_some_text_times_out(fake: FakeDeepInfra, make_model: MakeModel) -> None:
    fake.push(Reply.text("Hello there, friend", chunk_size=4, chunk_delay=0.6))
    error = _run_failing(_ready(make_model, timeout=0.3), RequestTimeoutError)
    assert "stalled" in str(error)
    assert len(fake.requests) == 1


def test_keepalive_comments_and_unknown_fields_are_ignored(fake: FakeDeepInfra, make_model: MakeModel) -> None:
    lines = [
        b": keep-alive\n\n",
        b"event: message\n" + _chunk(_text_choice("Hel")),
        b": ping\n\n",
        b"id: 7\nretry: 1000\n" + _chunk(_text_choice("lo", "stop")),
        DONE,
    ]
    fake.push(Reply.sse(lines))
    lm = _run_ok(_ready(make_model))
    assert lm["answer"] == "Hello"


@pytest.mark.slow  # waits for a timeout to end a hung request
def test_slow_first_answer_then_success(fake: FakeDeepInfra, make_model: MakeModel, sleeps: list[float]) -> None:
    fake.push(Reply.hanging(5, before_headers=True), Reply.text("Hello!"))
    lm = _run_ok(_ready(make_model, timeout=0.3, max_retries=2))
    assert lm["answer"] == "Hello!"
    assert len(fake.requests) == 2 and len(sleeps) == 1
    assert fake.requests[0] == fake.requests[1]


# --------------------------------------------------------------------------- 5xx and 429


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_storm_is_bounded(fake: FakeDeepInfra, make_model: MakeModel, sleeps: list[float], status: int) -> None:
    fake.push(*[Reply.error(status, {"detail": "Internal Server Error"}) for _ in range(10)])
    error = _run_failing(_ready(make_model, max_retries=3), ServerError)
    assert error.status == status and "Internal Server Error" in str(error)
    assert len(fake.requests) == 4
    assert len(sleeps) == 3 and all(s > 0 for s in sleeps)
    assert len(fake.script) == 6  # the rest were never asked for


def test_5xx_then_success(fake: FakeDeepInfra, make_model: MakeModel, sleeps: list[float]) -> None:
    fake.push(Reply.error(503, {"detail": "busy"}), Reply.raw(502, b"<html>bad gateway</html>", "text/html"))
    fake.push(Reply.text("Hello!"))
    lm = _run_ok(_ready(make_model))
    assert lm["answer"] == "Hello!"
    assert len(fake.requests) == 3 and len(sleeps) == 2
    assert fake.requests[0] == fake.requests[2]
    assert lm.transport.stats.retries == 2


def test_max_retries_zero_means_one_request(fake: FakeDeepInfra, make_model: MakeModel, sleeps: list[float]) -> None:
    fake.push(Reply.error(500, {"detail": "boom"}), Reply.text("never sent"))
    _run_failing(_ready(make_model, max_retries=0), ServerError)
    assert len(fake.requests) == 1 and sleeps == []


def test_429_retry_after_is_honoured(fake: FakeDeepInfra, make_model: MakeModel, sleeps: list[float]) -> None:
    fake.push(Reply.rate_limited(retry_after=1.5), Reply.rate_limited(retry_after=0), Reply.text("Hello!"))
    lm = _run_ok(_ready(make_model))
    assert lm["answer"] == "Hello!"
    assert sleeps == [1.5, 0.0]
    assert len(fake.requests) == 3
    assert lm.transport.stats.rate_limited == 2


def test_429_retry_after_is_capped(fake: FakeDeepInfra, make_model: MakeModel, sleeps: list[float]) -> None:
    fake.push(Reply.rate_limited(retry_after=3600), Reply.text("Hello!"))
    lm = _run_ok(_ready(make_model))
    assert lm["answer"] == "Hello!"
    assert sleeps == [lm.transport.retry.max_delay]


def test_429_with_http_date_retry_after(fake: FakeDeepInfra, make_model: MakeModel, sleeps: list[float]) -> None:
    fake.push(Reply.error(429, {"error": {"message": "Rate limited"}}, headers={"retry-after": "garbage"}))
    fake.push(
        Reply.error(
            429,
            {"error": {"message": "Rate limited"}},
            headers={"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"},
        )
    )
    fake.push(Reply.text("Hello!"))
    lm = _run_ok(_ready(make_model))
    assert lm["answer"] == "Hello!"
    assert len(sleeps) == 2
    assert 0 < sleeps[0] <= lm.transport.retry.base_delay  # unparseable: ordinary backoff
    assert sleeps[1] == 0.0  # a date in the past: no wait


@pytest.mark.parametrize("value", ["nan", "inf", "-5"])
def test_429_with_nonsense_retry_after(
    fake: FakeDeepInfra, make_model: MakeModel, sleeps: list[float], value: str
) -> None:
    fake.push(Reply.error(429, {"error": {"message": "Rate limited"}}, headers={"retry-after": value}))
    fake.push(Reply.text("Hello!"))
    lm = _run_ok(_ready(make_model))
    assert lm["answer"] == "Hello!"
    assert len(sleeps) == 1 and 0 <= sleeps[0] <= lm.transport.retry.max_delay  # a real sleep() accepts it


def test_persistent_429_ends_in_rate_limit_error(
    fake: FakeDeepInfra, make_model: MakeModel, sleeps: list[float]
) -> None:
    fake.push(*[Reply.error(429, {"error": {"message": "Model busy, retry later"}}, headers={"retry-after": "2"})] * 5)
    error = _run_failing(_ready(make_model, max_retries=2), RateLimitError)
    assert "Model busy" in str(error) and error.status == 429
    assert sleeps == [2.0, 2.0]
    assert len(fake.requests) == 3


# --------------------------------------------------------------------------- DeepInfra's error bodies


@pytest.mark.parametrize(
    ("status", "body", "error_type", "message", "param"),
    [
        (
            400,
            {
                "error": {
                    "message": "temperature must be at most 2",
                    "type": "invalid_request_error",
                    "param": "temperature",
                }
            },
            InvalidParameterError,
            "temperature must be at most 2",
            "temperature",
        ),
        (
            422,
            {
                "detail": [
                    {
                        "loc": ["body", "max_tokens"],
                        "msg": "Input should be greater than 0",
                        "type": "greater_than",
                    }
                ]
            },
            InvalidParameterError,
            "max_tokens: Input should be greater than 0",
            "max_tokens",
        ),
        (
            400,
            {"detail": "Invalid request: bad messages"},
            InvalidParameterError,
            "Invalid request: bad messages",
            None,
        ),
        (401, {"detail": "Unauthorized"}, AuthenticationError, "Unauthorized", None),
        (403, {"error": {"message": "Your account has no access"}}, AuthenticationError, "no access", None),
        (404, {"detail": "Model is not available"}, ModelNotFoundError, "Model is not available", None),
        (
            405,
            {
                "error": {
                    "message": "json_object response format is not supported for model: m",
                    "param": "response_format",
                }
            },
            UnsupportedFeatureError,
            "not supported",
            "response_format",
        ),
        (405, {"detail": "Method Not Allowed"}, UnsupportedFeatureError, "Method Not Allowed", None),
        (
            422,
            {
                "detail": [
                    {
                        "loc": ["body", "reasoning_effort"],
                        "msg": "Input should be 'none', 'low'",
                        "type": "enum",
                    }
                ]
            },
            InvalidParameterError,
            "reasoning_effort: Input should be",
            "reasoning_effort",
        ),
    ],
    ids=[
        "error-400",
        "detail-list-422",
        "detail-str-400",
        "401",
        "403",
        "404",
        "405-format",
        "405-plain",
        "422-enum",
    ],
)
def test_error_bodies_are_typed_and_never_retried(
    fake: FakeDeepInfra,
    make_model: MakeModel,
    sleeps: list[float],
    status: int,
    body: dict[str, Any],
    error_type: type[DeepInfraError],
    message: str,
    param: str | None,
) -> None:
    fake.push(Reply.error(status, body), Reply.text("must not be reached"))
    error = _run_failing(_ready(make_model), error_type)
    assert message in str(error)
    assert error.status == status and f"(HTTP {status})" in str(error)
    assert error.param == param
    assert error.model == "test/model"
    assert len(fake.requests) == 1 and sleeps == []


def test_context_length_error_from_deepinfra_400(
    fake: FakeDeepInfra, make_model: MakeModel, sleeps: list[float]
) -> None:
    message = (
        "Requested token count exceeds the model's maximum context length of 131072 tokens. "
        "You requested a total of 140000 tokens: 139990 tokens from the input messages "
        "and 10 tokens for the completion."
    )
    fake.push(Reply.error(400, {"error": {"message": message, "type": "invalid_request_error", "param": None}}))
    lm = make_model()
    with user():
        lm += "word " * 20_000
    error = _run_failing(lm, ContextLengthError)
    assert "maximum context length" in str(error)
    assert len(fake.requests) == 1 and sleeps == []
    assert fake.last["messages"][0]["content"].startswith("word word")


def test_context_length_error_in_detail_shape(fake: FakeDeepInfra, make_model: MakeModel) -> None:
    fake.push(Reply.error(400, {"detail": "This model's maximum context length is 8192 tokens, input too long"}))
    _run_failing(_ready(make_model), ContextLengthError)


def test_unknown_model_is_model_not_found(fake: FakeDeepInfra, make_model: MakeModel, sleeps: list[float]) -> None:
    fake.push(Reply.error(404, {"detail": "The model `no/such-model` does not exist"}))
    error = _run_failing(_ready(make_model, model="no/such-model"), ModelNotFoundError)
    assert error.model == "no/such-model" and "no/such-model" in str(error)
    assert fake.last["model"] == "no/such-model"
    assert len(fake.requests) == 1 and sleeps == []


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirects_are_not_followed(
    fake: FakeDeepInfra, make_model: MakeModel, sleeps: list[float], status: int
) -> None:
    """A redirect would send the conversation elsewhere; it is refused, not followed or retried."""
    with FakeDeepInfra() as elsewhere:
        target = elsewhere.base_url + "/chat/completions?token=abc"
        fake.push(Reply(status=status, body=b"", headers={"location": target}))
        error = _run_failing(_ready(make_model), ProtocolError)
        assert elsewhere.requests == []
    assert "redirect" in str(error) and f"(HTTP {status})" in str(error)
    assert "token=abc" not in str(error)
    assert len(fake.requests) == 1 and sleeps == []


def test_empty_error_body(fake: FakeDeepInfra, make_model: MakeModel) -> None:
    fake.push(Reply.raw(400, b"", "application/json"))
    error = _run_failing(_ready(make_model), InvalidParameterError)
    assert "(empty body)" in str(error)


def test_the_model_still_works_after_a_failed_call(fake: FakeDeepInfra, make_model: MakeModel) -> None:
    """A failed call leaves no partial assistant text behind for the next request to send."""
    fake.push(Reply.sse([_chunk(_text_choice("partial answ")), b'data: {"bro'], cut=True), Reply.text("Hello!"))
    lm = _ready(make_model)
    _run_failing(lm, ProtocolError)
    lm = _run_ok(lm)
    assert lm["answer"] == "Hello!"
    asked = {"role": "user", "content": "Say hello."}
    assert fake.requests[0]["messages"] == [asked, {"role": "assistant", "content": "Reply: "}]
    assert fake.requests[1]["messages"] == [asked]


# --------------------------------------------------------------------------- every kind of node


def _json_node() -> Any:
    return guidance_deepinfra.json("doc", schema={"type": "object", "required": ["a"]})


def _select_node() -> Any:
    return select(["red", "green"], name="doc")


def _regex_node() -> Any:
    return gen("doc", regex=r"\d{3}-\d{4}")


def _gen_node() -> Any:
    return gen("doc", max_tokens=10)


NODES = {"json": _json_node, "select": _select_node, "regex": _regex_node, "gen": _gen_node}
FAILURES = {
    "cut-mid-stream": ([Reply.sse([_chunk(_text_choice('{"a": 1, "b": [')), b'data: {"cho'], cut=True)], ProtocolError),
    "garbled-chunk": ([Reply.sse([_chunk(_text_choice('{"a"')), _chunk([{"index": 0}]), DONE])], ProtocolError),
    "no-finish": ([Reply.sse([_chunk(_text_choice('{"a": 1}')), DONE])], ProtocolError),
    "5xx-storm": ([Reply.error(503, {"detail": "busy"})] * 3, ServerError),
    "hung": ([Reply.hanging(5)], RequestTimeoutError),
}


# The hung case waits for the 0.3 s timeout on every node kind: slow (test_hung_stream_times_out stays fast).
@pytest.mark.parametrize(
    "failure", [pytest.param(f, marks=pytest.mark.slow) if f == "hung" else f for f in sorted(FAILURES)]
)
@pytest.mark.parametrize("kind", sorted(NODES))
def test_a_failed_call_sets_no_capture_for_any_node(
    fake: FakeDeepInfra, make_model: MakeModel, sleeps: list[float], kind: str, failure: str
) -> None:
    replies, error = FAILURES[failure]
    fake.push(*replies, Reply.text("not to be used"))
    lm = _ready(make_model, timeout=0.3, max_retries=2)
    before = str(lm)
    with pytest.raises(error):
        with assistant():
            lm + "Answer: " + NODES[kind]()
    assert str(lm) == before
    with pytest.raises(KeyError):
        lm["doc"]
    expected_requests = 3 if failure == "5xx-storm" else 1
    assert len(fake.requests) == expected_requests and len(sleeps) == expected_requests - 1


@pytest.mark.slow  # measures the elapsed time
def test_a_stream_kept_alive_without_end_hits_the_deadline(fake: FakeDeepInfra, make_model: MakeModel) -> None:
    # Each comment arrives well within the per-read timeout, so only the total deadline can end this.
    lines = [_chunk(_text_choice("Hel"))] + [b": keep-alive\n\n"] * 40
    fake.push(Reply(events=lines, headers={"content-type": "text/event-stream"}, chunk_delay=0.05))
    started = time.monotonic()
    error = _run_failing(_ready(make_model, timeout=1.0, stream_deadline=0.5), RequestTimeoutError)
    assert "stream_deadline=0.5" in str(error)
    assert time.monotonic() - started < 1.9  # ended by the deadline, not by the 40 comments (2 s)
    assert len(fake.requests) == 1


def test_stream_deadline_must_be_positive(make_model: MakeModel, fake: FakeDeepInfra) -> None:
    with pytest.raises(ConfigurationError, match="stream_deadline"):
        make_model(stream_deadline=0)
    assert fake.requests == []
