"""`touchstream import FILE`: against the real edge (a process, as operators run it) and Kafka,
and against a scripted HTTP stub for what a healthy edge never does (503, 413, 404, silence)."""

from __future__ import annotations

import contextlib
import http.server
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cli_helpers import cli_env, run_cli

from tests.topic_reader import read_topic
from schemas.hit import Hit
from schemas.topics import Topics
from schemas.wire import deadletter_codec, hit_codec
from touchstream.pipeline import Pipeline, free_port

SITE = "https://www.oakridge-apts.com"


def pageview(n: int, guid: str | None = None, **more: Any) -> str:
    return json.dumps({"guid": guid or str(uuid.uuid4()), "url": f"{SITE}/p{n}?utm_source=import", **more})


@pytest.fixture
def edge(services: Any, topic_prefix: str, tmp_path: Path) -> Iterator[str]:
    """The real edge as a process, publishing to this test's topics."""
    pipeline = Pipeline(workdir=tmp_path / "pipeline", kafka_bootstrap=services.kafka_bootstrap,
                        pg_dsn=services.pg_dsn, topic_prefix=topic_prefix)
    pipeline.add_ingest()
    try:
        pipeline.start()  # only the edge: it is the one component added
        yield pipeline.edge_url
    finally:
        pipeline.stop()


def summary_of(stdout: str) -> dict[str, str]:
    out = {}
    for line in stdout.split("\n\n")[0].split("\n"):
        key, value = line[:11].strip(), line[11:].strip()
        out[key] = value
    return out


def refused_table(stdout: str) -> list[tuple[int, str, str]]:
    lines = stdout.split("refused lines", 1)[1].split("\n")[3:]
    rows = []
    for line in lines:
        if not line.strip():
            break
        number, field, message = re.split(r"\s{2,}", line.strip(), maxsplit=2)
        rows.append((int(number), field, message))
    return rows


async def test_hits_land_on_kafka_and_refused_lines_are_reported_by_line_number(edge, services, topic_prefix, tmp_path):
    guid = str(uuid.uuid4())
    explicit_hit_id = str(uuid.uuid4())
    lines = [
        pageview(1, guid, title="Home"),                                              # 1
        "",                                                                           # 2 blank
        pageview(3, guid, hit_id=explicit_hit_id),                                    # 3
        "{not json",                                                                  # 4 local
        "[1, 2]",                                                                     # 5 local
        json.dumps({"guid": guid, "url": "ftp://example.com/x"}),                     # 6 edge: url
        json.dumps({"guid": guid, "url": f"{SITE}/contact", "type": "event"}),        # 7 edge: event
        json.dumps({"guid": guid, "url": f"{SITE}/contact", "type": "event",
                    "event": {"name": "lead", "module": "contact_form"}}),            # 8
        json.dumps({"guid": "nope", "url": f"{SITE}/"}),                              # 9 edge: guid
    ] + [pageview(n) for n in range(10, 26)]                                          # 10..25
    path = tmp_path / "hits.ndjson"
    path.write_text("\n".join(lines) + "\n")

    out = run_cli("import", str(path), "--edge", edge, "--batch", "4", "--concurrency", "3",
                  "--user-agent", "import-test/1.0", env=cli_env())
    assert out.returncode == 1, out.stdout + out.stderr  # some lines were refused
    summary = summary_of(out.stdout)
    assert summary["lines read"] == "24 (and 1 blank, skipped)"
    assert summary["accepted"] == "19"
    assert summary["refused"] == "5"
    assert summary["time"].endswith("hits/s)")
    refused = refused_table(out.stdout)
    assert [(n, f) for n, f, _ in refused] == [(4, "line"), (5, "line"), (6, "url"), (7, "event"), (9, "guid")]
    assert refused[0][2].startswith("is not valid JSON")
    assert refused[1][2] == "must be a hit object (one per line), not an array"
    assert "http(s) URL" in refused[2][2]
    assert out.stderr == ""  # no progress bar when stderr is no terminal

    topics = Topics(topic_prefix)
    records = await read_topic(services.kafka_bootstrap, topics.hits, 19)
    hits = [hit_codec.decode(r.value) for r in records]
    assert len(hits) == 19 and all(isinstance(h, Hit) for h in hits)
    assert all(r.key == h.guid.encode() for r, h in zip(records, hits, strict=True))
    assert {h.path for h in hits} == {"/p1", "/p3", "/contact", *(f"/p{n}" for n in range(10, 26))}
    assert len({h.hit_id for h in hits}) == 19  # every line got its own hit_id ...
    assert next(h for h in hits if h.path == "/p3").hit_id == explicit_hit_id  # ... an explicit one is kept
    assert all(h.user_agent == "import-test/1.0" for h in hits)
    assert all(h.utm_source == "import" for h in hits if h.path.startswith("/p"))
    lead = next(h for h in hits if h.type == "event")
    assert (lead.event_name, lead.event_module) == ("lead", "contact_form")
    # The edge dead-letters what it refused (lines 6, 7, 9), with the bytes of the line.
    letters = [deadletter_codec.decode(r.value) for r in await read_topic(services.kafka_bootstrap, topics.deadletter, 3)]
    assert len(letters) == 3 and {lt.source for lt in letters} == {"ingest"}


