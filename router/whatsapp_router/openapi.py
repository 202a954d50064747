"""The OpenAPI 3.0 document served at /openapi.json: every endpoint, body and answer."""

from __future__ import annotations

from functools import cache
from typing import Any

from whatsapp_common.naming import LOCATION_ID_MAX, LOCATION_ID_PATTERN

Json = dict[str, Any]
# A location id must also be a valid WhatsAppSession spec.locationId (the CRD's rule).
LOCATION_ID = {"type": "string", "pattern": LOCATION_ID_PATTERN, "maxLength": LOCATION_ID_MAX}
ID = {"oneOf": [LOCATION_ID, {"type": "integer", "minimum": 0}]}


def _ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Json, description: str, headers: Json | None = None) -> Json:
    answer: Json = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        answer["headers"] = headers
    return answer


BINARY = {"type": "string", "format": "binary"}
# One event of a link page's stream: `view`, its data the JSON of {state, qr, phone, ...}.
VIEW_EVENT = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {"event": {"type": "string", "enum": ["view"]}, "data": {"type": "string"}},
}
RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}
ERRORS: Json = {
    "400": _json(
        _ref("Error"),
        "Bad input, unknown location, or the session is being initialized (Retry-After)",
    ),
    "401": _json(_ref("Error"), "Missing or wrong bearer token"),
    "500": _json(_ref("Error"), "The session pod failed to do it"),
    "502": _json(_ref("Error"), "The session pod broke the connection"),
    "503": _json(_ref("Error"), "The session is paused, failed or unreachable", RETRY_AFTER),
    "504": _json(_ref("Error"), "The session pod did not answer in time"),
}
LOCATION = {
    "name": "location_identifier",
    "in": "query",
    "required": True,
    "schema": LOCATION_ID,
}


def _operation(summary: str, ok: Json, *, extra: Json | None = None, **fields: Any) -> Json:
    return {"summary": summary, "responses": {"200": ok, **ERRORS, **(extra or {})}, **fields}


def _body(schema: str) -> Json:
    return {"required": True, "content": {"application/json": {"schema": _ref(schema)}}}


def _success(body: Json) -> Json:
    return {
        "type": "object",
        "required": ["code", "status", "body"],
        "properties": {
            "code": {"type": "integer", "enum": [200]},
            "status": {"type": "string", "enum": ["success"]},
            "body": body,
        },
    }


