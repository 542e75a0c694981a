"""ACME answers pebble never gives, through a proxy in front of a real
pebble (acmeutil.FaultProxy): rateLimited on a new order and on the
account (its Retry-After honoured, a huge one capped, none means the
backoff), ARI (RFC 9773) renewal windows (a window that has begun renews a
fresh certificate at the next look, and the identifier asked is the
served certificate's; a broken renewalInfo falls back to the lifetime
rule), and hostile documents (a token that would walk a path, an order
whose authorizations are not URLs, an answer that is not JSON). Through
all of them the name keeps the certificate it had, weir keeps serving,
and the error says why."""
import base64
import datetime
import json
import os
import re
import socket
import ssl
import time
import urllib.request

import pytest
from cryptography import x509

import conftest
from acmeutil import PEBBLE, FaultProxy, Pebble
from conftest import free_port

pytestmark = [pytest.mark.skipif(not os.access(PEBBLE, os.X_OK), reason="pebble not installed"),
              pytest.mark.deadline(120)]

CONFIG = """
[admin]
addr = "127.0.0.1:@ADMIN@"

[servers.http]
addr = "127.0.0.1:@HTTP@"
locations = ["all"]

[servers.https]
addr = "127.0.0.1:@PORT@"
locations = ["all"]
certificates = ["site"]

[certificates.site]
acme = "@DIR@"
acme_ca = "@CA@"
domains = ["a.weir.test"]
storage = "@TMP@/acme"

[locations.all]
echo = true
"""

RATE = b'{"type":"urn:ietf:params:acme:error:rateLimited","detail":"too many new orders",' \
       b'"status":429}'


def peer_cert(port):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        with ctx.wrap_socket(s, server_hostname="a.weir.test") as t:
            return x509.load_der_x509_certificate(t.getpeercert(binary_form=True))


