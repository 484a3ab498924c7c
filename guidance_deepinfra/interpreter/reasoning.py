"""The one place a reply's reasoning is separated from its answer.

Reasoning models on DeepInfra send their reasoning in one of two shapes: in a delta field of its own
(``reasoning_content``, or ``reasoning``), or inline in ``content`` as a leading ``<think>...</think>`` block;
some chat templates put the opening tag in the prompt, so the reply holds only the closing ``</think>``.
Every reply, streamed or not, goes through a `ReasoningSplit` before anything else reads its text: the stop
scanner, the program text, captures, regex/grammar and JSON checks, log probabilities, and every text sent back
as an assistant prefix see the answer only.

The rules:

- a ``<think>`` at the very start of the reply (after optional whitespace) opens reasoning, which runs to the
  first ``</think>``; the whitespace after the closing tag separates the two and belongs to neither;
- a ``<think>`` anywhere later is the answer's own text;
- for a model known to reason inline (`ModelProfile.reasoning` ``"inline"``), text before a ``</think>`` that
  came without an opening tag is reasoning too; such a reply is held back until the closing tag or its end
  (a reply with no closing tag is all answer);
- reasoning in the delta field is reasoning whatever the content says; the whitespace that starts the answer
  after it is dropped, as after a closing tag.

The split is streamed: once the answer has begun, each piece is passed on as it arrives, and before that only
what could still be (part of) a tag is held back.
"""

from __future__ import annotations

from typing import Any, Literal

from ..profile import ReasoningShape

OPEN_TAG = "<think>"
CLOSE_TAG = "</think>"

#: Where one reply's reasoning came from (what `ReasoningSplit.source` reports).
ReasoningSource = Literal["field", "inline", "closing"]

_Phase = Literal["start", "inline", "closing", "after", "answer"]


class ReasoningSplit:
    """Separates one reply's reasoning from its answer, piece by piece as the reply streams.

    Feed ``content`` pieces to `feed` and reasoning-field pieces to `field`; each `feed` returns the answer text
    that may be passed on now, and `finish` what was still held back when the reply ended. `closing_only`
    says whether a closing tag without an opening one ends reasoning (a model known to reason inline).
    """

    def __init__(self, *, closing_only: bool = False) -> None:
        self.closing_only = closing_only
        self._phase: _Phase = "start"
        self._held = ""  # text not yet decided: reasoning so far, or what could still be a tag
        self._searched = 0  # how far `_held` was searched for the closing tag
        self._inline: list[str] = []
        self._field: list[str] = []
        self._fed = 0  # characters of content fed
        #: The character offset in the reply's content where the answer begins (0 when there is no reasoning).
        self.answer_at = 0
        #: True once any answer text has been passed on.
        self.answered = False
        #: The reply opened ``<think>`` and it ended before ``</think>`` (set by `finish`).
        self.unclosed = False
        self.inline_source: ReasoningSource | None = None

    # ----------------------------------------------------------------- feeding

    def field(self, piece: str) -> None:
        """A piece of reasoning that came in the delta's reasoning field."""
        if piece:
            self._field.append(piece)

    def feed(self, piece: str) -> str:
        """A piece of ``content``; returns the answer text that can be passed on now."""
        if not piece:
            return ""
        self._fed += len(piece)
        if self._phase == "answer":
            self.answered = True
            return piece
        self._held += piece
        return self._advance(final=False)

    def finish(self) -> str:
        """The reply ended: the answer text still held back (reasoning is never returned)."""
        text = self._advance(final=True)
        if self._phase == "inline":
            self.unclosed = True
            self._inline.append(self._held)
            self._held = ""
        elif self._phase == "closing":  # no closing tag came: the model answered without reasoning
            text += self._begin_answer(self._held, at=self._fed - len(self._held))
        elif self._phase == "start":  # only whitespace, or the start of a tag that never came
            held = self._held.lstrip() if self._field else self._held
            text += self._begin_answer(held, at=self._fed - len(held))
        self._held = ""
        return text

    # ----------------------------------------------------------------- what was found

    @property
    def reasoning(self) -> str:
        """All reasoning of the reply: the field's, then the inline block's."""
        return "".join(self._field) + "".join(self._inline)

    @property
    def source(self) -> ReasoningSource | None:
        """Where the reasoning came from (``field``, ``inline``, ``closing``), or None for a reply without."""
        if self.inline_source is not None:
            return self.inline_source
        return "field" if self._field else None

    @property
    def shape(self) -> ReasoningShape | None:
        """What the reply shows of how its model reasons (``field``/``inline``), or None when it shows nothing."""
        source = self.source
        if source is None:
            return None
        return "field" if source == "field" else "inline"

    def spent_reasoning(self, finish_reason: str | None) -> bool:
        """True when a reply that ended for its length spent it reasoning: inside the reasoning, or right after
        it with no answer text."""
        if finish_reason != "length":
            return False
        return self.unclosed or (self.source is not None and not self.answered)

    # ----------------------------------------------------------------- the phases

    def _advance(self, *, final: bool) -> str:
        out = ""
        while True:
            phase = self._phase
            if phase == "start":
                stripped = self._held.lstrip()
                if not stripped or (len(stripped) < len(OPEN_TAG) and OPEN_TAG.startswith(stripped) and not final):
                    return out  # whitespace, or what may still become the opening tag
                if stripped.startswith(OPEN_TAG):
                    self._phase, self.inline_source = "inline", "inline"
                    self._held, self._searched = stripped[len(OPEN_TAG) :], 0
                    continue
                if final:
                    return out  # `finish` decides
                if self.closing_only:
                    self._phase, self._searched = "closing", 0
                    continue
                held = stripped if self._field else self._held
                return out + self._begin_answer(held, at=self._fed - len(held))
            if phase in ("inline", "closing"):
                found = self._held.find(CLOSE_TAG, self._searched)
                if found < 0:
                    self._searched = max(0, len(self._held) - len(CLOSE_TAG) + 1)
                    return out
                reasoning = self._held[:found]
                self._inline.append(reasoning.lstrip() if phase == "closing" else reasoning)
                if phase == "closing":
                    self.inline_source = "closing"
                self._held = self._held[found + len(CLOSE_TAG) :]
                self._phase = "after"
                continue
            if phase == "after":
                stripped = self._held.lstrip()
                if not stripped:
                    return out
                return out + self._begin_answer(stripped, at=self._fed - len(stripped))
            return out

    def _begin_answer(self, text: str, *, at: int) -> str:
        self._phase, self._held = "answer", ""
        self.answer_at = at
        if text:
            self.answered = True
        return text


