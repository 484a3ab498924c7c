"""What a new user meets when the setup is wrong: an endpoint that cannot be reached stops a batch at once
with exit code 2 and one message naming it; error records count one thing; no run leaves an empty file
behind, and no message points to a file that was never written.

Every request goes over real sockets: a closed loopback port (refused), a host name under ``.invalid``
(never resolves), the fake server, and raw-socket servers for a network that goes away and a connection
that breaks.
"""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fault_servers import FaultServer, Request, ok

from guidance_deepinfra import ConnectionFailedError, RetryPolicy, extract
from guidance_deepinfra.cli import main
from guidance_deepinfra.testing import FakeDeepInfra, Reply

SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
FAST = [pytest.param(True, id="fast"), pytest.param(False, id="guidance")]
NO_WAIT = RetryPolicy(max_retries=1, base_delay=0.001, max_delay=0.001)


@pytest.fixture
def closed_port() -> int:
    """A loopback port nobody listens on: connecting is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DEEPINFRA_API_KEY", "sk-first-hour-test")
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA), encoding="utf-8")
    lines = [json.dumps({"id": f"r{i}", "text": f"name P{i}"}) for i in range(2)]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tmp_path


def argv(files: Path, base_url: str, *extra: str) -> list[str]:
    return [
        "extract", "--schema", str(files / "schema.json"), "--input", str(files / "in.jsonl"),
        "--output", str(files / "out.jsonl"), "--base-url", base_url, "--no-progress", *extra,
    ]  # fmt: skip


def left_behind(files: Path) -> set[str]:
    return {p.name for p in files.iterdir()} - {"schema.json", "in.jsonl"}


# --------------------------------------------------------------------------- an endpoint that cannot be reached


def test_a_refused_endpoint_stops_the_command_with_exit_code_2_and_one_message(files: Path, closed_port, capsys):
    url = f"http://127.0.0.1:{closed_port}/v1/openai"
    assert main(argv(files, url)) == 2  # errors no input can fix, not "some inputs failed"
    err = capsys.readouterr().err
    assert f"cannot connect to {url}: connection refused" in err
    assert "no request of this run was answered" in err and "--base-url" in err and "HTTPS_PROXY" in err
    assert err.count("\n") == 1, err  # one line
    assert "finished records are kept" not in err  # nothing was written, so no file is pointed to
    assert left_behind(files) == set()  # no input was marked failed: no errors file, no empty output


@pytest.mark.parametrize("fast", FAST)
def test_extract_raises_one_connection_error_naming_the_endpoint(fast: bool, files: Path, closed_port) -> None:
    url = f"http://127.0.0.1:{closed_port}/v1/openai"
    inputs = [f"name P{i}" for i in range(6)]
    with pytest.raises(ConnectionFailedError) as raised:
        extract(inputs, SCHEMA, base_url=url, fast=fast, concurrency=2, output=files / "out.jsonl")
    error = raised.value
    assert error.base_url == url and error.reason is not None and "refused" in error.reason
    assert "no request of this run was answered" in str(error)
    assert left_behind(files) == set()


@pytest.mark.parametrize("fast", FAST)
def test_a_host_name_that_does_not_resolve_is_named_as_such(fast: bool, files: Path) -> None:
    with pytest.raises(ConnectionFailedError) as raised:
        extract(["name P"], SCHEMA, base_url="http://api.example.invalid/v1/openai", fast=fast, retry=NO_WAIT)
    assert "cannot connect to http://api.example.invalid/v1/openai: the host name could not be resolved" in str(
        raised.value
    )


@pytest.mark.parametrize("fast", FAST)
def test_a_proxy_that_cannot_be_reached_is_named(fast: bool, closed_port: int, monkeypatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_port}")
    url = "http://api.example.invalid/v1/openai"
    with pytest.raises(ConnectionFailedError) as raised:
        extract(["name P"], SCHEMA, api_key="sk-x", base_url=url, fast=fast, retry=NO_WAIT)
    message = str(raised.value)
    assert f"cannot connect to {url}: " in message and "no request of this run was answered" in message
    assert f"through the proxy http://127.0.0.1:{closed_port} (from the proxy variables)" in message


class Vanishing:
    """Answers `answers` requests (one per connection), then stops listening: later connections are refused."""

    def __init__(self, answers: int) -> None:
        self.left = answers
        self.lock = threading.Lock()
        self.server = FaultServer(self.answer)

    def answer(self, request: Request) -> Any:
        with self.lock:
            self.left -= 1
            if self.left <= 0:
                self.server._listener.close()
        reply = ok(request, json.dumps({"name": "P"}))
        reply.head = reply.head.replace(b"\r\n\r\n", b"\r\nconnection: close\r\n\r\n", 1)
        return reply


@pytest.mark.parametrize("fast", FAST)
def test_a_network_that_goes_away_later_stops_the_run_after_a_streak(fast: bool, tmp_path: Path) -> None:
    """Two answers, then every connection is refused: with one request in flight the run stops after two
    refused inputs in a row, keeping the two records; nothing is marked failed."""
    vanishing = Vanishing(answers=2)
    inputs = {f"r{i}": f"name P{i}" for i in range(12)}
    with vanishing.server as server, pytest.raises(ConnectionFailedError) as raised:
        extract(
            inputs, SCHEMA, api_key="sk-x", base_url=server.base_url, fast=fast, concurrency=1, retry=NO_WAIT,
            output=tmp_path / "out.jsonl", errors=tmp_path / "errors.jsonl",
        )  # fmt: skip
    assert "the last 2 runs of inputs could not connect, after earlier answers" in str(raised.value)
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 2
    assert not (tmp_path / "errors.jsonl").exists()


@pytest.fixture
def hanging_up() -> Iterator[str]:
    """A server that reads each request and closes the connection without answering."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    piece = conn.recv(65536)
                    if not piece:
                        break
                    data += piece

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1/openai"
    stop.set()
    thread.join(5)
    listener.close()


