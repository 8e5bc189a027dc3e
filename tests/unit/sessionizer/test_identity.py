from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from sessionizer.identity import SESSION_NAMESPACE, hit_fingerprint, session_id


@given(st.uuids(), st.uuids())
def test_session_id_is_uuid5_of_guid_and_opening_hit(guid: uuid.UUID, hit: uuid.UUID) -> None:
    assert session_id(str(guid), str(hit)) == str(uuid.uuid5(SESSION_NAMESPACE, f"{guid}:{hit}"))


def test_session_id_is_pinned() -> None:
    # Changing the namespace or the name format changes every id already in Kafka and Postgres.
    assert session_id("6f1c2b0e-4a57-4c3e-9d61-0b8f3f1e7a01", "00000000-0000-4000-8000-000000000001") == (
        str(uuid.uuid5(uuid.UUID("5d2c3f4e-8a51-5b7e-9c0d-7e1f2a3b4c5d"),
                       "6f1c2b0e-4a57-4c3e-9d61-0b8f3f1e7a01:00000000-0000-4000-8000-000000000001"))
    )


def test_fingerprint_is_stable_and_64_bit() -> None:
    fp = hit_fingerprint("00000000-0000-4000-8000-000000000001")
    assert len(fp) == 8 and fp == hit_fingerprint("00000000-0000-4000-8000-000000000001")
    assert fp != hit_fingerprint("00000000-0000-4000-8000-000000000002")
