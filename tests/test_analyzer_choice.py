"""Which analyzer runs is said at start, and an unreachable model says how to do without it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import TXTS, ServerProcess, free_port, upload, wait_terminal

HINT = "DOCINTEL_ANALYZER=offline"


def nowhere() -> str:
    """An OpenAI base URL on which nothing listens."""
    return f"http://127.0.0.1:{free_port()}/v1"


def test_serve_says_it_uses_openai_because_a_key_is_set_and_failures_name_the_way_out(
    make_server: Any,
) -> None:
    url = nowhere()
    server: ServerProcess = make_server(
        {"OPENAI_API_KEY": "sk-from-another-tool", "OPENAI_BASE_URL": url,
         "DOCINTEL_OPENAI_TIMEOUT": "2"}
    )  # fmt: skip
    start = next(line for line in server.log().splitlines() if "analyzer:" in line)
    assert "openai (gpt-4.1 at " + url in start
    assert "because OPENAI_API_KEY is set" in start and HINT in start
    with server.client() as alice:
        [doc] = upload(alice, TXTS / "quarterly-memo.txt").json()["documents"]
        detail = wait_terminal(alice, [doc["id"]])[doc["id"]]
    assert detail["status"] == "failed"
    assert url in detail["error"] and HINT in detail["error"], detail["error"]


def test_serve_says_it_uses_the_offline_analyzer_without_a_key(make_server: Any) -> None:
    server: ServerProcess = make_server()
    start = next(line for line in server.log().splitlines() if "analyzer:" in line)
    assert "offline (offline-1), because OPENAI_API_KEY is not set" in start


def test_analyze_says_which_analyzer_it_uses_and_how_to_do_without_the_api(tmp_path: Path) -> None:
    env = {**os.environ, "OPENAI_API_KEY": "sk-from-another-tool", "OPENAI_BASE_URL": nowhere(),
           "DOCINTEL_OPENAI_TIMEOUT": "2"}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "docintel", "analyze", str(TXTS / "quarterly-memo.txt")],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert result.returncode == 1
    assert "analysing with openai (gpt-4.1" in result.stderr
    assert "because OPENAI_API_KEY is set" in result.stderr
    assert HINT in result.stdout + result.stderr

    offline = subprocess.run(
        [sys.executable, "-m", "docintel", "analyze", "--analyzer", "offline",
         str(TXTS / "quarterly-memo.txt")],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert offline.returncode == 0, offline.stderr
    assert "analysing with offline (offline-1), as asked" in offline.stderr
