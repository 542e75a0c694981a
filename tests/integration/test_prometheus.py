"""Metrics where users scrape them: prometheus_metrics = "/metrics" on any
HTTP server (an allow-list of client CIDRs, loopback by default, the
client address a trusted proxy names, answered before redirect_https),
and prometheus_push to a real Pushgateway (Debian's
prometheus-pushgateway), which checks the text it is given: the gateway
down is a warning and a counter, never a failed request, and pushes
resume when it is back."""
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

import backends as B
import conftest
from conftest import free_port

PUSHGATEWAY = shutil.which("prometheus-pushgateway") or "/usr/bin/prometheus-pushgateway"

CONFIG = """
[basic]
%(basic)s

[servers.s]
addr = "127.0.0.1:@PORT@"
locations = ["l"]
prometheus_metrics = "/metrics"
%(server)s

[locations.l]
upstream = "u"

[upstreams.u]
addrs = ["@B@"]
"""


@pytest.fixture
def start(weir_toml, backend):
    def make(basic="", server=""):
        b = backend(B.fixed(b"hi\n"))
        w = weir_toml(CONFIG % {"basic": basic, "server": server}, B=b)
        w.backend = b
        return w
    return make


def test_metrics_on_a_server_path(start):
    w = start()
    assert B.get(w.port, "/x").status == 200
    # A request is counted as it ends, which may be just after its client
    # has the answer (and on another worker): the count shows soon.
    got = {}

    def counted():
        r = got["r"] = B.get(w.port, "/metrics")
        m = re.search(r'weir_requests_total\{server="s",location="l",method="GET",'
                      r'status="2xx"\} (\d+)', r.body.decode())
        return m and int(m.group(1)) >= 1

    assert conftest.wait_for(counted, 10), got["r"].body.decode()[:2000]
    r = got["r"]
    assert r.status == 200 and r.headers.get("content-type").startswith("text/plain")
    text = r.body.decode()
    assert "weir_backend_duration_seconds_bucket{upstream=\"u\"" in text
    assert w.backend.request_count() == 1  # /metrics is weir's, not the backend's
    # Only that path: others route as usual.
    for p in ("/metrics/", "/metricsx", "/metrics/../x"):
        B.get(w.port, p)
    assert w.backend.request_count() == 4


