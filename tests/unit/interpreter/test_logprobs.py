"""Log probabilities of captures and of select options, from scripted token logprobs on the fake server.

Every expected number is computed by hand from the scripted tokens, so each test fails if the plugin stops
reading logprobs, sums the wrong tokens, or makes a request it should not.
"""

from __future__ import annotations

import enum
import json
import math

import pydantic
import pytest
from guidance import assistant, gen, lark, select, user
from guidance import json as guidance_json
from hypothesis import given, settings
from hypothesis import strategies as st

import guidance_deepinfra
from guidance_deepinfra import (
    ConfigurationError,
    InvalidProgramError,
    ModelProfile,
    OptionProb,
    UnsupportedFeatureWarning,
    option_probs,
)
from guidance_deepinfra.interpreter.logprobs import (
    Piece,
    RequestTokens,
    TokenScore,
    _common_prefix_length,
    capture_log_probs,
    carried_pieces,
    combine,
    encoded_option,
    enum_field_probs,
    grammar_capture_log_probs,
    option_distribution,
    pieces_log_prob,
    reply_pieces,
    span_log_prob,
)
from guidance_deepinfra.testing import Reply

OPTIONS = ["billing", "technical", "sales", "other", "legal"]
# The answer '"technical"' as three tokens; at the second, the server lists four alternatives.
TEAM_TOKENS = [
    ('"', -0.02),
    ("tech", -0.5, {"tech": -0.5, "bill": -1.8, "sales": -2.8, 'other"': -3.5}),
    ('nical"', -0.05),
]
REFUSED = Reply.error(
    422, {"detail": [{"loc": ["body", "top_logprobs"], "msg": "logprobs are not supported", "type": "value_error"}]}
)


def ask(lm, question: str = "Which team handles a router that drops the connection?"):
    with user():
        lm += question
    return lm


def tokens(*pairs: tuple[str, float]) -> list[TokenScore]:
    return [TokenScore(text.encode(), lp) for text, lp in pairs]


# ----------------------------------------------------------------------------- the pure function


def test_span_sums_every_token_that_overlaps_the_capture() -> None:
    answer = tokens(("The", -0.1), (" Par", -0.2), ("is", -0.3), (".", -0.4))  # "The Paris."
    assert span_log_prob(answer, (4, 9)) == pytest.approx(-0.5)  # "Paris": " Par" and "is"
    assert span_log_prob(answer, (0, 10)) == pytest.approx(-1.0)
    assert span_log_prob(answer, (3, 3)) == 0.0  # an empty capture
    assert capture_log_probs(answer, {"a": (0, 3), "b": [(4, 7), (9, 10)]}) == {
        "a": pytest.approx(-0.1),
        "b": [pytest.approx(-0.2), pytest.approx(-0.4)],
    }


def test_bytes_not_generated_in_the_request_count_nothing() -> None:
    # The capture spans "Hello world": "Hello" was prefilled (forced), " world" generated from byte 5 on.
    generated = tokens((" wor", -0.7), ("ld", -0.1))
    assert span_log_prob(generated, (0, 11), generated_at=5) == pytest.approx(-0.8)
    assert span_log_prob(generated, (0, 5), generated_at=5) == 0.0  # all forced
    assert span_log_prob(None, (0, 5), generated_at=5) == 0.0  # no logprobs, but nothing generated either
    assert span_log_prob(None, (0, 11), generated_at=5) is None
    # A capture built over two requests: each adds what it generated; an unknown part makes it unknown.
    assert combine([-0.8, -0.3]) == pytest.approx(-1.1)
    assert combine([-0.8, None]) is None


def test_a_request_whose_text_came_without_logprobs_is_not_usable() -> None:
    recorded = RequestTokens()
    recorded.add_chunk("Hel", {"content": [{"token": "Hel", "logprob": -0.5, "top_logprobs": []}]})
    assert recorded.usable
    recorded.add_chunk("lo", None)
    assert not recorded.usable
    # Tokens that do not spell the text received would score other bytes: not used.
    mismatched = RequestTokens()
    mismatched.add_chunk("Hello", {"content": [{"token": "Help", "logprob": -0.5, "top_logprobs": []}]})
    assert not mismatched.usable