async def test_stdin_all_accepted_exits_zero(edge, services, topic_prefix):
    body = "\n".join(pageview(n) for n in range(7)).encode()
    out = run_cli("import", "-", "--edge", edge, "--quiet", env=cli_env(), input=body)
    assert out.returncode == 0, out.stdout + out.stderr
    assert summary_of(out.stdout)["accepted"] == "7" and summary_of(out.stdout)["refused"] == "0"
    assert "refused lines" not in out.stdout
    assert len(await read_topic(services.kafka_bootstrap, Topics(topic_prefix).hits, 7)) == 7


# --- a scripted edge --------------------------------------------------------------------------


class Stub:
    """An HTTP server answering POST /v1/hits with `answer(body, n)` -> (status, headers, json)."""

    def __init__(self, answer: Callable[[bytes, int], tuple[int, dict[str, str], Any]]) -> None:
        self.answer = answer
        self.requests: list[tuple[float, bytes, dict[str, str]]] = []
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                stub.requests.append((time.monotonic(), body, {k.lower(): v for k, v in self.headers.items()}))
                status, headers, payload = stub.answer(body, len(stub.requests))
                data = json.dumps(payload).encode()
                self.send_response(status)
                for k, v in {"content-type": "application/json", **headers}.items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    @contextlib.contextmanager
    def running(self) -> Iterator[Stub]:
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()


def accept_all(body: bytes, n: int) -> tuple[int, dict[str, str], Any]:
    return 202, {}, {"accepted": len(body.strip().split(b"\n")), "rejected": []}


def test_503_is_retried_after_retry_after_with_the_same_hit_ids(tmp_path):
    def answer(body: bytes, n: int) -> tuple[int, dict[str, str], Any]:
        if n == 1:
            return 503, {"retry-after": "1"}, {"accepted": 0, "rejected": [
                {"index": None, "errors": [{"field": "kafka", "message": "not available"}]}]}
        return accept_all(body, n)

    path = tmp_path / "hits.ndjson"
    path.write_text("\n".join(pageview(n) for n in range(3)) + "\n")
    with Stub(answer).running() as stub:
        out = run_cli("import", str(path), "--edge", stub.url, env=cli_env())
    assert out.returncode == 0, out.stdout + out.stderr
    assert summary_of(out.stdout)["accepted"] == "3"
    assert len(stub.requests) == 2
    (t1, first, headers), (t2, second, _) = stub.requests
    assert first == second  # the retry carries the same hit_ids: duplicates, not new hits
    assert all("hit_id" in json.loads(line) for line in first.split(b"\n") if line)
    assert t2 - t1 >= 0.95  # Retry-After honoured
    assert headers["content-type"] == "application/x-ndjson"
    assert headers["user-agent"].startswith("touchstream-import/")


