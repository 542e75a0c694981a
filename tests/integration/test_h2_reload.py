"""A reload (SIGHUP) moves long-lived HTTP/2 connections on: clients get
GOAWAY(NO_ERROR) while their streams in flight finish, and backend
HTTP/2 connections are replaced by new ones for new requests."""
import http.client
import signal
import socket
import time

import h2.config
import h2.connection
import h2.events

import backends as B
from conftest import binary, free_port, require_binary, wait_port


def wait_log(proc, text, count=1, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.stderr().count(text) >= count:
            return True
        time.sleep(0.02)
    return False


def test_reload_sends_goaway_and_streams_finish(backend, start_proc, tmp_path):
    require_binary("weir")
    be = backend(B.slow(1.0, b"late\n"))
    port = free_port()
    path = tmp_path / "weir.toml"
    path.write_text('[servers.s]\naddr = "127.0.0.1:%d"\nlocations = ["l"]\nh2c = true\n'
                    '[locations.l]\nupstream = "u"\n[upstreams.u]\naddrs = ["%s"]\n'
                    % (port, be.addr))
    w = start_proc([binary("weir"), "-c", str(path), "--threads", "1"], port, "weir")
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    c.send_headers(1, [(":method", "GET"), (":path", "/x"), (":scheme", "http"),
                       (":authority", "a")], end_stream=True)
    s.sendall(c.data_to_send())
    time.sleep(0.2)  # the request is at the backend, which answers after 1 s
    w.signal(signal.SIGHUP)
    assert wait_log(w, "reloaded"), w.stderr()
    # Raw frames from here: the h2 package refuses frames after a GOAWAY,
    # which is exactly what must keep coming (the stream's response).
    goaway, body, ended, buf = None, b"", False, b""
    deadline = time.monotonic() + 10
    while not ended and time.monotonic() < deadline:
        data = s.recv(65536)
        if not data:
            break
        buf += data
        while len(buf) >= 9:
            length = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + length:
                break
            ftype, flags = buf[3], buf[4]
            sid = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
            payload, buf = buf[9:9 + length], buf[9 + length:]
            if ftype == 7:  # GOAWAY: last stream id, error code
                goaway = (int.from_bytes(payload[:4], "big") & 0x7FFFFFFF,
                          int.from_bytes(payload[4:8], "big"))
            elif ftype == 0 and sid == 1:  # DATA
                body += payload
                if flags & 1:
                    ended = True
            elif ftype == 1 and sid == 1 and flags & 1:  # HEADERS with END_STREAM
                ended = True
    s.close()
    assert goaway is not None and goaway[1] == 0 and goaway[0] >= 1, goaway
    assert ended and body == b"late\n"


def test_reload_replaces_backend_h2_connections(backend, start_proc, tmp_path):
    require_binary("weir")
    files = backend(B.fixed(b"hello\n"))
    back, badmin, front = free_port(), free_port(), free_port()
    bcfg = tmp_path / "back.toml"
    bcfg.write_text('[admin]\naddr = "127.0.0.1:%d"\n'
                    '[servers.b]\naddr = "127.0.0.1:%d"\nlocations = ["f"]\nh2c = true\n'
                    '[locations.f]\nupstream = "files"\n[upstreams.files]\naddrs = ["%s"]\n'
                    % (badmin, back, files.addr))
    start_proc([binary("weir"), "-c", str(bcfg), "--threads", "1"], back, "back")
    fcfg = tmp_path / "front.toml"
    fcfg.write_text('[servers.f]\naddr = "127.0.0.1:%d"\nlocations = ["p"]\n'
                    '[locations.p]\nupstream = "b"\n[upstreams.b]\naddrs = ["127.0.0.1:%d"]\n'
                    'alpn = "h2"\n' % (front, back))
    w = start_proc([binary("weir"), "-c", str(fcfg), "--threads", "1"], front, "front")

    def get():
        c = http.client.HTTPConnection("127.0.0.1", front, timeout=10)
        c.request("GET", "/")
        r = c.getresponse()
        out = (r.status, r.read())
        c.close()
        return out

    def h2_conns():
        c = http.client.HTTPConnection("127.0.0.1", badmin, timeout=10)
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
        c.close()
        for line in text.splitlines():
            if line.startswith('weir_client_connections{protocol="http2"}'):
                return float(line.split()[-1])
        return 0.0

    assert get() == (200, b"hello\n") and get() == (200, b"hello\n")
    assert h2_conns() == 1.0
    w.signal(signal.SIGHUP)
    assert wait_log(w, "reloaded"), w.stderr()
    deadline = time.monotonic() + 10
    while h2_conns() != 0.0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert h2_conns() == 0.0  # the idle one went away with GOAWAY
    assert get() == (200, b"hello\n")
    assert h2_conns() == 1.0  # a new one for the new request
