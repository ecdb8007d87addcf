"""Ids people can type: a unique prefix of at least 4 characters, on every route and command.

Ambiguity between uuid4 ids is a matter of chance (two of ~300 ids share 4
characters about half the time), so the documents whose prefixes matter are
put in the data dir with chosen ids by the core, as an earlier server would
have left them, before the server under test starts; it then processes them
like any others. Documents the server names itself are tested by their
8-character table prefix.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from docintel.cli.main import app
from docintel.core import db, queue
from docintel.core.errors import AmbiguousId, DocumentNotFound, IdTooShort
from docintel.core.models import Document
from docintel.core.service import _owned
from docintel.core.storage import Storage
from tests.conftest import TXTS, ServerProcess, read_events, terminal_for, upload, wait_terminal

# alice's documents; their 4-character prefixes are unique among hers unless said otherwise.
SOLO = "0aab7c20e1f24c59a4f1f0d7c3c2b1a9"
TWIN_E = "6db7e49a11111111111111111111111a"  # TWIN_E and TWIN_F share "6db7"
TWIN_F = "6db7f0122222222222222222222222b2"
CROSS_ALICE = "cb5ddb4f9e8d4c7ba6f5e4d3c2b1a098"  # bob's CROSS_BOB also starts "cb5d"
CROSS_BOB = "cb5d00003333333333333333333333c3"
DELETE_BY_4 = "de1e4a4a4444444444444444444444d4"
DELETE_BY_8 = "de2e8b8b5555555555555555555555e5"
CLI_DELETE = "de3e0c0c6666666666666666666666f6"
CLI_DELETE_TOO = "de4e0d0d7777777777777777777777a7"
SEEDED = {
    SOLO: "alice",
    TWIN_E: "alice",
    TWIN_F: "alice",
    CROSS_ALICE: "alice",
    CROSS_BOB: "bob",
    DELETE_BY_4: "alice",
    DELETE_BY_8: "alice",
    CLI_DELETE: "alice",
    CLI_DELETE_TOO: "alice",
}
TEXT = (
    "The supplier confirmed the new delivery dates on Tuesday. "
    "We agreed to review the contract terms before the end of the month. "
    "Please send the signed copy to the legal team by Friday."
)

runner = CliRunner()


def cli(*args: str) -> Result:
    return runner.invoke(app, list(args))


# --- the core lookup ------------------------------------------------------------------


def enqueue(document_id: str, owner: str = "alice", filename: str = "notes.txt") -> Document:
    return queue.enqueue(
        queue.NewDocument(
            id=document_id,
            owner=owner,
            filename=filename,
            stored_name=filename,
            size_bytes=len(TEXT),
            content_type="text/plain",
            sha256=hashlib.sha256(TEXT.encode()).hexdigest(),
        )
    )


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "docintel.db"
    db.connect(path)
    yield path
    db.database.close()


def test_a_unique_prefix_of_4_or_more_characters_finds_the_document(database: Path) -> None:
    for doc_id in (SOLO, TWIN_E, TWIN_F):
        enqueue(doc_id)
    for given in (SOLO[:4], SOLO[:8], SOLO[:8].upper(), f" {SOLO[:6]} ", SOLO, SOLO.upper()):
        assert _owned("alice", given).id == SOLO
    assert _owned("alice", "6db7e").id == TWIN_E  # one more character settles it


def test_unknown_and_impossible_ids_are_not_found(database: Path) -> None:
    enqueue(SOLO)
    for given in (
        "0aac",
        SOLO + "0",
        "no-such-id",
        "0aab7c2g",
        "0aab\u00e9",
        "\u0130\u0130\u0130\u0130",
    ):
        with pytest.raises(DocumentNotFound, match="No document with id"):
            _owned("alice", given)


def test_a_prefix_under_4_characters_is_refused(database: Path) -> None:
    enqueue(SOLO)
    for given in ("", "0", "0a", "0aa", " 0aa "):
        with pytest.raises(IdTooShort, match="at least 4 characters") as refused:
            _owned("alice", given)
        assert refused.value.code == "id_too_short"


def test_an_ambiguous_prefix_names_its_candidates(database: Path) -> None:
    enqueue(TWIN_E, filename="report.pdf")
    enqueue(TWIN_F, filename="memo.txt")
    with pytest.raises(AmbiguousId) as ambiguous:
        _owned("alice", "6DB7")
    error = ambiguous.value
    assert error.code == "ambiguous_id"
    assert error.candidates == [
        {"id": TWIN_E, "filename": "report.pdf", "status": "pending"},
        {"id": TWIN_F, "filename": "memo.txt", "status": "pending"},
    ]
    assert error.details == {"candidates": error.candidates}
    assert "matches 2 documents" in error.message
    assert "6db7e49a (report.pdf, pending)" in error.message
    assert "6db7f012 (memo.txt, pending)" in error.message


def test_candidates_are_shown_long_enough_to_tell_apart_and_at_most_5(database: Path) -> None:
    same_8 = ["77777777" + f"{i:x}" * 24 for i in range(8)]
    for doc_id in same_8:
        enqueue(doc_id)
    with pytest.raises(AmbiguousId) as ambiguous:
        _owned("alice", "7777")
    error = ambiguous.value
    assert "matches more than 5 documents" in error.message
    assert [c["id"] for c in error.candidates] == same_8[:5]
    for doc_id in same_8[:5]:
        assert f"{doc_id[:9]} (" in error.message  # 8 shared characters, then one that differs


def test_another_users_document_is_never_matched(database: Path) -> None:
    enqueue(CROSS_ALICE, owner="alice")
    enqueue(CROSS_BOB, owner="bob")
    assert _owned("alice", "cb5d").id == CROSS_ALICE
    assert _owned("bob", "cb5d").id == CROSS_BOB
    with pytest.raises(DocumentNotFound):
        _owned("alice", CROSS_BOB)
    with pytest.raises(DocumentNotFound):
        _owned("alice", CROSS_BOB[:8])


def test_the_lookup_is_one_query_on_the_owner_id_index(database: Path) -> None:
    """Read the plan SQLite makes for the statement the lookup really runs."""
    for i in range(300):
        enqueue(hashlib.md5(str(i).encode()).hexdigest(), owner=("alice", "bob", "carol")[i % 3])
    enqueue(SOLO)
    db.execute("ANALYZE")  # the planner's statistics for a populated table
    statements: list[str] = []
    connection = db.database.connection()
    connection.set_trace_callback(statements.append)
    try:
        assert _owned("alice", SOLO[:4]).id == SOLO
    finally:
        connection.set_trace_callback(None)
    (statement,) = statements  # one query, whatever the prefix
    plan = " / ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {statement}"))
    assert "USING INDEX document_owner_id (owner=? AND id>? AND id<?)" in plan
    assert "SCAN" not in plan and "TEMP B-TREE" not in plan  # no table scan, no sort


def test_the_migration_adds_the_index_to_an_existing_database(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db.database.init(str(path), pragmas=db.PRAGMAS)
    db.database.connect()
    db.execute("CREATE TABLE migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    db.m001_initial()  # a database made before the index existed
    db.execute("INSERT INTO migrations VALUES ('m001_initial', '2026-01-01T00:00:00.000Z')")
    db.database.close()
    db.connect(path)
    try:
        indexes = {row[1] for row in db.execute("PRAGMA index_list(document)")}
        assert "document_owner_id" in indexes
        applied = [row[0] for row in db.execute("SELECT name FROM migrations ORDER BY name")]
        assert applied == sorted(m.__name__ for m in db.MIGRATIONS)
    finally:
        db.database.close()


# --- the server -----------------------------------------------------------------------


def seed(data_dir: Path, documents: dict[str, str]) -> None:
    """Queue documents with chosen ids (id → owner) in a data dir no server is using."""
    storage = Storage(data_dir)
    storage.prepare()
    db.connect(data_dir / "docintel.db")
    try:
        for doc_id, owner in documents.items():
            incoming = storage.incoming / f"{doc_id}.part"
            incoming.write_text(TEXT)
            name = f"notes-{doc_id[:8]}.txt"
            storage.place(incoming, doc_id, name)
            enqueue(doc_id, owner, filename=name)
    finally:
        db.database.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data_dir = tmp_path_factory.mktemp("ids") / "data"
    seed(data_dir, SEEDED)
    server = ServerProcess(
        data_dir,
        {
            "DOCINTEL_ANALYZER": "offline",
            "DOCINTEL_USERS": "alice:alice-pw,bob:bob-pw,carol:carol-pw",
        },
    ).start()
    with server.client() as alice:
        ended = wait_terminal(alice, [i for i, owner in SEEDED.items() if owner == "alice"])
    assert {d["status"] for d in ended.values()} == {"completed"}, server.log()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def alice(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client("alice") as client:
        yield client


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    detail: dict[str, Any] = response.json()["detail"]
    assert detail["code"] == code and detail["message"].endswith(".")
    return detail


def test_every_route_takes_a_prefix_of_4_or_8_characters(
    server: ServerProcess, alice: httpx.Client
) -> None:
    for given in (SOLO[:4], SOLO[:8], SOLO[:8].upper()):
        detail = alice.get(f"/documents/{given}")
        assert detail.status_code == 200, detail.text
        assert detail.json()["id"] == SOLO and detail.json()["status"] == "completed"
        assert [h["status"] for h in detail.json()["history"]][-1] == "completed"
        assert detail.json()["analysis"]["summary"]
        state = alice.get(f"/documents/{given}/status")
        assert state.status_code == 200 and state.json()["id"] == SOLO
        events = read_events(
            server,
            server.login(),
            params=[("document_id", given), ("last_event_id", "0")],
            until=terminal_for([SOLO]),
        )
        assert {e["data"]["document_id"] for e in events} == {SOLO}
        assert events[0]["data"]["status"] == "pending"


def test_delete_takes_a_prefix_and_removes_the_whole_document(
    server: ServerProcess, alice: httpx.Client
) -> None:
    for doc_id, given in ((DELETE_BY_4, DELETE_BY_4[:4]), (DELETE_BY_8, DELETE_BY_8[:8])):
        assert (server.data_dir / "uploads" / doc_id).is_dir()
        assert alice.delete(f"/documents/{given}").status_code == 204
        assert_error(alice.get(f"/documents/{doc_id}"), 404, "not_found")
        assert not (server.data_dir / "uploads" / doc_id).exists()  # by its full id


def test_an_ambiguous_prefix_is_409_with_the_candidates(
    server: ServerProcess, alice: httpx.Client
) -> None:
    candidates = [
        {"id": TWIN_E, "filename": f"notes-{TWIN_E[:8]}.txt", "status": "completed"},
        {"id": TWIN_F, "filename": f"notes-{TWIN_F[:8]}.txt", "status": "completed"},
    ]
    answers = [
        alice.get("/documents/6db7"),
        alice.get("/documents/6DB7/status"),
        alice.delete("/documents/6db7"),
        alice.get("/documents/stream", params={"document_id": "6db7"}),
    ]
    for response in answers:
        detail = assert_error(response, 409, "ambiguous_id")
        assert detail["candidates"] == candidates
        assert TWIN_E[:8] in detail["message"] and TWIN_F[:8] in detail["message"]
    for doc_id in (TWIN_E, TWIN_F):  # the ambiguous delete deleted nothing
        assert alice.get(f"/documents/{doc_id}/status").status_code == 200
    assert alice.get("/documents/6db7e/status").json()["id"] == TWIN_E


def test_another_users_document_with_the_same_prefix_is_never_matched(
    server: ServerProcess, alice: httpx.Client
) -> None:
    assert alice.get("/documents/cb5d").json()["id"] == CROSS_ALICE
    with server.client("bob") as bob:
        assert bob.get("/documents/cb5d/status").json()["id"] == CROSS_BOB
        assert_error(bob.get("/documents/0aab"), 404, "not_found")
    for route in (f"/documents/{CROSS_BOB[:8]}", f"/documents/{CROSS_BOB}/status"):
        assert_error(alice.get(route), 404, "not_found")
    assert_error(alice.delete(f"/documents/{CROSS_BOB[:6]}"), 404, "not_found")
    stream = alice.get("/documents/stream", params={"document_id": CROSS_BOB[:8]})
    assert_error(stream, 404, "not_found")
    with server.client("bob") as bob:  # still there
        assert bob.get(f"/documents/{CROSS_BOB}").status_code == 200


def test_a_prefix_under_4_characters_is_a_400_that_says_so(alice: httpx.Client) -> None:
    answers = [
        alice.get("/documents/0aa"),
        alice.get("/documents/0aa/status"),
        alice.delete("/documents/0aa"),
        alice.get("/documents/stream", params={"document_id": "0a"}),
    ]
    for response in answers:
        detail = assert_error(response, 400, "id_too_short")
        assert "at least 4 characters" in detail["message"]
    assert alice.get(f"/documents/{SOLO}").status_code == 200


def test_an_id_the_server_made_works_by_its_table_prefix(server: ServerProcess) -> None:
    with server.client("carol") as carol:
        (doc,) = upload(carol, TXTS / "quarterly-memo.txt").json()["documents"]
        assert carol.get(f"/documents/{doc['id'][:8]}/status").json()["id"] == doc["id"]
        assert carol.get(f"/documents/{doc['id'][:4]}").json()["id"] == doc["id"]  # carol's only


# --- the CLI --------------------------------------------------------------------------


@pytest.fixture
def logged_in(server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> ServerProcess:
    monkeypatch.setenv("DOCINTEL_URL", server.url)
    result = cli("login", "--username", "alice", "--password", "alice-pw")
    assert result.exit_code == 0, result.output
    return server


def test_cli_commands_take_prefixes(logged_in: ServerProcess) -> None:
    shown = cli("show", SOLO[:4])
    assert shown.exit_code == 0, shown.output
    assert SOLO in shown.stdout and "Summary" in shown.stdout
    status = cli("status", SOLO[:8])
    assert status.exit_code == 0 and status.stdout.startswith(f"{SOLO}  completed")
    watched = cli("watch", "--json", SOLO[:4], CROSS_ALICE[:8].upper())
    assert watched.exit_code == 0, watched.output
    events = [json.loads(line) for line in watched.stdout.splitlines() if line.strip()]
    assert {e["document_id"] for e in events} == {SOLO, CROSS_ALICE}
    deleted = cli("delete", "--yes", CLI_DELETE[:4])
    assert deleted.exit_code == 0 and deleted.stdout.strip() == f"deleted {CLI_DELETE}"
    assert cli("status", CLI_DELETE).exit_code == 1


def test_cli_ambiguous_prefix_names_the_candidates_and_exits_1(logged_in: ServerProcess) -> None:
    for command in (["show"], ["status"], ["delete", "--yes"], ["watch", "--json"]):
        result = cli(*command, "6db7")
        assert result.exit_code == 1, (command, result.output)
        (line,) = result.stderr.splitlines()
        assert line.startswith("docintel: ") and "matches 2 documents" in line
        assert TWIN_E[:8] in line and TWIN_F[:8] in line
        assert result.stdout == ""
    assert cli("status", TWIN_E[:5]).exit_code == 0  # nothing was deleted
    assert cli("status", TWIN_F[:5]).exit_code == 0
    # Among several ids, an ambiguous one is reported and the others are deleted.
    several = cli("delete", "--yes", "--json", "6db7", CLI_DELETE_TOO[:4])
    assert several.exit_code == 1
    assert [json.loads(line) for line in several.stdout.splitlines()] == [
        {"id": "6db7", "deleted": False, "error": "ambiguous_id"},
        {"id": CLI_DELETE_TOO, "deleted": True},
    ]


def test_cli_short_prefix_and_foreign_prefix_exit_1(logged_in: ServerProcess) -> None:
    short = cli("status", "0aa")
    assert short.exit_code == 1 and "at least 4 characters" in short.stderr
    foreign = cli("show", CROSS_BOB[:8])
    assert foreign.exit_code == 1 and "No document with id" in foreign.stderr


@pytest.mark.parametrize("word", ["stream", f"{SOLO[:8]}/status", f"{SOLO[:4]}?x", "../../etc"])
def test_cli_a_word_that_is_no_id_is_not_found_without_asking(
    logged_in: ServerProcess, word: str
) -> None:
    """Not hex, so no id: not sent, where `show stream` opened the event stream
    (and waited forever) and `show ID/status` or `ID?x` reached other routes."""
    for command in (["show"], ["status"], ["delete", "--yes"]):
        result = cli(*command, word)
        assert result.exit_code == 1, (command, result.output)
        assert "No document with id" in result.stderr and repr(word) in result.stderr
        assert result.stdout == ""
    assert cli("status", SOLO).exit_code == 0  # nothing was deleted


def test_help_examples_use_ids_of_the_real_shape() -> None:
    for command in ("show", "status", "delete"):
        text = cli(command, "--help").stdout
        assert f"docintel {command} 6db7e49a" in text and "3f2b9c1e-" not in text


def test_readme_examples_use_ids_of_the_real_shape() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    commands = [line for line in readme.splitlines() if line.startswith("$ docintel ")]
    for line in commands:
        assert "…" not in line, line  # an id a user could not type
