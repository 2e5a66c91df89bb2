"""The admin console at /admin: static files served by the HTTP listener; the console talks to the
server only through the public API (Connect JSON), so that anything it does a script can do.

Every console response carries a strict Content-Security-Policy (scripts, styles and connections
from this origin only, no inline code, no framing by other sites). The one exception is
``plugin-frame.html``, the document plugin admin pages are written into: it is served with a
policy of its own that sandboxes it into an opaque origin (``sandbox allow-scripts allow-forms``)
and lets it run inline code but reach nothing (``connect-src 'none'``, no images or fonts from
anywhere), so a plugin page can neither read the console's token nor call the API; it can only
post messages to the console's bridge (``static/js/bridge.js``, docs/plugins.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.responses import RedirectResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONSOLE_CSP", "FRAME_CSP", "STATIC", "routes"]

STATIC = Path(__file__).resolve().parent / "static"

CONSOLE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; frame-src 'self'; form-action 'self'; base-uri 'none'; object-src 'none'; "
    "frame-ancestors 'none'"
)
FRAME_CSP = (
    "sandbox allow-scripts allow-forms; default-src 'none'; script-src 'unsafe-inline'; "
    "style-src 'unsafe-inline'; img-src data:; font-src data:; connect-src 'none'; form-action 'none'; "
    "base-uri 'none'; object-src 'none'; frame-ancestors 'self'"
)
FRAME_PATH = "/admin/plugin-frame.html"

_COMMON = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-cache"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
_CONSOLE = [
    *_COMMON,
    (b"content-security-policy", CONSOLE_CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=(), usb=()"),
]
_FRAME = [*_COMMON, (b"content-security-policy", FRAME_CSP.encode()), (b"x-frame-options", b"SAMEORIGIN")]


class _SecurityHeaders:
    """Adds the console's security headers to every response of the static files app."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        extra = _FRAME if scope.get("path") == FRAME_PATH else _CONSOLE
        names = {k for k, _ in extra}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": headers + extra}
            await send(message)

        await self._app(scope, receive, send_with_headers)


def routes() -> list[Any]:
    async def to_console(request: Any) -> RedirectResponse:
        return RedirectResponse("/admin/", status_code=308)

    return [
        Route("/", to_console, methods=["GET"]),
        Route("/admin", to_console, methods=["GET"]),
        Mount("/admin/", app=_SecurityHeaders(StaticFiles(directory=STATIC, html=True)), name="admin"),
    ]
