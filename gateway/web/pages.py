"""The web UI's pages: server-rendered shells (Jinja2) that fetch data from the REST API.

Every asset is served by the gateway itself (no CDN), so the UI works on a
classroom network without internet. The admin key stays in the browser tab
(sessionStorage) and travels as X-API-Key, exactly like any API client.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

HERE = Path(__file__).resolve().parent
NAV = (
    ("/", "Dashboard"),
    ("/register", "Register Server"),
    ("/models", "Models"),
    ("/keys", "Keys"),
    ("/playground", "Test Inference"),
    ("/logs", "Logs"),
    ("/settings", "Settings"),
)
# path → (template, title, the navigation entry it belongs to, the page's script)
PAGES = {
    "/": ("dashboard.html", "Dashboard", "/", "dashboard"),
    "/register": ("register.html", "Register a server", "/register", "register"),
    "/models": ("models.html", "Models", "/models", "models"),
    "/playground": ("playground.html", "Test inference", "/playground", "playground"),
    "/logs": ("logs.html", "Logs", "/logs", "logs"),
    "/settings": ("settings.html", "Settings", "/settings", "settings"),
    "/servers/{server_id}": ("server.html", "Server details", "/", "server"),
    "/servers/{server_id}/edit": ("edit.html", "Edit server", "/", "edit"),
    "/owners/{student_id}": ("owner.html", "Owner", "/", "owner"),
    "/keys": ("keys.html", "Client keys", "/keys", "keys"),
    "/keys/{key_id}": ("key.html", "Client key", "/keys", "key"),
}


def _page(
    templates: Jinja2Templates, template: str, title: str, active: str, script: str
) -> Callable[[Request], Awaitable[Response]]:
    async def render(request: Request) -> Response:
        return templates.TemplateResponse(
            request,
            template,
            {
                "title": title,
                "nav": NAV,
                "active": active,
                "page": script,
                "server_id": request.path_params.get("server_id", ""),
                "student_id": request.path_params.get("student_id", ""),
                "key_id": request.path_params.get("key_id", ""),
            },
        )

    return render


def web_routes() -> list[BaseRoute]:
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    routes: list[BaseRoute] = [
        Route(path, _page(templates, *spec), include_in_schema=False)
        for path, spec in PAGES.items()
    ]
    routes.append(Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"))
    return routes
