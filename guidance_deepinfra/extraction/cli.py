"""``guidance-deepinfra extract``: batch extraction from files, a progress bar, and a resumable output.

Only the standard library and the light modules are imported at load time, so ``guidance-deepinfra extract
--help`` answers without loading guidance, openai or the extraction engine; `run` imports them.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError, DeepInfraError, OutputWriteError
from ..profile import DEFAULT_MODEL
from .inputs import Item, parse_shard, shard_of
from .limiter import DEEPINFRA_MAX_CONCURRENCY, DEFAULT_CONCURRENCY, AdaptiveLimiter

if TYPE_CHECKING:
    from .engine import Counts

#: Exit codes of ``guidance-deepinfra extract`` (documented in the README).
EXIT_DONE = 0  # every input has a result
EXIT_SOME_FAILED = 1  # the run finished; some inputs failed and are listed in the errors file
EXIT_REFUSED = 2  # bad arguments, inputs or schema (nothing sent), or an error no input can fix stopped the run
EXIT_WRITE_FAILED = 3  # a record could not be written (disk full...): what was written is kept, a rerun resumes
EXIT_INTERRUPTED = 130  # Ctrl-C: what was written is kept, a rerun resumes


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "extract",
        help="extract a schema from every input (JSONL, CSV or a directory of .txt) into a resumable JSONL",
        description=(
            "Run one json() extraction per input, concurrently, appending each finished result to --output "
            "as soon as it is done. Rerunning with the same --output skips the ids already there."
        ),
    )
    parser.add_argument("--schema", required=True, help="schema.json, package.module:Class or file.py:Class")
    parser.add_argument("--input", required=True, type=Path, help="file.jsonl, file.csv or a directory of .txt")
    parser.add_argument("--output", required=True, type=Path, help="results, one JSON record per line")
    parser.add_argument(
        "--errors", type=Path, default=None, help="failed inputs of this run (default: OUTPUT.errors.jsonl)"
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"DeepInfra model (default: {DEFAULT_MODEL})")
    parser.add_argument("--base-url", default=None, help="API base URL (default: DEEPINFRA_BASE_URL or DeepInfra)")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        help=(
            f"most requests in flight, 1..{DEEPINFRA_MAX_CONCURRENCY}: each 429 narrows the window by one slot (by "
            "at most half per round of 429s) and each answer widens it by a quarter slot, up to this "
            "(default: %(default)s)"
        ),
    )
    parser.add_argument(
        "--max-attempts", type=int, default=3, help="requests per input for a valid answer (default: %(default)s)"
    )
    parser.add_argument(
        "--max-requeues", type=int, default=8, help="requeues of an input after 429/5xx/timeouts (default: %(default)s)"
    )
    parser.add_argument("--instructions", default=None, help="system message (default: a short extraction brief)")
    parser.add_argument(
        "--instructions-file",
        type=Path,
        default=None,
        help="read the system message from a file (default: --instructions)",
    )
    parser.add_argument("--id-field", default="id", help="JSONL key / CSV column holding the id (default: id)")
    parser.add_argument("--text-field", default="text", help="JSONL key / CSV column holding the text (default: text)")
    parser.add_argument(
        "--max-tokens", type=int, default=None, help="token bound of each answer (default: none sent, the model's own)"
    )
    parser.add_argument(
        "--temperature", type=float, default=None, help="sampling temperature (default: none sent, the model's own)"
    )
    parser.add_argument(
        "--shard",
        default=None,
        metavar="K/N",
        help="process only the inputs whose id hashes to shard K of N (run N processes, each with its own --output; "
        "default: every input)",
    )
    parser.add_argument(
        "--confidence",
        action="store_true",
        help='ask for logprobs and add each enum field\'s option probabilities to every record ("confidence")',
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (a summary is still printed)")
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        metavar="PATH",
        help="answer requests sent before from this request cache file, and record new answers into it (default: "
        "no cache, or GUIDANCE_DEEPINFRA_CACHE)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="send nothing: print the number of requests and an estimate of their tokens and cost",
    )
    parser.add_argument(
        "--price",
        type=_price,
        default=None,
        metavar="IN,OUT",
        help="USD per million prompt and answer tokens, for --dry-run's cost estimate (from the model's page; "
        "default: no cost shown)",
    )
    parser.add_argument(
        "--max-cost",
        type=float,
        default=None,
        metavar="USD",
        help="start no new input once DeepInfra's reported estimated_cost of this run reaches USD; rerun to resume "
        "(default: no bound)",
    )


def _price(text: str) -> tuple[float, float]:
    try:
        prompt, answer = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected IN,OUT in USD per million tokens, e.g. 0.23,0.40; got {text!r}"
        ) from None
    if prompt < 0 or answer < 0:
        raise argparse.ArgumentTypeError("prices cannot be negative")
    return prompt, answer


class ProgressBar:
    """tqdm bar of finished inputs: done, failed, rate and DeepInfra's estimated cost so far."""

    def __init__(self, total: int, *, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled
        self.bar: Any = None
        self._shown = 0
        self._initial = 0
        self._lock = threading.Lock()

    def start(self, initial: int) -> None:
        from tqdm import tqdm

        self._shown = self._initial = initial
        self.bar = tqdm(
            total=self.total,
            initial=initial,
            unit="rec",
            dynamic_ncols=True,
            file=sys.stderr,
            disable=not self.enabled,
        )

    def update(self, counts: Counts, limiter: AdaptiveLimiter, rate_limited: int) -> None:
        if self.bar is None:
            return
        with self._lock, counts.lock:
            finished = counts.done + counts.failed
            cached = (
                {"cached": counts.cached_calls, "saved": f"${counts.saved_cost:.4f}"} if counts.cached_calls else {}
            )
            self.bar.set_postfix(
                failed=counts.failed,
                cost=f"${counts.estimated_cost:.4f}",
                **cached,
                window=f"{limiter.window}/{limiter.ceiling}",
                r429=rate_limited,
                refresh=False,
            )
            shown = self._shown
            self._shown = max(shown, finished + self._initial)
            self.bar.update(self._shown - shown)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run(args: argparse.Namespace) -> int:
    from .api import Schema, estimate_extraction, load_schema, read_inputs, run_extraction

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    errors_path: Path = args.errors or args.output.with_name(args.output.stem + ".errors.jsonl")
    try:
        instructions = args.instructions
        if args.instructions_file is not None:
            instructions = args.instructions_file.read_text(encoding="utf-8")
        check_paths(args.input, args.output, errors_path)
        schema = load_schema(args.schema)
        Schema(schema)  # a schema without a usable JSON schema is refused here, before any file is touched
        shard = parse_shard(args.shard) if args.shard is not None else None

        def inputs() -> Iterator[Item]:
            items = read_inputs(args.input, id_field=args.id_field, text_field=args.text_field)
            return (i for i in items if shard is None or shard_of(i.id, shard[1]) == shard[0])

        input_ids = [item.id for item in inputs()]
    except (DeepInfraError, OSError) as exc:
        print(f"extract: {exc}", file=sys.stderr)
        return EXIT_REFUSED

    cache_option = {"cache": args.cache} if args.cache is not None else {}
    if args.dry_run:
        try:
            estimate = estimate_extraction(
                inputs(),
                schema,
                instructions=instructions,
                model=args.model,
                base_url=args.base_url,
                max_tokens=args.max_tokens,
                temperature=args.temperature,
                output=args.output,
                price=args.price,
                **cache_option,
            )
        except DeepInfraError as exc:
            print(f"extract: {exc}", file=sys.stderr)
            return EXIT_REFUSED
        print(estimate.report())
        return EXIT_DONE

    bar = ProgressBar(len(input_ids), enabled=not args.no_progress)

    def on_start(finished: set[str]) -> None:
        resumed = len(finished.intersection(input_ids))
        if resumed:
            print(f"extract: resuming: {resumed} input(s) already in {args.output} are skipped", file=sys.stderr)
        if shard is not None:
            print(f"extract: shard {shard[0]}/{shard[1]}: {len(input_ids)} input(s)", file=sys.stderr)
        bar.start(resumed)

    try:
        results = run_extraction(
            inputs(),
            schema,
            instructions=instructions,
            model=args.model,
            base_url=args.base_url,
            concurrency=args.concurrency,
            max_attempts=args.max_attempts,
            max_requeues=args.max_requeues,
            output=args.output,
            errors=errors_path,
            max_tokens=args.max_tokens,
            temperature=args.temperature,
            confidence=args.confidence,
            max_cost=args.max_cost,
            collect=False,
            on_start=on_start,
            on_progress=bar.update,
            **cache_option,
        )
    except OutputWriteError as exc:
        bar.close()
        print(f"extract: stopped: {exc}", file=sys.stderr)
        print(
            f"extract: {_kept(args.output)}free space (or fix the error above) and rerun the same command to resume",
            file=sys.stderr,
        )
        return EXIT_WRITE_FAILED
    except DeepInfraError as exc:
        bar.close()
        print(f"extract: stopped: {type(exc).__name__}: {exc}", file=sys.stderr)
        if _kept(args.output):
            print(f"extract: {_kept(args.output)}rerun to resume", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        bar.close()
        print(f"\nextract: interrupted; {_kept(args.output)}rerun to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    bar.close()
    summary = (
        f"extract: {results.done} done, {results.failed} failed, {results.resumed} skipped (already done); "
        f"estimated cost ${results.estimated_cost:.6f}; {results.rate_limited} rate-limited answer(s); "
        f"{results.requeued} requeue(s)"
    )
    if results.cached_calls:
        summary += f"; {results.cached_calls} request(s) answered by the cache, saving ${results.saved_cost:.6f}"
    print(summary, file=sys.stderr)
    if results.stopped_at_cost:
        print(
            f"extract: stopped at --max-cost ${args.max_cost:g}: {results.resumed + results.done + results.failed} "
            f"of {len(input_ids)} input(s) have a record, {results.not_started} not started; rerun the same "
            "command (with a higher --max-cost) to resume",
            file=sys.stderr,
        )
        return EXIT_SOME_FAILED
    if results.failed:
        print(f"extract: failures are listed in {errors_path}", file=sys.stderr)
    return EXIT_SOME_FAILED if results.failed else EXIT_DONE


def _kept(output: Path) -> str:
    """The words saying that finished records are kept, when `output` holds some (else nothing: a run that
    wrote no record leaves no file, and a message must not point to one)."""
    try:
        held = output.stat().st_size > 0
    except OSError:
        held = False
    return f"finished records are kept in {output}; " if held else ""


def check_paths(input_path: Path, output: Path, errors: Path) -> None:
    """Refuse outputs that cannot work before anything is read or written.

    A directory cannot take records, and an input that is also the output or errors file would be appended
    to (or emptied) while it is being read.
    """
    for name, path in (("--output", output), ("--errors", errors)):
        if path.is_dir():
            raise ConfigurationError(f"{name} {str(path)!r} is a directory; give a file such as out.jsonl")
        if _same_file(input_path, path):
            raise ConfigurationError(f"{name} {str(path)!r} is the input file; results need a file of their own")
    if _same_file(output, errors):
        raise ConfigurationError("the output and errors files must differ")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and a.samefile(b) or a.resolve() == b.resolve()
    except OSError:
        return False
