"""Plain proxying: a GET, round-robin, forwarded headers, bodiless responses,
the access log."""
import re
import subprocess
import time

import backends as B


def test_get_through_proxy(backend, weir):
    b = backend(B.fixed(b"hello from backend\n"))
    w = weir([b])
    r = B.get(w.port, "/some/path?x=1")
    assert r.status == 200
    assert r.body == b"hello from backend\n"
    req = b.last()
    assert req.method == "GET"
    assert req.path == "/some/path?x=1"


def test_post_body_arrives(backend, weir):
    b = backend(B.echo())
    w = weir([b])
    body = b"a=1&b=2" * 1000
    raw = (b"POST /submit HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
           b"Content-Type: application/x-www-form-urlencoded\r\nConnection: close\r\n\r\n"
           % len(body)) + body
    r = B.request(w.port, raw)
    assert r.status == 200
    assert r.body == body
    assert b.last().body == body
    assert b.last().headers.get("Content-Type") == "application/x-www-form-urlencoded"


def test_round_robin_spread(backend, weir):
    b1 = backend(B.fixed(b"one\n"))
    b2 = backend(B.fixed(b"two\n"))
    w = weir([b1, b2], threads=2)
    bodies = []
    for i in range(100):
        bodies.append(B.get(w.port, "/rr/%d" % i).body)
    assert bodies.count(b"one\n") == 50
    assert bodies.count(b"two\n") == 50
    # Strict alternation: consecutive requests never hit the same backend.
    assert all(bodies[i] != bodies[i + 1] for i in range(len(bodies) - 1))
    assert b1.request_count() == 50 and b2.request_count() == 50


