"""What the CLI draws on a terminal: the `watch` board's fit, the upload progress bar.

The board is rendered by a Rich console of a given size; `watch` and `upload`
run on a pseudo-terminal of a given size, and what they wrote is replayed in
`Screen`, a tiny terminal emulator, to see what a user would have seen.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import sys
import termios
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from docintel.cli.client import Event
from docintel.cli.render import Board
from tests import pdfgen
from tests.conftest import PDFS, ServerProcess, openai_env, upload, wait_status, wait_terminal
from tests.fake_openai import FakeOpenAI

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# What Rich's Live writes before each frame: back to the first line of the last one, erasing.
FRAME_START = re.compile(r"\r\x1b\[2K(?:\x1b\[1A\x1b\[2K)*")


def plain(text: str) -> str:
    return ANSI.sub("", text)


# --- a tiny terminal ------------------------------------------------------------------------


class Screen:
    """Enough of a VT100 for Rich: text, CR/LF, cursor up/down/column, erase line/screen.

    Lines scrolled off the top are kept in `history`, so nothing drawn is lost.
    """

    def __init__(self, rows: int, cols: int) -> None:
        self.rows, self.cols = rows, cols
        self.lines = [[" "] * cols for _ in range(rows)]
        self.history: list[str] = []
        self.row = self.col = 0

    def feed(self, data: str) -> Screen:
        i = 0
        while i < len(data):
            char = data[i]
            if char == "\x1b":
                match = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])").match(data, i)
                if match is None:  # some other escape: skip ESC and the next character
                    i += 2
                    continue
                self._csi(match.group(1), match.group(2))
                i = match.end()
                continue
            if char == "\r":
                self.col = 0
            elif char == "\n":
                self._line_feed()
            elif char == "\b":
                self.col = max(0, self.col - 1)
            elif char >= " ":
                if self.col >= self.cols:  # auto-wrap
                    self.col = 0
                    self._line_feed()
                self.lines[self.row][self.col] = char
                self.col += 1
            i += 1
        return self

    def _line_feed(self) -> None:
        if self.row == self.rows - 1:
            self.history.append("".join(self.lines.pop(0)).rstrip())
            self.lines.append([" "] * self.cols)
        else:
            self.row += 1

    def _csi(self, params: str, final: str) -> None:
        if params.startswith("?"):
            return  # modes (cursor shown/hidden)
        numbers = [int(p) if p else 0 for p in params.split(";")] if params else []
        n = numbers[0] if numbers else 0
        if final == "A":
            self.row = max(0, self.row - max(n, 1))
        elif final == "B":
            self.row = min(self.rows - 1, self.row + max(n, 1))
        elif final == "C":
            self.col = min(self.cols - 1, self.col + max(n, 1))
        elif final == "D":
            self.col = max(0, self.col - max(n, 1))
        elif final == "G":
            self.col = max(n, 1) - 1
        elif final == "K":
            line = self.lines[self.row]
            start, end = {0: (self.col, self.cols), 1: (0, self.col + 1)}.get(n, (0, self.cols))
            line[start:end] = [" "] * (end - start)
        elif final == "J" and n == 2:
            self.lines = [[" "] * self.cols for _ in range(self.rows)]
        # "m" (colours and bold) and anything else: no change to the text

    @property
    def text(self) -> list[str]:
        """Everything on the terminal: scrolled-off lines, then the screen (trailing blanks cut)."""
        lines = self.history + ["".join(line).rstrip() for line in self.lines]
        while lines and not lines[-1]:
            lines.pop()
        return lines


def test_screen_emulates_what_rich_writes() -> None:
    screen = Screen(3, 10).feed("bar 0.0\r\x1b[2Kaccepted\r\nnext\x1b[1A\r\x1b[2Kx\r\n\r\nlast\r\n")
    assert screen.text == ["x", "next", "last"]
    assert screen.history == ["x"]


# --- the board at a given size -----------------------------------------------------------


def _event(n: int, doc: int, status: str, **data: Any) -> Event:
    at = datetime(2026, 11, 25, 9, 0, tzinfo=UTC) + timedelta(seconds=n)
    body = {
        "document_id": f"{doc:04d}d0c" + "0" * 25,
        "status": status,
        "filename": f"report-{doc:02d}.pdf",
        "timestamp": at.isoformat(),
        **data,
    }
    return Event(n, body)


def _short(doc: int) -> str:
    return f"{doc:04d}d0c0"


def _board(fates: dict[int, str]) -> Board:
    """Documents 0, 1, … (in upload order) taken through the pipeline to their fate."""
    board = Board()
    n = 0
    for doc, fate in sorted(fates.items()):
        path = ["pending", "processing", "analyzing", "completed"]
        if fate == "failed":
            path = ["pending", "processing", "failed"]
        elif fate != "completed":
            path = path[: path.index(fate) + 1]
        for status in path:
            n += 1
            extra = (
                {"error": f"Reason {doc}: the PDF is password-protected."}
                if status == "failed"
                else {}
            )
            board.apply(_event(n, doc, status, **extra))
    return board


def _draw(board: Board, width: int = 80, height: int = 20) -> list[str]:
    out = StringIO()
    Console(file=out, width=width, height=height, force_terminal=True).print(board)
    return plain(out.getvalue()).splitlines()


def _summary(lines: list[str]) -> dict[str, int]:
    folded = [line for line in lines if line.startswith("+")]
    assert len(folded) <= 1, lines
    if not folded:
        return {}
    return {status: int(n) for n, status in re.findall(r"(\d+) (\w+)", folded[0])}


def _row_order(lines: list[str]) -> list[int]:
    return [int(line[:4]) for line in lines if re.match(r"\d{4}d0c0 ", line)]


def test_board_fits_80_by_20_with_in_flight_rows_newest_first_and_a_summary() -> None:
    fates = {doc: "completed" for doc in range(40)}
    fates.update({3: "failed", 17: "failed", 38: "failed"})  # two old failures, one recent
    fates.update({36: "processing", 39: "analyzing", 40: "pending", 41: "pending"})
    lines = _draw(_board(fates))

    assert len(lines) <= 20, "\n".join(lines)
    assert max(len(line) for line in lines) <= 80
    assert "QUEUED" in lines[0] and "EXTRACT" in lines[0] and "ANALYSE" in lines[0]
    shown = _row_order(lines)
    assert shown == sorted(shown, reverse=True)  # newest first
    assert {36, 39, 40, 41} <= set(shown)  # everything in flight
    assert all(_short(doc) in "\n".join(lines) for doc in (36, 39, 40, 41))
    # The recent failure is shown with its reason, on the line under it.
    failed_at = next(i for i, line in enumerate(lines) if line.startswith(_short(38)))
    assert "failed" in lines[failed_at]
    assert "Reason 38: the PDF is password-protected." in lines[failed_at + 1]
    # Every document is either a row or counted in the summary, once.
    folded = _summary(lines)
    for fate in ("completed", "failed"):
        on_screen = sum(1 for doc in shown if fates[doc] == fate)
        assert on_screen + folded.get(fate, 0) == list(fates.values()).count(fate), (fate, lines)
    assert folded["completed"] > 0 and folded["failed"] == 2  # 3 and 17 are old
    # The finished rows shown are the newest ones: no finished row hides a newer one.
    finished = [doc for doc in fates if fates[doc] in ("completed", "failed")]
    shown_finished = [doc for doc in shown if fates[doc] in ("completed", "failed")]
    assert shown_finished == sorted(finished, reverse=True)[: len(shown_finished)]


def test_board_fits_when_in_flight_documents_alone_overflow() -> None:
    fates = {doc: "pending" for doc in range(30)}
    fates.update({0: "processing", 1: "completed"})
    lines = _draw(_board(fates), width=80, height=12)
    assert len(lines) <= 12
    assert _short(0) in "\n".join(lines)  # being processed: always shown
    shown = _row_order(lines)
    assert shown == sorted(shown, reverse=True)
    folded = _summary(lines)
    assert len(shown) + sum(folded.values()) == 30
    assert folded["pending"] > 0 and folded["completed"] == 1


@pytest.mark.parametrize("width", [60, 80, 120])
def test_board_stays_on_one_line_per_row_at_any_width(width: int) -> None:
    fates = {0: "completed", 1: "failed", 2: "analyzing"}
    board = _board(fates)
    board.rows[_event(0, 0, "x").document_id].filename = "a-rather-long-file-name-" * 4 + ".pdf"
    board.connection_note = "the connection was lost; reconnecting…"
    lines = _draw(board, width=width, height=20)
    assert len(lines) == 2 + 3 + 1 + 1  # header, rule, 3 rows, a reason, the note
    assert max(len(line) for line in lines) <= width
    assert lines[-1] == "the connection was lost; reconnecting…"


# --- on a pseudo-terminal ------------------------------------------------------------------


class PtyRun:
    """`python -m docintel ARGS` on a pseudo-terminal of `rows` x `cols`; collects its output."""

    def __init__(self, args: list[str], env: dict[str, str], rows: int, cols: int) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: size its terminal before anything looks at it
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
            os.execve(sys.executable, [sys.executable, "-m", "docintel", *args], env)
        self.raw = b""
        self.exit_code: int | None = None

    @property
    def output(self) -> str:
        return self.raw.decode(errors="replace")

    def read_until(self, done: Callable[[str], bool], timeout: float = 60) -> None:
        """Read until `done(output)` or the end of output; fail after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not done(self.output):
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"timed out; output so far:\n{self.output}")
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if ready:
                try:
                    data = os.read(self.fd, 65536)
                except OSError:  # EIO: the child closed the terminal
                    data = b""
                if not data:
                    break
                self.raw += data

    def finish(self, timeout: float = 60) -> int:
        self.read_until(lambda _: False, timeout)
        _, status = os.waitpid(self.pid, 0)
        os.close(self.fd)
        self.exit_code = os.waitstatus_to_exitcode(status)
        return self.exit_code

    def kill(self) -> None:
        if self.exit_code is None:
            os.kill(self.pid, signal.SIGKILL)