# ----------------------------------------------------------------------------- gen


def test_gen_capture_carries_the_sum_of_its_token_logprobs(fake, make_model) -> None:
    fake.push(Reply.text("Hello there", token_logprobs=[("Hel", -0.5), ("lo", -0.25), (" there", -1.0)]))
    lm = ask(make_model(logprobs=True))
    with assistant():
        lm += gen("greeting")
    assert lm["greeting"] == "Hello there"
    assert lm.log_prob("greeting") == pytest.approx(-1.75)
    assert fake.last["logprobs"] is True and fake.last["top_logprobs"] == 5
    assert len(fake.requests) == 1


def test_gen_with_a_client_side_stop_counts_tokens_up_to_the_stop(fake, make_model) -> None:
    script = [("Par", -0.1), ("is", -0.2), (".", -0.3), (" More", -1.0)]
    fake.push(Reply.text("Paris. More", token_logprobs=script))
    lm = ask(make_model(logprobs=True))
    with assistant():
        lm += gen("city", stop_regex=r"\.")  # a regex stop: the server does not cut, the client does
    assert lm["city"] == "Paris"
    assert lm.log_prob("city") == pytest.approx(-0.3)
    # A token that runs across the stop still produced the capture's last bytes, so it counts.
    fake.push(Reply.text("Paris. More", token_logprobs=[("Paris.", -0.4), (" More", -1.0)]))
    lm = ask(make_model(logprobs=True))
    with assistant():
        lm += gen("city", stop_regex=r"\.")
    assert lm["city"] == "Paris" and lm.log_prob("city") == pytest.approx(-0.4)


def test_stop_capture_is_scored_from_the_stop_tokens(fake, make_model) -> None:
    fake.push(Reply.text("yes!! more", token_logprobs=[("yes", -0.2), ("!!", -0.6), (" more", -1.0)]))
    lm = ask(make_model(logprobs=True))
    with assistant():
        lm += gen("answer", stop=["!!", "?"], save_stop_text="ending")
    assert (lm["answer"], lm["ending"]) == ("yes", "!!")
    assert lm.log_prob("answer") == pytest.approx(-0.2) and lm.log_prob("ending") == pytest.approx(-0.6)


@pytest.mark.parametrize("honour_stop", [True, False], ids=["server cuts", "server overruns"])
def test_gen_with_a_literal_stop(fake, make_model, honour_stop) -> None:
    script = [("Paris", -0.2), (".", -0.1), (" More", -1.0)]
    fake.push(Reply.text("Paris. More", token_logprobs=script, honour_stop=honour_stop))
    lm = ask(make_model(logprobs=True))
    with assistant():
        lm += "The capital is " + gen("city", stop=".")
    assert fake.last["stop"] == ["."]
    assert lm["city"] == "Paris" and lm.log_prob("city") == pytest.approx(-0.2)


def test_list_append_captures_get_one_log_prob_each(fake, make_model) -> None:
    fake.push(
        Reply.text("red", token_logprobs=[("re", -0.3), ("d", -0.1)]),
        Reply.text("blue", token_logprobs=[("blue", -0.9)]),
    )
    lm = ask(make_model(logprobs=True), "Two colours?")
    with assistant():
        lm += gen("colours", list_append=True, max_tokens=3)
    with assistant():
        lm += gen("colours", list_append=True, max_tokens=3)
    assert lm["colours"] == ["red", "blue"]
    assert lm.log_prob("colours") == [pytest.approx(-0.4), pytest.approx(-0.9)]


# ----------------------------------------------------------------------------- select


