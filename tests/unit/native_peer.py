"""A native AMI peer served from a thread, for tests of the one-shot commands:
``main`` runs its own event loop, so the peer cannot share the test's.

Four test files had each copied its socket server, banner and header loop; a
peer is now only what it answers (:data:`Reply`).
"""

from __future__ import annotations

import contextlib
import socketserver
import threading
from collections.abc import Callable, Iterator, Mapping

#: What a peer does with one action: its headers, a thread-safe ``send``
#: for what to write, and the connection's number (1 for the first).
Reply = Callable[[Mapping[str, str], Callable[[str], None], int], None]


@contextlib.contextmanager
def native_peer(reply: Reply) -> Iterator[int]:
    """Serve Asterisk's banner and ``reply`` to every action on loopback;
    yields the port."""
    count = 0
    counting = threading.Lock()

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            nonlocal count
            with counting:
                count += 1
                number = count
            writing = threading.Lock()

            def send(data: str) -> None:
                with writing:
                    self.wfile.write(data.encode())

            send("Asterisk Call Manager/11.0.0\r\n")
            while True:
                lines = []
                while (line := self.rfile.readline()) not in (b"\r\n", b""):
                    lines.append(line.decode().strip())
                if not line:
                    return
                reply(dict(item.split(": ", 1) for item in lines), send, number)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
