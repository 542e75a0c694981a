"""A fleet of weir instances configured through a real etcd (docs/config.md,
"Configuration in etcd"; docs/operations.md, "A fleet on etcd").

What must hold: the keys under a prefix load like the file they came from
(errors name the key and the line inside its value); a change reaches
every instance, an invalid one reaches none and is reported; etcd away
(stopped, a member killed) fails no request, and the watch resumes,
compaction included; a cache file lets an instance start without etcd;
admin writes are compare-and-swaps (a stale one is a 409, never a lost
update); the instance registry and the lock follow instances that die.
"""
import http.client
import json
import os
import signal
import statistics
import subprocess
import threading
import time

import pytest

import conftest

import backends as B
from conftest import binary, free_port, require_binary, wait_port
from etcdutil import Etcd
from test_admin import Admin

pytestmark = pytest.mark.skipif(not os.access("/usr/bin/etcd", os.X_OK),
                                reason="etcd-server not installed")

LOCATION = 'upstream = "u"\nresponse_set_headers = ["X-Rev: %s"]\n'


@pytest.fixture
def etcd(tmp_path):
    made = []

    def make(members=1):
        e = Etcd(tmp_path, members).start()
        made.append(e)
        return e

    yield make
    for e in made:
        e.close()


def seed(e, prefix, backend_addr, rev="1"):
    e.put("/%s/locations/all" % prefix, LOCATION % rev)
    e.put("/%s/upstreams/u" % prefix, 'addrs = ["%s"]\n' % backend_addr)


class Instance:
    def __init__(self, proc, port, admin_port, local):
        self.proc = proc
        self.port = port
        self.admin = Admin(admin_port, token=None)
        self.local = local

    def get(self, path="/", timeout=5):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            c.request("GET", path)
            r = c.getresponse()
            r.read()
            return r
        finally:
            c.close()

    def rev(self):
        return self.get().getheader("X-Rev")

    def fleet(self):
        r = self.admin.call("GET", "/api/fleet")
        assert r.status == 200, r.json
        return r.json


@pytest.fixture
def instances(tmp_path, start_proc):
    """Factory: instances(url, n, ttl="3s", cache=True) -> [Instance]: n weir
    processes on one prefix, each with its own --local file (its server,
    its admin API, its cache and id)."""
    count = [0]

    def make(url, n=1, ttl="3s", cache=True, wait=True, extra="", basic=""):
        require_binary("weir")
        out = []
        for _ in range(n):
            i = count[0]
            count[0] += 1
            port, aport = free_port(), free_port()
            local = tmp_path / ("local-%d.toml" % i)
            cachekey = ('config_cache = "%s"' % (tmp_path / ("cache-%d.toml" % i))
                        if cache else "")
            head = ('[basic]\nthreads = 1\ninstance_id = "w%d"\ninstance_ttl = "%s"\n%s\n'
                    % (i, ttl, cachekey))
            rest = ('[admin]\naddr = "127.0.0.1:%d"\n\n'
                    '[servers.main]\naddr = "127.0.0.1:%d"\nlocations = ["all"]\n%s'
                    % (aport, port, extra))
            local.write_text(head + basic + rest)
            p = start_proc([binary("weir"), "-c", url, "--local", str(local)], port,
                           "weir-w%d" % i, wait=wait)
            if wait:
                assert wait_port(aport, p.proc), p.describe()
            out.append(Instance(p, port, aport, local))
        return out

    return make



def wait_for(pred, timeout=10.0, step=0.05):
    return conftest.wait_for(pred, timeout, step)


# ---- config in etcd ----


