"""The HTTP cache (docs/cache.md) under attack: a hostile client, a hostile
or buggy origin, and unlucky timing, each trying to make weir store a
response under a key it does not belong to, hand one user's response to
another, serve a wrong or torn body, or hang.

Every test asserts what a correct, secure RFC 9111 shared cache does, not
what weir happens to do (written by a reviewer; the 13 weir bugs its first
run found are fixed, their tests stay). Loopback only; every wait is
bounded, and the only timings are generous upper bounds ("does not hang").
"""
import json
import socket
import threading
import time
import urllib.request

import pytest

import backends as B
import h2util as U
# The fixtures (cached, cached_admin, origin, fetch) are used by name.
from test_cache import cached, cached_admin, fetch, origin  # noqa: F401
from test_cache import Resp, date, h1, h2, status_of

MAXAGE = [("Cache-Control", "max-age=60")]


# ---- helpers ----


def raw(port, data, method="GET", timeout=20):
    """Sends raw bytes on a new connection; the first response, as a Resp."""
    r = B.request(port, data, method=method, timeout=timeout)
    return Resp(r.status, {k.lower(): v for k, v in r.headers}, r.body)


def req_bytes(path, host="test.local", headers=(), method="GET", close=True, body=b""):
    hs = "".join("%s: %s\r\n" % kv for kv in headers)
    head = "%s %s HTTP/1.1\r\n" % (method, path)
    if host is not None:
        head += "Host: %s\r\n" % host
    head += hs + ("Connection: close\r\n" if close else "") + "\r\n"
    return head.encode("latin-1") + body


def get_host(port, path, host, headers=(), method="GET"):
    return raw(port, req_bytes(path, host, headers, method), method=method)


def hit(r):
    return status_of(r).startswith("weir; hit")


def counting(origin, fn):
    """Installs fn(conn, req, n) as the backend's handler, n counting the
    requests of req.path (origin.count() keeps working)."""
    def handler(conn, req):
        with origin.lock:
            origin.counts[req.path] = origin.counts.get(req.path, 0) + 1
            n = origin.counts[req.path]
        return fn(conn, req, n)
    origin.backend.handler = handler


def send(conn, status, headers, body=b"", head_only=False):
    if isinstance(body, str):
        body = body.encode()
    hs = list(headers)
    if status not in (204, 304) and not any(k.lower() == "content-length" for k, _ in hs):
        hs.append(("Content-Length", str(len(body))))
    conn.send(B.response_head(status, hs) + (b"" if head_only or status in (204, 304) else body))


def echo_origin(origin, extra=()):
    """An origin (virtual hosts, paths) whose body names the Host it got and
    the target: the truth a stored response must match."""
    def fn(conn, req, n):
        hosts = req.headers.get_all("Host")
        body = "host=%s target=%s" % (",".join(h.lower() for h in hosts), req.path)
        send(conn, 200, MAXAGE + list(extra) + [("X-N", str(n))], body,
             head_only=req.method == "HEAD")
    counting(origin, fn)


def truth_h1(port, path, host="test.local", headers=()):
    """What the origin answers now for this request (no-cache: weir goes
    upstream; without a validator it fetches the whole response)."""
    return get_host(port, path, host, list(headers) + [("Cache-Control", "no-cache")])


# ---- keys: inputs the key does not see must not choose the response ----


def test_absolute_form_target_is_keyed_by_its_authority(cached, origin):
    """RFC 9112 3.2.2: with an absolute-form target the Host field is
    ignored; the response is for the target's authority and must be stored
    under it, never under the Host the client also sent."""
    echo_origin(origin)
    w = cached()
    r = raw(w.port, b"GET http://other.test/abs HTTP/1.1\r\nHost: test.local\r\n"
                    b"Connection: close\r\n\r\n")
    assert r.status == 400 or r.body == b"host=other.test target=/abs", r
    victim = get_host(w.port, "/abs", "test.local")
    assert victim.body == b"host=test.local target=/abs", victim
    again = get_host(w.port, "/abs", "other.test")
    assert again.body == b"host=other.test target=/abs", again


@pytest.mark.parametrize("hosts", [("test.local", "evil.test"), ("evil.test", "test.local"),
                                   ("test.local", "test.local")])
def test_several_host_fields_are_refused(cached, origin, hosts):
    """RFC 9112 3.2: several Host fields are a 400; nothing goes upstream
    and nothing is stored for either host."""
    echo_origin(origin)
    w = cached()
    data = ("GET /dup HTTP/1.1\r\nHost: %s\r\nHost: %s\r\nConnection: close\r\n\r\n"
            % hosts).encode()
    assert raw(w.port, data).status == 400
    assert origin.backend.request_count() == 0
    for h in set(hosts):
        r = get_host(w.port, "/dup", h)
        assert r.body == ("host=%s target=/dup" % h).encode() and not hit(r), r


def test_hosts_never_share_responses(cached, origin):
    """The host is in the key: case does not matter (RFC 3986 6.2.2.1),
    a different host or port is another origin's resource."""
    echo_origin(origin)
    w = cached()
    for host in ("a.test", "A.TEST", "b.test", "a.test:8080", "a.test", "b.test", "B.test"):
        r = get_host(w.port, "/h", host)
        want = "host=%s target=/h" % host.lower()
        assert r.status == 200 and r.body == want.encode(), (host, r)
    assert origin.count("/h") == 3  # a.test, b.test, a.test:8080


PATH_TRICKS = [
    "/p/b", "/p/a/../b", "/p/a/%2e%2e/b", "/p/a/%2E%2E/b", "/p/./b", "/p//b", "/p/%62",
    "/p/a%2Fb", "/p/a%2fb", "/p/a/b", "/p/A/b", "/p/b?x=1", "/p/b%3Fx=1", "/p/b?x=%31",
    "/p/b?a=1&b=2", "/p/b?b=2&a=1", "/p/b;x", "/p/b%3Bx", "/p/a/..%2Fb",
    "/p/a\\..\\b", "/p/b/", "/p/b%2F", "/p/b#frag", "/p/%2e/b", "/p/b?x=1#f", "/p/b%00",
    "/p/b%252e%252e", "/p/../../etc/passwd", "/p/b?x=1/../../y",
]


def test_path_tricks_key_what_the_origin_is_sent(cached, origin):
    """Normalization tricks (dot segments, encoded dots and slashes, double
    slashes, ';', '\\', query order) must never let one request be answered
    with a response the origin made for a different target: whatever weir
    serves for a target is what the origin says for it."""
    echo_origin(origin)
    w = cached()
    bad = []
    for p in PATH_TRICKS:
        r = get_host(w.port, p, "test.local")
        if r.status == 400:
            continue
        t = truth_h1(w.port, p)
        if r.status != t.status or r.body != t.body:
            bad.append((p, r.body, t.body))
    assert not bad, bad


def test_an_empty_query_is_not_the_absent_query(cached, origin):
    """RFC 3986 6.2.3: 'http://example.com/?' cannot be assumed equivalent
    to 'http://example.com/'; weir sends the '?' on, so the origin's answer
    to one must not be stored for the other."""
    echo_origin(origin)
    w = cached()
    assert get_host(w.port, "/e", "test.local").body == b"host=test.local target=/e"
    r = get_host(w.port, "/e?", "test.local")
    assert r.body == b"host=test.local target=/e?", r
    r = get_host(w.port, "/e", "test.local")
    assert r.body == b"host=test.local target=/e", r


def h2raw(port, authority, path, extra=()):
    """One HTTP/2 request spoken frame by frame (h2 itself refuses to send
    a host field that differs from :authority): (status, body)."""
    c = U.RawH2(port)
    try:
        hs = [(":method", "GET"), (":scheme", "http")]
        if authority is not None:
            hs.append((":authority", authority))
        hs += [(":path", path)] + list(extra)
        c.send_headers(1, hs)
        headers, body, rst = c.expect_end(1, timeout=20)
        if rst is not None and headers is None:
            return ("rst", b"")
        return int(dict(headers)[":status"]), body
    finally:
        c.close()


