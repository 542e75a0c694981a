"""weir's cache (docs/cache.md) against nginx's `proxy_cache` (Debian's
nginx-light 1.22): the same sequence of requests through each, each proxy
in front of its OWN counting origin (test_cache.Origin, the same routes on
both), and per row a comparison of how many requests each origin got for
the path and of the status and body each client got.

nginx: `proxy_cache_path` in the test's tmp dir, no `proxy_cache_valid`
(so the origin's Cache-Control / Expires decide), `proxy_cache_lock on`,
`proxy_cache_revalidate on`, `add_header X-Cache-Status
$upstream_cache_status always`; under `/bg/` also
`proxy_cache_background_update on` (without it nginx ignores
stale-while-revalidate and refreshes synchronously); under `/stale/` also
`proxy_cache_use_stale error timeout http_500 http_502 http_503 http_504
updating` and `proxy_cache_background_update on`. weir: the `cache` plugin
with its defaults (lock 5s, no stale_on_error), one location for all.

One weir bug found this way (the Cache-Status ttl of a stored forwarded
response ignored its Age) is fixed; its row stays.

Where the two differ the row pins BOTH sides' observed values and says
why weir differs on purpose (the summary is in docs/differences.md,
"The HTTP cache").

nginx keeps times in whole seconds (an entry with max-age=1 stored at
t.9 is fresh until the clock reads t+2), so the rows that let an entry
expire sleep EXPIRE (2.1 s) rather than just over a second.
"""
import os
import shutil
import threading
import time

import pytest

import diffutil as D
from conftest import free_port
from test_cache import CONF, Origin, date, h1, status_of, validating

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
EXPIRE = 2.1  # past max-age=1 for weir and for nginx's whole-second clock
SIDES = ("weir", "nginx")

NGINX_CACHE_CONF = """
worker_processes 1;
user root;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path @DIR@/body;
    proxy_temp_path @DIR@/proxy;
    fastcgi_temp_path @DIR@/fastcgi;
    uwsgi_temp_path @DIR@/uwsgi;
    scgi_temp_path @DIR@/scgi;
    proxy_cache_path @DIR@/cache levels=1:2 keys_zone=c:1m max_size=64m inactive=10m
                     use_temp_path=off;
    server {
        listen 127.0.0.1:@PORT@;
        proxy_cache c;
        proxy_cache_lock on;
        proxy_cache_revalidate on;
        add_header X-Cache-Status $upstream_cache_status always;
        location / { proxy_pass http://@BACKEND@; }
        location /bg/ {
            proxy_pass http://@BACKEND@;
            proxy_cache_background_update on;
        }
        location /stale/ {
            proxy_pass http://@BACKEND@;
            proxy_cache_use_stale error timeout http_500 http_502 http_503 http_504 updating;
            proxy_cache_background_update on;
        }
    }
}
"""


def start_nginx_cache(workdir, backend_addr):
    d = os.path.join(workdir, "nginx")
    os.makedirs(d, exist_ok=True)
    port = free_port()
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(D.fill(NGINX_CACHE_CONF, DIR=d, PORT=port, BACKEND=backend_addr))
    p = D.Peer("nginx", [NGINX, "-p", d, "-c", conf, "-g",
                         "daemon off; pid %s/nginx.pid; error_log stderr;" % d], port, workdir)
    return p


