"""The directory plugin (static files): index and listings, MIME types,
validators and conditional requests, ranges (single, multipart, 416,
If-Range), precompressed siblings, traversal attempts, and large files with
bounded memory, over HTTP/1.1, HTTP/2 and TLS; and a differential check of
the same requests against nginx serving the same folder."""
import gzip
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import time

import brotli
import pytest

import backends as B
import h2util as U
from conftest import free_port, require_binary
from test_plugins import check, server

CSS = b"body { color: red; }\n" * 100


@pytest.fixture
def site(tmp_path):
    root = tmp_path / "site"
    root.mkdir()
    (root / "index.html").write_bytes(b"<h1>home</h1>\n")
    (root / "style.css").write_bytes(CSS)
    (root / "style.css.gz").write_bytes(gzip.compress(CSS))
    (root / "style.css.br").write_bytes(brotli.compress(CSS))
    (root / "data.bin").write_bytes(bytes(range(256)) * 40)  # 10240 bytes
    (root / "noext").write_bytes(b"plain")
    (root / ".secret").write_bytes(b"hidden")
    (root / "a file & <b>.txt").write_bytes(b"odd name")
    sub = root / "sub"
    sub.mkdir()
    (sub / "page.html").write_bytes(b"<p>sub</p>")
    (sub / ".hidden").write_bytes(b"no")
    empty = root / "empty"
    empty.mkdir()
    os.symlink("style.css", root / "link_in")
    os.symlink("/etc/passwd", root / "link_out")
    os.symlink("/etc", root / "dir_out")
    os.mkfifo(root / "fifo")
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"outside")
    return root


def dir_cfg(root, keys="", plugins='["d"]', extra=""):
    return server({"l": "plugins = %s" % plugins},
                  '[plugins.d]\ncategory = "directory"\npath = "%s"\n%s' % (root, keys) + extra)


def raw(port, target, headers=(), method="GET"):
    hs = "".join("%s: %s\r\n" % kv for kv in headers)
    return B.request(port, ("%s %s HTTP/1.1\r\nHost: x\r\n%sConnection: close\r\n\r\n"
                            % (method, target, hs)).encode("latin-1"), method)


def test_files_index_types_and_headers(weir_toml, site):
    w = weir_toml(dir_cfg(site, 'charset = "utf-8"\nmax_age = "1h"\n'
                                'headers = ["X-Served-By: weir"]\n'))
    r = raw(w.port, "/")
    assert r.status == 200 and r.body == b"<h1>home</h1>\n"
    assert r.headers.get("content-type") == "text/html; charset=utf-8"
    assert r.headers.get("cache-control") is None  # not for text/html
    r = raw(w.port, "/style.css")
    assert r.status == 200 and r.body == CSS
    assert r.headers.get("content-type") == "text/css; charset=utf-8"
    assert r.headers.get("cache-control") == "max-age=3600"
    assert r.headers.get("x-served-by") == "weir"
    assert r.headers.get("accept-ranges") == "bytes"
    assert re.fullmatch(r'"[0-9a-f]+-[0-9a-f]+"', r.headers.get("etag"))
    assert r.headers.get("last-modified").endswith(" GMT")
    assert raw(w.port, "/noext").headers.get("content-type") == "application/octet-stream"
    assert raw(w.port, "/data.bin").body == bytes(range(256)) * 40
    assert raw(w.port, "/sub/page.html").body == b"<p>sub</p>"
    assert raw(w.port, "/a%20file%20%26%20%3Cb%3E.txt").body == b"odd name"
    assert raw(w.port, "/link_in").body == CSS


def test_directory_without_slash_redirects(weir_toml, site):
    w = weir_toml(dir_cfg(site))
    r = raw(w.port, "/sub?x=1")
    assert r.status == 301 and r.headers.get("location") == "/sub/?x=1"


