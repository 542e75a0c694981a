"""[certificates.NAME] acme: weir orders its certificates from a real ACME
server (Debian's pebble), answers HTTP-01 on its plain listener before any
location (a redirect to https included), and swaps each new certificate
into its TLS listener without a reload: new handshakes get it, a
connection opened before keeps working. Also: the stored certificate is
used after a restart without a new order, a renewal of a short-lived
certificate, a challenge that fails (retried with backoff, then met), and
the ACME server down while a renewal is due."""
import json
import os
import socket
import ssl
import time
import urllib.request

import pytest

import conftest
from cryptography import x509

from acmeutil import PEBBLE, Pebble
from conftest import free_port

pytestmark = [pytest.mark.skipif(not os.access(PEBBLE, os.X_OK), reason="pebble not installed"),
              pytest.mark.deadline(150)]

CONFIG = """
[admin]
addr = "127.0.0.1:@ADMIN@"

[servers.http]
addr = "127.0.0.1:@HTTP@"
locations = ["all"]
redirect_https = true
https_port = @PORT@

[servers.https]
addr = "127.0.0.1:@PORT@"
locations = ["all"]
certificates = ["site"]

[certificates.site]
acme = "@DIR@"
acme_ca = "@CA@"
domains = ["a.weir.test", "b.weir.test"]
email = "ops@example.com"
storage = "@TMP@/acme"
%s
[locations.all]
echo = true
"""


def peer_cert(port, name="a.weir.test"):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        with ctx.wrap_socket(s, server_hostname=name) as t:
            return x509.load_der_x509_certificate(t.getpeercert(binary_form=True))


def self_signed(cert):
    return cert.issuer == cert.subject



def wait_for(pred, timeout=30.0, step=0.05):
    return conftest.wait_for(pred, timeout, step)


def challtest(pb, path, body):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (pb.chall_mgmt, path),
                                 data=json.dumps(body).encode(), method="POST")
    urllib.request.urlopen(req, timeout=5).read()


class Acme:
    def __init__(self, tmp_path, weir_toml):
        self.tmp, self.weir_toml, self.pebbles = tmp_path, weir_toml, []
        self.http_port = free_port()
        self.admin_port = free_port()

    def pebble(self, validity=None):
        pb = Pebble(self.tmp, self.http_port, validity=validity).start()
        self.pebbles.append(pb)
        return pb

    def weir(self, pb, extra="", domains=None):
        text = CONFIG % extra
        if domains:
            text = text.replace('domains = ["a.weir.test", "b.weir.test"]',
                                "domains = %s" % json.dumps(domains))
        text = text.replace("@HTTP@", str(self.http_port)).replace(
            "@ADMIN@", str(self.admin_port)).replace(
            "@DIR@", pb.directory).replace("@CA@", pb.ca)
        return self.weir_toml(text)


@pytest.fixture
def acme(tmp_path, weir_toml):
    a = Acme(tmp_path, weir_toml)
    yield a
    for pb in a.pebbles:
        pb.close()


@pytest.fixture
def setup(acme):
    def make(validity=None):
        pb = acme.pebble(validity)
        return pb, acme.weir(pb), acme.http_port
    return make


