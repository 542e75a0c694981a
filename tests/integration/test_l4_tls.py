"""TLS on protocol = "tcp" servers (issue 18): terminated on the listener
(certificates as for HTTPS servers, chosen by SNI; the backend gets the
plain bytes), originated to a TLS upstream, checked with openssl s_client
and Python's ssl; a client that speaks no TLS never reaches a backend.
"""
import os
import select
import shutil
import socket
import ssl
import subprocess
import time

import pytest

import tcputil as T
import tlsutil as TL
from conftest import binary, free_port, require_binary
from test_l4 import start, wait_lines
from test_reload import wait_log
from test_l4 import tcp  # noqa: F401 (the TcpServer fixture)
from test_tls import cert_section, pki  # noqa: F401 (the session PKI fixture)


def tls_server(port, up, pki, extra=""):
    return (cert_section(pki, "a") + cert_section(pki, "b") +
            '[servers.t]\naddr = "127.0.0.1:%d"\nprotocol = "tcp"\nupstream = "u"\n'
            'tls = true\ncertificates = ["a", "b"]\n%s[upstreams.u]\naddrs = ["%s"]\n'
            % (port, extra, up))


def s_client(port, name, data):
    openssl = shutil.which("openssl")
    out = subprocess.run([openssl, "s_client", "-connect", "127.0.0.1:%d" % port,
                          "-servername", name, "-quiet"],
                         input=data, capture_output=True, timeout=30)
    return out.stdout, out.stderr


def test_tls_is_terminated_and_the_backend_gets_plain_bytes(pki, tcp, start_proc, tmp_path):
    seen = []

    def record(c, srv):
        d = c.recv(100)
        seen.append(d)
        c.sendall(b"plain answer to " + d)
        c.shutdown(socket.SHUT_WR)
        T.read_all(c)

    b = tcp(record)
    port = free_port()
    _, w = start(start_proc, tmp_path, tls_server(port, b.addr, pki,
                 'access_log = "{client_ip} {status} {termination}"\n'), port)
    out, err = s_client(port, "a.test", b"hello over TLS")
    assert out == b"plain answer to hello over TLS", err
    assert seen == [b"hello over TLS"]
    # The certificate is chosen by SNI, as on an HTTPS server.
    for name, cn in (("a.test", "a.test"), ("b.test", "b.test")):
        ctx = TL.client_context(pki, alpn=None)
        s = TL.tls_connect(port, ctx, server_hostname=name)
        assert TL.subject_cn(s.getpeercert()) == cn
        s.sendall(b"x")
        assert s.recv(100) == b"plain answer to x"
        s.close()


def test_big_transfers_both_ways_through_tls(pki, tcp, start_proc, tmp_path):
    e = tcp()
    port = free_port()
    start(start_proc, tmp_path, tls_server(port, e.addr, pki), port)
    data = os.urandom(4 << 20)
    s = TL.tls_connect(port, TL.client_context(pki, alpn=None), server_hostname="a.test")
    # One thread owns the TLS connection: OpenSSL does not take SSL_read
    # and SSL_write on one connection from two threads at once (TLS 1.3's
    # session tickets, read while writing, failed the client with an
    # "internal error" now and then).
    s.setblocking(False)
    got, sent = bytearray(), 0
    deadline = time.monotonic() + 60
    while len(got) < len(data) and time.monotonic() < deadline:
        want_write = sent < len(data)
        select.select([s], [s] if want_write else [], [], 1.0)
        if want_write:
            try:
                sent += s.send(data[sent:sent + (1 << 16)])
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass
        try:
            while True:  # what TLS has buffered too: select does not see it
                d = s.recv(1 << 16)
                if not d:
                    break
                got.extend(d)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass
    s.close()
    assert sent == len(data) and len(got) == len(data), (sent, len(got))
    assert bytes(got) == data


def test_plain_bytes_on_a_tls_listener_never_reach_the_backend(pki, tcp, start_proc, tmp_path):
    e = tcp()
    port = free_port()
    _, w = start(start_proc, tmp_path, tls_server(port, e.addr, pki,
                 'tls_handshake_timeout = "1s"\n'), port)
    c = socket.create_connection(("127.0.0.1", port), timeout=20)
    c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert T.closed_without_data(c)
    c.close()
    silent = socket.create_connection(("127.0.0.1", port), timeout=20)
    assert T.closed_without_data(silent)  # the handshake timeout
    silent.close()
    assert e.connections == 0
    assert "TLS handshake failed" in w.stderr()
    assert "no TLS handshake within the timeout" in w.stderr()


