"""The web page at `/`, end to end in headless Chromium against a live server.

Debian's chromium driven by Playwright (launched as in test_browser_stream.py).
The page has a strict CSP (no eval), so the tests wait with Playwright's
`expect` and `wait_for_selector`, which need none, and read the page with
`page.evaluate`, which the DevTools protocol runs outside the CSP.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import PDFS, REPO, ServerProcess, needs_chromium, upload, wait_terminal

pytestmark = needs_chromium

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64
EXAMPLES = REPO / "examples"
WAIT = 60_000  # ms: the machine is shared and slow at times


@pytest.fixture
def browser(chromium: Any) -> Any:
    return chromium


def expect(target: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


def text_file(path: Path) -> dict[str, Any]:
    return {"name": path.name, "mimeType": "text/plain", "buffer": path.read_bytes()}


def pdf_file(path: Path) -> dict[str, Any]:
    return {"name": path.name, "mimeType": "application/pdf", "buffer": path.read_bytes()}


def log_in(page: Any, url: str, user: str = "alice") -> None:
    page.goto(url + "/")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(f"{user}-pw")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#app-view")).to_be_visible()


def rows(page: Any) -> Any:
    return page.locator("#documents tbody tr")


def row_ids(page: Any) -> list[str]:
    ids: list[str] = page.evaluate(
        "() => [...document.querySelectorAll('#documents tbody tr')].map(tr => tr.dataset.id)"
    )
    return ids


def applied(page: Any, document_id: str) -> list[list[Any]]:
    """[[event id, status], ...] the page applied to a row, in order."""
    events: list[list[Any]] = page.evaluate("id => window.docintel.applied(id)", document_id)
    return events


def wait_streams(server: ServerProcess, count: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(server.url + "/healthz").json()["streams"] == count:
            return
        time.sleep(0.1)
    raise AssertionError(f"not {count} open streams: {httpx.get(server.url + '/healthz').json()}")


def test_log_in_upload_watch_read_delete_and_reload(
    make_server: Any, browser: Any, tmp_path: Path
) -> None:
    server: ServerProcess = make_server({"DOCINTEL_ANALYZER": "offline"})
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    log_in(page, server.url)
    expect(page.locator("#empty")).to_be_visible()
    page.evaluate("() => { window.sameDocument = true; }")  # gone if the page reloads

    page.set_input_files(
        "#files",
        [
            text_file(EXAMPLES / "team-sync-notes.txt"),
            text_file(EXAMPLES / "supplier-complaint.txt"),
            {"name": "photo.png", "mimeType": "image/png", "buffer": PNG},
        ],
    )
    refused = page.locator("#uploads li.refused")
    expect(refused).to_have_count(1)
    with server.client() as alice:
        answer = upload(alice, ("photo.png", PNG))
        assert answer.status_code == 415
        expect(refused).to_contain_text(answer.json()["errors"][0]["message"])
        expect(refused).to_contain_text("photo.png")
        expect(page.locator("#uploads li.accepted")).to_have_count(2)

        # Live: both reach completed with no reload, each through every stage in order.
        expect(page.locator("tr[data-status=completed]")).to_have_count(2, timeout=WAIT)
        assert page.evaluate("() => window.sameDocument") is True
        for document_id in row_ids(page):
            events = applied(page, document_id)
            assert [s for _, s in events] == ["pending", "processing", "analyzing", "completed"]
            assert [i for i, _ in events] == sorted({i for i, _ in events})
        stages = page.locator("tr[data-status=completed] td.stages").first
        expect(stages).to_contain_text("pending")
        expect(stages).to_contain_text("analyzing")
        expect(page.locator("tr[data-status=completed] td").nth(1)).to_have_text("completed")

        # Read one: everything the API has, shown.
        page.get_by_role("button", name="supplier-complaint.txt").click()
        detail = page.locator("#detail")
        expect(detail).to_be_visible()
        document_id = page.locator("tr", has_text="supplier-complaint.txt").get_attribute("data-id")
        api = alice.get(f"/documents/{document_id}").json()
        analysis = api["analysis"]
        expect(page.locator("#detail-heading")).to_have_text("supplier-complaint.txt")
        expect(page.locator("#detail-summary")).to_have_text(analysis["summary"])
        expect(page.locator("#detail-topics li")).to_have_text(analysis["key_topics"])
        expect(page.locator("#detail-sentiment")).to_have_text(analysis["sentiment"])
        expect(page.locator("#detail-actions li")).to_have_count(
            max(1, len(analysis["action_items"]))
        )
        expect(page.locator("#detail-analyzer")).to_have_text("offline")
        expect(page.locator("#detail-model")).to_have_text(analysis["model"])
        expect(page.locator("#detail-history li")).to_have_count(len(api["history"]))

        shot = tmp_path / "web-page.png"
        page.screenshot(path=str(shot), full_page=True)
        print(f"\nscreenshot: {shot}")
        if os.environ.get("DOCINTEL_UPDATE_SCREENSHOT") == "1":
            (REPO / "docs").mkdir(exist_ok=True)
            shutil.copyfile(shot, REPO / "docs" / "screenshot.png")

        # Delete it, confirming first.
        page.get_by_role("button", name="Delete…").click()
        dialog = page.locator("dialog#confirm")
        expect(dialog).to_be_visible()
        expect(dialog).to_contain_text("supplier-complaint.txt")
        dialog.get_by_role("button", name="Delete").click()
        expect(rows(page)).to_have_count(1)
        expect(detail).to_be_hidden()
        assert alice.get(f"/documents/{document_id}").status_code == 404

    # A reload restores the table from the API (the token is kept for the tab).
    page.reload()
    expect(rows(page)).to_have_count(1)
    expect(page.locator("tr[data-status=completed]")).to_contain_text("team-sync-notes.txt")
    expect(page.locator("#login-view")).to_be_hidden()

    # The token went in headers, and in the stream's URL only, which the log redacts.
    token = page.evaluate("() => sessionStorage.getItem('docintel.token')")
    assert token and token not in server.log()
    assert "access_token=[redacted]" in server.log()

    # Log out: back to the form, and the token is gone from the tab.
    page.get_by_role("button", name="Log out").click()
    expect(page.locator("#login-view")).to_be_visible()
    assert page.evaluate("() => sessionStorage.getItem('docintel.token')") is None


def test_names_and_analysis_are_shown_as_text_and_no_script_runs(
    make_server: Any, browser: Any
) -> None:
    server: ServerProcess = make_server({"DOCINTEL_ANALYZER": "offline"})
    page = browser.new_page()
    dialogs: list[str] = []

    def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    log_in(page, server.url)
    name = "<img src=x onerror=alert(1)>.txt"
    text = (
        b"The release is late. <script>alert(2)</script> We must fix the build today.\n"
        b"Please send the <img src=y onerror=alert(3)> report by Friday. The team is happy."
    )
    page.set_input_files("#files", [{"name": name, "mimeType": "text/plain", "buffer": text}])
    expect(page.locator("tr[data-status=completed]")).to_have_count(1, timeout=WAIT)
    # The name is the row's text, literally, and no element came of it.
    expect(page.get_by_role("button", name=name)).to_be_visible()
    expect(page.locator("#uploads .name")).to_have_text(name)
    page.get_by_role("button", name=name).click()
    expect(page.locator("#detail-heading")).to_have_text(name)
    [document_id] = row_ids(page)
    with server.client() as alice:
        analysis = alice.get(f"/documents/{document_id}").json()["analysis"]
    assert "<" in analysis["summary"] + "".join(analysis["action_items"])
    expect(page.locator("#detail-summary")).to_have_text(analysis["summary"])
    expect(page.locator("#detail-actions li")).to_have_text(analysis["action_items"])
    time.sleep(0.5)  # time for any injected handler to fire
    assert page.locator("main img").count() == 0
    assert page.locator("script").count() == 1  # app.js, nothing else
    assert dialogs == []


def test_the_csp_header_is_sent_and_an_injected_inline_script_does_not_run(
    make_server: Any, browser: Any
) -> None:
    server: ServerProcess = make_server()
    for path in ("/", "/web/app.js", "/web/app.css", "/web/stream-worker.js"):
        answer = httpx.get(server.url + path)
        assert answer.status_code == 200, path
        assert answer.headers["content-security-policy"] == CSP
        assert answer.headers["x-content-type-options"] == "nosniff"
    assert httpx.get(server.url + "/web/secret.txt").status_code == 404
    assert httpx.get(server.url + "/web/..%2Fapp.py").status_code == 404
    # Not API operations: the schema (and the schemathesis test) does not see them.
    paths = httpx.get(server.url + "/openapi.json").json()["paths"]
    assert "/" not in paths
    assert not [p for p in paths if p.startswith("/web")]

    page = browser.new_page()
    violations: list[str] = []
    page.on("console", lambda message: violations.append(message.text))
    log_in(page, server.url)
    page.evaluate(
        """() => {
          const script = document.createElement('script');
          script.textContent = 'window.injected = 1';
          document.body.append(script);
          document.body.insertAdjacentHTML('beforeend', '<img src="data:," onload="window.handler = 1">');
          const remote = document.createElement('script');
          remote.src = 'http://127.0.0.2:9/x.js';
          document.body.append(remote);
        }"""
    )
    time.sleep(0.5)
    assert page.evaluate("() => [window.injected, window.handler]") == [None, None]
    assert any("Content Security Policy" in v for v in violations), violations


def test_a_server_restart_mid_watch_misses_and_repeats_no_update(
    make_server: Any, browser: Any
) -> None:
    server: ServerProcess = make_server({"DOCINTEL_ANALYZER": "offline"})
    page = browser.new_page()
    log_in(page, server.url)
    files = [pdf_file(PDFS / n) for n in ("multicolumn.pdf", "pdflatex-4-pages.pdf", "habibi.pdf")]
    files += [text_file(p) for p in sorted(EXAMPLES.glob("*.txt"))]
    page.set_input_files("#files", files)
    expect(page.locator("#uploads li.accepted")).to_have_count(len(files))
    server.kill()  # mid-watch: documents pending, in flight and done
    expect(page.locator("#connection")).to_have_text("Reconnecting…")
    ids = row_ids(page)
    server.start()
    with server.client() as alice:
        [late] = upload(alice, ("after-restart.txt", b"Written after the restart. Bye.")).json()[
            "documents"
        ]
        ids.append(late["id"])
        final = wait_terminal(alice, ids)
    terminal = "tr[data-status=completed], tr[data-status=failed]"
    expect(page.locator(terminal)).to_have_count(len(ids), timeout=WAIT)
    expect(page.locator("#connection")).to_have_text("")
    time.sleep(0.5)  # nothing more, nothing twice
    for document_id in ids:
        events = applied(page, document_id)
        event_ids = [i for i, _ in events]
        assert event_ids == sorted(set(event_ids)), events
        assert [s for _, s in events] == [h["status"] for h in final[document_id]["history"]]
        row = page.locator(f"tr[data-id='{document_id}'] td").nth(1)
        expect(row).to_contain_text(final[document_id]["status"])


def test_two_tabs_share_one_stream(make_server: Any, browser: Any) -> None:
    server: ServerProcess = make_server({"DOCINTEL_ANALYZER": "offline"})
    context = browser.new_context()
    first, second = context.new_page(), context.new_page()
    log_in(first, server.url)
    log_in(second, server.url)  # the token is kept per tab: each logs in
    wait_streams(server, 1)
    with server.client() as alice:
        upload(alice, ("shared.txt", b"Seen by both tabs. The end."))
        for page in (first, second):
            expect(page.locator("tr[data-status=completed]")).to_have_count(1, timeout=WAIT)
        time.sleep(0.5)
        wait_streams(server, 1)
        first.close()  # the stream stays for the tab that is left
        upload(alice, ("later.txt", b"Only one tab now. The end."))
        expect(second.locator("tr[data-status=completed]")).to_have_count(2, timeout=WAIT)
    wait_streams(server, 1)
    second.close()  # the last tab gone: the stream is freed
    wait_streams(server, 0)


def test_the_page_keeps_going_past_the_token_lifetime(make_server: Any, browser: Any) -> None:
    server: ServerProcess = make_server({"DOCINTEL_TOKEN_TTL": "6", "DOCINTEL_ANALYZER": "offline"})
    page = browser.new_page()
    log_in(page, server.url)
    first = page.evaluate("() => sessionStorage.getItem('docintel.token')")
    for n in range(3):  # at about 4, 8 and 12 s: two lifetimes
        time.sleep(4)
        page.set_input_files(
            "#files",
            [{"name": f"late-{n}.txt", "mimeType": "text/plain", "buffer": b"Still here. Yes."}],
        )
        expect(page.locator("tr[data-status=completed]")).to_have_count(n + 1, timeout=WAIT)
    expect(page.locator("#login-view")).to_be_hidden()
    assert page.evaluate("() => sessionStorage.getItem('docintel.token')") != first
    for document_id in row_ids(page):
        statuses = [s for _, s in applied(page, document_id)]
        assert statuses == ["pending", "processing", "analyzing", "completed"]


def test_an_expired_token_sends_the_user_to_the_login_form(make_server: Any, browser: Any) -> None:
    server: ServerProcess = make_server({"DOCINTEL_TOKEN_TTL": "1"})
    token = server.login()
    time.sleep(2.5)
    context = browser.new_context()
    context.add_init_script(
        f"sessionStorage.setItem('docintel.token', {json.dumps(token)});"
        "sessionStorage.setItem('docintel.user', 'alice');"
    )
    page = context.new_page()
    page.goto(server.url + "/")
    expect(page.locator("#login-view")).to_be_visible()
    expect(page.locator("#login-message")).to_have_text("Your session expired; log in again.")
    expect(page.locator("#app-view")).to_be_hidden()


def test_large_files_go_over_tus_and_its_refusals_are_shown(make_server: Any, browser: Any) -> None:
    limit = 7 * 1024 * 1024
    server: ServerProcess = make_server(
        {"DOCINTEL_ANALYZER": "offline", "DOCINTEL_MAX_UPLOAD_BYTES": str(limit)}
    )
    page = browser.new_page()
    log_in(page, server.url)
    sentence = b"A long report about shipping delays and the new warehouse. "
    big = sentence * (6 * 1024 * 1024 // len(sentence))  # over 5 MB: resumable
    too_big = sentence * (8 * 1024 * 1024 // len(sentence))
    page.set_input_files(
        "#files",
        [
            {"name": "big.txt", "mimeType": "text/plain", "buffer": big},
            {"name": "too-big.txt", "mimeType": "text/plain", "buffer": too_big},
        ],
    )
    expect(page.locator("#uploads li.accepted")).to_have_count(1, timeout=WAIT)
    expect(page.locator("#uploads li.accepted")).to_contain_text("big.txt")
    assert page.locator("#uploads li.accepted progress").evaluate("p => p.value === p.max")
    refused = page.locator("#uploads li.refused")
    expect(refused).to_contain_text("too-big.txt")
    with server.client() as alice:
        answer = alice.post(
            "/uploads/",
            headers={
                "Tus-Resumable": "1.0.0",
                "Upload-Length": str(len(too_big)),
                "Upload-Metadata": "filename " + base64.b64encode(b"too-big.txt").decode(),
            },
        )
        assert answer.status_code == 413
        expect(refused).to_contain_text(answer.json()["detail"]["message"])
    expect(rows(page)).to_have_count(1)
    log = server.log()
    assert log.count('"PATCH /uploads/') == 6, log  # 1 MB pieces
    assert "POST /documents/upload" not in log


def test_keyboard_labels_narrow_screen_and_status_words(
    make_server: Any, browser: Any, tmp_path: Path
) -> None:
    server: ServerProcess = make_server({"DOCINTEL_ANALYZER": "offline"})
    page = browser.new_page(viewport={"width": 360, "height": 740})
    log_in(page, server.url)
    long_name = "quarterly-report-with-a-very-long-name-that-does-not-fit-" * 2 + ".txt"
    page.set_input_files("#files", [pdf_file(PDFS / "libreoffice-writer-password.pdf")])
    # Dragged and dropped, the other way in.
    page.evaluate(
        """name => {
          const files = new DataTransfer();
          files.items.add(new File(['A fine report. All good.'], name, {type: 'text/plain'}));
          const drop = document.getElementById('drop');
          drop.dispatchEvent(new DragEvent('drop', {dataTransfer: files, bubbles: true, cancelable: true}));
        }""",
        long_name,
    )
    expect(page.locator("tr[data-status=completed]")).to_have_count(1, timeout=WAIT)
    expect(page.locator("tr[data-status=failed]")).to_have_count(1, timeout=WAIT)

    # Every control is labelled; the status is a word, not only a colour.
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input, progress, button')]
             .filter(e => !(e.labels?.length || e.getAttribute('aria-label') || e.textContent.trim()))
             .map(e => e.outerHTML)"""
    )
    assert unlabelled == []
    statuses = [
        t.strip() for t in page.locator("#documents tbody td:nth-child(2)").all_inner_texts()
    ]
    assert sorted(s.split()[0] for s in statuses) == ["completed", "failed"]
    # Readable at 360 px: nothing wider than the screen.
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 360, width
    page.screenshot(path=str(tmp_path / "web-page-360px.png"), full_page=True)

    # By keyboard alone: open the failed one, read why, start a delete and cancel it.
    page.locator("tr[data-status=failed] button").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#detail-heading")).to_be_focused()
    expect(page.locator("#detail-error")).to_contain_text("password")
    page.locator("#delete").focus()
    page.keyboard.press("Enter")
    expect(page.locator("dialog#confirm")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("dialog#confirm")).to_be_hidden()
    expect(rows(page)).to_have_count(2)
    page.locator("#close-detail").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#detail")).to_be_hidden()
    expect(page.locator("tr[data-status=failed] button")).to_be_focused()
