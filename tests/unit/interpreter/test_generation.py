"""gen() on DeepInfra: parameters sent, client-side stops, suffix, stop capture, streaming, sampling, logprobs."""

from __future__ import annotations

import warnings

import pytest
from guidance import assistant, gen, guidance, models, system, user

from guidance_deepinfra import (
    ConfigurationError,
    InvalidParameterError,
    InvalidProgramError,
    ModelProfile,
    UnsupportedFeatureError,
)
from guidance_deepinfra.testing import Reply


def _chat(lm, prompt="Go."):
    with user():
        lm += prompt
    return lm


def local(text: str, program) -> dict:
    """Run `program` on guidance's local Mock model forced to produce `text`: the reference semantics.

    The text must complete the program's stop, since the mock continues with random bytes after it.
    """
    lm = models.Mock(b"<s>" + b"Go." + text.encode())
    lm = lm + "Go." + program
    return {k: v["value"] for k, v in lm._interpreter.state.captures.items() if isinstance(v, dict)}


def test_parameters_sent_are_documented_ones(fake, make_model) -> None:
    fake.push(Reply.text("Hi there"))
    lm = _chat(make_model(request_defaults={"seed": 7, "service_tier": "priority", "reasoning_effort": "none"}))
    with assistant():
        lm += gen("g", max_tokens=12, temperature=0.3)
    body = fake.last
    assert body == {
        "model": "test/model",
        "messages": [{"role": "user", "content": "Go."}],
        "stream": True,
        "seed": 7,
        "service_tier": "priority",
        "reasoning_effort": "none",
        "temperature": 0.3,
        "max_tokens": 12,
    }
    assert lm["g"] == "Hi there"


def test_sampling_params_guidance_openai_refuses_are_passed_through(fake, make_model) -> None:
    fake.push(Reply.text("x"))
    lm = make_model(sampling_params={"top_p": 0.9, "top_k": 40, "min_p": 0.05, "repetition_penalty": 1.1})
    lm = _chat(lm)
    with assistant():
        lm += gen("g")
    body = fake.last
    assert (body["top_p"], body["top_k"], body["min_p"], body["repetition_penalty"]) == (0.9, 40, 0.05, 1.1)


def test_unknown_request_default_is_refused_at_construction(make_model, fake) -> None:
    with pytest.raises(ConfigurationError, match="max_completion_tokens"):
        make_model(request_defaults={"max_completion_tokens": 5})
    assert fake.requests == []


#: The fake server cuts at the request's ``stop`` as DeepInfra does (True), or overruns it as a model that
#: ignores its stop strings (False): then only the client's own scanning can stop the text.
SERVER_STOPS = pytest.mark.parametrize("server_stops", [True, False], ids=["server-stops", "server-overruns"])


@SERVER_STOPS
@pytest.mark.parametrize(
    "reply,stop,expected",
    [
        ("Paris. Then more.", ".", "Paris"),
        ("alpha beta\ngamma", "\n", "alpha beta"),
        ("no stop here", "###", "no stop here"),
    ],
)
def test_literal_stop_matches_local_semantics(fake, make_model, reply, stop, expected, server_stops) -> None:
    fake.push(Reply.text(reply, chunk_size=3, honour_stop=server_stops))
    lm = _chat(make_model())
    with assistant():
        lm += gen("g", stop=stop)
    assert lm["g"] == expected
    if stop in reply:
        assert lm["g"] == local(reply, gen("g", stop=stop))["g"]
    assert fake.last["stop"] == [stop]


@SERVER_STOPS
def test_more_than_four_stops_four_go_to_server_all_checked_locally(fake, make_model, server_stops) -> None:
    stops = ["A", "B", "C", "D", "!"]
    fake.push(Reply.text("hello! world A", chunk_size=2, honour_stop=server_stops))
    lm = _chat(make_model())
    with assistant():
        lm += gen("g", stop=stops)
    assert fake.last["stop"] == ["A", "B", "C", "D"]
    assert lm["g"] == "hello" == local("hello! world A", gen("g", stop=stops))["g"]
    assert str(lm).endswith("hello")


def test_regex_stop_is_client_side_with_stop_text(fake, make_model) -> None:
    reply = "order ab12 then 7"
    fake.push(Reply.text(reply, chunk_size=3))
    lm = _chat(make_model())
    with assistant():
        lm += gen("g", stop_regex=r"\d+", save_stop_text=True)
    assert "stop" not in fake.last
    assert lm["g"] == "order ab"
    assert lm["g_stop_text"] == "1"
    ref = local(reply, gen("g", stop_regex=r"\d+", save_stop_text=True))
    assert (lm["g"], lm["g_stop_text"]) == (ref["g"], ref["g_stop_text"])


