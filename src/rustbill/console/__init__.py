"""The admin console at /admin: static files served by the HTTP listener; the console talks to the
server only through the public API (Connect JSON), so that anything it does a script can do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.responses import RedirectResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

__all__ = ["STATIC", "routes"]

STATIC = Path(__file__).resolve().parent / "static"


def routes() -> list[Any]:
    async def to_console(request: Any) -> RedirectResponse:
        return RedirectResponse("/admin/", status_code=308)

    return [
        Route("/", to_console, methods=["GET"]),
        Route("/admin", to_console, methods=["GET"]),
        Mount("/admin/", app=StaticFiles(directory=STATIC, html=True), name="admin"),
    ]
