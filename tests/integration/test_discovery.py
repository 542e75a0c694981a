"""Service discovery (docs/config.md, [upstreams.NAME] discovery): the
backends of an upstream come from DNS A/AAAA or SRV records that a real
DNS server (dnsmasq) or a misbehaving one (dnsutil.FakeDns) answers, and
change while clients keep sending.

What must hold: scaling out and in loses no request, new backends get
traffic, removed ones drain and then get none, a failed, empty, garbled,
truncated or silent answer keeps the last good members (and is counted),
the admin API refuses edits it would lose, and a reload keeps what was
found.
"""
import calendar
import http.client
import re
import subprocess
import threading
import time

import pytest

import backends as B
import dnsutil
import grpcutil as G
from conftest import binary, free_port, require_binary, wait_port
from test_admin import Admin

TOKEN = "disc-token"


@pytest.fixture
def dnsmasq(tmp_path):
    made = []

    def make(hosts=None, srv=None, ttl=1):
        d = dnsutil.Dnsmasq(str(tmp_path / ("dnsmasq%d" % len(made))), ttl=ttl)
        d.hosts = dict(hosts or {})
        d.srv = list(srv or [])
        made.append(d)
        return d.start()

    yield make
    for d in made:
        d.close()


@pytest.fixture
def fake_dns():
    made = []

    def make(ttl=1):
        f = dnsutil.FakeDns(ttl=ttl)
        made.append(f)
        return f

    yield make
    for f in made:
        f.close()
    for f in made:
        assert not f.errors, f.errors


def config(port, aport, addrs, dns_port, kind="dns", every="1s", extra=""):
    return ('[admin]\naddr = "127.0.0.1:%d"\ntoken = "%s"\n\n'
            '[servers.s]\naddr = "127.0.0.1:%d"\nlocations = ["all"]\n\n'
            '[locations.all]\nupstream = "u"\n\n'
            '[upstreams.u]\naddrs = [%s]\ndiscovery = "%s"\n'
            'dns_server = "127.0.0.1:%d"\nupdate_frequency = "%s"\n%s'
            % (aport, TOKEN, port, ", ".join('"%s"' % a for a in addrs), kind, dns_port, every,
               extra))


def start_weir(start_proc, tmp_path, text, name="weir.toml"):
    require_binary("weir")
    path = tmp_path / name
    path.write_text(text)
    port = int(re.search(r'\[servers\.s\]\naddr = "127\.0\.0\.1:(\d+)"', text).group(1))
    aport = int(re.search(r'\[admin\]\naddr = "127\.0\.0\.1:(\d+)"', text).group(1))
    w = start_proc([binary("weir"), "-c", str(path), "--threads", "2"], port, "weir")
    assert wait_port(aport, w.proc), w.describe()
    return w, Admin(aport, token=TOKEN), path


def upstream(adm, name="u"):
    r = adm.call("GET", "/api/upstreams/" + name)
    assert r.status == 200, r.status
    return r.json


def members(adm, name="u", draining=False):
    """{addr: weight} of the members (draining ones only if asked)."""
    return {b["addr"]: b["weight"] for b in upstream(adm, name)["backends"]
            if draining or not b["draining"]}


