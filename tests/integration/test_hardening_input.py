"""Bad input: every mistake in the program or the setup gets a clear error before any request is sent.

Where the error can only come from DeepInfra (a prompt too long for the model, an unknown model name) it
is typed from DeepInfra's answer and never retried; those cases live in test_hardening_servers.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import guidance
import pytest
from guidance import assistant, gen, lark, select, user

import guidance_deepinfra
from guidance_deepinfra import (
    ConfigurationError,
    DeepInfra,
    DeepInfraError,
    InvalidProgramError,
    MissingAPIKeyError,
)
from guidance_deepinfra.testing import FakeDeepInfra, Reply

MakeModel = Callable[..., DeepInfra]


def _in_assistant_turn(make_model: MakeModel, node: Any, **model_kwargs: Any) -> DeepInfra:
    lm = make_model(**model_kwargs)
    with user():
        lm += "Answer."
    with assistant():
        lm += node
    return lm


def _refused(fake: FakeDeepInfra, make_model: MakeModel, build: Callable[[], Any], fragment: str) -> Exception:
    """`build` (making the node) or running it must fail with InvalidProgramError before any request."""
    fake.push(Reply.text('{"a": 1}'))
    with pytest.raises(InvalidProgramError) as info:
        _in_assistant_turn(make_model, build())
    assert fragment in str(info.value)
    assert fake.requests == []
    return info.value


# --------------------------------------------------------------------------- schemas


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [
        ({"type": "nonsense"}, "invalid JSON schema at $.type"),
        ({"type": "object", "properties": {"a": {"type": 3}}}, "invalid JSON schema"),
        ({"type": "object", "required": "a"}, "$.required"),
        ({"type": "string", "minLength": -1}, "$.minLength"),
        ({"$ref": "#/$defs/missing"}, "cannot be resolved"),
        ({"$ref": "https://example.com/schema.json"}, "cannot be resolved"),
        ({"$schema": "https://example.com/my-draft", "type": "object"}, "unknown JSON Schema draft"),
        (42, "must be a dict"),
        ("{not json", "not valid JSON"),
        (False, "accepts no document"),
    ],
    ids=["bad-type", "nested-bad-type", "required-string", "negative-length", "missing-ref", "remote-ref",
         "unknown-draft", "number", "bad-text", "false"],
)  # fmt: skip
def test_invalid_schema(fake: FakeDeepInfra, make_model: MakeModel, schema: Any, fragment: str) -> None:
    _refused(fake, make_model, lambda: guidance_deepinfra.json("doc", schema=schema), fragment)


def _run_program_that_builds(fake: FakeDeepInfra, make_model: MakeModel, build: Callable[[], Any]) -> None:
    """Run, on a model of the fake server, a program that writes forced text and then builds `build()`.

    guidance itself refuses some bad nodes while the program builds them, in the middle of the run; the
    forced text written before must not have been sent on its own.
    """

    @guidance(dedent=False)
    def program(lm: Any) -> Any:
        lm += "Here it is: "
        return lm + build()

    fake.push(Reply.text('{"a": 1}'))
    lm = make_model()
    with user():
        lm += "Answer."
    with assistant():
        lm += program()


def test_guidance_json_with_invalid_schema_fails_when_built(fake: FakeDeepInfra, make_model: MakeModel) -> None:
    """guidance's own json() refuses these while the program is built: nothing reaches the server."""
    with pytest.raises(ValueError, match="Invalid type: nonsense"):
        _run_program_that_builds(fake, make_model, lambda: guidance.json("doc", schema={"type": "nonsense"}))
    assert fake.requests == []


# --------------------------------------------------------------------------- select


def test_empty_select(fake: FakeDeepInfra, make_model: MakeModel) -> None:
    _refused(fake, make_model, lambda: select([], name="pick"), "at least one option")


def test_duplicate_select_options(fake: FakeDeepInfra, make_model: MakeModel) -> None:
    _refused(fake, make_model, lambda: select(["yes", "no", "yes"], name="pick"), "repeated: ['yes']")


def test_single_option_select_needs_no_request(fake: FakeDeepInfra, make_model: MakeModel) -> None:
    lm = _in_assistant_turn(make_model, select(["only"], name="pick"))
    assert lm["pick"] == "only"
    assert fake.requests == []