def test_select_reports_every_option_from_the_one_request(fake, make_model) -> None:
    fake.push(Reply.text('"technical"', token_logprobs=TEAM_TOKENS))
    lm = ask(make_model(logprobs=True))
    with assistant():
        lm += select(OPTIONS, name="team")
    assert lm["team"] == "technical"
    assert len(fake.requests) == 1  # no request beyond the one that chose
    # By hand, from the divergence (the token after the opening quote) on:
    unshown = 1 - (math.exp(-0.5) + math.exp(-1.8) + math.exp(-2.8) + math.exp(-3.5))
    expected = {
        "technical": (math.exp(-0.5 - 0.05), False),  # its own tokens, closing quote included
        "billing": (math.exp(-1.8), False),  # "bill" starts only "billing" and the enum forces the rest
        "sales": (math.exp(-2.8), False),
        "other": (math.exp(-3.5), False),  # 'other"' spells the whole option
        "legal": (unshown, True),  # not listed: at most the mass the list leaves
    }
    probs = option_probs(lm, "team")
    assert list(probs) == OPTIONS
    for option, (prob, bound) in expected.items():
        assert probs[option].prob == pytest.approx(prob), option
        assert probs[option].bound is bound, option
    assert lm.log_prob("team") == pytest.approx(-0.55)
    assert isinstance(probs["legal"], OptionProb) and probs["legal"].log_prob == pytest.approx(math.log(unshown))


def test_options_past_top_logprobs_are_upper_bounds(fake, make_model) -> None:
    fake.push(Reply.text('"technical"', token_logprobs=TEAM_TOKENS))
    lm = ask(make_model(logprobs=True, top_logprobs=2))
    with assistant():
        lm += select(OPTIONS, name="team")
    assert fake.last["top_logprobs"] == 2
    probs = option_probs(lm, "team")
    unshown = 1 - (math.exp(-0.5) + math.exp(-1.8))
    assert probs["billing"].prob == pytest.approx(math.exp(-1.8)) and not probs["billing"].bound
    for option in ("sales", "other", "legal"):
        assert probs[option].prob == pytest.approx(unshown) and probs[option].bound


def test_options_sharing_a_start_are_bounded_where_the_list_cannot_tell_them_apart(fake, make_model) -> None:
    script = [('"', -0.01), ("bill", -0.4, {"bill": -0.4, "tech": -1.5}), ("ing", -0.2, {"ing": -0.2, " pay": -2.0})]
    fake.push(Reply.text('"billing"', token_logprobs=[*script, ('"', -0.01)]))
    lm = ask(make_model(logprobs=True))
    with assistant():
        lm += select(["billing", "bill payment", "technical"], name="team")
    probs = option_probs(lm, "team")
    assert probs["billing"].prob == pytest.approx(math.exp(-0.4 - 0.2 - 0.01))
    assert probs["bill payment"].prob == pytest.approx(math.exp(-0.4 - 2.0)) and not probs["bill payment"].bound
    assert probs["technical"].prob == pytest.approx(math.exp(-1.5))


def test_a_listed_token_two_options_share_bounds_both(fake, make_model) -> None:
    script = [('"', -0.01), ("tech", -0.3, {"tech": -0.3, "bill": -1.5}), ('nical"', -0.02)]
    fake.push(Reply.text('"technical"', token_logprobs=script))
    lm = ask(make_model(logprobs=True))
    with assistant():
        lm += select(["billing", "bill payment", "technical"], name="team")
    probs = option_probs(lm, "team")
    for option in ("billing", "bill payment"):  # "bill" starts both: the list cannot tell them apart
        assert probs[option].prob == pytest.approx(math.exp(-1.5)) and probs[option].bound


def test_select_list_append_keeps_one_distribution_per_choice(fake, make_model) -> None:
    fake.push(
        Reply.text('"technical"', token_logprobs=TEAM_TOKENS),
        Reply.text('"sales"', token_logprobs=[('"', -0.1), ("sales", -0.7, {"sales": -0.7, "tech": -0.9}), ('"', 0.0)]),
    )
    lm = ask(make_model(logprobs=True))
    with assistant():
        lm += select(OPTIONS, name="teams", list_append=True)
    with assistant():
        lm += select(OPTIONS, name="teams", list_append=True)
    assert lm["teams"] == ["technical", "sales"]
    assert lm.log_prob("teams") == [pytest.approx(-0.55), pytest.approx(-0.7)]
    first, second = option_probs(lm, "teams")
    assert first["technical"].prob == pytest.approx(math.exp(-0.55))
    assert second["technical"].prob == pytest.approx(math.exp(-0.9))


