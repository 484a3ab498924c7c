"""``guidance-deepinfra probe [MODEL ...]``: measure, with your key, what DeepInfra's docs leave unverified.

For each model a short, bounded series of tiny streamed requests (`probe.checks`) measures whether
``json_object`` / ``json_schema`` / ``strict`` are accepted, which JSON Schema keywords the server enforces,
whether ``{"type": "regex"}`` is accepted and enforced, whether prefilled assistant text is continued
byte-exactly (also with ``response_format``), how many ``stop`` strings count, logprobs and top_logprobs,
tools, ``estimated_cost`` in streamed usage, the exact wording of a context-length error, and how the model
reasons: in ``reasoning_content`` or inline ``<think>``, whether ``reasoning_effort: "none"`` turns it off,
whether ``response_format`` applies to the answer after the reasoning and whether prefilled text is continued
after it. A model that reasons gets its later checks with reasoning turned off (or, where it cannot be, with
room for it), so that each reads an answer and not a budget spent thinking. The request
count and an estimated cost are shown first and need a yes (``--yes`` answers it; with no input to read, the
probe refuses). The results are printed as a table and written to a profile file that `load_profile` /
`declare_profiles` (in `profile`) read, so a model's capabilities are never learned twice.

The transport, the model's key lookup and the demo's provenance are imported where they are used, so
``guidance-deepinfra probe --help`` answers without loading openai or guidance.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any

from ..errors import AuthenticationError, DeepInfraError
from ..profile import DEFAULT_MODEL, PROBE_FORMAT, ModelProfile
from . import checks

MAX_MODELS = 20
#: A cautious upper bound on the prompt tokens of one probe request (chat template included).
PROMPT_TOKENS_PER_REQUEST = 250
DEFAULT_PRICE_PER_MILLION = 5.0
DEFAULT_OUTPUT = "deepinfra-probe.json"

#: (key, label) of every measured fact, in table order.
ROWS: list[tuple[str, str]] = [
    ("streamed_cost", "estimated_cost in streamed usage"),
    ("reasoning", "how the model reasons"),
    ("reasoning_off", 'reasoning_effort "none"'),
    ("reasoning_with_format", "response_format on a reasoning model"),
    ("reasoning_continuation", "prefilled text on a reasoning model"),
    ("json_object", "response_format json_object"),
    ("json_schema", "response_format json_schema"),
    ("strict", "json_schema with strict: true"),
    *[(f"keyword:{name}", f"json_schema keyword {name}") for name in checks.KEYWORD_CASES],
    ("regex_format", 'response_format {"type": "regex"}'),
    ("continuation", "prefilled assistant text"),
    ("continuation_with_format", "prefilled text with response_format"),
    ("stop_limit", "stop strings that count"),
    ("logprobs", "logprobs"),
    ("top_logprobs", "top_logprobs"),
    ("tools", "tools"),
    ("context_error", "context-length error (exact wording)"),
]


def requests_per_model() -> int:
    """The most requests the probe sends for one model (the stop check's second request and the three
    reasoning checks are conditional)."""
    return 1 + REASONING_CHECKS + 3 + len(checks.KEYWORD_CASES) + 1 + 2 + 2 + 2 + 1 + 1


#: Requests sent only to a model that reasons.
REASONING_CHECKS = 3


@dataclass
class Plan:
    """What the probe will send, shown before anything is sent."""

    models: list[str]
    price_per_million: float

    @property
    def requests(self) -> int:
        return requests_per_model() * len(self.models)

    @property
    def tokens(self) -> int:
        # the first request and the reasoning checks leave room for reasoning; a model whose reasoning cannot
        # be turned off gets that room on every request
        return self.requests * (PROMPT_TOKENS_PER_REQUEST + checks.REASONING_MAX_TOKENS)

    @property
    def cost(self) -> float:
        return self.tokens * self.price_per_million / 1_000_000

    def describe(self, base_url: str) -> str:
        from ..transport.client import display_url

        return (
            f"probe: {len(self.models)} model(s) at {display_url(base_url)}: {', '.join(self.models)}\n"
            f"probe: at most {self.requests} requests ({requests_per_model()} per model), each streamed with "
            f"max_tokens={checks.MAX_TOKENS}, or {checks.REASONING_MAX_TOKENS} where a model reasons (one per model "
            f"asks for max_tokens={checks.HUGE_MAX_TOKENS} to provoke the context-length error and is closed after "
            "its first piece if accepted)\n"
            f"probe: at most about {self.tokens} tokens; estimated cost at most ${self.cost:.4f} at "
            f"${self.price_per_million:.2f} per million tokens (--price-per-million to change)"
        )


@dataclass
class ModelReport:
    """Every outcome for one model, the profile they imply, and what the probe spent."""

    model: str
    outcomes: dict[str, checks.Finding] = field(default_factory=dict)
    requests: int = 0
    estimated_cost: float = 0.0
    error: str | None = None

    def profile(self) -> ModelProfile:
        """The capabilities measured; anything the answers did not settle keeps its documented default."""
        defaults = ModelProfile()

        def settled(key: str, default: bool) -> bool:
            outcome = self.outcomes.get(key)
            return default if outcome is None or outcome.supported is None else outcome.supported

        logprobs = settled("logprobs", defaults.logprobs) and settled("top_logprobs", defaults.logprobs)
        shape = self.outcomes.get("reasoning")
        return ModelProfile(
            reasoning=shape.reading if shape is not None and shape.reading else defaults.reasoning,  # type: ignore[arg-type]
            json_schema=settled("json_schema", defaults.json_schema),
            json_object=settled("json_object", defaults.json_object),
            regex_format=settled("regex_format", defaults.regex_format),
            tools=settled("tools", defaults.tools),
            logprobs=logprobs,
            continuation=settled("continuation", defaults.continuation),
        )


NAME_SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
PROBE_SCHEMA_FORMAT = checks.PROBE_SCHEMA


def probe_model(prober: checks.Prober, progress: Callable[[str], None]) -> ModelReport:
    """Run every check against one model, in an order where earlier answers decide later requests."""
    report = ModelReport(prober.model)

    def measure(key: str, check: Callable[[], checks.Finding]) -> checks.Finding:
        outcome = check()
        report.outcomes[key] = outcome
        progress(f"probe {prober.model}: {dict(ROWS)[key]}: {outcome.value}")
        return outcome

    first = prober.send(checks.user(checks.SAY_OK), max_tokens=checks.REASONING_MAX_TOKENS)
    if first.error is not None:  # a plain request must work before anything else is worth sending
        raise first.error
    measure("streamed_cost", lambda: checks.streamed_cost(first))
    shape = measure("reasoning", lambda: checks.reasoning_shape(prober, first))
    if shape.supported is not False:
        off = measure("reasoning_off", lambda: checks.reasoning_off(prober))
        schema_format = checks.json_schema_format(PROBE_SCHEMA_FORMAT)
        measure("reasoning_with_format", lambda: checks.reasoning_with_format(prober, schema_format))
        measure("reasoning_continuation", lambda: checks.reasoning_continuation(prober))
        if off.supported:
            prober.extra = {"reasoning_effort": "none"}
        else:
            prober.extra = {"max_tokens": checks.REASONING_MAX_TOKENS}
    else:
        for key in ("reasoning_off", "reasoning_with_format", "reasoning_continuation"):
            report.outcomes[key] = checks.Finding("not measured (the model did not reason)")
    sent_with = ", ".join(f"{k}={v}" for k, v in prober.extra.items()) or "nothing added"
    report.outcomes["later_checks"] = checks.Finding(sent_with)
    json_object = measure("json_object", lambda: checks.json_object(prober))
    json_schema = measure("json_schema", lambda: checks.json_schema(prober))
    strict = measure("strict", lambda: checks.strict(prober))
    use_strict = bool(strict.supported)
    for name in checks.KEYWORD_CASES:
        if json_schema.supported:
            measure(f"keyword:{name}", partial(checks.keyword, prober, name, use_strict=use_strict))
        else:
            report.outcomes[f"keyword:{name}"] = checks.Finding("not measured (json_schema refused)")
    measure("regex_format", lambda: checks.regex_format(prober))
    measure("continuation", lambda: checks.continuation(prober))
    response_format = (
        {"type": "json_object"}
        if json_object.supported
        else checks.json_schema_format(NAME_SCHEMA)
        if json_schema.supported
        else None
    )
    measure("continuation_with_format", lambda: checks.continuation_with_format(prober, response_format))
    measure("stop_limit", lambda: checks.stop_limit(prober))
    measure("logprobs", lambda: checks.logprobs(prober))
    measure("top_logprobs", lambda: checks.top_logprobs(prober))
    measure("tools", lambda: checks.tools(prober))
    measure("context_error", lambda: checks.context_error(prober))
    report.requests = prober.sent
    report.estimated_cost = prober.cost
    return report


def table(reports: list[ModelReport]) -> str:
    """The results as a Markdown table: one row per fact, one column per model."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [
        "| fact | " + " | ".join(r.model for r in reports) + " |",
        "|---|" + "---|" * len(reports),
    ]
    for key, label in ROWS:
        values = [r.error if r.error else r.outcomes[key].value if key in r.outcomes else "-" for r in reports]
        lines.append(f"| {label} | " + " | ".join(cell(v or "-") for v in values) + " |")
    sent_with = [r.outcomes["later_checks"].value if "later_checks" in r.outcomes else "-" for r in reports]
    lines.append("| later checks sent with | " + " | ".join(sent_with) + " |")
    profiles = [", ".join(f"{k}={v}" for k, v in vars(r.profile()).items()) if not r.error else "-" for r in reports]
    lines.append("| profile written | " + " | ".join(profiles) + " |")
    return "\n".join(lines)


