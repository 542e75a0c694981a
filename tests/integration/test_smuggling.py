"""Malformed and ambiguous requests: never forwarded, answered with the
documented 4xx/5xx, connection closed."""
import re
import time

import pytest

import backends as B

H = b"Host: x\r\n"

# (id, raw request, expected status)
CASES = [
    ("cl_and_te", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\n", 400),
    ("te_and_cl", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
     b"0\r\n\r\n", 400),
    ("two_different_cl", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\n"
     b"hello!", 400),
    ("cl_list_differs", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5, 6\r\n\r\nhello!", 400),
    ("cl_negative", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n", 400),
    ("cl_plus_sign", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +5\r\n\r\nhello", 400),
    ("cl_not_a_number", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5x\r\n\r\nhello", 400),
    ("cl_overflow", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 99999999999999999999999\r\n\r\n",
     400),
    ("te_gzip", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\nabc", 400),
    ("te_chunked_gzip", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, gzip\r\n\r\n"
     b"0\r\n\r\n", 400),
    ("te_chunked_twice", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("te_obfuscated", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
     400),
    ("te_space_before_colon", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding : chunked\r\n\r\n"
     b"0\r\n\r\n", 400),
    ("te_in_http10", b"POST / HTTP/1.0\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("chunk_size_zz", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
     b"zz\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk_size_overflow", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
     b"10000000000000001\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk_missing_crlf", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
     b"5\r\nhelloXX3\r\nabc\r\n0\r\n\r\n", 400),
    ("chunk_size_bare_lf_cr", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
     b"5\rhello\r\n0\r\n\r\n", 400),
    ("space_before_colon", b"GET / HTTP/1.1\r\n" + H + b"X-Foo : bar\r\n\r\n", 400),
    ("obs_fold", b"GET / HTTP/1.1\r\n" + H + b"X-Foo: bar\r\n baz\r\n\r\n", 400),
    ("bare_cr_in_value", b"GET / HTTP/1.1\r\n" + H + b"X-Foo: b\rar\r\n\r\n", 400),
    ("bare_cr_line_end", b"GET / HTTP/1.1\r\n" + H + b"X-Foo: bar\r\r\n\r\n", 400),
    ("nul_in_value", b"GET / HTTP/1.1\r\n" + H + b"X-Foo: b\x00ar\r\n\r\n", 400),
    ("nul_in_name", b"GET / HTTP/1.1\r\n" + H + b"X-F\x00oo: bar\r\n\r\n", 400),
    ("empty_header_name", b"GET / HTTP/1.1\r\n" + H + b": bar\r\n\r\n", 400),
    ("no_colon", b"GET / HTTP/1.1\r\n" + H + b"X-Foo bar\r\n\r\n", 400),
    ("invalid_method_token", b"G(T / HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("method_with_space", b"GET  / HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("missing_version", b"GET /\r\n" + H + b"\r\n", (400, 505)),
    ("lowercase_http", b"GET / http/1.1\r\n" + H + b"\r\n", (400, 505)),
    ("target_with_ctl", b"GET /a\x01b HTTP/1.1\r\n" + H + b"\r\n", 400),
    # RFC 9112 section 3.2: a server MUST answer 400 to an HTTP/1.1 request without
    # Host, or with more than one Host field line.
    ("missing_host_11", b"GET / HTTP/1.1\r\nX-Foo: bar\r\n\r\n", 400),
    ("two_hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("http_1_2", b"GET / HTTP/1.2\r\n" + H + b"\r\n", 505),
    ("http_2_0", b"GET / HTTP/2.0\r\n" + H + b"\r\n", 505),
    ("head_over_64k", b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * 70000 + b"\r\n\r\n", 431),
    ("many_headers_101", b"GET / HTTP/1.1\r\n" + H
     + b"".join(b"X-H%d: v\r\n" % i for i in range(100)) + b"\r\n", 431),
]


def send_bad(port, raw, timeout=10):
    """Sends raw, returns (response, closed?)."""
    s = B.connect(port, timeout=timeout)
    try:
        try:
            s.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the proxy may answer and close before reading everything
        rd = B.Reader(s)
        r = B.read_response(rd)
        closed = B.closed_after(s, 5)
        return r, closed
    finally:
        s.close()


def wait_log(w, pattern, timeout=3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if re.search(pattern, w.stderr(), re.M):
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def proxy(backend, weir):
    b = backend(B.echo())
    w = weir([b], "--max-body-size", "1000")
    return b, w


def _param(case):
    if hasattr(case, "marks"):  # already a pytest.param
        return pytest.param(*case.values[1:], id=case.values[0], marks=case.marks)
    return pytest.param(*case[1:], id=case[0])


@pytest.mark.parametrize("raw,status", [_param(c) for c in CASES])
def test_rejected_and_not_forwarded(proxy, raw, status):
    b, w = proxy
    r, closed = send_bad(w.port, raw)
    statuses = status if isinstance(status, tuple) else (status,)
    assert r.status in statuses, r
    status = r.status
    assert closed, "connection left open after a %d" % status
    time.sleep(0.05)
    assert b.request_count() == 0, "forwarded to the backend: %r" % b.requests
    assert b.heads == 0, "a request head reached the backend"
    # e.g. 'warn client 127.0.0.1: "POST /": 400: invalid request body framing'
    assert wait_log(w, r"^.*warn.*client 127\.0\.0\.1: .*\b%d\b" % status), w.stderr()[-2000:]
    # The proxy keeps serving others.
    assert B.get(w.port, "/after").status == 200


def test_smuggled_request_after_cl_te_not_executed(proxy):
    b, w = proxy
    raw = (b"POST /outer HTTP/1.1\r\n" + H + b"Content-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"0\r\n\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n")
    s = B.connect(w.port, timeout=10)
    s.sendall(raw)
    rd = B.Reader(s)
    r = B.read_response(rd)
    assert r.status == 400
    assert B.closed_after(s, 5)
    s.close()
    time.sleep(0.1)
    assert [q.path for q in b.requests] == []


def test_bad_chunk_after_forwarded_start_not_completed(proxy):
    """A bad chunk size deep into a body: whatever reached the backend must
    not be a complete request, the client gets an error or a close."""
    b, w = proxy
    s = B.connect(w.port, timeout=10)
    s.sendall(b"POST /late HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
              b"a\r\n0123456789\r\n")
    time.sleep(0.2)
    s.sendall(b"zz\r\nboom\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
    rd = B.Reader(s)
    try:
        r = B.read_response(rd)
        assert r.status == 400
    except (B.PeerClosed, ConnectionResetError):
        pass
    assert B.closed_after(s, 5)
    s.close()
    time.sleep(0.1)
    assert b.request_count() == 0, b.requests


def test_body_over_max_body_size_content_length(proxy):
    b, w = proxy
    raw = b"POST /big HTTP/1.1\r\n" + H + b"Content-Length: 1001\r\n\r\n" + b"b" * 1001
    r, closed = send_bad(w.port, raw)
    assert r.status == 413
    assert closed
    assert b.request_count() == 0 and b.heads == 0


def test_body_at_max_body_size_accepted(proxy):
    b, w = proxy
    raw = b"POST /ok HTTP/1.1\r\n" + H + b"Content-Length: 1000\r\nConnection: close\r\n\r\n" + b"b" * 1000
    r = B.request(w.port, raw)
    assert r.status == 200 and r.body == b"b" * 1000


def test_body_over_max_body_size_chunked(proxy):
    b, w = proxy
    raw = (b"POST /bigchunks HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
           + (b"1f4\r\n" + b"c" * 500 + b"\r\n") * 3 + b"0\r\n\r\n")
    s = B.connect(w.port, timeout=10)
    try:
        s.sendall(raw)
    except (BrokenPipeError, ConnectionResetError):
        pass
    rd = B.Reader(s)
    try:
        r = B.read_response(rd)
        assert r.status == 413
    except (B.PeerClosed, ConnectionResetError):
        pass  # acceptable once the head went upstream; never a complete request
    assert B.closed_after(s, 5)
    s.close()
    time.sleep(0.1)
    assert b.request_count() == 0, b.requests


def test_slow_head_gets_408(backend, weir):
    b = backend()
    w = weir([b], "--header-timeout", "300")
    s = B.connect(w.port, timeout=10)
    s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n")  # no final CRLF
    t0 = time.monotonic()
    data = B.Reader(s).read_to_eof()
    s.close()
    assert time.monotonic() - t0 < 5
    assert data.startswith(b"HTTP/1.1 408"), data
    assert b.heads == 0
