"""A person's devices (SPEC section 5, `person_devices`), for `journey --user-id`, `forget
--user-id` and the dashboard's Journey by user id.

The devices seen with the user id (`identities`), and every device of the person they belong to
(`person_devices`: devices sharing a user id, and devices linked by `previous_guid`). The first
part also finds devices a sink has not merged into a person yet.
"""

from __future__ import annotations

from typing import Any

from schemas.hit import MAX_USER_ID, NUL

PERSON_GUIDS = """
    SELECT guid FROM identities WHERE user_id = $1
    UNION
    SELECT pd.guid FROM person_devices pd
    JOIN person_devices me ON (me.person_id, me.named) = (pd.person_id, pd.named)
    JOIN identities i ON i.guid = me.guid
    WHERE i.user_id = $1
"""


async def person_guids(conn: Any, user_id: str) -> list[str]:
    """The person's device guids (canonical text), sorted."""
    rows = await conn.fetch(f"SELECT guid::text FROM ({PERSON_GUIDS}) p ORDER BY 1", user_id)
    return [r[0] for r in rows]


def user_id_problem(value: str) -> str | None:
    """Why `value` cannot be a user id (the edge's rule, schemas.hit.UserId), or None."""
    if not 1 <= len(value) <= MAX_USER_ID:
        return f"must be 1 to {MAX_USER_ID} characters (got {len(value)})"
    if NUL in value:
        return "must not contain the NUL character"
    return None
