"""What a local model's run of a grammar gives for a model's answer: program text and captures.

A local model runs a guidance grammar through llguidance's interpreter one token at a time: the interpreter
masks what may come next, inserts text the grammar forces without the model generating it, drops a hidden
stop string once it is complete (``gen(stop=...)``), reports each capture (also ``save_stop_text`` and
``list_append``) as its rule closes, and ends generation at the model's end-of-sequence token when the grammar
accepts there. Here the same interpreter, on the same grammar, is forced along the bytes DeepInfra's model
answered, one byte per token, so the program text and captures are llguidance's own, never read from the
grammar's text.

How an answer is aligned with the interpreter, where a chat model writes everything itself:

* Text the grammar forces (a literal between two gens) is inserted by the interpreter, as locally; the
  answer normally says it too, and those bytes are matched against the forced text, as guidance's own
  ``ByteParser`` does in fast-forward mode. After a hidden stop the forced text is first matched from where
  the stop began (``gen(stop="\\n") + "\\n- GPT " + ...`` answered ``...\\n- GPT 4``: the stop was the forced
  text's first byte) and else from after the stop (``gen(stop=",") + " age " + ...`` answered
  ``Alice, age 42``).
* An answer that leaves out forced text right after a hidden stop (``Alice,42`` there) gets it inserted, as
  a local model would have had it inserted; the answer goes on where it stops agreeing with the forced text.
  Anywhere else an answer that says something other than the forced text deviates there (``["a":1,xbc"]``
  for ``"["`` items ``/"[a-z]+"/``: a typo, which the ladder repairs, not a ``"`` to insert before ``x``).
* Where the answer ends, the model has stopped: the run ends as a local one ending in end-of-sequence,
  allowed wherever the grammar may end. llguidance masks end-of-sequence inside a ``gen(stop=...)``, so a
  local model that wants to stop there writes the stop instead (its likeliest allowed token); an answer that
  simply ends inside such a gen is therefore closed with that gen's stop (hidden, as always; a
  ``save_stop_text`` capture of a stop the model never wrote is ``""``, as for a plain ``gen``).
* An answer byte the grammar forbids at a point where the grammar may end ends the run there too
  (a local engine treats a forbidden token at an accepting point as end-of-sequence); the
  rest is reported as trailing text.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

import llguidance

_EOS = 256
_LIST_APPEND = "__LIST_APPEND:"

Status = Literal["complete", "deviates", "incomplete"]


class GrammarEngineFailure(Exception):
    """llguidance failed on a grammar (an internal error, as it fails for a local model on the same grammar)."""


@dataclass
class Followed:
    """The interpreter's run along one answer.

    ``status``: ``complete`` when the grammar ended (stopped or accepted end-of-sequence), ``deviates`` when
    an answer byte is one the grammar forbids where it cannot end, ``incomplete`` when the answer ended where
    the grammar cannot. ``consumed``: answer bytes used (the rest is trailing text, or the deviation).
    ``text``: the program text llguidance emitted (forced text included, hidden stops excluded).
    ``captures``: name to value, a list of values for ``list_append`` names.
    """

    status: Status
    consumed: int
    text: str
    captures: dict[str, Any] = field(default_factory=dict)
    #: The grammar itself ended (nothing may follow), rather than the answer or an end-of-sequence.
    stopped: bool = False
    #: Per capture, the answer bytes read when it was reported (a list for list_append), to place it.
    capture_ends: dict[str, Any] = field(default_factory=dict)
    #: Per capture, its log probability (filled in by the ladder from the requests' token logprobs).
    log_probs: dict[str, Any] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.status == "complete"


@lru_cache(maxsize=1)
def eos_tokenizer() -> llguidance.LLTokenizer:
    """One token per byte plus a special end-of-sequence token (256), as a local model's tokenizer has.

    guidance's ``ByteTokenizer`` does not mark its end token special, so llguidance would read it as the
    three bytes ``<s>`` inside a ``gen()``; here it ends generation as a local model's does.
    """
    from guidance.models._engine._tokenizer import TokenizerWrappable

    tokens = [bytes([i]) for i in range(256)] + [b"<eos>"]
    wrappable = TokenizerWrappable(
        eos_token_id=_EOS, bos_token_id=None, tokens=tokens, special_token_ids=[_EOS], encode_callable=list
    )
    return wrappable.as_ll_tokenizer()


class Follower:
    """llguidance's interpreter for one grammar, built once and copied for each answer followed.

    `closing_stops`: the literal stops of the grammar's gens, tried in turn to close an answer that ends
    inside a ``gen(stop=...)``; `stop_captures`: the ``save_stop_text`` names.
    """

    def __init__(
        self, grammar: str, *, closing_stops: tuple[str, ...] = (), stop_captures: frozenset[str] = frozenset()
    ) -> None:
        self._tokenizer = eos_tokenizer()
        self._grammar = grammar
        self._closing = tuple(dict.fromkeys(s.encode() for s in closing_stops if s))
        self._stop_captures = stop_captures
        self._template: llguidance.LLInterpreter | None = None
        self._lock = threading.Lock()

    def _fresh(self) -> llguidance.LLInterpreter:
        with self._lock:
            if self._template is None:
                self._template = llguidance.LLInterpreter(self._tokenizer, self._grammar, True, True, log_level=0)
            return self._template.deep_copy()

    def follow(self, answer: str) -> Followed:
        """Run the grammar along `answer` (the forced prefix included) as a local model would have."""
        try:
            run = _Run(self._fresh(), answer.encode())
            followed = run.go()
            if followed.status == "incomplete" and run.position >= len(run.answer):
                followed = self._close(run) or followed
            return followed
        except ValueError as exc:  # llguidance reports its internal failures (panics) as ValueError
            with self._lock:
                self._template = None  # a failure may poison the template the copy came from: build afresh
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "internal error"
            raise GrammarEngineFailure(first) from None

    def _close(self, run: _Run) -> Followed | None:
        """End an answer that stopped inside a ``gen(stop=...)`` with that gen's stop, if one closes it."""
        for stop in self._closing:
            trial = _Run(run.interpreter.deep_copy(), run.answer + stop)
            trial.position = run.position
            trial.emitted = bytearray(run.emitted)
            trial.captures = dict(run.captures)
            trial.capture_ends = {k: list(v) if isinstance(v, list) else v for k, v in run.capture_ends.items()}
            trial.synthetic_from = len(run.answer)
            ended = trial.go_on()
            if ended.complete:
                ended.consumed = min(ended.consumed, len(run.answer))
                for name in self._stop_captures:
                    if name in trial.late_captures and ended.captures.get(name) == stop.decode(errors="replace"):
                        ended.captures[name] = ""
                return ended
        return None


