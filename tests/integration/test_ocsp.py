"""OCSP stapling: weir asks the responder a certificate names (openssl's
own `openssl ocsp` responder, on loopback), checks the answer and staples
it to the handshakes of clients that ask (openssl s_client -status); a
revoked certificate gets nothing stapled; a responder that is down never
holds a handshake up."""
import datetime
import subprocess
import time

import pytest

import conftest

from conftest import free_port

pytestmark = pytest.mark.deadline(90)


def openssl(*a, cwd=None):
    return subprocess.run(["openssl"] + list(a), check=True, capture_output=True, timeout=60,
                          cwd=cwd).stdout.decode()


def make_pki(d, ocsp_port, revoked=False):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"), "-days", "2",
            "-subj", "/CN=weir ocsp test CA")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(d / "leaf.key"), "-out", str(d / "leaf.csr"),
            "-subj", "/CN=ocsp.weir.test")
    (d / "leaf.ext").write_text("subjectAltName=DNS:ocsp.weir.test\n"
                                "authorityInfoAccess=OCSP;URI:http://127.0.0.1:%d\n" % ocsp_port)
    openssl("x509", "-req", "-in", str(d / "leaf.csr"), "-CA", str(d / "ca.crt"),
            "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-out", str(d / "leaf.crt"),
            "-days", "2", "-extfile", str(d / "leaf.ext"))
    serial = openssl("x509", "-in", str(d / "leaf.crt"), "-noout", "-serial").split("=")[1]
    end = openssl("x509", "-in", str(d / "leaf.crt"), "-noout", "-enddate").split("=", 1)[1]
    end = datetime.datetime.strptime(end.strip(), "%b %d %H:%M:%S %Y %Z")
    when = end.strftime("%y%m%d%H%M%SZ")
    now = datetime.datetime.utcnow().strftime("%y%m%d%H%M%SZ")
    line = ("R\t%s\t%s\t%s\tunknown\t/CN=ocsp.weir.test\n" % (when, now, serial.strip())
            if revoked else "V\t%s\t\t%s\tunknown\t/CN=ocsp.weir.test\n" % (when, serial.strip()))
    (d / "index.txt").write_text(line)
    # The served file: the leaf, then its issuer.
    (d / "served.crt").write_text((d / "leaf.crt").read_text() + (d / "ca.crt").read_text())


def responder(d, port, nmin=5):
    log = open(d / "ocsp.log", "ab")
    p = subprocess.Popen(["openssl", "ocsp", "-index", str(d / "index.txt"),
                             "-port", str(port), "-rsigner", str(d / "ca.crt"),
                             "-rkey", str(d / "ca.key"), "-CA", str(d / "ca.crt"),
                             "-nmin", str(nmin)], stdout=log, stderr=log)
    # It answers one connection at a time: no probe connection, its log.
    assert wait_for(lambda: "waiting for OCSP client" in (d / "ocsp.log").read_text(),
                    timeout=10), (d / "ocsp.log").read_text()
    return p


CONFIG = """
[servers.tls]
addr = "127.0.0.1:@PORT@"
locations = ["all"]
certificates = ["c"]

[certificates.c]
cert = "@TMP@/served.crt"
key = "@TMP@/leaf.key"

[locations.all]
echo = true
"""


def status(port):
    r = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port,
                        "-servername", "ocsp.weir.test", "-status"], input=b"",
                       capture_output=True, timeout=20)
    return r.stdout.decode(errors="replace")



def wait_for(pred, timeout=20.0, step=0.05):
    return conftest.wait_for(pred, timeout, step)


def test_a_good_response_is_stapled(tmp_path, weir_toml):
    port = free_port()
    make_pki(tmp_path, port)
    r = responder(tmp_path, port)
    try:
        w = weir_toml(CONFIG)
        out = wait_for(lambda: "OCSP Response Status: successful" in status(w.port) and
                       status(w.port))
        assert out, w.describe()
        assert "Cert Status: good" in out, out
        assert "response stapled" in w.stderr()
    finally:
        r.terminate()
        r.wait(timeout=10)


def test_a_revoked_certificate_gets_nothing_stapled(tmp_path, weir_toml):
    port = free_port()
    make_pki(tmp_path, port, revoked=True)
    r = responder(tmp_path, port)
    try:
        w = weir_toml(CONFIG)
        assert wait_for(lambda: "certificate status revoked" in w.stderr()), w.describe()
        assert "OCSP response: no response sent" in status(w.port)
    finally:
        r.terminate()
        r.wait(timeout=10)


def test_a_responder_down_holds_no_handshake(tmp_path, weir_toml):
    port = free_port()
    make_pki(tmp_path, port)  # and no responder
    w = weir_toml(CONFIG)
    assert wait_for(lambda: "trying again in 5 s" in w.stderr()), w.describe()
    t0 = time.time()
    for _ in range(5):
        assert "OCSP response: no response sent" in status(w.port)
    assert time.time() - t0 < 10


