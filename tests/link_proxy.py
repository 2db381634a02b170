"""A TCP proxy on loopback that can cut the link between a site and the hub (for
tests/test_hub_faults.py)."""

from __future__ import annotations

import socket
import struct
import threading
import time

from conftest import free_port


def _reset(sock: socket.socket) -> None:
    """Close a connection with a TCP reset (what a dropped link looks like to the peer)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


class LinkProxy:
    """A TCP proxy on loopback between a site and the hub. ``cut()`` resets every connection it
    carries and refuses new ones; ``restore()`` lets them through again. Each exchange is noted
    as (request line without its query, the answer's status): the site's client makes one
    request per connection. ``before_request(line)``, when set, is called before a request is
    passed on."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.exchanges: list[dict] = []
        self.before_request = None
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
            except OSError:
                pass
            listener.close()
        with self._lock:
            for sock in self._open:
                _reset(sock)
            self._open.clear()

    def close(self) -> None:
        self.cut()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
        except OSError:  # the hub is down: the site's connection is reset
            _reset(client)
            return
        upstream.settimeout(None)
        exchange: dict = {"request": None, "status": None, "at": time.time()}
        with self._lock:
            if self._listener is None:
                _reset(client)
                _reset(upstream)
                return
            self._open |= {client, upstream}
            self.exchanges.append(exchange)
        answer = threading.Thread(target=self._pump, args=(upstream, client, exchange, False),
                                  daemon=True)
        answer.start()
        self._pump(client, upstream, exchange, True)
        answer.join(120)
        with self._lock:
            self._open -= {client, upstream}
        for sock in (client, upstream):
            sock.close()

    def _pump(self, src: socket.socket, dst: socket.socket, exchange: dict,
              request: bool) -> None:
        first = True
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if first and data:
                line = data.split(b"\r\n", 1)[0].decode("latin-1")
                if request:
                    exchange["request"] = line.split("?", 1)[0].rsplit(" HTTP/", 1)[0]
                    if self.before_request is not None:
                        self.before_request(exchange["request"])
                elif line.startswith("HTTP/"):
                    exchange["status"] = int(line.split()[1])
                first = False
            if not data:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            try:
                dst.sendall(data)
            except OSError:
                return
