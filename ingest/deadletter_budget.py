"""How many refused bytes the edge keeps per client and minute (a dead-letter flood's bound).

Every refused item or body becomes a dead letter carrying the original bytes (up to
`TOUCHSTREAM_INGEST_DEADLETTER_PAYLOAD_BYTES`, 64 KiB), so without a bound one client posting
malformed 1 MiB bodies turns each into a permanent 64 KiB row. With this budget a client's
dead letters keep their bytes until they have kept `bytes_per_minute` in the current minute;
beyond it the refusal is still answered, counted and dead-lettered with its reason and errors,
only without the bytes (the reason says so).

A client is its address as the edge resolved it (the socket peer, or the client a trusted proxy
names), before the stored form hides it: IPv4 addresses each, IPv6 by /64, the block one
subscriber gets. The table lives for one minute, at most `max_clients` entries: when a flood of
addresses fills it, clients not in it yet keep no bytes until the minute turns (so the table's
memory stays bounded too).
"""

from __future__ import annotations

import ipaddress
from datetime import datetime

from ingest.client_ip import parse_ip


class DeadLetterBudget:
    """Payload bytes kept per client in the current minute (`take`)."""

    def __init__(self, bytes_per_minute: int, max_clients: int = 65_536) -> None:
        self.bytes_per_minute = bytes_per_minute
        self.max_clients = max_clients
        self._minute = -1
        self._kept: dict[str, int] = {}

    def take(self, client: str | None, nbytes: int, at: datetime) -> bool:
        """Whether `client` may keep `nbytes` more at `at`; if so they are counted. (All or
        nothing: a payload is kept whole, up to the payload cut, or not at all.)"""
        minute = int(at.timestamp()) // 60
        if minute != self._minute:
            self._minute = minute
            self._kept.clear()
        key = client_key(client)
        kept = self._kept.get(key)
        if kept is None:
            if len(self._kept) >= self.max_clients:
                return False
            kept = 0
        if kept + nbytes > self.bytes_per_minute:
            return False
        self._kept[key] = kept + nbytes
        return True


def client_key(client: str | None) -> str:
    """The budget's key of a client address: IPv4 as it is, IPv6 by its /64 (an IPv4 peer on
    a dual-stack socket, ::ffff:a.b.c.d, is IPv4)."""
    if not client or ":" not in client:
        return client or ""
    address = parse_ip(client)
    if address is None:
        return client
    if address.version == 6:
        return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))
    return str(address)
