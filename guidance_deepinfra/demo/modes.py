"""The one switch between live, replay, record and synthesize, for the demo and the notebooks alike.

``live`` talks to DeepInfra. ``replay`` answers every request from a cassette and sends nothing (a request
the cassette lacks fails: cassettes match on method, path and the JSON body). ``record`` talks to DeepInfra
and writes the cassette; ``synthesize`` writes it from scripted replies served by the loopback fake server.
Both writers rewrite the server address to DeepInfra's, keep no credentials, and set the cassette's entry in
``provenance.json`` beside it, after refusing to replace an entry of the other kind unless told to.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from ..model import API_KEY_VARIABLES, DeepInfra, resolve_base_url
from ..testing.fake_server import FakeDeepInfra
from ..transport.client import DEFAULT_BASE_URL
from . import provenance as _provenance

MODES = ("live", "replay", "record", "synthesize")
#: The key sent offline (replay and synthesize): no real key is needed or kept.
REPLAY_KEY = "replay-without-a-key"


def default_mode() -> str:
    """Live when a DeepInfra key is set in the environment, else replay."""
    return "live" if any(os.environ.get(name) for name in API_KEY_VARIABLES) else "replay"


def _scrub_request(request: Any) -> Any:
    keep = {"content-type", "accept"}
    request.headers = {k: v for k, v in request.headers.items() if k.lower() in keep}
    return request


def _scrub_response(response: dict[str, Any]) -> dict[str, Any]:
    # Live answers can carry cookies and account or request identifiers; replay needs none of them.
    keep = {"content-type", "retry-after", "date"}
    response["headers"] = {k: v for k, v in response.get("headers", {}).items() if k.lower() in keep}
    return response


def _json_body_matcher(r1: Any, r2: Any) -> None:
    def parse(body: Any) -> Any:
        if isinstance(body, bytes):
            body = body.decode()
        return json.loads(body) if body else None

    a, b = parse(r1.body), parse(r2.body)
    assert a == b, f"request body differs from the recording:\n sent:     {a}\n recorded: {b}"


def make_vcr(record_mode: str) -> Any:
    """vcrpy configured as the project uses it: match on method, path and JSON body; no credentials kept."""
    import vcr

    recorder = vcr.VCR(
        record_mode=record_mode,
        match_on=["method", "path", "json_body"],
        filter_headers=["authorization"],
        before_record_request=_scrub_request,
        before_record_response=_scrub_response,
        decode_compressed_response=True,
    )
    recorder.register_matcher("json_body", _json_body_matcher)
    return recorder


def rewrite_to_deepinfra(path: Path, server_url: str) -> None:
    """Write DeepInfra's address where a cassette holds the server it was written against."""
    text = path.read_text()
    path.write_text(text.replace(server_url, DEFAULT_BASE_URL))


def new_provenance(mode: str, model: str, scripts: str) -> dict[str, Any] | None:
    """The provenance entry a cassette written in `mode` gets (None for the modes that write none)."""
    if mode == "record":
        return _provenance.live_entry(model)
    if mode == "synthesize":
        return _provenance.synthesized_entry(model, scripts)
    return None


def check_provenance(mode: str, directory: Path, names: list[str], *, overwrite: bool) -> None:
    """Refuse, before any request, to write cassettes over ones of the other kind (unless `overwrite`)."""
    if mode in ("record", "synthesize"):
        new_source = _provenance.LIVE if mode == "record" else _provenance.SYNTHESIZED
        _provenance.check_replaceable(directory, names, new_source, allowed=overwrite)


@dataclass
class Wiring:
    """A model wired for one mode, and what the mode holds open while it is used."""

    mode: str
    model: DeepInfra
    #: Where the model's requests go (the fake server while synthesizing, DeepInfra's address on replay).
    base_url: str
    #: The key the model uses offline (replay, synthesize); None when it uses the real one.
    offline_key: str | None = None
    cassette: Any = None
    fake: FakeDeepInfra | None = None


@contextmanager
def wired_model(
    mode: str,
    *,
    model: str,
    cassette: Path,
    replies: list[Any] | Callable[[dict[str, Any]], Any] | None = None,
    scripts: str = "",
    missing_hint: str,
    overwrite_provenance: bool = False,
    **model_kwargs: Any,
) -> Iterator[Wiring]:
    """A `DeepInfra` for `model` wired for `mode`, with the cassette `cassette` (its provenance beside it).

    `replies` are what synthesize serves: a list answered in order (each must be used, and no more) or a
    function from request body to reply; `scripts` says where they are written, for the provenance entry.
    `missing_hint` ends the error for a cassette replay cannot find. When the block ends normally, a written
    cassette gets DeepInfra's address and its provenance entry; `model_kwargs` go to `DeepInfra`.
    """
    if mode not in MODES:
        raise ConfigurationError(f"unknown mode {mode!r}; expected one of {MODES}")
    if mode == "live":
        yield Wiring(mode, DeepInfra(model, **model_kwargs), resolve_base_url(model_kwargs.get("base_url")))
        return
    directory = cassette.parent
    check_provenance(mode, directory, [cassette.stem], overwrite=overwrite_provenance)
    entry = new_provenance(mode, model, scripts)
    if mode == "replay":
        if not cassette.exists():
            raise FileNotFoundError(f"no cassette {cassette}; {missing_hint}")
        with make_vcr("none").use_cassette(str(cassette)) as tape:
            lm = DeepInfra(model, api_key=REPLAY_KEY, base_url=DEFAULT_BASE_URL, max_retries=0, **model_kwargs)
            yield Wiring(mode, lm, DEFAULT_BASE_URL, REPLAY_KEY, tape)
        return
    if mode == "record":
        base_url = resolve_base_url(None)
        cassette.unlink(missing_ok=True)
        with make_vcr("all").use_cassette(str(cassette)) as tape:
            yield Wiring(mode, DeepInfra(model, base_url=base_url, **model_kwargs), base_url, None, tape)
        rewrite_to_deepinfra(cassette, base_url)
    else:
        cassette.parent.mkdir(parents=True, exist_ok=True)
        cassette.unlink(missing_ok=True)
        scripted = None if callable(replies) else list(replies or ())
        with FakeDeepInfra(replies if callable(replies) else None) as fake:
            if scripted is not None:
                fake.push(*scripted)
            with make_vcr("all").use_cassette(str(cassette)) as tape:
                lm = DeepInfra(model, api_key=REPLAY_KEY, base_url=fake.base_url, **model_kwargs)
                yield Wiring(mode, lm, fake.base_url, REPLAY_KEY, tape, fake)
            sent = len(fake.requests)
        if scripted is not None and sent != len(scripted):
            raise RuntimeError(f"{cassette.stem}: {len(scripted)} replies scripted but {sent} requests sent")
        rewrite_to_deepinfra(cassette, fake.base_url)
    if entry is not None:
        _provenance.write(directory, cassette.stem, entry)
