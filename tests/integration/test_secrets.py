"""The API key never leaves the Authorization header, and cassettes hold no credentials or account data.

Representative programs (successes, every error type, retries) run with a recognisable key while every
log record is captured at DEBUG (our logger, the openai SDK's and the HTTP library's); then every exception
(message, str, repr, traceback, chained causes and attributes), every warning and log record, the reprs of the
model, interpreter and transport, and every cassette file are searched for the key.
"""

from __future__ import annotations

import json
import logging
import re
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from guidance import assistant, gen, select, user

import guidance_deepinfra
from guidance_deepinfra import DeepInfra, DeepInfraError, RetryPolicy
from guidance_deepinfra.demo import make_vcr
from guidance_deepinfra.profile import ProfileRegistry
from guidance_deepinfra.testing import FakeDeepInfra, Reply

KEY = "sk-SECRETKEY-5f0c9a7e3b1d42c8a6e4f2b0d8c6a4e2"
#: Distinctive pieces of the key, so a truncated or re-encoded copy is found too.
KEY_PARTS = ("SECRETKEY", "5f0c9a7e3b1d42c8", "a6e4f2b0d8c6a4e2")
CASSETTES = Path(__file__).resolve().parents[2] / "cassettes"
LOGGERS = ("", "guidance_deepinfra", "openai", "httpx2", "httpx", "httpcore", "guidance")

#: Response headers a live server may send that identify an account, a session or a request.
IDENTIFYING_HEADERS = ("set-cookie", "x-account-id", "x-user-id", "openai-organization", "x-request-id")


def _assert_clean(text: str, where: str) -> None:
    for part in (KEY, *KEY_PARTS):
        assert part not in text, f"the API key appears in {where}: ...{text[max(0, text.find(part) - 80) :][:200]}"


def _exception_texts(exc: BaseException) -> Iterator[str]:
    """Everything a user or a log handler could print about `exc` and the exceptions chained to it."""
    yield "".join(traceback.format_exception(exc))
    seen: set[int] = set()
    current: BaseException | None = exc
    stack = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield str(current)
        yield repr(current)
        yield repr(current.args)
        yield repr(vars(current))
        yield "".join(traceback.format_exception_only(type(current), current))
        stack.extend(e for e in (current.__cause__, current.__context__) if e is not None)


def _record_texts(records: list[logging.LogRecord]) -> Iterator[str]:
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    for record in records:
        yield formatter.format(record)
        yield repr(record.args)
        yield repr(record.__dict__)


# --------------------------------------------------------------------------- the programs


def _gen(lm: DeepInfra) -> DeepInfra:
    with user():
        lm += "Say hello."
    with assistant():
        lm += "Sure: " + gen("answer", max_tokens=20, stop=".")
    return lm


def _json(lm: DeepInfra) -> DeepInfra:
    with user():
        lm += "Give a person."
    with assistant():
        lm += guidance_deepinfra.json("person", schema={"type": "object", "required": ["name"]})
    return lm


def _select(lm: DeepInfra) -> DeepInfra:
    with user():
        lm += "Yes or no?"
    with assistant():
        lm += select(["yes", "no"], name="verdict")
    return lm


Program = Callable[[DeepInfra], DeepInfra]

