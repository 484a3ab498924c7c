"""Stopping a batch whose endpoint cannot be reached, instead of requeueing every input against it.

An input whose requests fail transiently is run again later (`engine.Batch`), which is right for a 429 or a
5xx. When no connection can be made at all (a wrong base URL, a refused port, a host name that does not
resolve, TLS or a proxy failing; `transport.reach`), every input would wait out all its requeues, about
half a minute each, and end as an error record that a rerun has to redo anyway. So the batch stops: at the
first such failure when no request of the run has been answered yet (a setup mistake), or after `streak`
of them in a row once it has (the network went away). The inputs it stops are not marked failed; a rerun
resumes them.
"""

from __future__ import annotations

from ..errors import ConnectionFailedError
from ..transport.reach import unreachable

#: What a user can check, said by the error that stops the batch.
WHAT_TO_CHECK = (
    "check the base URL (--base-url, base_url= or DEEPINFRA_BASE_URL), the network and the proxy variables "
    "(HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY)"
)


class Breaker:
    """Told how every run of an input ended; `trip` gives the error that stops the batch, or None."""

    def __init__(self, streak: int) -> None:
        self.streak = max(1, streak)
        self.answered = False  # some request of this run reached the server
        self._failing = 0  # connection failures in a row since the last outcome that reached it

    def trip(self, failure: BaseException | None) -> ConnectionFailedError | None:
        """`failure`: the error of a run that is to be requeued, None for a run that ended otherwise."""
        error = unreachable(failure) if failure is not None else None
        if error is None:
            self.answered = True
            self._failing = 0
            return None
        self._failing += 1
        if self.answered and self._failing < self.streak:
            return None
        if self.answered:
            when = f"the last {self._failing} runs of inputs could not connect, after earlier answers"
        else:
            when = "no request of this run was answered"
        return ConnectionFailedError(
            f"cannot connect to {error.base_url}: {error.reason}; {when}. {WHAT_TO_CHECK[0].upper()}"
            f"{WHAT_TO_CHECK[1:]}. No input was marked failed: a rerun resumes",
            base_url=error.base_url,
            reason=error.reason,
            model=error.model,
        )