def test_directory_without_index_is_403_or_a_listing(weir_toml, site):
    w = weir_toml(dir_cfg(site))
    assert raw(w.port, "/sub/").status == 403
    w2 = weir_toml(dir_cfg(site, "autoindex = true\n"))
    r = raw(w2.port, "/sub/")
    assert r.status == 200 and r.headers.get("content-type").startswith("text/html")
    assert b'href="page.html"' in r.body and b".hidden" not in r.body
    assert b'href="../"' in r.body
    # The index wins over the listing; an odd name is escaped in HTML.
    assert raw(w2.port, "/").body == b"<h1>home</h1>\n"
    w3 = weir_toml(dir_cfg(site, 'autoindex = true\nindex = ""\n'))
    r = raw(w3.port, "/", headers=[("Accept", "application/json")])
    assert r.headers.get("content-type") == "application/json"
    names = {e["name"]: e for e in json.loads(r.body)}
    assert names["sub"]["type"] == "directory" and names["style.css"]["size"] == len(CSS)
    assert ".secret" not in names
    body = raw(w3.port, "/").body
    assert b"a file &amp; &lt;b&gt;.txt" in body and b"<b>.txt" not in body
    assert b'href="a%20file%20%26%20%3Cb%3E.txt"' in body


# 400: the request gate refuses the path before any plugin sees it; 404
# and 403: the plugin's own checks (files.c); hidden names are 403, as
# nginx's "location ~ /\. { deny all; }" that most sites add.
@pytest.mark.parametrize("target,status", [
    ("/%2e%2e/outside.txt", (400, 404)), ("/%2E%2E/outside.txt", (400, 404)),
    ("/..%2foutside.txt", (400, 404)), ("/sub%2fpage.html", (400, 404)),
    ("/sub%5cpage.html", (400, 404)), ("/sub\\page.html", (400, 404)),
    ("/%00", (400, 404)), ("/style.css%00.txt", (400, 404)),
    ("/.secret", (403,)), ("/sub/.hidden", (403,)), ("/%2esecret", (400, 403)),
    ("/link_out", (403,)), ("/dir_out/passwd", (403,)), ("/fifo", (403,)), ("/missing", (404,)),
    ("/../outside.txt", (400, 404)), ("/sub/../../outside.txt", (400, 404)),
])
def test_nothing_leaves_the_folder(weir_toml, site, target, status):
    w = weir_toml(dir_cfg(site))
    r = raw(w.port, target)
    assert r.status in status, (target, r.status, r.body)
    assert b"outside" not in r.body and b"root:" not in r.body
    assert b"/tmp" not in r.body and b"No such" not in r.body


def test_follow_symlinks_and_hidden(weir_toml, site):
    w = weir_toml(dir_cfg(site, "follow_symlinks = true\nhidden = true\n"))
    assert raw(w.port, "/link_out").body.startswith(b"root:")
    assert raw(w.port, "/.secret").body == b"hidden"
    assert raw(w.port, "/fifo").status == 403  # never a FIFO, whatever the options


def test_method_not_allowed(weir_toml, site):
    w = weir_toml(dir_cfg(site))
    r = raw(w.port, "/style.css", method="POST")
    assert r.status == 405 and r.headers.get("allow") == "GET, HEAD"


def test_head(weir_toml, site):
    w = weir_toml(dir_cfg(site))
    r = raw(w.port, "/style.css", method="HEAD")
    assert r.status == 200 and r.headers.get("content-length") == str(len(CSS)) and r.body == b""


