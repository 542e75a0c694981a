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


class Pebble:
    """Pebble(tmp, http_port, nonce_reject=0, env=None).start(); .directory,
    .ca (the CA file of pebble's own HTTPS), .roots() (the PEM of the CA
    that signs the certificates it issues)."""

    def __init__(self, tmp, http_port, tls_port=None, nonce_reject=0, validity=None):
        self.dir = tmp / "pebble"
        self.dir.mkdir(exist_ok=True)
        self.http_port = http_port
        self.tls_port = tls_port or free_port()
        self.port, self.mgmt_port, self.dns_port, self.chall_mgmt = (
            free_port(), free_port(), free_port(), free_port())
        self.nonce_reject = nonce_reject
        self.validity = validity
        self.procs = []

    @property
    def directory(self):
        return "https://127.0.0.1:%d/dir" % self.port

    @property
    def ca(self):
        return str(self.dir / "ca.crt")

    def _certs(self):
        d = self.dir
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"), "-days", "2",
                "-subj", "/CN=pebble test CA")
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", str(d / "server.key"), "-out", str(d / "server.csr"),
                "-subj", "/CN=pebble")
        (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        openssl("x509", "-req", "-in", str(d / "server.csr"), "-CA", str(d / "ca.crt"),
                "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-out", str(d / "server.crt"),
                "-days", "2", "-extfile", str(d / "server.ext"))

    def start(self):
        self._certs()
        cfg = {"pebble": {
            "listenAddress": "127.0.0.1:%d" % self.port,
            "managementListenAddress": "127.0.0.1:%d" % self.mgmt_port,
            "certificate": str(self.dir / "server.crt"),
            "privateKey": str(self.dir / "server.key"),
            "httpPort": self.http_port,
            "tlsPort": self.tls_port,
            "ocspResponderURL": "",
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
