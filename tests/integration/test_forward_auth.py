"""The forward_auth plugin (docs/plugins.md) against a real Python auth
service: what the service is told, what passes upstream on a 2xx, what
the client gets otherwise, the service slow, down, huge or hostile, and a
client that forges the fields the service vouches for."""
import http.client
import socket
import subprocess
import threading
import time

import pytest

import backends as B
import conftest
from conftest import binary, free_port, require_binary

CONF = """
[servers.s]
addr = "127.0.0.1:@PORT@"
locations = ["l"]

[plugins.auth]
category = "forward_auth"
auth_url = "http://@A@/verify?app=1"
auth_response_headers = ["X-User", "X-Groups"]
%(extra)s

[locations.l]
upstream = "u"
plugins = ["auth"]

[upstreams.u]
addrs = ["@B@"]
"""


def auth_service(decide):
    """A handler: decide(req) -> (status, headers, body) of the answer."""
    def handler(conn, req):
        status, headers, body = decide(req)
        conn.send(B.response_head(status, list(headers) + [("Content-Length", str(len(body)))])
                  + body)
    return handler


def allow_alice(req):
    if req.headers.get("authorization") == "Bearer good":
        return 200, [("X-User", "alice"), ("X-Groups", "dev,ops"), ("X-Other", "no")], b""
    if req.headers.get("authorization") == "Bearer redirect":
        return 302, [("Location", "https://login.test/?rd=x"), ("Set-Cookie", "s=1")], b""
    return 401, [("WWW-Authenticate", 'Bearer realm="api"'), ("Content-Type", "text/plain"),
                 ("X-Reason", "bad token")], b"no entry\n"


@pytest.fixture
def start(weir_toml, backend):
    def run(decide=allow_alice, extra="", threads=1, handler=None):
        b = backend(B.echo())
        a = backend(handler or auth_service(decide))
        return weir_toml(CONF % {"extra": extra}, threads=threads, A=a, B=b), a, b
    return run


def req(port, headers=(), target="/x", method="GET"):
    hs = "".join("%s: %s\r\n" % kv for kv in headers)
    return B.request(port, ("%s %s HTTP/1.1\r\nHost: app.test\r\n%sConnection: close\r\n\r\n"
                            % (method, target, hs)).encode(), method, timeout=15)


def test_a_2xx_lets_it_through_with_the_services_fields(start):
    w, a, b = start()
    r = req(w.port, [("Authorization", "Bearer good")], target="/api/v1?q=2")
    assert r.status == 200
    up = b.requests[0]
    assert up.path == "/api/v1?q=2"
    assert up.headers.get("x-user") == "alice" and up.headers.get("x-groups") == "dev,ops"
    assert up.headers.get("x-other") is None, "only the listed fields are copied"
    assert up.headers.get("authorization") == "Bearer good"


def test_what_the_service_is_told(start):
    w, a, b = start()
    req(w.port, [("Authorization", "Bearer good"), ("Cookie", "c=1"), ("X-Custom", "v"),
                 ("X-Forwarded-Uri", "/forged"), ("X-Forwarded-For", "6.6.6.6"),
                 ("X-Forwarded-Method", "DELETE")], target="/orders/7?full=1", method="GET")
    q = a.requests[0]
    assert q.method == "GET" and q.path == "/verify?app=1"
    assert q.headers.get("host") == a.addr
    assert q.headers.get("authorization") == "Bearer good" and q.headers.get("cookie") == "c=1"
    assert q.headers.get("x-custom") == "v"
    # weir's own view, not the client's claims
    assert q.headers.get("x-forwarded-uri") == "/orders/7?full=1"
    assert q.headers.get("x-forwarded-method") == "GET"
    assert q.headers.get("x-forwarded-for") == "127.0.0.1"
    assert q.headers.get("x-forwarded-proto") == "http"
    assert q.headers.get("x-forwarded-host") == "app.test"
    assert len([k for k, _ in q.headers if k.lower() == "x-forwarded-uri"]) == 1
    assert q.body == b"" and q.headers.get("content-length") is None


