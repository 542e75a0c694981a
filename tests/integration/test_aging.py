"""Connection aging over HTTP/1.1, on both sides.

Client side ([servers.NAME]): keepalive_requests and keepalive_time, as
nginx's: the request that reaches the limit is served normally with
"Connection: close" and the connection closes after it; requests pipelined
behind it are not answered (the client sends them again elsewhere).

Upstream side ([upstreams.NAME]): max_requests and max_connection_age: a
pooled backend connection past either is closed instead of reused, so the
next request makes a new one (the backend counts its connections).

Also: the limits change on reload without a restart, and bad values are
`file:line` errors. No timing is asserted: sleeps only cross a window.
"""
import signal
import subprocess
import time

import backends as B
from conftest import binary, require_binary
from test_config import expect_one_error

SERVER = """
[servers.s]
addr = "127.0.0.1:@PORT@"
locations = ["l"]
%s
[locations.l]
upstream = "u"

[upstreams.u]
addrs = ["@B@"]
%s
"""


def conf(server="", upstream=""):
    return SERVER % (server, upstream)


def send(s, path, extra=""):
    s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n%s\r\n" % (path.encode(), extra.encode()))


def closes(r):
    return (r.headers.get("Connection") or "").lower() == "close"


def wait_for(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def reload_with(proc, text, nth):
    """Writes text over proc's config, SIGHUPs it and waits for the nth
    "reloaded" line."""
    path = proc.argv[proc.argv.index("-c") + 1]
    with open(path, "w") as f:
        f.write(text.replace("@PORT@", str(proc.port)))
    proc.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and proc.stderr().count("reloaded") < nth:
        time.sleep(0.05)
    assert proc.stderr().count("reloaded") >= nth, proc.stderr()


# ---------------------------------------------------------------------------
# Client side


def test_keepalive_requests_last_response_says_close(backend, weir_toml):
    b = backend(B.fixed(b"ok\n"))
    w = weir_toml(conf("keepalive_requests = 3"), B=b)
    s = B.connect(w.port)
    rd = B.Reader(s)
    for i in range(3):
        send(s, "/r%d" % i)
        r = B.read_response(rd)
        assert r.status == 200 and r.body == b"ok\n"
        assert closes(r) == (i == 2), (i, r.headers)
    assert B.closed_after(s, 10), "connection still open after its last request"
    # A 4th request on that socket gets nothing: the connection is over.
    try:
        send(s, "/r3")
        got = s.recv(4096)
    except OSError:
        got = b""
    assert got == b""
    s.close()
    assert [q.path for q in b.requests] == ["/r0", "/r1", "/r2"]
    # The next connection starts a fresh count.
    s = B.connect(w.port)
    rd = B.Reader(s)
    send(s, "/again")
    r = B.read_response(rd)
    assert r.status == 200 and not closes(r)
    s.close()


def test_pipelined_requests_past_the_limit_are_not_answered(backend, weir_toml):
    b = backend(B.fixed(b"ok\n"))
    w = weir_toml(conf("keepalive_requests = 3"), B=b)
    s = B.connect(w.port)
    s.sendall(b"".join(b"GET /p%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(6)))
    rd = B.Reader(s)
    got = [B.read_response(rd) for _ in range(3)]
    assert [r.status for r in got] == [200, 200, 200]
    assert [closes(r) for r in got] == [False, False, True]
    # Then a clean end of stream: no 4th response, and no reset that could
    # have destroyed the third.
    s.settimeout(10)
    assert s.recv(65536) == b""
    s.close()
    assert [q.path for q in b.requests] == ["/p0", "/p1", "/p2"]


def test_keepalive_requests_default_is_1000_and_0_is_unlimited(backend, weir_toml):
    b = backend(B.fixed(b"ok\n"))
    w = weir_toml(conf(), threads=1, B=b)
    s = B.connect(w.port)
    rd = B.Reader(s)
    for i in range(1000):
        send(s, "/d")
        r = B.read_response(rd)
        assert r.status == 200
        assert closes(r) == (i == 999), i
    assert B.closed_after(s, 10)
    s.close()
    w2 = weir_toml(conf("keepalive_requests = 0"), threads=1, B=b)
    s = B.connect(w2.port)
    rd = B.Reader(s)
    for i in range(1001):
        send(s, "/u")
        r = B.read_response(rd)
        assert r.status == 200 and not closes(r), i
    s.close()


def test_keepalive_time_closes_after_the_next_request(backend, weir_toml):
    b = backend(B.fixed(b"ok\n"))
    w = weir_toml(conf('keepalive_time = "1s"'), B=b)
    s = B.connect(w.port)
    rd = B.Reader(s)
    send(s, "/early")
    r = B.read_response(rd)
    assert r.status == 200 and not closes(r)
    time.sleep(2.5)  # past 1 s + 10 % jitter
    # The connection is still open (closing it idle would race with this
    # request); the request is served, with Connection: close.
    send(s, "/late")
    r = B.read_response(rd)
    assert r.status == 200 and r.body == b"ok\n" and closes(r), r.headers
    assert B.closed_after(s, 10)
    s.close()
    assert [q.path for q in b.requests] == ["/early", "/late"]


def test_keepalive_requests_change_on_reload(backend, weir_toml):
    b = backend(B.fixed(b"ok\n"))
    w = weir_toml(conf("keepalive_requests = 100"), B=b)
    s = B.connect(w.port)
    rd = B.Reader(s)
    send(s, "/1")
    assert not closes(B.read_response(rd))
    reload_with(w, conf("keepalive_requests = 2").replace("@B@", b.addr), 1)
    # The open connection takes the new limit at its next request.
    send(s, "/2")
    r = B.read_response(rd)
    assert r.status == 200 and closes(r), r.headers
    assert B.closed_after(s, 10)
    s.close()
    assert "refused" not in w.stderr()


# ---------------------------------------------------------------------------
# Upstream side


def test_upstream_max_requests_new_connection_every_n(backend, weir_toml):
    b = backend(B.fixed(b"ok\n"))
    w = weir_toml(conf(upstream="max_requests = 2"), threads=1, B=b)
    for i in range(10):
        r = B.get(w.port, "/m%d" % i)
        assert r.status == 200 and r.body == b"ok\n"
    ids = [q.conn_id for q in b.requests]
    assert len(ids) == 10
    # Two requests per backend connection, in order, never a third.
    assert [ids[i] == ids[i + 1] for i in range(0, 10, 2)] == [True] * 5, ids
    assert len(set(ids)) == 5, ids


def test_upstream_max_connection_age_moves_to_a_new_connection(backend, weir_toml):
    b = backend(B.fixed(b"ok\n"))
    w = weir_toml(conf(upstream='max_connection_age = "1s"'), threads=1, B=b)
    for i in range(3):
        assert B.get(w.port, "/young%d" % i).status == 200
    young = {q.conn_id for q in b.requests}
    assert len(young) == 1, young  # reused while young
    time.sleep(2.5)  # past 1 s + 10 % jitter
    assert B.get(w.port, "/old").status == 200
    assert b.last().conn_id not in young
    # The aged connection was closed by weir, not left open at the backend.
    assert wait_for(lambda: set(b.closed_by_peer) >= young), b.closed_by_peer


def test_upstream_limits_off_by_default(backend, weir_toml):
    b = backend(B.fixed(b"ok\n"))
    w = weir_toml(conf(), threads=1, B=b)
    for i in range(20):
        assert B.get(w.port, "/k%d" % i).status == 200
    assert len({q.conn_id for q in b.requests}) == 1


# ---------------------------------------------------------------------------
# Configuration errors

BAD = [
    ("server", 'keepalive_time = "-1s"', "'keepalive_time' in [servers.s] must be a duration"),
    ("server", "keepalive_time = 10", "'keepalive_time' in [servers.s] must be a duration"),
    ("server", "keepalive_requests = -1",
     "'keepalive_requests' in [servers.s] is -1; it must be between 0 and"),
    ("server", 'keepalive_requests = "many"',
     "'keepalive_requests' in [servers.s] must be an integer"),
    ("server", 'h2_max_connection_age = "soon"',
     "'h2_max_connection_age' in [servers.s] must be a duration"),
    ("server", 'h2_max_connection_age = "90d"',
     "'h2_max_connection_age' in [servers.s] must be a duration"),
    ("server", 'h2_max_connection_age = "800h"',
     "'h2_max_connection_age' in [servers.s] is out of range"),
    ("server", 'h2_max_connection_age_grace = "0s"',
     "'h2_max_connection_age_grace' in [servers.s] is out of range"),
    ("upstream", 'max_connection_age = "-5m"',
     "'max_connection_age' in [upstreams.u] must be a duration"),
    ("upstream", "max_requests = -2",
     "'max_requests' in [upstreams.u] is -2; it must be between 0 and"),
]


def test_bad_values_are_file_line_errors(tmp_path):
    for where, line, fragment in BAD:
        text = conf(line + " # <-" if where == "server" else "",
                    line + " # <-" if where == "upstream" else "")
        text = text.replace("@PORT@", "18080").replace("@B@", "127.0.0.1:9")
        expect_one_error(tmp_path, text, fragment)


def test_good_values_pass(tmp_path):
    require_binary("weir")
    text = conf('keepalive_requests = 0\nkeepalive_time = "0s"\nh2c = true\n'
                'h2_max_connection_age = "30m"\nh2_max_connection_age_grace = "1m"',
                'max_connection_age = "5m"\nmax_requests = 100')
    path = tmp_path / "ok.toml"
    path.write_text(text.replace("@PORT@", "18080").replace("@B@", "127.0.0.1:9"))
    r = subprocess.run([binary("weir"), "-t", "-c", str(path)], capture_output=True, text=True,
                       timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