def test_tls_to_the_backend_is_originated_and_verified(pki, start_proc, tmp_path):
    good = T.TlsTcpServer(T.tls_echo, pki.path("localhost.crt"), pki.path("localhost.key"))
    rogue = T.TlsTcpServer(T.tls_echo, pki.path("other-localhost.crt"),
                           pki.path("other-localhost.key"))
    try:
        port, port2 = free_port(), free_port()
        text = ('[servers.t]\naddr = "127.0.0.1:%d"\nprotocol = "tcp"\nupstream = "u"\n'
                '[servers.r]\naddr = "127.0.0.1:%d"\nprotocol = "tcp"\nupstream = "r"\n'
                'access_log = "{status} {termination} {error}"\n'
                '[upstreams.u]\naddrs = ["%s"]\ntls = true\nsni = "localhost"\nca_file = "%s"\n'
                '[upstreams.r]\naddrs = ["%s"]\ntls = true\nsni = "localhost"\nca_file = "%s"\n'
                % (port, port2, good.addr, pki.path("ca.crt"), rogue.addr, pki.path("ca.crt")))
        _, w = start(start_proc, tmp_path, text, port)
        c = socket.create_connection(("127.0.0.1", port), timeout=20)
        c.sendall(b"to a TLS backend")
        assert c.recv(100) == b"to a TLS backend"
        c.close()
        # A backend whose certificate the CA did not sign: no tunnel.
        c = socket.create_connection(("127.0.0.1", port2), timeout=20)
        assert T.closed_without_data(c)
        c.close()
        assert any(l.startswith("502 SC") for l in wait_lines(w, 1, needle="502")), w.stdout()
    finally:
        good.close()
        rogue.close()


