"""Slow clients against an edge, in a process of their own (the abuse suite's slowloris attack).

    python -m tests.e2e.slowloris HOST PORT CONNECTIONS

Opens CONNECTIONS connections, half trickling their headers a line every half second and half
trickling a 1 MiB body 8 KiB at a time; each reconnects when the edge closes it. Prints `ready`
once all are open, runs until its stdin closes, then prints one JSON line: how long each
connection the edge closed was held (`held`, seconds) and the first line of what the edge said
(`answers`). A process apart from the test's well-behaved clients, so that the 200 slow ones
share no event loop (and no core's queue) with the latencies being measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections import Counter

HEADERS = b"POST /v1/hits HTTP/1.1\r\n"
BODY = (b"POST /v1/hits HTTP/1.1\r\nhost: edge\r\ncontent-type: application/json\r\n"
        b"content-length: 1048000\r\n\r\n[")


async def slow_client(host: str, port: int, body: bool, stop: asyncio.Event, held: list[float],
                      answers: Counter[str]) -> None:
    """One slow client; records how long each connection was held until the edge closed it."""
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.5)
            continue
        opened = time.monotonic()
        writer.write(BODY if body else HEADERS)
        chunk = b" " * 8 * 1024 if body else b"x-slow: a\r\n"
        answer = asyncio.create_task(reader.read(4096))  # what the edge says when it gives up on us
        try:
            while not stop.is_set() and not answer.done():
                writer.write(chunk)
                await writer.drain()
                await asyncio.wait({answer}, timeout=0.5)
        except (ConnectionError, OSError):
            pass
        if answer.done() and not stop.is_set():
            held.append(time.monotonic() - opened)
            try:
                data = answer.result()
            except (ConnectionError, OSError):
                data = b"reset"
            answers[(data.split(b"\r\n", 1)[0] or b"closed").decode()] += 1
        answer.cancel()
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def main(host: str, port: int, connections: int) -> None:
    stop = asyncio.Event()
    held: list[float] = []
    answers: Counter[str] = Counter()
    tasks = [asyncio.create_task(slow_client(host, port, n % 2 == 0, stop, held, answers))
             for n in range(connections)]
    await asyncio.sleep(1.0)  # every connection open and trickling
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the test closes it
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps({"held": held, "answers": answers}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
