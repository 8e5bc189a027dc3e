"""The OpenAPI 3.1 document of the dashboard's API (GET /api/v1/openapi.json), made from ENDPOINTS:
each endpoint's parameters are its pydantic query model's fields, its rows its row model."""

from __future__ import annotations

from typing import Any

from dashboard.api import AS_OF_HEADER, ENDPOINTS, PREFIX, Endpoint
from dashboard.params import Query

REF = "#/components/schemas/{model}"
AS_OF = ("how fresh the rollups are: every row committed before this instant is counted (the sink folds "
         "new rows in every TOUCHSTREAM_SINK_ROLLUP_INTERVAL_S; lists of sessions read the table itself)")
ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string"},
        "errors": {"type": "array", "items": {
            "type": "object", "required": ["parameter", "message"],
            "properties": {"parameter": {"type": "string"}, "message": {"type": "string"}}}},
    },
}


def parameters(query: type[Query]) -> list[dict[str, Any]]:
    schema = query.model_json_schema(by_alias=True, ref_template=REF)
    required = set(schema.get("required", []))
    lists = query.list_fields()
    out = []
    for name, prop in schema["properties"].items():
        prop = dict(prop)
        description = prop.pop("description", "")
        prop.pop("title", None)
        param: dict[str, Any] = {"name": name, "in": "query", "required": name in required, "schema": prop,
                                 "description": description}
        if name in lists:
            param.update(style="form", explode=False)  # comma separated (repeating it works too)
        out.append(param)
    return out


def operation(e: Endpoint, defs: dict[str, Any]) -> dict[str, Any]:
    row = e.row.model_json_schema(ref_template=REF)
    defs.update(row.pop("$defs", {}))
    defs[e.row.__name__] = row
    answer = {"type": "object", "required": ["columns", "rows", "params", "as_of"], "properties": {
        "columns": {"type": "array", "items": {"type": "string"}},
        "rows": {"type": "array", "items": {"$ref": REF.format(model=e.row.__name__)}},
        "params": {"type": "object", "description": "the parameters the answer is for (dates resolved)"},
        "as_of": {"type": "string", "format": "date-time", "description": AS_OF},
    }, "additionalProperties": True}
    fresh = {AS_OF_HEADER: {"description": AS_OF, "schema": {"type": "string", "format": "date-time"}}}
    return {
        "operationId": e.function,
        "summary": e.summary,
        "parameters": parameters(e.query),
        "responses": {
            "200": {"description": "the table (format=csv: the same rows as CSV)", "headers": fresh,
                    "content": {"application/json": {"schema": answer}, "text/csv": {"schema": {"type": "string"}}}},
            "400": {"description": "a parameter is invalid: each is named with the reason",
                    "content": {"application/json": {"schema": {"$ref": REF.format(model="Error")}}}},
            "401": {"description": "a login is required and the request has none",
                    "content": {"application/json": {"schema": {"$ref": REF.format(model="Error")}}}},
        },
    }


def document() -> dict[str, Any]:
    defs: dict[str, Any] = {"Error": ERROR}
    paths = {e.url: {"get": operation(e, defs)} for e in ENDPOINTS}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Touchstream dashboard API", "version": "1",
                 "description": "Read-only answers over the rollups of migration 0005 (days are UTC days, "
                 "ranges include both ends; bot sessions are left out except where `bots` says)."},
        "servers": [{"url": "/"}],
        "paths": {**paths, f"{PREFIX}/openapi.json": {"get": {
            "operationId": "openapi", "summary": "This document",
            "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}}}}},
        "components": {"schemas": defs},
    }
