"""[basic] webhook: every event kind reaches a Python receiver once, with
its documented fields (start, backend_status, upstream_down,
reload_config, diff_config, reload_config_fail, discovery_fail,
certificate_expiry, stop); the webhook types' shapes; a receiver that
fails is retried, one that hangs never slows traffic; the notification
list filters."""
import http.server
import json
import signal
import subprocess
import threading
import time

import pytest

import conftest

import backends as B
import dnsutil
from conftest import binary, free_port, require_binary

pytestmark = pytest.mark.deadline(120)


class Receiver:
    """An HTTP server recording the JSON bodies POSTed to it. fail: the
    first N requests get 500; hang: requests are never answered."""

    def __init__(self, fail=0, hang=False):
        self.bodies = []
        self.attempts = 0
        self.fail = fail
        self.hang = hang
        self.lock = threading.Lock()
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(n)
                with outer.lock:
                    outer.attempts += 1
                    failing = outer.attempts <= outer.fail
                if outer.hang:
                    time.sleep(30)
                    return
                if failing:
                    self.send_response(500)
                    self.end_headers()
                    return
                with outer.lock:
                    outer.bodies.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.port = free_port()
        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), H)
        self.srv.daemon_threads = True
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    @property
    def url(self):
        return "http://127.0.0.1:%d/hook" % self.port

    def events(self, kind=None):
        with self.lock:
            return [b for b in self.bodies if kind is None or b.get("event") == kind]

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(**kw):
        r = Receiver(**kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()



def wait_for(pred, timeout=20.0, step=0.05):
    return conftest.wait_for(pred, timeout, step)


def config(hook, b1, b2, dns_port, cert, extra=""):
    return ('[basic]\nwebhook = "%s"\n%s\n'
            '[servers.main]\naddr = "127.0.0.1:@PORT@"\nlocations = ["all", "disc"]\n\n'
            '[locations.all]\nupstream = "u"\n\n'
            '[locations.disc]\npath = "/disc"\nupstream = "d"\n\n'
            '[upstreams.u]\naddrs = ["%s", "%s"]\nhealth_check = "tcp://"\n'
            'health_check_interval = "100ms"\nhealth_check_fall = 1\nhealth_check_rise = 1\n\n'
            '[upstreams.d]\naddrs = ["svc.weir.test:%d"]\ndiscovery = "dns"\n'
            'dns_server = "127.0.0.1:%d"\nupdate_frequency = "1s"\ndns_timeout = "300ms"\n\n'
            '[certificates.soon]\ncert = "%s"\nkey = "%s"\n'
            % (hook, extra, b1.addr, b2.addr, b1.port, dns_port, cert[0], cert[1]))


def short_cert(tmp_path):
    crt, key = tmp_path / "soon.crt", tmp_path / "soon.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key), "-out", str(crt),
                    "-days", "2", "-subj", "/CN=soon.weir.test"], check=True, capture_output=True,
                   timeout=60)
    return str(crt), str(key)


