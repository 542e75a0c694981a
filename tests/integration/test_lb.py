"""Load balancing in weir: failover and retries, the circuit breaker, active
health checks, consistent hashing, sticky cookies, least_conn, weighted
round robin (the weir program from a generated TOML file), and runtime
membership through the library API (tests/tools/weir-lb-app.c).

Every backend is a real Python server on loopback that answers with its own
name, so the body tells which backend served a request; the backends record
every request, so a test can tell whether a request was repeated.
"""
import re
import socket
import threading
import time

import pytest

import backends as B
from conftest import binary, check_stopped, closed_port, free_port, require_binary

HEALTH_PATH = "/healthz"


# ---------------------------------------------------------------------------
# Helpers


@pytest.fixture
def proxy(tmp_path, start_proc):
    """proxy(upstream_text, threads=2, **addrs) -> Proc running `weir -c` on
    one server -> one location -> [upstreams.pool]. upstream_text is the
    body of [upstreams.pool]; @NAME@ becomes the address of addrs[NAME]
    (a Backend or an "ip:port" string)."""
    count = [0]

    def start(upstream_text, threads=2, **addrs):
        require_binary("weir")
        port = free_port()
        text = ('[servers.main]\naddr = "127.0.0.1:%d"\nlocations = ["all"]\n\n'
                '[locations.all]\nupstream = "pool"\n\n[upstreams.pool]\n%s\n'
                % (port, upstream_text))
        for name, b in addrs.items():
            text = text.replace("@%s@" % name, b if isinstance(b, str) else b.addr)
        assert "@" not in text, text
        count[0] += 1
        path = tmp_path / ("weir-lb-%d.toml" % count[0])
        path.write_text(text)
        argv = [binary("weir"), "-c", str(path), "--threads", str(threads)]
        return start_proc(argv, port, "weir")

    return start


@pytest.fixture
def lb_app(start_proc):
    """lb_app(*backends) -> Proc running weir-lb-app over them."""

    def start(*members):
        require_binary("weir-lb-app")
        port = free_port()
        argv = [binary("weir-lb-app"), "127.0.0.1:%d" % port]
        argv += [m if isinstance(m, str) else m.addr for m in members]
        return start_proc(argv, port, "weir-lb-app")

    return start


def addrs_list(*names):
    return "addrs = [%s]\n" % ", ".join('"@%s@"' % n for n in names)


