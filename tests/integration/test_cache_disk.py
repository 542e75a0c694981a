"""The cache across process lives: the disk tier after a restart and after a
SIGKILL mid-write (no torn or wrong body is ever served), files changed
on disk, a reload that keeps a store and one that changes it, two
workers sharing it, and a faulty origin under keep-alive load (stale
answers keep every response a 200)."""
import hashlib
import os
import signal
import socket
import threading
import time

import pytest

import backends as B
from conftest import binary, free_port, require_binary
from test_cache import Origin, h1, status_of

CONF = """
[servers.s]
addr = "127.0.0.1:%(port)d"
locations = ["l"]

[caches.disk]
memory = "%(memory)s"
directory = "%(dir)s"
disk_size = "%(disk)s"

[plugins.c]
category = "cache"
storage = "disk"
%(extra)s

[locations.l]
upstream = "u"
plugins = ["c"]

[upstreams.u]
addrs = ["%(origin)s"]
"""


@pytest.fixture
def origin(backend):
    o = Origin()
    o.backend = backend(o.handler)
    return o


@pytest.fixture
def run(start_proc, tmp_path, origin):
    """run(extra="", memory="8MB", disk="64MB") -> (proc, config path); the
    same port and directory each time, so a second run is a restart."""
    port = free_port()
    cdir = tmp_path / "cache"
    count = [0]

    def start(extra="", memory="8MB", disk="64MB", threads=2):
        require_binary("weir")
        count[0] += 1
        path = tmp_path / ("w%d.toml" % count[0])
        path.write_text(CONF % {"port": port, "memory": memory, "dir": cdir, "disk": disk,
                                "extra": extra, "origin": origin.backend.addr})
        p = start_proc([binary("weir"), "-c", str(path), "--threads", str(threads)], port,
                       "weir")
        p.path = path
        return p
    start.dir = cdir
    return start


def files(d):
    out = []
    for root, _, names in os.walk(d):
        out += [os.path.join(root, n) for n in names]
    return out


