"""Attacks on the etcd configuration source (src/app/etcd/*.c,
src/app/admin/etcd_write.c): odd fragments and key names, huge and many
values, bursts of changes, an etcd that lies, hangs or restarts, caches
that cannot be written, duplicate instance ids, push/pull round trips and
URL tricks. Requests through the proxy must keep succeeding throughout.
"""
import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request

import pytest

import backends as B
from conftest import binary, free_port, require_binary, wait_port
from etcdutil import Etcd
from test_admin import Admin
from test_etcd import LOCATION, Instance, etcd, instances, load_loop, seed, wait_for  # noqa: F401

pytestmark = pytest.mark.skipif(not os.access("/usr/bin/etcd", os.X_OK),
                                reason="etcd-server not installed")


# ---- helpers ----


def b64(x):
    if isinstance(x, str):
        x = x.encode()
    return base64.b64encode(x).decode()


def gw(e, path, body, timeout=10):
    """A POST to etcd's JSON gateway (v3) of the first member."""
    req = urllib.request.Request("http://%s%s" % (e.members[0].endpoint, path),
                                 data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read() or b"{}")


def raw_put(e, key, value):
    """Any bytes as key and value (NUL, not UTF-8), which etcdctl cannot."""
    return gw(e, "/v3/kv/put", {"key": b64(key), "value": b64(value)})


def raw_delete(e, key):
    return gw(e, "/v3/kv/deleterange", {"key": b64(key)})


class FastPut:
    """Puts over one keep-alive HTTP connection to the gateway: ~1 ms each."""

    def __init__(self, e):
        self.e = e
        self.c = None

    def put(self, key, value):
        for attempt in range(2):
            try:
                if self.c is None:
                    host, port = self.e.members[0].endpoint.split(":")
                    self.c = http.client.HTTPConnection(host, int(port), timeout=10)
                body = json.dumps({"key": b64(key), "value": b64(value)})
                self.c.request("POST", "/v3/kv/put", body=body,
                               headers={"Content-Type": "application/json"})
                r = self.c.getresponse()
                data = r.read()
                if r.status != 200:
                    raise RuntimeError("put %s: HTTP %d %r" % (key, r.status, data[:200]))
                return json.loads(data)
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt:
                    raise

    def close(self):
        if self.c:
            self.c.close()
            self.c = None


def weir_t(url, local=None):
    argv = [binary("weir"), "-t", "-c", url]
    if local:
        argv += ["--local", str(local)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def base_keys(e, prefix="p", port=None):
    e.put("/%s/servers/main" % prefix, 'addr = "127.0.0.1:%d"\nlocations = ["all"]\n'
          % (port or free_port()))
    e.put("/%s/locations/all" % prefix, "echo = true\n")
    e.put("/%s/upstreams/u" % prefix, 'addrs = ["127.0.0.1:9"]\n')


@pytest.fixture
def custom(tmp_path, start_proc):
    """custom(url, local_text, port, admin_port) -> Instance with a --local
    file of exactly local_text (which need not hold [basic] or servers)."""
    count = [0]

    def make(url, local_text, port, aport, wait=True):
        require_binary("weir")
        count[0] += 1
        local = tmp_path / ("custom-%d.toml" % count[0])
        local.write_text(local_text)
        p = start_proc([binary("weir"), "-c", url, "--local", str(local)], port,
                       "weir-c%d" % count[0], wait=wait)
        if wait:
            assert wait_port(aport, p.proc), p.describe()
        return Instance(p, port, aport, local)

    return make


def status_of(w, path="/"):
    try:
        return w.get(path).status
    except (OSError, http.client.HTTPException) as ex:
        return repr(ex)


class FakeEtcd:
    """A TCP server on loopback that is not etcd: mode "garbage" (a 200
    whose body is no JSON, then more nonsense), "nonsense" (bytes that are
    not HTTP at all), "hang" (reads, never answers), "404" (an HTTP server
    of something else)."""

    def __init__(self, mode):
        self.mode = mode
        self.port = free_port()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.stop = threading.Event()
        self.conns = []
        self.accepted = 0
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    @property
    def endpoint(self):
        return "127.0.0.1:%d" % self.port

    def run(self):
        while not self.stop.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            self.conns.append(c)
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        try:
            c.settimeout(0.5)
            try:
                c.recv(65536)
            except OSError:
                pass
            if self.mode == "garbage":
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                          b"Transfer-Encoding: chunked\r\n\r\n"
                          b"1a\r\n{\"result\": garbage}}}\n]]\n\r\n0\r\n\r\n")
                c.close()
            elif self.mode == "nonsense":
                c.sendall(b"\x00\xff SSH-2.0-not-etcd \r\n\r\n\x16\x03\x01" * 10)
                c.close()
            elif self.mode == "404":
                body = b"<html>not found</html>"
                c.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                c.close()
            else:  # hang: keep the connection open, say nothing
                while not self.stop.is_set():
                    time.sleep(0.1)
                c.close()
        except OSError:
            pass

    def close(self):
        self.stop.set()
        self.t.join(timeout=5)
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


@pytest.fixture
def fake():
    made = []

    def make(mode):
        f = FakeEtcd(mode)
        made.append(f)
        return f

    yield make
    for f in made:
        f.close()


def count_loop(ws, stop, counts, path="/"):
    """Like test_etcd.load_loop, but any 2xx is fine and the path is given."""
    def run(w):
        c = None
        while not stop.is_set():
            try:
                if c is None:
                    c = http.client.HTTPConnection("127.0.0.1", w.port, timeout=5)
                c.request("GET", path)
                r = c.getresponse()
                r.read()
                counts["ok" if 200 <= r.status < 300 else "bad"] += 1
                if not 200 <= r.status < 300:
                    counts.setdefault("statuses", []).append(r.status)
            except (OSError, http.client.HTTPException) as ex:
                counts["errors"] += 1
                counts.setdefault("why", []).append(repr(ex))
                c = None
    ts = [threading.Thread(target=run, args=(w,)) for w in ws]
    for t in ts:
        t.start()
    return ts