def test_h2_pseudo_header_oddities_key_what_the_origin_is_sent(cached, origin):
    """HTTP/2: :authority vs a host field, case and ports in :authority, no
    :authority, odd :path values. What is served for a request is what the
    origin says for that request."""
    echo_origin(origin)
    w = cached()
    cases = [("a.test", [], "/x"), ("a.test", [("host", "b.test")], "/x"),
             ("b.test", [], "/x"), ("A.TEST", [], "/x"), ("a.test:443", [], "/x"),
             (None, [("host", "a.test")], "/x"), ("a.test", [], "//x"),
             ("a.test", [], "/y/../x"), ("a.test", [], "/%78"),
             ("b.test", [("host", "a.test")], "/x"), ("a.test", [], "/x?q=1"),
             ("a.test", [("host", "b.test"), ("host", "c.test")], "/x"),
             ("", [], "/x"), ("a.test", [], "x"), ("a.test", [], "*"),
             ("a.test", [], "http://c.test/x"), ("a.test@b.test", [], "/x")]
    bad = []
    for auth, hs, path in cases:
        got = h2raw(w.port, auth, path, hs)
        if got[0] in (400, 404, "rst"):
            continue
        truth = h2raw(w.port, auth, path, list(hs) + [("cache-control", "no-cache")])
        if got != truth:
            bad.append((auth, hs, path, got, truth))
    assert not bad, bad


def test_h2_two_host_fields_do_not_split_key_and_origin(cached, origin):
    """An HTTP/2 request with two host fields (HTTP/1.1 would get a 400):
    refused, or forwarded with exactly the Host its key was made of. A
    backend that believes the other Host must not get its answer stored
    under this one."""
    echo_origin(origin)
    w = cached()
    st = h2raw(w.port, "test.local", "/two", [("host", "test.local"), ("host", "evil.test")])
    if st[0] in (400, "rst"):
        return
    assert origin.backend.request_count() == 1
    assert origin.backend.last().headers.get_all("Host") == ["test.local"], \
        origin.backend.last().headers


def test_connection_cannot_strip_a_key_header(cached, origin):
    """A client naming a key field in Connection: the field never reaches
    the origin, so the response (made without it) must not be stored under
    the key of a tenant who sent it."""
    def fn(conn, req, n):
        send(conn, 200, MAXAGE, "tenant=%s" % req.headers.get("X-Tenant", "none"))
    counting(origin, fn)
    w = cached('key_headers = ["X-Tenant"]')
    assert h1(w.port, "/t", [("X-Tenant", "b")]).body == b"tenant=b"
    r = h1(w.port, "/t", [("X-Tenant", "b"), ("Connection", "X-Tenant")])
    assert r.body in (b"tenant=none", b"tenant=b"), r
    assert h1(w.port, "/t", [("X-Tenant", "b")]).body == b"tenant=b"
    assert h1(w.port, "/t2", [("X-Tenant", "c"), ("Connection", "X-Tenant")]).status == 200
    assert h1(w.port, "/t2", [("X-Tenant", "c")]).body == b"tenant=c"


def test_connection_cannot_strip_a_vary_field(cached, origin):
    def fn(conn, req, n):
        send(conn, 200, MAXAGE + [("Vary", "X-Tenant")],
             "tenant=%s" % req.headers.get("X-Tenant", "none"))
    counting(origin, fn)
    w = cached()
    r = h1(w.port, "/v", [("X-Tenant", "b"), ("Connection", "X-Tenant")])
    assert r.status == 200
    assert h1(w.port, "/v", [("X-Tenant", "b")]).body == b"tenant=b"
    assert h1(w.port, "/v").body == b"tenant=none"


# ---- one user's response to another ----


def test_vary_cookie_keeps_users_apart(cached, origin, fetch):
    def fn(conn, req, n):
        send(conn, 200, MAXAGE + [("Vary", "Cookie")], "you are %s" % req.headers.get("Cookie"))
    counting(origin, fn)
    w = cached()
    assert fetch(w.port, "/me", [("Cookie", "sid=alice")]).body == b"you are sid=alice"
    assert fetch(w.port, "/me", [("Cookie", "sid=bob")]).body == b"you are sid=bob"
    assert fetch(w.port, "/me", [("Cookie", "sid=Alice")]).body == b"you are sid=Alice"
    r = fetch(w.port, "/me", [("Cookie", "sid=alice")])
    assert r.body == b"you are sid=alice" and hit(r)
    assert fetch(w.port, "/me").body == b"you are None"


def validating_then(extra304, cc="max-age=1, public"):
    """An origin: 200 with ETag "v1"; a conditional request on "v1" gets a
    304 carrying extra304."""
    def fn(conn, req, n):
        if req.headers.get("If-None-Match") == '"v1"':
            send(conn, 304, [("ETag", '"v1"')] + list(extra304))
        else:
            send(conn, 200, [("Cache-Control", cc), ("ETag", '"v1"'),
                             ("Content-Type", "text/plain")], "shared body")
    return fn


@pytest.mark.parametrize("cc", ["private, max-age=60", "no-store, max-age=60"])
def test_a_304_that_forbids_storing_ends_sharing(cached, origin, cc):
    """RFC 9111 4.3.4 / 3: the 304's fields update the stored response; once
    they say private (5.2.2.7) or no-store (5.2.2.5) a shared cache must not
    keep it, let alone answer other clients from it."""
    counting(origin, lambda conn, req, n: validating_then([("Cache-Control", cc)])(conn, req, n))
    w = cached()
    assert h1(w.port, "/r").body == b"shared body"
    time.sleep(1.2)
    r = h1(w.port, "/r")
    assert r.status == 200 and r.body == b"shared body"
    r = h1(w.port, "/r")
    assert not hit(r), "a response now marked %r answered from the shared store: %r" % (cc, r)
    assert origin.count("/r") == 3


def test_a_304s_set_cookie_is_not_handed_to_others(cached, origin):
    """With store_cookies = false no client gets another's Set-Cookie from
    the store; a Set-Cookie coming with a 304 is that request's own."""
    counting(origin, lambda conn, req, n: validating_then(
        [("Set-Cookie", "sid=alice-secret")])(conn, req, n))
    w = cached()
    h1(w.port, "/c")
    time.sleep(1.2)
    h1(w.port, "/c")  # alice's request: validated, 304 with her cookie
    r = h1(w.port, "/c")  # bob
    assert r.status == 200 and r.body == b"shared body"
    assert r.get("set-cookie") is None, "bob got alice's cookie: %r" % r


@pytest.mark.parametrize("cc", ["NO-STORE, max-age=60", "max-age=60,\tno-store",
                                "Private, max-age=60", 'max-age=60, private="Set-Cookie, X"',
                                "max-age=60, no-store=\"\"", 'max-age="60", private',
                                "max-age=60, , ,private", "public, no-store, max-age=60"])
def test_cache_control_spellings_that_forbid_sharing(cached, origin, cc):
    origin.set("/s", headers=[("Cache-Control", cc)], body="secret")
    w = cached()
    h1(w.port, "/s")
    r = h1(w.port, "/s")
    assert not hit(r) and origin.count("/s") == 2, r


def test_cache_control_split_over_lines_forbids_sharing(cached, origin):
    origin.set("/s", headers=[("Cache-Control", "max-age=60"), ("Cache-Control", "private")],
               body="secret")
    origin.set("/t", headers=[("Cache-Control", "public, max-age=60"),
                              ("Cache-Control", "no-store")], body="secret")
    w = cached()
    for p in ("/s", "/s", "/t", "/t"):
        assert not hit(h1(w.port, p))
    assert origin.count("/s") == 2 and origin.count("/t") == 2


@pytest.mark.parametrize("cc", ["max-age=60; private", "max-age=60 private",
                                "max-age=60;no-store", "max-age=60 no-store"])
def test_malformed_cache_control_mentioning_private_is_not_shared(cached, origin, cc):
    """A common origin typo. max-age's value here is not delta-seconds
    (RFC 9111 1.2.2), which docs/cache.md and RFC 9111 4.2.1 say makes the
    response stale; it must not be served fresh from a shared store with the
    private/no-store the origin wrote silently dropped."""
    origin.set("/m", headers=[("Cache-Control", cc)], body="secret of one user")
    w = cached()
    h1(w.port, "/m")
    r = h1(w.port, "/m")
    assert not hit(r), r
    assert origin.count("/m") == 2


def test_unknown_accept_prefixed_field_keeps_its_bytes(cached, origin):
    """docs/cache.md: only Accept, Accept-Encoding, Accept-Language and
    Accept-Charset are normalized; any other field keeps its bytes (RFC 9111
    4.1 allows only what the field's definition allows)."""
    def fn(conn, req, n):
        send(conn, 200, MAXAGE + [("Vary", "Accept-Profile")],
             "schema=%s" % req.headers.get("Accept-Profile"))
    counting(origin, fn)
    w = cached()
    assert h1(w.port, "/rows", [("Accept-Profile", "Tenant")]).body == b"schema=Tenant"
    r = h1(w.port, "/rows", [("Accept-Profile", "tenant")])
    assert r.body == b"schema=tenant", r
    assert h1(w.port, "/rows", [("Accept-Profile", "a, b")]).body == b"schema=a, b"
    assert h1(w.port, "/rows", [("Accept-Profile", "b, a")]).body == b"schema=b, a"


