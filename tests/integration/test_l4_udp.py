"""protocol = "udp" servers (issue 18): datagrams balanced per client
address, replies from the address the client sent to, idle timeout and
`responses`, failover when a backend refuses (ICMP port unreachable),
max_sessions, reload, graceful stop and `weir -u` with sessions open,
`dig` against a real dnsmasq through weir, and nginx's stream module
(`listen ... udp`) on the same input.

Attacks first: a dead backend, every backend dead, a client flood past
max_sessions, the largest and the empty datagram, a backend that
answers a thousand times, a client that sends to a wildcard listener's
second address, a stop or an upgrade while replies are on their way.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

import dnsutil as D
from conftest import binary, free_port, require_binary
from test_metrics import scrape, value
from test_reload import wait_log

TOKEN = "udp-token"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
STREAM_SO = "/usr/lib/nginx/modules/ngx_stream_module.so"


def free_udp_port():
    """A loopback port free for UDP (and for TCP, so tests may use both)."""
    return D.free_dns_port()


def udp_busy(port, host="127.0.0.1"):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((host, port))
        return False
    except OSError:
        return True
    finally:
        s.close()


class UdpServer:
    """A UDP backend on loopback: replies name + b":" + datagram to each
    datagram (or what handler(data) returns: None for no reply, a list for
    several), and remembers what it received and from where.

    Its port is from this pytest worker's own range, never an ephemeral
    one: a port the kernel hands out (bind to 0) may have been another
    test's a moment ago, and datagrams still on their way to it (a weir
    of another pytest-xdist worker sending to its old backend) would be
    counted here."""

    def __init__(self, name="u", handler=None, host="127.0.0.1", port=0):
        self.name = name.encode()
        self.handler = handler
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port or free_udp_port()))
        self.port = self.sock.getsockname()[1]
        self.addr = "%s:%d" % (host, self.port)
        self.got = []  # (data, (ip, port))
        self.lock = threading.Lock()
        self.closed = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.closed:
            try:
                data, peer = self.sock.recvfrom(70000)
            except OSError:
                return
            if peer is None or self.closed:
                return
            with self.lock:
                self.got.append((data, peer))
            out = self.handler(data) if self.handler else [self.name + b":" + data]
            for d in out or []:
                try:
                    self.sock.sendto(d, peer)
                except OSError:
                    pass

    def sources(self):
        with self.lock:
            return {p for _, p in self.got}

    def close(self):
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(5)


@pytest.fixture
def udp():
    made = []

    def make(name="u", handler=None):
        s = UdpServer(name, handler)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def config(port, addrs, extra="", up_extra="", admin=None, basic="", host="127.0.0.1"):
    text = ""
    if basic:
        text += "[basic]\n" + basic
    admin = admin or free_port()
    text += '[admin]\naddr = "127.0.0.1:%d"\ntoken = "%s"\n' % (admin, TOKEN)
    text += ('[servers.d]\naddr = "%s:%d"\nprotocol = "udp"\nupstream = "u"\n'
             'access_log = "json"\n%s'
             '[upstreams.u]\naddrs = [%s]\nalgo = "round_robin"\n%s'
             % (host, port, extra, ", ".join('"%s"' % a for a in addrs), up_extra))
    return text, admin


def start(start_proc, tmp_path, text, admin, threads=2, name="weir", argv=(), prefix=()):
    require_binary("weir")
    path = tmp_path / ("%s.toml" % name)
    path.write_text(text)
    w = start_proc([*prefix, binary("weir"), *argv, "-c", str(path), "--threads", str(threads)],
                   admin, name)
    return path, w


def client(dst=("127.0.0.1", 0), timeout=2.0):
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.settimeout(timeout)
    c.connect(dst)
    return c


def ask(c, data):
    c.send(data)
    return c.recv(70000)


def log_records(w):
    out = []
    for line in w.stdout().splitlines():
        if '"protocol":"UDP"' in line:
            out.append(json.loads(line))
    return out


def wait_records(w, n, timeout=10.0, pred=lambda r: True):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        recs = [r for r in log_records(w) if pred(r)]
        if len(recs) >= n:
            return recs
        time.sleep(0.02)
    return [r for r in log_records(w) if pred(r)]


def weir_check(tmp_path, text):
    """weir -t on text: the finished process (its stderr has the errors)."""
    require_binary("weir")
    path = tmp_path / "w.toml"
    path.write_text(text)
    return subprocess.run([binary("weir"), "-t", "-c", str(path)], capture_output=True,
                          text=True, timeout=20)


# ---- datagrams both ways ----


def test_each_client_gets_its_own_replies_and_stays_on_its_backend(udp, start_proc, tmp_path):
    a, b = udp("a"), udp("b")
    port = free_udp_port()
    text, admin = config(port, [a.addr, b.addr])
    start(start_proc, tmp_path, text, admin)
    clients = [client(("127.0.0.1", port)) for _ in range(12)]
    first = {}
    for round_ in range(5):
        for i, c in enumerate(clients):
            msg = b"c%d-r%d" % (i, round_)
            got = ask(c, msg)
            name, _, body = got.partition(b":")
            assert body == msg
            first.setdefault(i, name)
            assert name == first[i], "a client's session moved backends"
    # Round robin over twelve sessions uses both backends.
    assert set(first.values()) == {b"a", b"b"}
    # Each session has one socket to its backend: a backend sees one
    # source per client, never the client's own address.
    assert len(a.sources()) + len(b.sources()) == 12
    status, _, m = scrape(admin, TOKEN)
    assert value(m, "weir_client_connections", protocol="udp") == 12


def test_largest_and_empty_datagrams_pass(udp, start_proc, tmp_path):
    e = udp("e", handler=lambda d: [d])
    port = free_udp_port()
    text, admin = config(port, [e.addr], extra='idle_timeout = "300ms"\n')
    _, w = start(start_proc, tmp_path, text, admin)
    c = client(("127.0.0.1", port))
    big = os.urandom(65507)  # the most an IPv4 datagram carries
    assert ask(c, big) == big
    assert ask(c, b"") == b""
    assert ask(c, b"x") == b"x"
    recs = wait_records(w, 1)
    assert recs, w.stdout()
    r = recs[0]
    assert (r["bytes_received"], r["bytes_sent"], r["datagrams_received"],
            r["datagrams_sent"]) == (65508, 65508, 3, 3), r
    assert r["upstream_bytes_received"] == 65508 and r["upstream_bytes_sent"] == 65508


def test_wildcard_listener_replies_from_the_address_the_client_used(udp, start_proc, tmp_path):
    """A connected client socket drops a reply from any other address:
    weir must answer from 127.0.0.2 when that is where the client sent."""
    e = udp("e")
    port = free_udp_port()
    text, admin = config(port, [e.addr], host="0.0.0.0")
    start(start_proc, tmp_path, text, admin)
    for host in ("127.0.0.1", "127.0.0.2", "127.0.0.3"):
        c = client((host, port))
        assert ask(c, b"hi " + host.encode()) == b"e:hi " + host.encode()


def has_ipv6():
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


@pytest.mark.parametrize("host", ["[::1]", "[::]"])
def test_ipv6_clients_on_a_v6_and_a_wildcard_v6_listener(udp, start_proc, tmp_path, host):
    if not has_ipv6():
        pytest.skip("no IPv6 loopback")
    e = udp("e")
    port = free_udp_port()
    text, admin = config(port, [e.addr], host=host, extra='idle_timeout = "300ms"\n')
    _, w = start(start_proc, tmp_path, text, admin)
    c = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    c.settimeout(2)
    c.connect(("::1", port))
    assert ask(c, b"six") == b"e:six"
    recs = wait_records(w, 1)
    assert recs and recs[0]["client_ip"] == "::1", recs


def test_responses_ends_each_session_so_every_query_is_balanced(udp, start_proc, tmp_path):
    a, b = udp("a"), udp("b")
    port = free_udp_port()
    text, admin = config(port, [a.addr, b.addr], extra="responses = 1\n")
    _, w = start(start_proc, tmp_path, text, admin, threads=1)
    c = client(("127.0.0.1", port))
    names = [ask(c, b"q%d" % i).partition(b":")[0] for i in range(6)]
    assert names == [b"a", b"b"] * 3 or names == [b"b", b"a"] * 3, names
    recs = wait_records(w, 6)
    assert all(r["termination"] == "-T" and r["status"] == 200 for r in recs[:6]), recs
    assert recs[0]["datagrams_received"] == 1 and recs[0]["datagrams_sent"] == 1
    status, _, m = scrape(admin, TOKEN)
    assert value(m, "weir_client_connections", protocol="udp") == 0
    assert value(m, "weir_udp_sessions_total", server="d", status="200") == 6
    assert value(m, "weir_udp_received_datagrams_total", server="d") == 6


def test_idle_timeout_ends_a_quiet_session_and_logs_it(udp, start_proc, tmp_path):
    a, b = udp("a"), udp("b")
    port = free_udp_port()
    text, admin = config(port, [a.addr, b.addr], extra='idle_timeout = "300ms"\n')
    _, w = start(start_proc, tmp_path, text, admin, threads=1)
    c = client(("127.0.0.1", port))
    one = ask(c, b"1").partition(b":")[0]
    assert ask(c, b"2").partition(b":")[0] == one  # the same session
    recs = wait_records(w, 1, timeout=5)
    assert recs and recs[0]["termination"] == "cT", recs
    assert recs[0]["datagrams_received"] == 2 and recs[0]["bytes_received"] == 2
    assert recs[0]["upstream_addr"] in (a.addr, b.addr)
    two = ask(c, b"3").partition(b":")[0]
    assert two != one, "a new session after the idle timeout goes on round robin"


# ---- backends that fail ----


def test_a_refusing_backend_fails_over_with_the_first_datagram(udp, start_proc, tmp_path):
    live = udp("live")
    dead = free_udp_port()  # nobody: ICMP port unreachable
    port = free_udp_port()
    text, admin = config(port, ["127.0.0.1:%d" % dead, live.addr], extra="responses = 1\n",
                         up_extra="max_retries = 2\n")
    _, w = start(start_proc, tmp_path, text, admin, threads=1)
    for i in range(6):
        c = client(("127.0.0.1", port))
        assert ask(c, b"q%d" % i) == b"live:q%d" % i
    status, _, m = scrape(admin, TOKEN)
    assert value(m, "weir_udp_refused_total", server="d", backend="127.0.0.1:%d" % dead) >= 1


def test_failover_answers_the_empty_datagram_and_ends_on_its_answer(udp, start_proc, tmp_path):
    live = udp("live")
    dead = free_udp_port()
    port = free_udp_port()
    text, admin = config(port, ["127.0.0.1:%d" % dead, live.addr], extra="responses = 1\n",
                         up_extra="max_retries = 2\n")
    _, w = start(start_proc, tmp_path, text, admin, threads=1)
    for msg in (b"", b"q"):
        for _ in range(2):  # round robin: one of the two starts at the dead one
            assert ask(client(("127.0.0.1", port)), msg) == b"live:" + msg
    # Each ended on its answer, the failed attempt's datagram not awaited.
    recs = wait_records(w, 4)
    assert [r["termination"] for r in recs] == ["-T"] * 4, recs
    assert any(r["attempts"] == 2 for r in recs), recs


def test_a_datagram_from_a_backend_starts_no_loop(udp, start_proc, tmp_path):
    """An echo backend that sends to the listener from its own address
    would have its echo proxied back to it, for ever."""
    e = udp("e", handler=lambda d: [d])
    port = free_udp_port()
    text, admin = config(port, [e.addr])
    _, w = start(start_proc, tmp_path, text, admin)
    e.sock.sendto(b"ping", ("127.0.0.1", port))
    assert wait_log(w, "a datagram from backend %s: dropped (a loop)" % e.addr), w.stderr()
    time.sleep(0.5)
    assert len(e.got) == 0, len(e.got)
    assert ask(client(("127.0.0.1", port)), b"x") == b"x"  # others are served


def test_out_of_descriptors_drops_datagrams_and_spares_the_backends(udp, start_proc, tmp_path):
    """With no descriptor left a session cannot get its socket: that is
    weir's shortage, not the backend's, whose health must not change."""
    if not shutil.which("prlimit"):
        pytest.skip("no prlimit")
    mute = udp("mute", handler=lambda d: None)
    port = free_udp_port()
    text, admin = config(port, [mute.addr], extra='idle_timeout = "1s"\n',
                         up_extra="max_fails = 2\n")
    _, w = start(start_proc, tmp_path, text, admin, name="weir",
                 prefix=["prlimit", "--nofile=96:96"])
    clients = [client(("127.0.0.1", port)) for _ in range(150)]
    for c in clients:
        c.send(b"x")
    assert wait_log(w, "Too many open files"), w.stderr()
    time.sleep(2)  # the sessions idle out: descriptors for the admin API again
    _, _, m = scrape(admin, TOKEN)
    assert value(m, "weir_udp_dropped_datagrams_total") > 0, m
    assert value(m, "weir_backend_up", backend=mute.addr) == 1
    assert "ejected" not in w.stderr()


def test_a_steady_sender_moves_off_a_backend_a_reload_removed(udp, start_proc, tmp_path):
    a, b = udp("a"), udp("b")
    port = free_udp_port()
    text, admin = config(port, [a.addr])
    path, w = start(start_proc, tmp_path, text, admin)
    c = client(("127.0.0.1", port))
    assert ask(c, b"1") == b"a:1"
    path.write_text(text.replace(a.addr, b.addr))
    w.signal(signal.SIGHUP)
    assert wait_log(w, "reloaded", timeout=10), w.stderr()
    got = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # one datagram every 100 ms, as syslog
        got.append(ask(c, b"n"))
        if got[-1] == b"b:n":
            break
        time.sleep(0.1)
    assert got[-1] == b"b:n", got[-5:]
    recs = wait_records(w, 1, pred=lambda r: r["error"] == "backend left or unusable"
                        if "error" in r else False)
    assert recs and recs[0]["termination"] == "KT", log_records(w)


def test_a_wildcard_listener_keys_sessions_by_the_address_sent_to(udp, start_proc, tmp_path):
    e = udp("e", handler=lambda d: (time.sleep(0.05), [d])[1])
    port = free_udp_port()
    text, admin = config(port, [e.addr], host="0.0.0.0")
    start(start_proc, tmp_path, text, admin)
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # not connected: one port, two addresses
    c.bind(("127.0.0.1", free_udp_port()))  # not an ephemeral port: no stray datagrams
    c.settimeout(2)
    c.sendto(b"one", ("127.0.0.1", port))
    c.sendto(b"two", ("127.0.0.2", port))
    got = {}
    for _ in range(2):
        d, src = c.recvfrom(100)
        got[d] = src[0]
    assert got == {b"one": "127.0.0.1", b"two": "127.0.0.2"}, got


def test_every_backend_dead_logs_502_and_weir_keeps_serving(udp, start_proc, tmp_path):
    dead1, dead2 = free_udp_port(), free_udp_port()
    port = free_udp_port()
    text, admin = config(port, ["127.0.0.1:%d" % dead1, "127.0.0.1:%d" % dead2],
                         up_extra="max_retries = 1\n")
    _, w = start(start_proc, tmp_path, text, admin, threads=1)
    c = client(("127.0.0.1", port), timeout=0.5)
    c.send(b"anyone?")
    with pytest.raises(socket.timeout):
        c.recv(100)
    recs = wait_records(w, 1, pred=lambda r: r["status"] == 502)
    assert recs and recs[0]["termination"] == "SC" and recs[0]["attempts"] == 2, recs
    assert scrape(admin, TOKEN)[0] == 200


def test_a_backend_that_answers_a_thousand_times_floods_nobody_else(udp, start_proc, tmp_path):
    loud = udp("loud", handler=lambda d: [b"x" * 512] * 1000 if d == b"flood" else [d])
    port = free_udp_port()
    text, admin = config(port, [loud.addr])
    start(start_proc, tmp_path, text, admin)
    f = client(("127.0.0.1", port))
    f.send(b"flood")
    calm = client(("127.0.0.1", port))
    assert ask(calm, b"ping") == b"ping"
    got = 0
    f.settimeout(0.5)
    try:
        while True:
            f.recv(1000)
            got += 1
    except socket.timeout:
        pass
    assert got > 100  # most arrive; the rest a full socket buffer may drop
    assert ask(calm, b"again") == b"again"


def test_max_sessions_drops_the_flood_not_the_sessions_it_has(udp, start_proc, tmp_path):
    e = udp("e")
    port = free_udp_port()
    text, admin = config(port, [e.addr], extra='max_sessions = 3\nidle_timeout = "1s"\n')
    _, w = start(start_proc, tmp_path, text, admin)
    keep = [client(("127.0.0.1", port)) for _ in range(3)]
    for c in keep:
        assert ask(c, b"in") == b"e:in"
    flood = [client(("127.0.0.1", port), timeout=0.2) for _ in range(50)]
    for c in flood:
        c.send(b"more")
    for c in flood[:5]:
        with pytest.raises(socket.timeout):
            c.recv(100)
    for c in keep:  # the sessions it has go on
        assert ask(c, b"still") == b"e:still"
    assert wait_log(w, "max_sessions reached"), w.stderr()
    time.sleep(1.5)  # all idle out: room again
    assert ask(client(("127.0.0.1", port)), b"later") == b"e:later"


# ---- a real DNS server ----


def dig(port, name, tcp=False):
    argv = ["dig", "@127.0.0.1", "-p", str(port), name, "A", "+short", "+tries=1", "+time=2"]
    if tcp:
        argv.append("+tcp")
    return subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout.split()


def test_dig_through_weir_to_dnsmasq_over_udp_and_tcp_on_one_port(start_proc, tmp_path):
    if not shutil.which("dig") or not shutil.which("dnsmasq"):
        pytest.skip("dig or dnsmasq not installed")
    dns = D.Dnsmasq(str(tmp_path / "dnsmasq")).start()
    try:
        dns.set_hosts({"www.test": ["10.1.2.3"], "api.test": ["10.9.8.7", "10.9.8.6"]})
        port = free_udp_port()
        text, admin = config(port, ["127.0.0.1:%d" % dns.port], extra="responses = 1\n")
        text += ('[servers.dt]\naddr = "127.0.0.1:%d"\nprotocol = "tcp"\nupstream = "u"\n'
                 % port)
        _, w = start(start_proc, tmp_path, text, admin)
        for _ in range(20):
            assert dig(port, "www.test") == ["10.1.2.3"]
        assert sorted(dig(port, "api.test")) == ["10.9.8.6", "10.9.8.7"]
        assert dig(port, "www.test", tcp=True) == ["10.1.2.3"]
        recs = wait_records(w, 21)
        assert all(r["termination"] == "-T" for r in recs), recs[:3]
    finally:
        dns.stop()


# ---- active health checks over UDP ----


def wait_up(admin, backend, want, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, _, m = scrape(admin, TOKEN)
        if value(m, "weir_backend_up", backend=backend) == want:
            return True
        time.sleep(0.1)
    return False


def test_dns_health_check_finds_the_server_that_fails_its_queries(udp, start_proc, tmp_path):
    """dns://NAME asks each backend for NAME: dnsmasq answers and stays up;
    a server that answers SERVFAIL, one that is not there (ICMP) and one
    that never answers go down, and queries avoid them."""
    if not shutil.which("dnsmasq") or not shutil.which("dig"):
        pytest.skip("dnsmasq or dig not installed")
    dns = D.Dnsmasq(str(tmp_path / "dnsmasq")).start()
    try:
        dns.set_hosts({"health.test": ["10.0.0.1"], "www.test": ["10.1.2.3"]})

        def servfail(d):
            return [d[:2] + b"\x81\x82" + d[4:12] + d[12:]]  # QR, RD, RA, rcode 2

        bad = udp("bad", handler=servfail)
        mute = udp("mute", handler=lambda d: None)
        gone = "127.0.0.1:%d" % free_udp_port()
        good = "127.0.0.1:%d" % dns.port
        port = free_udp_port()
        text, admin = config(port, [good, bad.addr, mute.addr, gone], extra="responses = 1\n",
                             up_extra='health_check = "dns://health.test"\n'
                                      'health_check_interval = "200ms"\n'
                                      'health_check_timeout = "300ms"\n'
                                      'health_check_fall = 1\nhealth_check_rise = 1\n')
        _, w = start(start_proc, tmp_path, text, admin)
        for b in (bad.addr, mute.addr, gone):
            assert wait_up(admin, b, 0), (b, scrape(admin, TOKEN)[2])
        assert wait_up(admin, good, 1)
        for _ in range(12):
            assert dig(port, "www.test") == ["10.1.2.3"]
        assert "answered SERVFAIL" in w.stderr() and "refused" in w.stderr()
        assert len(bad.got) > 0 and all(d[12:] == bad.got[0][0][12:] for d, _ in bad.got)
    finally:
        dns.stop()


def test_udp_health_check_sends_its_payload_and_wants_the_text(udp, start_proc, tmp_path):
    pong = udp("pong", handler=lambda d: [b"PONG " + d] if d == b"PING" else None)
    other = udp("other", handler=lambda d: [b"WHAT"])
    port = free_udp_port()
    text, admin = config(port, [pong.addr, other.addr],
                         up_extra='health_check = "udp://"\nhealth_check_send = "PING"\n'
                                  'health_check_body = "PONG"\n'
                                  'health_check_interval = "200ms"\n'
                                  'health_check_fall = 1\nhealth_check_rise = 1\n')
    _, w = start(start_proc, tmp_path, text, admin)
    assert wait_up(admin, other.addr, 0)
    assert wait_up(admin, pong.addr, 1)
    assert pong.got[0][0] == b"PING"
    assert "expected text not in the reply" in w.stderr()
    # Every client now goes to the one that passes.
    for _ in range(6):
        assert ask(client(("127.0.0.1", port)), b"PING") == b"PONG PING"


@pytest.mark.parametrize("up,message", [
    ('health_check = "dns://"\n', "takes the name to ask for"),
    ('health_check = "dns://a..b"\n', "takes the name to ask for"),
    ('health_check = "tcp://"\nhealth_check_send = "x"\n', "is for health_check = \"udp://\""),
    ('health_check = "udp://"\nhealth_check_send = "%s"\n' % ("x" * 513), "is over 512 bytes"),
    ('health_check = "dns://a.test"\nhealth_check_status = [200]\n', "is for HTTP checks"),
    ('health_check = "udp:"\n', "\"udp://\" or \"dns://NAME\""),
])
def test_udp_health_check_config_errors(tmp_path, up, message):
    require_binary("weir")
    text = ('[servers.d]\naddr = "127.0.0.1:5353"\nprotocol = "udp"\nupstream = "u"\n'
            '[upstreams.u]\naddrs = ["127.0.0.1:53"]\n' + up)
    r = weir_check(tmp_path, text)
    assert r.returncode != 0 and message in r.stderr, r.stderr


# ---- configuration ----


@pytest.mark.parametrize("body,message", [
    ('upload_rate = "1MB"\n', "'upload_rate' in [servers.d] is not for a protocol = \"udp\""),
    ("proxy_protocol = true\n", "'proxy_protocol' in [servers.d] is not for"),
    ('locations = ["l"]\n', "'locations' in [servers.d] is not for"),
    ('certificates = []\n', "'certificates' in [servers.d] is not for"),
    ("responses = -1\n", "responses"),
    ("max_sessions = 0\n", "max_sessions"),
])
def test_config_errors_name_the_line(tmp_path, body, message):
    require_binary("weir")
    text, _ = config(free_udp_port(), ["127.0.0.1:1"], extra=body)
    r = weir_check(tmp_path, text)
    assert r.returncode != 0 and message in r.stderr, r.stderr
    assert "w.toml:" in r.stderr


@pytest.mark.parametrize("up,message", [
    ("tls = true\n", "weir speaks no DTLS"),
    ('send_proxy_protocol = "v2"\n', "a datagram has no connection"),
    ('algo = "hash:uri"\n', "hashes a request's uri"),
    ('health_check = "http:///healthz"\n', "whose health_check speaks HTTP"),
    ("max_conns = 10\n", "UDP sessions are not capped per backend"),
    ('health_check = "dns://%s.test"\n' % ("a" * 64), "labels of at most 63"),
])
def test_an_upstream_a_udp_server_cannot_use_is_refused(tmp_path, up, message):
    require_binary("weir")
    text = ('[servers.d]\naddr = "127.0.0.1:5353"\nprotocol = "udp"\nupstream = "u"\n'
            '[upstreams.u]\naddrs = ["127.0.0.1:53"]\n' + up)
    r = weir_check(tmp_path, text)
    assert r.returncode != 0 and message in r.stderr, r.stderr


def test_two_udp_servers_may_not_share_an_address_but_tcp_and_udp_may(tmp_path):
    require_binary("weir")
    base = '[upstreams.u]\naddrs = ["127.0.0.1:53"]\n'
    two_udp = base + "".join(
        '[servers.%s]\naddr = "%s:5353"\nprotocol = "udp"\nupstream = "u"\n' % (n, h)
        for n, h in (("a", "127.0.0.1"), ("b", "0.0.0.0")))
    r = weir_check(tmp_path, two_udp)
    assert r.returncode != 0 and "is also used by [servers.a]" in r.stderr, r.stderr
    mixed = base + ('[servers.a]\naddr = "127.0.0.1:5353"\nprotocol = "udp"\nupstream = "u"\n'
                    '[servers.b]\naddr = "127.0.0.1:5353"\nprotocol = "tcp"\nupstream = "u"\n')
    r = weir_check(tmp_path, mixed)
    assert r.returncode == 0, r.stderr


def test_another_process_on_the_udp_port_is_found(udp, start_proc, tmp_path):
    """SO_REUSEPORT must not let weir share a UDP port with another
    program (it would get part of the datagrams)."""
    require_binary("weir")
    port = free_udp_port()
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.1", port))
    try:
        text, _ = config(port, ["127.0.0.1:1"])
        path = tmp_path / "w.toml"
        path.write_text(text)
        r = subprocess.run([binary("weir"), "-c", str(path)], capture_output=True, text=True,
                           timeout=20)
        assert r.returncode != 0 and "address already in use" in r.stderr, r.stderr
    finally:
        other.close()


# ---- reload, stop, upgrade ----


def test_reload_moves_new_sessions_adds_and_removes_udp_servers(udp, start_proc, tmp_path):
    a, b = udp("a"), udp("b")
    port, port2 = free_udp_port(), free_udp_port()
    text, admin = config(port, [a.addr], extra='idle_timeout = "30s"\n')
    path, w = start(start_proc, tmp_path, text, admin)
    old = client(("127.0.0.1", port))
    assert ask(old, b"1") == b"a:1"
    new_text = text.replace(a.addr, b.addr) + (
        '[servers.e]\naddr = "127.0.0.1:%d"\nprotocol = "udp"\nupstream = "u"\n' % port2)
    path.write_text(new_text)
    w.signal(signal.SIGHUP)
    assert wait_log(w, "reloaded", timeout=10), w.stderr()
    assert ask(old, b"2") == b"a:2"  # its session keeps its backend
    assert ask(client(("127.0.0.1", port)), b"3") == b"b:3"
    assert ask(client(("127.0.0.1", port2)), b"4") == b"b:4"
    # A change the listener cannot take is refused; the running one stays.
    path.write_text(new_text.replace('"30s"', '"5s"'))
    w.signal(signal.SIGHUP)
    assert wait_log(w, "'idle_timeout' of [servers.d] changed", timeout=10), w.stderr()
    assert ask(client(("127.0.0.1", port)), b"5") == b"b:5"
    # Removing the server stops its listener.
    path.write_text(text.replace(a.addr, b.addr))
    w.signal(signal.SIGHUP)
    assert wait_log(w, "reloaded", count=2, timeout=10), w.stderr()
    deadline = time.monotonic() + 5
    while udp_busy(port2) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not udp_busy(port2)


def test_a_reload_that_renames_the_server_moves_its_socket(udp, start_proc, tmp_path):
    """The address goes to the renamed server with its sockets (a rebind
    would fail: they are still open), and a TCP server on the same port
    is another address that stays where it is."""
    a, b = udp("a"), udp("b")
    port = free_udp_port()
    text, admin = config(port, [a.addr])
    text += ('[servers.t]\naddr = "127.0.0.1:%d"\nprotocol = "tcp"\nupstream = "u"\n' % port)
    path, w = start(start_proc, tmp_path, text, admin)
    assert ask(client(("127.0.0.1", port)), b"1") == b"a:1"
    path.write_text(text.replace("[servers.d]", "[servers.renamed]").replace(a.addr, b.addr))
    w.signal(signal.SIGHUP)
    assert wait_log(w, "reloaded", timeout=10), w.stderr()
    assert "moved to a new service" in w.stderr()
    assert "already in use" not in w.stderr()
    assert ask(client(("127.0.0.1", port)), b"2") == b"b:2"
    status, _, m = scrape(admin, TOKEN)
    assert value(m, "weir_udp_sessions_total", server="renamed", status="200") == 0  # open


def test_graceful_stop_delivers_replies_on_their_way(udp, start_proc, tmp_path):
    slow = udp("slow", handler=lambda d: (time.sleep(0.5), [d])[1])
    port = free_udp_port()
    text, admin = config(port, [slow.addr], extra='idle_timeout = "60s"\n',
                         basic='grace_period = "20s"\n')
    _, w = start(start_proc, tmp_path, text, admin)
    c = client(("127.0.0.1", port), timeout=5)
    c.send(b"late")
    time.sleep(0.1)
    t0 = time.monotonic()
    w.signal(signal.SIGTERM)
    assert c.recv(100) == b"late"
    assert w.wait(20) == 0
    w.checked = True
    # Sessions go after a short quiet, not after their idle timeout.
    assert time.monotonic() - t0 < 15


def test_upgrade_keeps_answering_every_query(udp, start_proc, tmp_path):
    a, b = udp("a"), udp("b")
    port = free_udp_port()
    sock = tmp_path / "up.sock"
    text, admin = config(port, [a.addr, b.addr], extra="responses = 1\n",
                         basic='upgrade_sock = "%s"\ngrace_period = "10s"\n' % sock)
    # A TCP server on the same port: the new process must tell the two
    # sockets of one address apart (SO_TYPE).
    text += ('[servers.t]\naddr = "127.0.0.1:%d"\nprotocol = "tcp"\nupstream = "u"\n' % port)
    path, old = start(start_proc, tmp_path, text, admin, name="old")
    deadline = time.monotonic() + 5
    while not sock.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    stop, lost, done = threading.Event(), [], [0]

    def run():
        c = client(("127.0.0.1", port), timeout=1.0)
        i = 0
        while not stop.is_set():
            i += 1
            msg = b"q%d" % i
            for attempt in range(3):  # as a DNS client retries
                try:
                    c.send(msg)
                    while True:
                        got = c.recv(100)
                        if got.endswith(b":" + msg):
                            break
                    done[0] += 1
                    break
                except socket.timeout:
                    if attempt == 2:
                        lost.append(msg)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    new = start_proc([binary("weir"), "-u", "-c", str(path), "--threads", "2"], admin, "new",
                     wait=False)
    assert wait_log(old, "handed", timeout=10), old.stderr()
    assert old.wait(15) == 0
    old.checked = True
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(30)
    assert done[0] > 100 and not lost, (done[0], lost[:5])
    # Two workers, three addresses (admin, UDP, TCP): six sockets, all served.
    assert "took over 6 listening sockets" in new.stderr(), new.stderr()
    assert "not in this configuration" not in new.stderr()
    socket.create_connection(("127.0.0.1", port), timeout=5).close()


# ---- faults under load ----


def test_killing_a_backend_under_load_loses_no_query(udp, start_proc, tmp_path):
    """15 s of queries from 6 clients (responses = 1, so each query is a
    session) while one of two backends dies and comes back every 2 s:
    a query that reaches a dead backend is refused and goes to the other;
    only queries in flight on the dying one are retried by the client."""
    a = udp("a")
    port_b = free_udp_port()
    port = free_udp_port()
    text, admin = config(port, [a.addr, "127.0.0.1:%d" % port_b], extra="responses = 1\n",
                         up_extra='max_retries = 2\nfail_timeout = "1s"\n')
    _, w = start(start_proc, tmp_path, text, admin)
    stop = threading.Event()
    ok, retried, lost = [0], [0], []

    def run(k):
        c = client(("127.0.0.1", port), timeout=0.5)
        i = 0
        while not stop.is_set():
            i += 1
            msg = b"%d-%d" % (k, i)
            for attempt in range(4):
                try:
                    c.send(msg)
                    while not c.recv(100).endswith(b":" + msg):
                        pass
                    ok[0] += 1
                    break
                except socket.timeout:
                    retried[0] += 1
                    if attempt == 3:
                        lost.append(msg)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    end = time.monotonic() + 15
    b = None
    while time.monotonic() < end:
        b = UdpServer("b", port=port_b)  # back on the same port
        time.sleep(1.0)
        b.close()
        time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(30)
    assert ok[0] > 500 and not lost, (ok[0], retried[0], lost[:5])
    status, _, m = scrape(admin, TOKEN)
    assert value(m, "weir_udp_refused_total", server="d") > 0
    assert w.proc.poll() is None


# ---- against nginx's stream module ----

NGINX_CONF = """load_module {so};
worker_processes 1;
error_log {dir}/error.log info;
pid {dir}/nginx.pid;
events {{ worker_connections 1024; }}
stream {{
  upstream u {{ {servers} }}
  server {{
    listen 127.0.0.1:{port} udp;
    proxy_pass u;
    proxy_timeout 2s;
    {extra}
  }}
}}
"""


@pytest.fixture
def nginx_udp(tmp_path):
    procs = []

    def start(addrs, extra=""):
        if not os.access(NGINX, os.X_OK) or not os.path.exists(STREAM_SO):
            pytest.skip("nginx or its stream module not installed")
        port = free_udp_port()
        d = tmp_path / ("nginx-%d" % port)
        d.mkdir()
        (d / "nginx.conf").write_text(NGINX_CONF.format(
            so=STREAM_SO, dir=d, port=port, extra=extra,
            servers=" ".join("server %s;" % a for a in addrs)))
        err = open(d / "stderr", "wb")
        p = subprocess.Popen([NGINX, "-p", str(d), "-e", str(d / "error.log"), "-c",
                              str(d / "nginx.conf"), "-g", "daemon off;"],
                             stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                             start_new_session=True)
        procs.append(p)
        deadline = time.monotonic() + 10
        while not udp_busy(port) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert udp_busy(port), (d / "stderr").read_text()
        return port

    yield start
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            pass
        p.wait(10)


def observe(port, msgs, sessions=1):
    """What clients got for msgs: per session (a client socket), the
    replies in order (None for a timeout)."""
    out = []
    for _ in range(sessions):
        c = client(("127.0.0.1", port), timeout=1.0)
        got = []
        for m in msgs:
            c.send(m)
            try:
                got.append(c.recv(70000))
            except socket.timeout:
                got.append(None)
        out.append(got)
    return out


@pytest.mark.parametrize("case", ["plain", "responses", "big", "empty", "failover"])
def test_weir_and_nginx_agree(case, udp, start_proc, nginx_udp, tmp_path):
    msgs = {"big": [os.urandom(60000), b"x"], "empty": [b"", b"y"]}.get(
        case, [b"a", b"bb", b"ccc"])
    extra_weir, extra_nginx = "", ""
    if case == "responses":
        extra_weir, extra_nginx = "responses = 1\n", "proxy_responses 1;"
    seen = {}
    for kind in ("weir", "nginx"):
        be = udp(kind, handler=lambda d: [d[::-1]])
        addrs = [be.addr]
        if case == "failover":
            addrs = ["127.0.0.1:%d" % free_udp_port(), be.addr]
        if kind == "weir":
            port = free_udp_port()
            text, admin = config(port, addrs, extra=extra_weir, up_extra="max_retries = 2\n")
            start(start_proc, tmp_path, text, admin, name="weir-%s" % case)
        else:
            port = nginx_udp(addrs, extra_nginx)
        got = observe(port, msgs, sessions=2)
        seen[kind] = (got, [d for d, _ in be.got], len(be.sources()))
    w, n = seen["weir"], seen["nginx"]
    if os.environ.get("WEIR_L4_DIFF_SHOW"):
        print(case, "weir", [[len(r) if r is not None else None for r in x] for x in w[0]],
              "nginx", [[len(r) if r is not None else None for r in x] for x in n[0]])
    if case == "failover":
        # nginx sends the first datagram to the dead backend and loses it
        # (it does not resend after the ICMP error); weir resends it to
        # the next backend, so every query is answered.
        assert all(r is not None for s in w[0] for r in s), w[0]
        assert w[0][0] == [m[::-1] for m in msgs]
        return
    if case == "big":
        # nginx cuts a backend's datagram to proxy_buffer_size (16k by
        # default) without a word; weir passes every datagram whole.
        assert w[0] == [[m[::-1] for m in msgs]] * 2
        assert [len(r) for r in n[0][0]] == [16384, 1]
        assert w[1] == n[1]
        return
    assert w[0] == n[0], (w[0], n[0])  # what the clients got
    assert w[1] == n[1]  # what the backend received, in order
    assert w[2] == n[2]  # sessions (sources) the backend saw