class Client:
    """HTTP/1.1 client on one keep-alive connection (reopened if weir
    closes it). src binds the client side to that loopback address."""

    def __init__(self, port, src=None, timeout=10.0):
        self.port = port
        self.src = src
        self.timeout = timeout
        self.sock = None
        self.reader = None

    def _connect(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        if self.src:
            s.bind((self.src, 0))
        s.connect((B.LOOPBACK, self.port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock, self.reader = s, B.Reader(s)

    def request(self, path="/", method="GET", headers=(), body=None, close=False):
        if self.sock is None:
            self._connect()
        lines = ["%s %s HTTP/1.1" % (method, path), "Host: lb.test"]
        lines += ["%s: %s" % kv for kv in headers]
        if body is not None:
            lines.append("Content-Length: %d" % len(body))
        if close:
            lines.append("Connection: close")
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")
        try:
            self.sock.sendall(raw)
            r = B.read_response(self.reader, method)
        except BaseException:
            self.close()
            raise
        if close or r.headers.get("Connection", "").lower() == "close":
            self.close()
        return r

    def close(self):
        if self.sock is not None:
            self.sock.close()
        self.sock = self.reader = None


def get(port, path="/", headers=(), src=None, timeout=10.0):
    """One GET on a new connection."""
    c = Client(port, src=src, timeout=timeout)
    try:
        return c.request(path, headers=headers, close=True)
    finally:
        c.close()


def name_of(r):
    return r.body.decode(errors="replace").strip() if r.status == 200 else r.status


def served(bk):
    """Requests a backend served, health probes excluded."""
    with bk.lock:
        return [r for r in bk.requests if not r.path.startswith(HEALTH_PATH)]


def named(backend, name):
    return backend(B.fixed(name.encode() + b"\n"), name=name)


def kill(bk):
    """Takes a backend down for good: the listener stops at once (later
    connects are refused) and its open connections are closed."""
    bk.stopping = True
    try:
        bk.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept thread on Linux
    except OSError:
        pass
    bk.sock.close()
    with bk.lock:
        conns = list(bk.conns)
    for s in conns:  # the serving threads see EOF and close them
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def wait_for(pred, timeout, step=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


def count_lines(text, *needles):
    return sum(1 for line in text.splitlines() if all(n in line for n in needles))


def count_logged(text, *needles):
    """Like count_lines, but a line "... (repeated N times)" stands for the
    N copies of it that weir's error log counted instead of writing. A
    summary is written once its second is over, or at exit: stop the
    process first (check_stopped) for an exact count."""
    n = 0
    for line in text.splitlines():
        if all(x in line for x in needles):
            m = re.search(r"\(repeated (\d+) times?\)$", line)
            n += int(m.group(1)) if m else 1
    return n


def connect_failures(proc, addr):
    """weir giving up on addr before a response (each time is followed by a
    retry elsewhere while retries are left), from its error log."""
    err = proc.stderr()
    return (count_logged(err, "upstream %s:" % addr, "connect failed")
            + count_logged(err, "upstream %s:" % addr, "before the response"))


def health_handler(name, state):
    """Answers GET /healthz with state["status"] / state["body"] (and records
    the probe's Host), everything else with the backend's name."""

    def handler(conn, req):
        if req.path.startswith(HEALTH_PATH):
            with conn.backend.lock:
                state.setdefault("hosts", []).append(req.headers.get("Host"))
            if state.get("delay") and conn.wait_peer_close(state["delay"]):
                return "close"
            body = state.get("body", b"ok\n")
            conn.send(B.response_head(state["status"], [("Content-Length", str(len(body)))])
                      + body)
            return
        body = name.encode() + b"\n"
        conn.send(B.response_head(200, [("Content-Length", str(len(body)))]) + body)

    return handler


def status_handler(name, state):
    """GET /slow/...: 1 s; answers state["status"] with the name as body."""

    def handler(conn, req):
        if req.path.startswith("/slow"):
            time.sleep(1.0)
        body = name.encode() + b"\n"
        conn.send(B.response_head(state["status"], [("Content-Length", str(len(body)))]) + body)

    return handler


# ---------------------------------------------------------------------------
# Failover, retries and the circuit breaker


@pytest.mark.deadline(30)
def test_failover_when_a_backend_dies_mid_stream(backend, proxy):
    bs = {n: named(backend, n) for n in ("a", "b", "c")}
    w = proxy(addrs_list("a", "b", "c"), **bs)
    client = Client(w.port)
    statuses, names = [], []
    for i in range(200):
        if i == 60:
            kill(bs["b"])
        r = client.request("/item/%d" % i)
        statuses.append(r.status)
        names.append(name_of(r))
    client.close()
    bad = [(i, s) for i, s in enumerate(statuses) if s != 200]
    assert not bad, "failed requests (index, status): %r\n%s" % (bad, w.describe())
    assert "b" in names[:60]
    assert "b" not in names[60:], "the dead backend answered after it was killed"
    assert names[60:].count("a") > 50 and names[60:].count("c") > 50
    # The error log names the backend that failed.
    assert connect_failures(w, bs["b"].addr) >= 1, w.describe()


@pytest.mark.deadline(30)
def test_refused_backend_is_retried_then_ejected(backend, proxy):
    a, b = named(backend, "a"), named(backend, "b")
    dead = "127.0.0.1:%d" % closed_port()
    w = proxy(addrs_list("a", "b", "dead") + 'max_fails = 1\nfail_timeout = "10s"\n',
              a=a, b=b, dead=dead)
    client = Client(w.port)
    for i in range(30):
        r = client.request("/x%d" % i)
        assert r.status == 200, (i, r, w.describe())
    first = connect_failures(w, dead)
    assert first >= 1, w.describe()
    assert re.search(r"backend %s ejected" % re.escape(dead), w.stderr()), w.describe()
    for i in range(30):
        r = client.request("/y%d" % i)
        assert r.status == 200, (i, r, w.describe())
    client.close()
    # With max_fails = 1 the first refusal opens the breaker for 10 s: the
    # dead backend is not tried again (no new retry lines, none counted).
    check_stopped(w)
    assert connect_failures(w, dead) == first == 1, w.describe()
    assert len(served(a)) + len(served(b)) == 60
    assert len(served(a)) >= 20 and len(served(b)) >= 20


@pytest.mark.deadline(20)
def test_breaker_half_open_probe(backend, proxy):
    state = {"status": 500}
    a = backend(status_handler("a", state), name="a")
    b = named(backend, "b")
    w = proxy(addrs_list("a", "b") + 'max_fails = 1\nfail_timeout = "1s"\n', a=a, b=b)
    client = Client(w.port)
    # A 500 is passed on (a response came) and opens a's breaker.
    rs = [client.request("/1-%d" % i) for i in range(6)]
    assert [r.status for r in rs].count(500) == 1, rs
    assert [name_of(r) for r in rs if r.status == 200] == ["b"] * 5
    assert count_lines(w.stderr(), "backend %s ejected" % a.addr) == 1, w.describe()
    # After fail_timeout one probe request goes through; it fails: open
    # again (for another fail_timeout), so only that one request reaches a.
    time.sleep(1.2)
    rs = [client.request("/2-%d" % i) for i in range(6)]
    assert [r.status for r in rs].count(500) == 1, rs
    assert "backend %s recovered" % a.addr not in w.stderr()
    # The backend recovers: the next probe succeeds and closes the breaker.
    state["status"] = 200
    time.sleep(1.2)
    rs = [client.request("/3-%d" % i) for i in range(10)]
    client.close()
    assert all(r.status == 200 for r in rs), rs
    assert [name_of(r) for r in rs].count("a") >= 4, [name_of(r) for r in rs]
    assert "backend %s recovered" % a.addr in w.stderr(), w.describe()
    assert len(served(a)) == 1 + 1 + [name_of(r) for r in rs].count("a")


@pytest.mark.deadline(20)
def test_all_down_with_open_breakers_is_a_quick_503(proxy):
    d1, d2 = ("127.0.0.1:%d" % closed_port() for _ in range(2))
    w = proxy(addrs_list("d1", "d2") + 'max_fails = 1\nfail_timeout = "10s"\n', d1=d1, d2=d2)
    # First request: both refuse (each breaker opens) -> 502 after the retry.
    r = get(w.port)
    assert r.status == 502, r
    assert connect_failures(w, d1) == 1 and connect_failures(w, d2) == 1, w.describe()
    # Then nothing is usable: 503 at once, without trying anyone.
    for _ in range(5):
        t0 = time.monotonic()
        r = get(w.port)
        took = time.monotonic() - t0
        assert r.status == 503, r
        assert took < 1.0, took
    check_stopped(w)
    assert connect_failures(w, d1) == 1 and connect_failures(w, d2) == 1, w.describe()


@pytest.mark.deadline(20)
def test_all_down_by_health_check_is_a_quick_503(proxy):
    d1, d2 = ("127.0.0.1:%d" % closed_port() for _ in range(2))
    w = proxy(addrs_list("d1", "d2") + 'max_fails = 0\nhealth_check = "tcp://"\n'
              'health_check_interval = "100ms"\nhealth_check_timeout = "500ms"\n'
              'health_check_fall = 1\nhealth_check_rise = 1\n', d1=d1, d2=d2)
    assert wait_for(lambda: count_lines(w.stderr(), "is unhealthy") >= 2, 5), w.describe()
    before = connect_failures(w, d1) + connect_failures(w, d2)
    for _ in range(5):
        t0 = time.monotonic()
        r = get(w.port)
        assert r.status == 503, r
        assert time.monotonic() - t0 < 1.0
    check_stopped(w)
    assert connect_failures(w, d1) + connect_failures(w, d2) == before


@pytest.mark.deadline(20)
def test_all_down_with_closed_breakers_is_502_after_retries(proxy):
    ds = ["127.0.0.1:%d" % closed_port() for _ in range(3)]
    w = proxy(addrs_list("d0", "d1", "d2"), d0=ds[0], d1=ds[1], d2=ds[2])  # max_retries 2
    r = get(w.port)
    assert r.status == 502, r
    # Three attempts, each on a different backend; every breaker still
    # closed (1 failure of 3), so the next request tries again: 502 again.
    assert [connect_failures(w, d) for d in ds] == [1, 1, 1], w.describe()
    r = get(w.port)
    assert r.status == 502, r
    check_stopped(w)  # the second round's lines repeat the first's: counted
    assert [connect_failures(w, d) for d in ds] == [2, 2, 2], w.describe()


@pytest.mark.deadline(20)
def test_max_retries_bounds_the_attempts(proxy, backend):
    ds = ["127.0.0.1:%d" % closed_port() for _ in range(3)]
    ok = named(backend, "ok")
    w = proxy(addrs_list("d0", "d1", "d2", "ok") + "max_retries = 1\nmax_fails = 0\n",
              d0=ds[0], d1=ds[1], d2=ds[2], ok=ok)
    statuses = [get(w.port).status for _ in range(8)]
    check_stopped(w)
    attempts = sum(connect_failures(w, d) for d in ds)
    # At most 2 attempts per request: a request whose two picks are both
    # dead gets 502; the live backend answers the others.
    assert set(statuses) <= {200, 502}, statuses
    assert 502 in statuses and 200 in statuses, statuses
    assert 2 * statuses.count(502) <= attempts <= 2 * 8 - statuses.count(200)


# ---------------------------------------------------------------------------
# Active health checks


@pytest.mark.deadline(30)
def test_http_health_check_takes_out_and_brings_back(backend, proxy):
    sa, sb = {"status": 200}, {"status": 200}
    a = backend(health_handler("a", sa), name="a")
    b = backend(health_handler("b", sb), name="b")
    w = proxy(addrs_list("a", "b") + 'health_check = "http:///healthz"\n'
              'health_check_interval = "200ms"\nhealth_check_rise = 2\n'
              'health_check_fall = 2\n', a=a, b=b)
    client = Client(w.port)
    names = [name_of(client.request()) for _ in range(10)]
    assert names.count("a") == 5 and names.count("b") == 5, names

    sb["status"] = 500
    t0 = time.monotonic()
    assert wait_for(lambda: "backend %s is unhealthy" % b.addr in w.stderr(), 3), w.describe()
    assert time.monotonic() - t0 < 2.0
    names = [name_of(client.request()) for _ in range(20)]
    assert names == ["a"] * 20, names

    sb["status"] = 200
    assert wait_for(lambda: "backend %s is healthy again" % b.addr in w.stderr(), 3), \
        w.describe()
    names = [name_of(client.request()) for _ in range(20)]
    client.close()
    assert names.count("b") >= 9, names
    assert "backend %s is unhealthy" % a.addr not in w.stderr()
    # "http:///healthz": the probe's Host is the backend's own address.
    assert sb["hosts"] and set(sb["hosts"]) == {b.addr}, sb["hosts"]
    assert set(sa["hosts"]) == {a.addr}


@pytest.mark.deadline(20)
def test_http_health_check_host_is_sent(backend, proxy):
    sa = {"status": 200}
    a = backend(health_handler("a", sa), name="a")
    w = proxy(addrs_list("a") + 'health_check = "http://status.internal/healthz"\n'
              'health_check_interval = "100ms"\n', a=a)
    assert wait_for(lambda: len(sa.get("hosts", [])) >= 2, 3), w.describe()
    assert set(sa["hosts"]) == {"status.internal"}


@pytest.mark.deadline(20)
def test_tcp_health_check_takes_a_closed_port_out(backend, proxy):
    a = named(backend, "a")
    dead = "127.0.0.1:%d" % closed_port()
    w = proxy(addrs_list("a", "dead") + 'max_fails = 0\nhealth_check = "tcp://"\n'
              'health_check_interval = "200ms"\nhealth_check_fall = 2\n', a=a, dead=dead)
    assert wait_for(lambda: "backend %s is unhealthy" % dead in w.stderr(), 3), w.describe()
    assert "backend %s is unhealthy" % a.addr not in w.stderr()
    before = connect_failures(w, dead)
    client = Client(w.port)
    for _ in range(20):
        assert client.request().status == 200
    client.close()
    check_stopped(w)
    assert connect_failures(w, dead) == before, "an unhealthy backend was still tried"
    assert len(served(a)) == 20


@pytest.mark.deadline(20)
def test_health_check_status_list(backend, proxy):
    states = {"teapot": {"status": 418}, "plain": {"status": 200}, "broken": {"status": 503}}
    bs = {n: backend(health_handler(n, s), name=n) for n, s in states.items()}
    w = proxy(addrs_list("teapot", "plain", "broken") + 'health_check = "http:///healthz"\n'
              'health_check_interval = "100ms"\nhealth_check_fall = 1\n'
              'health_check_status = [200, 418]\n', **bs)
    assert wait_for(lambda: "is unhealthy" in w.stderr(), 3), w.describe()
    time.sleep(0.5)  # several more rounds of checks
    err = w.stderr()
    assert "backend %s is unhealthy" % bs["broken"].addr in err
    assert "backend %s is unhealthy" % bs["teapot"].addr not in err, err
    assert "backend %s is unhealthy" % bs["plain"].addr not in err, err
    client = Client(w.port)
    names = [name_of(client.request()) for _ in range(20)]
    client.close()
    assert sorted(set(names)) == ["plain", "teapot"], names


@pytest.mark.deadline(20)
def test_health_check_default_status_is_2xx(backend, proxy):
    states = {"ok": {"status": 204, "body": b""}, "redirect": {"status": 301}}
    bs = {n: backend(health_handler(n, s), name=n) for n, s in states.items()}
    w = proxy(addrs_list("ok", "redirect") + 'health_check = "http:///healthz"\n'
              'health_check_interval = "100ms"\nhealth_check_fall = 1\n', **bs)
    assert wait_for(lambda: "is unhealthy" in w.stderr(), 3), w.describe()
    time.sleep(0.4)
    err = w.stderr()
    assert "backend %s is unhealthy" % bs["redirect"].addr in err
    assert "backend %s is unhealthy" % bs["ok"].addr not in err, err


@pytest.mark.deadline(20)
def test_health_check_body(backend, proxy):
    states = {"ready": {"status": 200, "body": b'{"state": "READY", "load": 1}\n'},
              "starting": {"status": 200, "body": b'{"state": "STARTING"}\n'}}
    bs = {n: backend(health_handler(n, s), name=n) for n, s in states.items()}
    w = proxy(addrs_list("ready", "starting") + 'health_check = "http:///healthz"\n'
              'health_check_interval = "100ms"\nhealth_check_fall = 1\n'
              'health_check_rise = 1\nhealth_check_body = "READY"\n', **bs)
    assert wait_for(lambda: "backend %s is unhealthy" % bs["starting"].addr in w.stderr(), 3), \
        w.describe()
    time.sleep(0.3)
    assert "backend %s is unhealthy" % bs["ready"].addr not in w.stderr()
    client = Client(w.port)
    assert {name_of(client.request()) for _ in range(10)} == {"ready"}
    # The body turns right: the backend comes back.
    states["starting"]["body"] = b'{"state": "READY"}\n'
    assert wait_for(lambda: "backend %s is healthy again" % bs["starting"].addr in w.stderr(),
                    3), w.describe()
    assert {name_of(client.request()) for _ in range(10)} == {"ready", "starting"}
    client.close()


@pytest.mark.deadline(20)
def test_health_check_timeout(backend, proxy):
    sa, sb = {"status": 200}, {"status": 200, "delay": 3.0}
    a = backend(health_handler("a", sa), name="a")
    b = backend(health_handler("b", sb), name="b")
    w = proxy(addrs_list("a", "b") + 'health_check = "http:///healthz"\n'
              'health_check_interval = "100ms"\nhealth_check_timeout = "200ms"\n'
              'health_check_fall = 1\n', a=a, b=b)
    t0 = time.monotonic()
    assert wait_for(lambda: "backend %s is unhealthy" % b.addr in w.stderr(), 3), w.describe()
    assert time.monotonic() - t0 < 1.5
    assert "backend %s is unhealthy" % a.addr not in w.stderr()
    # The hanging backend still answers real requests, but gets none.
    client = Client(w.port)
    assert {name_of(client.request()) for _ in range(10)} == {"a"}
    client.close()


# ---------------------------------------------------------------------------
# Retries before and after the response


def close_without_answer(conn, req):
    return "close"


@pytest.mark.deadline(20)
def test_get_reset_before_response_is_retried(backend, proxy):
    bad = backend(close_without_answer, name="bad")
    good = named(backend, "good")
    w = proxy(addrs_list("bad", "good") + "max_fails = 0\n", bad=bad, good=good)
    client = Client(w.port)
    for i in range(10):
        r = client.request("/g%d" % i)
        assert r.status == 200 and name_of(r) == "good", (i, r, w.describe())
    client.close()
    assert len(served(bad)) >= 4, "the closing backend was not tried"
    assert len(served(good)) == 10
    # Each request the bad backend dropped went to the good one.
    assert {r.path for r in served(bad)} <= {r.path for r in served(good)}
    check_stopped(w)
    assert count_logged(w.stderr(), "upstream %s:" % bad.addr, "before the response") \
        == len(served(bad)), w.describe()


@pytest.mark.deadline(20)
def test_post_with_body_sent_is_not_retried(backend, proxy):
    b1 = backend(close_without_answer, name="b1")
    b2 = backend(close_without_answer, name="b2")
    w = proxy(addrs_list("b1", "b2") + "max_fails = 0\n", b1=b1, b2=b2)
    r = Client(w.port).request("/submit", method="POST", body=b"order=42&qty=1", close=True)
    assert r.status == 502, r
    time.sleep(0.2)
    seen = served(b1) + served(b2)
    assert len(seen) == 1, "a POST whose body went upstream was repeated: %r" % seen
    assert seen[0].method == "POST" and seen[0].body == b"order=42&qty=1"


@pytest.mark.deadline(20)
def test_post_with_body_not_retried_alternating(backend, proxy):
    bad = backend(close_without_answer, name="bad")
    good = named(backend, "good")
    w = proxy(addrs_list("bad", "good") + "max_fails = 0\n", bad=bad, good=good)
    results = []
    for i in range(6):
        body = b"n=%d" % i
        r = Client(w.port).request("/p%d" % i, method="POST", body=body, close=True)
        results.append((i, r.status))
    bad_paths = {r.path for r in served(bad)}
    good_paths = {r.path for r in served(good)}
    assert bad_paths and good_paths, results
    assert not bad_paths & good_paths, "a POST was sent to both backends"
    for i, status in results:
        want = 502 if "/p%d" % i in bad_paths else 200
        assert status == want, (i, status, bad_paths)


@pytest.mark.deadline(20)
def test_no_retry_after_response_bytes_reached_the_client(backend, proxy):
    b1 = backend(B.close_mid(announced=100000, sent=1000), name="b1")
    b2 = backend(B.close_mid(announced=100000, sent=1000), name="b2")
    w = proxy(addrs_list("b1", "b2") + "max_fails = 0\n", b1=b1, b2=b2)
    s = B.connect(w.port, timeout=10)
    s.sendall(b"GET /big HTTP/1.1\r\nHost: lb.test\r\n\r\n")
    reader = B.Reader(s)
    lines = reader.read_head()
    assert lines[0].startswith(b"HTTP/1.1 200"), lines
    assert B.Headers(B.parse_headers(lines[1:])).get("Content-Length") == "100000"
    got = len(reader.buf)
    try:
        got = len(reader.read_to_eof())
    except OSError:  # a reset is a fine way to abort it too
        pass
    s.close()
    assert got < 100000, "the client got a complete body from a truncated response"
    time.sleep(0.3)
    counts = sorted([len(served(b1)), len(served(b2))])
    assert counts == [0, 1], "the request was repeated after response bytes: %r" % counts


# ---------------------------------------------------------------------------
# Consistent hashing


def spread_and_stickiness(port, make_request, users, repeat):
    """{user: set of backend names}; every request must succeed."""
    seen = {}
    for u in users:
        for _ in range(repeat):
            r = make_request(port, u)
            assert r.status == 200, (u, r)
            seen.setdefault(u, set()).add(name_of(r))
    return seen


HASH_CASES = {
    "hash:header:X-User": lambda port, u: get(port, "/", headers=[("X-User", u)]),
    "hash:cookie:sid": lambda port, u: get(port, "/", headers=[("Cookie", "a=1; sid=%s; z=2" % u)]),
    "hash:query:user": lambda port, u: get(port, "/page?x=1&user=%s&y=2" % u),
    "hash:uri": lambda port, u: get(port, "/item/%s?v=1" % u),
    "hash:path": lambda port, u: get(port, "/item/%s" % u),
    "maglev:uri": lambda port, u: get(port, "/item/%s" % u),
    "maglev:header:X-User": lambda port, u: get(port, "/", headers=[("X-User", u)]),
}


@pytest.mark.deadline(30)
@pytest.mark.parametrize("algo", sorted(HASH_CASES))
def test_hash_stickiness_and_spread(backend, proxy, algo):
    bs = {n: named(backend, n) for n in ("a", "b", "c")}
    w = proxy(addrs_list("a", "b", "c") + 'algo = "%s"\n' % algo, **bs)
    make = HASH_CASES[algo]
    # One user, 50 requests: one backend.
    one = spread_and_stickiness(w.port, make, ["alice"], 50)
    assert len(one["alice"]) == 1, one
    # 30 users, 3 requests each: each sticks, together they spread.
    users = ["user-%d" % i for i in range(30)]
    seen = spread_and_stickiness(w.port, make, users, 3)
    loose = {u: s for u, s in seen.items() if len(s) != 1}
    assert not loose, loose
    per_backend = {}
    for u, s in seen.items():
        per_backend.setdefault(next(iter(s)), []).append(u)
    assert len(per_backend) == 3, {k: len(v) for k, v in per_backend.items()}
    # The same users map the same way a second time (no per-connection state).
    again = spread_and_stickiness(w.port, make, users[:10], 1)
    assert all(again[u] == seen[u] for u in users[:10])


@pytest.mark.deadline(40)
@pytest.mark.parametrize("algo", ["hash:header:X-User", "maglev:header:X-User"])
def test_hash_removing_a_backend_moves_only_its_keys(backend, proxy, algo):
    bs = {n: named(backend, n) for n in ("a", "b", "c", "d")}
    users = ["k%d" % i for i in range(300)]

    def mapping(names):
        w = proxy(addrs_list(*names) + 'algo = "%s"\n' % algo, **{n: bs[n] for n in names})
        client = Client(w.port)
        out = {u: name_of(client.request(headers=[("X-User", u)])) for u in users}
        client.close()
        check_stopped(w)
        return out

    full = mapping(["a", "b", "c", "d"])
    assert set(full.values()) == {"a", "b", "c", "d"}
    # The same members listed in another order: the same mapping.
    assert mapping(["d", "b", "a", "c"]) == full
    less = mapping(["a", "b", "d"])
    moved = [u for u in users if full[u] != "c" and less[u] != full[u]]
    # Ketama: a key moves only if its backend left. Maglev repopulates its
    # table and by design moves a few more (its paper's "minimal
    # disruption"), far fewer than the removed backend's share.
    allowed = 0 if algo.startswith("hash:") else len(users) // 30
    assert len(moved) <= allowed, \
        "%d keys moved between backends that stayed: %r" % (len(moved), moved[:10])
    assert all(less[u] in ("a", "b", "d") for u in users)


@pytest.mark.deadline(20)
def test_hash_path_ignores_the_query(backend, proxy):
    bs = {n: named(backend, n) for n in ("a", "b", "c")}
    w = proxy(addrs_list("a", "b", "c") + 'algo = "hash:path"\n', **bs)
    for i in range(10):
        names = {name_of(get(w.port, "/doc/%d?rev=%d" % (i, rev))) for rev in range(6)}
        assert len(names) == 1, (i, names)


@pytest.mark.deadline(20)
def test_hash_ip(backend, proxy):
    bs = {n: named(backend, n) for n in ("a", "b", "c")}
    w = proxy(addrs_list("a", "b", "c") + 'algo = "hash:ip"\n', **bs)
    # Everything from 127.0.0.1: one backend, over several connections.
    names = {name_of(get(w.port, "/r%d" % i)) for i in range(20)}
    assert len(names) == 1, names
    client = Client(w.port)
    assert {name_of(client.request("/k%d" % i)) for i in range(20)} == names
    client.close()
    # Other loopback sources spread, each sticking to its backend.
    by_src = {}
    for i in range(2, 32):
        src = "127.0.0.%d" % i
        by_src[src] = {name_of(get(w.port, "/", src=src)) for _ in range(2)}
    assert all(len(v) == 1 for v in by_src.values()), by_src
    assert len({next(iter(v)) for v in by_src.values()}) >= 2, by_src


@pytest.mark.deadline(20)
def test_hash_missing_key_still_answers(backend, proxy):
    bs = {n: named(backend, n) for n in ("a", "b")}
    w = proxy(addrs_list("a", "b") + 'algo = "hash:header:X-User"\n', **bs)
    # No X-User: every such request hashes the same (empty) key.
    names = {name_of(get(w.port, "/n%d" % i)) for i in range(10)}
    assert len(names) == 1 and names <= {"a", "b"}, names


@pytest.mark.deadline(20)
def test_hash_skips_a_dead_backend_and_keeps_other_keys(backend, proxy):
    bs = {n: named(backend, n) for n in ("a", "b", "c")}
    w = proxy(addrs_list("a", "b", "c") + 'algo = "hash:header:X-User"\nmax_fails = 1\n', **bs)
    users = ["u%d" % i for i in range(30)]
    before = {u: name_of(get(w.port, headers=[("X-User", u)])) for u in users}
    victim = before[users[0]]
    kill(bs[victim])
    after = {u: name_of(get(w.port, headers=[("X-User", u)])) for u in users}
    assert all(v in ("a", "b", "c") and v != victim for v in after.values()), after
    moved = [u for u in users if before[u] != victim and after[u] != before[u]]
    assert not moved, "keys of live backends moved: %r" % moved


# ---------------------------------------------------------------------------
# Sticky cookie


COOKIE_RE = re.compile(r"^srv=([0-9a-f]{16})(;|$)")


def sticky_cookie(r):
    for v in r.headers.get_all("Set-Cookie"):
        m = COOKIE_RE.match(v)
        if m:
            return m.group(1)
    return None


@pytest.mark.deadline(20)
def test_sticky_cookie_pins_the_backend(backend, proxy):
    bs = {n: named(backend, n) for n in ("a", "b", "c")}
    w = proxy(addrs_list("a", "b", "c") + 'sticky_cookie = "srv"\n', **bs)
    pins = {}
    for _ in range(3):
        r = get(w.port)
        assert r.status == 200
        cid = sticky_cookie(r)
        assert cid, r.headers
        pins[cid] = name_of(r)
    # Round robin gave the three first clients three backends, three ids.
    assert sorted(pins.values()) == ["a", "b", "c"], pins
    for cid, want in pins.items():
        client = Client(w.port)
        for i in range(30):
            cookie = "srv=%s" % cid if i % 2 else "theme=dark; srv=%s; lang=en" % cid
            r = client.request("/s%d" % i, headers=[("Cookie", cookie)])
            assert r.status == 200 and name_of(r) == want, (cid, i, name_of(r), want)
            assert sticky_cookie(r) is None, "a valid cookie was set again"
        client.close()


@pytest.mark.deadline(20)
def test_sticky_cookie_unknown_value_gets_a_new_cookie(backend, proxy):
    bs = {n: named(backend, n) for n in ("a", "b")}
    w = proxy(addrs_list("a", "b") + 'sticky_cookie = "srv"\n', **bs)
    valid = {}
    for _ in range(2):
        r = get(w.port)
        valid[sticky_cookie(r)] = name_of(r)
    for bogus in ("0123456789abcdef", "not-hex-at-all!!", "abc", "0123456789ABCDEF"):
        r = get(w.port, headers=[("Cookie", "srv=%s" % bogus)])
        assert r.status == 200
        cid = sticky_cookie(r)
        assert cid and cid != bogus, (bogus, r.headers)
        assert valid.get(cid) == name_of(r), (cid, valid, name_of(r))


@pytest.mark.deadline(20)
def test_sticky_cookie_of_a_dead_backend_moves(backend, proxy):
    bs = {n: named(backend, n) for n in ("a", "b")}
    w = proxy(addrs_list("a", "b") + 'sticky_cookie = "srv"\nmax_fails = 1\n', **bs)
    r = get(w.port)
    cid, first = sticky_cookie(r), name_of(r)
    kill(bs[first])
    other = "b" if first == "a" else "a"
    for i in range(5):
        r = get(w.port, headers=[("Cookie", "srv=%s" % cid)])
        assert r.status == 200 and name_of(r) == other, (i, r)
        # Once the breaker is open the pinned backend is not usable:
        # the answer pins the client elsewhere.
        if i > 0:
            assert sticky_cookie(r) not in (None, cid), r.headers


@pytest.mark.deadline(20)
def test_sticky_cookie_repins_after_a_failover(backend, proxy):
    bs = {n: named(backend, n) for n in ("a", "b", "c")}
    w = proxy(addrs_list("a", "b", "c") + 'sticky_cookie = "srv"\n', **bs)  # max_fails 3
    r = get(w.port)
    cid, first = sticky_cookie(r), name_of(r)
    kill(bs[first])
    # The pinned backend refuses; the request is retried elsewhere and
    # answered. The answer must pin the client to the backend that
    # answered, or the client's next requests (same stale cookie) are
    # spread by round robin until the breaker opens.
    r = get(w.port, headers=[("Cookie", "srv=%s" % cid)])
    assert r.status == 200 and name_of(r) != first
    new = sticky_cookie(r)
    assert new is not None and new != cid, \
        "served by %s without a new cookie: %r" % (name_of(r), r.headers)
    names = {name_of(get(w.port, headers=[("Cookie", "srv=%s" % new)])) for _ in range(10)}
    assert names == {name_of(r)}, names


# ---------------------------------------------------------------------------
# least_conn, weights, other algorithms


@pytest.mark.deadline(20)
def test_least_conn_favours_the_fast_backend(backend, proxy):
    slow = backend(B.slow(0.5, body=b"slow\n"), name="slow")
    fast = named(backend, "fast")
    w = proxy(addrs_list("slow", "fast") + 'algo = "least_conn"\n', slow=slow, fast=fast)
    results = [None] * 20

    def one(i):
        try:
            results[i] = name_of(get(w.port, "/c%d" % i))
        except Exception as e:  # reported below
            results[i] = repr(e)

    threads = []
    for i in range(20):
        t = threading.Thread(target=one, args=(i,))
        t.start()
        threads.append(t)
        time.sleep(0.01)  # all 20 are still in flight while the slow ones sleep
    for t in threads:
        t.join(10)
    assert all(r in ("slow", "fast") for r in results), results
    assert results.count("fast") > 14, results


@pytest.mark.deadline(20)
def test_weighted_round_robin_exact(backend, proxy):
    a, b = named(backend, "a"), named(backend, "b")
    w = proxy('addrs = ["@a@ 3", "@b@ 1"]\n', a=a, b=b)
    client = Client(w.port)
    names = [name_of(client.request("/w%d" % i)) for i in range(400)]
    client.close()
    assert names.count("a") == 300 and names.count("b") == 100, \
        (names.count("a"), names.count("b"))
    # Smooth: never more than three a's in a row.
    assert "a,a,a,a" not in ",".join(names)


@pytest.mark.deadline(20)
def test_smooth_weighted_sequence(backend, proxy):
    bs = {n: named(backend, n) for n in ("a", "b", "c")}
    w = proxy('addrs = ["@a@ 5", "@b@", "@c@"]\n', **bs)
    client = Client(w.port)
    names = [name_of(client.request()) for _ in range(70)]
    client.close()
    assert (names.count("a"), names.count("b"), names.count("c")) == (50, 10, 10)
    # The documented order: a a b a c a a (a rotation of it).
    seq = "".join(names[:7])
    assert seq in "aabacaa" * 2, names[:14]


@pytest.mark.deadline(20)
@pytest.mark.parametrize("algo", ["random", "p2c", "least_conn", "round_robin"])
def test_every_algorithm_reaches_every_backend(backend, proxy, algo):
    bs = {n: named(backend, n) for n in ("a", "b", "c")}
    w = proxy(addrs_list("a", "b", "c") + 'algo = "%s"\n' % algo, **bs)
    client = Client(w.port)
    names = [name_of(client.request("/z%d" % i)) for i in range(90)]
    client.close()
    counts = {n: names.count(n) for n in ("a", "b", "c")}
    assert sum(counts.values()) == 90, names
    assert all(c >= 10 for c in counts.values()), counts


@pytest.mark.deadline(20)
def test_weighted_random(backend, proxy):
    a, b = named(backend, "a"), named(backend, "b")
    w = proxy('addrs = ["@a@ 9", "@b@ 1"]\nalgo = "random"\n', a=a, b=b)
    client = Client(w.port)
    names = [name_of(client.request()) for _ in range(300)]
    client.close()
    assert 240 <= names.count("a") <= 295, names.count("a")


# ---------------------------------------------------------------------------
# Runtime membership (weir-lb-app on the library API)


def ctl(port, op, **params):
    q = "&".join("%s=%s" % kv for kv in params.items())
    r = Client(port).request("/_lb/%s%s" % (op, "?" + q if q else ""), method="POST", body=b"",
                             close=True)
    return r.status, r.body.decode(errors="replace")


def info(port):
    """{addr: {field: value}} from GET /_lb/info."""
    r = get(port, "/_lb/info")
    assert r.status == 200, r
    out = {}
    fields = ("weight", "healthy", "draining", "breaker", "in_flight", "requests", "failures",
              "conns_new", "conns_reused")
    for line in r.body.decode().splitlines():
        parts = line.split()
        assert len(parts) == 10, line
        row = dict(zip(fields, parts[1:]))
        for k in fields:
            if k != "breaker":
                row[k] = int(row[k])
        out[parts[0]] = row
    return out


def path_handler(name):
    """GET /slow/...: 1 s; anything else at once; the body is the name."""

    def handler(conn, req):
        if req.path.startswith("/slow"):
            time.sleep(1.0)
        body = name.encode() + b"\n"
        conn.send(B.response_head(200, [("Content-Length", str(len(body)))]) + body)

    return handler


@pytest.mark.deadline(20)
def test_app_info_lists_members(backend, lb_app):
    a, b = named(backend, "a"), named(backend, "b")
    app = lb_app(a, b)
    rows = info(app.port)
    assert list(rows) == [a.addr, b.addr]
    for row in rows.values():
        assert row == {"weight": 1, "healthy": 1, "draining": 0, "breaker": "closed",
                       "in_flight": 0, "requests": 0, "failures": 0, "conns_new": 0,
                       "conns_reused": 0}, row
    client = Client(app.port)
    names = [name_of(client.request()) for _ in range(10)]
    client.close()
    assert names.count("a") == 5 and names.count("b") == 5
    rows = info(app.port)
    assert rows[a.addr]["requests"] == 5 and rows[b.addr]["requests"] == 5
    assert len(served(a)) == 5  # control requests are not proxied


@pytest.mark.deadline(20)
def test_app_control_errors(backend, lb_app):
    a = named(backend, "a")
    app = lb_app(a)
    missing = "127.0.0.1:%d" % closed_port()
    assert ctl(app.port, "remove", addr=missing)[0] == 400
    assert ctl(app.port, "add", addr=a.addr)[0] == 400  # already a member
    assert ctl(app.port, "add", addr="not-an-address", weight=1)[0] == 400
    assert ctl(app.port, "add", addr=missing, weight=0)[0] == 400
    assert ctl(app.port, "add", addr=missing, weight=10001)[0] == 400
    assert ctl(app.port, "weight", addr=a.addr, weight=0)[0] == 400
    assert ctl(app.port, "weight", addr=missing, weight=2)[0] == 400
    assert ctl(app.port, "drain", addr=missing)[0] == 400
    assert ctl(app.port, "remove")[0] == 400
    assert ctl(app.port, "weight", addr=a.addr)[0] == 400  # no weight
    assert ctl(app.port, "bogus", addr=a.addr)[0] == 404
    assert ctl(app.port, "info")[0] == 400  # GET only
    assert get(app.port, "/_lb/remove?addr=%s" % a.addr).status == 400  # POST only
    assert list(info(app.port)) == [a.addr] and len(served(a)) == 0
    st, body = ctl(app.port, "drain", addr=a.addr.replace(":", "%3A"))
    assert (st, body) == (200, "ok\n")
    assert info(app.port)[a.addr]["draining"] == 1
    assert list(info(app.port)) == [a.addr]


@pytest.mark.deadline(30)
def test_app_remove_drains_in_flight_request(backend, lb_app):
    a = backend(path_handler("a"), name="a")
    b = backend(path_handler("b"), name="b")
    app = lb_app(a, b)
    out = {}

    def slow_request():
        out["r"] = get(app.port, "/slow/1")

    t = threading.Thread(target=slow_request)
    t.start()
    # Which backend got it: the one with a request in flight.
    busy = []
    assert wait_for(lambda: busy.extend(k for k, v in info(app.port).items()
                                        if v["in_flight"] == 1) or busy, 3)
    victim_addr = busy[0]
    victim, other = (a, b) if victim_addr == a.addr else (b, a)
    assert ctl(app.port, "remove", addr=victim_addr) == (200, "ok\n")
    assert list(info(app.port)) == [other.addr]
    client = Client(app.port)
    names = [name_of(client.request("/f%d" % i)) for i in range(20)]
    client.close()
    assert set(names) == {other.name}, names
    t.join(5)
    assert out["r"].status == 200 and name_of(out["r"]) == victim.name, out
    assert [r.path for r in served(victim)] == ["/slow/1"]
    assert wait_for(lambda: info(app.port)[other.addr]["in_flight"] == 0, 3)
    # Added back: it takes traffic again, its counters start afresh.
    assert ctl(app.port, "add", addr=victim_addr, weight=1) == (200, "ok\n")
    names = [name_of(get(app.port, "/g%d" % i)) for i in range(10)]
    assert names.count(victim.name) == 5, names
    assert info(app.port)[victim_addr]["requests"] == 5


@pytest.mark.deadline(20)
def test_app_add_backend_takes_traffic(backend, lb_app):
    a, b, c = named(backend, "a"), named(backend, "b"), named(backend, "c")
    app = lb_app(a)
    client = Client(app.port)
    assert {name_of(client.request()) for _ in range(5)} == {"a"}
    assert ctl(app.port, "add", addr=b.addr, weight=1) == (200, "ok\n")
    assert ctl(app.port, "add", addr=c.addr, weight=2) == (200, "ok\n")
    rows = info(app.port)
    assert list(rows) == [a.addr, b.addr, c.addr]
    assert rows[c.addr]["weight"] == 2
    names = [name_of(client.request()) for _ in range(40)]
    client.close()
    assert (names.count("a"), names.count("b"), names.count("c")) == (10, 10, 20), names


@pytest.mark.deadline(20)
def test_app_drain_and_undrain(backend, lb_app):
    a, b = named(backend, "a"), named(backend, "b")
    app = lb_app(a, b)
    client = Client(app.port)
    assert ctl(app.port, "drain", addr=a.addr) == (200, "ok\n")
    rows = info(app.port)
    assert rows[a.addr]["draining"] == 1 and rows[b.addr]["draining"] == 0
    assert [name_of(client.request()) for _ in range(10)] == ["b"] * 10
    assert ctl(app.port, "undrain", addr=a.addr) == (200, "ok\n")
    assert info(app.port)[a.addr]["draining"] == 0
    names = [name_of(client.request()) for _ in range(10)]
    assert names.count("a") == 5, names
    # Both drained: nothing usable -> 503 from upstream_peer.
    assert ctl(app.port, "drain", addr=a.addr)[0] == 200
    assert ctl(app.port, "drain", addr=b.addr)[0] == 200
    assert client.request().status == 503
    client.close()


@pytest.mark.deadline(20)
def test_app_weight_change_shifts_proportions(backend, lb_app):
    a, b = named(backend, "a"), named(backend, "b")
    app = lb_app(a, b)
    client = Client(app.port)
    names = [name_of(client.request()) for _ in range(20)]
    assert names.count("a") == 10
    assert ctl(app.port, "weight", addr=a.addr, weight=3) == (200, "ok\n")
    rows = info(app.port)
    assert rows[a.addr]["weight"] == 3 and rows[b.addr]["weight"] == 1
    # Counters survive a re-weight.
    assert rows[a.addr]["requests"] == 10 and rows[b.addr]["requests"] == 10
    names = [name_of(client.request()) for _ in range(40)]
    assert (names.count("a"), names.count("b")) == (30, 10), names
    assert ctl(app.port, "weight", addr=b.addr, weight=3) == (200, "ok\n")
    names = [name_of(client.request()) for _ in range(40)]
    client.close()
    assert (names.count("a"), names.count("b")) == (20, 20), names


@pytest.mark.deadline(20)
def test_app_weight_change_keeps_in_flight_count(backend, lb_app):
    a = backend(path_handler("a"), name="a")
    app = lb_app(a)
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("r", get(app.port, "/slow/w")))
    t.start()
    assert wait_for(lambda: info(app.port)[a.addr]["in_flight"] == 1, 3)
    assert ctl(app.port, "weight", addr=a.addr, weight=5) == (200, "ok\n")
    rows = info(app.port)
    t.join(5)
    assert out["r"].status == 200
    assert wait_for(lambda: info(app.port)[a.addr]["in_flight"] == 0, 2)
    assert rows[a.addr]["in_flight"] == 1, \
        "the re-weighted backend forgot the request in flight: %r" % rows


@pytest.mark.deadline(20)
def test_app_weight_change_keeps_failures_in_flight(backend, lb_app):
    state = {"status": 500}
    a = backend(status_handler("a", state), name="a")
    app = lb_app(a)  # breaker: 3 consecutive failures
    assert get(app.port).status == 500
    assert get(app.port).status == 500
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("r", get(app.port, "/slow/f")))
    t.start()
    assert wait_for(lambda: info(app.port)[a.addr]["in_flight"] == 1, 3)
    assert ctl(app.port, "weight", addr=a.addr, weight=2) == (200, "ok\n")
    t.join(5)
    assert out["r"].status == 500
    time.sleep(0.1)
    row = info(app.port)[a.addr]
    # The third consecutive failure was reported for a request selected
    # before the re-weight: it must count for the backend.
    assert row["failures"] == 3 and row["breaker"] == "open", row
    assert get(app.port).status == 503


@pytest.mark.deadline(20)
def test_app_late_success_does_not_close_the_breaker(backend, lb_app):
    def handler(conn, req):  # /slow: 200 after 1 s; anything else: 500 at once
        slow = req.path.startswith("/slow")
        if slow:
            time.sleep(1.0)
        body = b"late\n" if slow else b"broken\n"
        conn.send(B.response_head(200 if slow else 500, [("Content-Length", str(len(body)))])
                  + body)

    a = backend(handler, name="a")
    app = lb_app(a)  # breaker: 3 consecutive failures, 10 s
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("r", get(app.port, "/slow/x")))
    t.start()
    assert wait_for(lambda: info(app.port)[a.addr]["in_flight"] == 1, 3)
    assert [get(app.port, "/f%d" % i).status for i in range(3)] == [500] * 3
    # A request's outcome is reported just after its response went out (the
    # logging phase): the breaker opens a moment after the third 500 arrived.
    assert wait_for(lambda: info(app.port)[a.addr]["breaker"] == "open", 3)
    t.join(5)
    assert out["r"].status == 200
    time.sleep(0.1)
    # The success of a request selected before the ejection says nothing
    # about the backend now: the breaker stays open until its probe.
    row = info(app.port)[a.addr]
    assert row["breaker"] == "open" and row["in_flight"] == 0, row
    assert get(app.port).status == 503


@pytest.mark.deadline(20)
def test_app_keepalive_reuse_counters(backend, lb_app):
    a = named(backend, "a")
    app = lb_app(a)
    client = Client(app.port)
    for i in range(50):
        assert client.request("/k%d" % i).status == 200
    client.close()
    # The last request's outcome is reported just after its response went
    # out: the counters settle a moment later.
    deadline = time.monotonic() + 3
    row = info(app.port)[a.addr]
    while row["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.02)
        row = info(app.port)[a.addr]
    assert row["requests"] == 50 and row["in_flight"] == 0 and row["failures"] == 0, row
    assert row["conns_new"] + row["conns_reused"] == 50, row
    assert row["conns_reused"] >= 48, row
    assert a.connections == row["conns_new"], (a.connections, row)


@pytest.mark.deadline(20)
def test_app_retries_and_counts_failures(backend, lb_app):
    a = named(backend, "a")
    dead = "127.0.0.1:%d" % closed_port()
    app = lb_app(a, dead)
    client = Client(app.port)
    for i in range(10):
        r = client.request("/r%d" % i)
        assert r.status == 200 and name_of(r) == "a", (i, r)
    client.close()
    # outcomes are reported just after each response: let the last settle
    wait_for(lambda: info(app.port)[a.addr]["in_flight"] == 0, 3)
    rows = info(app.port)
    # The default breaker (3 failures) ejects the dead backend.
    assert rows[dead]["failures"] == 3 and rows[dead]["breaker"] == "open", rows
    assert rows[dead]["in_flight"] == 0 and rows[a.addr]["in_flight"] == 0
    assert rows[a.addr]["requests"] == 10 and rows[a.addr]["failures"] == 0
    assert "backend %s ejected" % dead in app.stderr()


@pytest.mark.deadline(20)
def test_app_5xx_counts_as_failure(backend, lb_app):
    err = backend(B.fixed(b"oops\n", status=500), name="err")
    app = lb_app(err)
    for _ in range(2):
        assert get(app.port).status == 500
    # A failure is counted when the request is logged, just after the
    # response went out: wait for it rather than race it.
    wait_for(lambda: info(app.port)[err.addr]["failures"] == 2, 5)
    row = info(app.port)[err.addr]
    assert row["failures"] == 2 and row["breaker"] == "closed", row
    assert get(app.port).status == 500
    wait_for(lambda: info(app.port)[err.addr]["failures"] == 3, 5)
    row = info(app.port)[err.addr]
    assert row["failures"] == 3 and row["breaker"] == "open", row
    assert get(app.port).status == 503  # ejected: nothing usable
