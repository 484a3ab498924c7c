"""The strategy ladder that makes DeepInfra's free text satisfy a guidance grammar.

DeepInfra enforces no regex or grammar (its ``regex`` response format is unverified), so every answer is
checked on the client by llguidance (`enforcement.matcher`). Each rung is tried only where it can help:

1. server: a regular grammar is also sent as ``response_format`` -- ``{"type": "regex"}`` when the model's
   profile says it is supported, else a JSON Schema string ``pattern``/``enum`` (the reply is a JSON string,
   decoded here). Used only when the translation keeps the meaning (`lowering.pattern`); checked like the rest.
2. forced prefix: the text the grammar forces at the start is sent as the trailing assistant message, so
   the model starts right and does not pay for those tokens.
3. trim: a reply that is a match followed by extra text is cut where the match ends (the longest prefix that
   is a complete match); a reply with exactly one match embedded in prose gives that match. No request.
4. repair: a reply that goes wrong after a valid start keeps the longest prefix llguidance accepts and asks
   DeepInfra to continue it (trailing assistant message = program text + accepted prefix).
5. feedback: a follow-up user message quotes the rejected answer, says where it went wrong and states the
   constraint in plain words (the regex, or the Lark grammar); then a fresh answer is requested.

Every request counts against ``max_attempts`` and the token budget (`limits`) in the one attempt loop
(`enforcement.attempts.AttemptLoop`, shared with json and select); when they run out a
`ConstraintError` lists every attempt. The program only ever receives text llguidance accepted.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from guidance._ast import GrammarNode, RegexNode, RuleNode

from ..bounds import current_limits
from ..errors import Attempt, ConstraintError, InvalidParameterError, UnsupportedFeatureError
from ..interpreter.grammar_attrs import request_attributes
from ..interpreter.logprobs import Piece, carried_pieces, grammar_capture_log_probs, reply_pieces
from ..interpreter.reasoning import budget_spent
from ..lowering import prompts
from ..lowering.pattern import ServerForm, is_regular, server_form
from .attempts import AttemptLoop, Stop, run_attempts
from .follow import Followed
from .matcher import CompiledGrammar, Verdict

if TYPE_CHECKING:
    from ..interpreter.base import CallResult, DeepInfraBaseInterpreter

StepKind = Literal["server-regex", "server-json", "generate", "repair", "feedback"]


@dataclass(frozen=True)
class LadderOptions:
    """Which rungs are used. `PLAIN_RETRY` (all off) resends the same request and takes only exact answers."""

    server: bool = True
    forced_prefix: bool = True
    trim: bool = True
    repair: bool = True
    feedback: bool = True


LADDER = LadderOptions()
PLAIN_RETRY = LadderOptions(server=False, forced_prefix=False, trim=False, repair=False, feedback=False)


@dataclass
class Step:
    """One planned request: its strategy and the accepted text it continues (repair only)."""

    kind: StepKind
    kept: str = ""


class GrammarLadder:
    """Runs the ladder for one grammar node on one interpreter state: the `AttemptStrategy` of a grammar, whose
    answers are the replies as collected (`CallResult`) and whose accepted value is the local run along the
    accepted text (`Followed`)."""

    error_type = ConstraintError

    def __init__(
        self,
        interpreter: DeepInfraBaseInterpreter,
        node: GrammarNode,
        compiled: CompiledGrammar,
        *,
        kind: str,
        options: LadderOptions,
        sampling_params: dict[str, Any] | None = None,
    ) -> None:
        self.interpreter = interpreter
        self.node = node
        self.compiled = compiled
        self._kind = kind
        self.sampling_params = sampling_params
        profile = interpreter.profile
        continuation = profile.continuation
        self.options = LadderOptions(
            server=options.server,
            forced_prefix=options.forced_prefix and continuation,
            trim=options.trim,
            repair=options.repair and continuation,
            feedback=options.feedback,
        )
        self.forced = compiled.forced_prefix if self.options.forced_prefix else ""
        messages = interpreter.request_messages()
        if interpreter.state.content:
            self.prefix: str = str(messages[-1].get("content") or "")
            self.base: list[dict[str, Any]] = messages[:-1]
        else:
            self.prefix, self.base = "", messages
        #: The latest rejected answer (as the model wrote it, after the program's text) and its feedback.
        self.rejected: tuple[str, str] | None = None
        self.rule = node if isinstance(node, RuleNode) else None
        self.attributes = request_attributes(node)  # refuses gens that disagree on temperature
        self.user_bound = self.attributes.user_bound
        # The server form covers what follows the forced prefix when that prefix is leading literal text
        # (it is then sent as assistant text, as on the other rungs); otherwise it covers the whole grammar.
        self.server_skip = self.forced
        self.server_form: ServerForm | None = None
        if self.options.server:
            self.server_form = server_form(node, skip=self.forced)
            if self.server_form is None and self.forced:
                self.server_skip = ""
                self.server_form = server_form(node)
        self.attempts: list[Attempt] = []
        #: Why the last answer was empty when its model spent the budget reasoning (`budget_spent`).
        self.spent_reasoning = ""
        self.step = self._first_step()
        #: Which request generated which bytes of each candidate answer judged so far (for log probabilities).
        self.layouts: dict[str, list[Piece]] = {}

    # ------------------------------------------------------------------ the loop

    def run(self) -> Generator[Any, None, Followed]:
        """The local run of the grammar along the accepted answer (program text and captures)."""
        limits = current_limits(self.interpreter.max_attempts)
        loop: AttemptLoop[CallResult, Followed] = AttemptLoop(
            self,
            usage=self.interpreter.state.usage,
            max_attempts=limits.max_attempts or 1,
            token_budget=limits.token_budget,
            model=self.interpreter.model,
        )
        labels = self.interpreter.attempt_labels(self.rule.capture if self.rule is not None else None)
        return (yield from run_attempts(loop, self._collect, labels))

    def _collect(self, body: dict[str, Any]) -> Generator[Any, None, CallResult]:
        yield from ()  # not streamed: only a checked answer reaches the program
        return self.interpreter.collect(body)

    def kind(self) -> str:
        return self._kind

    def next_request(self, remaining_tokens: int | None) -> dict[str, Any]:
        return self._body(self.step, remaining_tokens)

    def judge(self, answer: CallResult) -> tuple[Followed | None, bool]:
        if answer.reasoning_spent:  # no answer to judge, and asking again with the same budget gives none
            self.spent_reasoning = budget_spent(self.attributes.max_tokens)
            self.attempts.append(Attempt(answer.text, (self.spent_reasoning,), self.step.kind))
            return None, True
        accepted, self.step = self._judge(self.step, answer)
        return accepted, False

    def format_refused(self, exc: UnsupportedFeatureError | InvalidParameterError) -> bool:
        """A server step whose form the model refused: nothing was generated, fall through to free text."""
        if not self.step.kind.startswith("server"):
            return False
        self.attempts.append(Attempt("", (f"server refused the format: {exc.message}",), self.step.kind))
        self.server_form = None
        self.step = Step("generate")
        return True

    def failure(self, stop: Stop) -> str:
        if stop.reason == "hopeless" and self.spent_reasoning:
            return f"{self.spent_reasoning}; nothing was written to the program"
        if stop.reason == "budget":
            why = f"the token budget of {stop.budget} was spent ({stop.spent} tokens)"
        else:
            why = f"no answer satisfied the {self._kind} constraint in {stop.answers} attempt(s)"
        return f"{why}; nothing was written to the program"

    def _first_step(self) -> Step:
        if self.server_form is not None:
            profile = self.interpreter.profile
            if profile.regex_format:
                return Step("server-regex")
            if profile.json_schema:
                return Step("server-json")
        return Step("generate")

    # ------------------------------------------------------------------ requests

    def _body(self, step: Step, remaining_tokens: int | None) -> dict[str, Any]:
        response_format: dict[str, Any] | None = None
        if step.kind == "server-regex" and self.server_form is not None:
            response_format = {"type": "regex", "regex": self.server_form.regex}
            messages = prompts.conversation(self.base, trailing=self.prefix + self.server_skip)
        elif step.kind == "server-json" and self.server_form is not None:
            response_format = {
                "type": "json_schema",
                "json_schema": {"name": "constrained_text", "schema": self.server_form.json_schema()},
            }
            messages = prompts.conversation(self.base, trailing=self.prefix + self.server_skip)
        else:
            continued = step.kept if step.kind == "repair" else self.forced
            rejected, feedback = self.rejected or ("", None)
            messages = prompts.conversation(
                self.base, rejected=rejected, feedback=feedback, trailing=self.prefix + continued
            )
        max_tokens = self.attributes.max_tokens
        if remaining_tokens is not None:
            max_tokens = min(max_tokens, remaining_tokens) if max_tokens else remaining_tokens
        return self.interpreter.build_body(
            messages=messages,
            sampling_params=self.sampling_params,
            temperature=self.attributes.temperature,
            max_tokens=max_tokens,
            response_format=response_format,
        )

    # ------------------------------------------------------------------ judging a reply

    def _candidates(self, step: Step, reply: str) -> list[str]:
        if step.kind.startswith("server"):
            text = _json_string(reply) if step.kind == "server-json" else reply
            return [self.server_skip + text, text]
        if step.kind == "repair":
            # A model may restart instead of continuing: judged too, but only when the reply visibly starts
            # over (it begins like the kept text), never as a different answer of its own.
            restart = self.forced + reply
            same_start = min(len(step.kept), len(self.forced) + 3)
            if restart[:same_start] == step.kept[:same_start]:
                return [restart, step.kept + reply]  # first wins a tie: the model said it all again
            return [step.kept + reply]
        return [self.forced + reply]

    def _judge(self, step: Step, result: CallResult) -> tuple[Followed | None, Step]:
        """Accept an answer, or choose the next step.

        An answer is first followed as a local model's run would (`enforcement.follow`): llguidance inserts the text the
        grammar forces, hides stops and ends where the answer ends; an answer it completes is taken. Otherwise
        the order follows what a local model would have done: its tokens are the same up to the first one the
        grammar forbids (the deviation point). If the grammar may end there, the text ends there (extra prose
        is cut); if not, generation goes on from there (repair), with any bytes the grammar forces. Only
        without a valid start is a single match embedded in the reply taken, and only if unambiguous.
        """
        candidates = list(dict.fromkeys(self._candidates(step, result.text)))
        self._lay_out(step, result, candidates)
        verdicts = [self.compiled.check(c) for c in candidates]
        verdict = max(verdicts, key=_rank)
        forced_len = len(self.forced.encode())
        progress_from = len(step.kept.encode()) if step.kind == "repair" else forced_len
        cut_off = result.finish_reason == "length" and not self.user_bound
        whole_viable = verdict.viable == verdict.size
        truncated = cut_off and whole_viable and verdict.can_extend
        if truncated:
            # DeepInfra's own output limit cut the answer and the grammar allows more: the answer is not the
            # model's whole answer, so it is neither taken as it is nor cut to a match; it is continued.
            reason = "cut off by the output limit before the answer ended"
            self.attempts.append(Attempt(verdict.text, (reason,), step.kind))
            if self.options.repair and verdict.viable > progress_from:
                return None, Step("repair", kept=verdict.text + verdict.forced_next)
            return None, self._retry(verdict, reason)
        can_repair = self.options.repair and verdict.viable > progress_from
        for candidate in candidates:
            followed = self._local_run(candidate, can_repair=can_repair)
            if followed is not None:
                return self._take(followed, candidate, step)
        if verdict.complete:
            return self._accept_trimmed(verdict, step, verdict.text, "")
        trim = self.options.trim
        at_end = verdict.longest_match == verdict.viable and verdict.viable > forced_len
        if trim and at_end and (not can_repair or not verdict.can_extend or _ends_there(verdict)):
            return self._accept_trimmed(verdict, step, verdict.viable_text, "cut after the match")
        reason = explain(verdict, finish_reason=result.finish_reason)
        if can_repair:
            kept = verdict.viable_text + verdict.forced_next
            if trim and verdict.forced_next and self.compiled.is_match(kept):
                return self._accept_trimmed(verdict, step, kept, "completed with the text the grammar forces")
            self.attempts.append(Attempt(verdict.text, (reason,), step.kind))
            return None, Step("repair", kept=kept)
        longest = verdict.longest_match
        if trim and longest is not None and longest > forced_len and _ends_there(verdict, longest):
            return self._accept_trimmed(verdict, step, verdict.matched_text or "", "cut to the longest match")
        if trim and verdict.viable <= forced_len and step.kind != "repair":
            span = self.compiled.find_embedded(verdict.text)
            if span is not None and span[1] - span[0] > len(self.forced):
                embedded = verdict.text[span[0] : span[1]]
                return self._accept_trimmed(verdict, step, embedded, "took the one match in the reply")
        self.attempts.append(Attempt(verdict.text, (reason,), step.kind))
        return None, self._retry(verdict, reason)

    def _local_run(self, candidate: str, *, can_repair: bool) -> Followed | None:
        """The local run along `candidate` when it is one the ladder takes as it is (or cut as a local
        model stops: where the grammar ends, or, with trimming on, before text that reads as prose after
        the answer rather than a slip inside it, which repair continues instead)."""
        followed = self.compiled.follow(candidate)
        if not followed.complete:
            return None
        data = candidate.encode()
        if not self.options.trim and not self.compiled.is_match(candidate):
            return None  # without trimming only an answer that is a match as it stands is taken
        if followed.consumed >= len(data):
            return followed
        if not self.options.trim or (followed.consumed <= len(self.forced.encode()) and not followed.stopped):
            return None
        rest = data[followed.consumed :].decode("utf-8", errors="replace")
        kept = data[: followed.consumed].decode("utf-8", errors="replace")
        if followed.stopped or not can_repair or _reads_as_after(rest) or kept[-1:].isspace():
            return followed
        return None

    def _take(self, followed: Followed, candidate: str, step: Step) -> tuple[Followed, Step]:
        size = len(candidate.encode())
        notes: tuple[str, ...] = ()
        if followed.consumed < size:
            kept = candidate.encode()[: followed.consumed].decode("utf-8", errors="replace")
            notes = (f"cut after the match: {kept!r}",)
        self.attempts.append(Attempt(candidate, notes, step.kind))
        return self._scored(followed, candidate), step

    def _retry(self, verdict: Verdict, reason: str) -> Step:
        """A fresh answer: with feedback when that rung is on, else the same request again."""
        if self.options.feedback:
            self._add_feedback(verdict, reason)
            return Step("feedback")
        return Step("generate")

    def _accept_trimmed(self, verdict: Verdict, step: Step, text: str, how: str) -> tuple[Followed | None, Step]:
        followed = self.compiled.follow(text)
        if not followed.complete:  # the matcher and the local run disagree: never write an unchecked text
            reason = "the answer does not end where the grammar may end"
            self.attempts.append(Attempt(verdict.text, (reason,), step.kind))
            return None, self._retry(verdict, reason)
        self.attempts.append(Attempt(verdict.text, (f"{how}: {text!r}",) if how else (), step.kind))
        return self._scored(followed, text), step

    # ------------------------------------------------------------------ log probabilities

    def _lay_out(self, step: Step, result: CallResult, candidates: list[str]) -> None:
        """Record which request generated which bytes of each candidate (see `interpreter.logprobs.Piece`)."""
        tokens = self.interpreter.request_tokens
        decoded = _json_string(result.text) if step.kind == "server-json" else None
        for candidate in candidates:
            earlier: list[Piece] = []
            if step.kind == "repair" and candidate.startswith(step.kept):
                earlier = carried_pieces(self.layouts, step.kept)
            self.layouts[candidate] = earlier + reply_pieces(candidate, result.text, tokens, decoded=decoded)

    def _scored(self, followed: Followed, answer: str) -> Followed:
        """Give the followed answer's captures their log probabilities from the requests that wrote them."""
        pieces = carried_pieces(self.layouts, answer)
        followed.log_probs = grammar_capture_log_probs(answer, followed.captures, followed.capture_ends, pieces)
        return followed

    def _add_feedback(self, verdict: Verdict, reason: str) -> None:
        """Show the rejected answer and ask again in every later request (`prompts.conversation`)."""
        self.rejected = (self.prefix + verdict.text, self.feedback_message(verdict.text, reason))

    def feedback_message(self, rejected: str, reason: str) -> str:
        shown = rejected if len(rejected) <= 400 else rejected[:400] + "..."
        lines = [
            "Your previous answer does not have the required form.",
            f"Rejected answer: {json.dumps(shown, ensure_ascii=False)}",
            f"Problem: {reason}.",
            self.requirement(),
        ]
        if self.compiled.forced_prefix:
            lines.append(f"The answer must begin with {json.dumps(self.compiled.forced_prefix, ensure_ascii=False)}.")
        if self.prefix:
            lines.append(f"It continues the text {json.dumps(self.prefix[-200:], ensure_ascii=False)}.")
        lines.append("Reply again with only the answer in exactly that form: no explanation, no quotes, no extra text.")
        return "\n".join(lines)

    def requirement(self) -> str:
        """The constraint in plain words: a regex when there is one, else the Lark grammar."""
        regex = _plain_regex(self.node)
        if regex is not None:
            return f"The answer must match this regular expression in full: {regex}"
        form = server_form(self.node)
        if form is not None:
            return f"The answer must match this regular expression in full: {form.regex}"
        grammar = self.compiled.grammar.replace("%llguidance {}\n", "").strip()
        return f"The answer must be derivable from the rule `start` of this Lark grammar:\n{grammar}"

    def describe(self) -> str:
        regex = _plain_regex(self.node)
        what = f"regex /{regex}/" if regex is not None else f"grammar {self.compiled.grammar.strip()!r}"
        capture = self.rule.capture if self.rule is not None else None
        return f"{what} (capture {capture!r})" if capture else what