class Pair:
    """weir and nginx, each with its own Origin carrying the same routes."""

    def __init__(self, weir_port, nginx_port, origins):
        self.port = {"weir": weir_port, "nginx": nginx_port}
        self.origin = origins

    def set(self, path, status=200, headers=(), body=b"body"):
        for o in self.origin.values():
            o.set(path, status, headers, body)

    def route(self, path, fn):
        for o in self.origin.values():
            o.routes[path] = fn

    def delay(self, seconds):
        for o in self.origin.values():
            o.delay = seconds

    def get(self, path, headers=(), method="GET"):
        """The same request through both: {"weir": Resp, "nginx": Resp}."""
        return {s: h1(self.port[s], path, headers, method) for s in SIDES}

    def counts(self, path):
        return {s: self.origin[s].count(path) for s in SIDES}

    def last(self, side):
        return self.origin[side].backend.last()

    def wait_count(self, path, n, timeout=10):
        """Waits (a deadline, not a threshold) until both origins got n
        requests for path, for background requests."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and min(self.counts(path).values()) < n:
            time.sleep(0.02)
        return self.counts(path)


@pytest.fixture
def pair(tmp_path, backend, weir_toml):
    if not os.access(NGINX, os.X_OK):
        pytest.skip("nginx not installed")
    origins = {}
    for s in SIDES:
        o = Origin()
        o.backend = backend(o.handler)
        origins[s] = o
    w = weir_toml(CONF % {"extra": "", "caches": "", "rest": ""}, B=origins["weir"].backend)
    n = start_nginx_cache(str(tmp_path), origins["nginx"].backend.addr)
    try:
        assert n.ok, "nginx did not start:\n" + n.stderr()
        yield Pair(w.port, n.port, origins)
    finally:
        n.stop()


def seen(rs):
    """(status, body) per side."""
    return {s: (r.status, r.body) for s, r in rs.items()}


def same(rs, status, body):
    assert seen(rs) == {s: (status, body) for s in SIDES}, rs


def nginx_status(r):
    return r.get("x-cache-status", "")


# ---- what is stored ----


def test_max_age_hit(pair):
    pair.set("/ma", headers=[("Cache-Control", "max-age=60")], body="ma")
    same(pair.get("/ma"), 200, b"ma")
    rs = pair.get("/ma")
    same(rs, 200, b"ma")
    assert "hit" in status_of(rs["weir"]) and nginx_status(rs["nginx"]) == "HIT"
    assert pair.counts("/ma") == {"weir": 1, "nginx": 1}


@pytest.mark.parametrize("path,headers", [
    ("/nostore", [("Cache-Control", "max-age=60, no-store")]),
    ("/private", [("Cache-Control", "max-age=60, private")]),
    ("/cookie", [("Cache-Control", "max-age=60"), ("Set-Cookie", "s=1")]),
    ("/varystar", [("Cache-Control", "max-age=60"), ("Vary", "*")]),
    ("/expires0", [("Date", date()), ("Expires", "0")]),
], ids=["no-store", "private", "set-cookie", "vary-star", "expires-0"])
def test_not_stored_by_either(pair, path, headers):
    pair.set(path, headers=headers, body="x")
    for _ in range(2):
        same(pair.get(path), 200, b"x")
    assert pair.counts(path) == {"weir": 2, "nginx": 2}


def test_s_maxage_wins_over_max_age(pair):
    pair.set("/smax", headers=[("Cache-Control", "max-age=0, s-maxage=60")], body="s")
    for _ in range(2):
        same(pair.get("/smax"), 200, b"s")
    assert pair.counts("/smax") == {"weir": 1, "nginx": 1}


def test_expires_and_date(pair):
    pair.set("/exp", headers=[("Date", date()), ("Expires", date(60))], body="e")
    for _ in range(2):
        same(pair.get("/exp"), 200, b"e")
    assert pair.counts("/exp") == {"weir": 1, "nginx": 1}


def test_no_cache_response(pair):
    # Both go to the origin every time, but weir stores the response and
    # validates it (RFC 9111 5.2.2.4: no-cache means "revalidate", not "do
    # not store"), while nginx treats no-cache like no-store and never
    # sends a validator.
    def answer(req, n):
        hs = [("ETag", '"nc"'), ("Cache-Control", "no-cache")]
        if req.headers.get("if-none-match") == '"nc"':
            return 304, hs, b""
        return 200, hs, b"nc"
    pair.route("/nocache", answer)
    for _ in range(2):
        same(pair.get("/nocache"), 200, b"nc")
    assert pair.counts("/nocache") == {"weir": 2, "nginx": 2}
    assert pair.last("weir").headers.get("if-none-match") == '"nc"'
    assert pair.last("nginx").headers.get("if-none-match") is None


def test_authorization_request(pair):
    # DELIBERATE: RFC 9111 3.5: a shared cache must not use a response to a
    # request with Authorization unless the response allows it (public,
    # s-maxage, must-revalidate). nginx's key ignores Authorization and it
    # stores and serves the response: a second user with other
    # credentials would get the first one's page.
    pair.set("/auth", headers=[("Cache-Control", "max-age=60")], body="secret")
    pair.set("/authpub", headers=[("Cache-Control", "max-age=60, public")], body="pub")
    for _ in range(2):
        same(pair.get("/auth", [("Authorization", "Basic eDp5")]), 200, b"secret")
        same(pair.get("/authpub", [("Authorization", "Basic eDp5")]), 200, b"pub")
    rs = pair.get("/auth", [("Authorization", "Basic b3RoZXI6dXNlcg==")])
    same(rs, 200, b"secret")
    assert nginx_status(rs["nginx"]) == "HIT", "nginx serves it to another user"
    assert pair.counts("/auth") == {"weir": 3, "nginx": 1}
    assert pair.counts("/authpub") == {"weir": 1, "nginx": 1}


def test_request_directives(pair):
    # DELIBERATE: weir honours the request's directives, RFC 9111 5.2.1.4
    # (no-cache: validate first; Pragma: no-cache without Cache-Control is
    # the same, 5.4) and 5.2.1.7 (only-if-cached: a stored response or
    # 504). nginx ignores a request's Cache-Control and Pragma (only
    # proxy_cache_bypass, not set here, would send one on).
    pair.set("/rq", headers=[("Cache-Control", "max-age=60")], body="rq")
    same(pair.get("/rq"), 200, b"rq")
    rs = pair.get("/rq", [("Cache-Control", "no-cache")])
    same(rs, 200, b"rq")
    assert "fwd=request" in status_of(rs["weir"]) and nginx_status(rs["nginx"]) == "HIT", rs
    rs = pair.get("/rq", [("Pragma", "no-cache")])
    same(rs, 200, b"rq")
    assert "fwd=request" in status_of(rs["weir"]) and nginx_status(rs["nginx"]) == "HIT", rs
    assert pair.counts("/rq") == {"weir": 3, "nginx": 1}
    pair.set("/oic", headers=[("Cache-Control", "max-age=60")], body="oic")
    rs = pair.get("/oic", [("Cache-Control", "only-if-cached")])
    assert {s: r.status for s, r in rs.items()} == {"weir": 504, "nginx": 200}, rs
    assert pair.counts("/oic") == {"weir": 0, "nginx": 1}


def test_targeted_cdn_cache_control(pair):
    # DELIBERATE: RFC 9213: CDN-Cache-Control, when present, replaces
    # Cache-Control for a CDN-like cache; nginx 1.22 does not know it.
    pair.set("/cdn", headers=[("Cache-Control", "no-store"),
                              ("CDN-Cache-Control", "max-age=60")], body="cdn")
    for _ in range(2):
        same(pair.get("/cdn"), 200, b"cdn")
    assert pair.counts("/cdn") == {"weir": 1, "nginx": 2}


@pytest.mark.parametrize("status", [302, 404, 500])
def test_explicit_freshness_makes_any_status_storable(pair, status):
    path = "/st%d" % status
    pair.set(path, status=status, headers=[("Cache-Control", "max-age=60"),
                                           ("Location", "/x")], body="s")
    for _ in range(2):
        same(pair.get(path), status, b"s")
    assert pair.counts(path) == {"weir": 1, "nginx": 1}


def test_origin_age_counts(pair):
    # DELIBERATE: RFC 9111 4.2.3: the current age includes the Age the
    # origin (or a cache in front of it) sent; Age 100 with max-age=60 is
    # already stale, so weir goes to the origin again. nginx ignores Age
    # and keeps the response for 60 s.
    pair.set("/age", headers=[("Cache-Control", "max-age=60"), ("Age", "100")], body="a")
    same(pair.get("/age"), 200, b"a")
    rs = pair.get("/age")
    same(rs, 200, b"a")
    assert "fwd=stale" in status_of(rs["weir"]) and nginx_status(rs["nginx"]) == "HIT", rs
    assert pair.counts("/age") == {"weir": 2, "nginx": 1}


def test_cache_status_ttl_of_a_stored_response_counts_its_age(pair):
    pair.set("/ttl", headers=[("Cache-Control", "max-age=100"), ("Age", "30")], body="t")
    r = h1(pair.port["weir"], "/ttl")
    assert "stored" in status_of(r), r
    assert "ttl=70;" in status_of(r) or "ttl=69;" in status_of(r), r


def test_heuristic_freshness(pair):
    # DELIBERATE: RFC 9111 4.2.2 lets a cache give a 200 with Last-Modified
    # and no explicit lifetime a heuristic one (weir: 10% of Date minus
    # Last-Modified, at most max_heuristic_ttl); nginx caches only with an
    # explicit lifetime (or proxy_cache_valid, not set here).
    pair.set("/heur", headers=[("Date", date()), ("Last-Modified", date(-10 * 86400))],
             body="h")
    for _ in range(2):
        same(pair.get("/heur"), 200, b"h")
    assert pair.counts("/heur") == {"weir": 1, "nginx": 2}


def test_conditional_request_on_a_miss(pair):
    # DELIBERATE (a choice; see the report): on a miss weir forwards the
    # client's If-None-Match as sent (an intermediary without a stored
    # response passes preconditions on, RFC 9110 13.2.1); the origin's 304
    # is passed back and cannot be stored (RFC 9111 3), so the next plain
    # GET is a miss too. nginx's proxy_cache removes the client's
    # conditionals upstream, stores the 200 and answers the 304 itself.
    pair.route("/cond", validating(cc="max-age=60"))
    rs = pair.get("/cond", [("If-None-Match", '"v1"')])
    same(rs, 304, b"")
    assert pair.last("weir").headers.get("if-none-match") == '"v1"'
    assert pair.last("nginx").headers.get("if-none-match") is None
    rs = pair.get("/cond")
    same(rs, 200, b"the body")
    assert nginx_status(rs["nginx"]) == "HIT", rs
    assert pair.counts("/cond") == {"weir": 2, "nginx": 1}
    # With a stored response both answer the client's conditional.
    rs = pair.get("/cond", [("If-None-Match", '"v1"')])
    same(rs, 304, b"")
    assert pair.counts("/cond") == {"weir": 2, "nginx": 1}


# ---- Vary ----


def test_vary_accept_encoding(pair):
    def answer(req, n):
        enc = req.headers.get("accept-encoding", "none")
        return 200, [("Cache-Control", "max-age=60"), ("Vary", "Accept-Encoding")], "enc=" + enc
    pair.route("/vary", answer)
    same(pair.get("/vary", [("Accept-Encoding", "gzip, br")]), 200, b"enc=gzip, br")
    same(pair.get("/vary", [("Accept-Encoding", "identity")]), 200, b"enc=identity")
    same(pair.get("/vary"), 200, b"enc=none")
    # Each variant is answered from the store by both (nginx keeps variants
    # under a secondary key since 1.7.7).
    same(pair.get("/vary", [("Accept-Encoding", "gzip, br")]), 200, b"enc=gzip, br")
    same(pair.get("/vary", [("Accept-Encoding", "identity")]), 200, b"enc=identity")
    same(pair.get("/vary"), 200, b"enc=none")
    assert pair.counts("/vary") == {"weir": 3, "nginx": 3}
    # DELIBERATE: RFC 9111 4.1 lets a cache normalize the values a field's
    # definition says are equivalent; Accept-Encoding codings are
    # case-insensitive and unordered (RFC 9110 12.5.3), so weir answers
    # "BR,gzip" with the "gzip, br" variant. nginx compares the bytes (it
    # only drops spaces) and goes to the origin.
    rs = pair.get("/vary", [("Accept-Encoding", "BR,gzip")])
    assert seen(rs) == {"weir": (200, b"enc=gzip, br"), "nginx": (200, b"enc=BR,gzip")}, rs
    assert pair.counts("/vary") == {"weir": 3, "nginx": 4}


# ---- validation and stale answers ----


def test_stale_entry_revalidated_with_etag(pair):
    lm = date(-3600)

    def answer(req, n):
        # The 304 renews the lifetime (RFC 9111 4.3.4), so the request after
        # it is a hit whatever the clock's second boundaries do.
        hs = [("ETag", '"v1"'), ("Last-Modified", lm), ("X-Version", "v%d" % n)]
        if req.headers.get("if-none-match") == '"v1"':
            return 304, hs + [("Cache-Control", "max-age=60")], b""
        return 200, hs + [("Cache-Control", "max-age=1")], b"the body"
    pair.route("/etag", answer)
    same(pair.get("/etag"), 200, b"the body")
    time.sleep(EXPIRE)
    rs = pair.get("/etag")
    same(rs, 200, b"the body")
    assert "fwd=stale; fwd-status=304" in status_of(rs["weir"]), rs
    assert nginx_status(rs["nginx"]) == "REVALIDATED", rs
    for s in SIDES:
        up = pair.last(s)
        assert up.headers.get("if-none-match") == '"v1"', (s, up.headers)
        assert up.headers.get("if-modified-since"), (s, up.headers)
    # The 304 refreshed the entry: the next request is a hit for both.
    rs = pair.get("/etag")
    same(rs, 200, b"the body")
    assert "hit" in status_of(rs["weir"]) and nginx_status(rs["nginx"]) == "HIT"
    assert pair.counts("/etag") == {"weir": 2, "nginx": 2}


def test_stale_entry_under_use_stale_updating(pair):
    # DELIBERATE: with `proxy_cache_use_stale updating` and
    # `proxy_cache_background_update on`, nginx answers every expired
    # entry stale at once and validates it in the background. RFC 9111
    # 4.2.4: a cache MUST NOT generate a stale response unless the client
    # or origin allows it (max-stale, stale-while-revalidate) or it is
    # disconnected; weir waits for the origin's 304 (the origin here did
    # not allow stale serving).
    pair.route("/stale/etag", validating())
    same(pair.get("/stale/etag"), 200, b"the body")
    time.sleep(EXPIRE)
    rs = pair.get("/stale/etag")
    same(rs, 200, b"the body")
    assert "fwd=stale; fwd-status=304" in status_of(rs["weir"]), rs
    assert nginx_status(rs["nginx"]) == "STALE", rs
    assert rs["weir"].get("x-version") == "v2" and rs["nginx"].get("x-version") == "v1"
    assert pair.wait_count("/stale/etag", 2) == {"weir": 2, "nginx": 2}
    assert pair.last("nginx").headers.get("if-none-match") == '"v1"'


def test_stale_while_revalidate(pair):
    def answer(req, n):
        cc = "max-age=1, stale-while-revalidate=30" if n == 1 else "max-age=60"
        return 200, [("Cache-Control", cc), ("ETag", '"s%d"' % n)], "v%d" % n
    pair.route("/bg/swr", answer)
    same(pair.get("/bg/swr"), 200, b"v1")
    time.sleep(EXPIRE)
    rs = pair.get("/bg/swr")
    same(rs, 200, b"v1")
    assert "hit" in status_of(rs["weir"]) and nginx_status(rs["nginx"]) == "STALE", rs
    assert pair.wait_count("/bg/swr", 2) == {"weir": 2, "nginx": 2}, "one background refresh"
    for s in SIDES:
        assert pair.last(s).headers.get("if-none-match") == '"s1"', s
    # The refresh lands in the store a moment after the origin answered it.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rs = pair.get("/bg/swr")
        if all(r.body == b"v2" for r in rs.values()):
            break
        time.sleep(0.05)
    same(rs, 200, b"v2")
    assert pair.counts("/bg/swr") == {"weir": 2, "nginx": 2}


def test_stale_if_error_on_a_503(pair):
    state = {"fail": False}

    def answer(req, n):
        if state["fail"]:
            return 503, [], b"down"
        return 200, [("Cache-Control", "max-age=1, stale-if-error=60")], b"good"
    pair.route("/stale/sie", answer)
    same(pair.get("/stale/sie"), 200, b"good")
    time.sleep(EXPIRE)
    state["fail"] = True
    rs = pair.get("/stale/sie")
    same(rs, 200, b"good")
    assert "fwd=stale; fwd-status=503" in status_of(rs["weir"]), rs
    # nginx (`updating` + background update) answers stale before it has
    # even asked; its background request then gets the 503.
    assert nginx_status(rs["nginx"]) == "STALE", rs
    assert pair.wait_count("/stale/sie", 2) == {"weir": 2, "nginx": 2}


def test_503_without_stale_if_error(pair):
    # DELIBERATE: weir serves stale on an error only when stale-if-error or
    # its stale_on_error setting (default 0s) covers the staleness (RFC
    # 9111 4.2.4, RFC 5861 4); nginx's `proxy_cache_use_stale http_503`
    # serves any stale entry, however old, without the origin's leave.
    state = {"fail": False}

    def answer(req, n):
        if state["fail"]:
            return 503, [], b"down"
        return 200, [("Cache-Control", "max-age=1")], b"good"
    pair.route("/stale/503", answer)
    same(pair.get("/stale/503"), 200, b"good")
    time.sleep(EXPIRE)
    state["fail"] = True
    rs = pair.get("/stale/503")
    assert seen(rs) == {"weir": (503, b"down"), "nginx": (200, b"good")}, rs
    assert pair.wait_count("/stale/503", 2) == {"weir": 2, "nginx": 2}


# ---- HEAD and Range ----


def test_head_after_get(pair):
    pair.set("/head", headers=[("Cache-Control", "max-age=60")], body="0123456789")
    same(pair.get("/head"), 200, b"0123456789")
    rs = pair.get("/head", method="HEAD")
    same(rs, 200, b"")
    for r in rs.values():
        assert r.get("content-length") == "10", rs
    assert "hit" in status_of(rs["weir"]) and nginx_status(rs["nginx"]) == "HIT"
    assert pair.counts("/head") == {"weir": 1, "nginx": 1}


def test_head_miss(pair):
    # DELIBERATE (docs/cache.md "HEAD"): a HEAD miss goes to the origin as a
    # HEAD and nothing is stored; nginx (proxy_cache_convert_head on, the
    # default) sends a GET instead, fetching a body the client did not ask
    # for, and stores it, so the GET after it is a hit.
    pair.set("/hmiss", headers=[("Cache-Control", "max-age=60")], body="hm")
    same(pair.get("/hmiss", method="HEAD"), 200, b"")
    assert pair.last("weir").method == "HEAD" and pair.last("nginx").method == "GET"
    rs = pair.get("/hmiss")
    same(rs, 200, b"hm")
    assert "fwd=uri-miss" in status_of(rs["weir"]) and nginx_status(rs["nginx"]) == "HIT"
    assert pair.counts("/hmiss") == {"weir": 2, "nginx": 1}


def ranged(req, n):
    """An origin that honours one `bytes=a-b` range."""
    body = b"0123456789"
    hs = [("Cache-Control", "max-age=60"), ("ETag", '"rg"'), ("Accept-Ranges", "bytes")]
    rng = req.headers.get("range")
    if rng and rng.startswith("bytes="):
        a, b = rng[6:].split("-")
        a, b = int(a), int(b)
        return 206, hs + [("Content-Range", "bytes %d-%d/10" % (a, b))], body[a:b + 1]
    return 200, hs, body


def test_range_after_get(pair):
    pair.route("/range", ranged)
    same(pair.get("/range"), 200, b"0123456789")
    rs = pair.get("/range", [("Range", "bytes=2-4")])
    same(rs, 206, b"234")
    for r in rs.values():
        assert r.get("content-range") == "bytes 2-4/10", rs
    assert "hit" in status_of(rs["weir"]) and nginx_status(rs["nginx"]) == "HIT"
    assert pair.counts("/range") == {"weir": 1, "nginx": 1}


def test_range_on_a_miss(pair):
    # DELIBERATE (docs/cache.md "Range"): weir forwards a Range miss as it
    # is and does not store the 206 (RFC 9111 3.3 allows a cache to store
    # partial content, it does not require it; the origin does the work of
    # the range asked for, no more). nginx with proxy_cache
    # drops Range (and the conditionals) from the upstream request, stores
    # the whole 200 and cuts the 206 itself, so the next GET is a hit.
    pair.route("/range-miss", ranged)
    rs = pair.get("/range-miss", [("Range", "bytes=2-4")])
    same(rs, 206, b"234")
    assert pair.last("weir").headers.get("range") == "bytes=2-4"
    assert pair.last("nginx").headers.get("range") is None
    rs = pair.get("/range-miss")
    same(rs, 200, b"0123456789")
    assert nginx_status(rs["nginx"]) == "HIT", rs
    assert pair.counts("/range-miss") == {"weir": 2, "nginx": 1}


# ---- invalidation ----


def test_post_invalidates_in_weir_only(pair):
    # DELIBERATE: RFC 9111 4.4: a cache MUST invalidate the target URI
    # after a non-error response to an unsafe method. nginx never
    # invalidates (a POST just passes through), so it keeps answering the
    # GET it stored before the POST.
    def answer(req, n):
        if req.method == "POST":
            return 200, [], b"posted"
        return 200, [("Cache-Control", "max-age=60")], "v%d" % n
    pair.route("/inv", answer)
    same(pair.get("/inv"), 200, b"v1")
    same(pair.get("/inv"), 200, b"v1")
    same(pair.get("/inv", method="POST"), 200, b"posted")
    rs = pair.get("/inv")
    assert seen(rs) == {"weir": (200, b"v3"), "nginx": (200, b"v1")}, rs
    assert nginx_status(rs["nginx"]) == "HIT"
    assert pair.counts("/inv") == {"weir": 3, "nginx": 2}


# ---- coalescing ----


def test_concurrent_misses_are_coalesced(pair):
    pair.set("/co", headers=[("Cache-Control", "max-age=60")], body="co" * 1000)
    pair.delay(0.5)
    for s in SIDES:
        out = []
        ts = [threading.Thread(target=lambda: out.append(h1(pair.port[s], "/co")))
              for _ in range(20)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert len(out) == 20, s
        assert all(r.status == 200 and r.body == b"co" * 1000 for r in out), (s, out)
    assert pair.counts("/co") == {"weir": 1, "nginx": 1}

