"""`timeout` and `stream_deadline` bound every phase of a request, not only the gaps between reads.

Small loopback servers send their answer a byte at a time, each byte well within the read timeout, so only
a total bound can end the request: response headers trickled in, a 500 whose body trickles, an HTML page
that trickles, and a listener that never accepts (connect). Each would take 20 s or more; with
``timeout=1`` the call must end in a typed error within a few seconds. The last tests show what is bounded
with an HTTP client the user passes.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from guidance import assistant, gen, user
from trickling_server import TricklingServer, http_head

from guidance_deepinfra import DeepInfra, DeepInfraError, ProtocolError, RequestTimeoutError, RetryPolicy
from guidance_deepinfra.profile import ProfileRegistry
from guidance_deepinfra.testing import FakeDeepInfra, Reply

pytestmark = pytest.mark.slow  # each test waits for a timeout and measures the elapsed time

TIMEOUT = 1.0


def _model(base_url: str, **kwargs: Any) -> DeepInfra:
    kwargs.setdefault("timeout", TIMEOUT)
    kwargs.setdefault("max_retries", 1)
    return DeepInfra(
        "test/model",
        api_key="sk-test-timeouts",
        base_url=base_url,
        echo=False,
        logprobs=False,
        profiles=ProfileRegistry(),
        retry=RetryPolicy(max_retries=kwargs.pop("max_retries"), sleep=lambda _: None),
        **kwargs,
    )


def _call(lm: DeepInfra, error: type[DeepInfraError]) -> tuple[DeepInfraError, float]:
    with user():
        lm += "Say hello."
    started = time.monotonic()
    with pytest.raises(error) as info:
        with assistant():
            lm + gen("answer", max_tokens=10)
    return info.value, time.monotonic() - started


SLOW = 20.0  # how long each trickling server would take to finish its answer


def test_response_headers_sent_a_byte_at_a_time_hit_the_timeout() -> None:
    headers = http_head("200 OK", "text/event-stream", 0)
    with TricklingServer(b"", headers + b"x" * 60, pause=0.3) as server:
        assert len(headers) * 0.3 > SLOW
        error, elapsed = _call(_model(server.base_url), RequestTimeoutError)
    assert server.requests == 2  # retried once, each attempt bounded
    assert elapsed < 2 * TIMEOUT + 2.5, elapsed
    assert "after 2 attempts" in str(error)


def test_an_error_body_that_trickles_hits_the_timeout() -> None:
    body = b'{"detail": "' + b"busy " * 30 + b'"}'
    with TricklingServer(http_head("500 Internal Server Error", "application/json", len(body)), body) as server:
        assert len(body) * 0.3 > SLOW
        _, elapsed = _call(_model(server.base_url), RequestTimeoutError)
    assert server.requests == 2
    assert elapsed < 2 * TIMEOUT + 2.5, elapsed


def test_an_html_page_that_trickles_hits_the_timeout() -> None:
    body = b"<html><body>" + b"maintenance " * 10 + b"</body></html>"
    with TricklingServer(http_head("200 OK", "text/html", len(body)), body) as server:
        assert len(body) * 0.3 > SLOW
        error, elapsed = _call(_model(server.base_url, max_retries=0), ProtocolError)
    assert elapsed < TIMEOUT + 1.5, elapsed
    assert "text/html" in str(error)


@pytest.fixture
def full_listener() -> Iterator[str]:
    """A listener that never accepts, its queue filled, so that a new connection cannot complete."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers: list[socket.socket] = []
    try:
        for _ in range(8):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        time.sleep(0.2)
        probe = socket.socket()
        probe.settimeout(0.5)
        try:
            probe.connect(("127.0.0.1", port))
        except OSError:
            pass
        else:
            pytest.skip("this system completes connections to a full listener, so connect cannot hang here")
        finally:
            probe.close()
        yield f"http://127.0.0.1:{port}/v1/openai"
    finally:
        for sock in (*fillers, listener):
            sock.close()


