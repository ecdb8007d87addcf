"""Child processes of the service: out of the terminal's reach, dead with their parent.

Two rules hold for every process docintel starts (the PDF parser, the offline
analyzer's workers):

- **The server decides, not the terminal.** A terminal's Ctrl-C signals its
  whole foreground process group. A child in that group would die of the
  SIGINT (a `KeyboardInterrupt` traceback, a document failed for good) before
  the server had decided anything. Children therefore start in a session of
  their own; the server stops them itself when it stops.
- **No orphans.** However the server dies (`kill -9` included), its children
  die with it: each asks the kernel for SIGKILL when its parent goes
  (`PR_SET_PDEATHSIG`), then checks the parent did not die before it asked.

The parent side is `spawn()`; the child side calls `die_with_parent()` first.
`ChildPool` keeps a few long-lived children that answer JSON requests (the
offline analyzer), so their start-up cost is paid once, not per document.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

PARENT_PID_OPTION = "--parent-pid"
_HEADER_BYTES = 4  # big-endian length of the JSON message that follows


class ChildDied(Exception):
    """A pool child exited (or was killed) before it answered."""


async def spawn(
    module: str, *args: str, stderr: int | None = asyncio.subprocess.PIPE
) -> asyncio.subprocess.Process:
    """Start `python -m module args…` with pipes on stdin and stdout (and stderr).

    The fork happens on the event loop's thread, which lives as long as the
    process: PR_SET_PDEATHSIG fires when the *thread* that forked the child
    ends, so forking from a short-lived thread would kill the child early.
    """
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        PARENT_PID_OPTION,
        str(os.getpid()),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
        start_new_session=True,
    )


async def stop(proc: asyncio.subprocess.Process) -> None:
    """Kill a child if it still runs and reap it (never leave a zombie behind)."""
    if proc.returncode is None:
        try:
            proc.kill()
        except ProcessLookupError:
            pass
        await proc.wait()


def die_with_parent(parent_pid: int | None) -> None:
    """In the child, first thing: die when the parent dies; ignore terminal signals."""
    # Out of the terminal's session already; this also covers a child started by hand.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            pr_set_pdeathsig = 1
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL))
        except (OSError, AttributeError):
            pass
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)  # the parent died before prctl took effect: nobody wants our result


class ChildPool:
    """Up to `size` long-lived children, each answering one JSON request at a time.

    A child is started on first need and reused while it behaves. One that dies
    or whose call is cancelled (its document deleted, the server stopping) is
    killed and never reused: it might still answer the old request later.
    """

    def __init__(self, target: str, size: int) -> None:
        self.target = target  # "package.module:function", see serve()
        self._slots = asyncio.Semaphore(size)
        self._idle: list[asyncio.subprocess.Process] = []
        self._running: set[asyncio.subprocess.Process] = set()

    async def call(self, request: dict[str, Any]) -> dict[str, Any]:
        async with self._slots:
            proc = self._idle.pop() if self._idle else await self._start()
            reusable = False
            try:
                reply = await _exchange(proc, request)
                reusable = True
                return reply
            finally:
                if reusable:
                    self._idle.append(proc)
                else:
                    self._running.discard(proc)
                    await stop(proc)

    async def aclose(self) -> None:
        """Stop every child: nothing they hold is worth waiting for."""
        procs, self._idle, self._running = list(self._running), [], set()
        for proc in procs:
            await stop(proc)

    async def _start(self) -> asyncio.subprocess.Process:
        # The child's stderr is the server's: its warnings belong in the server log.
        proc = await spawn(__name__, self.target, stderr=None)
        self._running.add(proc)
        return proc


async def _exchange(proc: asyncio.subprocess.Process, request: dict[str, Any]) -> dict[str, Any]:
    assert proc.stdin is not None and proc.stdout is not None
    try:
        _write_message(proc.stdin.write, request)
        await proc.stdin.drain()
        size = int.from_bytes(await proc.stdout.readexactly(_HEADER_BYTES), "big")
        reply: dict[str, Any] = json.loads(await proc.stdout.readexactly(size))
    except (asyncio.IncompleteReadError, BrokenPipeError, ConnectionResetError):
        raise ChildDied(f"child {proc.pid} exited before it answered") from None
    return reply


def _write_message(write: Callable[[bytes], object], message: dict[str, Any]) -> None:
    data = json.dumps(message).encode()
    write(len(data).to_bytes(_HEADER_BYTES, "big") + data)


def serve(handler: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """The child's loop: read a request, answer it, until the parent closes stdin."""
    requests = sys.stdin.buffer
    # Replies get a private copy of stdout; anything a library prints goes to stderr
    # instead of corrupting the framing.
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    while True:
        header = requests.read(_HEADER_BYTES)
        if len(header) < _HEADER_BYTES:
            return  # the parent closed our stdin (or died): done
        request = json.loads(requests.read(int.from_bytes(header, "big")))
        try:
            reply = handler(request)
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        _write_message(replies.write, reply)
        replies.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m docintel.core.children")
    parser.add_argument("target", help="module:function answering each request")
    parser.add_argument(PARENT_PID_OPTION, type=int, default=None)
    args = parser.parse_args(argv)
    die_with_parent(args.parent_pid)
    module, _, name = args.target.partition(":")
    handler = getattr(importlib.import_module(module), name)
    with contextlib.suppress(BrokenPipeError):
        serve(handler)


if __name__ == "__main__":
    main()
