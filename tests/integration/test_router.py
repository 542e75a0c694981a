"""Routing by an external router (issue 19): a location's `router =
"resp://HOST:PORT"` asks `GET <router_key>` over a pooled, pipelined RESP
connection without blocking the worker, and proxies to the "ip:port" it
answers; router_timeout and router_fallback when it is slow, down or
answers nil.

The two-tier design end to end: two weir proxies asking one weir ring
agree on every key's backend, and so do proxies asking a real
redis-server holding `SET /path ip:port`. Attacks: the router killed and
restarted under keep-alive load, a router that accepts and never answers,
one that answers garbage, an error, or an address nothing listens on.
"""
import http.client
import re
import signal
import subprocess
import threading
import time

import pytest

import backends as B
import resputil as R
from conftest import binary, free_port, require_binary, wait_port
from test_metrics import scrape, value

TOKEN = "router-token"


def names(backend, n):
    bs = [backend(B.fixed(("b%d" % i).encode())) for i in range(n)]
    return bs, {b.addr: "b%d" % i for i, b in enumerate(bs)}


def proxy_config(port, router, ups, aport=None, loc_extra="", up_extra=""):
    text = ""
    if aport:
        text += '[admin]\naddr = "127.0.0.1:%d"\ntoken = "%s"\n\n' % (aport, TOKEN)
    text += ('[servers.web]\naddr = "127.0.0.1:%d"\nlocations = ["all"]\n\n'
             '[locations.all]\nrouter = "%s"\n%s' % (port, router, loc_extra))
    if ups:
        text += 'upstream = "fallback"\n\n[upstreams.fallback]\naddrs = [%s]\n%s' % (
            ", ".join('"%s"' % a for a in ups), up_extra)
    return text


def ring_config(port, addrs):
    return ('[servers.ring]\naddr = "127.0.0.1:%d"\nprotocol = "resp"\nupstream = "u"\n\n'
            '[upstreams.u]\naddrs = [%s]\nalgo = "hash:uri"\n'
            % (port, ", ".join('"%s"' % a for a in addrs)))


def start(start_proc, tmp_path, text, port, name):
    require_binary("weir")
    path = tmp_path / (name + ".toml")
    path.write_text(text)
    return start_proc([binary("weir"), "-c", str(path), "--threads", "2"], port, name)


def get(port, path, headers=None, conn=None):
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", path, headers=headers or {})
    r = c.getresponse()
    body = r.read().decode()
    if not conn:
        c.close()
    return r.status, body


@pytest.fixture
def fake():
    made = []

    def make(answer, port=0):
        f = R.FakeServer(answer, port)
        made.append(f)
        return f

    yield make
    for f in made:
        f.close()


def test_two_proxies_and_a_ring_agree(backend, start_proc, tmp_path):
    bs, name = names(backend, 4)
    ring, p1, p2 = free_port(), free_port(), free_port()
    start(start_proc, tmp_path, ring_config(ring, [b.addr for b in bs]), ring, "ring")
    router = "resp://127.0.0.1:%d" % ring
    # The fallback upstream is one backend: a request that reached it
    # would show (b9), and none does.
    other = backend(B.fixed(b"b9"))
    for port, n in ((p1, "p1"), (p2, "p2")):
        start(start_proc, tmp_path, proxy_config(port, router, [other.addr]), port, n)
    paths = ["/item/%d" % i for i in range(120)]
    c1 = http.client.HTTPConnection("127.0.0.1", p1, timeout=10)
    c2 = http.client.HTTPConnection("127.0.0.1", p2, timeout=10)
    r = R.Raw(ring)
    seen = set()
    for p in paths:
        s1, b1 = get(p1, p, conn=c1)
        s2, b2 = get(p2, p, conn=c2)
        owner = r.command("GET", p).decode()
        assert s1 == s2 == 200 and b1 == b2 == name[owner], (p, b1, b2, owner)
        seen.add(b1)
    assert len(seen) == 4


