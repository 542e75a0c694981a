"""HTTP/2 from clients (src/http/h2_server.c): over TLS with ALPN h2 and on
plain listeners with prior knowledge (h2c = true), each stream proxied to
HTTP/1.1 backends.

A. real clients (curl, nghttp, h2load) and what crosses to the backend and
   back: headers, HEAD/204/304, 10 MB up and down, limits;
B. back-pressure: a slow upload does not hold up other streams;
C. frame-level conformance (RFC 9113) with python3-h2 and raw frames;
D. floods (rapid reset, SETTINGS, PING, empty frames) -> ENHANCE_YOUR_CALM;
E. flow control: a client that opens its window late still gets it all;
F. graceful shutdown: GOAWAY, in-flight streams finish, exit 0.

Helpers are in h2util.py. Every wait is bounded; nothing depends on timing
thresholds.
"""
import hashlib
import random
import re
import shutil
import signal
import struct
import subprocess
import threading
import time

import pytest

pytest.importorskip("h2", reason="python3-h2 is needed")
pytest.importorskip("hpack", reason="python3-hpack is needed")

import h2.settings  # noqa: E402

import backends as B  # noqa: E402
import h2util as U  # noqa: E402
from conftest import binary, check_stopped, free_port, require_binary  # noqa: E402
from h2util import H2Client, RawH2  # noqa: E402

MB = 1 << 20


# ---------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="session")
def cert(tmp_path_factory):
    if not shutil.which("openssl"):
        pytest.skip("openssl command not found")
    return U.make_cert(tmp_path_factory.mktemp("h2cert"))


@pytest.fixture
def sbackend():
    """Factory: sbackend(handler, rcvbuf=None) -> h2util.StreamBackend."""
    made = []

    def make(handler, **kw):
        b = U.StreamBackend(handler, **kw)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()
    for b in made:
        assert not b.errors, "backend handler errors: %r" % b.errors


@pytest.fixture
def h2weir(tmp_path, start_proc, request):
    """Factory: h2weir(routes, tls=False, threads=2, server=None,
    upstream=None) -> Proc running `weir -c` on one server; plain servers
    get h2c = true unless server says otherwise. Proc.port, Proc.tls."""
    count = [0]

    def start(routes, tls=False, threads=2, server=None, upstream=None):
        require_binary("weir")
        port = free_port()
        srv = dict(server or {})
        if not tls:
            srv.setdefault("h2c", True)
        count[0] += 1
        path = tmp_path / ("weir-h2-%d.toml" % count[0])
        cert = request.getfixturevalue("cert") if tls else None
        path.write_text(U.config(port, routes, cert, srv, upstream))
        p = start_proc([binary("weir"), "-c", str(path), "--threads", str(threads)], port,
                       "weir")
        p.tls = tls
        p.config_path = path
        return p

    return start


def need(tool):
    if not shutil.which(tool):
        pytest.skip("%s not installed" % tool)


