"""A real ACME server for the tests: Debian's pebble on loopback, with
pebble-challtestsrv as its DNS (every name is 127.0.0.1), HTTP-01
validation sent to a port of the test's choosing."""
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
import ssl

from conftest import free_port

PEBBLE = shutil.which("pebble") or "/usr/bin/pebble"
CHALLTESTSRV = shutil.which("pebble-challtestsrv") or "/usr/bin/pebble-challtestsrv"


def openssl(*a):
    subprocess.run(["openssl"] + list(a), check=True, capture_output=True, timeout=60)


def ca_and_server_cert(d, name, san):
    """A throw-away CA (d/ca.crt, d/ca.key) and a server certificate it
    signs (d/server.crt, d/server.key) for the subjectAltName san."""
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"), "-days", "2",
            "-subj", "/CN=%s test CA" % name)
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(d / "server.key"), "-out", str(d / "server.csr"),
            "-subj", "/CN=%s" % name)
    (d / "server.ext").write_text("subjectAltName=%s\n" % san)
    openssl("x509", "-req", "-in", str(d / "server.csr"), "-CA", str(d / "ca.crt"),
            "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-out", str(d / "server.crt"),
            "-days", "2", "-extfile", str(d / "server.ext"))


class Pebble:
    """Pebble(tmp, http_port, nonce_reject=0, env=None).start(); .directory,
    .ca (the CA file of pebble's own HTTPS), .roots() (the PEM of the CA
    that signs the certificates it issues)."""

    def __init__(self, tmp, http_port, tls_port=None, nonce_reject=0, validity=None,
                 ocsp_url=""):
        self.dir = tmp / "pebble"
        self.dir.mkdir(exist_ok=True)
        self.http_port = http_port
        self.tls_port = tls_port or free_port()
        self.port, self.mgmt_port, self.dns_port, self.chall_mgmt = (
            free_port(), free_port(), free_port(), free_port())
        self.nonce_reject = nonce_reject
        self.validity = validity
        self.ocsp_url = ocsp_url  # the AIA OCSP URL of the certificates it issues
        self.procs = []

    @property
    def directory(self):
        return "https://127.0.0.1:%d/dir" % self.port

    @property
    def ca(self):
        return str(self.dir / "ca.crt")

    def _certs(self):
        ca_and_server_cert(self.dir, "pebble", "IP:127.0.0.1,DNS:localhost")

    def start(self):
        self._certs()
        cfg = {"pebble": {
            "listenAddress": "127.0.0.1:%d" % self.port,
            "managementListenAddress": "127.0.0.1:%d" % self.mgmt_port,
            "certificate": str(self.dir / "server.crt"),
            "privateKey": str(self.dir / "server.key"),
            "httpPort": self.http_port,
            "tlsPort": self.tls_port,
            "ocspResponderURL": self.ocsp_url,
            "externalAccountBindingRequired": False}}
        if self.validity:
            cfg["pebble"]["certificateValidityPeriod"] = self.validity
        (self.dir / "pebble.json").write_text(json.dumps(cfg))
        log = open(self.dir / "challtestsrv.log", "ab")
        self.procs.append(subprocess.Popen(
            [CHALLTESTSRV, "-dns01", "127.0.0.1:%d" % self.dns_port, "-http01", "",
             "-https01", "", "-tlsalpn01", "",
             "-management", "127.0.0.1:%d" % self.chall_mgmt, "-defaultIPv4", "127.0.0.1",
             "-defaultIPv6", ""], stdout=log, stderr=log, stdin=subprocess.DEVNULL))
        env = dict(os.environ, PEBBLE_VA_NOSLEEP="1",
                   PEBBLE_WFE_NONCEREJECT=str(self.nonce_reject),
                   PEBBLE_AUTHZREUSE="0")
        log = open(self.dir / "pebble.log", "ab")
        self.procs.append(subprocess.Popen(
            [PEBBLE, "-config", str(self.dir / "pebble.json"),
             "-dnsserver", "127.0.0.1:%d" % self.dns_port],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env))
        self.wait_ready()
        return self

    def wait_ready(self, timeout=30):
        ctx = ssl.create_default_context(cafile=self.ca)
        deadline = time.time() + timeout
        while time.time() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError("pebble exited: see %s" % self.dir)
            try:
                with urllib.request.urlopen(self.directory, context=ctx, timeout=2) as r:
                    if b"newOrder" in r.read():
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("pebble not ready in %d s: see %s" % (timeout, self.dir))

    def roots(self):
        """The PEM of the root that signs pebble's certificates."""
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        url = "https://127.0.0.1:%d/roots/0" % self.mgmt_port
        with urllib.request.urlopen(url, context=ctx, timeout=5) as r:
            return r.read().decode()

    def intermediate(self):
        """The PEM of the intermediate that signs the leaves, and its key."""
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        out = []
        for what in ("intermediates", "intermediate-keys"):
            url = "https://127.0.0.1:%d/%s/0" % (self.mgmt_port, what)
            with urllib.request.urlopen(url, context=ctx, timeout=5) as r:
                out.append(r.read().decode())
        return out

    def stop_server(self):
        p = self.procs[-1]
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=10)

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=5)