def test_every_event_kind(receiver, backend, tmp_path, weir_toml):
    r = receiver()
    b1, b2 = backend(B.fixed(b"one")), backend(B.fixed(b"two"))
    dns = dnsutil.FakeDns(ttl=1)
    try:
        dns.records[("svc.weir.test", dnsutil.A)] = ["127.0.0.1"]
        w = weir_toml(config(r.url, b1, b2, dns.port, short_cert(tmp_path)))
        start = wait_for(lambda: r.events("start"))
        assert start, w.describe()
        ev = start[0]
        assert set(ev) == {"event", "message", "data", "hostname", "pid", "time", "version"}, ev
        assert ev["pid"] == w.proc.pid and ev["time"].endswith("Z")
        assert ev["data"]["version"] == ev["version"] and ev["data"]["config"].endswith(".toml")
        assert wait_for(lambda: r.events("certificate_expiry")), r.bodies
        exp = r.events("certificate_expiry")[0]
        assert "soon expires in" in exp["message"]
        d = exp["data"]
        assert d["certificate"] == "soon" and d["expired"] is False, d
        assert 86400 < d["expires_in_s"] <= 2 * 86400, d
        # One backend down, then both: backend_status, then upstream_down.
        b1.close()
        assert wait_for(lambda: any(b1.addr in e["message"] and "unhealthy" in e["message"]
                                    for e in r.events("backend_status"))), r.bodies
        down = [e["data"] for e in r.events("backend_status") if b1.addr in e["message"]]
        assert down[-1] == {"upstream": "u", "backend": b1.addr, "healthy": False}, down
        b2.close()
        assert wait_for(lambda: r.events("upstream_down")), r.bodies
        assert "upstream u has no healthy backend" in r.events("upstream_down")[0]["message"]
        assert r.events("upstream_down")[0]["data"] == {
            "upstream": "u", "down": True, "healthy": 0, "backends": 2}, r.bodies
        # Discovery fails.
        dns.mode = "servfail"
        assert wait_for(lambda: r.events("discovery_fail")), r.bodies
        df = r.events("discovery_fail")[0]
        assert "upstream d: dns discovery failed" in df["message"]
        assert df["data"]["upstream"] == "d" and df["data"]["discovery"] == "dns", df
        assert df["data"]["error"] and df["data"]["failures"] >= 1, df
        dns.mode = "ok"
        # A reload that changes one section and adds one: the diff.
        conf = sorted(tmp_path.glob("weir-*.toml"))[-1]
        text = conf.read_text()
        conf.write_text(text.replace('health_check_fall = 1', 'health_check_fall = 2') +
                        '\n[locations.extra]\npath = "/x"\necho = true\n')
        w.signal(signal.SIGHUP)
        assert wait_for(lambda: r.events("reload_config")), r.bodies
        rl = r.events("reload_config")[0]["data"]
        assert rl["config"] == str(conf) and rl["load"] >= 2, rl
        diff = wait_for(lambda: r.events("diff_config"))
        assert diff, r.bodies
        assert "added [locations.extra]" in diff[0]["message"], diff
        assert "changed [upstreams.u]" in diff[0]["message"], diff
        assert "servers.main" not in diff[0]["message"], diff
        assert sorted((c["change"], c["section"]) for c in diff[0]["data"]["changes"]) == [
            ("added", "locations.extra"), ("changed", "upstreams.u")], diff
        # A reload that fails.
        conf.write_text(conf.read_text() + "\nbogus = 1\n")
        w.signal(signal.SIGHUP)
        fail = wait_for(lambda: r.events("reload_config_fail"))
        assert fail and "bogus" in fail[0]["message"], r.bodies
        fd = fail[0]["data"]
        assert fd["config"] == str(conf) and fd["errors"] >= 1 and "bogus" in fd["error"], fd
        # The stop.
        w.stop()
        w.checked = True
        assert wait_for(lambda: r.events("stop"), timeout=5), r.bodies
        # Each event once.
        kinds = [e["event"] for e in r.events()]
        for k in ("start", "upstream_down", "reload_config", "diff_config",
                  "reload_config_fail", "stop", "certificate_expiry"):
            assert kinds.count(k) == 1, (k, kinds)
    finally:
        dns.close()


def simple(hook, extra=""):
    return ('[basic]\nwebhook = "%s"\n%s\n'
            '[servers.main]\naddr = "127.0.0.1:@PORT@"\nlocations = ["all"]\n\n'
            '[locations.all]\necho = true\n' % (hook, extra))


@pytest.mark.parametrize("kind,check", [
    ("slack", lambda b: set(b) == {"text"} and "weir start on " in b["text"]),
    ("wecom", lambda b: b["msgtype"] == "markdown" and "weir start" in b["markdown"]["content"]),
    ("dingtalk", lambda b: b["msgtype"] == "markdown" and b["markdown"]["title"] == "start"),
])
def test_webhook_types(receiver, weir_toml, kind, check):
    r = receiver()
    w = weir_toml(simple(r.url, 'webhook_type = "%s"\n' % kind))
    got = wait_for(lambda: r.bodies)
    assert got and check(got[0]), got
    w.stop()


def test_a_failing_receiver_is_retried(receiver, weir_toml):
    r = receiver(fail=2)
    w = weir_toml(simple(r.url))
    # Two 500s, then delivered on the third try.
    assert wait_for(lambda: r.events("start"), timeout=10), r.attempts
    assert r.attempts == 3
    w.stop()


def test_a_hanging_receiver_never_slows_traffic(receiver, weir_toml):
    import http.client
    r = receiver(hang=True)
    w = weir_toml(simple(r.url))
    bad = 0
    t0 = time.time()
    for _ in range(300):
        c = http.client.HTTPConnection("127.0.0.1", w.port, timeout=5)
        c.request("GET", "/")
        resp = c.getresponse()
        resp.read()
        bad += resp.status != 200
        c.close()
    assert bad == 0
    assert time.time() - t0 < 30
    # Stopping does not wait for it beyond the flush limit.
    t1 = time.time()
    w.stop()
    assert time.time() - t1 < 10


def test_notifications_filter(receiver, weir_toml, tmp_path):
    r = receiver()
    w = weir_toml(simple(r.url, 'webhook_notifications = ["stop"]\n'))
    time.sleep(1.5)
    assert r.events() == []
    w.stop()
    w.checked = True
    assert wait_for(lambda: r.events("stop"), timeout=5)
    assert [e["event"] for e in r.events()] == ["stop"]