def local_admin_server(aport, port, extra=""):
    return ('[admin]\naddr = "127.0.0.1:%d"\n\n[servers.main]\naddr = "127.0.0.1:%d"\n'
            'locations = ["all"]\n%s' % (aport, port, extra))


# ---- fragments ----


@pytest.mark.parametrize("value,expect", [
    ('addrs = ["127.0.0.1:9"]\n[[servers.x]]\naddr = "127.0.0.1:1"\n',
     "/p/upstreams/u:2:"),
    ('addrs = ["127.0.0.1:9"]\n[upstreams.u.sub]\na = 1\n', "/p/upstreams/u:2:"),
    ('addrs = ["127.0.0.1:9"]\n   [locations.evil]\necho = true\n', "/p/upstreams/u:2:"),
    ('addrs = ["127.0.0.1:9"]\n\t[locations.evil]\necho = true\n', "/p/upstreams/u:2:"),
    ('addrs = ["127.0.0.1:9"]\r\n[locations.evil]\r\necho = true\r\n', "/p/upstreams/u:2:"),
    ('addrs = [\n  "127.0.0.1:9",\n]\n[locations.evil]\necho = true\n', "/p/upstreams/u:4:"),
    ('addrs = ["127.0.0.1:9"] # ] [ "\n[locations.evil]\necho = true\n', "/p/upstreams/u:2:"),
    ('addrs = ["127.0.0.1:9"]\n[ locations . "evil" ]\necho = true\n', "/p/upstreams/u:2:"),
    ('addrs = ["127.0.0.1:9"]\n[basic]\nthreads = 64\n', "/p/upstreams/u:2:"),
    ('addrs = ["127.0.0.1:9"]\n[]\n', "/p/upstreams/u:2:"),
])
def test_a_fragment_cannot_open_another_section(etcd, value, expect):
    require_binary("weir")
    e = etcd()
    base_keys(e)
    e.put("/p/upstreams/u", value)
    r = weir_t(e.url("p"))
    assert r.returncode == 1, (value, r.stdout, r.stderr)
    assert expect in r.stderr, r.stderr


@pytest.mark.parametrize("value", [
    'addrs = ["127.0.0.1:9"]\nx = """\n[servers.x]\naddr = "1.2.3.4:5"\n"""\n',
    "addrs = ['127.0.0.1:9']\nx = '''\n[servers.x]\n'''\n",
    'addrs = ["127.0.0.1:9"]\nx = """a \\\n[servers.x]\\"""\n"""\n',
    'addrs = ["127.0.0.1:9"]\nx = """""\n[servers.x]\n"""""\n',
    'addrs = [\n  "127.0.0.1:9", # [servers.x]\n  # [locations.y]\n]\n',
])
def test_a_header_inside_a_string_or_comment_is_only_text(etcd, value):
    """The splitter must not see a header where TOML sees a string; the key
    `x` is then weir's error (unknown key), not a header error."""
    require_binary("weir")
    e = etcd()
    base_keys(e)
    e.put("/p/upstreams/u", value)
    r = weir_t(e.url("p"))
    assert "a fragment holds one section" not in r.stderr, r.stderr
    if "x =" in value:
        assert r.returncode == 1 and "unknown key 'x'" in r.stderr, r.stderr
        assert "/p/upstreams/u:" in r.stderr, r.stderr
    else:
        assert r.returncode == 0, r.stderr


@pytest.mark.deadline(90)
def test_a_multiline_string_holding_a_header_is_served_as_a_header_value(etcd, backend,
                                                                         instances):
    e = etcd()
    b = backend(B.fixed(b"ok\n"))
    seed(e, "p", b.addr)
    [w] = instances(e.url("p"))
    # A header value that looks like a section header (literal strings
    # cannot hold a newline in a header, but an array element can).
    e.put("/p/locations/all", 'upstream = "u"\nresponse_set_headers = [\n'
          '"X-Rev: [servers.evil]",\n]\n')
    assert wait_for(lambda: w.rev() == "[servers.evil]"), w.proc.describe()
    assert w.fleet()["config"]["rejected"] == 0


# ---- key names ----


@pytest.mark.parametrize("name", ["a b", "..", ".", "a.b", "ünïcødé-名前", "a'b", "x" * 200,
                                  "[x]", "a#b", "a=b"])
