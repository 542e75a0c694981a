"""The HTTP cache (docs/cache.md) through the `cache` plugin, against an
origin that counts its requests: what is stored and for how long, what a
request may ask, validation and its 304s, stale answers, Vary, HEAD and
Range from a stored GET, invalidation, coalescing, purges, the admin API
and metrics, over HTTP/1.1 and HTTP/2."""
import email.utils
import json
import threading
import time
import urllib.request

import pytest

import backends as B
import h2util as U

CONF = """
[servers.s]
addr = "127.0.0.1:@PORT@"
locations = ["l"]
h2c = true

[caches.default]
memory = "8MB"
%(caches)s

[plugins.c]
category = "cache"
%(extra)s

[locations.l]
upstream = "u"
plugins = ["c"]

[upstreams.u]
addrs = ["@B@"]
%(rest)s
"""


class Origin:
    """An origin whose answer per path the test sets: (status, headers, body)
    or a function of the request returning that. Every answer carries
    X-N, the number of requests the path got."""

    def __init__(self):
        self.routes = {}
        self.counts = {}
        self.lock = threading.Lock()
        self.delay = 0

    def set(self, path, status=200, headers=(), body=b"body"):
        self.routes[path] = (status, list(headers), body)

    def count(self, path):
        with self.lock:
            return self.counts.get(path, 0)

    def handler(self, conn, req):
        path = req.path
        with self.lock:
            self.counts[path] = self.counts.get(path, 0) + 1
            n = self.counts[path]
        if self.delay:
            time.sleep(self.delay)
        r = self.routes.get(path.split("?")[0]) or self.routes.get(path) or (404, [], b"none")
        if callable(r):
            r = r(req, n)
        status, headers, body = r
        if isinstance(body, str):
            body = body.encode()
        hs = list(headers) + [("X-N", str(n))]
        if status not in (204, 304) and not any(k.lower() == "content-length" for k, _ in hs):
            hs.append(("Content-Length", str(len(body))))
        if req.method == "HEAD" or status in (204, 304):
            body = b""
        conn.send(B.response_head(status, hs) + body)


def date(offset=0):
    return email.utils.formatdate(time.time() + offset, usegmt=True)


@pytest.fixture
def origin(backend):
    o = Origin()
    o.backend = backend(o.handler)
    return o


@pytest.fixture
def cached(weir_toml, origin):
    def start(extra="", caches="", rest="", threads=2):
        return weir_toml(CONF % {"extra": extra, "caches": caches, "rest": rest},
                         threads=threads, B=origin.backend)
    return start


class Resp:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # lower-case names
        self.body = body

    def get(self, name, default=None):
        return self.headers.get(name.lower(), default)

    def __repr__(self):
        return "<Resp %d %r %r>" % (self.status, self.headers, self.body[:60])


def h1(port, path, headers=(), method="GET"):
    r = B.get(port, path, headers=list(headers), method=method)
    return Resp(r.status, {k.lower(): v for k, v in r.headers}, r.body)


def h2(port, path, headers=(), method="GET"):
    c = U.H2Client(port, authority="test.local")
    try:
        st = c.get(path, method=method, headers=[(k.lower(), v) for k, v in headers])
        hs = {k: v for k, v in st.headers if not k.startswith(":")}
        return Resp(st.status, hs, bytes(st.data))
    finally:
        c.close()


@pytest.fixture(params=["h1", "h2"])
def fetch(request):
    return h1 if request.param == "h1" else h2


def status_of(r):
    return r.get("cache-status", "")


# ---- storing and freshness ----


def test_a_fresh_response_is_stored_and_answered(cached, origin, fetch):
    origin.set("/a", headers=[("Cache-Control", "max-age=60")], body="one")
    w = cached()
    r1 = fetch(w.port, "/a")
    assert r1.status == 200 and r1.body == b"one"
    assert "fwd=uri-miss" in status_of(r1) and "stored" in status_of(r1)
    r2 = fetch(w.port, "/a")
    assert r2.status == 200 and r2.body == b"one" and r2.get("x-n") == "1"
    assert status_of(r2).startswith("weir; hit; ttl=")
    assert r2.get("age") is not None and int(r2.get("age")) <= 2
    assert r2.get("content-length") == "3"
    assert origin.count("/a") == 1


def test_the_query_is_part_of_the_key(cached, origin, fetch):
    origin.set("/q", headers=[("Cache-Control", "max-age=60")], body="q")
    w = cached()
    fetch(w.port, "/q?a=1")
    fetch(w.port, "/q?a=2")
    fetch(w.port, "/q?a=1")
    assert origin.count("/q?a=1") == 1 and origin.count("/q?a=2") == 1


