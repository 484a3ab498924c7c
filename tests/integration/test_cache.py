"""The request cache through `DeepInfra(cache=...)`: the real openai SDK over real HTTP to the loopback fake
server, requests counted where they arrive (the fake server), the cache file read back with sqlite3.

Each test runs a program, then runs it again on a new model object (a re-run: a new script, a re-executed
notebook) and checks what the second run sent and got.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest
from guidance import assistant, gen, select, user
from guidance import json as guidance_json

from guidance_deepinfra import ConstraintError, ProtocolError, extract, option_probs
from guidance_deepinfra.cache.store import ENV_VARIABLE, default_path
from guidance_deepinfra.cli import main
from guidance_deepinfra.testing import FakeDeepInfra, Reply

CACHE_KEY = "sk-test-cache-0123456789-SECRET"
SIMPLE = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}


def ask(lm, question: str = "Name a colour."):
    with user():
        lm += question
    return lm


def colour(lm, **kwargs):
    lm = ask(lm)
    with assistant():
        lm += gen("c", max_tokens=8, **kwargs)
    return lm


def stored_answers(path: Path) -> list[bytes]:
    with sqlite3.connect(path) as connection:
        blobs = [row[0] for row in connection.execute("SELECT answer FROM answers")]
    return [blob if blob[:1] == b"{" else zlib.decompress(blob) for blob in blobs]


def test_a_second_run_is_answered_from_the_cache_with_no_request(fake, make_model, tmp_path) -> None:
    path = tmp_path / "c.sqlite3"
    fake.push(Reply.text("Blue.", prompt_tokens=11, completion_tokens=2))
    first = colour(make_model(cache=path))
    assert first["c"] == "Blue." and len(fake.requests) == 1
    assert first.usage.calls == 1 and first.usage.cached_calls == 0
    second = colour(make_model(cache=path))
    assert second["c"] == "Blue." and len(fake.requests) == 1  # nothing sent
    assert second.usage.calls == 0 and second.usage.cached_calls == 1
    assert second.usage.estimated_cost == 0 and second.usage.saved_cost == pytest.approx(first.usage.estimated_cost)
    assert second.usage.prompt_tokens == 0 and "request cache: 1 call(s)" in second.usage.summary()
    assert second.transport.stats.requests == 0 and second.transport.stats.cache_hits == 1
    # Another prompt, another base URL path or another model is another request: a miss.
    fake.push(Reply.text("Green."))
    other = make_model(cache=path)
    with user():
        other += "Name a tree."
    with assistant():
        other += gen("c", max_tokens=8)
    assert other["c"] == "Green." and len(fake.requests) == 2
    fake.push(Reply.text("Red."))
    assert colour(make_model("test/other-model", cache=path))["c"] == "Red." and len(fake.requests) == 3


def test_without_the_cache_every_run_pays(fake, make_model, tmp_path) -> None:
    fake.push(Reply.text("Blue."), Reply.text("Blue."))
    colour(make_model())
    colour(make_model(cache=False))
    assert len(fake.requests) == 2


def test_sampled_calls_replay_in_their_order_and_a_further_one_goes_live(fake, make_model, tmp_path) -> None:
    path = tmp_path / "c.sqlite3"
    fake.push(Reply.text("Amber."), Reply.text("Teal."), Reply.text("Ochre."))
    lm = make_model(cache=path)
    first = [colour(lm, temperature=0.9)["c"] for _ in range(3)]
    assert first == ["Amber.", "Teal.", "Ochre."] and len(fake.requests) == 3
    assert len({json.dumps(r, sort_keys=True) for r in fake.requests}) == 1  # one request, sent three times
    lm = make_model(cache=path)
    assert [colour(lm, temperature=0.9)["c"] for _ in range(3)] == first and len(fake.requests) == 3
    fake.push(Reply.text("Cyan."))
    lm = make_model(cache=path)
    assert [colour(lm, temperature=0.9)["c"] for _ in range(4)] == [*first, "Cyan."] and len(fake.requests) == 4


def test_copies_and_fresh_models_share_one_run(fake, make_model, tmp_path) -> None:
    path = tmp_path / "c.sqlite3"
    fake.push(Reply.text("One."), Reply.text("Two."))
    lm = make_model(cache=path)
    assert colour(lm)["c"] == "One." and colour(lm.fresh())["c"] == "Two."  # the 2nd occurrence in the run
    lm = make_model(cache=path)
    assert [colour(lm.fresh())["c"], colour(lm)["c"]] == ["One.", "Two."] and len(fake.requests) == 2


def test_a_program_that_needed_retries_reruns_with_zero_requests(fake, make_model, tmp_path) -> None:
    path = tmp_path / "c.sqlite3"
    # A 429 the transport retries, an answer json refuses (retried with feedback: another body), a valid one.
    fake.push(Reply.rate_limited(retry_after=0.01), Reply.text('{"x": "three"}'), Reply.text('{"x": 3}'))

    def program(lm):
        lm = ask(lm, "Describe Ada.")
        with assistant():
            lm += "Result: " + guidance_json("p", schema=SIMPLE)
        return lm

    first = program(make_model(cache=path))
    assert first["p"] == '{"x": 3}' and len(fake.requests) == 3
    second = program(make_model(cache=path))
    assert second["p"] == '{"x": 3}' and str(second) == str(first)
    assert len(fake.requests) == 3  # the refused answer, the feedback and the accepted one: all from the file
    assert second.usage.cached_calls == 2 and second.usage.calls == 0
    stats = second.usage.constraints["json_schema"]
    assert stats.satisfied == 1 and stats.round_trips == 2  # the refused answer was refused again


def test_a_cached_answer_that_breaks_its_constraint_is_refused_again(fake, make_model, tmp_path) -> None:
    path = tmp_path / "c.sqlite3"
    fake.push(Reply.text('"gamma"'), Reply.text('"gamma"'))

    def program(lm):
        lm = ask(lm, "Answer gamma.")
        with assistant():
            lm += select(["alpha", "beta"], name="pick")
        return lm

    with pytest.raises(ConstraintError):
        program(make_model(cache=path, max_attempts=2))
    assert len(fake.requests) == 2
    with pytest.raises(ConstraintError):  # the replayed answers go through the same check: no capture
        program(make_model(cache=path, max_attempts=2))
    assert len(fake.requests) == 2


def test_logprobs_reasoning_and_option_probs_are_the_same_from_the_cache(fake, make_model, tmp_path) -> None:
    path = tmp_path / "c.sqlite3"
    tokens = [('"', -0.01), ("tech", -0.3, {"tech": -0.3, "bill": -1.5}), ('nical"', -0.02)]
    fake.push(
        Reply.text("Hello there", token_logprobs=[("Hel", -0.5), ("lo", -0.25), (" there", -1.0)]),
        Reply.text('"technical"', token_logprobs=tokens),
        Reply.text("Blue.", reasoning="The sky is blue.", reasoning_as="field"),
    )

    def program(lm):
        lm = ask(lm)
        with assistant():
            lm += gen("greeting", max_tokens=8)
        lm = ask(lm, "Which team?")
        with assistant():
            lm += select(["billing", "technical"], name="team")
        lm = ask(lm)
        with assistant():
            lm += gen("c", max_tokens=8)
        return lm

    first = program(make_model(cache=path, logprobs=True))
    second = program(make_model(cache=path, logprobs=True))
    assert len(fake.requests) == 3 and second.usage.cached_calls == 3
    assert second.log_prob("greeting") == pytest.approx(-1.75) == first.log_prob("greeting")
    assert second["team"] == "technical" and second.log_prob("team") == pytest.approx(first.log_prob("team"))
    assert second.reasoning == first.reasoning == ["The sky is blue."] and second["c"] == "Blue."
    before, after = option_probs(first, "team"), option_probs(second, "team")
    assert {k: v.prob for k, v in after.items()} == pytest.approx({k: v.prob for k, v in before.items()})


def test_a_client_side_stop_is_recorded_and_replayed_where_it_stopped(fake, make_model, tmp_path) -> None:
    path = tmp_path / "c.sqlite3"
    fake.push(Reply.text("Paris. More text that the stop never lets through.", chunk_size=4))
    first = colour(make_model(cache=path), stop_regex=r"\.\s*M?")
    second = colour(make_model(cache=path), stop_regex=r"\.\s*M?")
    assert "stop" not in fake.requests[0]  # a regex stop: the server sends everything, the client stops
    assert first["c"] == second["c"] == "Paris" and len(fake.requests) == 1
    # Another program sending the same body but reading further cannot be answered from the shorter record.
    with pytest.raises(ProtocolError, match="stopped reading"):
        colour(make_model(cache=path), stop_regex=r"nev[a-z]r")


def test_an_answer_cut_by_an_error_is_not_stored(fake, make_model, tmp_path) -> None:
    path = tmp_path / "c.sqlite3"
    fake.push(Reply.text("Half an answer", cut=True))
    with pytest.raises(ProtocolError):
        colour(make_model(cache=path))
    fake.push(Reply.text("Whole."))
    assert colour(make_model(cache=path))["c"] == "Whole." and len(fake.requests) == 2
    assert colour(make_model(cache=path))["c"] == "Whole." and len(fake.requests) == 2


def test_neither_the_key_nor_any_header_is_in_the_file(fake, make_model, tmp_path) -> None:
    path = tmp_path / "c.sqlite3"
    fake.push(Reply.text("Blue."))
    colour(make_model(cache=path, api_key=CACHE_KEY, default_headers={"X-Team-Token": "team-secret-42"}))
    assert fake.request_headers[-1].get("x-team-token") == "team-secret-42"  # sent, as asked
    files = [p for p in tmp_path.iterdir() if p.name.startswith("c.sqlite3")]
    contents = b"".join(p.read_bytes() for p in files) + b"".join(stored_answers(path))
    assert b"Blue." in b"".join(stored_answers(path))  # the answer is there, readable
    for secret in (CACHE_KEY.encode(), b"Bearer", b"team-secret-42", b"authorization"):
        assert secret not in contents, secret


def test_an_answer_a_server_echoed_the_key_into_is_not_stored(fake, make_model, tmp_path) -> None:
    path = tmp_path / "c.sqlite3"
    # The key arrives in 8-character pieces, so no chunk holds it whole: the answer is checked joined.
    fake.push(Reply.text(f"Your key is {CACHE_KEY}, keep it safe.", chunk_size=8), Reply.text("Blue."))
    colour(make_model(cache=path, api_key=CACHE_KEY))
    colour(make_model(cache=path, api_key=CACHE_KEY), temperature=0.5)  # another request: stored
    stored = stored_answers(path)
    assert len(stored) == 1 and b"Blue." in stored[0] and b"Your key" not in stored[0]
    fake.push(Reply.text("Again."))
    assert colour(make_model(cache=path, api_key=CACHE_KEY))["c"] == "Again." and len(fake.requests) == 3
    with FakeDeepInfra(lambda body: Reply.text(json.dumps({"name": f"{CACHE_KEY}", "age": 1}))) as echoing:
        options = dict(model="test/model", api_key=CACHE_KEY, base_url=echoing.base_url, cache=tmp_path / "x.db")
        extract(["name=A age=1"], {"type": "object"}, **options)  # the fast path: a whole answer
    assert stored_answers(tmp_path / "x.db") == []


def test_a_corrupt_file_gives_one_warning_and_live_calls(fake, make_model, tmp_path) -> None:
    path = tmp_path / "c.sqlite3"
    path.write_bytes(b"this is not a database at all " * 200)
    fake.push(Reply.text("One."), Reply.text("Two."))
    lm = make_model(cache=path)
    with pytest.warns(RuntimeWarning, match="cannot be read") as caught:
        assert colour(lm)["c"] == "One." and colour(lm)["c"] == "Two."
    assert len([w for w in caught if "request cache" in str(w.message)]) == 1
    assert len(fake.requests) == 2 and lm.transport.stats.cache_hits == 0


def test_an_unwritable_cache_still_returns_the_live_answer(fake, make_model, tmp_path) -> None:
    path = tmp_path / "c.sqlite3"
    fake.push(Reply.text("Blue."))
    lm = make_model(cache=path)
    colour(make_model(cache=path))  # the file exists and holds a first answer
    with sqlite3.connect(path) as connection:  # every new answer's insert fails, as on a full disk
        connection.execute(
            "CREATE TRIGGER full BEFORE INSERT ON answers BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
    fake.push(Reply.text("Green."))
    with pytest.warns(RuntimeWarning, match="could not be written"):
        with user():
            lm += "Name a tree."
        with assistant():
            lm += gen("t", max_tokens=8)
    assert lm["t"] == "Green." and len(fake.requests) == 2


def test_the_least_recently_used_answers_are_evicted_past_the_bound(fake, make_model, tmp_path) -> None:
    path = tmp_path / "c.sqlite3"
    prompts = [f"Name colour number {i}." for i in range(12)]
    fake.responder = lambda body: Reply.text("An answer long enough to take some room: " + "x" * 200)

    def run(prompt):
        lm = ask(make_model(cache=path, cache_max_bytes=2_000), prompt)
        with assistant():
            lm += gen("c", max_tokens=8)

    for prompt in prompts[:3]:
        run(prompt)
    run(prompts[0])  # a hit: the first answer is now the most recently used
    sent = len(fake.requests)
    for prompt in prompts[3:]:
        run(prompt)
    with sqlite3.connect(path) as connection:
        stored = connection.execute("SELECT total(size), count(*) FROM answers").fetchone()
    assert stored[0] <= 2_000 and 0 < stored[1] < len(prompts)
    before = len(fake.requests)
    run(prompts[-1])  # the newest answer was kept
    assert len(fake.requests) == before
    run(prompts[1])  # an old, unused one was evicted
    assert len(fake.requests) == before + 1 and sent == 3


def test_the_environment_turns_the_cache_on_and_true_uses_the_user_cache_dir(
    fake, make_model, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv(ENV_VARIABLE, "1")
    fake.push(Reply.text("Blue."))
    colour(make_model())
    colour(make_model())
    assert len(fake.requests) == 1 and default_path() == tmp_path / "xdg/guidance-deepinfra/responses.sqlite3"
    assert default_path().exists()
    monkeypatch.setenv(ENV_VARIABLE, str(tmp_path / "elsewhere.sqlite3"))
    fake.push(Reply.text("Blue."))
    colour(make_model())
    assert len(fake.requests) == 2 and (tmp_path / "elsewhere.sqlite3").exists()
    fake.push(Reply.text("Blue."))
    colour(make_model(cache=False))  # False wins over the environment
    assert len(fake.requests) == 3
    monkeypatch.delenv(ENV_VARIABLE)
    colour(make_model(cache=True))  # the default place again, by argument
    assert len(fake.requests) == 3


WRITER = """
import sys
from guidance import assistant, gen, user
from guidance_deepinfra import DeepInfra
lm = DeepInfra("test/model", api_key="sk-test-writer-0000", base_url=sys.argv[1], cache=sys.argv[2], echo=False,
               logprobs=False)
