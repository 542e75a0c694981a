"""weir's PROXY protocol code (src/net/proxy_proto.c) against HAProxy from
Debian, both ways, through tests/tools/weir-pp-tool:

- in: HAProxy (mode tcp) sends `send-proxy` / `send-proxy-v2` to the
  tool, which parses the header with weir's parser: the client address
  and port must be exactly the connection's, and the bytes after the
  header the client's first bytes;
- out: the tool sends the header weir writes (v1, v2; IPv4, IPv6) to an
  HAProxy `accept-proxy` listener, which answers with the source and
  destination it understood.

(The listeners and upstreams that use it are issue 18's next slices.)
"""
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import binary, free_port, require_binary, wait_port

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


@pytest.fixture
def haproxy(tmp_path):
    """Factory: haproxy(cfg, port) -> Popen, listening; soft-stopped
    (SIGUSR1, exit 0) at teardown."""
    procs = []

    def start(cfg, port):
        if not os.access(HAPROXY, os.X_OK):
            pytest.skip("haproxy not installed")
        path = tmp_path / ("haproxy-%d.cfg" % port)
        path.write_text("global\n  maxconn 100\ndefaults\n  timeout connect 5s\n"
                        "  timeout client 10s\n  timeout server 10s\n" + cfg)
        err = open(tmp_path / ("haproxy-%d.log" % port), "wb")
        p = subprocess.Popen([HAPROXY, "-f", str(path), "-db"], stdout=err, stderr=err,
                             stdin=subprocess.DEVNULL)
        procs.append((p, err))
        assert wait_port(port, p), (tmp_path / ("haproxy-%d.log" % port)).read_text()
        return p

    yield start
    for p, err in procs:
        p.send_signal(signal.SIGUSR1)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
        err.close()


def reader(n):
    require_binary("weir-pp-tool")
    port = free_port()
    p = subprocess.Popen([binary("weir-pp-tool"), "read", str(port), str(n)],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "listening"
    return p, port


@pytest.mark.parametrize("send", ["send-proxy", "send-proxy-v2"])
def test_haproxy_sends_weir_reads(send, haproxy):
    # The start-up probe's connection may reach the tool too (no bytes).
    tool, tport = reader(5)
    port = free_port()
    haproxy("frontend f\n  mode tcp\n  bind 127.0.0.1:%d\n  default_backend b\n"
            "backend b\n  mode tcp\n  server s 127.0.0.1:%d %s\n" % (port, tport, send), port)
    c = socket.create_connection(("127.0.0.1", port), timeout=10)
    local = "%s:%d" % c.getsockname()
    c.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    data = b""
    while b"ok" not in data:
        chunk = c.recv(4096)
        if not chunk:
            break
        data += chunk
    c.close()
    want = "v%d %s 127.0.0.1:%d authority= next=GET" % (2 if send.endswith("v2") else 1,
                                                        local, port)
    lines = []
    while want not in lines:
        line = tool.stdout.readline()  # the tool gives up after 5 s without a connection
        if not line:
            break
        lines.append(line.strip())
    tool.terminate()
    tool.wait(10)
    assert want in lines, lines
    assert data.endswith(b"ok")


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("src, dst", [("203.0.113.7:40000", "10.1.2.3:80"),
                                      ("[2001:db8::7]:1", "[2001:db8::1]:65535")])
def test_weir_sends_haproxy_reads(version, src, dst, haproxy):
    require_binary("weir-pp-tool")
    port = free_port()
    haproxy("frontend f\n  mode http\n  bind 127.0.0.1:%d accept-proxy\n"
            "  http-request return status 200 content-type text/plain "
            "lf-string \"%%[src] %%[src_port] %%[dst] %%[dst_port]\"\n" % port, port)
    r = subprocess.run([binary("weir-pp-tool"), "send", version, str(port), src, dst],
                       capture_output=True, timeout=20)
    assert r.returncode == 0, r.stderr
    head, _, body = r.stdout.decode().partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 200"), r.stdout

    def split(a):
        host, _, p = a.rpartition(":")
        return host.strip("[]"), p

    assert body == "%s %s %s %s" % (split(src) + split(dst))


def test_garbage_is_refused_at_once(tmp_path):
    tool, tport = reader(1)
    c = socket.create_connection(("127.0.0.1", tport), timeout=10)
    t0 = time.monotonic()
    c.sendall(b"GET / HTTP/1.1\r\n")
    assert tool.stdout.readline().strip() == "refused"
    c.close()
    assert tool.wait(10) == 0
    print("refused after %.3f s" % (time.monotonic() - t0))
