"""A fake OpenAI-compatible HTTP server, so tests run the real SDK (stdlib only).

    with FakeOpenAI() as fake:
        settings = Settings(openai_api_key="sk-test", openai_base_url=fake.base_url)
        fake.script(["500", "ok"])          # global FIFO, one fault per call
        text = "... FAKE-SCRIPT:t1:malformed,ok ..."   # or per document, by marker

`POST /v1/chat/completions` answers a chat.completion whose content is JSON
matching the Analysis schema, derived from the request: the summary quotes the
first words of the document, so a test can tell the model saw the text.

Which fault a call gets: if its messages contain `FAKE-SCRIPT:<id>:<f1>,<f2>,…`
the n-th call carrying that id gets fault n ("ok" once the list is used up),
so one shared server can serve many tests; otherwise the next fault of the
global script, else "ok". Faults:

    ok            a valid answer
    500, 503      server error (JSON error body)
    429, 429:<s>  rate limited, `Retry-After: 0` (or <s>)
    401           invalid API key; the error message echoes the key, as OpenAI's does
    timeout       no answer for `hang_seconds` (longer than the client's timeout)
    malformed     content that is not JSON
    schema        valid JSON that fails the schema (sentiment "furious", no action_items)
    refusal       message.refusal set, content null
    length        finish_reason "length" with truncated content
    slow:<s>      wait <s> seconds, then a valid answer
    drop          close the connection without any response
    messy         a valid answer padded with whitespace, blank and repeated list items

`delay` (seconds) is waited before every call. Waits end at once on `close()`.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

MARKER = re.compile(r"FAKE-SCRIPT:([A-Za-z0-9_.\-]+):([A-Za-z0-9_.:,\-]+)")
DOCUMENT = re.compile(r"<document[^>]*>\n?(.*?)\n?</document>", re.DOTALL)
FAULTS = {"ok", "500", "503", "429", "401", "timeout", "malformed", "schema", "refusal",
          "length", "slow", "drop", "messy"}  # fmt: skip


class FakeOpenAI:
    """An OpenAI-compatible chat completions server on 127.0.0.1, in a daemon thread."""

    def __init__(self, *, hang_seconds: float = 30.0, delay: float = 0.0) -> None:
        self.hang_seconds = hang_seconds
        self.delay = delay
        self._lock = threading.Lock()
        self._requests: list[dict[str, Any]] = []
        self._headers: list[dict[str, str]] = []
        self._script: deque[str] = deque()
        self._marker_calls: dict[str, int] = {}
        # Documents being analysed now (by their text), and any analysed twice at once.
        self._active: dict[str, int] = {}
        self.overlaps: list[str] = []
        self._stopping = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self.port: int = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"fake-openai-{self.port}", daemon=True,
        )  # fmt: skip
        self._thread.start()

    # -- what tests use -------------------------------------------------------

    def script(self, faults: Iterable[str]) -> None:
        """Queue faults for the next calls that carry no FAKE-SCRIPT marker."""
        faults = list(faults)
        for fault in faults:
            _check_fault(fault)
        with self._lock:
            self._script.extend(faults)

    @property
    def requests(self) -> list[dict[str, Any]]:
        """The JSON bodies of every chat completions request so far (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def request_headers(self) -> list[dict[str, str]]:
        """The headers of every chat completions request, lower-cased names (a copy)."""
        with self._lock:
            return list(self._headers)

    def calls_for(self, marker: str) -> list[dict[str, Any]]:
        """The request bodies whose messages contain `marker` (e.g. a FAKE-SCRIPT id)."""
        return [body for body in self.requests if marker in _all_text(body)]

    def reset(self) -> None:
        """Forget recorded requests, the global script and marker counts."""
        with self._lock:
            self._requests.clear()
            self._headers.clear()
            self._script.clear()
            self._marker_calls.clear()

    def close(self) -> None:
        """Stop promptly, even with requests hanging in `timeout` or `slow`."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeOpenAI:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- used by the handler ----------------------------------------------------

    def _record(self, body: dict[str, Any], headers: dict[str, str]) -> str:
        """Record a request and choose its fault."""
        text = _all_text(body)
        with self._lock:
            self._requests.append(body)
            self._headers.append(headers)
            match = MARKER.search(text)
            if match:
                ident = match.group(1)
                faults = [f for f in match.group(2).rstrip(".,:").split(",") if f]
                n = self._marker_calls.get(ident, 0)
                self._marker_calls[ident] = n + 1
                return faults[n] if n < len(faults) else "ok"
            if self._script:
                return self._script.popleft()
            return "ok"

    def _wait(self, seconds: float, client: socket.socket | None = None) -> bool:
        """Sleep, unless the server stops (or `client` hangs up) first; True when it did."""
        if client is None or seconds <= 0:
            return self._stopping.wait(seconds) if seconds > 0 else self._stopping.is_set()
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self._stopping.wait(min(left, 0.05)):
                return True
            if _hung_up(client):
                return True
        return False

    def _begin(self, body: dict[str, Any]) -> str:
        """One more analysis of this document in progress; an overlap is recorded."""
        key = _document_text(body)[:500]
        with self._lock:
            if self._active.get(key):
                self.overlaps.append(key)
            self._active[key] = self._active.get(key, 0) + 1
        return key

    def _end(self, key: str) -> None:
        with self._lock:
            self._active[key] -= 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    fake: FakeOpenAI

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up (timeouts, drops) are expected here; stay quiet.
        pass


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so no keep-alive races between calls.
    protocol_version = "HTTP/1.0"
    # Headers and body go out in two sends; with Nagle's algorithm the second
    # waits for the client's delayed ACK, adding ~40 ms to every answer.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            self._json(200, {"object": "list", "data": [{"id": "gpt-4.1", "object": "model",
                                                         "created": 0, "owned_by": "fake"}]})  # fmt: skip
        else:
            self._error(404, "Not found.", "not_found")

    def do_POST(self) -> None:
        fake = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._error(404, f"Unknown path {self.path}.", "not_found")
            return
        try:
            body = json.loads(raw)
        except ValueError:
            self._error(400, "Body is not JSON.", "invalid_json")
            return
        headers = {name.lower(): value for name, value in self.headers.items()}
        fault = fake._record(body, headers)
        key = fake._begin(body)
        try:
            self._answer(fake, body, headers, fault)
        finally:
            # Also when the client hung up (a worker killed mid-call): from then
            # on nobody is analysing the document through this call.
            fake._end(key)

    def _answer(
        self, fake: FakeOpenAI, body: dict[str, Any], headers: dict[str, str], fault: str
    ) -> None:
        if fake._wait(fake.delay, self.connection):
            return
        try:
            _check_fault(fault)
        except ValueError as exc:
            self._error(400, str(exc), "fake_bad_script")
            return
        kind, _, arg = fault.partition(":")
        if kind == "timeout":
            fake._wait(fake.hang_seconds)
            self._drop()
        elif kind == "drop":
            self._drop()
        elif kind == "slow":
            if not fake._wait(float(arg or 1), self.connection):
                self._completion(body, _analysis(body))
        elif kind in ("500", "503"):
            self._error(int(kind), "The server had an error while processing your request.",
                        None, kind="server_error")  # fmt: skip
        elif kind == "429":
            self._error(429, "Rate limit reached for requests.", "rate_limit_exceeded",
                        kind="requests", headers={"Retry-After": arg or "0"})  # fmt: skip
        elif kind == "401":
            key = headers.get("authorization", "").removeprefix("Bearer ")
            self._error(401, f"Incorrect API key provided: {key}.", "invalid_api_key")
        elif kind == "malformed":
            self._completion(body, "Sure! Here is the analysis: {summary: oops")
        elif kind == "schema":
            bad = {"summary": "One. Two. Three.", "key_topics": ["x"], "sentiment": "furious"}
            self._completion(body, json.dumps(bad))
        elif kind == "refusal":
            self._completion(body, None, refusal="I'm sorry, I can't help with that.")
        elif kind == "messy":
            messy = json.loads(_analysis(body))
            messy["summary"] = "  " + messy["summary"] + " \n"
            messy["key_topics"] = ["  budget ", "", "Budget", " \t", "timeline"]
            messy["action_items"] = ["", "  Send the report by Friday.  ", "   "]
            self._completion(body, json.dumps(messy))
        elif kind == "length":
            self._completion(body, _analysis(body)[:40], finish_reason="length")
        else:
            self._completion(body, _analysis(body))

    # -- responses ------------------------------------------------------------

    def _completion(
        self,
        request: dict[str, Any],
        content: str | None,
        *,
        refusal: str | None = None,
        finish_reason: str = "stop",
    ) -> None:
        prompt_tokens = len(_all_text(request)) // 4
        completion_tokens = len(content or refusal or "") // 4
        self._json(200, {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model", "unknown"),
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": refusal},
                "logprobs": None,
                "finish_reason": finish_reason,
            }],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        })  # fmt: skip

    def _error(
        self,
        status: int,
        message: str,
        code: str | None,
        *,
        kind: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        error = {"message": message, "type": kind, "param": None, "code": code}
        self._json(status, {"error": error}, headers=headers)

    def _json(self, status: int, payload: Any, *, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("x-request-id", f"req_fake_{uuid.uuid4().hex[:12]}")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass  # the client gave up

    def _drop(self) -> None:
        """Close the connection with no response at all."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _hung_up(client: socket.socket) -> bool:
    """Whether the client closed its side (HTTP/1.0: it sends nothing more)."""
    import select

    if not select.select([client], [], [], 0)[0]:
        return False
    try:
        return client.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def _check_fault(fault: str) -> None:
    kind, _, arg = fault.partition(":")
    if kind not in FAULTS or (arg and kind not in ("429", "slow")):
        raise ValueError(f"FakeOpenAI: unknown fault {fault!r}")
    if arg:
        float(arg)


def _all_text(body: dict[str, Any]) -> str:
    parts = []
    for message in body.get("messages") or []:
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return "\n".join(parts)


def _document_text(body: dict[str, Any]) -> str:
    """The text between <document> tags in the last user message, else all of it."""
    users = [m for m in body.get("messages") or [] if m.get("role") == "user"]
    text = str(users[-1].get("content") or "") if users else _all_text(body)
    match = DOCUMENT.search(text)
    return match.group(1) if match else text


def _analysis(body: dict[str, Any]) -> str:
    """A valid Analysis as JSON, derived from the request."""
    words = MARKER.sub(" ", _document_text(body)).split()
    first = " ".join(words[:6]) or "(nothing)"
    topics = [w.strip(".,;:!?\"'()[]").lower() for w in words if len(w) > 5][:3]
    return json.dumps({
        "summary": (
            f"The document begins with “{first}”. "
            f"It has about {len(words)} words. "
            f"This summary was written by the fake model {body.get('model', 'unknown')}."
        ),
        "key_topics": [t for t in topics if t] or ["fake topic"],
        "sentiment": "neutral",
        "action_items": ["Review the document."],
    })  # fmt: skip