for i in range(int(sys.argv[3])):
    s = lm
    with user():
        s += f"Prompt {sys.argv[4]}-{i} and a shared one {i % 5}." if i % 2 else f"Shared prompt {i % 5}."
    with assistant():
        s += gen("c", max_tokens=8)
    print(s["c"])
"""


@pytest.mark.slow
def test_writers_in_several_processes_share_one_file(fake, make_model, tmp_path) -> None:
    path = tmp_path / "c.sqlite3"
    fake.responder = lambda body: Reply.text("Answer to " + body["messages"][-1]["content"])
    script = tmp_path / "writer.py"
    script.write_text(textwrap.dedent(WRITER))
    writers = [
        subprocess.Popen(
            [sys.executable, str(script), fake.base_url, str(path), "30", str(n)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(4)
    ]
    outputs = [w.communicate(timeout=120) for w in writers]
    assert all(w.returncode == 0 for w in writers), [err[-2000:] for _, err in outputs]
    assert all("warn" not in err.lower() for _, err in outputs), [err[-2000:] for _, err in outputs]
    with sqlite3.connect(path) as connection:
        distinct = connection.execute("SELECT count(DISTINCT key) FROM answers").fetchone()[0]
    assert distinct == 4 * 15 + 5  # each writer's own odd prompts, and the shared ones
    sent = len(fake.requests)
    # A re-run of every writer's program is answered from the file alone.
    again = subprocess.run(
        [sys.executable, str(script), fake.base_url, str(path), "30", "2"], capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0 and len(fake.requests) == sent
    assert again.stdout == outputs[2][0]


def test_the_cache_command_shows_and_clears_what_is_stored(fake, make_model, tmp_path, capsys) -> None:
    path = tmp_path / "c.sqlite3"
    fake.push(Reply.text("Blue."), Reply.text("Amber."))
    lm = make_model(cache=path)
    colour(lm)
    colour(lm)  # the same request again: a second answer for it
    assert main(["cache", "--path", str(path), "info"]) == 0
    shown = capsys.readouterr().out
    assert "2 answer(s) for 1 distinct request(s)" in shown and str(path) in shown
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE answers SET created = created - 2 * 86400 WHERE occurrence = 1")
    assert main(["cache", "--path", str(path), "clear", "--older-than", "1d"]) == 0
    assert "removed 1 answer(s)" in capsys.readouterr().out
    fake.push(Reply.text("Cyan."))
    lm = make_model(cache=path)
    assert [colour(lm)["c"], colour(lm)["c"]] == ["Blue.", "Cyan."] and len(fake.requests) == 3
    assert main(["cache", "--path", str(path), "clear"]) == 0
    assert "removed 2 answer(s)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["cache", "--path", str(path), "clear", "--older-than", "soon"])
    (tmp_path / "bad.sqlite3").write_bytes(b"garbage" * 100)
    assert main(["cache", "--path", str(tmp_path / "bad.sqlite3"), "info"]) == 1
    assert "cannot be read" in capsys.readouterr().err
