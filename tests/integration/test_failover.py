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
def proxy(weir_toml):
    return weir_toml


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


# ---------------------------------------------------------------------------
# retry_on: timeouts and statuses


def hanging(seconds=5.0):
    """A handler that reads the request and never answers (until seconds)."""
    def handle(conn, req):
        time.sleep(seconds)
        return "close"
    return handle


UPSTREAM = """
[servers.s]
addr = "127.0.0.1:@PORT@"
locations = ["l"]
access_log = "{method} {status} {termination} {upstream_addr} {request_id}"
access_log_file = "@LOG@"
[locations.l]
upstream = "u"
[upstreams.u]
addrs = [%(addrs)s]
max_fails = 0
read_timeout = "1s"
%(extra)s
"""


def up(proxy, tmp_path, backends, extra=""):
    addrs = ", ".join('"%s"' % b.addr for b in backends)
    text = UPSTREAM % {"addrs": addrs, "extra": extra}
    return proxy(text.replace("@LOG@", str(tmp_path / "access.log")))


def req(port, method="GET", path="/", headers=()):
    hs = "".join("%s: %s\r\n" % kv for kv in headers)
    return B.request(port, ("%s %s HTTP/1.1\r\nHost: t\r\n%sConnection: close\r\n\r\n"
                            % (method, path, hs)).encode(), method)


def log_lines(tmp_path, n):
    path = tmp_path / "access.log"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= n:
            return lines
        time.sleep(0.02)
    raise AssertionError("fewer than %d access log lines" % n)


def test_timeout_is_retried_for_idempotent_methods(proxy, backend, tmp_path):
    slow, fine = backend(hanging()), backend(B.fixed(b"fine\n"))
    w = up(proxy, tmp_path, [slow, fine])
    for i in range(4):
        r = req(w.port, headers=[("X-Request-Id", "t-%d" % i)])
        assert r.status == 200 and r.body == b"fine\n", (i, r.status)
    err = w.stderr()
    lines = [l for l in err.splitlines() if "no response within read_timeout" in l]
    assert lines and all(slow.addr in l and "retrying" in l for l in lines), err
    assert any("request t-" in l for l in lines), err


def test_timeout_not_retried_for_post_by_default(proxy, backend, tmp_path):
    slow, fine = backend(hanging()), backend(B.fixed(b"fine\n"))
    w = up(proxy, tmp_path, [slow, fine])
    statuses = sorted(req(w.port, "POST").status for _ in range(4))
    assert statuses == [200, 200, 504, 504], statuses
    assert "retrying" not in w.stderr()


def test_retry_on_non_idempotent_retries_post(proxy, backend, tmp_path):
    slow, fine = backend(hanging()), backend(B.fixed(b"fine\n"))
    w = up(proxy, tmp_path, [slow, fine],
           'retry_on = ["connect", "reset", "timeout", "non_idempotent"]')
    statuses = [req(w.port, "POST").status for _ in range(4)]
    assert statuses == [200] * 4, statuses


def test_last_timeout_is_a_504(proxy, backend, tmp_path):
    a, b = backend(hanging()), backend(hanging())
    w = up(proxy, tmp_path, [a, b])
    r = req(w.port)
    assert r.status == 504
    assert "retrying" in w.stderr()
    assert log_lines(tmp_path, 1)[0].startswith("GET 504 sH ")


def test_retry_timeout_is_a_budget(proxy, backend, tmp_path):
    a, b = backend(hanging()), backend(B.fixed(b"fine\n"))
    w = up(proxy, tmp_path, [a, b], 'retry_timeout = "500ms"')
    statuses = sorted(req(w.port).status for _ in range(4))
    # The first attempt's 1 s timeout already spent the 500 ms budget.
    assert statuses == [200, 200, 504, 504], statuses


def test_max_retries_counts_every_kind(proxy, backend, tmp_path):
    bs = [backend(hanging()) for _ in range(3)] + [backend(B.fixed(b"fine\n"))]
    w = up(proxy, tmp_path, bs, "max_retries = 1")
    r = req(w.port)
    # Round robin starts at a hanging backend: two attempts at most.
    assert r.status in (200, 504)
    attempts = [l for l in w.stderr().splitlines() if "attempt" in l]
    assert len(attempts) <= 2, attempts


