"""A TCP proxy in front of a Redis of the test's own that can stop passing on what
clients send, as a congested or half-dead network does: a call stalls while it
connects or while its request is being sent, with no mock of the broker.

``stall()`` stops reading from clients (their sends fill the socket buffers and
then wait); ``flow()`` passes on what they sent, and goes on. ``hold_replies(n)``
lets only the next ``n`` bytes of replies through (a reply cut in pieces), until
``flow()``. Threads of its own, stopped by ``close()``.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading


class StallingProxy:
    def __init__(self, upstream_port: int, receive_buffer: int = 4096) -> None:
        self._upstream = ("127.0.0.1", upstream_port)
        self._listener = socket.socket()
        # Small, so a stalled client's large request waits in its own buffers.
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen()
        self.port = self._listener.getsockname()[1]
        self._flowing = threading.Event()
        self._flowing.set()
        self._replies_flowing = threading.Event()
        self._replies_flowing.set()
        self._reply_allowance = 0
        self.held_replies = 0  # bytes of replies held back now
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = [self._listener]
        self.accepted = 0
        self.passed_on = 0  # bytes from clients, passed on to Redis
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stall(self) -> None:
        self._flowing.clear()

    def flow(self) -> None:
        self._flowing.set()
        self._replies_flowing.set()

    def hold_replies(self, allowance: int) -> None:
        self._reply_allowance = allowance
        self._replies_flowing.clear()

    def close(self) -> None:
        self._closed.set()
        self._flowing.set()
        self._replies_flowing.set()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self._upstream)
            self._sockets += [client, server]
            self.accepted += 1
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, upstream: bool) -> None:
        try:
            while not self._closed.is_set():
                if upstream and not self._flowing.wait(0.05):
                    continue
                if not select.select([source], [], [], 0.05)[0]:
                    continue
                if upstream and not self._flowing.is_set():
                    continue
                data = source.recv(65536)
                if not data:
                    break
                if upstream:
                    target.sendall(data)
                    self.passed_on += len(data)
                else:
                    self._reply(data, target)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _reply(self, data: bytes, client: socket.socket) -> None:
        """Passes a piece of reply on, as far as the allowance goes while held."""
        if not self._replies_flowing.is_set():
            now = data[: self._reply_allowance]
            self._reply_allowance -= len(now)
            client.sendall(now)
            data = data[len(now) :]
            self.held_replies += len(data)
            while data and not self._replies_flowing.wait(0.05):
                if self._closed.is_set():
                    return
        self.held_replies = 0
        client.sendall(data)