def test_config_tls_needs_certificates(tmp_path):
    require_binary("weir")
    path = tmp_path / "bad.toml"
    path.write_text('[servers.t]\naddr = "127.0.0.1:1"\nprotocol = "tcp"\nupstream = "u"\n'
                    'tls = true\n[upstreams.u]\naddrs = ["127.0.0.1:2"]\n')
    out = subprocess.run([binary("weir"), "-t", "-c", str(path)], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode != 0 and "'tls = true' in [servers.t] needs 'certificates'" in out.stderr


# ---- passthrough by server name ----


def tls_named(pki, cert, name):
    """A TLS echo backend serving PKI certificate `cert`, answering with
    its name first."""

    def handler(c, srv):
        c.sendall(name.encode() + b"\n")
        T.tls_echo(c, srv)

    return T.TlsTcpServer(handler, pki.path(cert + ".crt"), pki.path(cert + ".key"), name=name)


def hello_through(port, sni, pki):
    ctx = TL.client_context(pki, alpn=None)
    s = TL.tls_connect(port, ctx, server_hostname=sni)
    try:
        first = s.recv(100)
        s.sendall(b"ping")
        assert s.recv(4) == b"ping"
        return TL.subject_cn(s.getpeercert()), first.decode().strip()
    finally:
        s.close()


def test_passthrough_routes_by_server_name(pki, start_proc, tmp_path):
    a, w, d = tls_named(pki, "a", "A"), tls_named(pki, "wild", "W"), tls_named(pki, "default", "D")
    try:
        port = free_port()
        text = ('[servers.p]\naddr = "127.0.0.1:%d"\nprotocol = "tls_passthrough"\n'
                'upstream = "d"\naccess_log = "{sni} {upstream_addr} {status}"\n'
                'sni_routes = { "a.test" = "a", "*.wild.test" = "w" }\n'
                '[upstreams.a]\naddrs = ["%s"]\n[upstreams.w]\naddrs = ["%s"]\n'
                '[upstreams.d]\naddrs = ["%s"]\n' % (port, a.addr, w.addr, d.addr))
        _, proc = start(start_proc, tmp_path, text, port)
        # The backends terminate TLS: their certificates reach the client.
        assert hello_through(port, "a.test", pki) == ("a.test", "A")
        assert hello_through(port, "A.Test", pki) == ("a.test", "A")
        assert hello_through(port, "x.wild.test", pki) == ("*.wild.test", "W")
        assert hello_through(port, "deep.x.wild.test", pki) == ("*.wild.test", "W")
        assert hello_through(port, "other.test", pki) == ("default.test", "D")
        assert hello_through(port, None, pki) == ("default.test", "D")
        lines = wait_lines(proc, 6, needle=" 200")
        assert "a.test %s 200" % a.addr in lines and "- %s 200" % d.addr in lines, lines
        # Not TLS: closed, no backend sees it.
        before = a.connections + w.connections + d.connections
        c = socket.create_connection(("127.0.0.1", port), timeout=20)
        c.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        assert T.closed_without_data(c)
        c.close()
        assert a.connections + w.connections + d.connections == before
        assert "not a TLS ClientHello" in proc.stderr()
    finally:
        for b in (a, w, d):
            b.close()


def test_passthrough_without_a_default_closes_unknown_names(pki, start_proc, tmp_path):
    a = tls_named(pki, "a", "A")
    try:
        port = free_port()
        text = ('[servers.p]\naddr = "127.0.0.1:%d"\nprotocol = "tls_passthrough"\n'
                'access_log = "{sni} {status} {termination}"\n'
                'sni_routes = { "a.test" = "a" }\n[upstreams.a]\naddrs = ["%s"]\n'
                % (port, a.addr))
        _, proc = start(start_proc, tmp_path, text, port)
        with pytest.raises((ssl.SSLError, OSError)):
            hello_through(port, "b.test", pki)
        assert "b.test 503 PR" in wait_lines(proc, 1, needle="503"), proc.stdout()
        # A ClientHello sent a byte at a time still gets through.
        raw = T.client_hello("a.test")
        c = socket.create_connection(("127.0.0.1", port), timeout=20)
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(0, len(raw), 7):
            c.sendall(raw[i:i + 7])
            time.sleep(0.002)
        assert c.recv(5)[:1] == b"\x16"  # the backend's ServerHello
        c.close()
        # Half a ClientHello, then the FIN: the rest can never come, so it
        # is dropped at once (the timeout is 10 s and says otherwise).
        c = socket.create_connection(("127.0.0.1", port), timeout=20)
        c.sendall(raw[:len(raw) // 2])
        c.shutdown(socket.SHUT_WR)
        assert T.closed_without_data(c)
        c.close()
        assert wait_log(proc, "closed before a whole ClientHello"), proc.stderr()
        assert "no ClientHello within the timeout" not in proc.stderr()
    finally:
        a.close()


def test_an_https_server_passes_some_names_and_terminates_the_rest(pki, tcp, start_proc,
                                                                    tmp_path):
    import backends as B
    p = tls_named(pki, "b", "P")
    web = B.Backend(B.fixed(b"terminated by weir\n"))
    try:
        port = free_port()
        text = (cert_section(pki, "a") +
                '[servers.web]\naddr = "127.0.0.1:%d"\nlocations = ["l"]\ncertificates = ["a"]\n'
                'access_log = "main"\ntls_passthrough = { "b.test" = "p" }\n'
                '[locations.l]\nupstream = "web"\n[upstreams.web]\naddrs = ["%s"]\n'
                '[upstreams.p]\naddrs = ["%s"]\n' % (port, web.addr, p.addr))
        _, proc = start(start_proc, tmp_path, text, port)
        assert hello_through(port, "b.test", pki) == ("b.test", "P")
        # a.test: weir's own certificate, and the HTTP location.
        ctx = TL.client_context(pki)
        s = TL.tls_connect(port, ctx, server_hostname="a.test")
        assert TL.subject_cn(s.getpeercert()) == "a.test"
        s.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        assert T.read_all(s).endswith(b"terminated by weir\n")
        s.close()
        # The connection handed over keeps its client's address.
        assert web.last().headers.get("x-real-ip") == "127.0.0.1", web.last().headers
        # Plain HTTP on the TLS port: weir's HTTPS side answers it, as
        # without passthrough.
        c = socket.create_connection(("127.0.0.1", port), timeout=20)
        c.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        got = T.read_all(c)
        c.close()
        assert got.startswith(b"HTTP/1.1 400"), got
        assert "passthrough=b.test" in "\n".join(wait_lines(proc, 1, needle="passthrough="))
    finally:
        p.close()
        web.close()


@pytest.mark.parametrize("body, message", [
    ('protocol = "tls_passthrough"\n', "needs 'sni_routes' or 'upstream'"),
    ('protocol = "tls_passthrough"\nupstream = "u"\ncertificates = ["a"]\n',
     "does not terminate TLS"),
    ('protocol = "tls_passthrough"\nsni_routes = { "a b" = "u" }\n', "must name a server"),
    ('protocol = "tls_passthrough"\nsni_routes = { "a.test" = "nope" }\n',
     "refers to undefined upstream 'nope'"),
    ('protocol = "tcp"\nupstream = "u"\nsni_routes = { "a.test" = "u" }\n',
     "'sni_routes' in [servers.t] is for protocol = \"tls_passthrough\""),
    ('locations = ["l"]\ntls_passthrough = { "a.test" = "u" }\n', "needs 'certificates'"),
])
def test_passthrough_config_errors(tmp_path, body, message):
    require_binary("weir")
    path = tmp_path / "bad.toml"
    path.write_text('[servers.t]\naddr = "127.0.0.1:1"\n' + body +
                    '[locations.l]\nupstream = "u"\n[upstreams.u]\naddrs = ["127.0.0.1:2"]\n')
    out = subprocess.run([binary("weir"), "-t", "-c", str(path)], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode != 0 and message in out.stderr, out.stderr
