"""Routing and per-location behaviour of the weir program, run with a
generated TOML file against real Python backends: host and path rules,
explicit weights, 404/503, rewrites, header edits, body limits, weighted
round robin, per-location timeouts, the access log and the default config.

Each backend answers with its own name, so the body tells which location
(and upstream) a request went through.
"""
import re
import socket
import time

import pytest

import backends as B
from conftest import binary, free_port, require_binary, wait_port

@pytest.fixture
def proxy(tmp_path, start_proc):
    """proxy(text, threads=1, **addrs) -> Proc running `weir -c` on text,
    where @PORT@ is the listen port and @NAME@ the address of addrs[NAME]
    (a Backend or an "ip:port" string)."""
    count = [0]

    def start(text, threads=1, **addrs):
        require_binary("weir")
        port = free_port()
        text = text.replace("@PORT@", str(port))
        for name, b in addrs.items():
            text = text.replace("@%s@" % name, b if isinstance(b, str) else b.addr)
        assert "@" not in text.replace("@@", ""), text
        count[0] += 1
        path = tmp_path / ("weir-%d.toml" % count[0])
        path.write_text(text)
        argv = [binary("weir"), "-c", str(path), "--threads", str(threads)]
        return start_proc(argv, port, "weir")

    return start


def send(port, path="/", host="test.local", headers=(), method="GET", body=None,
         version="HTTP/1.1", chunks=None, timeout=B.IO_TIMEOUT):
    """One request on a new connection; host=None sends no Host field."""
    lines = ["%s %s %s" % (method, path, version)]
    if host is not None:
        lines.append("Host: %s" % host)
    lines += ["%s: %s" % kv for kv in headers]
    payload = b""
    if body is not None:
        lines.append("Content-Length: %d" % len(body))
        payload = body
    elif chunks is not None:
        lines.append("Transfer-Encoding: chunked")
        payload = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    lines.append("Connection: close")
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload
    return B.request(port, raw, method, timeout=timeout)


def named(backend, name, **kw):
    return backend(B.fixed(name.encode() + b"\n", **kw), name=name)


def check_routes(port, cases):
    """cases: [(host, path, expected body name)]; reports every mismatch."""
    wrong = []
    for host, path, want in cases:
        r = send(port, path, host=host)
        got = r.body.decode(errors="replace").strip() if r.status == 200 else r.status
        if got != want:
            wrong.append("%s %s -> %r, want %r" % (host, path, got, want))
    assert not wrong, "\n".join(wrong)


# ---------------------------------------------------------------------------
# Path rules


PATHS = """
[servers.main]
addr = "127.0.0.1:@PORT@"
locations = ["exact", "login_prefix", "api_versioned", "api_any", "php", "static",
             "static_img", "any"]

[locations.exact]
path = "=/login"
upstream = "exact"

[locations.login_prefix]
path = "/login"
upstream = "login_prefix"

[locations.api_versioned]
path = "~^/api/v[0-9]+/"
upstream = "api_versioned"

[locations.api_any]
path = "~^/api/"
upstream = "api_any"

[locations.php]
path = "~\\\\.php$"
upstream = "php"

[locations.static]
path = "/static/"
upstream = "static"

[locations.static_img]
path = "/static/img/"
upstream = "static_img"

[locations.any]
upstream = "any"
"""


def upstreams_for(names):
    return "".join('\n[upstreams.%s]\naddrs = ["@%s@"]\n' % (n, n) for n in names)


PATH_NAMES = ["exact", "login_prefix", "api_versioned", "api_any", "php", "static",
              "static_img", "any"]


