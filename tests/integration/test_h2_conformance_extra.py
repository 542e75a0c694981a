"""HTTP/2 conformance cases h2spec found missing (src/http/h2_server.c,
src/http/h1_server.c), pinned with raw frames so that they need no h2spec:

- a HEADERS on a stream id at or below one the client already used, on no
  open stream, is a connection error (RFC 9113 5.1.1: PROTOCOL_ERROR for an
  id never used; 5.1: STREAM_CLOSED after the client's own RST_STREAM),
  which libnghttp2 ignores on purpose, while trailers on an open stream and
  late frames on a stream weir reset are still accepted / ignored;
- a wrong connection preface on an h2c port (prior knowledge) gets
  GOAWAY(PROTOCOL_ERROR) and a close, not an HTTP/1 505 (RFC 9113 3.4),
  while HTTP/1.1 on the same port and 505 on a plain HTTP/1 port stay.

Every wait is bounded.
"""
import shutil
import signal
import socket
import struct
import threading

import pytest

pytest.importorskip("h2", reason="python3-h2 is needed")
pytest.importorskip("hpack", reason="python3-hpack is needed")

import backends as B  # noqa: E402
import h2util as U  # noqa: E402
from conftest import binary, check_stopped, free_port, require_binary  # noqa: E402
from h2util import H2Client, RawH2  # noqa: E402


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    if not shutil.which("openssl"):
        pytest.skip("openssl command not found")
    return U.make_cert(tmp_path_factory.mktemp("h2cert"))


@pytest.fixture
def h2weir(tmp_path, start_proc, request):
    """Factory: h2weir(routes, tls=False, server=None) -> Proc running weir
    on one server, h2c = true on a plain one unless server says otherwise."""
    count = [0]

    def start(routes, tls=False, server=None):
        require_binary("weir")
        port = free_port()
        srv = dict(server or {})
        if not tls:
            srv.setdefault("h2c", True)
        count[0] += 1
        path = tmp_path / ("weir-h2x-%d.toml" % count[0])
        path.write_text(U.config(port, routes, request.getfixturevalue("cert") if tls else None,
                                 srv))
        p = start_proc([binary("weir"), "-c", str(path), "--threads", "2"], port, "weir")
        p.tls = tls
        return p

    return start


def gated(backend):
    """A backend that answers only once the gate opens: weir cannot have
    answered (and reset) a stream before the client's next frames."""
    gate = threading.Event()

    def handler(conn, req):
        gate.wait(30)
        conn.send(B.response_head(200, [("Content-Length", "3")]) + b"ok\n")

    return backend(handler), gate


def still_serves(w):
    c = H2Client(w.port, tls=w.tls)
    try:
        assert c.get("/still").status == 200
    finally:
        c.close()


def expect_connection_error(r, code):
    g = r.expect_goaway()
    assert g.code == code, "got %r, want %s" % (g, U.error_name(code))
    assert r.wait_eof(10), "connection not closed after GOAWAY: %r" % r.frames
    return g


TRANSPORTS = pytest.mark.parametrize("tls", [False, True], ids=["h2c", "tls"])


# ---------------------------------------------------------------------------
# Stream ids and closed streams


@TRANSPORTS
def test_headers_with_lower_stream_id_is_connection_error(backend, h2weir, tls):
    """h2spec http2/5.1.1 #2: HEADERS on 5 then on 3, back to back."""
    b = backend(B.fixed(b"ok\n"))
    w = h2weir(b, tls=tls)
    r = RawH2(w.port, tls=tls)
    r.send(r.headers_frame(5, r.request_headers("/five"))
           + r.headers_frame(3, r.request_headers("/three")))
    g = expect_connection_error(r, U.PROTOCOL_ERROR)
    assert g.last_sid == 5, g
    r.close()
    assert "/three" not in [q.path for q in b.requests]
    still_serves(w)


def test_headers_with_lower_stream_id_after_response_is_connection_error(backend, h2weir):
    """The same once stream 5 is over and forgotten by nghttp2: stream 3 was
    never opened, so it is closed (5.1.1), not a stream weir reset."""
    b = backend(B.fixed(b"ok\n"))
    w = h2weir(b)
    r = RawH2(w.port)
    r.send_headers(5, r.request_headers("/five"))
    headers, body, rst = r.expect_end(5)
    assert rst is None and dict(headers)[":status"] == "200" and body == b"ok\n"
    r.send_headers(3, r.request_headers("/three"))
    expect_connection_error(r, U.PROTOCOL_ERROR)
    r.close()
    assert [q.path for q in b.requests] == ["/five"]


