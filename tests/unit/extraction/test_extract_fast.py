"""The extraction fast path against the guidance path: same requests, same records, same errors.

Both paths run on the loopback fake server over real HTTP: the guidance path through guidance and the openai
SDK (streamed), the fast path through aiohttp (not streamed). The responders below answer either way.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

from guidance_deepinfra import AuthenticationError, RetryPolicy, aextract, extract
from guidance_deepinfra.extraction.api import ExtractionFailure
from guidance_deepinfra.profile import ProfileRegistry
from guidance_deepinfra.testing import FakeDeepInfra, Reply

KEY = "sk-fast-path-0123456789-SECRET"


class Person(BaseModel):
    name: str
    age: int = Field(ge=0)


SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


def user_text(body: dict[str, Any]) -> str:
    return next(m["content"] for m in body["messages"] if m["role"] == "user")


class Responder:
    """Answers both paths alike: echoes ``name=X age=N``; ``age=-1`` is off-schema; ``long`` inputs are cut
    by the server's length limit once and continued; ``busy`` inputs get one 429 with Retry-After; a model
    named ``*/no-schema`` refuses json_schema with DeepInfra's 405."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: dict[str, int] = {}

    def __call__(self, body: dict[str, Any]) -> Reply:
        text = user_text(body)
        fmt = (body.get("response_format") or {}).get("type")
        if body["model"].endswith("/no-schema") and fmt == "json_schema":
            return Reply.unsupported("Response format json_schema", body["model"])
        with self.lock:
            self.seen[text] = self.seen.get(text, 0) + 1
            first = self.seen[text] == 1
        if "busy" in text and first:
            return Reply.rate_limited(retry_after=0.01)
        match = re.search(r"name=(\w+) age=(-?\d+)", text)
        assert match, text
        answer = json.dumps({"name": match.group(1), "age": int(match.group(2))})
        if "long" in text:
            last = body["messages"][-1]
            if last["role"] == "assistant":
                return Reply.text(answer[len(last["content"]) :], prompt_tokens=30, completion_tokens=6)
            return Reply.text(answer[:9], finish_reason="length", prompt_tokens=30, completion_tokens=4)
        return Reply.text(answer, prompt_tokens=30, completion_tokens=10)


INPUTS = {
    "a": "name=Ann age=3",
    "b": "name=Bob age=-1",
    "c": "name=Cy age=5 long",
    "d": "name=Di age=7 busy",
    "e": "   ",
    "f": "name=Flo age=41",
}


def run_both(tmp_path: Path, model: str, schema: Any) -> dict[bool, tuple[Any, list[dict[str, Any]], list[Any]]]:
    """Run INPUTS through each path on its own server; the results, the records written and the bodies sent."""
    runs = {}
    for fast in (True, False):
        with FakeDeepInfra(Responder()) as fake:
            sleeps: list[float] = []
            out = tmp_path / f"out-{fast}.jsonl"
            results = extract(
                INPUTS,
                schema,
                model=model,
                api_key=KEY,
                base_url=fake.base_url,
                concurrency=1,  # one at a time: how many requests meet the 405 before it is learned is fixed
                max_attempts=2,
                retry=RetryPolicy(sleep=sleeps.append),
                output=out,
                errors=tmp_path / f"errors-{fast}.jsonl",
                fast=fast,
                profiles=ProfileRegistry(),
            )
            assert sleeps == [0.01]  # Retry-After honoured, once, by either transport
            records = [json.loads(line) for line in out.read_text().splitlines()]
            records += [json.loads(line) for line in (tmp_path / f"errors-{fast}.jsonl").read_text().splitlines()]
            bodies = sorted(
                ({k: v for k, v in body.items() if k != "stream"} for body in fake.requests),
                key=lambda b: json.dumps(b, sort_keys=True),
            )
            streamed = {body.get("stream") for body in fake.requests}
            assert streamed == ({False} if fast else {True})
            runs[fast] = (results, sorted(records, key=lambda r: r["id"]), bodies)
    return runs


def comparable(record: dict[str, Any]) -> dict[str, Any]:
    """A record without what legitimately differs: the error text of a failure (the attempts are the same)."""
    record = dict(record)
    if "error" in record:
        record["error"] = record["error"]["type"]
    return record


