"""Query parameters of every page and endpoint, validated with pydantic.

The same models parse a page's URL and an API call, so a page and the endpoint behind each of its
tables agree on every filter. Anything invalid becomes `BadParameters`: a 400 that names each
parameter and says what is wrong (the pages show the same messages).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from schemas.errors import TouchstreamError
from schemas.timefmt import UTC

MODELS = ("first_touch", "last_touch", "last_non_direct", "linear", "position_based", "time_decay")
MODEL_LABELS = {"first_touch": "First touch", "last_touch": "Last touch", "last_non_direct": "Last non-direct",
                "linear": "Linear", "position_based": "Position-based", "time_decay": "Time decay"}
CHANNELS = ("Paid Search", "Paid Social", "Display", "Organic Search", "Organic Social", "Email", "Affiliates",
            "Referral", "Direct", "Unassigned")
PERIODS = {"7d": 7, "30d": 30, "90d": 90}
MAX_DAYS = 366
MAX_LIST_DEPTH = 10_000  # sessions a list may page through
NONE_VALUE = "(none)"  # how a filter asks for "no utm_source / utm_campaign"

Model = Literal["first_touch", "last_touch", "last_non_direct", "linear", "position_based", "time_decay"]
Channel = Literal["Paid Search", "Paid Social", "Display", "Organic Search", "Organic Social", "Email",
                  "Affiliates", "Referral", "Direct", "Unassigned"]
# Free-text filters: printable, short. Whether the value exists is checked against the data.
Text = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]


class BadParameters(TouchstreamError):
    """One or more query parameters are wrong: [(parameter, message)]. Answered with a 400 (or the
    page with the messages), never retried."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{p}: {m}" for p, m in problems))
        self.problems = list(problems)

    def as_json(self) -> dict[str, Any]:
        return {"error": "invalid query parameters",
                "errors": [{"parameter": p, "message": m} for p, m in self.problems]}


def today() -> date:
    return datetime.now(UTC).date()


class Query(BaseModel):
    """Base of every parameter model: unknown parameters are errors, `format` picks JSON or CSV."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    format: Literal["json", "csv"] = Field("json", description="json, or csv for the table as a file")

    @classmethod
    def list_fields(cls) -> set[str]:
        return {f.alias or name for name, f in cls.model_fields.items()
                if getattr(f.annotation, "__origin__", None) is list}

    @classmethod
    def parse(cls, query: Mapping[str, Any] | Sequence[tuple[str, str]]) -> Query:
        """From a query string's (name, value) pairs; list parameters may repeat or be comma separated."""
        pairs = list(query.multi_items()) if hasattr(query, "multi_items") else list(
            query.items() if isinstance(query, Mapping) else query)
        lists = cls.list_fields()
        data: dict[str, Any] = {}
        for name, value in pairs:
            if name in lists:
                data.setdefault(name, []).extend(v.strip() for v in str(value).split(",") if v.strip())
            elif value != "" or name not in data:
                data[name] = value
        data = {k: v for k, v in data.items() if v != ""}  # an empty form field is an absent one
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise BadParameters([_problem(err) for err in exc.errors(include_url=False)]) from None

    def query_string(self, **changes: Any) -> str:
        """This query as a URL query string (aliases, lists comma separated, defaults left out)."""
        from urllib.parse import urlencode

        values = self.model_dump(by_alias=True, exclude_defaults=True)
        values.update(changes)
        out = []
        for key, value in values.items():
            if value is None or value == [] or (key == "format" and value == "json"):
                continue
            out.append((key, ",".join(map(str, value)) if isinstance(value, list) else str(value)))
        return urlencode(out)


def _problem(err: Any) -> tuple[str, str]:
    loc = [str(p) for p in err.get("loc", ()) if not isinstance(p, int)]
    name = loc[0] if loc else "query"
    message = err.get("msg", "is invalid")
    if err.get("type") == "missing":
        message = "is required"
    elif err.get("type") == "string_pattern_mismatch":
        message = "must be printable text (no control characters)"
    elif err.get("type") == "extra_forbidden":
        message = "is not a parameter of this page"
    elif message.startswith("Value error, "):
        message = message[len("Value error, "):]
        if message.startswith("[") and "] " in message:  # raised by _error
            name, message = message[1:].split("] ", 1)
    return name, message


