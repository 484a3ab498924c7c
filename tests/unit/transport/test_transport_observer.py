"""The transport's observer hook: usage, 429s and retry waits, seen by user code and by extraction alike.

Everything goes through the real openai SDK (streamed) or aiohttp (extract's fast path) to the loopback fake
server; the observer is plain user code registered with ``lm.transport.add_observer``.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from guidance import assistant, gen, user
from pydantic import BaseModel

from guidance_deepinfra import ConfigurationError, DeepInfra, RateLimitError, RetryPolicy, TransportObserver, extract
from guidance_deepinfra.profile import ProfileRegistry
from guidance_deepinfra.testing import FakeDeepInfra, Reply
from guidance_deepinfra.testing.fake_server import COST_PER_TOKEN

TEST_KEY = "sk-test-observer-0123456789"


class Recorder(TransportObserver):
    """Every event, in order, with the thread it arrived on."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.lock = threading.Lock()

    def _add(self, event: tuple[str, Any]) -> None:
        with self.lock:
            self.events.append(event)

    def on_usage(self, usage: Any, *, model: str | None) -> None:
        fields = usage if isinstance(usage, dict) else usage.model_dump()
        self._add(("usage", (model, fields["prompt_tokens"], fields["completion_tokens"], fields["estimated_cost"])))

    def on_rate_limit(self, retry_after: float | None, *, model: str | None) -> None:
        self._add(("rate_limit", (model, retry_after)))

    def on_retry_wait(self, seconds: float, error: Any, *, model: str | None) -> None:
        self._add(("wait", (model, seconds, type(error).__name__)))

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]


def test_an_observer_on_a_plain_model_sees_the_429_its_wait_and_the_usage(make_model, fake, sleeps) -> None:
    lm = make_model()
    recorder = Recorder()
    lm.transport.add_observer(recorder)
    fake.push(Reply.rate_limited(retry_after=0.05), Reply.text("Blue.", prompt_tokens=11, completion_tokens=2))
    with user():
        lm += "Name a colour."
    with assistant():
        lm += gen("colour", max_tokens=5)
    assert lm["colour"] == "Blue."
    cost = round(13 * COST_PER_TOKEN, 10)
    assert recorder.events == [
        ("rate_limit", ("test/model", 0.05)),
        ("wait", ("test/model", 0.05, "RateLimitError")),
        ("usage", ("test/model", 11, 2, cost)),
    ]
    assert sleeps == [0.05]  # the wait reported is the one the policy slept
    assert lm.usage.estimated_cost == pytest.approx(cost)  # the program's own accounting is unchanged


def test_the_last_429_is_reported_and_a_removed_observer_hears_nothing(make_model, fake) -> None:
    lm = make_model(retry=RetryPolicy(max_retries=0))
    with user():
        lm += "Say ok."
    recorder = Recorder()
    with lm.transport.observing(recorder):
        fake.push(Reply.rate_limited())
        with pytest.raises(RateLimitError):
            with assistant():
                lm + gen("x", max_tokens=3)
    assert recorder.kinds() == ["rate_limit"]  # no retry left: no wait
    fake.push(Reply.text("ok"))
    with assistant():
        lm += gen("x", max_tokens=3)
    assert recorder.kinds() == ["rate_limit"]
    assert not lm.transport.observers


def test_only_observers_are_accepted(make_model) -> None:
    with pytest.raises(ConfigurationError, match="TransportObserver"):
        make_model().transport.add_observer(print)  # type: ignore[arg-type]


class Person(BaseModel):
    name: str
    age: int


def person_reply(body: dict[str, Any]) -> Reply:
    text = next(m["content"] for m in body["messages"] if m["role"] == "user")
    match = re.search(r"name=(\w+) age=(\d+)", text)
    assert match
    answer = {"name": match.group(1), "age": int(match.group(2))}
    return Reply.text(json.dumps(answer), prompt_tokens=30, completion_tokens=10)


def first_request_limited() -> Any:
    seen: set[str] = set()
    lock = threading.Lock()

    def responder(body: dict[str, Any]) -> Reply:
        text = json.dumps(body["messages"])
        with lock:
            first = text not in seen
            seen.add(text)
        return Reply.rate_limited(retry_after=0.01) if first else person_reply(body)

    return responder


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "guidance-path"])
def test_extraction_meters_each_input_and_narrows_its_window_through_the_observer(tmp_path: Path, fast: bool) -> None:
    """A ready model: the extraction registers its own observer beside the user's and removes it after."""
    sleeps: list[float] = []
    with FakeDeepInfra(first_request_limited()) as fake:
        lm = DeepInfra(
            "test/model",
            api_key=TEST_KEY,
            base_url=fake.base_url,
            echo=False,
            logprobs=False,
            profiles=ProfileRegistry(),
            retry=RetryPolicy(sleep=sleeps.append),
        )
        mine = Recorder()
        lm.transport.add_observer(mine)
        inputs = [f"name=P{i} age={i}" for i in range(6)]
        results = extract(inputs, Person, model=lm, concurrency=4, fast=fast, output=tmp_path / "out.jsonl")
    assert results == [Person(name=f"P{i}", age=i) for i in range(6)]
    assert results.rate_limited == 6 and sleeps == [0.01] * 6
    assert results.lowest_concurrency < 4, "each 429 narrowed the window"
    per_input = round(40 * COST_PER_TOKEN, 10)
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["estimated_cost"] for r in records] == pytest.approx([per_input] * 6)  # the 429s cost nothing
    assert results.estimated_cost == pytest.approx(6 * per_input)
    assert mine.kinds().count("rate_limit") == mine.kinds().count("wait") == mine.kinds().count("usage") == 6
    assert list(lm.transport.observers) == [mine], "the extraction's own observer is gone after the batch"