def run(argv, timeout=120):
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def curl(*args):
    """curl -sS ... -w 'VERSION STATUS'; returns (rc, version, status, body, stderr)."""
    need("curl")
    r = subprocess.run(["curl", "-sS", "--max-time", "30", "-o", "-", "-w",
                        "\n%{http_version} %{http_code}"] + list(args),
                       capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    out = r.stdout
    body, _, tail = out.rpartition(b"\n")
    version, _, status = tail.decode().partition(" ")
    return r.returncode, version, status, body, r.stderr.decode(errors="replace")


def wait_stderr(proc, text, timeout=10.0):
    return U.wait_for(lambda: text in proc.stderr(), timeout)


def still_serves(w, path="/still"):
    """A new HTTP/2 connection gets a 200 from weir."""
    c = H2Client(w.port, tls=w.tls)
    try:
        st = c.get(path)
        assert st.status == 200, st
    finally:
        c.close()


def body_of(n, seed=1):
    return random.Random(seed).randbytes(n)


# ---------------------------------------------------------------------------
# A. Clients, headers, bodies


def test_curl_h2_over_tls(backend, h2weir, cert):
    b = backend(B.fixed(b"hello over h2\n"))
    w = h2weir(b, tls=True)
    rc, version, status, body, err = curl("--http2", "--cacert", cert[0],
                                          "https://127.0.0.1:%d/tls/path?x=1" % w.port)
    assert rc == 0, err
    assert (version, status) == ("2", "200")
    assert body == b"hello over h2\n"
    req = b.last()
    assert (req.method, req.path, req.version) == ("GET", "/tls/path?x=1", "HTTP/1.1")
    assert req.headers.get("X-Forwarded-Proto") == "https"


def test_alpn_http11_only_turns_h2_off(backend, h2weir, cert):
    b = backend(B.fixed(b"one point one\n"))
    w = h2weir(b, tls=True, server={"alpn": ["http/1.1"]})
    rc, version, status, body, err = curl("--http2", "--cacert", cert[0],
                                          "https://127.0.0.1:%d/" % w.port)
    assert rc == 0, err
    assert (version, status) == ("1.1", "200")
    assert body == b"one point one\n"


def test_curl_prior_knowledge_h2c(backend, h2weir):
    b = backend(B.fixed(b"h2c\n"))
    w = h2weir(b)
    # One URL per curl call: curl 7.88 mishandles reused prior-knowledge
    # connections (nginx shows the same).
    for i in range(3):
        rc, version, status, body, err = curl("--http2-prior-knowledge",
                                              "http://127.0.0.1:%d/pk/%d" % (w.port, i))
        assert rc == 0, err
        assert (version, status, body) == ("2", "200", b"h2c\n")
    assert [r.path for r in b.requests] == ["/pk/0", "/pk/1", "/pk/2"]
    assert b.last().headers.get("X-Forwarded-Proto") == "http"
    # HTTP/1.1 still works on an h2c listener.
    rc, version, status, body, err = curl("--http1.1", "http://127.0.0.1:%d/h1" % w.port)
    assert rc == 0, err
    assert (version, status, body) == ("1.1", "200", b"h2c\n")


def test_prior_knowledge_refused_without_h2c(backend, h2weir):
    b = backend(B.fixed(b"h1 only\n"))
    w = h2weir(b, server={"h2c": False})
    rc, version, status, body, err = curl("--http2-prior-knowledge",
                                          "http://127.0.0.1:%d/" % w.port)
    assert not (rc == 0 and version == "2"), "h2c served without h2c = true"
    assert b.request_count() == 0
    rc, version, status, body, err = curl("http://127.0.0.1:%d/" % w.port)
    assert (rc, version, status, body) == (0, "1.1", "200", b"h1 only\n"), err


@pytest.mark.parametrize("tls", [False, True], ids=["h2c", "tls"])
def test_nghttp_concurrent_streams_on_one_connection(backend, h2weir, tls):
    """Four URLs on one nghttp connection; the backend answers none of them
    until all four have arrived, so they must be proxied concurrently."""
    need("nghttp")
    n = 4
    barrier = threading.Barrier(n, timeout=20)

    def handler(conn, req):
        try:
            barrier.wait()
            status = 200
        except threading.BrokenBarrierError:
            status = 500
        body = ("stream for %s\n" % req.path).encode()
        conn.send(B.response_head(status, [("Content-Length", str(len(body)))]) + body)

    b = backend(handler)
    w = h2weir(b, tls=tls)
    scheme = "https" if tls else "http"
    urls = ["%s://127.0.0.1:%d/n/%d" % (scheme, w.port, i) for i in range(n)]
    r = run(["nghttp", "-n", "-v"] + urls, timeout=60)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    statuses = re.findall(r"recv \(stream_id=(\d+)\) :status: (\d+)", r.stdout)
    assert sorted(s for _, s in statuses) == ["200"] * n, statuses
    assert len({sid for sid, _ in statuses}) == n
    assert r.stdout.count("] Connected") == 1, "nghttp used more than one connection"
    assert sorted(req.path for req in b.requests) == ["/n/%d" % i for i in range(n)]


@pytest.mark.deadline(180)
@pytest.mark.parametrize("tls", [False, True], ids=["h2c", "tls"])
def test_h2load_all_2xx(backend, h2weir, tls):
    need("h2load")
    b = backend(B.fixed(b"load\n"))
    w = h2weir(b, tls=tls, upstream={"keepalive": 512})
    url = "%s://127.0.0.1:%d/load" % ("https" if tls else "http", w.port)
    r = run(["h2load", "-n", "2000", "-c", "4", "-m", "50", url], timeout=150)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, "
                     r"0 failed, 0 errored, 0 timeout", r.stdout), r.stdout
    assert re.search(r"status codes: 2000 2xx, 0 3xx, 0 4xx, 0 5xx", r.stdout), r.stdout
    assert b.request_count() == 2000


@pytest.mark.parametrize("tls", [False, True], ids=["h2c", "tls"])
def test_request_headers_reach_backend(backend, h2weir, tls):
    b = backend(B.fixed(b"ok\n"))
    w = h2weir(b, tls=tls)
    c = H2Client(w.port, tls=tls, authority="app.example.test:8443")
    st = c.get("/h2/headers?q=1", headers=[
        ("cookie", "a=1"), ("x-custom", "kept"), ("cookie", "b=2"),
        ("user-agent", "h2-test"), ("cookie", "c=3")])
    c.close()
    assert st.status == 200 and bytes(st.data) == b"ok\n"
    req = b.last()
    assert (req.method, req.path, req.version) == ("GET", "/h2/headers?q=1", "HTTP/1.1")
    h = req.headers
    assert h.get_all("Host") == ["app.example.test:8443"]
    assert h.get_all("Cookie") == ["a=1; b=2; c=3"]
    assert h.get("X-Custom") == "kept"
    assert h.get("User-Agent") == "h2-test"
    assert h.get("X-Forwarded-Proto") == ("https" if tls else "http")
    assert h.get("X-Forwarded-For") == "127.0.0.1"
    assert not any(k.startswith(":") for k, _ in h), h
    # A bodiless request (END_STREAM on HEADERS) is sent without a body.
    assert not h.has("Transfer-Encoding") and h.get("Content-Length") in (None, "0"), h
    assert req.body_len == 0


def test_host_field_without_authority(backend, h2weir):
    """With no :authority, a host field is forwarded as Host, once."""
    b = backend(B.fixed(b"ok\n"))
    w = h2weir(b)
    r = RawH2(w.port)
    r.send_headers(1, [(":method", "GET"), (":scheme", "http"), (":path", "/nohost"),
                       ("host", "only-host.test")])
    headers, body, rst = r.expect_end(1)
    r.close()
    assert rst is None and dict(headers)[":status"] == "200"
    assert b.last().headers.get_all("Host") == ["only-host.test"]


