"""Sub-requests (weir/subrequest.h) through tests/tools' weir-test-app:
GET /sub makes them, GET /sub-stats counts their callbacks.

Success over HTTP/1.1, HTTP/2 (h2c and by ALPN) and TLS; the shared pool;
timeouts, refused connections, a TLS failure, bodies over the limit, a
backend that breaks the framing or dies mid-body; the client leaving while
one is pending; a worker stopping with some in flight; 1,000 at once."""
import socket
import threading
import time
import urllib.parse

import pytest

import backends as B
import tlsutil as T
from conftest import binary, free_port, require_binary


@pytest.fixture
def app(backend, start_proc):
    path = require_binary("weir-test-app")
    b = backend(B.fixed(b"proxied\n"))
    port = free_port()
    return start_proc([path, "127.0.0.1:%d" % port, b.addr], port, "weir-test-app")


def sub(app, to, headers=(), **params):
    q = urllib.parse.urlencode(dict(to=to, **params))
    return B.get(app.port, "/sub?" + q, headers=headers, timeout=30)


def parse(r):
    head, _, body = r.body.partition(b"\n")
    f = head.decode().split()
    return dict(zip(f[::2], (int(x) for x in f[1::2]))), body


def stats(app):
    f = B.get(app.port, "/sub-stats").body.decode().split()
    return dict(zip(f[::2], (int(x) for x in f[1::2])))


