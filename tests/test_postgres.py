"""docintel on PostgreSQL: API and worker processes sharing one database and data dir.

Every test here runs against the real PostgreSQL server of tests/pg.py (a
fresh database each), with real `docintel serve` and `docintel worker`
processes.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import TXTS, ServerProcess, read_events, terminal_for, upload, wait_terminal
from tests.fake_openai import FakeOpenAI
from tests.pg import SECRET, WorkerProcess


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


def test_two_api_nodes_and_three_workers_lose_nothing_and_run_nothing_twice(
    cluster: Any,
) -> None:
    """The issue's shape: 2 API processes, 3 worker processes, one database.

    300 uploads spread over both APIs; an SSE client on each API receives every
    event of its user's documents exactly once and in order; a worker killed
    with kill -9 mid-analysis has its document completed by another within the
    lease time plus 5 s; the fake model saw no document analysed twice at once.
    """
    lease = 3
    with FakeOpenAI(delay=0.02) as fake:
        llm = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": fake.base_url}
        apis = [cluster.api(DOCINTEL_WORKERS="0", DOCINTEL_UPLOADS_PER_MINUTE="1000", **llm)
                for _ in range(2)]  # fmt: skip
        workers = [
            cluster.worker(DOCINTEL_WORKERS="2", DOCINTEL_LEASE_SECONDS=str(lease), **llm)
            for _ in range(3)
        ]
        token = apis[0].login()  # one secret: a token from one API works on the other
        auth = {"Authorization": f"Bearer {token}"}
        ids: list[str] = []
        expected = 301
        streams: dict[int, list[dict[str, Any]]] = {}
        ready = threading.Barrier(3)

        def follow(n: int) -> None:
            start = httpx.get(apis[n].url + "/documents", headers=auth).json()["last_event_id"]
            ready.wait(10)
            streams[n] = read_events(
                apis[n],
                token,
                params={"last_event_id": start},
                until=lambda es: len(ids) == expected and terminal_for(ids)(es),
                timeout=120,
            )

        readers = [threading.Thread(target=follow, args=(n,)) for n in range(2)]
        for reader in readers:
            reader.start()
        ready.wait(10)
        with httpx.Client(base_url=apis[0].url, headers=auth) as client:
            # First, one whose first analysis never answers: its worker is killed.
            text = b"The victim. FAKE-SCRIPT:victim:slow:60,ok. It must be done."
            [victim] = upload(client, ("victim.txt", text)).json()["documents"]
            ids.append(victim["id"])
        owner = _wait_for_analysis(fake, cluster.url, victim["id"])
        for batch in range(15):
            with httpx.Client(base_url=apis[batch % 2].url, headers=auth) as client:
                files = [
                    (f"b{batch}-{i}.txt", f"Note {batch}.{i}. Please review it.".encode())
                    for i in range(20)
                ]
                ids += [d["id"] for d in upload(client, *files).json()["documents"]]
        [victim_worker] = [w for w in workers if f":{w.proc.pid}:" in owner]
        victim_worker.kill()  # kill -9, mid-analysis
        killed_at = time.monotonic()
        with httpx.Client(base_url=apis[1].url, headers=auth) as client:
            done = wait_terminal(client, [victim["id"]], timeout=lease + 20)[victim["id"]]
            rescued_in = time.monotonic() - killed_at
            assert done["status"] == "completed", done
            wait_terminal(client, ids, timeout=120)
        for reader in readers:
            reader.join(120)
        assert fake.overlaps == []  # never two workers on one document at once
    assert rescued_in < lease + 5, f"rescued after {rescued_in:.1f} s"
    assert len(ids) == expected
    for n in range(2):
        events = streams[n]
        assert [e["id"] for e in events] == sorted({e["id"] for e in events})  # once, in order
        plain = ["pending", "processing", "analyzing", "completed"]
        rescued = []
        for doc_id in ids:
            statuses = [e["data"]["status"] for e in events if e["data"]["document_id"] == doc_id]
            assert statuses[-1] == "completed", statuses
            if statuses != plain:  # back to pending once, then the whole way
                assert statuses[statuses.index("pending", 1) :] == plain, statuses
                rescued.append(doc_id)
        # The victim, and at most the other document its worker held (2 slots).
        assert victim["id"] in rescued and len(rescued) <= 2, rescued
    assert streams[0] == streams[1]


def _wait_for_analysis(fake: FakeOpenAI, url: str, document_id: str) -> str:
    """Until the model is asked about the victim; returns the lease owner of its worker."""
    deadline = time.monotonic() + 30
    while not fake.calls_for("FAKE-SCRIPT:victim"):
        assert time.monotonic() < deadline, "no worker called the model"
        time.sleep(0.05)
    with psycopg.connect(url) as conn:
        [(owner,)] = conn.execute(
            "SELECT lease_owner FROM document WHERE id = %s", (document_id,)
        ).fetchall()
    assert owner, "the document has no lease"
    return str(owner)


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


WRITER = """
import random, sys, time
from docintel.core import db, queue
db.connect(sys.argv[1])
name = sys.argv[2]
for i in range(int(sys.argv[3])):
    doc = queue.enqueue(queue.NewDocument(
        id=f"{name}-{i:04d}-" + "0" * 20, owner="alice", filename="f.txt", stored_name="f.txt",
        size_bytes=1, content_type="text/plain", sha256="0" * 64))
    time.sleep(random.random() / 500)
    for claimed in queue.claim(2, lease_owner=name):
        queue.transition(claimed.id, ["processing"], "analyzing", lease_owner=name)
        queue.transition(claimed.id, ["analyzing"], "failed", error="x", lease_owner=name)