def test_a_post_body_is_not_sent_to_the_service(start):
    w, a, b = start()
    body = b"secret=1"
    r = B.request(w.port, b"POST /p HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer good\r\n"
                  b"Content-Length: 8\r\nConnection: close\r\n\r\n" + body, "POST", timeout=15)
    assert r.status == 200
    assert a.requests[0].method == "GET" and a.requests[0].body == b""
    assert a.requests[0].headers.get("x-forwarded-method") == "POST"
    assert b.requests[0].body == body


def test_only_the_listed_request_fields(start):
    w, a, b = start(extra='auth_request_headers = ["Authorization"]')
    req(w.port, [("Authorization", "Bearer good"), ("Cookie", "c=1"), ("X-Custom", "v")])
    q = a.requests[0]
    assert q.headers.get("authorization") == "Bearer good"
    assert q.headers.get("cookie") is None and q.headers.get("x-custom") is None
    assert q.headers.get("x-forwarded-uri") == "/x"


def test_a_client_cannot_forge_what_the_service_vouches_for(start):
    def no_fields(req):
        return 200, [], b""
    w, a, b = start(no_fields)
    r = req(w.port, [("X-User", "admin"), ("x-groups", "root"), ("X-USER", "admin2")])
    assert r.status == 200
    up = b.requests[0]
    assert up.headers.get("x-user") is None and up.headers.get("x-groups") is None


def test_a_refusal_goes_back_as_the_service_gave_it(start):
    w, a, b = start()
    r = req(w.port, [("Authorization", "Bearer bad")])
    assert r.status == 401 and r.body == b"no entry\n"
    assert r.headers.get("www-authenticate") == 'Bearer realm="api"'
    assert r.headers.get("x-reason") == "bad token"
    assert r.headers.get("content-type") == "text/plain"
    assert b.request_count() == 0


def test_a_redirect_to_the_login_page(start):
    w, a, b = start()
    r = req(w.port, [("Authorization", "Bearer redirect")])
    assert r.status == 302 and r.headers.get("location") == "https://login.test/?rd=x"
    assert r.headers.get("set-cookie") == "s=1"
    assert b.request_count() == 0


@pytest.mark.parametrize("status", [403, 429, 500, 503])
def test_other_statuses_pass_through(start, status):
    w, a, b = start(lambda req: (status, [("Retry-After", "3")], b"nope\n"))
    r = req(w.port)
    assert r.status == status and r.body == b"nope\n"
    assert r.headers.get("retry-after") == "3"
    assert b.request_count() == 0


def test_framing_fields_of_the_answer_are_weirs(start):
    """A refusal's hop-by-hop and framing fields stay between weir and
    the service; the client gets weir's own framing."""
    def hostile(conn, req):
        conn.send(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 5\r\nConnection: keep-alive\r\n"
                  b"Keep-Alive: timeout=999\r\nUpgrade: evil\r\nX-Why: no\r\n\r\nnope\n")
    w, a, b = start(handler=hostile)
    r = req(w.port)
    assert r.status == 403 and r.body == b"nope\n" and r.headers.get("x-why") == "no"
    assert r.headers.get("keep-alive") is None and r.headers.get("upgrade") is None
    assert len([k for k, _ in r.headers if k.lower() == "content-length"]) == 1


def test_timeout_is_a_503(start):
    def slow(conn, req):
        if conn.wait_peer_close(5):
            return "close"
        conn.send(B.response_head(200, [("Content-Length", "0")]))
    w, a, b = start(handler=slow, extra='timeout = "300ms"')
    t0 = time.monotonic()
    r = req(w.port)
    assert r.status == 503 and time.monotonic() - t0 < 4
    assert b.request_count() == 0


def test_a_huge_refusal_is_a_503(start):
    w, a, b = start(lambda req: (401, [], b"x" * 100000))
    r = req(w.port)
    assert r.status == 503
    assert b.request_count() == 0


