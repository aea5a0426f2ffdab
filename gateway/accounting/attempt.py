"""One attempt on one backend, accounted exactly once whatever its outcome.

An `Attempt` is a context manager: entering takes the backend's slot (its
in-flight count), leaving settles it if nothing else did, so no path can
keep the slot:

    with Attempt(...) as attempt:      # or on an AsyncExitStack handed on
        ...                            # to a relayed stream with pop_all()
        attempt.answered(status, usage)

It is settled once, by whichever of these happens: `answered` (a whole
answer relayed), `streamed` (a stream ended: completed, cut, or the client
left), `failed` (an upstream failure, also what leaving with an
UpstreamError does: the request may be failed over) or `abandoned`
(cancelled, or any other exception: the client gets no answer from it).
Settling frees the slot, records usage or the failure in Feedback, tells
outlier detection whether the backend answered or faulted for this model,
and writes the request line. A second settle is a no-op.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

from gateway.accounting import metrics
from gateway.accounting.feedback import Feedback
from gateway.accounting.request_log import RequestLog
from gateway.routing.balancer import Balancer
from gateway.routing.policy import Backend
from shared.failures import FailureKind, policy_of
from shared.logging import get_logger
from shared.upstream import UpstreamError

log = get_logger("api")
CLIENT_CLOSED = 499  # nginx's code for a client that left before the answer
# Failures on our side of the wire: the backend's request and error counts leave them out.
NEVER_SENT = frozenset({FailureKind.POOL_FULL, FailureKind.UNSENDABLE})


class Observer(Protocol):
    """Told how the attempt ended (the request's Charge: gateway/admission/charge.py)."""

    @property
    def key_id(self) -> str | None: ...

    def answered(self, ok: bool, usage: tuple[int, int] | None) -> None: ...

    def abandoned(self) -> None: ...


@dataclass
class StreamOutcome:
    """How a relayed stream ended."""

    completed: bool = False
    client_gone: bool = False
    failure: UpstreamError | None = None
    usage: tuple[int, int] | None = None
    named: str | None = None  # the model its last events name


class Attempt:
    def __init__(
        self,
        *,
        backend: Backend,
        peers: tuple[Backend, ...],
        model: str,
        request_id: str,
        started: float,
        trace_id: str | None = None,
        endpoint: str = "",
        balancer: Balancer,
        feedback: Feedback,
        request_log: RequestLog,
        observer: Observer | None = None,
    ) -> None:
        self.backend = backend
        self.observer = observer
        self.key_id = None if observer is None else observer.key_id
        self.peers = peers  # the model's backends, for outlier detection's share
        self.model = model
        self.request_id = request_id
        self.trace_id = trace_id
        self.started = started  # time.perf_counter() when the client's request began
        self.balancer = balancer
        self.feedback = feedback
        self.request_log = request_log
        self.settled = False
        self.endpoint = endpoint  # the API's path (a label: never with an id in it)
        self.first_token_ms: float | None = None

    def __enter__(self) -> Attempt:
        self.balancer.started(self.backend.registration_id)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if isinstance(error, UpstreamError):
            self.failed(error)
        else:
            self.abandoned()  # (a no-op when it was settled)

    def elapsed_ms(self) -> float:
        return round((time.perf_counter() - self.started) * 1000, 2)

    def _settle(self) -> bool:
        if self.settled:
            return False
        self.settled = True
        return True

    def _measure(self, code: int, usage: tuple[int, int] | None) -> None:
        seconds = time.perf_counter() - self.started
        metrics.RECORDER.request(
            self.model, self.backend.registration_id, self.endpoint, code, seconds, usage
        )

    def first_event(self) -> None:
        """A stream's first event arrived (time to first token)."""
        seconds = time.perf_counter() - self.started
        self.first_token_ms = seconds * 1000
        metrics.RECORDER.first_token(self.model, self.backend.registration_id, seconds)
        self.balancer.first_token(self.backend.registration_id, self.first_token_ms)

    def answered(
        self, status: int, usage: tuple[int, int] | None, named: str | None = None
    ) -> None:
        """A whole answer (any status below 500, bar 429) goes to the client; `named`:
        the model its body names."""
        if not self._settle():
            return
        latency = self.elapsed_ms()
        ok = status < 400
        if self.observer is not None:  # an error answer generated nothing
            self.observer.answered(ok, usage if ok else (0, 0))
        self._measure(status, usage if ok else None)
        self.balancer.finished(self.backend.registration_id, latency if ok else None)
        if ok and usage is not None:
            self.balancer.decoded(self.backend.registration_id, latency / 1000, usage[1])
        self.balancer.learned.answered(self.backend.key)
        if ok:
            self._named(named)
        self.feedback.record(
            self.backend.registration_id,
            ok=True,
            latency_ms=latency,
            usage=usage if ok else None,
            model=self.model,
        )
        self.request_log.served(
            self.request_id,
            model=self.model,
            registration_id=self.backend.registration_id,
            status=status,
            latency_ms=latency,
            stream=False,
            trace_id=self.trace_id,
            key_id=self.key_id,
        )

    def failed(self, failure: UpstreamError) -> None:
        """No answer from this backend; the caller may try another."""
        if not self._settle():
            return
        self.balancer.finished(self.backend.registration_id, None)
        self._measure(policy_of(failure.kind).status, None)
        self._count_failure(failure, "")
        log.warning(
            "backend attempt failed",
            registration_id=self.backend.registration_id,
            model=self.backend.model_name,
            reason=failure.reason,
        )

    def streamed(self, outcome: StreamOutcome) -> None:
        """A stream that had started ended, however it ended."""
        if not self._settle():
            return
        latency = self.elapsed_ms()
        failure = outcome.failure
        if self.observer is not None:
            self.observer.answered(failure is None and not outcome.client_gone, outcome.usage)
        self._measure(200 if failure is None else policy_of(failure.kind).status, outcome.usage)
        self.balancer.finished(self.backend.registration_id, None if failure else latency)
        if failure is not None:
            self._count_failure(failure, "mid-stream: ", usage=outcome.usage)
            log.warning(
                "stream failed mid-way",
                registration_id=self.backend.registration_id,
                model=self.model,
                reason=failure.reason,
            )
            return
        self.balancer.learned.answered(self.backend.key)
        if outcome.completed:
            self._named(outcome.named)
        if outcome.usage is not None and self.first_token_ms is not None:
            decoding = (latency - self.first_token_ms) / 1000
            self.balancer.decoded(self.backend.registration_id, decoding, outcome.usage[1])
        self.feedback.record(
            self.backend.registration_id,
            ok=True,
            latency_ms=latency,
            usage=outcome.usage,
            model=self.model,
            first_token_ms=self.first_token_ms,
        )
        self.request_log.served(
            self.request_id,
            model=self.model,
            registration_id=self.backend.registration_id,
            status=200,
            latency_ms=latency,
            stream=True,
            client_gone=outcome.client_gone,
            trace_id=self.trace_id,
            key_id=self.key_id,
        )

    def _named(self, name: str | None) -> None:
        backend = self.backend
        if name is not None:
            self.feedback.named(backend.registration_id, self.model, backend.upstream_model, name)

    def abandoned(self) -> None:
        """Cancelled before an answer (the client left): only the slot is freed."""
        if self._settle():
            if self.observer is not None:
                self.observer.abandoned()
            self._measure(CLIENT_CLOSED, None)
            self.balancer.finished(self.backend.registration_id, None)

    def _count_failure(
        self, failure: UpstreamError, prefix: str, usage: tuple[int, int] | None = None
    ) -> None:
        if failure.kind in NEVER_SENT:
            return  # the backend never saw it: not in its figures
        self.feedback.record(
            self.backend.registration_id,
            ok=False,
            latency_ms=self.elapsed_ms(),
            usage=usage,
            model=self.model,
            first_token_ms=self.first_token_ms,
        )
        if not policy_of(failure.kind).counts_against_backend:
            return
        if self.balancer.faulted(self.backend, self.peers, prefix + failure.reason):
            metrics.EJECTIONS.labels(self.backend.registration_id).inc()
            self.feedback.request_check(self.backend.registration_id)  # healthd: is it really down?