def test_push_then_pull_gives_the_same_sections_and_weir_t_validates_them(etcd, tmp_path):
    require_binary("weir")
    e = etcd()
    f = tmp_path / "weir.toml"
    f.write_text('[basic]\nthreads = 1\n\n[servers.main]\naddr = "127.0.0.1:%d"\n'
                 'locations = ["all"]\n\n[locations.all]\nupstream = "u"\n'
                 'path = "/"\n\n[upstreams.u]\naddrs = ["127.0.0.1:9"]\n'
                 "# a comment [not.a.header]\n" % free_port())
    url = e.url("p")
    r = subprocess.run([binary("weir"), "config", "push", str(f), url], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert e.get("/p/upstreams/u").startswith('addrs = ["127.0.0.1:9"]')
    assert e.get("/p/basic") == "threads = 1\n"
    # Pushing again without a section deletes its key: one transaction.
    f.write_text(f.read_text().replace("[basic]\nthreads = 1\n", ""))
    r = subprocess.run([binary("weir"), "config", "push", str(f), url], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0 and "1 keys deleted" in r.stdout, r.stdout + r.stderr
    assert e.get("/p/basic") == ""
    r = subprocess.run([binary("weir"), "config", "pull", url], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    pulled = tmp_path / "pulled.toml"
    pulled.write_text(r.stdout)
    assert "[upstreams.u]" in r.stdout and "[servers.main]" in r.stdout
    for cmd in ([binary("weir"), "-t", "-c", str(pulled)], [binary("weir"), "-t", "-c", url]):
        t = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        assert t.returncode == 0, t.stderr


def test_push_refuses_an_invalid_file_and_writes_nothing(etcd, tmp_path):
    require_binary("weir")
    e = etcd()
    f = tmp_path / "bad.toml"
    f.write_text('[upstreams.u]\naddrs = ["127.0.0.1:9"]\nbogus = 1\n')
    r = subprocess.run([binary("weir"), "config", "push", str(f), e.url("p")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "bad.toml:3: unknown key 'bogus'" in r.stderr and "nothing pushed" in r.stderr
    assert e.ctl("get", "--prefix", "/p/", "--keys-only").strip() == ""
    # Sub-table headers cannot be a key's value: refused with the line.
    f.write_text('[servers.s]\naddr = "127.0.0.1:%d"\nlocations = ["l"]\n'
                 '[servers.s.sni_routes]\n"a.example" = "u"\n[locations.l]\necho = true\n'
                 % free_port())
    r = subprocess.run([binary("weir"), "config", "push", str(f), e.url("p")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "bad.toml:4:" in r.stderr, r.stderr


@pytest.mark.parametrize("key,value,expect", [
    ("/p/upstreams/u", 'addrs = ["127.0.0.1:9"]\nbogus = 1\n',
     "/p/upstreams/u:2: unknown key 'bogus' in [upstreams.u]"),
    ("/p/upstreams/u", 'addrs = ["127.0.0.1:9"\n', "/p/upstreams/u:1:9: unterminated array"),
    ("/p/upstreams/u", 'addrs = ["127.0.0.1:9"]\n[locations.evil]\necho = true\n',
     "/p/upstreams/u:2: a fragment holds one section's keys"),
    ("/p/serverz/x", "a = 1\n", "/p/serverz/x: not a configuration key"),
    ("/p/servers", "a = 1\n", "/p/servers: not a configuration key"),
    ("/p/basic", 'threads = 1\nconfig_cache = "/tmp/x"\n',
     "/p/basic:2: 'config_cache' is the instance's own"),
    ("/p/locations/a\"b", "echo = true\n", "a section name has no"),
])
def test_errors_name_the_key_and_the_line_in_its_value(etcd, key, value, expect):
    require_binary("weir")
    e = etcd()
    e.put("/p/servers/main", 'addr = "127.0.0.1:%d"\nlocations = ["all"]\n' % free_port())
    e.put("/p/locations/all", "echo = true\n")
    e.put("/p/upstreams/u", 'addrs = ["127.0.0.1:9"]\n')
    e.put(key, value)
    r = subprocess.run([binary("weir"), "-t", "-c", e.url("p")], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 1, r.stdout
    assert expect in r.stderr, r.stderr


def test_a_section_of_the_local_file_replaces_etcds(etcd, backend, instances):
    e = etcd()
    b = backend(B.fixed(b"ok\n"))
    seed(e, "p", b.addr)
    # etcd's own [servers.main] would listen elsewhere: the local one wins.
    e.put("/p/servers/main", 'addr = "127.0.0.1:%d"\nlocations = ["all"]\n' % free_port())
    [w] = instances(e.url("p"))
    assert w.get().status == 200 and w.rev() == "1"


def test_no_etcd_and_no_cache_exits_with_a_clear_error(tmp_path):
    require_binary("weir")
    url = "etcd://127.0.0.1:%d/p" % free_port()
    r = subprocess.run([binary("weir"), "-c", url], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "etcd cannot be read" in r.stderr and "config_cache" in r.stderr, r.stderr
    r = subprocess.run([binary("weir"), "-c", "etcd://127.0.0.1:2379"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1 and "needs a prefix" in r.stderr, r.stderr
    r = subprocess.run([binary("weir"), "-c", str(tmp_path / "x.toml"), "--local", "y"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--local goes with -c etcd://" in r.stderr


# ---- a fleet of three ----


@pytest.mark.deadline(120)
def test_a_change_reaches_all_three_and_an_invalid_one_none(etcd, backend, instances):
    e = etcd()
    b = backend(B.fixed(b"ok\n"))
    seed(e, "p", b.addr)
    ws = instances(e.url("p"), 3)
    assert [w.rev() for w in ws] == ["1"] * 3
    times = []
    for k in range(2, 12):
        t0 = time.monotonic()
        e.put("/p/locations/all", LOCATION % k)
        for w in ws:
            assert wait_for(lambda: w.rev() == str(k)), (k, w.rev())
        times.append(time.monotonic() - t0)
    print("convergence of 3 instances over %d changes: p50 %.1f ms, max %.1f ms"
          % (len(times), statistics.median(times) * 1000, max(times) * 1000))
    # An invalid change: rejected by all three, reported, the old config serves.
    e.put("/p/locations/all", LOCATION % 99 + "bogus = 1\n")
    for w in ws:
        f = wait_for(lambda: w.fleet()["config"]["rejected"] >= 1 and w.fleet())
        assert f["config"]["rejected_errors"] == [
            "/p/locations/all:3: unknown key 'bogus' in [locations.all]"], f
        assert w.rev() == "11"
        assert "etcd revision" in w.proc.stderr() and "rejected" in w.proc.stderr()
    # Fixed again: served.
    e.put("/p/locations/all", LOCATION % 12)
    for w in ws:
        assert wait_for(lambda: w.rev() == "12")
    # The registry: three instances, each serving the newest revision.
    rev = ws[0].fleet()["config"]["revision"]
    f = wait_for(lambda: all(i["revision"] == rev for i in ws[0].fleet()["instances"]) and
                 ws[0].fleet())
    assert sorted(i["id"] for i in f["instances"]) == ["w0", "w1", "w2"], f
    for i in f["instances"]:
        assert i["version"] and i["listen"] and i["admin"] and i["started"] > 0


def load_loop(ws, stop, counts):
    """Keep-alive clients, one per instance, counting statuses and errors."""
    def run(w):
        c = None
        while not stop.is_set():
            try:
                if c is None:
                    c = http.client.HTTPConnection("127.0.0.1", w.port, timeout=5)
                c.request("GET", "/")
                r = c.getresponse()
                r.read()
                counts["ok" if r.status == 200 else "bad"] += 1
            except (OSError, http.client.HTTPException):
                counts["errors"] += 1
                c = None
    ts = [threading.Thread(target=run, args=(w,)) for w in ws]
    for t in ts:
        t.start()
    return ts


@pytest.mark.deadline(120)
def test_etcd_stopped_under_load_fails_nothing_and_the_watch_resumes(etcd, backend,
                                                                    instances):
    e = etcd()
    b = backend(B.fixed(b"ok\n"))
    seed(e, "p", b.addr)
    ws = instances(e.url("p"), 2)
    stop = threading.Event()
    counts = {"ok": 0, "bad": 0, "errors": 0}
    ts = load_loop(ws, stop, counts)
    try:
        time.sleep(1)
        e.stop()
        # Past 15 s: reconnect rounds at the 5 s cap, and the 3 s lease
        # expired several times over.
        time.sleep(16)
        f = ws[0].fleet()
        assert f["config"]["connected"] is False and f["config"]["error"], f
        assert f["instances"] is None and f["error"]
        # A write has nowhere to go: 503, and nothing changes.
        r = ws[0].admin.call("POST", "/api/upstreams/u/backends", {"addr": "127.0.0.1:9"})
        assert r.status == 503 and "etcd cannot be written" in r.json["error"], r.json
        e.restart()
        e.put("/p/locations/all", LOCATION % 2)
        for w in ws:
            assert wait_for(lambda: w.rev() == "2", timeout=15), w.proc.describe()
        time.sleep(1)
    finally:
        stop.set()
        for t in ts:
            t.join()
    assert counts["bad"] == 0 and counts["errors"] == 0, counts
    assert counts["ok"] > 100, counts
    for w in ws:
        assert "reconnecting" in w.proc.stderr()
        # Registered again once etcd is back (the old lease expired meanwhile).
    assert wait_for(lambda: len((ws[0].fleet()["instances"] or [])) == 2, timeout=10)


@pytest.mark.deadline(120)
def test_one_member_of_three_killed_changes_nothing(etcd, backend, instances):
    e = etcd(3)
    b = backend(B.fixed(b"ok\n"))
    seed(e, "p", b.addr)
    ws = instances(e.url("p"), 2)
    stop = threading.Event()
    counts = {"ok": 0, "bad": 0, "errors": 0}
    ts = load_loop(ws, stop, counts)
    try:
        time.sleep(1)
        e.kill(e.members[0])  # the member the instances talk to first
        others = e.members[1:]
        e.put("/p/locations/all", LOCATION % 2, members=others)
        for w in ws:
            assert wait_for(lambda: w.rev() == "2", timeout=15), w.proc.describe()
        f = wait_for(lambda: len(ws[0].fleet()["instances"] or []) == 2 and ws[0].fleet())
        assert f, ws[0].fleet()
        time.sleep(1)
    finally:
        stop.set()
        for t in ts:
            t.join()
    assert counts["bad"] == 0 and counts["errors"] == 0, counts


@pytest.mark.deadline(120)
def test_a_compacted_revision_makes_the_watch_read_everything_again(etcd, backend, instances):
    e = etcd(3)
    b = backend(B.fixed(b"ok\n"))
    seed(e, "p", b.addr)
    first = e.members[0]
    # The instance knows only the first member: it is away while the
    # others change and compact past the revision its watch resumes from.
    [w] = instances(e.url("p", members=[first]))
    e.stop(first)
    others = e.members[1:]
    e.put("/p/locations/all", LOCATION % 2, members=others)
    e.put("/p/locations/all", LOCATION % 3, members=others)
    rev = e.ctl("get", "/p/locations/all", "-w", "json", members=others)
    e.ctl("compact", str(json.loads(rev)["header"]["revision"]), members=others)
    e.restart(first)
    assert wait_for(lambda: w.rev() == "3", timeout=20), w.proc.describe()
    assert "was compacted" in w.proc.stderr()


@pytest.mark.deadline(90)
def test_the_cache_starts_an_instance_without_etcd(etcd, backend, instances, tmp_path):
    e = etcd()
    b = backend(B.fixed(b"ok\n"))
    seed(e, "p", b.addr)
    [w] = instances(e.url("p"))
    cache = tmp_path / "cache-0.toml"
    assert wait_for(lambda: cache.exists())
    text = cache.read_text()
    assert text.startswith("# weir config from etcd://") and "[upstreams.u]" in text
    w.proc.stop()
    w.proc.checked = True
    e.stop()
    # etcd down: the same instance starts from its cache (same local file).
    port = free_port()
    local = w.local.read_text().replace(str(w.port), str(port))
    w.local.write_text(local)
    p = subprocess.Popen([binary("weir"), "-c", e.url("p"), "--local", str(w.local)],
                         stdout=subprocess.DEVNULL, stderr=open(tmp_path / "cached.err", "wb"))
    try:
        assert wait_port(port, p), (tmp_path / "cached.err").read_text()
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("GET", "/")
        r = c.getresponse()
        r.read()
        assert r.status == 200 and r.getheader("X-Rev") == "1"
        err = (tmp_path / "cached.err").read_text()
        assert "serving config_cache" in err, err
        # etcd back: changes made there are picked up.
        e.restart()
        e.put("/p/locations/all", LOCATION % 5)

        def rev():
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/")
            r = c.getresponse()
            r.read()
            return r.getheader("X-Rev")
        assert wait_for(lambda: rev() == "5", timeout=20), \
            (tmp_path / "cached.err").read_text()
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=15) == 0
    err = (tmp_path / "cached.err").read_text()
    assert "AddressSanitizer" not in err and "runtime error:" not in err, err


# ---- admin writes ----


def upstream_addrs(w):
    r = w.admin.call("GET", "/api/upstreams/u")
    return sorted(b["addr"] for b in r.json["backends"])


def etcd_addrs(e):
    v = e.get("/p/upstreams/u")
    return sorted(json.loads(v.split("=", 1)[1].strip().splitlines()[0]))


def test_admin_writes_go_to_etcd_with_compare_and_swap(etcd, backend, instances):
    e = etcd()
    b1, b2, b3 = (backend(B.fixed(b"ok\n")) for _ in range(3))
    seed(e, "p", b1.addr)
    ws = instances(e.url("p"), 2)
    # Two instances write the upstream at once, round after round: a write
    # answered 200 is what etcd holds unless a later 200 replaced it, and
    # a 409 wrote nothing; never both lost.
    statuses = []
    bodies = [[b1.addr, b2.addr], [b1.addr, b3.addr]]
    for rnd in range(6):
        res = [None, None]
        go = threading.Barrier(2)

        def put(i):
            go.wait()
            res[i] = ws[i].admin.call("PUT", "/api/upstreams/u",
                                      {"backends": [{"addr": a} for a in bodies[i]]})
        ts = [threading.Thread(target=put, args=(i,)) for i in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        st = [r.status for r in res]
        statuses += st
        assert set(st) <= {200, 409} and 200 in st, [r.json for r in res]
        final = etcd_addrs(e)
        ok = [sorted(bodies[i]) for i in range(2) if st[i] == 200]
        assert final in ok, (final, st)
        for w in ws:
            assert wait_for(lambda: upstream_addrs(w) == final), (upstream_addrs(w), final)
    print("racing admin writes: %s" % statuses)
    # Deterministic: a change the instance rejected leaves its snapshot
    # behind etcd's key, so a write from that snapshot is stale: 409.
    e.put("/p/upstreams/u", 'addrs = ["%s"]\nbogus = 1\n' % b1.addr)
    assert wait_for(lambda: ws[0].fleet()["config"]["rejected"] >= 1)
    r = ws[0].admin.call("PUT", "/api/upstreams/u", {"backends": [{"addr": b2.addr}]})
    assert r.status == 409 and "changed in etcd" in r.json["error"], r.json
    assert "bogus" in e.get("/p/upstreams/u")
    # Back to valid: served, and a POST adds to what etcd holds.
    served = ws[0].fleet()["config"]["revision"]
    e.put("/p/upstreams/u", 'addrs = ["%s"]\n' % b1.addr)
    assert wait_for(lambda: ws[0].fleet()["config"]["revision"] > served)
    r = ws[0].admin.call("POST", "/api/upstreams/u/backends", {"addr": b2.addr})
    assert r.status == 200 and r.json["written"] == "etcd", r.json
    assert etcd_addrs(e) == sorted([b1.addr, b2.addr])
    for w in ws:
        assert wait_for(lambda: upstream_addrs(w) == sorted([b1.addr, b2.addr]))
    # Draining stays this instance's runtime state: etcd is not written.
    before = e.get("/p/upstreams/u")
    r = ws[0].admin.call("PATCH", "/api/upstreams/u/backends/" + b2.addr, {"drain": True})
    assert r.status == 200, r.json
    assert e.get("/p/upstreams/u") == before


# ---- registry and lock ----


@pytest.mark.deadline(90)
def test_a_killed_instance_leaves_the_registry_and_its_lock_expires(etcd, backend, instances):
    e = etcd()
    b = backend(B.fixed(b"ok\n"))
    seed(e, "p", b.addr)
    ws = instances(e.url("p"), 3, ttl="2s")
    f = wait_for(lambda: len(ws[0].fleet()["instances"] or []) == 3 and ws[0].fleet())
    assert f, ws[0].fleet()
    holders = [w for w in ws if w.fleet()["lock"]["held"]]
    assert len(holders) == 1, [w.fleet()["lock"] for w in ws]
    h = holders[0]
    fencing = h.fleet()["lock"]["fencing"]
    h.proc.proc.kill()
    h.proc.proc.wait(timeout=10)
    h.proc.stop()
    h.proc.checked = True
    rest = [w for w in ws if w is not h]
    t0 = time.monotonic()
    new = wait_for(lambda: [w for w in rest if w.fleet()["lock"]["held"]], timeout=15)
    took = time.monotonic() - t0
    assert len(new) == 1, [w.fleet() for w in rest]
    assert new[0].fleet()["lock"]["fencing"] > fencing
    f = wait_for(lambda: len(rest[0].fleet()["instances"]) == 2 and rest[0].fleet())
    assert f and h.admin.port not in [i["admin"] for i in f["instances"]]
    print("lock taken over %.1f s after its holder was killed (TTL 2 s)" % took)
    # A graceful stop takes the key away at once (the lease is revoked).
    s = rest[0]
    s.proc.stop()
    s.proc.checked = True
    f = rest[1].fleet()
    assert [i["id"] for i in f["instances"]] == [rest[1].fleet()["id"]], f


def test_etcd_with_authentication(etcd, backend, instances, tmp_path):
    e = etcd()
    b = backend(B.fixed(b"ok\n"))
    seed(e, "p", b.addr)
    e.ctl("user", "add", "root:rootpw")
    e.ctl("auth", "enable")
    require_binary("weir")
    r = subprocess.run([binary("weir"), "-t", "-c", e.url("p")], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 1 and "etcd cannot be read" in r.stderr, r.stderr
    r = subprocess.run([binary("weir"), "-t", "-c", e.url("p", query="?user=root&password=bad")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "authentication failed" in r.stderr, r.stderr
    [w] = instances(e.url("p", query="?user=root&password=rootpw"))
    assert w.rev() == "1"
    e.ctl("--user", "root:rootpw", "put", "/p/locations/all", LOCATION % 2)
    assert wait_for(lambda: w.rev() == "2")
    assert "rootpw" not in w.fleet()["config"]["source"]
    # A password shorter than its mask, not last in the query.
    e.ctl("--user", "root:rootpw", "user", "add", "w:x")
    e.ctl("--user", "root:rootpw", "user", "grant-role", "w", "root")
    [w2] = instances(e.url("p", query="?password=x&user=w"))
    assert w2.rev() == "2"
    assert w2.fleet()["config"]["source"].endswith("/p?password=***&user=w")


def test_sighup_and_api_reload_read_the_local_file_again(etcd, backend, instances):
    e = etcd()
    b = backend(B.fixed(b"ok\n"))
    seed(e, "p", b.addr)
    [w] = instances(e.url("p"))
    text = w.local.read_text()
    # A bad local file is refused; the good one and etcd's keys stay.
    w.local.write_text(text + "bogus_key = 1\n")
    r = w.admin.call("POST", "/api/reload")
    assert r.status == 409, r.json
    assert any("local-0.toml:" in x and "bogus_key" in x for x in r.json["errors"]), r.json
    # The caller's error, not a rejected etcd change.
    assert w.fleet()["config"]["rejected"] == 0
    assert "etcd revision" not in w.proc.stderr().split("bogus_key")[-1]
    e.put("/p/locations/all", LOCATION % 2)  # still served: the old local text stays
    assert wait_for(lambda: w.rev() == "2"), w.proc.describe()
    # A good change of the local file, by SIGHUP: its section replaces etcd's.
    w.local.write_text(text + '\n[locations.all]\nupstream = "u"\n'
                       'response_set_headers = ["X-Rev: local"]\n')
    w.proc.signal(signal.SIGHUP)
    assert wait_for(lambda: w.rev() == "local"), w.proc.describe()
    applied = w.fleet()["config"]["applied"]
    e.put("/p/locations/all", LOCATION % 3)  # shadowed by the local file
    assert wait_for(lambda: w.fleet()["config"]["applied"] > applied)
    assert w.rev() == "local"


def test_an_upstream_of_the_local_file_is_not_written_to_etcd(etcd, backend, instances):
    e = etcd()
    b = backend(B.fixed(b"ok\n"))
    e.put("/p/locations/all", LOCATION % 1 + "")
    e.put("/p/locations/all", 'upstream = "mine"\nresponse_set_headers = ["X-Rev: 1"]\n')
    [w] = instances(e.url("p"), extra='\n[upstreams.mine]\naddrs = ["%s"]\n' % b.addr)
    assert w.rev() == "1"
    r = w.admin.call("POST", "/api/upstreams/mine/backends", {"addr": "127.0.0.1:9"})
    assert r.status == 409 and "--local" in r.json["error"], r.json
    assert e.ctl("get", "--prefix", "/p/upstreams/", "--keys-only").strip() == ""


def make_certs(d):
    """A CA, a server certificate for 127.0.0.1 and a client certificate."""
    def run(*a):
        subprocess.run(["openssl"] + list(a), check=True, capture_output=True, timeout=60)
    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"), "-days", "2",
        "-subj", "/CN=weir test CA")
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1"),
                      ("client", "extendedKeyUsage=clientAuth")):
        run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(d / (name + ".key")), "-out", str(d / (name + ".csr")),
            "-subj", "/CN=" + name)
        (d / (name + ".ext")).write_text(ext + "\n")
        run("x509", "-req", "-in", str(d / (name + ".csr")), "-CA", str(d / "ca.crt"),
            "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-out", str(d / (name + ".crt")),
            "-days", "2", "-extfile", str(d / (name + ".ext")))


@pytest.mark.deadline(90)
def test_etcd_over_tls_with_a_client_certificate(tmp_path, backend, instances):
    require_binary("weir")
    make_certs(tmp_path)
    from conftest import free_port as fp
    cport, pport = fp(), fp()
    log = open(tmp_path / "etcd-tls.log", "wb")
    p = subprocess.Popen(
        ["/usr/bin/etcd", "--name", "t", "--data-dir", str(tmp_path / "etcd-tls"),
         "--listen-client-urls", "https://127.0.0.1:%d" % cport,
         "--advertise-client-urls", "https://127.0.0.1:%d" % cport,
         "--listen-peer-urls", "http://127.0.0.1:%d" % pport,
         "--initial-advertise-peer-urls", "http://127.0.0.1:%d" % pport,
         "--initial-cluster", "t=http://127.0.0.1:%d" % pport,
         "--cert-file", str(tmp_path / "server.crt"), "--key-file", str(tmp_path / "server.key"),
         "--trusted-ca-file", str(tmp_path / "ca.crt"), "--client-cert-auth",
         "--log-level", "warn"], stdout=log, stderr=log)
    try:
        ctl = ["/usr/bin/etcdctl", "--endpoints", "https://127.0.0.1:%d" % cport,
               "--cacert", str(tmp_path / "ca.crt"), "--cert", str(tmp_path / "client.crt"),
               "--key", str(tmp_path / "client.key")]
        assert wait_for(lambda: subprocess.run(ctl + ["endpoint", "health"], capture_output=True,
                                               timeout=10).returncode == 0, timeout=30)
        b = backend(B.fixed(b"ok\n"))
        for k, v in (("/p/locations/all", LOCATION % 1),
                     ("/p/upstreams/u", 'addrs = ["%s"]\n' % b.addr)):
            subprocess.run(ctl + ["put", k], input=v.encode(), check=True, timeout=10)
        url = "etcds://127.0.0.1:%d/p" % cport
        # Without the client certificate etcd refuses the handshake.
        r = subprocess.run([binary("weir"), "-t", "-c", url], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 1 and "etcd cannot be read" in r.stderr, r.stderr
        tls = ('etcd_cacert = "%s"\netcd_cert = "%s"\netcd_key = "%s"\n'
               % (tmp_path / "ca.crt", tmp_path / "client.crt", tmp_path / "client.key"))
        [w] = instances(url, basic=tls)
        assert w.rev() == "1"
        subprocess.run(ctl + ["put", "/p/locations/all"], input=(LOCATION % 2).encode(),
                       check=True, timeout=10)
        assert wait_for(lambda: w.rev() == "2"), w.proc.describe()
        assert len(w.fleet()["instances"]) == 1
    finally:
        p.terminate()
        p.wait(timeout=10)
        log.close()
