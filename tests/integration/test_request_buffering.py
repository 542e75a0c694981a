"""request_buffering: a request body is read before a backend is chosen,
so slow clients (slowhttptest -B style) hold no backend connection, and
a buffered body can be sent again when an attempt fails (issue:
"Availability under faults", backend protection).
"""
import hashlib
import os
import socket
import subprocess
import threading
import time

import pytest

import backends as B
from conftest import binary, free_port, require_binary, wait_for


@pytest.fixture
def proxy(weir_toml):
    return weir_toml


def config(location_extra="", server_extra="", addrs=("@B@",)):
    return """
[servers.s]
addr = "127.0.0.1:@PORT@"
locations = ["l"]
%s
[locations.l]
upstream = "u"
%s
[upstreams.u]
addrs = [%s]
max_fails = 0
""" % (server_extra, location_extra, ", ".join('"%s"' % a for a in addrs))


def echo_len(conn, req):
    body = b"%d %s\n" % (len(req.body), req.body[:16])
    conn.send(B.response_head(200, [("Content-Length", str(len(body)))]) + body)


def slow_post(port, body, pause=0.05, chunk=4, head_extra=b""):
    s = B.connect(port)
    s.sendall(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n%s\r\n"
              % (len(body), head_extra))
    for i in range(0, len(body), chunk):
        s.sendall(body[i:i + chunk])
        time.sleep(pause)
    r = B.read_response(B.Reader(s), "POST")
    s.close()
    return r


def test_slow_body_holds_no_backend_connection(proxy, backend):
    b = backend(echo_len)
    w = proxy(config(), B=b)
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("r", slow_post(w.port, b"x" * 40)))
    t.start()
    time.sleep(0.3)  # about a third of the body sent
    assert b.connections == 0, "a backend connection was taken before the body was complete"
    t.join(20)
    assert result["r"].status == 200 and result["r"].body.startswith(b"40 ")
    assert b.connections == 1


def test_fifty_slow_clients_hold_no_backend_connections(proxy, backend):
    b = backend(echo_len)
    w = proxy(config(), B=b)
    results = []
    threads = [threading.Thread(target=lambda: results.append(slow_post(w.port, b"y" * 80,
                                                                        pause=0.05)))
               for _ in range(50)]
    for t in threads:
        t.start()
    time.sleep(0.3)  # every client is sending; none has sent its 20 pieces
    held = b.connections
    for t in threads:
        t.join(30)
    assert held == 0, held
    assert len(results) == 50 and all(r.status == 200 for r in results)


def test_request_buffering_off_streams(proxy, backend):
    b = backend(echo_len)
    w = proxy(config("request_buffering = false"), B=b)
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("r", slow_post(w.port, b"z" * 40)))
    t.start()
    time.sleep(0.3)
    assert b.connections == 1, "with buffering off the body streams to the backend"
    t.join(20)
    assert result["r"].status == 200


def test_body_over_the_buffer_streams(proxy, backend):
    b = backend(echo_len)
    w = proxy(config('request_buffer_size = "16"'), B=b)
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("r", slow_post(w.port, b"w" * 40)))
    t.start()
    time.sleep(0.3)
    assert b.connections == 1
    t.join(20)
    assert result["r"].status == 200 and result["r"].body.startswith(b"40 ")