def test_idle_pooled_connections_per_backend(start):
    w = start()
    # Requests at once leave several idle connections to the backend.
    import threading
    ts = [threading.Thread(target=B.get, args=(w.port, "/p%d" % i)) for i in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(10)

    def figures():
        text = B.get(w.port, "/metrics").body.decode()
        per = re.search(r'weir_pool_idle_backend_connections\{backend="127.0.0.1:%d"\} (\d+)'
                        % w.backend.port, text)
        total = re.search(r"weir_pool_idle_connections (\d+)", text)
        return per and total and int(per.group(1)) >= 1 and (int(per.group(1)),
                                                               int(total.group(1)))
    got = conftest.wait_for(figures, 10)
    assert got and got[0] == got[1], got  # one backend: all of the pool


def test_the_allow_list_and_who_the_client_is(start):
    w = start(server='prometheus_allow = ["10.0.0.0/8"]\n')
    assert B.get(w.port, "/metrics").status == 403  # loopback is not listed
    # A client cannot name itself: X-Forwarded-For counts only from a
    # trusted proxy.
    assert B.get(w.port, "/metrics", headers=[("X-Forwarded-For", "10.1.2.3")]).status == 403
    w2 = start(server='prometheus_allow = ["10.0.0.0/8"]\ntrusted_proxies = ["127.0.0.1"]\n')
    assert B.get(w2.port, "/metrics", headers=[("X-Forwarded-For", "10.1.2.3")]).status == 200
    assert B.get(w2.port, "/metrics", headers=[("X-Forwarded-For", "192.0.2.1")]).status == 403


def test_answered_before_a_redirect_to_https(start):
    w = start(server="redirect_https = true\n")
    assert B.get(w.port, "/metrics").status == 200
    assert B.get(w.port, "/other").status == 301


@pytest.mark.parametrize("basic,server,expect", [
    ("", 'prometheus_metrics = "metrics"\n', "'prometheus_metrics' in [servers.t] is a path"),
    ("", 'prometheus_allow = ["10.0.0.0/8"]\n', "'prometheus_allow' in [servers.t] needs"),
    ("", 'prometheus_metrics = "/m"\nprometheus_allow = ["10.0.0.0/33"]\n',
     "'prometheus_allow' in [servers.t]: '10.0.0.0/33' is not"),
    ('prometheus_push = "udp://x"\n', "", "'prometheus_push' in [basic] is the http://"),
    ('prometheus_push = "http://x"\nprometheus_push_interval = "100ms"\n', "",
     "'prometheus_push_interval' in [basic] is at least"),
])
def test_settings_are_checked(tmp_path, basic, server, expect):
    conf = tmp_path / "w.toml"
    conf.write_text("[basic]\n%s\n[servers.t]\naddr = \"127.0.0.1:1\"\nlocations = [\"l\"]\n%s"
                    "[locations.l]\necho = true\n" % (basic, server))
    r = subprocess.run([conftest.binary("weir"), "-t", "-c", str(conf)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode != 0 and expect in r.stderr, r.stderr


class Gateway:
    def __init__(self, tmp, port=None):
        self.port = port or free_port()
        self.log = open(tmp / ("pushgateway-%d.log" % self.port), "ab")
        self.proc = subprocess.Popen(
            [PUSHGATEWAY, "--web.listen-address=127.0.0.1:%d" % self.port,
             "--persistence.file="], stdout=self.log, stderr=self.log,
            stdin=subprocess.DEVNULL)
        assert conftest.wait_port(self.port, self.proc), "pushgateway did not start"

    def metrics(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.port, timeout=5) as r:
            return r.read().decode()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)


@pytest.mark.skipif(not os.access(PUSHGATEWAY, os.X_OK), reason="no prometheus-pushgateway")
@pytest.mark.deadline(90)
def test_pushed_to_a_pushgateway_which_may_go_away(start, tmp_path):
    gw = Gateway(tmp_path)
    try:
        w = start(basic='prometheus_push = "http://127.0.0.1:%d"\n'
                        'prometheus_push_interval = "1s"\n' % gw.port)
        assert B.get(w.port, "/x").status == 200
        host = socket.gethostname()

        def pushed():
            t = gw.metrics()
            return re.search(r'weir_requests_total\{[^}]*instance="%s"[^}]*job="weir"[^}]*'
                             r'status="2xx"[^}]*\} 1\b' % re.escape(host), t) and t
        assert conftest.wait_for(pushed, 15), (gw.metrics()[-3000:], w.stderr())
        # The gateway took every push: no failure, nothing it refused.
        assert 'push_failure_time_seconds{instance="%s",job="weir"} 0' % host in gw.metrics()
        # Down: requests are not affected, one warning, failures counted.
        gw.stop()
        for _ in range(20):
            assert B.get(w.port, "/y").status == 200
        assert conftest.wait_for(lambda: "prometheus_push: http://127.0.0.1" in w.stderr(), 10)
        time.sleep(2.5)
        assert w.stderr().count("prometheus_push: http://") == 1
        failed = re.search(r'weir_prometheus_pushes_total\{result="failed"\} (\d+)',
                           B.get(w.port, "/metrics").body.decode())
        assert failed and int(failed.group(1)) >= 2
        # Back: the next push carries what happened meanwhile.
        gw = Gateway(tmp_path, port=gw.port)
        assert conftest.wait_for(lambda: re.search(
            r'weir_requests_total\{[^}]*job="weir"[^}]*status="2xx"[^}]*\} 21\b',
            gw.metrics()), 15), gw.metrics()[-3000:]
        assert conftest.wait_for(lambda: "takes pushes again" in w.stderr(), 5)
    finally:
        gw.stop()


def test_tls_handshake_durations(weir_toml, backend, tmp_path):
    """weir_tls_handshake_seconds counts each completed handshake once
    (not per request), in the bucket of its duration."""
    import ssl
    from acmeutil import ca_and_server_cert
    ca_and_server_cert(tmp_path, "localhost", "DNS:localhost")
    b = backend(B.fixed(b"hi\n"))
    w = weir_toml("""
[certificates.c]
cert = "%s"
key = "%s"
[servers.s]
addr = "127.0.0.1:@PORT@"
locations = ["l"]
certificates = ["c"]
prometheus_metrics = "/metrics"
[locations.l]
upstream = "u"
[upstreams.u]
addrs = ["@B@"]
""" % (tmp_path / "server.crt", tmp_path / "server.key"), B=b)
    ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    ctx.set_alpn_protocols(["http/1.1"])
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", w.port), timeout=5) as s:
            with ctx.wrap_socket(s, server_hostname="localhost") as t:
                for _ in range(2):  # two requests, one handshake
                    t.sendall(b"GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n")
                    assert b"200" in t.recv(4096).split(b"\r\n")[0]
    with socket.create_connection(("127.0.0.1", w.port), timeout=5) as s:
        with ctx.wrap_socket(s, server_hostname="localhost") as t:
            t.sendall(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            text = b""
            while True:
                chunk = t.recv(65536)
                if not chunk:
                    break
                text += chunk
    text = text.decode()
    count = int(re.search(r'weir_tls_handshake_seconds_count\{side="client"\} (\d+)',
                          text).group(1))
    inf = int(re.search(r'weir_tls_handshake_seconds_bucket\{side="client",le="\+Inf"\} (\d+)',
                        text).group(1))
    assert count == inf == 4, text  # three, and the one asking for the metrics
    total = int(re.search(r'weir_tls_handshakes_total\{side="client",result="ok"\} (\d+)',
                          text).group(1))
    assert total == count
    assert 'weir_tls_handshake_seconds_count{side="upstream"} 0' in text
    s = float(re.search(r'weir_tls_handshake_seconds_sum\{side="client"\} ([0-9.]+)',
                        text).group(1))
    assert 0 < s < 10


def test_retries_are_counted_by_cause(weir_toml, backend):
    """weir_upstream_retries_total{cause}: a 503 (retry_on "503"), a backend
    that closes before answering ("reset"), one that answers too late
    ("timeout"), each in front of a good one: every client gets 200, and
    each cause is counted as often as the good backend took over."""
    good = backend(B.fixed(b"ok\n"))
    busy = backend(B.fixed(b"busy\n", status=503))
    closing = backend(lambda conn, req: "close")
    slow = backend(B.slow(3.0))
    w = weir_toml("""
[servers.s]
addr = "127.0.0.1:@PORT@"
locations = ["s", "r", "t"]
prometheus_metrics = "/metrics"
[locations.s]
path = "/s"
upstream = "us"
[locations.r]
path = "/r"
upstream = "ur"
[locations.t]
path = "/t"
upstream = "ut"
[upstreams.us]
addrs = ["%s", "%s"]
max_fails = 0
retry_on = ["503"]
[upstreams.ur]
addrs = ["%s", "%s"]
max_fails = 0
retry_on = ["reset"]
[upstreams.ut]
addrs = ["%s", "%s"]
max_fails = 0
retry_on = ["timeout"]
read_timeout = "300ms"
""" % (busy.addr, good.addr, closing.addr, good.addr, slow.addr, good.addr))
    for path in ("/s", "/r", "/t"):
        for _ in range(4):
            r = B.get(w.port, path)
            assert r.status == 200 and r.body == b"ok\n", (path, r.status, w.stderr())
    want = {"status": busy, "reset": closing, "timeout": slow}

    def counted():
        text = B.get(w.port, "/metrics").body.decode()
        got = {}
        for cause, up in (("status", "us"), ("reset", "ur"), ("timeout", "ut")):
            m = re.search(r'weir_upstream_retries_total\{upstream="%s",cause="%s"\} (\d+)'
                          % (up, cause), text)
            got[cause] = int(m.group(1)) if m else 0
        return got if all(got[c] == want[c].request_count() for c in got) else None
    got = conftest.wait_for(counted, 10)
    assert got and all(v >= 1 for v in got.values()), (
        got, {c: b.request_count() for c, b in want.items()})
