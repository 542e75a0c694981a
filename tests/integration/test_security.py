"""What the backend sees is what weir decided: headers a client cannot
remove or spoof, one normalised path for routing, rewriting and the
forwarded request, targets weir refuses, and request framing that weir
rejects or closes after (issue: "Security: what the backend sees must be
what weir decided").

Each test is written the way an attacker would send the request; the
backend records exactly what it received, and most tests also check that
a refused request never reached it.
"""
import functools
import re
import socket
import subprocess
import time

import pytest

import backends as B
from conftest import binary, free_port, require_binary, wait_port

import h2util as U
from h2util import H2Client


@pytest.fixture
def proxy(weir_toml):
    """One worker: these tests look at one request at a time."""
    return functools.partial(weir_toml, threads=1)


def raw(port, data, method="GET", timeout=10):
    """Sends raw bytes on a new connection; the parsed response."""
    if isinstance(data, str):
        data = data.encode("latin-1")
    return B.request(port, data, method, timeout=timeout)


def get(port, target, headers=(), method="GET", host="t"):
    hs = "".join("%s: %s\r\n" % kv for kv in headers)
    return raw(port, "%s %s HTTP/1.1\r\nHost: %s\r\n%sConnection: close\r\n\r\n"
               % (method, target, host, hs), method)


SIMPLE = """
[servers.s]
addr = "127.0.0.1:@PORT@"
locations = ["users", "static", "all"]
access_log = "{client_ip} {peer_ip} {method} {uri} {upstream_uri} {location} {status} {request_id}"
access_log_file = "@TMP@/access.log"
%(server)s

[locations.users]
path = "/users/"
upstream = "u"
rewrite = "^/users/(.*) /api/v1/users/$1"
proxy_set_headers = ["X-Gateway: weir"]

[locations.static]
path = "/static/"
upstream = "u"
rewrite = "^/static/(.*) /files/$1"

[locations.all]
upstream = "u"
proxy_set_headers = ["X-Gateway: weir"]

[upstreams.u]
addrs = ["@B@"]
max_fails = 0
"""


def simple(proxy, backend, server=""):
    b = backend(B.fixed(b"ok\n"))
    return proxy(SIMPLE % {"server": server}, B=b), b


def access_lines(tmp_path, n, timeout=10):
    path = tmp_path / "access.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            lines = path.read_text().splitlines()
            if len(lines) >= n:
                return lines
        time.sleep(0.02)
    raise AssertionError("fewer than %d access log lines" % n)


# ---------------------------------------------------------------------------
# Headers


def test_connection_cannot_remove_weirs_headers(proxy, backend):
    w, b = simple(proxy, backend)
    r = get(w.port, "/x", [("Connection",
                            "close, X-Forwarded-For, X-Real-IP, Via, X-Forwarded-Proto, "
                            "X-Gateway, X-Request-Id")])
    assert r.status == 200
    h = b.last().headers
    assert h.get("X-Forwarded-For") == "127.0.0.1"
    assert h.get("X-Real-IP") == "127.0.0.1"
    assert h.get("Via") == "1.1 weir"
    assert h.get("X-Forwarded-Proto") == "http"
    assert h.get_all("X-Gateway") == ["weir"]
    assert re.fullmatch(r"[0-9a-f]{32}", h.get("X-Request-Id") or "")
    assert not h.has("Connection") or h.get("Connection").lower() == "keep-alive"


def test_connection_removes_only_the_clients_fields(proxy, backend):
    w, b = simple(proxy, backend)
    r = get(w.port, "/x", [("X-Forwarded-For", "9.9.9.9"), ("X-Secret", "s"),
                           ("X-Kept", "k"), ("Connection", "X-Forwarded-For, X-Secret")])
    assert r.status == 200
    h = b.last().headers
    assert h.get("X-Forwarded-For") == "127.0.0.1", "the client's XFF went, weir's is there"
    assert not h.has("X-Secret") and h.get("X-Kept") == "k"


@pytest.mark.parametrize("name", ["Host", "Content-Length", "Transfer-Encoding", "host"])
def test_connection_naming_framing_fields_is_400(proxy, backend, name):
    w, b = simple(proxy, backend)
    r = get(w.port, "/x", [("Connection", "keep-alive, " + name)])
    assert r.status == 400
    assert b.request_count() == 0