def write_profile_file(path: Path, reports: list[ModelReport], base_url: str) -> None:
    """Write (or extend) the profile file: each probed model's profile and every measurement behind it."""
    from ..demo.provenance import plugin_version, today
    from ..transport.client import display_url

    data: dict[str, Any] = {}
    if path.exists():
        try:
            existing = json.loads(path.read_text())
        except ValueError:
            existing = None
        if isinstance(existing, dict) and existing.get("format") == PROBE_FORMAT:
            data = existing
    data.update({"format": PROBE_FORMAT, "base_url": display_url(base_url)})
    models = data.setdefault("models", {})
    for report in reports:
        if report.error:
            continue
        models[report.model] = {
            "date": today(),
            "plugin_version": plugin_version(),
            "profile": vars(report.profile()),
            "measured": {
                key: {"value": o.value, "detail": o.detail, "supported": o.supported}
                for key, o in report.outcomes.items()
            },
            "requests": report.requests,
            "estimated_cost_usd": report.estimated_cost,
        }
    path.write_text(json.dumps(data, indent=2) + "\n")


def confirmed(stream: IO[str] | None, out: IO[str]) -> bool:
    """Ask on `out` and read one answer from `stream`; no stream or no answer (EOF) means no."""
    print("probe: send these requests? [y/N] ", end="", file=out, flush=True)
    if stream is None or stream.closed:
        print("(no input to read an answer from; pass --yes to run without asking)", file=out)
        return False
    answer = stream.readline()
    if not answer:
        print("(no answer; pass --yes to run without asking)", file=out)
        return False
    return answer.strip().lower() in ("y", "yes")


