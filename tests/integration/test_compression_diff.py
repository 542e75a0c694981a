"""The compression plugin against nginx's gzip filter: the same requests,
through weir (`compression`: gzip 6, min_length 256, the default types) and
through Debian's nginx 1.22 (`gzip on; gzip_comp_level 6; gzip_proxied any;
gzip_vary on; gzip_min_length 256; gzip_types` = weir's defaults), both in
front of the same backend. Per case the two answers are compared on: the
status, whether the body came gzipped (and Content-Encoding), the decoded
body (it must be the backend's), Vary naming Accept-Encoding, ETag,
Content-Length and Accept-Ranges.

A case that names a DIFFERENCES row is one where weir differs from nginx on
purpose: the test asserts weir's documented behaviour (docs/plugins.md
"compression") there, and also that nginx still differs as the row says, so
a stale row fails. A case that names a SUSPECTED_BUGS row expects what weir
should do and fails until it does.

Not differences (checked against nginx 1.22.1): "gzip;q=0" (and
"gzip ; q=0") is a refusal for both: nginx reads the q of "gzip", though it
never weighs one coding against another. An eligible response that goes
uncompressed (no Accept-Encoding, "", "identity", "br", "gzip;q=0", and for
nginx an HTTP/1.0 client) gets `Vary: Accept-Encoding` from both: nginx
marks the response (r->gzip_vary) before it looks at the request.
"""
import os
import pwd
import shutil
import subprocess
import zlib

import pytest

import backends as B
from conftest import free_port, require_binary, wait_port
from test_plugins import server, upstream

# weir vs nginx 1.22.1, deliberate: the case asserts weir's behaviour.
DIFFERENCES = {
    "star": '"*" is every coding not named (RFC 9110 12.5.3); nginx looks for "gzip" only',
    "x-gzip": '"x-gzip" is gzip (RFC 9110 8.4.1.3); nginx wants "gzip" after "," or " "',
    "tab-ows": "HTAB is OWS (RFC 9110 5.6.1); nginx takes only a space or comma before gzip",
    "dup-refusal": "a coding named twice gets its lower q; nginx stops at a leading \"gzip,\"",
    "status": "every status but 1xx/204/206/304 is compressed; nginx: only 200, 403, 404",
    "identity-ce": "Content-Encoding: identity is no coding (RFC 9110 8.4.1); nginx: non-empty",
    "empty-ce": "a Content-Encoding weir cannot read (even \"\") passes as it is; "
                "nginx gzips and sends two fields, \"\" and \"gzip\"",
    "no-transform": "Cache-Control: no-transform is honoured (RFC 9111 5.2.2.6); nginx ignores it",
    "vary-star": "Vary: * already covers Accept-Encoding; nginx appends its Vary to any Vary",
    "http10": "an HTTP/1.0 client gets gzip too, close-delimited; nginx: gzip_http_version 1.1",
    "unquoted-etag": "an unquoted (invalid) ETag is weakened as it is; nginx drops it",
    "multi-ae": "two Accept-Encoding lines are one list (RFC 9110 5.3); nginx 1.22 reads one",
    "304-validator": "a 304 gets the Vary and weak ETag its gzipped 200 had, so caches match "
                     "them (RFC 9110 15.4.5); nginx passes the 304 as it is",
}

# Where weir looks wrong: the case expects the right answer (and fails).
# (The review's HEAD finding, other fields than GET's, is fixed: HEAD is
# now the same as nginx's.)
SUSPECTED_BUGS = {}

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
MIN_LENGTH = 256