# --------------------------------------------------------------------------- regex and grammars


@pytest.mark.parametrize("pattern", ["(ab", "a{2,1}", "[z-a]", "*x"])
def test_invalid_regex(fake: FakeDeepInfra, make_model: MakeModel, pattern: str) -> None:
    error = _refused(fake, make_model, lambda: gen("x", regex=pattern), "")
    assert "regex" in str(error).lower()


@pytest.mark.parametrize(
    ("grammar", "fragments"),
    [
        ("start: ???", ["Expected value", "start: ???"]),
        ("start: missing_rule", ['unknown name: "missing_rule"']),
        ('start: "a', ["lexer error", '| start: "a\n']),
    ],
    ids=["syntax", "unknown-rule", "unterminated-string"],
)
def test_invalid_lark(fake: FakeDeepInfra, make_model: MakeModel, grammar: str, fragments: list[str]) -> None:
    """A grammar that does not parse is refused, the error naming the fault and quoting the grammar's line."""
    error = _refused(fake, make_model, lambda: lark(grammar), "invalid regex or grammar")
    for fragment in fragments:
        assert fragment in str(error)


def test_invalid_stop_regex(fake: FakeDeepInfra, make_model: MakeModel) -> None:
    _refused(fake, make_model, lambda: gen("x", stop_regex="(unclosed"), "invalid stop_regex")


# --------------------------------------------------------------------------- gen arguments


def test_non_string_stop(fake: FakeDeepInfra, make_model: MakeModel) -> None:
    stop: Any = 5
    _refused(fake, make_model, lambda: gen("x", stop=stop), "stop must be a string, got int")


def test_non_string_in_stop_list_fails_when_built(fake: FakeDeepInfra, make_model: MakeModel) -> None:
    with pytest.raises(TypeError, match="expected string or bytes-like object"):  # Python 3.11+ adds ", got 'int'"
        # guidance quotes each stop while building the node
        _run_program_that_builds(fake, make_model, lambda: gen("x", stop=["ok", 5]))  # type: ignore[list-item]
    assert fake.requests == []


@pytest.mark.parametrize("max_tokens", [0, -3])
def test_bad_max_tokens(fake: FakeDeepInfra, make_model: MakeModel, max_tokens: int) -> None:
    _refused(fake, make_model, lambda: gen("x", max_tokens=max_tokens), "max_tokens must be a positive integer")


@pytest.mark.parametrize("temperature", ["hot", float("nan"), True])
def test_bad_temperature(fake: FakeDeepInfra, make_model: MakeModel, temperature: Any) -> None:
    _refused(fake, make_model, lambda: gen("x", temperature=temperature), "temperature must be a finite number")


def test_gen_outside_an_assistant_turn(fake: FakeDeepInfra, make_model: MakeModel) -> None:
    lm = make_model()
    with pytest.raises(InvalidProgramError, match="only as the assistant"):
        with user():
            lm += gen("x")
    assert fake.requests == []


def test_text_that_is_not_unicode(fake: FakeDeepInfra, make_model: MakeModel) -> None:
    lm = make_model()
    with pytest.raises(InvalidProgramError, match="not valid Unicode") as info:
        with user():
            lm += "broken \ud800 text"
        with assistant():
            lm += gen("x", max_tokens=5)
    assert "\\ud800" in str(info.value)
    assert fake.requests == []


# --------------------------------------------------------------------------- construction


@pytest.mark.parametrize(
    "base_url",
    ["api.deepinfra.com/v1/openai", "localhost:8000/v1", "ftp://example.com/v1", "https://", ""],
)
def test_base_url_without_scheme_or_host(base_url: str) -> None:
    with pytest.raises(ConfigurationError, match="base_url must be an absolute http"):
        DeepInfra("m/x", api_key="k", base_url=base_url or "://", echo=False)