def test_client_cannot_spoof_identity_headers(proxy, backend, tmp_path):
    w, b = simple(proxy, backend)
    r = get(w.port, "/x", [("X-Real-IP", "6.6.6.6"), ("X-Forwarded-Proto", "https"),
                           ("X-Forwarded-Host", "evil.example"), ("X-Forwarded-Port", "443"),
                           ("Forwarded", "for=6.6.6.6;proto=https"),
                           ("X-Forwarded-For", "6.6.6.6")])
    assert r.status == 200
    h = b.last().headers
    assert h.get_all("X-Real-IP") == ["127.0.0.1"]
    assert h.get_all("X-Forwarded-Proto") == ["http"]
    assert not h.has("X-Forwarded-Host") and not h.has("X-Forwarded-Port")
    assert not h.has("Forwarded")
    # Appended to: the backend takes the rightmost entry, which is weir's.
    assert h.get("X-Forwarded-For") == "6.6.6.6, 127.0.0.1"
    line = access_lines(tmp_path, 1)[0]
    assert line.startswith("127.0.0.1 127.0.0.1 "), line


def test_trusted_proxy_names_the_client(proxy, backend, tmp_path):
    w, b = simple(proxy, backend, 'trusted_proxies = ["127.0.0.0/8", "10.0.0.0/8"]')
    r = get(w.port, "/x", [("X-Forwarded-For", "6.6.6.6, 1.2.3.4, 10.9.9.9"),
                           ("X-Forwarded-Proto", "https"), ("X-Real-IP", "7.7.7.7")])
    assert r.status == 200
    h = b.last().headers
    # The rightmost address that is not a trusted proxy (real_ip_recursive).
    assert h.get_all("X-Real-IP") == ["1.2.3.4"]
    assert h.get_all("X-Forwarded-Proto") == ["https"], "a trusted proxy terminated TLS"
    assert h.get("X-Forwarded-For") == "6.6.6.6, 1.2.3.4, 10.9.9.9, 127.0.0.1"
    line = access_lines(tmp_path, 1)[0]
    assert line.startswith("1.2.3.4 127.0.0.1 "), line


def test_trusted_proxy_hash_ip_uses_the_client(proxy, backend):
    """hash = ip balances on the client a trusted proxy names."""
    b1, b2 = backend(B.fixed(b"one\n")), backend(B.fixed(b"two\n"))
    w = proxy("""
[servers.s]
addr = "127.0.0.1:@PORT@"
locations = ["all"]
trusted_proxies = ["127.0.0.1"]
[locations.all]
upstream = "u"
[upstreams.u]
addrs = ["@B1@", "@B2@"]
algo = "hash:ip"
""", B1=b1, B2=b2)
    # The ring's points depend on the backends' (random) ports: with 8
    # clients all could land on one backend about once in a hundred runs;
    # with 64, never in practice (below 1e-9 even for a 30/70 split).
    seen = {}
    for i in range(128):
        client = "203.0.113.%d" % (i % 64)
        r = get(w.port, "/", [("X-Forwarded-For", client)])
        seen.setdefault(client, set()).add(r.body)
    assert all(len(v) == 1 for v in seen.values()), seen
    assert len(set().union(*seen.values())) == 2, "64 clients spread over both backends"


def test_untrusted_xff_is_not_the_client(proxy, backend, tmp_path):
    w, b = simple(proxy, backend, 'trusted_proxies = ["10.0.0.0/8"]')
    get(w.port, "/x", [("X-Forwarded-For", "1.2.3.4")])
    assert b.last().headers.get("X-Real-IP") == "127.0.0.1"
    assert access_lines(tmp_path, 1)[0].startswith("127.0.0.1 127.0.0.1 ")