def test_a_certificate_is_ordered_and_swapped_in_without_a_reload(acme, tmp_path):
    pb = acme.pebble()
    w, http_port = acme.weir(pb), acme.http_port
    # Until it is obtained: a temporary self-signed certificate, and the
    # old connection opened with it keeps working after the swap.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    early = ctx.wrap_socket(socket.create_connection(("127.0.0.1", w.port), timeout=5),
                            server_hostname="a.weir.test")
    first = x509.load_der_x509_certificate(early.getpeercert(binary_form=True))
    assert self_signed(first)
    got = wait_for(lambda: not self_signed(peer_cert(w.port)) and peer_cert(w.port))
    assert got, w.describe()
    names = got.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert sorted(names.value.get_values_for_type(x509.DNSName)) == ["a.weir.test",
                                                                     "b.weir.test"]
    # The chain verifies against pebble's root, for both names.
    roots = tmp_path / "roots.pem"
    roots.write_text(pb.roots())
    vctx = ssl.create_default_context(cafile=str(roots))
    for name in ("a.weir.test", "b.weir.test"):
        vctx.check_hostname = False
        with socket.create_connection(("127.0.0.1", w.port), timeout=5) as s:
            with vctx.wrap_socket(s, server_hostname=name) as t:
                assert t.version()
    early.sendall(b"GET /old HTTP/1.1\r\nHost: a.weir.test\r\n\r\n")
    assert b"echo from" in early.recv(4096)
    early.close()
    err = w.stderr()
    assert "certificate obtained for a.weir.test" in err, err
    assert "reloaded" not in err
    # Metrics: its expiry, the order.
    m = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % acme.admin_port, timeout=5)
    text = m.read().decode()
    import re
    exp = re.search(r'weir_certificate_expiry_seconds\{name="site"\} (\d+)', text)
    assert exp and int(exp.group(1)) > 86400, text
    assert 'weir_acme_orders_total{result="started"} 1' in text, text
    assert 'weir_acme_orders_total{result="succeeded"} 1' in text, text
    assert 'weir_acme_orders_total{result="failed"} 0' in text, text
    # The files: 0600, in the storage directory.
    for f in ("site.crt", "site.key"):
        assert (tmp_path / "acme" / f).stat().st_mode & 0o777 == 0o600
    # The challenge answers do not outlive the order; other paths route.
    c = socket.create_connection(("127.0.0.1", http_port), timeout=5)
    c.sendall(b"GET /.well-known/acme-challenge/nosuch HTTP/1.1\r\nHost: a\r\n\r\n")
    assert c.recv(4096).startswith(b"HTTP/1.1 301")  # the redirect, as any path
    c.close()


def test_a_restart_serves_the_stored_certificate_without_ordering(setup, weir_toml, tmp_path):
    pb, w, http_port = setup()
    got = wait_for(lambda: not self_signed(peer_cert(w.port)) and peer_cert(w.port))
    assert got, w.describe()
    w.stop()
    w.checked = True
    text = sorted(tmp_path.glob("weir-*.toml"))[-1].read_text()
    w2 = weir_toml(text.replace(str(w.port), "@PORT@"))
    again = peer_cert(w2.port)
    assert again.serial_number == got.serial_number
    time.sleep(1.5)
    assert "ordering" not in w2.stderr() and "renewing" not in w2.stderr()


def test_a_short_lived_certificate_is_renewed(acme):
    """Valid 15 s: renewed at 2/3 of its life, about 10 s after it was
    issued. A connection opened on the first certificate keeps working
    after the renewal's swap; the webhook says "renewed"; the metrics
    count two orders started and two succeeded."""
    from test_webhook import Receiver
    r = Receiver()
    try:
        pb = acme.pebble(15)
        text = (CONFIG % "").replace("@HTTP@", str(acme.http_port)).replace(
            "@ADMIN@", str(acme.admin_port)).replace("@DIR@", pb.directory).replace(
            "@CA@", pb.ca)
        w = acme.weir_toml('[basic]\nwebhook = "%s"\n' % r.url + text)
        first = wait_for(lambda: not self_signed(peer_cert(w.port)) and peer_cert(w.port))
        assert first, w.describe()
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        held = ctx.wrap_socket(socket.create_connection(("127.0.0.1", w.port), timeout=5),
                               server_hostname="a.weir.test")
        on = x509.load_der_x509_certificate(held.getpeercert(binary_form=True))
        second = wait_for(lambda: peer_cert(w.port).serial_number not in (
            first.serial_number, on.serial_number) and peer_cert(w.port), timeout=40)
        assert second and not self_signed(second), w.describe()
        assert "renewing a certificate for a.weir.test" in w.stderr()
        held.sendall(b"GET /held HTTP/1.1\r\nHost: a.weir.test\r\n\r\n")
        assert b"echo from" in held.recv(4096)
        held.close()
        renewed = wait_for(lambda: [e for e in r.events("certificate")
                                    if "certificate site renewed for a.weir.test" in
                                    e["message"]], timeout=10)
        assert renewed, r.bodies
        assert renewed[0]["data"]["action"] == "renewed", renewed
        text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % acme.admin_port,
                                      timeout=5).read().decode()
        import re
        counts = dict(re.findall(r'weir_acme_orders_total\{result="(\w+)"\} (\d+)', text))
        assert int(counts["started"]) == int(counts["succeeded"]) >= 2, counts
        assert counts["failed"] == "0", counts
    finally:
        r.close()