def wait_stats(app, pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = stats(app)
        if pred(st):
            return st
        time.sleep(0.02)
    return stats(app)


def test_get_and_the_pool(app, backend):
    b = backend(B.echo())
    r = sub(app, b.addr, path="/check?x=1", headers=[("X-Echo", "hi")])
    assert r.status == 200, r.body
    f, body = parse(r)
    assert f["status"] == 200 and f["code"] == 0 and f["reused"] == 0
    req = b.requests[0]
    assert req.method == "GET" and req.path == "/check?x=1"
    assert req.headers.get("host") == b.addr and req.headers.get("x-echo") == "hi"
    # The connection went back to the shared pool: the next one reuses it
    # (two workers: a worker takes another's idle connection too).
    f, _ = parse(sub(app, b.addr))
    assert f["status"] == 200 and f["reused"] == 1
    assert b.connections == 1


def test_post_with_a_body(app, backend):
    b = backend(B.echo())
    f, body = parse(sub(app, b.addr, method="POST", path="/p", body="a=1&b=2"))
    assert f["status"] == 200
    req = b.requests[0]
    assert req.method == "POST" and req.body == b"a=1&b=2"
    assert req.headers.get("content-length") == "7"
    # an empty POST says so
    parse(sub(app, b.addr, method="POST", path="/e"))
    assert b.requests[1].headers.get("content-length") == "0"


def test_status_headers_and_body_come_back(app, backend):
    b = backend(B.fixed(b"denied\n", status=403, headers=[("X-Echo", "from-backend")]))
    r = sub(app, b.addr)
    f, body = parse(r)
    assert f["status"] == 403 and f["code"] == 0 and body == b"denied\n"
    assert r.headers.get("x-sub-echo") == "from-backend"


def test_chunked_response(app, backend):
    b = backend(B.chunked())
    f, body = parse(sub(app, b.addr))
    assert f["status"] == 200 and body == b"hello chunked world\n"


def test_refused(app):
    f, _ = parse(sub(app, "127.0.0.1:%d" % free_port()))
    assert f["status"] == 502 and f["code"] == 1


def test_timeout_when_the_backend_never_answers(app, backend):
    b = backend(B.slow(5))
    t0 = time.monotonic()
    f, _ = parse(sub(app, b.addr, timeout=300))
    assert f["status"] == 504 and f["code"] == 4
    assert time.monotonic() - t0 < 4


def test_connect_timeout(app):
    """A listener whose backlog is full does not finish the handshake."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(0)
    fill = []
    try:
        for _ in range(8):  # the backlog overflows: SYNs are dropped
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(ls.getsockname())
            fill.append(c)
        f, _ = parse(sub(app, "127.0.0.1:%d" % ls.getsockname()[1], ct=200, timeout=5000))
        assert f["status"] == 504 and f["code"] == 4
    finally:
        for c in fill:
            c.close()
        ls.close()


def test_body_over_the_limit(app, backend):
    b = backend(B.fixed(b"x" * 5000))
    f, _ = parse(sub(app, b.addr, max=1000))
    assert f["status"] == 502 and f["code"] == 5
    c = backend(B.chunked(pieces=(b"y" * 800, b"y" * 800), trailers=()))
    f, _ = parse(sub(app, c.addr, max=1000))
    assert f["status"] == 502 and f["code"] == 5
    f, body = parse(sub(app, c.addr, max=1600))
    assert f["status"] == 200 and len(body) == 1600


def test_backend_dies_mid_body(app, backend):
    b = backend(B.close_mid(announced=10000, sent=100))
    f, _ = parse(sub(app, b.addr))
    assert f["status"] == 502 and f["code"] == 3


def test_malformed_response(app, backend):
    def bad(conn, req):
        conn.send(b"HTTP/1.1 2x0 Nope\r\n\r\n")
        conn.close_after = True
    b = backend(bad)
    f, _ = parse(sub(app, b.addr))
    assert f["status"] == 502 and f["code"] == 3


def test_stale_pooled_connection_is_replaced(app, backend):
    """A kept-alive connection the backend drops as the next request comes
    (its idle timeout raced ours): no response byte came, so the request
    goes again, once, on a new connection."""
    served = set()

    def once_per_connection(conn, req):
        if req.conn_id in served:
            return "close"
        served.add(req.conn_id)
        conn.send(B.response_head(200, [("Content-Length", "3")]) + b"ok\n")
    b = backend(once_per_connection)
    f, _ = parse(sub(app, b.addr))
    assert f["status"] == 200 and f["reused"] == 0
    f, body = parse(sub(app, b.addr))
    assert f["status"] == 200 and body == b"ok\n" and f["reused"] == 0
    assert b.connections == 2 and b.heads == 3


def test_client_leaving_cancels_the_sub_request(app, backend):
    b = backend(B.slow(30))
    before = stats(app)
    s = B.connect(app.port)
    s.sendall(b"GET /sub?to=%s&timeout=30000 HTTP/1.1\r\nHost: x\r\n\r\n" % b.addr.encode())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and b.heads == 0:
        time.sleep(0.02)
    assert b.heads == 1
    s.close()
    st = wait_stats(app, lambda st: st["cancelled"] > before["cancelled"])
    assert st["cancelled"] == before["cancelled"] + 1
    assert wait_stats(app, lambda st: st["live"] == 0)["live"] == 0
    # weir closed its connection to the backend
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not b.closed_by_peer:
        time.sleep(0.02)
    assert b.closed_by_peer


def test_detached_outlives_its_request(app, backend):
    b = backend(B.slow(0.3))
    r = sub(app, b.addr, detached=1)
    assert r.status == 200 and r.body == b"started\n"
    st = wait_stats(app, lambda st: st["detached"] >= 1)
    assert st["detached"] == 1 and b.request_count() == 1


def test_session_end_cancels_what_it_did_not_wait_for(app, backend):
    b = backend(B.slow(30))
    before = stats(app)
    r = sub(app, b.addr, forget=1)
    assert r.status == 200 and r.body == b"left\n"
    assert wait_stats(app, lambda st: st["live"] == 0)["live"] == 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not b.closed_by_peer:
        time.sleep(0.02)
    assert b.closed_by_peer, "the backend connection stayed open"
    assert stats(app)["done"] == before["done"], "no callback after the session ended"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return T.PKI(tmp_path_factory.mktemp("pki"))


def test_tls(app, pki):
    b = T.TLSBackend(B.fixed(b"secure\n"), cert=pki.path("localhost.crt"),
                     key=pki.path("localhost.key"))
    try:
        f, body = parse(sub(app, b.addr, tls=1, ca=pki.path("ca.crt"), sni="localhost"))
        assert f["status"] == 200 and body == b"secure\n"
        assert b.sni == ["localhost"]
        # a name the certificate does not have
        f, _ = parse(sub(app, b.addr, tls=1, ca=pki.path("ca.crt"), sni="other.test"))
        assert f["status"] == 502 and f["code"] == 2
    finally:
        b.close()


def back_weir(start_proc, tmp_path, backend_addr, extra="", tls=None):
    """A weir server in front of backend_addr: HTTP/2 for the client."""
    require_binary("weir")
    port = free_port()
    log = tmp_path / "back.log"
    certs = ""
    if tls:
        certs = ('[certificates.l]\ncert = "%s"\nkey = "%s"\n'
                 % (tls.path("localhost.crt"), tls.path("localhost.key")))
    cfg = tmp_path / "back.toml"
    cfg.write_text(
        certs + '[servers.b]\naddr = "127.0.0.1:%d"\nlocations = ["f"]\n%s%s'
        'access_log = "{protocol} {uri}"\naccess_log_file = "%s"\n'
        '[locations.f]\nupstream = "u"\n[upstreams.u]\naddrs = ["%s"]\n'
        % (port, extra, 'certificates = ["l"]\n' if tls else "", log, backend_addr))
    start_proc([binary("weir"), "-c", str(cfg), "--threads", "1"], port, "back")
    return port, log


def test_h2c(app, backend, start_proc, tmp_path):
    b = backend(B.fixed(b"over h2\n"))
    port, log = back_weir(start_proc, tmp_path, b.addr, 'h2c = true\n')
    f, body = parse(sub(app, "127.0.0.1:%d" % port, h2=1, path="/h2"))
    assert f["status"] == 200 and body == b"over h2\n"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and "/h2" not in (log.read_text() if log.exists() else ""):
        time.sleep(0.02)
    assert "HTTP/2.0 /h2" in log.read_text()


def test_h2_by_alpn(app, backend, start_proc, tmp_path, pki):
    b = backend(B.fixed(b"alpn\n"))
    port, log = back_weir(start_proc, tmp_path, b.addr, 'alpn = ["h2", "http/1.1"]\n', tls=pki)
    f, body = parse(sub(app, "127.0.0.1:%d" % port, tls=1, alpn=1, ca=pki.path("ca.crt"),
                        sni="localhost", path="/a"))
    assert f["status"] == 200 and body == b"alpn\n"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and "/a" not in (log.read_text() if log.exists() else ""):
        time.sleep(0.02)
    assert "HTTP/2.0 /a" in log.read_text()


def test_a_thousand_at_once(app, backend):
    b = backend(B.fixed(b"k\n"))
    r = sub(app, b.addr, n=1000, timeout=20000)
    assert r.status == 200 and r.body == b"ok 1000 fail 0\n"
    assert b.request_count() == 1000
    assert wait_stats(app, lambda st: st["live"] == 0)["live"] == 0


def test_a_thousand_at_once_over_h2(app, backend, start_proc, tmp_path):
    b = backend(B.fixed(b"k\n"))
    port, _ = back_weir(start_proc, tmp_path, b.addr, 'h2c = true\n')
    r = sub(app, "127.0.0.1:%d" % port, h2=1, n=1000, timeout=20000)
    assert r.status == 200 and r.body == b"ok 1000 fail 0\n"


def test_many_clients_each_with_sub_requests(app, backend):
    """Sessions on both workers, each pending on its own sub-requests."""
    b = backend(B.fixed(b"k\n"))
    results = []

    def client():
        for _ in range(20):
            r = sub(app, b.addr, n=5)
            results.append(r.body)
    threads = [threading.Thread(target=client) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [b"ok 5 fail 0\n"] * 200


def test_bad_spec_is_refused(app, backend):
    b = backend(B.fixed(b"k\n"))
    for bad in ({"path": "no-slash"}, {"method": "GE T"}, {"path": "/a\r\nX: y"}):
        r = sub(app, b.addr, **bad)
        assert r.status == 500, (bad, r.status)
    assert b.request_count() == 0


def test_stopping_with_sub_requests_in_flight(backend, start_proc):
    """SIGINT stops the workers while sessions wait on slow sub-requests:
    the callbacks run (cancelled), nothing leaks (ASan), the exit is clean."""
    import signal
    path = require_binary("weir-test-app")
    slow = backend(B.slow(30))
    port = free_port()
    p = start_proc([path, "127.0.0.1:%d" % port, slow.addr], port, "weir-test-app")
    socks = []
    for _ in range(4):
        s = B.connect(port)
        s.sendall(b"GET /sub?to=%s&timeout=60000 HTTP/1.1\r\nHost: x\r\n\r\n"
                  % slow.addr.encode())
        socks.append(s)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and slow.heads < 4:
        time.sleep(0.02)
    assert slow.heads == 4
    p.signal(signal.SIGQUIT)  # immediate stop
    p.proc.wait(20)
    for s in socks:
        s.close()
