"""The JSON API (`/api/v1/...`): one `Endpoint` per chart or table, each with its parameter model
and row model. The routes, the OpenAPI document and the pages' CSV links are all made from
ENDPOINTS, so the document cannot drift from the code (tests/unit/dashboard checks it too).

Every endpoint answers `?format=csv` with the same rows as a CSV file; a 400 names each bad
parameter; nothing writes. Every answer says how fresh the rollups it read are: `as_of` in the JSON,
the `X-Touchstream-As-Of` header on JSON and CSV (every row committed before it is counted).
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime
from types import ModuleType
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict

from dashboard import queries
from dashboard.params import (
    AttributionQuery,
    BadParameters,
    ConversionsQuery,
    Filters,
    JourneyQuery,
    OverviewQuery,
    Query,
    SessionsQuery,
    TimeseriesQuery,
    TopQuery,
)
from dashboard.queries import Table

PREFIX = "/api/v1"


class SummaryRow(BaseModel):
    sessions: int
    devices: int
    pageviews: int
    events: int
    bounce_rate: float | None
    conversions: int
    conversion_rate: float | None
    open_now: int
    bot_sessions: int


class SeriesRow(BaseModel):
    day: date
    channel: str
    value: float


class TopRow(BaseModel):
    landing_page: str | None = None
    source: str | None = None
    campaign: str | None = None
    sessions: int
    bounce_rate: float | None


class AttributionRow(BaseModel):
    """Credit of one group under each model, and `value_<CUR>` per currency (e.g. `value_EUR`): the value
    the query's model attributes to the group, in that currency (null: none of its conversions carried
    value in it). The answer's `currencies` lists them; values are never summed across currencies."""

    model_config = ConfigDict(extra="allow", json_schema_extra={
        "patternProperties": {"^value_[A-Z]{3}$": {"type": ["number", "null"]}}})

    channel: str | None = None
    source: str | None = None
    campaign: str | None = None
    module: str | None = None
    first_touch: float
    last_touch: float
    last_non_direct: float
    linear: float
    position_based: float
    time_decay: float


class DailyConversionsRow(BaseModel):
    day: date
    conversion_name: str
    conversions: int


class ModuleRow(BaseModel):
    module: str | None
    conversion_name: str
    conversions: int


class ChannelRateRow(BaseModel):
    channel: str
    sessions: int
    conversions: float
    conversion_rate: float | None


class SessionRow(BaseModel):
    session_id: uuid.UUID
    guid: uuid.UUID
    session_index: int
    started_at: datetime
    site: str
    channel: str
    utm_source: str | None
    utm_medium: str | None
    utm_campaign: str | None
    landing_path: str
    pageviews: int
    events: int
    duration_s: float
    status: str
    is_bot: bool
    device: str | None = None  # journey by user id: D1, D2, ... (the person's devices by first session)


class CreditRow(BaseModel):
    device: str | None = None  # journey by user id: the conversion's device (D1, D2, ...) and guid
    guid: uuid.UUID | None = None
    conversion_hit_id: uuid.UUID
    converted_at: datetime
    conversion_name: str
    module: str | None
    session_id: uuid.UUID | None
    touch_index: int | None
    touch_count: int | None
    touch_started_at: datetime | None
    channel: str | None
    utm_source: str | None
    utm_campaign: str | None
    credit: float | None


class MetaRow(BaseModel):
    sites: list[str]
    conversion_events: list[str]
    lookbacks: list[int]
    lookback: int  # the configured one: what a query without `lookback` gets, and the views give
    models: list[str]
    first_day: date | None
    last_day: date | None


@dataclass(frozen=True)
class Endpoint:
    path: str
    function: str  # the name of the function in dashboard.queries (and dashboard.baseline)
    summary: str
    query: type[Query]
    row: type[BaseModel]

    @property
    def url(self) -> str:
        return PREFIX + self.path

    async def answer(self, conn: Any, q: Query, source: ModuleType = queries) -> Table:
        """The endpoint's table, from the rollups (queries) or from the views (dashboard.baseline)."""
        if self.function == "meta":
            return await queries.meta(conn)
        assert isinstance(q, Filters)
        scope = await queries.scope(conn, q)
        function: Callable[..., Awaitable[Table]] = getattr(source, self.function)
        return await function(conn, scope, q)


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("/meta", "meta", "Sites, conversion events, lookbacks and models to filter by", Query, MetaRow),
    Endpoint("/overview/summary", "summary", "Sessions, devices, pageviews, conversions and sessions open now",
             OverviewQuery, SummaryRow),
    Endpoint("/overview/timeseries", "timeseries", "A metric per day, stacked by channel", TimeseriesQuery,
             SeriesRow),
    Endpoint("/overview/top", "top", "Top landing pages, sources or campaigns by sessions", TopQuery, TopRow),
    Endpoint("/attribution", "attribution", "Credit under all six models, grouped", AttributionQuery,
             AttributionRow),
    Endpoint("/conversions/daily", "conversions_daily", "Conversions per day and name", ConversionsQuery,
             DailyConversionsRow),
    Endpoint("/conversions/by-channel", "conversions_by_channel",
             "Conversions credited per channel (model, lookback), sessions and conversion rate", ConversionsQuery,
             ChannelRateRow),
    Endpoint("/conversions/by-module", "conversions_by_module", "Conversions per conversion module and name",
             ConversionsQuery, ModuleRow),
    Endpoint("/journey/sessions", "journey_sessions", "A device's sessions in order, or a person's (user_id): every device's, labelled", JourneyQuery, SessionRow),
    Endpoint("/journey/credits", "journey_credits",
             "A device's (or a person's) conversions with the touches that earned credit under the model", JourneyQuery, CreditRow),
    Endpoint("/sessions", "sessions", "Sessions, filtered and paged, newest first", SessionsQuery, SessionRow),
)
BY_FUNCTION = {e.function: e for e in ENDPOINTS}


# --- encoding ----------------------------------------------------------------------------------------


def _default(value: Any) -> Any:
    # asyncpg's UUID is its own class (orjson only knows uuid.UUID)
    if type(value).__name__ == "UUID":
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def to_json(doc: Any) -> bytes:
    return orjson.dumps(doc, default=_default, option=orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS)


AS_OF_HEADER = "X-Touchstream-As-Of"


def document(t: Table, q: Query, as_of: datetime | None = None) -> dict[str, Any]:
    """The JSON answer: the rows, their columns, what they were asked with, the table's extras, and
    (from the rollups) how fresh they are."""
    params = q.model_dump(mode="json", by_alias=True, exclude={"format"})
    if isinstance(q, Filters):
        params.update({"from": q.first_day.isoformat(), "to": q.last_day.isoformat()})
    freshness = {} if as_of is None else {"as_of": as_of}
    return {"columns": t.columns, "rows": t.rows, "params": params, **t.meta, **freshness}


def csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # shortest text that reads back as the same double
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def to_csv(t: Table) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(t.columns)
    for row in t.rows:
        writer.writerow([csv_cell(row.get(c)) for c in t.columns])
    return out.getvalue()


def bad_request(exc: BadParameters) -> tuple[int, bytes]:
    return 400, to_json(exc.as_json())
