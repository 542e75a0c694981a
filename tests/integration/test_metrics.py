"""GET /metrics on the admin listener: Prometheus text whose values follow
known traffic."""
import http.client
import re
import signal
import time

import backends as B
from conftest import binary, free_port, require_binary, wait_port

TOKEN = "metrics-token"


def start(backend, start_proc, tmp_path):
    require_binary("weir")
    ok, bad = backend(B.fixed(b"ok\n")), backend(B.fixed(b"no\n", status=503))
    port, aport = free_port(), free_port()
    path = tmp_path / "weir.toml"
    path.write_text(
        '[admin]\naddr = "127.0.0.1:%d"\ntoken = "%s"\n'
        '[servers.web]\naddr = "127.0.0.1:%d"\nlocations = ["good", "bad"]\n'
        '[locations.good]\npath = "/good"\nupstream = "ok"\n'
        '[locations.bad]\npath = "/bad"\nupstream = "fail"\n'
        '[upstreams.ok]\naddrs = ["%s"]\n[upstreams.fail]\naddrs = ["%s"]\nmax_fails = 0\n'
        % (aport, TOKEN, port, ok.addr, bad.addr))
    w = start_proc([binary("weir"), "-c", str(path), "--threads", "2"], port, "weir")
    assert wait_port(aport, w.proc)
    return w, port, aport, path, ok, bad


def scrape(aport, token=TOKEN):
    c = http.client.HTTPConnection("127.0.0.1", aport, timeout=20)
    try:
        c.request("GET", "/metrics", headers={"Authorization": "Bearer " + token} if token else {})
        r = c.getresponse()
        return r.status, r.getheader("Content-Type"), r.read().decode()
    finally:
        c.close()


def value(text, name, **labels):
    """The sample of `name` whose labels include `labels` (0 if absent)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        m = re.match(r'([a-z_]+)(?:\{(.*)\})? (\S+)$', line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total


def test_metrics_follow_traffic(backend, start_proc, tmp_path):
    w, port, aport, path, ok, bad = start(backend, start_proc, tmp_path)
    status, ctype, before = scrape(aport)
    assert status == 200 and ctype.startswith("text/plain")
    for _ in range(7):
        assert B.get(port, "/good").status == 200
    for _ in range(3):
        assert B.get(port, "/bad").status == 503
    assert B.get(port, "/nowhere").status == 404
    # A request is counted just after its response went out: let the last
    # ones settle before reading exact values.
    deadline = time.monotonic() + 3
    while True:
        status, _, text = scrape(aport)
        done = (value(text, "weir_requests_total", location="good") == 7 and
                value(text, "weir_requests_total", location="bad") == 3 and
                value(text, "weir_requests_total", location="") == 1)
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert value(text, "weir_requests_total", server="web", location="good", method="GET",
                 status="2xx") == 7, text
    assert value(text, "weir_requests_total", location="bad", status="5xx") == 3
    assert value(text, "weir_requests_total", location="", status="4xx") == 1
    assert value(text, "weir_request_duration_seconds_count", location="good") == 7
    assert value(text, 'weir_request_duration_seconds_bucket', location="good", le="+Inf") == 7
    assert value(text, "weir_upstream_duration_seconds_count", upstream="ok") == 7
    assert value(text, "weir_backend_requests_total", upstream="ok", backend=ok.addr) == 7
    assert value(text, "weir_backend_failures_total", upstream="fail", backend=bad.addr) == 3
    assert value(text, "weir_backend_up", upstream="ok", backend=ok.addr) == 1
    assert value(text, "weir_sent_bytes_total", server="web") > 0
    assert value(text, "weir_upstream_connections_total", upstream="ok", kind="new") >= 1
    assert value(text, "weir_client_connections", protocol="http1") >= 0
    assert value(text, "process_resident_memory_bytes") > 0
    assert value(text, "process_open_fds") > 0
    assert "weir_access_log_dropped_total 0" in text
    # every line is a comment or a sample
    for line in text.splitlines():
        assert line.startswith("#") or re.match(r'^[a-z_]+(\{[^}]*\})? [0-9.e+\-Inf]+$', line), line


def test_metrics_need_the_token_and_count_reloads(backend, start_proc, tmp_path):
    w, port, aport, path, ok, bad = start(backend, start_proc, tmp_path)
    assert scrape(aport, token=None)[0] == 401
    assert scrape(aport, token="wrong")[0] == 401
    w.signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while "reloaded" not in w.stderr() and time.monotonic() < deadline:
        time.sleep(0.02)
    path.write_text(path.read_text() + "[upstreams.broken]\nadrs = []\n")
    w.signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    text = ""
    while time.monotonic() < deadline:
        text = scrape(aport)[2]
        if value(text, "weir_reloads_total", result="failed") >= 1:
            break
        time.sleep(0.05)
    assert value(text, "weir_reloads_total", result="ok") == 1, text
    assert value(text, "weir_reloads_total", result="failed") == 1, text


def test_client_connections_by_protocol(backend, start_proc, tmp_path):
    """An open HTTP/2 connection counts under protocol="http2", an HTTP/1
    one under "http1"; both drop back when the clients leave. The scrape's
    own connection (the admin listener) is one more HTTP/1 connection."""
    import socket
    import h2.config
    import h2.connection
    require_binary("weir")
    ok = backend(B.fixed(b"ok\n"))
    port, aport = free_port(), free_port()
    path = tmp_path / "weir.toml"
    path.write_text(
        '[admin]\naddr = "127.0.0.1:%d"\ntoken = "%s"\n'
        '[servers.web]\naddr = "127.0.0.1:%d"\nlocations = ["all"]\nh2c = true\n'
        '[locations.all]\nupstream = "ok"\n[upstreams.ok]\naddrs = ["%s"]\n'
        % (aport, TOKEN, port, ok.addr))
    w = start_proc([binary("weir"), "-c", str(path), "--threads", "2"], port, "weir")
    assert wait_port(aport, w.proc)

    def counts():
        text = scrape(aport)[2]
        return (value(text, "weir_client_connections", protocol="http1"),
                value(text, "weir_client_connections", protocol="http2"))

    def wait(want):
        # The value that matched, not a new scrape: each scrape's own
        # connection may still be open, uncounted down, during the next
        # one (it failed once that way with 3 HTTP/1 connections).
        deadline = time.monotonic() + 10
        got = counts()
        while got != want and time.monotonic() < deadline:
            time.sleep(0.05)
            got = counts()
        return got

    s2 = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    s2.sendall(conn.data_to_send())
    s1 = socket.create_connection(("127.0.0.1", port), timeout=10)
    s1.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert s1.recv(100).startswith(b"HTTP/1.1 200")
    assert wait((2.0, 1.0)) == (2.0, 1.0)
    s1.close()
    s2.close()
    deadline = time.monotonic() + 10
    got = counts()
    while got[1] != 0.0 and time.monotonic() < deadline:
        time.sleep(0.05)
        got = counts()
    assert got[1] == 0.0  # the HTTP/2 one is gone (scrapes come and go as HTTP/1)