@pytest.mark.parametrize("tls", [False, True], ids=["h2c", "tls"])
def test_response_headers_back(backend, h2weir, tls):
    def handler(conn, req):
        head = B.response_head(200, [
            ("X-Mixed-Case", "Value"), ("Set-Cookie", "s1=a; Path=/"),
            ("Set-Cookie", "s2=b; Path=/"), ("Connection", "keep-alive"),
            ("Keep-Alive", "timeout=5"), ("Transfer-Encoding", "chunked"),
            ("Trailer", "X-Checksum")])
        conn.send(head + b"6\r\nhello \r\n6\r\nworld!\r\n0\r\nX-Checksum: abc123\r\n\r\n")

    b = backend(handler)
    w = h2weir(b, tls=tls)
    c = H2Client(w.port, tls=tls)
    st = c.get("/resp", headers=[("te", "trailers")])
    c.close()
    assert st.status == 200
    assert bytes(st.data) == b"hello world!"
    names = [k for k, _ in st.headers]
    assert all(k == k.lower() for k in names), names
    for hop in ("connection", "keep-alive", "transfer-encoding", "upgrade"):
        assert hop not in names, st.headers
    assert st.header("x-mixed-case") == "Value"
    assert st.header_all("set-cookie") == ["s1=a; Path=/", "s2=b; Path=/"]
    assert st.trailers is not None and dict(st.trailers).get("x-checksum") == "abc123", \
        st.trailers


def test_response_connection_nominated_fields_dropped(backend, h2weir):
    """RFC 9110 7.6.1: fields named in Connection are hop-by-hop; weir drops
    them from HTTP/1 responses (test_basic) and must from HTTP/2 ones."""
    b = backend(B.fixed(b"ok\n", headers=[("Connection", "X-Hop, X-Other"), ("X-Hop", "1"),
                                         ("X-Other", "2"), ("X-Kept", "3")]))
    w = h2weir(b)
    c = H2Client(w.port)
    st = c.get("/nominated")
    c.close()
    assert st.status == 200 and st.header("x-kept") == "3"
    assert st.header("x-hop") is None and st.header("x-other") is None, st.headers


def test_head_204_304_have_no_body(backend, h2weir):
    b_head = backend(B.fixed(b"0123456789"))
    b204 = backend(B.no_body(204))
    b304 = backend(B.no_body(304))
    w = h2weir({"/204": b204, "/304": b304, "/": b_head})
    c = H2Client(w.port)
    head = c.get("/thing", method="HEAD")
    s204 = c.get("/204")
    s304 = c.get("/304")
    after = c.get("/thing")
    c.close()
    assert head.status == 200 and head.header("content-length") == "10"
    assert b_head.requests[0].method == "HEAD"
    assert s204.status == 204 and s304.status == 304
    assert s304.header("etag") == '"v1"'
    for st in (head, s204, s304):
        assert st.data_frames == 0 and bytes(st.data) == b"", st
        assert st.headers_ended_stream, "%r: END_STREAM not on the HEADERS frame" % st
        assert st.header("transfer-encoding") is None
    assert after.status == 200 and bytes(after.data) == b"0123456789"


@pytest.mark.deadline(120)
@pytest.mark.parametrize("tls", [False, True], ids=["h2c", "tls"])
@pytest.mark.parametrize("with_length", [True, False], ids=["content-length", "no-length"])
def test_post_10mb_checked_by_backend(sbackend, h2weir, tls, with_length):
    def handler(conn, req):
        sha = U.hash_body(conn, req)
        U.respond(conn, 200, b"got it\n", [("X-Sha256", sha), ("X-Len", str(req.body_len))])

    b = sbackend(handler)
    w = h2weir(b, tls=tls)
    data = body_of(10 * MB)
    c = H2Client(w.port, tls=tls)
    st = c.response(c.request("/upload", method="POST", body=data, content_length=with_length,
                              headers=[("content-type", "application/octet-stream")]),
                    timeout=90)
    c.close()
    assert st.status == 200, st
    assert st.header("x-len") == str(len(data))
    assert st.header("x-sha256") == hashlib.sha256(data).hexdigest()
    req = b.requests[-1]
    assert req.method == "POST"
    assert req.headers.get("Content-Type") == "application/octet-stream"
    if with_length:
        assert req.headers.get("Content-Length") == str(len(data))
        assert not req.chunked


@pytest.mark.deadline(120)
@pytest.mark.parametrize("tls", [False, True], ids=["h2c", "tls"])
def test_download_10mb(backend, h2weir, tls):
    b = backend(B.huge(10 * MB))
    w = h2weir(b, tls=tls)
    c = H2Client(w.port, tls=tls)
    st = c.get("/big", timeout=90)
    c.close()
    assert st.status == 200 and st.header("content-length") == str(10 * MB)
    assert len(st.data) == 10 * MB
    assert bytes(st.data) == B.PATTERN * 10


@pytest.mark.parametrize("size", [1000, 200 * 1024], ids=["small", "over-window"])
def test_upstream_connection_reused_after_response(backend, h2weir, size):
    """Three sequential GETs on one HTTP/2 connection (one worker) use one
    keep-alive upstream connection: each stream's session finishes and
    gives it back, whatever the size of the response."""
    b = backend(B.huge(size))
    w = h2weir(b, threads=1)
    c = H2Client(w.port)
    for i in range(3):
        st = c.get("/seq/%d" % i)
        assert st.status == 200 and len(st.data) == size, st
    c.close()
    assert b.request_count() == 3
    assert b.connections == 1, "%d upstream connections for 3 sequential requests" % (
        b.connections)


def test_echo_location_over_tls(h2weir):
    """A location weir answers itself, over h2 with TLS; weir then stops
    cleanly (no leak of the stream's session)."""
    w = h2weir("echo", tls=True)
    c = H2Client(w.port, tls=True)
    for i in range(3):
        st = c.get("/echo/%d" % i)
        assert st.status == 200 and b"GET /echo/%d" % i in bytes(st.data), st
    c.close()
    check_stopped(w)