def test_stop_capture_empty_when_model_ends_without_stop(fake, make_model) -> None:
    fake.push(Reply.text("never stops", finish_reason="length"))
    lm = _chat(make_model())
    with assistant():
        lm += gen("g", stop=[".", "!"], save_stop_text="why")
    assert "stop" not in fake.last  # which stop matched must be seen, so none go to the server
    assert lm["g"] == "never stops" and lm["why"] == ""


def test_suffix_is_written_after_the_capture(fake, make_model) -> None:
    fake.push(Reply.text("Paris; and more", chunk_size=2))
    lm = _chat(make_model())
    with assistant():
        lm += "City: " + gen("city", suffix=";")
    assert lm["city"] == "Paris"
    assert str(lm).endswith("City: Paris;")
    assert fake.last["messages"][-1] == {"role": "assistant", "content": "City: "}


@pytest.mark.parametrize(
    "stop_kwargs", [{"stop": "\n"}, {"stop": ["\n", ";"]}, {"stop_regex": r"\d"}], ids=["literal", "list", "regex"]
)
def test_stop_with_suffix_is_refused_before_any_request_as_locally(fake, make_model, stop_kwargs) -> None:
    with pytest.raises(ValueError, match="multiple stop/suffix"):  # guidance's local engine refuses the program
        local("a]\n", gen("g", suffix="]", **stop_kwargs))
    lm = _chat(make_model())
    with pytest.raises(InvalidProgramError, match="both a stop and a suffix"):
        with assistant():
            lm += "List: [" + gen("g", suffix="]", **stop_kwargs)
    assert fake.requests == []


@pytest.mark.parametrize(
    "program",
    [
        lambda: gen("a", stop="\n", suffix="]") + gen("b", regex=r"\d"),  # joined with a grammar part
        lambda: "x" + gen("a", stop="\n", suffix="]") + "y",  # joined with text
        lambda: gen("a", regex=r"\d+", stop="x", suffix="]"),  # a regex gen
    ],
    ids=["with-regex-gen", "with-text", "regex-gen"],
)
def test_stop_with_suffix_is_refused_wherever_it_appears(fake, make_model, program) -> None:
    with pytest.raises(ValueError, match="multiple stop/suffix"):
        local("1]\n2", program())
    lm = _chat(make_model())
    with pytest.raises(InvalidProgramError, match="stop"):
        with assistant():
            lm += program()
    assert fake.requests == []


def test_suffix_with_save_stop_text_saves_the_suffix_as_locally(fake, make_model) -> None:
    fake.push(Reply.text("abc]def", chunk_size=2))
    lm = _chat(make_model())
    with assistant():
        lm += "x" + gen("g", suffix="]", save_stop_text="s")
    ref = local("xabc]def", "x" + gen("g", suffix="]", save_stop_text="s"))
    assert (lm["g"], lm["s"]) == (ref["g"], ref["s"]) == ("abc", "]")
    assert str(lm).endswith("xabc]")


@SERVER_STOPS
def test_list_append_collects_values(fake, make_model, server_stops) -> None:
    fake.push(Reply.text("one\nmore", honour_stop=server_stops), Reply.text("two\n", honour_stop=server_stops))
    lm = _chat(make_model())
    with assistant():
        lm += gen("items", list_append=True, stop="\n") + "\n"
        lm += gen("items", list_append=True, stop="\n")
    assert lm["items"] == ["one", "two"]
    assert str(lm).endswith("one\ntwo")


def test_generation_outside_assistant_is_a_clear_error(fake, make_model) -> None:
    lm = make_model()
    with pytest.raises(InvalidProgramError, match="assistant"):
        with user():
            lm += gen("g")
    assert fake.requests == []


def test_prefill_refused_for_a_model_declared_without_continuation(fake, make_model) -> None:
    lm = _chat(make_model(profile=ModelProfile(continuation=False)))
    with pytest.raises(UnsupportedFeatureError, match="continuation"):
        with assistant():
            lm += "Sure: " + gen("g")
    assert fake.requests == []


def test_stream_yields_growing_text(fake, make_model) -> None:
    fake.push(Reply.text("one two three four", chunk_size=4, chunk_delay=0.01))
    lm = _chat(make_model())

    @guidance
    def answer(lm):
        # Roles are opened inside the streamed function: guidance runs streams in a worker thread.
        with assistant():
            lm += gen("g")
        return lm

    seen = [str(partial) for partial in lm.stream() + answer()]
    grows = [s for s in seen if "one" in s]
    assert len(grows) >= 3
    assert all(a == b[: len(a)] for a, b in zip(grows, grows[1:], strict=False))
    assert grows[-1].endswith("one two three four")


