"""Request body limit as a pure ASGI middleware: a declared ``Content-Length`` over the limit is
answered 413 before any of the body is read; a streamed body is cut off with 413 as soon as it
passes the limit."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import send_error


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    def _message(self) -> str:
        return (f"the request body is over the {self.max_bytes / 1e6:.0f} MB limit; send a smaller image "
                "(or raise SIGHTLINE_MAX_BODY_BYTES)")

    async def _reject(self, send: Send) -> None:
        await send_error(send, 413, "payload_too_large", self._message(), [(b"connection", b"close")])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await self._reject(send)
                    return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # An HTTPException passes FastAPI's body parsing untouched and is answered in the
                    # project's error shape by the handlers in app.errors.
                    raise HTTPException(413, detail=self._message())
            return message

        await self.app(scope, limited_receive, send)
