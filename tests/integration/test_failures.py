"""Upstream failures and client aborts."""
import socket
import subprocess
import time

import backends as B
from conftest import closed_port


def dead_upstream():
    return "127.0.0.1:%d" % closed_port()


def test_502_when_upstream_refuses(weir):
    w = weir([dead_upstream()])
    t0 = time.monotonic()
    r = B.get(w.port, "/x")
    assert r.status == 502
    assert r.body == b"502 Bad Gateway\n"
    assert time.monotonic() - t0 < 5


def test_502_on_keepalive_connection_then_recovers(weir):
    w = weir([dead_upstream()])
    s = B.connect(w.port)
    rd = B.Reader(s)
    for _ in range(3):  # a 502 does not need to cost the client its connection
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        r = B.read_response(rd)
        assert r.status == 502
        if r.headers.get("Connection", "").lower() == "close":
            break
    s.close()


def test_retry_on_the_other_upstream(backend, weir):
    b = backend(B.fixed(b"alive\n"))
    w = weir([dead_upstream(), b], threads=1)
    for i in range(10):
        r = B.get(w.port, "/r%d" % i)
        assert r.status == 200 and r.body == b"alive\n"
    assert b.request_count() == 10


def test_all_upstreams_dead_is_502(weir, tmp_path):
    w = weir([dead_upstream(), dead_upstream(), dead_upstream()])
    for _ in range(3):
        r = B.get(w.port, "/")
        assert r.status == 502 and r.body == b"502 Bad Gateway\n"


def test_502_on_garbage_response(backend, weir):
    def handler(conn, req):
        conn.send(b"THIS IS NOT HTTP\r\n\r\n")
        return "close"

    b = backend(handler)
    w = weir([b])
    r = B.get(w.port, "/g")
    assert r.status == 502


def test_504_on_upstream_read_timeout(backend, weir):
    def handler(conn, req):
        if req.path == "/slow":
            return B.slow(3.0, b"stale\n")(conn, req)
        return B.fixed(b"fresh\n")(conn, req)

    b = backend(handler)
    w = weir([b], "--read-timeout", "500", threads=1)
    t0 = time.monotonic()
    r = B.get(w.port, "/slow")
    took = time.monotonic() - t0
    assert r.status == 504
    assert r.body == b"504 Gateway Timeout\n"
    assert 0.4 <= took < 2.5, took
    # The timed-out upstream connection must not be reused for the next one.
    r = B.get(w.port, "/fast")
    assert r.status == 200 and r.body == b"fresh\n"
    assert b.last().conn_id != b.requests[0].conn_id


def test_upstream_closes_mid_response_curl(backend, weir, tmp_path):
    b = backend(B.close_mid(announced=1000000, sent=100000))
    w = weir([b])
    res = subprocess.run(["curl", "-sS", "--max-time", "10", "-o", str(tmp_path / "out"),
                          "http://127.0.0.1:%d/cut" % w.port], capture_output=True, timeout=20)
    # 18: partial file; 56: failure receiving (reset).
    assert res.returncode in (18, 56), (res.returncode, res.stderr)


def test_upstream_closes_mid_response_raw(backend, weir):
    b = backend(B.close_mid(announced=1000000, sent=100000))
    w = weir([b])
    s = B.connect(w.port, timeout=10)
    s.sendall(b"GET /cut HTTP/1.1\r\nHost: x\r\n\r\n")
    rd = B.Reader(s)
    head = rd.read_head()
    assert head[0].startswith(b"HTTP/1.1 200")
    try:
        got = rd.read_to_eof()
    except ConnectionResetError:
        got = None
    s.close()
    assert got is None or len(got) < 1000000


def test_upstream_closes_mid_chunked_response(backend, weir, tmp_path):
    b = backend(B.close_mid_chunked(sent=50000))
    w = weir([b])
    s = B.connect(w.port, timeout=10)
    s.sendall(b"GET /cutchunk HTTP/1.1\r\nHost: x\r\n\r\n")
    rd = B.Reader(s)
    head = rd.read_head()
    assert head[0].startswith(b"HTTP/1.1 200")
    try:
        rest = rd.read_to_eof()
    except ConnectionResetError:
        rest = b""
    s.close()
    # Never a clean terminator that would make a truncated body look complete.
    assert not rest.endswith(b"0\r\n\r\n"), rest[-50:]
    res = subprocess.run(["curl", "-sS", "--max-time", "10", "-o", str(tmp_path / "out"),
                          "http://127.0.0.1:%d/cutchunk" % w.port], capture_output=True,
                         timeout=20)
    assert res.returncode in (18, 56), (res.returncode, res.stderr)


def test_client_abort_closes_upstream_and_is_not_reused(backend, weir):
    def handler(conn, req):
        if req.path == "/slow":
            return B.slow(5.0, b"late\n")(conn, req)
        return B.fixed(b"quick\n")(conn, req)

    b = backend(handler)
    w = weir([b], threads=1)
    # Warm up a pooled connection, so reuse would be possible.
    assert B.get(w.port, "/warm").body == b"quick\n"
    s = B.connect(w.port)
    s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b.wait_requests(2, 5)
    slow_conn = b.last().conn_id
    time.sleep(0.2)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()  # reset
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and slow_conn not in b.closed_by_peer:
        time.sleep(0.02)
    assert slow_conn in b.closed_by_peer, "proxy kept the upstream connection of an aborted request"
    r = B.get(w.port, "/next")
    assert r.status == 200 and r.body == b"quick\n"
    assert b.last().conn_id != slow_conn


def test_client_abort_with_fin_while_waiting(backend, weir):
    def handler(conn, req):
        if req.path == "/slow":
            return B.slow(5.0, b"late\n")(conn, req)
        return B.fixed(b"quick\n")(conn, req)

    b = backend(handler)
    w = weir([b], threads=1)
    s = B.connect(w.port)
    s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b.wait_requests(1, 5)
    slow_conn = b.last().conn_id
    s.close()  # FIN
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and slow_conn not in b.closed_by_peer:
        time.sleep(0.02)
    assert slow_conn in b.closed_by_peer
    r = B.get(w.port, "/next")
    assert r.status == 200 and r.body == b"quick\n"
    assert b.last().conn_id != slow_conn


def test_upstream_closed_idle_pooled_connection(backend, weir):
    """The backend closes a pooled keep-alive connection; the next request
    must not fail."""
    def handler(conn, req):
        B.fixed(b"once\n")(conn, req)
        conn.close_after = True

    b = backend(handler)
    w = weir([b], threads=1)
    for _ in range(5):
        r = B.get(w.port, "/")
        assert r.status == 200 and r.body == b"once\n"
        time.sleep(0.1)
    assert b.connections == 5
