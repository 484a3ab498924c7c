"""Where a cassette's replies come from, and the words a user is shown about it.

Each cassette directory holds a ``provenance.json`` with one entry per cassette. An entry is either
synthesized (the replies were scripted and served in DeepInfra's wire format by the loopback fake server, so
no DeepInfra model produced them and costs come from the fake server's fixed price per token) or live
(recorded from DeepInfra on a date, with a model, by a plugin version). Everything the demo and the notebooks
print about offline material is built from these entries by `describe`, so the words cannot drift from the
files. `check_replaceable` keeps a recording from silently replacing a cassette of the other kind.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .._version import __version__
from ..errors import ConfigurationError
from ..testing.fake_server import COST_PER_TOKEN

SYNTHESIZED = "synthesized"
LIVE = "live"
FILE_NAME = "provenance.json"


def plugin_version() -> str:
    """The installed plugin's version, written into every provenance entry."""
    return __version__


def today() -> str:
    """The date written into new entries (UTC, so a recording's date does not depend on the machine)."""
    return datetime.now(timezone.utc).date().isoformat()


def synthesized_entry(model: str, replies: str) -> dict[str, Any]:
    """The entry for a cassette synthesized now from the replies scripted in `replies` (a file or place)."""
    return {
        "source": SYNTHESIZED,
        "date": today(),
        "model": model,
        "plugin_version": plugin_version(),
        "replies": replies,
        "price_per_token_usd": COST_PER_TOKEN,
    }


def live_entry(model: str) -> dict[str, Any]:
    """The entry for a cassette recorded live from DeepInfra now."""
    return {"source": LIVE, "date": today(), "model": model, "plugin_version": plugin_version()}


def read(directory: Path) -> dict[str, dict[str, Any]]:
    """Every entry of ``directory/provenance.json`` (empty when the file does not exist)."""
    file = directory / FILE_NAME
    if not file.exists():
        return {}
    data = json.loads(file.read_text())
    if not isinstance(data, dict):
        raise ConfigurationError(f"{file} must hold a JSON object of cassette entries")
    return data


def write(directory: Path, name: str, entry: dict[str, Any]) -> None:
    """Set the entry of cassette `name`, keeping the others."""
    data = read(directory)
    data[name] = entry
    (directory / FILE_NAME).write_text(json.dumps(dict(sorted(data.items())), indent=2) + "\n")


def _price(value: float) -> str:
    return f"{value:.12f}".rstrip("0").rstrip(".")


def describe(entry: dict[str, Any]) -> str:
    """The sentence a user reads about a cassette's replies and the costs shown with them."""
    source = entry.get("source")
    if source == LIVE:
        return (
            f"recorded live on {entry['date']} with {entry['model']} (plugin {entry['plugin_version']}); "
            "costs shown are DeepInfra's own usage.estimated_cost from that recording"
        )
    if source == SYNTHESIZED:
        return (
            f"replies synthesized on {entry['date']}: scripted in {entry['replies']} and served in DeepInfra's "
            "wire format by the loopback fake server, so no DeepInfra model wrote them; costs shown come from "
            f"the fake server's fixed price of ${_price(float(entry['price_per_token_usd']))} per token"
        )
    raise ConfigurationError(f"unknown cassette source {source!r}; expected {SYNTHESIZED!r} or {LIVE!r}")


def tag(entry: dict[str, Any]) -> str:
    """The few words one scenario's line says about its cassette, beside `explain`'s sentence said once."""
    source = entry.get("source")
    if source == LIVE:
        return f"recorded live on {entry['date']} with {entry['model']} (plugin {entry['plugin_version']})"
    if source == SYNTHESIZED:
        return f"synthesized on {entry['date']}"
    raise ConfigurationError(f"unknown cassette source {source!r}; expected {SYNTHESIZED!r} or {LIVE!r}")


def explain(entry: dict[str, Any]) -> str:
    """What every cassette of `entry`'s kind (and scripts and price) means, said once for all of them."""
    if entry.get("source") == LIVE:
        return "replies marked recorded live came from DeepInfra; their costs are its own usage.estimated_cost"
    return (
        f"replies marked synthesized were scripted in {entry['replies']} and served in DeepInfra's wire format "
        "by the loopback fake server, so no DeepInfra model wrote them; costs shown with them come from the "
        f"fake server's fixed price of ${_price(float(entry['price_per_token_usd']))} per token"
    )


def check_replaceable(directory: Path, names: list[str], new_source: str, *, allowed: bool) -> None:
    """Refuse, before anything is sent, to replace a cassette whose entry is of another kind.

    A live recording over a synthesized cassette (or the reverse) changes what every user is told about it,
    so it needs ``allowed`` (the commands' ``--overwrite-provenance``).
    """
    entries = read(directory)
    other = sorted(n for n in names if n in entries and entries[n].get("source") not in (None, new_source))
    if other and not allowed:
        kinds = ", ".join(f"{n} ({entries[n].get('source')})" for n in other)
        raise ConfigurationError(
            f"refusing to replace {kinds} in {directory} with a {new_source} cassette: that changes what users "
            "are told about it; pass --overwrite-provenance to do it on purpose"
        )
