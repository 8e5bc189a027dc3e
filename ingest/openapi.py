"""The OpenAPI 3.1 document of the edge (GET /openapi.json).

The hit's schema is `HitIn.model_json_schema()`, then corrected where HitIn's validators
accept more (or less) than the plain annotated types say: UUID and URL formats, epoch
milliseconds for times, `null` referrers, the `event` object that `type: "event"` requires.
`tests/unit/ingest/test_openapi.py` keeps this in step with HitIn and with the app.
"""

from __future__ import annotations

import copy
from typing import Any

from ingest.body import ACCEPTED_TYPES
from ingest.settings import IngestSettings
from schemas.hit import CURRENCY, MAX_PROPERTIES_BYTES, MAX_URL_LENGTH, MAX_USER_ID, MAX_VALUE, HitIn

REF = "#/components/schemas/{model}"
_UUID = {"type": "string", "format": "uuid", "examples": ["6f1c2b0e-4a57-4c3e-9d61-0b8f3f1e7a01"]}
_TIME = {
    "anyOf": [
        {"type": "string", "format": "date-time", "description": "ISO 8601 with a time zone"},
        {"type": "number", "description": "epoch milliseconds"},
        {"type": "null"},
    ],
    "default": None,
}


def hit_schema() -> tuple[dict[str, Any], dict[str, Any]]:
    """(the Hit schema, the schemas it refers to)."""
    schema = copy.deepcopy(HitIn.model_json_schema(ref_template=REF))
    defs = schema.pop("$defs", {})
    props = schema["properties"]
    props["guid"] = {**_UUID, "description": "the device's machine_guid; stored lower-case"}
    props["hit_id"] = {
        "anyOf": [_UUID, {"type": "null"}],
        "default": None,
        "description": "the client's id of the hit (duplicates are dropped); assigned when absent",
    }
    props["previous_guid"] = {
        "anyOf": [_UUID, {"type": "null"}],
        "default": None,
        "description": "the device's former guid, when local storage was cleared (closes its session)",
    }
    props["user_id"] = {
        "anyOf": [{"type": "string", "minLength": 1, "maxLength": MAX_USER_ID}, {"type": "null"}],
        "default": None,
        "description": "the site's id of the logged-in person (no NUL character); devices sharing one are one person",
    }
    props["url"] = {
        "type": "string",
        "format": "uri",
        "maxLength": MAX_URL_LENGTH,
        "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://",
        "description": "absolute http(s) URL of the page",
    }
    props["referrer"] = {
        "anyOf": [{"type": "string", "maxLength": MAX_URL_LENGTH}, {"type": "null"}],
        "default": "",
        "description": "absolute URL (any scheme with a host) or empty",
    }
    props["site"]["description"] = "defaults to the URL's host"
    props["created_at"] = {**_TIME, "description": "when the hit happened on the device"}
    props["sent_at"] = {**_TIME, "description": "when the device sent it (with created_at, cancels device clock skew)"}
    props["utm"]["description"] = "explicit campaign values; absent keys are read from the URL's utm_* parameters"
    props["event"]["description"] = 'required when type is "event"'
    schema["if"] = {"properties": {"type": {"const": "event"}}, "required": ["type"]}
    schema["then"] = {"required": ["event"], "properties": {"event": {"$ref": REF.format(model="EventIn")}}}
    schema["title"] = "Hit"
    event = defs.get("EventIn")
    if event is not None:
        event["properties"]["properties"]["description"] = f"at most {MAX_PROPERTIES_BYTES} bytes as JSON"
        # value and currency go together (HitIn refuses one without the other)
        event["properties"]["value"] = {
            "anyOf": [{"type": "number", "minimum": -MAX_VALUE, "maximum": MAX_VALUE}, {"type": "null"}],
            "default": None, "examples": [49.9],
            "description": "what the conversion is worth (negative: a refund), in `currency`; required with it",
        }
        event["properties"]["currency"] = {
            "anyOf": [{"type": "string", "pattern": f"^{CURRENCY.pattern}$"}, {"type": "null"}],
            "default": None, "examples": ["EUR"],
            "description": "ISO 4217 code of `value`, three upper-case letters; required with it",
        }
        event["dependentRequired"] = {"value": ["currency"], "currency": ["value"]}
    return schema, defs


