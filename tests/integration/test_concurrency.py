"""Many concurrent clients."""
import selectors
import socket
import time

import pytest

import backends as B

N_CLIENTS = 1000


@pytest.mark.deadline(90)
def test_1000_concurrent_connections(backend, weir):
    b1 = backend(B.fixed(b"c1\n"))
    b2 = backend(B.fixed(b"c2\n"))
    w = weir([b1, b2], threads=2)
    sel = selectors.DefaultSelector()
    socks = []
    # Open every connection first, so all 1,000 are held at once.
    for i in range(N_CLIENTS):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex((B.LOOPBACK, w.port))
        socks.append(s)
    time.sleep(0.2)
    bufs = {}
    for i, s in enumerate(socks):
        sel.register(s, selectors.EVENT_WRITE, i)
        bufs[i] = bytearray()
    pending_write = set(range(N_CLIENTS))
    done = {}
    deadline = time.monotonic() + 60
    while len(done) < N_CLIENTS and time.monotonic() < deadline:
        for key, ev in sel.select(timeout=1):
            i, s = key.data, key.fileobj
            if i in pending_write and ev & selectors.EVENT_WRITE:
                s.send(b"GET /c/%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % i)
                pending_write.discard(i)
                sel.modify(s, selectors.EVENT_READ, i)
                continue
            try:
                data = s.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as e:
                data = b""
                bufs[i] += ("<%s>" % e).encode()
            if data:
                bufs[i] += data
            else:
                done[i] = bytes(bufs[i])
                sel.unregister(s)
                s.close()
    for s in socks:
        if s.fileno() >= 0:
            s.close()
    ok = [i for i, d in done.items() if d.startswith(b"HTTP/1.1 200") and
          (d.endswith(b"\r\n\r\nc1\n") or d.endswith(b"\r\n\r\nc2\n"))]
    bad = {i: d[:80] for i, d in done.items() if i not in ok}
    assert len(done) == N_CLIENTS, "%d of %d finished" % (len(done), N_CLIENTS)
    assert not bad, "%d failed, e.g. %r" % (len(bad), list(bad.items())[:3])
    assert b1.request_count() + b2.request_count() == N_CLIENTS
    assert abs(b1.request_count() - b2.request_count()) <= 2
