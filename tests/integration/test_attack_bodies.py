"""Adversarial review of generated bodies, compression, directory and
sub_filter: each test is a finding of the review (its docstring says what
was wrong), asserting the behaviour that holds since it was fixed."""
import gzip
import os
import time

import pytest

import backends as B
from test_plugins import server, upstream


def dir_cfg(root, keys="", plugins='["d"]', extra="", loc_extra="", srv_extra=""):
    text = server({"l": "plugins = %s\n%s" % (plugins, loc_extra)},
                  '[plugins.d]\ncategory = "directory"\npath = "%s"\n%s' % (root, keys) + extra)
    if srv_extra:
        text = text.replace("locations = [", srv_extra + "\nlocations = [", 1)
    return text


def raw(port, target, headers=(), method="GET"):
    hs = "".join("%s: %s\r\n" % kv for kv in headers)
    return B.request(port, ("%s %s HTTP/1.1\r\nHost: x\r\n%sConnection: close\r\n\r\n"
                            % (method, target, hs)).encode("latin-1"), method)


# ---- sub_filter -----------------------------------------------------------

def test_sub_filter_regex_anchors_see_piece_starts_as_body_start(weir_toml, tmp_path):
    """FINDING: a regex is run on each piece (plus the held tail) as its own
    subject, so ^ and \\b (and lookbehinds) treat the start of every piece as
    the start of the body. With chunk_size = 4KB the piece boundary is at
    byte 4096: "x|foo" matches \\bfoo and "...foo|bar" matches ^b.
    sub_filter.c substitute(): pcre2_match(in, len, i, ...) with in = held
    tail + piece, no preceding context kept (PCRE2 asks to keep
    PCRE2_INFO_MAXLOOKBEHIND bytes, and ^ must not match after the first
    piece)."""
    root = tmp_path / "site"
    root.mkdir()
    (root / "a.html").write_bytes(b"a" * 4095 + b"x" + b"foo end\n")
    (root / "b.html").write_bytes(b"b" * 4093 + b"foo" + b"bar\n")
    w = weir_toml(dir_cfg(root, 'chunk_size = "4KB"\n', plugins='["d", "sf"]',
                          extra='[plugins.sf]\ncategory = "sub_filter"\n'
                                "filters = [['\\bfoo', \"FOO\", \"rg\"], ['^b', \"B\", \"rg\"]]\n"))
    a = raw(w.port, "/a.html").body
    assert a.endswith(b"xfoo end\n"), a[-20:]  # got ...xFOO end
    b = raw(w.port, "/b.html").body
    assert b.startswith(b"Bbbb")
    assert b.endswith(b"foobar\n"), b[-20:]  # got ...fooBar


def test_range_bypasses_sub_filter_and_etag_stays_strong(weir_toml, tmp_path):
    """FINDING: sub_filter leaves 206 alone and keeps ETag and Accept-Ranges,
    so a filtered file advertises byte ranges, and `Range: bytes=0-` returns
    the UNFILTERED bytes with the same strong ETag as the filtered 200 (a
    filter used to redact or rewrite is bypassed; a client assembling
    ranges mixes two different bodies under one strong validator). nginx
    clears ETag/Accept-Ranges in sub_filter and never serves a range of
    the unfiltered file. sub_filter.c sub_response (status == 206 skipped,
    no etag/accept-ranges handling) with directory.c serve_file."""
    root = tmp_path / "site"
    root.mkdir()
    (root / "r.html").write_bytes(b"<p>secret-token-123 and more</p>\n")
    w = weir_toml(dir_cfg(root, plugins='["d", "sf"]',
                          extra='[plugins.sf]\ncategory = "sub_filter"\n'
                                "filters = [['secret-token-\\d+', \"[redacted]\", \"rg\"]]\n"))
    full = raw(w.port, "/r.html")
    assert b"[redacted]" in full.body
    part = raw(w.port, "/r.html", headers=[("Range", "bytes=0-")])
    assert b"secret-token" not in part.body, (part.status, part.body)
    etag = full.headers.get("etag")
    assert etag is None or etag.startswith("W/"), etag
    assert full.headers.get("accept-ranges") is None