def document(settings: IngestSettings) -> dict[str, Any]:
    hit, defs = hit_schema()
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Touchstream ingest edge",
            "version": "1",
            "description": "Takes website hits and puts them on Kafka (SPEC section 2). A 202 means Kafka "
            "acknowledged every accepted hit (acks=all).",
        },
        "paths": {"/v1/hits": _hits_path(settings), **_other_paths()},
        "components": {"schemas": {"Hit": hit, **defs, **_result_schemas()}},
    }


def _hits_path(settings: IngestSettings) -> dict[str, Any]:
    max_items = settings.ingest_max_items
    max_bytes = settings.ingest_max_body_bytes
    hit_ref = {"$ref": REF.format(model="Hit")}
    batch = {"type": "array", "items": hit_ref, "minItems": 1, "maxItems": max_items}
    body = {"oneOf": [hit_ref, batch]}
    result_ref = {"$ref": REF.format(model="HitsResult")}

    def answer(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": result_ref}}}
        if headers:
            out["headers"] = headers
        return out

    return {
        "post": {
            "operationId": "postHits",
            "summary": "Send one hit, an array of hits, or NDJSON",
            "description": f"Body at most {max_bytes} bytes (413 beyond), "
            f"at most {max_items} hits (400 beyond). "
            "text/plain is read as JSON (navigator.sendBeacon); so is a body with no Content-Type. "
            "Invalid items are reported by index and dead-lettered; valid items are accepted.",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": body},
                    "text/plain": {"schema": body},
                    "application/x-ndjson": {
                        "schema": {"type": "string", "description": "one Hit object per line"},
                        "itemSchema": hit_ref,
                    },
                },
            },
            "responses": {
                "202": answer("accepted: every accepted hit is in Kafka; `rejected` lists the invalid items"),
                "400": answer("nothing valid: bad JSON, wrong shape, too many items, or every item invalid"),
                "403": answer("the request's Origin is not allowed"),
                # (these two come from the connection, before the app: plain text, connection closed)
                "408": {"description": "the request did not arrive whole within the edge's read deadline"},
                "413": answer(f"body larger than {max_bytes} bytes"),
                "415": answer(f"content type other than {', '.join(ACCEPTED_TYPES)} (or an encoded body)"),
                "431": {"description": "request line and headers larger than the edge's header cap"},
                "503": answer(
                    "Kafka did not take the hits; nothing was accepted: retry later",
                    {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}},
                ),
            },
        },
        "options": {
            "operationId": "preflightHits",
            "summary": "CORS preflight",
            "responses": {"204": {"description": "allowed"}, "403": {"description": "origin not allowed"}},
        },
    }


def _get(operation: str, summary: str, responses: dict[str, Any]) -> dict[str, Any]:
    return {"get": {"operationId": operation, "summary": summary, "responses": responses}}


def _other_paths() -> dict[str, Any]:
    return {
        "/v1/tracker.js": _get("getTracker", "The browser tracker", {
            "200": {"description": "JavaScript", "content": {"text/javascript": {"schema": {"type": "string"}}}},
            "304": {"description": "not modified (If-None-Match)"},
            "404": {"description": "no tracker installed"},
        }),
        "/healthz": _get("healthz", "Liveness", {"200": {"description": "the process serves requests"}}),
        "/readyz": _get("readyz", "Readiness: Kafka answers a metadata request (cached briefly); the reason and "
                        "/metrics are on the admin port only (TOUCHSTREAM_INGEST_ADMIN_PORT)",
                        {"200": {"description": "ready"}, "503": {"description": "Kafka unreachable"}}),
        "/openapi.json": _get("openapi", "This document", {"200": {"description": "OpenAPI 3.1"}}),
    }


def _result_schemas() -> dict[str, Any]:
    return {
        "FieldError": {
            "type": "object",
            "required": ["field", "message"],
            "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
        },
        "Rejection": {
            "type": "object",
            "required": ["index", "errors"],
            "properties": {
                "index": {
                    "anyOf": [{"type": "integer", "minimum": 0}, {"type": "null"}],
                    "description": "the item's position (NDJSON: among non-blank lines); null: the whole body",
                },
                "errors": {"type": "array", "items": {"$ref": REF.format(model="FieldError")}},
            },
        },
        "HitsResult": {
            "type": "object",
            "required": ["accepted", "rejected"],
            "properties": {
                "accepted": {"type": "integer", "minimum": 0},
                "rejected": {"type": "array", "items": {"$ref": REF.format(model="Rejection")}},
            },
        },
    }