def test_redis_server_as_the_router(backend, start_proc, tmp_path):
    bs, name = names(backend, 3)
    rport, port = free_port(), free_port()
    redis = start_proc(["redis-server", "--port", str(rport), "--bind", "127.0.0.1",
                        "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                       rport, "redis-server")
    assert redis
    for i in range(30):
        subprocess.run(["redis-cli", "-p", str(rport), "SET", "/p/%d" % i, bs[i % 3].addr],
                       check=True, capture_output=True, timeout=10)
    fallback = backend(B.fixed(b"fb"))
    start(start_proc, tmp_path, proxy_config(port, "resp://127.0.0.1:%d" % rport,
                                             [fallback.addr]), port, "weir")
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for i in range(30):
        assert get(port, "/p/%d" % i, conn=c) == (200, "b%d" % (i % 3))
    # A key redis does not hold: nil, so the upstream.
    assert get(port, "/nowhere", conn=c) == (200, "fb")
    # A query string is part of $uri.
    assert get(port, "/p/1?x=1", conn=c) == (200, "fb")


def test_router_keys_from_variables(backend, fake, start_proc, tmp_path):
    b = backend(B.fixed(b"routed"))
    f = fake(lambda k: b.addr)
    port = free_port()
    start(start_proc, tmp_path,
          proxy_config(port, "resp://" + f.addr, [b.addr],
                       loc_extra='router_key = "$host$uri|$http_x_user|$cookie_sid"\n'),
          port, "weir")
    status, body = get(port, "/a/b?c=d", headers={"Host": "ex.test", "X-User": "ann",
                                                   "Cookie": "x=1; sid=s42"})
    assert (status, body) == (200, "routed")
    assert f.keys == ["ex.test/a/b?c=d|ann|s42"]
    # Missing header and cookie: empty parts; a space stays in the key (a
    # bulk string, not an inline command).
    assert get(port, "/z", headers={"Host": "h", "X-User": "a b"}) == (200, "routed")
    assert f.keys[-1] == "h/z|a b|"


@pytest.mark.parametrize("answer,want", [
    (None, (200, "fb")),                       # nil
    (R.Error("ERR nope"), (200, "fb")),         # an error reply
    ("not-an-address", (200, "fb")),            # garbage
    ("hang", (200, "fb")),                      # no answer: router_timeout
])
def test_misses_fall_back_to_the_upstream(answer, want, backend, fake, start_proc, tmp_path):
    fb = backend(B.fixed(b"fb"))
    f = fake(lambda k: answer)
    port = free_port()
    start(start_proc, tmp_path, proxy_config(port, "resp://" + f.addr, [fb.addr]), port, "weir")
    t0 = time.monotonic()
    assert get(port, "/x") == want
    assert time.monotonic() - t0 < 5


def test_fallback_error_answers_what_went_wrong(fake, start_proc, tmp_path):
    answers = {"/nil": None, "/err": R.Error("ERR x"), "/hang": "hang"}
    f = fake(lambda k: answers.get(k))
    port = free_port()
    start(start_proc, tmp_path,
          proxy_config(port, "resp://" + f.addr, None,
                       loc_extra='router_fallback = "error"\nrouter_timeout = "500ms"\n'),
          port, "weir")
    answers["/dead"] = "127.0.0.1:%d" % free_port()
    assert get(port, "/nil")[0] == 503
    assert get(port, "/err")[0] == 502
    # A backend the router names that refuses: 502, not a hang.
    assert get(port, "/dead")[0] == 502
    # Last: a reply that never comes also holds back the replies after it
    # on that connection (they are matched in order), until it is reset.
    assert get(port, "/hang")[0] == 504


def test_router_killed_and_back_under_load(backend, start_proc, tmp_path):
    """Keep-alive clients for 8 s; the ring is killed at 2 s and started
    again at 5 s: every request gets a 200 (from the fallback while the
    router is away), none hangs, and after it is back requests follow it
    again."""
    bs, name = names(backend, 3)
    fb = backend(B.fixed(b"fb"))
    ring, port, aport = free_port(), free_port(), free_port()
    ring_text = ring_config(ring, [b.addr for b in bs])
    rp = start(start_proc, tmp_path, ring_text, ring, "ring")
    start(start_proc, tmp_path, proxy_config(port, "resp://127.0.0.1:%d" % ring, [fb.addr],
                                             aport=aport), port, "weir")
    stop = threading.Event()
    results, slow = [], []

    def client(n):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        i = 0
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                status, body = get(port, "/k/%d/%d" % (n, i % 50), conn=c)
                results.append((status, body))
            except Exception as e:
                results.append((repr(e), ""))
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            if time.monotonic() - t0 > 2:
                slow.append(time.monotonic() - t0)
            i += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    time.sleep(2)
    rp.proc.kill()
    rp.proc.wait(5)
    rp.checked = True
    time.sleep(3)
    during = len(results)
    rp2 = start(start_proc, tmp_path, ring_text, ring, "ring2")
    assert rp2
    time.sleep(3)
    stop.set()
    for t in threads:
        t.join(15)
    bad = [r for r in results if r[0] != 200]
    assert not bad and not slow, (bad[:5], slow[:5])
    assert len(results) > 200
    bodies = [b for _, b in results]
    assert "fb" in bodies[:during] and set(bodies[-50:]) <= {"b0", "b1", "b2"}, bodies[-50:]
    _, _, text = scrape(aport, TOKEN)
    assert value(text, "weir_router_lookups_total", location="all", result="routed") > 0
    assert value(text, "weir_router_lookups_total", location="all", result="error") > 0


def test_a_router_that_never_answers_costs_little(backend, fake, start_proc, tmp_path):
    """Accepts, reads, never replies: the first requests wait
    router_timeout, then the link is reset and the router is skipped for
    a second at a time; 0 errors."""
    fb = backend(B.fixed(b"fb"))
    f = fake(lambda k: "hang")
    port = free_port()
    start(start_proc, tmp_path, proxy_config(port, "resp://" + f.addr, [fb.addr],
                                             loc_extra='router_timeout = "50ms"\n'),
          port, "weir")
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    t0 = time.monotonic()
    n = 0
    while time.monotonic() - t0 < 3:
        assert get(port, "/h/%d" % n, conn=c) == (200, "fb")
        n += 1
    # Most requests skipped the router: far more than 3 s / 50 ms.
    assert n > 200, n
    assert len(f.keys) < n / 2, (len(f.keys), n)


def check(tmp_path, text):
    p = tmp_path / "t.toml"
    p.write_text(text)
    r = subprocess.run([binary("weir"), "-t", "-c", str(p)], capture_output=True, timeout=30)
    return r.returncode, r.stderr.decode() + r.stdout.decode()


@pytest.mark.parametrize("router,extra,ups,want", [
    ("http://127.0.0.1:1", "", True, 'expected "resp://HOST:PORT"'),
    ("resp://127.0.0.1", "", True, 'expected "resp://HOST:PORT"'),
    ("resp://no-such-host.invalid:6379", "", True, "cannot resolve"),
    ("resp://127.0.0.1:6379", 'router_fallback = "maybe"\n', True, 'expected "upstream" or'),
    ("resp://127.0.0.1:6379", "", False, "no 'upstream' to fall back to"),
    ("resp://127.0.0.1:6379", 'router_timeout = "0s"\n', True, "more than 0"),
])
def test_config_errors(router, extra, ups, want, tmp_path):
    require_binary("weir")
    rc, out = check(tmp_path, proxy_config(1, router, ["127.0.0.1:2"] if ups else None,
                                           loc_extra=extra))
    assert rc != 0 and re.search(r"t\.toml:\d+: ", out) and want in out, out


def test_router_keys_need_a_router(tmp_path):
    require_binary("weir")
    rc, out = check(tmp_path, '[servers.s]\naddr = "127.0.0.1:1"\nlocations = ["l"]\n'
                    '[locations.l]\nupstream = "u"\nrouter_key = "$uri"\n'
                    '[upstreams.u]\naddrs = ["127.0.0.1:2"]\n')
    assert rc != 0 and "'router_key' in [locations.l] needs 'router'" in out, out


def test_reload_keeps_the_router_connection(backend, fake, start_proc, tmp_path):
    b = backend(B.fixed(b"routed"))
    f = fake(lambda k: b.addr)
    port = free_port()
    w = start(start_proc, tmp_path, proxy_config(port, "resp://" + f.addr, [b.addr]), port,
              "weir")
    for i in range(20):
        assert get(port, "/r/%d" % i) == (200, "routed")
    conns = len(f.conns)
    assert conns <= 2  # one per worker
    (tmp_path / "weir.toml").write_text(proxy_config(port, "resp://" + f.addr, [b.addr],
                                                     loc_extra='router_timeout = "80ms"\n'))
    w.signal(signal.SIGHUP)
    time.sleep(0.5)
    for i in range(20):
        assert get(port, "/s/%d" % i) == (200, "routed")
    assert len(f.conns) == conns
    assert wait_port(port)
