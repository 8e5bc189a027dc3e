"""Slow clients against an edge, in a process of their own (the abuse suite's slowloris attack).

    python -m tests.e2e.slowloris HOST PORT CONNECTIONS

Opens CONNECTIONS connections, half trickling their headers a line every half second and half
trickling a 1 MiB body 8 KiB at a time; each reconnects when the edge closes it. Prints `ready`
once all are open, runs until its stdin closes, then prints one JSON line: how long each
connection the edge closed was held (`held`, seconds) and the first line of what the edge said
(`answers`). A process apart from the test's well-behaved clients, so that the 200 slow ones
share no event loop (and no core's queue) with the latencies being measured.

`normal_clients` is the other side: well-behaved clients posting one hit at a time over
keep-alive connections, each request's latency recorded. Plain HTTP/1.1 on asyncio streams
rather than httpx: on the 2-core machine httpx's own work was most of what it measured (a
median of 15-20 ms per request where this client sees 4 ms from the same edge), so its p99
followed the machine's load more than the edge.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections import Counter
from typing import Any

import orjson

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


def _post(hit: dict[str, str]) -> bytes:
    body = orjson.dumps(hit)
    return (b"POST /v1/hits HTTP/1.1\r\nhost: edge\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body))


async def _answer(reader: asyncio.StreamReader) -> int:
    """Read one response; its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in lines if line.lower().startswith(b"content-length:"))
    await reader.readexactly(length)
    return int(lines[0].split(b" ", 2)[1])


async def normal_clients(host: str, port: int, seconds: float, hit: Any, clients: int = 4) -> list[float]:
    """`clients` keep-alive connections, each posting `hit()` (a dict), waiting for the answer,
    then 10 ms, until `seconds` passed; each request's latency. Anything but 202 is an error."""
    latencies: list[float] = []
    deadline = time.monotonic() + seconds

    async def one() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while time.monotonic() < deadline:
                request = _post(hit())
                started = time.perf_counter()
                writer.write(request)
                status = await asyncio.wait_for(_answer(reader), 10)
                latencies.append(time.perf_counter() - started)
                if status != 202:
                    raise AssertionError(f"a normal client's post got {status}")
                await asyncio.sleep(0.01)
        finally:
            writer.close()

    await asyncio.gather(*(one() for _ in range(clients)))
    return latencies


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
