"""The admin web UI in Debian's headless Chromium, driven by playwright-core
(ui/e2e/*.mjs, one script per test; never a downloaded browser): log in,
watch live numbers, edit an upstream and see the traffic move, an invalid
value's error, rollback, drain, a phone-sized screen. Screenshots go to
build/ui-screenshots/. And what the listener sends with the page: the
security headers, no token needed for the files, every API call refused
without one.
"""
import json
import os
import shutil
import subprocess
import threading
import time

import pytest

import backends as B
from conftest import REPO, free_port, wait_for
from h2util import make_cert
from test_admin import Admin, start
from test_etcd import etcd, instances  # noqa: F401 (fixtures)

TOKEN = "t0ken-for-tests"
UI = os.path.join(REPO, "ui")
SHOTS = os.path.join(REPO, "build", "ui-screenshots")


def need_browser():
    missing = [w for w, ok in [("node", shutil.which("node")),
                               ("/usr/bin/chromium", os.path.exists("/usr/bin/chromium")),
                               ("ui/node_modules (npm ci in ui/)",
                                os.path.isdir(os.path.join(UI, "node_modules", "playwright-core")))]
               if not ok]
    if missing:
        pytest.fail("the browser tests need %s: make test installs them" % ", ".join(missing))


def browse(script, port, *args, timeout=120):
    need_browser()
    env = dict(os.environ, WEIR_URL="http://127.0.0.1:%d" % port, WEIR_TOKEN=TOKEN,
               WEIR_SHOTS=SHOTS)
    r = subprocess.run(["node", os.path.join(UI, "e2e", script)] + [str(a) for a in args],
                       cwd=UI, env=env, capture_output=True, text=True, timeout=timeout)
    lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
    assert lines, "no result from %s (exit %d): %s" % (script, r.returncode, r.stderr[-3000:])
    out = json.loads(lines[-1])
    assert "error" not in out, out["error"]
    seen = out["seen"]
    # Nothing but weir itself is asked (no CDN, no fonts), the page breaks
    # no rule of its own Content-Security-Policy, and throws nothing.
    assert seen["outside"] == [], seen
    assert seen["violations"] == [], seen
    assert seen["errors"] == [], seen
    # The only refusals: the login's check of a wrong token, the fleet of
    # an instance that is not in one.
    assert set(seen["failed"]) <= {"401 /api/status", "404 /api/fleet"}, seen
    return out


class Site:
    def __init__(self, backend, start_proc, tmp_path):
        self.a = backend(B.fixed(b"a\n"))
        self.b = backend(B.fixed(b"b\n"))
        self.port, self.aport = free_port(), free_port()
        cert, key = make_cert(tmp_path)
        text = ('[admin]\naddr = "127.0.0.1:%d"\ntoken = "%s"\n\n'
                '[certificates.site]\ncert = "%s"\nkey = "%s"\n\n'
                '[servers.web]\naddr = "127.0.0.1:%d"\nlocations = ["site"]\n\n'
                '[servers.tls]\naddr = "127.0.0.1:%d"\nlocations = ["site"]\n'
                'certificates = ["site"]\n\n'
                '[locations.site]\nupstream = "u"\n\n'
                '# the backends\n[upstreams.u]\naddrs = ["%s"]\n'
                % (self.aport, TOKEN, cert, key, self.port, free_port(), self.a.addr))
        self.path, self.w = start(start_proc, tmp_path, text, self.port, self.aport)
        self.admin = Admin(self.aport, TOKEN)
        self.stop = threading.Event()
        self.got = {}

    def traffic(self):
        """Keeps requests going until stop; counts the bodies."""
        def loop():
            while not self.stop.is_set():
                try:
                    body = B.get(self.port, "/").body.decode()
                    self.got[body] = self.got.get(body, 0) + 1
                except OSError:
                    pass
                time.sleep(0.02)
        t = threading.Thread(target=loop, daemon=True)
        t.start()
        return t

    def served_by(self, n=20):
        bodies = [B.get(self.port, "/").body for _ in range(n)]
        return set(bodies)


@pytest.fixture
def site(backend, start_proc, tmp_path):
    s = Site(backend, start_proc, tmp_path)
    yield s
    s.stop.set()


def test_log_in_and_watch_the_traffic(site):
    site.traffic()
    out = browse("login.mjs", site.aport)
    assert out["refused"] == "That token is not accepted." and out["stored"] is None, out
    assert out["rate"] > 0 and out["backends"] == 1, out
    # The certificate (two days left: shown as near its end).
    import re
    [(name, left, cls)] = out["certs"]
    assert name == "site" and re.match(r"^4[78] h$", left) and cls == "bad", out
    assert out["cookies"] == 0 and out["token"] == TOKEN, out  # session storage, no cookie


def test_edit_an_upstream_and_see_the_traffic_move(site):
    assert site.served_by() == {b"a\n"}
    before = site.path.read_text()
    out = browse("edit_upstream.mjs", site.aport, "u", site.b.addr)
    assert out["before"] == site.a.addr, out
    assert "connection_timeout" in out["fieldError"] and "must be a duration" in \
        out["fieldError"], out
    assert "changed: upstreams.u" in out["changed"], out
    assert "+ addrs = [\"%s\"]" % site.b.addr in out["diff"], out
    assert out["applied"].startswith("applied and reloaded"), out
    assert wait_for(lambda: site.served_by() == {b"b\n"}, 10)
    # The rest of the file is as it was, comments included.
    after = site.path.read_text()
    assert "# the backends\n" in after and after.replace(site.b.addr, site.a.addr) == before


