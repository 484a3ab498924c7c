"""``guidance-deepinfra cache info|clear``: what the request cache holds, and emptying it."""

from __future__ import annotations

import argparse
import re
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from .store import ENV_VARIABLE, ResponseCache, default_path, resolve_path

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def duration(text: str) -> float:
    """Seconds from ``90``, ``45m``, ``12h``, ``7d`` or ``2w`` (argparse type)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"expected a duration such as 30m, 12h or 7d, got {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def add_parser(sub: Any) -> None:
    """Add the ``cache`` command to the top-level parser's subcommands."""
    parser = sub.add_parser("cache", help="show or clear the request cache")
    parser.add_argument(
        "--path",
        type=Path,
        default=None,
        help=f"the cache file (default: ${ENV_VARIABLE} if it names one, else {default_path()})",
    )
    actions = parser.add_subparsers(dest="cache_action", required=True)
    actions.add_parser("info", help="the number of stored answers, their size and age")
    clear = actions.add_parser("clear", help="delete stored answers")
    clear.add_argument(
        "--older-than",
        type=duration,
        default=None,
        help="only answers stored longer ago than this (30m, 12h, 7d; default: every answer)",
    )


def _path(given: Path | None) -> Path:
    if given is not None:
        return given
    return resolve_path(None) or default_path()


def _age(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def run(args: argparse.Namespace) -> int:
    path = _path(args.path)
    if not path.exists():
        print(f"no request cache at {path}")
        return 0
    cache = ResponseCache(path)
    try:
        if args.cache_action == "info":
            info = cache.info()
            print(f"request cache {info.path}")
            print(f"  {info.answers} answer(s) for {info.distinct_requests} distinct request(s)")
            print(f"  {info.stored_bytes / 1e6:.2f} MB of answers stored, file {info.file_bytes / 1e6:.2f} MB")
            print(f"  oldest {_age(info.oldest)}, newest {_age(info.newest)}")
            return 0
        removed = cache.clear(older_than=args.older_than)
        which = "" if args.older_than is None else f" stored more than {args.older_than:g} s ago"
        print(f"removed {removed} answer(s){which} from {path}")
        return 0
    except sqlite3.Error as exc:
        print(f"cache: {path} cannot be read ({exc}); delete it to start again", file=sys.stderr)
        return 1
    finally:
        cache.close()