def test_sub_filter_regex_rescans_make_pieces_quadratic(weir_toml, backend):
    """FINDING (CPU DoS, blocks the worker): a regex rule whose match lies
    ahead is searched again from i after every earlier replacement by
    another rule (substitute() caches only literal results), so a piece
    with N literal hits before the regex hit costs O(N * piece). With the
    ordinary regex (?:a|b|1)2345zzz, 1 MiB of "abab..." took 147 s in the
    sanitizer build, the worker serving nothing else meanwhile. Here 64
    KiB; it should take milliseconds."""
    piece = b"ab" * 8000 + b"12345zzz"  # 8000 literal hits, then the regex hit
    body = piece * 4
    b = backend(B.fixed(body, headers=[("Content-Type", "text/html")]))
    w = weir_toml(server({"l": 'upstream = "u"\nplugins = ["sf"]\n'},
                         '[plugins.sf]\ncategory = "sub_filter"\n'
                         "filters = [[\"ab\", \"X\", \"g\"], ['(?:a|b|1)2345zzz', \"N\", \"rg\"]]\n"
                         + upstream()), B=b)
    t = time.monotonic()
    r = B.get(w.port, "/", timeout=120)
    took = time.monotonic() - t
    assert r.status == 200 and r.body == (b"X" * 8000 + b"N") * 4
    assert took < 1.0, "64 KiB through sub_filter took %.1f s" % took


# ---- directory ------------------------------------------------------------

def test_listing_leaks_size_and_mtime_of_files_outside_the_folder(weir_toml, tmp_path):
    """FINDING: the listing stats entries following symlinks without the
    RESOLVE_BENEATH rule the open uses, so a symlink to /etc/shadow is
    listed with /etc/shadow's size and mtime although opening it is 403
    (files_index.c read_entries: fstatat(dirfd, name, &st, 0)). An upload
    folder with autoindex lets a user probe any path's existence, size and
    mtime."""
    root = tmp_path / "site"
    root.mkdir()
    os.symlink("/etc/passwd", root / "out")
    w = weir_toml(dir_cfg(root, "autoindex = true\n"))
    assert raw(w.port, "/out").status == 403
    body = raw(w.port, "/").body
    size = str(os.stat("/etc/passwd").st_size).encode()
    assert b'href="out"' not in body or b"<td>%s</td>" % size not in body, body


def test_directory_redirect_uses_the_rewritten_path(weir_toml, tmp_path):
    """FINDING: the 301 for a directory without its slash is built from the
    rewritten target (weir_session_upstream_target), not the client's
    path: /static/sub -> Location: /sub/, a URL the client never had and
    that this location does not serve (directory.c dir_request, `loc` from
    path/target). nginx redirects to the request's own URI + '/'."""
    root = tmp_path / "site"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "index.html").write_bytes(b"sub\n")
    w = weir_toml(dir_cfg(root, loc_extra='path = "/static"\nrewrite = "^/static/(.*) /$1"\n'))
    assert raw(w.port, "/static/sub/").body == b"sub\n"
    r = raw(w.port, "/static/sub?q=1")
    assert r.status == 301
    assert r.headers.get("location") == "/static/sub/?q=1", r.headers.get("location")


def test_directory_redirect_is_protocol_relative_without_merge_slashes(weir_toml, tmp_path):
    """FINDING: with merge_slashes = false, GET //sub (sub a directory)
    answers Location: //sub/ which a browser reads as http://sub/ (another
    host: an open redirect to any host named like a folder of the site).
    directory.c dir_request: the Location copies the path as is; it should
    collapse the leading slashes (or make the Location absolute)."""
    root = tmp_path / "site"
    (root / "sub").mkdir(parents=True)
    w = weir_toml(dir_cfg(root, srv_extra="merge_slashes = false"))
    r = raw(w.port, "//sub")
    assert r.status == 301
    assert not r.headers.get("location").startswith("//"), r.headers.get("location")


def test_download_filename_is_the_percent_encoded_url(weir_toml, tmp_path):
    """FINDING (functional): Content-Disposition's filename is built from the
    URL path before percent-decoding, '%' turned into '_': "a b.txt" is
    offered as "a_20b.txt", "été.txt" as "_C3_A9t_C3_A9.txt" (directory.c
    validators(), name = base_name(path) of the raw target). It should be
    the decoded name (with filename* for non-ASCII, RFC 6266)."""
    root = tmp_path / "site"
    root.mkdir()
    (root / "a b.txt").write_bytes(b"x")
    w = weir_toml(dir_cfg(root, "download = true\n"))
    r = raw(w.port, "/a%20b.txt")
    assert r.status == 200
    assert r.headers.get("content-disposition") == 'attachment; filename="a b.txt"', \
        r.headers.get("content-disposition")


# ---- compression ----------------------------------------------------------