def test_max_body_size_413(backend, h2weir):
    b = backend(B.echo())
    w = h2weir(b, server={"max_body_size": "1KB"})
    c = H2Client(w.port)
    small = c.get("/small", method="POST", body=b"x" * 1000)
    known = c.get("/known", method="POST", body=b"y" * 4096)
    streamed = c.get("/streamed", method="POST", body=b"z" * 4096, content_length=False)
    ok_after = c.get("/after")
    c.close()
    assert small.status == 200 and bytes(small.data) == b"x" * 1000
    assert known.status == 413, known
    assert streamed.status == 413 or streamed.reset is not None, streamed
    assert ok_after.status == 200
    paths = [r.path for r in b.requests]
    assert "/known" not in paths
    assert all(r.body_len <= 1024 for r in b.requests), b.requests


def test_keepalive_timeout_closes_idle_connection(backend, h2weir):
    b = backend(B.fixed(b"ok\n"))
    w = h2weir(b, server={"keepalive_timeout": "1s"})
    r = RawH2(w.port)
    r.send_headers(1, r.request_headers("/ka"))
    headers, body, rst = r.expect_end(1)
    assert dict(headers)[":status"] == "200" and body == b"ok\n"
    g = r.expect_goaway(timeout=20)
    assert g.code == U.NO_ERROR and g.last_sid == 1, g
    assert r.wait_eof(10)


# ---------------------------------------------------------------------------
# B. Back-pressure


@pytest.mark.deadline(150)
def test_slow_upload_does_not_block_other_stream(sbackend, h2weir):
    """A 16 MB upload to a backend that reads slowly fills its stream window
    and stalls; a GET on the same connection completes meanwhile, while the
    upload is provably still in progress; then the upload finishes intact."""
    gate = threading.Event()

    def handler(conn, req):
        if req.path.startswith("/upload"):
            conn.reader.piece = 16384
            conn.reader.pace = lambda: gate.is_set() or gate.wait(0.05)
            try:
                sha = U.hash_body(conn, req)
            finally:
                conn.reader.pace = None
            U.respond(conn, 200, b"stored\n", [("X-Sha256", sha), ("X-Len", str(req.body_len))])
        else:
            U.respond(conn, 200, b"quick\n")

    b = sbackend(handler, rcvbuf=65536)
    w = h2weir(b)
    data = body_of(16 * MB, seed=2)
    c = H2Client(w.port)
    up = c.request("/upload", method="POST", body=data)
    upload = c.streams[up]
    # The upload goes through weir to the backend (more than one window).
    c.run_until(lambda: upload.sent >= 4 * 65536 and any(
        r.path == "/upload" for r in b.requests), 30, "the upload to start")
    get = c.request("/quick")
    c.run_until(lambda: c.streams[get].done, 30, "the GET during the upload")
    quick = c.streams[get]
    assert quick.status == 200 and bytes(quick.data) == b"quick\n", quick
    assert not upload.done and upload.sent < len(data), \
        "the upload was not in progress when the GET completed: %r" % upload
    gate.set()
    st = c.response(up, timeout=100)
    c.close()
    assert st.status == 200, st
    assert st.header("x-len") == str(len(data))
    assert st.header("x-sha256") == hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------
# C. Frame-level conformance (RFC 9113)


def post_open(r, sid=1, extra=()):
    """Opens stream sid with a POST head, body to follow."""
    r.send_headers(sid, r.request_headers("/conf", "POST", extra), end_stream=False)


