"""ASGI middleware in front of the API: bearer token and request body size limit.

Both checks run before any route or form parser reads the body: an unauthenticated
client cannot make the server buffer anything, and a body over the limit is refused
from its Content-Length or, for chunked uploads, as soon as the running count passes
the limit. A body with a Content-Length within the limit streams on to the app (the
server holds it to that length), so the app decides whether to read it at all; a chunked
body (at most the limit) is buffered and replayed. A client that sends nothing for
`body_timeout_s` while its body is read is treated as gone (the app sees a disconnect).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

import anyio

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
DEFAULT_BODY_TIMEOUT_S = 30.0


def token_matches(header_value: str | None, token: str) -> bool:
    """True when an Authorization header carries `Bearer <token>` (constant-time compare)."""
    if not header_value:
        return False
    scheme, _, presented = header_value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(presented.strip().encode("utf-8"), token.encode("utf-8"))


async def send_json_error(send: Send, status: int, detail: str, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """Answer with a JSON body {"detail": ...} and close the exchange."""
    body = json.dumps({"detail": detail}).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode("ascii")),
                (b"connection", b"close"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


class RequestGuard:
    """Bearer-token check (all paths but `open_paths`) and a body size limit."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        open_paths: Iterable[str] = ("/health",),
        body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
    ) -> None:
        if max_body_bytes <= 0:
            raise ValueError(f"max_body_bytes must be positive, got {max_body_bytes}")
        self.app = app
        self.token = token or None
        self.max_body_bytes = max_body_bytes
        self.open_paths = frozenset(open_paths)
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.token and scope.get("path", "") not in self.open_paths:
            if not token_matches(headers.get("authorization"), self.token):
                missing = "authorization" not in headers
                detail = "missing bearer token" if missing else "invalid bearer token"
                await send_json_error(
                    send,
                    401,
                    f"{detail}: send the header 'Authorization: Bearer <token>'",
                    [(b"www-authenticate", b'Bearer realm="ember"')],
                )
                return
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await send_json_error(send, 400, f"invalid Content-Length header {declared!r}")
                return
            if int(declared) > self.max_body_bytes:
                await send_json_error(send, 413, self._too_large(int(declared)))
                return
        receive = self._stall_limited(receive)
        if declared is not None or scope.get("method", "GET") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await send_json_error(send, 413, self._too_large(None))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)

    def _stall_limited(self, receive: Receive) -> Receive:
        """`receive`, answering a disconnect when the client sends nothing for `body_timeout_s`."""

        async def limited() -> Message:
            with anyio.move_on_after(self.body_timeout_s):
                return await receive()
            return {"type": "http.disconnect"}

        return limited

    def _too_large(self, size: int | None) -> str:
        got = f"{size} bytes" if size is not None else "more than that"
        return f"request body too large: the limit is {self.max_body_bytes} bytes, got {got}"


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive callable that yields the buffered body once, then defers to the server."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