def test_age_counts_the_origins_age_and_time_in_store(cached, origin):
    origin.set("/age", headers=[("Cache-Control", "max-age=100"), ("Age", "30"),
                                ("Date", date())])
    w = cached()
    h1(w.port, "/age")
    time.sleep(1.1)
    r = h1(w.port, "/age")
    assert 31 <= int(r.get("age")) <= 36, r
    assert "ttl=6" in status_of(r), r  # 100 - age


def test_s_maxage_wins_over_max_age(cached, origin):
    origin.set("/s", headers=[("Cache-Control", "max-age=0, s-maxage=60")])
    w = cached()
    h1(w.port, "/s")
    assert "hit" in status_of(h1(w.port, "/s"))
    assert origin.count("/s") == 1


def test_expires_minus_date(cached, origin):
    origin.set("/e", headers=[("Date", date()), ("Expires", date(60))])
    origin.set("/e0", headers=[("Date", date()), ("Expires", "0")])
    w = cached()
    h1(w.port, "/e")
    assert "hit" in status_of(h1(w.port, "/e"))
    h1(w.port, "/e0")
    h1(w.port, "/e0")
    assert origin.count("/e") == 1 and origin.count("/e0") == 2


def test_max_ttl_caps_the_lifetime(cached, origin):
    origin.set("/m", headers=[("Cache-Control", "max-age=3600")])
    w = cached('max_ttl = "1s"')
    r = h1(w.port, "/m")
    assert "ttl=1;" in status_of(r) or status_of(r).endswith("ttl=1; stored"), r
    time.sleep(2.1)
    h1(w.port, "/m")
    assert origin.count("/m") == 2


def test_heuristic_freshness_only_for_heuristic_statuses(cached, origin):
    lm = [("Date", date()), ("Last-Modified", date(-10 * 86400))]
    origin.set("/h200", headers=lm)
    origin.set("/h302", status=302, headers=lm + [("Location", "/x")])
    origin.set("/hnone", headers=[("Date", date())])
    w = cached()
    for p in ("/h200", "/h302", "/hnone"):
        h1(w.port, p)
    r = h1(w.port, "/h200")
    assert "hit" in status_of(r)
    ttl = int(status_of(r).split("ttl=")[1].split(";")[0])
    assert 86000 < ttl <= 86400, "10% of ten days"
    h1(w.port, "/h302")
    h1(w.port, "/hnone")
    assert origin.count("/h200") == 1 and origin.count("/h302") == 2
    assert origin.count("/hnone") == 2


@pytest.mark.parametrize("cc", ["no-store", "private", "max-age=60, no-store",
                                "max-age=60, private=\"x\""])
def test_not_stored(cached, origin, cc):
    origin.set("/n", headers=[("Cache-Control", cc)])
    w = cached()
    r = h1(w.port, "/n")
    assert "detail=no-store" in status_of(r), r
    h1(w.port, "/n")
    assert origin.count("/n") == 2


def test_no_cache_is_stored_but_validated_each_time(cached, origin):
    def answer(req, n):
        if req.headers.get("if-none-match") == '"e1"':
            return 304, [("ETag", '"e1"'), ("Cache-Control", "no-cache")], b""
        return 200, [("ETag", '"e1"'), ("Cache-Control", "no-cache")], b"nc"
    origin.routes["/nc"] = answer
    w = cached()
    h1(w.port, "/nc")
    r = h1(w.port, "/nc")
    assert r.status == 200 and r.body == b"nc"
    assert "fwd=stale; fwd-status=304" in status_of(r), r
    assert origin.count("/nc") == 2
    assert origin.backend.last().headers.get("if-none-match") == '"e1"'


def test_authorization_needs_the_responses_leave(cached, origin):
    origin.set("/priv", headers=[("Cache-Control", "max-age=60")])
    origin.set("/pub", headers=[("Cache-Control", "max-age=60, public")])
    w = cached()
    auth = [("Authorization", "Basic eDp5")]
    for p in ("/priv", "/priv", "/pub", "/pub"):
        h1(w.port, p, auth)
    assert origin.count("/priv") == 2 and origin.count("/pub") == 1


def test_set_cookie_is_not_stored_unless_configured(cached, origin):
    origin.set("/ck", headers=[("Cache-Control", "max-age=60"), ("Set-Cookie", "s=1")])
    w = cached()
    r = h1(w.port, "/ck")
    assert "detail=set-cookie" in status_of(r)
    h1(w.port, "/ck")
    assert origin.count("/ck") == 2


def test_set_cookie_stored_when_allowed(cached, origin):
    origin.set("/ck", headers=[("Cache-Control", "max-age=60"), ("Set-Cookie", "s=1")])
    w = cached("store_cookies = true")
    h1(w.port, "/ck")
    r = h1(w.port, "/ck")
    assert "hit" in status_of(r) and r.get("set-cookie") == "s=1"


