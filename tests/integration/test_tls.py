"""TLS in the weir program: HTTPS servers (certificates chosen by SNI,
versions, session resumption, client certificates, bad handshakes,
handshake timeouts, reloads), the plain-to-HTTPS redirect, TLS to
upstreams (verification, SNI, connection reuse, client certificates) and
the configuration errors of all of it.

Every key and certificate is made for the run by tlsutil.PKI with the
openssl command line, in a temporary directory; nothing secret is in the
repository.
"""
import hashlib
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time

import pytest

import backends as B
import tlsutil as T
from conftest import binary, free_port, require_binary, wait_for, wait_port


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    return T.PKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_backend(pki):
    """Factory: tls_backend(handler=None, cert="localhost", client_ca=None)
    -> tlsutil.TLSBackend serving the PKI's NAME.crt/NAME.key."""
    made = []

    def make(handler=None, cert="localhost", client_ca=None, **kw):
        b = T.TLSBackend(handler, cert=pki.path(cert + ".crt"), key=pki.path(cert + ".key"),
                         client_ca=client_ca, **kw)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()
    for b in made:
        assert not b.errors, "backend handler errors: %r" % b.errors


# ---------------------------------------------------------------------------
# Configuration text


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[%s]" % ", ".join(toml_value(x) for x in v)
    return '"%s"' % v


def section(header, **items):
    return "[%s]\n%s" % (header, "".join("%s = %s\n" % (k, toml_value(v))
                                         for k, v in items.items() if v is not None))


def cert_section(pki, name, file=None, **opts):
    """[certificates.NAME] for the PKI files FILE.crt/FILE.key (FILE = name)."""
    file = file or name
    return section("certificates." + name, cert=pki.path(file + ".crt"),
                   key=pki.path(file + ".key"), **opts)


def server_section(port, name="web", locations=("all",), **opts):
    return section("servers." + name, addr="127.0.0.1:%d" % port, locations=list(locations),
                   **opts)


def location_section(name="all", upstream="u"):
    return section("locations." + name, upstream=upstream)


def upstream_section(addrs, name="u", **opts):
    if isinstance(addrs, (str, B.Backend)):
        addrs = [addrs]
    return section("upstreams." + name,
                   addrs=[a if isinstance(a, str) else a.addr for a in addrs], **opts)


@pytest.fixture
def proxy(tmp_path, start_proc):
    """proxy(text, port, threads=1) -> Proc running `weir -c` on text."""
    count = [0]

    def start(text, port, threads=1, wait=True):
        require_binary("weir")
        count[0] += 1
        path = tmp_path / ("weir-%d.toml" % count[0])
        path.write_text(text)
        p = start_proc([binary("weir"), "-c", str(path), "--threads", str(threads)], port,
                       "weir", wait=wait)
        p.config_path = path
        return p

    return start


def https_site(pki, proxy, backend_addr, certs=("a",), threads=1, server=None, extra="",
               cert_opts=None):
    """A TLS server with certificates `certs` (PKI names) in front of one
    plain upstream; returns (Proc, port)."""
    port = free_port()
    cert_opts = cert_opts or {}
    text = "".join(cert_section(pki, c, **cert_opts.get(c, {})) for c in certs)
    text += server_section(port, certificates=list(certs), **(server or {}))
    text += location_section() + upstream_section(backend_addr) + extra
    return proxy(text, port, threads=threads), port


def wait_log(proc, text, count=1, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.stderr().count(text) >= count:
            return True
        time.sleep(0.02)
    return False


def wait_new_log(proc, since, pattern, timeout=10.0):
    """The first line of stderr after offset `since` matching the regex
    (case-insensitive), or None."""
    rx = re.compile(pattern, re.I)
    deadline = time.monotonic() + timeout
    while True:
        for line in proc.stderr()[since:].splitlines():
            if rx.search(line):
                return line
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)


def curl(*args, timeout=30):
    if shutil.which("curl") is None:
        pytest.skip("curl not installed")
    argv = ["curl", "-sS", "--http1.1", "--max-time", "20"] + [str(a) for a in args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def refused_or_failed(fn):
    """Runs fn() (a TLS exchange); returns the exception if the handshake or
    the first read failed, None if it got through."""
    try:
        fn()
    except (ssl.SSLError, OSError, B.PeerClosed, ValueError, IndexError) as e:
        return e
    return None


# ---------------------------------------------------------------------------
# 1. Basic HTTPS


def test_https_proxies_to_a_plain_backend(pki, backend, proxy):
    b = backend(B.fixed(b"hello tls\n"))
    w, port = https_site(pki, proxy, b)
    # curl, verifying the chain and the name.
    r = curl("--cacert", pki.path("ca.crt"), "--resolve", "a.test:%d:127.0.0.1" % port,
             "https://a.test:%d/first?x=1" % port)
    assert r.returncode == 0 and r.stdout == "hello tls\n", r.stderr + w.describe()
    assert b.wait_requests(1)
    req = b.last()
    assert req.path == "/first?x=1"
    assert req.headers.get("X-Forwarded-Proto") == "https", req.headers
    assert req.headers.get("Host") == "a.test:%d" % port
    # curl -k (no verification) works as well.
    r = curl("-k", "https://127.0.0.1:%d/k" % port)
    assert r.returncode == 0 and r.stdout == "hello tls\n", r.stderr


def test_https_keep_alive_on_one_connection(pki, backend, proxy):
    b = backend(B.fixed(b"ka\n"))
    w, port = https_site(pki, proxy, b)
    s = T.tls_connect(port, T.client_context(pki), "a.test")
    try:
        assert s.selected_alpn_protocol() == "http/1.1"
        for i in range(5):
            r = T.https_get(s, "/ka%d" % i, host="a.test")
            assert r.status == 200 and r.body == b"ka\n", r
            assert "close" not in r.headers.get("Connection", "").lower()
        # Two pipelined requests in one write.
        s.sendall(b"GET /p1 HTTP/1.1\r\nHost: a.test\r\n\r\n"
                  b"GET /p2 HTTP/1.1\r\nHost: a.test\r\n\r\n")
        rd = s._weir_reader
        assert B.read_response(rd).status == 200
        assert B.read_response(rd).status == 200
        r = T.https_get(s, "/last", host="a.test", close=True)
        assert r.status == 200
    finally:
        s.close()
    assert b.wait_requests(8)
    assert [q.path for q in b.requests] == ["/ka0", "/ka1", "/ka2", "/ka3", "/ka4", "/p1",
                                            "/p2", "/last"]
    assert all(q.headers.get("X-Forwarded-Proto") == "https" for q in b.requests)


def test_curl_reuses_the_tls_connection(pki, backend, proxy):
    b = backend(B.fixed(b"c\n"))
    w, port = https_site(pki, proxy, b)
    urls = ["https://a.test:%d/u%d" % (port, i) for i in range(3)]
    r = curl("--cacert", pki.path("ca.crt"), "--resolve", "a.test:%d:127.0.0.1" % port,
             "-w", "[%{http_code} %{num_connects}]\n", *urls)
    assert r.returncode == 0, r.stderr
    got = re.findall(r"\[(\d+) (\d+)\]", r.stdout)
    assert got == [("200", "1"), ("200", "0"), ("200", "0")], r.stdout


def test_large_bodies_both_ways_over_tls(pki, backend, proxy):
    n = 6 << 20
    big = backend(B.huge(n), store_body=False)
    w, port = https_site(pki, proxy, big)
    s = T.tls_connect(port, T.client_context(pki), "a.test")
    try:
        s.sendall(b"GET /big HTTP/1.1\r\nHost: a.test\r\n\r\n")
        rd = B.Reader(s)
        r = B.read_response(rd)
        assert r.status == 200 and len(r.body) == n
        assert hashlib.sha256(r.body).digest() == hashlib.sha256(B.PATTERN * 6).digest()
        # An upload of 3 MiB on the same connection.
        body = os.urandom(3 << 20)
        s.sendall(b"POST /up HTTP/1.1\r\nHost: a.test\r\nContent-Length: %d\r\n\r\n"
                  % len(body) + body)
        r = B.read_response(rd)
        assert r.status == 200
    finally:
        s.close()
    assert big.wait_requests(2)
    assert big.requests[1].body_len == len(body)


def test_echo_upload_over_tls(pki, backend, proxy):
    b = backend(B.echo())
    w, port = https_site(pki, proxy, b)
    s = T.tls_connect(port, T.client_context(pki), "a.test")
    try:
        body = os.urandom(1 << 20)
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: a.test\r\nContent-Length: %d\r\n"
                  b"Connection: close\r\n\r\n" % len(body) + body)
        r = B.read_response(B.Reader(s))
        assert r.status == 200 and r.body == body
    finally:
        s.close()


