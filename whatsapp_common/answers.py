"""The original service's answer shapes, which Rails parses: success is
`{"code": 200, "status": "success", "body": ...}`, every error is
`{"success": false, "message": "...", ...}` (an `ApiError`)."""

from __future__ import annotations

from typing import Any

from aiohttp import web


class ApiError(Exception):
    """An answer in the error shape, with its HTTP status and any extra fields."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"success": False, "message": message, **extra}
        self.headers: dict[str, str] = {}

    def response(self) -> web.Response:
        return web.json_response(self.body, status=self.status, headers=self.headers)


def success(body: object) -> web.Response:
    return web.json_response({"code": 200, "status": "success", "body": body})


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def being_initialized(location: str, state: str, retry_after: int) -> ApiError:
    """The original's 400 for a session that cannot serve yet (starting, waiting for a scan,
    syncing); `Retry-After` says when to come back."""
    error = ApiError(
        400,
        f"The WhatsApp client of location {location} is being initialized, try again later",
        state=state,
    )
    error.headers["Retry-After"] = str(retry_after)
    return error