def test_hop_by_hop_fields_are_not_stored(cached, origin):
    origin.set("/hop", headers=[("Cache-Control", "max-age=60"), ("Connection", "X-Secret"),
                                ("X-Secret", "1"), ("Keep-Alive", "timeout=5")])
    w = cached()
    h1(w.port, "/hop")
    r = h1(w.port, "/hop")
    assert "hit" in status_of(r)
    assert r.get("x-secret") is None and r.get("keep-alive") is None


def test_a_targeted_field_takes_precedence(cached, origin):
    origin.set("/t", headers=[("Cache-Control", "no-store"), ("CDN-Cache-Control", "max-age=60")])
    origin.set("/t2", headers=[("Cache-Control", "max-age=60"), ("CDN-Cache-Control", "no-store")])
    origin.set("/t3", headers=[("Cache-Control", "max-age=60"),
                               ("CDN-Cache-Control", "MAX-AGE=0")])  # does not parse: ignored
    w = cached()
    for p in ("/t", "/t", "/t2", "/t2", "/t3", "/t3"):
        h1(w.port, p)
    assert origin.count("/t") == 1 and origin.count("/t2") == 2 and origin.count("/t3") == 1


def test_a_configured_targeted_field(cached, origin):
    origin.set("/t", headers=[("Cache-Control", "no-store"), ("Weir-Cache-Control", "max-age=60")])
    w = cached('targeted_field = "Weir-Cache-Control"')
    h1(w.port, "/t")
    h1(w.port, "/t")
    assert origin.count("/t") == 1


def test_a_body_over_max_file_size_passes_through(cached, origin):
    origin.set("/big", headers=[("Cache-Control", "max-age=60")], body=b"x" * 300000)
    w = cached(caches='max_file_size = "100KB"')
    r = h1(w.port, "/big")
    assert len(r.body) == 300000 and "detail=too-large" in status_of(r)
    h1(w.port, "/big")
    assert origin.count("/big") == 2


def test_a_chunked_body_over_the_limit_is_not_stored(cached, origin):
    body = b"y" * 200000

    def handler(conn, req):
        origin.counts[req.path] = origin.counts.get(req.path, 0) + 1
        head = B.response_head(200, [("Cache-Control", "max-age=60"),
                                     ("Transfer-Encoding", "chunked")])
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 50000]), body[i:i + 50000])
                          for i in range(0, len(body), 50000))
        conn.send(head + chunks + b"0\r\n\r\n")
    origin.backend.handler = handler
    w = cached(caches='max_file_size = "100KB"')
    assert len(h1(w.port, "/c").body) == 200000
    assert len(h1(w.port, "/c").body) == 200000
    assert origin.count("/c") == 2


def test_an_aborted_body_is_never_stored(cached, origin):
    calls = []

    def handler(conn, req):
        calls.append(1)
        if len(calls) == 1:
            conn.send(B.response_head(200, [("Cache-Control", "max-age=60"),
                                            ("Content-Length", "1000")]) + b"z" * 100)
            return "close"
        conn.send(B.response_head(200, [("Cache-Control", "max-age=60"),
                                        ("Content-Length", "4")]) + b"good")
    origin.backend.handler = handler
    w = cached()
    with pytest.raises(Exception):
        h1(w.port, "/cut")
    assert h1(w.port, "/cut").body == b"good"
    r = h1(w.port, "/cut")
    assert r.body == b"good" and "hit" in status_of(r)
    assert len(calls) == 2


# ---- what a request may ask ----


def test_request_max_age_zero_goes_to_the_origin(cached, origin):
    origin.set("/r", headers=[("Cache-Control", "max-age=60"), ("ETag", '"r"')])
    w = cached()
    h1(w.port, "/r")
    r = h1(w.port, "/r", [("Cache-Control", "max-age=0")])
    assert "hit" in status_of(r), "age 0 is not greater than 0 (RFC 9111 5.2.1.1)"
    time.sleep(1.1)
    r = h1(w.port, "/r", [("Cache-Control", "max-age=0")])
    assert "fwd=request" in status_of(r), r
    assert origin.count("/r") == 2


def test_request_no_cache_and_pragma(cached, origin):
    origin.set("/p", headers=[("Cache-Control", "max-age=60")])
    w = cached()
    h1(w.port, "/p")
    h1(w.port, "/p", [("Pragma", "no-cache")])
    h1(w.port, "/p", [("Cache-Control", "no-cache")])
    h1(w.port, "/p", [("Pragma", "no-cache"), ("Cache-Control", "max-stale")])  # CC wins
    assert origin.count("/p") == 3