class _Run:
    def __init__(self, interpreter: llguidance.LLInterpreter, answer: bytes) -> None:
        self.interpreter = interpreter
        self.answer = answer
        self.position = 0
        self.emitted = bytearray()
        self.captures: dict[str, Any] = {}
        self.capture_ends: dict[str, Any] = {}
        self.synthetic_from: int | None = None
        self.late_captures: set[str] = set()

    def go(self) -> Followed:
        forced = self.interpreter.process_prompt([])
        if not self._align(bytes(forced), stop_start=None):
            return self._done("deviates")
        return self.go_on()

    def go_on(self) -> Followed:
        while True:
            mask, stopped = self._step()
            if stopped or mask is None:
                return self._done("complete", stopped=True)
            accepting = bool(mask[_EOS])
            if self.position >= len(self.answer):
                return self._end() if accepting else self._done("incomplete")
            byte = self.answer[self.position]
            if not mask[byte]:
                return self._end() if accepting else self._done("deviates")
            backtrack, tokens = self.interpreter.commit_token(byte)
            self.position += 1
            if backtrack == 0 and tokens[:1] == [byte]:
                aligned = self._align(bytes(tokens[1:]), stop_start=None)
            else:  # a hidden stop: the byte (and `backtrack` earlier ones) left the token sequence
                aligned = self._align(bytes(tokens), stop_start=self.position - 1 - backtrack)
            if not aligned:
                return self._done("deviates")

    def _end(self) -> Followed:
        """End-of-sequence where the grammar may end: flush what closes with it (captures of open rules)."""
        self.interpreter.commit_token(_EOS)
        self._step(at_end=True)
        return self._done("complete")

    def _done(self, status: Status, *, stopped: bool = False) -> Followed:
        return Followed(
            status=status,
            stopped=stopped,
            consumed=self.position,
            text=bytes(self.emitted).decode("utf-8", errors="replace"),
            captures=self.captures,
            capture_ends=self.capture_ends,
        )

    def _step(self, *, at_end: bool = False) -> tuple[Any, bool]:
        mask, raw = self.interpreter.compute_mask()
        response = json.loads(raw)
        for item in response.get("progress", ()):
            kind = item.get("object")
            if kind == "text":
                backtrack = int(item.get("num_backtrack") or 0)
                if backtrack:
                    del self.emitted[len(self.emitted) - backtrack :]
                self.emitted.extend(bytes.fromhex(item.get("hex", "")))
            elif kind == "capture":
                self._capture(item["name"], bytes.fromhex(item.get("hex", "")).decode("utf-8", errors="replace"))
        return mask, bool(response.get("stop"))

    def _capture(self, name: str, value: str) -> None:
        if self.synthetic_from is not None and self.position >= self.synthetic_from:
            self.late_captures.add(name)
        if name.startswith(_LIST_APPEND):
            listed = self.captures.setdefault(name[len(_LIST_APPEND) :], [])
            if isinstance(listed, list):
                listed.append(value)
                ends = self.capture_ends.setdefault(name[len(_LIST_APPEND) :], [])
                if isinstance(ends, list):
                    ends.append(self.position)
        else:
            self.captures[name] = value
            self.capture_ends[name] = self.position

    def _align(self, forced: bytes, *, stop_start: int | None) -> bool:
        """Match text the interpreter inserted against the answer (see the module docstring); False when the
        answer says something else where no hidden stop came before (the answer deviates there)."""
        if not forced:
            return True
        starts = [stop_start, self.position] if stop_start is not None else [self.position]
        for start in starts:
            said = self.answer[start : start + len(forced)]
            if said == forced or (said and forced.startswith(said) and start + len(said) == len(self.answer)):
                self.position = start + len(said)
                return True
        agreed = 0
        rest = self.answer[self.position :]
        while agreed < min(len(rest), len(forced)) and rest[agreed] == forced[agreed]:
            agreed += 1
        self.position += agreed
        return agreed == len(rest) or stop_start is not None