# The model without json_schema runs both paths through the fallback: slow, the first model stays quick.
@pytest.mark.parametrize("model", ["test/model", pytest.param("test/no-schema", marks=pytest.mark.slow)])
@pytest.mark.parametrize("schema", [SCHEMA, Person], ids=["json-schema", "pydantic"])
def test_both_paths_send_the_same_requests_and_write_the_same_records(tmp_path: Path, model: str, schema: Any) -> None:
    runs = run_both(tmp_path, model, schema)
    fast_results, fast_records, fast_bodies = runs[True]
    slow_results, slow_records, slow_bodies = runs[False]
    assert fast_bodies == slow_bodies  # lowering, fallbacks, feedback and continuation requests alike
    assert [comparable(r) for r in fast_records] == [comparable(r) for r in slow_records]
    assert [r or r.error_type for r in fast_results] == [r or r.error_type for r in slow_results]
    assert len(fast_results) == 6
    by_id = fast_results.by_id()
    expected = {"a": ("Ann", 3), "c": ("Cy", 5), "d": ("Di", 7), "f": ("Flo", 41)}
    for key, (name, age) in expected.items():
        value = by_id[key]
        assert (value.name, value.age) == (name, age) if schema is Person else value == {"name": name, "age": age}
    assert isinstance(by_id["b"], ExtractionFailure) and by_id["b"].error_type == "ConstraintError"
    assert by_id["e"].error_type == "InvalidInput"
    assert fast_results.estimated_cost == pytest.approx(slow_results.estimated_cost)
    assert fast_results.rate_limited == slow_results.rate_limited == 1
    formats = {(b.get("response_format") or {}).get("type") for b in fast_bodies}
    if model.endswith("no-schema"):
        assert "json_object" in formats  # fell back after the 405, as json() does
    else:
        assert formats == {"json_schema", None}  # None: the continuation request carries no format
    continued = [b for b in fast_bodies if b["messages"][-1]["role"] == "assistant"]
    assert continued and all(b["messages"][-1]["content"] == '{"name": ' for b in continued)
    retried = [b for b in fast_bodies if "rejected" in json.dumps(b["messages"])]
    assert retried and all("minimum" in b["messages"][-1]["content"] for b in retried)


def test_errors_and_logs_of_the_fast_path_never_hold_the_key(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, aiohttp's included
    answers = iter([Reply.rate_limited(), Reply.error(500, {"detail": "down"}), Reply.text('{"name": "A", "age": 1}')])
    with FakeDeepInfra(lambda body: next(answers)) as fake:
        retry = RetryPolicy(sleep=lambda seconds: None)
        failures = extract(["name=A age=1"], Person, api_key=KEY, base_url=fake.base_url, retry=retry)
    assert failures == [Person(name="A", age=1)]
    with FakeDeepInfra(lambda body: Reply.error(401, {"detail": "invalid token"})) as fake:
        with pytest.raises(AuthenticationError, match="invalid token") as raised:
            extract(["name=A age=1"] * 20, Person, api_key=KEY, base_url=fake.base_url, concurrency=2)
    assert KEY not in str(raised.value) and KEY not in repr(raised.value)
    assert fake.request_headers[0]["authorization"] == f"Bearer {KEY}"  # the key went only where it belongs
    assert caplog.records and not [r for r in caplog.records if KEY in r.getMessage() or KEY in str(r.args)]


def test_user_info_in_the_base_url_is_not_sent(tmp_path: Path) -> None:
    with FakeDeepInfra(lambda body: Reply.text('{"name": "A", "age": 1}')) as fake:
        with_user = fake.base_url.replace("http://", "http://someone:secret@")
        assert extract(["name=A age=1"], Person, api_key=KEY, base_url=with_user) == [Person(name="A", age=1)]
    assert fake.request_headers[0]["authorization"] == f"Bearer {KEY}"


def test_malformed_answers_and_stalled_servers_become_typed_failure_records() -> None:
    def responder(body: dict[str, Any]) -> Reply:
        text = user_text(body)
        if "garbage" in text:
            return Reply.raw(200, b'{"choices": "nope"}', "application/json")
        if "html" in text:
            return Reply.raw(200, b"<html><title>Gateway</title></html>", "text/html")
        if "stall" in text:
            return Reply.hanging(5, before_headers=True)
        return Reply.text('{"name": "ok", "age": 1}')

    inputs = {"g": "garbage", "h": "html", "s": "stall", "k": "fine"}
    with FakeDeepInfra(responder) as fake:
        retry = RetryPolicy(max_retries=0, base_delay=0.001, max_delay=0.002)
        results = extract(inputs, Person, api_key=KEY, base_url=fake.base_url, retry=retry, max_requeues=1, timeout=0.3)
    by_id = results.by_id()
    assert by_id["k"] == Person(name="ok", age=1)
    assert by_id["g"].error_type == "ProtocolError" and "choices" in by_id["g"].message
    assert by_id["h"].error_type == "ProtocolError" and "Gateway" in by_id["h"].message
    assert by_id["s"].error_type == "RequestTimeoutError" and by_id["s"].attempts == 2


def test_aextract_runs_inside_an_event_loop_and_extract_works_from_one_too() -> None:
    with FakeDeepInfra(Responder()) as fake:
        options = dict(api_key=KEY, base_url=fake.base_url, concurrency=4)

        async def service() -> tuple[Any, Any, int]:
            ticks = 0

            async def heartbeat() -> None:  # the loop keeps running other work during aextract
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0.001)

            beat = asyncio.ensure_future(heartbeat())
            awaited = await aextract([f"name=P{i} age={i}" for i in range(30)], Person, **options)
            beat.cancel()
            # A notebook cell calling the blocking form while its loop runs: the batch gets its own thread.
            blocking = extract(["name=Q age=9"], Person, **options)
            # The blocking form on a worker thread of a program whose loop runs elsewhere.
            threaded = await asyncio.to_thread(extract, ["name=R age=8"], Person, **options)
            return awaited, blocking + threaded, ticks

        awaited, blocking, ticks = asyncio.run(service())
    assert awaited == [Person(name=f"P{i}", age=i) for i in range(30)]
    assert blocking == [Person(name="Q", age=9), Person(name="R", age=8)]
    assert ticks > 3