# ---- Range ----


BODY10 = b"0123456789"

RANGES = [
    # (Range value, allowed statuses)
    ("bytes=18446744073709551615-", {416, 200}),
    ("bytes=18446744073709551616-", {416, 200}),
    ("bytes=99999999999999999999999999-", {416, 200}),
    ("bytes=0-18446744073709551615", {206, 200}),
    ("bytes=0-18446744073709551616", {206, 200}),
    ("bytes=-18446744073709551615", {206, 200}),
    ("bytes=-18446744073709551616", {206, 200}),
    ("bytes=-0", {416, 200}),
    ("bytes=5-2", {200}),
    ("bytes=9-", {206}),
    ("bytes=9-9", {206}),
    ("bytes=10-", {416}),
    ("bytes=10-10", {416}),
    ("bytes=-10", {206}),
    ("bytes=-11", {206}),
    ("bytes=0-0", {206}),
    ("bytes=--2", {200}),
    ("bytes=2-4-6", {200}),
    ("bytes=-", {200}),
    ("bytes=", {200}),
    ("bytes", {200}),
    ("bytes=0x2-4", {200}),
    ("bytes=+2-4", {200}),
    ("bytes=2 - 4", {200}),
    ("bytes= 2-4", {200, 206}),
    ("BYTES=2-4", {200, 206}),
    ("bytes=2-4,", {200, 206}),
    ("bytes=1-1," * 500 + "2-2", {200, 206}),
    ("bytes=0-,0-,0-,0-", {200, 206}),
    ("items=0-1", {200}),
    ("bytes=\x7f1-2", {200, 400}),
]


def check_range(r, allowed, spec):
    assert r.status in allowed, (spec, r)
    if r.status == 200:
        assert r.body == BODY10 and r.get("content-range") is None, (spec, r)
    elif r.status == 416:
        assert r.body == b"" and r.get("content-range") == "bytes */10", (spec, r)
    elif r.status == 206 and "multipart" not in (r.get("content-type") or ""):
        cr = r.get("content-range")
        assert cr and cr.startswith("bytes ") and cr.endswith("/10"), (spec, r)
        a, b = (int(x) for x in cr[6:-3].split("-"))
        assert 0 <= a <= b < 10 and r.body == BODY10[a:b + 1], (spec, r)
        assert int(r.get("content-length")) == len(r.body)


def test_range_abuse_on_a_stored_response(cached, origin, fetch):
    origin.set("/rg", headers=MAXAGE + [("ETag", '"rg"')], body=BODY10)
    w = cached()
    assert fetch(w.port, "/rg").body == BODY10
    for spec, allowed in RANGES:
        if fetch is h2 and "\x7f" in spec:
            continue
        check_range(fetch(w.port, "/rg", [("Range", spec)]), allowed, spec)
    r = h1(w.port, "/rg", [("Range", "bytes=2-4"), ("Range", "bytes=5-6")])
    check_range(r, {200, 206}, "two Range fields")
    assert origin.count("/rg") == 1
    assert fetch(w.port, "/rg").body == BODY10


@pytest.mark.parametrize("etag,if_range", [('W/"w1"', 'W/"w1"'), ('W/"w1"', '"w1"'),
                                           ('"s1"', 'W/"s1"'), ('"s1"', '"S1"'),
                                           ('"s1"', '"s1", "s2"'), ('"s1"', "garbage"),
                                           ('"s1"', "*")])
def test_if_range_needs_a_strong_exact_match(cached, origin, etag, if_range):
    """RFC 9110 13.1.5: If-Range matches only a strong validator, compared
    strongly; anything else gets the whole representation."""
    origin.set("/ir", headers=MAXAGE + [("ETag", etag)], body=BODY10)
    w = cached()
    h1(w.port, "/ir")
    r = h1(w.port, "/ir", [("Range", "bytes=2-4"), ("If-Range", if_range)])
    assert r.status == 200 and r.body == BODY10, r


def test_if_range_date_must_be_the_stored_last_modified(cached, origin):
    import email.utils
    t = int(time.time())  # one clock reading: the dates below differ from lm by design

    def at(secs):
        return email.utils.formatdate(t + secs, usegmt=True)
    lm = at(-3600)
    origin.set("/ird", headers=MAXAGE + [("Last-Modified", lm)], body=BODY10)
    w = cached()
    h1(w.port, "/ird")
    for ir in (at(-3599), at(-3601), at(0), "Thu, 01 Jan 1970 00:00:00 GMT", lm + "x"):
        r = h1(w.port, "/ird", [("Range", "bytes=2-4"), ("If-Range", ir)])
        assert r.status == 200 and r.body == BODY10, (ir, r)


def test_a_range_miss_holding_the_lock_does_not_starve_plain_gets(cached, origin):
    """The first request of a key asks for a range and gets a 206 (never
    stored); the plain GETs that waited behind it get the whole body."""
    def fn(conn, req, n):
        time.sleep(0.8)
        rg = req.headers.get("Range")
        if rg == "bytes=0-1":
            send(conn, 206, MAXAGE + [("Content-Range", "bytes 0-1/10")], BODY10[:2])
        else:
            send(conn, 200, MAXAGE, BODY10)
    counting(origin, fn)
    w = cached()
    out = {}

    def ranged():
        out["r"] = h1(w.port, "/rl", [("Range", "bytes=0-1")])
    t = threading.Thread(target=ranged)
    t.start()
    time.sleep(0.2)
    plain = []
    ts = [threading.Thread(target=lambda: plain.append(h1(w.port, "/rl"))) for _ in range(4)]
    t0 = time.monotonic()
    for x in ts:
        x.start()
    for x in ts + [t]:
        x.join(30)
    assert out["r"].status == 206 and out["r"].body == b"01"
    assert len(plain) == 4 and all(r.status == 200 and r.body == BODY10 for r in plain), plain
    assert time.monotonic() - t0 < 15
    r = h1(w.port, "/rl")
    assert r.status == 200 and r.body == BODY10 and hit(r)


def test_a_206_to_a_plain_get_is_never_stored(cached, origin):
    def fn(conn, req, n):
        send(conn, 206, MAXAGE + [("Content-Range", "bytes 0-1/10"), ("ETag", '"p"')],
             BODY10[:2])
    counting(origin, fn)
    w = cached()
    assert h1(w.port, "/206").status == 206
    r = h1(w.port, "/206")
    assert not hit(r)
    r = h1(w.port, "/206", [("Range", "bytes=5-6")])
    assert not hit(r) and r.body == b"01", "a stored partial would give wrong bytes"
    assert origin.count("/206") == 3


def test_a_range_hit_has_exactly_one_content_range(cached, origin):
    """RFC 9110 14.4: Content-Range is a singleton describing the enclosed
    part; a 206 must carry one, the one for its bytes (a stored
    Content-Range on a 200 means nothing and must not come along)."""
    origin.set("/cr", headers=MAXAGE + [("Content-Range", "bytes 0-9/10")], body=BODY10)
    w = cached()
    h1(w.port, "/cr")
    r = B.get(w.port, "/cr", headers=[("Range", "bytes=2-4")])
    assert r.status == 206 and r.body == b"234"
    assert r.headers.get_all("Content-Range") == ["bytes 2-4/10"], r.headers


# ---- conditionals ----


INM = [('"abc"', True), ('W/"abc"', True), ('"ABC"', False), ("abc", False), ('"abc', False),
       ("*", True), ('"x", "abc"', True), (' , ,"abc"', True), ('"x","y"', False),
       ("W/", False), ('"', False), ('W/"x", W/"abc"', True), ('"abc"x', False),
       ('"a", garbage, "abc"', False), (", ".join('"x%d"' % i for i in range(400)), False),
       (", ".join('"x%d"' % i for i in range(400)) + ', "abc"', True)]


def test_if_none_match_odd_syntax(cached, origin, fetch):
    origin.set("/inm", headers=MAXAGE + [("ETag", '"abc"')], body="cond")
    w = cached()
    fetch(w.port, "/inm")
    for value, match in INM:
        r = fetch(w.port, "/inm", [("If-None-Match", value)])
        if value in ('"a", garbage, "abc"', '"abc"x'):  # not a list of tags: either is fine
            assert r.status in (200, 304), r
            continue
        assert r.status == (304 if match else 200), (value, r)
        assert r.body == (b"" if match else b"cond")
    assert origin.count("/inm") == 1


