"""TLS helpers for the weir integration suite: a throw-away PKI made with
the `openssl` command line (test CA, leaf certificates, an expired one, a
second CA, a client CA and client certificates), Python TLS clients, and a
TLS variant of backends.Backend.

Nothing here is committed but the code: every key and certificate is
generated into a temporary directory by the session-scoped fixture in
test_tls.py.
"""
import os
import socket
import ssl
import subprocess
import time

import backends as B

# ---------------------------------------------------------------------------
# The PKI


CA_CNF = """\
[ ca ]
default_ca = CA_default

[ CA_default ]
dir = {dir}
database = {dir}/index.txt
new_certs_dir = {dir}/newcerts
certificate = {dir}/ca.crt
private_key = {dir}/ca.key
serial = {dir}/serial
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = none
email_in_dn = no

[ policy_any ]
commonName = supplied
organizationName = optional
"""


def _run(argv, cwd):
    r = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise RuntimeError("%s failed (%d):\n%s%s" % (" ".join(argv), r.returncode, r.stdout,
                                                       r.stderr))
    return r.stdout


def _newkey(kind):
    if kind == "rsa":
        return ["-newkey", "rsa:2048"]
    return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]


class PKI:
    """Every file the TLS tests need, in `dir`:

    ca.crt/ca.key           the test CA
    other-ca.crt            an unrelated CA ("wrong CA")
    NAME.crt/NAME.key       leaves signed by the test CA (see LEAVES)
    expired.crt/.key        localhost + 127.0.0.1, valid only in January 2020
    other-localhost.crt     localhost + 127.0.0.1, signed by the other CA
    client-ca.crt           the CA client certificates must come from (mTLS)
    client.crt/.key         a client certificate signed by the client CA
    rogue.crt/.key          a self-signed client certificate
    inter.crt               an intermediate CA under the test CA
    c.crt/.key              c.test, signed by the intermediate (c-fullchain.pem:
                            the leaf followed by the intermediate)
    """

    # name -> (common name, subjectAltName, key type)
    LEAVES = {
        "a": ("a.test", "DNS:a.test", "ec"),
        "a2": ("a.test v2", "DNS:a.test", "ec"),  # same name, other cert (reloads)
        "wild": ("*.wild.test", "DNS:*.wild.test", "ec"),
        "b": ("b.test", "DNS:b.test", "ec"),
        "default": ("default.test", "DNS:default.test", "rsa"),
        "localhost": ("localhost", "DNS:localhost,IP:127.0.0.1", "ec"),
        "cnonly": ("cn-only.test", None, "ec"),  # no SAN: the CN names it
    }

    def __init__(self, dir):
        self.dir = str(dir)
        os.makedirs(self.dir, exist_ok=True)
        d = self.dir
        # CAs (self-signed, CA:TRUE)
        self._ca("ca", "weir test CA")
        self._ca("other-ca", "weir other CA")
        self._ca("client-ca", "weir client CA")
        for name, (cn, san, kind) in self.LEAVES.items():
            self._leaf(name, cn, san, kind, "ca")
        self._leaf("other-localhost", "localhost", "DNS:localhost,IP:127.0.0.1", "ec",
                   "other-ca")
        self._leaf("client", "weir client", None, "ec", "client-ca", client=True)
        # An intermediate CA and a leaf it signed: weir must send the chain.
        self._leaf("inter", "weir intermediate CA", None, "ec", "ca", ca_ext=True)
        self._leaf("c", "c.test", "DNS:c.test", "ec", "inter")
        with open(self.path("c-fullchain.pem"), "w") as f:
            f.write(self.read("c.crt") + self.read("inter.crt"))
        # A self-signed client certificate nobody trusts.
        _run(["openssl", "req", "-x509", "-nodes"] + _newkey("ec")
             + ["-keyout", "rogue.key", "-out", "rogue.crt", "-days", "30",
                "-subj", "/CN=rogue client", "-addext", "extendedKeyUsage=clientAuth"], d)
        self._expired()

    def path(self, name):
        return os.path.join(self.dir, name)

    def read(self, name):
        with open(self.path(name)) as f:
            return f.read()

    def _ca(self, name, cn):
        _run(["openssl", "req", "-x509", "-nodes"] + _newkey("ec")
             + ["-keyout", name + ".key", "-out", name + ".crt", "-days", "30",
                "-subj", "/CN=" + cn,
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign"], self.dir)

    def _ext(self, name, san, client=False, ca_ext=False):
        if ca_ext:
            lines = ["basicConstraints=critical,CA:TRUE",
                     "keyUsage=critical,keyCertSign,cRLSign"]
        else:
            lines = ["basicConstraints=CA:FALSE",
                     "keyUsage=critical,digitalSignature,keyEncipherment",
                     "extendedKeyUsage=%s" % ("clientAuth" if client
                                              else "serverAuth,clientAuth")]
        if san:
            lines.append("subjectAltName=" + san)
        path = self.path(name + ".ext")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def _leaf(self, name, cn, san, kind, ca, client=False, ca_ext=False):
        d = self.dir
        _run(["openssl", "req", "-new", "-nodes"] + _newkey(kind)
             + ["-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + cn], d)
        _run(["openssl", "x509", "-req", "-in", name + ".csr", "-CA", ca + ".crt",
              "-CAkey", ca + ".key", "-CAcreateserial", "-days", "30", "-sha256",
              "-extfile", self._ext(name, san, client, ca_ext), "-out", name + ".crt"], d)

    def _expired(self):
        """`openssl ca` is the 3.0 command that takes an explicit start date."""
        d = self.dir
        os.makedirs(self.path("newcerts"), exist_ok=True)
        open(self.path("index.txt"), "w").close()
        with open(self.path("serial"), "w") as f:
            f.write("1000\n")
        with open(self.path("ca.cnf"), "w") as f:
            f.write(CA_CNF.format(dir=d))
        _run(["openssl", "req", "-new", "-nodes"] + _newkey("ec")
             + ["-keyout", "expired.key", "-out", "expired.csr", "-subj", "/CN=localhost"], d)
        _run(["openssl", "ca", "-config", "ca.cnf", "-batch", "-notext",
              "-startdate", "20200101000000Z", "-enddate", "20200102000000Z",
              "-extfile", self._ext("expired", "DNS:localhost,IP:127.0.0.1"),
              "-in", "expired.csr", "-out", "expired.crt"], d)


# ---------------------------------------------------------------------------
# Clients


def client_context(pki=None, cafile=None, min_version=None, max_version=None, cert=None,
                   check_hostname=False, alpn=("http/1.1",)):
    """A client SSLContext trusting the test CA (verification on, host name
    check off unless asked: the tests look at which certificate came)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile or pki.path("ca.crt"))
    if min_version:
        ctx.minimum_version = min_version
    if max_version:
        ctx.maximum_version = max_version
    if cert:
        ctx.load_cert_chain(cert[0], cert[1])
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def tls_connect(port, ctx, server_hostname=None, session=None, timeout=B.IO_TIMEOUT):
    """A TLS connection to 127.0.0.1:port, handshake done."""
    raw = socket.create_connection((B.LOOPBACK, port), timeout=timeout)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        return ctx.wrap_socket(raw, server_hostname=server_hostname, session=session)
    except BaseException:
        raw.close()
        raise


def subject_cn(cert):
    """commonName of a getpeercert() dict."""
    for rdn in cert.get("subject", ()):
        for k, v in rdn:
            if k == "commonName":
                return v
    return None


def peer_cn(port, ctx, server_hostname=None):
    """The common name of the certificate weir presents for this SNI."""
    s = tls_connect(port, ctx, server_hostname)
    try:
        return subject_cn(s.getpeercert())
    finally:
        s.close()


def https_get(sock, path="/", host="test.local", close=False, headers=()):
    """One request on an open (TLS) socket; returns the parsed response."""
    hs = "".join("%s: %s\r\n" % kv for kv in headers)
    raw = ("GET %s HTTP/1.1\r\nHost: %s\r\n%s%s\r\n"
           % (path, host, hs, "Connection: close\r\n" if close else "")).encode("latin-1")
    sock.sendall(raw)
    reader = getattr(sock, "_weir_reader", None)
    if reader is None:
        reader = B.Reader(sock)
        sock._weir_reader = reader
    return B.read_response(reader)


def client_hello(server_hostname="a.test"):
    """The bytes of a real TLS ClientHello (from Python's own client)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


# ---------------------------------------------------------------------------
# A TLS backend


class TLSBackend(B.Backend):
    """backends.Backend behind TLS. cert/key: its certificate; client_ca:
    require client certificates signed by it. Records the SNI of each
    handshake (self.sni), the client certificate subjects (self.client_cns),
    whether it resumed a session (self.reused), and handshake failures
    (self.tls_errors) apart from handler errors."""

    def __init__(self, handler=None, cert=None, key=None, client_ca=None, **kw):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        if client_ca:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(client_ca)
        self.sni = []
        self.client_cns = []
        self.tls_errors = []
        self.handshakes = 0
        self.reused = []  # session_reused of each handshake

        def on_sni(sslobj, name, context):
            with self.lock:
                self.sni.append(name)

        ctx.sni_callback = on_sni
        self.ctx = ctx
        super().__init__(handler, **kw)

    def _serve(self, s, conn_id):
        s.settimeout(B.IO_TIMEOUT)
        try:
            t = self.ctx.wrap_socket(s, server_side=True)
        except (ssl.SSLError, OSError) as e:
            with self.lock:
                self.tls_errors.append(repr(e))
                self.conns.discard(s)
            s.close()
            return
        with self.lock:
            self.handshakes += 1
            self.reused.append(t.session_reused)
            self.conns.discard(s)
            self.conns.add(t)
            peer = t.getpeercert()
            self.client_cns.append(subject_cn(peer) if peer else None)
        try:
            super()._serve(t, conn_id)
        except ssl.SSLError as e:
            with self.lock:
                self.tls_errors.append(repr(e))


def upgrade_echo():
    """Backend handler: answers an Upgrade request with 101, then echoes
    every byte upper-cased until the proxy closes."""

    def handler(conn, req):
        conn.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\n\r\n")
        if conn.reader.buf:
            conn.send(bytes(conn.reader.buf).upper())
            conn.reader.buf.clear()
        try:
            while True:
                chunk = conn.sock.recv(65536)
                if not chunk:
                    break
                conn.send(chunk.upper())
        except (OSError, ssl.SSLError):
            pass
        return "close"

    return handler


def trickle_handshake(port, ctx, server_hostname, piece=7):
    """A TLS handshake whose every flight is written `piece` bytes at a
    time; returns (raw socket, SSLObject, incoming, outgoing)."""
    raw = socket.create_connection((B.LOOPBACK, port), timeout=B.IO_TIMEOUT)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    while True:
        try:
            obj.do_handshake()
            done = True
        except ssl.SSLWantReadError:
            done = False
        trickle(raw, outgoing.read(), piece)
        if done:
            return raw, obj, incoming, outgoing
        chunk = raw.recv(65536)
        if not chunk:
            raise B.PeerClosed("closed during the handshake")
        incoming.write(chunk)


def trickle(raw, data, piece):
    for i in range(0, len(data), piece):
        raw.sendall(data[i:i + piece])
        time.sleep(0.001)


class BioSocket:
    """Enough of a socket (recv) over an SSLObject for backends.Reader."""

    def __init__(self, raw, obj, incoming):
        self.raw, self.obj, self.incoming = raw, obj, incoming

    def recv(self, n):
        while True:
            try:
                return self.obj.read(n)
            except ssl.SSLWantReadError:
                chunk = self.raw.recv(65536)
                if not chunk:
                    return b""
                self.incoming.write(chunk)
            except ssl.SSLZeroReturnError:
                return b""
