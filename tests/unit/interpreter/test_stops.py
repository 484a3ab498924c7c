"""Client-side stops as a local model stops: llguidance's regex dialect, earliest end, shortest stop text,
held-back text, and a scan that reads each streamed character once.

The reference is guidance's local engine (`models.Mock` forced along the same answer).
"""

from __future__ import annotations

import pytest
from guidance import assistant, gen, models, user
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guidance_deepinfra import InvalidProgramError
from guidance_deepinfra.interpreter.stops import StopScanner, StopSpec, _RegexStops, stop_spec_for
from guidance_deepinfra.testing import Reply


def local(text: str, **stop_kwargs) -> tuple[str, str | None]:
    """(capture, stop text) of guidance's local engine forced along `text` (which must contain a stop)."""
    lm = models.Mock(b"<s>Go." + text.encode())
    lm += "Go." + gen("g", save_stop_text="s", max_tokens=60, **stop_kwargs)
    return lm["g"], lm.get("s")


def run(fake, make_model, reply: str, chunk_size: int = 3, **stop_kwargs) -> tuple[str, str | None, str]:
    fake.push(Reply.text(reply, chunk_size=chunk_size, honour_stop=False))
    lm = make_model()
    with user():
        lm += "Go."
    with assistant():
        lm += gen("g", save_stop_text="s", **stop_kwargs)
    return lm["g"], lm["s"], str(lm)


REGEX_CASES = [
    ("Hello World.", r"\p{Lu}"),  # Unicode classes: Python's re refuses \p
    ("ab 12 cd", r"[[:digit:]]+"),  # POSIX classes: Python's re reads them as a set of letters
    ("xaab!!", r"a+b"),  # of the matches ending first, the shortest is the stop text
    ("xaab!!", r"ab|xaab"),
    ("abcab", r"(ab|b)c"),
    ("xyzab12zz", r"[a-z]*[0-9]"),
    ("héllo wörld", r"ö"),
    ("Hello The END there", r"(?i)end"),
    ("order ab12 then 7", r"\d+"),
]


@pytest.mark.parametrize("reply,regex", REGEX_CASES)
def test_stop_regex_stops_as_a_local_model(fake, make_model, reply, regex) -> None:
    captured, stop_text, program = run(fake, make_model, reply, stop_regex=regex)
    assert (captured, stop_text) == local(reply, stop_regex=regex)
    assert program.endswith(captured) and reply[len(captured) :] not in program  # the stop text stays hidden
    assert "stop" not in fake.last


@pytest.mark.parametrize("server_stops", [True, False], ids=["server-stops", "server-overruns"])
def test_overlapping_literal_stops_end_as_locally(fake, make_model, server_stops) -> None:
    fake.push(Reply.text("xab and more", chunk_size=2, honour_stop=server_stops))
    lm = make_model()
    with user():
        lm += "Go."
    with assistant():
        lm += gen("g", stop=["ab", "b"])
    assert lm["g"] == local("xab and more", stop=["ab", "b"])[0] == "xa"
    # A server cutting at the first stop it finds would cut at "ab", losing the "a": such stops stay local.
    assert "stop" not in fake.last


@pytest.mark.parametrize("kwargs", [{"stop": ["a11", "1"]}, {"stop_regex": "a11|1"}], ids=["literals", "regex"])
def test_a_stop_still_matching_from_further_back_is_hidden_too_as_locally(fake, make_model, kwargs) -> None:
    # Found by the property test below: at "a1" the stop "1" is complete while "a11" is still matching from
    # "a"; llguidance's lexer (a local model's) hides both, so the capture is "" and the stop text "a1".
    assert local("a111", **kwargs) == ("", "a1")
    captured, stop_text, _ = run(fake, make_model, "a111", chunk_size=1, **kwargs)
    assert (captured, stop_text) == ("", "a1")


def test_stops_that_cannot_overlap_still_go_to_the_server() -> None:
    assert StopSpec(literals=["\n\n", "END"]).api_stops == ["\n\n", "END"]
    assert StopSpec(literals=["ab", "bc"]).api_stops == []
    assert StopSpec(literals=["aa"]).api_stops == ["aa"]


def test_a_stop_regex_matching_the_empty_text_ends_the_gen_before_any_request(fake, make_model) -> None:
    assert local("ab12", stop_regex=r"\d*") == ("", None)
    lm = make_model()
    with user():
        lm += "Go."
    with assistant():
        lm += "x" + gen("g", stop_regex=r"\d*", save_stop_text="s")
    assert lm["g"] == "" and "s" not in lm._interpreter.state.captures
    assert fake.requests == []


