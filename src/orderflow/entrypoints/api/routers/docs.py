"""``/docs``: Swagger UI from files served by the API itself (``docs_static``), so that the
page works without the internet; FastAPI's default loads it from a CDN."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from orderflow.entrypoints.api.problems import problem

router = APIRouter(include_in_schema=False)

_STATIC = Path(__file__).resolve().parent.parent / "docs_static"
_ASSETS = {"swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"}


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=request.app.openapi_url,
        title=f"{request.app.title} · API",
        swagger_js_url="/docs/static/swagger-ui-bundle.js",
        swagger_css_url="/docs/static/swagger-ui.css",
        swagger_favicon_url="/docs/static/favicon-32x32.png",
    )


@router.get("/docs/static/{name}")
async def swagger_asset(name: str) -> Response:
    if name not in _ASSETS:
        return problem(404, code="not-found", detail=f"no asset {name!r}")
    return FileResponse(_STATIC / name, headers={"Cache-Control": "public, max-age=86400"})
