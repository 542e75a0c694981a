"""sub_filter against nginx's (ngx_http_sub_module, Debian's nginx-light):
the same literal filters over the same backend bodies, sent in pieces that
split the patterns, through both; the client must get the same body and
the same framing-relevant fields.

Deliberate differences (asserted as weir's, not compared):
- a gzip body: nginx's sub_filter leaves it alone (no gunzip on a proxy
  by default); weir decodes, filters and sends it plain
  (test_plugins.py, test_compression.py);
- the ETag: nginx drops it (sub_filter_last_modified off), weir weakens
  it; both lose Content-Length and Accept-Ranges.
"""
import os
import pwd
import shutil
import subprocess
import time

import pytest

import backends as B
from conftest import free_port, wait_port
from test_plugins import server, upstream

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def pieces_handler(pieces, ctype="text/html"):
    def handler(conn, req):
        conn.send(B.response_head(200, [("Content-Type", ctype), ("Transfer-Encoding", "chunked"),
                                        ("ETag", '"e1"')]))
        for p in pieces:
            conn.send(b"%x\r\n%s\r\n" % (len(p), p))
            time.sleep(0.02)
        conn.send(b"0\r\n\r\n")
    return handler


@pytest.fixture
def nginx_sub(tmp_path):
    if not os.access(NGINX, os.X_OK):
        pytest.skip("nginx not installed")
    procs = []

    def start(b, filters, once, types):
        port = free_port()
        d = tmp_path / ("nginx%d" % port)
        d.mkdir()
        user = "user %s;" % pwd.getpwuid(os.getuid()).pw_name if os.getuid() == 0 else ""
        subs = "".join("sub_filter '%s' '%s';\n" % (f, t) for f, t in filters)
        (d / "nginx.conf").write_text(user + """
daemon off; worker_processes 1; pid %(d)s/nginx.pid; error_log %(d)s/error.log;
events { worker_connections 64; }
http {
    access_log off; client_body_temp_path %(d)s; proxy_temp_path %(d)s;
    fastcgi_temp_path %(d)s; uwsgi_temp_path %(d)s; scgi_temp_path %(d)s;
    server {
        listen 127.0.0.1:%(p)d;
        location / {
            proxy_pass http://%(b)s; proxy_http_version 1.1;
            proxy_set_header Connection ""; proxy_buffering off;
            %(subs)s sub_filter_once %(once)s; sub_filter_types %(types)s;
        }
    }
}
""" % {"d": d, "p": port, "b": b.addr, "subs": subs, "once": "on" if once else "off",
       "types": " ".join(types) if types else "text/html"})
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


CASES = [
    ("split", [b"<a href='http://exa", b"mple.com/x'>http://example.com</a> and http://ex",
               b"ample.com"], [("http://example.com", "https://example.com")], False, None),
    ("once", [b"old old ", b"old"], [("old", "new")], True, None),
    ("all", [b"old old ", b"ol", b"d"], [("old", "new")], False, None),
    ("two-rules", [b"abc ab", b"c bca"], [("abc", "1"), ("bc", "2")], False, None),
    ("prefix-overlap", [b"aaab", b"aab"], [("aab", "X")], False, None),
    ("case", [b"Hello HELLO hello"], [("hello", "bye")], False, None),
    ("grow", [b"x" * 3000, b"y" * 3000], [("x", "xx")], False, None),
    ("other-type", [b"old"], [("old", "new")], False, None),  # text/plain: untouched by both
    ("css", [b"url(http://a/b)"], [("http://a", "https://a")], False, ["text/css"]),
    ("empty-body", [], [("a", "b")], False, None),
]


@pytest.mark.parametrize("name,pieces,filters,once,types", CASES, ids=[c[0] for c in CASES])
def test_same_body_as_nginx(weir_toml, backend, nginx_sub, name, pieces, filters, once, types):
    ctype = "text/plain" if name == "other-type" else ("text/css" if types else "text/html")
    b = backend(pieces_handler(pieces, ctype))
    keys = "filters = [%s]\nonce = %s\nignore_case = true\n" % (
        ", ".join('["%s", "%s"]' % ft for ft in filters), "true" if once else "false")
    if types:
        keys += "types = [%s]\n" % ", ".join('"%s"' % t for t in types)
    w = weir_toml(server({"l": 'upstream = "u"\nplugins = ["sf"]'},
                         '[plugins.sf]\ncategory = "sub_filter"\n' + keys + upstream()), B=b)
    port = nginx_sub(b, filters, once, types)
    a, n = B.get(w.port, "/"), B.get(port, "/")
    assert a.status == n.status == 200
    assert a.body == n.body, (name, a.body[:200], n.body[:200])
    for h in ("content-length", "accept-ranges"):
        assert (a.headers.get(h) is None) == (n.headers.get(h) is None), (name, h)
    touched = name != "other-type"
    assert a.headers.get("etag") == ('W/"e1"' if touched else '"e1"')