def test_request_min_fresh_and_max_stale(cached, origin):
    origin.set("/f", headers=[("Cache-Control", "max-age=2")])
    w = cached()
    h1(w.port, "/f")
    h1(w.port, "/f", [("Cache-Control", "min-fresh=30")])
    assert origin.count("/f") == 2
    time.sleep(3.2)
    r = h1(w.port, "/f", [("Cache-Control", "max-stale=60")])
    assert "hit" in status_of(r) and "ttl=-" in status_of(r), r
    assert origin.count("/f") == 2


def test_request_no_store_is_answered_but_not_stored(cached, origin):
    origin.set("/ns", headers=[("Cache-Control", "max-age=60")])
    w = cached()
    h1(w.port, "/ns", [("Cache-Control", "no-store")])
    h1(w.port, "/ns")
    assert origin.count("/ns") == 2
    assert "hit" in status_of(h1(w.port, "/ns", [("Cache-Control", "no-store")]))


def test_only_if_cached_waits_for_a_fill_in_flight(cached, origin):
    """A fill of the key in flight is as good as stored: only-if-cached
    waits for it (as a miss would) instead of answering 504 while the
    first response is still on its way (a race seen under TSan, where the
    client of the fill had its last byte before the store)."""
    origin.set("/w", headers=[("Cache-Control", "max-age=60")])
    origin.delay = 0.5
    w = cached()
    first = {}
    t = threading.Thread(target=lambda: first.update(r=h1(w.port, "/w")))
    t.start()
    time.sleep(0.2)  # the first request holds the fill's lock
    r = h1(w.port, "/w", [("Cache-Control", "only-if-cached")])
    t.join(10)
    assert first["r"].status == 200
    assert r.status == 200 and "hit" in status_of(r), r
    assert origin.count("/w") == 1


def test_only_if_cached(cached, origin, fetch):
    origin.set("/o", headers=[("Cache-Control", "max-age=60")])
    w = cached()
    r = fetch(w.port, "/o", [("Cache-Control", "only-if-cached")])
    assert r.status == 504 and origin.count("/o") == 0
    fetch(w.port, "/o")
    r = fetch(w.port, "/o", [("Cache-Control", "only-if-cached")])
    assert r.status == 200 and "hit" in status_of(r)


# ---- validation ----


def validating(etag='"v1"', lm=None, cc="max-age=1", extra304=(), then=None):
    """then: the Cache-Control of every answer after the first (a refreshed
    entry that stays fresh however slow the test machine is)."""
    def answer(req, n):
        hs = [("Cache-Control", cc if n == 1 or not then else then), ("ETag", etag),
              ("X-Version", "v%d" % n)]
        if lm:
            hs.append(("Last-Modified", lm))
        if req.headers.get("if-none-match") == etag or (
                lm and req.headers.get("if-modified-since") == lm and
                not req.headers.get("if-none-match")):
            return 304, hs + list(extra304), b""
        return 200, hs + [("Content-Type", "text/plain")], b"the body"
    return answer


def test_a_stale_entry_is_validated_and_refreshed_by_a_304(cached, origin, fetch):
    origin.routes["/v"] = validating(lm=date(-3600), extra304=[("Content-Type", "evil/x")],
                                     then="max-age=60")
    w = cached()
    fetch(w.port, "/v")
    time.sleep(1.2)
    r = fetch(w.port, "/v")
    assert r.status == 200 and r.body == b"the body"
    assert "fwd=stale; fwd-status=304" in status_of(r)
    up = origin.backend.last()
    assert up.headers.get("if-none-match") == '"v1"' and up.headers.get("if-modified-since")
    # 304 fields replace the stored ones, but not those describing the body
    assert r.get("x-version") == "v2" and r.get("content-type") == "text/plain"
    r = fetch(w.port, "/v")
    assert "hit" in status_of(r) and r.get("x-version") == "v2"
    assert origin.count("/v") == 2


def test_a_changed_entry_replaces_the_stored_one(cached, origin):
    def answer(req, n):
        cc = "max-age=1" if n == 1 else "max-age=60"
        return 200, [("Cache-Control", cc), ("ETag", '"e%d"' % n)], "body %d" % n
    origin.routes["/ch"] = answer
    w = cached()
    h1(w.port, "/ch")
    time.sleep(1.2)
    r = h1(w.port, "/ch")
    assert r.body == b"body 2" and "fwd=stale; fwd-status=200; ttl=60; stored" in status_of(r)
    assert origin.backend.last().headers.get("if-none-match") == '"e1"'
    assert h1(w.port, "/ch").body == b"body 2"


