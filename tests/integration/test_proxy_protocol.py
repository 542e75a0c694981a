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


# ---------------------------------------------------------------------------
# proxy_protocol = true on an HTTP listener


def weir_pp_conf(trusted):
    return ('[servers.s]\naddr = "127.0.0.1:@PORT@"\nlocations = ["all"]\n'
            'proxy_protocol = true\ntrusted_proxies = [%s]\n\n'
            '[locations.all]\nupstream = "u"\n\n[upstreams.u]\naddrs = ["@B@"]\n'
            % ", ".join('"%s"' % t for t in trusted))


def get_from(port, source_ip, extra=b""):
    c = socket.socket()
    c.settimeout(10)
    c.bind((source_ip, 0))
    c.connect(("127.0.0.1", port))
    c.sendall(b"GET /x HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 6.6.6.6\r\n"
              b"X-Real-IP: 6.6.6.6\r\nConnection: close\r\n\r\n" + extra)
    data = b""
    while True:
        try:
            chunk = c.recv(65536)
        except ConnectionResetError:  # closed with the request unread
            break
        if not chunk:
            break
        data += chunk
    c.close()
    return data


@pytest.mark.parametrize("send", ["send-proxy", "send-proxy-v2"])
def test_listener_takes_the_client_address_from_haproxy(send, haproxy, backend, weir_toml):
    import backends as B
    b = backend(B.fixed(b"hi"))
    w = weir_toml(weir_pp_conf(["127.0.0.1"]), B=b)
    port = free_port()
    haproxy("frontend f\n  mode tcp\n  bind 127.0.0.1:%d\n  default_backend b\n"
            "backend b\n  mode tcp\n  server s 127.0.0.1:%d %s\n" % (port, w.port, send), port)
    data = get_from(port, "127.0.0.5")
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"hi"), data
    req = b.last()
    assert req.headers.get("X-Real-IP") == "127.0.0.5"
    assert req.headers.get("X-Forwarded-For").split(", ")[-1] == "127.0.0.5"


def test_listener_refuses_untrusted_peers_and_missing_headers(backend, weir_toml):
    import backends as B
    b = backend(B.fixed(b"hi"))
    w = weir_toml(weir_pp_conf(["127.0.0.1"]), B=b)
    # Trusted, but no header: closed without an answer.
    assert get_from(w.port, "127.0.0.1") == b""
    # A header from an untrusted peer: closed at accept.
    assert get_from(w.port, "127.0.0.7", b"") == b""
    c = socket.socket()
    c.settimeout(10)
    c.bind(("127.0.0.7", 0))
    c.connect(("127.0.0.1", w.port))
    try:
        c.sendall(b"PROXY TCP4 1.2.3.4 127.0.0.1 1000 80\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert c.recv(100) == b""
    except (ConnectionResetError, BrokenPipeError):
        pass
    c.close()
    # A v1 header, then the request: served, with the header's address.
    c = socket.create_connection(("127.0.0.1", w.port), timeout=10)
    c.sendall(b"PROXY TCP4 198.51.100.9 127.0.0.1 1000 80\r\n")
    time.sleep(0.05)  # the request in its own segment
    c.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        chunk = c.recv(65536)
        if not chunk:
            break
        data += chunk
    c.close()
    assert data.startswith(b"HTTP/1.1 200"), data
    assert b.last().headers.get("X-Real-IP") == "198.51.100.9"
    assert b.request_count() == 1
    log = w.stderr()
    assert "127.0.0.7 on 127.0.0.1:%d: not a trusted proxy" % w.port in log
    assert "not a valid PROXY header" in log


def test_proxy_protocol_needs_trusted_proxies(tmp_path):
    require_binary("weir")
    path = tmp_path / "w.toml"
    path.write_text('[servers.s]\naddr = "127.0.0.1:1"\nlocations = ["all"]\n'
                    'proxy_protocol = true\n\n[locations.all]\nupstream = "u"\n\n'
                    '[upstreams.u]\naddrs = ["127.0.0.1:2"]\n')
    r = subprocess.run([binary("weir"), "-t", "-c", str(path)], capture_output=True, text=True,
                       timeout=20)
    assert r.returncode != 0 and "w.toml:4: 'proxy_protocol' in [servers.s] needs" in r.stderr, \
        r.stderr


def test_the_header_comes_before_tls(backend, weir_toml, tmp_path):
    """On a TLS listener the PROXY header precedes the ClientHello (as
    HAProxy's send-proxy in mode tcp sends it): weir reads exactly the
    header, then does the handshake on what follows."""
    import backends as B
    import tlsutil as T
    pki = T.PKI(tmp_path / "pki")
    b = backend(B.fixed(b"tls hi"))
    conf = ('[certificates.localhost]\ncert = "%s"\nkey = "%s"\n\n'
            % (pki.path("localhost.crt"), pki.path("localhost.key"))
            + weir_pp_conf(["127.0.0.1"]).replace(
                'proxy_protocol = true', 'proxy_protocol = true\ncertificates = ["localhost"]'))
    w = weir_toml(conf, B=b)
    for header in (b"PROXY TCP6 2001:db8::5 ::1 4000 443\r\n",
                   b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\xc6\x33\x64\x0a\x7f\x00\x00\x01"
                   b"\x0f\xa0\x01\xbb"):
        raw = socket.create_connection(("127.0.0.1", w.port), timeout=10)
        raw.sendall(header)
        s = T.client_context(pki).wrap_socket(raw, server_hostname="localhost")
        r = T.https_get(s, close=True)
        s.close()
        assert r.status == 200 and r.body == b"tls hi"
    ips = [q.headers.get("X-Real-IP") for q in b.requests]
    assert ips == ["2001:db8::5", "198.51.100.10"], ips