# --------------------------------------------------------------------------- the command


def add_parser(sub: Any) -> None:
    """Register ``probe`` on the ``guidance-deepinfra`` command."""
    parser = sub.add_parser(
        "probe", help="measure, with your key, what DeepInfra does for each model (a few tiny requests)"
    )
    parser.add_argument("models", nargs="*", help=f"models to probe (default: {DEFAULT_MODEL})")
    parser.add_argument("--yes", action="store_true", help="send the requests without asking")
    parser.add_argument(
        "--output", type=Path, default=Path(DEFAULT_OUTPUT), help=f"profile file to write (default: {DEFAULT_OUTPUT})"
    )
    parser.add_argument(
        "--price-per-million",
        type=float,
        default=DEFAULT_PRICE_PER_MILLION,
        help="USD per million tokens used for the cost estimate shown before the run (default: %(default)s)",
    )


def run(args: argparse.Namespace, *, stdin: IO[str] | None = None) -> int:
    """Run ``guidance-deepinfra probe``; returns the exit code."""
    from ..model import resolve_api_key, resolve_base_url
    from ..transport.client import RetryPolicy, Transport

    models = list(dict.fromkeys(args.models or [DEFAULT_MODEL]))
    if len(models) > MAX_MODELS:
        print(f"probe: at most {MAX_MODELS} models per run, got {len(models)}", file=sys.stderr)
        return 2
    if not (args.price_per_million >= 0):
        print("probe: --price-per-million must be 0 or more", file=sys.stderr)
        return 2
    try:
        api_key = resolve_api_key(None)
        base_url = resolve_base_url(None)
        transport = Transport(api_key=api_key, base_url=base_url, timeout=60.0, retry=RetryPolicy(max_retries=2))
    except DeepInfraError as exc:
        print(f"probe: {exc}", file=sys.stderr)
        return 2
    plan = Plan(models, args.price_per_million)
    print(plan.describe(base_url))
    if not args.yes and not confirmed(stdin if stdin is not None else sys.stdin, sys.stdout):
        print("probe: nothing was sent")
        return 1
    reports: list[ModelReport] = []
    for model in models:
        prober = checks.Prober(transport, model)
        try:
            reports.append(probe_model(prober, lambda line: print(line, file=sys.stderr)))
        except AuthenticationError as exc:
            print(f"probe: {exc}; stopping", file=sys.stderr)
            return 2
        except DeepInfraError as exc:
            reports.append(ModelReport(model, requests=prober.sent, error=f"{type(exc).__name__}: {exc.message}"))
    print()
    print(table(reports))
    print()
    sent = sum(r.requests for r in reports)
    spent = sum(r.estimated_cost for r in reports)
    print(f"probe: {sent} request(s) sent; estimated cost reported by the server (usage.estimated_cost) ${spent:.6f}")
    if not any(r.error is None for r in reports):
        print("probe: no model could be probed; no profile written", file=sys.stderr)
        return 1
    write_profile_file(args.output, reports, base_url)
    print(
        f"probe: profiles written to {args.output}; use them with "
        f"DeepInfra(model, profile=load_profile({str(args.output)!r}, model)) or "
        f"declare_profiles({str(args.output)!r}) (both in guidance_deepinfra.profile)"
    )
    return 1 if any(r.error for r in reports) else 0
