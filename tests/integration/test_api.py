"""The phase API, through examples/round_robin and tests/tools' weir-test-app."""
import time

import pytest

import backends as B
from conftest import free_port, require_binary


@pytest.fixture
def test_app(backend, start_proc):
    path = require_binary("weir-test-app")
    b = backend(B.fixed(b"proxied\n"))
    port = free_port()
    p = start_proc([path, "127.0.0.1:%d" % port, b.addr], port, "weir-test-app")
    return b, p


@pytest.fixture
def round_robin(backend, start_proc):
    path = require_binary("round_robin")
    b1 = backend(B.fixed(b"peer1\n"))
    b2 = backend(B.fixed(b"peer2\n"))
    port = free_port()
    p = start_proc([path, "127.0.0.1:%d" % port, b1.addr, b2.addr], port, "round_robin")
    return b1, b2, p


def test_phases_listed_for_proxied_request(test_app):
    b, p = test_app
    r = B.get(p.port, "/plain")
    assert r.status == 200 and r.body == b"proxied\n"
    phases = [x.strip() for x in r.headers.get("X-Phases", "").split(",")]
    assert phases[:8] == ["early_request_filter", "request_filter", "request_cache_filter",
                          "upstream_peer", "connected_to_upstream", "upstream_request_filter",
                          "upstream_response_filter", "response_filter"], phases
    assert b.request_count() == 1


def test_timer_resume(test_app):
    b, p = test_app
    t0 = time.monotonic()
    r = B.get(p.port, "/delayed")
    took = time.monotonic() - t0
    assert r.status == 200 and r.body == b"resumed after timer\n"
    assert took >= 0.09, took
    assert b.request_count() == 0


def test_timer_resume_concurrent(test_app):
    """Several pending sessions on one worker resume independently."""
    b, p = test_app
    socks = [B.connect(p.port) for _ in range(10)]
    for s in socks:
        s.sendall(b"GET /delayed HTTP/1.1\r\nHost: x\r\n\r\n")
    for s in socks:
        r = B.read_response(B.Reader(s))
        assert r.status == 200 and r.body == b"resumed after timer\n"
        s.close()


def test_resume_from_another_thread(test_app):
    b, p = test_app
    for _ in range(5):
        r = B.get(p.port, "/thread-resume")
        assert r.status == 200 and r.body == b"resumed from thread\n"
    assert b.request_count() == 0


def test_request_filter_rejects(test_app):
    b, p = test_app
    r = B.get(p.port, "/anything", headers=[("X-Reject", "1")])
    assert r.status == 403 and r.body == b"rejected\n"
    assert b.request_count() == 0
    # Keep-alive survives an answered request.
    s = B.connect(p.port)
    rd = B.Reader(s)
    s.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\nX-Reject: 1\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    assert B.read_response(rd).status == 403
    r2 = B.read_response(rd)
    s.close()
    assert r2.status == 200 and r2.body == b"proxied\n"


@pytest.mark.parametrize("value", ["0", "1", "2", "-1", "999"])
def test_phase_result_that_is_an_io_code_fails_the_request(test_app, value):
    """0, 1 and 2 are WEIR_OK, WEIR_AGAIN and WEIR_DONE, and -1 was the old
    WEIR_PHASE_ERROR: cast to a phase result, none of them may pass for
    CONTINUE, ANSWERED or PENDING (the request would go upstream, or hang)."""
    b, p = test_app
    r = B.get(p.port, "/x", headers=[("X-Bad-Result", value)])
    assert r.status == 500
    assert b.request_count() == 0
    assert ("a phase returned %s, which is not a weir_phase_result" % value) in p.stderr()
    # The connection's next request is served.
    assert B.get(p.port, "/plain").status == 200


def test_client_abort_during_pending_phase(test_app):
    """A client that leaves while its session pends: no crash, no leak."""
    b, p = test_app
    for path in (b"/delayed", b"/thread-resume"):
        s = B.connect(p.port)
        s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path)
        s.close()
    time.sleep(0.3)
    assert B.get(p.port, "/delayed").status == 200


def test_round_robin_example(round_robin):
    b1, b2, p = round_robin
    bodies = [B.get(p.port, "/rr%d" % i).body for i in range(10)]
    assert bodies.count(b"peer1\n") == 5 and bodies.count(b"peer2\n") == 5
    for req in b1.requests + b2.requests:
        assert req.headers.get_all("Host") == ["one.one.one.one"]
    deadline = time.monotonic() + 3
    lines = []
    while time.monotonic() < deadline:
        lines = [ln for ln in p.stdout().splitlines() if ln.startswith("upstream peer is:")]
        if len(lines) >= 10:
            break
        time.sleep(0.05)
    assert len(lines) == 10, p.stdout()
    assert sum(b1.addr in ln for ln in lines) == 5
    assert sum(b2.addr in ln for ln in lines) == 5


def _post(port, body=None, chunks=None, extra=b""):
    head = b"POST /read-body HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + extra
    if chunks is not None:
        payload = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
        raw = head + b"Transfer-Encoding: chunked\r\n\r\n" + payload
    else:
        raw = head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    return B.request(port, raw, "POST")


def test_read_body_whole(test_app):
    b, p = test_app
    r = _post(p.port, b"hello body")
    assert r.status == 200 and r.body == b"got 10 bytes: hello body"
    r = _post(p.port, chunks=[b"a" * 5000, b"b" * 7000])
    assert r.status == 200 and r.body == b"got 12000 bytes: " + b"a" * 5000 + b"b" * 7000
    r = _post(p.port, b"")
    assert r.status == 200 and r.body == b"got 0 bytes: "
    assert b.request_count() == 0


def test_read_body_over_the_limit(test_app):
    b, p = test_app
    r = _post(p.port, b"x" * (64 * 1024 + 1))
    assert r.status == 413
    r = _post(p.port, chunks=[b"y" * 40000, b"z" * 40000])
    assert r.status == 413


def test_read_body_client_gone(test_app):
    b, p = test_app
    s = B.connect(p.port)
    s.sendall(b"POST /read-body HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\npartial")
    s.close()  # the app gets an error and the session ends cleanly (sanitizers check)
    time.sleep(0.2)
    assert B.get(p.port, "/delayed").status == 200


def test_read_body_pending_at_immediate_stop(test_app):
    """SIGQUIT while a phase waits for a body: the session is told and ends;
    the process exits cleanly (the sanitizers check the teardown)."""
    import signal
    b, p = test_app
    s = B.connect(p.port)
    s.sendall(b"POST /read-body HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\npartial")
    time.sleep(0.2)
    p.signal(signal.SIGQUIT)
    assert p.wait(timeout=10) == 0
    s.close()
