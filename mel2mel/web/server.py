"""The app on uvicorn, with deadlines on slow clients and a fast stop.

uvicorn closes idle keep-alive connections but has no deadline for a request's headers or
body: a client sending one header line every few seconds, or one byte of its body every two,
holds its connection for ever. :class:`GuardedH11Protocol` (uvicorn's h11 protocol) adds:

* a header deadline: a request's headers must be complete ``header_timeout_s`` after the
  connection opened or its previous response ended, however they trickle in;
* a body rate floor: from ``body_grace_s`` after the headers, the body must have arrived at
  ``min_body_rate`` bytes per second on average (not counted while the server itself holds
  back reading);
* a drain deadline: a body the app did not read (after a 413, say) must end within
  ``body_drain_s`` of the response.

A client past a deadline gets ``408 {"error": ...}`` when no response has started, and its
connection is closed; the app sees a disconnect (logged in one line).

:class:`Server` stops fast: on SIGTERM or Ctrl-C it ends every render job at once (so their
streams end; ``app.state.close``) before uvicorn waits for connections, and it gives other
requests ``shutdown_grace_s``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from mel2mel.web.config import WebConfig

RATE_CHECK_S = 1.0


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with header, body-rate and drain deadlines (module docstring).

    Subclassed per server with the limits as the class attribute ``limits``
    (:func:`guarded_protocol`).
    """

    limits: WebConfig = WebConfig()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_cycle: object = None
        self._body_start = 0.0
        self._body_bytes = 0

    # -- uvicorn's protocol interface -----------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._reply(503, "the server has too many connections; retry shortly")
            transport.close()
            return
        self._watch()

    def data_received(self, data: bytes) -> None:
        if self._body_cycle is not None:
            self._body_bytes += len(data)
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing():
            return
        unread = self.cycle is not None and self.cycle.response_complete
        if unread and self.conn.their_state is h11.SEND_BODY:  # a body nobody will read
            self._stop_timer("_body_timer")
            self._body_cycle = None
            self._body_timer = self.loop.call_later(self.limits.body_drain_s, self._drop, None)
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer("_header_timer")
        self._stop_timer("_body_timer")
        super().connection_lost(exc)

    # -- deadlines --------------------------------------------------------------------------

    def _watch(self) -> None:
        """Arm or disarm the deadlines for the state the connection is in now."""
        if self.transport.is_closing():
            return
        state = self.conn.their_state
        if state is h11.IDLE:  # waiting for a request's headers
            self._stop_timer("_body_timer")  # the last body, read or drained, is over
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(
                    self.limits.header_timeout_s, self._drop, "the request's headers"
                )
            return
        self._stop_timer("_header_timer")
        if state is h11.SEND_BODY and self.cycle is not None and self._body_cycle is not self.cycle:
            if self.cycle.response_complete:
                return  # the drain deadline already runs
            self._stop_timer("_body_timer")
            self._body_cycle, self._body_start, self._body_bytes = self.cycle, time.monotonic(), 0
            self._body_timer = self.loop.call_later(self.limits.body_grace_s, self._check_rate)

    def _check_rate(self) -> None:
        self._body_timer = None
        if self._body_cycle is not self.cycle or self.conn.their_state is not h11.SEND_BODY:
            self._body_cycle = None  # the body ended
            return
        if not self.flow.read_paused:  # a paused read is the server's doing, not the client's
            elapsed = time.monotonic() - self._body_start
            if self._body_bytes < self.limits.min_body_rate * elapsed:
                self._drop("the request body")
                return
        self._body_timer = self.loop.call_later(RATE_CHECK_S, self._check_rate)

    def _drop(self, what: str | None) -> None:
        """Close the connection; answer 408 first when no response has started."""
        self._header_timer = self._body_timer = None
        if self.transport.is_closing():
            return
        if what is not None and (self.cycle is None or not self.cycle.response_started
                                 or self.cycle.response_complete):  # fmt: skip
            self._reply(408, f"timed out waiting for {what}")
        self.transport.close()

    def _reply(self, status: int, message: str) -> None:
        """Write ``{"error": message}`` with ``status`` straight to the socket (outside h11's
        state machine: the connection is closed right after)."""
        body = json.dumps({"error": message}).encode()
        reason = {408: "Request Timeout", 503: "Service Unavailable"}[status]
        head = (
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head.encode() + body)

    def _stop_timer(self, name: str) -> None:
        timer = getattr(self, name)
        if timer is not None:
            timer.cancel()
            setattr(self, name, None)


def guarded_protocol(limits: WebConfig) -> type[GuardedH11Protocol]:
    """:class:`GuardedH11Protocol` with these limits."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"limits": limits})


class Server(uvicorn.Server):
    """uvicorn's server that calls ``on_exit`` (on the event loop) as soon as it is told to
    stop, before it waits for open connections."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None] | None = None) -> None:
        super().__init__(config)
        self.on_exit = on_exit
        self._loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets=sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if self.on_exit is not None and self._loop is not None:
            # a signal handler may interrupt code holding a job's lock: run it from the loop
            self._loop.call_soon_threadsafe(self.on_exit)
            self.on_exit = None


def server(app: Any, *, host: str, port: int, log_level: str = "warning",
           log_config: Any = uvicorn.config.LOGGING_CONFIG) -> Server:  # fmt: skip
    """A :class:`Server` for an app of :func:`mel2mel.web.app.create_app`, with the app's
    limits: deadlines, connection limit (checked by the protocol, so that its 503 is JSON
    too), keep-alive and shutdown grace."""
    cfg: WebConfig = app.state.config
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        log_config=log_config,
        http=guarded_protocol(cfg),
        ws="none",
        lifespan="on",
        timeout_keep_alive=cfg.keep_alive_s,
        timeout_graceful_shutdown=cfg.shutdown_grace_s,  # type: ignore[arg-type]
    )
    return Server(config, on_exit=app.state.close)


def run(app: Any, *, host: str, port: int, log_level: str = "warning") -> None:
    """Serve ``app`` until SIGTERM or Ctrl-C (:func:`server`)."""
    server(app, host=host, port=port, log_level=log_level).run()