def test_proxy_variables_are_honoured_except_for_a_loopback_address(monkeypatch: pytest.MonkeyPatch) -> None:
    from guidance_deepinfra.transport.aio import env_proxy

    monkeypatch.setenv("HTTPS_PROXY", "http://user:pw@proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "skip.example")
    proxy, auth = env_proxy("https://api.deepinfra.com/v1/openai/chat/completions")
    assert proxy == "http://proxy.internal:3128" and auth is not None and auth.login == "user"
    assert env_proxy("https://skip.example/v1/chat/completions") == (None, None)
    assert env_proxy("http://127.0.0.1:8000/v1/chat/completions") == (None, None)
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.internal:3128")
    with FakeDeepInfra(lambda body: Reply.text('{"name": "A", "age": 1}')) as fake:  # reached directly
        assert extract(["name=A age=1"], Person, api_key=KEY, base_url=fake.base_url) == [Person(name="A", age=1)]


@pytest.mark.slow  # measures the elapsed time
def test_a_retry_after_that_outlasts_the_retries_holds_every_new_request() -> None:
    sent: list[tuple[float, str]] = []

    def responder(body: dict[str, Any]) -> Reply:
        text = user_text(body)
        sent.append((time.monotonic(), text))
        if text == "name=A age=1" and sum(t == text for _, t in sent) == 1:
            return Reply.rate_limited(retry_after=0.4)
        return Reply.text(json.dumps({"name": text[5], "age": 1}), delay=0.01)

    inputs = ["name=A age=1"] + [f"name={c} age=1" for c in "BCDEFGH"]
    with FakeDeepInfra(responder) as fake:
        retry = RetryPolicy(max_retries=0)
        results = extract(inputs, Person, api_key=KEY, base_url=fake.base_url, retry=retry, concurrency=1)
    assert [r.name for r in results] == list("ABCDEFGH") and results.requeued == 1
    first_429 = sent[0][0]
    assert sent[1][0] - first_429 >= 0.35  # nothing was sent during the server's Retry-After


@pytest.mark.slow
@pytest.mark.parametrize("case", ["headers", "error body", "answer body"])
def test_a_server_that_trickles_cannot_hold_a_fast_path_request_past_the_timeout(case: str) -> None:
    from trickling_server import TricklingServer, http_head

    answer = b'{"choices": [{"message": {"content": "{}"}, "finish_reason": "stop"}]}' + b" " * 60
    head, body = {
        "headers": (b"", http_head("200 OK", "application/json", 0) + b"x" * 60),
        "error body": (http_head("500 Internal Server Error", "application/json", 100), b"{" + b" " * 99),
        "answer body": (http_head("200 OK", "application/json", len(answer)), answer),
    }[case]
    retry = RetryPolicy(max_retries=1, sleep=lambda seconds: None)
    with TricklingServer(head, body, pause=0.3) as server:  # 20 s or more to finish each answer
        started = time.monotonic()
        results = extract(
            ["x"], Person, api_key=KEY, base_url=server.base_url, timeout=1.0, retry=retry, max_requeues=0
        )
        elapsed = time.monotonic() - started
    assert results[0].error_type == "RequestTimeoutError" and "after 2 attempts" in results[0].message
    assert server.requests == 2 and elapsed < 2 * 1.0 + 2.5, elapsed


def test_an_http_client_of_the_users_is_refused_by_the_fast_path_and_used_by_the_other() -> None:
    import openai

    from guidance_deepinfra import ConfigurationError

    with FakeDeepInfra(lambda body: Reply.text('{"name": "A", "age": 1}')) as fake:
        options = dict(api_key=KEY, base_url=fake.base_url, logprobs=False)
        with pytest.raises(ConfigurationError, match="fast=False"):
            extract(["name=A age=1"], Person, http_client=openai.DefaultHttpxClient(), **options)
        assert fake.requests == []
        slow = extract(["name=A age=1"], Person, http_client=openai.DefaultHttpxClient(), fast=False, **options)
    assert slow == [Person(name="A", age=1)] and fake.requests[0]["stream"] is True
