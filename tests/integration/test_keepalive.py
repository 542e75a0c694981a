"""Connection reuse on both sides, and pipelining."""
import time

import backends as B


def test_upstream_keepalive_single_worker(backend, weir):
    b = backend(B.fixed(b"ka\n"))
    w = weir([b], threads=1)
    for i in range(50):
        r = B.get(w.port, "/ka/%d" % i)  # a new client connection each time
        assert r.status == 200 and r.body == b"ka\n"
    assert b.request_count() == 50
    assert b.connections == 1, "backend saw %d TCP connections" % b.connections


def test_upstream_keepalive_two_workers(backend, weir):
    b = backend(B.fixed(b"ka\n"))
    w = weir([b], threads=2)
    for i in range(50):
        assert B.get(w.port, "/ka/%d" % i).status == 200
    assert b.connections <= 2, "backend saw %d TCP connections" % b.connections


def test_client_keepalive_many_requests_one_connection(backend, weir):
    b = backend(B.fixed(b"same\n"))
    w = weir([b], threads=1)
    s = B.connect(w.port)
    rd = B.Reader(s)
    for i in range(200):
        s.sendall(b"GET /seq/%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
        r = B.read_response(rd)
        assert r.status == 200 and r.body == b"same\n"
        assert r.headers.get("Connection", "").lower() != "close"
    s.close()
    assert [q.path for q in b.requests] == ["/seq/%d" % i for i in range(200)]
    assert b.connections == 1


def test_client_keepalive_http10(backend, weir):
    b = backend(B.fixed(b"ten\n"))
    w = weir([b])
    s = B.connect(w.port)
    rd = B.Reader(s)
    for _ in range(3):
        s.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        r = B.read_response(rd)
        assert r.status == 200 and r.body == b"ten\n"
    # Without keep-alive, an HTTP/1.0 exchange ends with a close.
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    r = B.read_response(rd)
    assert r.body == b"ten\n"
    assert B.closed_after(s, 5)
    s.close()


def test_connection_close_honoured(backend, weir):
    b = backend()
    w = weir([b])
    s = B.connect(w.port)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    r = B.read_response(B.Reader(s))
    assert r.status == 200
    assert B.closed_after(s, 5)
    s.close()


def test_keepalive_timeout_closes_idle_client(backend, weir):
    b = backend()
    w = weir([b], "--keepalive-timeout", "300")
    s = B.connect(w.port)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert B.read_response(B.Reader(s)).status == 200
    t0 = time.monotonic()
    assert B.closed_after(s, 5), "idle connection not closed"
    assert time.monotonic() - t0 < 3
    s.close()


def test_pipelining_in_order(backend, weir):
    def handler(conn, req):
        body = ("path=%s\n" % req.path).encode()
        if req.path == "/slow":
            time.sleep(0.3)  # a slow first response must not let later ones overtake it
        conn.send(B.response_head(200, [("Content-Length", str(len(body)))]) + body)

    b = backend(handler)
    w = weir([b])
    s = B.connect(w.port)
    rd = B.Reader(s)
    paths = ["/slow", "/two", "/three", "/four", "/five"]
    s.sendall(b"".join(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % p.encode() for p in paths))
    got = [B.read_response(rd).body for _ in paths]
    s.close()
    assert got == [("path=%s\n" % p).encode() for p in paths]


def test_pipelining_with_bodies(backend, weir):
    b = backend(B.echo())
    w = weir([b], threads=1)
    s = B.connect(w.port)
    rd = B.Reader(s)
    bodies = [b"first", b"second body", b"x" * 20000, b"last"]
    raw = b""
    for i, body in enumerate(bodies):
        raw += b"POST /p%d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (i, len(body), body)
    raw += b"GET /end HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    s.sendall(raw)
    for body in bodies:
        r = B.read_response(rd)
        assert r.status == 200 and r.body == body
    r = B.read_response(rd)
    assert r.status == 200 and r.body == b""
    assert B.closed_after(s, 5)
    s.close()
    assert [q.path for q in b.requests] == ["/p0", "/p1", "/p2", "/p3", "/end"]