def test_connection_close_ends_with_close_notify(pki, backend, proxy):
    """weir closes a TLS connection with a close_notify alert, so the client
    can tell a complete read-to-close body from a truncated one."""
    b = backend(B.fixed(b"bye\n"))
    w, port = https_site(pki, proxy, b)
    raw = socket.create_connection(("127.0.0.1", port), timeout=B.IO_TIMEOUT)
    s = T.client_context(pki).wrap_socket(raw, server_hostname="a.test",
                                          suppress_ragged_eofs=False)
    try:
        s.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ssl.SSLZeroReturnError:
                break
            if not chunk:
                break
            data += chunk
        assert data.endswith(b"bye\n"), data
    finally:
        s.close()


# ---------------------------------------------------------------------------
# 2. Certificate selection by SNI


SNI_CERTS = ("a", "wild", "b", "default", "cnonly")


def test_sni_selects_the_certificate(pki, backend, proxy):
    b = backend(B.fixed(b"sni\n"))
    w, port = https_site(pki, proxy, b, certs=SNI_CERTS,
                         cert_opts={"default": {"default": True}})
    # curl verifies chain and name, so success means the right certificate.
    for name in ("a.test", "b.test", "x.wild.test", "default.test"):
        r = curl("--cacert", pki.path("ca.crt"), "--resolve", "%s:%d:127.0.0.1" % (name, port),
                 "https://%s:%d/" % (name, port))
        assert r.returncode == 0 and r.stdout == "sni\n", (name, r.stderr)
    ctx = T.client_context(pki)
    cases = [
        ("a.test", "a.test"),
        ("A.Test", "a.test"),  # names compare case-insensitively
        ("b.test", "b.test"),
        ("x.wild.test", "*.wild.test"),
        ("other.wild.test", "*.wild.test"),
        ("wild.test", "default.test"),  # a wildcard needs one label
        ("a.b.wild.test", "default.test"),  # ... and only one
        ("cn-only.test", "cn-only.test"),  # no SAN: the CN names the cert
        ("unknown.test", "default.test"),
        (None, "default.test"),  # no SNI at all
    ]
    wrong = []
    for sni, want in cases:
        got = T.peer_cn(port, ctx, sni)
        if got != want:
            wrong.append("SNI %r -> %r, want %r" % (sni, got, want))
    assert not wrong, "\n".join(wrong)


def test_first_certificate_is_the_default(pki, backend, proxy):
    b = backend(B.fixed(b"x\n"))
    w, port = https_site(pki, proxy, b, certs=("b", "a", "wild"))
    ctx = T.client_context(pki)
    assert T.peer_cn(port, ctx, None) == "b.test"
    assert T.peer_cn(port, ctx, "nobody.test") == "b.test"
    assert T.peer_cn(port, ctx, "a.test") == "a.test"


def test_explicit_domains_replace_the_cert_names(pki, backend, proxy):
    b = backend(B.fixed(b"x\n"))
    w, port = https_site(pki, proxy, b, certs=("default", "a"),
                         cert_opts={"a": {"domains": ["alias.test", "*.alias.test"]}})
    ctx = T.client_context(pki)
    assert T.peer_cn(port, ctx, "alias.test") == "a.test"
    assert T.peer_cn(port, ctx, "x.alias.test") == "a.test"
    # The cert's own SAN is not served any more: domains replaces it.
    assert T.peer_cn(port, ctx, "a.test") == "default.test"


def test_certificate_chain_is_sent(pki, backend, proxy):
    """A leaf signed by an intermediate: with `chain` or with the chain after
    the leaf in the cert file, a client trusting only the root verifies."""
    b = backend(B.fixed(b"chain\n"))
    port = free_port()
    text = (cert_section(pki, "c", chain=pki.path("inter.crt"))
            + section("certificates.full", cert=pki.path("c-fullchain.pem"),
                      key=pki.path("c.key"), domains=["full.test"])
            + server_section(port, certificates=["c", "full"])
            + location_section() + upstream_section(b))
    proxy(text, port)
    for name in ("c.test", "full.test"):
        ctx = T.client_context(pki)
        s = T.tls_connect(port, ctx, name)  # raises if the chain is incomplete
        try:
            assert T.subject_cn(s.getpeercert()) == "c.test"
            r = T.https_get(s, "/", host=name, close=True)
            assert r.status == 200 and r.body == b"chain\n"
        finally:
            s.close()