SCHEMAS: Json = {
    "Error": {
        "type": "object",
        "required": ["success", "message"],
        "properties": {
            "success": {"type": "boolean", "enum": [False]},
            "message": {"type": "string"},
            "state": {"type": "string"},
            "error": {"type": "string"},
        },
    },
    "LocationBody": {
        "type": "object",
        "required": ["location_identifier"],
        "properties": {"location_identifier": ID, "user_id": {}},
    },
    "SendMessageBody": {
        "type": "object",
        "required": ["location_identifier", "receiver_phone", "message"],
        "properties": {
            "location_identifier": ID,
            "receiver_phone": {
                "oneOf": [{"type": "string", "example": "+54 9 11 3452-5535"}, {"type": "integer"}]
            },
            "message": {"type": "string", "minLength": 1, "maxLength": 65536},
            "idempotency_key": {"type": "string", "minLength": 1, "maxLength": 200},
        },
    },
    "PairingCodeBody": {
        "type": "object",
        "required": ["location_identifier", "phone_number"],
        "properties": {
            "location_identifier": ID,
            "phone_number": {
                "oneOf": [{"type": "string", "example": "+54 9 11 3452-5535"}, {"type": "integer"}]
            },
        },
    },
    "PairingCodeAnswer": _success(
        {
            "type": "object",
            "required": ["pairing_code", "expires_at"],
            "properties": {
                "pairing_code": {"type": "string", "example": "ABCD-EFGH"},
                "expires_at": {"type": "number"},
            },
        }
    ),
    "LinkUrlBody": {
        "type": "object",
        "required": ["location_identifier"],
        "properties": {
            "location_identifier": ID,
            "ttl_seconds": {"type": "integer", "minimum": 60, "description": "default 900"},
            "location_name": {"type": "string", "minLength": 1, "maxLength": 100},
        },
    },
    "LinkUrlAnswer": {
        "type": "object",
        "required": ["url", "expires_at"],
        "properties": {
            "url": {"type": "string", "format": "uri"},
            "expires_at": {"type": "integer", "description": "unix seconds"},
        },
    },
    "TextAnswer": _success({"type": "string"}),
    "SendMessageAnswer": {
        "type": "object",
        "required": ["success", "message", "id", "ack"],
        "properties": {
            "success": {"type": "boolean", "enum": [True]},
            "message": {"type": "string"},
            "id": {"type": "string"},
            "ack": {"type": "integer"},
            "chat_id": {"type": "string"},
            "archived": {"type": "boolean"},
        },
    },
    "ChatsAnswer": _success(
        {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "properties": {
                    "groupChat": {"type": "boolean"},
                    "messages": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "from": {"type": "string"},
                                "fromMe": {"type": "boolean"},
                                "body": {"type": "string", "nullable": True},
                            },
                        },
                    },
                },
            },
        }
    ),
    "ContactsAnswer": _success({"type": "array", "items": {"type": "object"}}),
    "Status": {
        "type": "object",
        "required": ["location_identifier", "state"],
        "properties": {
            "location_identifier": {"type": "string"},
            "state": {"type": "string"},
            "since": {"type": "number", "nullable": True},
            "reason": {"type": "string", "nullable": True},
            "phone": {"type": "string", "nullable": True},
            "qr_pending": {"type": "boolean"},
            "last_error": {"type": "string", "nullable": True},
            "last_backup": {"type": "object", "nullable": True},
            "storage_error": {"type": "string", "nullable": True},
            "next_wake": {"type": "number", "nullable": True},
        },
    },
    "Qr": {
        "type": "object",
        "required": ["qr"],
        "properties": {
            "qr": {"type": "string"},
            "issued_at": {"type": "number"},
            "expires_at": {"type": "number"},
        },
    },
    "SessionsAnswer": _success(
        {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["location_identifier", "name", "phase", "routable"],
                "properties": {
                    "location_identifier": {"type": "string"},
                    "name": {"type": "string"},
                    "phase": {"type": "string"},
                    "phone": {"type": "string"},
                    "routable": {"type": "boolean"},
                    "pod": {"type": "string", "nullable": True},
                    "pod_ip": {"type": "string", "nullable": True},
                },
            },
        }
    ),
    "Probe": {"type": "object", "required": ["ok"], "properties": {"ok": {"type": "boolean"}}},
}