def budget_spent(max_tokens: object) -> str:
    """Why a reply has no answer when its model spent the whole budget reasoning, and what to do."""
    budget = f"its {max_tokens} max_tokens" if isinstance(max_tokens, int) else "its output limit"
    return (
        f"the model spent {budget} reasoning and wrote no answer (finish_reason: length; DeepInfra counts "
        "reasoning as output tokens); raise max_tokens or pass reasoning_effort='low' or 'none'"
    )


class ReasoningEntry(str):
    """One reply's reasoning in `lm.reasoning`: its text (an entry is a ``str``, so code that reads
    `lm.reasoning` as texts keeps working), where it came from, and which attempt of which capture it belongs to.

    `source` is ``field``, ``inline`` or ``closing``; `capture` the capture name of the node the reply answered
    (None for a node without one); `attempt` its attempt number (1 for a plain gen's one request); `accepted`
    whether that attempt's answer was kept (False for the refused attempts of a checked constraint), or None
    while its constraint is still being tried.
    """

    source: ReasoningSource
    capture: str | None
    attempt: int
    accepted: bool | None

    def __new__(
        cls,
        text: str,
        *,
        source: ReasoningSource = "field",
        capture: str | None = None,
        attempt: int = 1,
        accepted: bool | None = None,
    ) -> ReasoningEntry:
        entry = super().__new__(cls, text)
        entry.source, entry.capture, entry.attempt, entry.accepted = source, capture, attempt, accepted
        return entry

    def settled(self, accepted: bool) -> ReasoningEntry:
        """This entry once its constraint ended: `accepted` says whether its attempt was kept."""
        return ReasoningEntry(
            str(self), source=self.source, capture=self.capture, attempt=self.attempt, accepted=accepted
        )

    def __repr__(self) -> str:
        return (
            f"ReasoningEntry({str(self)!r}, source={self.source!r}, capture={self.capture!r}, "
            f"attempt={self.attempt}, accepted={self.accepted})"
        )

    def __reduce__(self) -> Any:
        return (_entry, (str(self), self.source, self.capture, self.attempt, self.accepted))

    def __deepcopy__(self, memo: dict[int, Any]) -> ReasoningEntry:
        return self  # immutable


def _entry(
    text: str, source: ReasoningSource, capture: str | None, attempt: int, accepted: bool | None
) -> ReasoningEntry:
    return ReasoningEntry(text, source=source, capture=capture, attempt=attempt, accepted=accepted)


class AttemptLabels:
    """Labels the reasoning recorded while one node is tried (`lm.reasoning`): each reply's entry gets the
    node's capture and the attempt number in force, and when the node ends, whether its attempt was accepted.

    `entries` is the program state's list of entries; the attempt loop calls `begin_attempt` before each
    request of an attempt and `end_attempts` once, with the accepted attempt's number (None when none was).
    """

    def __init__(self, entries: list[ReasoningEntry], capture: str | None) -> None:
        self.entries = entries
        self.capture = capture
        self.attempt = 1
        self.ended = False
        self._start = len(entries)

    def begin_attempt(self, attempt: int) -> None:
        self.attempt = attempt

    def entry(self, text: str, source: ReasoningSource) -> ReasoningEntry:
        """The entry of one reply's reasoning, labelled with this node's capture and current attempt."""
        return ReasoningEntry(text, source=source, capture=self.capture, attempt=self.attempt)

    def end_attempts(self, accepted: int | None) -> None:
        self.ended = True
        for i in range(self._start, len(self.entries)):
            entry = self.entries[i]
            if entry.accepted is None:
                self.entries[i] = entry.settled(entry.attempt == accepted)


def whole_answer(
    content: str, field_reasoning: str | None = None, *, closing_only: bool = False
) -> tuple[str, ReasoningSplit]:
    """The answer of a reply that arrived whole, and its split (reasoning, source, `unclosed`...)."""
    split = ReasoningSplit(closing_only=closing_only)
    if field_reasoning:
        split.field(field_reasoning)
    answer = split.feed(content) + split.finish()
    return answer, split