def test_roll_back_from_the_history(site):
    r = site.admin.call("PUT", "/api/config/file",
                        {"text": site.path.read_text().replace(site.a.addr, site.b.addr)})
    assert r.status == 200, r.json
    assert wait_for(lambda: site.served_by() == {b"b\n"}, 10)
    out = browse("rollback.mjs", site.aport)
    assert out["actions"][0].startswith("apply") and out["actions"][-1].startswith("start"), out
    assert "rolled back to entry %d" % out["start"] in out["message"], out
    assert wait_for(lambda: site.served_by() == {b"a\n"}, 10)
    top = site.admin.call("GET", "/api/config/history").json["entries"][0]
    assert top["action"] == "rollback" and top["rollback_of"] == out["start"]


def test_drain_a_backend(site):
    r = site.admin.call("POST", "/api/upstreams/u/backends", {"addr": site.b.addr})
    assert r.status == 200, r.json
    assert wait_for(lambda: site.served_by() == {b"a\n", b"b\n"}, 10)
    out = browse("drain.mjs", site.aport, "u", site.a.addr)
    assert out["message"] == "drained " + site.a.addr and "draining" in out["state"], out
    assert site.served_by() == {b"b\n"}
    assert site.path.read_text().count(site.a.addr) == 1  # runtime state: no reload, no write


def test_a_phone_sized_screen(site):
    site.traffic()
    out = browse("phone.mjs", site.aport)
    for page, (scroll, inner) in out["widths"].items():
        assert scroll <= inner, (page, out["widths"])


def test_the_page_headers_and_the_token(site):
    import http.client

    def get(path, method="GET", headers=None):
        c = http.client.HTTPConnection("127.0.0.1", site.aport, timeout=10)
        c.request(method, path, headers=headers or {})
        r = c.getresponse()
        return r, r.read()

    r, body = get("/")
    assert r.status == 200 and b'<div id="app">' in body
    assert r.getheader("Content-Type") == "text/html; charset=utf-8"
    assert r.getheader("Cache-Control") == "no-cache"
    csp = r.getheader("Content-Security-Policy")
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp and "unsafe" not in csp
    assert r.getheader("X-Frame-Options") == "DENY"
    assert r.getheader("X-Content-Type-Options") == "nosniff"
    assert r.getheader("Referrer-Policy") == "no-referrer"
    assert b"<script>" not in body and b"style=" not in body  # nothing inline
    js = [l.split('src="')[1].split('"')[0] for l in body.decode().splitlines() if "src=" in l]
    assert js and js[0].startswith("/assets/")
    r, _ = get(js[0])
    assert r.status == 200 and r.getheader("Content-Type").startswith("text/javascript")
    assert "immutable" in r.getheader("Cache-Control")
    r, _ = get("/", "HEAD")
    assert r.status == 200
    # Only the files of the table: dot segments are resolved first (as
    # nginx does), so they cannot climb out of it.
    for path in ["/index.htm", "/%2e%2e/etc/passwd", "/../../etc/passwd", "/assets/",
                 "/assets/%2e%2e/%2e%2e/weir.toml", "//etc/passwd", "/index.html%00"]:
        assert get(path)[0].status in (400, 404), path
    r, again = get("/assets/../index.html")
    assert r.status == 200 and again == body
    r, _ = get("/", "POST")
    assert r.status == 405 and r.getheader("Allow") == "GET, HEAD"
    # The API: the same headers, and nothing without the token (not from
    # a cookie, not from the query).
    r, _ = get("/api/status")
    assert r.status == 401 and r.getheader("X-Frame-Options") == "DENY"
    assert get("/api/status?token=" + TOKEN)[0].status == 401
    assert get("/api/status", headers={"Cookie": "token=" + TOKEN})[0].status == 401
    r, body = get("/api/status", headers={"Authorization": "Bearer " + TOKEN})
    st = json.loads(body)
    assert r.status == 200 and st["source"] == "file" and st["revision"] >= 1, st
    assert r.getheader("Content-Security-Policy") == csp
    # No CORS: another origin's page cannot read an answer.
    r, _ = get("/api/status", headers={"Authorization": "Bearer " + TOKEN,
                                       "Origin": "http://evil.example"})
    assert r.getheader("Access-Control-Allow-Origin") is None


def test_a_fleet_on_etcd(etcd, backend, instances):  # noqa: F811
    from test_etcd import seed
    e = etcd()
    one, two = backend(B.fixed(b"one\n")), backend(B.fixed(b"two\n"))
    seed(e, "p", one.addr)
    w1, w2 = instances(e.url("p"), 2)
    assert wait_for(lambda: B.get(w2.port).body == b"one\n", 10)
    out = browse("etcd.mjs", w1.admin.port, "u", two.addr)
    assert sorted(out["instances"]) == ["w0", "w1"], out
    assert "changed: upstreams.u" in out["changed"], out
    assert out["applied"].startswith("written to etcd"), out
    assert out["rawEditor"] is False, out  # no file to edit
    assert e.get("/p/upstreams/u") == 'addrs = ["%s"]\n' % two.addr
    assert wait_for(lambda: B.get(w1.port).body == b"two\n" and B.get(w2.port).body == b"two\n", 10)
    # The fleet's history, in etcd: back to the state as it was found.
    out = browse("etcd_history.mjs", w2.admin.port)
    assert out["actions"][0].startswith("section") and "(what runs)" in out["actions"][0], out
    assert out["actions"][-1].startswith("etcd"), out
    assert "rolled back to entry %d" % out["oldest"] in out["message"], out
    assert wait_for(lambda: B.get(w1.port).body == b"one\n" and B.get(w2.port).body == b"one\n", 10)
