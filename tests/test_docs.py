"""/docs and /redoc work with no internet (issue 7, point 11).

FastAPI's pages load Swagger UI and ReDoc from a CDN; ours reference only the
server itself, which serves every script, stylesheet and icon from the
installed package. Checked against a live `docintel serve`.
"""

from __future__ import annotations

import re
import subprocess
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from tests.conftest import CHROMIUM, ServerProcess, needs_chromium

PAGES = ["/docs", "/redoc", "/docs/oauth2-redirect"]


class Assets(HTMLParser):
    """The scripts, stylesheets and icons a page loads."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.styles: list[str] = []
        self.icons: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = dict(attrs)
        rel = (attr.get("rel") or "").split()
        if tag == "script" and attr.get("src"):
            self.scripts.append(attr["src"] or "")
        elif tag == "link" and "stylesheet" in rel:
            self.styles.append(attr.get("href") or "")
        elif tag == "link" and "icon" in rel:
            self.icons.append(attr.get("href") or "")


def assets(html: str) -> Assets:
    parser = Assets()
    parser.feed(html)
    return parser


def other_hosts(text: str, server: ServerProcess) -> set[str]:
    """Every host named in `text` (absolute or protocol-relative) but the server's."""
    ours = urlsplit(server.url).netloc
    named = re.findall(r"""(?:https?:)?//([\w.-]+(?::\d+)?)""", text)
    return {host for host in named if host != ours}


@pytest.mark.parametrize("path", PAGES)
def test_docs_pages_name_no_other_host(offline_server: ServerProcess, path: str) -> None:
    response = httpx.get(offline_server.url + path)  # no token: the docs are public
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert other_hosts(response.text, offline_server) == set()
    assert "cdn" not in response.text.lower()


@pytest.mark.parametrize(("path", "scripts"), [("/docs", 1), ("/redoc", 1)])
def test_every_asset_a_docs_page_loads_is_served_from_the_package(
    offline_server: ServerProcess, path: str, scripts: int
) -> None:
    page_url = offline_server.url + path
    page = assets(httpx.get(page_url).text)
    assert len(page.scripts) == scripts and page.icons
    kinds = [
        *((src, "javascript", 100_000) for src in page.scripts),
        *((href, "text/css", 10_000) for href in page.styles),
        *((href, "image/", 100) for href in page.icons),
    ]
    if path == "/docs":
        assert len(page.styles) == 1  # Swagger UI's stylesheet
    for ref, kind, least in kinds:
        url = urljoin(page_url, ref)
        assert urlsplit(url).netloc == urlsplit(offline_server.url).netloc, url
        response = httpx.get(url)
        assert response.status_code == 200, url
        assert kind in response.headers["content-type"], (url, response.headers)
        assert len(response.content) >= least, (url, len(response.content))


def test_the_swagger_page_loads_the_api_schema_without_a_token(
    offline_server: ServerProcess,
) -> None:
    html = httpx.get(offline_server.url + "/docs").text
    assert "url: '/openapi.json'" in html
    assert '"validatorUrl": null' in html  # no badge fetched from validator.swagger.io
    schema = httpx.get(offline_server.url + "/openapi.json")
    assert schema.status_code == 200
    assert "/documents/upload" in schema.json()["paths"]
    assert not any(p.startswith(("/docs", "/redoc")) for p in schema.json()["paths"])


@needs_chromium
def test_swagger_ui_renders_in_a_browser_with_every_other_host_unreachable(
    offline_server: ServerProcess,
) -> None:
    assert CHROMIUM is not None
    dom = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            # Every name but the server's resolves to nothing: as if offline.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--virtual-time-budget=15000",
            "--dump-dom",
            offline_server.url + "/docs",
        ],
        capture_output=True,
        text=True,
        timeout=90,
    ).stdout
    assert "swagger-ui" in dom
    assert "/documents/upload" in dom  # the operations were rendered from the schema