def test_bad_webhook_settings(tmp_path):
    require_binary("weir")
    for extra, expect in (('webhook = "ftp://x"\n', "http:// or https:// URL"),
                          ('webhook = "http://x"\nwebhook_type = "teams"\n', "'webhook_type'"),
                          ('webhook = "http://x"\nwebhook_notifications = ["nope"]\n',
                           "unknown event 'nope'")):
        f = tmp_path / "w.toml"
        f.write_text("[basic]\n" + extra + '\n[servers.s]\naddr = "127.0.0.1:%d"\n'
                     'locations = ["l"]\n\n[locations.l]\necho = true\n' % free_port())
        r = subprocess.run([binary("weir"), "-t", "-c", str(f)], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 1 and expect in r.stderr, r.stderr


def webhook_counts(admin):
    import re
    import urllib.request
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % admin, timeout=10).read()
    return {k: int(v) for k, v in re.findall(
        r'weir_webhook_events_total\{result="(\w+)"\} (\d+)', text.decode())}


def with_admin(hook, admin):
    return simple(hook) + '\n[admin]\naddr = "127.0.0.1:%d"\n' % admin


def test_a_receiver_that_refuses_connections_is_tried_three_times(weir_toml):
    """No receiver at all: each event is tried three times (1 s, then 2 s
    apart), then counted as failed and logged; traffic never waits."""
    from conftest import closed_port
    admin = free_port()
    w = weir_toml(with_admin("http://127.0.0.1:%d/hook" % closed_port(), admin))
    for _ in range(50):
        assert B.get(w.port, "/").status == 200
    assert wait_for(lambda: webhook_counts(admin).get("failed") == 1, 15), webhook_counts(admin)
    assert webhook_counts(admin)["sent"] == 0
    assert "webhook: start event not delivered" in w.stderr(), w.stderr()


def test_the_queue_is_bounded_what_does_not_fit_is_dropped_and_counted(receiver, weir_toml):
    """A receiver that hangs holds the sender on one event; 300 reloads
    meanwhile make more events than the queue's 256: the rest is dropped
    and counted, reloads and traffic go on, and the stop is not held."""
    import urllib.request
    r = receiver(hang=True)
    admin = free_port()
    w = weir_toml(with_admin(r.url, admin))
    for i in range(300):
        req = urllib.request.Request("http://127.0.0.1:%d/api/reload" % admin, data=b"",
                                     method="POST")
        assert urllib.request.urlopen(req, timeout=10).status == 200
        if i % 50 == 0:
            assert B.get(w.port, "/").status == 200
    got = webhook_counts(admin)
    assert got["dropped"] >= 300 - 256, got
    assert got["sent"] == 0, got
    t = time.time()
    w.stop()
    assert time.time() - t < 10


def test_bytes_that_are_not_utf8_reach_the_receiver_replaced(receiver, tmp_path, start_proc):
    """A configuration file whose name is not UTF-8 (any byte is a valid
    Linux file name): the start event is still JSON, the byte as U+FFFD in
    its message and in its data."""
    import os
    r = receiver()
    port = free_port()
    path = os.path.join(os.fsencode(str(tmp_path)), b"caf\xe9.toml")
    with open(path, "w") as f:
        f.write(simple(r.url).replace("@PORT@", str(port)))
    require_binary("weir")
    p = start_proc([binary("weir"), "-c", os.fsdecode(path)], port, "weir")
    got = wait_for(lambda: r.events("start"), timeout=10)
    assert got, p.describe()
    assert "caf\ufffd.toml" in got[0]["message"], got
    assert got[0]["data"]["config"].endswith("caf\ufffd.toml"), got


def test_a_long_message_cut_to_fit_is_still_json(receiver, weir_toml, tmp_path):
    """The chat types' text is cut to 2 KB: never inside a character. Two
    refused reloads whose errors quote a key of two-byte characters, one
    byte apart, so that one of the cuts falls in the middle of one: both
    events arrive, as JSON."""
    r = receiver()
    w = weir_toml(simple(r.url, 'webhook_type = "slack"\n'))
    assert wait_for(lambda: r.bodies), w.describe()
    conf = sorted(tmp_path.glob("weir-*.toml"))[-1]
    base = conf.read_text()
    for n in (1500, 1501):
        with open(conf, "w") as f:
            f.write(base + '\n[locations.bad]\n"x%s" = 1\n' % ("\u00e9" * n))
        before = len(r.bodies)
        w.signal(signal.SIGHUP)
        assert wait_for(lambda: len(r.bodies) > before, 10), (n, r.attempts, w.stderr()[-2000:])
        assert "refused" in r.bodies[-1]["text"], r.bodies[-1]
        assert len(r.bodies[-1]["text"].encode()) <= 2047
    w.stop()