def test_a_connection_that_cannot_be_made_hits_the_timeout(full_listener: str) -> None:
    _, elapsed = _call(_model(full_listener), RequestTimeoutError)
    assert elapsed < 2 * TIMEOUT + 2.5, elapsed


def test_the_stream_deadline_still_bounds_a_slow_stream() -> None:
    with FakeDeepInfra() as fake:
        fake.push(Reply.text("a slow answer " * 4, chunk_size=2, chunk_delay=0.2))  # about 6 s in all
        error, elapsed = _call(_model(fake.base_url, stream_deadline=1.0), RequestTimeoutError)
    assert "stream_deadline=1.0" in str(error)
    assert elapsed < 3.0, elapsed


# --------------------------------------------------------------------------- the user's own HTTP client


def test_with_the_users_client_an_html_page_that_trickles_is_bounded() -> None:
    body = b"<html><body>" + b"maintenance " * 10 + b"</body></html>"
    with TricklingServer(http_head("200 OK", "text/html", len(body)), body) as server:
        lm = _model(server.base_url, max_retries=0, http_client=openai.DefaultHttpxClient(trust_env=False))
        assert not lm.transport.bounds_every_phase
        _, elapsed = _call(lm, ProtocolError)
    assert elapsed < TIMEOUT + 1.5, elapsed


def test_with_the_users_client_the_stream_deadline_is_checked_per_chunk() -> None:
    with FakeDeepInfra() as fake:
        fake.push(Reply.text("a slow answer " * 4, chunk_size=2, chunk_delay=0.2))
        lm = _model(fake.base_url, stream_deadline=1.0, http_client=openai.DefaultHttpxClient(trust_env=False))
        error, elapsed = _call(lm, RequestTimeoutError)
    assert "stream_deadline=1.0" in str(error)
    assert elapsed < 3.0, elapsed


def test_a_reused_connection_takes_the_bounds_of_its_new_request() -> None:
    """A connection kept from an earlier answer must not carry that answer's spent deadline."""
    with FakeDeepInfra() as fake:
        lm = _model(fake.base_url, timeout=None, stream_deadline=0.5)
        for _ in range(2):
            with user():
                state = lm + "Say hello."
            with assistant():
                state += gen("answer", max_tokens=10)
            assert state["answer"] == "OK"
            time.sleep(0.7)  # past the first answer's stream_deadline
        assert fake.connections == 1  # the second request did reuse the connection


# --------------------------------------------------------------------------- proxies from the environment


@pytest.fixture
def proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


def test_a_proxy_set_in_the_environment_is_used(proxy_env: pytest.MonkeyPatch) -> None:
    with FakeDeepInfra() as proxy:  # answers the proxied request itself, as a caching proxy might
        proxy_env.setenv("HTTP_PROXY", proxy.base_url.removesuffix("/v1/openai"))
        lm = _model("http://deepinfra.invalid/v1/openai")  # no such host: only the proxy can answer
        with user():
            lm += "Say hello."
        with assistant():
            lm += gen("answer", max_tokens=10)
        assert lm["answer"] == "OK" and len(proxy.requests) == 1


def test_a_loopback_base_url_never_goes_through_a_proxy(proxy_env: pytest.MonkeyPatch) -> None:
    proxy_env.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    with FakeDeepInfra() as fake:
        lm = _model(fake.base_url, max_retries=0)
        with user():
            lm += "Say hello."
        with assistant():
            lm += gen("answer", max_tokens=10)
        assert lm["answer"] == "OK" and len(fake.requests) == 1


def test_a_trickling_server_behind_a_proxy_is_still_bounded(proxy_env: pytest.MonkeyPatch) -> None:
    body = b'{"detail": "' + b"busy " * 30 + b'"}'
    with TricklingServer(http_head("500 Internal Server Error", "application/json", len(body)), body) as server:
        proxy_env.setenv("HTTP_PROXY", server.base_url.removesuffix("/v1/openai"))
        _, elapsed = _call(_model("http://deepinfra.invalid/v1/openai"), RequestTimeoutError)
    assert server.requests == 2
    assert elapsed < 2 * TIMEOUT + 2.5, elapsed