def test_base_url_credentials_are_not_shown(fake: FakeDeepInfra, make_model: MakeModel) -> None:
    url = fake.base_url.replace("http://", "http://user:hunter2@") + "?token=hunter2"
    lm = make_model(base_url=url)
    assert "hunter2" not in repr(lm._interpreter) and "hunter2" not in repr(lm.transport)
    with pytest.raises(ConfigurationError) as info:
        DeepInfra("m/x", api_key="k", base_url="ftp://user:hunter2@example.com/v1", echo=False)
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("defaults", "fragment"),
    [
        ({"temprature": 0.5}, "unsupported request field(s) ['temprature']"),
        ({"stream": False}, "unsupported request field(s) ['stream']"),
        ({"response_format": {"type": "json_object"}}, "['response_format']"),
        ({"seed": "7"}, "seed must be an integer"),
        ({"temperature": "0.5"}, "temperature must be a finite number"),
        ({"service_tier": 1}, "service_tier must be a string"),
    ],
)
def test_bad_request_defaults(make_model: MakeModel, defaults: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        make_model(request_defaults=defaults)
    assert fragment in str(info.value)


def test_bad_sampling_params(fake: FakeDeepInfra, make_model: MakeModel) -> None:
    lm = make_model(sampling_params={"top_p": "high"})
    with pytest.raises(ConfigurationError, match="top_p must be a finite number"):
        _in_assistant_turn(lambda: lm, gen("x"))
    assert fake.requests == []


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"model": ""}, "model must be a non-empty"),
        ({"max_attempts": 0}, "max_attempts must be at least 1"),
        ({"max_retries": -1}, "max_retries must be 0 or more"),
        ({"timeout": 0}, "timeout must be a positive number"),
        ({"timeout": -5}, "timeout must be a positive number"),
    ],
)
def test_bad_model_settings(make_model: MakeModel, kwargs: dict[str, Any], fragment: str) -> None:
    model = kwargs.pop("model", "m/x")
    with pytest.raises(ConfigurationError, match=fragment):
        make_model(model, **kwargs)


def test_bad_top_logprobs_fails_before_any_request(fake: FakeDeepInfra, make_model: MakeModel) -> None:
    lm = make_model(logprobs=True, top_logprobs=50)
    with pytest.raises(ConfigurationError, match="top_logprobs must be between 1 and 20"):
        _in_assistant_turn(lambda: lm, gen("x"))
    assert fake.requests == []


def test_missing_key() -> None:
    with pytest.raises(MissingAPIKeyError):
        DeepInfra("m/x", echo=False)


@pytest.mark.parametrize("key", ["sk-abc\u00e9def", "sk-abc def", "sk-abc\x00def", "sk-abc\r\nX-Evil: 1"])
def test_key_that_cannot_be_a_header_is_refused_without_echo(key: str) -> None:
    with pytest.raises(ConfigurationError, match="cannot be sent in an HTTP header") as info:
        DeepInfra("m/x", api_key=key, echo=False)
    assert "abc" not in str(info.value) and "def" not in str(info.value)


def test_key_with_surrounding_whitespace_is_trimmed(fake: FakeDeepInfra, make_model: MakeModel) -> None:
    fake.push(Reply.text("Hi"))
    lm = _in_assistant_turn(make_model, gen("x", max_tokens=3), api_key="  sk-from-a-file\n")
    assert lm["x"] == "Hi"
    assert fake.request_headers[0]["authorization"] == "Bearer sk-from-a-file"


@pytest.mark.parametrize("key", ["", "   \n"])
def test_blank_key(key: str) -> None:
    with pytest.raises(ConfigurationError):
        DeepInfra("m/x", api_key=key, echo=False)


@pytest.mark.parametrize("catch_as", [DeepInfraError, ValueError])
def test_input_errors_can_be_caught_by_the_base_class_or_as_value_errors(
    fake: FakeDeepInfra, make_model: MakeModel, catch_as: type[Exception]
) -> None:
    """Users can catch the package's input errors by its base class or as the ValueError they are."""
    with pytest.raises(catch_as) as program_error:
        _in_assistant_turn(make_model, select([], name="pick"))
    with pytest.raises(catch_as) as setting_error:
        make_model(base_url="ftp://example.com/v1")
    with pytest.raises(catch_as) as key_error:
        DeepInfra("m/x", echo=False)
    assert (program_error.type, setting_error.type, key_error.type) == (
        InvalidProgramError,
        ConfigurationError,
        MissingAPIKeyError,
    )
    assert fake.requests == []