def test_the_clients_conditional_is_answered_from_the_store(cached, origin, fetch):
    lm = date(-3600)
    origin.set("/c", headers=[("Cache-Control", "max-age=60"), ("ETag", '"abc"'),
                              ("Last-Modified", lm)], body="cond")
    w = cached()
    fetch(w.port, "/c")
    r = fetch(w.port, "/c", [("If-None-Match", 'W/"x", "abc"')])
    assert r.status == 304 and r.body == b"" and r.get("etag") == '"abc"'
    r = fetch(w.port, "/c", [("If-None-Match", '"other"')])
    assert r.status == 200 and r.body == b"cond"
    r = fetch(w.port, "/c", [("If-Modified-Since", date())])
    assert r.status == 304
    r = fetch(w.port, "/c", [("If-Modified-Since", date(-7200))])
    assert r.status == 200
    assert origin.count("/c") == 1


def test_the_clients_conditional_after_weirs_validation(cached, origin):
    origin.routes["/cv"] = validating(then="max-age=60")
    w = cached()
    h1(w.port, "/cv")
    time.sleep(1.2)
    r = h1(w.port, "/cv", [("If-None-Match", '"v1"')])
    assert r.status == 304, r
    r = h1(w.port, "/cv", [("If-None-Match", '"nope"')])
    assert r.status == 200 and r.body == b"the body"


def test_without_a_validator_a_stale_entry_is_fetched_again(cached, origin):
    origin.set("/nv", headers=[("Cache-Control", "max-age=1")], body="nv")
    w = cached()
    h1(w.port, "/nv")
    time.sleep(1.2)
    r = h1(w.port, "/nv")
    assert r.status == 200 and "fwd=stale" in status_of(r) and "stored" in status_of(r)
    assert origin.backend.last().headers.get("if-none-match") is None


# ---- stale answers ----


def test_stale_while_revalidate_answers_and_refreshes_once(cached, origin):
    def answer(req, n):
        return 200, [("Cache-Control", "max-age=1, stale-while-revalidate=30"),
                     ("ETag", '"s%d"' % n)], "v%d" % n
    origin.routes["/swr"] = answer
    w = cached()
    h1(w.port, "/swr")
    time.sleep(1.2)
    origin.delay = 0.5
    rs = [h1(w.port, "/swr") for _ in range(5)]
    # the stale v1 from the store: none waited for the origin's v2
    assert all(r.body == b"v1" and "hit" in status_of(r) for r in rs), rs
    assert origin.backend.wait_requests(2)
    time.sleep(1.0)
    assert origin.count("/swr") == 2, "one background refresh"
    assert origin.backend.last().headers.get("if-none-match") == '"s1"'
    r = h1(w.port, "/swr")
    assert r.body == b"v2" and "hit" in status_of(r)


def test_stale_if_error_on_a_5xx(cached, origin, fetch):
    state = {"fail": False}

    def answer(req, n):
        if state["fail"]:
            return 503, [], b"down"
        return 200, [("Cache-Control", "max-age=1, stale-if-error=60")], b"good"
    origin.routes["/sie"] = answer
    w = cached()
    fetch(w.port, "/sie")
    time.sleep(1.2)
    state["fail"] = True
    r = fetch(w.port, "/sie")
    assert r.status == 200 and r.body == b"good", r
    assert "fwd=stale; fwd-status=503" in status_of(r) and "stale-on-error" in status_of(r)


def test_must_revalidate_forbids_stale_on_error(cached, origin):
    state = {"fail": False}

    def answer(req, n):
        if state["fail"]:
            return 500, [], b"down"
        return 200, [("Cache-Control", "max-age=1, must-revalidate, stale-if-error=60")], b"g"
    origin.routes["/mr"] = answer
    w = cached('stale_on_error = "10m"')
    h1(w.port, "/mr")
    time.sleep(1.2)
    state["fail"] = True
    assert h1(w.port, "/mr").status == 500


def test_the_configured_window_covers_a_dead_origin(cached, origin, backend, weir_toml):
    origin.set("/dead", headers=[("Cache-Control", "max-age=1")], body="kept")
    w = cached('stale_on_error = "10m"', rest="connection_timeout = \"1s\"")
    assert h1(w.port, "/dead").body == b"kept"
    time.sleep(1.2)
    origin.backend.close()
    r = h1(w.port, "/dead")
    assert r.status == 200 and r.body == b"kept", r
    assert "stale-on-error" in status_of(r)
    r = h1(w.port, "/other")
    assert r.status == 502


# ---- Vary ----


