"""Regressions found in review: each test pins one bug that once broke a promise of the package."""

from __future__ import annotations

import sys
import threading
from types import SimpleNamespace

from guidance import assistant, gen, user
from guidance import json as guidance_json

from guidance_deepinfra.testing import Reply

NUMBER = {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}


def test_json_never_captures_nan_or_infinity_which_are_not_json(fake, make_model) -> None:
    # Python's json module reads NaN and Infinity, and jsonschema counts them as numbers; JSON has neither.
    fake.push(Reply.text('{"x": NaN}'), Reply.text('{"x": -Infinity}'), Reply.text('{"x": 1.5}'))
    lm = make_model(max_attempts=3)
    with user():
        lm += "Give x."
    with assistant():
        lm += guidance_json("p", schema=NUMBER)
    assert lm["p"] == '{"x": 1.5}'
    assert str(lm).endswith('{"x": 1.5}') and "NaN" not in str(lm)
    assert len(fake.requests) == 3
    assert "NaN" in fake.requests[1]["messages"][-2]["content"]
    assert "not valid JSON" in fake.requests[1]["messages"][-1]["content"]
    assert lm.usage.constraints["json_schema"].round_trips == 3


def test_stop_regex_with_a_leading_global_flag_stops_like_a_local_model(fake, make_model) -> None:
    # Python accepts a global flag only at the very start, so wrapping the regex must keep it there.
    fake.push(Reply.text("Hello The END there", chunk_size=4))
    lm = make_model()
    with user():
        lm += "Go."
    with assistant():
        lm += gen("g", stop_regex="(?i)end", save_stop_text=True)
    assert "stop" not in fake.last
    assert (lm["g"], lm["g_stop_text"]) == ("Hello The ", "END")


def test_total_usage_loses_no_update_when_threads_share_it(make_model) -> None:
    # extract() workers share one model's ledger: `+=` from several threads must not drop updates.
    ledger = make_model().total_usage
    chunk = SimpleNamespace(
        prompt_tokens=1,
        completion_tokens=2,
        prompt_tokens_details=SimpleNamespace(cached_tokens=1),
        model_extra={"estimated_cost": 1.0},
    )
    rounds, threads = 5000, 8

    def work() -> None:
        for _ in range(rounds):
            ledger.add_chunk_usage(chunk)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        workers = [threading.Thread(target=work) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        sys.setswitchinterval(interval)
    total = rounds * threads
    assert (ledger.prompt_tokens, ledger.completion_tokens) == (total, 2 * total)
    assert (ledger.cached_tokens, ledger.estimated_cost) == (total, float(total))


def test_extract_takes_a_draft_4_schema_that_json_takes() -> None:
    # json() reads a schema without $schema as 2020-12, draft 7 or draft 4; extract() must accept the same.
    from guidance_deepinfra.extract import extract
    from guidance_deepinfra.testing import FakeDeepInfra

    schema = {
        "type": "object",
        "properties": {"age": {"type": "integer", "maximum": 150, "exclusiveMaximum": True}},
        "required": ["age"],
    }
    with FakeDeepInfra() as fake:
        fake.push(Reply.text('{"age": 150}'), Reply.text('{"age": 149}'))
        results = extract(
            ["Ann is 149."], schema, model="test/model", api_key="sk-test", base_url=fake.base_url, logprobs=False
        )
    assert results == [{"age": 149}]
    assert len(fake.requests) == 2
    assert fake.requests[0]["response_format"]["json_schema"]["schema"] == schema
