"""What an organization holds, counted under its row's lock."""

from typing import Literal, get_args

from sqlalchemy.ext.asyncio import AsyncConnection

from server.storage.database import in_one_round_trip

# Tables of things an organization creates and may have only so many of.
Held = Literal["webhooks", "trust_policies"]

_COUNT_LOCKED = {
    table: f"SELECT (SELECT count(*) FROM {table} WHERE org_id = %(org_id)s)"  # noqa: S608
    " FROM organizations WHERE org_id = %(org_id)s FOR UPDATE"
    for table in get_args(Held)
}


async def count_locked(connection: AsyncConnection, org_id: str, held: Held) -> int:
    """How many rows of `held` the organization has, with its row locked
    until the transaction ends: two creations at once count one after the
    other, so neither passes a limit the other reached. An organization
    without a row yet (its first token is not stored) has none."""
    rows = await in_one_round_trip(connection, (_COUNT_LOCKED[held], {"org_id": org_id}))
    return int(rows[0][0]) if rows else 0