def test_vary_stores_one_response_per_variant(cached, origin, fetch):
    def answer(req, n):
        enc = req.headers.get("accept-encoding", "none")
        return 200, [("Cache-Control", "max-age=60"), ("Vary", "Accept-Encoding")], "enc=" + enc
    origin.routes["/vary"] = answer
    w = cached()
    assert fetch(w.port, "/vary", [("Accept-Encoding", "gzip, br")]).body == b"enc=gzip, br"
    r = fetch(w.port, "/vary", [("Accept-Encoding", "BR,gzip")])
    assert r.body == b"enc=gzip, br" and "hit" in status_of(r), "the same variant, normalized"
    r = fetch(w.port, "/vary", [("Accept-Encoding", "identity")])
    assert r.body == b"enc=identity" and "fwd=vary-miss" in status_of(r), r
    r = fetch(w.port, "/vary")
    assert r.body == b"enc=none"
    assert fetch(w.port, "/vary").body == b"enc=none"
    assert fetch(w.port, "/vary", [("Accept-Encoding", "identity")]).body == b"enc=identity"
    assert origin.count("/vary") == 3


def test_vary_star_is_never_stored(cached, origin):
    origin.set("/vs", headers=[("Cache-Control", "max-age=60"), ("Vary", "*")])
    w = cached()
    h1(w.port, "/vs")
    h1(w.port, "/vs")
    assert origin.count("/vs") == 2


# ---- HEAD and Range ----


def test_head_from_a_stored_get(cached, origin, fetch):
    origin.set("/hd", headers=[("Cache-Control", "max-age=60")], body="0123456789")
    w = cached()
    fetch(w.port, "/hd")
    r = fetch(w.port, "/hd", method="HEAD")
    assert r.status == 200 and r.body == b"" and r.get("content-length") == "10"
    assert "hit" in status_of(r) and origin.count("/hd") == 1


def test_range_from_a_stored_response(cached, origin, fetch):
    lm = date(-3600)
    origin.set("/rg", headers=[("Cache-Control", "max-age=60"), ("ETag", '"rg"'),
                               ("Last-Modified", lm)], body="0123456789")
    w = cached()
    fetch(w.port, "/rg")
    r = fetch(w.port, "/rg", [("Range", "bytes=2-4")])
    assert r.status == 206 and r.body == b"234" and r.get("content-range") == "bytes 2-4/10"
    r = fetch(w.port, "/rg", [("Range", "bytes=-3")])
    assert r.status == 206 and r.body == b"789"
    r = fetch(w.port, "/rg", [("Range", "bytes=7-")])
    assert r.body == b"789"
    r = fetch(w.port, "/rg", [("Range", "bytes=20-30")])
    assert r.status == 416 and r.get("content-range") == "bytes */10"
    r = fetch(w.port, "/rg", [("Range", "bytes=0-1,4-5")])
    assert r.status == 200 and r.body == b"0123456789", "several ranges: the whole"
    r = fetch(w.port, "/rg", [("Range", "bytes=2-4"), ("If-Range", '"rg"')])
    assert r.status == 206
    r = fetch(w.port, "/rg", [("Range", "bytes=2-4"), ("If-Range", '"old"')])
    assert r.status == 200 and r.body == b"0123456789"
    r = fetch(w.port, "/rg", [("Range", "bytes=2-4"), ("If-Range", lm)])
    assert r.status == 206
    r = fetch(w.port, "/rg", [("Range", "chars=1-2")])
    assert r.status == 200
    assert origin.count("/rg") == 1


# ---- invalidation ----


def test_unsafe_methods_invalidate(cached, origin):
    origin.set("/inv", headers=[("Cache-Control", "max-age=60")], body="inv")
    origin.set("/loc", headers=[("Cache-Control", "max-age=60")], body="loc")
    origin.set("/far", headers=[("Cache-Control", "max-age=60")], body="far")

    def post(req, n):
        return 201, [("Location", "http://test.local/loc"),
                     ("Content-Location", "http://elsewhere.test/far")], b""
    w = cached()
    for p in ("/inv", "/loc", "/far"):
        h1(w.port, p)
    origin.routes["/inv"] = post
    assert h1(w.port, "/inv", method="POST").status == 201
    origin.set("/inv", headers=[("Cache-Control", "max-age=60")], body="inv")
    for p in ("/inv", "/loc", "/far"):
        h1(w.port, p)
    assert origin.count("/inv") == 3 and origin.count("/loc") == 2
    assert origin.count("/far") == 1, "another host's URI is not ours to invalidate"


def test_a_failed_unsafe_method_does_not_invalidate(cached, origin):
    origin.set("/keep", headers=[("Cache-Control", "max-age=60")], body="k")
    w = cached()
    h1(w.port, "/keep")
    origin.set("/keep", status=500, body="no")
    h1(w.port, "/keep", method="DELETE")
    r = h1(w.port, "/keep")
    assert r.body == b"k" and "hit" in status_of(r)