def test_if_none_match_star_without_a_stored_etag(cached, origin):
    """RFC 9110 13.1.2: '*' is false (304 for GET/HEAD) whenever a current
    representation exists, whether or not it has an entity tag."""
    origin.set("/star", headers=MAXAGE, body="star")
    w = cached()
    h1(w.port, "/star")
    r = h1(w.port, "/star", [("If-None-Match", "*")])
    assert r.status == 304 and hit(r), r


def test_if_none_match_on_a_weak_stored_etag(cached, origin):
    origin.set("/w", headers=MAXAGE + [("ETag", 'W/"abc"')], body="weak")
    w = cached()
    h1(w.port, "/w")
    assert h1(w.port, "/w", [("If-None-Match", '"abc"')]).status == 304
    assert h1(w.port, "/w", [("If-None-Match", 'W/"abc"')]).status == 304
    assert h1(w.port, "/w", [("If-None-Match", '"abd"')]).status == 200


def test_if_modified_since_garbage_is_ignored(cached, origin):
    origin.set("/ims", headers=MAXAGE + [("Last-Modified", date(-3600))], body="ims")
    w = cached()
    h1(w.port, "/ims")
    for v in ("garbage", "", "0", "-1", "Thu, 32 Jan 2015 00:00:00 GMT",
              "Thu, 01 Jan 2015 25:00:00 GMT", "9" * 40):
        r = h1(w.port, "/ims", [("If-Modified-Since", v)])
        assert r.status == 200 and r.body == b"ims", (v, r)
    # If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2)
    r = h1(w.port, "/ims", [("If-None-Match", '"nope"'), ("If-Modified-Since", date())])
    assert r.status == 200


# ---- Vary ----


@pytest.mark.parametrize("n", [63, 64, 65, 100, 1000])
@pytest.mark.parametrize("which", ["first", "last"])
def test_vary_with_many_names_never_crosses_variants(cached, origin, n, which):
    names = ["x-v%04d" % i for i in range(n)]
    key = names[0] if which == "first" else names[-1]

    def fn(conn, req, k):
        send(conn, 200, MAXAGE + [("Vary", ", ".join(names))], "v=%s" % req.headers.get(key))
    counting(origin, fn)
    w = cached()
    for v in ("a", "b", "a", "b", None):
        hs = [(key, v)] if v is not None else []
        r = h1(w.port, "/mv", hs)
        assert r.status == 200 and r.body == ("v=%s" % v).encode(), (v, r)


def test_vary_on_an_enormous_field(cached, origin):
    def fn(conn, req, n):
        v = req.headers.get("X-Big") or ""
        send(conn, 200, MAXAGE + [("Vary", "X-Big, Accept-Encoding")], "len=%d last=%s" % (
            len(v), v[-1:]))
    counting(origin, fn)
    w = cached()
    for size in (7000, 9000, 20000):
        for last in "ab":
            v = "a" * (size - 1) + last
            r = h1(w.port, "/big", [("X-Big", v)])
            if r.status == 431:
                continue
            assert r.body == ("len=%d last=%s" % (size, last)).encode(), (size, last, r)
    ae = ", ".join("enc%d" % i for i in range(90))
    for v in (ae, ae + ", x"):
        r = h1(w.port, "/big2", [("Accept-Encoding", v)])
        assert r.status == 200


# ---- HEAD ----


def test_a_head_miss_never_becomes_a_get_hit(cached, origin):
    def fn(conn, req, n):
        send(conn, 200, MAXAGE, BODY10, head_only=req.method == "HEAD")
    counting(origin, fn)
    w = cached()
    r = h1(w.port, "/hd", method="HEAD")
    assert r.status == 200 and r.body == b""
    r = h1(w.port, "/hd")
    assert r.status == 200 and r.body == BODY10, "a stored HEAD would answer GET with no body"
    assert origin.count("/hd") == 2
    r = h1(w.port, "/hd", method="HEAD")
    assert hit(r) and r.get("content-length") == "10" and r.body == b""


def test_pipelined_head_and_get_hits_keep_framing(cached, origin):
    origin.set("/pp", headers=MAXAGE + [("ETag", '"pp"')], body=BODY10)
    origin.set("/pq", headers=MAXAGE, body="other")
    w = cached()
    h1(w.port, "/pp")
    s = B.connect(w.port, timeout=20)
    try:
        s.sendall(req_bytes("/pp", method="HEAD", close=False) +
                  req_bytes("/pp", close=False) +
                  req_bytes("/pp", headers=[("Range", "bytes=1-2")], close=False) +
                  req_bytes("/pp", headers=[("If-None-Match", '"pp"')], close=False) +
                  req_bytes("/pq", close=True))
        rd = B.Reader(s)
        a = B.read_response(rd, "HEAD")
        b = B.read_response(rd)
        c = B.read_response(rd)
        d = B.read_response(rd)
        e = B.read_response(rd)
    finally:
        s.close()
    assert a.status == 200 and a.body == b"" and a.headers.get("Content-Length") == "10"
    assert b.status == 200 and b.body == BODY10
    assert c.status == 206 and c.body == b"12"
    assert d.status == 304 and d.body == b""
    assert e.status == 200 and e.body == b"other"


# ---- a hostile or broken origin ----


POISON = (b"HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nContent-Length: 6\r\n"
          b"X-Poison: 1\r\n\r\nPOISON")


@pytest.mark.parametrize("when", ["same-write", "later"])
def test_bytes_after_a_response_never_answer_another_request(cached, origin, when):
    """An origin that sends more than its framing says (a desync, or a
    response smuggled into the connection): the extra bytes must never be
    read as the response to the next request on that connection."""
    def fn(conn, req, n):
        if req.path == "/first":
            head = B.response_head(200, MAXAGE + [("Content-Length", "4")]) + b"good"
            if when == "same-write":
                conn.send(head + POISON)
            else:
                conn.send(head)
                time.sleep(0.3)
                conn.send(POISON)
            return
        send(conn, 200, MAXAGE, "victim %s" % req.path)
    counting(origin, fn)
    w = cached(threads=1)
    assert h1(w.port, "/first").body == b"good"
    time.sleep(0.6)
    for p in ("/victim", "/victim2", "/victim"):
        r = h1(w.port, p)
        assert r.status in (200, 502) and r.get("x-poison") is None, r
        if r.status == 200:
            assert r.body == ("victim %s" % p).encode(), r
    r = h1(w.port, "/victim")
    assert r.body == b"victim /victim"


def test_a_304_to_an_unconditional_request_is_not_stored(cached, origin):
    def fn(conn, req, n):
        send(conn, 304, MAXAGE + [("ETag", '"x"')])
    counting(origin, fn)
    w = cached()
    r1 = h1(w.port, "/u")
    r2 = h1(w.port, "/u")
    assert r1.status == 304 and r2.status == 304 and not hit(r2)
    assert origin.count("/u") == 2


def test_a_304_with_another_etag_does_not_relabel_the_stored_body(cached, origin):
    """RFC 9111 4.3.4: a 304 with a strong validator updates only stored
    responses with that validator; if none has it, the cache MUST NOT use
    the 304 to update any. A body must never go out with another
    representation's ETag (a client would later validate the wrong bytes)."""
    def fn(conn, req, n):
        if req.headers.get("If-None-Match"):
            send(conn, 304, [("ETag", '"v2"'), ("Cache-Control", "max-age=60")])
        else:
            send(conn, 200, [("ETag", '"v%d"' % n), ("Cache-Control", "max-age=1")],
                 "body of v%d" % n)
    counting(origin, fn)
    w = cached()
    assert h1(w.port, "/e").body == b"body of v1"
    time.sleep(1.2)
    for _ in range(2):
        r = h1(w.port, "/e")
        assert r.status == 200
        assert (r.body, r.get("etag")) in ((b"body of v1", '"v1"'), (b"body of v2", '"v2"'),
                                           (b"body of v3", '"v3"')), r


def test_a_304_cannot_change_the_stored_framing_or_encoding(cached, origin):
    extra = [("Content-Length", "1000"), ("Content-Encoding", "gzip"),
             ("Transfer-Encoding", "chunked"), ("Content-Type", "evil/x"),
             ("Content-Range", "bytes 0-0/1")]
    counting(origin, lambda conn, req, n: validating_then(extra)(conn, req, n))
    w = cached()
    h1(w.port, "/f")
    time.sleep(1.2)
    for _ in range(2):
        r = raw(w.port, req_bytes("/f"), timeout=10)
        assert r.status == 200 and r.body == b"shared body", r
        assert r.get("content-length") == "11" and r.get("content-encoding") is None
        assert r.get("content-type") == "text/plain" and r.get("content-range") is None