def test_retry_on_503_goes_elsewhere(proxy, backend, tmp_path):
    busy = backend(B.fixed(b"busy\n", status=503))
    fine = backend(B.fixed(b"fine\n"))
    w = up(proxy, tmp_path, [busy, fine], 'retry_on = ["connect", "reset", "503"]')
    for _ in range(4):
        r = req(w.port)
        assert r.status == 200 and r.body == b"fine\n"
    assert busy.request_count() >= 1


def test_503_passes_through_without_retry_on(proxy, backend, tmp_path):
    busy = backend(B.fixed(b"busy\n", status=503))
    fine = backend(B.fixed(b"fine\n"))
    w = up(proxy, tmp_path, [busy, fine])
    statuses = sorted(req(w.port).status for _ in range(4))
    assert statuses == [200, 200, 503, 503]


def test_every_backend_503_gives_the_last_503(proxy, backend, tmp_path):
    a = backend(B.fixed(b"a busy\n", status=503))
    b = backend(B.fixed(b"b busy\n", status=503))
    w = up(proxy, tmp_path, [a, b], 'retry_on = ["503"]')
    r = req(w.port)
    assert r.status == 503 and r.body in (b"a busy\n", b"b busy\n")
    assert a.request_count() + b.request_count() == 2


# ---------------------------------------------------------------------------
# How a request ended


def truncated(conn, req):
    conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
    return "close"


def bad_chunk(conn, req):
    conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\n")
    return "close"


@pytest.mark.parametrize("handler,why", [(truncated, "truncated body"),
                                         (bad_chunk, "invalid response body framing")])
def test_truncated_response_is_a_backend_failure(proxy, backend, tmp_path, handler, why):
    from conftest import free_port as fp
    aport = fp()
    b = backend(handler)
    text = UPSTREAM % {"addrs": '"%s"' % b.addr, "extra": ""}
    text = '[admin]\naddr = "127.0.0.1:%d"\n' % aport + text
    w = proxy(text.replace("@LOG@", str(tmp_path / "access.log")))
    s = B.connect(w.port)
    s.sendall(b"GET /cut HTTP/1.1\r\nHost: t\r\nX-Request-Id: cut-1\r\n\r\n")
    got = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            got += d
    except OSError:
        pass
    s.close()
    # Whatever reached the client is cut short (the head and part of the
    # body, or nothing when the error came in the same read as the head).
    assert got == b"" or got.startswith(b"HTTP/1.1 200"), got
    line = log_lines(tmp_path, 1)[0]
    assert line.startswith("GET 200 SD %s cut-1" % b.addr), line
    err = [l for l in w.stderr().splitlines() if "cut-1" in l]
    assert err and why in err[0] and b.addr in err[0] and "client 127.0.0.1" in err[0], err
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", aport, timeout=10)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    c.close()
    assert 'weir_requests_terminated_total{server="s",upstream="u",termination="SD"} 1' in text
    fails = [l for l in text.splitlines() if l.startswith("weir_backend_failures_total")]
    assert fails and fails[0].endswith(" 1"), fails


def test_client_abort_before_response_is_499(proxy, backend, tmp_path):
    slow = backend(hanging(2.0))
    w = up(proxy, tmp_path, [slow])
    s = B.connect(w.port)
    s.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\nX-Request-Id: gone-1\r\n\r\n")
    assert slow.wait_requests(1)
    s.close()
    line = log_lines(tmp_path, 1)[0]
    assert line.startswith("GET 499 CH ") and line.endswith("gone-1"), line


def test_a_sole_backend_is_not_ejected_by_a_burst_of_resets(proxy, backend):
    """Right after a handover, a healthy sole backend reset three
    connections and was ejected for 10 s: every request got 503. Alone in
    its upstream, a backend is never ejected (nginx's rule); the next
    requests reach it."""
    seen = {"n": 0}

    def flaky(conn, req):
        seen["n"] += 1
        if seen["n"] <= 3:
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                 b"\x01\x00\x00\x00\x00\x00\x00\x00")
            return "close"
        conn.send(B.response_head(200, [("Content-Length", "3")]) + b"ok\n")

    import socket
    b = backend(flaky)
    w = proxy("""
[servers.s]
addr = "127.0.0.1:@PORT@"
locations = ["l"]
[locations.l]
upstream = "u"
[upstreams.u]
addrs = ["@B@"]
""", B=b)
    statuses = [req(w.port).status for _ in range(5)]
    assert statuses == [502, 502, 502, 200, 200], statuses
    assert "ejected" in w.stderr()  # the breaker still opens and says so