def terminal_env(server: ServerProcess, **extra: str) -> dict[str, str]:
    """A colour terminal whose size comes from the pty, logged in to `server`."""
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "COLUMNS", "LINES")}
    env.update(TERM="xterm-256color", DOCINTEL_URL=server.url, **extra)
    env["DOCINTEL_TOKEN"] = server.login()
    return env


def frames(output: str) -> list[list[str]]:
    """The frames of a Live display: the text between Rich's returns to its first line.

    The display ends where it shows the cursor again; what follows is not a frame.
    """
    live = output.split("\x1b[?25h")[0]
    return [plain(part).replace("\r", "").split("\n") for part in FRAME_START.split(live)]


def test_watch_on_a_small_terminal_fits_and_shows_the_documents_in_flight(
    make_server: Any, tmp_path: Path
) -> None:
    rows, cols = 14, 80
    with FakeOpenAI() as fake:
        # Analysis of `held.txt` waits until the fake closes: it stays `analyzing`, and
        # with one worker the two uploaded after it stay `pending`.
        server = make_server(env=openai_env(fake, DOCINTEL_OPENAI_TIMEOUT="900"))
        with server.client() as client:
            done = [
                (f"note-{i:02d}.txt", f"Note {i}. The team ships on Friday.".encode())
                for i in range(20)
            ]
            ids = [d["id"] for d in upload(client, *done).json()["documents"]]
            locked = upload(client, PDFS / "libreoffice-writer-password.pdf").json()
            ids += [d["id"] for d in locked["documents"]]  # fails: password-protected
            assert len(ids) == 21
            wait_terminal(client, ids)
            held = upload(client, ("held.txt", b"FAKE-SCRIPT:held:slow:600 Held back.")).json()
            wait_status(client, held["documents"][0]["id"], "analyzing")
            queued = upload(
                client, ("queued-1.txt", b"Queued one."), ("queued-2.txt", b"Queued two.")
            )
            in_flight = [held["documents"][0]["id"]] + [d["id"] for d in queued.json()["documents"]]

        def settled(output: str) -> bool:
            # The queued ones' `pending` are the last events: once they are drawn, all are.
            last = "\n".join(frames(output)[-1])
            return all(i[:8] in last for i in in_flight)

        run = PtyRun(["watch", "--since", "0"], terminal_env(server), rows, cols)
        try:
            run.read_until(settled)
            os.kill(run.pid, signal.SIGINT)
            assert run.finish() == 130, run.output
        finally:
            run.kill()

    drawn = frames(run.output)
    for frame in drawn:
        assert len([line for line in frame if line]) <= rows, "\n".join(frame)
        assert max(len(line) for line in frame) <= cols, "\n".join(frame)
        assert "..." not in [line.strip() for line in frame]  # Rich never had to crop
    final = [line for line in drawn[-1] if line]
    assert all(i[:8] in "\n".join(final) for i in in_flight), final

    # What is left on the terminal: the last frame, then the note of Ctrl-C.
    text = Screen(rows, cols).feed(run.output).text
    assert text[-1] == "interrupted" and text[-1 - len(final) : -1] == final, text
    row_at = [next(n for n, line in enumerate(final) if line.startswith(i[:8])) for i in in_flight]
    assert "analyzing" in final[row_at[0]]
    assert "pending" in final[row_at[1]] and "pending" in final[row_at[2]]
    assert row_at == sorted(row_at, reverse=True)  # newest first
    failed = next(n for n, line in enumerate(final) if " failed " in line)
    assert failed > row_at[0] and "password" in final[failed + 1]  # and why
    completed = sum(" completed " in line for line in final)
    folded = re.fullmatch(r"\+(\d+) completed", final[-1])
    assert folded and completed + int(folded.group(1)) == 20, final


