"""Request ids and the JSON access-log format."""
import json
import re
import time

import backends as B
from conftest import binary, free_port, require_binary


def run(start_proc, tmp_path, backend_addr, log_format):
    require_binary("weir")
    port = free_port()
    log = tmp_path / "access.log"
    cfg = tmp_path / "weir.toml"
    cfg.write_text('[servers.s]\naddr = "127.0.0.1:%d"\nlocations = ["all"]\n'
                   'access_log = %s\naccess_log_file = "%s"\n'
                   '[locations.all]\nupstream = "u"\n[upstreams.u]\naddrs = ["%s"]\n'
                   % (port, json.dumps(log_format), log, backend_addr))
    w = start_proc([binary("weir"), "-c", str(cfg), "--threads", "2"], port, "weir")
    return w, log


def lines(log, n, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = log.read_text().splitlines() if log.exists() else []
        if len(got) >= n:
            return got
        time.sleep(0.02)
    return log.read_text().splitlines() if log.exists() else []


def test_request_id_generated_and_passed_upstream(backend, start_proc, tmp_path):
    b = backend()
    w, log = run(start_proc, tmp_path, b.addr, "{request_id} {uri}")
    assert B.get(w.port, "/one").status == 200
    assert B.get(w.port, "/two", headers=[("X-Request-Id", "client-chosen-42")]).status == 200
    got = lines(log, 2)
    ids = [req.headers.get("x-request-id") for req in b.requests]
    assert re.fullmatch(r"[0-9a-f]{32}", ids[0]), ids
    assert ids[1] == "client-chosen-42"
    # Two workers log on their own: the lines may come in either order.
    assert sorted(got, key=lambda x: x.split()[1]) == ["%s /one" % ids[0],
                                                         "client-chosen-42 /two"], got


def test_request_ids_differ(backend, start_proc, tmp_path):
    b = backend()
    w, log = run(start_proc, tmp_path, b.addr, "{request_id}")
    for i in range(50):
        assert B.get(w.port, "/%d" % i).status == 200
    got = lines(log, 50)
    assert len(set(got)) == 50


def test_traceparent_passes_through(backend, start_proc, tmp_path):
    b = backend()
    w, log = run(start_proc, tmp_path, b.addr, "off")
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert B.get(w.port, "/", headers=[("traceparent", tp)]).status == 200
    assert b.requests[0].headers.get("traceparent") == tp


def test_json_access_log(backend, start_proc, tmp_path):
    b = backend()
    w, log = run(start_proc, tmp_path, b.addr, "json")
    ua = 'evil"agent\\with\x01control'
    assert B.get(w.port, "/j?x=1", headers=[("User-Agent", "curl/8"), ("Referer", "r")]).status == 200
    got = lines(log, 1)
    rec = json.loads(got[0])
    assert rec["method"] == "GET" and rec["uri"] == "/j?x=1" and rec["status"] == 200
    assert rec["protocol"] == "HTTP/1.1" and rec["client_ip"] == "127.0.0.1"
    assert rec["upstream_addr"] == b.addr and rec["user_agent"] == "curl/8"
    assert re.fullmatch(r"[0-9a-f]{32}", rec["request_id"])
    assert rec["latency_ms"] >= 0 and rec["upstream_latency_ms"] >= 0 and rec["size"] > 0
    # Hostile header values stay one valid JSON line.
    raw = ("GET /k HTTP/1.1\r\nHost: x\r\nUser-Agent: %s\r\nConnection: close\r\n\r\n"
           % ua.replace("\x01", "")).encode()
    assert B.request(w.port, raw).status == 200
    rec2 = json.loads(lines(log, 2)[1])
    assert rec2["user_agent"] == ua.replace("\x01", "")


def test_unparseable_access_log_format_is_a_config_error(tmp_path):
    require_binary("weir")
    cfg = tmp_path / "weir.toml"
    cfg.write_text('[servers.s]\naddr = "127.0.0.1:1"\nlocations = []\naccess_log = "{bogus}"\n')
    import subprocess
    out = subprocess.run([binary("weir"), "-t", "-c", str(cfg)], capture_output=True, text=True,
                         timeout=20)
    assert out.returncode == 1 and "unknown variable '{bogus}'" in out.stderr


def read_to_eof(port, raw):
    """Sends raw, reads until the proxy closes; the close must be a FIN: a
    reset could destroy the answer before a client reads it."""
    s = B.connect(port)
    s.sendall(raw)
    data = b""
    while True:
        chunk = s.recv(65536)  # ConnectionResetError fails the test
        if not chunk:
            break
        data += chunk
    s.close()
    return data


REFUSED = [
    (b"GARBAGE\r\n\r\n", 400, "- -"),
    (b"GET /cl HTTP/1.1\r\nHost: x\r\nContent-Length: 1,1\r\n\r\n", 400, "GET /cl"),
    (b"GET /te HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501, "GET /te"),
    (b"GET /nohost HTTP/1.1\r\n\r\n", 400, "GET /nohost"),
    (b"GET /v HTTP/3.0\r\nHost: x\r\n\r\n", 505, "- -"),
    (b"GET /big HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 70000 + b"\r\n\r\n", 431, "- -"),
]


def test_requests_the_parser_refuses_have_an_access_log_line(backend, start_proc, tmp_path):
    """nginx logs a 400 for a request it cannot parse; so does weir, with
    a request id and the termination state, and the answer ends with a
    clean close."""
    b = backend()
    w, log = run(start_proc, tmp_path, b.addr,
                 "{status} \"{method} {uri}\" {request_id} {termination}")
    for raw, status, _ in REFUSED:
        data = read_to_eof(w.port, raw)
        assert data.startswith(b"HTTP/1.1 %d " % status), (raw[:40], data[:80])
        assert b"\r\nConnection: close\r\n" in data
    got = lines(log, len(REFUSED))
    assert len(got) == len(REFUSED), got
    for line, (raw, status, shown) in zip(got, REFUSED):
        m = re.fullmatch(r'(\d+) "(.*)" ([0-9a-f]{32}) (\S\S)', line)
        assert m, line
        assert int(m.group(1)) == status and m.group(2) == shown and m.group(4) == "PR", line
    assert b.request_count() == 0
    # The error log names the same request ids.
    err = w.stderr()
    for line in got:
        assert "(request %s)" % line.split()[-2] in err


def test_refused_request_keeps_a_valid_client_request_id(backend, start_proc, tmp_path):
    b = backend()
    w, log = run(start_proc, tmp_path, b.addr, "{status} {request_id}")
    read_to_eof(w.port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Request-Id: trace-7\r\n"
                        b"Content-Length: 2\r\nContent-Length: 2\r\n\r\nab")
    assert lines(log, 1) == ["400 trace-7"]


def test_slow_head_408_has_an_access_log_line(backend, start_proc, tmp_path):
    require_binary("weir")
    port = free_port()
    log = tmp_path / "access.log"
    cfg = tmp_path / "weir.toml"
    cfg.write_text('[servers.s]\naddr = "127.0.0.1:%d"\nlocations = ["all"]\n'
                   'client_header_timeout = "300ms"\n'
                   'access_log = "{status} {termination}"\naccess_log_file = "%s"\n'
                   '[locations.all]\necho = true\n' % (port, log))
    w = start_proc([binary("weir"), "-c", str(cfg), "--threads", "1"], port, "weir")
    data = read_to_eof(w.port, b"GET / HTTP/1.1\r\nHost:")
    assert data.startswith(b"HTTP/1.1 408 ")
    assert lines(log, 1) == ["408 PR"]


def test_answer_before_the_body_ends_with_a_clean_close(backend, start_proc, tmp_path):
    """A GET with a body is answered, then the connection closes (the body
    is not parsed as a request): with a FIN after the whole response, not a
    reset."""
    b = backend()
    w, _ = run(start_proc, tmp_path, b.addr, "off")
    data = read_to_eof(w.port, b"GET /g HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
    assert data.startswith(b"HTTP/1.1 200 ") and b"\r\nConnection: close\r\n" in data