# ---- coalescing ----


def test_concurrent_misses_send_one_request(cached_admin, origin):
    origin.set("/co", headers=[("Cache-Control", "max-age=60")], body="co" * 1000)
    origin.delay = 0.5
    w = cached_admin()
    out = []

    def one():
        out.append(h1(w.port, "/co"))
    ts = [threading.Thread(target=one) for _ in range(20)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert all(r.status == 200 and r.body == b"co" * 1000 for r in out)
    assert origin.count("/co") == 1
    stats = admin_cache(w)
    assert stats["coalesced"] >= 15, stats


def test_waiters_go_upstream_when_the_response_is_not_storable(cached, origin):
    state = {"now": 0, "most": 0}
    lock = threading.Lock()

    def answer(req, n):
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        time.sleep(0.3)
        with lock:
            state["now"] -= 1
        return 200, [("Cache-Control", "no-store")], b"x"
    origin.routes["/nst"] = answer
    w = cached(threads=2)
    out = []
    ts = [threading.Thread(target=lambda: out.append(h1(w.port, "/nst"))) for _ in range(10)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert len(out) == 10 and all(r.status == 200 for r in out)
    assert origin.count("/nst") == 10
    # once the first answer is found unstorable the waiters go at once,
    # together, not one after another behind a lock each
    assert state["most"] >= 3, state


def test_a_lock_holder_that_never_answers_releases_after_the_timeout(cached, origin):
    origin.set("/slow", headers=[("Cache-Control", "max-age=60")], body="s")
    origin.delay = 3
    w = cached('lock = "500ms"', rest='read_timeout = "10s"')
    out = []
    t = threading.Thread(target=lambda: out.append(h1(w.port, "/slow")))
    t.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    out.append(h1(w.port, "/slow"))
    t.join()
    assert all(r.status == 200 for r in out)
    assert origin.count("/slow") == 2


# ---- purges, the admin API, metrics ----

@pytest.fixture
def cached_admin(weir_toml, origin):
    def start(extra="", caches=""):
        from conftest import free_port
        port = free_port()
        text = CONF % {"extra": extra, "caches": caches, "rest": ""}
        text = text.replace("[servers.s]", "[admin]\naddr = \"127.0.0.1:%d\"\n\n[servers.s]" % port)
        w = weir_toml(text, B=origin.backend)
        w.admin_port = port
        return w
    return start


def admin_cache(w):
    url = "http://127.0.0.1:%d/api/cache" % w.admin_port
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)["caches"][0]


def test_purge_method(cached, origin):
    origin.set("/pg", headers=[("Cache-Control", "max-age=60")], body="pg")
    w = cached('purge_ip_list = ["127.0.0.1"]')
    h1(w.port, "/pg")
    assert h1(w.port, "/pg", method="PURGE").status == 200
    assert h1(w.port, "/pg", method="PURGE").status == 404
    h1(w.port, "/pg")
    assert origin.count("/pg") == 2


def test_purge_refused_without_leave(cached, origin):
    origin.set("/pg", headers=[("Cache-Control", "max-age=60")], body="pg")
    w = cached('purge_ip_list = ["10.9.9.9"]\npurge_token = "sekrit"')
    h1(w.port, "/pg")
    assert h1(w.port, "/pg", method="PURGE").status == 403
    assert h1(w.port, "/pg", [("Authorization", "Bearer wrong")], method="PURGE").status == 403
    assert "hit" in status_of(h1(w.port, "/pg"))
    assert h1(w.port, "/pg", [("Authorization", "Bearer sekrit")], method="PURGE").status == 200
    h1(w.port, "/pg")
    assert origin.count("/pg") == 2


def test_admin_purge_by_key_and_prefix(cached_admin, origin):
    for p in ("/a/1", "/a/2", "/b/1"):
        origin.set(p, headers=[("Cache-Control", "max-age=60")], body=p)
    w = cached_admin()
    for p in ("/a/1", "/a/2", "/b/1"):
        h1(w.port, p)
    base = "http://127.0.0.1:%d/api/cache" % w.admin_port

    def delete(q):
        req = urllib.request.Request(base + q, method="DELETE")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as e:
            return e.code, json.load(e)
    assert delete("?key=http%3A%2F%2Ftest.local%2Fb%2F1") == (200, {"purged": 1})
    assert delete("?prefix=http://test.local/a/")[1]["purged"] == 2
    assert delete("")[0] == 400
    assert delete("?key=x&prefix=y")[0] == 400
    assert delete("?key=%zz")[0] == 400
    assert delete("?key=x&storage=nope")[0] == 404
    for p in ("/a/1", "/a/2", "/b/1"):
        h1(w.port, p)
        assert origin.count(p) == 2
    st = admin_cache(w)
    assert st["name"] == "default" and st["invalidations"] >= 3 and st["memory"]["objects"] == 3


def test_metrics(cached_admin, origin):
    origin.set("/mt", headers=[("Cache-Control", "max-age=60")], body="m")
    w = cached_admin()
    for _ in range(3):
        h1(w.port, "/mt")
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % w.admin_port, timeout=10) as r:
        text = r.read().decode()
    assert 'weir_cache_lookups_total{cache="default",result="hit"} 2' in text
    assert 'weir_cache_lookups_total{cache="default",result="miss"} 1' in text
    assert 'weir_cache_stored_total{cache="default"} 1' in text
    assert 'weir_cache_objects{cache="default",tier="memory"} 1' in text
    assert 'weir_cache_max_bytes{cache="default",tier="memory"} 8388608' in text