def explain(verdict: Verdict, *, finish_reason: str | None = None) -> str:
    """Why a text is not a match, in words a model (and a user reading an error) can act on."""
    data = verdict.text.encode()
    if verdict.viable < len(data):
        before = verdict.prefix(verdict.viable)[-30:]
        after = data[verdict.viable :].decode("utf-8", errors="replace")[:30]
        if verdict.viable == 0:
            return f"it is wrong from the first character ({after!r})"
        return f"it is right up to {before!r} but {after!r} cannot follow"
    cut = " (the reply was cut off by the token limit)" if finish_reason == "length" else ""
    return f"it is incomplete: the text ends before the required form is finished{cut}"


def _ends_there(verdict: Verdict, at: int | None = None) -> bool:
    """Whether the text after byte `at` (default: the viable prefix) reads as text after an answer."""
    rest = verdict.text.encode()[verdict.viable if at is None else at :].decode("utf-8", errors="replace")
    return _reads_as_after(rest)


def _reads_as_after(rest: str) -> bool:
    """Whether `rest` reads as text after an answer (a space, a line break, closing punctuation) rather than
    a slip inside it (``(3+4)x12``), which is continued."""
    return rest[:1].isspace() or (rest[:1] in ".,;:!?)" and (len(rest) == 1 or rest[1:2].isspace()))


def _rank(verdict: Verdict) -> tuple[bool, bool, int]:
    """Complete beats incomplete; among complete texts the first candidate wins (not the longest)."""
    return verdict.complete, verdict.longest_match is not None, 0 if verdict.complete else verdict.viable


def _json_string(reply: str) -> str:
    """The text of a JSON-string reply (also one cut off before its closing quote); else the raw reply."""
    value = prompts.json_reply(reply, cut_off=True)
    return value if isinstance(value, str) else reply


def _plain_regex(node: GrammarNode) -> str | None:
    """The user's own regex when the node is just one (``gen(regex=...)`` or ``regex()``)."""
    inner: GrammarNode = node
    while isinstance(inner, RuleNode) and inner.stop is None and inner.suffix is None:
        inner = inner.value
    if isinstance(inner, RegexNode) and inner.regex is not None:
        return inner.regex
    return None


def constraint_kind(node: GrammarNode) -> str:
    """The usage bucket: ``regex`` for a regular language (regexes, literals, selects, joins, repeats),
    ``grammar`` for everything else (Lark, recursion, stops, subgrammars)."""
    return "regex" if is_regular(node) else "grammar"
