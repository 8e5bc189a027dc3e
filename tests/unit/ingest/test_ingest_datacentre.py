"""Data-centre ranges (ingest.datacentre): the lookup, the settings, and the edge's flag on hits."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import orjson
import pytest
from pydantic import ValidationError

from ingest.client_ip import ClientIp
from ingest.datacentre import DataCentreRangesError, DataCentres, data_centres, parse_ranges, read_ranges
from ingest.settings import IngestSettings
from tests.unit.ingest.test_ingest_app import HIT, make, post, tracker  # noqa: F401  (fixture)


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


RANGES = DataCentres(parse_ranges(["3.5.140.0/22", "3.5.144.0/22", "3.5.142.0/23", "2600:1f18::/33", "198.51.100.7"]))


@pytest.mark.parametrize(("address", "inside"), [
    ("3.5.140.0", True), ("3.5.143.255", True), ("3.5.144.1", True), ("3.5.147.255", True),  # merged, edges
    ("3.5.139.255", False), ("3.5.148.0", False), ("0.0.0.0", False), ("255.255.255.255", False),
    ("198.51.100.7", True), ("198.51.100.8", False),  # a bare address is a /32
    ("2600:1f18::1", True), ("2600:1f18:7fff:ffff::1", True), ("2600:1f18:8000::", False), ("::1", False),
])
def test_lookup(address: str, inside: bool) -> None:
    assert (ip(address) in RANGES) is inside


def test_ranges_are_merged() -> None:
    assert RANGES.size == 3  # 3.5.140.0-3.5.147.255, 198.51.100.7, the IPv6 range
    assert not DataCentres([]) and RANGES


def test_a_bad_range_is_named() -> None:
    with pytest.raises(DataCentreRangesError, match=r"entry 2: '3.5.140.0/33' is not an IP network"):
        parse_ranges(["10.0.0.0/8", "3.5.140.0/33"], "setting")


def test_a_file_of_ranges(tmp_path: Path) -> None:
    path = tmp_path / "dc.txt"
    path.write_text("# AWS, us-east-1 (a sample)\n3.5.140.0/22\n\n2600:1f18::/33  # IPv6\n")
    assert [str(n) for n in read_ranges(path)] == ["3.5.140.0/22", "2600:1f18::/33"]
    path.write_text("3.5.140.0/22\nnot-a-range\n")
    with pytest.raises(DataCentreRangesError, match=r"dc.txt, line entry 2: 'not-a-range'"):
        read_ranges(path)
    with pytest.raises(DataCentreRangesError, match="cannot be read"):
        read_ranges(tmp_path / "missing.txt")


def test_settings_validate_the_ranges_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="ingest_datacenter_ranges"):
        IngestSettings(ingest_datacenter_ranges="10.0.0.0/8, nope")
    bad = tmp_path / "dc.txt"
    bad.write_text("300.1.1.1/8\n")
    with pytest.raises(ValidationError, match="ingest_datacenter_file"):
        IngestSettings(ingest_datacenter_file=bad)
    good = tmp_path / "good.txt"
    good.write_text("3.5.140.0/22\n")
    settings = IngestSettings(ingest_datacenter_ranges="198.51.100.0/24", ingest_datacenter_file=good)
    assert data_centres(settings.ingest_datacenter_ranges, settings.ingest_datacenter_file).size == 2


def test_client_ip_decides_on_the_full_address() -> None:
    # Truncated to a /24 the address would still be stored; the flag is taken before that.
    resolver = ClientIp(["10.0.0.0/8"], "truncate", datacentres=RANGES)
    assert resolver.client("3.5.141.9") == ("3.5.141.0", True)
    assert resolver.client("203.0.113.9") == ("203.0.113.0", False)
    # Behind a trusted proxy the client's address decides, not the proxy's.
    assert resolver.client("10.1.2.3", ["3.5.141.9"]) == ("3.5.141.0", True)
    assert resolver.client("3.5.141.9", ["203.0.113.9"]) == ("3.5.141.0", True)  # an untrusted peer: its own address
    assert resolver.client(None) == (None, False)
    assert ClientIp([], "drop", datacentres=RANGES).client("3.5.141.9") == (None, True)
    assert ClientIp([], "full").client("3.5.141.9") == ("3.5.141.9", False)  # no ranges: no flag


async def test_the_edge_marks_hits_from_a_data_centre(tracker: Path) -> None:  # noqa: F811
    client, publisher, _ = make(tracker, ingest_datacenter_ranges="198.51.100.0/24")  # the test client's network
    assert (await post(client, [HIT, {**HIT, "type": "event", "event": {"name": "lead"}}])).status_code == 202
    assert [orjson.loads(v)["datacenter"] for _, v in publisher.records("u.hits")] == [True, True]
    client, publisher, _ = make(tracker, ingest_datacenter_ranges="3.5.140.0/22")
    assert (await post(client, HIT)).status_code == 202
    assert [orjson.loads(v)["datacenter"] for _, v in publisher.records("u.hits")] == [False]