CONNECTION_ERRORS = {
    # 5.1: DATA on an idle stream
    "data_on_idle_stream": (lambda r: r.send_frame(U.DATA, U.END_STREAM, 1, b"hi"),
                            U.PROTOCOL_ERROR),
    # 4.2: a frame over SETTINGS_MAX_FRAME_SIZE (16384)
    "frame_over_max_frame_size": (lambda r: (post_open(r),
                                             r.send_frame(U.DATA, 0, 1, b"x" * 16385)),
                                  U.FRAME_SIZE_ERROR),
    # 4.3: a header block that does not decode (HPACK index 0)
    "invalid_hpack": (lambda r: r.send_frame(U.HEADERS, U.END_HEADERS | U.END_STREAM, 1,
                                             b"\x80"), U.COMPRESSION_ERROR),
    # 6.5.2: SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1
    "settings_initial_window_too_large": (
        lambda r: r.send_frame(U.SETTINGS, 0, 0, U.settings_payload(
            [(U.S_INITIAL_WINDOW_SIZE, 2 ** 31)])), U.FLOW_CONTROL_ERROR),
    # 6.5.2: SETTINGS_ENABLE_PUSH other than 0 or 1
    "settings_enable_push_2": (
        lambda r: r.send_frame(U.SETTINGS, 0, 0, U.settings_payload([(U.S_ENABLE_PUSH, 2)])),
        U.PROTOCOL_ERROR),
    # 6.5.2: SETTINGS_MAX_FRAME_SIZE below 16384
    "settings_max_frame_size_too_small": (
        lambda r: r.send_frame(U.SETTINGS, 0, 0, U.settings_payload([(U.S_MAX_FRAME_SIZE,
                                                                      1000)])),
        U.PROTOCOL_ERROR),
    # 6.5: a SETTINGS length not a multiple of 6
    "settings_bad_length": (lambda r: r.send_frame(U.SETTINGS, 0, 0, b"\x00\x04\x00"),
                            U.FRAME_SIZE_ERROR),
    # 6.5: SETTINGS with ACK and a payload
    "settings_ack_with_payload": (
        lambda r: r.send_frame(U.SETTINGS, U.ACK, 0, U.settings_payload([(U.S_ENABLE_PUSH,
                                                                         0)])),
        U.FRAME_SIZE_ERROR),
    # 6.9: WINDOW_UPDATE of 0 on the connection
    "window_update_zero_on_connection": (
        lambda r: r.send_frame(U.WINDOW_UPDATE, 0, 0, struct.pack(">I", 0)), U.PROTOCOL_ERROR),
    # 6.9.1: a connection window over 2^31-1
    "window_update_overflow": (
        lambda r: r.send_frame(U.WINDOW_UPDATE, 0, 0, struct.pack(">I", 2 ** 31 - 1)),
        U.FLOW_CONTROL_ERROR),
    # 6.4: RST_STREAM on an idle stream
    "rst_stream_on_idle_stream": (
        lambda r: r.send_frame(U.RST_STREAM, 0, 1, struct.pack(">I", U.CANCEL)),
        U.PROTOCOL_ERROR),
    # 6.10: CONTINUATION not preceded by HEADERS
    "continuation_without_headers": (
        lambda r: r.send_frame(U.CONTINUATION, U.END_HEADERS, 1,
                               r.enc.encode(r.request_headers("/c"))), U.PROTOCOL_ERROR),
    # 6.10: HEADERS without END_HEADERS followed by another frame
    "headers_interrupted": (
        lambda r: (r.send(r.headers_frame(1, r.request_headers("/i"), end_headers=False)),
                   r.send_frame(U.PING, 0, 0, b"12345678")), U.PROTOCOL_ERROR),
    # 6.7: PING with a length other than 8
    "ping_wrong_length": (lambda r: r.send_frame(U.PING, 0, 0, b"1234567"), U.FRAME_SIZE_ERROR),
    # 5.1.1: a client stream with an even id
    "even_stream_id": (lambda r: r.send_headers(2, r.request_headers("/even")),
                       U.PROTOCOL_ERROR),
    # 8.4: clients cannot push
    "push_promise_from_client": (
        lambda r: (post_open(r), r.send_frame(U.PUSH_PROMISE, U.END_HEADERS, 1,
                                              struct.pack(">I", 2)
                                              + r.enc.encode(r.request_headers("/p")))),
        U.PROTOCOL_ERROR),
}


@pytest.mark.parametrize("case", sorted(CONNECTION_ERRORS))
def test_connection_error(backend, h2weir, case):
    send, code = CONNECTION_ERRORS[case]
    b = backend(B.fixed(b"ok\n"))
    w = h2weir(b)
    r = RawH2(w.port)
    send(r)
    g = r.expect_goaway()
    assert g.code == code, "%s: got %r, want %s" % (case, g, U.error_name(code))
    assert r.wait_eof(10), "connection not closed after GOAWAY: %r" % r.frames
    r.close()
    still_serves(w)


STREAM_ERRORS = {
    # 8.2.1: field names must be lower case
    "uppercase_header_name": lambda r: r.send_headers(
        1, r.request_headers("/s", extra=[("X-Upper", "1")])),
    # 8.3.1: :path is required
    "missing_path": lambda r: r.send_headers(
        1, [(":method", "GET"), (":scheme", "http"), (":authority", r.authority)]),
    # 8.3.1: :method is required
    "missing_method": lambda r: r.send_headers(
        1, [(":scheme", "http"), (":authority", r.authority), (":path", "/")]),
    # 8.3: an unknown pseudo-header
    "unknown_pseudo_header": lambda r: r.send_headers(
        1, r.request_headers("/s", extra=[(":bogus", "1")])),
    # 8.3: pseudo-headers after regular fields
    "pseudo_header_after_regular": lambda r: r.send_headers(
        1, [(":method", "GET"), (":scheme", "http"), ("x-a", "1"), (":path", "/"),
            (":authority", r.authority)]),
    # 8.2.2: connection-specific fields
    "connection_header": lambda r: r.send_headers(
        1, r.request_headers("/s", extra=[("connection", "keep-alive")])),
    "keep_alive_header": lambda r: r.send_headers(
        1, r.request_headers("/s", extra=[("keep-alive", "timeout=5")])),
    "transfer_encoding_header": lambda r: r.send_headers(
        1, r.request_headers("/s", extra=[("transfer-encoding", "chunked")])),
    "te_not_trailers": lambda r: r.send_headers(
        1, r.request_headers("/s", extra=[("te", "gzip")])),
    # 8.1.1: content-length must match the DATA
    "content_length_more_than_data": lambda r: (
        post_open(r, extra=[("content-length", "10")]),
        r.send_frame(U.DATA, U.END_STREAM, 1, b"12345")),
    "content_length_less_than_data": lambda r: (
        post_open(r, extra=[("content-length", "3")]),
        r.send_frame(U.DATA, U.END_STREAM, 1, b"12345")),
}


@pytest.mark.parametrize("case", sorted(STREAM_ERRORS))
def test_stream_error(backend, h2weir, case):
    """RST_STREAM(PROTOCOL_ERROR) on the stream; the connection goes on."""
    b = backend(B.fixed(b"ok\n"))
    w = h2weir(b)
    r = RawH2(w.port)
    STREAM_ERRORS[case](r)
    rst = r.expect_rst(1)
    assert rst.code == U.PROTOCOL_ERROR, "%s: got %r" % (case, rst)
    r.send_headers(3, r.request_headers("/next"))
    headers, body, rst3 = r.expect_end(3)
    assert rst3 is None and dict(headers)[":status"] == "200" and body == b"ok\n", r.frames
    assert not any(f.type == U.GOAWAY for f in r.frames), r.frames
    r.close()
    if not case.startswith("content_length"):
        # Refused before any byte went upstream.
        assert [q.path for q in b.requests] == ["/next"]


