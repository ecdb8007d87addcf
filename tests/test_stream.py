"""Stream lifecycle: dropped clients are freed, and shutdown never waits on open streams."""

from __future__ import annotations

import signal
import threading
import time

import httpx

from tests.conftest import ServerProcess


def subscribers(server: ServerProcess) -> int:
    return httpx.get(server.url + "/healthz").json()["subscribers"]


def wait_for(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_a_dropped_client_frees_its_subscription(offline_server: ServerProcess) -> None:
    token = offline_server.login()
    base = subscribers(offline_server)
    with httpx.stream("GET", offline_server.url + "/documents/stream",
                      headers={"Authorization": f"Bearer {token}"}) as response:
        assert response.status_code == 200
        assert wait_for(lambda: subscribers(offline_server) == base + 1)
    assert wait_for(lambda: subscribers(offline_server) == base)


def test_bad_last_event_id_is_a_400_before_streaming(offline_server: ServerProcess) -> None:
    token = offline_server.login()
    response = httpx.get(offline_server.url + "/documents/stream",
                         headers={"Authorization": f"Bearer {token}", "Last-Event-ID": "abc"})
    assert response.status_code == 400
    assert response.json()["detail"]["code"] == "invalid_last_event_id"


def test_ctrl_c_with_open_streams_ends_them_and_exits(make_server) -> None:
    server: ServerProcess = make_server({"DOCINTEL_ANALYZER": "offline"})
    token = server.login()
    ended: list[str] = []

    def hold_stream() -> None:
        with httpx.stream("GET", server.url + "/documents/stream", params={"access_token": token},
                          timeout=httpx.Timeout(5, read=None)) as response:
            for _ in response.iter_lines():
                pass
        ended.append("closed by the server")

    clients = [threading.Thread(target=hold_stream) for _ in range(3)]
    for client in clients:
        client.start()
    assert wait_for(lambda: subscribers(server) == 4)  # 3 streams + the worker pool
    # A hang here would be uvicorn waiting forever on the streams; the bound is
    # generous and only there to turn a hang into a failure.
    assert server.stop(signal.SIGINT, timeout=15) in (0, 130)  # 130: the shell convention for Ctrl-C
    for client in clients:
        client.join(5)
    assert ended == ["closed by the server"] * 3
    assert "Application shutdown complete" in server.log()