def test_a_304_with_a_body_does_not_desync_the_connection(cached, origin):
    def fn(conn, req, n):
        if req.path == "/rb" and req.headers.get("If-None-Match") == '"v1"':
            conn.send(B.response_head(304, [("ETag", '"v1"'), ("Content-Length", "50")]) +
                      POISON + b"x" * 8)
            return
        if req.path == "/rb":
            send(conn, 200, [("Cache-Control", "max-age=1"), ("ETag", '"v1"')], "rb")
            return
        send(conn, 200, MAXAGE, "victim")
    counting(origin, fn)
    w = cached(threads=1)
    h1(w.port, "/rb")
    time.sleep(1.2)
    assert h1(w.port, "/rb").body == b"rb"
    time.sleep(0.3)
    r = h1(w.port, "/victim")
    assert r.get("x-poison") is None and r.body == b"victim", r


AGES = [
    ([("Cache-Control", "max-age=60"), ("Age", "-1")], True),
    ([("Cache-Control", "max-age=60"), ("Age", "abc")], True),
    ([("Cache-Control", "max-age=60"), ("Age", "99999999999999999999")], False),
    ([("Cache-Control", "max-age=60"), ("Age", "18446744073709551616")], False),
    ([("Cache-Control", "max-age=60"), ("Age", "61")], False),
    ([("Cache-Control", "max-age=99999999999999999999")], True),
    ([("Cache-Control", "s-maxage=99999999999999999999")], True),
    ([("Cache-Control", "max-age=-1")], False),
    ([("Cache-Control", "max-age=1e3")], False),
    ([("Cache-Control", "max-age=60, max-age=0")], False),
    ([("Cache-Control", "max-age=60"), ("Expires", "0")], True),
    ([("Expires", "Fri, 31 Dec 9999 23:59:59 GMT")], True),
    ([("Expires", "Fri, 31 Dec 99999 23:59:59 GMT")], False),
    ([("Cache-Control", "max-age=60"), ("Date", "Thu, 01 Jan 1970 00:00:00 GMT")], False),
    ([("Cache-Control", "max-age=60"), ("Date", "Fri, 01 Jan 2100 00:00:00 GMT")], True),
    ([("Cache-Control", "max-age=60"), ("Date", "garbage")], True),
    ([("Cache-Control", "max-age=60"), ("Age", "99999999999999999999"),
      ("Cache-Control", "stale-while-revalidate=99999999999999999999")], True),
]


@pytest.mark.parametrize("headers,fresh", AGES, ids=[str(i) for i in range(len(AGES))])
def test_odd_age_and_freshness_values(cached, origin, headers, fresh):
    origin.set("/age", headers=headers, body="aged")
    w = cached()
    h1(w.port, "/age")
    r = h1(w.port, "/age")
    assert r.status == 200 and r.body == b"aged"
    assert hit(r) == fresh, r
    if hit(r):
        age = int(r.get("age"))
        assert 0 <= age <= 2 ** 31, r


# ---- coalescing and timing ----


def test_a_lock_holder_whose_client_leaves_does_not_hold_the_waiters(cached, origin):
    """The first request of a key (which holds the coalescing lock) loses
    its client while the origin is slow. The waiters behind it must be
    answered: by the origin once the first fetch is abandoned, or from the
    store once it completes; not only at the end of the lock timeout."""
    state = {"closed": None}

    def fn(conn, req, n):
        if n == 1:
            state["closed"] = conn.wait_peer_close(25)
            if state["closed"]:
                return "close"
        send(conn, 200, MAXAGE, "answer %d" % n)
    counting(origin, fn)
    w = cached('lock = "20s"', rest='read_timeout = "40s"')
    a = B.connect(w.port, timeout=40)
    a.sendall(req_bytes("/hold", close=False))
    time.sleep(0.5)
    out = {}

    def waiter():
        t0 = time.monotonic()
        out["r"] = h1(w.port, "/hold")
        out["t"] = time.monotonic() - t0
    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.5)
    a.close()
    t.join(45)
    assert out["r"].status == 200, out
    assert out["t"] < 12, "the waiter was answered after %.1f s" % out["t"]


def test_a_waiter_that_leaves_is_forgotten(cached, origin):
    def fn(conn, req, n):
        if n == 1:
            time.sleep(1.5)
        send(conn, 200, MAXAGE, "answer %d" % n)
    counting(origin, fn)
    w = cached()
    out = []
    holder = threading.Thread(target=lambda: out.append(h1(w.port, "/wl")))
    holder.start()
    time.sleep(0.3)
    quitters = []
    for _ in range(5):
        s = B.connect(w.port)
        s.sendall(req_bytes("/wl", close=False))
        quitters.append(s)
    c = U.H2Client(w.port, authority="test.local")
    sid = c.request("/wl")
    time.sleep(0.3)
    c.conn.reset_stream(sid)
    c.flush()
    time.sleep(0.1)
    for s in quitters:
        s.close()
    stayer = threading.Thread(target=lambda: out.append(h1(w.port, "/wl")))
    stayer.start()
    holder.join(20)
    stayer.join(20)
    c.close()
    assert len(out) == 2 and all(r.body == b"answer 1" for r in out), out
    assert origin.count("/wl") == 1
    assert hit(h1(w.port, "/wl"))


def test_a_lock_holder_whose_body_is_cut_releases_whole_bodies(cached, origin):
    full = b"z" * 5000

    def fn(conn, req, n):
        if n == 1:
            time.sleep(0.5)
            conn.send(B.response_head(200, MAXAGE + [("Content-Length", "5000")]) + full[:100])
            time.sleep(0.05)
            return "close"
        send(conn, 200, MAXAGE, full)
    counting(origin, fn)
    w = cached()
    results, errors = [], []

    def one():
        try:
            results.append(h1(w.port, "/cut"))
        except Exception as e:  # the cut one
            errors.append(e)
    ts = [threading.Thread(target=one) for _ in range(10)]
    for t in ts:
        t.start()
        time.sleep(0.02)
    for t in ts:
        t.join(30)
    assert len(errors) <= 1 and len(results) + len(errors) == 10
    assert all(r.status == 200 and r.body == full for r in results), \
        [(r.status, len(r.body)) for r in results]
    r = h1(w.port, "/cut")
    assert r.body == full


def test_stale_while_revalidate_with_the_origin_down(cached, origin):
    """Within stale-while-revalidate a stale response answers at once; a
    failing background refresh (origin drops every connection) must not
    hang clients, remove the response or keep its refresh lock, so the
    first refresh after the origin is back brings the new version."""
    state = {"down": False}

    def fn(conn, req, n):
        if state["down"]:
            return "close"
        send(conn, 200, [("Cache-Control", "max-age=1, stale-while-revalidate=60")],
             "v%d" % n)
    counting(origin, fn)
    w = cached(rest="max_fails = 0")  # (no breaker: the origin's return is seen at once)
    assert h1(w.port, "/swr").body == b"v1"
    time.sleep(1.2)
    state["down"] = True
    t0 = time.monotonic()
    for _ in range(5):
        r = h1(w.port, "/swr")
        assert r.status == 200 and r.body == b"v1" and hit(r), r
        time.sleep(0.2)
    assert time.monotonic() - t0 < 15
    time.sleep(0.5)
    state["down"] = False
    deadline = time.monotonic() + 15
    body = None
    while time.monotonic() < deadline:
        r = h1(w.port, "/swr")
        assert r.status == 200
        body = r.body
        if body != b"v1":
            break
        time.sleep(0.3)
    assert body and body.startswith(b"v") and body != b"v1", "never refreshed"


@pytest.mark.parametrize("cc", ["max-age=1, must-revalidate", "max-age=1, proxy-revalidate",
                                "s-maxage=1", "max-age=1, no-cache"])
def test_max_stale_never_overrides_revalidation_requirements(cached, origin, cc):
    origin.set("/ms", headers=[("Cache-Control", cc)], body="ms")
    w = cached()
    h1(w.port, "/ms")
    for rq in ("max-stale", "max-stale=600", "max-stale, stale-if-error=600"):
        time.sleep(1.2)  # stale again (each validation refreshes it)
        r = h1(w.port, "/ms", [("Cache-Control", rq)])
        assert not hit(r), (rq, r)


# ---- purges ----


def test_purge_ignores_forwarded_addresses(cached, origin):
    origin.set("/pg", headers=MAXAGE, body="pg")
    w = cached('purge_ip_list = ["10.9.9.9"]')
    h1(w.port, "/pg")
    for hs in ([("X-Forwarded-For", "10.9.9.9")], [("X-Real-IP", "10.9.9.9")],
               [("Forwarded", "for=10.9.9.9")], [("X-Forwarded-For", "10.9.9.9, 10.9.9.9")],
               [("X-Client-IP", "10.9.9.9")]):
        assert h1(w.port, "/pg", hs, method="PURGE").status == 403, hs
    assert hit(h1(w.port, "/pg"))
    assert all(q.method != "PURGE" for q in origin.backend.requests)