def test_window_update_zero_on_stream(backend, h2weir):
    """RFC 9113 6.9: a stream error of type PROTOCOL_ERROR, which 5.4.1 lets
    an endpoint treat as a connection error (nghttp2 does)."""
    b = backend(B.fixed(b"ok\n"))
    w = h2weir(b)
    r = RawH2(w.port)
    post_open(r)
    r.send_frame(U.WINDOW_UPDATE, 0, 1, struct.pack(">I", 0))
    f = r.expect(lambda f: f.type == U.GOAWAY or (f.type == U.RST_STREAM and f.sid == 1),
                 what="RST_STREAM or GOAWAY")
    assert f.code == U.PROTOCOL_ERROR, f
    r.close()
    still_serves(w)


def test_stream_error_on_header_block_keeps_hpack_in_step(backend, h2weir):
    """After a malformed request the HPACK context is still shared: later
    requests that index the earlier fields decode right."""
    b = backend(B.fixed(b"ok\n"))
    w = h2weir(b)
    r = RawH2(w.port)
    sid = 1
    for i in range(5):
        r.send_headers(sid, r.request_headers("/bad", extra=[("x-same", "v"),
                                                             ("connection", "close")]))
        assert r.expect_rst(sid).code == U.PROTOCOL_ERROR
        r.send_headers(sid + 2, r.request_headers("/good", extra=[("x-same", "v")]))
        headers, body, rst = r.expect_end(sid + 2)
        assert rst is None and dict(headers)[":status"] == "200"
        sid += 4
    r.close()
    assert [q.path for q in b.requests] == ["/good"] * 5
    assert all(q.headers.get("X-Same") == "v" for q in b.requests)


def test_server_settings(backend, h2weir):
    b = backend()
    w = h2weir(b, server={"h2_max_concurrent_streams": 7, "max_header_size": "8KB"})
    r = RawH2(w.port)
    f = r.expect(lambda f: f.type == U.SETTINGS and not f.flags & U.ACK, what="SETTINGS")
    values = dict(struct.unpack(">HI", f.payload[i:i + 6]) for i in range(0, len(f.payload), 6))
    assert values.get(U.S_MAX_CONCURRENT_STREAMS) == 7, values
    assert values.get(U.S_MAX_HEADER_LIST_SIZE) == 8192, values
    assert values.get(U.S_INITIAL_WINDOW_SIZE, 65535) == 65535, values
    r.close()


def test_settings_acked(backend, h2weir):
    b = backend()
    w = h2weir(b)
    r = RawH2(w.port, settings=[(U.S_MAX_CONCURRENT_STREAMS, 100)])
    r.expect(lambda f: f.type == U.SETTINGS and f.flags & U.ACK, what="SETTINGS ACK")
    r.send_frame(U.SETTINGS, 0, 0, U.settings_payload([(U.S_INITIAL_WINDOW_SIZE, 100000),
                                                       (U.S_MAX_FRAME_SIZE, 32768)]))
    r.expect(lambda f: f.type == U.SETTINGS and f.flags & U.ACK, what="second SETTINGS ACK")
    acks = [f for f in r.frames if f.type == U.SETTINGS and f.flags & U.ACK]
    assert len(acks) == 2 and all(f.payload == b"" for f in acks), r.frames
    r.close()


def test_ping_answered(backend, h2weir):
    b = backend()
    w = h2weir(b)
    r = RawH2(w.port)
    r.send_frame(U.PING, U.ACK, 0, b"unasked!")  # an unsolicited ACK is ignored
    for payload in (b"weir-h2!", b"\x00\x01\x02\x03\x04\x05\x06\x07"):
        r.send_frame(U.PING, 0, 0, payload)
        f = r.expect(lambda f: f.type == U.PING, what="PING ACK")
        assert f.flags & U.ACK and f.payload == payload and f.sid == 0, f
    r.send_headers(1, r.request_headers("/after-ping"))
    headers, body, rst = r.expect_end(1)
    assert rst is None and dict(headers)[":status"] == "200"
    assert sum(1 for f in r.frames if f.type == U.PING) == 2
    r.close()


def gated_backend(backend, body=b"gated\n"):
    gate = threading.Event()

    def handler(conn, req):
        gate.wait(30)
        conn.send(B.response_head(200, [("Content-Length", str(len(body)))]) + body)

    return backend(handler), gate


def test_client_goaway_lets_streams_finish(backend, h2weir):
    b, gate = gated_backend(backend)
    w = h2weir(b)
    r = RawH2(w.port)
    r.send_headers(1, r.request_headers("/inflight/1"))
    r.send_headers(3, r.request_headers("/inflight/3"))
    assert U.wait_for(lambda: b.heads >= 2), "requests did not reach the backend"
    r.send_frame(U.GOAWAY, 0, 0, struct.pack(">II", 0, U.NO_ERROR))
    gate.set()
    for sid in (1, 3):
        headers, body, rst = r.expect_end(sid)
        assert rst is None and dict(headers)[":status"] == "200" and body == b"gated\n", \
            r.frames
    assert r.wait_eof(10), "weir kept the connection open after the client's GOAWAY"
    r.close()