def test_path_exact_regex_prefix_catch_all(backend, proxy):
    bs = {n: named(backend, n) for n in PATH_NAMES}
    w = proxy(PATHS + upstreams_for(PATH_NAMES), **bs)
    check_routes(w.port, [
        ("h", "/login", "exact"),
        ("h", "/login?next=/x", "exact"),  # the query is not part of the path
        ("h", "/login/", "login_prefix"),  # exact beats prefix only when equal
        ("h", "/loginx", "login_prefix"),  # prefixes are plain string prefixes
        ("h", "/api/v2/users", "api_versioned"),  # first regex in config order
        ("h", "/api/users", "api_any"),
        ("h", "/api", "any"),
        ("h", "/static/site.css", "static"),
        ("h", "/static/img/logo.png", "static_img"),  # longest prefix
        ("h", "/static/img", "static"),
        ("h", "/static/img/x.php", "php"),  # regex beats a longer prefix
        ("h", "/login.php", "php"),  # ... and a prefix, but not an exact match
        ("h", "/", "any"),
        ("h", "/elsewhere/deep/path?q=1", "any"),
    ])
    # The backend sees the original target.
    assert bs["exact"].requests[1].path == "/login?next=/x"
    assert bs["static_img"].last().path == "/static/img/logo.png"


# ---------------------------------------------------------------------------
# Host rules

HOSTS = """
[servers.main]
addr = "127.0.0.1:@PORT@"
locations = ["wild", "api", "wild_eu", "shop_re", "admin", "wild_net", "special",
             "generic"]

# config order must not matter between host kinds: the wildcard comes first
[locations.wild]
host = "*.example.com"
path = "/"
upstream = "wild"

[locations.api]
host = ["api.example.com", "api.example.org"]
path = "/"
upstream = "api"

[locations.wild_eu]
host = "*.eu.example.com"
upstream = "wild_eu"

[locations.shop_re]
host = "~^shop[0-9]+\\\\.example\\\\.org$"
upstream = "shop_re"

[locations.admin]
host = "admin.example.net"
path = "/admin/"
upstream = "admin"

[locations.wild_net]
host = "*.example.net"
path = "/net/"
upstream = "wild_net"

[locations.special]
path = "=/special"
upstream = "special"

[locations.generic]
path = "/"
upstream = "generic"
"""

HOST_NAMES = ["wild", "api", "wild_eu", "shop_re", "admin", "wild_net", "special", "generic"]


def test_host_exact_wildcard_regex_and_fallback(backend, proxy):
    bs = {n: named(backend, n) for n in HOST_NAMES}
    w = proxy(HOSTS + upstreams_for(HOST_NAMES), **bs)
    check_routes(w.port, [
        ("api.example.com", "/x", "api"),  # exact beats the earlier wildcard
        ("api.example.org", "/x", "api"),  # any host of the list
        ("API.Example.COM:8080", "/x", "api"),  # no case, no port
        ("api.example.com.", "/x", "api"),  # no trailing dot
        ("www.example.com", "/x", "wild"),
        ("a.b.example.com", "/x", "wild"),
        ("x.eu.example.com", "/x", "wild_eu"),  # longest wildcard suffix
        ("X.EU.EXAMPLE.COM:443", "/x", "wild_eu"),
        ("example.com", "/x", "generic"),  # "*.example.com" needs a label
        ("shop12.example.org", "/x", "shop_re"),
        ("Shop7.Example.org", "/x", "shop_re"),  # regexes see the lower-cased host
        ("shop.example.org", "/x", "generic"),
        ("other.test", "/x", "generic"),
        ("other.test", "/special", "special"),
        # Host-specific locations beat host-less ones, even an exact path.
        ("api.example.com", "/special", "api"),
        ("www.example.com", "/special", "wild"),
        # The host's own locations don't cover the path: next host level
        # (the wildcard), then the host-less locations.
        ("admin.example.net", "/admin/users", "admin"),
        ("admin.example.net", "/net/status", "wild_net"),
        ("admin.example.net", "/public", "generic"),
        ("admin.example.net", "/special", "special"),
        ("admin.example.net:8443", "/ADMIN/users", "generic"),  # paths are case-sensitive
    ])


