"""The error log does not flood.

A warning or error that repeats is written once per second and summarised
as "... (repeated N times)"; out of descriptors, a listener stops accepting
for a while instead of retrying (and logging) on every new connection.
The assertions count lines; none of them measures time.
"""
import os
import resource
import socket
import subprocess
import threading
import time

import pytest

import backends as B
from conftest import (ASAN_OPTIONS, SANITIZER_MARKS, binary, check_stopped, free_port,
                      require_binary, wait_port)


def wait_for(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def lines_with(text, *needles):
    return [l for l in text.splitlines() if all(n in l for n in needles)]


class LimitedWeir:
    """weir with a small RLIMIT_NOFILE (set in the child before exec)."""

    def __init__(self, argv, port, tmp_path, nofile):
        self.port = port
        self.stderr_path = tmp_path / "weir.stderr"
        self._err = open(self.stderr_path, "wb")

        def limit():
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        env = dict(os.environ, ASAN_OPTIONS=ASAN_OPTIONS)
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=self._err,
                                     stdin=subprocess.DEVNULL, env=env, preexec_fn=limit)

    def stderr(self):
        return self.stderr_path.read_text(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            rc = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(timeout=5)
        self._err.close()
        return rc


@pytest.mark.deadline(90)
def test_out_of_descriptors_accept_errors_are_bounded_and_weir_recovers(backend, tmp_path):
    require_binary("weir")
    b = backend(B.fixed(b"ok\n"))
    port = free_port()
    argv = [binary("weir"), "--listen", "127.0.0.1:%d" % port, "--upstream", b.addr,
            "--threads", "2"]
    # About 15 descriptors at start: room for a few dozen connections.
    w = LimitedWeir(argv, port, tmp_path, nofile=48)
    clients = []
    try:
        assert wait_port(port, w.proc), w.stderr()
        assert B.get(port).status == 200
        # Far more connections than descriptors, held open, and still more
        # arriving for a few seconds: each new one makes the listener
        # readable again (edge-triggered), which retried accept at once.
        for i in range(600):
            try:
                clients.append(socket.create_connection((B.LOOPBACK, port), timeout=5))
            except OSError:
                break
            if i >= 300:
                time.sleep(0.01)
        assert len(clients) >= 300, len(clients)
        assert w.proc.poll() is None, w.stderr()
        err = w.stderr()
        accept_lines = lines_with(err, "accept on")
        assert lines_with(err, "accept on", "Too many open files"), err[-3000:]
        assert len(accept_lines) < 20, "%d accept lines:\n%s" % (
            len(accept_lines), "\n".join(accept_lines[:40]))
        for c in clients:
            c.close()
        clients = []

        def serves():
            try:
                return B.get(port, "/after", timeout=2).status == 200
            except OSError:
                return False

        assert wait_for(serves, 20), w.stderr()[-3000:]
        assert w.proc.poll() is None
    finally:
        for c in clients:
            c.close()
        rc = w.stop()
    err = w.stderr()
    assert rc == 0, err[-3000:]
    for mark in SANITIZER_MARKS:
        assert mark not in err, err[-6000:]


@pytest.mark.deadline(90)
def test_dead_backend_warnings_are_bounded_and_summarised(start_proc, tmp_path):
    require_binary("weir")
    port = free_port()
    dead = "127.0.0.1:%d" % free_port()
    cfg = tmp_path / "weir.toml"
    cfg.write_text('[servers.s]\naddr = "127.0.0.1:%d"\nlocations = ["all"]\n'
                   '[locations.all]\nupstream = "u"\n'
                   '[upstreams.u]\naddrs = ["%s"]\nmax_fails = 0\n' % (port, dead))
    w = start_proc([binary("weir"), "-c", str(cfg), "--threads", "2"], port, "weir")
    statuses = []

    def client(n):
        s = B.connect(port)
        rd = B.Reader(s)
        for i in range(n):
            s.sendall(b"GET /d%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
            r = B.read_response(rd)
            statuses.append(r.status)
            if r.headers.get("Connection", "").lower() == "close":
                s.close()
                s = B.connect(port)
                rd = B.Reader(s)
        s.close()

    threads = [threading.Thread(target=client, args=(750,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(statuses) == 3000 and set(statuses) == {502}, set(statuses)
    # The copies are summarised once their second is over.
    assert wait_for(lambda: "repeated" in w.stderr()), w.stderr()[-3000:]
    err = w.stderr()
    warnings = lines_with(err, " warn ")
    assert lines_with(err, "upstream %s: connect failed" % dead), err[-3000:]
    assert len(warnings) < 50, "%d warning lines:\n%s" % (len(warnings),
                                                          "\n".join(warnings[:60]))
    # Every failure is accounted for, written or counted in a summary (the
    # exit writes what is still being counted).
    check_stopped(w)
    err = w.stderr()
    counted = sum(int(l.rsplit("(repeated ", 1)[1].split()[0])
                  for l in lines_with(err, "upstream %s: connect failed" % dead, "(repeated"))
    written = [l for l in lines_with(err, "upstream %s: connect failed" % dead)
               if "(repeated" not in l]
    assert len(written) + counted == 3000, (len(written), counted)