def test_a_failed_challenge_is_retried_and_then_met(acme):
    pb = acme.pebble()
    # b.weir.test points where nothing listens: its challenge fails.
    challtest(pb, "/add-a", {"host": "b.weir.test", "addresses": ["127.0.0.2"]})
    w = acme.weir(pb)
    assert wait_for(lambda: "trying again in 5 s" in w.stderr()), w.describe()
    assert "still serving a temporary one" in w.stderr()
    assert self_signed(peer_cert(w.port))
    challtest(pb, "/clear-a", {"host": "b.weir.test"})
    got = wait_for(lambda: not self_signed(peer_cert(w.port)) and peer_cert(w.port), timeout=40)
    assert got, w.describe()


def test_the_acme_server_down_when_a_renewal_is_due(acme):
    pb = acme.pebble(validity=12)
    w = acme.weir(pb)
    first = wait_for(lambda: not self_signed(peer_cert(w.port)) and peer_cert(w.port))
    assert first, w.describe()
    pb.close()
    # Due at 2/3 of its life: the renewal fails, the certificate stays.
    assert wait_for(lambda: "the current certificate stays" in w.stderr(), timeout=30), \
        w.describe()
    assert peer_cert(w.port).serial_number == first.serial_number
    # A new ACME server on the same address: the next try renews.
    pb2 = Pebble(acme.tmp, acme.http_port, validity=3600)
    pb2.port, pb2.mgmt_port = pb.port, pb.mgmt_port
    pb2.dir = acme.tmp / "pebble2"
    pb2.dir.mkdir()
    acme.pebbles.append(pb2.start())
    # pebble2's own TLS certificate is signed by a new CA: weir was told to
    # trust pebble's; point the file at the new one (read at each order).
    (acme.tmp / "pebble" / "ca.crt").write_text((pb2.dir / "ca.crt").read_text())
    second = wait_for(lambda: peer_cert(w.port).serial_number != first.serial_number and
                      peer_cert(w.port), timeout=60)
    assert second and not self_signed(second), w.describe()


