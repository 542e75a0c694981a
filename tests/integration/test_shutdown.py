"""Signals: graceful drain on SIGTERM/SIGINT, immediate stop on SIGQUIT."""
import signal
import socket
import threading
import time

import pytest

import backends as B
from conftest import check_stopped


def slow_then_fast(delay):
    def handler(conn, req):
        if req.path == "/slow":
            return B.slow(delay, b"drained\n")(conn, req)
        return B.fixed(b"fast\n")(conn, req)

    return handler


def start_slow_request(port):
    result = {}

    def run():
        try:
            result["r"] = B.get(port, "/slow", timeout=10)
        except Exception as e:  # reported by the test
            result["e"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, result


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_graceful_drain(backend, weir, sig):
    b = backend(slow_then_fast(1.0))
    w = weir([b], "--grace-period", "5000")
    t, result = start_slow_request(w.port)
    assert b.wait_requests(1, 5)
    t0 = time.monotonic()
    w.signal(sig)
    time.sleep(0.2)
    # New connections are refused once the listeners are closed.
    with pytest.raises(OSError):
        s = socket.create_connection((B.LOOPBACK, w.port), timeout=2)
        try:  # accepted by a leftover backlog? then it must not be served
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            s.settimeout(2)
            if not s.recv(100):
                raise ConnectionResetError("closed without answer")
        finally:
            s.close()
    t.join(10)
    assert "e" not in result, result.get("e")
    assert result["r"].status == 200 and result["r"].body == b"drained\n"
    w.wait(timeout=10)
    took = time.monotonic() - t0
    assert w.proc.returncode == 0
    assert took < 5.0, "exit took %.1f s" % took
    check_stopped(w)


def test_idle_keepalive_connection_does_not_delay_exit(backend, weir):
    b = backend()
    w = weir([b], "--grace-period", "5000")
    s = B.connect(w.port)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert B.read_response(B.Reader(s)).status == 200
    t0 = time.monotonic()
    w.signal(signal.SIGTERM)
    w.wait(timeout=10)
    assert time.monotonic() - t0 < 2.0
    assert w.proc.returncode == 0
    s.close()
    check_stopped(w)


def test_grace_period_expires(backend, weir):
    b = backend(slow_then_fast(5.0))
    w = weir([b], "--grace-period", "500")
    t, result = start_slow_request(w.port)
    assert b.wait_requests(1, 5)
    t0 = time.monotonic()
    w.signal(signal.SIGTERM)
    w.wait(timeout=10)
    took = time.monotonic() - t0
    assert 0.3 < took < 3.0, took
    assert w.proc.returncode == 0
    t.join(10)
    # The cut request does not get a fake success.
    r = result.get("r")
    assert r is None or r.status != 200
    check_stopped(w)


def test_sigquit_immediate(backend, weir):
    b = backend(slow_then_fast(5.0))
    w = weir([b], "--grace-period", "10000")
    t, result = start_slow_request(w.port)
    assert b.wait_requests(1, 5)
    t0 = time.monotonic()
    w.signal(signal.SIGQUIT)
    w.wait(timeout=10)
    assert time.monotonic() - t0 < 2.0
    t.join(10)
    r = result.get("r")
    assert r is None or r.status != 200
    check_stopped(w)
