"""Operators' own channel rules: a file named by TOUCHSTREAM_SESSION_CHANNEL_RULES_FILE.

Ordered rules, each a channel and conditions on the session's touch (`sessionizer.channel`:
the GA4-style source / medium / campaign, the click id type, the referrer host and GA4's source
category). A rule matches when every condition it gives holds; the first match wins; with none,
GA4's default channel group decides (or Unassigned, with `defaults = false`). A condition is a
string (equal, ignoring case), a list of strings (any of them), or `{regex = "..."}` (the whole
value matches, ignoring case). Absent values (no click id, no referrer) are "".

TOML (`.toml`) or JSON (`.json`), e.g.:

    defaults = true

    [[rule]]
    channel = "Paid Social"
    click_id = "fbclid"

    [[rule]]
    channel = "Email"
    medium = ["newsletter", "crm"]

    [[rule]]
    channel = "Partners"
    referrer = {regex = '(.+\\.)?partner-network\\.com'}

The file is read and validated once, at start-up: a bad file stops the sessionizer with the
file, the rule and the field at fault (`ChannelRulesError`), before it takes any hit.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sessionizer.channel import CATEGORIES, ChannelGrouping, Touch

CONDITIONS = ("source", "medium", "campaign", "click_id", "referrer", "category")
Category = Literal["search", "social", "shopping", "video", ""]


class ChannelRulesError(ValueError):
    """The rules file cannot be used; the message names the file, the rule and the field."""


class Pattern(BaseModel):
    model_config = ConfigDict(extra="forbid")

    regex: str

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return value


Condition = str | list[str] | Pattern


class RuleSpec(BaseModel):
    """One rule as written in the file."""

    model_config = ConfigDict(extra="forbid")

    channel: str = Field(min_length=1, max_length=64)
    source: Condition | None = None
    medium: Condition | None = None
    campaign: Condition | None = None
    click_id: Condition | None = None
    referrer: Condition | None = None
    category: Category | list[Category] | None = None

    @model_validator(mode="after")
    def _has_condition(self) -> RuleSpec:
        if all(getattr(self, name) is None for name in CONDITIONS):
            raise ValueError(f"a rule needs at least one condition: {', '.join(CONDITIONS)}")
        return self


class RulesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    defaults: bool = True  # GA4's default rules after these (false: Unassigned)
    rule: list[RuleSpec] = Field(default_factory=list)


class CompiledRule:
    """A rule ready to test touches: one predicate per condition given."""

    __slots__ = ("channel", "tests")

    def __init__(self, spec: RuleSpec) -> None:
        self.channel = spec.channel
        self.tests: tuple[tuple[int, Callable[[str], bool]], ...] = tuple(
            (Touch._fields.index(name), _predicate(getattr(spec, name)))
            for name in CONDITIONS if getattr(spec, name) is not None
        )

    def matches(self, touch: Touch) -> bool:
        return all(test(touch[index]) for index, test in self.tests)

    def __repr__(self) -> str:
        return f"CompiledRule({self.channel!r}, {len(self.tests)} conditions)"


def _predicate(condition: Condition) -> Callable[[str], bool]:
    if isinstance(condition, Pattern):
        return re.compile(condition.regex, re.IGNORECASE).fullmatch  # type: ignore[return-value]
    values = frozenset(v.strip().lower() for v in ([condition] if isinstance(condition, str) else condition))
    return values.__contains__


def _parse(path: Path) -> object:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".toml":
        return tomllib.loads(text)
    if path.suffix == ".json":
        return json.loads(text)
    raise ChannelRulesError(f"channel rules file {path}: must be .toml or .json")


def _where(loc: tuple[int | str, ...]) -> str:
    """`rule[2].medium` for pydantic's ('rule', 2, 'medium', ...)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part + 1}]"  # rules are counted from 1, as people read the file
        elif part not in ("str", "Pattern") and "[" not in part:  # (not the name of a union's branch)
            out += f".{part}" if out else part
    return out or "file"


def load_rules(path: Path) -> RulesFile:
    """The validated rules of a file; ChannelRulesError (file, rule, field, reason) otherwise."""
    try:
        raw = _parse(path)
    except OSError as exc:
        raise ChannelRulesError(f"channel rules file {path}: cannot be read: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ChannelRulesError(f"channel rules file {path}: not valid {path.suffix[1:].upper()}: {exc}") from None
    try:
        return RulesFile.model_validate(raw)
    except ValidationError as exc:
        raise ChannelRulesError(f"channel rules file {path}: {_problems(exc)}") from None


_SHAPE_ERRORS = frozenset({"string_type", "list_type", "model_type", "dict_type", "model_attributes_type"})


def _problems(exc: ValidationError) -> str:
    """pydantic's errors, one per field: a condition of the wrong shape fails every branch of
    its union, which is said once; a branch that failed inside (a bad regex) is said alone."""
    by_field: dict[str, list[tuple[str, str]]] = {}
    for e in exc.errors():
        by_field.setdefault(_where(e["loc"]), []).append((e["type"], e["msg"]))
    problems = []
    for where, errors in by_field.items():
        if any(other.startswith(where + ".") for other in by_field):
            continue  # a deeper error says what is wrong
        if len(errors) > 1 and all(kind in _SHAPE_ERRORS for kind, _ in errors):
            problems.append(f'{where}: must be a string, a list of strings or {{regex = "..."}}')
        else:
            problems.extend(f"{where}: {msg}" for _, msg in errors)
    return "; ".join(problems)


def grouping(path: Path | None, referral_exclusions: list[str] | tuple[str, ...] = ()) -> ChannelGrouping:
    """The sessionizer's channel grouping: the file's rules (if any) before GA4's."""
    if path is None:
        return ChannelGrouping(referral_exclusions=referral_exclusions)
    spec = load_rules(path)
    return ChannelGrouping([CompiledRule(r) for r in spec.rule], defaults=spec.defaults,
                           referral_exclusions=referral_exclusions)


__all__ = ["CATEGORIES", "ChannelRulesError", "CompiledRule", "RulesFile", "grouping", "load_rules"]
