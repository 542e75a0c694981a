"""Upstreams with many backends (docs/config.md, [upstreams.NAME], "Sizes and
limits"): 10,000 backends load and spread, and an admin PUT of 2,000
backends applies and takes traffic. (The member limit is a unit test:
lb_members/max_backends.)

Costs (load time, peak RSS, PUT time) are printed, never asserted: they
depend on the machine and the build (the suite usually runs a sanitizer
build).
Run with -s to see them; bench/lb_scale.py measures a release build.

The many backends are one listener on 0.0.0.0 reached through distinct
loopback addresses 127.0.X.Y:PORT; it answers with the address it was
reached at, so the test sees which backend each request went to.
"""
import http.client
import socket
import threading
import time

import pytest

import backends as B
from conftest import binary, free_port, require_binary, wait_port
from test_admin import Admin, config as admin_config, start as admin_start


class Sink:
    """An HTTP/1.1 server on 0.0.0.0: answers every request with the local
    address of its connection, then closes."""

    def __init__(self):
        self.sock = B.listen_socket("0.0.0.0", 0, 4096)
        self.port = self.sock.getsockname()[1]
        self.errors = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            c.settimeout(10)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = c.recv(4096)
                if not chunk:
                    return
                data += chunk
            body = ("%s:%d" % c.getsockname()).encode()
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                      % (len(body), body))
        except OSError as e:
            self.errors.append(repr(e))
        finally:
            c.close()

    def addrs(self, n):
        """n distinct backend addresses, all reaching this sink."""
        return ["127.0.%d.%d:%d" % (1 + i // 250, 1 + i % 250, self.port) for i in range(n)]

    def close(self):
        self.sock.close()


@pytest.fixture
def sink():
    s = Sink()
    yield s
    s.close()
    assert not s.errors, s.errors[:5]


def upstream_config(port, addrs, algo):
    return ('[servers.s]\naddr = "127.0.0.1:%d"\nlocations = ["all"]\n\n'
            '[locations.all]\nupstream = "u"\n\n'
            '[upstreams.u]\nalgo = "%s"\nkeepalive = 0\naddrs = [%s]\n'
            % (port, algo, ", ".join('"%s"' % a for a in addrs)))


def peak_rss_mib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0


def get_all(port, n, headers_of=None):
    """n GETs over one keep-alive connection; the bodies (backend addresses)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    out = []
    try:
        for i in range(n):
            c.request("GET", "/r%d" % i, headers=headers_of(i) if headers_of else {})
            r = c.getresponse()
            body = r.read().decode()
            assert r.status == 200, (i, r.status, body)
            out.append(body)
    finally:
        c.close()
    return out


@pytest.mark.deadline(420)
@pytest.mark.parametrize("algo", ["round_robin", "maglev:header:X-Key", "hash:header:X-Key"])
def test_ten_thousand_backends_spread(tmp_path, start_proc, sink, algo):
    """Round robin: one period of 10,000 requests reaches every backend once.
    Hashing: 3,000 keys land on as many distinct backends as uniform
    hashing would (about 10,000 * (1 - e^-0.3) = 2,592), each key always on
    the same one."""
    require_binary("weir")
    port = free_port()
    path = tmp_path / "weir.toml"
    path.write_text(upstream_config(port, sink.addrs(10000), algo))
    t0 = time.monotonic()
    w = start_proc([binary("weir"), "-c", str(path), "--threads", "2"], port, "weir", wait=False)
    # The config loader's backend list grows by one entry a time: quadratic
    # copying under ASan (glibc's realloc extends in place in a release).
    assert wait_port(port, w.proc, timeout=180), w.describe()
    started = time.monotonic() - t0
    if algo == "round_robin":
        got = get_all(port, 10000)
        assert sorted(got) == sorted(sink.addrs(10000))
    else:
        got = get_all(port, 3000, lambda i: {"X-Key": "k%d" % i})
        assert 2450 <= len(set(got)) <= 2750, len(set(got))
        again = get_all(port, 300, lambda i: {"X-Key": "k%d" % (i * 7)})
        assert again == [got[i * 7] for i in range(300)]
    print("10000 backends, %s: listening after %.2f s, peak RSS %.0f MiB (this build)"
          % (algo, started, peak_rss_mib(w.pid)))


@pytest.mark.deadline(240)
@pytest.mark.parametrize("persist", [False, True])
def test_put_of_two_thousand_backends(tmp_path, start_proc, sink, persist):
    """PUT /api/upstreams/u with 2,000 backends applies at once; one
    round-robin period then reaches each of them once; a PUT that changes
    every member and one that shrinks it to one backend apply too."""
    require_binary("weir")
    port, aport = free_port(), free_port()
    first = sink.addrs(1)
    path, w = admin_start(start_proc, tmp_path, admin_config(port, aport, first, persist=persist),
                          port, aport)
    adm = Admin(aport)
    many = sink.addrs(4000)
    timings = []

    def put(specs):
        t0 = time.monotonic()
        r = adm.call("PUT", "/api/upstreams/u", {"backends": specs})
        timings.append(time.monotonic() - t0)
        assert r.status == 200, r.json
        return r

    r = put([{"addr": a} for a in many[:2000]])
    assert sorted(b["addr"] for b in r.json["backends"]) == sorted(many[:2000])
    assert r.json["persisted"] is persist
    assert sorted(get_all(port, 2000)) == sorted(many[:2000])
    # every member replaced, half of them with weight 2
    r = put([{"addr": a, "weight": 1 + i % 2} for i, a in enumerate(many[2000:])])
    assert {b["addr"]: b["weight"] for b in r.json["backends"]} == {
        a: 1 + i % 2 for i, a in enumerate(many[2000:])}
    got = get_all(port, 3000)  # one period: weights 1 and 2, 1,000 of each
    counts = {a: got.count(a) for a in set(got)}
    assert all(counts.get(a, 0) == 1 + i % 2 for i, a in enumerate(many[2000:]))
    if persist:
        text = path.read_text()
        assert all('"%s 2"' % a in text for a in many[2001::2][:50])
    r = put([{"addr": first[0]}])
    assert [b["addr"] for b in r.json["backends"]] == first
    assert set(get_all(port, 5)) == set(first)
    print("PUT of 2000 backends (persist=%s): %s ms (this build)"
          % (persist, ", ".join("%.0f" % (t * 1000) for t in timings)))
