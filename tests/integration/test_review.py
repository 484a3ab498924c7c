"""Regressions found in review: each test pins one bug that once broke a promise of the package."""

from __future__ import annotations

import sys
import threading
from types import SimpleNamespace

import pytest
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
    from guidance_deepinfra.extraction.api import extract
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


def test_extract_reports_a_text_with_a_lone_surrogate_and_goes_on() -> None:
    # JSON input may hold "\ud800"; such a text cannot be sent, which is that input's problem, not the batch's.
    from guidance_deepinfra.extraction.api import ExtractionFailure, extract
    from guidance_deepinfra.testing import FakeDeepInfra

    schema = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
    with FakeDeepInfra() as fake:
        fake.push(Reply.text('{"age": 3}'), Reply.text('{"age": 5}'))
        results = extract(
            ["Ann is 3.", "Bob \ud800 is 4.", "Cy is 5."],
            schema,
            model="test/model",
            api_key="sk-test",
            base_url=fake.base_url,
            logprobs=False,
            concurrency=1,
        )
    assert results[0] == {"age": 3} and results[2] == {"age": 5}
    failure = results[1]
    assert isinstance(failure, ExtractionFailure) and failure.error_type == "InvalidInput"
    assert "not valid Unicode" in failure.message and failure.attempts == 0
    assert [m["content"] for b in fake.requests for m in b["messages"] if m["role"] == "user"] == [
        "Ann is 3.",
        "Cy is 5.",
    ]


def test_a_retry_policys_own_max_retries_is_kept_and_the_policy_left_unchanged(fake, make_model) -> None:
    from guidance_deepinfra import RateLimitError, RetryPolicy

    sleeps: list[float] = []
    no_retries = RetryPolicy(max_retries=0, sleep=sleeps.append)
    fake.push(Reply.rate_limited(), Reply.text("late"))
    lm = make_model(retry=no_retries)
    with user():
        lm += "Hi."
    try:
        with assistant():
            lm += gen("g")
    except RateLimitError:
        pass
    else:
        raise AssertionError("a policy with max_retries=0 retried")
    assert len(fake.requests) == 1 and sleeps == []
    # An explicit max_retries wins, on a copy: the caller's policy object is not rewritten.
    shared = RetryPolicy(sleep=sleeps.append)
    assert make_model(retry=shared, max_retries=1).transport.retry.max_retries == 1
    assert shared.max_retries == 4


def test_json_joined_with_a_regex_refuses_a_schema_llguidance_would_only_partly_enforce(fake, make_model) -> None:
    # Joined with a regex gen, the text is checked by llguidance alone, and json() asks it to be lenient:
    # `uniqueItems` would be ignored and `[1, 1]` captured. Such a program is refused before any request.
    import pytest

    import guidance_deepinfra
    from guidance_deepinfra import InvalidProgramError

    lm = make_model()
    with user():
        lm += "Go."
    unique = {"type": "array", "items": {"type": "integer"}, "uniqueItems": True}
    with pytest.raises(InvalidProgramError, match="uniqueItems"):
        with assistant():
            lm += guidance_deepinfra.json("j", schema=unique) + " " + gen("n", regex=r"\d")
    assert fake.requests == []
    # A schema llguidance enforces in full still runs inside the grammar.
    fake.push(Reply.text("[1, 2] 5"))
    plain = {"type": "array", "items": {"type": "integer"}}
    with assistant():
        lm += guidance_deepinfra.json("j", schema=plain) + " " + gen("n", regex=r"\d")
    assert (lm["j"], lm["n"]) == ("[1, 2]", "5")
    assert len(fake.requests) == 1


def test_an_answer_holding_an_escaped_lone_surrogate_is_written_and_the_batch_goes_on(tmp_path) -> None:
    # '"\ud800"' is valid JSON text; its value cannot be encoded as UTF-8, so the output record escapes it.
    import json

    from guidance_deepinfra.extraction.api import extract, read_records
    from guidance_deepinfra.testing import FakeDeepInfra

    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    out = tmp_path / "out.jsonl"
    with FakeDeepInfra() as fake:
        fake.push(Reply.text('{"name": "A\\ud800"}'), Reply.text('{"name": "B"}'))
        results = extract(
            ["one", "two"],
            schema,
            model="test/model",
            api_key="sk-test",
            base_url=fake.base_url,
            logprobs=False,
            concurrency=1,
            output=out,
        )
    assert list(results) == [{"name": "A\ud800"}, {"name": "B"}]
    assert len(fake.requests) == 2
    lines = out.read_bytes().decode("utf-8").splitlines()
    assert [json.loads(line)["result"] for line in lines] == [{"name": "A\ud800"}, {"name": "B"}]
    assert [r["id"] for r in read_records(out)] == ["0", "1"]


def test_a_reply_nested_too_deeply_for_the_json_parser_is_refused_and_retried(fake, make_model) -> None:
    # Python's json raises RecursionError (not ValueError) on deep nesting: it must be a refusal, not a crash.
    deep = "[" * 5_000 + "]" * 5_000
    fake.push(Reply.text(deep), Reply.text("[1]"), Reply.text(deep), Reply.text('"b"'))
    lm = make_model()
    with user():
        lm += "Go."
    with assistant():
        lm += guidance_json("j", schema={"type": "array"})
    assert lm["j"] == "[1]"
    assert "nested too deeply" in fake.requests[1]["messages"][-1]["content"]
    from guidance import select

    with assistant():
        lm += select(["a", "b"], name="s")
    assert lm["s"] == "b"
    assert len(fake.requests) == 4


def test_an_error_body_nested_too_deeply_still_gives_a_typed_error(fake, make_model) -> None:
    from guidance_deepinfra import InvalidParameterError

    fake.push(Reply.error(400, "[" * 5_000 + "]" * 5_000))
    lm = make_model()
    with user():
        lm += "Go."
    try:
        with assistant():
            lm += gen("g")
    except InvalidParameterError as exc:
        assert exc.status == 400 and exc.message.startswith("[[[")
    else:
        raise AssertionError("no error raised")
    assert len(fake.requests) == 1


def test_a_stream_event_nested_too_deeply_is_a_protocol_error(fake, make_model) -> None:
    from guidance_deepinfra import ProtocolError

    fake.push(Reply.sse([b"data: " + b"[" * 5_000 + b"]" * 5_000 + b"\n\n"]))
    lm = make_model()
    with user():
        lm += "Go."
    try:
        with assistant():
            lm += gen("g")
    except ProtocolError as exc:
        assert "malformed server-sent event" in str(exc)
    else:
        raise AssertionError("no error raised")
    assert len(fake.requests) == 1


@pytest.mark.parametrize(
    "kwargs", [{"max_attempts": "3"}, {"max_attempts": 0}, {"top_logprobs": "5"}, {"top_logprobs": 0}]
)
def test_wrong_typed_settings_are_configuration_errors(make_model, fake, kwargs) -> None:
    from guidance_deepinfra import ConfigurationError

    with pytest.raises(ConfigurationError):
        make_model(**kwargs)
    assert fake.requests == []


@pytest.mark.parametrize("kwargs", [{"max_attempts": "2"}, {"token_budget": 0}, {"token_budget": 2.5}])
def test_wrong_typed_limits_are_configuration_errors(kwargs) -> None:
    from guidance_deepinfra import ConfigurationError, limits

    with pytest.raises(ConfigurationError):
        with limits(**kwargs):
            pass