def test_exact_mode_scores_each_option_by_continuation(fake, make_model) -> None:
    fake.push(Reply.text('"technical"', token_logprobs=[('"', -0.02), ("tech", -0.5), ('nical"', -0.05)]))
    lm = ask(make_model(logprobs=True))
    with assistant():
        lm += "Team: " + select(["billing", "technical"], name="team")
    assert len(fake.requests) == 1
    one_call = option_probs(lm, "team")
    assert one_call["billing"].bound  # top_logprobs listed nothing here

    continuations = {
        '"': Reply.text("tech", token_logprobs=[("tech", -0.5, {"tech": -0.5, "bill": -1.2})]),
        '"bill': Reply.text('ing"', token_logprobs=[('ing"', -0.1, {'ing"': -0.1})]),
        '"tech': Reply.text('nical"', token_logprobs=[('nical"', -0.05, {'nical"': -0.05})]),
    }
    fake.responder = lambda body: continuations[body["messages"][-1]["content"].removeprefix("Team: ")]
    exact = option_probs(lm, "team", exact=True)
    assert exact["billing"].prob == pytest.approx(math.exp(-1.2 - 0.1)) and not exact["billing"].bound
    assert exact["technical"].prob == pytest.approx(math.exp(-0.5 - 0.05)) and not exact["technical"].bound
    extra = fake.requests[1:]
    assert len(extra) == 3  # one per distinct prefix: '"', '"bill', '"tech'
    for body in extra:
        assert "response_format" not in body
        assert body["max_tokens"] == 1 and body["logprobs"] is True and body["top_logprobs"] == 20
        assert body["messages"][-1]["role"] == "assistant"
    assert lm.usage.calls == 4


def test_exact_mode_respects_max_requests(fake, make_model) -> None:
    fake.push(Reply.text('"technical"', token_logprobs=TEAM_TOKENS))
    lm = ask(make_model(logprobs=True))
    with assistant():
        lm += select(["billing", "technical"], name="team")
    fake.responder = lambda body: Reply.text("tech", token_logprobs=[("tech", -0.5, {"tech": -0.5, "bill": -1.2})])
    exact = option_probs(lm, "team", exact=True, max_requests=1)
    assert len(fake.requests) == 2
    assert exact["billing"].bound and exact["billing"].prob == pytest.approx(math.exp(-1.2))


# ----------------------------------------------------------------------------- json


class Team(str, enum.Enum):
    billing = "billing"
    technical = "technical"
    sales = "sales"


class Ticket(pydantic.BaseModel):
    team: Team
    priority: int


def test_json_capture_and_its_enum_fields(fake, make_model) -> None:
    script = [
        ('{"team": "', -0.1),
        ("sales", -0.7, {"sales": -0.7, "tech": -0.9}),
        ('", "priority": ', -0.2),
        ("2", -0.4),
        ("}", -0.05),
    ]
    fake.push(Reply.text('{"team": "sales", "priority": 2}', token_logprobs=script))
    lm = ask(make_model(logprobs=True))
    with assistant():
        lm += guidance_json("ticket", schema=Ticket)
    assert json.loads(lm["ticket"]) == {"team": "sales", "priority": 2}
    assert lm.log_prob("ticket") == pytest.approx(-1.45)
    team = option_probs(lm, "ticket", field="team")
    assert team["sales"].prob == pytest.approx(math.exp(-0.7 - 0.2))  # through the closing quote's token
    assert team["technical"].prob == pytest.approx(math.exp(-0.9)) and not team["technical"].bound
    assert team["billing"].bound
    assert team["billing"].prob == pytest.approx(1 - math.exp(-0.7) - math.exp(-0.9))
    assert option_probs(lm, "ticket", field="priority") is None
    with pytest.raises(InvalidProgramError, match="field"):
        option_probs(lm, "ticket")