@pytest.mark.parametrize("auth", ["Bearer SEKRIT", "Bearer sekri", "Bearer sekritt",
                                  "Basic sekrit", "Bearer", "sekrit", "Bearer c2Vrcml0",
                                  "Bearer sekrit, Bearer x", "Bearersekrit", "Bearer  sekrit "
                                  "x"])
def test_purge_with_a_wrong_token_is_refused(cached, origin, auth):
    origin.set("/pt", headers=MAXAGE, body="pt")
    w = cached('purge_ip_list = ["10.9.9.9"]\npurge_token = "sekrit"')
    h1(w.port, "/pt")
    assert h1(w.port, "/pt", [("Authorization", auth)], method="PURGE").status == 403
    assert hit(h1(w.port, "/pt"))
    assert all(q.method != "PURGE" for q in origin.backend.requests)


def test_purge_token_among_several_authorization_fields(cached, origin):
    origin.set("/pt", headers=MAXAGE, body="pt")
    w = cached('purge_ip_list = ["10.9.9.9"]\npurge_token = "sekrit"')
    h1(w.port, "/pt")
    r = h1(w.port, "/pt", [("Authorization", "Bearer wrong"), ("Authorization", "Bearer sekrit")],
           method="PURGE")
    assert r.status in (400, 403), r
    assert hit(h1(w.port, "/pt"))


@pytest.mark.parametrize("method", ["PROPPATCH", "MKCOL", "LOCK", "FROB", "PURGE"])
def test_unknown_unsafe_methods_invalidate(cached, origin, method):
    """RFC 9111 4.4: a cache MUST invalidate the target URI when it gets a
    non-error status for an unsafe request method, including methods whose
    safety is unknown."""
    def fn(conn, req, n):
        if req.method == "GET":
            send(conn, 200, MAXAGE, "version %d" % n)
        else:
            send(conn, 200, [], "done")
    counting(origin, fn)
    w = cached()
    assert h1(w.port, "/x").body == b"version 1"
    assert h1(w.port, "/x", method=method).status == 200
    r = h1(w.port, "/x")
    assert not hit(r) and r.body == b"version 3", r


def test_safe_methods_do_not_invalidate(cached, origin):
    def fn(conn, req, n):
        if req.method == "GET":
            send(conn, 200, MAXAGE, "version %d" % n)
        else:
            send(conn, 200, [], "x", head_only=req.method == "HEAD")
    counting(origin, fn)
    w = cached()
    h1(w.port, "/x")
    for m in ("OPTIONS", "HEAD"):
        h1(w.port, "/x", method=m)
    r = h1(w.port, "/x")
    assert hit(r) and r.body == b"version 1"


# ---- request smuggling with a cache behind it ----


def smuggling_origin(origin):
    def fn(conn, req, n):
        if req.path.startswith("/evil"):
            send(conn, 200, [("Cache-Control", "max-age=600"), ("X-Poison", "1")], "POISON")
        else:
            send(conn, 200, MAXAGE, "real %s" % req.path)
    counting(origin, fn)


SMUGGLED = b"GET /evil HTTP/1.1\r\nHost: test.local\r\n\r\n"


@pytest.mark.parametrize("head", [
    b"POST /s HTTP/1.1\r\nHost: test.local\r\nContent-Length: %d\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" % (5 + len(SMUGGLED)),
    b"POST /s HTTP/1.1\r\nHost: test.local\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Length: 4\r\n\r\n0\r\n\r\n",
    b"POST /s HTTP/1.1\r\nHost: test.local\r\nTransfer-Encoding: xchunked\r\n"
    b"Content-Length: 5\r\n\r\n0\r\n\r\n",
    b"POST /s HTTP/1.1\r\nHost: test.local\r\nTransfer-Encoding: chunked, identity\r\n\r\n"
    b"0\r\n\r\n",
    b"POST /s HTTP/1.1\r\nHost: test.local\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    b"POST /s HTTP/1.1\r\nHost: test.local\r\nContent-Length: 5\r\nContent-Length: 0\r\n\r\n",
    b"POST /s HTTP/1.1\r\nHost: test.local\r\nContent-Length: +0\r\n\r\n",
    b"POST /s HTTP/1.1\r\nHost: test.local\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0;\n\r\n",
    b"GET /s HTTP/1.1\r\nHost: test.local\r\nContent-Length: %d\r\n\r\n" % len(SMUGGLED),
], ids=["cl-te", "te-cl", "xchunked", "chunked-identity", "te-space", "two-cl", "plus-cl",
        "bare-lf", "get-body"])
def test_smuggling_cannot_store_a_response_under_a_victim_key(cached, origin, head):
    """Whatever a framing trick does to the first request, the bytes after
    it are either refused or the same client's next request: a response to
    a smuggled /evil never answers, nor is stored under, /victim."""
    smuggling_origin(origin)
    w = cached(threads=1)
    s = B.connect(w.port, timeout=10)
    try:
        s.sendall(head + SMUGGLED)
        s.settimeout(3)
        try:
            while s.recv(65536):
                pass
        except OSError:
            pass
    finally:
        s.close()
    for _ in range(3):
        r = h1(w.port, "/victim")
        assert r.status == 200 and r.body == b"real /victim", r
    assert origin.count("/victim") == 1


