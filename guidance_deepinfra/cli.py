"""The `guidance-deepinfra` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Only argparse and the light modules are loaded before a command runs: `--help`, the command's and each
# subcommand's, answers without importing guidance, openai, jsonschema, llguidance, aiohttp or pydantic
# (tests/integration/test_startup.py checks it). Each subcommand's own code is imported in `main`.

#: One example per subcommand, shown at the end of its --help.
EXAMPLES = {
    "demo": "guidance-deepinfra demo prefill_stop json_object   # offline without DEEPINFRA_API_KEY",
    "probe": "guidance-deepinfra probe meta-llama/Llama-3.3-70B-Instruct-Turbo --output probes/llama.json",
    "extract": "guidance-deepinfra extract --schema person.json --input people.jsonl --output people.out.jsonl",
    "cache": "guidance-deepinfra cache clear --older-than 7d",
}


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, except that an example keeps its line as written instead of being rewrapped."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("example:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="guidance-deepinfra", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the example programs (live with a key, else replaying cassettes)")
    group = demo.add_mutually_exclusive_group()
    group.add_argument("--live", dest="mode", action="store_const", const="live", help="force live calls")
    group.add_argument("--replay", dest="mode", action="store_const", const="replay", help="force replay")
    group.add_argument(
        "--record",
        dest="mode",
        action="store_const",
        const="record",
        help="re-record every cassette live (needs DEEPINFRA_API_KEY)",
    )
    group.add_argument(
        "--synthesize",
        dest="mode",
        action="store_const",
        const="synthesize",
        help="write cassettes from the documented wire format with the loopback fake server",
    )
    demo.add_argument("--cassettes", type=Path, default=None, help="cassette directory (default: ./cassettes)")
    demo.add_argument(
        "--overwrite-provenance",
        action="store_true",
        help="allow --record to replace synthesized cassettes (or --synthesize to replace live ones)",
    )
    demo.add_argument("names", nargs="*", help="scenario names (default: all)")
    from .probe import add_parser as add_probe_parser

    add_probe_parser(sub)
    from .extraction.cli import add_parser as add_extract_parser

    add_extract_parser(sub)
    from .cache.cli import add_parser as add_cache_parser

    add_cache_parser(sub)
    for name, command in sub.choices.items():
        command.formatter_class = _HelpFormatter
        command.epilog = f"example:\n  {EXAMPLES[name]}"
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from .demo import SCENARIOS, run_demo

        unknown = [n for n in args.names if n not in SCENARIOS]
        if unknown:
            print(f"unknown scenario(s) {unknown}; known: {sorted(SCENARIOS)}", file=sys.stderr)
            return 2
        from .errors import ConfigurationError

        try:
            overwrite = args.overwrite_provenance
            failed = run_demo(args.mode, args.names or None, args.cassettes, overwrite_provenance=overwrite)
        except ConfigurationError as exc:
            print(f"demo: {exc}", file=sys.stderr)
            return 2
        return 1 if failed else 0
    if args.command == "probe":
        from .probe import run as run_probe

        return run_probe(args)
    if args.command == "extract":
        from .extraction.cli import run as run_extract

        return run_extract(args)
    if args.command == "cache":
        from .cache.cli import run as run_cache

        return run_cache(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