def test_conditionals(weir_toml, site):
    w = weir_toml(dir_cfg(site))
    r = raw(w.port, "/style.css")
    etag, lm = r.headers.get("etag"), r.headers.get("last-modified")
    r = raw(w.port, "/style.css", [("If-None-Match", etag)])
    assert r.status == 304 and r.body == b"" and r.headers.get("etag") == etag
    assert raw(w.port, "/style.css", [("If-None-Match", '"x", W/' + etag)]).status == 304
    assert raw(w.port, "/style.css", [("If-None-Match", "*")]).status == 304
    assert raw(w.port, "/style.css", [("If-None-Match", '"other"')]).status == 200
    assert raw(w.port, "/style.css", [("If-Modified-Since", lm)]).status == 304
    assert raw(w.port, "/style.css", [("If-Modified-Since", "Thu, 01 Jan 1970 00:00:00 GMT")]
               ).status == 200
    # If-None-Match decides when both are there.
    assert raw(w.port, "/style.css", [("If-None-Match", '"other"'), ("If-Modified-Since", lm)]
               ).status == 200
    assert raw(w.port, "/style.css", [("If-Match", '"other"')]).status == 412
    assert raw(w.port, "/style.css", [("If-Match", etag)]).status == 200
    assert raw(w.port, "/style.css", [("If-Unmodified-Since", "Thu, 01 Jan 1970 00:00:00 GMT")]
               ).status == 412
    assert raw(w.port, "/style.css", [("If-Modified-Since", "garbage")]).status == 200


def test_ranges(weir_toml, site):
    w = weir_toml(dir_cfg(site))
    data = bytes(range(256)) * 40
    r = raw(w.port, "/data.bin", [("Range", "bytes=10-19")])
    assert r.status == 206 and r.body == data[10:20]
    assert r.headers.get("content-range") == "bytes 10-19/10240"
    r = raw(w.port, "/data.bin", [("Range", "bytes=-5")])
    assert r.status == 206 and r.body == data[-5:]
    r = raw(w.port, "/data.bin", [("Range", "bytes=10000-")])
    assert r.status == 206 and r.body == data[10000:]
    r = raw(w.port, "/data.bin", [("Range", "bytes=20000-")])
    assert r.status == 416 and r.headers.get("content-range") == "bytes */10240"
    assert raw(w.port, "/data.bin", [("Range", "items=0-1")]).status == 200
    assert raw(w.port, "/data.bin", [("Range", "bytes=5-1")]).status == 200
    # If-Range: a matching validator gets the range, anything else the whole.
    etag = raw(w.port, "/data.bin").headers.get("etag")
    assert raw(w.port, "/data.bin", [("Range", "bytes=0-0"), ("If-Range", etag)]).status == 206
    assert raw(w.port, "/data.bin", [("Range", "bytes=0-0"), ("If-Range", '"old"')]
               ).status == 200
    # HEAD with a Range: no body either way.
    r = raw(w.port, "/data.bin", [("Range", "bytes=0-0")], method="HEAD")
    assert r.body == b""


def test_multipart_ranges(weir_toml, site):
    w = weir_toml(dir_cfg(site))
    data = bytes(range(256)) * 40
    r = raw(w.port, "/data.bin", [("Range", "bytes=0-99, 1000-1199, -300")])
    assert r.status == 206
    ct = r.headers.get("content-type")
    m = re.fullmatch(r"multipart/byteranges; boundary=(\S+)", ct)
    assert m, ct
    assert r.headers.get("content-length") == str(len(r.body))
    parts = r.body.split(b"--" + m.group(1).encode())
    assert parts[-1].strip() == b"--"
    bodies = []
    for p in parts[1:-1]:
        head, _, body = p.partition(b"\r\n\r\n")
        assert b"Content-Range: bytes " in head
        bodies.append(body[:-2] if body.endswith(b"\r\n") else body)
    assert bodies == [data[0:100], data[1000:1200], data[-300:]]
    # Many tiny ranges (a ranges attack) get the whole file.
    many = ",".join("%d-%d" % (i * 10, i * 10) for i in range(10))
    assert raw(w.port, "/data.bin", [("Range", "bytes=" + many)]).status == 200


