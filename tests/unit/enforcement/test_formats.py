"""JSON Schema ``format``: an answer breaking a format a local run enforces never becomes a capture.

A local model runs guidance's json() through llguidance, which enforces date-time, date, time, duration,
email, hostname, ipv4, ipv6 and uuid while generating. On DeepInfra the answer is checked after the fact
with jsonschema's own format checkers; a refused answer is fed back and retried like any validation error.
"""

from __future__ import annotations

import json

import pytest
from guidance import assistant, models, user
from guidance import json as guidance_json

import guidance_deepinfra
from guidance_deepinfra import ConstraintError
from guidance_deepinfra.extraction.api import ExtractionFailure, extract
from guidance_deepinfra.lowering.schema import prepare
from guidance_deepinfra.testing import FakeDeepInfra, Reply

#: The formats llguidance (a local run) enforces: guidance's json() builds a grammar for each of them.
LOCALLY_ENFORCED = {
    "date-time": ("2024-01-02T03:04:05Z", "yesterday"),
    "date": ("2024-01-02", "2024-13-45"),
    "time": ("03:04:05Z", "noon"),
    "duration": ("P1DT2H", "two days"),
    "email": ("ada@example.com", "ada at example"),
    "hostname": ("example.com", "not a host!"),
    "ipv4": ("192.0.2.1", "300.1.2.3"),
    "ipv6": ("2001:db8::1", "2001:db8:::1:"),
    "uuid": ("123e4567-e89b-12d3-a456-426614174000", "123e4567"),
}

EVENT = {
    "type": "object",
    "properties": {"t": {"type": "string", "format": "date-time"}, "h": {"type": "string", "format": "hostname"}},
    "required": ["t", "h"],
}
BAD_EVENT = {"t": "yesterday", "h": "not a host!"}
GOOD_EVENT = {"t": "2024-01-02T03:04:05Z", "h": "example.com"}


def ask(lm, question: str = "When and where?"):
    with user():
        lm += question
    return lm


def local_accepts(schema: dict, value: str) -> bool:
    """Whether guidance's local engine, offered `value` by its Mock model, produces it for `schema`.

    Where the grammar refuses a byte of the offered answer, the mock's output leaves it, so the capture
    differs.
    """
    lm = models.Mock(b"<s>" + json.dumps(value).encode())
    lm += guidance_json("v", schema=schema)
    return bool(lm["v"] == json.dumps(value))


@pytest.mark.parametrize("fmt", sorted(LOCALLY_ENFORCED))
def test_every_format_a_local_run_enforces_is_checked(fmt: str) -> None:
    good, bad = LOCALLY_ENFORCED[fmt]
    schema = {"type": "string", "format": fmt}
    assert local_accepts(schema, good) and not local_accepts(schema, bad)  # the local reference
    prepared = prepare(schema)
    assert prepared.errors(good) == []
    assert prepared.errors(bad) == [f"at $: {bad!r} is not a {fmt!r}"]


def test_format_checked_whatever_the_schema_draft() -> None:
    # Draft 7 has no "duration"; a local run enforces it all the same.
    prepared = prepare({"$schema": "http://json-schema.org/draft-07/schema#", "type": "string", "format": "duration"})
    assert prepared.errors("two days") and not prepared.errors("P2D")


def test_guidance_json_with_formats_refuses_a_broken_answer_and_retries(fake, make_model) -> None:
    fake.push(Reply.text(json.dumps(BAD_EVENT)), Reply.text(json.dumps(GOOD_EVENT)))
    lm = ask(make_model())
    with assistant():
        lm += guidance_json("event", schema=EVENT)
    assert json.loads(lm["event"]) == GOOD_EVENT
    assert len(fake.requests) == 2
    feedback = json.dumps(fake.requests[1]["messages"])
    assert "is not a 'date-time'" in feedback and "is not a 'hostname'" in feedback


def test_a_broken_format_is_never_a_capture(fake, make_model) -> None:
    fake.push(*[Reply.text(json.dumps(BAD_EVENT)) for _ in range(2)])
    lm = ask(make_model())
    with pytest.raises(ConstraintError, match="date-time") as info:
        with guidance_deepinfra.limits(max_attempts=2):
            with assistant():
                lm += guidance_json("event", schema=EVENT)
    assert len(info.value.attempts) == 2
    assert "event" not in lm._interpreter.state.captures


def test_package_json_checks_formats_llguidance_does_not_know(fake, make_model) -> None:
    # guidance's json() refuses "uri" at build time; the package's json() takes it and checks it.
    schema = {"type": "object", "properties": {"home": {"type": "string", "format": "uri"}}, "required": ["home"]}
    fake.push(Reply.text('{"home": "no scheme here"}'), Reply.text('{"home": "https://example.com/"}'))
    lm = ask(make_model())
    with assistant():
        lm += guidance_deepinfra.json("page", schema=schema)
    assert json.loads(lm["page"]) == {"home": "https://example.com/"}
    assert "is not a 'uri'" in json.dumps(fake.requests[1]["messages"])


def test_extract_refuses_a_broken_format_and_retries() -> None:
    answers = iter([BAD_EVENT, GOOD_EVENT, BAD_EVENT, BAD_EVENT])
    with FakeDeepInfra(lambda body: Reply.text(json.dumps(next(answers)))) as fake:
        options = dict(model="test/model", api_key="sk-test", base_url=fake.base_url, logprobs=False)
        first = extract(["event one"], EVENT, concurrency=1, max_attempts=2, **options)
        second = extract(["event two"], EVENT, concurrency=1, max_attempts=2, **options)
    assert first == [GOOD_EVENT]
    failure = second[0]
    assert isinstance(failure, ExtractionFailure) and failure.error_type == "ConstraintError"
    assert "date-time" in failure.message