def test_json_continued_after_length_sums_both_requests(fake, make_model) -> None:
    fake.push(
        Reply.text('{"a": ', finish_reason="length", token_logprobs=[('{"a', -0.3), ('": ', -0.2)]),
        Reply.text("12}", token_logprobs=[("12", -0.6), ("}", -0.1)]),
    )
    lm = ask(make_model(logprobs=True))
    with assistant():
        lm += guidance_json("doc", schema={"type": "object", "properties": {"a": {"type": "integer"}}})
    assert lm["doc"] == '{"a": 12}'
    assert len(fake.requests) == 2
    # The second request was handed '{"a": ' as its assistant prefix; it adds only what it generated.
    assert lm.log_prob("doc") == pytest.approx(-1.2)


def test_enum_field_hook_for_a_reply_read_elsewhere() -> None:
    text = '{"team": "billing", "priority": 1}'
    answer = [
        TokenScore(b'{"team": "', -0.1),
        TokenScore(b"bill", -0.3, ((b"bill", -0.3), (b"tech", -1.4))),
        TokenScore(b'ing", "priority": 1}', -0.2),
    ]
    fields = enum_field_probs(text, answer, Ticket.model_json_schema(), enforced=True)
    assert set(fields) == {"team"}
    assert fields["team"]["billing"].prob == pytest.approx(math.exp(-0.5))
    assert fields["team"]["technical"].prob == pytest.approx(math.exp(-1.4))
    # The public form takes the wire entries of a reply's logprobs.content as they come.
    wire = [
        {"token": '{"team": "', "logprob": -0.1, "top_logprobs": []},
        {"token": "bill", "logprob": -0.3, "top_logprobs": [{"token": "tech", "logprob": -1.4}]},
        {"token": 'ing", "priority": 1}', "logprob": -0.2, "top_logprobs": []},
    ]
    public = guidance_deepinfra.enum_confidence(text, wire, Ticket.model_json_schema())
    assert {o: p.prob for o, p in public["team"].items()} == {o: p.prob for o, p in fields["team"].items()}
    assert guidance_deepinfra.enum_confidence(text, [{"token": "x"}], Ticket.model_json_schema()) == {}


# ----------------------------------------------------------------------------- without logprobs


def test_a_model_that_refuses_logprobs_gives_none_and_nothing_else_changes(fake, make_model) -> None:
    def run(lm):
        lm = ask(lm)
        with assistant():
            lm += select(OPTIONS, name="team") + "\n" + gen("why", max_tokens=8)
        return lm

    fake.push(
        Reply.text('"technical"', token_logprobs=TEAM_TOKENS),
        Reply.text("Routers.", token_logprobs=[("Rout", -0.2), ("ers.", -0.1)]),
    )
    scored = run(make_model(logprobs=True))
    assert scored.log_prob("team") is not None and scored.log_prob("why") == pytest.approx(-0.3)
    before = len(fake.requests)

    fake.push(
        REFUSED,
        Reply.text('"technical"', token_logprobs=TEAM_TOKENS),
        Reply.text("Routers.", token_logprobs=[("Rout", -0.2), ("ers.", -0.1)]),
    )
    with pytest.warns(UnsupportedFeatureWarning, match="logprobs"):
        refused = run(make_model(logprobs=True))
    assert len(fake.requests) - before == 3  # the refusal, then each part once, without logprobs
    assert all("logprobs" not in body for body in fake.requests[-2:])
    assert str(refused) == str(scored)
    assert (refused["team"], refused["why"]) == (scored["team"], scored["why"])
    assert refused.log_prob("team") is None and refused.log_prob("why") is None
    assert option_probs(refused, "team") is None