def test_chunked_body_and_trailers_are_buffered_whole(proxy, backend):
    b = backend(echo_len)
    w = proxy(config(), B=b)
    s = B.connect(w.port)
    s.sendall(b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
    for piece in (b"5\r\nhello\r\n", b"6\r\n world\r\n", b"0\r\nX-Sum: 11\r\n\r\n"):
        time.sleep(0.1)
        assert b.connections == 0
        s.sendall(piece)
    r = B.read_response(B.Reader(s), "POST")
    s.close()
    assert r.status == 200 and r.body == b"11 hello world\n"
    assert b.last().trailers.get("X-Sum") == "11"


def test_buffered_body_is_replayed_after_a_reset(proxy, backend):
    """The first backend reads the whole body, then resets: the buffered
    body goes again to the other backend. A PUT: sending it twice is
    harmless (a POST whose body went out is not sent again, below)."""
    def reset(conn, req):
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        return "close"

    bad, good = backend(reset), backend(echo_len)
    w = proxy(config(addrs=("@X@", "@Y@")), X=bad, Y=good)
    for i in range(4):
        r = B.request(w.port, b"PUT /p HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                              b"Connection: close\r\n\r\nabcde", "PUT")
        assert r.status == 200 and r.body == b"5 abcde\n", (i, r.status, r.body)
    assert bad.request_count() >= 1
    assert all(req.body == b"abcde" for req in good.requests)
    # A POST whose body reached the resetting backend may have been acted
    # on: it is not sent again.
    statuses = sorted(B.request(w.port, b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                                        b"Connection: close\r\n\r\nabcde", "POST").status
                      for _ in range(4))
    assert statuses == [200, 200, 502, 502], statuses


def test_stalled_body_is_a_408_and_reaches_no_backend(proxy, backend):
    b = backend(echo_len)
    w = proxy(config(server_extra='client_body_timeout = "500ms"'), B=b)
    s = B.connect(w.port)
    s.sendall(b"POST /s HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
    r = B.read_response(B.Reader(s), "POST")
    s.close()
    assert r.status == 408
    assert b.connections == 0 and b.request_count() == 0


# ---- request_buffer_file_size: past the memory buffer, into a temp file ----

def echo_sha(conn, req):
    body = b"%d %s\n" % (len(req.body), hashlib.sha256(req.body).hexdigest().encode())
    conn.send(B.response_head(200, [("Content-Length", str(len(body)))]) + body)


def sha_line(data):
    return b"%d %s\n" % (len(data), hashlib.sha256(data).hexdigest().encode())


def spill_config(tmp_path, extra="", addrs=("@B@",), server_extra=""):
    d = tmp_path / "spill"
    d.mkdir(exist_ok=True)
    return ('[basic]\ntemp_dir = "%s"\n' % d) + config(
        'request_buffer_size = "16KB"\nrequest_buffer_file_size = "4MB"\n' + extra,
        server_extra=server_extra, addrs=addrs), d


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def test_body_over_the_memory_buffer_is_spilled_whole_before_the_backend(proxy, backend,
                                                                         tmp_path):
    b = backend(echo_sha)
    text, d = spill_config(tmp_path)
    w = proxy(text, B=b)
    body = os.urandom(300 * 1024)
    result = {}
    t = threading.Thread(target=lambda: result.setdefault(
        "r", slow_post(w.port, body, pause=0.02, chunk=16 * 1024)))
    t.start()
    time.sleep(0.25)  # a few of the 19 pieces are in
    assert b.connections == 0, "a backend connection was taken before the body was complete"
    assert os.listdir(d) == [], "the file has no name"
    t.join(30)
    assert result["r"].status == 200 and result["r"].body == sha_line(body)
    assert b.connections == 1


def test_spilled_body_is_replayed_whole_after_a_reset(proxy, backend, tmp_path):
    def reset(conn, req):
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                             b"\x01\x00\x00\x00\x00\x00\x00\x00")
        return "close"

    bad, good = backend(reset), backend(echo_sha)
    text, _ = spill_config(tmp_path, addrs=("@X@", "@Y@"))
    w = proxy(text, X=bad, Y=good)
    body = os.urandom(1024 * 1024 + 7)
    for i in range(4):
        r = B.request(w.port, b"PUT /p HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n"
                              b"Connection: close\r\n\r\n%s" % (len(body), body), "PUT")
        assert r.status == 200 and r.body == sha_line(body), (i, r.status, r.body)
    assert bad.request_count() >= 1
    assert all(req.body == body for req in good.requests)


def test_chunked_body_spills_and_past_the_file_limit_streams(proxy, backend, tmp_path):
    b = backend(echo_sha)
    text, _ = spill_config(tmp_path)
    w = proxy(text.replace('"4MB"', '"64KB"'), B=b)
    pieces = [os.urandom(20 * 1024) for _ in range(6)]  # 120 KB: past 64 KB it streams
    s = B.connect(w.port)
    s.sendall(b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
    for i, p in enumerate(pieces):
        s.sendall(b"%x\r\n%s\r\n" % (len(p), p))
        time.sleep(0.1)
        if i == 1:
            assert b.connections == 0, "40 KB: still in the file"
    time.sleep(0.1)
    assert b.connections == 1, "past 64 KB the body streams"
    s.sendall(b"0\r\n\r\n")
    r = B.read_response(B.Reader(s), "POST")
    s.close()
    assert r.status == 200 and r.body == sha_line(b"".join(pieces))


def test_known_length_over_the_file_limit_streams_from_the_start(proxy, backend, tmp_path):
    b = backend(echo_sha)
    text, _ = spill_config(tmp_path)
    w = proxy(text.replace('"4MB"', '"64KB"'), B=b)
    body = os.urandom(100 * 1024)
    result = {}
    t = threading.Thread(target=lambda: result.setdefault(
        "r", slow_post(w.port, body, pause=0.05, chunk=16 * 1024)))
    t.start()
    time.sleep(0.2)
    assert b.connections == 1
    t.join(30)
    assert result["r"].status == 200 and result["r"].body == sha_line(body)


def test_spilled_body_over_client_max_body_size_is_a_413(proxy, backend, tmp_path):
    b = backend(echo_sha)
    text, _ = spill_config(tmp_path, extra='client_max_body_size = "100KB"\n')
    w = proxy(text, B=b)
    s = B.connect(w.port)
    s.sendall(b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(8):
        s.sendall(b"%x\r\n%s\r\n" % (20 * 1024, b"q" * 20 * 1024))
    s.sendall(b"0\r\n\r\n")
    r = B.read_response(B.Reader(s), "POST")
    s.close()
    assert r.status == 413
    assert b.request_count() == 0


def test_clients_leaving_mid_spill_leave_no_file_open(proxy, backend, tmp_path):
    b = backend(echo_sha)
    text, _ = spill_config(tmp_path)
    w = proxy(text, B=b)
    assert B.get(w.port, "/warm").status == 200
    before = open_fds(w.proc.pid)
    for _ in range(20):
        s = B.connect(w.port)
        s.sendall(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 500000\r\n\r\n" +
                  b"a" * 100000)
        time.sleep(0.02)
        s.close()
    # weir sees each close in its own time (a loaded machine, ASan): every
    # temporary file must be closed soon, not at once.
    assert wait_for(lambda: open_fds(w.proc.pid) <= before, 10), \
        "temp files of aborted uploads stay open: %d > %d" % (open_fds(w.proc.pid), before)
    assert b.request_count() == 1


def test_temp_dir_gone_at_run_time_is_a_503_and_a_log_line(proxy, backend, tmp_path):
    b = backend(echo_sha)
    text, d = spill_config(tmp_path)
    w = proxy(text, B=b)
    d.rmdir()
    body = b"z" * (64 * 1024)
    r = B.request(w.port, b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s"
                  % (len(body), body), "POST")
    assert r.status == 503
    assert b.request_count() == 0
    assert "cannot create a temporary file for the request body in %s" % d in w.stderr()
    # Bodies that fit in memory still go through.
    r = B.request(w.port, b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
                  "POST")
    assert r.status == 200


def check_config(tmp_path, text):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return subprocess.run([binary("weir"), "-t", "-c", str(path)], capture_output=True,
                          text=True)


def test_unusable_temp_dir_is_a_config_error(tmp_path):
    require_binary("weir")
    text, _ = spill_config(tmp_path)
    text = text.replace(str(tmp_path / "spill"), str(tmp_path / "missing"))
    r = check_config(tmp_path, text.replace("@PORT@", "1").replace("@B@", "127.0.0.1:1"))
    assert r.returncode != 0
    assert "c.toml:2: temp_dir '%s' (for request_buffer_file_size) cannot hold temporary " \
           "files: No such file or directory" % (tmp_path / "missing") in r.stderr, r.stderr


def test_file_size_not_over_the_memory_size_is_a_config_error(tmp_path):
    require_binary("weir")
    text, _ = spill_config(tmp_path)
    text = text.replace('"4MB"', '"16KB"')
    r = check_config(tmp_path, text.replace("@PORT@", "1").replace("@B@", "127.0.0.1:1"))
    assert r.returncode != 0
    assert "'request_buffer_file_size' in [locations.l] must be larger than " \
           "request_buffer_size (16384 bytes), or 0" in r.stderr, r.stderr
