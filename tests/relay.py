"""A TCP relay in front of a server: the network between a client and it, under the test's control."""

from __future__ import annotations

import socket
import threading
import time


class Relay:
    """Forwards to whichever server runs on `port` now (like a proxy).

    A test can restart the server on another port under a client's feet
    (`relay.port = ...`), cut every open connection (`cut()`), or take the
    network away altogether (`close()`, then `reopen()`).
    """

    def __init__(self, port: int, delay: float = 0.0) -> None:
        self.port = port
        self.delay = delay  # seconds per forwarded chunk: a slow network
        self.front = socket.create_server(("127.0.0.1", 0))
        self.front.settimeout(0.1)
        self.sockets: list[socket.socket] = []
        self.stop = threading.Event()
        self.refusing = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.front.getsockname()[1]}"

    def __enter__(self) -> Relay:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.cut()
        self.thread.join(5)
        self.front.close()
        time.sleep(0.1)  # the pipes see the shutdown and end
        for s in self.sockets:
            s.close()

    def cut(self) -> None:
        """Drop every open connection (new ones still go through)."""
        for s in list(self.sockets):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        """An outage: drop every connection and refuse new ones until `reopen()`."""
        self.refusing.set()
        self.cut()

    def reopen(self) -> None:
        self.refusing.clear()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.front.accept()
            except TimeoutError:
                continue
            if self.refusing.is_set():
                conn.close()
                continue
            self.sockets.append(conn)
            try:
                back = socket.create_connection(("127.0.0.1", self.port))
            except OSError:
                conn.shutdown(socket.SHUT_RDWR)
                continue
            self.sockets.append(back)
            for a, b in ((conn, back), (back, conn)):
                threading.Thread(target=_pipe, args=(a, b, self.delay), daemon=True).start()


def _pipe(a: socket.socket, b: socket.socket, delay: float = 0.0) -> None:
    try:
        while chunk := a.recv(65536):
            b.sendall(chunk)
            if delay:
                time.sleep(delay)
    except OSError:
        pass
    for s in (a, b):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