def test_logprobs_requested_and_dropped_when_refused(fake, make_model) -> None:
    fake.push(Reply.text("tok", logprobs=True))
    lm = _chat(make_model(logprobs=True, top_logprobs=3))
    with assistant():
        lm += gen("g")
    assert fake.last["logprobs"] is True and fake.last["top_logprobs"] == 3
    assert lm["g"] == "tok"

    fake.push(
        Reply.error(
            422,
            {"detail": [{"loc": ["body", "top_logprobs"], "msg": "logprobs are not supported", "type": "value_error"}]},
        ),
        Reply.text("fine"),
        Reply.text("again"),
    )
    lm = _chat(make_model(logprobs=True))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with assistant():
            lm += gen("g")
        with assistant():
            lm += gen("h")
    assert lm["g"] == "fine" and lm["h"] == "again"
    assert "logprobs" not in fake.requests[-1] and "logprobs" not in fake.requests[-2]
    assert len([w for w in caught if "logprobs" in str(w.message)]) == 1


def test_reasoning_never_leaks_into_text_or_capture(fake, make_model) -> None:
    fake.push(Reply.text("42", reasoning="Let me think about 6 times 7."))
    lm = _chat(make_model(), "6*7?")
    with assistant():
        lm += gen("answer")
    assert lm["answer"] == "42"
    assert "think" not in str(lm)
    assert lm.reasoning == ["Let me think about 6 times 7."]


def test_usage_and_estimated_cost_accumulate(fake, make_model) -> None:
    fake.push(
        Reply.text("a", prompt_tokens=10, completion_tokens=2, cached_tokens=4),
        Reply.text("b", prompt_tokens=30, completion_tokens=3),
    )
    lm = _chat(make_model())
    with assistant():
        lm += gen("x")
    with user():
        lm += "again"
    with assistant():
        lm += gen("y")
    usage = lm.usage
    assert (usage.calls, usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (2, 40, 5, 4)
    assert usage.estimated_cost == pytest.approx(45 * 1e-7)
    assert "2 call(s)" in usage.summary()
    # guidance's own token usage is filled too
    assert lm._get_usage().input_tokens == 40


def test_multi_turn_sends_whole_history(fake, make_model) -> None:
    fake.push(Reply.text("Hello!"), Reply.text("Fine."))
    lm = make_model()
    with system():
        lm += "sys"
    with user():
        lm += "hi"
    with assistant():
        lm += gen("a")
    with user():
        lm += "how are you?"
    with assistant():
        lm += gen("b")
    assert fake.last["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "how are you?"},
    ]


def test_total_usage_counts_calls_whose_program_state_was_lost(fake, make_model) -> None:
    fake.push(Reply.text("ok", prompt_tokens=10, completion_tokens=1), Reply.error(400, {"detail": "bad request"}))
    base = make_model()
    lm = _chat(base)
    with assistant():
        lm += gen("a")
    with pytest.raises(InvalidParameterError):
        with assistant():
            lm += gen("b")
    assert lm.usage.calls == 1
    assert base.total_usage.calls == 1 and base.total_usage.prompt_tokens == 10
    fake.push(Reply.text("again", prompt_tokens=5, completion_tokens=1))
    other = _chat(base)
    with assistant():
        other += gen("c")
    assert base.total_usage.calls == 2 and lm.total_usage is base.total_usage


def test_finished_streams_leave_their_connection_for_the_next_request(fake, make_model) -> None:
    fake.responder = lambda body: Reply.text("hello there friend")
    base = make_model()
    for _ in range(4):
        lm = _chat(base)
        with assistant():
            lm += gen("g")
        assert lm["g"] == "hello there friend"
    assert len(fake.requests) == 4
    assert fake.connections < 4  # requests one after another share a kept connection
    # A stream closed early by a client-side stop is not read to its end: its connection is dropped, and the
    # next request opens a fresh one rather than reading the rest of the abandoned answer.
    before_early_stop = fake.connections
    lm = _chat(base)
    with assistant():
        lm += gen("g", stop_regex="t.e")
    assert lm["g"] == "hello "
    lm = _chat(base)
    with assistant():
        lm += gen("g")
    assert lm["g"] == "hello there friend"
    assert fake.connections > before_early_stop
