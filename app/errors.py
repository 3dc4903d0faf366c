"""The project's one error shape: ``{"error": {"code": "snake_case", "message": "..."}}``.

Everything the API rejects is an :class:`ApiError`; the handlers installed by
:func:`install_error_handlers` turn it, FastAPI's validation errors and any HTTP
error into that shape. A bug still answers 500 in the same shape, and is logged.
"""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

log = logging.getLogger("sightline.errors")


class ApiError(Exception):
    """An error the client can act on. Subclasses fix the status and code."""

    status: int = 400
    code: str = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers = headers or {}


class InvalidImage(ApiError):
    """Bytes that are not a decodable image: empty, text, corrupt or truncated."""

    status = 400
    code = "invalid_image"


class UnsupportedFormat(ApiError):
    """A real image in a format the service does not accept."""

    status = 415
    code = "unsupported_format"


class ImageTooLarge(ApiError):
    """An image whose width x height exceeds the pixel limit."""

    status = 413
    code = "image_too_large"


class PayloadTooLarge(ApiError):
    """A request body over the byte limit."""

    status = 413
    code = "payload_too_large"


class InvalidRequest(ApiError):
    """A valid image with an invalid request around it (bad parameter, unknown class)."""

    status = 422
    code = "invalid_request"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Unavailable(ApiError):
    """The service cannot answer now (models still loading, overloaded)."""

    status = 503
    code = "unavailable"


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


async def send_error(send: Send, status: int, code: str, message: str,
                     headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """The error shape sent straight on an ASGI ``send``, for middleware that answers before routing."""
    body = json.dumps(error_body(code, message)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def error_response(status: int, code: str, message: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


_HTTP_CODES = {
    400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large",
    415: "unsupported_format", 422: "invalid_request", 429: "too_many_requests", 503: "unavailable",
}


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else err.get("msg", "invalid"))
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    """Route every error the app can raise into the one JSON shape."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        log.info("rejected %s %s: %s %s", request.method, request.url.path, exc.status, exc.code)
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message = _describe_validation(exc)
        log.info("rejected %s %s: 422 %s", request.method, request.url.path, message)
        return error_response(422, "invalid_request", message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "the server failed on this request; it is logged")
