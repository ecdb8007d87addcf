"""The web page at `/`: log in, upload, watch live, read — served from the package.

Three static files (docintel/server/web/) and no build step: the browser runs
them as they are, with nothing fetched from another origin, so the page works
offline. Every answer carries a Content-Security-Policy that allows scripts,
styles and connections from this server only and no inline script at all, so
a file name or an analysis that slipped into the page as HTML still could not
run. None of these routes is part of the API (`include_in_schema=False`).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

router = APIRouter(include_in_schema=False)

WEB = Path(str(files("docintel.server") / "web"))
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidate each time: a new version of the package shows at once, and
    # the files are small.
    "Cache-Control": "no-cache",
}
# The only files served: a fixed list, so no path can reach outside the folder.
ASSETS = {
    "app.css": "text/css; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "stream-worker.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}

# A package built without the files fails at start-up, not in a user's browser.
if missing := [n for n in ("index.html", *ASSETS) if not (WEB / n).is_file()]:
    raise RuntimeError(f"the web page's files are missing from the package: {missing}")


@router.get("/")
async def index() -> FileResponse:
    """The web page: log in, upload, watch live, read, delete."""
    return FileResponse(WEB / "index.html", media_type="text/html; charset=utf-8", headers=HEADERS)


@router.get("/web/{name}")
async def asset(name: str) -> FileResponse:
    """One of the page's script, style or icon files (a fixed list)."""
    if name not in ASSETS:
        raise HTTPException(404)
    return FileResponse(WEB / name, media_type=ASSETS[name], headers=HEADERS)
