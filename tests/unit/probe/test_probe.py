"""`guidance-deepinfra probe` against fake servers that behave each way DeepInfra might.

Every test runs the real command over real HTTP against a loopback server whose behaviour is set in
`probe_servers`, then reads the printed table and the profile file, and loads that file into models.
A whole probe run takes about a second of streamed requests: all but one of those runs carry the slow mark,
so `-m "not slow"` still runs the probe end to end once.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from probe_servers import CONTEXT_MESSAGE, KEYWORDS, Behaviour, by_model

from guidance_deepinfra import DeepInfra, ModelProfile
from guidance_deepinfra.cli import main
from guidance_deepinfra.errors import ConfigurationError
from guidance_deepinfra.probe import REASONING_CHECKS, ROWS, requests_per_model
from guidance_deepinfra.probe.checks import KEYWORD_CASES
from guidance_deepinfra.profile import PROFILES, ProfileRegistry, declare_profiles, load_profile, load_profiles
from guidance_deepinfra.testing import FakeDeepInfra

MODEL = "probe/model-a"
LABELS = dict(ROWS)


def plain() -> int:
    """The requests sent to a model that does not reason (no reasoning checks)."""
    return requests_per_model() - REASONING_CHECKS


def measured(**fields: Any) -> ModelProfile:
    """The profile the probe writes for a model that showed no reasoning."""
    return ModelProfile(reasoning="none", **fields)


@dataclass
class ProbeRun:
    code: int
    out: str
    err: str
    table: dict[str, list[str]]
    data: dict[str, Any]
    requests: int


def parse_table(out: str) -> dict[str, list[str]]:
    rows = {}
    for line in out.splitlines():
        if line.startswith("| ") and not line.startswith("| fact |"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            rows[cells[0]] = cells[1:]
    return rows


def probe(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    behaviours: dict[str, Behaviour],
    *extra: str,
) -> ProbeRun:
    output = tmp_path / "profiles.json"
    with FakeDeepInfra(by_model(behaviours)) as server:
        monkeypatch.setenv("DEEPINFRA_API_KEY", "probe-test-key")
        monkeypatch.setenv("DEEPINFRA_BASE_URL", server.base_url)
        code = main(["probe", *behaviours, "--output", str(output), *extra])
        sent = len(server.requests)
    captured = capsys.readouterr()
    data = json.loads(output.read_text()) if output.exists() else {}
    return ProbeRun(code, captured.out, captured.err, parse_table(captured.out), data, sent)


def cell(run: ProbeRun, key: str, column: int = 0) -> str:
    return run.table[LABELS[key]][column]


def test_a_server_that_enforces_every_keyword(tmp_path, monkeypatch, capsys) -> None:
    run = probe(tmp_path, monkeypatch, capsys, {MODEL: Behaviour(regex="enforce")}, "--yes")
    assert run.code == 0, run.err
    for name in KEYWORD_CASES:
        assert cell(run, f"keyword:{name}") == "enforced", name
    assert cell(run, "json_object") == "accepted"
    assert cell(run, "json_schema") == "accepted"
    assert cell(run, "strict") == "accepted"
    assert cell(run, "regex_format") == "accepted, enforced"
    assert cell(run, "continuation") == "continued byte-exactly"
    assert cell(run, "continuation_with_format") == "continued byte-exactly"
    assert cell(run, "stop_limit") == "16 (a 17th stop is refused (422: stop: List should have at most 16 items))"
    assert cell(run, "logprobs").startswith("accepted, ")
    assert cell(run, "top_logprobs") == "accepted, up to 3 alternative(s) per token"
    assert cell(run, "tools") == "accepted, tool called"
    assert cell(run, "streamed_cost") == "present ($2.5e-06)"
    assert cell(run, "context_error") == f"400: {CONTEXT_MESSAGE}", "the exact wording is kept"
    assert run.requests == plain()
    entry = run.data["models"][MODEL]
    assert entry["profile"] == vars(measured(regex_format=True))
    assert entry["measured"]["context_error"]["detail"] == "the plugin reads it as ContextLengthError"
    assert entry["requests"] == run.requests
    # every answered request's streamed estimated_cost: 21 text answers and one tool call (42 tokens at 1e-7)
    assert entry["estimated_cost_usd"] == pytest.approx(2.5e-06 * (run.requests - 3) + 4.2e-06, rel=0.01)
    assert load_profile(tmp_path / "profiles.json", MODEL) == measured(regex_format=True)
    assert "probe-test-key" not in (tmp_path / "profiles.json").read_text() + run.out + run.err


@pytest.mark.slow
def test_a_server_that_ignores_every_keyword_and_the_regex(tmp_path, monkeypatch, capsys) -> None:
    behaviour = Behaviour(enforced=frozenset(), regex="ignore")
    run = probe(tmp_path, monkeypatch, capsys, {MODEL: behaviour}, "--yes")
    assert run.code == 0, run.err
    for name in KEYWORD_CASES:
        assert cell(run, f"keyword:{name}") == "not enforced", name
    assert cell(run, "regex_format") == "accepted, not enforced"
    assert run.data["models"][MODEL]["profile"]["regex_format"] is False
    # each keyword request carried its adversarial prompt and the keyword in its schema
    keyword_requests = [b for b in behaviour.requests if "exactly this JSON" in b["messages"][-1]["content"]]
    assert len(keyword_requests) == len(KEYWORD_CASES)
    for body, (schema, violating) in zip(keyword_requests, KEYWORD_CASES.values(), strict=True):
        assert body["response_format"]["json_schema"]["schema"] == schema
        assert json.dumps(violating) in body["messages"][-1]["content"]


@pytest.mark.slow
def test_a_server_enforcing_some_keywords_is_told_apart(tmp_path, monkeypatch, capsys) -> None:
    held = frozenset({"enum", "required", "minimum", "maximum"})
    run = probe(tmp_path, monkeypatch, capsys, {MODEL: Behaviour(enforced=held)}, "--yes")
    verdicts = {name: cell(run, f"keyword:{name}") for name in KEYWORD_CASES}
    assert verdicts == {
        name: ("enforced" if name in ("enum", "required", "minimum/maximum") else "not enforced")
        for name in KEYWORD_CASES
    }
    unresolved = Behaviour(enforced=frozenset(KEYWORDS) - {"$ref"})
    run = probe(tmp_path, monkeypatch, capsys, {MODEL: unresolved}, "--yes")
    assert cell(run, "keyword:$ref") == "not enforced"
    assert cell(run, "keyword:enum") == "enforced"


@pytest.mark.slow
def test_a_server_refusing_json_object_with_405(tmp_path, monkeypatch, capsys) -> None:
    run = probe(tmp_path, monkeypatch, capsys, {MODEL: Behaviour(json_object=False)}, "--yes")
    assert cell(run, "json_object") == f"refused (405: json_object response format is not supported for model: {MODEL})"
    assert cell(run, "continuation_with_format") == "continued byte-exactly"  # measured with json_schema instead
    profile = load_profile(tmp_path / "profiles.json", MODEL)
    assert profile == measured(json_object=False)


def test_a_server_refusing_json_schema_measures_no_keyword(tmp_path, monkeypatch, capsys) -> None:
    run = probe(tmp_path, monkeypatch, capsys, {MODEL: Behaviour(json_schema=False, strict=False)}, "--yes")
    assert cell(run, "json_schema").startswith("refused (405: json_schema response format")
    assert all(cell(run, f"keyword:{n}") == "not measured (json_schema refused)" for n in KEYWORD_CASES)
    assert run.requests == plain() - len(KEYWORD_CASES)
    assert run.data["models"][MODEL]["profile"]["json_schema"] is False


@pytest.mark.slow
def test_strict_refused_and_the_keywords_then_sent_without_it(tmp_path, monkeypatch, capsys) -> None:
    behaviour = Behaviour(strict=False)
    run = probe(tmp_path, monkeypatch, capsys, {MODEL: behaviour}, "--yes")
    assert cell(run, "strict") == "refused (422: response_format.json_schema.strict: Extra inputs are not permitted)"
    assert cell(run, "keyword:enum") == "enforced"
    with_strict = [b for b in behaviour.requests if b.get("response_format", {}).get("json_schema", {}).get("strict")]
    assert len(with_strict) == 1, "only the strict check itself sends strict once it is refused"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("limit", "overflow", "expected"),
    [
        (4, "refuse", "4 (a 5th stop is refused (422: stop: List should have at most 4 items))"),
        (4, "ignore", "4 (a 5th stop is ignored)"),
        (16, "ignore", "16 (a 17th stop is ignored)"),
        (64, "refuse", "more than 16"),
    ],
)
def test_the_stop_limit(tmp_path, monkeypatch, capsys, limit: int, overflow: str, expected: str) -> None:
    run = probe(tmp_path, monkeypatch, capsys, {MODEL: Behaviour(stop_limit=limit, stop_overflow=overflow)}, "--yes")
    assert cell(run, "stop_limit") == expected
    assert run.data["models"][MODEL]["measured"]["stop_limit"]["value"] == expected


@pytest.mark.slow
def test_a_model_answering_a_prefix_as_a_new_turn(tmp_path, monkeypatch, capsys) -> None:
    run = probe(tmp_path, monkeypatch, capsys, {MODEL: Behaviour(continuation=False)}, "--yes")
    assert cell(run, "continuation") == "new turn (prefix ignored)"
    assert cell(run, "continuation_with_format") == "new turn (prefix ignored)"
    assert load_profile(tmp_path / "profiles.json", MODEL).continuation is False


@pytest.mark.slow
def test_no_logprobs_no_tools_no_streamed_cost_no_regex(tmp_path, monkeypatch, capsys) -> None:
    behaviour = Behaviour(logprobs=False, tools=False, streamed_cost=False, regex="refuse")
    run = probe(tmp_path, monkeypatch, capsys, {MODEL: behaviour}, "--yes")
    assert cell(run, "logprobs") == f"refused (405: logprobs is not supported for model: {MODEL})"
    assert cell(run, "tools") == f"refused (405: Tool calling is not supported for model: {MODEL})"
    assert cell(run, "streamed_cost") == "absent from usage"
    assert cell(run, "regex_format").startswith("refused (422: response_format: Input tag 'regex'")
    assert load_profile(tmp_path / "profiles.json", MODEL) == measured(logprobs=False, tools=False)


@pytest.mark.slow
def test_top_logprobs_without_alternatives(tmp_path, monkeypatch, capsys) -> None:
    run = probe(tmp_path, monkeypatch, capsys, {MODEL: Behaviour(top_logprobs=False)}, "--yes")
    assert cell(run, "logprobs").startswith("accepted, ")
    assert cell(run, "top_logprobs") == "accepted, no alternatives returned"
    assert load_profile(tmp_path / "profiles.json", MODEL).logprobs is False


@pytest.mark.slow
def test_several_models_get_a_column_and_a_profile_each(tmp_path, monkeypatch, capsys) -> None:
    other = "probe/model-b"
    run = probe(tmp_path, monkeypatch, capsys, {MODEL: Behaviour(), other: Behaviour(json_object=False)}, "--yes")
    assert run.code == 0
    assert run.out.count(f"| {MODEL} | {other} |") == 1
    assert cell(run, "json_object", 0) == "accepted"
    assert cell(run, "json_object", 1).startswith("refused (405")
    assert run.requests == 2 * plain()
    profiles = load_profiles(tmp_path / "profiles.json")
    assert profiles == {MODEL: measured(), other: measured(json_object=False)}


@pytest.mark.slow
def test_a_second_run_adds_to_the_profile_file(tmp_path, monkeypatch, capsys) -> None:
    probe(tmp_path, monkeypatch, capsys, {MODEL: Behaviour()}, "--yes")
    probe(tmp_path, monkeypatch, capsys, {"probe/model-c": Behaviour(tools=False)}, "--yes")
    assert set(load_profiles(tmp_path / "profiles.json")) == {MODEL, "probe/model-c"}


@pytest.mark.slow
def test_the_plan_is_shown_and_nothing_is_sent_without_a_yes(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    run = probe(tmp_path, monkeypatch, capsys, {MODEL: Behaviour()})
    assert run.code == 1
    assert run.requests == 0 and not run.data
    assert f"at most {requests_per_model()} requests" in run.out
    assert "estimated cost at most $" in run.out
    assert "nothing was sent" in run.out

    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    assert probe(tmp_path, monkeypatch, capsys, {MODEL: Behaviour()}).requests == 0

    monkeypatch.setattr("sys.stdin", None)
    assert probe(tmp_path, monkeypatch, capsys, {MODEL: Behaviour()}).requests == 0

    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    run = probe(tmp_path, monkeypatch, capsys, {MODEL: Behaviour()})
    assert run.code == 0 and run.requests == plain()
    assert run.out.index("estimated cost at most") < run.out.index("| fact |")


def test_the_cost_estimate_follows_the_price(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    cheap = probe(tmp_path, monkeypatch, capsys, {MODEL: Behaviour()}, "--price-per-million", "1")
    dear = probe(tmp_path, monkeypatch, capsys, {MODEL: Behaviour()}, "--price-per-million", "10")

    def estimate(out: str) -> float:
        return float(out.split("estimated cost at most $", 1)[1].split()[0])

    assert estimate(dear.out) == pytest.approx(10 * estimate(cheap.out), rel=0.01)
    assert estimate(cheap.out) > 0


def test_no_key_no_request(tmp_path, monkeypatch, capsys) -> None:
    with FakeDeepInfra() as server:
        monkeypatch.setenv("DEEPINFRA_BASE_URL", server.base_url)
        assert main(["probe", MODEL, "--yes", "--output", str(tmp_path / "p.json")]) == 2
        assert not server.requests
    assert "DEEPINFRA_API_KEY" in capsys.readouterr().err
    assert not (tmp_path / "p.json").exists()


@pytest.mark.slow
def test_an_unknown_model_is_reported_and_the_others_probed(tmp_path, monkeypatch, capsys) -> None:
    from guidance_deepinfra.testing import Reply

    known = by_model({MODEL: Behaviour()})

    def server(body: dict[str, Any]) -> Reply:
        if body["model"] == "probe/missing":
            return Reply.error(404, {"detail": "Model is not available"})
        return known(body)

    output = tmp_path / "p.json"
    with FakeDeepInfra(server) as fake:
        monkeypatch.setenv("DEEPINFRA_API_KEY", "probe-test-key")
        monkeypatch.setenv("DEEPINFRA_BASE_URL", fake.base_url)
        code = main(["probe", "probe/missing", MODEL, "--yes", "--output", str(output)])
        missing = [b for b in fake.requests if b["model"] == "probe/missing"]
    out = capsys.readouterr().out
    assert code == 1
    assert len(missing) == 1, "an unknown model costs one request, not the whole series"
    assert "ModelNotFoundError: Model is not available" in out
    assert set(load_profiles(output)) == {MODEL}


@pytest.mark.slow
def test_a_probe_file_feeds_deepinfra_and_declare_profile(tmp_path, monkeypatch, capsys, fake) -> None:
    """The measured profile is used as it stands: the model never spends a request learning it again."""
    from guidance import assistant, user

    from guidance_deepinfra import json as json_gen
    from guidance_deepinfra.testing import Reply

    probe(tmp_path, monkeypatch, capsys, {MODEL: Behaviour(json_object=False)}, "--yes")
    path = tmp_path / "profiles.json"
    lm = DeepInfra(
        MODEL, api_key="k", base_url=fake.base_url, profile=load_profile(path, MODEL), profiles=ProfileRegistry()
    )
    fake.push(Reply.text('{"a": 1}'))
    with user():
        lm += "Give an object."
    with assistant():
        lm += json_gen("answer")
    assert len(fake.requests) == 1, "no request was spent on a json_object the probe found refused"
    assert fake.last["response_format"]["type"] == "json_schema"

    try:
        assert declare_profiles(path) == [MODEL]
        assert PROFILES.get(MODEL) == measured(json_object=False)
    finally:
        PROFILES.forget(MODEL)
        PROFILES._declared.pop(MODEL, None)


def test_a_file_that_is_not_a_probe_file_is_refused(tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"models": {}}')
    with pytest.raises(ConfigurationError, match="not a profile file"):
        load_profiles(bad)
    bad.write_text(json.dumps({"format": "guidance-deepinfra probe 1", "models": {"m": {"profile": {"tools": "no"}}}}))
    with pytest.raises(ConfigurationError, match="non-boolean"):
        load_profiles(bad)
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_profiles(tmp_path / "missing.json")
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"format": "guidance-deepinfra probe 1", "models": {"m": {"profile": {"future": 1}}}}))
    assert load_profile(good, "m") == ModelProfile()
    with pytest.raises(ConfigurationError, match="no profile for 'other'"):
        load_profile(good, "other")


@pytest.mark.parametrize(
    ("shape", "seen"),
    [
        ("field", "reasoning_content field"),
        ("inline", "inline <think>...</think>"),
        ("closing", "inline, closing </think> only"),
    ],
)
def test_a_reasoning_model_is_measured_and_its_later_checks_read_answers(tmp_path, monkeypatch, capsys, shape, seen):
    behaviour = Behaviour(reasoning=shape)
    run = probe(tmp_path, monkeypatch, capsys, {MODEL: behaviour}, "--yes")
    assert run.code == 0, run.err
    assert cell(run, "reasoning") == seen
    assert cell(run, "reasoning_off") == "turns it off"
    assert cell(run, "reasoning_with_format") == "applied to the answer after the reasoning"
    assert cell(run, "reasoning_continuation") == "continued byte-exactly, after reasoning"
    assert run.table["later checks sent with"][0] == "reasoning_effort=none"
    # with 48 max_tokens and the reasoning on, every later answer would be a budget spent thinking
    assert all(cell(run, f"keyword:{name}") == "enforced" for name in KEYWORD_CASES)
    assert cell(run, "continuation") == "continued byte-exactly"
    assert run.requests == requests_per_model()
    expected = "field" if shape == "field" else "inline"
    assert load_profile(tmp_path / "profiles.json", MODEL) == ModelProfile(reasoning=expected)  # type: ignore[arg-type]


def test_a_model_whose_reasoning_cannot_be_turned_off_gets_room_for_it(tmp_path, monkeypatch, capsys) -> None:
    behaviour = Behaviour(reasoning="inline", reasoning_off=False, format_after_reasoning=False)
    run = probe(tmp_path, monkeypatch, capsys, {MODEL: behaviour}, "--yes")
    assert cell(run, "reasoning_off") == "reasoning still sent"
    assert cell(run, "reasoning_with_format") == "JSON at once, no reasoning"
    assert run.table["later checks sent with"][0] == "max_tokens=512"
    assert cell(run, "continuation") == "continued byte-exactly"
    assert cell(run, "stop_limit").startswith("16 ")
    later = behaviour.requests[1 + REASONING_CHECKS :]
    assert all(b["max_tokens"] >= 512 for b in later)


def test_a_model_that_does_not_reason_is_sent_no_reasoning_check(tmp_path, monkeypatch, capsys) -> None:
    behaviour = Behaviour()
    run = probe(tmp_path, monkeypatch, capsys, {MODEL: behaviour}, "--yes")
    assert cell(run, "reasoning") == "none seen"
    assert cell(run, "reasoning_off") == "not measured (the model did not reason)"
    assert run.table["later checks sent with"][0] == "nothing added"
    assert not any("reasoning_effort" in b for b in behaviour.requests)
    assert all(b["max_tokens"] == 48 for b in behaviour.requests[1:] if b["max_tokens"] < 10_000)