@pytest.mark.parametrize("acked", [
    pytest.param(True, id="after-settings-ack", marks=pytest.mark.xfail(
        strict=True, reason="weir (nghttp2's default) answers a stream over the limit "
        "after the SETTINGS ACK with GOAWAY(PROTOCOL_ERROR) and drops the in-flight streams")),
    pytest.param(False, id="before-settings-ack")])
def test_max_concurrent_streams_refused(backend, h2weir, acked):
    """h2_max_concurrent_streams = 2: a third stream while two wait on a slow
    backend gets RST_STREAM(REFUSED_STREAM); the two complete and the
    connection goes on."""
    b, gate = gated_backend(backend)
    w = h2weir(b, server={"h2_max_concurrent_streams": 2})
    r = RawH2(w.port, ack_settings=False)
    if acked:
        r.expect(lambda f: f.type == U.SETTINGS and not f.flags & U.ACK, what="SETTINGS")
        r.send_frame(U.SETTINGS, U.ACK, 0)
        r.expect(lambda f: f.type == U.SETTINGS and f.flags & U.ACK, what="SETTINGS ACK")
        # A PING round trip: our ACK is processed by now.
        r.send_frame(U.PING, 0, 0, b"synced!!")
        r.expect(lambda f: f.type == U.PING and f.flags & U.ACK, what="PING ACK")
    for sid in (1, 3):
        r.send_headers(sid, r.request_headers("/slot/%d" % sid))
    assert U.wait_for(lambda: b.heads >= 2), "requests did not reach the backend"
    r.send_headers(5, r.request_headers("/slot/5"))
    rst = r.expect_rst(5)
    assert rst.code == U.REFUSED_STREAM, rst
    gate.set()
    for sid in (1, 3):
        headers, body, rst = r.expect_end(sid)
        assert rst is None and dict(headers)[":status"] == "200", r.frames
    if not acked:
        r.send_frame(U.SETTINGS, U.ACK, 0)
    r.send_headers(7, r.request_headers("/slot/7"))
    headers, body, rst = r.expect_end(7)
    assert rst is None and dict(headers)[":status"] == "200", r.frames
    assert not any(f.type == U.GOAWAY for f in r.frames), r.frames
    r.close()
    assert sorted(q.path for q in b.requests) == ["/slot/1", "/slot/3", "/slot/7"]


@pytest.mark.parametrize("what", ["size", "count"])
def test_header_list_over_limit_431(backend, h2weir, what):
    b = backend(B.fixed(b"ok\n"))
    w = h2weir(b, server={"max_header_size": "4KB", "max_headers": 20})
    r = RawH2(w.port)
    if what == "size":
        extra = [("x-big", "a" * 6000)]
    else:
        extra = [("x-h%d" % i, "v") for i in range(30)]
    r.send_headers(1, r.request_headers("/too-big", extra=extra))
    headers, body, rst = r.expect_end(1)
    assert rst is None and headers is not None, r.frames
    assert dict(headers)[":status"] == "431", headers
    # The connection and its HPACK context are fine afterwards.
    r.send_headers(3, r.request_headers("/fine", extra=[("x-small", "1")]))
    headers, body, rst = r.expect_end(3)
    assert rst is None and dict(headers)[":status"] == "200" and body == b"ok\n"
    r.close()
    assert [q.path for q in b.requests] == ["/fine"]
    assert wait_stderr(w, "431: request head too large")


# ---------------------------------------------------------------------------
# D. Floods


def flood_rapid_reset(r):
    out = bytearray()
    for i in range(1000):
        sid = 2 * i + 1
        out += r.headers_frame(sid, r.request_headers("/reset/%d" % i))
        out += U.frame(U.RST_STREAM, 0, sid, struct.pack(">I", U.CANCEL))
    return bytes(out)


def flood_settings(r):
    return U.frame(U.SETTINGS, 0, 0, U.settings_payload([(U.S_ENABLE_PUSH, 0)])) * 200


def flood_ping(r):
    return b"".join(U.frame(U.PING, 0, 0, struct.pack(">Q", i)) for i in range(300))


def flood_empty_data(r):
    return (r.headers_frame(1, r.request_headers("/empty", "POST"), end_stream=False)
            + U.frame(U.DATA, 0, 1, b"") * 300)


def flood_priority(r):
    return b"".join(U.frame(U.PRIORITY, 0, 2 * i + 101, struct.pack(">IB", 0, 15))
                    for i in range(300))


FLOODS = {
    "rapid_reset": (flood_rapid_reset, "stream reset"),
    "settings": (flood_settings, "SETTINGS"),
    "ping": (flood_ping, "PING"),
    "empty_data": (flood_empty_data, "empty frame"),
    "priority": (flood_priority, "PRIORITY"),
}


@pytest.mark.deadline(90)
@pytest.mark.parametrize("tls", [False, True], ids=["h2c", "tls"])
@pytest.mark.parametrize("kind", sorted(FLOODS))
def test_flood_enhance_your_calm(backend, h2weir, kind, tls):
    make, what = FLOODS[kind]
    b = backend(B.fixed(b"ok\n"))
    w = h2weir(b, tls=tls)
    r = RawH2(w.port, tls=tls)
    try:
        r.send(make(r))
    except OSError:
        pass  # weir may hang up before the whole burst is written
    g = r.expect_goaway(timeout=30)
    assert g.code == U.ENHANCE_YOUR_CALM, g
    assert r.wait_eof(15), "connection still open after GOAWAY(ENHANCE_YOUR_CALM)"
    r.close()
    line = "HTTP/2 %s flood: closing with ENHANCE_YOUR_CALM" % what
    assert wait_stderr(w, line), "no %r in stderr:\n%s" % (line, w.stderr()[-3000:])
    still_serves(w)