def test_request_without_host_uses_hostless_locations(backend, proxy):
    bs = {n: named(backend, n) for n in HOST_NAMES}
    w = proxy(HOSTS + upstreams_for(HOST_NAMES), **bs)
    r = send(w.port, "/special", host=None, version="HTTP/1.0")
    assert r.status == 200 and r.body == b"special\n"
    r = send(w.port, "/x", host=None, version="HTTP/1.0")
    assert r.status == 200 and r.body == b"generic\n"


# ---------------------------------------------------------------------------
# Explicit weights

WEIGHTS = """
[servers.main]
addr = "127.0.0.1:@PORT@"
locations = ["exact_w", "heavy_prefix", "light_regex", "prefix_v", "regex_u", "prefix_u",
             "tie_first", "tie_second", "any"]

[locations.exact_w]
path = "=/w/x"
upstream = "exact_w"

[locations.heavy_prefix]     # 5000 beats every computed rank, even an exact path
path = "/w/"
weight = 5000
upstream = "heavy_prefix"

[locations.light_regex]      # 100: below every prefix
path = "~^/v/"
weight = 100
upstream = "light_regex"

[locations.prefix_v]
path = "/v/"
upstream = "prefix_v"

[locations.regex_u]
path = "~^/u/"
upstream = "regex_u"

[locations.prefix_u]         # 2500: above regexes, below exact paths
path = "/u/"
weight = 2500
upstream = "prefix_u"

[locations.tie_first]        # equal weights: the first in config order
path = "/t/"
weight = 1200
upstream = "tie_first"

[locations.tie_second]
path = "~^/t/"
weight = 1200
upstream = "tie_second"

[locations.any]
upstream = "any"
"""

WEIGHT_NAMES = ["exact_w", "heavy_prefix", "light_regex", "prefix_v", "regex_u", "prefix_u",
                "tie_first", "tie_second", "any"]


def test_explicit_weight_overrides_rank(backend, proxy):
    bs = {n: named(backend, n) for n in WEIGHT_NAMES}
    w = proxy(WEIGHTS + upstreams_for(WEIGHT_NAMES), **bs)
    check_routes(w.port, [
        ("h", "/w/x", "heavy_prefix"),
        ("h", "/w/y", "heavy_prefix"),
        ("h", "/v/x", "prefix_v"),
        ("h", "/u/x", "prefix_u"),
        ("h", "/t/x", "tie_first"),
        ("h", "/z", "any"),
    ])
    assert bs["exact_w"].request_count() == 0
    assert bs["light_regex"].request_count() == 0


def test_weight_on_catch_all(backend, proxy):
    text = """
[servers.main]
addr = "127.0.0.1:@PORT@"
locations = ["api", "all"]

[locations.api]
path = "/api/"
upstream = "api"

[locations.all]
weight = 1500        # a catch-all above every prefix: /api/ is shadowed
upstream = "all"
""" + upstreams_for(["api", "all"])
    bs = {n: named(backend, n) for n in ["api", "all"]}
    w = proxy(text, **bs)
    check_routes(w.port, [("h", "/api/x", "all"), ("h", "/", "all")])
    assert bs["api"].request_count() == 0


# ---------------------------------------------------------------------------
# No location, no backend

def test_404_when_no_location_matches(backend, proxy):
    b = named(backend, "api")
    text = """
[servers.main]
addr = "127.0.0.1:@PORT@"
locations = ["api"]

[locations.api]
host = "only.example.com"
path = "/api/"
upstream = "api"
""" + upstreams_for(["api"])
    w = proxy(text, api=b)
    for host, path in [("only.example.com", "/other"), ("other.example.com", "/api/x"),
                       ("only.example.com", "/ap"), ("h", "/")]:
        r = send(w.port, path, host=host)
        assert r.status == 404, (host, path, r)
        assert r.body == b"404 Not Found\n"
        assert len(r.body) < 64
    assert send(w.port, "/api/x", host="only.example.com").body == b"api\n"
    assert b.request_count() == 1
    assert b.connections == 1  # the 404s never opened a connection


