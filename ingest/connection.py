"""The edge's HTTP connections: uvicorn's httptools protocol with a read deadline and a header cap.

uvicorn bounds neither how long a request may take to arrive nor how large its headers may
grow: a client that trickles its request line, its headers or its body a byte at a time holds
a connection (and what it sent so far) for as long as it likes, and httptools buffers a header
of any size (a 200 MB header grows the worker by 240 MB). A public edge needs both bounds, and
they have to be enforced where the bytes arrive, before the app sees a request:

- **read deadline** (`TOUCHSTREAM_INGEST_READ_TIMEOUT_S`): a request must arrive whole — request
  line, headers and body — within the deadline from its first byte (the first request of a
  connection: from the connection's opening, so a connection that sends nothing is closed
  too). Past it the edge answers 408 when it has not answered yet, and closes the connection;
  a body the app was reading then ends as a disconnect, which is not dead-lettered. Idle
  keep-alive connections between requests are uvicorn's own `timeout_keep_alive`.
- **header cap** (`TOUCHSTREAM_INGEST_MAX_HEADER_BYTES`): beyond it, 431 and the connection closed.
- **spread deadlines** (`TOUCHSTREAM_INGEST_READ_TIMEOUT_SPREAD`, 0.2): each request's deadline is
  drawn between (1 - spread) × and 1 × the read timeout. Slow clients that connect together (an
  attack opens its connections at once) would otherwise all be closed in the same loop iteration,
  reconnect together and be closed together again every read timeout (with 200 of them, loop
  stalls of 16-28 ms were seen at those instants, which the requests in flight wait out).
  Spread, the closes and reconnects become a trickle (`bench/slowloris_bench.py`).

Together with uvicorn's `limit_concurrency` (`TOUCHSTREAM_INGEST_MAX_CONNECTIONS`: beyond it a
new request gets 503 at once), what slow clients can hold is bounded: connections × (header
cap + what a body can trickle in within the deadline).

The limits reach the protocol through the ASGI lifespan state (`IngestApp` puts them there at
start-up; uvicorn hands that state to every connection), so they come from the edge's settings
like everything else. One timer per request: armed when its first byte arrives, cancelled when
its last one did (`bench/ingest_bench.py` measures the edge with it).
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

# Where `IngestApp` leaves the limits in the lifespan state (and uvicorn in every request's
# scope["state"], which the app does not read).
STATE_KEY = "touchstream.connection_limits"


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """What one connection may take of the edge (the edge's settings give them)."""

    read_timeout_s: float = 10.0
    max_header_bytes: int = 64 * 1024
    read_timeout_spread: float = 0.2  # each deadline in [(1 - spread) * read_timeout_s, read_timeout_s]

    def deadline(self, draw: float) -> float:
        """A request's read deadline (seconds) for `draw` in [0, 1)."""
        return self.read_timeout_s * (1.0 - self.read_timeout_spread * draw)


DEFAULT_LIMITS = ConnectionLimits()


class GuardedHttpProtocol(HttpToolsProtocol):
    """httptools' protocol of uvicorn, with the read deadline and the header cap above.

    uvicorn builds one per connection (`touchstream ingest` passes it as `http=`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limits = self.app_state.get(STATE_KEY, DEFAULT_LIMITS)
        self._limits = limits
        self._max_header_bytes = limits.max_header_bytes
        self._deadline: asyncio.TimerHandle | None = None
        self._header_bytes = -1  # bytes of the request line and headers so far; -1: not reading them

    # --- the deadline -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a connection that never sends a request is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        if self._deadline is None:  # (a connection's first request: armed when it opened)
            self._arm()

    def on_headers_complete(self) -> None:
        self._header_bytes = -1
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()  # the whole request is in: the app's answer is not a read

    def _arm(self) -> None:
        self._deadline = self.loop.call_later(self._limits.deadline(random.random()), self._read_timed_out)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _read_timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle  # (while headers are read: the previous request's, or None)
        if self._header_bytes >= 0 or cycle is None or not cycle.response_started:
            self._answer_and_close(408, b"request not received in time")
        else:  # (the app answered before reading the whole body: just stop waiting for it)
            self.transport.close()

    # --- the header cap -----------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Counted after parsing: a chunk that leaves the headers unfinished was all header bytes.
        if self._header_bytes >= 0:
            self._header_bytes += len(data)
            if self._header_bytes > self._max_header_bytes and not self.transport.is_closing():
                self._answer_and_close(431, b"request headers too large")

    def _answer_and_close(self, status: int, message: bytes) -> None:
        """A plain-text answer written straight to the socket (no app involved), then close."""
        self.transport.write(
            STATUS_LINE[status]
            + b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % len(message)
            + message
        )
        self.transport.close()
