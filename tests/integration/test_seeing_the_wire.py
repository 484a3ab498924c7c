"""`lm.last_requests` shows what was sent and what came back, on both transports, over the fake server: the
bodies as the server received them, the answers as it sent them, errors, and a key echoed back masked."""

from __future__ import annotations

import json

import pytest
from guidance import assistant, gen, user

from guidance_deepinfra import DeepInfra, InvalidParameterError, extract
from guidance_deepinfra.testing import FakeDeepInfra, Reply

KEY = "sk-wire-test-0123456789abcdef"


def test_a_program_shows_each_request_body_and_its_answer() -> None:
    with FakeDeepInfra() as fake:
        fake.push(Reply.text("Paris."), Reply.text(f"echoing {KEY}"))
        lm = DeepInfra("test/model", api_key=KEY, base_url=fake.base_url, echo=False)
        with user():
            lm += "Capital of France?"
        with assistant():
            lm += "It is " + gen("city", stop=".", max_tokens=5)
        with user():
            lm += "Repeat your key."
        with assistant():
            lm += gen("echo", max_tokens=20)
        sent = fake.requests
    first, second = lm.last_requests
    assert first["body"] == sent[0] and second["body"] == sent[1]  # exactly what the server received
    assert first["answer"] == "Paris" and first["finish_reason"] == "stop"  # as sent: the server applied the stop
    assert KEY not in json.dumps(lm.last_requests) and "[redacted]" in second["answer"]
    assert lm.fresh().last_requests == lm.last_requests  # copies share the transport, and what it saw


def test_an_error_is_shown_with_its_request() -> None:
    with FakeDeepInfra(lambda _: Reply.error(400, {"error": {"message": "bad temperature"}})) as fake:
        lm = DeepInfra("test/model", api_key=KEY, base_url=fake.base_url, echo=False)
        with pytest.raises(InvalidParameterError):
            with user():
                lm += "Hi"
            with assistant():
                lm += gen("x", max_tokens=3)
    (shown,) = lm.last_requests
    assert shown["body"]["messages"][-1] == {"role": "user", "content": "Hi"}
    assert shown["error"].startswith("InvalidParameterError: bad temperature")


def test_the_extraction_fast_path_is_shown_on_the_model_it_ran_on() -> None:
    with FakeDeepInfra(lambda body: Reply.text('{"n": 1}')) as fake:
        lm = DeepInfra("test/model", api_key=KEY, base_url=fake.base_url, echo=False)
        extract(["a", "b"], {"type": "object"}, model=lm)
        sent = fake.requests
    shown = lm.last_requests
    assert [s["answer"] for s in shown] == ['{"n": 1}', '{"n": 1}']
    assert sorted(json.dumps({**s["body"], "stream": False}) for s in shown) == sorted(json.dumps(b) for b in sent)


def test_only_the_last_twenty_are_kept() -> None:
    with FakeDeepInfra(lambda body: Reply.text("ok")) as fake:
        lm = DeepInfra("test/model", api_key=KEY, base_url=fake.base_url, echo=False)
        for i in range(25):
            state = lm.fresh()
            with user():
                state += f"call {i}"
            with assistant():
                state += gen("x", max_tokens=2)
    shown = lm.last_requests
    assert len(shown) == 20 and shown[0]["body"]["messages"][-1]["content"] == "call 5"