def test_trusted_proxies_config_errors(tmp_path):
    require_binary("weir")
    p = tmp_path / "bad.toml"
    p.write_text('[servers.s]\naddr = "127.0.0.1:1"\nlocations = ["l"]\n'
                 'trusted_proxies = ["10.0.0.0/33"]\n[locations.l]\necho = true\n')
    r = subprocess.run([binary("weir"), "-t", "-c", str(p)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode != 0
    assert "%s:4: 'trusted_proxies' in [servers.s]: '10.0.0.0/33'" % p in r.stderr, r.stderr


@pytest.mark.parametrize("given,kept", [
    ("abc-123_DEF.4:5", True),
    ("0123456789abcdef0123456789abcdef", True),
    ("../../evil", False),
    ("a" * 65, False),
    ("has space", False),
    ("semi;colon", False),
    ("x/y", False),
])
def test_request_id_only_if_safe(proxy, backend, tmp_path, given, kept):
    w, b = simple(proxy, backend)
    r = get(w.port, "/x", [("X-Request-Id", given)])
    assert r.status == 200
    ids = b.last().headers.get_all("X-Request-Id")
    assert len(ids) == 1
    if kept:
        assert ids == [given]
    else:
        assert re.fullmatch(r"[0-9a-f]{32}", ids[0]), ids
    assert access_lines(tmp_path, 1)[0].endswith(" " + ids[0])


def test_request_id_duplicates_become_one(proxy, backend):
    w, b = simple(proxy, backend)
    get(w.port, "/x", [("X-Request-Id", "first"), ("X-Request-Id", "second")])
    assert b.last().headers.get_all("X-Request-Id") == ["first"]


@pytest.mark.parametrize("key,rule", [
    ("proxy_set_headers", "Content-Length: 5"),
    ("proxy_add_headers", "Transfer-Encoding: chunked"),
    ("proxy_set_headers", "Connection: close"),
    ("proxy_remove_headers", "Content-Length"),
    ("proxy_add_headers", "Host: two"),
    ("proxy_remove_headers", "Host"),
    ("response_set_headers", "Content-Length: 1"),
    ("response_add_headers", "Transfer-Encoding: chunked"),
    ("response_set_headers", "Keep-Alive: timeout=5"),
    ("response_remove_headers", "Upgrade"),
    ("proxy_set_headers", "TE: trailers"),
])
def test_config_rejects_framing_header_rules(tmp_path, key, rule):
    require_binary("weir")
    p = tmp_path / "rules.toml"
    value = '["%s"]' % rule
    p.write_text('[servers.s]\naddr = "127.0.0.1:1"\nlocations = ["l"]\n\n'
                 '[locations.l]\nupstream = "u"\n%s = %s\n\n'
                 '[upstreams.u]\naddrs = ["127.0.0.1:2"]\n' % (key, value))
    r = subprocess.run([binary("weir"), "-t", "-c", str(p)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode != 0, r.stderr
    assert "%s:7: '%s' in [locations.l]" % (p, key) in r.stderr, r.stderr
    assert "cannot be changed by a header rule" in r.stderr


def test_config_allows_setting_host(tmp_path):
    require_binary("weir")
    p = tmp_path / "host.toml"
    p.write_text('[servers.s]\naddr = "127.0.0.1:1"\nlocations = ["l"]\n\n'
                 '[locations.l]\nupstream = "u"\nproxy_set_headers = ["Host: backend.internal"]\n\n'
                 '[upstreams.u]\naddrs = ["127.0.0.1:2"]\n')
    r = subprocess.run([binary("weir"), "-t", "-c", str(p)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr


def test_underscore_headers_dropped_by_default(proxy, backend):
    w, b = simple(proxy, backend)
    body = b"hello"
    r = raw(w.port, b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                    b"Transfer_Encoding: chunked\r\nContent_Length: 0\r\nX_User_Id: admin\r\n"
                    b"X-Fine: 1\r\nConnection: close\r\n\r\n" + body, "POST")
    assert r.status == 200
    req = b.last()
    assert req.body == body
    names = [k.lower() for k, _ in req.headers]
    assert not any("_" in n for n in names), names
    assert req.headers.get("X-Fine") == "1"


def test_underscores_in_headers_passes_them(proxy, backend):
    w, b = simple(proxy, backend, "underscores_in_headers = true")
    get(w.port, "/x", [("X_User_Id", "42")])
    assert b.last().headers.get("X_User_Id") == "42"


def test_backend_connection_cannot_remove_weirs_response_headers(proxy, backend):
    """A backend's Connection header only removes the backend's own fields,
    not what response_set_headers adds."""
    b = backend(B.fixed(b"ok\n", headers=[("Connection", "X-Frame-Options, X-Backend-Secret"),
                                           ("X-Backend-Secret", "s")]))
    w = proxy("""
[servers.s]
addr = "127.0.0.1:@PORT@"
locations = ["all"]
[locations.all]
upstream = "u"
response_set_headers = ["X-Frame-Options: DENY"]
[upstreams.u]
addrs = ["@B@"]
""", B=b)
    r = get(w.port, "/")
    assert r.status == 200
    assert r.headers.get("X-Frame-Options") == "DENY"
    assert not r.headers.has("X-Backend-Secret")


def test_api_gateway_example_identity_header_cannot_be_spoofed(proxy, backend):
    """examples/api-gateway.toml promises that clients cannot spoof
    X-User-Id: on every location of it, the service never gets one."""
    import pathlib
    text = (pathlib.Path(__file__).parents[2] / "examples" / "api-gateway.toml").read_text()
    names = {}
    for port in sorted(set(re.findall(r"127\.0\.0\.1:(9\d\d\d)", text))):
        names[port] = backend(B.fixed(b"svc " + port.encode() + b"\n"))
        text = text.replace("127.0.0.1:%s" % port, names[port].addr)
    text = text.replace('addr = "127.0.0.1:8443"', 'addr = "127.0.0.1:@PORT@"')
    text = text.replace('threads = 0', 'threads = 1')
    w = proxy(text)
    for path in ["/orders/12/items", "/users/42", "/uploads/a", "/legacy/x", "/other"]:
        r = get(w.port, path, [("X-User-Id", "admin"), ("x-user-id", "root")])
        assert r.status == 200, (path, r.status)
    got = [req for b in names.values() for req in b.requests]
    assert len(got) == 5
    for req in got:
        assert not req.headers.has("X-User-Id"), (req.path, req.headers)
        assert req.headers.get("X-Gateway") == "weir", req.path


# ---------------------------------------------------------------------------
# Paths


@pytest.mark.parametrize("target,want", [
    ("//users/42", "/api/v1/users/42"),
    ("/%75sers/42", "/api/v1/users/42"),
    ("/users/./42", "/api/v1/users/42"),
    ("/users//42?x=//y", "/api/v1/users/42?x=//y"),
    ("/other/../users/42", "/api/v1/users/42"),
    ("/a//b/./c/../d", "/a/b/d"),
    ("/a%2fb", "/a%2Fb"),
    ("/%7Euser/%41", "/~user/A"),
    ("/q?a=%zz&b=../..", "/q?a=%zz&b=../.."),
])
def test_forwarded_path_is_the_normalised_one(proxy, backend, tmp_path, target, want):
    w, b = simple(proxy, backend)
    r = get(w.port, target)
    assert r.status == 200
    assert b.last().path == want
    fields = access_lines(tmp_path, 1)[0].split(" ")
    assert fields[3] == target and fields[4] == want, fields


def test_merge_slashes_off_keeps_them(proxy, backend):
    w, b = simple(proxy, backend, "merge_slashes = false")
    get(w.port, "//a//b")
    assert b.last().path == "//a//b"


@pytest.mark.parametrize("target", [
    "/static/..%2fadmin",
    "/static/..%2Fadmin",
    "/static/%2e%2e%2fadmin",
    "/static/.%2e/admin/../../etc",
    "/static/..%5cadmin",
    "/static/..\\admin",
    "/static/..;/admin",
    "/static/../../etc/passwd",
    "/../etc/passwd",
    "/%2e%2e/etc/passwd",
    "/a%00b",
    "/a%zz",
    "/a%4",
    "/a%",
    "/a#frag",
])
def test_path_tricks_are_400(proxy, backend, target):
    w, b = simple(proxy, backend)
    r = get(w.port, target)
    assert r.status == 400, (target, r.status)
    assert b.request_count() == 0
    assert "400" in w.stderr() and target[:40] in w.stderr()


def test_long_path_is_414_and_logged(proxy, backend):
    w, b = simple(proxy, backend)
    r = get(w.port, "/users/" + "a" * 8200, [("X-Request-Id", "long-path-1")])
    assert r.status == 414
    assert b.request_count() == 0
    assert "414" in w.stderr() and "long-path-1" in w.stderr()


def test_rewrite_over_8k_is_a_logged_414(proxy, backend):
    """Within max_uri_size, but the rewrite makes it longer than 8 KiB."""
    b = backend(B.fixed(b"ok\n"))
    w = proxy("""
[servers.s]
addr = "127.0.0.1:@PORT@"
locations = ["l"]
max_uri_size = "16KB"
[locations.l]
upstream = "u"
rewrite = "^/(.*) /$1/$1"
[upstreams.u]
addrs = ["@B@"]
""", B=b)
    r = get(w.port, "/" + "a" * 5000, [("X-Request-Id", "grown-1")])
    assert r.status == 414
    assert "grown-1" in w.stderr() and "over 8 KiB" in w.stderr()


def test_generated_5xx_logs_the_request_id(proxy, backend):
    from conftest import closed_port
    dead = "127.0.0.1:%d" % closed_port()
    w = proxy("""
[servers.s]
addr = "127.0.0.1:@PORT@"
locations = ["l"]
[locations.l]
upstream = "u"
[upstreams.u]
addrs = ["@D@"]
max_fails = 0
""", D=dead)
    r = get(w.port, "/x", [("X-Request-Id", "find-me-502")])
    assert r.status == 502
    assert U.wait_for(lambda: "find-me-502" in w.stderr()), w.stderr()
    line = [l for l in w.stderr().splitlines() if "find-me-502" in l][0]
    assert "502" in line and "127.0.0.1" in line


@pytest.mark.parametrize("line,status", [
    ("CONNECT example.com:443 HTTP/1.1", 405),
    ("CONNECT 127.0.0.1:22 HTTP/1.1", 405),
    ("TRACE / HTTP/1.1", 405),
    ("GET * HTTP/1.1", 400),
    ("GET example.com:443 HTTP/1.1", 400),
    ("GET example.com/x HTTP/1.1", 400),
])
def test_non_origin_targets_refused(proxy, backend, line, status):
    w, b = simple(proxy, backend)
    r = raw(w.port, line + "\r\nHost: t\r\nConnection: close\r\n\r\n", line.split()[0])
    assert r.status == status
    assert b.request_count() == 0


def test_options_asterisk_is_forwarded(proxy, backend):
    w, b = simple(proxy, backend)
    r = raw(w.port, "OPTIONS * HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", "OPTIONS")
    assert r.status == 200
    assert (b.last().method, b.last().path) == ("OPTIONS", "*")


def test_absolute_form_is_normalised_too(proxy, backend):
    w, b = simple(proxy, backend)
    r = raw(w.port, "GET http://other.example//users/../users/7 HTTP/1.1\r\nHost: t\r\n"
                    "Connection: close\r\n\r\n")
    assert r.status == 200
    assert b.last().path == "/api/v1/users/7"
    assert b.last().headers.get("Host") == "other.example"


def test_traversal_cannot_reach_an_nginx_backend(proxy, tmp_path):
    """An nginx backend resolves %2F and dot segments itself: through weir,
    no spelling of /static/../admin reaches its /admin."""
    nginx = pytest.importorskip("shutil").which("nginx")
    if not nginx:
        pytest.fail("nginx is part of the test dependencies (scripts/install-deps test)")
    nport = free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text("""
worker_processes 1;
pid %(d)s/nginx.pid;
error_log stderr;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path %(d)s; proxy_temp_path %(d)s;
  server {
    listen 127.0.0.1:%(p)d;
    location /admin { return 200 "ADMIN\\n"; }
    location /files/ { return 200 "FILES $uri\\n"; }
    location / { return 404; }
  }
}
""" % {"d": tmp_path, "p": nport})
    ng = subprocess.Popen([nginx, "-p", str(tmp_path), "-c", str(conf), "-g", "daemon off;"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(nport)
        # The attack is real: straight to nginx, the encoded slash climbs.
        direct = get(nport, "/files/..%2fadmin")
        assert direct.body == b"ADMIN\n", direct.body
        # Only /static/ is exposed: anything that reaches /admin is a bypass.
        w = proxy("""
[servers.s]
addr = "127.0.0.1:@PORT@"
locations = ["static"]
[locations.static]
path = "/static/"
upstream = "u"
rewrite = "^/static/(.*) /files/$1"
[upstreams.u]
addrs = ["@B@"]
""", B="127.0.0.1:%d" % nport)
        for target in ["/static/..%2fadmin", "/static/..%2Fadmin", "/static/%2e%2e%2fadmin",
                       "/static/..%5cadmin", "/static/..\\admin", "/static/%2e%2e/admin",
                       "/static/../admin", "/static/./../admin", "/static/..;/admin",
                       "/static/.%2e/admin", "//static/..%2f..%2fadmin"]:
            r = get(w.port, target)
            assert r.body != b"ADMIN\n", target
            assert r.status in (400, 404) or r.body.startswith(b"FILES /files/"), (target, r.body)
        r = get(w.port, "/static/a%2Fb")
        assert r.status == 200 and r.body.startswith(b"FILES /files/a"), r.body
    finally:
        ng.terminate()
        ng.wait(10)


# ---------------------------------------------------------------------------
# Framing


@pytest.mark.parametrize("fields", [
    ["Content-Length: 1000,1000"],
    ["Content-Length: 5, 5"],
    ["Content-Length: 5", "Content-Length: 5"],
    ["Content-Length: 5", "Content-Length: 6"],
])
def test_content_length_lists_and_repeats_are_400(proxy, backend, fields):
    w, b = simple(proxy, backend)
    r = raw(w.port, "POST /x HTTP/1.1\r\nHost: t\r\n%s\r\n\r\nhello" % "\r\n".join(fields), "POST")
    assert r.status == 400
    assert b.request_count() == 0


@pytest.mark.parametrize("te,status", [
    ("chunked, chunked", 400),
    ("chunked,", 400),
    (", chunked", 400),
    ("chunked,,", 400),
    ("chun-ked", 400),
    ("chunked-", 400),
    ('"chunked"', 400),
    ("chunked;", 400),
    ("chunked;a", 400),
    ("chunked chunked", 400),
    ("identity", 400),
    ("gzip", 400),
    ("gzip, chunked", 501),
    ("x-custom, chunked", 501),
])
def test_transfer_encoding_spellings(proxy, backend, te, status):
    w, b = simple(proxy, backend)
    r = raw(w.port, "POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: %s\r\n\r\n"
                    "5\r\nhello\r\n0\r\n\r\n" % te, "POST")
    assert r.status == status, (te, r.status)
    assert b.request_count() == 0


@pytest.mark.parametrize("te", ["chunked", "Chunked", "chunked;ext=1", 'chunked ; q="a;b"'])
def test_transfer_encoding_valid_spellings_pass(proxy, backend, te):
    w, b = simple(proxy, backend)
    r = raw(w.port, "POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: %s\r\n"
                    "Connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n" % te, "POST")
    assert r.status == 200
    assert b.last().body == b"hello"


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_get_or_head_with_body_closes_both_sides(proxy, backend, method):
    w, b = simple(proxy, backend)
    s = B.connect(w.port)
    try:
        s.sendall(("%s /x HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nbody" % method)
                  .encode())
        rd = B.Reader(s)
        r = B.read_response(rd, method)
        assert r.status == 200
        assert (r.headers.get("Connection") or "").lower() == "close"
        assert B.closed_after(s), "weir closes the client connection"
    finally:
        s.close()
    assert b.last().body == b"body"
    first_conn = b.last().conn_id
    get(w.port, "/y")
    assert b.last().conn_id != first_conn, "the upstream connection was not reused"


# ---------------------------------------------------------------------------
# The same rules over HTTP/2


def h2proxy(proxy, backend, server_extra=""):
    b = backend(B.fixed(b"ok\n"))
    w = proxy(SIMPLE % {"server": "h2c = true\n" + server_extra}, B=b)
    return w, b


def test_h2_identity_and_path_rules(proxy, backend):
    w, b = h2proxy(proxy, backend)
    c = H2Client(w.port)
    try:
        st = c.get("//users/./42", headers=[("x-real-ip", "6.6.6.6"),
                                            ("x-forwarded-proto", "https"),
                                            ("x_user", "a"), ("x-request-id", "../../x")])
        assert st.status == 200
        req = b.last()
        assert req.path == "/api/v1/users/42"
        assert req.headers.get_all("X-Real-IP") == ["127.0.0.1"]
        assert req.headers.get_all("X-Forwarded-Proto") == ["http"]
        assert not req.headers.has("X_User")
        assert re.fullmatch(r"[0-9a-f]{32}", req.headers.get("X-Request-Id"))
        for path in ["/static/..%2fadmin", "/../x", "/a%00"]:
            st = c.get(path)
            assert st.status == 400, path
        assert b.request_count() == 1
    finally:
        c.close()


def test_h2_plain_connect_is_405(proxy, backend):
    w, b = h2proxy(proxy, backend)
    c = H2Client(w.port)
    try:
        sid = c.conn.get_next_available_stream_id()
        c.streams[sid] = U.Stream(sid)
        c.conn.config.validate_outbound_headers = False
        c.conn.send_headers(sid, [(":method", "CONNECT"), (":authority", "example.com:443")],
                            end_stream=True)
        c.flush()
        st = c.response(sid)
        assert st.status == 405
        assert b.request_count() == 0
    finally:
        c.close()