def _big_pdf(path: Path, megabytes: int = 9) -> Path:
    """A valid PDF of `megabytes` MB: a page of text, and random bytes in an unused stream."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [4 0 R] /Count 1 >>",
        pdfgen.HELVETICA,
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /Font << /F1 3 0 R >> >> /Contents 5 0 R >>",
        pdfgen.stream(pdfgen.text_content("A large report. Please review the budget.")),
        pdfgen.stream(os.urandom(megabytes * 1024 * 1024)),
    ]
    path.write_bytes(pdfgen.build(objects))
    return path


def test_upload_progress_follows_the_bytes_and_each_line_stands_alone(
    offline_server: ServerProcess, tmp_path: Path
) -> None:
    rows, cols = 24, 80
    files = [_big_pdf(tmp_path / "big-1.pdf"), _big_pdf(tmp_path / "big-2.pdf")]
    run = PtyRun(["upload", *map(str, files)], terminal_env(offline_server), rows, cols)
    try:
        assert run.finish() == 0, run.output
    finally:
        run.kill()
    output = plain(run.output)

    # Before each file's line, its bar counted up through the bytes sent.
    before = output.split("accepted  big-1.pdf")[0]
    counts = [float(x) for x, _ in re.findall(r"(\d+\.\d)/(\d+\.\d) MB", before)]
    assert counts == sorted(counts), counts
    total = float(re.findall(r"/(\d+\.\d) MB", before)[0])
    assert len({c for c in counts if 0 < c < total}) >= 3, counts  # it moved, in steps
    between = output.split("accepted  big-1.pdf")[1].split("accepted  big-2.pdf")[0]
    assert "big-2.pdf" in between and re.search(r"[1-9]\.\d/", between), between

    # On screen: two lines, each on its own, and no bar left behind.
    text = Screen(rows, cols).feed(run.output).text
    assert len(text) == 2, text
    for line, path in zip(text, files, strict=True):
        assert re.fullmatch(rf"accepted  {path.name}  [0-9a-f]{{32}}", line), text


def test_ctrl_c_at_the_login_prompt_is_an_interruption(offline_server: ServerProcess) -> None:
    env = {**os.environ, "DOCINTEL_URL": offline_server.url}
    run = PtyRun(["login"], env, rows=24, cols=80)
    run.read_until(lambda out: "Username" in out, timeout=30)
    os.kill(run.pid, signal.SIGINT)
    assert run.finish(timeout=30) == 130, run.output
    assert "Aborted" not in run.output and "Traceback" not in run.output
