"""HTTP/1.1 Upgrade (WebSocket) through weir: after the 101, bytes flow both
ways until either side closes."""
import socket
import threading
import time

import backends as B
from conftest import free_port


class UpgradeBackend:
    """Answers an Upgrade request with 101 and then echoes every byte,
    upper-cased; records the request head."""

    def __init__(self, answer_101=True):
        self.sock = B.listen_socket(backlog=16)
        self.addr = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.heads = []
        self.closed = threading.Event()
        self.answer_101 = answer_101
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.handle, args=(c,), daemon=True).start()

    def handle(self, c):
        c.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = c.recv(4096)
            if not chunk:
                c.close()
                return
            data += chunk
        head, rest = data.split(b"\r\n\r\n", 1)
        self.heads.append(head.decode("latin-1"))
        if not self.answer_101:
            c.sendall(b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 4\r\n\r\nnope")
            c.close()
            return
        c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n")
        if rest:
            c.sendall(rest.upper())
        try:
            while True:
                chunk = c.recv(65536)
                if not chunk:
                    break
                c.sendall(chunk.upper())
        except OSError:
            pass
        self.closed.set()
        c.close()

    def close(self):
        self.sock.close()


UPGRADE = (b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def read_until(s, marker, limit=1 << 20):
    data = b""
    while marker not in data and len(data) < limit:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_websocket_tunnel_both_ways(weir):
    be = UpgradeBackend()
    try:
        w = weir([be.addr])
        s = socket.create_connection(("127.0.0.1", w.port), timeout=10)
        s.sendall(UPGRADE)
        head = read_until(s, b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head
        assert b"upgrade: websocket" in head.lower() and b"connection: upgrade" in head.lower()
        # the backend saw the upgrade request with its Upgrade field
        h = be.heads[0].lower()
        assert "upgrade: websocket" in h and "connection: upgrade" in h
        assert "sec-websocket-key" in h
        for msg in (b"hello", b"x" * 200000, b"\x00\x01binary\xff"):
            s.sendall(msg)
            got = b""
            while len(got) < len(msg):
                chunk = s.recv(65536)
                assert chunk, "tunnel closed early"
                got += chunk
            assert got == msg.upper()
        s.close()  # closing the client side closes the backend side
        assert be.closed.wait(5)
    finally:
        be.close()


def test_upgrade_refused_is_an_ordinary_response(weir):
    be = UpgradeBackend(answer_101=False)
    try:
        w = weir([be.addr])
        s = socket.create_connection(("127.0.0.1", w.port), timeout=10)
        s.sendall(UPGRADE)
        r = B.read_response(B.Reader(s))
        assert r.status == 426 and r.body == b"nope"
        s.close()
    finally:
        be.close()


def test_unrequested_101_is_a_bad_gateway(weir):
    be = UpgradeBackend()
    try:
        w = weir([be.addr])
        r = B.get(w.port, "/plain")
        assert r.status == 502
    finally:
        be.close()


def test_backend_close_ends_the_tunnel(weir):
    be = UpgradeBackend()
    try:
        w = weir([be.addr])
        s = socket.create_connection(("127.0.0.1", w.port), timeout=10)
        s.sendall(UPGRADE)
        assert read_until(s, b"\r\n\r\n").startswith(b"HTTP/1.1 101")
        s.shutdown(socket.SHUT_WR)  # client half-closes: the backend ends its loop
        deadline = time.monotonic() + 5
        data = b"x"
        while data and time.monotonic() < deadline:
            data = s.recv(4096)
        assert data == b"", "the client side was not closed after the backend closed"
        s.close()
    finally:
        be.close()