@pytest.mark.parametrize("regex", [r"(unclosed", r"a{2,1}", r"\p{NoSuchClass}"])
def test_invalid_stop_regex_is_refused_before_any_request(fake, make_model, regex) -> None:
    lm = make_model()
    with user():
        lm += "Go."
    with pytest.raises(InvalidProgramError, match="stop_regex"):
        with assistant():
            lm += gen("g", stop_regex=regex)
    assert fake.requests == []


def test_text_that_cannot_begin_a_stop_is_shown_before_the_stop_is_decided() -> None:
    scanner = StopScanner(StopSpec(regex=r"END\."))
    assert scanner.feed("The EN") == "The "  # "EN" may begin the stop: held back
    assert scanner.feed("Dless E") == "ENDless "  # it did not; "E" may
    assert scanner.feed("ND.x") == "" and scanner.done and scanner.stop_text == "END."
    assert scanner.text == "The ENDless "


def test_a_stream_ending_without_a_stop_releases_what_was_held() -> None:
    scanner = StopScanner(StopSpec(regex=r"\d+!"))
    assert scanner.feed("call 12") == "call "
    assert scanner.finish() == "12" and not scanner.done and scanner.stop_text == ""


def test_each_character_is_fed_once_and_rescans_are_bounded() -> None:
    # A regex whose possible starts keep dying ("a" then anything but "b") is the worst case for finding the
    # leftmost text that may still begin a stop; the extra work stays a bounded multiple of the text.
    stops = _RegexStops(r"a{3}b")
    text = "aaac" * 5000
    for size in range(0, len(text), 7):
        assert stops.feed(text[: size + 7], size) is None
    assert stops._rescan_work <= _RegexStops._RESCAN_FACTOR * len(text) + _RegexStops._RESCAN_SLACK


@pytest.mark.parametrize("text,regex", [("aacaab!", r"a+b"), ("aa111", r"a11|1"), ("ab ab abc abX", r"[ab ]*X")])
def test_stop_text_is_right_after_the_scanner_stops_looking_for_starts(monkeypatch, text, regex) -> None:
    # With no budget for re-reading, the scanner holds everything from the first possible start on; the stop
    # text must come out the same.
    monkeypatch.setattr(_RegexStops, "_RESCAN_FACTOR", 0)
    monkeypatch.setattr(_RegexStops, "_RESCAN_SLACK", 0)
    scanner = StopScanner(StopSpec(regex=regex))
    shown = "".join(scanner.feed(char) for char in text)
    assert scanner.done and scanner._regex is not None and scanner._regex._gave_up
    assert (shown, scanner.stop_text) == local(text, stop_regex=regex)


_ALPHABET = "ab1 X"
_REGEXES = [r"a+b", r"\d", r"b|ab", r"a.b", r"[[:upper:]]", r"(?i)x", r"a{2}|1 ", r"\s\p{L}", r"a11|1", r"a.*1"]


@pytest.mark.slow  # a hypothesis search
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.text(_ALPHABET, max_size=12),
    regex=st.sampled_from(_REGEXES),
    pieces=st.lists(st.integers(1, 5), min_size=1, max_size=6),
)
def test_scanner_matches_the_local_engine(body: str, regex: str, pieces: list[int]) -> None:
    text = body + "ab1 X aab"  # ends with a stop of every regex above, so the local run stops
    expected = local(text, stop_regex=regex)
    scanner = StopScanner(StopSpec(regex=regex))
    shown, position, turn = "", 0, 0
    while position < len(text) and not scanner.done:
        size = pieces[turn % len(pieces)]
        shown += scanner.feed(text[position : position + size])
        position, turn = position + size, turn + 1
    shown += scanner.finish()
    assert scanner.done
    assert (shown, scanner.stop_text) == expected


@pytest.mark.slow  # a hypothesis search
@settings(max_examples=60, deadline=None)
@given(
    body=st.text(_ALPHABET, max_size=12),
    stops=st.lists(st.text("ab1", min_size=1, max_size=3), min_size=1, max_size=4, unique=True),
    pieces=st.lists(st.integers(1, 5), min_size=1, max_size=6),
)
def test_literal_stops_match_the_local_engine(body: str, stops: list[str], pieces: list[int]) -> None:
    text = body + "".join(stops)  # every stop occurs, so the local run stops
    expected = local(text, stop=stops)
    node = gen("g", stop=stops)
    spec = stop_spec_for(node.stop, node.suffix)  # as the plugin lowers it
    assert spec is not None
    scanner = StopScanner(spec)
    shown, position, turn = "", 0, 0
    while position < len(text) and not scanner.done:
        size = pieces[turn % len(pieces)]
        shown += scanner.feed(text[position : position + size])
        position, turn = position + size, turn + 1
    assert scanner.done
    assert (shown, scanner.stop_text) == expected
    if spec.api_stops:  # a server cutting at the first occurrence of any stop it was sent cuts where we do
        assert min(text.find(s) for s in spec.api_stops) == len(shown)
