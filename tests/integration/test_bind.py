"""Listening addresses are weir's alone.

SO_REUSEPORT (one listening socket per worker) would let any process of the
same user bind the same address and take part of its connections: a second
weir, or an nginx with reuseport. Before its first socket on an address
weir checks that nobody listens there and refuses to start (exit 1,
"ADDR: address already in use"), or refuses a reload that would add it.
Sockets handed over by the old process in a `weir -u` upgrade are exempt.
"""
import os
import signal
import socket
import subprocess
import time

import pytest

import backends as B
from conftest import ASAN_OPTIONS, SANITIZER_MARKS, binary, free_port, require_binary


def run_weir(*args):
    """Runs weir to its exit (it is expected to refuse to start)."""
    require_binary("weir")
    env = dict(os.environ, ASAN_OPTIONS=ASAN_OPTIONS)
    out = subprocess.run([binary("weir")] + [str(a) for a in args], capture_output=True,
                         text=True, timeout=30, env=env)
    for mark in SANITIZER_MARKS:
        assert mark not in out.stderr, out.stderr
    return out


def listener(port, reuseport):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # As nginx does: without it, the TIME_WAIT connections it leaves would
    # keep the port refused to any later listener for a minute.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuseport:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((B.LOOPBACK, port))
    s.listen(64)
    return s


def accepts_every_connection(sock, port, n=20):
    """True if all n connections to port are queued on sock (so nobody else
    shares the address)."""
    clients = [socket.create_connection((B.LOOPBACK, port), timeout=5) for _ in range(n)]
    sock.settimeout(2)
    got = 0
    try:
        for _ in range(n):
            sock.accept()[0].close()
            got += 1
    except socket.timeout:
        pass
    for c in clients:
        c.close()
    return got == n


def wait_log(proc, text, count=1, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.stderr().count(text) >= count:
            return True
        time.sleep(0.02)
    return False


@pytest.mark.deadline(60)
def test_second_weir_on_the_same_port_exits_1_and_the_first_keeps_serving(backend, weir):
    b = backend(B.fixed(b"first\n"))
    first = weir([b])
    out = run_weir("--listen", "127.0.0.1:%d" % first.port, "--upstream", b.addr,
                   "--threads", "2")
    assert out.returncode == 1, out.stderr
    assert "127.0.0.1:%d: address already in use" % first.port in out.stderr, out.stderr
    # Nothing went to a second process: every request reaches the first.
    for i in range(200):
        r = B.get(first.port, "/r%d" % i)
        assert r.status == 200 and r.body == b"first\n", (i, r)
    assert b.request_count() == 200


@pytest.mark.parametrize("reuseport", [False, True], ids=["plain", "reuseport"])
def test_weir_refuses_a_port_another_program_listens_on(reuseport):
    port = free_port()
    held = listener(port, reuseport)
    try:
        out = run_weir("--listen", "127.0.0.1:%d" % port, "--upstream", "127.0.0.1:1")
        assert out.returncode == 1, out.stderr
        assert "127.0.0.1:%d: address already in use" % port in out.stderr, out.stderr
        # Like nginx with reuseport: it still gets every connection.
        assert accepts_every_connection(held, port)
    finally:
        held.close()


def config(port, backend, extra="", sock=None):
    basic = '[basic]\nupgrade_sock = "%s"\ngrace_period = "5s"\n' % sock if sock else ""
    return ('%s[servers.s]\naddr = "127.0.0.1:%d"\nlocations = ["all"]\n'
            '[locations.all]\nupstream = "u"\nresponse_set_headers = ["X-Gen: %s"]\n'
            '[upstreams.u]\naddrs = ["%s"]\n%s'
            % (basic, port, "2" if extra else "1", backend, extra))


@pytest.mark.deadline(60)
def test_reload_adding_an_address_another_program_holds_fails_and_keeps_the_config(
        backend, start_proc, tmp_path):
    require_binary("weir")
    b = backend(B.fixed(b"a\n"))
    port, taken = free_port(), free_port()
    held = listener(taken, reuseport=True)
    try:
        path = tmp_path / "weir.toml"
        path.write_text(config(port, b.addr))
        w = start_proc([binary("weir"), "-c", str(path), "--threads", "2"], port, "weir")
        path.write_text(config(port, b.addr, '[servers.t]\naddr = "127.0.0.1:%d"\n'
                               'locations = ["all"]\n' % taken))
        w.signal(signal.SIGHUP)
        assert wait_log(w, "reload failed"), w.stderr()
        assert "127.0.0.1:%d: address already in use" % taken in w.stderr(), w.stderr()
        r = B.get(port)
        assert r.status == 200 and r.headers.get("x-gen") == "1", r
        assert accepts_every_connection(held, taken)
        # Once the address is free the same reload goes through.
        held.close()
        held = None
        w.signal(signal.SIGHUP)
        assert wait_log(w, "reloaded"), w.stderr()
        assert B.get(taken).headers.get("x-gen") == "2"
    finally:
        if held:
            held.close()


@pytest.mark.deadline(60)
def test_upgrade_takes_over_the_sockets_and_binds_a_new_address(backend, start_proc, tmp_path):
    """weir -u gets the old process's listening sockets (not refused as
    "in use") and still checks an address only the new configuration has."""
    require_binary("weir")
    b = backend(B.fixed(b"ok\n"))
    port, added = free_port(), free_port()
    sock = tmp_path / "upgrade.sock"
    cfg = tmp_path / "weir.toml"
    cfg.write_text(config(port, b.addr, sock=sock))
    old = start_proc([binary("weir"), "-c", str(cfg), "--threads", "2"], port, "weir-old")
    deadline = time.monotonic() + 5
    while not sock.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sock.exists(), old.stderr()
    cfg.write_text(config(port, b.addr, '[servers.t]\naddr = "127.0.0.1:%d"\n'
                          'locations = ["all"]\n' % added, sock=sock))
    new = start_proc([binary("weir"), "-u", "-c", str(cfg), "--threads", "2"], added,
                     "weir-new")
    rc = old.wait(timeout=15)
    old.checked = True
    assert rc == 0, old.stderr()
    assert "took over" in new.stderr(), new.stderr()
    assert "already in use" not in new.stderr(), new.stderr()
    for p in (port, added):
        r = B.get(p)
        assert r.status == 200 and r.headers.get("x-gen") == "2", (p, r)
