"""`extract()` end to end on the fake server: results per input, request bodies, 429s, resume, failures."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import guidance_deepinfra
from guidance_deepinfra import AuthenticationError, ConfigurationError, RetryPolicy
from guidance_deepinfra.extraction.api import (
    DEFAULT_INSTRUCTIONS,
    ExtractionFailure,
    extract,
    load_schema,
    read_inputs,
)
from guidance_deepinfra.testing import FakeDeepInfra, Reply

TEST_KEY = "sk-test-extract"


class Person(BaseModel):
    name: str
    age: int


PERSON_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


def user_text(body: dict[str, Any]) -> str:
    return next(m["content"] for m in body["messages"] if m["role"] == "user")


def person_reply(body: dict[str, Any], delay: float = 0.0) -> Reply:
    """Echo the input: ``name=X age=N`` becomes ``{"name": "X", "age": N}``; ``age=-1`` answers off-schema."""
    match = re.search(r"name=(\w+) age=(-?\d+)", user_text(body))
    assert match, user_text(body)
    answer = {"name": match.group(1), "age": int(match.group(2))}
    return Reply.text(json.dumps(answer), delay=delay, prompt_tokens=30, completion_tokens=10)


def texts(n: int) -> list[str]:
    return [f"name=P{i} age={i}" for i in range(n)]


@pytest.fixture
def server() -> Iterator[Callable[..., FakeDeepInfra]]:
    servers: list[FakeDeepInfra] = []

    def start(responder: Callable[[dict[str, Any]], Reply] = person_reply) -> FakeDeepInfra:
        servers.append(FakeDeepInfra(responder).start())
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


def options(fake: FakeDeepInfra, **extra: Any) -> dict[str, Any]:
    return dict(model="test/model", api_key=TEST_KEY, base_url=fake.base_url, logprobs=False, **extra)


def test_results_are_validated_objects_in_input_order(server) -> None:
    fake = server(lambda body: person_reply(body, delay=0.01))
    results = guidance_deepinfra.extract(texts(12), Person, concurrency=4, **options(fake))
    assert results == [Person(name=f"P{i}", age=i) for i in range(12)]
    assert results.ids == [str(i) for i in range(12)]
    assert results.failures == [] and results.done == 12
    # DeepInfra's estimated cost of every call: 40 tokens at the fake's price each
    assert results.estimated_cost == pytest.approx(12 * 40 * 1e-7)
    assert len(fake.requests) == 12 and fake.max_active <= 4
    for body in fake.requests:
        assert body["model"] == "test/model"
        assert body["messages"][0] == {"role": "system", "content": DEFAULT_INSTRUCTIONS}
        assert body["messages"][1]["role"] == "user" and len(body["messages"]) == 2
        assert body["response_format"]["type"] == "json_schema"
        assert body["response_format"]["json_schema"]["schema"]["required"] == ["name", "age"]
    assert sorted(user_text(b) for b in fake.requests) == sorted(texts(12))


def test_a_failing_input_becomes_a_failure_record_and_the_batch_goes_on(server) -> None:
    fake = server()
    inputs = {"ok": "name=Ann age=3", "bad": "name=Bob age=-1", "empty": "  ", "ok2": "name=Cy age=5"}
    results = extract(inputs, PERSON_SCHEMA, concurrency=2, max_attempts=2, instructions="", **options(fake))
    by_id = results.by_id()
    assert by_id["ok"] == {"name": "Ann", "age": 3} and by_id["ok2"] == {"name": "Cy", "age": 5}
    bad = by_id["bad"]
    assert isinstance(bad, ExtractionFailure) and not bad
    assert bad.error_type == "ConstraintError" and "minimum" in bad.message
    assert by_id["empty"] == ExtractionFailure("empty", "InvalidInput", "the text is empty", "inputs[2]", None, 0)
    bad_requests = [b for b in fake.requests if "Bob" in user_text(b)]
    assert len(bad_requests) == 2  # max_attempts
    assert len(fake.requests) == 4  # nothing was sent for the empty text
    assert all(b["messages"][0]["role"] == "user" for b in fake.requests)  # instructions="" -> no system message


def test_429s_are_retried_with_retry_after_and_the_window_shrinks(server) -> None:
    seen: dict[str, int] = {}
    lock = threading.Lock()

    def responder(body: dict[str, Any]) -> Reply:
        text = user_text(body)
        with lock:
            seen[text] = seen.get(text, 0) + 1
            first = seen[text] == 1
        return Reply.rate_limited(retry_after=0.01) if first else person_reply(body)

    fake = server(responder)
    sleeps: list[float] = []
    results = extract(texts(10), Person, concurrency=8, retry=RetryPolicy(sleep=sleeps.append), **options(fake))
    assert results == [Person(name=f"P{i}", age=i) for i in range(10)]
    assert results.rate_limited == 10 and results.requeued == 0
    assert sleeps == [0.01] * 10  # the transport honoured Retry-After
    assert results.lowest_concurrency < 8  # AIMD cut the window
    assert len(fake.requests) == 20


def test_429s_that_outlive_the_transport_retries_are_requeued_not_lost(server) -> None:
    seen: dict[str, int] = {}
    lock = threading.Lock()

    def responder(body: dict[str, Any]) -> Reply:
        text = user_text(body)
        with lock:
            seen[text] = seen.get(text, 0) + 1
            count = seen[text]
        if "P3 " in text:
            return Reply.rate_limited()  # always busy for this one
        return Reply.rate_limited() if count <= 2 else person_reply(body)

    fake = server(responder)
    retry = RetryPolicy(max_retries=0, base_delay=0.002, max_delay=0.01)
    results = extract(texts(6), Person, concurrency=3, retry=retry, max_requeues=3, **options(fake))
    assert [r for i, r in enumerate(results) if i != 3] == [Person(name=f"P{i}", age=i) for i in (0, 1, 2, 4, 5)]
    failure = results[3]
    assert isinstance(failure, ExtractionFailure) and failure.error_type == "RateLimitError"
    assert failure.attempts == 4 and "this input was tried 4 times" in failure.message
    assert results.requeued == 5 * 2 + 3
    assert seen["name=P3 age=3"] == 4 and all(n == 3 for t, n in seen.items() if "P3 " not in t)


def test_an_error_no_input_can_fix_stops_the_batch(server, tmp_path: Path) -> None:
    fake = server(lambda body: Reply.error(401, {"detail": "invalid token"}))
    with pytest.raises(AuthenticationError, match="invalid token"):
        extract(texts(50), Person, concurrency=2, output=tmp_path / "out.jsonl", **options(fake))
    assert len(fake.requests) <= 3  # the workers stop at the first one
    assert not (tmp_path / "out.jsonl").exists()  # no record written: the file the run created is removed


def test_output_is_resumed_and_each_id_written_once(server, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    fake = server()
    first = extract(texts(6), Person, concurrency=3, output=out, **options(fake))
    assert first.done == 6
    assert len(fake.requests) == 6
    # A kill mid-write leaves a torn last line; add one, as if a seventh record had been cut short.
    with out.open("ab") as f:
        f.write(b'{"id":"6","result":{"na')
    second = extract(texts(8), Person, concurrency=3, output=out, **options(fake))
    assert second == [Person(name=f"P{i}", age=i) for i in range(8)]
    assert second.resumed == 6 and second.done == 2
    assert sorted(user_text(b) for b in fake.requests[6:]) == ["name=P6 age=6", "name=P7 age=7"]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in records) == [str(i) for i in range(8)]
    assert all(r["result"] == {"name": f"P{r['id']}", "age": int(r["id"])} for r in records)
    assert all(r["estimated_cost"] == pytest.approx(40e-7) for r in records)


def test_errors_file_lists_this_runs_failures(server, tmp_path: Path) -> None:
    fake = server()
    inputs = tmp_path / "in.jsonl"
    inputs.write_text(
        '{"id": "a", "text": "name=A age=1"}\n{oops\n{"id": "b", "text": "name=B age=-1"}\n', encoding="utf-8"
    )
    errors = tmp_path / "errors.jsonl"
    results = extract(
        read_inputs(inputs),
        PERSON_SCHEMA,
        max_attempts=1,
        output=tmp_path / "out.jsonl",
        errors=errors,
        **options(fake),
    )
    assert results[0] == {"name": "A", "age": 1}
    records = {r["id"]: r for r in map(json.loads, errors.read_text().splitlines())}
    assert records["line-2"]["line"] == 2 and records["line-2"]["source"] == "in.jsonl:2"
    assert records["line-2"]["error"]["type"] == "InvalidInput"
    assert records["b"]["line"] == 3 and records["b"]["error"]["type"] == "ConstraintError"
    assert records["b"]["attempts"] == 1


def test_configuration_is_checked_before_any_request(server, tmp_path: Path) -> None:
    fake = server()
    with pytest.raises(ConfigurationError, match="between 1 and 200"):
        extract(["x"], Person, concurrency=201, **options(fake))
    with pytest.raises(ConfigurationError, match="must differ"):
        extract(["x"], Person, output=tmp_path / "o.jsonl", errors=tmp_path / "o.jsonl", **options(fake))
    assert fake.requests == []


def test_schemas_load_from_json_files_modules_and_python_files(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "schema.json").write_text(json.dumps(PERSON_SCHEMA), encoding="utf-8")
    (tmp_path / "my_schemas.py").write_text(
        "from pydantic import BaseModel\nclass Invoice(BaseModel):\n    total: float\n", encoding="utf-8"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_schema("schema.json") == PERSON_SCHEMA
    assert load_schema("my_schemas:Invoice").__name__ == "Invoice"
    assert load_schema(str(tmp_path / "my_schemas.py") + ":Invoice").model_json_schema()["required"] == ["total"]
    with pytest.raises(ConfigurationError, match="no attribute"):
        load_schema("my_schemas:Missing")
    with pytest.raises(ConfigurationError, match="module:Class"):
        load_schema("nothing")
