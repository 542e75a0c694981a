"""The combined_auth plugin (docs/plugins.md): Pingap's app_id + ts +
digest = sha256("SECRET:TS") scheme, every accept and refuse path, the
time window both ways, per-app IP lists with weir's idea of the client
address (a forged X-Forwarded-For does not count), repeated and encoded
parameters, and the config errors."""
import hashlib
import subprocess
import time
import urllib.parse

import pytest

import backends as B
from conftest import binary, require_binary

CONF = """
[servers.s]
addr = "127.0.0.1:@PORT@"
locations = ["l"]
%(server)s

[plugins.apps]
category = "combined_auth"
authorizations = [
    { app_id = "shop", secret = "s3cr3t", deviation = 60 },
    { app_id = "office", secret = "0ff1ce", deviation = 10, ip_list = ["10.0.0.0/8", "::1"] },
    { app_id = "local", secret = "l0c", ip_list = ["127.0.0.1"] },
    { app_id = "super", secret = "*" },
]

[locations.l]
upstream = "u"
plugins = ["apps"]

[upstreams.u]
addrs = ["@B@"]
"""


@pytest.fixture
def w(weir_toml, backend):
    b = backend(B.fixed(b"ok\n"))
    return weir_toml(CONF % {"server": ""}, threads=1, B=b), b


def sign(secret, ts):
    return hashlib.sha256(("%s:%s" % (secret, ts)).encode()).hexdigest()


def get(port, query, headers=()):
    hs = "".join("%s: %s\r\n" % kv for kv in headers)
    return B.request(port, ("GET /api?%s HTTP/1.1\r\nHost: t\r\n%sConnection: close\r\n\r\n"
                            % (query, hs)).encode(), "GET", timeout=10)


def q(app="shop", ts=None, digest=None, secret="s3cr3t", extra=""):
    ts = int(time.time()) if ts is None else ts
    d = sign(secret, ts) if digest is None else digest
    return "app_id=%s&ts=%s&digest=%s%s" % (app, ts, d, extra)


def test_a_good_signature_passes(w):
    proc, b = w
    r = get(proc.port, q())
    assert r.status == 200 and r.body == b"ok\n"
    assert b.requests[0].path.startswith("/api?app_id=shop")


def test_upper_case_hex_passes(w):
    proc, b = w
    ts = int(time.time())
    assert get(proc.port, q(ts=ts, digest=sign("s3cr3t", ts).upper())).status == 200


@pytest.mark.parametrize("query", [
    "",
    "ts=1&digest=x",
    "app_id=&ts=1&digest=x",
    "app_id=nobody&ts=%d&digest=%s" % (0, "0" * 64),
])
def test_missing_or_unknown_app(w, query):
    proc, b = w
    r = get(proc.port, query)
    assert r.status == 401 and r.headers.get("cache-control") == "no-store"
    assert b.request_count() == 0


def test_refusals(w):
    proc, b = w
    now = int(time.time())
    cases = {
        "wrong secret": q(secret="s3cr3T"),
        "digest of another ts": q(ts=now, digest=sign("s3cr3t", now - 1)),
        "too old": q(ts=now - 120, secret="s3cr3t"),
        "too new": q(ts=now + 120, secret="s3cr3t"),
        "no ts": "app_id=shop&digest=%s" % sign("s3cr3t", ""),
        "no digest": "app_id=shop&ts=%d" % now,
        "short digest": q(digest=sign("s3cr3t", now)[:63], ts=now),
        "long digest": q(digest=sign("s3cr3t", now) + "0", ts=now),
        "negative ts": q(ts=-now),
        "ts with a sign": "app_id=shop&ts=%%2B%d&digest=%s" % (now, sign("s3cr3t", "+%d" % now)),
        "ts in hex": q(ts=hex(now)),
        "ts with spaces": "app_id=shop&ts=%%20%d&digest=%s" % (now, sign("s3cr3t", " %d" % now)),
        "non-hex digest": q(digest="g" * 64),
        "two app_ids": q() + "&app_id=shop",
        "two digests": q() + "&digest=" + "0" * 64,
        "two ts": q(ts=now) + "&ts=%d" % now,
        "bad escape": q() + "&app_id=%zz",
    }
    for name, query in cases.items():
        r = get(proc.port, query)
        assert r.status == 401, (name, r.status)
    assert b.request_count() == 0


