"""One call as both drivers see it: the request dressed for each attempt and undressed after.

A driver loop only sends, awaits or blocks, and sleeps; every step around the send is a method
here, written once for both: ``begin`` picks the endpoint and dresses the request (steps 4-9 of
the pipeline), ``responded`` / ``failed`` report an attempt's outcome and decide what comes
next, ``accept`` hands the caller a response whose stream ends the attempt, ``restore`` undoes
the attempt's changes, and ``end`` closes the call's telemetry and releases its limit slot.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx

from meshlib.classify import Classifier
from meshlib.errors import DeadlineExceeded
from meshlib.extensions import ATTEMPT_HEADERS, CONNECT, POLICY
from meshlib.limit.adaptive import Permit
from meshlib.pipeline.attempt import Attempt, endpoint_url
from meshlib.pipeline.call import Call
from meshlib.pipeline.hedging import HedgeState
from meshlib.pipeline.mocking import is_mock_miss

if TYPE_CHECKING:
    from meshlib.pipeline.base import PipelineBase
    from meshlib.pipeline.observe import CallObservation

__all__ = ["Exchange"]


class Exchange:
    """The per-call plumbing around the driver loop (see the module docstring)."""

    __slots__ = (
        "_classify",
        "_ended",
        "_exceeded",
        "_extensions",
        "_headers",
        "_https",
        "_mocked",
        "_native",
        "_peer",
        "_tracked",
        "_url",
        "call",
        "engine",
        "hedge",
        "obs",
        "permit",
        "release",
        "request",
        "sent",
        "suppress",
    )

    def __init__(self, pipeline: PipelineBase, request: httpx.Request, call: Call) -> None:
        self.request = request
        self.sent = request
        """What the inner transport is given for this attempt (a copy of the caller's request
        while a mocking library is active, so what the mocks record stays as they matched it)."""
        self.call = call
        observer = pipeline.observer()
        self.obs: CallObservation | None = (
            observer.begin(call, request.url) if observer is not None else None
        )
        self.release: Callable[[], None] | None = None
        self.permit: Permit | None = None
        """The adaptive concurrency limit's permit, told at the end whether the call dropped."""
        self._url = request.url
        self._extensions = request.extensions
        self._headers = request.headers
        self._https = request.url.scheme == "https"
        self._classify: Classifier = pipeline.classify
        self._tracked = pipeline.tracked_stream
        self._ended = False
        self._peer = pipeline.connect_peer(call.service.resolution)
        self._exceeded = pipeline.deadline_exceeded
        self.hedge: HedgeState | None = None
        """The service's hedge state when this call may hedge (its latencies are recorded)."""
        engine, native, over_httpx, mocked = pipeline.engine()
        self.engine: Any = engine
        self._native = native
        # None: no mocking library; else True when the mocks see the logical URL.
        self._mocked: bool | None = (pipeline.settings.mock_url == "logical") if mocked else None
        # Around each send over httpx's own transport; None (nothing to enter) over meshlib's.
        self.suppress: contextlib.AbstractContextManager[Any] | None = (
            pipeline.suppression(request) if over_httpx else None
        )

    def begin(self) -> Attempt:
        """Pick an endpoint and point the request at it with the attempt's own headers.

        meshlib's engine takes those headers from an extension, so the caller's headers are
        never touched; any other inner transport (httpx's own under a mocking library, or a
        custom one) gets a copy of the headers with them set.
        """
        request = self.request
        request.extensions = extensions = dict(self._extensions)
        attempt = self.call.start_attempt()
        if self.obs is not None:
            self.obs.attempt(attempt, request)
        if self._peer is not None:
            extensions[CONNECT] = self._peer
        elif self._https and "sni_hostname" not in extensions:
            extensions["sni_hostname"] = self._url.host
        extra = attempt.headers
        if self._mocked is not None:
            self.sent = self._mock_request(attempt, extensions)
            return attempt
        if extra:
            if self._native:
                extensions[ATTEMPT_HEADERS] = extra
            else:
                headers = self._headers.copy()
                for name, value in extra:
                    headers[name] = value
                request.headers = headers
        ep = attempt.state.endpoint
        request.url = endpoint_url(self._url, ep.host, ep.port)
        return attempt

    def _mock_request(self, attempt: Attempt, extensions: dict[str, Any]) -> httpx.Request:
        """A request of its own for a mocking library: the logical URL (what the code under
        test calls, as the libraries' docs mock it) or, with ``MESH_MOCK_URL=endpoint``, the
        endpoint's, with the attempt's headers and the caller's body."""
        headers = self._headers.copy()
        for name, value in attempt.headers:
            headers[name] = value
        url = self._url
        if not self._mocked:
            ep = attempt.state.endpoint
            url = endpoint_url(url, ep.host, ep.port)
        request = self.request
        return httpx.Request(
            request.method, url, headers=headers, stream=request.stream, extensions=extensions
        )

    def begin_hedge(self) -> tuple[Attempt, httpx.Request]:
        """A backup attempt on another endpoint, on a copy of the request (the original is
        still in flight on the first endpoint and must not change under it)."""
        original = self.request
        copy = httpx.Request(
            original.method,
            self._url,
            headers=self._headers,
            stream=original.stream,
            extensions=self._extensions,
        )
        self.request = self.call.request = copy
        try:
            attempt = self.begin()
        finally:
            self.request = self.call.request = original
        return attempt, (self.sent if self._mocked is not None else copy)

    def discard(
        self, attempt: Attempt, response: httpx.Response | None, exc: Exception | None
    ) -> None:
        """A hedged attempt failed while the other may still answer: judge it (accrual, load,
        telemetry) without deciding a retry; the race goes on with the other attempt. The
        caller closes ``response``."""
        call = self.call
        if response is not None:
            if self.obs is not None:
                self.obs.response(attempt, response)
            attempt.klass = self._classify(call.request, response, None)
            call.history.append(
                f"#{attempt.number + 1} {attempt.state.address}: {response.status_code}"
            )
        else:
            assert exc is not None
            if self.obs is not None:
                self.obs.error(attempt, exc)
            attempt.klass = self._classify(call.request, None, exc)
            call.history.append(
                f"#{attempt.number + 1} {attempt.state.address}: {type(exc).__name__}"
            )

    def loses(self, attempt: Attempt) -> None:
        """A hedged attempt lost the race: its span ends cancelled, and it is charged nothing."""
        if self.obs is not None:
            self.obs.cancelled(attempt)
        attempt.cancel()

    def is_failure(self, response: httpx.Response) -> bool:
        """True when a hedged race should wait for the other attempt rather than take this."""
        return self._classify(self.call.request, response, None).failure

    def restore(self) -> None:
        """Undo the attempt's changes, so nothing mesh-specific follows a redirect out of the
        mesh (httpx builds the next hop from this request, extensions and all) and the caller
        sees the logical URL and their own headers."""
        request = self.request
        request.url = self._url
        request.extensions = self._extensions
        request.headers = self._headers

    def responded(self, attempt: Attempt, response: httpx.Response) -> float | None:
        """An attempt got a response: the delay before a retry, or None to return it.

        A response whose body is read here next (``accept`` returns True) has no outcome yet:
        its span stays open until the body is read (``end``) or fails mid-body (``failed``).
        """
        if self.hedge is not None:
            self.hedge.window.record(attempt.elapsed())
        delay = self.call.after_response(attempt, response, self._classify)
        obs = self.obs
        if obs is not None:
            obs.response(attempt, response, done=delay is not None or not self.call.prefetch)
            if delay is not None:
                obs.retrying(delay, self.call.reason)
        return delay

    def failed(self, attempt: Attempt, exc: Exception) -> float:
        """An attempt raised: the delay before the next one; raises when the call gives up."""
        if self.obs is not None:
            self.obs.error(attempt, exc)
        if self._mocked is not None and is_mock_miss(exc):
            attempt.cancel()  # the test has no mock for it: not the endpoint's failure
            raise exc
        delay = self.call.after_error(attempt, exc, self._classify)
        if delay is None:
            err = self.call.give_up(exc)
            raise err from err.__cause__
        if self.obs is not None:
            self.obs.retrying(delay, self.call.reason)
        return delay

    def accept(self, attempt: Attempt, response: httpx.Response) -> bool:
        """The response goes to the caller: its stream now ends the attempt. True when the body
        should be read here first (the caller reads it all anyway, and a reset mid-body is still
        retryable inside the loop)."""
        response.stream = self._tracked(response.stream, attempt, self.call.expiry())
        response.extensions[POLICY] = self.call.outcome(attempt)
        if self.call.prefetch:
            return True
        # Streamed to the caller: the limit slot is held until the stream ends.
        attempt.after, self.release = self.release, None
        return False

    def end(self, response: httpx.Response | None, error: BaseException | None) -> None:
        """The call returns ``response`` or raises ``error`` (only the first report counts)."""
        if self._ended:
            return
        self._ended = True
        if isinstance(error, DeadlineExceeded):
            target = self.call.service.target
            self._exceeded[target] = self._exceeded.get(target, 0) + 1
        try:
            if self.obs is not None:
                self.obs.finish(response, error)
        finally:
            if self.permit is not None:
                _judge(self.permit, response, error)
            if self.release is not None:
                self.release()
                self.release = None


_OVERLOADED = frozenset({429, 503})


def _judge(permit: Permit, response: httpx.Response | None, error: BaseException | None) -> None:
    """Tell the adaptive limit how the call went: a timeout or an overloaded answer is a drop
    (the limit shrinks); any other error says nothing about the service's queue, so the call
    is not measured (a fast failure would pass for a fast service)."""
    if error is not None:
        if isinstance(error, httpx.TimeoutException):
            permit.dropped = True
        else:
            permit.ignored = True
    elif response is not None and response.status_code in _OVERLOADED:
        permit.dropped = True