@cache
def document() -> Json:
    not_found = {"404": _json(_ref("Error"), "Unknown location, or no QR pending")}
    open_probe = {"security": []}
    html = {"text/html": {"schema": {"type": "string"}}}
    token = [{"name": "token", "in": "path", "required": True, "schema": {"type": "string"}}]
    gone = {"410": _json(_ref("Error"), "The link expired, is forged, or its location is linked")}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "WhatsApp sessions router",
            "version": "0.1.0",
            "description": "The seed's API, one WhatsApp Web session per location. Errors: "
            '`{"success": false, "message": ...}`. Every answer carries X-Request-ID.',
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/login": {
                "post": _operation(
                    "Start (or create, for an unknown location) a session",
                    _json(_ref("TextAnswer"), "Initialization process started"),
                    requestBody=_body("LocationBody"),
                )
            },
            "/logout": {
                "post": _operation(
                    "Unlink the device and delete the login",
                    _json(_ref("TextAnswer"), "Logout process completed"),
                    requestBody=_body("LocationBody"),
                )
            },
            "/send_message": {
                "post": _operation(
                    "Send a text message",
                    _json(_ref("SendMessageAnswer"), "Sent"),
                    extra={
                        "409": _json(_ref("Error"), "Idempotency key in progress"),
                        "422": _json(_ref("Error"), "Idempotency key used for another message"),
                    },
                    requestBody=_body("SendMessageBody"),
                    parameters=[
                        {"name": "Idempotency-Key", "in": "header", "schema": {"type": "string"}}
                    ],
                )
            },
            "/pairing_code": {
                "post": _operation(
                    "A code to link the phone with this number, instead of scanning the QR",
                    _json(_ref("PairingCodeAnswer"), "The code, as WhatsApp shows it"),
                    extra={"409": _json(_ref("Error"), "A phone is linked already")},
                    requestBody=_body("PairingCodeBody"),
                )
            },
            "/link_url": {
                "post": _operation(
                    "A link page URL for the location's staff: its live QR, a pairing code by"
                    " phone number, and Linked. The URL's signed token names this location only;"
                    " it expires after ttl_seconds, or once the location is linked",
                    _json(_ref("LinkUrlAnswer"), "The URL and when its token expires"),
                    requestBody=_body("LinkUrlBody"),
                )
            },
            "/link/{token}": {
                "get": {
                    "security": [],
                    "summary": "The link page (HTML; the token in the URL is its credential)",
                    "parameters": token,
                    "responses": {
                        "200": {"description": "The page", "content": html},
                        "410": {"description": "The link is no longer valid", "content": html},
                    },
                }
            },
            "/link/{token}/events": {
                "get": {
                    "security": [],
                    "summary": "The page's server-sent events: `view` {state, qr, phone,"
                    " pairing_code} on each change, until linked or expired",
                    "parameters": token,
                    "responses": {
                        "200": {
                            "description": "An event stream",
                            "content": {"text/event-stream": {"schema": VIEW_EVENT}},
                        }
                    },
                }
            },
            "/link/{token}/qr.png": {
                "get": {
                    "security": [],
                    "summary": "The pending QR code of the token's location, as a PNG",
                    "parameters": token,
                    "responses": {
                        "200": {
                            "description": "The QR code",
                            "content": {"image/png": {"schema": BINARY}},
                        },
                        **not_found,
                        **gone,
                        **{k: ERRORS[k] for k in ("502", "503", "504")},
                    },
                }
            },
            "/link/{token}/pairing_code": {
                "post": {
                    "security": [],
                    "summary": "A pairing code for the token's location (as /pairing_code)",
                    "parameters": token,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {"phone_number": {"type": "string"}},
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _json(_ref("PairingCodeAnswer"), "The code"),
                        "409": _json(_ref("Error"), "A phone is linked already"),
                        **gone,
                        **{k: ERRORS[k] for k in ("400", "500", "502", "503", "504")},
                    },
                }
            },
            "/link/{token}/login": {
                "post": {
                    "security": [],
                    "summary": "A new QR code once it expired, or the session started again",
                    "parameters": token,
                    "responses": {
                        "200": _json(_ref("TextAnswer"), "Initialization process started"),
                        **gone,
                        **{k: ERRORS[k] for k in ("400", "500", "502", "503", "504")},
                    },
                }
            },
            "/chats": {
                "get": _operation(
                    "The latest chats with their latest messages",
                    _json(_ref("ChatsAnswer"), "Chats by name"),
                    parameters=[
                        LOCATION,
                        *(
                            {"name": n, "in": "query", "schema": {"type": "integer"}}
                            for n in ("chats_to_get", "messages_to_get")
                        ),
                    ],
                )
            },
            "/contacts": {
                "get": _operation(
                    "The contacts of the location's chats",
                    _json(_ref("ContactsAnswer"), "Contacts"),
                    parameters=[LOCATION],
                )
            },
            "/status": {
                "get": _operation(
                    "The session's state",
                    _json(_ref("Status"), "State"),
                    extra=not_found,
                    parameters=[LOCATION],
                )
            },
            "/qr": {
                "get": _operation(
                    "The pending QR code, as JSON or a PNG",
                    {
                        "description": "The QR code",
                        "content": {
                            "application/json": {"schema": _ref("Qr")},
                            "image/png": {"schema": {"type": "string", "format": "binary"}},
                        },
                    },
                    extra=not_found,
                    parameters=[
                        LOCATION,
                        {
                            "name": "format",
                            "in": "query",
                            "schema": {"type": "string", "enum": ["json", "png"]},
                        },
                    ],
                )
            },
            "/sessions": {
                "get": {
                    "summary": "Every location with its phase",
                    "responses": {
                        "200": _json(_ref("SessionsAnswer"), "Sessions"),
                        "401": ERRORS["401"],
                    },
                }
            },
            "/healthz": {
                "get": {
                    **open_probe,
                    "summary": "Liveness",
                    "responses": {"200": _json(_ref("Probe"), "Alive")},
                }
            },
            "/readyz": {
                "get": {
                    **open_probe,
                    "summary": "Ready once the cache holds pods and sessions",
                    "responses": {
                        "200": _json(_ref("Probe"), "Ready"),
                        "503": _json(_ref("Probe"), "Cache not synced yet"),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {
                        "200": {
                            "description": "Metrics",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        "401": ERRORS["401"],
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {
                        "200": _json({"type": "object"}, "OpenAPI 3.0"),
                        "401": ERRORS["401"],
                    },
                }
            },
        },
    }
