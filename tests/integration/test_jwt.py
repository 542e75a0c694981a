"""The jwt plugin (docs/plugins.md) with tokens signed by PyJWT
(python3-jwt) and keys made by python3-cryptography: every algorithm,
every claim check, the token in a header, a cookie or the query, claims
passed upstream, the attacks (alg none, algorithm confusion, tampering,
two tokens, a forged claim field), and keys from a JWKS URL, fetched,
refreshed and rotated while traffic runs."""
import base64
import json
import subprocess
import threading
import time

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

import backends as B
from conftest import binary, require_binary

SECRET = "0123456789abcdef0123456789abcdef-hs"

CONF = """
[servers.s]
addr = "127.0.0.1:@PORT@"
locations = ["l"]

[plugins.jwt]
category = "jwt"
%(keys)s

[locations.l]
upstream = "u"
plugins = ["jwt"]

[upstreams.u]
addrs = ["@B@"]
"""


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    out = {}
    made = {
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "rsa2": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "p256": ec.generate_private_key(ec.SECP256R1()),
        "p384": ec.generate_private_key(ec.SECP384R1()),
        "ed": ed25519.Ed25519PrivateKey.generate(),
        "small": rsa.generate_private_key(public_exponent=65537, key_size=1024),
    }
    for name, k in made.items():
        pub = k.public_key().public_bytes(serialization.Encoding.PEM,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
        (d / (name + ".pem")).write_bytes(pub)
        out[name] = (k, str(d / (name + ".pem")))
    return out


@pytest.fixture
def start(weir_toml, backend):
    def run(keys_toml, threads=1, **addrs):
        b = backend(B.echo())
        return weir_toml(CONF % {"keys": keys_toml}, threads=threads, B=b, **addrs), b
    return run


def claims(**kw):
    c = {"sub": "alice", "exp": int(time.time()) + 300}
    c.update(kw)
    return {k: v for k, v in c.items() if v is not None}


def tok(key, alg="HS256", headers=None, **kw):
    return pyjwt.encode(claims(**kw), key, algorithm=alg, headers=headers)


def get(port, token=None, headers=(), target="/x"):
    hs = list(headers)
    if token is not None:
        hs.append(("Authorization", "Bearer " + token))
    raw = "".join("%s: %s\r\n" % kv for kv in hs)
    return B.request(port, ("GET %s HTTP/1.1\r\nHost: t\r\n%sConnection: close\r\n\r\n"
                            % (target, raw)).encode(), "GET", timeout=15)


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# ---- HMAC ----

@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hmac_algorithms(start, alg):
    w, b = start('secret = "%s"' % SECRET)
    r = get(w.port, tok(SECRET, alg))
    assert r.status == 200 and b.request_count() == 1
    assert get(w.port, tok(SECRET + "x", alg)).status == 401


def test_refusals_with_a_secret(start):
    w, b = start('secret = "%s"' % SECRET)
    good = tok(SECRET)
    h, p, s = good.split(".")
    other = tok(SECRET, sub="mallory").split(".")[1]
    none_tok = b64(b'{"alg":"none","typ":"JWT"}') + "." + p + "."
    cases = {
        "no token": None,
        "alg none": none_tok,
        "alg None": b64(b'{"alg":"None"}') + "." + p + ".",
        "tampered claims": ".".join([h, other, s]),
        "no signature": h + "." + p + ".",
        "two parts": h + "." + p,
        "four parts": good + ".x",
        "padded": good + "=",
        "bad base64": h + "." + p + "." + s[:-1] + "*",
        "spare bits": h + "." + p + "." + s[:-1] + chr(ord(s[-1]) ^ 1),
        "header not json": b64(b"{alg") + "." + p + "." + s,
        "claims not an object": tok(SECRET).split(".")[0] + "." + b64(b"[1]") + "." + s,
        "crit": pyjwt.encode(claims(), SECRET, algorithm="HS256",
                             headers={"crit": ["exp"], "exp": 1}),
        "empty": "",
    }
    for name, t in cases.items():
        r = get(w.port, t)
        assert r.status == 401, (name, r.status)
        www = r.headers.get("www-authenticate")
        assert www in ("Bearer", 'Bearer error="invalid_token"'), (name, www)
    assert b.request_count() == 0
    # two Authorization fields, one of them good
    r = get(w.port, good, headers=[("Authorization", "Bearer x")])
    assert r.status == 401


def test_duplicate_json_keys_are_refused(start):
    """{"alg":"HS256","alg":"none"}: parsers that keep the first and those
    that keep the last disagree, so neither is taken."""
    w, b = start('secret = "%s"' % SECRET)
    import hashlib
    import hmac
    h = b64(b'{"alg":"HS256","alg":"none"}')
    p = b64(json.dumps(claims()).encode())
    sig = b64(hmac.new(SECRET.encode(), (h + "." + p).encode(), hashlib.sha256).digest())
    assert get(w.port, h + "." + p + "." + sig).status == 401


# ---- public keys ----

@pytest.mark.parametrize("name,alg", [("rsa", "RS256"), ("rsa", "RS384"), ("rsa", "RS512"),
                                      ("rsa", "PS256"), ("rsa", "PS384"), ("rsa", "PS512"),
                                      ("p256", "ES256"), ("p384", "ES384"), ("ed", "EdDSA")])
def test_public_key_algorithms(start, keys, name, alg):
    key, pem = keys[name]
    w, b = start('public_key_file = "%s"' % pem)
    assert get(w.port, tok(key, alg)).status == 200
    other = {"rsa": "rsa2", "p256": "p256", "p384": "p384", "ed": "ed"}[name]
    if other != name:
        assert get(w.port, tok(keys[other][0], alg)).status == 401


def test_algorithm_confusion_is_refused(start, keys):
    """The classic attack: an HS256 token whose secret is the server's RSA
    public key. A public key verifies only its own algorithms."""
    key, pem = keys["rsa"]
    w, b = start('public_key_file = "%s"' % pem)
    pub = open(pem, "rb").read()
    import hashlib
    import hmac
    h = b64(b'{"alg":"HS256","typ":"JWT"}')
    p = b64(json.dumps(claims()).encode())
    sig = b64(hmac.new(pub, (h + "." + p).encode(), hashlib.sha256).digest())
    assert get(w.port, h + "." + p + "." + sig).status == 401
    # and an ES256 token for an RSA key
    assert get(w.port, tok(keys["p256"][0], "ES256")).status == 401


def test_algorithms_restrict(start, keys):
    key, pem = keys["rsa"]
    w, b = start('public_key_file = "%s"\nalgorithms = ["PS256"]' % pem)
    assert get(w.port, tok(key, "PS256")).status == 200
    assert get(w.port, tok(key, "RS256")).status == 401


def test_ecdsa_signature_in_der_is_refused(start, keys):
    """JWS wants r || s; a DER signature is another encoding: refused."""
    key, pem = keys["p256"]
    w, b = start('public_key_file = "%s"' % pem)
    from cryptography.hazmat.primitives import hashes
    h = b64(b'{"alg":"ES256"}')
    p = b64(json.dumps(claims()).encode())
    der = key.sign((h + "." + p).encode(), ec.ECDSA(hashes.SHA256()))
    assert get(w.port, h + "." + p + "." + b64(der)).status == 401


# ---- claims ----

def test_claims(start):
    now = int(time.time())
    w, b = start('secret = "%s"\nissuer = "https://idp.test/"\naudience = ["api", "web"]\n'
                 'leeway = "30s"' % SECRET)
    ok = dict(iss="https://idp.test/", aud="api")
    assert get(w.port, tok(SECRET, **ok)).status == 200
    assert get(w.port, tok(SECRET, iss="https://idp.test/", aud=["x", "web"])).status == 200
    assert get(w.port, tok(SECRET, exp=now - 10, **ok)).status == 200, "within the leeway"
    refused = {
        "expired": dict(exp=now - 60, **ok),
        "not yet": dict(nbf=now + 60, **ok),
        "issuer": dict(iss="https://evil.test/", aud="api"),
        "no issuer": dict(aud="api"),
        "audience": dict(iss="https://idp.test/", aud="other"),
        "audience list": dict(iss="https://idp.test/", aud=["a", "b"]),
        "no audience": dict(iss="https://idp.test/"),
        "exp a string": dict(exp="never", **ok),
    }
    for name, kw in refused.items():
        assert get(w.port, tok(SECRET, **kw)).status == 401, name
    assert get(w.port, tok(SECRET, nbf=now + 10, **ok)).status == 200, "nbf within the leeway"


def test_require_exp(start):
    w, b = start('secret = "%s"\nrequire_exp = true' % SECRET)
    assert get(w.port, tok(SECRET, exp=None)).status == 401
    assert get(w.port, tok(SECRET)).status == 200


def test_exp_is_optional_by_default(start):
    w, b = start('secret = "%s"' % SECRET)
    assert get(w.port, tok(SECRET, exp=None)).status == 200


# ---- where the token is, and what goes upstream ----

def test_claims_headers_and_forged_fields(start):
    w, b = start('secret = "%s"\nclaims_headers = ["sub: X-User", "roles: X-Roles", '
                 '"admin: X-Admin", "n: X-N", "obj: X-Obj"]' % SECRET)
    t = tok(SECRET, roles=["dev", "ops"], admin=False, n=42, obj={"a": 1})
    r = get(w.port, t, headers=[("X-User", "root"), ("X-Obj", "forged"), ("x-roles", "admin")])
    assert r.status == 200
    up = b.requests[0].headers
    assert up.get("x-user") == "alice" and up.get("x-roles") == "dev,ops"
    assert up.get("x-admin") == "false" and up.get("x-n") == "42"
    assert up.get("x-obj") is None, "an object claim is not a field; the forged one is gone"
    assert up.get("authorization", "").startswith("Bearer ")


def test_cookie_and_hide(start):
    w, b = start('secret = "%s"\ncookie = "jwt"' % SECRET)
    assert get(w.port, headers=[("Cookie", "a=1; jwt=%s" % tok(SECRET))]).status == 200
    assert get(w.port, tok(SECRET)).status == 401, "the header is not where it looks"


def test_query_and_hide(start):
    w, b = start('secret = "%s"\nquery = "token"\nhide_credentials = true' % SECRET)
    r = get(w.port, target="/x?a=1&token=%s&b=2" % tok(SECRET))
    assert r.status == 200 and b.requests[0].path == "/x?a=1&b=2"
    t = tok(SECRET)
    assert get(w.port, target="/x?token=%s&token=%s" % (t, t)).status == 401


def test_header_hide_and_raw_token(start):
    w, b = start('secret = "%s"\nheader = "X-Token"\nhide_credentials = true' % SECRET)
    r = get(w.port, headers=[("X-Token", tok(SECRET))])
    assert r.status == 200 and b.requests[0].headers.get("x-token") is None


def test_delay(start):
    w, b = start('secret = "%s"\ndelay = "300ms"' % SECRET)
    t0 = time.monotonic()
    assert get(w.port, "bad.token.here").status == 401
    assert time.monotonic() - t0 >= 0.28


# ---- JWKS ----

class Jwks:
    """A JWKS endpoint whose keys the test changes; counts fetches."""

    def __init__(self, backend):
        self.doc = {"keys": []}
        self.fetches = 0
        self.status = 200
        self.lock = threading.Lock()

        def handler(conn, req):
            with self.lock:
                self.fetches += 1
                body = json.dumps(self.doc).encode()
                status = self.status
            conn.send(B.response_head(status, [("Content-Type", "application/json"),
                                               ("Content-Length", str(len(body)))]) + body)
        self.b = backend(handler)

    def set(self, *jwks):
        with self.lock:
            self.doc = {"keys": list(jwks)}


def jwk(key, kid, alg=None):
    from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
    pub = key.public_key()
    algo = (RSAAlgorithm if isinstance(pub, rsa.RSAPublicKey) else
            ECAlgorithm if isinstance(pub, ec.EllipticCurvePublicKey) else OKPAlgorithm)
    d = json.loads(algo.to_jwk(pub))
    d["kid"] = kid
    if alg:
        d["alg"] = alg
    return d


def test_jwks_keys_of_every_type(start, keys, backend):
    j = Jwks(backend)
    j.set(jwk(keys["rsa"][0], "r1"), jwk(keys["p256"][0], "e1"), jwk(keys["p384"][0], "e2"),
          jwk(keys["ed"][0], "o1"), {"kty": "oct", "kid": "s1", "k": b64(SECRET.encode())},
          {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
          {"kty": "EC", "crv": "P-521", "kid": "x", "x": "AA", "y": "AA"},
          jwk(keys["small"][0], "weak"))
    w, b = start('jwks_url = "http://@J@/jwks.json"', J=j.b)
    assert get(w.port, tok(keys["rsa"][0], "RS256", headers={"kid": "r1"})).status == 200
    assert get(w.port, tok(keys["rsa"][0], "PS256", headers={"kid": "r1"})).status == 200
    assert get(w.port, tok(keys["p256"][0], "ES256", headers={"kid": "e1"})).status == 200
    assert get(w.port, tok(keys["p384"][0], "ES384", headers={"kid": "e2"})).status == 200
    assert get(w.port, tok(keys["ed"][0], "EdDSA", headers={"kid": "o1"})).status == 200
    assert get(w.port, tok(SECRET, "HS256", headers={"kid": "s1"})).status == 200
    assert get(w.port, tok(keys["small"][0], "RS256", headers={"kid": "weak"})).status == 401
    # a kid naming one key, signed by another
    assert get(w.port, tok(keys["rsa2"][0], "RS256", headers={"kid": "r1"})).status == 401
    # one fetch served them all, and the kid of the skipped key (unknown to
    # weir) one more
    assert j.fetches == 2, j.fetches
    assert "5 keys from" in w.stderr() and "(3 skipped)" in w.stderr()


def test_jwk_alg_narrows_the_key(start, keys, backend):
    j = Jwks(backend)
    j.set(jwk(keys["rsa"][0], "r1", alg="PS256"))
    w, b = start('jwks_url = "http://@J@/jwks.json"', J=j.b)
    assert get(w.port, tok(keys["rsa"][0], "PS256", headers={"kid": "r1"})).status == 200
    assert get(w.port, tok(keys["rsa"][0], "RS256", headers={"kid": "r1"})).status == 401


def test_jwks_down_at_the_start_is_a_503(start, keys, backend):
    j = Jwks(backend)
    j.status = 500
    w, b = start('jwks_url = "http://@J@/jwks.json"\njwks_timeout = "2s"', J=j.b)
    r = get(w.port, tok(keys["rsa"][0], "RS256", headers={"kid": "r1"}))
    assert r.status == 503 and b.request_count() == 0
    assert "the old ones stay" in w.stderr()


def test_rotation_while_traffic_runs(start, keys, backend):
    """Keys rotate at the identity provider: tokens with the new kid pass
    as soon as they come (an unknown kid fetches the set again), tokens of
    the retired key stop passing, and no request fails in between."""
    j = Jwks(backend)
    old, new = keys["rsa"][0], keys["rsa2"][0]
    j.set(jwk(old, "k1"))
    w, b = start('jwks_url = "http://@J@/jwks.json"\njwks_refresh = "1h"', threads=2, J=j.b)
    t_old = tok(old, "RS256", headers={"kid": "k1"})
    t_new = tok(new, "RS256", headers={"kid": "k2"})
    assert get(w.port, t_old).status == 200
    results, stop = [], threading.Event()
    phase = {"token": t_old}

    def client():
        while not stop.is_set():
            try:
                results.append((phase["token"] is t_new, get(w.port, phase["token"]).status))
            except Exception as e:  # any failure counts
                results.append((None, repr(e)))
    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(1)
    j.set(jwk(old, "k1"), jwk(new, "k2"))  # the provider publishes the new key
    phase["token"] = t_new                 # and starts signing with it
    time.sleep(2)
    stop.set()
    for t in threads:
        t.join(30)
    bad = [r for r in results if r[1] != 200]
    assert results and not bad, bad[:5]
    assert any(r[0] for r in results)
    assert j.fetches <= 3, j.fetches
    # the old key is retired: an unknown kid fetches the set again, and
    # the old key's tokens fail from then on
    j.set(jwk(new, "k2"))
    time.sleep(1.1)
    assert get(w.port, tok(keys["rsa"][0], "RS256", headers={"kid": "k9"})).status == 401
    assert get(w.port, t_old).status == 401
    assert get(w.port, t_new).status == 200


def test_unknown_kids_do_not_hammer_the_provider(start, keys, backend):
    """Made-up kids: at most one fetch a second, whatever comes in."""
    j = Jwks(backend)
    j.set(jwk(keys["rsa"][0], "k1"))
    w, b = start('jwks_url = "http://@J@/jwks.json"', threads=2, J=j.b)
    t0 = time.monotonic()
    results = []

    def client(n):
        for i in range(5):
            t = tok(keys["rsa"][0], "RS256", headers={"kid": "nope%d-%d" % (n, i)})
            results.append(get(w.port, t).status)
    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    took = time.monotonic() - t0
    assert results == [401] * 40
    assert j.fetches <= 2 + took, (j.fetches, took)


def test_jwks_refresh_interval(start, keys, backend):
    j = Jwks(backend)
    j.set(jwk(keys["rsa"][0], "k1"))
    w, b = start('jwks_url = "http://@J@/jwks.json"\njwks_refresh = "1s"', J=j.b)
    t = tok(keys["rsa"][0], "RS256", headers={"kid": "k1"})
    assert get(w.port, t).status == 200
    time.sleep(1.5)  # past the refresh
    assert get(w.port, t).status == 200
    assert j.fetches == 2


def test_jwks_failure_keeps_the_old_keys(start, keys, backend):
    j = Jwks(backend)
    j.set(jwk(keys["rsa"][0], "k1"))
    w, b = start('jwks_url = "http://@J@/jwks.json"\njwks_refresh = "1s"', J=j.b)
    t = tok(keys["rsa"][0], "RS256", headers={"kid": "k1"})
    assert get(w.port, t).status == 200
    j.status = 503
    time.sleep(1.5)
    assert get(w.port, t).status == 200
    assert "status 503; the old ones stay" in w.stderr()


# ---- configuration ----

def check(tmp_path, body):
    require_binary("weir")
    p = tmp_path / "bad.toml"
    p.write_text('[servers.s]\naddr = "127.0.0.1:1"\nlocations = ["l"]\n\n'
                 '[plugins.jwt]\ncategory = "jwt"\n%s\n'
                 '[locations.l]\necho = true\nplugins = ["jwt"]\n' % body)
    return p, subprocess.run([binary("weir"), "-t", "-c", str(p)], capture_output=True,
                             text=True, timeout=30)


@pytest.mark.parametrize("body,msg", [
    ('', "needs keys"),
    ('secret = ""', "'secret' in [plugins.jwt] is empty"),
    ('secret = "x"\nheader = "A"\ncookie = "b"', "takes one of 'header', 'cookie' and 'query'"),
    ('secret = "x"\nalgorithms = ["none"]', "is not one of"),
    ('secret = "x"\nalgorithms = ["RS256"]', "none of them fits the keys given"),
    ('public_key_file = "/nonexistent.pem"', "cannot read"),
    ('secret = "x"\nclaims_headers = ["sub"]', "is not \"claim: Header\""),
    ('secret = "x"\nclaims_headers = ["sub: Content-Length"]', "Content-Length"),
    ('secret = "x"\nauth_path = "/login"', "token signing endpoint is not in weir"),
    ('jwks_url = "ftp://x/"', "must start with http:// or https://"),
    ('secret = "x"\nleway = "1s"', "did you mean 'leeway'"),
])
def test_config_errors(tmp_path, body, msg):
    p, r = check(tmp_path, body)
    assert r.returncode != 0
    assert "%s:" % p in r.stderr and msg in r.stderr, r.stderr


def test_small_rsa_key_file_is_refused(tmp_path, keys):
    p, r = check(tmp_path, 'public_key_file = "%s"' % keys["small"][1])
    assert r.returncode != 0 and "fewer than 2048 bits" in r.stderr


def test_short_secret_warns(tmp_path):
    p, r = check(tmp_path, 'secret = "123123"')
    assert r.returncode == 0, r.stderr
    assert "HS256 wants 32 or more" in r.stderr


def slow_jwks(backend, doc, delay):
    state = {"fetches": 0}

    def handler(conn, req):
        state["fetches"] += 1
        if conn.wait_peer_close(delay):
            return "close"
        body = json.dumps(doc).encode()
        conn.send(B.response_head(200, [("Content-Length", str(len(body)))]) + body)
    return backend(handler), state


def test_client_leaving_during_the_fetch(start, keys, backend):
    """The fetch ends with the client (499 inside); the next request can
    fetch again at once and passes."""
    jb, st = slow_jwks(backend, {"keys": [jwk(keys["rsa"][0], "k1")]}, 0.8)
    w, b = start('jwks_url = "http://@J@/jwks.json"', J=jb)
    t = tok(keys["rsa"][0], "RS256", headers={"kid": "k1"})
    s = B.connect(w.port)
    s.sendall(("GET /x HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\n\r\n" % t).encode())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and st["fetches"] == 0:
        time.sleep(0.02)
    s.close()
    time.sleep(1.2)  # past the second between fetches
    assert get(w.port, t).status == 200
    assert st["fetches"] == 2


def test_reload_during_the_fetch(keys, backend, start_proc, tmp_path):
    """A reload while a request waits for the key set: that request ends
    (on the snapshot it began with), the new configuration's jwks_url
    gets its own keys, nothing crashes."""
    import signal
    from conftest import free_port
    j1, st1 = slow_jwks(backend, {"keys": [jwk(keys["rsa"][0], "k1")]}, 0.5)
    j2 = Jwks(backend)
    j2.set(jwk(keys["rsa2"][0], "k2"))
    b = backend(B.echo())
    port = free_port()
    path = tmp_path / "w.toml"

    def text(j):
        return (CONF % {"keys": 'jwks_url = "http://%s/jwks.json"' % j.addr}).replace(
            "@PORT@", str(port)).replace("@B@", b.addr)
    path.write_text(text(j1))
    w = start_proc([binary("weir"), "-c", str(path), "--threads", "1"], port, "weir")
    out = {}
    t1 = tok(keys["rsa"][0], "RS256", headers={"kid": "k1"})
    th = threading.Thread(target=lambda: out.update(r=get(port, t1)))
    th.start()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and st1["fetches"] == 0:
        time.sleep(0.02)
    path.write_text(text(j2.b))
    w.signal(signal.SIGHUP)
    th.join(15)
    assert out["r"].status == 200, "the request in flight ends on its own snapshot"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and w.stderr().count("reloaded") < 1:
        time.sleep(0.02)
    time.sleep(1.1)
    assert get(port, tok(keys["rsa2"][0], "RS256", headers={"kid": "k2"})).status == 200
    assert get(port, t1).status == 401, "the old provider's keys are gone"
