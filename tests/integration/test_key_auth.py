"""The key_auth plugin (docs/plugins.md): a key in a header or a query
parameter, every accept and refuse path, hide_credentials (the field, or
the parameter in the upstream target), and what an attacker sends: two
keys, a near key, a key with a suffix, percent-encoding tricks, Connection
naming the header, a client that leaves during the delay."""
import socket
import subprocess
import time

import pytest

import backends as B
from conftest import binary, require_binary

KEYS = ["k-1234567890", "other key/with+chars%"]

CONF = """
[basic]
log_level = "info"

[servers.s]
addr = "127.0.0.1:@PORT@"
locations = ["l"]
%(server)s

[plugins.keys]
category = "key_auth"
%(where)s
keys = ["k-1234567890", "other key/with+chars%%"]
%(extra)s

[locations.l]
upstream = "u"
plugins = ["keys"]

[upstreams.u]
addrs = ["@B@"]
"""


@pytest.fixture
def start(weir_toml, backend):
    def run(where='header = "X-API-Key"', extra="", server=""):
        b = backend(B.fixed(b"ok\n"))
        text = CONF % {"where": where, "extra": extra, "server": server}
        return weir_toml(text, threads=1, B=b), b
    return run


def req(port, headers=(), target="/x"):
    hs = "".join("%s: %s\r\n" % kv for kv in headers)
    return B.request(port, ("GET %s HTTP/1.1\r\nHost: t\r\n%sConnection: close\r\n\r\n"
                            % (target, hs)).encode(), "GET", timeout=10)


def logged(w, text, timeout=5):
    deadline = time.monotonic() + timeout
    while text not in w.stderr() and time.monotonic() < deadline:
        time.sleep(0.02)
    return text in w.stderr()


def test_header_key(start):
    w, b = start()
    r = req(w.port, [("X-API-Key", KEYS[0])])
    assert r.status == 200
    assert b.last().headers.get("X-API-Key") == KEYS[0]
    assert req(w.port, [("x-api-key", KEYS[1])]).status == 200


@pytest.mark.parametrize("value", ["", "k-123456789", "k-12345678901", "K-1234567890",
                                   " k-1234567890x", "k-1234567890\t1", "x" * 2000])
def test_wrong_header_key_is_401(start, value):
    w, b = start()
    r = req(w.port, [("X-API-Key", value)])
    assert r.status == 401
    assert b.request_count() == 0


def test_no_key_and_two_keys(start):
    w, b = start()
    assert req(w.port).status == 401
    assert logged(w, "key_auth: 401: no key")
    r = req(w.port, [("X-API-Key", KEYS[0]), ("X-API-Key", "junk")])
    assert r.status == 401
    assert logged(w, "key_auth: 401: several keys")
    assert b.request_count() == 0


def test_connection_naming_the_header(start):
    w, b = start()
    r = req(w.port, [("X-API-Key", KEYS[0]), ("Connection", "X-API-Key")])
    assert r.status == 401, "a hop-by-hop field is gone before the plugin runs"
    assert b.request_count() == 0


def test_hide_header(start):
    w, b = start(extra="hide_credentials = true")
    assert req(w.port, [("X-API-Key", KEYS[0])]).status == 200
    assert not b.last().headers.has("X-API-Key")


def test_query_key(start):
    w, b = start(where='query = "api_key"')
    assert req(w.port, target="/x?a=1&api_key=k-1234567890&b=2").status == 200
    assert b.last().path == "/x?a=1&api_key=k-1234567890&b=2"
    # Percent-encoded: the decoded value is the key.
    enc = "other%20key%2Fwith%2Bchars%25"
    assert req(w.port, target="/x?api_key=" + enc).status == 200
    for bad in ["/x", "/x?api_key=", "/x?api_key", "/x?api_keyy=k-1234567890",
                "/x?xapi_key=k-1234567890", "/x?api_key=k-1234567890%",
                "/x?api_key=k-1234567890%2", "/x?api_key=k-1234567890%zz",
                "/x?api_key=k-123&api_key=k-1234567890",
                "/x?api_key=k-1234567890&api_key=k-1234567890",
                "/x?api_key=other+key/with+chars%25"]:  # '+' is not a space here
        assert req(w.port, target=bad).status == 401, bad
    assert b.request_count() == 2


def test_query_key_in_a_header_does_not_count(start):
    w, b = start(where='query = "api_key"')
    assert req(w.port, [("api_key", KEYS[0])]).status == 401


def test_hide_query_parameter(start):
    w, b = start(where='query = "api_key"', extra="hide_credentials = true")
    assert req(w.port, target="/x?a=1&api_key=k-1234567890&b=2").status == 200
    assert b.last().path == "/x?a=1&b=2"
    assert req(w.port, target="/x?api_key=k-1234567890").status == 200
    assert b.last().path == "/x"
    assert req(w.port, target="/p/q?api_key=k-1234567890&api_keyz=3").status == 200
    assert b.last().path == "/p/q?api_keyz=3"


def test_delay_and_a_client_that_leaves(start):
    w, b = start(extra='delay = "300ms"')
    t0 = time.monotonic()
    assert req(w.port, [("X-API-Key", "nope")]).status == 401
    assert time.monotonic() - t0 >= 0.29
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", w.port))
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nX-API-Key: nope\r\n\r\n")
        s.close()
    time.sleep(0.5)
    assert req(w.port, [("X-API-Key", KEYS[0])]).status == 200


def test_over_http2(start):
    import h2util as U
    w, b = start(server="h2c = true")
    c = U.H2Client(w.port)
    try:
        assert c.get("/x").status == 401
        assert c.get("/x", headers=[("x-api-key", KEYS[0])]).status == 200
    finally:
        c.close()


def check(tmp_path, body):
    require_binary("weir")
    p = tmp_path / "bad.toml"
    p.write_text('[servers.s]\naddr = "127.0.0.1:1"\nlocations = ["l"]\n\n'
                 '[plugins.keys]\ncategory = "key_auth"\n%s\n'
                 '[locations.l]\necho = true\nplugins = ["keys"]\n' % body)
    return p, subprocess.run([binary("weir"), "-t", "-c", str(p)], capture_output=True,
                             text=True, timeout=30)


@pytest.mark.parametrize("body,msg", [
    ('keys = ["a"]', "needs one of 'header' and 'query'"),
    ('header = "X-K"\nquery = "k"\nkeys = ["a"]', "needs one of 'header' and 'query'"),
    ('header = "X-K"', "needs 'keys'"),
    ('header = "X-K"\nkeys = []', "needs 'keys'"),
    ('header = "X-K"\nkeys = [""]', "a key has 1 to 1024 characters"),
    ('header = "X K"\nkeys = ["a"]', "'header' in [plugins.keys] is not a header name"),
    ('header = "Content-Length"\nkeys = ["a"]', "'header' in [plugins.keys]: 'Content-Length'"),
    ('query = "a&b"\nkeys = ["a"]', "is not a query parameter name"),
])
def test_config_errors(tmp_path, body, msg):
    p, r = check(tmp_path, body)
    assert r.returncode != 0
    assert "%s:" % p in r.stderr and msg in r.stderr, r.stderr
