"""The published OpenAPI schema says what the live server sends, checked by schemathesis.

The real `schemathesis` command runs against a live server and its own
/openapi.json: every status, content type and body it sees must be declared,
no answer may be a 5xx. The plain tests below pin what schemathesis cannot
reach (the never-ending event stream) or would not name (the error envelope).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ServerProcess

ERROR_RESPONSE = {"$ref": "#/components/schemas/ErrorResponse"}

# The checks live here rather than on the command line, where `--checks all`
# would override the per-operation exception below.
SCHEMATHESIS_CONFIG = """
# Every check: no 5xx; declared statuses, content types, headers and bodies;
# valid data accepted, invalid refused; 401 without the token; 405 with a true
# Allow header for undeclared methods; a deleted document is gone.
checks.enabled = true

[[operations]]
include-path = "/documents/upload"
# Whether a file is accepted depends on its name and bytes (a PDF, or text),
# which OpenAPI cannot express: a schema-valid PNG is rightly refused with 415.
# Every other check, conformance included, still runs on uploads.
checks.positive_data_acceptance.enabled = false

[[operations]]
include-path = "/uploads/"
# The same for a resumable upload: the file name decides (and a base64 value
# that is not UTF-8 is refused), which a pattern cannot say.
checks.positive_data_acceptance.enabled = false

[[operations]]
include-path-regex = "^/uploads/"
# tus answers a missing or wrong Tus-Resumable with 412 Precondition Failed
# (tus 1.0, "Tus-Resumable"); the rest as the defaults expect.
checks.missing_required_header.expected-statuses = [400, 401, 403, 406, 412, 415, 422]
checks.negative_data_rejection.expected-statuses = [400, 401, 403, 404, 406, 409, 412, 413, 414, 415, 422]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    data = tmp_path_factory.mktemp("openapi") / "data"
    server = ServerProcess(
        data,
        {
            "DOCINTEL_ANALYZER": "offline",
            # Generous limits so that the generated requests reach the routes
            # (429 is declared, but would hide everything behind it).
            "DOCINTEL_UPLOADS_PER_MINUTE": "100000",
            "DOCINTEL_LOGIN_ATTEMPTS_PER_MINUTE": "100000",
            # Small, so that generated files also take the 413 path.
            "DOCINTEL_MAX_UPLOAD_BYTES": "4096",
        },
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def schema(server: ServerProcess) -> dict[str, Any]:
    response = httpx.get(server.url + "/openapi.json")
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.timeout(300)
def test_schemathesis_finds_the_live_server_true_to_its_schema(
    server: ServerProcess, tmp_path: Path
) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(SCHEMATHESIS_CONFIG)
    token = server.login()
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(config),
        "run",
        f"{server.url}/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        # The stream never ends by itself (it is tailed until the client
        # leaves), so schemathesis would wait on its first 200 for ever; its
        # declaration is checked in test_the_stream_is_declared_as_sse_with_json_errors.
        "--exclude-path",
        "/documents/stream",
        "--workers",
        "1",
        "--max-examples",
        "20",
        "--seed",
        "20260909",
        "--generation-database",
        "none",  # no examples carried over from an earlier run: reproducible
        "--request-timeout",
        "30",
        "--no-color",
    ]
    started = time.monotonic()
    # The hooks module (a serializer for tus bodies) is imported from this checkout.
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    }
    result = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240, check=False
    )
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"schemathesis failed after {elapsed:.0f} s:\n{output}"
    assert "Traceback" not in server.log(), server.log()[-5000:]
    # It ran the operations, not nothing: 13 of the 14 (the stream excluded).
    assert "Selected: 13/14" in output and "Tested: 13" in output, output


def test_every_protected_operation_declares_401_with_the_error_envelope(
    schema: dict[str, Any],
) -> None:
    scheme = schema["components"]["securitySchemes"]["HTTPBearer"]
    assert scheme == {**scheme, "type": "http", "scheme": "bearer"}
    protected = [
        (method, path, op)
        for path, ops in schema["paths"].items()
        for method, op in ops.items()
        if op.get("security")
    ]
    assert len(protected) == 11  # everything but login, healthz and tus OPTIONS
    for method, path, op in protected:
        unauthorized = op["responses"].get("401")
        assert unauthorized, f"{method} {path} declares no 401"
        assert unauthorized["content"]["application/json"]["schema"] == ERROR_RESPONSE
        assert "WWW-Authenticate" in unauthorized["headers"]