# ---------------------------------------------------------------------------
# 3. Versions


def test_tls13_minimum_refuses_tls12(pki, backend, proxy):
    b = backend(B.fixed(b"v\n"))
    w, port = https_site(pki, proxy, b, server={"tls_min_version": "1.3"})
    old = T.client_context(pki, max_version=ssl.TLSVersion.TLSv1_2)
    with pytest.raises(ssl.SSLError):
        T.tls_connect(port, old, "a.test").close()
    s = T.tls_connect(port, T.client_context(pki), "a.test")
    try:
        assert s.version() == "TLSv1.3"
        assert T.https_get(s, close=True).status == 200
    finally:
        s.close()
    assert b.request_count() == 1


def test_default_accepts_tls12_and_tls13(pki, backend, proxy):
    b = backend(B.fixed(b"v\n"))
    w, port = https_site(pki, proxy, b)
    for ver, name in ((ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")):
        ctx = T.client_context(pki, min_version=ver, max_version=ver)
        s = T.tls_connect(port, ctx, "a.test")
        try:
            assert s.version() == name
            r = T.https_get(s, close=True)
            assert r.status == 200 and r.body == b"v\n"
        finally:
            s.close()


def test_explicit_tls12_minimum(pki, backend, proxy):
    b = backend(B.fixed(b"v\n"))
    w, port = https_site(pki, proxy, b, server={"tls_min_version": "1.2"})
    ctx = T.client_context(pki, max_version=ssl.TLSVersion.TLSv1_2)
    s = T.tls_connect(port, ctx, "a.test")
    try:
        assert s.version() == "TLSv1.2"
    finally:
        s.close()


# ---------------------------------------------------------------------------
# 4. Session resumption




def resume(port, ctx, rounds=6):
    """Connects, reads a response (so TLS 1.3 tickets arrive), then
    reconnects `rounds` times with the session; returns the list of
    session_reused flags and the first session."""
    s = T.tls_connect(port, ctx, "a.test")
    try:
        assert not s.session_reused
        assert T.https_get(s, host="a.test").status == 200
        sess = s.session
    finally:
        s.close()
    reused = []
    for _ in range(rounds):
        s = T.tls_connect(port, ctx, "a.test", session=sess)
        try:
            assert T.https_get(s, host="a.test").status == 200
            reused.append(s.session_reused)
            if s.session is not None:
                sess = s.session
        finally:
            s.close()
    return reused, sess


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_session_resumption_with_tickets(pki, backend, proxy, version):
    """Every reconnect resumes, whichever of weir's two threads accepts it
    (the ticket keys are shared between workers)."""
    b = backend(B.fixed(b"r\n"))
    w, port = https_site(pki, proxy, b, threads=2)
    ver = ssl.TLSVersion.TLSv1_2 if version == "1.2" else ssl.TLSVersion.TLSv1_3
    ctx = T.client_context(pki, min_version=ver, max_version=ver)
    reused, sess = resume(port, ctx)
    assert all(reused), reused
    assert sess.has_ticket


def test_session_tickets_off(pki, backend, proxy):
    """tls_session_tickets = false: no TLS 1.2 ticket is issued, and
    resumption goes through the (shared) session cache instead."""
    b = backend(B.fixed(b"r\n"))
    w, port = https_site(pki, proxy, b, threads=2, server={"tls_session_tickets": False})
    ctx = T.client_context(pki, max_version=ssl.TLSVersion.TLSv1_2)
    reused, sess = resume(port, ctx, rounds=4)
    assert not sess.has_ticket
    assert all(reused), reused
    assert b.request_count() == 5


# ---------------------------------------------------------------------------
# 5. Client certificates (mTLS)


def mtls_site(pki, backend, proxy, verify=None):
    b = backend(B.fixed(b"mtls\n"))
    w, port = https_site(pki, proxy, b, server={"client_ca": pki.path("client-ca.crt"),
                                                "client_verify": verify})
    return b, w, port


def one_request(port, ctx):
    s = T.tls_connect(port, ctx, "a.test", timeout=10)
    try:
        r = T.https_get(s, "/", host="a.test", close=True)
        if r.status != 200:
            raise ValueError("status %d" % r.status)
        return r
    finally:
        s.close()


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_client_certificate_required(pki, backend, proxy, version):
    b, w, port = mtls_site(pki, backend, proxy)
    ver = ssl.TLSVersion.TLSv1_2 if version == "1.2" else ssl.TLSVersion.TLSv1_3
    good = T.client_context(pki, min_version=ver, max_version=ver,
                            cert=(pki.path("client.crt"), pki.path("client.key")))
    r = one_request(port, good)
    assert r.body == b"mtls\n"
    none = T.client_context(pki, min_version=ver, max_version=ver)
    e = refused_or_failed(lambda: one_request(port, none))
    assert e is not None, "a client without a certificate got through"
    rogue = T.client_context(pki, min_version=ver, max_version=ver,
                             cert=(pki.path("rogue.crt"), pki.path("rogue.key")))
    e = refused_or_failed(lambda: one_request(port, rogue))
    assert e is not None, "a self-signed client certificate got through"
    # A certificate from the server CA (not the client CA) is refused too.
    other = T.client_context(pki, min_version=ver, max_version=ver,
                             cert=(pki.path("b.crt"), pki.path("b.key")))
    e = refused_or_failed(lambda: one_request(port, other))
    assert e is not None, "a certificate from another CA got through"
    assert b.request_count() == 1
    # weir still serves good clients afterwards.
    assert one_request(port, good).status == 200


def test_client_certificate_optional(pki, backend, proxy):
    b, w, port = mtls_site(pki, backend, proxy, verify="optional")
    assert one_request(port, T.client_context(pki)).status == 200
    good = T.client_context(pki, cert=(pki.path("client.crt"), pki.path("client.key")))
    assert one_request(port, good).status == 200
    assert b.request_count() == 2


# ---------------------------------------------------------------------------
# 6. Redirect to HTTPS


def test_plain_server_redirects_to_https(backend, proxy):
    b = backend(B.fixed(b"never\n"))
    port, port443 = free_port(), free_port()
    text = (server_section(port, redirect_https=True, https_port=8443)
            + server_section(port443, name="std", redirect_https=True, https_port=443)
            + location_section() + upstream_section(b))
    proxy(text, port)
    assert wait_port(port443)
    cases = [
        (port, "example.test", "/path?q=1", "https://example.test:8443/path?q=1"),
        (port, "example.test:8080", "/a/b", "https://example.test:8443/a/b"),
        (port, "example.test", "/", "https://example.test:8443/"),
        (port443, "example.test:80", "/x?y=z&w", "https://example.test/x?y=z&w"),
        (port443, "example.test", "/", "https://example.test/"),
    ]
    wrong = []
    for p, host, target, want in cases:
        for method in ("GET", "POST"):
            raw = ("%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: 0\r\nConnection: close"
                   "\r\n\r\n" % (method, target, host)).encode()
            r = B.request(p, raw, method)
            if r.status != 301 or r.headers.get("Location") != want:
                wrong.append("%s %s %s -> %d %r, want 301 %r"
                             % (method, host, target, r.status, r.headers.get("Location"),
                                want))
    assert not wrong, "\n".join(wrong)
    assert b.request_count() == 0


# ---------------------------------------------------------------------------
# 7. Bad handshakes


def test_bad_handshakes_are_logged_and_harmless(pki, backend, proxy):
    b = backend(B.fixed(b"still\n"))
    port, aport = free_port(), free_port()
    text = (section("admin", addr="127.0.0.1:%d" % aport, token="t")
            + cert_section(pki, "a")
            + server_section(port, certificates=["a"], tls_handshake_timeout="1s")
            + location_section() + upstream_section(b))
    w = proxy(text, port, threads=2)
    assert wait_port(aport, w.proc)
    before = scrape(aport)
    hello = T.client_hello("a.test")
    assert hello[0] == 0x16 and len(hello) > 100
    problems = []

    def expect_log(what, pattern, since):
        line = wait_new_log(w, since, pattern)
        if line is None:
            problems.append("no log line matching %r after %s" % (pattern, what))

    # Garbage.
    since = len(w.stderr())
    s = B.connect(port, timeout=10)
    s.sendall(b"\x00\x01\x02garbage garbage garbage\r\n\r\n" * 10)
    assert B.closed_after(s, 10), "garbage: the connection stays open"
    s.close()
    expect_log("garbage", r"handshake.*(wrong version number|unknown protocol|packet length)",
               since)

    # Plain HTTP to the TLS port: OpenSSL's reason is "http request".
    since = len(w.stderr())
    s = B.connect(port, timeout=10)
    s.sendall(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
    assert B.closed_after(s, 10), "plain HTTP: the connection stays open"
    s.close()
    expect_log("plain HTTP", r"handshake.*http request", since)

    # Half a ClientHello, then close.
    s = B.connect(port, timeout=10)
    s.sendall(hello[: len(hello) // 2])
    time.sleep(0.1)
    s.close()

    # Half a ClientHello, then silence: the 1 s handshake timeout closes it.
    since = len(w.stderr())
    s = B.connect(port, timeout=10)
    s.sendall(hello[: len(hello) // 2])
    assert B.closed_after(s, 15), "half a ClientHello: not closed by the handshake timeout"
    s.close()
    expect_log("a handshake timeout", r"handshake.*(timed out|timeout)", since)

    # A whole ClientHello, then silence (weir has sent its flight and waits).
    s = B.connect(port, timeout=10)
    s.sendall(hello)
    assert B.closed_after(s, 15), "ClientHello then silence: not closed"
    s.close()

    # A TCP connection that never sends anything is closed as well.
    s = B.connect(port, timeout=10)
    assert B.closed_after(s, 15), "silent connection: not closed by the handshake timeout"
    s.close()

    # weir still serves.
    ctx = T.client_context(pki)
    for _ in range(3):
        s = T.tls_connect(port, ctx, "a.test")
        try:
            r = T.https_get(s, close=True)
            assert r.status == 200 and r.body == b"still\n"
        finally:
            s.close()
    assert not problems, "\n".join(problems) + "\n" + w.stderr()[-3000:]
    # Metrics count both outcomes.
    deadline = time.monotonic() + 10
    while True:
        after = scrape(aport)
        failed = (metric(after, HANDSHAKES, side="client", result="failed")
                  - metric(before, HANDSHAKES, side="client", result="failed"))
        ok = (metric(after, HANDSHAKES, side="client", result="ok")
              - metric(before, HANDSHAKES, side="client", result="ok"))
        if (failed >= 4 and ok >= 3) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert failed >= 4 and ok >= 3, (failed, ok, [ln for ln in after.splitlines()
                                                  if "tls" in ln])
    assert b.request_count() == 3


HANDSHAKES = "weir_tls_handshakes_total"


def scrape(aport, token="t"):
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", aport, timeout=20)
    try:
        c.request("GET", "/metrics", headers={"Authorization": "Bearer " + token})
        r = c.getresponse()
        assert r.status == 200
        return r.read().decode()
    finally:
        c.close()


def metric(text, name, **labels):
    total = 0.0
    for line in text.splitlines():
        m = re.match(r'([a-z_]+)(?:\{(.*)\})? (\S+)$', line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total


def test_failed_handshake_log_names_the_reason(pki, backend, proxy):
    """A client that rejects weir's certificate (unknown CA) makes weir log
    the alert it received."""
    b = backend(B.fixed(b"x\n"))
    w, port = https_site(pki, proxy, b)
    since = len(w.stderr())
    ctx = T.client_context(pki, cafile=pki.path("other-ca.crt"),
                           max_version=ssl.TLSVersion.TLSv1_2)
    with pytest.raises(ssl.SSLCertVerificationError):
        T.tls_connect(port, ctx, "a.test").close()
    line = wait_new_log(w, since, r"handshake.*(unknown ca|certificate unknown|bad certificate)")
    assert line is not None, w.stderr()
    assert one_request(port, T.client_context(pki)).status == 200


# ---------------------------------------------------------------------------
# 8. TLS to upstreams


def plain_front(pki, proxy, upstreams, extra="", threads=1):
    """A plain HTTP server in front of upstream u (TOML text `upstreams`)."""
    port = free_port()
    text = server_section(port) + location_section() + upstreams + extra
    return proxy(text, port, threads=threads), port


def get_status(port, path="/"):
    return B.get(port, path).status


def test_upstream_tls_verified_with_sni(pki, tls_backend, proxy):
    tb = tls_backend(B.fixed(b"secure\n"))
    w, port = plain_front(pki, proxy, upstream_section(
        tb, tls=True, sni="localhost", ca_file=pki.path("ca.crt")))
    r = B.get(port, "/s?x=1")
    assert r.status == 200 and r.body == b"secure\n", w.stderr()
    assert tb.sni == ["localhost"]
    assert tb.last().path == "/s?x=1"
    assert tb.last().headers.get("X-Forwarded-Proto") == "http"


def test_upstream_connects_and_handshakes_are_timed(pki, tls_backend, proxy):
    """weir_upstream_connect_seconds counts each new upstream connection
    once, and weir_tls_handshake_seconds{side="upstream"} each handshake
    with the backend: six requests on one kept-alive upstream connection
    are one of each; after the backend closes it, the next request's new
    connection is one more of each."""
    import http.client

    def handler(conn, req):
        close = req.path == "/close"
        hs = [("Content-Length", "3")] + ([("Connection", "close")] if close else [])
        conn.send(B.response_head(200, hs) + b"ok\n")
        return "close" if close else None
    tb = tls_backend(handler)
    port = free_port()
    text = (server_section(port, prometheus_metrics="/metrics") + location_section() +
            upstream_section(tb, tls=True, sni="localhost", ca_file=pki.path("ca.crt")))
    w = proxy(text, port)

    def scraped():
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", "/metrics")
        return c.getresponse().read().decode()

    def counts():
        t = scraped()
        return (metric(t, "weir_upstream_connect_seconds_count", upstream="u"),
                metric(t, "weir_upstream_connect_seconds_bucket", upstream="u", le="+Inf"),
                metric(t, "weir_tls_handshake_seconds_count", side="upstream"),
                metric(t, HANDSHAKES, side="upstream", result="ok"))
    for _ in range(6):
        assert B.get(port, "/s").status == 200, w.stderr()
    assert wait_for(lambda: counts() == (1, 1, 1, 1), 10), (counts(), scraped())
    assert len(tb.sni) == 1  # one handshake at the backend too
    t = scraped()
    assert 0 <= metric(t, "weir_upstream_connect_seconds_sum", upstream="u") < 5, t
    # The loop's clock, read once a round: a handshake within a round takes 0.
    assert 0 <= metric(t, "weir_tls_handshake_seconds_sum", side="upstream") < 5, t
    assert B.get(port, "/close").status == 200
    assert B.get(port, "/after").status == 200
    assert wait_for(lambda: counts() == (2, 2, 2, 2), 10), (counts(), scraped())
    assert len(tb.sni) == 2


def test_upstream_tls_verifies_an_ip_without_sni(pki, tls_backend, proxy):
    tb = tls_backend(B.fixed(b"by ip\n"))
    w, port = plain_front(pki, proxy, upstream_section(tb, tls=True,
                                                       ca_file=pki.path("ca.crt")))
    r = B.get(port)
    assert r.status == 200 and r.body == b"by ip\n", w.stderr()
    assert tb.sni == [None]  # no SNI for an IP address


@pytest.mark.parametrize("case", ["expired", "wrong_ca", "wrong_name", "system_cas"])
def test_upstream_tls_verification_failures_are_502(pki, tls_backend, proxy, case):
    cert = {"expired": "expired", "wrong_ca": "other-localhost"}.get(case, "localhost")
    tb = tls_backend(B.fixed(b"must not\n"), cert=cert)
    opts = dict(tls=True, sni="localhost", ca_file=pki.path("ca.crt"), max_fails=0)
    if case == "wrong_name":
        opts["sni"] = "wrong.test"
    if case == "system_cas":
        del opts["ca_file"]
    w, port = plain_front(pki, proxy, upstream_section(tb, **opts))
    since = len(w.stderr())
    r = B.get(port)
    assert r.status == 502, r
    assert tb.request_count() == 0
    reason = {"expired": "certificate has expired", "wrong_name": "hostname mismatch"}.get(
        case, "unable to get local issuer certificate")
    line = wait_new_log(w, since, r"upstream.*certificate verify failed.*" + reason)
    assert line is not None, w.stderr()
    # And again (nothing cached wrongly).
    assert get_status(port) == 502


def test_upstream_tls_without_verification(pki, tls_backend, proxy):
    tb = tls_backend(B.fixed(b"expired ok\n"), cert="expired")
    w, port = plain_front(pki, proxy, upstream_section(tb, tls=True, sni="localhost",
                                                       verify_cert=False))
    r = B.get(port)
    assert r.status == 200 and r.body == b"expired ok\n", w.stderr()
    # Without verification the other CA's certificate is fine too.
    tb2 = tls_backend(B.fixed(b"other ok\n"), cert="other-localhost")
    w2, port2 = plain_front(pki, proxy, upstream_section(tb2, tls=True, verify_cert=False))
    r = B.get(port2)
    assert r.status == 200 and r.body == b"other ok\n", w2.stderr()


def test_upstream_tls_connections_are_reused(pki, tls_backend, proxy):
    tb = tls_backend(B.fixed(b"reuse\n"))
    w, port = plain_front(pki, proxy, upstream_section(
        tb, tls=True, sni="localhost", ca_file=pki.path("ca.crt")))
    for i in range(8):
        r = B.get(port, "/r%d" % i)
        assert r.status == 200 and r.body == b"reuse\n"
    assert tb.wait_requests(8)
    assert tb.connections <= 2, "8 sequential requests used %d TLS connections" % tb.connections
    assert tb.handshakes == tb.connections
    # Requests with bodies (both ways) on reused connections.
    for i in range(3):
        body = os.urandom(200000)
        raw = (b"POST /b%d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close"
               b"\r\n\r\n" % (i, len(body))) + body
        assert B.request(port, raw, "POST").status == 200
    assert tb.wait_requests(11)
    assert tb.requests[-1].body_len == 200000
    assert tb.connections <= 2


def test_upstream_tls_sessions_are_resumed(pki, tls_backend, proxy):
    """Without keep-alive every request is a new TLS connection to the
    backend; weir keeps the backend's session and resumes it."""
    tb = tls_backend(B.fixed(b"again\n"))
    aport = free_port()
    w, port = plain_front(pki, proxy, upstream_section(
        tb, tls=True, sni="localhost", ca_file=pki.path("ca.crt"), keepalive=0),
        extra=section("admin", addr="127.0.0.1:%d" % aport, token="t"))
    assert wait_port(aport, w.proc)
    for i in range(4):
        r = B.get(port, "/s%d" % i)
        assert r.status == 200 and r.body == b"again\n"
    assert tb.wait_requests(4)
    assert tb.handshakes == 4, tb.handshakes
    assert tb.reused[0] is False and all(tb.reused[1:]), tb.reused
    m = scrape(aport)
    assert metric(m, HANDSHAKES, side="upstream", result="ok") == 4, m
    assert metric(m, "weir_tls_resumed_total", side="upstream") == 3, m


def test_upstream_tls_large_response(pki, tls_backend, proxy):
    n = 5 << 20
    tb = tls_backend(B.huge(n), store_body=False)
    w, port = plain_front(pki, proxy, upstream_section(
        tb, tls=True, sni="localhost", ca_file=pki.path("ca.crt")))
    r = B.get(port, "/big")
    assert r.status == 200 and len(r.body) == n
    assert hashlib.sha256(r.body).digest() == hashlib.sha256(B.PATTERN * 5).digest()


def test_upstream_tls_client_certificate(pki, tls_backend, proxy):
    """A backend that requires client certificates: the upstream with
    client_cert gets through, the same backend without one answers 502."""
    tb = tls_backend(B.fixed(b"mutual\n"), client_ca=pki.path("client-ca.crt"))
    port, anon_port = free_port(), free_port()
    text = (cert_section(pki, "clientcert", file="client")
            + server_section(port)
            + server_section(anon_port, name="anon", locations=["anon"])
            + location_section() + location_section("anon", "anon")
            + upstream_section(tb, tls=True, sni="localhost", ca_file=pki.path("ca.crt"),
                               client_cert="clientcert")
            + upstream_section(tb, name="anon", tls=True, sni="localhost",
                               ca_file=pki.path("ca.crt"), max_fails=0))
    w = proxy(text, port)
    assert wait_port(anon_port, w.proc)
    r = B.get(port)
    assert r.status == 200 and r.body == b"mutual\n", w.stderr()
    assert tb.client_cns == ["weir client"]
    r = B.get(anon_port)
    assert r.status == 502, r
    assert tb.request_count() == 1
    assert tb.tls_errors, "the backend saw no failed handshake"
    # The pool keeps the two apart: the client-cert upstream still works.
    assert B.get(port).status == 200


@pytest.mark.parametrize("how", ["fin", "close_notify"])
def test_upstream_tls_backend_closing_idle_connections(pki, tls_backend, proxy, how):
    """The backend closes each connection after its response (without a
    Connection: close), with or without close_notify: weir notices the
    pooled connection is gone and every request still gets a 200."""

    def handler(conn, req):
        B.fixed(b"once\n")(conn, req)
        if how == "close_notify":
            try:
                conn.sock.unwrap()
            except (OSError, ssl.SSLError):
                pass
        return "close"

    tb = tls_backend(handler)
    w, port = plain_front(pki, proxy, upstream_section(
        tb, tls=True, sni="localhost", ca_file=pki.path("ca.crt"), max_fails=0))
    for i in range(5):
        r = B.get(port, "/o%d" % i)
        assert r.status == 200 and r.body == b"once\n", (i, r, w.stderr()[-2000:])
        time.sleep(0.05)  # let the close reach weir's idle pool
    assert tb.request_count() == 5


@pytest.mark.deadline(120)
def test_upstream_tls_under_concurrency(pki, tls_backend, proxy):
    """Many clients on two workers share the pool of TLS connections to
    one backend (connections move between workers with their TLS state)."""
    import threading
    tb = tls_backend(B.fixed(b"conc\n"))
    w, port = plain_front(pki, proxy, upstream_section(
        tb, tls=True, sni="localhost", ca_file=pki.path("ca.crt")), threads=2)
    results = []
    lock = threading.Lock()

    def client(n):
        try:
            s = B.connect(port)
            rd = B.Reader(s)
            try:
                for i in range(10):
                    s.sendall(b"GET /c%d/%d HTTP/1.1\r\nHost: x\r\n\r\n" % (n, i))
                    r = B.read_response(rd)
                    with lock:
                        results.append(r.status if r.body == b"conc\n" else repr(r))
            finally:
                s.close()
        except Exception as e:
            with lock:
                results.append(repr(e))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    bad = [r for r in results if r != 200]
    assert len(results) == 240 and not bad, bad[:5]
    assert tb.connections <= 24 + 2
    assert tb.handshakes == tb.connections


def test_downstream_and_upstream_tls_together(pki, tls_backend, proxy):
    tb = tls_backend(B.fixed(b"both\n"))
    port = free_port()
    text = (cert_section(pki, "a") + server_section(port, certificates=["a"])
            + location_section()
            + upstream_section(tb, tls=True, sni="localhost", ca_file=pki.path("ca.crt")))
    proxy(text, port)
    s = T.tls_connect(port, T.client_context(pki), "a.test")
    try:
        for _ in range(3):
            r = T.https_get(s, host="a.test")
            assert r.status == 200 and r.body == b"both\n"
    finally:
        s.close()
    assert tb.last().headers.get("X-Forwarded-Proto") == "https"


def tunnel_roundtrip(send, recv, size=1 << 20, piece=65536):
    """Pushes size bytes through an upgrade tunnel to upgrade_echo and
    checks they come back upper-cased."""
    data = bytes((97 + i % 26) for i in range(size))
    got = bytearray()
    for i in range(0, size, piece):
        send(data[i:i + piece])
        want = min(size, i + piece)
        while len(got) < want:
            chunk = recv(65536)
            assert chunk, "tunnel closed after %d bytes" % len(got)
            got += chunk
    assert bytes(got) == data.upper()


@pytest.mark.parametrize("sides", ["client", "upstream", "both"])
def test_upgrade_tunnel_over_tls(pki, backend, tls_backend, proxy, sides):
    down, up = sides in ("client", "both"), sides in ("upstream", "both")
    b = tls_backend(T.upgrade_echo()) if up else backend(T.upgrade_echo())
    port = free_port()
    ups = (upstream_section(b, tls=True, sni="localhost", ca_file=pki.path("ca.crt"))
           if up else upstream_section(b))
    text = ((cert_section(pki, "a") + server_section(port, certificates=["a"])) if down
            else server_section(port)) + location_section() + ups
    proxy(text, port)
    s = (T.tls_connect(port, T.client_context(pki), "a.test") if down
         else B.connect(port))
    try:
        s.sendall(b"GET /chat HTTP/1.1\r\nHost: a.test\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\n\r\n")
        rd = B.Reader(s)
        head = rd.read_head()
        assert head[0].startswith(b"HTTP/1.1 101"), head
        assert not rd.buf
        tunnel_roundtrip(s.sendall, s.recv)
    finally:
        s.close()


def test_handshake_and_request_in_tiny_pieces(pki, backend, proxy):
    """Every TLS flight and the request arrive a few bytes at a time."""
    b = backend(B.fixed(b"pieces\n"))
    w, port = https_site(pki, proxy, b)
    for ver in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ctx = T.client_context(pki, min_version=ver, max_version=ver)
        raw, obj, incoming, outgoing = T.trickle_handshake(port, ctx, "a.test")
        try:
            assert T.subject_cn(obj.getpeercert()) == "a.test"
            req = b"GET /tiny HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"
            for i in range(0, len(req), 5):  # one TLS record per 5 bytes
                obj.write(req[i:i + 5])
                T.trickle(raw, outgoing.read(), 3)
            r = B.read_response(B.Reader(T.BioSocket(raw, obj, incoming)))
            assert r.status == 200 and r.body == b"pieces\n"
        finally:
            raw.close()
    assert b.request_count() == 2


@pytest.mark.deadline(120)
def test_many_concurrent_tls_clients(pki, backend, proxy):
    import threading
    b = backend(B.fixed(b"many\n"))
    w, port = https_site(pki, proxy, b, certs=("a", "b"), threads=2)
    results = []
    lock = threading.Lock()

    def client(n):
        name = "a.test" if n % 2 else "b.test"
        ctx = T.client_context(pki, check_hostname=True)
        try:
            for _ in range(3):  # three connections of four requests each
                s = T.tls_connect(port, ctx, name)
                try:
                    for i in range(4):
                        r = T.https_get(s, "/c%d" % n, host=name, close=(i == 3))
                        with lock:
                            results.append(r.status)
                finally:
                    s.close()
        except Exception as e:
            with lock:
                results.append(repr(e))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    bad = [r for r in results if r != 200]
    assert len(results) == 40 * 12 and not bad, bad[:5]


# ---------------------------------------------------------------------------
# 9. Configuration errors


MARK = "# <-"


def check_config(tmp_path, text):
    require_binary("weir")
    path = tmp_path / "bad.toml"
    path.write_text(text)
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0")
    r = subprocess.run([binary("weir"), "-t", "-c", str(path)], capture_output=True, text=True,
                       timeout=30, env=env, stdin=subprocess.DEVNULL)
    assert "Sanitizer" not in r.stderr and "runtime error:" not in r.stderr, r.stderr
    return str(path), r


def marked(text):
    return [i + 1 for i, line in enumerate(text.splitlines()) if MARK in line]


def expect_error(tmp_path, text, fragments):
    """weir -t fails with FILE:LINE: at one of the marked lines, the message
    containing every fragment (case-insensitive)."""
    path, r = check_config(tmp_path, text)
    assert r.returncode != 0, "accepted:\n" + text
    lines = [ln for ln in r.stderr.splitlines()
             if any(ln.startswith("%s:%d: " % (path, n)) for n in marked(text))]
    assert lines, "no error at lines %s:\n%s\n%s" % (marked(text), r.stderr, text)
    # Every key used is a known one: the error is about the value.
    assert "unknown key" not in r.stderr, r.stderr
    for frag in fragments:
        assert any(frag.lower() in ln.lower() for ln in lines), (frag, r.stderr)


def good_config(pki, server_extra="", cert_extra="", upstream_extra="", extra=""):
    return ("[certificates.site]\n"
            'cert = "%s"\nkey = "%s"\n%s'
            "[servers.web]\naddr = \"127.0.0.1:18443\"\nlocations = [\"all\"]\n"
            'certificates = ["site"]\n%s'
            '[locations.all]\nupstream = "u"\n'
            '[upstreams.u]\naddrs = ["127.0.0.1:9"]\n%s%s'
            % (pki.path("a.crt"), pki.path("a.key"), cert_extra, server_extra, upstream_extra,
               extra))


def test_config_good_tls_file_passes(pki, tmp_path):
    text = good_config(
        pki, server_extra='tls_min_version = "1.3"\ntls_session_tickets = false\n'
        'tls_handshake_timeout = "5s"\nclient_ca = "%s"\nclient_verify = "optional"\n'
        % pki.path("client-ca.crt"),
        cert_extra='domains = ["a.test", "*.wild.test"]\ndefault = true\nchain = "%s"\n'
        % pki.path("ca.crt"),
        upstream_extra='tls = true\nsni = "localhost"\nverify_cert = true\nca_file = "%s"\n'
        'client_cert = "cl"\n' % pki.path("ca.crt"),
        extra='[certificates.cl]\ncert = "%s"\nkey = "%s"\n'
        '[servers.plain]\naddr = "127.0.0.1:18080"\nlocations = ["all"]\n'
        'redirect_https = true\nhttps_port = 18443\n'
        % (pki.path("client.crt"), pki.path("client.key")))
    path, r = check_config(tmp_path, text)
    assert r.returncode == 0, r.stderr + text


def test_config_unknown_certificate_name(pki, tmp_path):
    text = good_config(pki).replace('certificates = ["site"]',
                                    'certificates = ["site", "nope"]  ' + MARK)
    expect_error(tmp_path, text, ["nope"])


def bad_cert_config(pki, **replace):
    """good_config with cert/key lines replaced (and marked); the server's
    certificates line is marked too: the error may name either."""
    text = good_config(pki).replace('certificates = ["site"]',
                                    'certificates = ["site"]  ' + MARK)
    for key, value in replace.items():
        old = '%s = "%s"' % (key, pki.path("a." + key.replace("cert", "crt")))
        assert old in text
        text = text.replace(old, '%s = "%s"  %s' % (key, value, MARK))
    return text


def test_config_missing_cert_file(pki, tmp_path):
    text = bad_cert_config(pki, cert=pki.path("does-not-exist.crt"))
    expect_error(tmp_path, text, ["does-not-exist.crt"])


def test_config_missing_key_file(pki, tmp_path):
    text = bad_cert_config(pki, key=pki.path("nokey.key"))
    expect_error(tmp_path, text, ["nokey.key"])


def test_config_key_does_not_match_cert(pki, tmp_path):
    text = bad_cert_config(pki, cert=pki.path("a.crt"), key=pki.path("b.key"))
    expect_error(tmp_path, text, ["b.key"])


def test_config_cert_file_is_not_pem(pki, tmp_path):
    junk = tmp_path / "junk.crt"
    junk.write_text("not a certificate\n")
    text = bad_cert_config(pki, cert=str(junk))
    expect_error(tmp_path, text, ["junk.crt"])


def test_config_redirect_with_certificates(pki, tmp_path):
    text = good_config(pki, server_extra="redirect_https = true  %s\n" % MARK)
    text = text.replace('certificates = ["site"]', 'certificates = ["site"]  ' + MARK)
    expect_error(tmp_path, text, ["redirect_https"])


def test_config_client_verify_without_client_ca(pki, tmp_path):
    text = good_config(pki, server_extra='client_verify = "optional"  %s\n' % MARK)
    expect_error(tmp_path, text, ["client_ca"])


def test_config_bad_tls_min_version(pki, tmp_path):
    text = good_config(pki, server_extra='tls_min_version = "1.1"  %s\n' % MARK)
    expect_error(tmp_path, text, ["tls_min_version"])


def test_config_bad_client_verify(pki, tmp_path):
    text = good_config(pki, server_extra='client_ca = "%s"\nclient_verify = "maybe"  %s\n'
                       % (pki.path("client-ca.crt"), MARK))
    expect_error(tmp_path, text, ["client_verify"])


def test_config_unknown_upstream_client_cert(pki, tmp_path):
    text = good_config(pki, upstream_extra='tls = true\nclient_cert = "ghost"  %s\n' % MARK)
    expect_error(tmp_path, text, ["ghost"])


def test_config_missing_upstream_ca_file(pki, tmp_path):
    text = good_config(pki, upstream_extra='tls = true\nca_file = "%s"  %s\n'
                       % (pki.path("no-ca.pem"), MARK))
    expect_error(tmp_path, text, ["no-ca.pem"])


def test_config_missing_client_ca_file(pki, tmp_path):
    text = good_config(pki, server_extra='client_ca = "%s"  %s\n'
                       % (pki.path("no-client-ca.pem"), MARK))
    expect_error(tmp_path, text, ["no-client-ca.pem"])


# ---------------------------------------------------------------------------
# 10. Reloads


def copy_cert(pki, name, dest_dir, as_name):
    shutil.copyfile(pki.path(name + ".crt"), str(dest_dir / (as_name + ".crt")))
    shutil.copyfile(pki.path(name + ".key"), str(dest_dir / (as_name + ".key")))


def test_reload_picks_up_new_certificate_files(pki, backend, proxy, tmp_path):
    b = backend(B.fixed(b"r\n"))
    copy_cert(pki, "a", tmp_path, "site")
    port = free_port()
    base = (section("certificates.site", cert=str(tmp_path / "site.crt"),
                    key=str(tmp_path / "site.key"))
            + location_section() + upstream_section(b))
    w = proxy(base + server_section(port, certificates=["site"]), port, threads=2)
    ctx = T.client_context(pki)
    assert T.peer_cn(port, ctx, "a.test") == "a.test"
    # Same file names, new contents.
    copy_cert(pki, "a2", tmp_path, "site")
    w.signal(signal.SIGHUP)
    assert wait_log(w, "reloaded"), w.stderr()
    for _ in range(4):  # whichever thread accepts
        assert T.peer_cn(port, ctx, "a.test") == "a.test v2"
    # A longer certificate list: b.test now has its own certificate.
    text = base + cert_section(pki, "b") + server_section(port, certificates=["site", "b"])
    w.config_path.write_text(text)
    w.signal(signal.SIGHUP)
    assert wait_log(w, "reloaded", count=2), w.stderr()
    for _ in range(4):
        assert T.peer_cn(port, ctx, "b.test") == "b.test"
        assert T.peer_cn(port, ctx, "a.test") == "a.test v2"
    assert one_request(port, ctx).status == 200


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_reload_keeps_session_tickets_valid(pki, backend, proxy, version):
    b = backend(B.fixed(b"r\n"))
    port = free_port()
    base = cert_section(pki, "a") + location_section() + upstream_section(b)
    w = proxy(base + server_section(port, certificates=["a"]), port, threads=2)
    ver = ssl.TLSVersion.TLSv1_2 if version == "1.2" else ssl.TLSVersion.TLSv1_3
    ctx = T.client_context(pki, min_version=ver, max_version=ver)
    s = T.tls_connect(port, ctx, "a.test")
    try:
        assert T.https_get(s, host="a.test").status == 200
        sess = s.session
    finally:
        s.close()
    assert sess.has_ticket
    w.config_path.write_text(base + cert_section(pki, "b")
                             + server_section(port, certificates=["a", "b"]))
    w.signal(signal.SIGHUP)
    assert wait_log(w, "reloaded"), w.stderr()
    assert T.peer_cn(port, ctx, "b.test") == "b.test"  # the new settings are live
    s = T.tls_connect(port, ctx, "a.test", session=sess)
    try:
        assert s.session_reused, "a ticket from before the reload did not resume"
        assert T.https_get(s, host="a.test").status == 200
    finally:
        s.close()


def test_reload_with_a_broken_certificate_keeps_the_old_one(pki, backend, proxy, tmp_path):
    b = backend(B.fixed(b"r\n"))
    copy_cert(pki, "a", tmp_path, "site")
    port = free_port()
    text = (section("certificates.site", cert=str(tmp_path / "site.crt"),
                    key=str(tmp_path / "site.key"))
            + server_section(port, certificates=["site"]) + location_section()
            + upstream_section(b))
    w = proxy(text, port)
    ctx = T.client_context(pki)
    # The key no longer matches the certificate.
    shutil.copyfile(pki.path("a2.crt"), str(tmp_path / "site.crt"))
    shutil.copyfile(pki.path("b.key"), str(tmp_path / "site.key"))
    w.signal(signal.SIGHUP)
    assert wait_log(w, "reload failed"), w.stderr()
    assert T.peer_cn(port, ctx, "a.test") == "a.test"
    assert one_request(port, ctx).status == 200


def test_reload_cannot_turn_tls_on(pki, backend, proxy):
    """Turning TLS on for a running listener needs a restart (or a binary
    upgrade): the reload is refused and the plain server keeps serving."""
    b = backend(B.fixed(b"r\n"))
    port = free_port()
    base = location_section() + upstream_section(b)
    w = proxy(base + server_section(port), port)
    assert B.get(port).status == 200
    w.config_path.write_text(base + cert_section(pki, "a")
                             + server_section(port, certificates=["a"]))
    w.signal(signal.SIGHUP)
    assert wait_new_log(w, 0, r"reload.*(refused|failed)") is not None, w.stderr()
    assert "TLS" in w.stderr()
    assert B.get(port).status == 200