"""

READER = """
import json, pathlib, sys, time
from docintel.core import db, events
db.connect(sys.argv[1])
done = pathlib.Path(sys.argv[2])
last, seen, reads = 0, [], 0
while True:
    finished = done.exists()
    batch = events.events_after(None, last)
    seen += [e.id for e in batch]
    last = seen[-1] if seen else 0
    reads += 1
    if reads % 40 == 0:  # a reconnect, resuming from the last id (Last-Event-ID)
        db.database.close()
        db.connect(sys.argv[1])
    if finished and not batch:
        break
    time.sleep(0.002)
print(json.dumps(seen))
"""


def test_concurrent_writers_never_make_a_tailing_reader_miss_or_repeat_an_event(
    postgres_url: str, tmp_path: Path
) -> None:
    """Identity values commit out of order across transactions; the log lock orders them.

    Without the lock (checked by removing it) the readers miss events.
    """
    done = tmp_path / "writers-done"
    python = [sys.executable, "-c"]
    readers = [
        subprocess.Popen(
            [*python, READER, postgres_url, str(done)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    writers = [subprocess.Popen([*python, WRITER, postgres_url, f"w{n}", "60"]) for n in range(4)]
    try:
        for writer in writers:
            assert writer.wait(120) == 0
        done.touch()
        outputs = [reader.communicate(timeout=60)[0] for reader in readers]
    finally:
        for process in (*readers, *writers):
            process.kill()
    with psycopg.connect(postgres_url) as conn:
        committed = [row[0] for row in conn.execute("SELECT id FROM status_event ORDER BY id")]
    assert len(committed) >= 4 * 60  # every writer's enqueues at least
    for output in outputs:
        assert json.loads(output) == committed  # none missed, none repeated, in order


def test_login_and_upload_limits_hold_across_api_nodes(cluster: Any) -> None:
    """Spreading attempts over the nodes gives no more than one node would."""
    limits = {
        "DOCINTEL_ANALYZER": "offline",
        "DOCINTEL_LOGIN_ATTEMPTS_PER_MINUTE": "4",
        "DOCINTEL_UPLOADS_PER_MINUTE": "3",
    }
    nodes = [cluster.api(**limits), cluster.api(**limits)]
    bad = {"username": "alice", "password": "wrong"}
    answers = [httpx.post(nodes[i % 2].url + "/auth/login", json=bad).status_code for i in range(5)]
    assert answers == [401, 401, 401, 401, 429]
    # The limit is per (user, address): bob is not held back by alice's failures.
    assert (
        httpx.post(nodes[1].url + "/auth/login", json={**bad, "username": "bob"}).status_code == 401
    )
    token = nodes[0].login("bob")
    statuses = []
    for i in range(4):
        with httpx.Client(
            base_url=nodes[i % 2].url, headers={"Authorization": f"Bearer {token}"}
        ) as client:
            statuses.append(
                upload(client, (f"u{i}.txt", b"A short note. Nothing more.")).status_code
            )
    assert statuses == [201, 201, 201, 429]


def test_a_lost_database_connection_is_reopened_and_streams_carry_on(cluster: Any) -> None:
    """PostgreSQL ends every session (a restart, a failover): the node recovers by itself."""
    server = cluster.api(DOCINTEL_ANALYZER="offline")
    token = server.login()
    answers: list[int] = []
    with server.client() as alice:
        [first] = upload(alice, ("before.txt", b"Before the loss. Fine.")).json()["documents"]
        wait_terminal(alice, [first["id"]])
        start = alice.get("/documents").json()["last_event_id"]
        with psycopg.connect(cluster.url, autocommit=True) as conn:
            ended = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchall()
        assert ended, "no session of the server was ended"
        # The next requests may meet the loss (503, never 500); soon all is well again.
        deadline = time.monotonic() + 20
        while True:
            response = alice.post(
                "/documents/upload", files=[("files", ("after.txt", b"After the loss. Fine."))]
            )
            answers.append(response.status_code)
            if response.status_code == 201 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert answers[-1] == 201, answers
        assert set(answers) <= {201, 503}, answers
        [after] = response.json()["documents"]
        assert wait_terminal(alice, [after["id"]])[after["id"]]["status"] == "completed"
    # The event feed read on: a stream from before the loss gets the new events.
    events = read_events(
        server, token, params={"last_event_id": start}, until=terminal_for([after["id"]])
    )
    assert [e["data"]["status"] for e in events if e["data"]["document_id"] == after["id"]] == [
        "pending",
        "processing",
        "analyzing",
        "completed",
    ]
    assert httpx.get(server.url + "/healthz").json()["status"] == "ok"


def test_a_worker_process_never_reads_the_event_log(cluster: Any, tmp_path: Path) -> None:
    """`docintel worker` serves no streams: it runs documents but leaves the event
    log to the API nodes, instead of reading every new event of the cluster
    after each commit (issue 8: one reader per process that needs one). The
    worker runs in this process (one service per process), the API beside it."""
    from docintel.core.config import Settings
    from docintel.core.service import DocumentService

    api = cluster.api(DOCINTEL_WORKERS="0")

    def upload_and_wait() -> dict[str, Any]:
        with api.client() as alice:
            files = [TXTS / "quarterly-memo.txt", TXTS / "complaint-negative.txt"]
            ids = [d["id"] for d in upload(alice, *files).json()["documents"]]
            return wait_terminal(alice, ids, timeout=60)

    async def main() -> tuple[dict[str, Any], int]:
        worker = DocumentService(
            Settings(
                data_dir=tmp_path / "shared",  # the cluster's
                database_url=cluster.url,
                jwt_secret=SECRET,
                analyzer="offline",
                workers=1,
            ),
            streams=False,  # as `docintel worker`
        )
        await worker.start()
        try:
            return await asyncio.to_thread(upload_and_wait), worker.feed.position
        finally:
            await worker.stop()

    done, worker_read = asyncio.run(main())
    assert {d["status"] for d in done.values()} == {"completed"}  # the worker ran them
    assert worker_read == 0  # and never read an event


def test_a_nul_in_a_file_name_is_kept_as_u_fffd_not_a_500(cluster: Any) -> None:
    """PostgreSQL text cannot hold a NUL (it was a 500 at the tus upload's last
    PATCH); the rest of a hostile name is kept as sent, both ways in."""
    server = cluster.api(DOCINTEL_ANALYZER="offline")
    name = "a\x00b\x1b[31m\u202ec\u05d0.txt"  # NUL, ESC, right-to-left override, Hebrew
    shown = "a\ufffdb\x1b[31m\u202ec\u05d0.txt"
    with server.client() as alice:
        body = (
            b'--XB\r\nContent-Disposition: form-data; name="files"; filename="'
            + name.encode()
            + b'"\r\nContent-Type: text/plain\r\n\r\nA short note. Nothing else.\r\n--XB--\r\n'
        )
        multipart = {"Content-Type": "multipart/form-data; boundary=XB"}
        sent = alice.post("/documents/upload", content=body, headers=multipart)
        assert sent.status_code == 201, sent.text
        assert sent.json()["documents"][0]["filename"] == shown

        tus = {"Tus-Resumable": "1.0.0"}
        encoded = base64.b64encode(name.encode()).decode()
        created = alice.post(
            "/uploads/",
            headers={**tus, "Upload-Length": "12", "Upload-Metadata": f"filename {encoded}"},
        )
        assert created.status_code == 201, created.text
        done = alice.patch(
            created.headers["location"],
            headers={
                **tus,
                "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream",
            },
            content=b"Hello there.",
        )
        assert done.status_code == 200, done.text
        assert done.json()["filename"] == shown
        listed = alice.get("/documents").json()["items"]
        assert [d["filename"] for d in listed] == [shown, shown]
    assert "Traceback" not in server.log()
