"""``extract(..., confidence=True)``: each record carries every option's probability for its enum fields.

The fake server scripts the answer token by token with its logprobs (and the alternatives it lists), only
when a request asks for them; every expected number is computed by hand from that script. Both paths (the
fast one, not streamed, and the guidance program, streamed) run on the same script and must agree.
"""

from __future__ import annotations

import enum
import json
import math
import re
import threading
from pathlib import Path
from typing import Any

import pydantic
import pytest

from guidance_deepinfra import ConfigurationError, UnsupportedFeatureWarning, extract
from guidance_deepinfra.cli import main
from guidance_deepinfra.profile import ProfileRegistry
from guidance_deepinfra.testing import FakeDeepInfra, Reply

KEY = "sk-confidence-0123456789"


class Team(str, enum.Enum):
    billing = "billing"
    technical = "technical"
    sales = "sales"


class Ticket(pydantic.BaseModel):
    team: Team
    priority: int = pydantic.Field(ge=0)


# '{"team": "sales", "priority": 2}' token by token; at the option's first token the server lists "tech" too.
SALES = [
    ('{"team": "', -0.1),
    ("sales", -0.7, {"sales": -0.7, "tech": -0.9}),
    ('", "priority": ', -0.2),
    ("2", -0.4),
    ("}", -0.05),
]
# By hand: "sales" scores its own token and the one holding its closing quote; "tech" can only begin
# "technical" under the server's enforced enum; "billing" is not listed, so only the rest bounds it.
EXPECTED = {
    "team": {
        "sales": math.exp(-0.7 - 0.2),
        "technical": math.exp(-0.9),
        "billing": 1 - math.exp(-0.7) - math.exp(-0.9),
    }
}
REFUSED = Reply.error(
    422, {"detail": [{"loc": ["body", "logprobs"], "msg": "logprobs are not supported", "type": "value_error"}]}
)


def user_text(body: dict[str, Any]) -> str:
    return next(m["content"] for m in body["messages"] if m["role"] == "user")


def scripted(body: dict[str, Any]) -> Reply:
    return Reply.text("".join(t[0] for t in SALES), token_logprobs=SALES)


def approx(confidence: dict[str, dict[str, float]]) -> dict[str, dict[str, Any]]:
    return {field: {o: pytest.approx(p) for o, p in options.items()} for field, options in confidence.items()}


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def run(fake: FakeDeepInfra, inputs: Any, tmp_path: Path, *, fast: bool, **options: Any) -> Any:
    return extract(
        inputs,
        Ticket,
        model="test/model",
        api_key=KEY,
        base_url=fake.base_url,
        output=tmp_path / f"out-{fast}.jsonl",
        fast=fast,
        profiles=ProfileRegistry(),
        **options,
    )


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "guidance"])
def test_confidence_is_the_hand_computed_distribution_without_an_extra_request(tmp_path: Path, fast: bool) -> None:
    with FakeDeepInfra(scripted) as fake:
        results = run(fake, ["ticket one", "ticket two"], tmp_path, fast=fast, confidence=True, concurrency=1)
    assert results == [Ticket(team=Team.sales, priority=2)] * 2
    assert len(fake.requests) == 2  # one request per input: the numbers came with the answers
    assert all(b["logprobs"] is True and b["top_logprobs"] == 5 for b in fake.requests)
    assert [c == approx(EXPECTED) for c in results.confidence] == [True, True]
    written = records(tmp_path / f"out-{fast}.jsonl")
    assert [r["confidence"] == approx(EXPECTED) for r in written] == [True, True]
    assert written[0]["result"] == {"team": "sales", "priority": 2}


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "guidance"])
def test_off_by_default_no_logprobs_are_asked_and_records_have_no_confidence(tmp_path: Path, fast: bool) -> None:
    with FakeDeepInfra(scripted) as fake:
        results = run(fake, ["ticket"], tmp_path, fast=fast)
    assert results == [Ticket(team=Team.sales, priority=2)]
    assert "logprobs" not in fake.requests[0] and "top_logprobs" not in fake.requests[0]
    assert results.confidence == [None]
    assert "confidence" not in records(tmp_path / f"out-{fast}.jsonl")[0]


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "guidance"])
def test_a_model_that_refuses_logprobs_gives_no_confidence_and_nothing_else_changes(tmp_path: Path, fast: bool) -> None:
    def refusing(body: dict[str, Any]) -> Reply:
        return REFUSED if "logprobs" in body else scripted(body)

    with FakeDeepInfra(refusing) as fake, pytest.warns(UnsupportedFeatureWarning, match="logprobs"):
        results = run(fake, ["ticket one", "ticket two"], tmp_path, fast=fast, confidence=True, concurrency=1)
    assert results == [Ticket(team=Team.sales, priority=2)] * 2 and not results.failures
    assert results.confidence == [None, None]
    # Refused once, resent without logprobs at once; the second input asks no more (the profile learned it).
    assert ["logprobs" in b for b in fake.requests] == [True, False, False]
    written = records(tmp_path / f"out-{fast}.jsonl")
    assert [r["confidence"] for r in written] == [None, None]
    assert [r["result"] for r in written] == [{"team": "sales", "priority": 2}] * 2