def test_headers_after_client_reset_is_stream_closed(backend, h2weir):
    """h2spec http2/5.1 #9: HEADERS on a stream the client reset itself."""
    b, gate = gated(backend)
    w = h2weir(b)
    r = RawH2(w.port)
    try:
        r.send(r.headers_frame(1, r.request_headers("/reset"), end_stream=False)
               + U.frame(U.RST_STREAM, 0, 1, struct.pack(">I", U.CANCEL))
               + r.headers_frame(1, r.request_headers("/reset")))
        expect_connection_error(r, U.STREAM_CLOSED)
    finally:
        gate.set()
        r.close()


def test_headers_after_client_reset_is_stream_closed_after_weir_reset_too(backend, h2weir):
    """Weir reset stream 1 first, the client then reset it too: its HEADERS
    after its own RST_STREAM is still an error (nghttp2 keeps such a closed
    stream for priorities, so it must not pass for an open one)."""
    b = backend(B.fixed(b"ok\n"))
    w = h2weir(b)
    r = RawH2(w.port)
    r.send_headers(1, r.request_headers("/bad", "POST", [("X-Upper", "1")]), end_stream=False)
    assert r.expect_rst(1).code == U.PROTOCOL_ERROR
    r.send(U.frame(U.RST_STREAM, 0, 1, struct.pack(">I", U.CANCEL))
           + r.headers_frame(1, r.request_headers("/again")))
    expect_connection_error(r, U.STREAM_CLOSED)
    r.close()
    assert b.request_count() == 0


def test_trailers_on_open_stream_below_highest_id_are_accepted(backend, h2weir):
    """Streams 1 and 3 open; trailers on 1 (an id below the highest used)
    end it normally, and both are answered."""
    b = backend(B.echo())
    w = h2weir(b)
    r = RawH2(w.port)
    post = [("content-type", "text/plain")]
    r.send(r.headers_frame(1, r.request_headers("/one", "POST", post), end_stream=False)
           + r.headers_frame(3, r.request_headers("/three", "POST", post), end_stream=False)
           + U.frame(U.DATA, 0, 1, b"body one")
           + U.frame(U.DATA, 0, 3, b"body three")
           + r.headers_frame(1, [("x-trailer", "1")])
           + r.headers_frame(3, [("x-trailer", "3")]))
    for sid in (1, 3):
        headers, body, rst = r.expect_end(sid)
        assert rst is None and dict(headers)[":status"] == "200", r.frames
    assert not any(f.type == U.GOAWAY for f in r.frames), r.frames
    r.close()
    assert sorted(q.body for q in b.requests) == [b"body one", b"body three"]


def test_late_frames_on_stream_weir_reset_are_ignored(backend, h2weir):
    """RFC 9113 5.1: frames the client sent before it saw our RST_STREAM
    are ignored, a trailer HEADERS included; the connection goes on."""
    b = backend(B.fixed(b"ok\n"))
    w = h2weir(b)
    r = RawH2(w.port)
    # An upper-case field name: nghttp2 resets the stream (PROTOCOL_ERROR).
    r.send_headers(1, r.request_headers("/bad", "POST", [("X-Upper", "1")]), end_stream=False)
    assert r.expect_rst(1).code == U.PROTOCOL_ERROR
    r.send(U.frame(U.DATA, 0, 1, b"late body") + r.headers_frame(1, [("x-trailer", "late")]))
    r.send_headers(3, r.request_headers("/next"))
    headers, body, rst = r.expect_end(3)
    assert rst is None and dict(headers)[":status"] == "200" and body == b"ok\n", r.frames
    assert not any(f.type == U.GOAWAY for f in r.frames), r.frames
    r.close()
    assert [q.path for q in b.requests] == ["/next"]


