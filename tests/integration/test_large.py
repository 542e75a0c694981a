"""Large bodies stream through with bounded proxy memory; slow clients."""
import threading
import time

import pytest

import backends as B

GIB = 1 << 30
RSS_LIMIT_KIB = 32 * 1024


class RssSampler:
    """Samples the proxy's VmRSS every 20 ms in a thread."""

    def __init__(self, proc):
        self.proc = proc
        self.baseline = proc.rss_kib()
        self.peak = self.baseline
        self.stop_ev = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop_ev.wait(0.02):
            try:
                self.peak = max(self.peak, self.proc.rss_kib())
            except (OSError, ValueError):
                return

    def stop(self):
        self.stop_ev.set()
        self.thread.join(2)
        return self.peak - self.baseline


def warm_up(port, n=3):
    for _ in range(n):
        assert B.get(port, "/warm").status == 200


def upload_handler(conn, req):
    if req.path == "/warm":
        return B.fixed(b"warm\n")(conn, req)
    body = str(req.body_len).encode()
    conn.send(B.response_head(200, [("Content-Length", str(len(body)))]) + body)


def download_handler(n):
    huge = B.huge(n)

    def handler(conn, req):
        if req.path == "/warm":
            return B.fixed(b"warm\n")(conn, req)
        return huge(conn, req)

    return handler


@pytest.mark.deadline(120)
def test_1gib_download_bounded_memory(backend, weir, record_property):
    b = backend(download_handler(GIB))
    w = weir([b], threads=2)
    warm_up(w.port)
    rss = RssSampler(w)
    t0 = time.monotonic()
    s = B.connect(w.port, timeout=30)
    s.sendall(b"GET /huge HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    r = B.read_response(B.Reader(s), sink=False)
    s.close()
    took = time.monotonic() - t0
    growth = rss.stop()
    record_property("download_seconds", round(took, 2))
    record_property("download_rss_growth_kib", growth)
    print("1 GiB download: %.1f s, %.0f MiB/s, RSS growth %d KiB" % (took, 1024 / took, growth))
    assert r.status == 200
    assert r.body == GIB
    assert growth < RSS_LIMIT_KIB, "proxy RSS grew by %d KiB" % growth
    assert took < 60


@pytest.mark.deadline(120)
def test_1gib_upload_bounded_memory(backend, weir, record_property):
    b = backend(upload_handler, store_body=False)
    w = weir([b], threads=2)
    warm_up(w.port)
    rss = RssSampler(w)
    t0 = time.monotonic()
    s = B.connect(w.port, timeout=30)
    s.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
              b"Connection: close\r\n\r\n" % GIB)
    view = memoryview(B.PATTERN)
    left = GIB
    while left:
        k = min(left, len(view))
        s.sendall(view[:k])
        left -= k
    r = B.read_response(B.Reader(s))
    s.close()
    took = time.monotonic() - t0
    growth = rss.stop()
    record_property("upload_seconds", round(took, 2))
    record_property("upload_rss_growth_kib", growth)
    print("1 GiB upload: %.1f s, %.0f MiB/s, RSS growth %d KiB" % (took, 1024 / took, growth))
    assert r.status == 200
    assert r.body == str(GIB).encode()
    assert b.last().body_len == GIB
    assert growth < RSS_LIMIT_KIB, "proxy RSS grew by %d KiB" % growth
    assert took < 60


@pytest.mark.deadline(60)
def test_chunked_upload_large(backend, weir):
    b = backend(upload_handler, store_body=False)
    w = weir([b], threads=2)
    n = 64 << 20
    s = B.connect(w.port, timeout=10)
    s.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
              b"Connection: close\r\n\r\n")
    piece = B.PATTERN[:65536]
    frame = b"%x\r\n%s\r\n" % (len(piece), piece)
    for _ in range(n // len(piece)):
        s.sendall(frame)
    s.sendall(b"0\r\n\r\n")
    r = B.read_response(B.Reader(s))
    s.close()
    assert r.status == 200 and r.body == str(n).encode()


@pytest.mark.deadline(60)
def test_slow_reading_client_gets_everything(backend, weir):
    n = 64 << 20
    b = backend(download_handler(n))
    w = weir([b], threads=1)
    warm_up(w.port)
    rss = RssSampler(w)
    s = B.connect(w.port, timeout=30)
    # (No tiny SO_RCVBUF: loopback TCP itself crawls with a 16 KiB window.)
    s.sendall(b"GET /slowread HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    rd = B.Reader(s)
    rd.read_head()
    # Read the first 2 MiB slowly (~2.5 s), the rest at full speed.
    got = 0
    while got < (2 << 20):
        data = s.recv(16384)
        assert data
        got += len(data)
        time.sleep(0.02)
    got += len(rd.buf)
    rd.buf.clear()
    got += rd.read_to_eof(sink=False)
    s.close()
    growth = rss.stop()
    print("slow client: RSS growth %d KiB" % growth)
    assert got == n
    assert growth < RSS_LIMIT_KIB, "proxy RSS grew by %d KiB with a slow client" % growth