def test_a_naive_origin_reading_a_get_body_as_a_request(cached, origin):
    """A GET with a body that holds a request, to an origin that takes the
    body for the next request on its connection: the origin's answer to that
    one must never be read as any later response."""
    def fn(conn, req, n):
        if req.path == "/s" and req.body:
            conn.send(B.response_head(200, MAXAGE + [("Content-Length", "1")]) + b"s" +
                      POISON)
            return
        send(conn, 200, MAXAGE, "real %s" % req.path)
    counting(origin, fn)
    w = cached(threads=1)
    r = raw(w.port, b"GET /s HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(SMUGGLED), SMUGGLED))
    assert r.status in (200, 400)
    time.sleep(0.3)
    for p in ("/victim", "/victim", "/s"):
        r = h1(w.port, p)
        assert r.get("x-poison") is None and r.body == ("real %s" % p).encode() or \
            (p == "/s" and r.body == b"s"), r


# ---- memory and size bounds ----


@pytest.mark.deadline(120)
def test_many_keys_through_a_small_memory_tier(cached_admin, origin):
    """Far more keys than fit: eviction runs all the time, from several
    clients at once; every answer is its own key's body and the tier stays
    within its bound."""
    def fn(conn, req, n):
        body = (req.path * 2000)[:1500]
        send(conn, 200, MAXAGE, body)
    counting(origin, fn)
    w = cached_admin(caches='\n[caches.small]\nmemory = "256KB"', extra='storage = "small"')
    bad = []

    def worker(k):
        for i in range(k, 4000, 4):
            p = "/k/%d" % (i % 300 if i % 3 == 0 else i)
            r = h1(w.port, p)
            if r.status != 200 or r.body != (p * 2000)[:1500].encode():
                bad.append((p, r.status, len(r.body), r.body[-20:], status_of(r)))
    ts = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(100)
    assert not bad, bad[:5]
    with urllib.request.urlopen("http://127.0.0.1:%d/api/cache" % w.admin_port, timeout=10) as f:
        st = [c for c in json.load(f)["caches"] if c["name"] == "small"][0]
    assert st["memory"]["bytes"] <= st["memory"]["max_bytes"] == 256 * 1024, st
    assert st["memory"]["evictions"] > 0, st


@pytest.mark.parametrize("size,stored", [(100000, True), (100001, False), (99999, True)])
@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_bodies_at_the_max_file_size_bound(cached, origin, size, stored, framing):
    body = bytes(range(256)) * (size // 256) + bytes(range(size % 256))

    def fn(conn, req, n):
        if framing == "length":
            send(conn, 200, MAXAGE, body)
        else:
            out = bytearray(B.response_head(200, MAXAGE + [("Transfer-Encoding", "chunked")]))
            for i in range(0, len(body), 7777):
                piece = body[i:i + 7777]
                out += b"%x\r\n%s\r\n" % (len(piece), piece)
            conn.send(bytes(out) + b"0\r\n\r\n")
    counting(origin, fn)
    w = cached(caches="max_file_size = 100000")
    r1 = h1(w.port, "/b")
    assert r1.body == body
    r2 = h1(w.port, "/b")
    assert r2.body == body and hit(r2) == stored, (status_of(r1), status_of(r2))
    if stored:
        r3 = h1(w.port, "/b", [("Range", "bytes=-1")])
        assert r3.status == 206 and r3.body == body[-1:]


def test_keys_at_and_over_the_key_limit(cached, origin):
    """Keys near weir's 4 KiB key limit: two requests that differ only at
    the end of a long key field get their own responses; a key over the
    limit is passed through, never truncated into another's."""
    def fn(conn, req, n):
        send(conn, 200, MAXAGE, "n=%d k=%s" % (n, req.headers.get("X-K", "")[-8:]))
    counting(origin, fn)
    w = cached('key_headers = ["X-K"]')
    long_path = "/l/" + "a" * 5000
    for _ in range(2):
        r = h1(w.port, long_path)
        assert r.status == 200 and not hit(r)
    assert origin.count(long_path) == 2
    path = "/k/" + "b" * 1000
    for size in (3000, 3050, 3100, 3200, 6000):
        for last in ("xxxxxxx1", "xxxxxxx2", "xxxxxxx1"):
            r = h1(w.port, path, [("X-K", "v" * size + last)])
            assert r.status == 200 and r.body.endswith(last.encode()), (size, last, r)


# ---- more key inputs: fields and cookies sent twice ----


def truth_test(port, requests):
    """For each request (path, headers): what weir serves must be what the
    origin (no-cache: fetched now) says for that same request."""
    bad = []
    for path, hs in requests:
        r = h1(port, path, hs)
        t = h1(port, path, list(hs) + [("Cache-Control", "no-cache")])
        if (r.status, r.body) != (t.status, t.body):
            bad.append((path, hs, r.body, t.body))
    return bad


def test_a_key_header_sent_twice_cannot_poison_a_tenant(cached, origin):
    def fn(conn, req, n):
        send(conn, 200, MAXAGE, "tenant=[%s]" % ", ".join(req.headers.get_all("X-Tenant")))
    counting(origin, fn)
    w = cached('key_headers = ["X-Tenant"]')
    bad = truth_test(w.port, [("/kt", [("X-Tenant", "a"), ("X-Tenant", "evil")]),
                              ("/kt", [("X-Tenant", "a")])])
    assert not bad, bad


@pytest.mark.parametrize("cookies", [[("Cookie", "lang=fr; lang=evil")],
                                     [("Cookie", "lang=fr"), ("Cookie", "lang=evil")]])
def test_a_key_cookie_sent_twice_cannot_poison(cached, origin, cookies):
    def fn(conn, req, n):
        lang = None
        for line in req.headers.get_all("Cookie"):
            for part in line.split(";"):
                k, _, v = part.strip().partition("=")
                if k == "lang":
                    lang = v  # the last one wins
        send(conn, 200, MAXAGE, "lang=%s" % lang)
    counting(origin, fn)
    w = cached('key_cookies = ["lang"]')
    bad = truth_test(w.port, [("/kc", cookies), ("/kc", [("Cookie", "lang=fr")])])
    assert not bad, bad


def test_vary_on_a_field_sent_twice(cached, origin):
    def fn(conn, req, n):
        send(conn, 200, MAXAGE + [("Vary", "X-Tenant")],
             "tenant=[%s]" % ", ".join(req.headers.get_all("X-Tenant")))
    counting(origin, fn)
    w = cached()
    bad = truth_test(w.port, [("/vt", [("X-Tenant", "a"), ("X-Tenant", "evil")]),
                              ("/vt", [("X-Tenant", "a")]), ("/vt", [("X-Tenant", "a, evil")]),
                              ("/vt", [("X-Tenant", "evil"), ("X-Tenant", "a")])])
    assert not bad, bad


# ---- more timing: variants, slow readers, HTTP/2 holders ----


def test_variants_of_one_url_are_not_serialized(cached, origin):
    """Vary: Cookie (every user a variant): concurrent first requests of
    different users must not wait for each other's origin round trips
    (each waiter woken by a stored response for another variant queues
    behind the next one); ten 1-second fetches should take about one."""
    def fn(conn, req, n):
        time.sleep(1.0)
        send(conn, 200, MAXAGE + [("Vary", "Cookie")], "for %s" % req.headers.get("Cookie"))
    counting(origin, fn)
    w = cached()
    h1(w.port, "/vc", [("Cookie", "u=first")])  # the marker exists
    out = []
    ts = [threading.Thread(target=lambda i=i: out.append(
        h1(w.port, "/vc", [("Cookie", "u=%d" % i)]))) for i in range(10)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    took = time.monotonic() - t0
    assert len(out) == 10 and all(r.status == 200 for r in out)
    assert sorted(r.body for r in out) == sorted(b"for u=%d" % i for i in range(10))
    assert took < 6, "ten variants took %.1f s" % took


@pytest.mark.deadline(90)
def test_a_client_that_stops_reading_does_not_hold_the_lock(cached, origin):
    """The first request of a large object comes from a client that reads
    the head and then nothing. The clients behind it on the lock must get
    the object at origin speed, not when the lock times out."""
    body = b"q" * (24 << 20)
    origin.set("/big", headers=MAXAGE, body=body)
    w = cached('lock = "12s"\nstorage = "big"', caches='\n[caches.big]\nmemory = "512MB"',
               rest='read_timeout = "60s"\nwrite_timeout = "60s"')
    slow = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before the handshake
    slow.settimeout(60)
    slow.connect((B.LOOPBACK, w.port))
    slow.sendall(req_bytes("/big", close=False))
    slow.recv(100)
    time.sleep(0.5)
    t0 = time.monotonic()
    r = h1(w.port, "/big")
    took = time.monotonic() - t0
    slow.close()
    assert r.status == 200 and len(r.body) == len(body)
    assert took < 8, "a waiter got the object after %.1f s" % took


def test_an_h2_lock_holder_that_resets_its_stream_releases_the_waiters(cached, origin):
    def fn(conn, req, n):
        if n == 1 and conn.wait_peer_close(25):
            return "close"
        send(conn, 200, MAXAGE, "answer %d" % n)
    counting(origin, fn)
    w = cached('lock = "20s"', rest='read_timeout = "40s"')
    c = U.H2Client(w.port, authority="test.local")
    sid = c.request("/h2hold")
    time.sleep(0.5)
    out = {}

    def waiter():
        t0 = time.monotonic()
        out["r"] = h2(w.port, "/h2hold")
        out["t"] = time.monotonic() - t0
    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.5)
    c.conn.reset_stream(sid)
    c.flush()
    t.join(45)
    c.close()
    assert out["r"].status == 200 and out["t"] < 12, out


# ---- more of a broken origin: framing ----


@pytest.mark.parametrize("head,body,ok", [
    ([("Content-Length", "3"), ("Transfer-Encoding", "chunked")], b"5\r\nhello\r\n0\r\n\r\n",
     b"hello"),
    ([("Content-Length", "3"), ("Content-Length", "5")], b"hello", None),
    ([("Content-Length", "5, 3")], b"hello", None),
    ([("Content-Length", "+5")], b"hello", None),
    ([("Content-Length", "5"), ("Content-Length", "5")], b"hello", b"hello"),
    # chunked not last: the body runs to the close (6.3 item 4), as sent
    ([("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "gzip")], b"5\r\nhello\r\n0\r\n\r\n",
     b"5\r\nhello\r\n0\r\n\r\n"),
    ([("Transfer-Encoding", "chunked")], b"5\r\nhelloXX0\r\n\r\n", None),
    ([("Transfer-Encoding", "chunked")], b"ffffffffffffffffff\r\nhello\r\n0\r\n\r\n", None),
    ([("Transfer-Encoding", "chunked")], b"-5\r\nhello\r\n0\r\n\r\n", None),
], ids=["cl-te", "two-cl", "cl-list", "cl-plus", "same-cl", "te-gzip-last", "bad-chunk", "huge-chunk", "negative-chunk"])
def test_origin_framing_conflicts_are_never_stored(cached, origin, head, body, ok):
    """RFC 9112 6.3: Transfer-Encoding overrides Content-Length; an invalid
    Content-Length or a final coding other than chunked in a response is an
    unrecoverable error a proxy answers 502. Whatever weir decides, it never
    stores a body it had to guess."""
    def fn(conn, req, n):
        conn.send(B.response_head(200, MAXAGE + list(head)) + body)
        return "close"
    counting(origin, fn)
    w = cached()
    results = []
    for _ in range(2):
        try:
            r = raw(w.port, req_bytes("/fr"), timeout=10)
            results.append((r.status, r.body))
        except (B.PeerClosed, ValueError, OSError):
            results.append(("cut", None))
    for st, b in results:
        assert st in (200, 502, "cut"), results
        if st == 200:
            assert ok is not None and b == ok, results
    if ok is None:
        assert origin.count("/fr") == 2, "a guessed body was stored: %r" % results


def test_range_on_an_empty_stored_body(cached, origin):
    origin.set("/empty", headers=MAXAGE + [("ETag", '"e"')], body="")
    w = cached()
    assert h1(w.port, "/empty").body == b""
    for spec in ("bytes=0-", "bytes=0-0", "bytes=-1", "bytes=-0", "bytes=5-"):
        r = h1(w.port, "/empty", [("Range", spec)])
        assert r.status in (200, 416), (spec, r)
        assert r.body == b""
        if r.status == 416:
            assert r.get("content-range") == "bytes */0"
    assert origin.count("/empty") == 1


def test_unsafe_methods_and_purge_remove_every_variant(cached, origin):
    def fn(conn, req, n):
        if req.method == "GET":
            send(conn, 200, MAXAGE + [("Vary", "Accept-Language")],
                 "%s v%d" % (req.headers.get("Accept-Language"), n))
        else:
            send(conn, 204, [])
    counting(origin, fn)
    w = cached('purge_ip_list = ["127.0.0.1"]')
    langs = ("en", "fr", "de")
    for lang in langs:
        h1(w.port, "/vi", [("Accept-Language", lang)])
    assert all(hit(h1(w.port, "/vi", [("Accept-Language", x)])) for x in langs)
    assert h1(w.port, "/vi", [("Accept-Language", "en")], method="DELETE").status == 204
    assert not any(hit(h1(w.port, "/vi", [("Accept-Language", x)])) for x in langs)
    assert h1(w.port, "/vi", method="PURGE").status == 200
    assert not any(hit(h1(w.port, "/vi", [("Accept-Language", x)])) for x in langs)


# ---- HTTP/2 fields that would split a request on an HTTP/1.1 upstream ----


@pytest.mark.parametrize("name,value", [
    ("x-a", "b\r\n\r\nGET /evil HTTP/1.1\r\nHost: test.local\r\n\r\n"),
    ("x-a", "b\nX-Poison: 1"), ("x-a", "b\rX-Poison: 1"), ("x-a", "b\x00c"),
    ("x-a\r\nx-b", "c"), ("x a", "b"), ("x-a:", "b"), ("X-Upper", "b"),
    ("transfer-encoding", "chunked"), ("connection", "close"),
    ("content-length", "0\r\n\r\nGET /evil HTTP/1.1"),
])
def test_h2_fields_cannot_smuggle_a_request_upstream(cached, origin, name, value):
    smuggling_origin(origin)
    w = cached(threads=1)
    st = h2raw(w.port, "test.local", "/s", [(name, value)])
    assert st[0] in ("rst", 400) or origin.count("/evil") == 0, st
    assert origin.count("/evil") == 0
    for _ in range(2):
        r = h1(w.port, "/victim")
        assert r.status == 200 and r.body == b"real /victim", r


def test_forwarded_fields_from_a_client_cannot_poison(cached, origin):
    """An origin that builds links from X-Forwarded-Host/-Proto/-Port or
    Forwarded (a classic unkeyed input): weir must not pass a client's own
    values on, or the response made with them lands under the plain key."""
    def fn(conn, req, n):
        seen = ["%s=%s" % (k, req.headers.get(k)) for k in
                ("X-Forwarded-Host", "X-Forwarded-Proto", "X-Forwarded-Port", "Forwarded",
                 "X-Real-IP")]
        send(conn, 200, MAXAGE, "; ".join(seen))
    counting(origin, fn)
    w = cached()
    bad = truth_test(w.port, [
        ("/fw", [("X-Forwarded-Host", "evil.test")]), ("/fw", []),
        ("/fw", [("X-Forwarded-Proto", "https"), ("X-Forwarded-Port", "1")]), ("/fw", []),
        ("/fw", [("Forwarded", "host=evil.test;proto=https")]), ("/fw", []),
        ("/fw", [("X-Real-IP", "6.6.6.6")]), ("/fw", [])])
    assert not bad, bad
    assert b"evil" not in h1(w.port, "/fw").body


@pytest.mark.deadline(120)
def test_hits_replacements_purges_and_aborted_readers_at_once(cached, origin):
    """Unlucky timing: clients reading a large stored body and hanging up
    midway while the object is validated, replaced and purged under them.
    Every complete response is one version's whole body (its X-N says
    which), and nothing crashes (ASan) or leaks."""
    size = 600000

    def fn(conn, req, n):
        body = (b"%08d" % n) * (size // 8)
        send(conn, 200, [("Cache-Control", "max-age=1"), ("ETag", '"%d"' % n)], body)
    counting(origin, fn)
    w = cached('purge_ip_list = ["127.0.0.1"]')
    stop = time.monotonic() + 8
    bad, done = [], [0]

    def reader(cut):
        while time.monotonic() < stop:
            try:
                if cut:
                    s = B.connect(w.port, timeout=10)
                    s.sendall(req_bytes("/hot"))
                    s.recv(1000)
                    s.close()
                    continue
                r = B.get(w.port, "/hot", timeout=20)
                n = int(r.headers.get("ETag").strip('"'))
                if r.status != 200 or r.body != (b"%08d" % n) * (size // 8):
                    bad.append((r.status, len(r.body), r.body[:16], n))
                done[0] += 1
            except OSError as e:
                bad.append(repr(e))

    def purger():
        while time.monotonic() < stop:
            h1(w.port, "/hot", method="PURGE")
            time.sleep(0.3)
    ts = [threading.Thread(target=reader, args=(i % 2 == 0,)) for i in range(6)]
    ts.append(threading.Thread(target=purger))
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not bad, bad[:5]
    assert done[0] > 10


def test_a_background_refresh_in_flight_when_weir_stops(cached, origin):
    """stale-while-revalidate starts a refresh towards an origin that does
    not answer; stopping weir then must end it (the fixture checks a clean,
    prompt exit with no sanitizer report)."""
    def fn(conn, req, n):
        if n > 1:
            conn.wait_peer_close(30)
            return "close"
        send(conn, 200, [("Cache-Control", "max-age=1, stale-while-revalidate=60")], "v1")
    counting(origin, fn)
    w = cached(rest='read_timeout = "60s"')
    h1(w.port, "/bg")
    time.sleep(1.2)
    r = h1(w.port, "/bg")
    assert r.body == b"v1" and hit(r)
    assert origin.backend.wait_requests(2)
    t0 = time.monotonic()
    from conftest import check_stopped
    check_stopped(w)
    assert time.monotonic() - t0 < 10


def test_vary_on_a_field_weir_itself_writes(cached, origin):
    """Vary on X-Forwarded-For / X-Real-IP, fields weir appends to or sets
    for the origin: a stored response must only answer a request for which
    the origin would have been sent the same value."""
    def fn(conn, req, n):
        send(conn, 200, MAXAGE + [("Vary", "X-Forwarded-For, X-Real-IP")],
             "xff=%s rip=%s" % (req.headers.get("X-Forwarded-For"),
                                req.headers.get("X-Real-IP")))
    counting(origin, fn)
    w = cached()
    bad = truth_test(w.port, [
        ("/xf", [("X-Forwarded-For", "1.2.3.4")]),
        ("/xf", [("X-Forwarded-For", "1.2.3.4, 127.0.0.1")]),
        ("/xf", [("X-Forwarded-For", "1.2.3.4")]), ("/xf", []), ("/xf", []),
        ("/xf", [("X-Forwarded-For", "127.0.0.1")]), ("/xf", [("X-Real-IP", "9.9.9.9")])])
    assert not bad, bad


def test_an_unsafe_request_invalidates_the_uri_for_every_key_field(cached, origin):
    """RFC 9111 4.4: a cache MUST invalidate the target URI on a non-error
    response to an unsafe method. key_cookies splits the stored responses
    of one URI; a POST from a French reader changes the article for the
    English one too."""
    def fn(conn, req, n):
        if req.method == "GET":
            send(conn, 200, MAXAGE, "article v%d for %s" % (n, req.headers.get("Cookie")))
        else:
            send(conn, 204, [])
    counting(origin, fn)
    w = cached('key_cookies = ["lang"]')
    for c in ("lang=en", "lang=fr"):
        h1(w.port, "/art", [("Cookie", c)])
        assert hit(h1(w.port, "/art", [("Cookie", c)]))
    assert h1(w.port, "/art", [("Cookie", "lang=fr")], method="POST").status == 204
    assert not hit(h1(w.port, "/art", [("Cookie", "lang=fr")]))
    r = h1(w.port, "/art", [("Cookie", "lang=en")])
    assert not hit(r), r