def test_logprobs_switched_off_gives_none(fake, make_model) -> None:
    fake.push(Reply.text('"technical"', token_logprobs=TEAM_TOKENS))
    lm = ask(make_model(logprobs=False))
    with assistant():
        lm += select(OPTIONS, name="team")
    assert "logprobs" not in fake.last
    assert lm["team"] == "technical" and lm.log_prob("team") is None and option_probs(lm, "team") is None


def test_option_probs_refuses_what_it_cannot_answer(fake, make_model) -> None:
    fake.push(Reply.text("hi"))
    lm = ask(make_model())
    with assistant():
        lm += gen("g", max_tokens=2)
    with pytest.raises(InvalidProgramError, match="no capture named 'nope'"):
        option_probs(lm, "nope")
    assert option_probs(lm, "g") is None
    with pytest.raises(ConfigurationError):
        option_probs(object(), "g")
    with pytest.raises(ConfigurationError):
        option_probs(lm, "g", max_requests=0)
    assert guidance_deepinfra.option_probs is option_probs


# ----------------------------------------------------------------------------- the grammar path's hook


def recorded(*pairs: tuple[str, float]) -> RequestTokens:
    request = RequestTokens()
    for text, lp in pairs:
        request.add_chunk(text, {"content": [{"token": text, "logprob": lp, "top_logprobs": []}]})
    return request


def test_a_repaired_answer_counts_each_request_only_where_it_was_kept() -> None:
    # Request 1 wrote "(3+4)x12"; only "(3+4)" was kept and request 2 continued with "*12".
    first = recorded(("(3", -0.1), ("+4)", -0.2), ("x12", -3.0))
    second = recorded(("*", -0.4), ("12", -0.5))
    pieces = [Piece(0, 5, first), Piece(5, 8, second)]
    assert pieces_log_prob((0, 8), pieces) == pytest.approx(-1.2)  # "x12" was thrown away: not counted
    assert pieces_log_prob((5, 8), pieces) == pytest.approx(-0.9)
    assert pieces_log_prob((5, 8), [Piece(0, 5, first), Piece(5, 8, None)]) is None
    assert pieces_log_prob((0, 3), [Piece(0, 5, first), Piece(5, 8, None)]) == pytest.approx(-0.3)


def test_grammar_captures_are_placed_where_their_rule_closed() -> None:
    # "Name: " was forced (prefilled); the model wrote "Ann, age 7" from byte 6 on.
    answer = "Name: Ann, age 7"
    reply = recorded(("Ann", -0.3), (",", -0.1), (" age", -0.2), (" 7", -0.6))
    pieces = [Piece(6, len(answer), reply)]
    captures = {"name": "Ann", "age": "7", "digits": ["7"]}
    ends = {"name": 10, "age": 16, "digits": [16]}
    assert grammar_capture_log_probs(answer, captures, ends, pieces) == {
        "name": pytest.approx(-0.3),
        "age": pytest.approx(-0.6),
        "digits": [pytest.approx(-0.6)],
    }
    # A value the answer does not hold (text the grammar inserted) cannot be placed.
    assert grammar_capture_log_probs(answer, {"x": "Bob"}, {"x": 16}, pieces) == {"x": None}


