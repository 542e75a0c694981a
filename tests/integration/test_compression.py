"""The compression plugin: gzip, brotli and zstd chosen from Accept-Encoding,
what is never compressed, streaming with pauses (server-sent events stay
live), decompression for clients that cannot read the backend's encoding,
sub_filter over a compressed backend, over HTTP/1.1, HTTP/2 and TLS."""
import gzip
import os
import re
import shutil
import socket
import subprocess
import time
import zlib

import brotli
import pytest

import backends as B
import h2util as U
from conftest import free_port, require_binary
from test_plugins import server, upstream

TEXT = b"".join(b"line %d: the quick brown fox jumps over the lazy dog\n" % i
                for i in range(500))  # ~27 KB of compressible text


def unzstd(data):
    r = subprocess.run(["zstd", "-d", "-c", "-q"], input=data, capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


def decode(enc, data):
    if enc in (None, "identity"):
        return data
    if enc == "gzip":
        return gzip.decompress(data)
    if enc == "br":
        return brotli.decompress(data)
    if enc == "zstd":
        return unzstd(data)
    raise AssertionError("unexpected encoding %r" % enc)


def comp_cfg(keys="", loc_extra="", extra=""):
    return server({"l": 'upstream = "u"\nplugins = ["c"]\n' + loc_extra},
                  '[plugins.c]\ncategory = "compression"\n' + keys + extra + upstream())


ALL = 'gzip_level = 6\nbr_level = 4\nzstd_level = 3\n'


def text_backend(body=TEXT, ctype="text/plain; charset=utf-8", extra=()):
    return B.fixed(body, headers=[("Content-Type", ctype)] + list(extra))


@pytest.mark.parametrize("ae,want", [
    ("gzip", "gzip"), ("br", "br"), ("zstd", "zstd"),
    ("gzip, br, zstd", "zstd"),                 # the preference order: zstd, br, gzip
    ("gzip;q=1, br;q=0.5, zstd;q=0.1", "gzip"),  # the client's q decides first
    ("br;q=0, gzip", "gzip"),
    ("*", "zstd"), ("*;q=0", None), ("gzip;q=0", None), ("identity", None), ("", None),
    ("x-gzip", "gzip"), ("GZIP", "gzip"), ("deflate", None),
])
def test_negotiation(weir_toml, backend, ae, want):
    b = backend(text_backend())
    w = weir_toml(comp_cfg(ALL), B=b)
    hs = [("Accept-Encoding", ae)] if ae else []
    r = B.get(w.port, "/", headers=hs)
    assert r.status == 200
    assert r.headers.get("content-encoding") == want, r.headers
    assert decode(want, r.body) == TEXT
    assert "accept-encoding" in r.headers.get("vary", "").lower()
    if want:
        assert r.headers.get("content-length") is None and r.framing == "chunked"


def test_no_accept_encoding_field_is_identity(weir_toml, backend):
    b = backend(text_backend())
    w = weir_toml(comp_cfg(ALL), B=b)
    r = B.request(w.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert r.headers.get("content-encoding") is None and r.body == TEXT
    assert r.headers.get("content-length") == str(len(TEXT))


def test_default_is_gzip_only(weir_toml, backend):
    b = backend(text_backend())
    w = weir_toml(comp_cfg(), B=b)
    r = B.get(w.port, "/", headers=[("Accept-Encoding", "br, zstd, gzip")])
    assert r.headers.get("content-encoding") == "gzip" and gzip.decompress(r.body) == TEXT
    r = B.get(w.port, "/", headers=[("Accept-Encoding", "br, zstd")])
    assert r.headers.get("content-encoding") is None and r.body == TEXT


def test_encodings_order(weir_toml, backend):
    b = backend(text_backend())
    w = weir_toml(comp_cfg(ALL + 'encodings = "gzip, br, zstd"\n'), B=b)
    r = B.get(w.port, "/", headers=[("Accept-Encoding", "zstd, br, gzip")])
    assert r.headers.get("content-encoding") == "gzip"


@pytest.mark.parametrize("case", ["small", "image", "encoded", "no-transform", "204", "304",
                                  "206", "head", "no-type"])
def test_what_is_never_compressed(weir_toml, backend, case):
    body, status, hs, method = TEXT, 200, [("Content-Type", "text/html")], "GET"
    if case == "small":
        body = b"tiny"
    elif case == "image":
        hs = [("Content-Type", "image/png")]
    elif case == "encoded":
        body = gzip.compress(TEXT)
        hs.append(("Content-Encoding", "gzip"))
    elif case == "no-transform":
        hs.append(("Cache-Control", "public, no-transform"))
    elif case in ("204", "304"):
        status, body = int(case), b""
    elif case == "206":
        status = 206
        hs.append(("Content-Range", "bytes 0-%d/%d" % (len(TEXT) - 1, len(TEXT) * 2)))
    elif case == "head":
        method = "HEAD"
    elif case == "no-type":
        hs = []

    def handler(conn, req):
        h = list(hs)
        if status not in (204, 304):
            h.append(("Content-Length", str(len(body))))
        conn.send(B.response_head(status, h) + (b"" if req.method == "HEAD" else body))
    b = backend(handler)
    w = weir_toml(comp_cfg('min_length = 100\n'), B=b)
    r = B.get(w.port, "/", headers=[("Accept-Encoding", "gzip")], method=method)
    assert r.status == status
    if case == "head":
        # No body, but the fields its GET gets (RFC 9110 9.3.2).
        assert r.headers.get("content-encoding") == "gzip" and r.body == b""
        assert r.headers.get("content-length") is None
        assert "accept-encoding" in r.headers.get("vary", "").lower()
        return
    assert r.headers.get("content-encoding") == ("gzip" if case == "encoded" else None), r.headers
    if case not in ("204", "304"):
        assert r.body == body
        assert r.headers.get("content-length") == str(len(body))


def test_headers_of_a_compressed_response(weir_toml, backend):
    b = backend(text_backend(extra=[("ETag", '"abc"'), ("Accept-Ranges", "bytes"),
                                    ("Vary", "Cookie")]))
    w = weir_toml(comp_cfg(), B=b)
    r = B.get(w.port, "/", headers=[("Accept-Encoding", "gzip")])
    assert r.headers.get("content-encoding") == "gzip"
    assert r.headers.get("etag") == 'W/"abc"'
    assert r.headers.get("accept-ranges") is None
    vary = ",".join(r.headers.get_all("vary")).lower()
    assert "cookie" in vary and "accept-encoding" in vary
    # A client that gets it plain is told it varies too (for caches).
    r = B.get(w.port, "/", headers=[("Accept-Encoding", "identity")])
    assert r.headers.get("etag") == '"abc"' and r.body == TEXT
    assert "accept-encoding" in ",".join(r.headers.get_all("vary")).lower()


def test_types_prefixes_and_star(weir_toml, backend):
    b = backend(text_backend(ctype="application/x-custom"))
    w = weir_toml(comp_cfg('types = ["application/x-"]\n'), B=b)
    assert B.get(w.port, "/", headers=[("Accept-Encoding", "gzip")]).headers.get(
        "content-encoding") == "gzip"
    w2 = weir_toml(comp_cfg('types = ["text/"]\n'), B=b)
    assert B.get(w2.port, "/", headers=[("Accept-Encoding", "gzip")]).headers.get(
        "content-encoding") is None
    w3 = weir_toml(comp_cfg('types = ["*"]\n'), B=b)
    assert B.get(w3.port, "/", headers=[("Accept-Encoding", "gzip")]).headers.get(
        "content-encoding") == "gzip"


def sse_backend(events, pause):
    def handler(conn, req):
        conn.send(B.response_head(200, [("Content-Type", "text/event-stream"),
                                        ("Transfer-Encoding", "chunked")]))
        for e in events:
            conn.send(b"%x\r\n%s\r\n" % (len(e), e))
            time.sleep(pause)
        conn.send(b"0\r\n\r\n")
    return handler


@pytest.mark.parametrize("enc", ["gzip", "br", "zstd"])
def test_a_paused_stream_is_flushed_as_it_goes(weir_toml, backend, enc):
    """Server-sent events through the encoder: each event can be decoded as
    soon as it is sent, before the backend sends the next."""
    events = [b"data: event %d\n\n" % i for i in range(3)]
    b = backend(sse_backend(events, pause=0.6))
    w = weir_toml(comp_cfg(ALL + 'types = ["text/event-stream"]\n'), B=b)
    s = B.connect(w.port, timeout=10)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nAccept-Encoding: %s\r\n\r\n" % enc.encode())
    rd = B.Reader(s)
    head = b"".join(rd.read_head()).lower()
    assert b"content-encoding: " + enc.encode() in head
    got = b""
    if enc == "gzip":
        d = zlib.decompressobj(31)
        feed = d.decompress
    elif enc == "br":
        d = brotli.Decompressor()
        feed = d.process
    else:
        feed = None
    # The first event arrives whole before the second is sent.
    compressed = b""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        size = int(rd.readline().strip(), 16)
        assert size > 0, "the body ended before the first event"
        compressed += rd.read_exact(size)
        rd.readline()
        if feed:
            got += feed(compressed)
            compressed = b""
            if events[0] in got:
                break
        else:
            try:
                r = subprocess.run(["zstd", "-d", "-c", "-q"], input=compressed,
                                   capture_output=True, timeout=10)
                if events[0] in r.stdout:
                    break
            except subprocess.SubprocessError:
                pass
    else:
        assert False, "the first event was not decodable on its own"
    # ... and nothing more is there yet (the backend is still pausing).
    s.settimeout(0.2)
    with pytest.raises(socket.timeout):
        extra = s.recv(1)
        assert False, "more arrived before the second event: %r" % extra
    s.settimeout(10)
    rest, _ = B.read_chunked(rd)
    s.close()


def test_large_streamed_body_round_trips(weir_toml, backend):
    body = os.urandom(1 << 20) + TEXT * 40  # incompressible and compressible parts
    pieces = [body[i:i + 50000] for i in range(0, len(body), 50000)]

    def handler(conn, req):
        conn.send(B.response_head(200, [("Content-Type", "text/plain"),
                                        ("Transfer-Encoding", "chunked")]))
        for p in pieces:
            conn.send(b"%x\r\n%s\r\n" % (len(p), p))
        conn.send(b"0\r\n\r\n")
    b = backend(handler)
    w = weir_toml(comp_cfg(ALL), B=b)
    for enc in ("gzip", "br", "zstd"):
        r = B.get(w.port, "/", headers=[("Accept-Encoding", enc)])
        assert r.headers.get("content-encoding") == enc
        assert decode(enc, r.body) == body


@pytest.mark.parametrize("enc", ["gzip", "br", "zstd", "deflate"])
def test_decompression_for_a_client_without_it(weir_toml, backend, enc):
    packed = {"gzip": gzip.compress(TEXT), "br": brotli.compress(TEXT),
              "zstd": subprocess.run(["zstd", "-c", "-q"], input=TEXT, capture_output=True)
              .stdout, "deflate": zlib.compress(TEXT)}[enc]
    b = backend(B.fixed(packed, headers=[("Content-Type", "text/plain"),
                                         ("Content-Encoding", enc)]))
    w = weir_toml(comp_cfg('decompression = true\n'), B=b)
    r = B.get(w.port, "/", headers=[("Accept-Encoding", "identity")])
    assert r.headers.get("content-encoding") is None and r.body == TEXT
    # A client that takes the backend's encoding gets it as it is.
    if enc != "deflate":
        r = B.get(w.port, "/", headers=[("Accept-Encoding", enc)])
        assert r.headers.get("content-encoding") == enc and r.body == packed
    # A gzip client of a br backend: decoded, then gzipped.
    if enc == "br":
        r = B.get(w.port, "/", headers=[("Accept-Encoding", "gzip")])
        assert r.headers.get("content-encoding") == "gzip" and gzip.decompress(r.body) == TEXT


def test_decompression_of_a_corrupt_body_cuts_it(weir_toml, backend):
    b = backend(B.fixed(b"\x1f\x8b not really gzip" * 100,
                        headers=[("Content-Type", "text/plain"), ("Content-Encoding", "gzip")]))
    w = weir_toml(comp_cfg('decompression = true\n'), B=b)
    s = B.connect(w.port)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    rd = B.Reader(s)
    try:
        r = B.read_response(rd)
    except (B.PeerClosed, ConnectionResetError):
        pass  # cut: what a client must see
    else:
        assert r.status >= 500, r
    s.close()
    assert B.get(w.port, "/x", headers=[("Accept-Encoding", "gzip")]).status == 200


def test_decompression_bomb_is_refused(weir_toml, backend):
    bomb = gzip.compress(b"\0" * (64 << 20))  # 64 MiB in ~64 KB
    b = backend(B.fixed(bomb, headers=[("Content-Type", "text/plain"),
                                       ("Content-Encoding", "gzip")]))
    w = weir_toml(comp_cfg('decompression = true\n'), B=b)
    s = B.connect(w.port, timeout=20)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    rd = B.Reader(s)
    got = 0
    try:
        rd.read_head()
        while True:
            size = int(rd.readline().strip(), 16)
            if size == 0:
                break
            rd.read_exact(size)
            got += size
            rd.readline()
        assert False, "a 64 MiB expansion went through whole"
    except (B.PeerClosed, ConnectionResetError, ValueError):
        pass
    s.close()


def test_sub_filter_over_a_compressed_backend(weir_toml, backend):
    page = b"<p>see http://old.example/x and http://old.example/y</p>" * 50
    b = backend(B.fixed(gzip.compress(page), headers=[("Content-Type", "text/html"),
                                                       ("Content-Encoding", "gzip")]))
    cfg = server({"l": 'upstream = "u"\nplugins = ["c", "sf"]'},
                 '[plugins.c]\ncategory = "compression"\n'
                 '[plugins.sf]\ncategory = "sub_filter"\nonce = false\n'
                 'filters = [["http://old.example", "https://new.example"]]\n' + upstream())
    w = weir_toml(cfg, B=b)
    want = page.replace(b"http://old.example", b"https://new.example")
    r = B.get(w.port, "/", headers=[("Accept-Encoding", "gzip")])
    assert r.headers.get("content-encoding") == "gzip" and gzip.decompress(r.body) == want
    r = B.get(w.port, "/", headers=[("Accept-Encoding", "identity")])
    assert r.headers.get("content-encoding") is None and r.body == want


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    return U.make_cert(tmp_path_factory.mktemp("compcert"))


@pytest.mark.parametrize("mode", ["h2c", "h2-tls", "h1-tls"])
def test_over_h2_and_tls(weir_toml, backend, cert, mode):
    b = backend(text_backend())
    tls = mode != "h2c"
    text = comp_cfg(ALL)
    if tls:
        text = ('[certificates.t]\ncert = "%s"\nkey = "%s"\n' % cert) + text.replace(
            'locations = ["l"]', 'locations = ["l"]\ncertificates = ["t"]')
    else:
        text = text.replace('locations = ["l"]', 'locations = ["l"]\nh2c = true')
    w = weir_toml(text, B=b)
    url = "%s://127.0.0.1:%d/" % ("https" if tls else "http", w.port)
    for enc in ("gzip", "br", "zstd"):
        args = ["curl", "-sS", "-k", "--max-time", "20", "-D", "-", "-o", "-",
                "-H", "Accept-Encoding: " + enc]
        args += ["--http1.1"] if mode == "h1-tls" else (
            ["--http2"] if tls else ["--http2-prior-knowledge"])
        r = subprocess.run(args + [url], capture_output=True, timeout=30)
        assert r.returncode == 0, r.stderr
        head, _, body = r.stdout.partition(b"\r\n\r\n")
        assert (b"HTTP/2 200" if mode != "h1-tls" else b"HTTP/1.1 200") in head, head
        assert b"content-encoding: " + enc.encode() in head.lower(), head
        assert decode(enc, body) == TEXT


def test_config_errors(tmp_path):
    from test_plugins import check
    for keys, msg in [('gzip_level = 10\n', "'gzip_level'"),
                      ('encodings = "gzip, lzma"\n', "'lzma' is not gzip, br or zstd"),
                      ('mode = "sideways"\n', "'mode' in [plugins.c]"),
                      ('min_length = "big"\n', "'min_length'")]:
        r = check(tmp_path, comp_cfg(keys))
        assert r.returncode != 0 and msg in r.stderr, (keys, r.stderr)



def test_nghttp_streams_compressed_with_small_windows(weir_toml, backend):
    """Compressed 1 MiB text over h2c through 16 KiB windows: one stream
    decodes to the backend's body; ten at once each get the same length."""
    if not shutil.which("nghttp"):
        pytest.skip("nghttp not installed")
    body = TEXT * 40
    b = backend(text_backend(body))
    text = comp_cfg(ALL).replace('locations = ["l"]', 'locations = ["l"]\nh2c = true')
    w = weir_toml(text, B=b)
    url = "http://127.0.0.1:%d/" % w.port
    for enc in ("gzip", "zstd"):
        r = subprocess.run(["nghttp", "-w", "14", "-W", "14", "-H", "accept-encoding: " + enc,
                            url], capture_output=True, timeout=60)
        # (nghttp inflates gzip itself.)
        assert r.returncode == 0 and (r.stdout if enc == "gzip" else decode(enc, r.stdout)) == body
        got, statuses = U.nghttp_streams(url, 10, ["accept-encoding: " + enc])
        # Each stream is its own encoder, flushed where its source paused:
        # where the backend paused, and where the stream waited for the
        # client's WINDOW_UPDATE, which depends on how the ten streams
        # interleave (one run: 889 to 936 bytes, ten flushes apart). The
        # bound is a few dozen flushes, not one per piece (64 windows of
        # a megabyte, each flush 5 to 9 bytes).
        sizes = list(got.values())
        assert statuses == ["200"] * 10 and len(sizes) == 10, got
        assert 0 < min(sizes) and max(sizes) < len(body) / 2
        assert max(sizes) - min(sizes) < min(sizes) / 4, sizes


def test_304_and_head_match_the_compressed_200(weir_toml, backend):
    """A cache revalidating or refreshing a gzipped 200 sees its validator
    again: W/"v1" on the 200, the HEAD and the 304."""
    def handler(conn, req):
        if req.headers.get("if-none-match"):
            conn.send(B.response_head(304, [("ETag", '"v1"')]))
            return
        hs = [("Content-Type", "text/plain"), ("ETag", '"v1"'),
              ("Content-Length", str(len(TEXT)))]
        conn.send(B.response_head(200, hs) + (b"" if req.method == "HEAD" else TEXT))
    b = backend(handler)
    w = weir_toml(comp_cfg(), B=b)
    ae = [("Accept-Encoding", "gzip")]
    assert B.get(w.port, "/", headers=ae).headers.get("etag") == 'W/"v1"'
    assert B.get(w.port, "/", headers=ae, method="HEAD").headers.get("etag") == 'W/"v1"'
    r = B.get(w.port, "/", headers=ae + [("If-None-Match", 'W/"v1"')])
    assert r.status == 304 and r.headers.get("etag") == 'W/"v1"'
    assert "accept-encoding" in r.headers.get("vary", "").lower()
    # Two Accept-Encoding lines are one list.
    r = B.request(w.port, b"GET / HTTP/1.1\r\nHost: x\r\nAccept-Encoding: br\r\n"
                          b"Accept-Encoding: gzip\r\nConnection: close\r\n\r\n")
    assert r.headers.get("content-encoding") == "gzip" and gzip.decompress(r.body) == TEXT


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_the_head_goes_out_before_a_quiet_body(weir_toml, backend, compress):
    """A backend that sends its head and then nothing for a while (a
    stream that starts quiet): the client has the head at once, filtered
    or not, not when the first byte of body comes."""
    def handler(conn, req):
        conn.send(B.response_head(200, [("Content-Type", "text/event-stream"),
                                        ("Transfer-Encoding", "chunked")]))
        time.sleep(1.5)
        conn.send(b"6\r\ndata:1\r\n0\r\n\r\n")
    b = backend(handler)
    w = weir_toml(comp_cfg('types = ["text/event-stream"]\n'), B=b)
    s = B.connect(w.port, timeout=10)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n%s\r\n"
              % (b"Accept-Encoding: gzip\r\n" if compress else b""))
    s.settimeout(1.0)
    head = s.recv(4096)
    assert head.startswith(b"HTTP/1.1 200"), head
    s.close()