CASES: list[tuple[str, Program, list[Reply], dict[str, Any], type[DeepInfraError] | None]] = [
    ("success", _gen, [Reply.text("Hello. Bye.")], {}, None),
    ("json", _json, [Reply.text('{"name": "Ada"}')], {}, None),
    ("select", _select, [Reply.text('"yes"')], {}, None),
    ("retries", _gen, [Reply.rate_limited(0.1), Reply.error(503, {"detail": "busy"}), Reply.text("Hi.")], {}, None),
    ("401", _gen, [Reply.error(401, {"detail": "Invalid token"})], {}, guidance_deepinfra.AuthenticationError),
    ("403", _gen, [Reply.error(403, {"error": {"message": "forbidden"}})], {}, guidance_deepinfra.AuthenticationError),
    ("404", _gen, [Reply.error(404, {"detail": "Model not found"})], {}, guidance_deepinfra.ModelNotFoundError),
    ("405", _json, [Reply.unsupported("json_schema response format", "test/model")] * 3 + [Reply.text("no")] * 3,
     {"max_attempts": 1}, DeepInfraError),
    ("422", _gen, [Reply.error(422, {"detail": [{"loc": ["body", "x"], "msg": "bad", "type": "t"}]})], {},
     guidance_deepinfra.InvalidParameterError),
    ("context", _gen, [Reply.error(400, {"error": {"message": "maximum context length exceeded"}})], {},
     guidance_deepinfra.ContextLengthError),
    ("429", _gen, [Reply.rate_limited(0)] * 3, {"max_retries": 2}, guidance_deepinfra.RateLimitError),
    ("5xx", _gen, [Reply.error(500, b"<html>oops</html>")] * 3, {"max_retries": 2}, guidance_deepinfra.ServerError),
    ("protocol", _gen, [Reply.sse([b"data: {broken\n\n"])], {}, guidance_deepinfra.ProtocolError),
    ("cut", _gen, [Reply.text("Hello there", cut=True)], {}, guidance_deepinfra.ProtocolError),
    ("timeout", _gen, [Reply.hanging(3, before_headers=True)] * 2, {"timeout": 0.2, "max_retries": 1},
     guidance_deepinfra.RequestTimeoutError),
    ("constraint", _select, [Reply.text("maybe")] * 2, {"max_attempts": 2}, guidance_deepinfra.ConstraintError),
]  # fmt: skip


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def _model(base_url: str, **kwargs: Any) -> DeepInfra:
    kwargs.setdefault("profiles", ProfileRegistry())
    return DeepInfra(
        "test/model",
        api_key=KEY,
        base_url=base_url,
        echo=False,
        logprobs=False,
        retry=RetryPolicy(sleep=lambda _: None),
        **kwargs,
    )


@pytest.mark.parametrize(("name", "program", "replies", "kwargs", "error"), CASES, ids=[c[0] for c in CASES])
def test_the_key_never_leaks(
    debug_logs: pytest.LogCaptureFixture,
    name: str,
    program: Program,
    replies: list[Reply],
    kwargs: dict[str, Any],
    error: type[DeepInfraError] | None,
) -> None:
    texts: list[tuple[str, str]] = []
    with FakeDeepInfra() as fake, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fake.push(*replies)
        lm = _model(fake.base_url, **kwargs)
        texts += [("repr(model)", repr(lm)), ("repr(interpreter)", repr(lm._interpreter))]
        texts += [("repr(transport)", repr(lm.transport)), ("repr(retry)", repr(lm.transport.retry))]
        if error is None:
            done = program(lm)
            texts += [("program text", str(done)), ("usage", done.usage.summary()), ("state", repr(done._state))]
        else:
            with pytest.raises(error) as info:
                program(lm)
            texts += [("exception", t) for t in _exception_texts(info.value)]
        # Not vacuous: the key did go out, in the Authorization header only.
        assert fake.request_headers, "no request reached the server"
        for headers in fake.request_headers:
            assert headers["authorization"] == f"Bearer {KEY}"
            assert sum(KEY in value for value in headers.values()) == 1
        for body in fake.requests:
            _assert_clean(json.dumps(body), "a request body")
    texts += [("warning", str(w.message)) for w in caught]
    texts += [("log", t) for t in _record_texts(debug_logs.records)]
    assert any(r.name.startswith("openai") for r in debug_logs.records), "the SDK's debug log was not captured"
    for where, text in texts:
        _assert_clean(text, where)


def test_http_library_request_log_is_captured_and_clean(debug_logs: pytest.LogCaptureFixture) -> None:
    with FakeDeepInfra() as fake:
        _gen(_model(fake.base_url))
    names = {r.name.split(".")[0] for r in debug_logs.records}
    assert names & {"httpx2", "httpx", "httpcore"}, f"no HTTP library records among {names}"
    for text in _record_texts(debug_logs.records):
        _assert_clean(text, "a log record")