def test_batches_respect_the_byte_and_item_limits_and_413_splits(tmp_path):
    def answer(body: bytes, n: int) -> tuple[int, dict[str, str], Any]:
        if body.count(b"\n") > 2:  # this "edge" takes at most 2 hits per request
            return 413, {}, {"accepted": 0, "rejected": [
                {"index": None, "errors": [{"field": "body", "message": "too large"}]}]}
        return accept_all(body, n)

    filler = "x" * 400
    lines = [pageview(n, title=filler) for n in range(10)]
    lines.insert(4, pageview(99, title="y" * 3000))  # line 5: larger than a whole request may be
    path = tmp_path / "hits.ndjson"
    path.write_text("\n".join(lines) + "\n")
    with Stub(answer).running() as stub:
        out = run_cli("import", str(path), "--edge", stub.url, "--batch", "3", "--concurrency", "1",
                      env=cli_env(TOUCHSTREAM_IMPORT_MAX_BYTES="2048"))
    assert out.returncode == 1, out.stdout + out.stderr
    summary = summary_of(out.stdout)
    assert (summary["accepted"], summary["refused"]) == ("10", "1")
    [(number, field, message)] = refused_table(out.stdout)
    assert (number, field) == (5, "line")
    size = re.fullmatch(r"is ([\d,]+) bytes; a request may hold at most 2,048", message)
    assert size and int(size.group(1).replace(",", "")) > 3000
    bodies = [body for _, body, _ in stub.requests]
    assert all(len(b) <= 2048 and b.count(b"\n") <= 3 for b in bodies)
    assert any(b.count(b"\n") == 3 for b in bodies)  # a full batch was tried, refused with 413, then split
    accepted_paths = [json.loads(line)["url"].split("/")[-1].split("?")[0]
                      for b in bodies if b.count(b"\n") <= 2 for line in b.split(b"\n") if line]
    assert sorted(accepted_paths) == sorted(f"p{n}" for n in range(10))


def test_an_unreachable_edge_stops_the_import_with_exit_3(tmp_path):
    path = tmp_path / "hits.ndjson"
    path.write_text("\n".join(pageview(n) for n in range(5)) + "\n")
    started = time.monotonic()
    out = run_cli("import", str(path), "--edge", f"http://127.0.0.1:{free_port()}", "--retries", "2",
                  env=cli_env(TOUCHSTREAM_IMPORT_BACKOFF_INITIAL_S="0.05"))
    assert out.returncode == 3, out.stdout + out.stderr
    summary = summary_of(out.stdout)
    assert (summary["accepted"], summary["not sent"]) == ("0", "5")
    assert "stopped early: the edge at http://127.0.0.1:" in out.stdout and "after 3 attempts" in out.stdout
    assert time.monotonic() - started < 30


def test_not_an_edge_and_bad_arguments_are_clear_errors(tmp_path):
    path = tmp_path / "hits.ndjson"
    path.write_text(pageview(1) + "\n")
    with Stub(lambda body, n: (404, {}, {"detail": "Not Found"})).running() as stub:
        out = run_cli("import", str(path), "--edge", stub.url, env=cli_env())
    assert out.returncode == 2, out.stdout + out.stderr
    assert "answered 404" in out.stdout and "is --edge / TOUCHSTREAM_EDGE_URL the ingest edge?" in out.stdout
    out = run_cli("import", str(tmp_path / "missing.ndjson"), env=cli_env())
    assert out.returncode == 2 and "cannot read" in out.stderr and "No such file" in out.stderr
    out = run_cli("import", str(path), "--batch", "501", env=cli_env())
    assert out.returncode == 2 and "must be between 1 and 500" in out.stderr
    out = run_cli("import", str(path), env=cli_env(TOUCHSTREAM_EDGE_URL="edge:8080"))
    assert out.returncode == 2 and "TOUCHSTREAM_EDGE_URL" in out.stderr
