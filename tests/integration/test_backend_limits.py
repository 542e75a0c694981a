"""max_conns and queue_timeout: weir opens at most max_conns connections
to a backend (pooled idle ones included) and queues the requests beyond,
in order, instead of piling connections onto a backend that cannot take
them (issue: "Availability under faults", backend protection).
"""
import asyncio
import socket
import threading
import time

import pytest

import backends as B
from conftest import binary, free_port, require_binary


@pytest.fixture
def proxy(weir_toml):
    return weir_toml


def config(addr, extra):
    return """
[servers.s]
addr = "127.0.0.1:@PORT@"
locations = ["l"]
[locations.l]
upstream = "u"
[upstreams.u]
addrs = ["%s"]
max_fails = 0
%s
""" % (addr, extra)


class PreforkBackend:
    """A backend like a prefork server: `workers` threads, each serving one
    keep-alive connection at a time, and a small accept backlog, so that
    connections beyond the workers wait unanswered. Records the peak of
    connections being served at once."""

    def __init__(self, workers, delay=0.0, backlog=8):
        self.sock = B.listen_socket(backlog=backlog)
        self.addr = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.delay = delay
        self.lock = threading.Lock()
        self.active = self.peak = self.accepted = self.served = 0
        self.stop = False
        self.threads = [threading.Thread(target=self.worker, daemon=True) for _ in range(workers)]
        for t in self.threads:
            t.start()

    def worker(self):
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
                self.active += 1
                self.peak = max(self.peak, self.active)
            try:
                c.settimeout(10)
                rd = B.Reader(c)
                while True:
                    head = rd.read_head()
                    hs = B.Headers(B.parse_headers(head[1:]))
                    n = int(hs.get("Content-Length") or 0)
                    if n:
                        rd.read_exact(n)
                    if self.delay:
                        time.sleep(self.delay)
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
                    with self.lock:
                        self.served += 1
            except (OSError, B.PeerClosed, ValueError):
                pass
            finally:
                c.close()
                with self.lock:
                    self.active -= 1

    def close(self):
        self.stop = True
        self.sock.close()


async def one(port, sem=None):
    try:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        await w.drain()
        data = await asyncio.wait_for(r.read(), 60)
        w.close()
        return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else repr(data[:40])
    except Exception as e:  # noqa: BLE001 - every failure is counted
        return repr(e)


def burst(port, n):
    async def run():
        return await asyncio.gather(*(one(port) for _ in range(n)))
    return asyncio.run(run())


def test_a_thousand_requests_to_twenty_workers_all_succeed(proxy):
    """Without max_conns, weir opened a connection per request and those
    beyond the backend's workers timed out behind pooled idle ones; with
    max_conns = the workers, every request is served in turn."""
    b = PreforkBackend(workers=20, delay=0.01)
    try:
        w = proxy(config(b.addr, 'max_conns = 20\nqueue_timeout = "30s"\nread_timeout = "5s"'))
        results = burst(w.port, 1000)
        bad = [r for r in results if r != 200]
        assert not bad, (len(bad), bad[:5])
        assert b.peak <= 20 and b.accepted <= 20, (b.peak, b.accepted)
    finally:
        b.close()


def test_queue_timeout_is_503_with_retry_after(proxy, backend):
    gate = threading.Event()

    def slow(conn, req):
        gate.wait(5)
        conn.send(B.response_head(200, [("Content-Length", "3")]) + b"ok\n")

    b = backend(slow)
    w = proxy(config(b.addr, 'max_conns = 1\nqueue_timeout = "300ms"'))
    first = {}
    t = threading.Thread(target=lambda: first.setdefault("r", B.get(w.port, "/1")))
    t.start()
    assert b.wait_requests(1)
    t0 = time.monotonic()
    r = B.get(w.port, "/2")
    took = time.monotonic() - t0
    assert r.status == 503 and r.headers.get("Retry-After") == "1", r.status
    assert took < 4, took  # the queue timeout, not the backend, answered
    gate.set()
    t.join(10)
    assert first["r"].status == 200
    assert b.request_count() == 1
    assert "queue_timeout" in w.stderr()


def test_queued_requests_are_served_in_order(proxy, backend):
    order = []

    def record(conn, req):
        order.append(req.path)
        time.sleep(0.05)
        conn.send(B.response_head(200, [("Content-Length", "3")]) + b"ok\n")

    b = backend(record)
    w = proxy(config(b.addr, "max_conns = 1"), threads=1)
    threads = []
    for i in range(6):
        t = threading.Thread(target=B.get, args=(w.port, "/q%d" % i))
        t.start()
        threads.append(t)
        time.sleep(0.01)
    for t in threads:
        t.join(20)
    assert order == ["/q%d" % i for i in range(6)], order
    assert b.connections == 1, "one connection, reused in turn"


def test_client_gone_while_queued_frees_its_place(proxy, backend):
    gate = threading.Event()

    def slow(conn, req):
        if req.path == "/hold":
            gate.wait(5)
        conn.send(B.response_head(200, [("Content-Length", "3")]) + b"ok\n")

    b = backend(slow)
    w = proxy(config(b.addr, 'max_conns = 1\nqueue_timeout = "10s"'))
    holder = threading.Thread(target=B.get, args=(w.port, "/hold"))
    holder.start()
    assert b.wait_requests(1)
    s = B.connect(w.port)
    s.sendall(b"GET /gone HTTP/1.1\r\nHost: t\r\n\r\n")
    time.sleep(0.2)
    s.close()
    gate.set()
    holder.join(10)
    r = B.get(w.port, "/after")
    assert r.status == 200
