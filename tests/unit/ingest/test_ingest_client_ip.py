"""Client address: trusted proxies, X-Forwarded-For spoofing, every ip mode, IPv6 (pure)."""

from __future__ import annotations

import hashlib
import ipaddress
from datetime import UTC, datetime

import pytest

from ingest.client_ip import ClientIp, forwarded_for, parse_ip

SALT = "0123456789abcdef-salt"


def full(trusted: list[str] | None = None) -> ClientIp:
    return ClientIp(trusted or [], "full")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("203.0.113.7", "203.0.113.7"),
        (" 203.0.113.7 ", "203.0.113.7"),
        ("203.0.113.7:51234", "203.0.113.7"),
        ("2001:db8::1", "2001:db8::1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("::ffff:198.51.100.9", "198.51.100.9"),  # IPv4 peer on a dual-stack socket
        ("unknown", None),
        ("", None),
        ("999.1.1.1", None),
        ("_hidden", None),
    ],
)
def test_parse_ip(text: str, expected: str | None) -> None:
    parsed = parse_ip(text)
    assert (str(parsed) if parsed else None) == expected


def test_forwarded_for_joins_repeated_headers() -> None:
    assert [e.strip() for e in forwarded_for([b"1.1.1.1, 2.2.2.2", b"3.3.3.3"])] == ["1.1.1.1", "2.2.2.2", "3.3.3.3"]


def test_socket_peer_without_trusted_proxies() -> None:
    assert full()("198.51.100.4", ["203.0.113.9"]) == "198.51.100.4"  # XFF ignored: nobody is trusted


def test_untrusted_peer_cannot_spoof_with_x_forwarded_for() -> None:
    resolver = full(["10.0.0.0/8"])
    assert resolver("198.51.100.4", ["1.2.3.4"]) == "198.51.100.4"


def test_trusted_proxy_gives_the_forwarded_client() -> None:
    resolver = full(["10.0.0.0/8"])
    assert resolver("10.1.2.3", ["203.0.113.9"]) == "203.0.113.9"


def test_walks_right_to_left_past_trusted_hops() -> None:
    resolver = full(["10.0.0.0/8", "192.168.0.0/16"])
    # client -> (claims 6.6.6.6) -> real client 203.0.113.9 -> proxy 192.168.1.1 -> LB 10.0.0.1 -> edge
    assert resolver("10.0.0.1", ["6.6.6.6", "203.0.113.9", "192.168.1.1"]) == "203.0.113.9"


def test_a_client_written_entry_left_of_the_real_client_is_ignored() -> None:
    resolver = full(["10.0.0.0/8"])
    # The client sent "X-Forwarded-For: 1.1.1.1"; the proxy appended the real address.
    assert resolver("10.0.0.5", forwarded_for([b"1.1.1.1, 198.51.100.77"])) == "198.51.100.77"


def test_all_hops_trusted_gives_the_leftmost() -> None:
    resolver = full(["10.0.0.0/8"])
    assert resolver("10.0.0.1", ["10.9.9.9", "10.0.0.2"]) == "10.9.9.9"


def test_garbage_in_the_chain_stops_the_walk_at_the_last_trusted_hop() -> None:
    resolver = full(["10.0.0.0/8"])
    assert resolver("10.0.0.1", ["203.0.113.1", "not-an-ip", "10.0.0.2"]) == "10.0.0.2"


def test_trusted_peer_without_forwarded_for_is_the_peer() -> None:
    assert full(["10.0.0.0/8"])("10.0.0.1", []) == "10.0.0.1"


def test_ipv6_proxies_and_clients() -> None:
    resolver = full(["2001:db8:ffff::/48"])
    assert resolver("2001:db8:ffff::1", ["2001:db8:1:2::abcd"]) == "2001:db8:1:2::abcd"
    assert resolver("2001:db8:eeee::1", ["2001:db8:1:2::abcd"]) == "2001:db8:eeee::1"  # peer not trusted
    assert resolver("2001:db8:ffff::1", ["[2001:db8:1:2::abcd]:8443"]) == "2001:db8:1:2::abcd"


def test_ipv4_mapped_peer_matches_an_ipv4_proxy_range() -> None:
    assert full(["10.0.0.0/8"])("::ffff:10.0.0.1", ["203.0.113.5"]) == "203.0.113.5"


def test_no_peer() -> None:
    assert full()(None, []) is None
    assert ClientIp([], "truncate")(None) is None


# --- ip modes -----------------------------------------------------------------------------------


def test_truncate_is_the_default_form_ipv4_24_ipv6_48() -> None:
    resolver = ClientIp([], "truncate")
    assert resolver("203.0.113.77") == "203.0.113.0"
    assert resolver("2001:db8:1234:5678:9abc::1") == "2001:db8:1234::"
    assert resolver("::ffff:203.0.113.77") == "203.0.113.0"


def test_full_keeps_the_address() -> None:
    assert ClientIp([], "full")("2001:db8::77") == "2001:db8::77"


def test_drop_stores_nothing() -> None:
    assert ClientIp([], "drop")("203.0.113.77") is None
    assert ClientIp(["10.0.0.0/8"], "drop")("10.0.0.1", ["203.0.113.77"]) is None


def test_hash_is_keyed_stable_and_not_the_address() -> None:
    one = ClientIp([], "hash", SALT)
    value = one("203.0.113.77")
    assert value is not None and len(value) == 32 and "203" not in value
    assert one("203.0.113.77") == value  # same address, same value
    assert one("203.0.113.78") != value
    assert ClientIp([], "hash", SALT + "x")("203.0.113.77") != value  # the key matters
    unkeyed = hashlib.blake2b(ipaddress.ip_address("203.0.113.77").packed, digest_size=16).hexdigest()
    assert value != unkeyed  # not a plain (dictionary-attackable) hash
    assert len(one("2001:db8::1") or "") == 32


def test_hash_key_rotates_daily_by_default_and_not_when_told() -> None:
    day1, later, day2 = (datetime(2026, 3, 2, 0, 0, tzinfo=UTC), datetime(2026, 3, 2, 23, 59, 59, tzinfo=UTC),
                         datetime(2026, 3, 3, 0, 0, tzinfo=UTC))
    daily = ClientIp([], "hash", SALT)
    values = []
    for when in (day1, later, day2, day1):
        daily.rotate(when)
        values.append(daily("203.0.113.77"))
    assert values[0] == values[1] == values[3] != values[2]  # a key per UTC day, the same one back again
    hourly = ClientIp([], "hash", SALT, rotate_hours=1)
    hourly.rotate(day1)
    first = hourly("203.0.113.77")
    hourly.rotate(day1.replace(minute=59))
    assert hourly("203.0.113.77") == first
    hourly.rotate(day1.replace(hour=1))
    assert hourly("203.0.113.77") != first
    fixed = ClientIp([], "hash", SALT, rotate_hours=0)
    before = fixed("203.0.113.77")
    fixed.rotate(day2)
    assert fixed("203.0.113.77") == before and not fixed.rotates


def test_hash_needs_a_salt() -> None:
    with pytest.raises(ValueError, match="salt"):
        ClientIp([], "hash", "")


def test_mode_applies_to_the_forwarded_client() -> None:
    resolver = ClientIp(["10.0.0.0/8"], "truncate")
    assert resolver("10.0.0.1", ["198.51.100.200"]) == "198.51.100.0"