class FaultProxy:
    """An HTTPS proxy in front of a Pebble that can change what it answers,
    for the answers pebble never gives (rateLimited, ARI, hostile
    documents). The Host header is passed through, so pebble signs its
    URLs and checks the JWS "url" against the proxy's address.

    .rules: a list of functions (method, path, body) -> None (forward) or
    (status, headers dict, body bytes). .renewal_info(cert_id) -> (status,
    body) makes the directory offer ARI at /ari/. .log: (time, method,
    path, status) per request."""

    def __init__(self, tmp, pebble):
        import http.server
        import threading
        self.pebble = pebble
        self.dir = tmp / "proxy"
        self.dir.mkdir(exist_ok=True)
        self.port = free_port()
        self.rules, self.log, self.renewal_info = [], [], None
        self.ari_asked = []
        d = self.dir
        ca_and_server_cert(d, "proxy", "IP:127.0.0.1")
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                proxy._handle(self)

            do_HEAD = do_POST = do_GET

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        sctx.load_cert_chain(str(d / "server.crt"), str(d / "server.key"))
        self.server.socket = sctx.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def directory(self):
        return "https://127.0.0.1:%d/dir" % self.port

    @property
    def ca(self):
        return str(self.dir / "ca.crt")

    def requests(self, method, path_part):
        return [e for e in self.log if e[1] == method and path_part in e[2]]

    def _reply(self, h, status, headers, body):
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if h.command != "HEAD":
            try:
                h.wfile.write(body)
            except OSError:  # the client gave up (an answer too big for it)
                h.close_connection = True
        self.log.append((time.monotonic(), h.command, h.path, status))

    def _handle(self, h):
        import http.client
        n = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(n) if n else b""
        if h.path.startswith("/ari/") and self.renewal_info:
            self.ari_asked.append(h.path[len("/ari/"):])
            status, out = self.renewal_info(h.path[len("/ari/"):])
            return self._reply(h, status, {"Content-Type": "application/json"}, out)
        for rule in self.rules:
            got = rule(h.command, h.path, body)
            if got:
                status, headers, out = got
                # A refusal still carries a fresh nonce, as a CA's does.
                headers = dict(headers)
                headers.setdefault("Replay-Nonce", self._nonce())
                return self._reply(h, status, headers, out)
        ctx = ssl.create_default_context(cafile=self.pebble.ca)
        c = http.client.HTTPSConnection("127.0.0.1", self.pebble.port, context=ctx, timeout=10)
        fwd = {k: v for k, v in h.headers.items()
               if k.lower() in ("content-type", "accept", "user-agent")}
        fwd["Host"] = "127.0.0.1:%d" % self.port
        c.request(h.command, h.path, body=body if h.command == "POST" else None, headers=fwd)
        r = c.getresponse()
        out = r.read()
        c.close()
        if h.path == "/dir" and self.renewal_info and r.status == 200:
            doc = json.loads(out)
            doc["renewalInfo"] = "https://127.0.0.1:%d/ari" % self.port
            out = json.dumps(doc).encode()
        mine, theirs = ("127.0.0.1:%d" % self.port).encode(), (
            "127.0.0.1:%d" % self.pebble.port).encode()
        out = out.replace(theirs, mine)
        headers = {k: v.replace(theirs.decode(), mine.decode()) for k, v in r.getheaders()
                   if k.lower() in ("content-type", "location", "link", "replay-nonce",
                                    "retry-after")}
        self._reply(h, r.status, headers, out)

    def _nonce(self):
        import http.client
        ctx = ssl.create_default_context(cafile=self.pebble.ca)
        c = http.client.HTTPSConnection("127.0.0.1", self.pebble.port, context=ctx, timeout=10)
        c.request("HEAD", "/nonce-plz", headers={"Host": "127.0.0.1:%d" % self.port})
        r = c.getresponse()
        r.read()
        c.close()
        return r.getheader("Replay-Nonce") or ""

    def close(self):
        self.server.shutdown()
        self.server.server_close()
