"""guidance's local engine driven by a model's answer: the reference the plugin's grammar path is compared to.

`guidance.models.Mock` forces tokens along byte patterns that must prefix the engine's current byte string.
A hidden stop is backtracked out of that string, so after one no pattern of the model's raw answer matches
any more and Mock samples at random (``Mock(b"<s>Name: Alice, age 42")`` on ``"Name: " + gen("name",
stop=",") + " age " + gen("age", regex=r"\\d+")`` sets ``age='1'``). A chat model, though, writes its whole
answer itself. `AnswerEngine` is guidance's own `MockEngine` (so tokenization, masks, forced tokens,
backtracking of hidden stops, captures, ``list_append``, ``save_stop_text`` and end-of-sequence handling are
all guidance's and llguidance's, unchanged) where the model proposes the answer's bytes in order:

* each sampled token is the answer's next byte; when the answer is used up the model proposes its
  end-of-sequence token. guidance's engine itself turns a forbidden token at a point where the grammar may
  end into end-of-sequence (``can_finish_early``), so trailing prose ends the run as it would locally;
* text the grammar forces is inserted by guidance's engine, not sampled; the model does not say again what
  it sees inserted: forced bytes the answer also has at that point are skipped (after a hidden stop, first
  from where the stop began, else after it); an answer that leaves out forced text right after a hidden
  stop goes on where it stops agreeing with it, and anywhere else an answer saying something other than the
  forced text is not one the local model would write (`AnswerLeavesGrammar`);
* where the answer is used up inside a ``gen(stop=...)`` (llguidance masks end-of-sequence there), the model
  writes that gen's stop once, its likeliest allowed token (`closing_stops`: per answer, the stop of the gen
  it may end in);
* a byte the grammar forbids where it cannot end means a local model would have written something else:
  the reference raises `AnswerLeavesGrammar` and the answer is not one a local run follows.

These are the rules `guidance_deepinfra.enforcement.follow` states for DeepInfra's answers; everything else comes from
guidance's engine, which is what the differential tests compare against.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from guidance._schema import GenTokenExtra, SamplingParams
from guidance.models._base import Model
from guidance.models._engine import EngineInterpreter
from guidance.models._mock import MockEngine, MockTokenizer

EOS = 0


class AnswerLeavesGrammar(Exception):
    """The answer has a byte the grammar forbids where it cannot end: a local model could not say it."""


class RunawayReference(AssertionError):
    """The reference kept generating past its answer: a bug in the reference, failing the test."""


def byte_token(byte: int) -> int:
    return byte + 1  # token 0 is <s> (end of sequence), then one token per byte


class AnswerEngine(MockEngine):
    """guidance's MockEngine whose model writes given answers, one per generation call."""

    def __init__(self, answers: Sequence[str], closing_stops: Sequence[str | None] = ()) -> None:
        tokenizer = MockTokenizer([b"<s>"] + [bytes([i]) for i in range(256)], special_token_ids=[0])
        super().__init__(tokenizer, byte_patterns=[], force=True)
        self.pending = [a.encode() for a in answers]
        self.pending_closing = [s.encode() if s else b"" for s in closing_stops]
        self.closing = b""
        self.answer = b""
        self.position = 0
        #: Per generation call: whether the model wrote a stop to end it (its answer ended inside a stop gen).
        self.closed_with_stop: list[bool] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        self.answer = self.pending.pop(0) if self.pending else b""
        self.closing = self.pending_closing.pop(0) if self.pending_closing else b""
        self.position = 0
        self.steps = 0
        self.closed_with_stop.append(False)
        usage = yield from self._observed(super().__call__(*args, **kwargs))
        return usage

    def _observed(self, responses: Any) -> Any:
        while True:
            try:
                response = next(responses)
            except StopIteration as done:
                return done.value
            self._align(response)
            yield response

    def _align(self, response: Any) -> None:
        tokens = list(response.tokens)
        stop_start: int | None = None
        if tokens and not tokens[0].is_input and not tokens[0].is_force_forwarded:
            issued = tokens.pop(0)
            if issued.is_backtracked and issued.token_id != EOS:
                stop_start = self.position - 1 - len(response.backtrack_bytes)
        forced = b"".join(t.bytes for t in tokens if t.is_force_forwarded or t.is_input)
        if forced.startswith(b"<s>"):
            forced = forced[3:]
        if not forced:
            return
        starts = [stop_start, self.position] if stop_start is not None else [self.position]
        for start in starts:
            said = self.answer[start : start + len(forced)]
            if said == forced or (said and forced.startswith(said) and start + len(said) == len(self.answer)):
                self.position = start + len(said)
                return
        rest = self.answer[self.position :]
        agreed = 0
        while agreed < min(len(rest), len(forced)) and rest[agreed] == forced[agreed]:
            agreed += 1
        self.position += agreed
        if agreed < len(rest) and stop_start is None:
            raise AnswerLeavesGrammar(f"the answer says {rest[agreed:][:10]!r} where the grammar forces {forced!r}")

    def get_logits(self, token_ids: list[int], include_all_uncached_tokens: bool = False) -> Any:
        return {"logits": np.zeros((1, len(self.tokenizer.tokens))), "n_tokens": len(token_ids), "n_cached": 0}

    def get_next_token_with_top_k(
        self,
        logits: Any,
        logits_lat_ms: Any,
        token_ids: list[int],
        mask: bytes | None,
        temperature: float,
        k: int,
        compute_unmasked_probs: bool,
        sampling_params: SamplingParams | None,
    ) -> GenTokenExtra:
        self.steps += 1
        if self.steps > 4 * len(self.answer) + 64:
            raise RunawayReference(f"the reference ran past its answer {self.answer!r}")
        if self.position >= len(self.answer) and mask is not None and not mask[EOS] and self.closing:
            if not self.closed_with_stop[-1] and mask[byte_token(self.closing[0])]:
                self.answer += self.closing  # once: the stop of the gen the answer ended in
                self.closed_with_stop[-1] = True
        if self.position < len(self.answer):
            token = byte_token(self.answer[self.position])
            if mask is not None and not mask[token]:
                shown = self.answer[: self.position].decode(errors="replace")
                raise AnswerLeavesGrammar(f"the grammar forbids {self.answer[self.position :][:10]!r} after {shown!r}")
            self.position += 1
        else:
            token = EOS
            if mask is not None and not mask[EOS]:
                raise AnswerLeavesGrammar("the answer ends where the grammar cannot")
        return GenTokenExtra(token_id=token, bytes=self.tokenizer.tokens[token], prob=1.0, is_generated=True)


def local_model(answers: Sequence[str], closing_stops: Sequence[str | None] = ()) -> tuple[Model, AnswerEngine]:
    """A local guidance model (guidance's engine interpreter) whose model writes `answers` in turn."""
    engine = AnswerEngine(answers, closing_stops)
    return Model(interpreter=EngineInterpreter(engine), echo=False, sampling_params=SamplingParams()), engine