# weir's default `types` (compression.c default_types); nginx cannot take
# prefixes, so "text/" stands for the text types in use. text/html is
# always on in nginx.
WEIR_DEFAULT_TYPES = [
    "application/json", "application/javascript", "application/xml", "image/svg+xml",
    "application/wasm", "application/x-javascript", "application/ld+json",
    "application/manifest+json", "application/rss+xml", "application/atom+xml",
    "application/xhtml+xml", "application/problem+json", "application/graphql-response+json",
    "font/ttf", "font/otf", "application/vnd.ms-fontobject",
]
NGINX_TEXT_TYPES = ["text/plain", "text/css", "text/xml", "text/javascript", "text/csv",
                    "text/markdown", "text/event-stream", "text/calendar", "text/x-component"]

TEXT = b"".join(b"<p>line %d: the quick brown fox jumps over the lazy dog</p>\n" % i
                for i in range(300))  # ~18 KB of compressible text
_c = zlib.compressobj(6, zlib.DEFLATED, 31)
GZ_TEXT = _c.compress(TEXT) + _c.flush()
BR_OPAQUE = b"\x1b\x0d\x00\xf8\xa5\x40\xc2\xaa\x10\x49\xea\x16\x85\x9c\x32\x00" * 40


class Case:
    """One request and the backend's answer to it.

    diff: a DIFFERENCES key; weir: what weir's answer has instead of
    nginx's there (summary keys). bug: a suspected weir bug; weir: the
    correct answer's fields."""

    def __init__(self, name, ae=None, method="GET", version="HTTP/1.1", req=(), status=200,
                 ctype="text/html", headers=(("ETag", '"v1"'), ("Accept-Ranges", "bytes")),
                 extra=(), body=TEXT, chunked=False, diff=None, bug=None, weir=None):
        self.name = name
        self.ae = ae  # None: no field; a list: one field line each
        self.method = method
        self.version = version
        self.req = list(req)
        self.status = status
        self.ctype = ctype
        self.headers = list(headers) + list(extra)
        self.body = body
        self.chunked = chunked
        self.diff = diff
        self.bug = bug
        self.weir = weir or {}
        assert diff is None or diff in DIFFERENCES, diff
        assert bug is None or bug in SUSPECTED_BUGS, bug
        assert not self.weir or diff or bug, name

    def __repr__(self):
        return self.name


GZ = {"gzip": True, "encoding": "gzip", "vary_ae": True, "etag": 'W/"v1"',
      "content_length": None, "accept_ranges": None}  # what compressing TEXT changes
PLAIN = {"gzip": False, "encoding": None, "vary_ae": False, "etag": '"v1"',
         "content_length": str(len(TEXT)), "accept_ranges": "bytes"}  # TEXT left alone