def test_404_with_a_server_without_locations(proxy):
    text = '[servers.main]\naddr = "127.0.0.1:@PORT@"\nlocations = []\n'
    w = proxy(text)
    r = send(w.port, "/")
    assert r.status == 404 and r.body == b"404 Not Found\n"


def test_503_for_upstream_without_backends(backend, proxy):
    b = named(backend, "real")
    text = """
[servers.main]
addr = "127.0.0.1:@PORT@"
locations = ["empty", "real"]

[locations.empty]
path = "/empty/"
upstream = "empty"

[locations.real]
upstream = "real"

[upstreams.empty]
addrs = []

[upstreams.real]
addrs = ["@real@"]
"""
    w = proxy(text, real=b)
    for _ in range(3):
        r = send(w.port, "/empty/x")
        assert r.status == 503
        assert r.body == b"503 Service Unavailable\n"
    r = send(w.port, "/x")
    assert r.status == 200 and r.body == b"real\n"
    assert b.request_count() == 1


# ---------------------------------------------------------------------------
# Rewrites

REWRITE = """
[servers.main]
addr = "127.0.0.1:@PORT@"
locations = ["api", "orders", "all"]

[locations.api]
path = "/api/"
rewrite = "^/api/(.*) /v2/$1"
upstream = "app"

[locations.orders]
path = "~^/orders/"
rewrite = "^/orders/([0-9]+)/items/([0-9]+)$ /v1/items/$2?order=$1"
upstream = "app"

[locations.all]
rewrite = "^/old/(.*) /new/$1"
upstream = "app"
"""


def test_rewrite_with_captures_keeps_query(backend, proxy):
    b = backend(B.fixed(b"ok\n"))
    w = proxy(REWRITE + upstreams_for(["app"]), app=b)
    cases = [
        ("/api/users?x=1", "/v2/users?x=1"),
        ("/api/users/42/posts", "/v2/users/42/posts"),
        ("/api/", "/v2/"),
        ("/api/a?b=c&d=/api/e", "/v2/a?b=c&d=/api/e"),  # only the path is rewritten
        ("/old/page?lang=en", "/new/page?lang=en"),
        ("/unrelated?x", "/unrelated?x"),  # no match: unchanged
        ("/orders/12/items/7", "/v1/items/7?order=12"),
        ("/orders/12/other", "/orders/12/other"),
    ]
    seen = []
    for path, _ in cases:
        r = send(w.port, path)
        assert r.status == 200, (path, r)
        seen.append(b.last().path)
    assert seen == [want for _, want in cases]


def test_rewrite_unset_optional_group_is_empty(backend, proxy):
    b = backend(B.fixed(b"ok\n"))
    text = """
[servers.main]
addr = "127.0.0.1:@PORT@"
locations = ["orders"]

[locations.orders]
path = "/orders/"
rewrite = "^/orders/([0-9]+)(/[a-z]+)?$ /v1/orders/$1$2"
upstream = "app"
""" + upstreams_for(["app"])
    w = proxy(text, app=b)
    r = send(w.port, "/orders/12/items")
    assert r.status == 200 and b.last().path == "/v1/orders/12/items"
    r = send(w.port, "/orders/12?x=1")
    assert r.status == 200, r
    assert b.last().path == "/v1/orders/12?x=1"


# ---------------------------------------------------------------------------
# Header edits

HEADERS = """
[servers.main]
addr = "127.0.0.1:@PORT@"
locations = ["edit", "host_set", "plain"]

[locations.edit]
path = "/edit/"
upstream = "app"
proxy_set_headers = ["X-Set: proxy", "X-New: fresh value"]
proxy_add_headers = ["X-Add: proxy"]
proxy_remove_headers = ["x-secret"]
response_set_headers = ["X-R-Set: proxy", "X-R-New: new"]
response_add_headers = ["X-R-Add: proxy"]
response_remove_headers = ["x-r-remove"]

[locations.host_set]
path = "/host/"
upstream = "app"
proxy_set_headers = ["Host: backend.internal"]

[locations.plain]
upstream = "app"
"""

