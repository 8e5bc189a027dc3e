"""Data-centre address ranges: is a client address one a person's browser is unlikely to use?

Hits from cloud and hosting networks are mostly crawlers, uptime checks and scripts that send a
browser's user agent; the crawler list cannot see them. The edge checks the client address
(before it is truncated or hashed) against the configured ranges and marks the hit
`datacenter` (SPEC rule 11): its session is flagged `is_bot`, not dropped, unless the
sessionizer is told to drop them (TOUCHSTREAM_SESSION_DROP_DATACENTER).

The ranges come from TOUCHSTREAM_INGEST_DATACENTER_RANGES (comma separated) and/or the file
TOUCHSTREAM_INGEST_DATACENTER_FILE (one CIDR a line, `#` comments), e.g. built from the
providers' published lists. A lookup is a binary search over the merged ranges, and the edge
remembers the answer per client address with the stored form (ingest.client_ip).
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_right
from collections.abc import Iterable
from pathlib import Path

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class DataCentreRangesError(ValueError):
    """A range that is not a CIDR; the message names where it came from."""


def parse_ranges(entries: Iterable[str], where: str = "setting") -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    networks = []
    for n, entry in enumerate(entries, 1):
        text = entry.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise DataCentreRangesError(
                f"{where} entry {n}: {text!r} is not an IP network (e.g. 3.5.140.0/22 or 2600:1f18::/33)"
            ) from None
    return networks


def read_ranges(path: Path) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The ranges of a file (one CIDR a line); DataCentreRangesError naming the file and line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DataCentreRangesError(f"data-centre ranges file {path}: cannot be read: {exc.strerror or exc}") from None
    return parse_ranges(lines, f"data-centre ranges file {path}, line")


class DataCentres:
    """A set of address ranges, merged per IP version for a binary search."""

    def __init__(self, networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> None:
        spans: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
        for net in networks:
            spans[net.version].append((int(net.network_address), int(net.broadcast_address)))
        self._starts: dict[int, list[int]] = {}
        self._ends: dict[int, list[int]] = {}
        for version, ranges in spans.items():
            merged: list[list[int]] = []
            for start, end in sorted(ranges):
                if merged and start <= merged[-1][1] + 1:
                    merged[-1][1] = max(merged[-1][1], end)
                else:
                    merged.append([start, end])
            self._starts[version] = [s for s, _ in merged]
            self._ends[version] = [e for _, e in merged]
        self.size = sum(len(s) for s in self._starts.values())

    def __contains__(self, address: IPAddress) -> bool:
        starts = self._starts[address.version]
        at = bisect_right(starts, int(address)) - 1
        return at >= 0 and int(address) <= self._ends[address.version][at]

    def __bool__(self) -> bool:
        return self.size > 0


def data_centres(ranges: Iterable[str], file: Path | None) -> DataCentres:
    """The edge's ranges: the setting's and the file's."""
    networks = parse_ranges(ranges, "TOUCHSTREAM_INGEST_DATACENTER_RANGES")
    if file is not None:
        networks += read_ranges(file)
    return DataCentres(networks)