def test_errors_are_declared_with_our_envelope_not_fastapis_validation_body(
    schema: dict[str, Any],
) -> None:
    assert "HTTPValidationError" not in str(schema)
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            for status, response in op["responses"].items():
                if not status.startswith(("4", "5")):
                    continue
                [(media_type, content)] = response["content"].items()
                assert media_type == "application/json", (method, path, status)
                if "$ref" in content["schema"]:
                    assert content["schema"]["$ref"].endswith(("ErrorResponse", "IdResponse"))
    components = schema["components"]["schemas"]
    assert components["ErrorBody"]["required"] == ["code", "message"]
    assert components["ErrorResponse"]["required"] == ["detail"]
    # An upload that accepted nothing lists each file's error, named by file.
    assert components["UploadError"]["required"] == ["filename", "code", "message"]
    upload = schema["paths"]["/documents/upload"]["post"]["responses"]
    for status in ("400", "413", "415"):
        variants = upload[status]["content"]["application/json"]["schema"]["anyOf"]
        assert {"$ref": "#/components/schemas/UploadRejected"} in variants
    assert {"207", "429", "507"} <= set(upload)
    delete = schema["paths"]["/documents/{document_id}"]["delete"]["responses"]
    assert {"400", "401", "404", "409", "422", "507"} <= set(delete)
    login = schema["paths"]["/auth/login"]["post"]["responses"]
    assert {"401", "413", "422", "429"} <= set(login)
    assert login["429"]["headers"]["Retry-After"]["required"] is True


def test_the_stream_is_declared_as_sse_with_json_errors(schema: dict[str, Any]) -> None:
    op = schema["paths"]["/documents/stream"]["get"]
    ok = op["responses"]["200"]["content"]
    assert list(ok) == ["text/event-stream"]
    assert set(ok["text/event-stream"]["itemSchema"]["properties"]) == {
        "data",
        "event",
        "id",
        "retry",
    }
    assert {"400", "401", "404", "409", "422", "429"} <= set(op["responses"])
    for status in ("400", "401", "404", "422", "429"):
        content = op["responses"][status]["content"]
        assert content == {"application/json": {"schema": ERROR_RESPONSE}}, status
    # Every reference the stream's errors make resolves to a component.
    assert {"ErrorResponse", "AmbiguousIdResponse"} <= set(schema["components"]["schemas"])


def test_stream_errors_are_sent_as_declared(server: ServerProcess) -> None:
    """What the declaration says is what the stream route sends, before any event."""
    no_token = httpx.get(server.url + "/documents/stream")
    assert no_token.status_code == 401
    assert no_token.headers["content-type"] == "application/json"
    assert no_token.headers["www-authenticate"] == "Bearer"
    assert set(no_token.json()["detail"]) == {"code", "message"}
    token = server.login()
    bad_cursor = httpx.get(
        server.url + "/documents/stream",
        headers={"Authorization": f"Bearer {token}", "Last-Event-ID": "not-an-id"},
    )
    assert bad_cursor.status_code == 400
    assert bad_cursor.headers["content-type"] == "application/json"
    assert bad_cursor.json()["detail"]["code"] == "invalid_last_event_id"


def test_a_405_allows_every_method_of_the_path(server: ServerProcess) -> None:
    """GET and DELETE /documents/{id} are two routes; Starlette's Allow named the first only."""
    with server.client() as alice:
        response = alice.request("PUT", "/documents/abcd1234")
    assert response.status_code == 405
    assert response.json()["detail"]["code"] == "method_not_allowed"
    assert response.headers["allow"] == "DELETE, GET"
    # A concrete path wins over a template, as OpenAPI matches them.
    with server.client() as alice:
        response = alice.request("OPTIONS", "/documents/upload")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