def test_precompressed_siblings(weir_toml, site):
    w = weir_toml(dir_cfg(site))
    r = raw(w.port, "/style.css", [("Accept-Encoding", "gzip, br")])
    assert r.headers.get("content-encoding") == "br" and brotli.decompress(r.body) == CSS
    r = raw(w.port, "/style.css", [("Accept-Encoding", "gzip")])
    assert r.headers.get("content-encoding") == "gzip" and gzip.decompress(r.body) == CSS
    r = raw(w.port, "/style.css", [("Accept-Encoding", "br;q=0, gzip;q=0")])
    assert r.headers.get("content-encoding") is None and r.body == CSS
    assert "accept-encoding" in r.headers.get("vary", "").lower()
    w2 = weir_toml(dir_cfg(site, "precompressed = false\n"))
    r = raw(w2.port, "/style.css", [("Accept-Encoding", "gzip, br")])
    assert r.headers.get("content-encoding") is None and r.body == CSS


def test_download_and_fallback(weir_toml, site):
    w = weir_toml(dir_cfg(site, 'download = true\nfallback = "/index.html"\n'))
    r = raw(w.port, "/style.css")
    assert r.headers.get("content-disposition") == 'attachment; filename="style.css"'
    r = raw(w.port, "/app/route/42")
    assert r.status == 200 and r.body == b"<h1>home</h1>\n"


def test_compression_plugin_compresses_served_files(weir_toml, site):
    cfg = dir_cfg(site, "precompressed = false\n", plugins='["d", "c"]',
                  extra='[plugins.c]\ncategory = "compression"\n')
    w = weir_toml(cfg)
    r = raw(w.port, "/style.css", [("Accept-Encoding", "gzip")])
    assert r.headers.get("content-encoding") == "gzip" and gzip.decompress(r.body) == CSS
    # A range is served as it is.
    r = raw(w.port, "/style.css", [("Accept-Encoding", "gzip"), ("Range", "bytes=0-3")])
    assert r.status == 206 and r.body == CSS[:4]


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_a_1_gib_file_with_bounded_memory(weir_toml, tmp_path):
    root = tmp_path / "big"
    root.mkdir()
    path = root / "big.bin"
    with open(path, "wb") as f:
        f.truncate(1 << 30)  # sparse: 1 GiB of zeros
    w = weir_toml(dir_cfg(root))
    before = rss_kb(w.pid)
    s = B.connect(w.port, timeout=60)
    s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    rd = B.Reader(s)
    head = b"".join(rd.read_head())
    assert b"Content-Length: %d" % (1 << 30) in head
    got, peak = len(rd.buf), 0  # what came with the head
    while got < (1 << 30):
        data = s.recv(1 << 20)
        assert data
        got += len(data)
        if got % (64 << 20) < (1 << 20):
            peak = max(peak, rss_kb(w.pid))
    s.close()
    assert peak - before < 32 * 1024, "weir grew %d KiB sending 1 GiB" % (peak - before)