@pytest.mark.parametrize("body,expect", [
    ('acme = "letsencrypt"\ncert = "/x.pem"\ndomains = ["a.test"]\n',
     ":3: [certificates.site]: 'acme' certificates are obtained by weir: no 'cert' or 'key'"),
    ('acme = "letsencrypt"\n', ":2: [certificates.site]: 'acme' needs 'domains'"),
    ('acme = "http://ca/dir"\ndomains = ["a.test"]\n', ":2: [certificates.site] acme is"),
    ('acme = "letsencrypt"\ndomains = ["*.a.test"]\n',
     "domain '*.a.test' cannot be ordered (a DNS name; a wildcard"),
    ('acme = "letsencrypt"\ndomains = ["a.test"]\nkey_type = "dsa"\n',
     ":4: 'key_type' in [certificates.site] is 'dsa': expected \"ec256\""),
    ('acme = "letsencrypt"\ndomains = ["a.test"]\nacme_ca = "/nonexistent.pem"\n',
     ":4: [certificates.site]: acme_ca /nonexistent.pem cannot be read"),
    ('domains = ["a.test"]\n', "needs 'cert' (a PEM certificate file) or 'acme'"),
])
def test_acme_settings_are_checked(tmp_path, body, expect):
    import subprocess
    from conftest import binary, require_binary
    require_binary("weir")
    f = tmp_path / "w.toml"
    f.write_text("[certificates.site]\n" + body + '\n[servers.s]\naddr = "127.0.0.1:%d"\n'
                 'locations = ["l"]\ncertificates = ["site"]\n\n[locations.l]\necho = true\n'
                 % free_port())
    r = subprocess.run([binary("weir"), "-t", "-c", str(f)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 1 and expect in r.stderr, r.stderr


def test_letsencrypt_names_and_a_valid_acme_config(tmp_path):
    import subprocess
    from conftest import binary
    f = tmp_path / "w.toml"
    f.write_text('[certificates.site]\nacme = "letsencrypt-staging"\ndomains = ["a.test"]\n'
                 'storage = "%s"\nrenew_before = "720h"\n\n[servers.s]\naddr = "127.0.0.1:%d"\n'
                 'locations = ["l"]\ncertificates = ["site"]\n\n[locations.l]\necho = true\n'
                 % (tmp_path / "st", free_port()))
    r = subprocess.run([binary("weir"), "-t", "-c", str(f)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "st").exists()  # -t writes nothing


def test_a_reload_that_adds_a_domain_orders_again(acme, tmp_path):
    import signal
    pb = acme.pebble()
    w = acme.weir(pb)
    first = wait_for(lambda: not self_signed(peer_cert(w.port)) and peer_cert(w.port))
    assert first, w.describe()
    conf = sorted(tmp_path.glob("weir-*.toml"))[-1]
    conf.write_text(conf.read_text().replace('"b.weir.test"]', '"b.weir.test", "c.weir.test"]'))
    w.signal(signal.SIGHUP)

    def covers_c():
        c = peer_cert(w.port, "c.weir.test")
        names = c.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        return "c.weir.test" in names.value.get_values_for_type(x509.DNSName) and c
    got = wait_for(covers_c, timeout=40)
    assert got and not self_signed(got), w.describe()
    # Meanwhile and after, the old names kept a valid certificate.
    assert not self_signed(peer_cert(w.port, "a.weir.test"))


def test_storage_that_cannot_be_written(acme, tmp_path):
    pb = acme.pebble()
    w = acme.weir(pb, extra="")
    conf = sorted(tmp_path.glob("weir-*.toml"))[-1]
    w.stop()
    w.checked = True
    text = conf.read_text().replace('storage = "%s/acme"' % tmp_path,
                                    'storage = "/proc/weir-acme-test"')
    w2 = acme.weir_toml(text.replace(str(w.port), "@PORT@"))
    assert wait_for(lambda: "cannot make the storage directory /proc/weir-acme-test" in
                    w2.stderr()), w2.describe()
    assert self_signed(peer_cert(w2.port))  # still serving, the temporary one
    c = socket.create_connection(("127.0.0.1", w2.port), timeout=5)
    c.close()


HOOK = """#!/usr/bin/python3
import json, sys, urllib.request
op, name, value = sys.argv[1:4]
open(%(log)r, "a").write("%%s %%s %%s\\n" %% (op, name, value))
if %(fail)r:
    sys.exit(3)
path, body = ("/set-txt", {"host": name + ".", "value": value}) if op == "add" else \\
    ("/clear-txt", {"host": name + "."})
req = urllib.request.Request("http://127.0.0.1:%(port)d" + path, data=json.dumps(body).encode(),
                             method="POST")
urllib.request.urlopen(req, timeout=5).read()
"""


def hook(tmp_path, pb, fail=False):
    h = tmp_path / "dns-hook"
    h.write_text(HOOK % {"log": str(tmp_path / "hook.log"), "fail": fail,
                         "port": pb.chall_mgmt})
    h.chmod(0o755)
    return h


def test_dns01_through_a_hook_orders_a_wildcard(acme, tmp_path):
    pb = acme.pebble()
    h = hook(tmp_path, pb)
    # A wildcard and its base name: HTTP-01 could prove neither.
    w = acme.weir(pb, extra='dns_hook = "%s"\n' % h, domains=["*.w.weir.test", "w.weir.test"])
    got = wait_for(lambda: not self_signed(peer_cert(w.port, "x.w.weir.test")) and
                   peer_cert(w.port, "x.w.weir.test"), timeout=40)
    assert got, w.describe()
    names = got.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert sorted(names.value.get_values_for_type(x509.DNSName)) == ["*.w.weir.test",
                                                                     "w.weir.test"]
    log = (tmp_path / "hook.log").read_text().split("\n")
    adds = [l for l in log if l.startswith("add ")]
    removes = [l for l in log if l.startswith("remove ")]
    assert sorted(l.split()[1] for l in adds) == ["_acme-challenge.w.weir.test"] * 2, log
    assert len(removes) == 2, log


def test_a_failing_dns_hook_fails_the_order(acme, tmp_path):
    pb = acme.pebble()
    h = hook(tmp_path, pb, fail=True)
    w = acme.weir(pb, extra='dns_hook = "%s"\n' % h)
    assert wait_for(lambda: "exited 3" in w.stderr()), w.describe()
    assert "trying again in 5 s" in w.stderr()
    assert self_signed(peer_cert(w.port))


def test_tls_alpn01_on_the_tls_listener(acme, tmp_path):
    """challenge = "tls-alpn-01": pebble checks on weir's TLS port (no
    plain listener needed); other handshakes meanwhile get the usual
    certificate and protocols."""
    tls_port = free_port()
    pb = Pebble(acme.tmp, acme.http_port, tls_port=tls_port).start()
    acme.pebbles.append(pb)
    text = CONFIG % 'challenge = "tls-alpn-01"\n'
    # No plain server: HTTP-01 could not work; the admin API is the port
    # the harness waits for.
    text = text[:text.index("[servers.http]")] + text[text.index("[servers.https]"):]
    text = text.replace('addr = "127.0.0.1:@ADMIN@"', 'addr = "127.0.0.1:@PORT@"').replace(
        'addr = "127.0.0.1:@PORT@"\nlocations = ["all"]\ncertificates',
        'addr = "127.0.0.1:%d"\nlocations = ["all"]\ncertificates' % tls_port)
    text = text.replace("@DIR@", pb.directory).replace("@CA@", pb.ca)
    w = acme.weir_toml(text)
    got = wait_for(lambda: not self_signed(peer_cert(tls_port)) and peer_cert(tls_port),
                   timeout=40)
    assert got, w.describe()
    assert "certificate obtained" in w.stderr()
    # Normal clients get http/1.1 (or h2), never acme-tls/1.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["acme-tls/1", "http/1.1"])
    with socket.create_connection(("127.0.0.1", tls_port), timeout=5) as s:
        with ctx.wrap_socket(s, server_hostname="a.weir.test") as t:
            assert t.selected_alpn_protocol() == "http/1.1"


@pytest.mark.parametrize("body,expect", [
    ('challenge = "dns-01"\n', "'challenge' in [certificates.site] is 'dns-01': expected "
     "\"http-01\" (default)"),
    ('challenge = "bogus"\n', "is 'bogus': expected \"http-01\" (default)"),
])
def test_challenge_settings(tmp_path, body, expect):
    import subprocess
    from conftest import binary
    f = tmp_path / "w.toml"
    f.write_text('[certificates.site]\nacme = "letsencrypt"\ndomains = ["a.test"]\n' + body +
                 '\n[servers.s]\naddr = "127.0.0.1:%d"\nlocations = ["l"]\n'
                 'certificates = ["site"]\n\n[locations.l]\necho = true\n' % free_port())
    r = subprocess.run([binary("weir"), "-t", "-c", str(f)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 1 and expect in r.stderr, r.stderr


def fleet_instance(start_proc, e, tmp_path, pb, id, admin, http, https, domain, ttl="3s",
                   challenge="http-01"):
    """weir -c etcd://.../p --local FILE: instance id of a fleet whose
    [certificates.site] (domain) is ordered from pebble pb."""
    from conftest import binary, require_binary
    require_binary("weir")
    local = tmp_path / ("local-%s.toml" % id)
    local.write_text(
        '[basic]\ninstance_id = "%s"\ninstance_ttl = "%s"\n\n'
        '[admin]\naddr = "127.0.0.1:%d"\n\n'
        '[servers.http]\naddr = "127.0.0.1:%d"\nlocations = ["all"]\n\n'
        '[servers.https]\naddr = "127.0.0.1:%d"\nlocations = ["all"]\n'
        'certificates = ["site"]\n\n'
        '[certificates.site]\nacme = "%s"\nacme_ca = "%s"\n'
        'domains = ["%s"]\nstorage = "%s"\nchallenge = "%s"\n'
        % (id, ttl, admin, http, https, pb.directory, pb.ca, domain, tmp_path / ("acme-" + id),
           challenge))
    return start_proc([binary("weir"), "-c", e.url("p"), "--local", str(local)], https,
                      "weir-" + id)


@pytest.mark.parametrize("challenge", ["http-01", "tls-alpn-01"])
def test_a_fleet_on_etcd_orders_once_and_shares_it(tmp_path, start_proc, challenge):
    """Two instances on one etcd prefix: the lock holder orders; its
    HTTP-01 answer, or its TLS-ALPN-01 key authorization, is in etcd, so
    the other instance answers the CA (pebble asks the other one here, on
    its plain or its TLS port); the certificate reaches both through
    etcd."""
    from conftest import require_binary
    from etcdutil import Etcd
    require_binary("weir")
    e = Etcd(tmp_path).start()
    try:
        ports = {k: free_port() for k in ("ha", "sa", "aa", "hb", "sb", "ab")}
        # The CA asks instance b.
        pb = Pebble(tmp_path, ports["hb"], tls_port=ports["sb"]).start()
        try:
            e.put("/p/locations/all", "echo = true\n")
            ws = []
            for x in ("a", "b"):
                p = fleet_instance(start_proc, e, tmp_path, pb, x, ports["a" + x],
                                   ports["h" + x], ports["s" + x], "fleet.weir.test",
                                   challenge=challenge)
                ws.append(p)
                if x == "a":  # a holds the lock before b starts
                    import urllib.request

                    def holds():
                        u = "http://127.0.0.1:%d/api/fleet" % ports["aa"]
                        return json.loads(urllib.request.urlopen(u, timeout=5).read())[
                            "lock"]["held"]
                    assert wait_for(holds, timeout=15), p.describe()
            a, b = ws
            ca = wait_for(lambda: not self_signed(peer_cert(ports["sa"], "fleet.weir.test")) and
                          peer_cert(ports["sa"], "fleet.weir.test"), timeout=40)
            assert ca, a.describe() + b.describe()
            cb = wait_for(lambda: peer_cert(ports["sb"], "fleet.weir.test").serial_number ==
                          ca.serial_number, timeout=20)
            assert cb, b.describe()
            assert "ordering a certificate" in a.stderr()
            assert "ordering a certificate" not in b.stderr(), b.stderr()
            assert "the fleet's lock holder orders it" in b.stderr()
            assert "the fleet's certificate loaded from etcd" in b.stderr()
            # b confirmed each challenge it gives (a waited for it, not in vain).
            assert "did not confirm the challenge" not in a.stderr(), a.stderr()
            # The challenge keys are gone; the certificate stays in etcd.
            keys = e.ctl("get", "--prefix", "/p/acme/", "--keys-only").split()
            assert keys == ["/p/acme/site"], keys
        finally:
            pb.close()
    finally:
        e.close()


def test_certificate_events_reach_the_webhook(acme, tmp_path):
    from test_webhook import Receiver
    r = Receiver()
    try:
        pb = acme.pebble()
        challtest(pb, "/add-a", {"host": "b.weir.test", "addresses": ["127.0.0.2"]})
        text = (CONFIG % "").replace("@HTTP@", str(acme.http_port)).replace(
            "@ADMIN@", str(acme.admin_port)).replace("@DIR@", pb.directory).replace(
            "@CA@", pb.ca)
        w = acme.weir_toml('[basic]\nwebhook = "%s"\n' % r.url + text)
        fail = wait_for(lambda: r.events("certificate_fail"))
        assert fail and "certificate site:" in fail[0]["message"], r.bodies
        assert "trying again in 5 s" in fail[0]["message"]
        fd = fail[0]["data"]
        assert fd["certificate"] == "site" and fd["retry_in_s"] == 5 and fd["error"], fd
        challtest(pb, "/clear-a", {"host": "b.weir.test"})
        ok = wait_for(lambda: r.events("certificate"), timeout=40)
        assert ok and "certificate site obtained for a.weir.test" in ok[0]["message"], r.bodies
        od = ok[0]["data"]
        assert od["certificate"] == "site" and od["action"] == "obtained", od
        assert od["domains"] == ["a.weir.test", "b.weir.test"] and od["expires_in_s"] > 86400, od
        assert w.port
    finally:
        r.close()


def test_the_lock_holder_waits_for_every_instance_to_confirm_a_challenge(tmp_path, start_proc):
    """Before it asks the CA to validate, the lock holder waits until every
    other live instance confirms it gives the answer (the CA may reach any).
    Here two instances are stand-ins registered by the test: one confirms
    with the right key authorization and the challenge key's revision, the
    other with the right key authorization of an older revision (a late
    confirmation of an earlier order), so the holder waits its 10 s, names
    only that one, and then orders anyway."""
    import base64
    import subprocess
    import threading
    from conftest import require_binary
    from etcdutil import ETCDCTL, Etcd
    require_binary("weir")
    e = Etcd(tmp_path).start()
    try:
        http, https, admin = free_port(), free_port(), free_port()
        pb = Pebble(tmp_path, http).start()
        try:
            e.put("/p/locations/all", "echo = true\n")
            for g in ("ghost-ok", "ghost-bad"):
                e.put("/p/instances/" + g, json.dumps({"id": g}))
            w = subprocess.Popen([ETCDCTL, "--endpoints", e.endpoints(), "watch", "--prefix",
                                  "/p/acme/http-01/", "-w", "json"], stdout=subprocess.PIPE,
                                 text=True, env=dict(os.environ, ETCDCTL_API="3"))
            acked = []

            def confirm():
                for line in iter(w.stdout.readline, ""):
                    for ev in json.loads(line).get("Events") or []:
                        if ev.get("type") in (1, "DELETE"):
                            continue
                        kv = ev["kv"]
                        key = base64.b64decode(kv["key"]).decode()
                        value = base64.b64decode(kv["value"]).decode()
                        rev = int(kv["mod_revision"])
                        token = key.rsplit("/", 1)[1]
                        d = "/p/acme/ack/http-01/%s/" % token
                        e.put(d + "ghost-ok", "%d %s" % (rev, value))
                        e.put(d + "ghost-bad", "%d %s" % (rev - 1, value))
                        acked.append(token)
            t = threading.Thread(target=confirm, daemon=True)
            t.start()
            a = fleet_instance(start_proc, e, tmp_path, pb, "a", admin, http, https,
                               "wait.weir.test")
            got = wait_for(lambda: not self_signed(peer_cert(https, "wait.weir.test")),
                           timeout=60)
            assert got, a.describe()
            err = a.stderr()
            assert "1 instance(s) did not confirm the challenge in 10 s (ghost-bad)" in err, err
            assert "not waiting for them for 10 min" in err, err
            assert acked, err
            # The holder's clean-up took the challenge and the confirmations.
            assert wait_for(lambda: e.ctl("get", "--prefix", "/p/acme/ack/", "--keys-only")
                            .split() == [], timeout=10), e.ctl("get", "--prefix", "/p/acme/")
            w.terminate()
            w.wait(timeout=10)
        finally:
            pb.close()
    finally:
        e.close()


def test_a_holder_killed_mid_challenge_leaves_no_challenge_behind(tmp_path, start_proc):
    """The challenge in etcd is on the holder's lease: a holder killed
    while it waits for the fleet's confirmations leaves nothing that the
    other instances would keep answering (or that would fill their tables)
    once its lease has expired."""
    from conftest import require_binary
    from etcdutil import Etcd
    require_binary("weir")
    e = Etcd(tmp_path).start()
    try:
        http, https, admin = free_port(), free_port(), free_port()
        pb = Pebble(tmp_path, http).start()
        try:
            e.put("/p/locations/all", "echo = true\n")
            e.put("/p/instances/ghost", json.dumps({"id": "ghost"}))  # never confirms
            a = fleet_instance(start_proc, e, tmp_path, pb, "a", admin, http, https,
                               "gone.weir.test", ttl="2s")

            def challenges():
                return e.ctl("get", "--prefix", "/p/acme/http-01/", "--keys-only").split()
            assert wait_for(challenges, timeout=20), a.describe()
            a.proc.kill()
            a.proc.wait(timeout=10)
            a.checked = True
            assert wait_for(lambda: not challenges(), timeout=15), challenges()
        finally:
            pb.close()
    finally:
        e.close()
