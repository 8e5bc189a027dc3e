"""A slow network between the browser and a server, for browser tests: a loopback TCP proxy
that holds what the browser sends for `delay` seconds before passing it on.

If the browser closes the connection within that time (a request cancelled, e.g. a plain
fetch of a page that unloads), what it sent is dropped, as a request cut off on a real slow
network never reaches the server. A request the browser keeps alive (fetch `keepalive`,
`sendBeacon`) gets through. The answers come back unhindered.

    with SlowLink("127.0.0.1", edge_port, delay=1.0) as link:
        endpoint = link.url("/v1/hits")
"""

from __future__ import annotations

import select
import socket
import threading
import time


class SlowLink:
    def __init__(self, host: str, port: int, delay: float) -> None:
        self.target = (host, port)
        self.delay = delay
        self.dropped = 0  # connections the browser closed while their bytes were held
        self._server: socket.socket | None = None
        self._closing = threading.Event()

    def url(self, path: str) -> str:
        assert self._server is not None, "not started"
        return f"http://127.0.0.1:{self._server.getsockname()[1]}{path}"

    def __enter__(self) -> SlowLink:
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        threading.Thread(target=self._accept, name="slow-link", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        if self._server is not None:
            self._server.close()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._server.accept()  # type: ignore[union-attr]
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        try:
            while True:
                held = client.recv(65536)
                if not held:
                    return
                held, open_ = self._hold(client, held)
                if not open_:
                    self.dropped += 1
                    return
                if upstream is None:
                    upstream = socket.create_connection(self.target)
                    threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
                upstream.sendall(held)
        except OSError:
            return
        finally:
            for s in (client, upstream):
                if s is not None:
                    s.close()

    def _hold(self, client: socket.socket, held: bytes) -> tuple[bytes, bool]:
        """Keep reading for `delay` seconds; (everything read, whether the client is still there)."""
        until = time.monotonic() + self.delay
        while (left := until - time.monotonic()) > 0:
            readable, _, _ = select.select([client], [], [], left)
            if readable:
                more = client.recv(65536)
                if not more:
                    return held, False
                held += more
        return held, True


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass
