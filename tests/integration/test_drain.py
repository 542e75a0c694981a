"""Graceful stop and binary upgrade with keep-alive clients: a draining
weir keeps serving its open connections, answers each one's next request
with Connection: close, and never closes a connection under a request on
its way (issue: "Availability under faults", weir -u).

A request counts as failed if it was sent and got no complete response
(EOF, reset) or a non-2xx status. A refused connect is not a failed
request: a client then goes to the other instance, as a load balancer
in front of several would.
"""
import signal
import socket
import threading
import time

import backends as B
from conftest import binary, free_port, require_binary


def config(port, backend, sock=None, grace="5s"):
    basic = 'grace_period = "%s"\n' % grace
    if sock:
        basic += 'upgrade_sock = "%s"\n' % sock
    return ('[basic]\n%s[servers.s]\naddr = "127.0.0.1:%d"\nlocations = ["all"]\n'
            '[locations.all]\nupstream = "u"\n[upstreams.u]\naddrs = ["%s"]\n'
            % (basic, port, backend))


class KeepAliveClients:
    """n clients, each on a kept-alive connection to one of ports, sending
    GETs back to back until stopped."""

    def __init__(self, ports, n=20, max_requests=100000):
        self.ports = ports
        self.lock = threading.Lock()
        self.ok = 0
        self.closes = 0
        self.failed = []
        self.stop = threading.Event()
        self.max_requests = max_requests
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True)
                        for i in range(n)]

    def connect(self, turn):
        for k in range(len(self.ports) * 50):
            port = self.ports[(turn + k) % len(self.ports)]
            try:
                return B.connect(port, timeout=10)
            except ConnectionRefusedError:
                time.sleep(0.01)
        raise AssertionError("no instance accepts")

    def run(self, i):
        sock, rd, turn = None, None, i
        for n in range(self.max_requests):
            if self.stop.is_set():
                break
            if sock is None:
                sock = self.connect(turn)
                rd = B.Reader(sock)
                turn += 1
            try:
                sock.sendall(b"GET /k%d HTTP/1.1\r\nHost: t\r\n\r\n" % n)
                r = B.read_response(rd, "GET")
            except (OSError, B.PeerClosed, ValueError) as e:
                with self.lock:
                    self.failed.append(repr(e))
                sock.close()
                sock = None
                continue
            with self.lock:
                if r.status == 200:
                    self.ok += 1
                else:
                    self.failed.append(r.status)
            if (r.headers.get("Connection") or "").lower() == "close":
                with self.lock:
                    self.closes += 1
                sock.close()
                sock = None
        if sock:
            sock.close()

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(30)
        return self


def wait_for(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return False


def test_ten_upgrades_in_a_row_lose_no_keepalive_request(backend, start_proc, tmp_path):
    require_binary("weir")
    b = backend(B.fixed(b"ok\n"))
    port = free_port()
    sock = tmp_path / "upgrade.sock"
    cfg = tmp_path / "weir.toml"
    cfg.write_text(config(port, b.addr, sock))
    procs = [start_proc([binary("weir"), "-c", str(cfg), "--threads", "2"], port, "weir-0")]
    assert wait_for(sock.exists), procs[0].stderr()
    clients = KeepAliveClients([port]).start()
    time.sleep(0.5)
    for i in range(1, 11):
        new = start_proc([binary("weir"), "-u", "-c", str(cfg), "--threads", "2"], port,
                         "weir-%d" % i, wait=False)
        old = procs[-1]
        # The new process took over and serves; the old one drains.
        assert wait_for(lambda: "took over" in new.stderr()), new.stderr()
        rc = old.wait(timeout=15)
        old.checked = True
        assert rc == 0, old.stderr()
        # Each new process offers the next upgrade itself.
        assert wait_for(lambda: "listening on" in new.stderr()), new.stderr()
        procs.append(new)
        time.sleep(0.3)
    time.sleep(0.5)
    clients.finish()
    assert not clients.failed, (clients.failed[:10], clients.ok)
    assert clients.ok > 1000 and clients.closes >= 20, (clients.ok, clients.closes)


def test_graceful_stop_of_one_of_two_instances_loses_nothing(backend, start_proc, tmp_path):
    require_binary("weir")
    b = backend(B.fixed(b"ok\n"))
    pa, pb = free_port(), free_port()
    (tmp_path / "a.toml").write_text(config(pa, b.addr))
    (tmp_path / "b.toml").write_text(config(pb, b.addr))
    a = start_proc([binary("weir"), "-c", str(tmp_path / "a.toml"), "--threads", "2"], pa, "a")
    start_proc([binary("weir"), "-c", str(tmp_path / "b.toml"), "--threads", "2"], pb, "b")
    clients = KeepAliveClients([pa, pb]).start()
    time.sleep(1.0)
    a.signal(signal.SIGTERM)
    rc = a.wait(timeout=15)
    a.checked = True
    assert rc == 0, a.stderr()
    time.sleep(0.5)
    clients.finish()
    assert not clients.failed, (clients.failed[:10], clients.ok)
    assert clients.closes >= 1


def test_idle_connection_is_answered_with_close_after_sigterm(backend, start_proc, tmp_path):
    """An idle keep-alive connection is not closed at the drain: the
    request its client sends next is served, with Connection: close."""
    require_binary("weir")
    b = backend(B.fixed(b"ok\n"))
    port = free_port()
    (tmp_path / "w.toml").write_text(config(port, b.addr))
    w = start_proc([binary("weir"), "-c", str(tmp_path / "w.toml"), "--threads", "1"], port, "w")
    s = B.connect(port)
    rd = B.Reader(s)
    s.sendall(b"GET /1 HTTP/1.1\r\nHost: t\r\n\r\n")
    assert B.read_response(rd, "GET").status == 200
    w.signal(signal.SIGTERM)
    assert wait_for(lambda: "stopping gracefully" in w.stderr())
    time.sleep(0.2)
    s.sendall(b"GET /2 HTTP/1.1\r\nHost: t\r\n\r\n")
    r = B.read_response(rd, "GET")
    assert r.status == 200 and (r.headers.get("Connection") or "").lower() == "close"
    assert B.closed_after(s)
    s.close()
    assert w.wait(timeout=10) == 0
    w.checked = True


def test_response_in_flight_at_drain_says_close(backend, start_proc, tmp_path):
    """A request whose response is still to come when the drain begins gets
    Connection: close, so its client does not send another on a closing
    connection."""
    require_binary("weir")
    gate = threading.Event()

    def slow(conn, req):
        gate.wait(10)
        conn.send(B.response_head(200, [("Content-Length", "3")]) + b"ok\n")

    b = backend(slow)
    port = free_port()
    (tmp_path / "w.toml").write_text(config(port, b.addr))
    w = start_proc([binary("weir"), "-c", str(tmp_path / "w.toml"), "--threads", "1"], port, "w")
    s = B.connect(port)
    rd = B.Reader(s)
    s.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
    assert b.wait_requests(1)
    w.signal(signal.SIGTERM)
    assert wait_for(lambda: "stopping gracefully" in w.stderr())
    time.sleep(0.1)
    gate.set()
    r = B.read_response(rd, "GET")
    assert r.status == 200 and (r.headers.get("Connection") or "").lower() == "close"
    assert B.closed_after(s)
    s.close()
    assert w.wait(timeout=10) == 0
    w.checked = True