def wait_for(pred, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError("timed out waiting for %s (last: %r)" % (what, last))


def wait_members(adm, want, timeout=20.0, name="u"):
    """Waits until the members, draining ones included, are `want`."""
    want = set(want)
    got = [None]

    def check():
        got[0] = members(adm, name, draining=True)
        return set(got[0]) == want

    try:
        wait_for(check, timeout, "members %s" % sorted(want))
    except AssertionError:
        raise AssertionError("members are %r, not %r" % (got[0], sorted(want)))


def get(port, path="/"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


class Load:
    """Keep-alive clients sending GETs in a loop until stop(); counts every
    status and every socket error."""

    def __init__(self, port, clients=4):
        self.port = port
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.statuses = {}
        self.errors = []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]
        for t in self.threads:
            t.start()

    def _run(self):
        c = None
        while not self.stopping.is_set():
            try:
                if c is None:
                    c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
                c.request("GET", "/load")
                r = c.getresponse()
                r.read()
                with self.lock:
                    self.statuses[r.status] = self.statuses.get(r.status, 0) + 1
                if r.getheader("Connection", "").lower() == "close":
                    c.close()
                    c = None
            except (OSError, http.client.HTTPException) as e:
                with self.lock:
                    self.errors.append(repr(e))
                if c:
                    c.close()
                c = None
        if c:
            c.close()

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(30)
        return self.statuses, self.errors


def same_port_backends(backend, hosts):
    """Backends on 127.0.0.N, all on one port (A records carry no port)."""
    first = backend(B.fixed(hosts[0].encode()), host=hosts[0])
    rest = [backend(B.fixed(h.encode()), host=h, port=first.port) for h in hosts[1:]]
    return [first] + rest


def metrics_text(adm):
    c = http.client.HTTPConnection("127.0.0.1", adm.port, timeout=15)
    try:
        c.request("GET", "/metrics", headers={"Authorization": "Bearer " + TOKEN})
        r = c.getresponse()
        assert r.status == 200
        return r.read().decode()
    finally:
        c.close()


def metric_in(text, name, **labels):
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all('%s="%s"' % kv in line for kv in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


# ---------------------------------------------------------------------------
# DNS A records: scale out and in under load


@pytest.mark.deadline(120)
def test_scale_out_and_in_under_load(backend, dnsmasq, start_proc, tmp_path):
    ips = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]
    bs = same_port_backends(backend, ips)
    by_ip = dict(zip(ips, bs))
    p = bs[0].port
    addr = lambda ip: "%s:%d" % (ip, p)  # noqa: E731
    dns = dnsmasq({"svc.test": ips[:1]})
    port, aport = free_port(), free_port()
    w, adm, _ = start_weir(start_proc, tmp_path,
                           config(port, aport, ["svc.test:%d" % p], dns.port))
    assert members(adm) == {addr(ips[0]): 1}
    load = Load(port)
    try:
        wait_for(lambda: bs[0].request_count() > 20, what="traffic on the first backend")

        # Scale out: the new backends get traffic.
        t0 = time.monotonic()
        dns.set_hosts({"svc.test": ips[:3]})
        wait_for(lambda: by_ip[ips[1]].request_count() and by_ip[ips[2]].request_count(),
                 what="traffic on the added backends")
        print("DNS change to traffic on the new backends: %.2f s" % (time.monotonic() - t0))
        assert set(members(adm)) == {addr(ip) for ip in ips[:3]}

        # Scale in and replace: .2 and .3 go, .5 comes.
        dns.set_hosts({"svc.test": [ips[2], ips[3]]})
        wait_members(adm, [addr(ips[2]), addr(ips[3])])
        wait_for(lambda: by_ip[ips[3]].request_count(), what="traffic on the replacement")
        time.sleep(1.0)  # requests already sent when the members changed
        gone = [by_ip[ips[0]].request_count(), by_ip[ips[1]].request_count()]
        kept = by_ip[ips[2]].request_count()
        time.sleep(3.0)
        assert [by_ip[ips[0]].request_count(), by_ip[ips[1]].request_count()] == gone
        assert by_ip[ips[2]].request_count() > kept

        # DNS down for a while: the members stay, and so does the traffic.
        failures = upstream(adm)["discovery"]["failures"]
        dns.stop()
        wait_for(lambda: upstream(adm)["discovery"]["failures"] > failures + 1,
                 what="failed rounds with the DNS server down")
        assert set(members(adm)) == {addr(ips[2]), addr(ips[3])}
        before = by_ip[ips[3]].request_count()
        wait_for(lambda: by_ip[ips[3]].request_count() > before + 20, what="traffic")
        dns.start()
        dns.set_hosts({"svc.test": ips})
        wait_members(adm, [addr(ip) for ip in ips])
        info = upstream(adm)["discovery"]
        assert info["consecutive_failures"] == 0 and info["last_error"] != ""
    finally:
        statuses, errors = load.stop()
    assert errors == [] and set(statuses) == {200}, (statuses, errors[:5])
    print("requests: %r" % statuses)
    log = w.stderr()
    assert re.search(r"upstream u: .*\+%s.* \(dns, 3 backends\)" % re.escape(addr(ips[1])), log)
    assert re.search(r"upstream u: .*-%s" % re.escape(addr(ips[0])), log)
    assert "discovery" in log and "failure 1 in a row" in log


# ---------------------------------------------------------------------------
# SRV: ports, weights and priorities from the records


def test_srv_records_give_ports_weights_and_priority(backend, dnsmasq, start_proc, tmp_path):
    b1, b2, b3 = (backend(B.fixed(n)) for n in (b"one", b"two", b"three"))
    name = "_http._tcp.svc.test"
    hosts = {"a.test": ["127.0.0.1"]}
    dns = dnsmasq(hosts, [(name, "a.test", b1.port, 0, 10), (name, "a.test", b2.port, 0, 30),
                          (name, "a.test", b3.port, 10, 10)])
    port, aport = free_port(), free_port()
    w, adm, _ = start_weir(start_proc, tmp_path, config(port, aport, [name], dns.port, kind="srv"))
    # The lowest priority with addresses; weights as the records say.
    assert members(adm) == {b1.addr: 10, b2.addr: 30}
    for _ in range(200):
        assert get(port)[0] == 200
    assert b3.request_count() == 0
    assert b2.request_count() > 2 * b1.request_count() > 0
    # The priority-0 records go: the backup takes over.
    dns.set_srv([(name, "a.test", b3.port, 10, 10)])
    wait_members(adm, [b3.addr])
    assert get(port) == (200, b"three")
    # A target without an address does not count: the next priority does.
    dns.set_srv([(name, "nowhere.test", b1.port, 0, 10), (name, "a.test", b2.port, 5, 1)])
    wait_members(adm, [b2.addr])
    assert upstream(adm)["discovery"]["kind"] == "srv"


# ---------------------------------------------------------------------------
# Families and search domains


def test_families_and_search_domains(dnsmasq, start_proc, tmp_path):
    dns = dnsmasq({"svc.test": ["127.0.0.2", "::1"]})
    expect = {"": {"127.0.0.2:8080", "[::1]:8080"}, "ipv4_only = true\n": {"127.0.0.2:8080"},
              "ipv6_only = true\n": {"[::1]:8080"}}
    for i, (extra, want) in enumerate(expect.items()):
        port, aport = free_port(), free_port()
        w, adm, _ = start_weir(start_proc, tmp_path,
                               config(port, aport, ["svc:8080"], dns.port,
                                      extra='dns_search = "test"\n' + extra),
                               name="weir%d.toml" % i)
        assert set(members(adm)) == want, extra
        assert w.stop() == []


# ---------------------------------------------------------------------------
# Answers that must not change anything


@pytest.mark.deadline(150)
@pytest.mark.parametrize("mode", ["servfail", "nxdomain", "empty", "garbage", "overclaim",
                                  "truncated-notcp", "silent"])
def test_bad_answers_keep_the_members(mode, backend, fake_dns, start_proc, tmp_path):
    b = backend(B.fixed(b"kept"))
    dns = fake_dns()
    dns.records[("svc.test", dnsutil.A)] = ["127.0.0.1"]
    port, aport = free_port(), free_port()
    w, adm, _ = start_weir(start_proc, tmp_path,
                           config(port, aport, ["svc.test:%d" % b.port], dns.port,
                                  extra='dns_timeout = "300ms"\n'))
    assert members(adm) == {b.addr: 1}
    info = upstream(adm)["discovery"]
    dns.mode = mode
    wait_for(lambda: upstream(adm)["discovery"]["failures"] >= info["failures"] + 2,
             what="two failed rounds")
    info = upstream(adm)["discovery"]
    assert members(adm) == {b.addr: 1}
    assert get(port) == (200, b"kept")
    assert info["consecutive_failures"] >= 2 and info["last_error"]
    text = metrics_text(adm)
    assert metric_in(text, "weir_discovery_failures_total", upstream="u") >= 2
    # The server heals with a new answer: it is taken.
    b2 = backend(B.fixed(b"new"), host="127.0.0.2", port=b.port)
    dns.records[("svc.test", dnsutil.A)] = ["127.0.0.2"]
    dns.mode = "ok"
    wait_members(adm, [b2.addr])
    assert get(port) == (200, b"new")
    assert upstream(adm)["discovery"]["consecutive_failures"] == 0


def test_truncated_answer_is_read_over_tcp(fake_dns, start_proc, tmp_path):
    dns = fake_dns()
    ips = ["127.0.1.%d" % i for i in range(1, 61)]  # ~1 KB of answers over 512 bytes
    dns.records[("svc.test", dnsutil.A)] = ips
    dns.mode = "truncated"
    port, aport = free_port(), free_port()
    w, adm, _ = start_weir(start_proc, tmp_path,
                           config(port, aport, ["svc.test:9000"], dns.port))
    assert set(members(adm)) == {"%s:9000" % ip for ip in ips}
    assert dns.tcp_queries > 0


# ---------------------------------------------------------------------------
# Health checks: a newcomer serves only once its checks pass


def test_newcomers_wait_for_their_health_checks(backend, dnsmasq, start_proc, tmp_path):
    ips = ["127.0.0.2", "127.0.0.3"]
    good = backend(B.fixed(b"good"), host=ips[0])
    sick = backend(B.fixed(b"sick", status=500), host=ips[1], port=good.port)
    dns = dnsmasq({"svc.test": ips[:1]})
    port, aport = free_port(), free_port()
    w, adm, _ = start_weir(start_proc, tmp_path,
                           config(port, aport, ["svc.test:%d" % good.port], dns.port,
                                  extra='health_check = "http:///health"\n'
                                        'health_check_interval = "200ms"\n'))
    wait_for(lambda: all(b["healthy"] for b in upstream(adm)["backends"]), what="healthy")
    dns.set_hosts({"svc.test": ips})
    wait_members(adm, [good.addr, sick.addr])
    for _ in range(3):  # a few check intervals
        assert not {b["addr"]: b["healthy"] for b in upstream(adm)["backends"]}[sick.addr]
        time.sleep(0.3)
    for _ in range(50):
        assert get(port) == (200, b"good")
    assert sick.request_count() and all(r.path == "/health" for r in sick.requests)


# ---------------------------------------------------------------------------
# Config: warnings and errors


def check_config(tmp_path, text, name="t.toml"):
    path = tmp_path / name
    path.write_text(text)
    r = subprocess.run([binary("weir"), "-t", "-c", str(path)], capture_output=True, text=True,
                       timeout=60)
    return r.returncode, r.stdout + r.stderr, str(path)


def test_config_warnings_and_errors(dnsmasq, tmp_path):
    require_binary("weir")
    dns = dnsmasq({"svc.test": ["127.0.0.2"]})
    base = config(free_port(), free_port(), ["nothing.test:80"], dns.port)
    rc, out, path = check_config(tmp_path, base)
    assert rc == 0, out
    assert re.search(re.escape(path) + r":\d+: warning: .*nothing\.test", out), out
    bad = [
        ('discovery = "dns"', 'discovery = "consul"', 'expected "static", "dns" or "srv"'),
        ('update_frequency = "1s"', 'update_frequency = "500ms"', "at least 1s"),
        ('update_frequency = "1s"', 'update_frequency = "1s"\nipv4_only = true\nipv6_only = true',
         "both 'ipv4_only' and 'ipv6_only'"),
        ('discovery = "dns"', 'discovery = "static"', "needs discovery"),
        ('discovery = "dns"', 'discovery = "srv"', "invalid SRV name"),
        ('"nothing.test:80"', '"nothing.test"', 'expected "host:port"'),
        ('"nothing.test:80"', '"svc.test:80 0"', "invalid weight"),
        ('update_frequency = "1s"', 'update_frequency = "1s"\ndns_search = "a b!"',
         "not a domain name"),
    ]
    for i, (old, new, msg) in enumerate(bad):
        assert old in base
        rc, out, path = check_config(tmp_path, base.replace(old, new), "bad%d.toml" % i)
        assert rc != 0, (new, out)
        assert re.search(re.escape(path) + r":\d+: ", out) and msg in out, (new, out)


# ---------------------------------------------------------------------------
# Admin API, metrics, reload


def test_admin_api_metrics_and_reload(backend, dnsmasq, start_proc, tmp_path):
    ips = ["127.0.0.2", "127.0.0.3"]
    bs = same_port_backends(backend, ips)
    p = bs[0].port
    dns = dnsmasq({"svc.test": ips})
    port, aport = free_port(), free_port()
    text = config(port, aport, ["svc.test:%d" % p], dns.port)
    w, adm, path = start_weir(start_proc, tmp_path, text)
    wait_members(adm, [b.addr for b in bs])
    d = upstream(adm)["discovery"]
    assert d["kind"] == "dns" and d["last_error"] == ""
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", d["last_success"]), d
    # Edits that the next round would undo are refused; draining is not.
    r = adm.call("POST", "/api/upstreams/u/backends", {"addr": "127.0.0.9:80"})
    assert r.status == 409 and "discovery" in r.json["error"]
    r = adm.call("DELETE", "/api/upstreams/u/backends/" + bs[0].addr)
    assert r.status == 409
    r = adm.call("PATCH", "/api/upstreams/u/backends/" + bs[0].addr, {"weight": 5})
    assert r.status == 409
    r = adm.call("PUT", "/api/upstreams/u", {"backends": [{"addr": "127.0.0.9:80"}]})
    assert r.status == 409
    assert set(members(adm)) == {b.addr for b in bs}
    # An operator's drain holds across rounds that still list the backend.
    r = adm.call("PATCH", "/api/upstreams/u/backends/" + bs[1].addr, {"drain": True})
    assert r.status == 200, r.json
    rounds = upstream(adm)["discovery"]["rounds"]
    wait_for(lambda: upstream(adm)["discovery"]["rounds"] >= rounds + 2, what="two rounds")
    assert set(members(adm)) == {bs[0].addr}
    assert set(members(adm, draining=True)) == {b.addr for b in bs}
    # Metrics: one group per family.
    dns.set_hosts({"svc.test": ips[:1]})
    wait_members(adm, [bs[0].addr])
    text_m = metrics_text(adm)
    assert metric_in(text_m, "weir_discovery_rounds_total", upstream="u", kind="dns") >= 1
    assert metric_in(text_m, "weir_discovery_changes_total", upstream="u", change="removed") == 1
    assert metric_in(text_m, "weir_discovery_last_success_seconds", upstream="u") > 1.7e9
    fams = [l.split()[2] for l in text_m.splitlines() if l.startswith("# TYPE weir_discovery")]
    assert len(fams) == len(set(fams)) == 4
    # A reload with the same discovery starts from what was found, under load.
    load = Load(port, clients=2)
    try:
        wait_for(lambda: bs[0].request_count() > 10, what="traffic")
        r = adm.call("POST", "/api/reload")
        assert r.status == 200, r.json
        assert set(members(adm)) == {bs[0].addr}
        # Other names resolve anew, at the reload.
        dns.set_hosts({"svc.test": ips[:1], "svc2.test": ips})
        path.write_text(text.replace("svc.test:", "svc2.test:"))
        r = adm.call("POST", "/api/reload")
        assert r.status == 200, r.json
        wait_members(adm, [b.addr for b in bs])
        wait_for(lambda: bs[1].request_count() > 0, what="traffic on the re-found backend")
    finally:
        statuses, errors = load.stop()
    assert errors == [] and set(statuses) == {200}, (statuses, errors[:5])


# ---------------------------------------------------------------------------
# gRPC: one channel, backends added behind SRV, calls reach all of them


@pytest.mark.deadline(90)
def test_grpc_calls_reach_backends_added_while_a_channel_streams(dnsmasq, start_proc, tmp_path):
    name = "_grpc._tcp.svc.test"
    hosts = {"a.test": ["127.0.0.1"]}
    first = G.GrpcBackend("b0")
    added = [G.GrpcBackend("b%d" % i) for i in range(1, 5)]
    try:
        dns = dnsmasq(hosts, [(name, "a.test", first.port, 0, 1)])
        port, aport = free_port(), free_port()
        text = G.config(port, [name], upstream={"discovery": "srv",
                                                "dns_server": "127.0.0.1:%d" % dns.port,
                                                "update_frequency": "1s"},
                        extra='[admin]\naddr = "127.0.0.1:%d"\ntoken = "%s"\n' % (aport, TOKEN))
        path = tmp_path / "grpc.toml"
        path.write_text(text)
        w = start_proc([binary("weir"), "-c", str(path), "--threads", "2"], port, "weir")
        assert wait_port(aport, w.proc)
        adm = Admin(aport, token=TOKEN)
        ch = G.channel(port)
        stop = threading.Event()
        errors, calls = [], [0]

        def stream():
            while not stop.is_set():
                try:
                    G.unary(ch, b"x")
                    calls[0] += 1
                except Exception as e:  # noqa: BLE001 - every failure counts
                    errors.append(repr(e))

        t = threading.Thread(target=stream, daemon=True)
        t.start()
        try:
            wait_for(lambda: first.count() > 10, what="calls on the first backend")
            dns.set_srv([(name, "a.test", b.port, 0, 1) for b in [first] + added])
            rounds = upstream(adm, "g")["discovery"]["rounds"]
            # Two rounds after the one that may have been in flight.
            wait_for(lambda: upstream(adm, "g")["discovery"]["rounds"] >= rounds + 3,
                     what="three more rounds")
            got = {b.name: b.count() for b in added}
            assert all(got.values()), got
            dns.set_srv([(name, "a.test", b.port, 0, 1) for b in added])
            wait_members(adm, [b.addr for b in added], name="g")
            time.sleep(1.0)
            before = first.count()
            time.sleep(2.0)
            assert first.count() == before
        finally:
            stop.set()
            t.join(30)
            ch.close()
        assert errors == [] and calls[0] > 0, errors[:5]
    finally:
        for b in [first] + added:
            b.stop()


def test_reloads_while_lookups_hang(backend, fake_dns, start_proc, tmp_path):
    """Reloads while rounds wait on a server that never answers: each reload
    cancels the round in flight (its late answer is dropped), the members
    stay, and the first answer after the server heals applies once."""
    b = backend(B.fixed(b"kept"))
    dns = fake_dns()
    dns.records[("svc.test", dnsutil.A)] = ["127.0.0.1"]
    port, aport = free_port(), free_port()
    text = config(port, aport, ["svc.test:%d" % b.port], dns.port,
                  extra='dns_timeout = "2s"\n')
    w, adm, path = start_weir(start_proc, tmp_path, text)
    assert members(adm) == {b.addr: 1}
    dns.mode = "silent"
    for i in range(4):
        seen = dns.queries()
        wait_for(lambda: dns.queries() > seen, what="a query in flight")
        # Alternate the settings so that every other reload starts discovery
        # anew and the others keep it.
        path.write_text(text.replace('"2s"', '"3s"') if i % 2 else text)
        r = adm.call("POST", "/api/reload")
        assert r.status == 200, r.json
        assert members(adm) == {b.addr: 1}
        assert get(port) == (200, b"kept")
    b2 = backend(B.fixed(b"new"), host="127.0.0.2", port=b.port)
    dns.records[("svc.test", dnsutil.A)] = ["127.0.0.2"]
    dns.mode = "ok"
    wait_members(adm, [b2.addr], timeout=30)
    assert get(port) == (200, b"new")


def rfc3339_ms(text):
    t = time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")
    return int(calendar.timegm(t)) * 1000 + int(text[20:23])


@pytest.mark.parametrize("ttl, extra, want_ms", [
    (3600, 'update_frequency = "2s"\n', 2000),             # bounded above
    (1, 'update_frequency = "30s"\n', 1000),               # the TTL, not the interval
    (0, 'update_frequency = "30s"\n', 1000),               # dns_min_ttl's default
    (1, 'update_frequency = "30s"\ndns_min_ttl = "3s"\n', 3000),
])
def test_the_records_ttl_plans_the_next_round(ttl, extra, want_ms, fake_dns, start_proc,
                                               tmp_path):
    dns = fake_dns(ttl=ttl)
    dns.records[("svc.test", dnsutil.A)] = ["127.0.0.2"]
    port, aport = free_port(), free_port()
    text = config(port, aport, ["svc.test:80"], dns.port).replace(
        'update_frequency = "1s"\n', extra)
    w, adm, _ = start_weir(start_proc, tmp_path, text)
    wait_for(lambda: upstream(adm)["discovery"]["rounds"] >= 2, what="a round")
    d = upstream(adm)["discovery"]
    assert d["next_round"] and d["last_success"], d
    gap = rfc3339_ms(d["next_round"]) - rfc3339_ms(d["last_success"])
    # Both times are taken together when a round ends; the slack is for a
    # slow (sanitizer) build, far below the differences that matter here.
    assert want_ms - 900 <= gap <= want_ms + 900, (gap, d)


def test_a_rotation_of_every_address_keeps_serving(backend, dnsmasq, start_proc, tmp_path):
    """With health checks, newcomers wait for `rise` checks, unless the set
    replaced every healthy member: then they serve at once (and the checks
    take out those that fail), or the upstream would answer 503."""
    ips = ["127.0.0.2", "127.0.0.3"]
    old, new = same_port_backends(backend, ips)
    dns = dnsmasq({"svc.test": ips[:1]})
    port, aport = free_port(), free_port()
    w, adm, _ = start_weir(start_proc, tmp_path,
                           config(port, aport, ["svc.test:%d" % old.port], dns.port,
                                  extra='health_check = "http:///health"\n'
                                        'health_check_interval = "1s"\n'
                                        'health_check_rise = 3\n'))
    wait_for(lambda: all(b["healthy"] for b in upstream(adm)["backends"]), what="healthy")
    load = Load(port, clients=2)
    try:
        wait_for(lambda: old.request_count() > 10, what="traffic")
        dns.set_hosts({"svc.test": ips[1:]})
        wait_members(adm, [new.addr])
        wait_for(lambda: new.request_count() > 20, what="traffic on the new address")
    finally:
        statuses, errors = load.stop()
    assert errors == [] and set(statuses) == {200}, (statuses, errors[:5])