CLIENT_HEADERS = [("X-Set", "one"), ("X-Set", "two"), ("X-Add", "client"),
                  ("X-Secret", "s1"), ("x-SECRET", "s2"), ("X-Keep", "k")]
BACKEND_HEADERS = [("X-R-Set", "backend"), ("X-R-Set", "backend2"), ("X-R-Add", "backend"),
                   ("X-R-Remove", "gone"), ("X-R-Keep", "kept")]


def test_proxy_headers_set_add_remove(backend, proxy):
    b = backend(B.fixed(b"ok\n", headers=BACKEND_HEADERS))
    w = proxy(HEADERS + upstreams_for(["app"]), app=b)
    r = send(w.port, "/edit/x", headers=CLIENT_HEADERS)
    assert r.status == 200
    h = b.last().headers
    assert h.get_all("X-Set") == ["proxy"]  # set replaces every client copy
    assert h.get_all("X-New") == ["fresh value"]  # set adds a missing one
    assert h.get_all("X-Add") == ["client", "proxy"]  # add appends
    assert h.get_all("X-Secret") == []  # remove drops all, any case
    assert h.get_all("X-Keep") == ["k"]
    assert h.get("Host") == "test.local"


def test_response_headers_set_add_remove(backend, proxy):
    b = backend(B.fixed(b"ok\n", headers=BACKEND_HEADERS))
    w = proxy(HEADERS + upstreams_for(["app"]), app=b)
    r = send(w.port, "/edit/x")
    assert r.status == 200 and r.body == b"ok\n"
    assert r.headers.get_all("X-R-Set") == ["proxy"]
    assert r.headers.get_all("X-R-New") == ["new"]
    assert r.headers.get_all("X-R-Add") == ["backend", "proxy"]
    assert r.headers.get_all("X-R-Remove") == []
    assert r.headers.get_all("X-R-Keep") == ["kept"]


def test_header_edits_are_per_location(backend, proxy):
    b = backend(B.fixed(b"ok\n", headers=BACKEND_HEADERS))
    w = proxy(HEADERS + upstreams_for(["app"]), app=b)
    r = send(w.port, "/plain", headers=CLIENT_HEADERS)
    h = b.last().headers
    assert h.get_all("X-Set") == ["one", "two"]
    assert h.get_all("X-Secret") == ["s1", "s2"]
    assert h.get_all("X-New") == []
    assert r.headers.get_all("X-R-Set") == ["backend", "backend2"]
    assert r.headers.get_all("X-R-Remove") == ["gone"]


def test_proxy_set_host_header(backend, proxy):
    b = backend(B.fixed(b"ok\n"))
    w = proxy(HEADERS + upstreams_for(["app"]), app=b)
    assert send(w.port, "/host/x", host="public.example.com").status == 200
    assert b.last().headers.get_all("Host") == ["backend.internal"]


# ---------------------------------------------------------------------------
# Body limits

LIMITS = """
[servers.main]
addr = "127.0.0.1:@PORT@"
locations = ["upload", "all"]

[locations.upload]
path = "/upload/"
upstream = "app"
client_max_body_size = "1KB"

[locations.all]
upstream = "app"
"""


def test_client_max_body_size_per_location(backend, proxy):
    b = backend(B.echo())
    w = proxy(LIMITS + upstreams_for(["app"]), app=b)
    r = send(w.port, "/upload/big", method="POST", body=b"x" * 2000)
    assert r.status == 413
    assert b.request_count() == 0 and b.heads == 0  # never forwarded
    r = send(w.port, "/upload/exact", method="POST", body=b"y" * 1024)
    assert r.status == 200 and r.body == b"y" * 1024  # the limit itself is allowed
    r = send(w.port, "/other", method="POST", body=b"z" * 5000)
    assert r.status == 200 and r.body == b"z" * 5000  # other locations: no limit
    assert [q.path for q in b.requests] == ["/upload/exact", "/other"]


