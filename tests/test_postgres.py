"""docintel on PostgreSQL: API and worker processes sharing one database and data dir.

Every test here runs against the real PostgreSQL server of tests/pg.py (a
fresh database each), with real `docintel serve` and `docintel worker`
processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TXTS, ServerProcess, read_events, terminal_for, upload, wait_terminal
from tests.fake_openai import FakeOpenAI

SECRET = "test-secret-that-is-at-least-32-bytes-long"


class WorkerProcess:
    """`docintel worker` in a process of its own, logging to a file."""

    def __init__(self, data_dir: Path, env: dict[str, str], name: str) -> None:
        self.log_path = data_dir.parent / f"worker-{name}.log"
        full_env = {**os.environ, "DOCINTEL_JWT_SECRET": SECRET, **env}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "docintel", "worker", "--data-dir", str(data_dir)],
                env=full_env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while "at a time, leases of" not in self.log():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{self.log()}")
            time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            return self.proc.wait(20)
        return self.proc.returncode


@pytest.fixture
def cluster(postgres_url: str, make_server: Any, tmp_path: Path) -> Any:
    """Factory for API (`serve`) and worker processes on one database and data dir."""
    data_dir = tmp_path / "shared"
    workers: list[WorkerProcess] = []

    def env(**extra: str) -> dict[str, str]:
        return {"DOCINTEL_DATABASE_URL": postgres_url, "DOCINTEL_JWT_SECRET": SECRET, **extra}

    class Cluster:
        url = postgres_url

        def api(self, **extra: str) -> ServerProcess:
            server: ServerProcess = make_server(env(**extra), data_dir=data_dir)
            return server

        def worker(self, **extra: str) -> WorkerProcess:
            worker = WorkerProcess(data_dir, env(**extra), str(len(workers)))
            workers.append(worker)
            return worker

    yield Cluster()
    for worker in workers:
        worker.kill()


def test_one_server_on_postgresql_runs_the_whole_pipeline(cluster: Any) -> None:
    server = cluster.api(DOCINTEL_ANALYZER="offline", DOCINTEL_WORKERS="2")
    assert "database: postgresql://postgres@127.0.0.1:5432/docintel_t_" in server.log()
    token = server.login()
    with server.client() as alice:
        files = [TXTS / "quarterly-memo.txt", TXTS / "complaint-negative.txt"] * 3
        ids = [d["id"] for d in upload(alice, *files).json()["documents"]]
        done = wait_terminal(alice, ids)
        assert {d["status"] for d in done.values()} == {"completed"}
        listing = alice.get("/documents", params={"status": "completed"}).json()
        assert listing["total"] == 6
        detail = alice.get(f"/documents/{ids[0][:6]}").json()  # an id prefix, as on SQLite
        assert detail["analysis"]["analyzer"] == "offline"
    events = read_events(server, token, params={"last_event_id": 0}, until=terminal_for(ids))
    assert [e["id"] for e in events] == sorted({e["id"] for e in events})
    for doc_id in ids:
        statuses = [e["data"]["status"] for e in events if e["data"]["document_id"] == doc_id]
        assert statuses == ["pending", "processing", "analyzing", "completed"]


def test_api_nodes_and_worker_processes_share_the_queue(cluster: Any) -> None:
    with FakeOpenAI(delay=0.05) as fake:
        llm = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": fake.base_url}
        api_a = cluster.api(DOCINTEL_WORKERS="0", **llm)
        api_b = cluster.api(DOCINTEL_WORKERS="0", **llm)
        for _ in range(2):
            cluster.worker(DOCINTEL_WORKERS="2", **llm)
        token = api_a.login()  # the same secret: a token from A works on B
        streams: dict[str, list[dict[str, Any]]] = {}
        ids: list[str] = []
        ready = threading.Barrier(3)

        def follow(name: str, server: ServerProcess) -> None:
            position = httpx.get(
                server.url + "/documents", headers={"Authorization": f"Bearer {token}"}
            ).json()["last_event_id"]
            ready.wait(10)
            streams[name] = read_events(
                server,
                token,
                params={"last_event_id": position},
                until=lambda es: len(ids) == 20 and terminal_for(ids)(es),
            )

        readers = [
            threading.Thread(target=follow, args=(name, server))
            for name, server in (("a", api_a), ("b", api_b))
        ]
        for reader in readers:
            reader.start()
        ready.wait(10)
        for i in range(10):
            for server in (api_a, api_b):
                with httpx.Client(
                    base_url=server.url, headers={"Authorization": f"Bearer {token}"}
                ) as client:
                    body = f"Document {i} from {server.port}. It asks for a review.".encode()
                    [doc] = upload(client, (f"d{i}.txt", body)).json()["documents"]
                    ids.append(doc["id"])
        for reader in readers:
            reader.join(60)
        assert fake.overlaps == []
    # Both API nodes streamed every event of every document, once, in order.
    assert streams["a"] == streams["b"]
    mine = [e for e in streams["a"] if e["data"]["document_id"] in ids]
    assert len(mine) == 4 * len(ids)
    assert [e["id"] for e in streams["a"]] == sorted({e["id"] for e in streams["a"]})


def test_a_worker_killed_mid_analysis_has_its_document_finished_by_another(
    cluster: Any,
) -> None:
    lease = 3
    with FakeOpenAI() as fake:
        llm = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": fake.base_url}
        api = cluster.api(DOCINTEL_WORKERS="0", **llm)
        first = cluster.worker(DOCINTEL_LEASE_SECONDS=str(lease), **llm)
        with api.client() as alice:
            # Its first analysis never answers in time; the second one does.
            text = b"The victim. FAKE-SCRIPT:victim:slow:60,ok. It must be done."
            [doc] = upload(alice, ("victim.txt", text)).json()["documents"]
            deadline = time.monotonic() + 20
            while len(fake.calls_for("FAKE-SCRIPT:victim")) < 1:
                assert time.monotonic() < deadline, "the first worker never called the model"
                time.sleep(0.05)
            second = cluster.worker(DOCINTEL_LEASE_SECONDS=str(lease), **llm)
            first.kill()  # kill -9, mid-analysis
            killed_at = time.monotonic()
            result = wait_terminal(alice, [doc["id"]], timeout=lease + 15)[doc["id"]]
            took = time.monotonic() - killed_at
            assert result["status"] == "completed", result
            history = alice.get(f"/documents/{doc['id']}").json()["history"]
        assert took < lease + 5, f"rescued after {took:.1f} s"
        assert fake.overlaps == []
        assert len(fake.calls_for("FAKE-SCRIPT:victim")) == 2
    assert any("lease" in (h["detail"] or "") for h in history), history
    assert "lease expired" in second.log() or "lease" in second.log()


def test_a_worker_needs_postgresql(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "docintel", "worker", "--data-dir", str(tmp_path)],
        env={k: v for k, v in os.environ.items() if k != "DOCINTEL_DATABASE_URL"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "needs DOCINTEL_DATABASE_URL" in done.stderr


def test_postgresql_needs_a_shared_jwt_secret(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DOCINTEL_JWT_SECRET"}
    done = subprocess.run(
        [sys.executable, "-m", "docintel", "serve", "--data-dir", str(tmp_path)],
        env={**env, "DOCINTEL_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "DOCINTEL_JWT_SECRET must be set" in done.stderr