def test_a_broken_service_is_a_503(start):
    def broken(conn, req):
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
        return "close"
    w, a, b = start(handler=broken)
    assert req(w.port).status == 503
    assert b.request_count() == 0


def test_service_down_is_a_503(weir_toml, backend):
    b = backend(B.echo())
    w = weir_toml(CONF % {"extra": ""}, threads=1, A="127.0.0.1:%d" % free_port(), B=b)
    r = req(w.port)
    assert r.status == 503 and b"auth service" in r.body
    assert b.request_count() == 0
    assert "forward_auth" in w.stderr()


def test_keeps_the_connection_to_the_service(start):
    w, a, b = start()
    for _ in range(5):
        assert req(w.port, [("Authorization", "Bearer good")]).status == 200
    assert a.connections == 1 and a.request_count() == 5


def test_client_leaving_while_the_service_thinks(weir_toml, backend, tmp_path):
    """The sub-request ends when the client leaves, and the request is the
    client's 499 (termination CR), not a 500 counted against weir."""
    first = []

    def slow(conn, req):
        if not first:
            first.append(req)
            if conn.wait_peer_close(30):
                with conn.backend.lock:
                    conn.backend.closed_by_peer.append(conn.id)
                return "close"
        conn.send(B.response_head(200, [("Content-Length", "0")]))
    a, b = backend(slow), backend(B.echo())
    w = weir_toml(CONF.replace('locations = ["l"]\n', 'locations = ["l"]\n'
                               'access_log = "{status} {termination} {uri}"\n'
                               'access_log_file = "@TMP@/access.log"\n', 1) % {"extra": ""},
                  A=a, B=b)
    s = B.connect(w.port)
    s.sendall(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and a.heads == 0:
        time.sleep(0.02)
    s.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not a.closed_by_peer:
        time.sleep(0.02)
    assert a.closed_by_peer, "the sub-request went on after the client left"
    assert b.request_count() == 0
    assert req(w.port, [("Authorization", "Bearer good")]).status == 200
    log = tmp_path / "access.log"
    assert conftest.wait_for(lambda: log.exists() and "/x" in log.read_text(), 5)
    line = [ln for ln in log.read_text().splitlines() if ln.endswith(" /x")][0]
    assert line == "499 CR /x", line
    assert "request phase failed" not in w.stderr()


def check(tmp_path, body):
    require_binary("weir")
    p = tmp_path / "bad.toml"
    p.write_text('[servers.s]\naddr = "127.0.0.1:1"\nlocations = ["l"]\n\n'
                 '[plugins.auth]\ncategory = "forward_auth"\n%s\n'
                 '[locations.l]\necho = true\nplugins = ["auth"]\n' % body)
    return p, subprocess.run([binary("weir"), "-t", "-c", str(p)], capture_output=True,
                             text=True, timeout=30)


@pytest.mark.parametrize("body,msg", [
    ('', "needs 'auth_url'"),
    ('auth_url = "ftp://127.0.0.1/x"', "must start with http:// or https://"),
    ('auth_url = "http:///x"', "is not a URL weir can ask"),
    ('auth_url = "http://u:p@127.0.0.1/x"', "is not a URL weir can ask"),
    ('auth_url = "http://127.0.0.1:99999/x"', "bad host or port"),
    ('auth_url = "http://127.0.0.1/x"\nauth_request_headers = ["X Y"]', "is not a field name"),
    ('auth_url = "http://127.0.0.1/x"\nauth_response_headers = ["Content-Length"]',
     "'auth_response_headers' in [plugins.auth]: 'Content-Length'"),
    ('auth_url = "http://127.0.0.1/x"\nca_file = "/x"', "is for an https 'auth_url'"),
    ('auth_url = "http://127.0.0.1/x"\ntimeout = "0s"', "timeout"),
    ('auth_url = "http://127.0.0.1/x"\nauth_ur = "x"', "did you mean 'auth_url'"),
])
def test_config_errors(tmp_path, body, msg):
    p, r = check(tmp_path, body)
    assert r.returncode != 0
    assert "%s:" % p in r.stderr and msg in r.stderr, r.stderr


def test_under_load_with_a_service_that_drops_connections(start):
    """15 s of kept-alive clients while the auth service closes every
    seventh connection after answering (as a server's keep-alive limit
    does): a pooled connection found closed is replaced, nothing fails."""
    count = [0]
    lock = threading.Lock()

    def flaky(conn, req):
        with lock:
            count[0] += 1
            close = count[0] % 7 == 0
        conn.send(B.response_head(200, [("X-User", "alice"), ("Content-Length", "0")]))
        if close:
            conn.close_after = True
    w, a, b = start(handler=flaky, threads=2)
    results, stop = [], threading.Event()

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", w.port, timeout=10)
        while not stop.is_set():
            try:
                conn.request("GET", "/load", headers={"Authorization": "Bearer good"})
                r = conn.getresponse()
                r.read()
                results.append(r.status)
            except Exception as e:  # any failure counts
                results.append(repr(e))
                conn.close()
        conn.close()
    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(15)
    stop.set()
    for t in threads:
        t.join(30)
    failed = [r for r in results if r != 200]
    assert len(results) > 500 and not failed, (len(results), len(failed), failed[:5])
    assert a.connections > 10, "the service's closes were exercised"


# ---------------------------------------------------------------------------
# Differential: nginx's auth_request with the same auth service. Where weir
# answers otherwise it is on purpose (docs/differences.md): nginx turns
# every status but 2xx, 401 and 403 into its own 500 and answers 401 and
# 403 with its own page; weir gives the client the service's answer (a 302
# to a login page works), and a service that does not answer is a 503.

NGINX = __import__("shutil").which("nginx") or "/usr/sbin/nginx"

DIFFERENCES = {"redirect": (500, 302), "unavailable": (500, 503), "down": (500, 503)}


@pytest.fixture
def nginx_auth(tmp_path):
    import os
    import pwd
    from conftest import wait_port
    if not os.access(NGINX, os.X_OK):
        pytest.skip("nginx not installed")
    procs = []

    def start(a, b):
        port = free_port()
        d = tmp_path / ("nginx%d" % port)
        d.mkdir()
        user = "user %s;" % pwd.getpwuid(os.getuid()).pw_name if os.getuid() == 0 else ""
        (d / "nginx.conf").write_text(user + """
daemon off; worker_processes 1; pid %(d)s/nginx.pid; error_log %(d)s/error.log;
events { worker_connections 64; }
http {
    access_log off; client_body_temp_path %(d)s; proxy_temp_path %(d)s;
    fastcgi_temp_path %(d)s; uwsgi_temp_path %(d)s; scgi_temp_path %(d)s;
    server {
        listen 127.0.0.1:%(p)d;
        location / {
            auth_request /_auth;
            auth_request_set $user $upstream_http_x_user;
            proxy_set_header X-User $user;
            proxy_pass http://%(b)s; proxy_http_version 1.1; proxy_set_header Connection "";
        }
        location = /_auth {
            internal;
            proxy_pass http://%(a)s/verify?app=1;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Forwarded-Uri $request_uri;
            proxy_set_header X-Forwarded-Method $request_method;
        }
    }
}
""" % {"d": d, "p": port, "a": a, "b": b.addr})
        p = subprocess.Popen([NGINX, "-c", str(d / "nginx.conf"), "-e", str(d / "error.log")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             stdin=subprocess.DEVNULL)
        procs.append(p)
        assert wait_port(port, p), (d / "error.log").read_text(errors="replace")
        return port

    yield start
    for p in procs:
        p.terminate()
        p.wait(timeout=10)


def decide_by_token(req):
    tok = (req.headers.get("authorization") or "").replace("Bearer ", "")
    if tok == "good":
        return 200, [("X-User", "alice")], b""
    if tok == "silent":
        return 204, [], b""
    if tok == "redirect":
        return 302, [("Location", "https://login.test/")], b""
    if tok == "forbidden":
        return 403, [], b"forbidden\n"
    if tok == "unavailable":
        return 503, [], b"busy\n"
    if tok == "error":
        return 500, [], b"oops\n"
    return 401, [("WWW-Authenticate", 'Bearer realm="api"')], b"who?\n"


def test_same_answers_as_nginx_auth_request(weir_toml, backend, nginx_auth):
    a = backend(auth_service(decide_by_token))
    bw, bn = backend(B.echo()), backend(B.echo())
    w = weir_toml(CONF % {"extra": ""}, threads=1, A=a, B=bw)
    nport = nginx_auth(a.addr, bn)
    cases = [("good", "good"), ("silent", "silent"), ("none", None), ("bad", "bad"),
             ("forbidden", "forbidden"), ("redirect", "redirect"),
             ("unavailable", "unavailable"), ("error", "error")]
    for name, tok in cases:
        hs = [("Authorization", "Bearer " + tok)] if tok else []
        hs_forged = hs + [("X-User", "admin")]
        rw, rn = req(w.port, hs_forged, target="/p?q=1"), req(nport, hs_forged, target="/p?q=1")
        if name in DIFFERENCES:
            assert (rn.status, rw.status) == DIFFERENCES[name], (name, rn.status, rw.status)
        else:
            assert rw.status == rn.status, (name, rw.status, rn.status)
        if rn.status == 401:
            assert rw.headers.get("www-authenticate") == rn.headers.get("www-authenticate")
    # What each backend got: the same requests, the same vouched-for user,
    # never the forged one.
    assert len(bw.requests) == len(bn.requests) == 2
    for x, y in zip(bw.requests, bn.requests):
        assert x.path == y.path == "/p?q=1"
        assert x.headers.get("x-user") == y.headers.get("x-user")
    assert [r.headers.get("x-user") for r in bw.requests] == ["alice", None]
    # What the service was told, on the fields both send
    for q in a.requests:
        assert q.path == "/verify?app=1"
        assert q.headers.get("x-forwarded-uri") == "/p?q=1"
        assert q.headers.get("x-forwarded-method") == "GET"
    # The service down: nginx 500, weir 503
    a.close()
    rw, rn = req(w.port, [("Authorization", "Bearer good")]), req(nport, [("Authorization",
                                                                            "Bearer good")])
    assert (rn.status, rw.status) == DIFFERENCES["down"]


def test_http2_stream_reset_while_the_service_thinks(weir_toml, backend):
    """Over HTTP/2 (h2c) the client resets its stream while the service
    thinks: the sub-request ends, the connection goes on with a new
    stream that passes."""
    import struct
    import h2util as H
    calls = []

    def slow_first(conn, req):
        calls.append(req)
        if len(calls) == 1:
            if conn.wait_peer_close(30):
                with conn.backend.lock:
                    conn.backend.closed_by_peer.append(conn.id)
                return "close"
        conn.send(B.response_head(200, [("X-User", "bob"), ("Content-Length", "0")]))
    a = backend(slow_first)
    b = backend(B.echo())
    w = weir_toml(CONF.replace('locations = ["l"]\n', 'locations = ["l"]\nh2c = true\n', 1)
                  % {"extra": ""}, threads=1, A=a, B=b)
    c = H.RawH2(w.port)
    c.send_headers(1, c.request_headers("/first"))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not calls:
        time.sleep(0.02)
    assert calls
    c.send_frame(H.RST_STREAM, 0, 1, struct.pack("!I", H.CANCEL))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not a.closed_by_peer:
        time.sleep(0.02)
    assert a.closed_by_peer, "the sub-request went on after the stream was reset"
    c.send_headers(3, c.request_headers("/second"))
    headers, body, rst = c.expect_end(3)
    assert rst is None and dict(headers)[":status"] == "200"
    assert [r.path for r in b.requests] == ["/second"]
    assert b.requests[0].headers.get("x-user") == "bob"
    c.close()
    assert "request phase failed" not in w.stderr()  # the client's doing: a 499