@pytest.mark.deadline(30)
def test_client_max_body_size_chunked(backend, proxy):
    b = backend(B.echo())
    w = proxy(LIMITS + upstreams_for(["app"]), app=b)
    try:
        r = send(w.port, "/upload/chunked", method="POST", chunks=[b"c" * 500] * 4, timeout=10)
        status = r.status
    except (B.PeerClosed, ConnectionError):
        status = None  # reset after the answer: acceptable only with a 413 seen below
    assert status == 413
    time.sleep(0.2)
    # The backend may have seen the head, never a complete over-limit body.
    assert all(q.body_len <= 1024 for q in b.requests), b.requests
    r = send(w.port, "/upload/small", method="POST", chunks=[b"s" * 300] * 3)
    assert r.status == 200 and r.body == b"s" * 900


# ---------------------------------------------------------------------------
# Weighted round robin

def test_weighted_round_robin_3_to_1(backend, proxy):
    a, c = named(backend, "a"), named(backend, "b")
    text = """
[servers.main]
addr = "127.0.0.1:@PORT@"
locations = ["all"]

[locations.all]
upstream = "app"

[upstreams.app]
addrs = ["@a@ 3", "@b@ 1"]
algo = "round_robin"
"""
    w = proxy(text, threads=2, a=a, b=c)
    s = B.connect(w.port)
    rd = B.Reader(s)
    got = []
    for i in range(400):
        s.sendall(b"GET /r%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
        got.append(B.read_response(rd).body)
    s.close()
    assert got.count(b"a\n") == 300 and got.count(b"b\n") == 100
    assert a.request_count() == 300 and c.request_count() == 100
    # Smooth: every window of 4 consecutive picks is a,a,a,b in some order.
    for i in range(0, 400, 4):
        assert got[i:i + 4].count(b"b\n") == 1, got[i:i + 4]


def test_smooth_weighted_order(backend, proxy):
    bs = {n: named(backend, n) for n in "abc"}
    text = """
[servers.main]
addr = "127.0.0.1:@PORT@"
locations = ["all"]

[locations.all]
upstream = "app"

[upstreams.app]
addrs = ["@a@ 5", "@b@ 1", "@c@ 1"]
"""
    w = proxy(text, **bs)
    order = "".join(send(w.port, "/%d" % i).body.decode().strip() for i in range(14))
    assert order == "aabacaa" * 2


def test_two_to_one_never_more_than_two_in_a_row(backend, proxy):
    bs = {n: named(backend, n) for n in "ab"}
    text = """
[servers.main]
addr = "127.0.0.1:@PORT@"
locations = ["all"]

[locations.all]
upstream = "app"

[upstreams.app]
addrs = ["@a@ 2", "@b@ 1"]
"""
    w = proxy(text, **bs)
    order = "".join(send(w.port, "/%d" % i).body.decode().strip() for i in range(30))
    assert order.count("a") == 20 and order.count("b") == 10
    assert "aaa" not in order and "bb" not in order, order


# ---------------------------------------------------------------------------
# Timeouts

def sleepy(conn, req):
    """Answers at once, or after 1 s if the target contains "sleep"."""
    if "sleep" in req.path and conn.wait_peer_close(1.0):
        return "close"
    body = b"awake\n"
    conn.send(B.response_head(200, [("Content-Length", str(len(body)))]) + body)


@pytest.mark.deadline(30)
def test_location_read_timeout_504(backend, proxy):
    b = backend(sleepy)
    text = """
[servers.main]
addr = "127.0.0.1:@PORT@"
locations = ["quick", "patient"]

[locations.quick]
path = "/quick/"
upstream = "app"
read_timeout = "300ms"      # wins over the upstream's 10s

[locations.patient]
path = "/patient/"
upstream = "app"

[upstreams.app]
addrs = ["@app@"]
read_timeout = "10s"
"""
    w = proxy(text, app=b)
    t0 = time.monotonic()
    r = send(w.port, "/quick/x?sleep", timeout=10)
    took = time.monotonic() - t0
    assert r.status == 504, r
    assert 0.25 <= took < 0.95, took
    assert send(w.port, "/quick/y").body == b"awake\n"
    t0 = time.monotonic()
    r = send(w.port, "/patient/x?sleep", timeout=10)
    assert r.status == 200 and r.body == b"awake\n"
    assert time.monotonic() - t0 >= 0.9


# ---------------------------------------------------------------------------
# Access log

def read_log_lines(log, n, timeout=5):
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        lines = log.read_text().splitlines() if log.exists() else []
        if len(lines) >= n:
            break
        time.sleep(0.05)
    return lines


@pytest.mark.deadline(30)
def test_access_log_template_to_file(backend, proxy, tmp_path):
    b = backend(B.fixed(b"ok\n"))
    log = tmp_path / "access.log"
    text = """
[servers.main]
addr = "127.0.0.1:@PORT@"
locations = ["all"]
access_log = "{client_ip} {method} {path} q={query} uri={uri} {status} {size} {protocol} id={request_header:X-Request-Id} ua=\\"{request_header:user-agent}\\" none={request_header:X-Absent} up={upstream_addr} t={latency}/{upstream_latency} {{literal}}"
access_log_file = "%s"

[locations.all]
upstream = "app"
""" % log + upstreams_for(["app"])
    w = proxy(text, app=b)
    r = send(w.port, "/some/path?a=1&b=2",
             headers=[("X-Request-Id", "req-42"), ("User-Agent", "curl/8.0")])
    assert r.status == 200
    r2 = send(w.port, "/two", version="HTTP/1.0")
    assert r2.status == 200
    lines = read_log_lines(log, 2)
    assert len(lines) == 2, lines
    m = re.match(r'127\.0\.0\.1 GET /some/path q=a=1&b=2 uri=/some/path\?a=1&b=2 200 (\d+) '
                 r'HTTP/1\.1 id=req-42 ua="curl/8\.0" none=- up=(\S+) '
                 r't=(\d+\.\d{3})/(\d+\.\d{3}) \{literal\}$', lines[0])
    assert m, lines[0]
    assert int(m.group(1)) > len(b"ok\n")  # bytes sent, head included
    assert m.group(2) == b.addr
    assert float(m.group(4)) <= float(m.group(3)) < 5000
    assert lines[1].startswith("127.0.0.1 GET /two q=- uri=/two 200 "), lines[1]
    # Without a client id, weir generates one and sends it upstream.
    assert re.search(r' HTTP/1\.0 id=[0-9a-f]{32} ua="-" none=- ', lines[1]), lines[1]


@pytest.mark.deadline(30)
def test_access_log_response_header(backend, proxy, tmp_path):
    b = backend(B.fixed(b"ok\n", headers=[("X-Cache", "HIT")]))
    log = tmp_path / "access.log"
    text = """
[servers.main]
addr = "127.0.0.1:@PORT@"
locations = ["all"]
access_log = "{status} cache={response_header:x-cache} by={response_header:X-Served-By} port={response_header:X-Backend-Port} none={response_header:X-Absent}"
access_log_file = "%s"

[locations.all]
upstream = "app"
response_add_headers = ["X-Served-By: weir"]
""" % log + upstreams_for(["app"])
    w = proxy(text, app=b)
    try:
        for _ in range(2):
            r = send(w.port, "/x")
            assert r.status == 200 and r.headers.get("X-Served-By") == "weir"
        lines = read_log_lines(log, 2)
    finally:
        problems = w.stop()  # here, so that a crash fails the test, not its teardown
    assert not problems, "; ".join(problems) + "\n" + w.describe()
    assert lines == ["200 cache=HIT by=weir port=%d none=-" % b.port] * 2


@pytest.mark.deadline(30)
def test_access_log_off(backend, proxy, tmp_path):
    b = backend()
    log = tmp_path / "off.log"
    text = """
[servers.main]
addr = "127.0.0.1:@PORT@"
locations = ["all"]
access_log = "off"
access_log_file = "%s"

[locations.all]
upstream = "app"
""" % log + upstreams_for(["app"])
    w = proxy(text, app=b)
    assert send(w.port, "/").status == 200
    time.sleep(0.3)
    assert not log.exists() or log.read_text() == ""


# ---------------------------------------------------------------------------
# The embedded default

def listener_on(port):
    """True if something listens on the port or it cannot be bound the way
    weir binds (SO_REUSEADDR; a TIME-WAIT left by an earlier run is fine).
    Something listening with SO_REUSEPORT would share weir's port, so a
    successful connect counts as taken too."""
    try:
        socket.create_connection((B.LOOPBACK, port), timeout=0.5).close()
        return True
    except OSError:
        pass
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((B.LOOPBACK, port))
        return False
    except OSError:
        return True
    finally:
        s.close()


@pytest.mark.deadline(30)
def test_default_config_answers_from_both_echo_upstreams(start_proc):
    require_binary("weir")
    busy = [p for p in (6188, 6101, 6102) if listener_on(p)]
    if busy:
        pytest.skip("default ports busy: %s" % busy)
    w = start_proc([binary("weir"), "--threads", "1"], 6188, "weir-default")
    assert wait_port(6101, w.proc) and wait_port(6102, w.proc)
    bodies = sorted(send(6188, "/hello?x=1").body for _ in range(4))
    assert bodies == [b"echo from 127.0.0.1:6101: GET /hello?x=1\n"] * 2 + \
                     [b"echo from 127.0.0.1:6102: GET /hello?x=1\n"] * 2
    r = send(6188, "/p", method="POST", body=b"data")
    assert r.status == 200 and r.body.endswith(b": POST /p\n")


# ---------------------------------------------------------------------------
# Known bugs

def test_absolute_form_target_routes_by_its_path(backend, proxy):
    b = named(backend, "all")
    text = """
[servers.main]
addr = "127.0.0.1:@PORT@"
locations = ["all"]

[locations.all]
path = "/"
upstream = "all"
""" + upstreams_for(["all"])
    w = proxy(text, all=b)
    r = B.request(w.port, b"GET http://x.test/a?q=1 HTTP/1.1\r\nHost: x.test\r\n"
                          b"Connection: close\r\n\r\n")
    assert r.status == 200 and r.body == b"all\n"


def test_absolute_form_target_host_wins_over_host_field(backend, proxy):
    bs = {n: named(backend, n) for n in ["api", "other"]}
    text = """
[servers.main]
addr = "127.0.0.1:@PORT@"
locations = ["api", "other"]

[locations.api]
host = "api.example.com"
upstream = "api"

[locations.other]
upstream = "other"
""" + upstreams_for(["api", "other"])
    w = proxy(text, **bs)
    r = B.request(w.port, b"GET http://api.example.com/a HTTP/1.1\r\nHost: other.test\r\n"
                          b"Connection: close\r\n\r\n")
    assert r.status == 200 and r.body == b"api\n"


@pytest.mark.deadline(30)
def test_regex_match_data_freed_at_exit(backend, proxy):
    b = backend()
    text = """
[servers.main]
addr = "127.0.0.1:@PORT@"
locations = ["re"]

[locations.re]
host = "~^h"
path = "~^/a"
rewrite = "^/a/(.*) /b/$1"
upstream = "app"
""" + upstreams_for(["app"])
    w = proxy(text, app=b)
    try:
        assert send(w.port, "/a/x", host="h").status == 200
        assert b.last().path == "/b/x"
    finally:
        problems = w.stop()
    assert not problems, "; ".join(problems) + "\n" + w.describe()