def wait_files(d, n, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len([f for f in files(d) if "/.tmp-" not in f]) >= n:
            return True
        time.sleep(0.05)
    return False


def test_a_restart_answers_from_the_warm_disk(run, origin):
    for i in range(5):
        origin.set("/d%d" % i, headers=[("Cache-Control", "max-age=600"), ("ETag", '"%d"' % i)],
                   body=("disk %d " % i) * 1000)
    w = run()
    for i in range(5):
        assert h1(w.port, "/d%d" % i).status == 200
    assert wait_files(run.dir, 5)
    assert w.stop() == []
    w = run()
    for i in range(5):
        r = h1(w.port, "/d%d" % i)
        assert r.status == 200 and r.body == ("disk %d " % i).encode() * 1000
        assert "hit" in status_of(r), r
        assert r.get("etag") == '"%d"' % i
    assert sum(origin.count("/d%d" % i) for i in range(5)) == 5
    # Age kept counting while weir was down
    assert int(h1(w.port, "/d0").get("age")) >= 0


def test_a_changed_file_is_a_miss_never_a_wrong_body(run, origin):
    origin.set("/x", headers=[("Cache-Control", "max-age=600")], body=b"A" * 5000)
    w = run()
    h1(w.port, "/x")
    assert wait_files(run.dir, 1)
    assert w.stop() == []
    (f,) = [p for p in files(run.dir) if "/.tmp-" not in p]
    data = bytearray(open(f, "rb").read())
    data[-100] ^= 0x01  # one bit of the body
    open(f, "wb").write(bytes(data))
    w = run()
    r = h1(w.port, "/x")
    assert r.status == 200 and r.body == b"A" * 5000
    assert "hit" not in status_of(r)
    assert origin.count("/x") == 2
    assert "does not check" in w.stderr()


def test_sigkill_mid_write_leaves_nothing_wrong(run, origin, tmp_path):
    bodies = {}
    for i in range(40):
        body = hashlib.sha256(b"%d" % i).hexdigest().encode() * 6000  # 384 KB
        bodies["/k%d" % i] = body
        origin.set("/k%d" % i, headers=[("Cache-Control", "max-age=600")], body=body)
    w = run(memory="64MB", disk="1GB")
    done = []

    def load(lo):
        for i in range(lo, 40, 4):
            try:
                h1(w.port, "/k%d" % i)
                done.append(i)
            except Exception:
                pass
    ts = [threading.Thread(target=load, args=(k,)) for k in range(4)]
    for t in ts:
        t.start()
    # kill while the writer thread is at work
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(done) < 12:
        time.sleep(0.005)
    w.signal(signal.SIGKILL)
    w.wait(10)
    w.checked = True
    for t in ts:
        t.join()
    whole = len([f for f in files(run.dir) if "/.tmp-" not in f])
    torn = [f for f in files(run.dir) if "/.tmp-" in f]
    w = run(memory="64MB", disk="1GB")
    time.sleep(0.5)
    hits = 0
    for p, body in bodies.items():
        r = h1(w.port, p)
        assert r.status == 200 and r.body == body, p
        hits += "hit" in status_of(r)
    deadline = time.monotonic() + 10  # the scan at start runs on its own thread
    while [f for f in torn if os.path.exists(f)] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [f for f in torn if os.path.exists(f)], "temporaries removed at start"
    # every file renamed into place before the kill is whole, and served
    assert hits == whole, (hits, whole)


def test_disk_bound_and_eviction(run, origin):
    for i in range(30):
        origin.set("/e%d" % i, headers=[("Cache-Control", "max-age=600")], body=b"e" * 50000)
    w = run(memory="1MB", disk="500KB")
    for i in range(30):
        h1(w.port, "/e%d" % i)
    time.sleep(0.5)
    total = sum(os.path.getsize(f) for f in files(run.dir))
    assert total <= 500 * 1024 + 60000, total


def test_a_reload_keeps_an_unchanged_store(run, origin):
    origin.set("/r", headers=[("Cache-Control", "max-age=600")], body="kept")
    w = run()
    h1(w.port, "/r")
    w.path.write_text(w.path.read_text().replace('category = "cache"',
                                                 'category = "cache"\nmax_ttl = "1h"'))
    w.signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while "reloaded" not in w.stderr() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "reloaded" in w.stderr()
    r = h1(w.port, "/r")
    assert "hit" in status_of(r) and origin.count("/r") == 1
    # a changed section is a new store (its memory tier is empty), on the same files
    w.path.write_text(w.path.read_text().replace('memory = "8MB"', 'memory = "4MB"'))
    w.signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while w.stderr().count("reloaded") < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    r = h1(w.port, "/r")
    assert r.body == b"kept" and "hit" in status_of(r), "found again on disk"


def test_faults_under_keepalive_load_are_covered_by_stale_answers(run, origin):
    """20 s of keep-alive clients while the origin answers 503 or closes
    every other second: each response is a 200 with the right body."""
    state = {"bad": False}
    for i in range(10):
        path = "/f%d" % i

        def answer(req, n, i=i):
            if state["bad"]:
                return 503, [], b"down"
            return 200, [("Cache-Control", "max-age=1, stale-if-error=600")], b"f%d" % i
        origin.routes[path] = answer
    w = run('stale_on_error = "10m"')
    for i in range(10):
        h1(w.port, "/f%d" % i)
    stop = time.monotonic() + 20
    bad = []
    counts = [0]

    def client(k):
        s = socket.create_connection(("127.0.0.1", w.port), timeout=10)
        rd = B.Reader(s)
        n = 0
        while time.monotonic() < stop:
            i = (k + n) % 10
            n += 1
            try:
                s.sendall(b"GET /f%d HTTP/1.1\r\nHost: test.local\r\n\r\n" % i)
                r = B.read_response(rd)
            except Exception as e:  # a socket error counts
                bad.append(repr(e))
                s = socket.create_connection(("127.0.0.1", w.port), timeout=10)
                rd = B.Reader(s)
                continue
            counts[0] += 1
            if r.status != 200 or r.body != b"f%d" % i:
                bad.append((r.status, r.body[:20]))
            if r.headers.get("Connection", "").lower() == "close":  # keepalive_requests
                s.close()
                s = socket.create_connection(("127.0.0.1", w.port), timeout=10)
                rd = B.Reader(s)
        s.close()

    def flapper():
        while time.monotonic() < stop:
            state["bad"] = not state["bad"]
            time.sleep(1)
        state["bad"] = False
    ts = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    ts.append(threading.Thread(target=flapper))
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert counts[0] > 1000
    assert bad == [], bad[:10]