@pytest.mark.parametrize("fast", FAST)
def test_a_connection_that_breaks_is_requeued_and_its_record_counts_one_thing(fast: bool, hanging_up: str) -> None:
    """The server is reached (so the run goes on), the answer never comes; the record says how many times
    the input was tried, and nothing else counted."""
    results = extract(
        ["name P"], SCHEMA, model="test/model", api_key="sk-x", base_url=hanging_up, fast=fast, retry=NO_WAIT,
        max_requeues=2,
    )  # fmt: skip
    failure = results.failures[0]
    assert failure.error_type == "ConnectionFailedError" and failure.attempts == 3
    message = failure.message.replace(hanging_up, "URL")
    assert re.findall(r"\d+", message) == ["3"], message
    assert "this input was tried 3 times" in message and "attempts" not in message


# --------------------------------------------------------------------------- no empty files, no pointers to none


def test_a_clean_run_leaves_no_empty_errors_file(files: Path) -> None:
    with FakeDeepInfra(lambda body: Reply.text('{"name": "P"}')) as fake:
        assert main(argv(files, fake.base_url)) == 0
    assert left_behind(files) == {"out.jsonl"}


@pytest.mark.parametrize(
    "status, body", [(401, {"detail": "Invalid API key"}), (404, {"error": {"message": "model not found"}})]
)
def test_a_run_stopped_by_401_or_404_leaves_no_files_and_points_to_none(files: Path, capsys, status, body) -> None:
    with FakeDeepInfra(lambda _: Reply.error(status, body)) as fake:
        assert main(argv(files, fake.base_url)) == 2
    assert left_behind(files) == set()
    assert "finished records are kept" not in capsys.readouterr().err


def test_without_a_key_no_file_is_created_nor_mentioned(files: Path, monkeypatch, capsys) -> None:
    for name in ("DEEPINFRA_API_KEY", "DEEPINFRA_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    assert main(argv(files, "http://127.0.0.1:9/v1/openai")) == 2
    err = capsys.readouterr().err
    assert "DEEPINFRA_API_KEY" in err and "out.jsonl" not in err and "rerun" not in err
    assert left_behind(files) == set()


def test_an_output_that_existed_is_kept_even_when_nothing_is_added(files: Path) -> None:
    (files / "out.jsonl").write_text("", encoding="utf-8")
    with FakeDeepInfra(lambda _: Reply.error(401, {"detail": "Invalid API key"})) as fake:
        assert main(argv(files, fake.base_url)) == 2
    assert left_behind(files) == {"out.jsonl"}