@pytest.mark.slow  # a hypothesis search
@settings(max_examples=150, deadline=None)
@given(
    options=st.lists(st.text('abcé" ', min_size=1, max_size=6), min_size=2, max_size=5, unique=True),
    pick=st.integers(0, 4),
    cuts=st.lists(st.integers(1, 30), max_size=6),
    logprobs=st.lists(st.floats(-6, 0), min_size=40, max_size=40),
)
def test_option_distribution_on_any_tokenization(options, pick, cuts, logprobs) -> None:
    """Whatever the options and however the answer is cut into tokens, the chosen option scores exactly its
    tokens from the divergence on, and an option listed whole where it leaves the answer gets that value."""
    chosen = options[pick % len(options)]
    answer = json.dumps(chosen, ensure_ascii=False).encode()
    diverge = 1 + _common_prefix_length([encoded_option(o, quoted=True) for o in options])
    assert diverge < len(answer)  # distinct options differ at the latest at the closing quote
    edges = [0, *sorted({c for c in cuts if c < len(answer)} | {diverge}), len(answer)]
    pieces = [answer[a:b] for a, b in zip(edges, edges[1:], strict=False) if b > a]
    lps = iter(logprobs)
    tokens = []
    position = 0
    for piece in pieces:
        top: tuple[tuple[bytes, float], ...] = ()
        if position == diverge:  # list every other option, whole, as the alternatives at the divergence
            top = tuple((encoded_option(o, quoted=True)[position - 1 :], -3.0) for o in options if o != chosen)
        tokens.append(TokenScore(piece, next(lps), top))
        position += len(piece)
    scores = option_distribution(
        tokens, start=1, chosen_end=len(answer), chosen=chosen, options=options, quoted=True, enforced=True
    )
    assert scores is not None and list(scores) == options
    first = next(i for i, t in enumerate(tokens) if sum(len(x.data) for x in tokens[: i + 1]) > diverge)
    assert scores[chosen].prob == pytest.approx(math.exp(sum(t.logprob for t in tokens[first:])))
    assert not scores[chosen].bound
    for option in options:
        assert 0.0 <= scores[option].prob <= 1.0
        if option == chosen:
            continue
        shared = 1 + _common_prefix_length([encoded_option(option, quoted=True), encoded_option(chosen, quoted=True)])
        if shared == diverge:  # it leaves the answer at the divergence, where it is listed whole
            assert scores[option].prob == pytest.approx(math.exp(-3.0)) and not scores[option].bound
        else:  # it follows the answer further: what the answer's later tokens leave unshown may add to it
            assert scores[option].prob >= math.exp(-3.0) - 1e-12


def test_exact_mode_for_a_json_enum_field_continues_the_document(fake, make_model) -> None:
    script = [('{"team": "', -0.1), ("sales", -0.7, {"sales": -0.7, "tech": -0.9}), ('", "priority": 2}', -0.2)]
    fake.push(Reply.text('{"team": "sales", "priority": 2}', token_logprobs=script))
    lm = ask(make_model(logprobs=True))
    with assistant():
        lm += guidance_json("ticket", schema=Ticket)
    fake.responder = lambda body: Reply.text(
        'sales"', token_logprobs=[('sales"', -0.6, {'sales"': -0.6, 'technical"': -1.0, 'billing"': -2.0})]
    )
    exact = option_probs(lm, "ticket", field="team", exact=True)
    assert {o: round(p.prob, 6) for o, p in exact.items()} == {
        "billing": round(math.exp(-2.0), 6),
        "technical": round(math.exp(-1.0), 6),
        "sales": round(math.exp(-0.6), 6),
    }
    [extra] = fake.requests[1:]
    assert extra["messages"][-1] == {"role": "assistant", "content": '{"team": "'}
    assert "response_format" not in extra and extra["max_tokens"] == 1


def test_pieces_follow_the_answer_through_trimming_repair_and_json_replies() -> None:
    reply = recorded(("(3", -0.1), ("+4)", -0.2), ("x12", -3.0))
    layouts = {"(3+4)x12": reply_pieces("(3+4)x12", "(3+4)x12", reply)}
    # Kept for repair: the valid start plus a byte the grammar inserted (probability 1, no piece).
    kept = carried_pieces(layouts, "(3+4)*")
    assert pieces_log_prob((0, 6), kept) == pytest.approx(-0.3)
    # One match inside the reply: its pieces move with it.
    inside = carried_pieces(layouts, "3+4")
    assert pieces_log_prob((0, 3), inside) == pytest.approx(-0.3)
    # Nothing to take it from: unknown, not free.
    assert pieces_log_prob((0, 2), carried_pieces({}, "42")) is None
    # A JSON-string reply: the text sits after the quote; an escape means the tokens spell other bytes.
    quoted = recorded(('"', -0.01), ("12", -0.5), ('"', -0.02))
    [piece] = reply_pieces("n=12", '"12"', quoted, decoded="12")
    assert pieces_log_prob((2, 4), [piece]) == pytest.approx(-0.5)
    escaped = recorded(('"', -0.01), ('a\\"b', -0.5), ('"', -0.02))
    assert pieces_log_prob((0, 3), reply_pieces('a"b', '"a\\"b"', escaped, decoded='a"b')) is None