def this_update(out):
    import re
    m = re.search(r"This Update: (.+)", out)
    return m.group(1).strip() if m else None


@pytest.mark.deadline(120)
def test_a_response_is_refreshed_before_its_next_update(tmp_path, weir_toml):
    """The responder's answers are good for a minute: weir asks again
    halfway (30 s), so a newer answer is stapled before the first one
    expires, and no handshake in between goes without one."""
    port = free_port()
    make_pki(tmp_path, port)
    r = responder(tmp_path, port, nmin=1)
    try:
        w = weir_toml(CONFIG)
        out = wait_for(lambda: "OCSP Response Status: successful" in status(w.port) and
                       status(w.port))
        import re
        assert out and re.search(r"asking again in (2[0-9]|30) s", w.stderr()), w.describe()
        first = this_update(out)
        t0 = time.time()
        later = None
        while time.time() - t0 < 50:
            out = status(w.port)
            assert "OCSP Response Status: successful" in out, (out, w.stderr())
            if this_update(out) != first:
                later = this_update(out)
                break
            time.sleep(1)
        assert later, w.describe()
        assert w.stderr().count("response stapled") >= 2
        assert "the response expired" not in w.stderr()
    finally:
        r.terminate()
        r.wait(timeout=10)


def test_a_responder_that_hangs_holds_no_handshake(tmp_path, weir_toml):
    """A responder that takes the connection and never answers: the fetch
    times out on weir's own thread (and is retried with backoff), while
    every handshake goes on at once, with nothing stapled."""
    import socket
    import threading
    port = free_port()
    make_pki(tmp_path, port)
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(16)
    held = []

    def accept():
        while True:
            try:
                c, _ = ls.accept()
            except OSError:
                return
            held.append(c)
    threading.Thread(target=accept, daemon=True).start()
    try:
        w = weir_toml(CONFIG)
        assert wait_for(lambda: held, 10), w.describe()
        t0 = time.time()
        for _ in range(5):
            assert "OCSP response: no response sent" in status(w.port)
        assert time.time() - t0 < 10
        assert wait_for(lambda: "trying again in 5 s" in w.stderr(), 20), w.describe()
    finally:
        ls.close()
        for c in held:
            c.close()


@pytest.mark.deadline(120)
def test_an_acme_certificate_is_stapled_too(tmp_path, weir_toml):
    """A certificate weir ordered (pebble, with an OCSP URL in what it
    issues) is stapled as a file one is: the responder signs with pebble's
    intermediate, which weir finds in the chain it stored."""
    import os
    from acmeutil import PEBBLE, Pebble
    if not os.access(PEBBLE, os.X_OK):
        pytest.skip("pebble not installed")
    ocsp_port, http_port = free_port(), free_port()
    pb = Pebble(tmp_path, http_port, ocsp_url="http://127.0.0.1:%d" % ocsp_port).start()
    r = None
    try:
        w = weir_toml("""
[servers.http]
addr = "127.0.0.1:%d"
locations = ["all"]
[servers.tls]
addr = "127.0.0.1:@PORT@"
locations = ["all"]
certificates = ["site"]
[certificates.site]
acme = "%s"
acme_ca = "%s"
domains = ["ocsp.weir.test"]
storage = "@TMP@/acme"
[locations.all]
echo = true
""" % (http_port, pb.directory, pb.ca))
        crt = tmp_path / "acme" / "site.crt"
        assert wait_for(lambda: crt.exists() and "certificate obtained" in w.stderr(), 40), \
            w.describe()
        # The responder: pebble's intermediate, the leaf good in its index.
        inter, key = pb.intermediate()
        (tmp_path / "ca.crt").write_text(inter)
        (tmp_path / "ca.key").write_text(key)
        (tmp_path / "served.crt").write_text(crt.read_text())
        serial = openssl("x509", "-in", str(crt), "-noout", "-serial").split("=")[1].strip()
        (tmp_path / "index.txt").write_text(
            "V\t%s\t\t%s\tunknown\t/CN=ocsp.weir.test\n" %
            ((datetime.datetime.utcnow() + datetime.timedelta(days=30)).strftime(
                "%y%m%d%H%M%SZ"), serial))
        r = responder(tmp_path, ocsp_port)
        out = wait_for(lambda: "OCSP Response Status: successful" in status(w.port) and
                       status(w.port), 40)
        assert out and "Cert Status: good" in out, (out, w.describe())
        assert "response stapled" in w.stderr()
    finally:
        if r:
            r.terminate()
            r.wait(timeout=10)
        pb.close()
