"""protocol = "tcp" servers (issue 18): every connection balanced to a
backend, bytes both ways (splice), half-close passed on, failover on a
dead backend, idle timeout, rate limits, PROXY protocol in, access log,
metrics, reload and graceful stop with tunnels open, and a real Redis
behind weir.

Attacks first: a backend that refuses, resets mid-tunnel or never
answers; a client that half-closes, goes silent, or claims an address
without being a trusted proxy; a reload or a stop while tunnels run.
"""
import hashlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

import tcputil as T
import conftest
from conftest import binary, closed_port, free_port, require_binary, wait_port
from test_metrics import scrape, value
from test_reload import wait_log

TOKEN = "l4-token"


@pytest.fixture
def tcp():
    """Factory: tcp(handler, name) -> TcpServer, closed at teardown."""
    made = []

    def make(handler=T.echo, name="tcp"):
        s = T.TcpServer(handler, name=name)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def tcp_config(port, addrs, extra="", up_extra="", admin=None, basic=""):
    text = ""
    if basic:
        text += "[basic]\n" + basic
    if admin:
        text += '[admin]\naddr = "127.0.0.1:%d"\ntoken = "%s"\n' % (admin, TOKEN)
    text += ('[servers.t]\naddr = "127.0.0.1:%d"\nprotocol = "tcp"\nupstream = "u"\n%s'
             '[upstreams.u]\naddrs = [%s]\n%s'
             % (port, extra, ", ".join('"%s"' % a for a in addrs), up_extra))
    return text


def start(start_proc, tmp_path, text, port, threads=2, name="weir"):
    require_binary("weir")
    path = tmp_path / ("%s.toml" % name)
    path.write_text(text)
    w = start_proc([binary("weir"), "-c", str(path), "--threads", str(threads)], port, name)
    return path, w


def log_lines(w, needle="TCP"):
    return [l for l in w.stdout().splitlines() if needle in l]