def test_round_robin_on_one_client_connection(backend, weir):
    b1 = backend(B.fixed(b"one\n"))
    b2 = backend(B.fixed(b"two\n"))
    w = weir([b1, b2], threads=1)
    s = B.connect(w.port)
    rd = B.Reader(s)
    got = []
    for i in range(20):
        s.sendall(b"GET /k%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
        got.append(B.read_response(rd).body)
    s.close()
    assert got.count(b"one\n") == 10 and got.count(b"two\n") == 10


def test_forwarded_headers(backend, weir):
    b = backend()
    w = weir([b])
    raw = (b"GET /h HTTP/1.1\r\nHost: example.test:8080\r\nX-Forwarded-For: 203.0.113.7\r\n"
           b"X-Custom: kept\r\nConnection: close\r\n\r\n")
    r = B.request(w.port, raw)
    assert r.status == 200
    h = b.last().headers
    assert h.get("X-Custom") == "kept"
    xff = h.get_all("X-Forwarded-For")
    assert len(xff) == 1, xff
    assert [p.strip() for p in xff[0].split(",")] == ["203.0.113.7", "127.0.0.1"]
    assert h.get("X-Real-IP") == "127.0.0.1"
    assert h.get("X-Forwarded-Proto") == "http"
    assert h.get("Via") == "1.1 weir"


def test_host_preserved_and_xff_added(backend, weir):
    b = backend()
    w = weir([b])
    raw = b"GET /host HTTP/1.1\r\nHost: Example.TEST:8080\r\nConnection: close\r\n\r\n"
    r = B.request(w.port, raw)
    assert r.status == 200
    h = b.last().headers
    assert h.get_all("Host") == ["Example.TEST:8080"]
    assert h.get("X-Forwarded-For") == "127.0.0.1"
    assert h.get("X-Real-IP") == "127.0.0.1"


def test_via_appended_to_existing(backend, weir):
    b = backend()
    w = weir([b])
    raw = b"GET / HTTP/1.1\r\nHost: x\r\nVia: 1.0 fred\r\nConnection: close\r\n\r\n"
    assert B.request(w.port, raw).status == 200
    vias = ", ".join(b.last().headers.get_all("Via"))
    assert [v.strip() for v in vias.split(",")] == ["1.0 fred", "1.1 weir"]


def test_hop_by_hop_removed(backend, weir):
    b = backend()
    w = weir([b])
    raw = (b"GET /hop HTTP/1.1\r\nHost: x\r\n"
           b"Connection: keep-alive, Foo, X-Bar\r\n"
           b"Foo: secret\r\nX-Bar: also\r\nX-Keep: yes\r\n"
           b"Keep-Alive: timeout=5\r\nTE: trailers\r\nTrailer: X-T\r\n"
           b"Upgrade: websocket\r\nProxy-Connection: keep-alive\r\n"
           b"Proxy-Authorization: Basic Zm9vOmJhcg==\r\n\r\n")
    s = B.connect(w.port)
    s.sendall(raw)
    r = B.read_response(B.Reader(s))
    s.close()
    assert r.status == 200
    h = b.last().headers
    for name in ("Foo", "X-Bar", "Keep-Alive", "TE", "Trailer", "Upgrade",
                 "Proxy-Connection", "Proxy-Authorization"):
        assert not h.has(name), "%s forwarded: %r" % (name, h)
    for v in h.get_all("Connection"):
        assert "foo" not in v.lower() and "x-bar" not in v.lower()
    assert h.get("X-Keep") == "yes"


def test_hop_by_hop_removed_from_response(backend, weir):
    def handler(conn, req):
        conn.send(B.response_head(200, [("Content-Length", "3"), ("Connection", "X-Secret"),
                                        ("X-Secret", "1"), ("Keep-Alive", "timeout=1"),
                                        ("X-Visible", "1")]) + b"ok\n")

    b = backend(handler)
    w = weir([b])
    r = B.get(w.port, "/")
    assert r.status == 200 and r.body == b"ok\n"
    assert not r.headers.has("X-Secret")
    assert not r.headers.has("Keep-Alive")
    assert r.headers.get("X-Visible") == "1"


def test_head_has_no_body(backend, weir):
    b = backend(B.fixed(b"0123456789"))
    w = weir([b])
    s = B.connect(w.port)
    rd = B.Reader(s)
    s.sendall(b"HEAD /x HTTP/1.1\r\nHost: x\r\n\r\nGET /y HTTP/1.1\r\nHost: x\r\n\r\n")
    r1 = B.read_response(rd, "HEAD")
    r2 = B.read_response(rd)
    s.close()
    assert r1.status == 200
    assert r1.headers.get("Content-Length") == "10"
    assert r2.status == 200 and r2.body == b"0123456789"
    assert b.requests[0].method == "HEAD"


def test_204_and_304_without_body(backend, weir):
    b204 = backend(B.no_body(204))
    b304 = backend(B.no_body(304))
    w204 = weir([b204])
    w304 = weir([b304])
    for w, status in ((w204, 204), (w304, 304)):
        s = B.connect(w.port)
        rd = B.Reader(s)
        # Two on one connection: a body on the first would corrupt the second.
        s.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        r1 = B.read_response(rd)
        r2 = B.read_response(rd)
        assert r1.status == status and r2.status == status
        assert not r1.headers.has("Transfer-Encoding")
        s.settimeout(0.3)
        try:
            extra = s.recv(100)
        except OSError:
            extra = b""
        s.close()
        assert extra == b"", "bytes after a %d response: %r" % (status, extra)


def test_1xx_from_upstream_dropped(backend, weir):
    b = backend(B.interim((103, 102)))
    w = weir([b])
    s = B.connect(w.port)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = B.Reader(s).read_to_eof()
    s.close()
    assert data.startswith(b"HTTP/1.1 200"), data[:200]
    assert data.count(b"HTTP/1.1") == 1
    assert data.endswith(b"final\n")


def test_access_log(backend, weir, tmp_path):
    b = backend()
    log = tmp_path / "access.log"
    w = weir([b], "--access-log", str(log))
    assert B.get(w.port, "/logged/one").status == 200
    raw = b"POST /logged/two HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
    assert B.request(w.port, raw).status == 200
    # The sink is asynchronous: wait for both lines.
    deadline = time.monotonic() + 5
    lines = []
    while time.monotonic() < deadline:
        lines = log.read_text().splitlines() if log.exists() else []
        if len(lines) >= 2:
            break
        time.sleep(0.05)
    assert len(lines) == 2, lines
    # Each worker writes its own lines: two requests on two connections may
    # be logged in either order.
    lines.sort(key=lambda l: "POST" in l)
    for line, method, path in zip(lines, ("GET", "POST"), ("/logged/one", "/logged/two")):
        assert line.startswith("127.0.0.1 "), line
        assert re.search(r'"%s %s HTTP/1\.1" 200 ' % (method, re.escape(path)), line), line
        assert b.addr in line, line


def test_access_log_records_502(weir, tmp_path):
    from conftest import closed_port
    up = "127.0.0.1:%d" % closed_port()
    log = tmp_path / "access.log"
    w = weir([up], "--access-log", str(log))
    assert B.get(w.port, "/nobody").status == 502
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not (log.exists() and log.read_text()):
        time.sleep(0.05)
    line = log.read_text().splitlines()[0]
    assert '"GET /nobody HTTP/1.1" 502 ' in line and up in line, line


def test_curl_basic(backend, weir):
    b = backend(B.fixed(b"curl ok\n"))
    w = weir([b])
    out = subprocess.run(["curl", "-sS", "--max-time", "10", "-D", "-",
                          "http://127.0.0.1:%d/c" % w.port],
                         capture_output=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(b"HTTP/1.1 200")
    assert out.stdout.endswith(b"\r\n\r\ncurl ok\n")