def test_below_flood_limits_is_served(backend, h2weir):
    """50 PINGs, 50 SETTINGS and 50 resets in a burst stay under the limits:
    every PING and SETTINGS is answered, the connection keeps serving."""
    b = backend(B.fixed(b"ok\n"))
    w = h2weir(b)
    r = RawH2(w.port)
    burst = bytearray()
    for i in range(50):
        burst += U.frame(U.PING, 0, 0, struct.pack(">Q", i))
        burst += U.frame(U.SETTINGS, 0, 0, b"")
        sid = 2 * i + 1
        burst += r.headers_frame(sid, r.request_headers("/r/%d" % i))
        burst += U.frame(U.RST_STREAM, 0, sid, struct.pack(">I", U.CANCEL))
    r.send(bytes(burst))
    r.send_headers(101, r.request_headers("/after"))
    headers, body, rst = r.expect_end(101, timeout=30)
    assert rst is None and dict(headers)[":status"] == "200"
    assert U.wait_for(lambda: (r.read_frame(0.05) or True) and sum(
        1 for f in r.frames if f.type == U.PING and f.flags & U.ACK) == 50, timeout=10)
    assert sum(1 for f in r.frames if f.type == U.SETTINGS and f.flags & U.ACK) >= 51
    assert not any(f.type == U.GOAWAY for f in r.frames), r.frames
    r.close()
    assert "flood" not in w.stderr()


# ---------------------------------------------------------------------------
# E. Flow control towards the client


@pytest.mark.deadline(90)
def test_zero_window_then_opened(backend, h2weir):
    """INITIAL_WINDOW_SIZE 0: weir can send no DATA for a 1 MB response and
    must wait, serving others meanwhile; once the client opens the window
    the whole body comes, intact."""
    b = backend(B.huge(MB))
    w = h2weir(b)
    c = H2Client(w.port, settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0},
                 ack_data=False)
    c.run_until(lambda: c.settings_acked >= 2, 10, "our SETTINGS to be acknowledged")
    sid = c.request("/stalled")
    st = c.streams[sid]
    assert b.wait_requests(1), "request did not reach the backend"
    # Read for a while: the head may come, no DATA can.
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        c.pump(0.1)
    assert len(st.data) == 0 and not st.done, st
    # Meanwhile another connection is served in full.
    other = H2Client(w.port)
    o = other.get("/other", timeout=60)
    other.close()
    assert o.status == 200 and bytes(o.data) == B.PATTERN
    c.open_window(sid, 2 * MB)  # more than the body: see the next test for "exactly"
    c.response(sid, timeout=60)
    c.close()
    assert st.status == 200 and st.reset is None
    assert bytes(st.data) == B.PATTERN


def test_end_stream_when_body_fills_window_exactly(backend, h2weir):
    """A 65535-byte body and a client that sends no WINDOW_UPDATE: the whole
    body fits the initial window, so the response must end (RFC 9113 6.9.1
    does not flow-control an empty DATA frame with END_STREAM)."""
    b = backend(B.huge(65535))
    w = h2weir(b)
    c = H2Client(w.port, ack_data=False)
    sid = c.request("/exact")
    st = c.streams[sid]
    c.run_until(lambda: len(st.data) == 65535, 20, "the body")
    deadline = time.monotonic() + 5
    while not st.done and time.monotonic() < deadline:
        c.pump(0.2)
    c.close()
    assert st.ended and st.reset is None, st


@pytest.mark.deadline(90)
def test_small_window_many_updates(backend, h2weir):
    """INITIAL_WINDOW_SIZE 4096 (h2 checks weir never overruns it) and a
    1 MB body comes through many small WINDOW_UPDATEs."""
    b = backend(B.huge(MB))
    w = h2weir(b)
    c = H2Client(w.port, settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 4096})
    c.run_until(lambda: c.settings_acked >= 2, 10, "our SETTINGS to be acknowledged")
    st = c.get("/small-window", timeout=60)
    c.close()
    assert st.status == 200 and bytes(st.data) == B.PATTERN
    assert st.data_frames >= MB // 4096


# ---------------------------------------------------------------------------
# F. Graceful shutdown


@pytest.mark.deadline(90)
@pytest.mark.parametrize("tls", [False, True], ids=["h2c", "tls"])
def test_sigterm_goaway_and_download_completes(backend, h2weir, tls):
    gate = threading.Event()
    total = 2 * MB
    first = 256 * 1024

    def handler(conn, req):
        conn.send(B.response_head(200, [("Content-Length", str(total))]) + B.PATTERN[:first])
        gate.wait(30)
        conn.send((B.PATTERN * 2)[first:total])

    b = backend(handler)
    w = h2weir(b, tls=tls)
    r = RawH2(w.port, tls=tls)
    r.send_headers(1, r.request_headers("/slow-download"))
    r.expect(lambda f: f.type == U.DATA and f.sid == 1, what="the first DATA")
    w.signal(signal.SIGTERM)
    g = r.expect_goaway(timeout=20)
    assert g.code == U.NO_ERROR and g.last_sid >= 1, g
    headers, body, rst = r.stream_result(1)
    assert rst is None and len(body) < total, "stream done before the drain: %r" % r.frames
    gate.set()
    headers, body, rst = r.expect_end(1, timeout=30)
    assert rst is None, rst
    assert dict(headers)[":status"] == "200"
    assert len(body) == total and body == (B.PATTERN * 2)[:total]
    assert r.wait_eof(15), "connection not closed after its last stream"
    r.close()
    assert w.wait(20) == 0
    check_stopped(w)
