"""Generated bodies that stream (weir_session_respond_stream) and files
(weir_session_respond_file), through tests/tools' weir-test-app: framing,
back-pressure with a client that does not read, a producer that pauses or
fails, a client that leaves mid-body, HEAD, and the file descriptor closed
as soon as the body is sent or abandoned."""
import os
import socket
import time

import pytest

import backends as B
from conftest import free_port, require_binary


def pattern(n, piece):
    one = bytes(ord("0") + i % 10 for i in range(piece))
    return one * n


@pytest.fixture
def app(backend, start_proc):
    path = require_binary("weir-test-app")
    b = backend(B.fixed(b"proxied\n"))
    port = free_port()
    return start_proc([path, "127.0.0.1:%d" % port, b.addr], port, "weir-test-app")


def stats(p):
    body = B.get(p.port, "/gen-stats").body.decode()
    words = body.split()
    return {words[i]: int(words[i + 1]) for i in range(0, len(words), 2)}


def wait_stats(p, key, value, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        st = stats(p)
        if st[key] == value or time.monotonic() > deadline:
            return st
        time.sleep(0.02)


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_stream_unknown_length_is_chunked(app):
    r = B.get(app.port, "/stream?n=5&piece=1000")
    assert r.status == 200 and r.framing == "chunked"
    assert r.body == pattern(5, 1000)
    assert wait_stats(app, "complete", 1)["done"] == 1


def test_stream_known_length_has_content_length(app):
    r = B.get(app.port, "/stream?n=3&piece=70000&known=1")
    assert r.status == 200 and r.framing == "length"
    assert r.headers.get("Content-Length") == str(3 * 70000)
    assert r.body == pattern(3, 70000)


def test_stream_http10_ends_with_close(app):
    r = B.request(app.port, b"GET /stream?n=4&piece=10 HTTP/1.0\r\n\r\n")
    assert r.status == 200 and r.framing == "close" and r.body == pattern(4, 10)


def test_stream_keep_alive_after_it(app):
    s = B.connect(app.port)
    rd = B.Reader(s)
    for i in range(3):
        s.sendall(b"GET /stream?n=2&piece=5000 HTTP/1.1\r\nHost: x\r\n\r\n")
        r = B.read_response(rd)
        assert r.status == 200 and r.body == pattern(2, 5000)
    s.sendall(b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
    assert B.read_response(rd).body == b"proxied\n"
    s.close()


def test_stream_pieces_go_out_before_the_producer_finishes(app):
    """A producer that waits (WEIR_AGAIN) between pieces: what it made is
    with the client before it makes the next (server-sent events)."""
    s = B.connect(app.port, timeout=10)
    s.sendall(b"GET /stream?n=3&piece=100&pause=400 HTTP/1.1\r\nHost: x\r\n\r\n")
    rd = B.Reader(s)
    head = rd.read_head()
    assert b"200" in head[0]
    size = int(rd.readline().strip(), 16)
    assert size == 100 and rd.read_exact(100) == pattern(1, 100)
    rd.readline()
    # The second piece is not made yet: the end of the body is not here.
    s.settimeout(0.1)
    with pytest.raises(socket.timeout):
        extra = s.recv(1)
        assert False, "more than the first piece arrived at once: %r" % extra
    s.settimeout(10)
    body = B.read_chunked(rd)[0]
    assert body == pattern(2, 100)
    s.close()


def test_stream_failure_cuts_the_response(app):
    s = B.connect(app.port)
    s.sendall(b"GET /stream?n=10&piece=1000&fail=3 HTTP/1.1\r\nHost: x\r\n\r\n")
    rd = B.Reader(s)
    rd.read_head()
    with pytest.raises((B.PeerClosed, ConnectionResetError)):
        B.read_chunked(rd)
    s.close()
    st = wait_stats(app, "done", 1)
    assert st["done"] == 1 and st["complete"] == 0


@pytest.mark.parametrize("extra", [1, -1])
def test_stream_length_mismatch_cuts_the_response(app, extra):
    """A producer that makes fewer or more bytes than it announced: the
    client never takes a short body for complete."""
    s = B.connect(app.port)
    s.sendall(b"GET /stream?n=3&piece=100&known=1&extra=%d HTTP/1.1\r\nHost: x\r\n\r\n" % extra)
    rd = B.Reader(s)
    head = rd.read_head()
    assert b"Content-Length: %d" % (300 + extra) in b"".join(head)
    got = b""
    try:
        got = rd.read_exact(300 + extra)
    except (B.PeerClosed, ConnectionResetError):
        pass
    else:
        assert False, "a %d-byte body arrived whole" % len(got)
    s.close()


def test_stream_head_has_no_body_and_releases_the_producer(app):
    s = B.connect(app.port)
    s.sendall(b"HEAD /stream?n=3&piece=100&known=1 HTTP/1.1\r\nHost: x\r\n\r\n"
              b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
    rd = B.Reader(s)
    r = B.read_response(rd, method="HEAD")
    assert r.status == 200 and r.headers.get("Content-Length") == "300"
    assert B.read_response(rd).body == b"proxied\n"  # nothing of a body came between
    s.close()
    assert wait_stats(app, "done", 1)["done"] == 1


def test_stream_slow_client_holds_bounded_memory(app):
    """64 MiB to a client that reads nothing for a while: weir's memory
    stays about one buffer, the producer waits for the client."""
    before = rss_kb(app.pid)
    s = B.connect(app.port, timeout=30)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.sendall(b"GET /stream?n=4096&piece=16384&known=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(1.0)
    grown = rss_kb(app.pid) - before
    assert grown < 16 * 1024, "weir grew %d KiB with a stalled client" % grown
    rd = B.Reader(s)
    r = B.read_response(rd, sink=False)
    assert r.status == 200 and r.body == 4096 * 16384
    s.close()


def test_stream_client_abort_releases_the_producer(app):
    s = B.connect(app.port)
    s.sendall(b"GET /stream?n=100000&piece=16384 HTTP/1.1\r\nHost: x\r\n\r\n")
    B.Reader(s).read_exact(100000)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()
    st = wait_stats(app, "done", 1)
    assert st["done"] == 1 and st["complete"] == 0


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "data.bin"
    blob = os.urandom(1 << 20) * 8  # 8 MiB
    path.write_bytes(blob)
    return str(path), blob


@pytest.mark.parametrize("upper", [False, True], ids=["sendfile", "pumped"])
def test_file_whole_and_part(app, data_file, upper):
    path, blob = data_file
    hs = [("X-Upper", "1")] if upper else []
    base = stats(app)["fds"]
    r = B.get(app.port, "/file?path=" + path, headers=hs)
    assert r.status == 200 and r.headers.get("Content-Length") == str(len(blob))
    assert r.body == (blob.upper() if upper else blob)
    r = B.get(app.port, "/file?path=%s&off=1000&len=5000" % path, headers=hs)
    assert r.body == (blob[1000:6000].upper() if upper else blob[1000:6000])
    # The file is closed once the response is sent, which may be just after
    # the client has read it: wait for the count from before (or below it:
    # a connection of the start-up probe may have been open then).
    assert wait_stats(app, "fds", base)["fds"] <= base


def test_file_closed_after_client_abort(app, data_file):
    path, _ = data_file
    base = stats(app)["fds"]
    for upper in (False, True):
        s = B.connect(app.port)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(("GET /file?path=%s HTTP/1.1\r\nHost: x\r\n%s\r\n"
                   % (path, "X-Upper: 1\r\n" if upper else "")).encode())
        B.Reader(s).read_exact(50000)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    assert wait_stats(app, "fds", base)["fds"] == base


def test_file_that_shrinks_cuts_the_response(app, tmp_path):
    path = tmp_path / "shrinks.bin"
    path.write_bytes(b"x" * (32 << 20))
    s = B.connect(app.port, timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.sendall(("GET /file?path=%s HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode())
    rd = B.Reader(s)
    head = rd.read_head()
    assert b"Content-Length: %d" % (32 << 20) in b"".join(head)
    rd.read_exact(1 << 20)
    os.truncate(path, 2 << 20)
    with pytest.raises((B.PeerClosed, ConnectionResetError)):
        rd.read_exact((32 << 20) - (1 << 20))
    s.close()


def test_file_head(app, data_file):
    path, blob = data_file
    s = B.connect(app.port)
    s.sendall(("HEAD /file?path=%s HTTP/1.1\r\nHost: x\r\n\r\n"
               "GET /plain HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode())
    rd = B.Reader(s)
    r = B.read_response(rd, method="HEAD")
    assert r.headers.get("Content-Length") == str(len(blob))
    assert B.read_response(rd).body == b"proxied\n"
    s.close()


def test_file_many_concurrent_slow_clients(app, data_file):
    """Ten clients reading an 8 MiB file at once, one slowly: every body is
    whole and weir's descriptors come back."""
    path, blob = data_file
    base = stats(app)["fds"]
    socks = []
    for _ in range(10):
        s = B.connect(app.port, timeout=30)
        s.sendall(("GET /file?path=%s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                   % path).encode())
        socks.append(s)
    for s in socks:
        r = B.read_response(B.Reader(s))
        assert r.body == blob
        s.close()
    assert wait_stats(app, "fds", base)["fds"] == base


def test_a_producer_that_never_comes_back_is_timed_out(app):
    """A producer that pauses longer than the client may be idle
    (weir_session_set_client_timeout: 300 ms here) gets its response cut
    and its done called, instead of holding the connection for good."""
    s = B.connect(app.port, timeout=10)
    s.sendall(b"GET /stream?n=2&piece=100&pause=5000&idle=300 HTTP/1.1\r\nHost: x\r\n\r\n")
    rd = B.Reader(s)
    assert b"200" in rd.read_head()[0]
    with pytest.raises((B.PeerClosed, ConnectionResetError)):
        B.read_chunked(rd)
    s.close()
    st = wait_stats(app, "done", 1)
    assert st["done"] == 1 and st["complete"] == 0
