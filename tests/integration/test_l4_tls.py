"""TLS on protocol = "tcp" servers (issue 18): terminated on the listener
(certificates as for HTTPS servers, chosen by SNI; the backend gets the
plain bytes), originated to a TLS upstream, checked with openssl s_client
and Python's ssl; a client that speaks no TLS never reaches a backend.
"""
import os
import shutil
import socket
import subprocess
import threading

import pytest

import tcputil as T
import tlsutil as TL
from conftest import binary, free_port, require_binary
from test_l4 import start, wait_lines
from test_tls import cert_section, pki  # noqa: F401 (the session PKI fixture)


@pytest.fixture
def tcp():
    made = []

    def make(handler=T.echo, name="tcp"):
        s = T.TcpServer(handler, name=name)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


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
    got = bytearray()

    def reader():
        while len(got) < len(data):
            d = s.recv(1 << 16)
            if not d:
                break
            got.extend(d)

    t = threading.Thread(target=reader)
    t.start()
    s.sendall(data)
    t.join(60)
    s.close()
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
