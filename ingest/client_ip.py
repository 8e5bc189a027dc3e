"""The client's address, and the form of it the edge stores (SPEC section 2, IP privacy).

Which address: the socket peer, unless the peer is one of `trusted_proxies`. Then
X-Forwarded-For is walked from the right (the hop nearest to us) to the left, skipping
trusted proxies; the first address that is not a trusted proxy is the client. Entries to the
left of it were written by the client itself and are never believed, so a client cannot
spoof its address by sending its own X-Forwarded-For.

Which form: `full`, `truncate` (IPv4 /24, IPv6 /48: the default), `hash` (keyed BLAKE2b, so
the same address gives the same value without being reversible without the key), `drop`.

And whether the address lies in a configured data-centre range (ingest.datacentre), decided on
the full address before it is reduced: `client()` gives both.

The hash key rotates (every `rotate_hours`, 24 by default, aligned to UTC midnight): the key of
a period is HMAC-SHA256(salt, label of the period's start, `YYYY-MM-DD` for daily keys), so the
same address hashes alike within a day but a hashed IP is not a permanent identifier across
days. The edge calls `rotate(received_at)` before each request; 0 hours keeps one key forever.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from functools import lru_cache

from ingest.datacentre import DataCentres
from ingest.settings import IpMode

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_ip(text: str) -> IPAddress | None:
    """An address as proxies write it: `1.2.3.4`, `1.2.3.4:5678`, `::1`, `[::1]:80`; None if it is none."""
    text = text.strip()
    if not text:
        return None
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # IPv4 with a port (an IPv6 address has at least two colons)
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return _unmap(address)


def _unmap(address: IPAddress) -> IPAddress:
    """`::ffff:1.2.3.4` (an IPv4 peer on a dual-stack socket) is the IPv4 address 1.2.3.4."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def period_key(salt: bytes, period: int, period_s: int) -> bytes:
    """The hash key of rotation period `period` (periods of `period_s` seconds since the epoch)."""
    start = datetime.fromtimestamp(period * period_s, UTC)
    label = start.strftime("%Y-%m-%d" if period_s % 86400 == 0 else "%Y-%m-%dT%H:%MZ")
    return hmac.digest(salt, label.encode(), "sha256")[:32]


def forwarded_for(headers: Iterable[bytes]) -> list[str]:
    """Every X-Forwarded-For entry, left to right, across repeated headers."""
    entries: list[str] = []
    for value in headers:
        entries.extend(value.decode("latin-1").split(","))
    return entries


class ClientIp:
    """Resolves and anonymises client addresses; built once from the settings."""

    def __init__(self, trusted_proxies: Sequence[str], mode: IpMode, salt: str = "",
                 datacentres: DataCentres | None = None, rotate_hours: int = 24) -> None:
        self._trusted: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(c, strict=False) for c in trusted_proxies)
        self.mode: IpMode = mode
        if mode == "hash" and not salt:
            raise ValueError("ip mode 'hash' needs a salt")
        self._salt = salt.encode()
        self._key = hashlib.blake2b(self._salt, digest_size=32).digest() if salt else b""  # the key when not rotating
        # Only a hashed address has a key to rotate; the others never change.
        self.rotates = mode == "hash" and rotate_hours > 0
        self._period_s = rotate_hours * 3600
        self._period = -1  # the period of the current key: none yet
        # Peers repeat (proxies, NATs, keep-alive clients): remember what each one becomes.
        self.stored = lru_cache(maxsize=65536)(self._stored)
        self.peer = lru_cache(maxsize=65536)(self._stored_peer)  # peer -> stored form, when no proxy is involved
        self._datacentres = datacentres or None
        self.peer_client = lru_cache(maxsize=65536)(self._peer_client)  # peer -> (stored form, data centre)
        if self.rotates:
            self.rotate(datetime.fromtimestamp(0, UTC))  # a defined key before the first request

    def rotate(self, now: datetime) -> None:
        """Use the key of the period holding `now` (a request's received_at); cheap when unchanged."""
        if not self.rotates:
            return
        period = int(now.timestamp()) // self._period_s
        if period == self._period:
            return
        self._period = period
        self._key = period_key(self._salt, period, self._period_s)
        self.stored.cache_clear()  # remembered forms were made with the old key
        self.peer.cache_clear()
        self.peer_client.cache_clear()

    @property
    def trusts_proxies(self) -> bool:
        return bool(self._trusted)

    def is_trusted(self, address: IPAddress) -> bool:
        return any(address.version == net.version and address in net for net in self._trusted)

    def resolve(self, peer: str | None, xff: Sequence[str] = ()) -> IPAddress | None:
        """The client address of a request from socket `peer` carrying X-Forwarded-For entries `xff`."""
        address = parse_ip(peer) if peer else None
        if address is None or not self._trusted or not xff or not self.is_trusted(address):
            return address
        for entry in reversed(xff):
            hop = parse_ip(entry)
            if hop is None:
                # Garbage in the chain: nothing left of it can be believed; the last trusted
                # hop that handed it to us is the best address known.
                return address
            address = hop
            if not self.is_trusted(hop):
                return hop
        return address  # every hop is a trusted proxy: the leftmost is as far as we can see

    def _stored(self, address: IPAddress | None) -> str | None:
        """The form of `address` that leaves the edge, per the ip mode."""
        if address is None or self.mode == "drop":
            return None
        if self.mode == "full":
            return str(address)
        if self.mode == "truncate":
            prefix = 24 if address.version == 4 else 48
            return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)
        return hashlib.blake2b(address.packed, key=self._key, digest_size=16).hexdigest()

    def __call__(self, peer: str | None, xff: Sequence[str] = ()) -> str | None:
        """The stored form of the client address of a request."""
        if not xff or not self._trusted:
            return self.peer(peer)
        return self.stored(self.resolve(peer, xff))

    def _stored_peer(self, peer: str | None) -> str | None:
        return self.stored(parse_ip(peer) if peer else None)

    def client(self, peer: str | None, xff: Sequence[str] = ()) -> tuple[str | None, bool]:
        """The stored form of the client address of a request, and whether the address is in a
        data-centre range."""
        if not xff or not self._trusted:
            return self.peer_client(peer)
        address = self.resolve(peer, xff)
        return self.stored(address), self.in_datacentre(address)

    def in_datacentre(self, address: IPAddress | None) -> bool:
        return address is not None and self._datacentres is not None and address in self._datacentres

    def _peer_client(self, peer: str | None) -> tuple[str | None, bool]:
        address = parse_ip(peer) if peer else None
        return self.stored(address), self.in_datacentre(address)