class Filters(Query):
    """The filters every page has: the period, the site, conversion events, model and lookback."""

    period: Literal["7d", "30d", "90d", "custom"] = Field(
        "30d", description="7d, 30d or 90d up to today (UTC), or custom (from and to)")
    from_: date | None = Field(None, alias="from", description="first day (UTC), with period=custom")
    to: date | None = Field(None, description="last day (UTC), included, with period=custom")
    site: Text | None = Field(None, description="one site (host); absent: every site")
    events: list[Text] = Field(default_factory=list, description="conversion events, comma separated; "
                               "absent: every name in conversion_events and conversion_rules")
    model: Model = Field("linear", description="attribution model")
    lookback: int | None = Field(None, ge=1, le=365, description="attribution lookback window in days (7, 30, 90 "
                                 "or the configured one); absent: the configured one (`touchstream attribution set`)")

    @model_validator(mode="before")
    @classmethod
    def _dates_mean_custom(cls, data: Any) -> Any:
        # A from/to without a period is a custom range (a hand-written URL).
        if isinstance(data, dict) and "period" not in data and ("from" in data or "to" in data):
            return {**data, "period": "custom"}
        return data

    @model_validator(mode="after")
    def _range(self) -> Filters:
        if self.period == "custom":
            missing = [n for n, v in (("from", self.from_), ("to", self.to)) if v is None]
            if missing:
                raise _error(missing[0], "is required with period=custom (a date, YYYY-MM-DD)")
            assert self.from_ is not None and self.to is not None
            if self.from_ > self.to:
                raise _error("from", f"{self.from_} is after to ({self.to}): the range is empty")
            if (self.to - self.from_).days + 1 > MAX_DAYS:
                raise _error("to", f"the range is longer than {MAX_DAYS} days")
        elif self.from_ is not None or self.to is not None:
            raise _error("from" if self.from_ is not None else "to", f"only goes with period=custom, not "
                         f"period={self.period}")
        return self

    @property
    def first_day(self) -> date:
        if self.period == "custom":
            assert self.from_ is not None
            return self.from_
        return today() - timedelta(days=PERIODS[self.period] - 1)

    @property
    def last_day(self) -> date:
        if self.period == "custom":
            assert self.to is not None
            return self.to
        return today()

    def days(self) -> list[date]:
        first = self.first_day
        return [first + timedelta(days=n) for n in range((self.last_day - first).days + 1)]


def _error(parameter: str, message: str) -> ValueError:
    """A problem found across fields that still names its parameter (`_problem` reads it back)."""
    return ValueError(f"[{parameter}] {message}")


class OverviewQuery(Filters):
    pass


class TimeseriesQuery(Filters):
    metric: Literal["sessions", "devices", "pageviews", "conversions"] = Field(
        "sessions", description="what is counted per day, stacked by channel")


class TopQuery(Filters):
    dimension: Literal["landing_page", "source", "campaign"] = Field(
        "landing_page", description="landing_page, source (utm_source) or campaign (utm_campaign)")
    limit: int = Field(10, ge=1, le=100, description="rows, at most 100")


class AttributionQuery(Filters):
    group_by: Literal["channel", "source", "campaign", "module"] = Field(
        "channel", description="channel, source (utm_source), campaign (utm_campaign) or module")
    by: Literal["device", "person"] = Field(
        "device", description="whose touches earn credit: the converting device's (device), or every device of its "
        "person (person: the per-person rollups of migration 0012, at the configured lookback only)")


class ConversionsQuery(Filters):
    pass


# A site's user id as `identify()` sends it (schemas.hit.UserId): any text but NUL.
UserId = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\x00]+$")]


class JourneyQuery(Filters):
    """One device (guid), or one person (user_id: every device of it, SPEC section 5)."""

    guid: str | None = Field(None, description="the device's guid (a UUID); or user_id instead")
    user_id: UserId | None = Field(None, description="the site's user id (identify()): every device of the person")

    @field_validator("guid")
    @classmethod
    def _uuid(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(uuid.UUID(value.strip()))
        except ValueError:
            shown = value if len(value) <= 60 else value[:57] + "..."
            raise ValueError(f"{shown!r} is not a UUID (e.g. 6f1c2b0e-4a57-4c3e-9d61-0b8f3f1e7a01)") from None

    @model_validator(mode="after")
    def _one_of(self) -> JourneyQuery:
        if (self.guid is None) == (self.user_id is None):
            raise _error("guid", "give a device's guid or a user_id (one of them)")
        return self


class JourneyPageQuery(Filters):
    """The Journey page may open with no guid or user id yet (a search box)."""

    guid: str | None = Field(None, description="the device's guid (a UUID)")
    user_id: UserId | None = Field(None, description="the site's user id: every device of the person")

    @field_validator("guid")
    @classmethod
    def _uuid(cls, value: str | None) -> str | None:
        return JourneyQuery._uuid(value)

    @model_validator(mode="after")
    def _not_both(self) -> JourneyPageQuery:
        if self.guid is not None and self.user_id is not None:
            raise _error("user_id", "goes without a guid: search a device or a person")
        return self


class SessionsQuery(Filters):
    channel: Channel | None = Field(None, description="one channel")
    source: Text | None = Field(None, description=f"one utm_source ({NONE_VALUE}: none)")
    campaign: Text | None = Field(None, description=f"one utm_campaign ({NONE_VALUE}: none)")
    bots: Literal["exclude", "include", "only"] = Field("exclude", description="sessions of crawlers")
    status: Literal["any", "open", "closed"] = Field("any", description="open or closed sessions")
    page: int = Field(1, ge=1, le=10_000, description="page number, from 1")
    page_size: int = Field(50, ge=1, le=500, description="sessions per page, at most 500")

    @model_validator(mode="after")
    def _depth(self) -> SessionsQuery:
        # OFFSET reads every row before the page: past this, narrow the filters instead.
        if self.page * self.page_size > MAX_LIST_DEPTH:
            raise _error("page", f"goes deeper than the first {MAX_LIST_DEPTH:,} sessions; narrow the filters")
        return self