def test_key_from_the_environment_is_handled_the_same(
    monkeypatch: pytest.MonkeyPatch, debug_logs: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("DEEPINFRA_API_KEY", KEY)
    with FakeDeepInfra() as fake:
        fake.push(Reply.error(401, {"detail": "Invalid token"}))
        lm = DeepInfra("test/model", base_url=fake.base_url, echo=False, profiles=ProfileRegistry())
        with pytest.raises(guidance_deepinfra.AuthenticationError) as info:
            _gen(lm)
        assert fake.request_headers[0]["authorization"] == f"Bearer {KEY}"
    for text in (repr(lm), repr(lm._interpreter), *_exception_texts(info.value), *_record_texts(debug_logs.records)):
        _assert_clean(text, "output")


def test_a_refused_key_is_not_echoed() -> None:
    bad = KEY + "\u00e9"
    with pytest.raises(guidance_deepinfra.ConfigurationError) as info:
        DeepInfra("test/model", api_key=bad, echo=False)
    for text in _exception_texts(info.value):
        _assert_clean(text, "the configuration error")


# --------------------------------------------------------------------------- cassettes


def test_recording_a_cassette_scrubs_credentials_and_identifiers(tmp_path: Path) -> None:
    """Record through the project's vcr setup with a real-looking key and identifying response headers."""
    identifying = {
        "set-cookie": "session=acct_7741; HttpOnly",
        "x-account-id": "acct_7741",
        "x-user-id": "user_7741",
        "openai-organization": "org-7741",
        "x-request-id": "req_7741",
    }

    def responder(body: dict[str, Any]) -> Reply:
        reply = Reply.text("Hello.").for_request(body)
        reply.headers.update(identifying)
        return reply

    cassette = tmp_path / "recorded.yaml"
    with FakeDeepInfra(responder) as fake:
        with make_vcr("all").use_cassette(str(cassette)):
            lm = _gen(_model(fake.base_url))
        assert lm["answer"] == "Hello"
        assert fake.request_headers[0]["authorization"] == f"Bearer {KEY}"
    text = cassette.read_text()
    assert "Hello" in text  # the interaction was recorded
    _assert_clean(text, "the recorded cassette")
    _check_cassette_text(text, "the recorded cassette")
    # ...and the scrubbed cassette still replays.
    with make_vcr("none").use_cassette(str(cassette)):
        replayed = _gen(_model(fake.base_url, max_retries=0))
    assert replayed["answer"] == "Hello"


_KEY_LIKE = re.compile(
    r"(?i)\b(?:sk|pk|di|key|token|secret)[-_][A-Za-z0-9_-]{12,}|\b[A-Za-z0-9]{32,}\b|\bey[A-Za-z0-9_-]{20,}\.[A-Za-z0-9_-]{20,}"
)
_ACCOUNT_KEYS = re.compile(r'(?i)"(?:user|user_id|account|account_id|organization|org_id|owner|email)"\s*:')


def _check_cassette_text(text: str, where: str) -> None:
    lowered = text.lower()
    assert "authorization" not in lowered, f"an authorization header in {where}"
    assert "bearer" not in lowered, f"a bearer token in {where}"
    for header in IDENTIFYING_HEADERS + ("cookie",):
        assert f"{header}:" not in lowered, f"the {header} header in {where}"
    assert "acct_" not in text and "org-7741" not in text and "user_7741" not in text
    without_data_urls = re.sub(r"data:[a-z]+/[a-z0-9.+-]+;base64,[A-Za-z0-9+/=]+", "", text)
    found = _KEY_LIKE.search(without_data_urls)
    assert found is None, f"a key-like string {found.group(0)[:12]!r}... in {where}"
    assert _ACCOUNT_KEYS.search(text) is None, f"an account field in {where}"


def _cassette_files() -> list[Path]:
    """Every recorded interaction and provenance file (the README only describes them)."""
    return sorted(p for p in CASSETTES.rglob("*") if p.is_file() and p.suffix in (".yaml", ".yml", ".json"))


@pytest.mark.parametrize("path", _cassette_files(), ids=lambda p: str(p.relative_to(CASSETTES)))
def test_committed_cassettes_hold_no_credentials_or_account_data(path: Path) -> None:
    text = path.read_text(errors="replace")
    _assert_clean(text, str(path))
    _check_cassette_text(text, str(path))


def test_the_cassette_check_catches_what_it_looks_for() -> None:
    """The checks above can fail: each planted secret is found."""
    planted = [
        "headers:\n  Authorization:\n  - Bearer abc",
        "uri: https://x\n  body: sk-abcdefghijklmnop1234",
        "token: a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8",
        '{"user": "someone"}',
        "set-cookie:\n  - session=1",
    ]
    for text in planted:
        with pytest.raises(AssertionError):
            _check_cassette_text(text, "a planted text")


# --------------------------------------------------------------------------- a server that echoes the key


def _echoing(fake: FakeDeepInfra, build: Callable[[str], Reply]) -> Callable[[dict[str, Any]], Reply]:
    """A responder that quotes the Authorization header it received, as a careless server or proxy does."""

    def respond(body: dict[str, Any]) -> Reply:
        authorization = fake.request_headers[-1]["authorization"]
        return build(authorization).for_request(body)

    return respond


def _key_of(authorization: str) -> str:
    return authorization.removeprefix("Bearer ")


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


ECHOES: dict[str, tuple[Program, Callable[[str], Reply], type[DeepInfraError]]] = {
    "401 detail": (
        _gen, lambda a: Reply.error(401, {"detail": f"Invalid API key provided: {_key_of(a)}"}),
        guidance_deepinfra.AuthenticationError,
    ),
    "400 error fields": (
        _gen,
        lambda a: Reply.error(
            400, {"error": {"message": f"Invalid API key provided: {_key_of(a)}", "param": _key_of(a), "type": a}}
        ),
        guidance_deepinfra.InvalidParameterError,
    ),
    "403 header echo": (
        _gen, lambda a: Reply.error(403, {"error": {"message": f"Authorization: {a} is not allowed"}}),
        guidance_deepinfra.AuthenticationError,
    ),
    "422 loc": (
        _gen,
        lambda a: Reply.error(422, {"detail": [{"loc": ["body", _key_of(a)], "msg": f"bad {a}", "type": "t"}]}),
        guidance_deepinfra.InvalidParameterError,
    ),
    "500 html": (
        _gen, lambda a: Reply.error(500, f"<html><title>Oops</title><body>key {_key_of(a)}</body></html>".encode()),
        guidance_deepinfra.ServerError,
    ),
    "429 message": (
        _gen, lambda a: Reply.rate_limited(0, message=f"slow down, {_key_of(a)}"), guidance_deepinfra.RateLimitError
    ),
    "200 html": (
        _gen, lambda a: Reply.raw(200, f"<html><body>Hello {a}</body></html>".encode(), "text/html"),
        guidance_deepinfra.ProtocolError,
    ),
    "200 text cut at 200": (
        _gen, lambda a: Reply.raw(200, ("x" * 190 + " " + _key_of(a) + " tail" * 50).encode(), "text/plain"),
        guidance_deepinfra.ProtocolError,
    ),
    "stream error event": (
        _gen, lambda a: Reply.sse([_event({"error": {"message": f"bad key {_key_of(a)}"}})]), DeepInfraError
    ),
    "stream error event with code": (
        _gen, lambda a: Reply.sse([_event({"error": {"message": f"bad key {a}", "code": 401}})]), DeepInfraError
    ),
    "malformed chunk": (
        _gen,
        lambda a: Reply.sse([_event({"object": "chat.completion.chunk", "choices": "x", "echo": _key_of(a)})]),
        guidance_deepinfra.ProtocolError,
    ),
    "answer quoted in a constraint error": (
        _select, lambda a: Reply.text(f"maybe {_key_of(a)}"), guidance_deepinfra.ConstraintError
    ),
    "redirect": (
        _gen, lambda a: Reply(status=302, body=b"", headers={"location": f"http://127.0.0.1:1/k/{_key_of(a)}"}),
        guidance_deepinfra.ProtocolError,
    ),
}  # fmt: skip


#: Errors that do not quote the server's text at all (nothing to mask).
NOT_QUOTED = {"malformed chunk"}


@pytest.mark.parametrize("case", sorted(ECHOES))
def test_a_key_echoed_by_the_server_is_redacted_everywhere(debug_logs: pytest.LogCaptureFixture, case: str) -> None:
    program, build, error = ECHOES[case]
    with FakeDeepInfra() as fake, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fake.responder = _echoing(fake, build)
        lm = _model(fake.base_url, max_retries=1, max_attempts=2)
        with pytest.raises(error) as info:
            program(lm)
        assert fake.request_headers[0]["authorization"] == f"Bearer {KEY}"  # the server did get the key
    texts = [*_exception_texts(info.value), *(str(w.message) for w in caught), *_record_texts(debug_logs.records)]
    for text in texts:
        _assert_clean(text, f"the {case} error, a warning or a log record")
    if case not in NOT_QUOTED:
        assert "[redacted" in "".join(texts)  # the echo was there, masked (not merely lost)


def test_redaction_masks_keys_pieces_and_bearer_values() -> None:
    from guidance_deepinfra.errors import redact, register_secret

    register_secret(KEY)
    assert redact(f"Invalid API key provided: {KEY}.") == "Invalid API key provided: [redacted]."
    assert redact("authorization: Bearer abc.def-123 rest") == "authorization: Bearer [redacted] rest"
    assert "SECRETKEY" not in redact(f"truncated: {KEY[:20]}...")
    assert redact("nothing secret here, Bearer") == "nothing secret here, Bearer"
    register_secret("short")  # too short to be a key: masking it would garble messages
    assert redact("a short answer") == "a short answer"


def test_the_extract_command_never_writes_or_prints_an_echoed_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Per-input failures (errors.jsonl) and a fatal 401 (stderr) from a server echoing the key."""
    from guidance_deepinfra.cli import main

    monkeypatch.setenv("DEEPINFRA_API_KEY", KEY)
    (tmp_path / "schema.json").write_text('{"type": "object", "required": ["n"]}', encoding="utf-8")
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join(json.dumps({"id": f"r{i}", "text": f"doc {i}"}) + "\n" for i in range(6)))

    def per_input(authorization: str) -> Reply:
        return Reply.error(400, {"error": {"message": f"Invalid API key provided: {_key_of(authorization)}"}})

    argv = ["extract", "--schema", str(tmp_path / "schema.json"), "--input", str(inputs), "--no-progress"]
    with FakeDeepInfra() as fake:
        fake.responder = _echoing(fake, per_input)
        assert main([*argv, "--output", str(tmp_path / "a.jsonl"), "--base-url", fake.base_url]) == 1
        fake.responder = _echoing(fake, lambda a: Reply.error(401, {"detail": f"Invalid API key: {_key_of(a)}"}))
        assert main([*argv, "--output", str(tmp_path / "b.jsonl"), "--base-url", fake.base_url]) == 2
        assert all(h["authorization"] == f"Bearer {KEY}" for h in fake.request_headers)
    err = capsys.readouterr().err
    _assert_clean(err, "the command's stderr")
    assert "Invalid API key" in err and "[redacted]" in err
    errors = (tmp_path / "a.errors.jsonl").read_text(encoding="utf-8")
    assert errors.count("InvalidParameterError") == 6 and "[redacted]" in errors
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) >= 3  # the schema, the inputs, a's errors (runs that wrote no record leave no file)
    for path in written:
        _assert_clean(path.read_text(encoding="utf-8", errors="replace"), str(path))


def test_an_echoed_key_in_an_extracted_result_is_not_written(tmp_path: Path) -> None:
    from guidance_deepinfra import extract

    with FakeDeepInfra() as fake:
        fake.responder = _echoing(fake, lambda a: Reply.text(json.dumps({"n": 1, "note": f"seen {_key_of(a)}"})))
        results = extract(
            ["doc"], {"type": "object"}, api_key=KEY, base_url=fake.base_url, output=tmp_path / "out.jsonl"
        )
    assert results[0]["n"] == 1
    _assert_clean((tmp_path / "out.jsonl").read_text(encoding="utf-8"), "the results file")


@pytest.mark.slow  # a whole probe run, about a second of requests
def test_the_probe_file_never_holds_an_echoed_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from guidance_deepinfra.cli import main

    monkeypatch.setenv("DEEPINFRA_API_KEY", KEY)
    output = tmp_path / "profiles.json"
    with FakeDeepInfra() as fake:
        monkeypatch.setenv("DEEPINFRA_BASE_URL", fake.base_url)
        fake.responder = _echoing(fake, lambda a: Reply.text(f"your key is {_key_of(a)}"))
        main(["probe", "probe/model", "--output", str(output), "--yes"])
        assert fake.requests and all(h["authorization"] == f"Bearer {KEY}" for h in fake.request_headers)
    captured = capsys.readouterr()
    text = output.read_text(encoding="utf-8")
    assert "[redacted]" in text  # the echoed replies were kept as evidence, masked
    for where, content in (("the probe file", text), ("stdout", captured.out), ("stderr", captured.err)):
        _assert_clean(content, where)