def test_percent_encoded_parameters_are_decoded(w):
    proc, b = w
    ts = int(time.time())
    enc = urllib.parse.quote(sign("s3cr3t", ts))
    app = "%73hop"  # "shop"
    assert get(proc.port, "app_id=%s&ts=%d&digest=%s" % (app, ts, enc)).status == 200


def test_the_window_is_the_apps(w):
    proc, b = w
    now = int(time.time())
    # office allows 10 s but not from 127.0.0.1; local has the default 60 s
    assert get(proc.port, q("local", now - 50, secret="l0c")).status == 200
    assert get(proc.port, q("local", now - 70, secret="l0c")).status == 401


def test_ip_list(w):
    proc, b = w
    now = int(time.time())
    # 127.0.0.1 is not in office's list; a forged X-Forwarded-For does not
    # change weir's idea of the client (no trusted_proxies)
    assert get(proc.port, q("office", now, secret="0ff1ce")).status == 401
    assert get(proc.port, q("office", now, secret="0ff1ce"),
               [("X-Forwarded-For", "10.1.2.3")]).status == 401
    assert get(proc.port, q("local", now, secret="l0c")).status == 200


def test_ip_list_behind_a_trusted_proxy(weir_toml, backend):
    b = backend(B.fixed(b"ok\n"))
    proc = weir_toml(CONF % {"server": 'trusted_proxies = ["127.0.0.1"]'}, threads=1, B=b)
    now = int(time.time())
    assert get(proc.port, q("office", now, secret="0ff1ce"),
               [("X-Forwarded-For", "10.1.2.3")]).status == 200
    assert get(proc.port, q("office", now, secret="0ff1ce"),
               [("X-Forwarded-For", "192.168.0.1")]).status == 401


def test_super_app_is_not_checked(w):
    proc, b = w
    assert "has secret \"*\"" in proc.stderr()
    assert get(proc.port, "app_id=super").status == 200


def test_refusal_reason_is_logged(w):
    proc, b = w
    get(proc.port, q(secret="nope"))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and "wrong digest" not in proc.stderr():
        time.sleep(0.02)
    assert "combined_auth: wrong digest" in proc.stderr()


def check(tmp_path, body):
    require_binary("weir")
    p = tmp_path / "bad.toml"
    p.write_text('[servers.s]\naddr = "127.0.0.1:1"\nlocations = ["l"]\n\n'
                 '[plugins.apps]\ncategory = "combined_auth"\n%s\n'
                 '[locations.l]\necho = true\nplugins = ["apps"]\n' % body)
    return p, subprocess.run([binary("weir"), "-t", "-c", str(p)], capture_output=True,
                             text=True, timeout=30)


@pytest.mark.parametrize("body,msg", [
    ('', "needs 'authorizations'"),
    ('authorizations = []', "needs 'authorizations'"),
    ('authorizations = ["x"]', "each entry is a table"),
    ('authorizations = [{ secret = "s" }]', "needs an 'app_id'"),
    ('authorizations = [{ app_id = "a" }]', "needs a 'secret'"),
    ('authorizations = [{ app_id = "a", secret = "s" }, { app_id = "a", secret = "t" }]',
     "listed twice"),
    ('authorizations = [{ app_id = "a", secret = "s", deviation = -1 }]', "deviation"),
    ('authorizations = [{ app_id = "a", secret = "s", ip_list = ["nope"] }]',
     "is not an address or a block"),
    ('authorizations = [{ app_id = "a", secret = "s", ip_lst = [] }]', "did you mean 'ip_list'"),
])
def test_config_errors(tmp_path, body, msg):
    p, r = check(tmp_path, body)
    assert r.returncode != 0
    assert "%s:" % p in r.stderr and msg in r.stderr, r.stderr
