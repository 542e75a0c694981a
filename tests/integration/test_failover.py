"""Failover under load: while any backend is healthy, no request fails
(issue: "Availability under faults"). Keep-alive clients on several
threads, so both workers select backends at the same time, for long
enough to cross the breaker's open and half-open windows; every non-2xx
answer and every socket error is counted.
"""
import threading
import time

import pytest

import backends as B
from conftest import binary, free_port, require_binary


@pytest.fixture
def proxy(tmp_path, start_proc):
    def start(text, threads=2, **addrs):
        require_binary("weir")
        port = free_port()
        text = text.replace("@PORT@", str(port))
        for name, b in addrs.items():
            text = text.replace("@%s@" % name, b if isinstance(b, str) else b.addr)
        path = tmp_path / "weir.toml"
        path.write_text(text)
        return start_proc([binary("weir"), "-c", str(path), "--threads", str(threads)], port,
                          "weir")

    return start


class Load:
    """n keep-alive clients sending GETs until stopped (bounded by
    max_requests each); counts statuses and socket errors."""

    def __init__(self, port, n=8, path="/", max_requests=20000, method="GET", body=None):
        self.port, self.path, self.method, self.body = port, path, method, body
        self.max_requests = max_requests
        self.lock = threading.Lock()
        self.statuses = {}
        self.errors = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(n)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def one(self, sock, rd):
        hs = "Host: t\r\n"
        payload = b""
        if self.body is not None:
            hs += "Content-Length: %d\r\n" % len(self.body)
            payload = self.body
        sock.sendall(("%s %s HTTP/1.1\r\n%s\r\n" % (self.method, self.path, hs)).encode()
                     + payload)
        return B.read_response(rd, self.method)

    def run(self):
        sock = rd = None
        for _ in range(self.max_requests):
            if self.stop.is_set():
                break
            try:
                if sock is None:
                    sock = B.connect(self.port, timeout=10)
                    rd = B.Reader(sock)
                r = self.one(sock, rd)
                with self.lock:
                    self.statuses[r.status] = self.statuses.get(r.status, 0) + 1
                if (r.headers.get("Connection") or "").lower() == "close":
                    sock.close()
                    sock = None
            except (OSError, B.PeerClosed, ValueError) as e:
                with self.lock:
                    self.errors.append(repr(e))
                if sock:
                    sock.close()
                sock = None
        if sock:
            sock.close()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(30)
        return self

    def failures(self):
        bad = {s: n for s, n in self.statuses.items() if not 200 <= s < 300}
        return bad, self.errors

    def total(self):
        return sum(self.statuses.values())


def test_no_503_while_a_backend_is_up_round_robin(proxy, backend):
    """The dead backend holds ten of eleven round-robin slots: with both
    workers taking turns at once, a pick used to be dealt only dead slots
    and answer 503 with the healthy backend up."""
    dead, alive = backend(B.fixed(b"dead\n")), backend(B.fixed(b"alive\n"))
    w = proxy("""
[servers.s]
addr = "127.0.0.1:@PORT@"
locations = ["l"]
[locations.l]
upstream = "u"
[upstreams.u]
addrs = ["@D@ 10", "@A@ 1"]
fail_timeout = "1s"
""", D=dead, A=alive)
    load = Load(w.port, n=8).start()
    time.sleep(1.0)
    dead.close()
    time.sleep(6.0)  # several open -> half-open -> open cycles of the breaker
    load.finish()
    bad, errors = load.failures()
    assert not bad and not errors, (bad, errors[:5], load.total())
    assert load.total() > 500


def test_no_errors_when_a_backend_dies_without_breaker(proxy, backend):
    """max_fails = 0: every request tries the dead backend first in its turn
    and must be retried elsewhere, connect failures and resets alike."""
    a, b = backend(B.fixed(b"a\n")), backend(B.fixed(b"b\n"))
    w = proxy("""
[servers.s]
addr = "127.0.0.1:@PORT@"
locations = ["l"]
[locations.l]
upstream = "u"
[upstreams.u]
addrs = ["@A@", "@B@"]
max_fails = 0
max_retries = 2
""", A=a, B=b)
    load = Load(w.port, n=8).start()
    time.sleep(1.0)
    a.close()  # refuses new connections and resets the pooled ones
    time.sleep(4.0)
    load.finish()
    bad, errors = load.failures()
    assert not bad and not errors, (bad, errors[:5], load.total())