# ---- keys and bypass ----


def test_key_headers_cookies_and_namespace(cached, origin):
    origin.set("/k", headers=[("Cache-Control", "max-age=60")], body="k")
    w = cached('namespace = "ns1"\nkey_headers = ["X-Tenant"]\nkey_cookies = ["lang"]')
    h1(w.port, "/k", [("X-Tenant", "a")])
    h1(w.port, "/k", [("X-Tenant", "b")])
    h1(w.port, "/k", [("X-Tenant", "a")])
    h1(w.port, "/k", [("X-Tenant", "a"), ("Cookie", "lang=fr")])
    h1(w.port, "/k", [("X-Tenant", "a"), ("Cookie", "x=1; lang=fr")])
    h1(w.port, "/k")
    assert origin.count("/k") == 4


def test_bypass_rules(cached, origin):
    origin.set("/b", headers=[("Cache-Control", "max-age=60")], body="b")
    w = cached('bypass_headers = ["X-No-Cache"]\nbypass_cookies = ["nocache"]\n'
               'bypass_methods = ["HEAD"]')
    h1(w.port, "/b")
    assert "hit" in status_of(h1(w.port, "/b", [("X-No-Cache", "0")]))
    for hs in ([("X-No-Cache", "1")], [("Cookie", "nocache=yes")]):
        r = h1(w.port, "/b", hs)
        assert "cache-status" not in r.headers
    h1(w.port, "/b", method="HEAD")
    assert origin.count("/b") == 4


# ---- configuration ----


def test_config_errors(tmp_path):
    from test_plugins import check
    base = CONF % {"extra": "%s", "caches": "", "rest": ""}
    for extra, msg in [('storage = "nope"', "names storage 'nope'"),
                       ('max_ttl = "soon"', "'max_ttl'"),
                       ('purge_ip_list = ["not-an-ip"]', "'purge_ip_list'"),
                       ('colour = "blue"', "colour")]:
        r = check(tmp_path, (base % extra).replace("@B@", "127.0.0.1:1"))
        assert r.returncode != 0 and msg in r.stderr, (extra, r.stderr)
    bad = CONF.replace('memory = "8MB"', 'memory = "1KB"') % {"extra": "", "caches": "",
                                                               "rest": ""}
    r = check(tmp_path, bad.replace("@B@", "127.0.0.1:1"))
    assert r.returncode != 0 and "at least 64KB" in r.stderr
    bad = CONF % {"extra": "", "caches": 'directory = "relative"', "rest": ""}
    r = check(tmp_path, bad.replace("@B@", "127.0.0.1:1"))
    assert r.returncode != 0 and "absolute path" in r.stderr


def test_a_range_on_a_stale_entry_refreshes_it_whole(cached, origin):
    origin.routes["/rs"] = validating(then="max-age=60")
    w = cached()
    h1(w.port, "/rs")
    time.sleep(1.2)
    r = h1(w.port, "/rs", [("Range", "bytes=0-2")])
    assert r.status == 206 and r.body == b"the", r
    up = origin.backend.last()
    assert up.headers.get("range") is None and up.headers.get("if-none-match") == '"v1"'
    assert "fwd=stale; fwd-status=304" in status_of(r)


def test_a_head_on_a_stale_entry_validates_it(cached, origin):
    origin.routes["/hs"] = validating(then="max-age=60")
    w = cached()
    h1(w.port, "/hs")
    time.sleep(1.2)
    r = h1(w.port, "/hs", method="HEAD")
    assert r.status == 200 and r.get("content-length") == "8" and r.get("x-version") == "v2"
    assert origin.backend.last().method == "HEAD"
    assert origin.backend.last().headers.get("if-none-match") == '"v1"'
    r = h1(w.port, "/hs")
    assert "hit" in status_of(r) and r.body == b"the body" and r.get("x-version") == "v2"