def test_two_content_encoding_fields_get_encoded_twice(weir_toml, backend):
    """FINDING: comp_response reads only the first Content-Encoding field;
    "Content-Encoding: identity" followed by "Content-Encoding: gzip" is
    taken as not encoded, compressed again, and weir_headers_set leaves
    one "gzip": the client decodes once and gets gzip bytes. Same in
    sub_filter (it would filter the compressed bytes). compression.c
    comp_response: `ce = weir_headers_get(h, "content-encoding")`."""
    text = b"hello compressed world\n" * 200
    b = backend(B.fixed(gzip.compress(text), headers=[
        ("Content-Type", "text/plain"), ("Content-Encoding", "identity"),
        ("Content-Encoding", "gzip")]))
    w = weir_toml(server({"l": 'upstream = "u"\nplugins = ["c"]\n'},
                         '[plugins.c]\ncategory = "compression"\n' + upstream()), B=b)
    r = B.get(w.port, "/", headers=[("Accept-Encoding", "gzip")])
    assert r.status == 200
    assert gzip.decompress(r.body) == text


def test_decompressed_response_without_vary(weir_toml, backend):
    """FINDING: with decompression = true a gzip body of a type outside
    `types` (application/octet-stream here) is decoded for clients without
    gzip and passed encoded to the others, but no Vary: Accept-Encoding is
    added (add_vary only runs when `eligible`): a shared cache then serves
    one client's variant to the other. compression.c comp_response."""
    data = bytes(range(256)) * 100
    b = backend(B.fixed(gzip.compress(data), headers=[
        ("Content-Type", "application/octet-stream"), ("Content-Encoding", "gzip")]))
    w = weir_toml(server({"l": 'upstream = "u"\nplugins = ["c"]\n'},
                         '[plugins.c]\ncategory = "compression"\ndecompression = true\n'
                         + upstream()), B=b)
    plain = B.get(w.port, "/")
    assert plain.body == data and plain.headers.get("content-encoding") is None
    assert "accept-encoding" in (plain.headers.get("vary") or "").lower(), plain.headers


def test_sub_filter_output_of_one_piece_is_unbounded(weir_toml, backend):
    """FINDING (memory): sub_filter writes a whole piece's replacement into
    one buffer (emit/reserve grow x->out without bound), and a compressed
    backend piece decodes to up to 1 MiB at once (codec cap). A 1 KB gzip
    body of 1,000,000 'a's with the rule ["a", 100 bytes, "g"] makes a
    100 MB output in one call: peak RSS rose by 66 MiB for one request
    (docs: "Memory is about two pieces per response"). Fixed: a piece's
    output may be at most 4 MiB longer than its input, and the response is
    cut past it."""
    body = gzip.compress(b"a" * 1000000)
    b = backend(B.fixed(body, headers=[("Content-Type", "text/html"),
                                       ("Content-Encoding", "gzip")]))
    w = weir_toml(server({"l": 'upstream = "u"\nplugins = ["sf"]\n'},
                         '[plugins.sf]\ncategory = "sub_filter"\n'
                         'filters = [["a", "%s", "g"]]\n' % ("b" * 100) + upstream()), B=b)
    try:
        B.get(w.port, "/favicon")  # warm up
    except ConnectionResetError:
        pass
    before = peak_kib(w)
    s = B.connect(w.port)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        s.recv(100)  # the head and the first bytes, then stop reading
    except ConnectionResetError:
        pass  # cut: a piece's output past its cap (4 MiB more than its input)
    time.sleep(1.0)
    grown = peak_kib(w) - before
    s.close()
    assert grown < 20 * 1024, "one response grew RSS by %d MiB" % (grown // 1024)


def peak_kib(w):
    with open("/proc/%d/status" % w.pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def test_304_repeats_the_etag_of_the_compressed_200(weir_toml, tmp_path):
    """FINDING (low): the compressed 200 carries ETag W/"x", but a
    revalidation with If-None-Match: W/"x" gets a 304 with the strong
    ETag "x" (compression skips 304s, so it never weakens it). RFC 9110
    15.4.5: a 304 sends the ETag the 200 would have; a cache holding the
    W/"x" response cannot match the 304's strong "x" (RFC 9111 4.3.4) and
    keeps the entry stale. compression.c comp_response (status == 304
    returns before weaken_etag)."""
    root = tmp_path / "site"
    root.mkdir()
    (root / "t.txt").write_bytes(b"compress me please\n" * 200)
    w = weir_toml(dir_cfg(root, plugins='["d", "c"]',
                          extra='[plugins.c]\ncategory = "compression"\n'))
    ae = [("Accept-Encoding", "gzip")]
    r = raw(w.port, "/t.txt", headers=ae)
    assert r.headers.get("content-encoding") == "gzip"
    etag = r.headers.get("etag")
    assert etag.startswith("W/")
    n = raw(w.port, "/t.txt", headers=ae + [("If-None-Match", etag)])
    assert n.status == 304
    assert n.headers.get("etag") == etag, n.headers.get("etag")
