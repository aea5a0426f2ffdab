"""Noticing that the client left, so the work done for it stops (the backend's too).

Once the request body is read, a ClientWatch listens on `receive` for
`http.disconnect` and cancels the request's task when it comes: whatever the
task awaits then (the queue, a connection, the backend's first byte, a
failover attempt, the next stream event) ends at once, and the Attempt's
accounting closes the backend's connection. The endpoint tells its own
cancellation from any other by `gone`.

The listening task starts only once a request has taken WATCH_AFTER_SECONDS:
a task for every request is a measurable share of a proxied request's CPU time
(bench/ab.py), and a request that is over within 50 ms has nothing worth
cancelling. uvicorn also answers `receive` with `http.disconnect` as soon as
a response is complete, so the watch is stopped before the last part of an
answer is sent.
"""

from __future__ import annotations

import asyncio

from starlette.types import Receive

WATCH_AFTER_SECONDS = 0.05


class ClientWatch:
    def __init__(self, receive: Receive) -> None:
        self.gone = False
        self._receive = receive
        self._request_task: asyncio.Task[object] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._watcher: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Watch from WATCH_AFTER_SECONDS on (the body has been read: `receive` is free)."""
        self._request_task = asyncio.current_task()
        self._timer = asyncio.get_running_loop().call_later(WATCH_AFTER_SECONDS, self._begin)

    def _begin(self) -> None:
        self._timer = None
        self._watcher = asyncio.ensure_future(self._watch(self._receive))

    async def _watch(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect" and self._request_task is not None:
                self.gone = True
                self._watcher = None
                self._request_task.cancel()
                return

    def stop(self) -> None:
        """The answer is being completed: a disconnect from now on changes nothing."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None

    def absorb_cancellation(self) -> bool:
        """After a CancelledError: True (and the task un-cancelled) when it was ours."""
        if not self.gone or self._request_task is None:
            return False
        self._request_task.uncancel()
        return True
