"""`touchstream import FILE`: send hits from an NDJSON file (or stdin) to the ingest edge.

    touchstream import hits.ndjson
    zcat hits.ndjson.gz | touchstream import - --edge http://edge:8080 --concurrency 8

One hit object per line, exactly as a site would post it (SPEC section 2). Lines go to
`POST /v1/hits` as NDJSON in batches of at most `--batch` lines (default 500, the edge's item
limit) and `--max-bytes` bytes (default 1 MiB, its body limit), `--concurrency` requests at a
time, with a progress bar on stderr (when it is a terminal; `--quiet` turns it off).

- Lines that are not JSON objects, or too large for one request, are refused here, with their
  line number; blank lines are skipped. Every other line is refused or accepted by the edge,
  whose per-item errors are reported against the line they came from.
- A line without a `hit_id` gets one (a random UUID) before it is first sent, so a batch sent
  again after a timeout or a 503 is recognised as duplicates (SPEC rule 8) instead of counted
  twice. `--no-hit-ids` sends the lines untouched.
- 503 (and 429) are retried after the edge's Retry-After; connection errors, timeouts and other
  5xx with exponential backoff; both at most `--retries` times per batch. A batch that still
  cannot be sent stops the import: what was not sent is counted, and the exit code says so.
  413 (or a 400 for the whole body) splits the batch in two and sends the halves (an edge with
  smaller limits than ours still works).
- The edge records the request's User-Agent and the importer's address as each hit's: set
  `--user-agent` to what the hits should carry.

Exit codes: 0 every line accepted, 1 some lines refused, 2 bad arguments or settings (or the
edge refuses the request format: 404/415...), 3 some lines could not be sent.
Settings: TOUCHSTREAM_EDGE_URL (default http://127.0.0.1:8080) and TOUCHSTREAM_IMPORT_*.
"""

from __future__ import annotations

import argparse
import asyncio
import email.utils
import heapq
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import IO, Any

import httpx
import orjson
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ingest.items import json_type
from schemas.backoff import Backoff
from schemas.settings import ENV_PREFIX
from touchstream.console import EXIT_NO, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, CliError, error, load_settings, render_table

MiB = 1024 * 1024
EDGE_MAX_ITEMS = 500
USER_AGENT = "touchstream-import/0.1"
_WS = b" \t\r\n"


class ImportSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    edge_url: str = Field("http://127.0.0.1:8080", description="the ingest edge `touchstream import` posts to")
    import_max_bytes: int = Field(MiB, ge=1024, description="largest request body the importer sends (the edge's limit)")
    import_retries: int = Field(6, ge=0, description="retries of one batch (503, connection errors, 5xx) before giving up")
    import_backoff_initial_s: float = Field(0.5, gt=0, description="first wait before retrying after a connection error")
    import_backoff_max_s: float = Field(10.0, gt=0, description="longest wait between retries (exponential backoff)")
    import_retry_after_max_s: float = Field(60.0, gt=0, description="longest Retry-After the importer honours")
    import_timeout_s: float = Field(30.0, gt=0, description="HTTP timeout of one request")

    @field_validator("edge_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = httpx.URL(value) if value else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.host:
            raise ValueError(f"{value!r} is not an http(s) URL, e.g. http://127.0.0.1:8080")
        return value


def hits_url(edge: str) -> str:
    """The edge's base URL (or its /v1/hits URL) to the URL hits are posted to."""
    edge = edge.rstrip("/")
    return edge if edge.endswith("/v1/hits") else edge + "/v1/hits"


# --- results -------------------------------------------------------------------------------


@dataclass(order=True)
class Refusal:
    line: int
    errors: list[tuple[str, str]] = field(compare=False)


@dataclass
class Summary:
    show: int = 20
    lines: int = 0  # non-blank lines read
    blank: int = 0
    accepted: int = 0
    refused: int = 0
    unsent: int = 0
    stopped: str | None = None  # why the import stopped early
    stop_code: int = EXIT_UNAVAILABLE  # the exit code that reason means
    seconds: float = 0.0
    _first: list[tuple[int, Refusal]] = field(default_factory=list)  # max-heap (by -line) of the first `show`

    def refuse(self, line: int, errors: list[tuple[str, str]]) -> None:
        self.refused += 1
        if self.show <= 0:
            return
        item = (-line, Refusal(line, errors))
        if len(self._first) < self.show:
            heapq.heappush(self._first, item)
        elif line < -self._first[0][0]:
            heapq.heapreplace(self._first, item)

    @property
    def first_refusals(self) -> list[Refusal]:
        return sorted(r for _, r in self._first)

    @property
    def exit_code(self) -> int:
        if self.stopped:
            return self.stop_code
        if self.unsent:
            return EXIT_UNAVAILABLE
        return EXIT_NO if self.refused else EXIT_OK

    def render(self) -> str:
        rate = f" ({self.accepted / self.seconds:,.0f} hits/s)" if self.seconds > 0 and self.accepted else ""
        rows = [
            ["lines read", f"{self.lines:,}" + (f" (and {self.blank:,} blank, skipped)" if self.blank else "")],
            ["accepted", f"{self.accepted:,}"],
            ["refused", f"{self.refused:,}"],
        ]
        if self.unsent or self.stopped:
            rows.append(["not sent", f"{self.unsent:,}"])
        rows.append(["time", f"{self.seconds:.2f} s{rate}"])
        out = ["\n".join(f"{k:<11}{v}" for k, v in rows)]
        if self.stopped:
            out.append(f"stopped early: {self.stopped}")
        first = self.first_refusals
        if first:
            table_rows = [[r.line, f, m] for r in first for f, m in (r.errors or [("", "refused")])]
            more = f" (the first {len(first)})" if self.refused > len(first) else ""
            out.append(f"refused lines{more}:\n" + render_table(["line", "field", "message"], table_rows, right=(0,)))
        return "\n\n".join(out)


# --- reading -------------------------------------------------------------------------------


@dataclass
class Batch:
    lines: list[int] = field(default_factory=list)  # file line numbers
    raws: list[bytes] = field(default_factory=list)
    size: int = 0  # body bytes (each line + "\n")
    read_bytes: int = 0  # bytes of the file these lines took (for the progress bar)

    def add(self, line: int, raw: bytes, read: int) -> None:
        self.lines.append(line)
        self.raws.append(raw)
        self.size += len(raw) + 1
        self.read_bytes += read

    def body(self) -> bytes:
        return b"\n".join(self.raws) + b"\n"

    def halves(self) -> tuple[Batch, Batch]:
        mid = len(self.lines) // 2
        left, right = Batch(), Batch()
        for n, (line, raw) in enumerate(zip(self.lines, self.raws, strict=True)):
            (left if n < mid else right).add(line, raw, 0)
        left.read_bytes = self.read_bytes  # the progress of a split batch is counted once
        return left, right


async def read_batches(source: IO[bytes], summary: Summary, *, batch: int, max_bytes: int, add_hit_ids: bool,
                       progress: Any) -> AsyncIterator[Batch]:
    """The file's lines as batches; lines refused here go straight to `summary`."""
    current = Batch()
    number = 0
    while True:
        chunk = await asyncio.to_thread(source.readlines, 256 * 1024)
        if not chunk:
            break
        skipped = 0  # bytes of lines that go in no batch
        for raw_line in chunk:
            number += 1
            read = len(raw_line)
            raw = raw_line.strip(_WS)
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark
                raw = raw[3:].strip(_WS)
            if not raw:
                summary.blank += 1
                skipped += read
                continue
            summary.lines += 1
            try:
                value = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                summary.refuse(number, [("line", f"is not valid JSON: {exc}")])
                skipped += read
                continue
            if not isinstance(value, dict):
                summary.refuse(number, [("line", f"must be a hit object (one per line), not {json_type(value)}")])
                skipped += read
                continue
            if add_hit_ids and "hit_id" not in value:
                value["hit_id"] = str(uuid.uuid4())
                raw = orjson.dumps(value)
            if len(raw) + 1 > max_bytes:
                summary.refuse(number, [("line", f"is {len(raw):,} bytes; a request may hold at most {max_bytes:,}")])
                skipped += read
                continue
            if current.lines and (len(current.lines) >= batch or current.size + len(raw) + 1 > max_bytes):
                yield current
                current = Batch()
            current.add(number, raw, read)
        if skipped:
            progress.update(skipped)
    if current.lines:
        yield current


# --- sending -------------------------------------------------------------------------------


class Stop(Exception):
    """The import cannot go on (edge gone, or it refuses the request format)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def retry_after(value: str | None, default: float, cap: float) -> float:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date)."""
    if value:
        value = value.strip()
        try:
            return min(max(float(value), 0.0), cap)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
                return min(max(when.timestamp() - time.time(), 0.0), cap)
            except (TypeError, ValueError, OverflowError):
                pass
    return min(default, cap)


def _errors_of(item: dict[str, Any]) -> list[tuple[str, str]]:
    errors = item.get("errors") or []
    return [(str(e.get("field", "")), str(e.get("message", ""))) for e in errors if isinstance(e, dict)] or [
        ("", "refused by the edge")]


def _whole_body_message(payload: Any, status: int) -> str:
    try:
        items = payload["rejected"]
        return "; ".join(f"{f}: {m}" for item in items for f, m in _errors_of(item))
    except (KeyError, TypeError):
        return f"HTTP {status}"


class Sender:
    def __init__(self, client: httpx.AsyncClient, url: str, settings: ImportSettings, summary: Summary, progress: Any,
                 *, retries: int, user_agent: str) -> None:
        self.client = client
        self.url = url
        self.settings = settings
        self.summary = summary
        self.progress = progress
        self.retries = retries
        self.headers = {"content-type": "application/x-ndjson", "user-agent": user_agent}

    async def send(self, batch: Batch) -> None:
        """Send one batch (retrying, splitting); record the outcome of every line in the summary."""
        backoff = Backoff(self.settings.import_backoff_initial_s, self.settings.import_backoff_max_s)
        while True:
            try:
                response = await self.client.post(self.url, content=batch.body(), headers=self.headers)
            except httpx.TransportError as exc:
                delay = backoff.failed()
                if backoff.failures > self.retries:
                    raise Stop(f"the edge at {self.url} could not be reached after {backoff.failures} attempts "
                               f"({type(exc).__name__}: {exc})", EXIT_UNAVAILABLE) from None
                await asyncio.sleep(delay)
                continue
            status = response.status_code
            try:
                payload = response.json()
            except ValueError:
                payload = None
            if status in (202, 400) and isinstance(payload, dict) and all(
                    isinstance(item, dict) and isinstance(item.get("index"), int) for item in payload.get("rejected", [])):
                self._account(batch, payload)
                return
            if status in (400, 413) and len(batch.lines) > 1:  # the whole body refused: too many or too big
                left, right = batch.halves()
                await self.send(left)
                await self.send(right)
                return
            if status in (400, 413):
                self._refuse_all(batch, [("body", _whole_body_message(payload, status))])
                return
            if status in (503, 429) or status >= 500:
                default = backoff.failed()
                if backoff.failures > self.retries:
                    raise Stop(f"the edge answered {status} {_whole_body_message(payload, status)} "
                               f"{backoff.failures} times", EXIT_UNAVAILABLE)
                wait = (retry_after(response.headers.get("retry-after"), default,
                                    self.settings.import_retry_after_max_s)
                        if status in (503, 429) else default)
                await asyncio.sleep(wait)
                continue
            raise Stop(f"the edge at {self.url} answered {status} {response.reason_phrase}: "
                       f"{_whole_body_message(payload, status) if payload else response.text[:200]!s} "
                       "(is --edge / TOUCHSTREAM_EDGE_URL the ingest edge?)", EXIT_USAGE)

    def _account(self, batch: Batch, payload: dict[str, Any]) -> None:
        rejected = payload.get("rejected") or []
        for item in rejected:
            index = item["index"]
            line = batch.lines[index] if 0 <= index < len(batch.lines) else -1
            self.summary.refuse(line, _errors_of(item))
        accepted = payload.get("accepted")
        self.summary.accepted += int(accepted) if isinstance(accepted, int) else len(batch.lines) - len(rejected)
        self._progress(batch)

    def _refuse_all(self, batch: Batch, errors: list[tuple[str, str]]) -> None:
        for line in batch.lines:
            self.summary.refuse(line, errors)
        self._progress(batch)

    def _progress(self, batch: Batch) -> None:
        self.progress.update(batch.read_bytes)
        s = self.summary
        self.progress.set_postfix(accepted=f"{s.accepted:,}", refused=f"{s.refused:,}", refresh=False)


class _NoProgress:
    def update(self, n: int) -> None:
        pass

    def set_postfix(self, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


async def run_import(source: IO[bytes], settings: ImportSettings, *, edge: str | None = None, batch: int = 500,
                     concurrency: int = 4, user_agent: str = USER_AGENT, retries: int | None = None,
                     show: int = 20, add_hit_ids: bool = True, progress: Any = None) -> Summary:
    """Read, batch and send everything; the summary of what happened (never raises for the
    edge's answers: an import that had to stop says so in `summary.stopped`)."""
    summary = Summary(show=show)
    progress = progress or _NoProgress()
    url = hits_url(edge or settings.edge_url)
    queue: asyncio.Queue[Batch | None] = asyncio.Queue(maxsize=concurrency * 2)
    stop = asyncio.Event()
    started = time.monotonic()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=settings.import_timeout_s, limits=limits) as client:
        sender = Sender(client, url, settings, summary, progress,
                        retries=settings.import_retries if retries is None else retries, user_agent=user_agent)

        async def worker() -> None:
            while True:
                item = await queue.get()
                if item is None:
                    return
                if stop.is_set():
                    continue  # counted as not sent at the end
                try:
                    await sender.send(item)
                except Stop as exc:
                    if not stop.is_set():
                        summary.stopped, summary.stop_code = exc.message, exc.code
                        stop.set()

        workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
        try:
            async for b in read_batches(source, summary, batch=batch, max_bytes=settings.import_max_bytes,
                                        add_hit_ids=add_hit_ids, progress=progress):
                if stop.is_set():
                    break
                await queue.put(b)
        finally:
            for _ in workers:
                await queue.put(None)
            await asyncio.gather(*workers)
    summary.seconds = time.monotonic() - started
    # Every line read is accepted, refused, or was not sent (stopped early, or its batch gave up).
    summary.unsent = max(summary.lines - summary.accepted - summary.refused, 0)
    return summary


# --- command line --------------------------------------------------------------------------


def _positive(limit: int | None = None) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < 1 or (limit is not None and value > limit):
            raise argparse.ArgumentTypeError(f"must be between 1 and {limit}" if limit else "must be at least 1")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="touchstream import",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Send hits from an NDJSON file (one hit object per line, as a site posts them) to the ingest "
                    "edge, in batches, with a progress bar.",
        epilog="""\
Lines without a hit_id get one before they are first sent, so a batch sent again after a
timeout or a 503 is dropped as duplicates rather than counted twice (--no-hit-ids: send the
lines untouched). The edge records this request's User-Agent and address as each hit's.

Exit codes: 0 every line accepted, 1 some lines refused, 2 bad arguments or settings (or the
edge refuses the requests themselves), 3 some lines could not be sent.
Settings: TOUCHSTREAM_EDGE_URL (default http://127.0.0.1:8080), TOUCHSTREAM_IMPORT_MAX_BYTES
(1 MiB), TOUCHSTREAM_IMPORT_RETRIES (6), TOUCHSTREAM_IMPORT_BACKOFF_INITIAL_S (0.5),
TOUCHSTREAM_IMPORT_BACKOFF_MAX_S (10), TOUCHSTREAM_IMPORT_RETRY_AFTER_MAX_S (60),
TOUCHSTREAM_IMPORT_TIMEOUT_S (30).""",
    )
    parser.add_argument("file", metavar="FILE", help="NDJSON file of hits, or - for stdin")
    parser.add_argument("--edge", metavar="URL", help="the edge's URL (default TOUCHSTREAM_EDGE_URL)")
    parser.add_argument("--batch", type=_positive(EDGE_MAX_ITEMS), default=EDGE_MAX_ITEMS, metavar="N",
                        help=f"lines per request (1-{EDGE_MAX_ITEMS}, default {EDGE_MAX_ITEMS})")
    parser.add_argument("--concurrency", type=_positive(64), default=4, metavar="N", help="requests in flight (default 4)")
    parser.add_argument("--user-agent", metavar="UA", default=USER_AGENT,
                        help=f"User-Agent of the requests, recorded as each hit's (default {USER_AGENT})")
    parser.add_argument("--retries", type=int, default=None, metavar="N",
                        help="retries of one batch before giving up (default TOUCHSTREAM_IMPORT_RETRIES, 6)")
    parser.add_argument("--show", type=int, default=20, metavar="N", help="refused lines listed (default 20)")
    parser.add_argument("--no-hit-ids", action="store_true", help="do not add a hit_id to lines without one")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    return parser


