"""What ``--help`` says: every option's default, one example per subcommand, and the window's rule as the
limiter applies it (read from the help text and checked against `AdaptiveLimiter`)."""

from __future__ import annotations

import argparse
import re

import pytest

from guidance_deepinfra.cli import build_parser
from guidance_deepinfra.extraction.limiter import AdaptiveLimiter


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The optional options that take a value (flags, help, required options and subcommands have no default
    to say)."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for inner in action.choices.values():
                found += options(inner)
        elif action.option_strings and action.nargs != 0 and not action.required:
            found.append(action)
    return found


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_every_option_shows_its_default_and_the_help_ends_with_an_example(name: str) -> None:
    parser = subcommands()[name]
    missing = [a.option_strings[0] for a in options(parser) if "default" not in (a.help or "")]
    assert not missing, f"{name}: {missing} do not say their default"
    text = parser.format_help()
    assert re.search(rf"example:\n  guidance-deepinfra {name} \S", text), text
    for action in options(parser):  # the value shown is the one argparse uses
        if action.default not in (None, False) and "%(default)s" in (action.help or ""):
            assert f"(default: {action.default})" in text.replace("\n", " ") or str(action.default) in text


def test_extract_help_says_what_the_limiter_does() -> None:
    extract = subcommands()["extract"]
    help_text = " ".join(next(a.help for a in extract._actions if "--concurrency" in a.option_strings).split())
    said = re.search(r"each 429 narrows the window by (\w+) slot .*?each answer widens it by a (\w+) slot", help_text)
    assert said is not None, help_text
    slots = {"one": 1.0, "half": 0.5, "quarter": 0.25}
    now = [0.0]
    limiter = AdaptiveLimiter(8, clock=lambda: now[0])
    ticket = limiter.try_acquire()
    assert ticket is not None
    limiter.congested(ticket)
    assert limiter.limit == 8 - slots[said.group(1)]
    now[0] += 1
    ticket = limiter.try_acquire()
    assert ticket is not None
    limiter.release(ticket, succeeded=True)
    assert limiter.limit == 8 - slots[said.group(1)] + slots[said.group(2)]
    assert "halved" not in help_text
    assert "at most half per round of 429s" in help_text
    limiter = AdaptiveLimiter(8, clock=lambda: now[0])
    tickets = [limiter.try_acquire() for _ in range(8)]  # all sent before the 429s come
    now[0] += 1
    for ticket in tickets:
        limiter.congested(ticket)
    assert limiter.limit == 8 / 2