def test_a_rerun_returns_the_stored_confidence_without_a_request(tmp_path: Path) -> None:
    with FakeDeepInfra(scripted) as fake:
        first = run(fake, ["ticket"], tmp_path, fast=True, confidence=True)
        again = run(fake, ["ticket"], tmp_path, fast=True, confidence=True)
        plain = run(fake, ["ticket"], tmp_path, fast=True)
    assert len(fake.requests) == 1 and again.resumed == plain.resumed == 1
    assert first.confidence == again.confidence and again.confidence[0] == approx(EXPECTED)
    assert plain.confidence == [None]  # not asked for this run


def test_a_failed_input_has_no_confidence_and_logprobs_false_is_refused(tmp_path: Path) -> None:
    def off_schema(body: dict[str, Any]) -> Reply:
        if "bad" in user_text(body):
            return Reply.text('{"team": "sales", "priority": -1}')
        return scripted(body)

    with FakeDeepInfra(off_schema) as fake:
        results = run(fake, ["bad", "good"], tmp_path, fast=True, confidence=True, max_attempts=1)
        with pytest.raises(ConfigurationError, match="logprobs"):
            run(fake, ["good"], tmp_path, fast=True, confidence=True, logprobs=False)
        with pytest.raises(ConfigurationError, match="confidence"):
            run(fake, ["good"], tmp_path, fast=True, confidence="yes")
    assert results.failures and results.confidence[0] is None
    assert results.confidence[1] == approx(EXPECTED)
    assert len(fake.requests) == 2  # the refused calls sent nothing


# ----------------------------------------------------------------------------- both paths alike