def _open(path: str) -> tuple[IO[bytes], int | None]:
    if path == "-":
        return sys.stdin.buffer, None
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by main
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        size = os.fstat(handle.fileno()).st_size
    except OSError:
        size = None
    return handle, size


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        overrides = {}
        if args.edge:
            overrides["edge_url"] = args.edge
        settings = load_settings(ImportSettings, **overrides)
        if args.retries is not None and args.retries < 0:
            raise CliError("--retries must be 0 or more")
        source, size = _open(args.file)
    except CliError as exc:
        error(exc.message)
        return exc.code
    progress: Any = None
    if not args.quiet and sys.stderr.isatty():
        import shutil

        from tqdm import tqdm

        shape = shutil.get_terminal_size((0, 0))  # (0, 0): a terminal that reports no size (tqdm would draw nothing)
        sized = shape.columns > 0 and shape.lines > 0
        progress = tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr, desc="import",
                        dynamic_ncols=sized, ncols=None if sized else 100, nrows=None if sized else 24,
                        mininterval=0.25)
    try:
        summary = asyncio.run(run_import(
            source, settings, batch=args.batch, concurrency=args.concurrency, user_agent=args.user_agent,
            retries=args.retries, show=max(args.show, 0), add_hit_ids=not args.no_hit_ids, progress=progress))
    except KeyboardInterrupt:
        error("interrupted")
        return 130
    finally:
        if progress is not None:
            progress.close()
        if source is not sys.stdin.buffer:
            source.close()
    print(summary.render())
    return summary.exit_code