# ----------------------------------------------------------------------------- regex and grammar captures

ARITHMETIC = r"""
start: expr
expr: term (("+" | "-") term)*
term: factor (("*" | "/") factor)*
factor: NUMBER | "(" expr ")"
NUMBER: /[0-9]+/
"""


def test_regex_capture_answered_as_a_json_string_scores_its_text_not_the_quotes(fake, make_model) -> None:
    script = [('"', -0.01), ("1969", -0.5), ("-07", -0.2), ("-20", -0.3), ('"', -0.02)]
    fake.push(Reply.text('"1969-07-20"', token_logprobs=script))
    lm = ask(make_model(logprobs=True), "When did Apollo 11 land?")
    with assistant():
        lm += gen("date", regex=r"\d{4}-\d{2}-\d{2}")
    assert fake.last["response_format"]["type"] == "json_schema"
    assert lm["date"] == "1969-07-20" and lm.log_prob("date") == pytest.approx(-1.0)
    assert len(fake.requests) == 1


def test_grammar_captures_in_one_answer_each_score_their_tokens(fake, make_model) -> None:
    script = [("Alice", -0.4), (",", -0.1), (" age", -0.2), (" 4", -0.3), ("2", -0.05)]
    fake.push(Reply.text("Alice, age 42", token_logprobs=script))
    lm = ask(make_model(logprobs=True, profile=ModelProfile(json_schema=False)), "Who?")
    with assistant():
        lm += "Name: " + gen("name", stop=",") + " age " + gen("age", regex=r"\d+")
    assert (lm["name"], lm["age"]) == ("Alice", "42")
    assert lm.log_prob("name") == pytest.approx(-0.4)
    assert lm.log_prob("age") == pytest.approx(-0.35)  # " 4" produced the capture's first byte


def test_grammar_list_append_captures(fake, make_model) -> None:
    fake.push(Reply.text("7,8", token_logprobs=[("7", -0.3), (",", -0.1), ("8", -0.6)]))
    lm = ask(make_model(logprobs=True, profile=ModelProfile(json_schema=False)), "Two digits?")
    with assistant():
        lm += gen("d", regex=r"\d", list_append=True) + "," + gen("d", regex=r"\d", list_append=True)
    assert lm["d"] == ["7", "8"] and lm.log_prob("d") == [pytest.approx(-0.3), pytest.approx(-0.6)]


def test_a_repaired_grammar_answer_counts_only_the_kept_and_continued_tokens(fake, make_model) -> None:
    fake.push(
        Reply.text("(3+4)x12", token_logprobs=[("(3", -0.1), ("+4)", -0.2), ("x12", -3.0)]),
        Reply.text("*12", token_logprobs=[("*", -0.4), ("12", -0.5)]),
    )
    lm = ask(make_model(logprobs=True), "Add three and four, then multiply by twelve.")
    with assistant():
        lm += lark(ARITHMETIC, name="expr")
    assert lm["expr"] == "(3+4)*12"
    assert fake.last["messages"][-1] == {"role": "assistant", "content": "(3+4)"}
    assert lm.log_prob("expr") == pytest.approx(-1.2)  # "x12" was thrown away; the kept "(3+4)" counts once


def test_grammar_captures_without_logprobs_are_none(fake, make_model) -> None:
    fake.push(Reply.text("n=42", token_logprobs=[("n=", -0.1), ("42", -0.3)]))
    lm = ask(make_model(logprobs=False, profile=ModelProfile(json_schema=False)), "n?")
    with assistant():
        lm += gen("n", regex=r"n=\d+")
    assert lm["n"] == "n=42" and lm.log_prob("n") is None