CASES = [
    # ---- Accept-Encoding ----
    Case("ae-absent"),
    Case("ae-empty", ae=""),
    Case("ae-gzip", ae="gzip"),
    Case("ae-GZIP", ae="GZIP"),
    Case("ae-gzip-q0", ae="gzip;q=0"),
    Case("ae-gzip-q0-spaced", ae="gzip ; q=0"),
    Case("ae-gzip-q0.5", ae="gzip;q=0.5"),
    Case("ae-gzip-q0.001-identity", ae="identity;q=1, gzip;q=0.001"),
    Case("ae-star", ae="*", diff="star", weir=GZ),
    Case("ae-star-q0", ae="*;q=0"),
    Case("ae-gzip-q0-star", ae="gzip;q=0, *"),
    Case("ae-identity", ae="identity"),
    Case("ae-deflate-gzip-q0.5", ae="deflate, gzip;q=0.5"),
    Case("ae-br-only", ae="br"),
    Case("ae-x-gzip", ae="x-gzip", diff="x-gzip", weir=GZ),
    Case("ae-spaces", ae="deflate ,  gzip ; q=0.8"),
    Case("ae-no-space", ae="deflate,gzip"),
    Case("ae-tab-after-gzip", ae="gzip;q=0.5,\tbr"),
    Case("ae-tab-before-gzip", ae="deflate,\tgzip", diff="tab-ows", weir=GZ),
    Case("ae-browser", ae="gzip, deflate, br, zstd"),
    Case("ae-q1.000", ae="gzip;q=1.000"),
    Case("ae-q-invalid", ae="gzip;q=2"),
    Case("ae-dup-refusal", ae="gzip, gzip;q=0", diff="dup-refusal",
         weir=dict(PLAIN, vary_ae=True)),
    Case("ae-two-lines", ae=["br", "gzip"], diff="multi-ae", weir=GZ),
    # ---- Content-Type ----
    Case("type-text-plain-charset", ae="gzip", ctype="text/plain; charset=utf-8"),
    Case("type-TEXT-HTML", ae="gzip", ctype="TEXT/HTML"),
    Case("type-json", ae="gzip", ctype="application/json"),
    Case("type-png", ae="gzip", ctype="image/png"),
    Case("type-none", ae="gzip", ctype=None),
    # ---- statuses ----
    Case("status-201", ae="gzip", status=201, diff="status", weir=GZ),
    Case("status-204", ae="gzip", status=204, body=b""),
    Case("status-206", ae="gzip", status=206, req=[("Range", "bytes=0-%d" % (len(TEXT) // 2 - 1))],
         body=TEXT[:len(TEXT) // 2],
         extra=[("Content-Range", "bytes 0-%d/%d" % (len(TEXT) // 2 - 1, len(TEXT)))]),
    Case("status-304", ae="gzip", status=304, req=[("If-None-Match", '"v1"')], body=b"",
         diff="304-validator", weir={"vary_ae": True, "etag": 'W/"v1"'}),
    Case("status-403", ae="gzip", status=403),
    Case("status-404", ae="gzip", status=404),
    Case("status-500", ae="gzip", status=500, diff="status", weir=GZ),
    Case("status-500-no-ae", status=500, diff="status", weir={"vary_ae": True}),
    # ---- HEAD (bug: nginx's answer, GET's fields without the body, is the right one) ----
    Case("head-gzip", ae="gzip", method="HEAD"),
    Case("head-no-ae", method="HEAD"),
    Case("head-png", ae="gzip", method="HEAD", ctype="image/png"),
    # ---- already encoded ----
    Case("ce-gzip", ae="gzip", extra=[("Content-Encoding", "gzip")], body=GZ_TEXT),
    Case("ce-gzip-client-identity", ae="identity", extra=[("Content-Encoding", "gzip")],
         body=GZ_TEXT),
    Case("ce-empty", ae="gzip", extra=[("Content-Encoding", "")], diff="empty-ce",
         weir=dict(PLAIN, encoding="")),
    Case("ce-br", ae="gzip", extra=[("Content-Encoding", "br")], body=BR_OPAQUE),
    Case("ce-identity", ae="gzip", extra=[("Content-Encoding", "identity")],
         diff="identity-ce", weir=GZ),
    # ---- Cache-Control ----
    Case("no-transform", ae="gzip", extra=[("Cache-Control", "no-transform")],
         diff="no-transform", weir=PLAIN),
    Case("no-transform-in-list", ae="gzip", extra=[("Cache-Control", "public, No-Transform")],
         diff="no-transform", weir=PLAIN),
    Case("cache-control-other", ae="gzip", extra=[("Cache-Control", "max-age=60")]),
    # ---- min_length ----
    Case("small-100", ae="gzip", body=TEXT[:100]),
    Case("small-255", ae="gzip", body=TEXT[:MIN_LENGTH - 1]),
    Case("exactly-256", ae="gzip", body=TEXT[:MIN_LENGTH]),
    Case("empty-200", ae="gzip", body=b""),
    # ---- chunked backend (no Content-Length) ----
    Case("chunked", ae="gzip", chunked=True),
    Case("chunked-small", ae="gzip", chunked=True, body=TEXT[:50]),
    Case("chunked-no-ae", chunked=True),
    Case("chunked-png", ae="gzip", chunked=True, ctype="image/png"),
    # ---- ETag ----
    Case("etag-weak", ae="gzip", headers=[("ETag", 'W/"w1"')]),
    Case("etag-none", ae="gzip", headers=[]),
    Case("etag-unquoted", ae="gzip", headers=[("ETag", "abc")], diff="unquoted-etag",
         weir={"etag": "W/abc"}),
    # ---- Vary already there ----
    Case("vary-cookie", ae="gzip", extra=[("Vary", "Cookie")]),
    Case("vary-accept-encoding", ae="gzip", extra=[("Vary", "accept-encoding")]),
    Case("vary-list", ae="identity", extra=[("Vary", "Cookie, Accept-Encoding")]),
    Case("vary-star", ae="gzip", extra=[("Vary", "*")], diff="vary-star",
         weir={"vary_ae": False}),
    # ---- HTTP/1.0 client ----
    Case("http10-gzip", ae="gzip", version="HTTP/1.0", diff="http10", weir=GZ),
    Case("http10-no-ae", version="HTTP/1.0"),
    Case("http10-chunked", ae="gzip", version="HTTP/1.0", chunked=True, diff="http10",
         weir=dict(GZ, content_length=None)),
]


# ---------------------------------------------------------------------------
# The backend, nginx, weir


def backend_handler(case):
    def handler(conn, req):
        hs = []
        if case.ctype:
            hs.append(("Content-Type", case.ctype))
        hs += case.headers
        no_body = case.status in (204, 304)
        if case.chunked:
            hs.append(("Transfer-Encoding", "chunked"))
        elif not no_body:
            hs.append(("Content-Length", str(len(case.body))))
        out = bytearray(B.response_head(case.status, hs))
        if req.method != "HEAD" and not no_body:
            if case.chunked:
                for i in range(0, len(case.body), 4000):
                    piece = case.body[i:i + 4000]
                    out += b"%x\r\n%s\r\n" % (len(piece), piece)
                out += b"0\r\n\r\n"
            else:
                out += case.body
        conn.send(bytes(out))
    return handler


@pytest.fixture
def nginx_proxy(tmp_path):
    """Factory: nginx_proxy(backend) -> port of nginx proxying to it with
    gzip on as weir's defaults are."""
    if not os.access(NGINX, os.X_OK):
        pytest.skip("nginx not installed")
    procs = []

    def start(b):
        port = free_port()
        d = tmp_path / "nginx"
        d.mkdir(exist_ok=True)
        user = "user %s;" % pwd.getpwuid(os.getuid()).pw_name if os.getuid() == 0 else ""
        conf = d / "nginx.conf"
        conf.write_text(user + """
daemon off; worker_processes 1; pid %(d)s/nginx.pid; error_log %(d)s/error.log;
events { worker_connections 64; }
http {
    access_log off; client_body_temp_path %(d)s; proxy_temp_path %(d)s;
    fastcgi_temp_path %(d)s; uwsgi_temp_path %(d)s; scgi_temp_path %(d)s;
    gzip on; gzip_comp_level 6; gzip_proxied any; gzip_vary on;
    gzip_min_length %(min)d;
    gzip_types %(types)s;
    server {
        listen 127.0.0.1:%(p)d;
        location / {
            proxy_pass http://%(b)s;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_read_timeout 10s; proxy_connect_timeout 5s;
        }
    }
}
""" % {"d": d, "p": port, "b": b.addr, "min": MIN_LENGTH,
       "types": " ".join(NGINX_TEXT_TYPES + WEIR_DEFAULT_TYPES)})
        p = subprocess.Popen([NGINX, "-c", str(conf), "-e", str(d / "error.log")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             stdin=subprocess.DEVNULL)
        procs.append(p)
        if not wait_port(port, p):
            err = (d / "error.log").read_text(errors="replace") if (d / "error.log").exists() \
                else ""
            pytest.fail("nginx did not start on %d: %s" % (port, err[-2000:]))
        return port

    yield start
    for p in procs:
        p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)


def weir_cfg():
    return server({"l": 'upstream = "u"\nplugins = ["c"]\n'},
                  '[plugins.c]\ncategory = "compression"\nmin_length = %d\n' % MIN_LENGTH
                  + upstream())


# ---------------------------------------------------------------------------
# Asking and comparing


def ask(port, case):
    lines = ["%s / %s" % (case.method, case.version), "Host: test.local"]
    if case.ae is not None:
        for v in (case.ae if isinstance(case.ae, list) else [case.ae]):
            lines.append("Accept-Encoding: %s" % v if v else "Accept-Encoding:")
    lines += ["%s: %s" % kv for kv in case.req]
    if case.version == "HTTP/1.1":
        lines.append("Connection: close")
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    s = B.connect(port, timeout=15)
    try:
        s.sendall(raw)
        return B.read_response(B.Reader(s), case.method)
    finally:
        s.close()


def tokens(values):
    out = []
    for v in values:
        out += [t.strip().lower() for t in v.split(",") if t.strip()]
    return out


def gunzip(data):
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = d.decompress(data) + d.flush()
    if not d.eof or d.unused_data:
        raise ValueError("not one whole gzip member")
    return out


def summary(case, r):
    """The fields the two proxies are compared on."""
    ces = r.headers.get_all("content-encoding")
    ce = ", ".join(ces) if ces else None
    backend_ce = dict((k.lower(), v) for k, v in case.headers).get("content-encoding")
    added_gzip = tokens(ces) == ["gzip"] and backend_ce != "gzip"
    if case.method == "HEAD" or case.status in (204, 304):
        want_body = b""
    else:
        want_body = case.body
    body = r.body
    if added_gzip and want_body:
        try:
            body = gunzip(body)
        except (zlib.error, ValueError) as e:
            body = "undecodable gzip: %s" % e
    return {
        "status": r.status,
        "gzip": added_gzip,
        "encoding": ce,
        "body_ok": body == want_body,
        "vary_ae": "accept-encoding" in tokens(r.headers.get_all("vary")),
        "etag": r.headers.get("etag"),
        "content_length": r.headers.get("content-length"),
        "accept_ranges": r.headers.get("accept-ranges"),
    }


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_same_as_nginx(weir_toml, backend, nginx_proxy, case):
    require_binary("weir")
    b = backend(backend_handler(case))
    w = weir_toml(weir_cfg(), B=b)
    n = nginx_proxy(b)
    rw, rn = ask(w.port, case), ask(n, case)
    sw, sn = summary(case, rw), summary(case, rn)
    # The backend's body arrives whole through both, whatever the coding.
    assert sn["body_ok"], ("nginx", rn.status, rn.framing, rn.headers, rn.body[:100])
    assert sw["body_ok"], ("weir", rw.status, rw.framing, rw.headers, rw.body[:100])
    # weir names Accept-Encoding in Vary once (nginx appends to the backend's).
    assert tokens(rw.headers.get_all("vary")).count("accept-encoding") <= 1, rw.headers
    if sw["gzip"] and case.version == "HTTP/1.0":
        assert rw.framing == "close", rw.headers  # no chunked coding for HTTP/1.0
    want = dict(sn, **case.weir)
    if case.diff:
        assert any(sn[k] != v for k, v in case.weir.items()), (
            "DIFFERENCES[%r] no longer shows: nginx now gives %r" % (case.diff, sn))
    why = ("suspected weir bug: %s\n" % SUSPECTED_BUGS[case.bug] if case.bug else
           "deliberate: %s\n" % DIFFERENCES[case.diff] if case.diff else "")
    assert sw == want, "%sweir  %r\nwant  %r\nnginx %r\nweir fields  %r\nnginx fields %r" % (
        why, sw, want, sn, rw.headers, rn.headers)