def test_trailers_of_stream_ignored_after_goaway_are_ignored(backend, h2weir):
    """RFC 9113 6.8: after weir's final GOAWAY, a stream the client opened above
    its last stream id is ignored, its trailer HEADERS too (an id below the
    highest used, on no stream): the stream in flight still completes."""
    b, gate = gated(backend)
    w = h2weir(b)
    r = RawH2(w.port)
    try:
        r.send_headers(1, r.request_headers("/inflight"))
        assert U.wait_for(lambda: b.heads >= 1), "request did not reach the backend"
        w.signal(signal.SIGTERM)
        # Two steps (RFC 9113 6.8): a notice that takes every stream id,
        # then, after a round trip, the final one with the last id served.
        g = r.expect_goaway(timeout=20)
        assert g.code == U.NO_ERROR and g.last_sid == 0x7FFFFFFF, g
        g = r.expect(lambda f: f.type == U.GOAWAY and f.last_sid != 0x7FFFFFFF, timeout=20,
                     what="final GOAWAY")
        assert g.code == U.NO_ERROR and g.last_sid == 1, g
        r.send(r.headers_frame(3, r.request_headers("/late", "POST"), end_stream=False)
               + U.frame(U.DATA, 0, 3, b"late body")
               + r.headers_frame(3, [("x-trailer", "late")]))
        r.send_frame(U.PING, 0, 0, b"pingpong")  # answered: the frames above are read
        r.expect(lambda f: f.type == U.PING and f.flags & U.ACK, what="PING ACK")
        gate.set()
        headers, body, rst = r.expect_end(1, timeout=30)
        assert rst is None and dict(headers)[":status"] == "200" and body == b"ok\n", r.frames
        assert [f.code for f in r.frames if f.type == U.GOAWAY] == [U.NO_ERROR] * 2, r.frames
        assert r.wait_eof(15), "connection not closed after its last stream"
    finally:
        gate.set()
        r.close()
    assert w.wait(20) == 0
    check_stopped(w)
    assert [q.path for q in b.requests] == ["/inflight"]


# ---------------------------------------------------------------------------
# The connection preface on an h2c port


def read_all(s, timeout=10.0):
    """Everything the server sends until it closes (bounded)."""
    s.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not chunk:
            break
        data += chunk
    return data


def frames_of(data):
    out = []
    while len(data) >= 9:
        length = struct.unpack(">I", b"\0" + data[:3])[0]
        ftype, flags, sid = struct.unpack(">BBI", data[3:9])
        out.append(U.Frame(ftype, flags, sid & 0x7fffffff, data[9:9 + length]))
        data = data[9 + length:]
    assert data == b"", "trailing bytes that are no frame: %r" % data
    return out


@pytest.mark.parametrize("preface", [
    b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\nX\r\n",
    b"INVALID CONNECTION PREFACE\r\n\r\n",  # what h2spec http2/3.5 #2 sends
], ids=["wrong_magic", "wrong_tail", "h2spec"])
def test_h2c_bad_preface_gets_goaway(backend, h2weir, preface):
    b = backend(B.fixed(b"ok\n"))
    w = h2weir(b)
    s = socket.create_connection((U.LOOPBACK, w.port), timeout=10)
    s.sendall(preface)
    data = read_all(s)
    s.close()
    assert not data.startswith(b"HTTP/1"), data
    frames = frames_of(data)
    assert frames and frames[0].type == U.SETTINGS, frames  # the server preface first
    goaways = [f for f in frames if f.type == U.GOAWAY]
    assert len(goaways) == 1 and goaways[0].code == U.PROTOCOL_ERROR, frames
    assert b.request_count() == 0
    still_serves(w)


def test_tls_h2_bad_preface_gets_goaway(backend, h2weir):
    b = backend(B.fixed(b"ok\n"))
    w = h2weir(b, tls=True)
    s = U.connect(w.port, tls=True)
    s.sendall(b"INVALID CONNECTION PREFACE\r\n\r\n")
    frames = frames_of(read_all(s))
    s.close()
    goaways = [f for f in frames if f.type == U.GOAWAY]
    assert len(goaways) == 1 and goaways[0].code == U.PROTOCOL_ERROR, frames
    assert b.request_count() == 0


def test_h2c_port_still_serves_http11_and_plain_port_answers_505(backend, h2weir):
    b = backend(B.fixed(b"ok\n"))
    w = h2weir(b)
    resp = B.request(w.port, b"GET /h1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (resp.status, resp.body) == (200, b"ok\n")
    plain = h2weir(b, server={"h2c": False})
    resp = B.request(plain.port, b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n")
    assert resp.status == 505, resp