def test_odd_but_allowed_location_names_load(etcd, name):
    require_binary("weir")
    e = etcd()
    e.put("/p/servers/main", 'addr = "127.0.0.1:%d"\nlocations = [%s]\n'
          % (free_port(), json.dumps(name)))
    e.put("/p/locations/" + name, "echo = true\n")
    r = weir_t(e.url("p"))
    assert r.returncode == 0, r.stderr
    # pull gives a file that loads and names the same location.
    r = subprocess.run([binary("weir"), "config", "pull", e.url("p")], capture_output=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    assert name.encode() in r.stdout


@pytest.mark.parametrize("key,expect", [
    ("/p/locations/a/b", "a section name has no '/'"),
    ("/p/locations/" + "x" * 201, "a section name"),
    ("/p/locations/", "a section name"),
    ("/p/locations//", "a section name"),
    ("/p/locations/a\\b", "a section name"),
    ("/p/basic/x", "not a configuration key"),
    ("/p/admin/", "not a configuration key"),
    ("/p/" + "servers" * 10 + "/x", "not a configuration key"),
    ("/p/instancesX", "not a configuration key"),
    ("/p/../p/locations/x", "not a configuration key"),
])
def test_bad_key_names_are_refused_with_the_key(etcd, key, expect):
    require_binary("weir")
    e = etcd()
    base_keys(e)
    e.put(key, "echo = true\n")
    r = weir_t(e.url("p"))
    assert r.returncode == 1, r.stderr
    assert expect in r.stderr, r.stderr


@pytest.mark.parametrize("key,value,expect", [
    (b"/p/locations/a\x00b", b"echo = true\n", "a section name"),
    (b"/p/locations/a\x01b", b"echo = true\n", "a section name"),
    (b"/p/locations/all", b"echo = true\n\x00\n", "the value holds a NUL byte"),
    (b"/p/locations/all", b"echo = true\n# \xff\xfe\n", "/p/locations/all:2"),
    (b"/p/locations/all", b"\xef\xbb\xbfecho = true\n", "/p/locations/all"),
])
def test_nul_and_bytes_that_are_not_utf8_are_refused(etcd, key, value, expect):
    require_binary("weir")
    e = etcd()
    base_keys(e)
    raw_put(e, key, value)
    r = weir_t(e.url("p"))
    assert r.returncode == 1, r.stderr
    assert expect in r.stderr, r.stderr


def test_a_nul_in_the_section_part_of_a_key_is_not_that_section(etcd):
    require_binary("weir")
    e = etcd()
    e.put("/p/locations/all", "echo = true\n")
    raw_put(e, b"/p/servers\x00junk/main",
            ('addr = "127.0.0.1:%d"\nlocations = ["all"]\n' % free_port()).encode())
    r = weir_t(e.url("p"))
    assert r.returncode == 1 and "not a configuration key" in r.stderr, (r.returncode, r.stderr)


@pytest.mark.deadline(60)
def test_a_key_that_is_not_utf8_is_rejected_and_reported(etcd, backend, instances):
    e = etcd()
    b = backend(B.fixed(b"ok\n"))
    seed(e, "p", b.addr)
    [w] = instances(e.url("p"))
    raw_put(e, b"/p/locations/\xff\xfe", b"echo = true\n")
    f = wait_for(lambda: w.fleet()["config"]["rejected"] >= 1 and w.fleet())
    assert f, w.fleet()
    assert w.rev() == "1"
    assert f["config"]["rejected_errors"], f


@pytest.mark.deadline(60)
def test_a_value_that_is_not_utf8_is_rejected_and_the_old_config_stays(etcd, backend,
                                                                       instances):
    e = etcd()
    b = backend(B.fixed(b"ok\n"))
    seed(e, "p", b.addr)
    [w] = instances(e.url("p"))
    raw_put(e, b"/p/locations/all", b'upstream = "u"\nresponse_set_headers = ["X-Rev: \xff"]\n')
    f = wait_for(lambda: w.fleet()["config"]["rejected"] >= 1 and w.fleet())
    assert f and any("/p/locations/all" in x for x in f["config"]["rejected_errors"]), f
    assert w.rev() == "1"
    raw_put(e, b"/p/locations/all", (LOCATION % "2").encode())
    assert wait_for(lambda: w.rev() == "2")


# ---- size and number ----


@pytest.mark.deadline(120)
def test_a_value_over_one_megabyte_is_served(etcd, backend, instances):
    e = etcd()
    b = backend(B.fixed(b"ok\n"))
    seed(e, "p", b.addr)
    [w] = instances(e.url("p"))
    big = LOCATION % "big" + ("# " + "z" * 1000 + "\n") * 1300  # 1.3 MB
    FastPut(e).put("/p/locations/all", big)
    assert wait_for(lambda: w.rev() == "big", timeout=30), w.proc.describe()
    e.put("/p/locations/all", LOCATION % "small")
    assert wait_for(lambda: w.rev() == "small", timeout=30)
    # The cache holds it too, and etcd refuses what is over its limit.
    with pytest.raises(RuntimeError):
        FastPut(e).put("/p/locations/all", "#" * (2 << 20))
    assert w.rev() == "small"


@pytest.mark.deadline(240)
def test_thousands_of_keys_load_and_a_change_of_one_is_served(etcd, backend, instances):
    e = etcd()
    b = backend(B.fixed(b"ok\n"))
    seed(e, "p", b.addr)
    fp = FastPut(e)
    n = 3000
    for i in range(n):
        fp.put("/p/locations/l%04d" % i, 'upstream = "u"\npath = "/l%04d"\n' % i)
    fp.close()
    [w] = instances(e.url("p"))
    assert w.rev() == "1"
    t0 = time.monotonic()
    e.put("/p/locations/all", LOCATION % "2")
    assert wait_for(lambda: w.rev() == "2", timeout=60), w.proc.describe()
    print("one change among %d keys served in %.2f s" % (n, time.monotonic() - t0))
    r = subprocess.run([binary("weir"), "config", "pull", e.url("p")], capture_output=True,
                       timeout=60)
    assert r.returncode == 0 and r.stdout.count(b"[locations.l") == n


# ---- bursts, deletes ----


@pytest.mark.deadline(120)
def test_a_hundred_rapid_changes_end_on_the_last_and_fail_no_request(etcd, backend,
                                                                    instances):
    e = etcd()
    b = backend(B.fixed(b"ok\n"))
    seed(e, "p", b.addr)
    [w] = instances(e.url("p"))
    stop = threading.Event()
    counts = {"ok": 0, "bad": 0, "errors": 0}
    ts = count_loop([w], stop, counts)
    fp = FastPut(e)
    try:
        rss0 = w.proc.rss_kib()
        for rnd in range(3):
            for k in range(100):
                fp.put("/p/locations/all", LOCATION % ("r%d-%d" % (rnd, k)))
                if k % 10 == 5:  # an invalid one in the burst, too
                    fp.put("/p/locations/all", LOCATION % "bad" + "bogus = 1\n")
            assert wait_for(lambda: w.rev() == "r%d-99" % rnd, timeout=30), w.rev()
        rss1 = w.proc.rss_kib()
        time.sleep(0.5)
    finally:
        stop.set()
        for t in ts:
            t.join()
        fp.close()
    assert counts["bad"] == 0 and counts["errors"] == 0, counts
    assert counts["ok"] > 50, counts
    f = w.fleet()
    assert f["config"]["revision"] == e.revision() or f["config"]["seen_revision"] >= \
        f["config"]["revision"]
    print("rss %d -> %d KiB over 600 changes" % (rss0, rss1))


@pytest.mark.deadline(90)
def test_a_key_deleted_then_created_again(etcd, backend, instances):
    e = etcd()
    b1, b2 = backend(B.fixed(b"one\n")), backend(B.fixed(b"two\n"))
    seed(e, "p", b1.addr)
    [w] = instances(e.url("p"))
    # The location the server needs, deleted: rejected, the old one serves.
    e.ctl("del", "/p/locations/all")
    f = wait_for(lambda: w.fleet()["config"]["rejected"] >= 1 and w.fleet())
    assert f, w.fleet()
    assert w.rev() == "1"
    e.put("/p/locations/all", LOCATION % "2")
    assert wait_for(lambda: w.rev() == "2")
    # The upstream deleted and made again with another backend, in a burst.
    fp = FastPut(e)
    for _ in range(20):
        e.ctl("del", "/p/upstreams/u")
        fp.put("/p/upstreams/u", 'addrs = ["%s"]\n' % b2.addr)
    fp.close()

    def body():
        c = http.client.HTTPConnection("127.0.0.1", w.port, timeout=5)
        c.request("GET", "/")
        r = c.getresponse()
        return r.read()
    assert wait_for(lambda: body() == b"two\n", timeout=20)
    # The admin API writes from the new key's mod revision.
    r = w.admin.call("POST", "/api/upstreams/u/backends", {"addr": b1.addr})
    assert r.status == 200, r.json


# ---- [basic] and listeners from etcd ----


@pytest.mark.deadline(60)
@pytest.mark.parametrize("key", ["config_cache = \"/tmp/evil\"", "instance_id = \"evil\"",
                                 "instance_ttl = \"1s\"", "etcd_cacert = \"/etc/passwd\""])
def test_a_local_only_key_of_basic_in_etcd_is_rejected_at_runtime(etcd, backend, custom, key):
    e = etcd()
    b = backend(B.fixed(b"ok\n"))
    seed(e, "p", b.addr)
    port, aport = free_port(), free_port()
    e.put("/p/basic", "threads = 1\n")
    w = custom(e.url("p"), local_admin_server(aport, port), port, aport)
    assert w.rev() == "1"
    e.put("/p/basic", "threads = 1\n" + key + "\n")
    f = wait_for(lambda: w.fleet()["config"]["rejected"] >= 1 and w.fleet())
    assert f, w.fleet()
    assert any("is the instance's own" in x for x in f["config"]["rejected_errors"]), f
    assert w.rev() == "1"


@pytest.mark.deadline(60)
def test_a_listener_address_changed_in_etcd_moves_the_listener(etcd, backend, custom):
    e = etcd()
    b = backend(B.fixed(b"ok\n"))
    seed(e, "p", b.addr)
    p1, p2, aport = free_port(), free_port(), free_port()
    e.put("/p/servers/main", 'addr = "127.0.0.1:%d"\nlocations = ["all"]\n' % p1)
    w = custom(e.url("p"), '[admin]\naddr = "127.0.0.1:%d"\n' % aport, p1, aport)
    assert w.get().status == 200
    e.put("/p/servers/main", 'addr = "127.0.0.1:%d"\nlocations = ["all"]\n' % p2)
    assert wait_port(p2, w.proc.proc, timeout=15), w.proc.describe()
    w2 = Instance(w.proc, p2, aport, w.local)
    assert w2.get().status == 200
    assert wait_for(lambda: status_of(w) != 200, timeout=10), "old listener still serves"
    # A listener on a port that is taken: rejected, the running one stays.
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        e.put("/p/servers/main", 'addr = "127.0.0.1:%d"\nlocations = ["all"]\n'
              % busy.getsockname()[1])
        assert wait_for(lambda: w.fleet()["config"]["rejected"] >= 1, timeout=15), \
            (w2.fleet(), w.proc.describe())
        assert w2.get().status == 200
    finally:
        busy.close()


# ---- an etcd that lies or hangs ----


@pytest.mark.deadline(60)
@pytest.mark.parametrize("mode", ["garbage", "nonsense", "hang"])
def test_a_bad_first_endpoint_does_not_stop_startup(etcd, fake, mode):
    require_binary("weir")
    e = etcd()
    base_keys(e)
    f = fake(mode)
    url = "etcd://%s,%s/p" % (f.endpoint, e.members[0].endpoint)
    t0 = time.monotonic()
    r = weir_t(url)
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - t0 < 15


@pytest.mark.deadline(60)
def test_a_first_endpoint_that_is_another_http_server_does_not_stop_startup(etcd, fake):
    require_binary("weir")
    e = etcd()
    base_keys(e)
    f = fake("404")
    r = weir_t("etcd://%s,%s/p" % (f.endpoint, e.members[0].endpoint))
    assert r.returncode == 0, r.stderr


def _watch_through_bad_first_endpoint(etcd, backend, custom, fake, mode):
    e = etcd()
    b = backend(B.fixed(b"ok\n"))
    seed(e, "p", b.addr)
    f = fake(mode)
    port, aport = free_port(), free_port()
    url = "etcd://%s,%s/p" % (f.endpoint, e.members[0].endpoint)
    w = custom(url, '[basic]\ninstance_ttl = "3s"\n\n' + local_admin_server(aport, port),
               port, aport)
    stop = threading.Event()
    counts = {"ok": 0, "bad": 0, "errors": 0}
    ts = count_loop([w], stop, counts)
    try:
        assert w.rev() == "1"
        e.put("/p/locations/all", LOCATION % "2")
        ok = wait_for(lambda: w.rev() == "2", timeout=25)
    finally:
        stop.set()
        for t in ts:
            t.join()
    assert counts["bad"] == 0 and counts["errors"] == 0, counts
    assert ok, (w.fleet()["config"], w.proc.stderr()[-3000:])


@pytest.mark.deadline(90)
def test_the_watch_gets_past_a_garbage_first_endpoint(etcd, backend, custom, fake):
    _watch_through_bad_first_endpoint(etcd, backend, custom, fake, "garbage")


@pytest.mark.deadline(90)
def test_the_watch_gets_past_a_hanging_first_endpoint(etcd, backend, custom, fake):
    _watch_through_bad_first_endpoint(etcd, backend, custom, fake, "hang")


@pytest.mark.deadline(90)
def test_the_watch_gets_past_a_nonsense_first_endpoint(etcd, backend, custom, fake):
    """Bytes that are not HTTP: curl fails the transfer, the stream 'ends'
    and the watch moves to the next member."""
    _watch_through_bad_first_endpoint(etcd, backend, custom, fake, "nonsense")


@pytest.mark.deadline(90)
def test_a_hanging_etcd_blocks_no_request_and_sigterm_still_stops(tmp_path, etcd, backend,
                                                                  custom, fake):
    """Started from the cache while the only endpoint hangs: requests are
    served, /api/fleet answers (late), SIGTERM ends weir promptly."""
    e = etcd()
    b = backend(B.fixed(b"ok\n"))
    seed(e, "p", b.addr)
    port, aport = free_port(), free_port()
    cache = tmp_path / "c.toml"
    local = ('[basic]\ninstance_ttl = "3s"\nconfig_cache = "%s"\n\n' % cache +
             local_admin_server(aport, port))
    w = custom(e.url("p"), local, port, aport)
    assert wait_for(lambda: cache.exists())
    w.proc.stop()
    w.proc.checked = True
    e.stop()
    f = fake("hang")
    port2, aport2 = free_port(), free_port()
    w = custom("etcd://%s/p" % f.endpoint,
               local.replace(str(port), str(port2)).replace(str(aport), str(aport2)),
               port2, aport2)
    stop = threading.Event()
    counts = {"ok": 0, "bad": 0, "errors": 0}
    ts = count_loop([w], stop, counts)
    lat = []
    try:
        for _ in range(3):
            t0 = time.monotonic()
            r = w.admin.call("GET", "/api/fleet")
            lat.append(time.monotonic() - t0)
            assert r.status == 200 and r.json["config"]["connected"] is False, r.json
        # requests keep a low latency while the main thread waits on etcd
        worst = 0
        for _ in range(20):
            t0 = time.monotonic()
            assert w.get().status == 200
            worst = max(worst, time.monotonic() - t0)
        assert worst < 1.0, worst
    finally:
        stop.set()
        for t in ts:
            t.join()
    assert counts["bad"] == 0 and counts["errors"] == 0, counts
    print("/api/fleet against a hanging etcd: %s s" % ["%.1f" % x for x in lat])
    t0 = time.monotonic()
    problems = w.proc.stop(timeout=15)
    w.proc.checked = True
    assert not problems, problems
    assert time.monotonic() - t0 < 10, "SIGTERM took %.1f s" % (time.monotonic() - t0)


# ---- etcd restarts, compaction ----


@pytest.mark.deadline(150)
def test_etcd_restarted_during_a_flood_of_changes(etcd, backend, instances):
    e = etcd()
    b = backend(B.fixed(b"ok\n"))
    seed(e, "p", b.addr)
    ws = instances(e.url("p"), 2)
    stop = threading.Event()
    counts = {"ok": 0, "bad": 0, "errors": 0}
    ts = count_loop(ws, stop, counts)
    last = [None]
    flood_stop = threading.Event()

    def flood():
        fp = FastPut(e)
        k = 0
        while not flood_stop.is_set():
            k += 1
            try:
                fp.put("/p/locations/all", LOCATION % ("f%d" % k))
                last[0] = "f%d" % k
            except (OSError, RuntimeError, http.client.HTTPException, ValueError):
                fp.close()
                time.sleep(0.05)
        fp.close()
    ft = threading.Thread(target=flood)
    ft.start()
    try:
        for _ in range(2):
            time.sleep(1.5)
            e.kill(e.members[0])
            time.sleep(1)
            e.restart()
        time.sleep(1)
        flood_stop.set()
        ft.join()
        e.put("/p/locations/all", LOCATION % "final")
        for w in ws:
            assert wait_for(lambda: w.rev() == "final", timeout=30), w.proc.describe()
    finally:
        flood_stop.set()
        ft.join()
        stop.set()
        for t in ts:
            t.join()
    assert counts["bad"] == 0 and counts["errors"] == 0, counts
    for w in ws:
        f = w.fleet()
        assert f["config"]["connected"] is True and f["config"]["rejected"] == 0, f


@pytest.mark.deadline(90)
def test_a_compaction_while_watching(etcd, backend, instances):
    e = etcd()
    b = backend(B.fixed(b"ok\n"))
    seed(e, "p", b.addr)
    [w] = instances(e.url("p"))
    fp = FastPut(e)
    for k in range(2, 30):
        fp.put("/p/locations/all", LOCATION % k)
    assert wait_for(lambda: w.rev() == "29")
    e.ctl("compact", str(e.revision()), "--physical")
    for k in range(30, 40):
        fp.put("/p/locations/all", LOCATION % k)
        e.ctl("compact", str(e.revision()))
    fp.close()
    assert wait_for(lambda: w.rev() == "39"), w.proc.describe()
    assert w.fleet()["config"]["connected"] is True


# ---- the cache ----


@pytest.mark.deadline(60)
@pytest.mark.parametrize("where", ["missing-dir", "is-a-dir", "in-proc"])
def test_a_cache_that_cannot_be_written_fails_no_request(tmp_path, etcd, backend, custom, where):
    e = etcd()
    b = backend(B.fixed(b"ok\n"))
    seed(e, "p", b.addr)
    if where == "missing-dir":
        cache = tmp_path / "no" / "such" / "dir" / "c.toml"
    elif where == "is-a-dir":
        cache = tmp_path / "adir"
        cache.mkdir()
    else:
        cache = "/proc/weir-test-cache.toml"  # nobody, not even root, creates files here
    port, aport = free_port(), free_port()
    w = custom(e.url("p"), '[basic]\ninstance_ttl = "3s"\nconfig_cache = "%s"\n\n' % cache +
               local_admin_server(aport, port), port, aport)
    assert w.rev() == "1"
    e.put("/p/locations/all", LOCATION % "2")
    assert wait_for(lambda: w.rev() == "2")
    assert "config_cache" in w.proc.stderr() and "not written" in w.proc.stderr()
    if where == "is-a-dir":
        assert os.path.isdir(cache) and not os.listdir(cache)


@pytest.mark.deadline(90)
def test_an_instance_started_from_its_cache_can_write_once_etcd_is_back(etcd, backend,
                                                                       custom, tmp_path):
    e = etcd()
    b1, b2 = backend(B.fixed(b"ok\n")), backend(B.fixed(b"ok\n"))
    seed(e, "p", b1.addr)
    cache = tmp_path / "c.toml"
    head = '[basic]\ninstance_ttl = "3s"\nconfig_cache = "%s"\n\n' % cache
    port, aport = free_port(), free_port()
    w = custom(e.url("p"), head + local_admin_server(aport, port), port, aport)
    assert wait_for(lambda: cache.exists())
    w.proc.stop()
    w.proc.checked = True
    e.stop()
    port, aport = free_port(), free_port()
    w = custom(e.url("p"), head + local_admin_server(aport, port), port, aport)
    assert "serving config_cache" in w.proc.stderr()
    e.restart()
    assert wait_for(lambda: w.fleet()["config"]["connected"], timeout=20)
    time.sleep(0.5)
    r = w.admin.call("POST", "/api/upstreams/u/backends", {"addr": b2.addr})
    assert r.status == 200, (r.status, r.json)


# ---- the fleet ----


@pytest.mark.deadline(90)
def test_two_instances_with_the_same_id_and_one_stops(etcd, backend, custom):
    """The second instance on an id a live one holds does not overwrite its
    key (a compare on the lease): it says so, and registers once the key
    is free (the first stopped and revoked its lease)."""
    e = etcd()
    b = backend(B.fixed(b"ok\n"))
    seed(e, "p", b.addr)
    ws = []
    for _ in range(2):
        port, aport = free_port(), free_port()
        ws.append(custom(e.url("p"), '[basic]\ninstance_id = "dup"\ninstance_ttl = "2s"\n\n' +
                         local_admin_server(aport, port), port, aport))
    a, bb = ws
    pids = lambda w: [i.get("pid") for i in (w.fleet()["instances"] or [])]  # noqa: E731
    assert wait_for(lambda: pids(a) == [a.proc.pid], timeout=10), a.fleet()
    assert wait_for(lambda: "registered by another live instance" in bb.proc.stderr(),
                    timeout=10), bb.proc.stderr()
    time.sleep(1.5)
    assert pids(bb) == [a.proc.pid], bb.fleet()
    a.proc.stop()
    a.proc.checked = True
    assert wait_for(lambda: pids(bb) == [bb.proc.pid], timeout=10), bb.fleet()
    assert bb.get().status == 200


@pytest.mark.deadline(60)
def test_garbage_in_the_fleets_keys_breaks_nothing(etcd, backend, instances):
    e = etcd()
    b = backend(B.fixed(b"ok\n"))
    seed(e, "p", b.addr)
    [w] = instances(e.url("p"))
    raw_put(e, b"/p/instances/x", b"\xff not json")
    raw_put(e, b"/p/instances/y", b"[1,2]")
    raw_put(e, b"/p/instances/\xff", b"{}")
    raw_put(e, b"/p/locks/other", b"\xff")
    f = wait_for(lambda: len(w.fleet()["instances"] or []) >= 4 and w.fleet())
    assert f, w.fleet()
    assert w.fleet()["config"]["rejected"] == 0
    assert w.get().status == 200


# ---- push and pull ----


ODD = '''# a comment before everything
[basic]
threads = 1 # trailing comment

# between sections [not.a.header]
[servers.main]
addr = "127.0.0.1:%d"
locations = ["all", 'odd name', "ünï"]

[ locations . all ]   # spaced header
upstream = "u"
response_set_headers = [
  "X-A: [servers.x]",   # [locations.y]
  "X-B: it's",
]

[locations.'odd name']
echo = true

[locations."ünï"]
echo = true
path = """
/multi"""

[upstreams.u]
addrs = ["127.0.0.1:9"]
# a last comment
'''


@pytest.mark.deadline(60)
def test_push_pull_push_of_an_odd_file_is_a_fixpoint(etcd, tmp_path):
    require_binary("weir")
    e = etcd()
    f = tmp_path / "odd.toml"
    f.write_text(ODD % free_port())
    r = subprocess.run([binary("weir"), "-t", "-c", str(f)], capture_output=True, text=True,
                       timeout=30)
    if r.returncode != 0:
        # the file is meant to be valid TOML weir accepts; adapt the path key if not
        f.write_text((ODD % free_port()).replace('path = """\n/multi"""\n', ""))
        r = subprocess.run([binary("weir"), "-t", "-c", str(f)], capture_output=True,
                           text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([binary("weir"), "config", "push", str(f), e.url("p")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert e.get("/p/locations/odd name") == "echo = true\n"
    assert e.get("/p/locations/ünï").startswith("echo = true\n")
    assert "[servers.x]" in e.get("/p/locations/all")
    r1 = subprocess.run([binary("weir"), "config", "pull", e.url("p")], capture_output=True,
                        timeout=30)
    assert r1.returncode == 0, r1.stderr
    pulled = tmp_path / "pulled.toml"
    pulled.write_bytes(r1.stdout)
    r = subprocess.run([binary("weir"), "config", "push", str(pulled), e.url("q")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    r2 = subprocess.run([binary("weir"), "config", "pull", e.url("q")], capture_output=True,
                        timeout=30)
    strip = lambda b: b.split(b"\n", 1)[1]  # noqa: E731 the header line names the URL
    assert strip(r1.stdout) == strip(r2.stdout)
    # every key the same under both prefixes
    for k in e.ctl("get", "--prefix", "/p/", "--keys-only").split():
        assert e.get(k) == e.get("/q/" + k[3:]), k
    # pushing the same file again changes nothing but deletes nothing either
    r = subprocess.run([binary("weir"), "config", "push", str(f), e.url("p")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "0 keys deleted" in r.stdout, r.stdout + r.stderr


@pytest.mark.deadline(60)
def test_push_refuses_a_section_name_etcd_cannot_hold(etcd, tmp_path):
    require_binary("weir")
    e = etcd()
    f = tmp_path / "slash.toml"
    f.write_text('[servers.main]\naddr = "127.0.0.1:%d"\nlocations = ["a/b"]\n\n'
                 '[locations."a/b"]\necho = true\n' % free_port())
    r = subprocess.run([binary("weir"), "-t", "-c", str(f)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr  # a file weir runs
    r = subprocess.run([binary("weir"), "config", "push", str(f), e.url("p")],
                       capture_output=True, text=True, timeout=30)
    pushed = r.returncode == 0
    t = weir_t(e.url("p"))
    assert not pushed or t.returncode == 0, (r.stdout, t.stderr)


@pytest.mark.deadline(60)
def test_pull_does_not_print_the_password(etcd):
    require_binary("weir")
    e = etcd()
    base_keys(e)
    e.ctl("user", "add", "root:S3cretPw")
    e.ctl("auth", "enable")
    r = subprocess.run([binary("weir"), "config", "pull",
                        e.url("p", query="?user=root&password=S3cretPw")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "S3cretPw" not in r.stdout, r.stdout.splitlines()[0]


# ---- URLs ----


@pytest.mark.deadline(60)
def test_url_credentials_with_special_characters(etcd, backend, instances):
    e = etcd()
    b = backend(B.fixed(b"ok\n"))
    seed(e, "p", b.addr)
    # etcdctl reads the password with Scanf("%s"): no blank in it
    user, pw = "ad min+é", "p&w=%+#/?é:@"
    e.ctl("user", "add", "root:rootpw")
    e.ctl("user", "add", "--interactive=false", user, input=(pw + "\n").encode())
    e.ctl("user", "grant-role", user, "root")
    e.put("/p/servers/main", 'addr = "127.0.0.1:%d"\nlocations = ["all"]\n' % free_port())
    e.ctl("auth", "enable")
    q = "?user=%s&password=%s" % (urllib.parse.quote(user, safe=""),
                                  urllib.parse.quote(pw, safe=""))
    r = weir_t(e.url("p", query=q))
    assert r.returncode == 0, r.stderr
    [w] = instances(e.url("p", query=q))
    assert w.rev() == "1"
    e.ctl("--user", "root:rootpw", "put", "/p/locations/all", LOCATION % 2)
    assert wait_for(lambda: w.rev() == "2")
    src = w.fleet()["config"]["source"]
    assert urllib.parse.quote(pw, safe="") not in src and pw not in src, src


@pytest.mark.deadline(60)
def test_an_invalid_config_from_etcd_does_not_print_the_password(etcd):
    require_binary("weir")
    e = etcd()
    e.put("/p/locations/all", "bogus = 1\n")
    e.ctl("user", "add", "root:S3cretPw")
    e.ctl("auth", "enable")
    r = weir_t(e.url("p", query="?user=root&password=S3cretPw"))
    assert r.returncode == 1 and "unknown key 'bogus'" in r.stderr, r.stderr
    assert "S3cretPw" not in r.stderr, r.stderr


@pytest.mark.deadline(60)
def test_a_repeated_password_parameter_is_refused_and_masked(etcd):
    require_binary("weir")
    e = etcd()
    r = weir_t(e.url("p", query="?password=xxxxxxxx&user=root&password=R3alPw"))
    assert r.returncode == 1 and "'password' is given twice" in r.stderr, r.stderr
    assert "R3alPw" not in r.stderr and "xxxxxxxx" not in r.stderr, r.stderr


@pytest.mark.parametrize("url,expect", [
    ("etcd://127.0.0.1:%(port)d/", "the prefix is empty"),
    ("etcd://127.0.0.1:%(port)d//", "the prefix is empty"),
    ("etcd://127.0.0.1:%(port)d", "needs a prefix"),
    ("etcd://127.0.0.1/p", "HOST:PORT"),
    ("etcd://127.0.0.1:/p", "HOST:PORT"),
    ("etcd://:%(port)d/p", "HOST:PORT"),
    ("etcd:///p", "endpoint"),
    ("etcd://127.0.0.1:%(port)d?user=a/p", "needs a prefix"),
    ("etcd://127.0.0.1:%(port)d/p?user=a", "go together"),
    ("etcd://127.0.0.1:%(port)d/p?bogus=1", "unknown parameter"),
    ("etcd://127.0.0.1:%(port)d/p?user", "without '='"),
])
def test_bad_urls_are_refused_clearly(etcd, url, expect):
    require_binary("weir")
    e = etcd()
    url = url % {"port": e.members[0].client_port}
    r = weir_t(url)
    assert r.returncode == 1, r.stderr
    assert expect in r.stderr, r.stderr


@pytest.mark.parametrize("suffix", ["/p/", "/p//", "/p?", "/p/?"])
def test_a_trailing_slash_or_empty_query_is_the_same_prefix(etcd, suffix):
    require_binary("weir")
    e = etcd()
    base_keys(e)
    r = weir_t("etcd://%s%s" % (e.members[0].endpoint, suffix))
    assert r.returncode == 0, r.stderr


def test_a_sibling_prefix_is_not_read(etcd):
    """/p and /p2, /p-x: keys of one are not the other's."""
    require_binary("weir")
    e = etcd()
    base_keys(e)
    e.put("/p2/locations/all", "bogus = 1\n")
    e.put("/p-x/servers/main", "bogus = 1\n")
    e.put("/pservers/x", "bogus = 1\n")
    r = weir_t(e.url("p"))
    assert r.returncode == 0, r.stderr
    r = subprocess.run([binary("weir"), "config", "pull", e.url("p")], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0 and "bogus" not in r.stdout, r.stdout


def test_a_nested_prefix(etcd):
    require_binary("weir")
    e = etcd()
    base_keys(e, prefix="a/b/c")
    base_keys(e, prefix="a/b")  # the parent has its own config
    r = weir_t(e.url("a/b/c"))
    assert r.returncode == 0, r.stderr
    # the parent's read must not include the child prefix's keys (they
    # are /a/b/c/..., i.e. section "c": not a configuration key)
    r = weir_t(e.url("a/b"))
    assert r.returncode == 1 and "/a/b/c/servers/main: not a configuration key" in r.stderr, \
        r.stderr


@pytest.mark.parametrize("pw", ["ab", "", "a"])
def test_a_short_password_in_the_url_is_no_heap_overflow(tmp_path, pw):
    require_binary("weir")
    url = "etcd://127.0.0.1:%d/p?user=root&password=%s" % (free_port(), pw)
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0")
    r = subprocess.run([binary("weir"), "-t", "-c", url], capture_output=True, text=True,
                       timeout=60, env=env)
    assert "AddressSanitizer" not in r.stderr, r.stderr[:1500]
    assert r.returncode == 1 and "etcd cannot be read" in r.stderr, r.stderr


@pytest.mark.deadline(60)
def test_pull_with_a_very_long_url_still_gives_a_file_that_loads(etcd, tmp_path):
    """The first line of pull's output names the URL: one of over 1 KiB
    (many endpoints) must not swallow the first section's header."""
    require_binary("weir")
    e = etcd()
    base_keys(e)
    url = "etcd://%s/p" % ",".join([e.members[0].endpoint] * 80)
    assert len(url) > 1100
    r = subprocess.run([binary("weir"), "config", "pull", url], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    first, rest = r.stdout.split("\n", 1)
    assert "[" not in first.split("/p", 1)[-1] or first.endswith("]"), first[-200:]
    f = tmp_path / "pulled.toml"
    f.write_text(r.stdout)
    t = subprocess.run([binary("weir"), "-t", "-c", str(f)], capture_output=True, text=True,
                       timeout=30)
    assert t.returncode == 0, (first[-200:], t.stderr)


@pytest.mark.deadline(60)
def test_a_prefix_over_256_bytes_is_refused_and_touches_nothing(etcd, tmp_path):
    require_binary("weir")
    e = etcd()
    f = tmp_path / "w.toml"
    f.write_text('[servers.main]\naddr = "127.0.0.1:%d"\nlocations = ["all"]\n\n'
                 '[locations.all]\necho = true\n' % free_port())
    neighbour = "/" + "a" * 255 + "b/locations/x"
    e.put(neighbour, "echo = true\n")
    for argv in (["config", "push", str(f), e.url("a" * 700)], ["config", "pull", e.url("a" * 257)],
                 ["-t", "-c", e.url("a" * 300)]):
        r = subprocess.run([binary("weir")] + argv, capture_output=True, text=True, timeout=30)
        assert r.returncode == 1 and "longer than 256 bytes" in r.stderr, (argv[0], r.stderr)
    assert e.ctl("get", "--prefix", "/", "--keys-only").split() == [neighbour]
    # 256 bytes is fine.
    r = subprocess.run([binary("weir"), "config", "push", str(f), e.url("a" * 255)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert weir_t(e.url("a" * 255)).returncode == 0