def wait_lines(w, n, needle="TCP", timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = log_lines(w, needle)
        if len(lines) >= n:
            return lines
        time.sleep(0.02)
    return log_lines(w, needle)


# ---- bytes both ways ----


def test_echo_moves_every_byte_both_ways(tcp, start_proc, tmp_path):
    e = tcp()
    port = free_port()
    _, w = start(start_proc, tmp_path, tcp_config(port, [e.addr], 'access_log = "basic"\n'), port)
    data = os.urandom(8 << 20)
    got = T.round_trip(port, data)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest() and len(got) == len(data)
    # Many at once.
    results = []

    def one(i):
        d = os.urandom(1000 + i * 997)
        results.append(T.round_trip(port, d) == d)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results.count(True) == 40
    lines = wait_lines(w, 42)  # with the start-up probe's empty session
    assert len(lines) == 42 and sum(" TCP 200 0 0 " in l for l in lines) == 1, w.stdout()
    big = [l for l in lines if " %d %d " % (len(data), len(data)) in l]
    assert big and big[0].startswith("127.0.0.1 [") and ' "%s" --' % e.addr in big[0], lines


def test_half_close_passes_both_ways(tcp, start_proc, tmp_path):
    """The client's FIN reaches the backend, which answers after it; the
    backend's FIN reaches the client, which goes on sending."""

    def after_fin(c, srv):
        got = T.read_all(c)
        c.sendall(b"got %d bytes\n" % len(got))
        c.shutdown(socket.SHUT_WR)

    def fin_first(c, srv):
        c.sendall(b"hello, then my FIN\n")
        c.shutdown(socket.SHUT_WR)
        got = T.read_all(c)
        with srv.lock:
            srv.received.append(got)

    a, b = tcp(after_fin), tcp(fin_first)
    pa, pb = free_port(), free_port()
    text = ('[servers.a]\naddr = "127.0.0.1:%d"\nprotocol = "tcp"\nupstream = "a"\n'
            '[servers.b]\naddr = "127.0.0.1:%d"\nprotocol = "tcp"\nupstream = "b"\n'
            '[upstreams.a]\naddrs = ["%s"]\n[upstreams.b]\naddrs = ["%s"]\n'
            % (pa, pb, a.addr, b.addr))
    start(start_proc, tmp_path, text, pa)
    assert T.round_trip(pa, b"x" * 300000) == b"got 300000 bytes\n"
    c = socket.create_connection(("127.0.0.1", pb), timeout=20)
    assert T.read_all(c) == b"hello, then my FIN\n"  # EOF: the backend's FIN came through
    c.sendall(b"still talking after your FIN")
    c.shutdown(socket.SHUT_WR)
    c.close()
    deadline = time.monotonic() + 10
    while not b.received and time.monotonic() < deadline:
        time.sleep(0.02)
    assert b.received == [b"still talking after your FIN"]


def test_redis_round_trips_through_weir(start_proc, tmp_path):
    redis = shutil.which("redis-server")
    cli = shutil.which("redis-cli")
    if not redis or not cli:
        pytest.skip("redis-server / redis-cli not installed")
    rport, port = free_port(), free_port()
    r = start_proc([redis, "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no", "--dir", str(tmp_path)], rport, "redis")
    _, w = start(start_proc, tmp_path, tcp_config(port, ["127.0.0.1:%d" % rport]), port)

    def run(*args, stdin=None):
        out = subprocess.run([cli, "-p", str(port)] + list(args), input=stdin,
                             capture_output=True, timeout=30)
        assert out.returncode == 0, out.stderr
        return out.stdout

    assert run("SET", "weir", "l4").strip() == b"OK"
    assert run("GET", "weir").strip() == b"l4"
    # A pipeline of 5000 commands on one connection (redis-cli --pipe).
    cmds = b"".join(b"*3\r\n$3\r\nSET\r\n$%d\r\nk%d\r\n$1\r\nv\r\n" % (len(b"k%d" % i), i)
                    for i in range(5000))
    out = run("--pipe", stdin=cmds)
    assert b"errors: 0, replies: 5000" in out, out
    assert run("DBSIZE").strip() == b"5001"
    big = os.urandom(1 << 20).hex().encode()  # a 2 MB value both ways
    assert run("-x", "SET", "big", stdin=big).strip() == b"OK"
    assert run("GET", "big").strip() == big
    r.checked = False


# ---- backends that fail ----


def test_a_dead_backend_fails_over_and_is_counted(tcp, start_proc, tmp_path):
    e = tcp()
    dead = "127.0.0.1:%d" % closed_port()
    port, aport = free_port(), free_port()
    _, w = start(start_proc, tmp_path,
                 tcp_config(port, [dead, e.addr], 'access_log = "json"\n',
                            'algo = "round_robin"\nmax_fails = 0\n', admin=aport), port)
    assert wait_port(aport, w.proc)
    for i in range(20):
        assert T.round_trip(port, b"ping %d" % i) == b"ping %d" % i
    # 20 and the start-up probe's. A session is counted as it ends, which
    # may be just after its client has closed: the count shows soon.
    got = {}

    def counted():
        got["m"] = scrape(aport, TOKEN)[2]
        return value(got["m"], "weir_tcp_sessions_total", server="t", status="200") == 21
    assert conftest.wait_for(counted, 10), got["m"]
    m = got["m"]
    assert value(m, "weir_tcp_connect_failures_total", server="t", backend=dead) >= 10, m
    assert value(m, "weir_tcp_received_bytes_total", server="t", backend=e.addr) > 0, m
    assert value(m, "weir_backend_failures_total", upstream="u", backend=dead) >= 10, m
    assert 'weir_client_connections{protocol="tcp"}' in m
    lines = wait_lines(w, 20, needle='"protocol":"TCP"')
    assert any('"attempts":2' in l and '"upstream_addr":"%s"' % e.addr in l for l in lines), lines


def test_no_backend_closes_the_client_and_logs_why(start_proc, tmp_path):
    dead1, dead2 = "127.0.0.1:%d" % closed_port(), "127.0.0.1:%d" % closed_port()
    port = free_port()
    _, w = start(start_proc, tmp_path,
                 tcp_config(port, [dead1, dead2], 'access_log = "{status} {termination} '
                            '{attempts} {error} {upstream_addr}"\n'), port)
    c = socket.create_connection(("127.0.0.1", port), timeout=20)
    c.sendall(b"anyone?")
    assert T.closed_without_data(c)  # its bytes unread: a reset
    c.close()
    lines = wait_lines(w, 1, needle="502")
    assert lines and lines[0].startswith("502 SC 2 backend connect failed"), w.stdout()


def test_a_backend_reset_mid_tunnel_closes_the_client(tcp, start_proc, tmp_path):
    def reset_after_hello(c, srv):
        c.sendall(b"hello")
        c.recv(100)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")

    b = tcp(reset_after_hello)
    port = free_port()
    _, w = start(start_proc, tmp_path,
                 tcp_config(port, [b.addr], 'access_log = "{termination} {bytes_sent}"\n'), port)
    c = socket.create_connection(("127.0.0.1", port), timeout=20)
    assert c.recv(5) == b"hello"
    c.sendall(b"bye")
    assert T.read_all(c) == b""  # a FIN, the backend's reset is not passed on
    c.close()
    lines = wait_lines(w, 2, needle="T ")  # with the start-up probe's
    assert "ST 5" in lines, w.stdout()


def test_a_backend_that_never_accepts_hits_the_connect_timeout(start_proc, tmp_path):
    # A listener with a full backlog: SYNs are dropped, the connect hangs.
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    fillers = []
    for _ in range(8):
        f = socket.socket()
        f.setblocking(False)
        try:
            f.connect(full.getsockname())
        except BlockingIOError:
            pass
        fillers.append(f)
    hung = "127.0.0.1:%d" % full.getsockname()[1]
    port = free_port()
    _, w = start(start_proc, tmp_path,
                 tcp_config(port, [hung], 'access_log = "{status} {termination}"\n',
                            'connection_timeout = "300ms"\nmax_retries = 0\n'), port)
    c = socket.create_connection(("127.0.0.1", port), timeout=20)
    assert T.read_all(c) == b""
    c.close()
    lines = wait_lines(w, 2, needle="502")  # with the start-up probe's
    assert lines == ["502 sC"] * 2, w.stdout()
    full.close()
    for f in fillers:
        f.close()


# ---- client side ----


def test_idle_timeout_closes_a_silent_tunnel_only(tcp, start_proc, tmp_path):
    e = tcp()
    port = free_port()
    _, w = start(start_proc, tmp_path,
                 tcp_config(port, [e.addr], 'idle_timeout = "1500ms"\n'
                            'access_log = "{termination} {error}"\n'), port)
    busy = socket.create_connection(("127.0.0.1", port), timeout=20)
    silent = socket.create_connection(("127.0.0.1", port), timeout=20)
    silent.sendall(b"x")
    assert silent.recv(1) == b"x"
    t0 = time.monotonic()
    # The busy one talks every 200 ms for 3 s (twice the timeout): it stays.
    while time.monotonic() - t0 < 3.0:
        busy.sendall(b"tick")
        assert busy.recv(4) == b"tick"
        time.sleep(0.2)
    assert T.read_all(silent) == b""  # closed by weir
    busy.sendall(b"still here")
    assert busy.recv(10) == b"still here"
    busy.close()
    silent.close()
    assert "cT idle timeout" in wait_lines(w, 1, needle="idle"), w.stdout()


def test_rate_limits_slow_each_direction(tcp, start_proc, tmp_path):
    def sender(c, srv):
        c.sendall(b"d" * (300 * 1024))
        c.shutdown(socket.SHUT_WR)
        T.read_all(c)

    s = tcp(sender)
    port = free_port()
    start(start_proc, tmp_path,
          tcp_config(port, [s.addr], 'download_rate = "100KB"\nupload_rate = "50KB"\n'), port)
    c = socket.create_connection(("127.0.0.1", port), timeout=30)
    t0 = time.monotonic()
    got = T.read_all(c, timeout=30)
    took = time.monotonic() - t0
    c.close()
    # 300 KB at 100 KB/s with one second's worth at once: 2 s at least.
    assert len(got) == 300 * 1024 and took >= 1.8, took
    e = tcp()
    port2 = free_port()
    start(start_proc, tmp_path,
          tcp_config(port2, [e.addr], 'upload_rate = "50KB"\n'), port2, name="up")
    t0 = time.monotonic()
    assert T.round_trip(port2, b"u" * (150 * 1024), timeout=30) == b"u" * (150 * 1024)
    assert time.monotonic() - t0 >= 1.8


def test_hash_ip_keeps_a_client_on_one_backend(tcp, start_proc, tmp_path):
    names = [tcp(T.name, name="b%d" % i) for i in range(3)]
    port = free_port()
    text = tcp_config(port, [n.addr for n in names], 'proxy_protocol = true\n'
                      'trusted_proxies = ["127.0.0.1"]\n', 'algo = "hash:ip"\n')
    start(start_proc, tmp_path, text, port)

    def via(ip):
        c = socket.create_connection(("127.0.0.1", port), timeout=20)
        c.sendall(b"PROXY TCP4 %s 127.0.0.1 4000 80\r\n" % ip.encode())
        r = T.read_all(c)
        c.close()
        return r

    # The header, the client's bytes and its FIN in one segment: the FIN
    # raises no edge after the header is consumed, and must still end it.
    for tail in (b"", b"abc"):
        c = socket.create_connection(("127.0.0.1", port), timeout=20)
        c.sendall(b"PROXY TCP4 10.0.0.1 127.0.0.1 4000 80\r\n" + tail)
        c.shutdown(socket.SHUT_WR)
        assert T.read_all(c).endswith(b"\n")  # a backend's name, then its FIN
        c.close()
    seen = {}
    for i in range(30):
        ip = "10.0.%d.%d" % (i % 10, 7)
        seen.setdefault(ip, set()).add(via(ip))
    assert all(len(v) == 1 for v in seen.values()), seen
    assert len(set().union(*seen.values())) > 1  # ten addresses, three backends


# ---- PROXY protocol in ----


def test_proxy_protocol_from_haproxy_gives_the_client_address(tcp, start_proc, tmp_path):
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not os.access(haproxy, os.X_OK):
        pytest.skip("haproxy not installed")
    e = tcp()
    port, hport = free_port(), free_port()
    _, w = start(start_proc, tmp_path,
                 tcp_config(port, [e.addr], 'proxy_protocol = true\n'
                            'trusted_proxies = ["127.0.0.1"]\naccess_log = "{client_ip}"\n'), port)
    for v in ("send-proxy", "send-proxy-v2"):
        cfg = tmp_path / ("h-%s.cfg" % v)
        cfg.write_text("defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 10s\n"
                       "  timeout server 10s\nlisten l\n  bind 127.0.0.1:%d\n"
                       "  server w 127.0.0.1:%d %s\n" % (hport, port, v))
        h = start_proc([haproxy, "-f", str(cfg), "-db"], hport, "haproxy-" + v)
        c = socket.create_connection(("127.0.0.1", hport), timeout=20,
                                     source_address=("127.0.0.5", 0))
        c.sendall(b"through two proxies")
        c.shutdown(socket.SHUT_WR)
        assert T.read_all(c) == b"through two proxies"
        c.close()
        h.signal(signal.SIGUSR1)
        h.wait(10)
        h.checked = True
        hport = free_port()
    assert wait_lines(w, 2, needle="127.0.0.5") == ["127.0.0.5", "127.0.0.5"], w.stdout()


def test_untrusted_or_bad_proxy_headers_never_reach_a_backend(tcp, start_proc, tmp_path):
    e = tcp()
    port, port2 = free_port(), free_port()
    text = ('[servers.t]\naddr = "127.0.0.1:%d"\nprotocol = "tcp"\nupstream = "u"\n'
            'proxy_protocol = true\ntrusted_proxies = ["10.9.9.9"]\n'
            '[servers.v]\naddr = "127.0.0.1:%d"\nprotocol = "tcp"\nupstream = "u"\n'
            'proxy_protocol = true\ntrusted_proxies = ["127.0.0.1"]\n'
            'proxy_protocol_timeout = "500ms"\n[upstreams.u]\naddrs = ["%s"]\n'
            % (port, port2, e.addr))
    _, w = start(start_proc, tmp_path, text, port)
    c = socket.create_connection(("127.0.0.1", port), timeout=20)
    c.sendall(b"PROXY TCP4 1.2.3.4 127.0.0.1 1 2\r\nhello")
    assert T.closed_without_data(c)
    c.close()
    for bad in (b"PROXY TCP4 1.2.3.4 127.0.0.1 1\r\n", b"GET / HTTP/1.1\r\n\r\n", b"",
                b"PROXY TCP4 1.2.3.4"):  # the last never ends: the timeout closes it
        c = socket.create_connection(("127.0.0.1", port2), timeout=20)
        if bad:
            c.sendall(bad)
        else:
            c.shutdown(socket.SHUT_WR)
        assert T.closed_without_data(c)
        c.close()
    assert e.connections == 0
    assert "not a trusted proxy" in w.stderr()
    assert "no PROXY header within the timeout" in w.stderr()


def test_half_a_proxy_header_then_a_fin_is_dropped_at_once(tcp, start_proc, tmp_path):
    e = tcp()
    port = free_port()
    text = ('[servers.v]\naddr = "127.0.0.1:%d"\nprotocol = "tcp"\nupstream = "u"\n'
            'proxy_protocol = true\ntrusted_proxies = ["127.0.0.1"]\n'
            'proxy_protocol_timeout = "30s"\n[upstreams.u]\naddrs = ["%s"]\n' % (port, e.addr))
    _, w = start(start_proc, tmp_path, text, port)
    for half in (b"PROXY TCP4 1.2.3.4 127.0.0.1 1", b"\r\n\r\n\0\r\nQUIT\n\x21\x11"):
        c = socket.create_connection(("127.0.0.1", port), timeout=20)
        c.sendall(half)
        c.shutdown(socket.SHUT_WR)
        assert T.closed_without_data(c)  # well before the 30 s timeout
        c.close()
    assert wait_log(w, "closed before a whole PROXY header", count=2), w.stderr()
    assert "within the timeout" not in w.stderr()
    assert e.connections == 0


def reset(c):
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()


def test_a_client_that_resets_while_queued_gives_up_its_place(tcp, start_proc, tmp_path):
    """max_conns = 1: one tunnel holds the slot, a second client waits in
    the queue and resets; a third queued behind it gets the slot when the
    first ends, and the reset one never reaches the backend."""
    e = tcp()
    port = free_port()
    _, w = start(start_proc, tmp_path,
                 tcp_config(port, [e.addr], 'access_log = "{status} {termination}"\n',
                            'max_conns = 1\nqueue_timeout = "30s"\n'), port)
    assert wait_lines(w, 1, needle=" --") == ["200 --"], w.stdout()  # start-up probe
    holder = socket.create_connection(("127.0.0.1", port), timeout=20)
    holder.sendall(b"1")
    assert holder.recv(1) == b"1"
    quitter = socket.create_connection(("127.0.0.1", port), timeout=20)
    quitter.sendall(b"never")
    time.sleep(0.3)
    reset(quitter)
    assert wait_lines(w, 1, needle="499") == ["499 CQ"], w.stdout()
    third = socket.create_connection(("127.0.0.1", port), timeout=20)
    third.sendall(b"3")
    time.sleep(0.3)
    holder.close()
    assert third.recv(1) == b"3"
    third.close()
    assert e.connections == 3  # the probe, the holder, the third


def test_a_client_that_resets_while_connecting_ends_the_connect(start_proc, tmp_path):
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    fillers = []
    for _ in range(8):  # a full backlog: the connect hangs
        f = socket.socket()
        f.setblocking(False)
        try:
            f.connect(full.getsockname())
        except BlockingIOError:
            pass
        fillers.append(f)
    port = free_port()
    _, w = start(start_proc, tmp_path,
                 tcp_config(port, ["127.0.0.1:%d" % full.getsockname()[1]],
                            'access_log = "{status} {termination}"\n',
                            'connection_timeout = "30s"\nmax_retries = 0\n'), port, threads=1)
    c = socket.create_connection(("127.0.0.1", port), timeout=20)
    c.sendall(b"x")
    time.sleep(0.3)
    reset(c)
    lines = wait_lines(w, 1, needle="499")
    assert lines == ["499 CC"], w.stdout()
    full.close()
    for f in fillers:
        f.close()


# ---- config ----


@pytest.mark.parametrize("body, message", [
    ('protocol = "tcp"\n', "needs 'upstream'"),
    ('protocol = "tcp"\nupstream = "u"\nlocations = ["l"]\n', "'locations' in [servers.t] is for "
     "HTTP servers"),
    ('protocol = "tcp"\nupstream = "nope"\n', "refers to undefined upstream 'nope'"),
    ('protocol = "tcp"\nupstream = "h"\n', "hashes a request's uri"),
    ('protocol = "tcp"\nupstream = "u"\nmax_body_size = "1MB"\n', "'max_body_size' in "
     "[servers.t] is for HTTP servers"),
    ('protocol = "udpx"\nupstream = "u"\n', 'expected "http", "tcp", "udp", "tls_passthrough" or "resp"'),
    ('locations = ["l"]\nidle_timeout = "1s"\n', "'idle_timeout' in [servers.t] is for "
     "protocol = \"tcp\" or \"udp\" servers"),
    ('protocol = "tcp"\nupstream = "u"\nproxy_protocol = true\n', "needs 'trusted_proxies'"),
    ('protocol = "tcp"\nupstream = "u"\naccess_log = "{method}"\n', "unknown variable "
     "'{method}' for a TCP server"),
])
def test_config_errors_name_the_line(tmp_path, body, message):
    require_binary("weir")
    path = tmp_path / "bad.toml"
    path.write_text('[servers.t]\naddr = "127.0.0.1:1"\n' + body +
                    '[locations.l]\nupstream = "u"\n[upstreams.u]\naddrs = ["127.0.0.1:2"]\n'
                    '[upstreams.h]\naddrs = ["127.0.0.1:3"]\nalgo = "hash:uri"\n')
    out = subprocess.run([binary("weir"), "-t", "-c", str(path)], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode != 0 and message in out.stderr, out.stderr
    assert str(path) + ":" in out.stderr


# ---- reload, stop, upgrade ----


def test_reload_keeps_open_tunnels_and_moves_new_ones(tcp, start_proc, tmp_path):
    a, b = tcp(), tcp(T.name, name="new")
    port = free_port()
    path, w = start(start_proc, tmp_path, tcp_config(port, [a.addr]), port)
    c = socket.create_connection(("127.0.0.1", port), timeout=20)
    c.sendall(b"before")
    assert c.recv(6) == b"before"
    path.write_text(tcp_config(port, [b.addr]))
    w.signal(signal.SIGHUP)
    assert wait_log(w, "reloaded"), w.stderr()
    c.sendall(b"after")  # the tunnel opened before still goes to a
    assert c.recv(5) == b"after"
    assert T.round_trip(port, b"") == b"new\n"
    c.shutdown(socket.SHUT_WR)
    assert T.read_all(c) == b""
    c.close()
    # A protocol change is refused and the running config stays.
    path.write_text(tcp_config(port, [b.addr]).replace('protocol = "tcp"\n', "")
                    .replace('upstream = "u"\n', 'locations = ["l"]\n', 1) +
                    '[locations.l]\nupstream = "u"\n')
    w.signal(signal.SIGHUP)
    assert wait_log(w, "'protocol' of [servers.t] changed"), w.stderr()
    assert "refused" in w.stderr()
    assert T.round_trip(port, b"") == b"new\n"


def test_graceful_stop_lets_open_tunnels_finish(tcp, start_proc, tmp_path):
    e = tcp()
    port = free_port()
    _, w = start(start_proc, tmp_path,
                 tcp_config(port, [e.addr], basic='grace_period = "10s"\n'), port)
    c = socket.create_connection(("127.0.0.1", port), timeout=20)
    c.sendall(b"1")
    assert c.recv(1) == b"1"
    w.signal(signal.SIGTERM)
    time.sleep(0.5)
    with pytest.raises(OSError):  # no new connections
        socket.create_connection(("127.0.0.1", port), timeout=2).recv(1)
    for i in range(5):  # the open one keeps working
        c.sendall(b"%d" % i)
        assert c.recv(1) == b"%d" % i
        time.sleep(0.1)
    assert w.proc.poll() is None
    c.shutdown(socket.SHUT_WR)
    assert T.read_all(c) == b""
    c.close()
    assert w.wait(10) == 0


def test_upgrade_hands_over_the_listener_and_old_tunnels_finish(tcp, start_proc, tmp_path):
    e = tcp()
    port = free_port()
    sock = tmp_path / "up.sock"
    text = tcp_config(port, [e.addr], basic='upgrade_sock = "%s"\ngrace_period = "10s"\n' % sock)
    path, old = start(start_proc, tmp_path, text, port, name="old")
    deadline = time.monotonic() + 5
    while not sock.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    c = socket.create_connection(("127.0.0.1", port), timeout=20)
    c.sendall(b"a")
    assert c.recv(1) == b"a"
    stop, errors, done = threading.Event(), [], [0]

    def client():
        while not stop.is_set():
            try:
                if T.round_trip(port, b"xyz") != b"xyz":
                    errors.append("short")
                done[0] += 1
            except OSError as ex:
                errors.append(repr(ex))

    threads = [threading.Thread(target=client) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    new = start_proc([binary("weir"), "-u", "-c", str(path), "--threads", "2"], port, "new",
                     wait=False)
    assert wait_log(old, "handed", timeout=10), old.stderr()
    time.sleep(0.5)
    c.sendall(b"b")  # the old process still runs this tunnel
    assert c.recv(1) == b"b"
    c.shutdown(socket.SHUT_WR)
    assert T.read_all(c) == b""
    c.close()
    assert old.wait(15) == 0
    old.checked = True
    stop.set()
    for t in threads:
        t.join(30)
    assert done[0] > 50 and not errors, (done[0], errors[:5])
    assert "took over" in new.stderr()


# ---- faults under load ----


def test_killing_a_backend_under_load_fails_no_new_connection(tcp, start_proc, tmp_path):
    """15 s of short connections from 8 clients while one of two backends
    dies and comes back: every new connection is served (failover), only
    tunnels open on the dying backend at that instant may break."""
    a = tcp()
    b = tcp()
    port = free_port()
    start(start_proc, tmp_path,
          tcp_config(port, [a.addr, b.addr], "", 'algo = "round_robin"\nfail_timeout = "1s"\n'),
          port)
    stop = threading.Event()
    ok, failed = [0], []

    def client(i):
        while not stop.is_set():
            d = b"%d-" % i * 50
            try:
                got = T.round_trip(port, d, timeout=10)
            except OSError as ex:
                failed.append(repr(ex))
                continue
            if got == d:
                ok[0] += 1
            else:
                failed.append(len(got))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    port_b = b.port
    t_end = time.monotonic() + 15
    while time.monotonic() < t_end:
        time.sleep(2)
        b.close()  # resets its open tunnels, refuses new connects
        time.sleep(2)
        b = T.TcpServer(T.echo, port=port_b)
    stop.set()
    for t in threads:
        t.join(30)
    b.close()
    # A tunnel reset by the backend mid-way shows as a short answer; the
    # rest must be served. Those are bounded by the connections open on b
    # when it died (8 clients, 4 kills).
    assert ok[0] > 500 and len(failed) <= 8 * 4, (ok[0], failed[:10])


# ---- PROXY protocol out ----


@pytest.fixture
def haproxy_accept(tmp_path, start_proc):
    """Factory: an HAProxy listener with accept-proxy that answers every
    HTTP request with what the PROXY header told it: src src_port dst
    dst_port. Returns its address."""
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not os.access(haproxy, os.X_OK):
        pytest.skip("haproxy not installed")
    made = []

    def make():
        port = free_port()
        cfg = tmp_path / ("accept-%d.cfg" % port)
        cfg.write_text("defaults\n  timeout connect 5s\n  timeout client 10s\n"
                       "  timeout server 10s\nfrontend f\n  mode http\n"
                       "  bind 127.0.0.1:%d accept-proxy\n"
                       "  http-request return status 200 content-type text/plain "
                       "lf-string \"%%[src] %%[src_port] %%[dst] %%[dst_port]\"\n" % port)
        h = start_proc([haproxy, "-f", str(cfg), "-db"], port, "haproxy-accept")
        made.append(h)
        return "127.0.0.1:%d" % port, h

    yield make
    for h in made:  # a soft stop (HAProxy exits 0 on SIGUSR1, not on SIGTERM)
        h.signal(signal.SIGUSR1)
        try:
            h.wait(10)
        except subprocess.TimeoutExpired:
            h.proc.kill()
            h.wait(5)
        h.checked = True


def http_get(sock, path="/"):
    sock.sendall(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        d = sock.recv(4096)
        assert d, head
        head += d
    h, _, body = head.partition(b"\r\n\r\n")
    n = int([l.split(b":")[1] for l in h.split(b"\r\n") if l.lower().startswith(
        b"content-length")][0])
    while len(body) < n:
        body += sock.recv(4096)
    return body.decode()


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_a_tcp_upstream_gets_the_client_in_a_proxy_header(version, haproxy_accept, start_proc,
                                                          tmp_path):
    addr, h = haproxy_accept()
    port = free_port()
    start(start_proc, tmp_path, tcp_config(port, [addr], "",
                                           'send_proxy_protocol = "%s"\n' % version), port)
    c = socket.create_connection(("127.0.0.1", port), timeout=20,
                                 source_address=("127.0.0.5", 0))
    body = http_get(c)
    assert body == "127.0.0.5 %d 127.0.0.1 %d" % (c.getsockname()[1], port), body
    c.close()


def test_an_http_upstream_gets_the_client_and_pools_per_client(haproxy_accept, start_proc,
                                                               tmp_path):
    """With send_proxy_protocol a pooled connection serves only the client
    connection its header names: one client's kept-alive requests reuse
    it, another client's get their own."""
    addr, h = haproxy_accept()
    port = free_port()
    text = ('[servers.s]\naddr = "127.0.0.1:%d"\nlocations = ["l"]\n'
            '[locations.l]\nupstream = "u"\n[upstreams.u]\naddrs = ["%s"]\n'
            'send_proxy_protocol = "v2"\nhealth_check = "http:///"\n'
            'health_check_interval = "200ms"\n' % (port, addr))
    start(start_proc, tmp_path, text, port)
    a = socket.create_connection(("127.0.0.1", port), timeout=20, source_address=("127.0.0.6", 0))
    b = socket.create_connection(("127.0.0.1", port), timeout=20, source_address=("127.0.0.7", 0))
    want_a = "127.0.0.6 %d 127.0.0.1 %d" % (a.getsockname()[1], port)
    want_b = "127.0.0.7 %d 127.0.0.1 %d" % (b.getsockname()[1], port)
    for i in range(5):
        assert http_get(a) == want_a
        assert http_get(b) == want_b
    a.close()
    b.close()
    # The checks send a LOCAL header, which HAProxy takes: the backend
    # stays up (an unanswered check would take it down within a second).
    time.sleep(1.0)
    c = socket.create_connection(("127.0.0.1", port), timeout=20)
    assert http_get(c).startswith("127.0.0.1 ")
    c.close()


def test_send_proxy_protocol_config_errors(tmp_path):
    require_binary("weir")
    for extra, message in (('send_proxy_protocol = "v3"\n', "expected \"v1\" or \"v2\""),
                           ('send_proxy_protocol = "v2"\nalpn = "h2"\n',
                            "cannot go with HTTP/2")):
        path = tmp_path / "bad.toml"
        path.write_text('[servers.t]\naddr = "127.0.0.1:1"\nprotocol = "tcp"\nupstream = "u"\n'
                        '[upstreams.u]\naddrs = ["127.0.0.1:2"]\n' + extra)
        out = subprocess.run([binary("weir"), "-t", "-c", str(path)], capture_output=True,
                             text=True, timeout=30)
        assert out.returncode != 0 and message in out.stderr, out.stderr