class Scripted:
    """``team=T priority=N`` answered token by token; ``long`` inputs are cut by the length limit after the
    team's value and continued; a negative priority is off-schema; ``*/no-schema`` refuses json_schema."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> Reply:
        fmt = (body.get("response_format") or {}).get("type")
        if body["model"].endswith("/no-schema") and fmt == "json_schema":
            return Reply.unsupported("Response format json_schema", body["model"])
        match = re.search(r"team=(\w+) priority=(-?\d+)", user_text(body))
        assert match
        team, priority = match.groups()
        rival = "bill" if team != "billing" else "tech"
        head = [('{"team": "', -0.1), (team[:4], -0.3, {team[:4]: -0.3, rival: -1.6}), (team[4:] + '", ', -0.05)]
        tail = [('"priority": ', -0.2), (priority, -0.4), ("}", -0.01)]
        if "long" in user_text(body):
            last = body["messages"][-1]
            if last["role"] == "assistant":
                return Reply.text("".join(t[0] for t in tail), token_logprobs=tail)
            return Reply.text("".join(t[0] for t in head), finish_reason="length", token_logprobs=head)
        return Reply.text("".join(t[0] for t in head + tail), token_logprobs=head + tail)


BOTH_INPUTS = {
    "a": "team=sales priority=3",
    "b": "team=technical priority=1 long",
    "c": "team=billing priority=-1",
    "d": "team=billing priority=0",
}


# The model without json_schema runs both paths through the fallback: slow, the first model stays quick.
@pytest.mark.parametrize("model", ["test/model", pytest.param("test/no-schema", marks=pytest.mark.slow)])
def test_both_paths_give_the_same_confidence_records(tmp_path: Path, model: str) -> None:
    runs = {}
    for fast in (True, False):
        with FakeDeepInfra(Scripted()) as fake:
            out = tmp_path / f"out-{fast}.jsonl"
            results = extract(
                BOTH_INPUTS,
                Ticket,
                model=model,
                api_key=KEY,
                base_url=fake.base_url,
                concurrency=1,
                max_attempts=2,
                output=out,
                fast=fast,
                confidence=True,
                profiles=ProfileRegistry(),
            )
            bodies = sorted(
                ({k: v for k, v in b.items() if k != "stream"} for b in fake.requests),
                key=lambda b: json.dumps(b, sort_keys=True),
            )
            runs[fast] = (results, sorted(records(out), key=lambda r: r["id"]), bodies)
    (fast_results, fast_records, fast_bodies), (slow_results, slow_records, slow_bodies) = runs[True], runs[False]
    assert fast_bodies == slow_bodies
    assert [r["id"] for r in fast_records] == ["a", "b", "d"]  # "c" failed on both
    for one, other in zip(fast_records, slow_records, strict=True):
        assert one["id"] == other["id"] and one["result"] == other["result"]
        assert one["confidence"] == approx(other["confidence"])
    assert [c is None for c in fast_results.confidence] == [c is None for c in slow_results.confidence]
    by_id = dict(zip(fast_results.ids, fast_results.confidence, strict=True))
    assert by_id["c"] is None
    team = by_id["a"]["team"]
    assert team["sales"] == pytest.approx(math.exp(-0.3 - 0.05))  # "sale" and `s", ` (which holds the closing quote)
    if model == "test/model":  # enforced enum: "bill" can only begin billing
        assert team["billing"] == pytest.approx(math.exp(-1.6))
    assert by_id["b"]["team"]["technical"] == pytest.approx(math.exp(-0.3 - 0.05))  # continued after the field


# ----------------------------------------------------------------------------- the command


def test_the_cli_writes_confidence_with_the_flag_and_not_without(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DEEPINFRA_API_KEY", KEY)
    (tmp_path / "schema.json").write_text(json.dumps(Ticket.model_json_schema()), encoding="utf-8")
    (tmp_path / "in.jsonl").write_text('{"id": "t1", "text": "ticket"}\n', encoding="utf-8")
    with FakeDeepInfra(scripted) as fake:
        for flag, out in (([], "plain.jsonl"), (["--confidence"], "scored.jsonl")):
            argv = [
                "extract", "--schema", str(tmp_path / "schema.json"), "--input", str(tmp_path / "in.jsonl"),
                "--output", str(tmp_path / out), "--base-url", fake.base_url, "--model", "test/model",
                "--no-progress", *flag,
            ]  # fmt: skip
            assert main(argv) == 0
    plain, scored = records(tmp_path / "plain.jsonl")[0], records(tmp_path / "scored.jsonl")[0]
    assert "confidence" not in plain and "logprobs" not in fake.requests[0]
    assert scored["confidence"] == approx(EXPECTED) and fake.requests[1]["logprobs"] is True
    assert plain["result"] == scored["result"] == {"team": "sales", "priority": 2}
    assert len(fake.requests) == 2