def test_slow_client_and_client_abort_close_the_file(weir_toml, site, tmp_path):
    root = tmp_path / "big2"
    root.mkdir()
    (root / "f.bin").write_bytes(os.urandom(8 << 20))
    w = weir_toml(dir_cfg(root))
    fds = lambda: len(os.listdir("/proc/%d/fd" % w.pid))
    raw(w.port, "/f.bin")
    base = fds()
    for _ in range(5):
        s = B.connect(w.port)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(b"GET /f.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        B.Reader(s).read_exact(100000)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    deadline = time.monotonic() + 5
    while fds() > base and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fds() <= base


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    return U.make_cert(tmp_path_factory.mktemp("dircert"))


@pytest.mark.parametrize("mode", ["h2c", "h2-tls", "h1-tls"])
def test_over_h2_and_tls(weir_toml, site, cert, mode):
    tls = mode != "h2c"
    text = dir_cfg(site)
    if tls:
        text = ('[certificates.t]\ncert = "%s"\nkey = "%s"\n' % cert) + text.replace(
            'locations = ["l"]', 'locations = ["l"]\ncertificates = ["t"]')
    else:
        text = text.replace('locations = ["l"]', 'locations = ["l"]\nh2c = true')
    w = weir_toml(text)
    url = "%s://127.0.0.1:%d" % ("https" if tls else "http", w.port)
    flag = ["--http1.1"] if mode == "h1-tls" else (["--http2"] if tls else
                                                   ["--http2-prior-knowledge"])
    data = bytes(range(256)) * 40
    for target, hdrs, want_status, want in [
            ("/data.bin", [], 200, data),
            ("/data.bin", ["Range: bytes=5-9"], 206, data[5:10]),
            ("/style.css", ["Accept-Encoding: br"], 200, brotli.compress(CSS)),
            # multipart/byteranges: a streamed (producer) body
            ("/data.bin", ["Range: bytes=0-99,1000-1199"], 206, None)]:
        args = ["curl", "-sS", "-k", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}"]
        for h in hdrs:
            args += ["-H", h]
        r = subprocess.run(args + flag + [url + target], capture_output=True, timeout=30)
        assert r.returncode == 0, r.stderr
        body, _, code = r.stdout.rpartition(b"\n")
        assert int(code) == want_status, (target, code)
        if want is None:
            assert data[0:100] in body and data[1000:1200] in body
            assert body.rstrip().endswith(b"--")
        else:
            assert body == want, (target, code, len(body))
    # A client that reads slowly: HTTP/2 flow control (or TLS) paces the
    # file, which arrives whole.
    big = site / "big.bin"
    blob = os.urandom(4 << 20)
    big.write_bytes(blob)
    r = subprocess.run(["curl", "-sS", "-k", "--max-time", "30", "--limit-rate", "4M", "-o", "-"]
                       + flag + [url + "/big.bin"], capture_output=True, timeout=40)
    assert r.returncode == 0 and r.stdout == blob, (r.returncode, len(r.stdout))


def test_config_errors(tmp_path, site):
    for keys, msg in [("", None), ('index = "a/b"\n', "'index' in [plugins.d] must be a file name"),
                      ('fallback = "x"\n', "'fallback' in [plugins.d] must start with '/'"),
                      ('max_age = "soon"\n', "'max_age'")]:
        r = check(tmp_path, dir_cfg(site, keys))
        if msg is None:
            assert r.returncode == 0, r.stderr
        else:
            assert r.returncode != 0 and msg in r.stderr, (keys, r.stderr)
    r = check(tmp_path, dir_cfg(tmp_path / "nope"))
    assert r.returncode != 0 and "is not a folder weir can open" in r.stderr
    assert re.search(r"check\.toml:\d+: ", r.stderr)
    r = check(tmp_path, server({"l": 'plugins = ["d"]'}, '[plugins.d]\ncategory = "directory"\n'))
    assert r.returncode != 0 and "needs 'path'" in r.stderr


# ---- the same requests through nginx ----

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


@pytest.fixture
def nginx_site(site, tmp_path):
    if not os.access(NGINX, os.X_OK):
        pytest.skip("nginx not installed")
    port = free_port()
    conf = tmp_path / "nginx.conf"
    # nginx's workers drop to nobody unless told: the test's folders are
    # its own user's (0700).
    user = "user %s;" % pwd.getpwuid(os.getuid()).pw_name if os.getuid() == 0 else ""
    conf.write_text(user + """
daemon off; worker_processes 1; pid %(d)s/nginx.pid; error_log %(d)s/nginx-error.log;
events { worker_connections 64; }
http {
    access_log off; client_body_temp_path %(d)s; proxy_temp_path %(d)s;
    fastcgi_temp_path %(d)s; uwsgi_temp_path %(d)s; scgi_temp_path %(d)s;
    include /etc/nginx/mime.types; default_type application/octet-stream;
    server { listen 127.0.0.1:%(p)d; root %(r)s; disable_symlinks if_not_owner; }
}
""" % {"d": tmp_path, "p": port, "r": site})
    p = subprocess.Popen([NGINX, "-c", str(conf), "-e", str(tmp_path / "nginx-error.log")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    from conftest import wait_port
    assert wait_port(port, p)
    yield port
    p.terminate()
    p.wait(timeout=10)


@pytest.mark.parametrize("target,headers", [
    ("/style.css", []), ("/data.bin", [("Range", "bytes=10-19")]),
    ("/data.bin", [("Range", "bytes=-5")]), ("/data.bin", [("Range", "bytes=20000-")]),
    ("/data.bin", [("Range", "items=0-1")]),
    ("/data.bin", [("Range", "bytes=0-99, 1000-1199")]),
    ("/sub", []), ("/sub/page.html", []), ("/missing", []), ("/%2e%2e/outside.txt", []),
    ("/index.html", []), ("/", []),
])
def test_same_answers_as_nginx(weir_toml, site, nginx_site, target, headers):
    """Status, body and the framing-relevant fields match nginx's for the
    same folder. Where weir differs on purpose it is not listed here
    (hidden files: nginx serves them; FIFOs: nginx blocks on them; an
    invalid range such as bytes=5-1: nginx answers 416, weir ignores the
    field as RFC 9110 14.2 says and sends the whole file)."""
    w = weir_toml(dir_cfg(site))
    a, b = raw(w.port, target, headers), raw(nginx_site, target, headers)
    assert a.status == b.status, (target, a.status, b.status)
    if a.status in (200, 206):
        if "multipart" in (a.headers.get("content-type") or ""):
            # The boundaries differ; the parts do not.
            strip = lambda r: re.sub(rb"--[0-9a-zA-Z]+", b"--B", r.body)
            assert strip(a) == strip(b)
            return
        assert a.body == b.body
        for h in ("content-range", "content-length", "etag", "last-modified", "accept-ranges"):
            assert a.headers.get(h) == b.headers.get(h), (target, h, a.headers, b.headers)
    if a.status == 301:
        assert a.headers.get("location").endswith(b.headers.get("location").split(":%d" %
                                                                                 nginx_site)[-1])



def test_nghttp_many_streams_with_small_windows(weir_toml, site):
    """nghttp over h2c with 16 KiB stream and connection windows: one 4 MiB
    file whole, then ten concurrent streams of it, paced by flow control,
    each with every byte."""
    if not shutil.which("nghttp"):
        pytest.skip("nghttp not installed")
    blob = os.urandom(4 << 20)
    (site / "big.bin").write_bytes(blob)
    w = weir_toml(dir_cfg(site).replace('locations = ["l"]', 'locations = ["l"]\nh2c = true'))
    url = "http://127.0.0.1:%d/big.bin" % w.port
    r = subprocess.run(["nghttp", "-w", "14", "-W", "14", url], capture_output=True, timeout=60)
    assert r.returncode == 0 and r.stdout == blob
    got, statuses = U.nghttp_streams(url, 10)
    assert statuses == ["200"] * 10 and sorted(got.values()) == [len(blob)] * 10, got


def test_a_reload_while_files_and_ranges_go_out(weir_toml, tmp_path):
    """SIGHUP while a slow client reads an 8 MiB file (sendfile) and
    another a multipart range: both finish whole on the old snapshot, and
    the new one serves."""
    import signal
    root = tmp_path / "r"
    root.mkdir()
    blob = os.urandom(8 << 20)
    (root / "f.bin").write_bytes(blob)
    w = weir_toml(dir_cfg(root))
    a = B.connect(w.port, timeout=30)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    a.sendall(b"GET /f.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    b = B.connect(w.port, timeout=30)
    b.sendall(b"GET /f.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-99,4000000-4999999\r\n"
              b"Connection: close\r\n\r\n")
    ra, rb = B.Reader(a), B.Reader(b)
    ra.read_head()
    ra.read_exact(1 << 20)
    os.kill(w.pid, signal.SIGHUP)
    time.sleep(0.3)
    assert raw(w.port, "/f.bin", [("Range", "bytes=0-9")]).body == blob[:10]
    rest = ra.read_exact((8 << 20) - (1 << 20))
    assert rest == blob[1 << 20:]
    r = B.read_response(rb)
    assert r.status == 206 and blob[:100] in r.body and blob[4000000:5000000] in r.body
    a.close()
    b.close()