def issued(port):
    c = peer_cert(port)
    return c if c.issuer != c.subject else None


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def cert_id(cert):
    """RFC 9773's identifier, computed here independently of weir."""
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    n = cert.serial_number
    der = n.to_bytes((n.bit_length() + 8) // 8, "big")  # DER: a leading 0 when the top bit is set
    return "%s.%s" % (b64url(aki.key_identifier), b64url(der))


def new_order(method, path, body):
    """The JWS payload of a new-order request (a dict), or None."""
    if method != "POST" or not path.endswith("/order-plz"):
        return None
    jws = json.loads(body)
    pad = "=" * (-len(jws["payload"]) % 4)
    return json.loads(base64.urlsafe_b64decode(jws["payload"] + pad))


def rfc3339(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def metric(admin_port, name):
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % admin_port,
                                  timeout=5).read().decode()
    m = re.search(re.escape(name) + r" (\d+)", text)
    return int(m.group(1)) if m else None


class Setup:
    def __init__(self, tmp_path, weir_toml):
        self.tmp, self.weir_toml = tmp_path, weir_toml
        self.http_port, self.admin_port = free_port(), free_port()
        self.pebble = Pebble(tmp_path, self.http_port).start()
        self.proxy = FaultProxy(tmp_path, self.pebble)

    def weir(self):
        text = CONFIG.replace("@HTTP@", str(self.http_port)).replace(
            "@ADMIN@", str(self.admin_port)).replace("@DIR@", self.proxy.directory).replace(
            "@CA@", self.proxy.ca)
        return self.weir_toml(text)

    def close(self):
        self.proxy.close()
        self.pebble.close()


@pytest.fixture
def acme(tmp_path, weir_toml):
    s = Setup(tmp_path, weir_toml)
    yield s
    s.close()


def once(match, answer):
    """A rule that answers `answer` to the first request `match` accepts."""
    used = []

    def rule(method, path, body):
        if not used and match(method, path):
            used.append(time.monotonic())
            return answer
        return None
    rule.used = used
    return rule


def test_a_rate_limited_order_waits_its_retry_after_then_orders(acme):
    rule = once(lambda m, p: m == "POST" and p.startswith("/order-plz"),
                (429, {"Content-Type": "application/problem+json", "Retry-After": "9"}, RATE))
    acme.proxy.rules.append(rule)
    w = acme.weir()
    assert conftest.wait_for(lambda: "trying again in 9 s" in w.stderr(), 30), w.describe()
    err = w.stderr()
    assert "urn:ietf:params:acme:error:rateLimited: too many new orders" in err, err
    assert "still serving a temporary one" in err
    got = conftest.wait_for(lambda: issued(w.port), 40)
    assert got, w.describe()
    orders = acme.proxy.requests("POST", "/order-plz")
    assert len(orders) == 2 and orders[0][3] == 429 and orders[1][3] == 201, orders
    # Not before the CA said (the first retry of a failure is 5 s otherwise).
    assert orders[1][0] - orders[0][0] >= 8.5, orders
    assert metric(acme.admin_port, 'weir_acme_orders_total{result="failed"}') == 1
    assert metric(acme.admin_port, 'weir_acme_orders_total{result="succeeded"}') == 1


def test_a_rate_limited_account_without_retry_after_backs_off(acme):
    rule = once(lambda m, p: m == "POST" and p.startswith("/sign-me-up"),
                (429, {"Content-Type": "application/problem+json"}, RATE))
    acme.proxy.rules.append(rule)
    w = acme.weir()
    assert conftest.wait_for(lambda: "trying again in 5 s" in w.stderr(), 30), w.describe()
    assert conftest.wait_for(lambda: issued(w.port), 40), w.describe()
    accounts = acme.proxy.requests("POST", "/sign-me-up")
    assert accounts[0][3] == 429 and accounts[-1][3] in (200, 201), accounts
    assert accounts[1][0] - accounts[0][0] >= 4.5, accounts


def test_a_huge_retry_after_is_capped_at_a_day(acme):
    acme.proxy.rules.append(
        lambda m, p, b: (429, {"Content-Type": "application/problem+json",
                               "Retry-After": "99999999999999999999"}, RATE)
        if m == "POST" and p.startswith("/order-plz") else None)
    w = acme.weir()
    assert conftest.wait_for(lambda: "trying again in 86400 s" in w.stderr(), 30), w.describe()
    time.sleep(2)
    assert len(acme.proxy.requests("POST", "/order-plz")) == 1
    assert peer_cert(w.port).issuer == peer_cert(w.port).subject  # still the temporary one
    c = socket.create_connection(("127.0.0.1", w.port), timeout=5)
    t = ssl._create_unverified_context().wrap_socket(c, server_hostname="a.weir.test")
    t.sendall(b"GET / HTTP/1.1\r\nHost: a.weir.test\r\n\r\n")
    assert t.recv(4096).startswith(b"HTTP/1.1 200")
    t.close()


def restarted(acme, w):
    """The same weir started again on its stored certificate."""
    w.stop()
    w.checked = True
    return acme.weir()


def test_ari_a_window_that_has_begun_renews_a_fresh_certificate(acme):
    later = lambda cid: (200, json.dumps({"suggestedWindow": {
        "start": rfc3339(time.time() + 30 * 86400),
        "end": rfc3339(time.time() + 31 * 86400)}}).encode())
    acme.proxy.renewal_info = later
    orders = []

    def new_orders(method, path, body):
        payload = new_order(method, path, body)
        if payload is not None:
            orders.append(payload)
    acme.proxy.rules.append(new_orders)
    w = acme.weir()
    first = conftest.wait_for(lambda: issued(w.port), 40)
    assert first, w.describe()
    assert len(orders) == 1 and "replaces" not in orders[0], orders  # a first order
    # Restarted on the stored certificate: ARI is asked for it; the window
    # is a month away: nothing is ordered.
    w = restarted(acme, w)
    assert conftest.wait_for(lambda: acme.proxy.ari_asked, 20), w.describe()
    assert acme.proxy.ari_asked[-1] == cert_id(first)
    time.sleep(1)
    assert "renewing" not in w.stderr()
    assert issued(w.port).serial_number == first.serial_number
    # The CA moves the window to now (as for a revocation): the next start
    # renews at once, although the certificate has years left.
    acme.proxy.renewal_info = lambda cid: (200, json.dumps({"suggestedWindow": {
        "start": rfc3339(time.time() - 120), "end": rfc3339(time.time() - 60)}}).encode())
    asked = len(acme.proxy.ari_asked)
    w = restarted(acme, w)
    second = conftest.wait_for(lambda: (issued(w.port) or first).serial_number !=
                               first.serial_number and issued(w.port), 40)
    assert second, w.describe()
    assert "renewing a certificate for a.weir.test" in w.stderr()
    assert acme.proxy.ari_asked[asked] == cert_id(first)
    # The renewal names the certificate it replaces (RFC 9773 5).
    assert orders[-1].get("replaces") == cert_id(first), orders
    assert first.not_valid_after > datetime.datetime.utcnow() + datetime.timedelta(days=30)


@pytest.mark.parametrize("status,problem", [
    (409, b"alreadyReplaced"),
    # Boulder, when another account (another instance of a fleet) ordered
    # the certificate being replaced
    (403, b"unauthorized"),
])
def test_ari_a_refused_replaces_is_renewed_by_a_plain_order(acme, status, problem):
    """The CA refuses what the renewal replaces (already replaced by an
    order this instance lost track of; another account's certificate): the
    renewal is ordered again without "replaces", at once, not after a
    backoff."""
    now = lambda cid: (200, json.dumps({"suggestedWindow": {
        "start": rfc3339(time.time() - 120), "end": rfc3339(time.time() - 60)}}).encode())
    w = acme.weir()
    first = conftest.wait_for(lambda: issued(w.port), 40)
    assert first, w.describe()
    acme.proxy.renewal_info = now
    sent = []

    def refuse_replaces(method, path, body):
        payload = new_order(method, path, body)
        if payload is not None:
            sent.append(payload)
            if "replaces" in payload:
                return (status, {"Content-Type": "application/problem+json"},
                        b'{"type":"urn:ietf:params:acme:error:' + problem +
                        b'","detail":"refused","status":%d}' % status)
        return None
    acme.proxy.rules.append(refuse_replaces)
    w = restarted(acme, w)
    second = conftest.wait_for(lambda: (issued(w.port) or first).serial_number !=
                               first.serial_number and issued(w.port), 40)
    assert second, w.describe()
    assert [("replaces" in p) for p in sent] == [True, False], sent
    assert "trying again" not in w.stderr(), w.stderr()
    assert 'ordering again without "replaces"' in w.stderr()


@pytest.mark.parametrize("answer", [(500, b"oops"), (200, b"not json"),
                                    (200, b'{"suggestedWindow":{"start":"2026-01-02T00:00:00Z",'
                                          b'"end":"2026-01-01T00:00:00Z"}}'),
                                    (404, b"{}")])
def test_ari_a_broken_renewal_info_falls_back_to_the_lifetime(acme, answer):
    acme.proxy.renewal_info = lambda cid: answer
    w = acme.weir()
    first = conftest.wait_for(lambda: issued(w.port), 40)
    assert first, w.describe()
    w = restarted(acme, w)
    assert conftest.wait_for(lambda: "no renewal information" in w.stderr(), 20), w.describe()
    time.sleep(1)
    assert "renewing" not in w.stderr()
    assert issued(w.port).serial_number == first.serial_number


@pytest.mark.parametrize("what,answer,expect", [
    ("authZ", {"status": "pending", "identifier": {"type": "dns", "value": "a.weir.test"},
               "challenges": [{"type": "http-01", "url": "https://x/c",
                               "token": "../../../etc/passwd"}]},
     "no usable http-01 challenge for a.weir.test"),
    ("order-plz", {"status": "pending", "finalize": "https://x/f",
                   "authorizations": [17, None]},
     "an order without a list of authorization URLs"),
    ("order-plz", ["not", "an", "object"], "the answer is not a JSON object"),
    ("authZ", "<html>", "the answer is not a JSON object"),
])
def test_hostile_documents_fail_the_order_cleanly(acme, what, answer, expect):
    body = answer.encode() if isinstance(answer, str) else json.dumps(answer).encode()
    status = 201 if what == "order-plz" else 200
    headers = {"Content-Type": "application/json"}
    if what == "order-plz":
        headers["Location"] = "https://127.0.0.1:%d/my-order/1" % acme.proxy.port
    acme.proxy.rules.append(
        lambda m, p, b: (status, headers, body) if m == "POST" and what in p else None)
    w = acme.weir()
    assert conftest.wait_for(lambda: "trying again in 5 s" in w.stderr(), 30), w.describe()
    assert expect in w.stderr(), w.stderr()
    assert not list((acme.tmp / "acme").glob("*passwd*"))
    assert peer_cert(w.port).issuer == peer_cert(w.port).subject


def test_an_answer_over_4_mib_is_refused(acme):
    big = b'{"status":"pending","pad":"' + b"x" * (5 << 20) + b'"}'
    acme.proxy.rules.append(
        lambda m, p, b: (201, {"Content-Type": "application/json"}, big)
        if m == "POST" and p.startswith("/order-plz") else None)
    w = acme.weir()
    assert conftest.wait_for(lambda: "an answer over 4 MiB" in w.stderr(), 30), w.describe()
    assert conftest.wait_for(lambda: "trying again in" in w.stderr(), 10)
