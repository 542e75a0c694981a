"""The basic_auth plugin (docs/plugins.md): plain base64 entries and htpasswd
lines (bcrypt from htpasswd, SHA-256/512 from openssl passwd), every accept
and refuse path, and what an attacker sends: odd base64, two Authorization
fields, Connection naming Authorization, NUL and ':' in passwords,
overlong credentials, a client that leaves during the delay."""
import base64
import os
import pwd
import shutil
import socket
import subprocess
import threading
import time

import pytest

import backends as B
from conftest import binary, free_port, require_binary, wait_port

CONF = """
[basic]
log_level = "info"

[servers.s]
addr = "127.0.0.1:@PORT@"
locations = ["l"]
%(server)s

[plugins.auth]
category = "basic_auth"
authorizations = [%(auths)s]
%(extra)s

[locations.l]
upstream = "u"
plugins = ["auth"]

[upstreams.u]
addrs = ["@B@"]
"""


def b64(s):
    return base64.b64encode(s if isinstance(s, bytes) else s.encode()).decode()


def htpasswd_bcrypt(user, pw):
    out = subprocess.run(["htpasswd", "-nbB", "-C", "5", user, pw], capture_output=True,
                         text=True, check=True).stdout
    return out.strip()


def openssl_passwd(kind, pw):
    return subprocess.run(["openssl", "passwd", kind, pw], capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.fixture(scope="module")
def hashes():
    return {"bcrypt": htpasswd_bcrypt("carol", "c-pass"),
            "sha512": "dave:" + openssl_passwd("-6", "d-pass"),
            "sha256": "erin:" + openssl_passwd("-5", "e-pass")}


@pytest.fixture
def start(weir_toml, backend, hashes):
    def run(extra="", server="", auths=None):
        b = backend(B.fixed(b"secret stuff\n"))
        if auths is None:
            auths = [b64("alice:a-pass"), b64("frank:has:colons"), hashes["bcrypt"],
                     hashes["sha512"], hashes["sha256"]]
        text = CONF % {"auths": ", ".join('"%s"' % a for a in auths), "extra": extra,
                       "server": server}
        return weir_toml(text, threads=1, B=b), b
    return run


def req(port, headers=(), path="/x"):
    hs = "".join("%s: %s\r\n" % kv for kv in headers)
    return B.request(port, ("GET %s HTTP/1.1\r\nHost: t\r\n%sConnection: close\r\n\r\n"
                            % (path, hs)).encode(), "GET", timeout=10)


def auth(user, pw):
    return [("Authorization", "Basic " + b64("%s:%s" % (user, pw)))]


def test_no_credentials_is_401_with_a_challenge(start):
    w, b = start('realm = "api"')
    r = req(w.port)
    assert r.status == 401
    assert r.headers.get("WWW-Authenticate") == 'Basic realm="api", charset="UTF-8"'
    assert b.request_count() == 0
    deadline = time.monotonic() + 5
    while "basic_auth: 401: no credentials" not in w.stderr() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "client 127.0.0.1: basic_auth: 401: no credentials (request " in w.stderr()


@pytest.mark.parametrize("user,pw", [("alice", "a-pass"), ("frank", "has:colons"),
                                     ("carol", "c-pass"), ("dave", "d-pass"), ("erin", "e-pass")])
def test_each_kind_of_entry_lets_its_user_in(start, user, pw):
    w, b = start()
    r = req(w.port, auth(user, pw))
    assert r.status == 200 and r.body == b"secret stuff\n"
    # Without hide_credentials the backend sees the field.
    assert b.last().headers.get("Authorization") == "Basic " + b64("%s:%s" % (user, pw))


@pytest.mark.parametrize("user,pw", [("alice", "a-pas"), ("alice", "a-pass "), ("Alice", "a-pass"),
                                     ("carol", "a-pass"), ("dave", "e-pass"), ("nobody", "x"),
                                     ("", ""), ("carol", "c-pass\x00"), ("frank", "has")])
def test_wrong_credentials_are_401(start, user, pw):
    w, b = start()
    r = req(w.port, auth(user, pw))
    assert r.status == 401
    assert b.request_count() == 0


@pytest.mark.parametrize("value", [
    "Basic",                                   # no credentials
    "Basic ",
    "Bearer " + b64("alice:a-pass"),           # another scheme
    "Basic" + b64("alice:a-pass"),             # no blank after the scheme
    "Basic " + b64("frank:has:colons").rstrip("="),  # padding left out
    "Basic " + b64("alice:a-pass")[:-1] + "x",   # garbage at the end
    "Basic " + b64("alice:a-pass") + "====",   # extra padding
    "Basic " + b64("alice:a-pass") + " junk",
    "Basic " + b64("alicea-pass"),             # no colon
    "Basic " + "A" * 3000,                     # overlong
    "Basic " + b64("carol:" + "c" * 2000),     # overlong password for a hash
])
def test_malformed_authorization_is_401(start, value):
    w, b = start()
    r = req(w.port, [("Authorization", value)])
    assert r.status == 401, value
    assert b.request_count() == 0


def test_non_canonical_base64_is_refused(start):
    # "YWxpY2U6YS1wYXNz" is alice:a-pass; flip the bits padding drops in
    # an entry whose length is not a multiple of three.
    w, b = start(auths=[b64("al:x")])  # "YWw6eA==" : last char before == carries 4 spare bits
    good = b64("al:x")
    assert req(w.port, [("Authorization", "Basic " + good)]).status == 200
    bad = good[:5] + "F" + good[6:]    # 'eA' -> 'eF': same bytes under a lax decoder
    assert base64.b64decode(bad) == b"al:x"
    assert req(w.port, [("Authorization", "Basic " + bad)]).status == 401


def test_scheme_is_case_insensitive_and_blanks_allowed(start):
    w, b = start()
    for scheme in ["basic", "BASIC", "bAsIc"]:
        r = req(w.port, [("Authorization", scheme + "   " + b64("alice:a-pass"))])
        assert r.status == 200, scheme


def test_two_authorization_fields_are_refused(start):
    """One right, one wrong: which would a backend read? Neither goes."""
    w, b = start()
    r = req(w.port, auth("alice", "a-pass") + auth("mallory", "x"))
    assert r.status == 401
    r = req(w.port, auth("alice", "a-pass") + auth("alice", "a-pass"))
    assert r.status == 401
    assert b.request_count() == 0


def test_connection_naming_authorization_does_not_bypass(start):
    w, b = start()
    r = req(w.port, auth("alice", "a-pass") + [("Connection", "Authorization")])
    # The gate drops the hop-by-hop field before the plugin: no credentials.
    assert r.status == 401
    assert b.request_count() == 0


def test_hide_credentials(start):
    w, b = start("hide_credentials = true")
    r = req(w.port, auth("carol", "c-pass"))
    assert r.status == 200
    assert not b.last().headers.has("Authorization")


def test_delay_holds_only_the_failure(start):
    w, b = start('delay = "400ms"')
    t0 = time.monotonic()
    results = {}

    def bad():
        results["bad"] = req(w.port, auth("alice", "wrong"))
        results["bad_t"] = time.monotonic() - t0

    th = threading.Thread(target=bad)
    th.start()
    time.sleep(0.05)
    r = req(w.port, auth("alice", "a-pass"))
    good_t = time.monotonic() - t0
    th.join(10)
    assert r.status == 200
    assert results["bad"].status == 401
    # The timer cannot fire early; the good request did not wait for it.
    assert results["bad_t"] >= 0.39
    assert good_t < results["bad_t"]


def test_client_leaving_during_the_delay(start):
    w, b = start('delay = "300ms"')
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", w.port))
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nAuthorization: Basic eDp5\r\n\r\n")
        s.close()
    time.sleep(0.5)
    assert req(w.port, auth("dave", "d-pass")).status == 200


def test_over_http2(start):
    import h2util as U
    w, b = start(server="h2c = true")
    c = U.H2Client(w.port)
    try:
        assert c.get("/x").status == 401
        st = c.get("/x", headers=[("authorization", "Basic " + b64("erin:e-pass"))])
        assert st.status == 200
    finally:
        c.close()


def check(tmp_path, auths, extra=""):
    require_binary("weir")
    p = tmp_path / "bad.toml"
    p.write_text('[servers.s]\naddr = "127.0.0.1:1"\nlocations = ["l"]\n\n'
                 '[plugins.auth]\ncategory = "basic_auth"\nauthorizations = [%s]\n%s\n'
                 '[locations.l]\necho = true\nplugins = ["auth"]\n'
                 % (", ".join('"%s"' % a for a in auths), extra))
    return p, subprocess.run([binary("weir"), "-t", "-c", str(p)], capture_output=True,
                             text=True, timeout=30)


@pytest.mark.parametrize("auths,extra,msg", [
    ([], "", "needs 'authorizations'"),
    (["not base64!"], "", "is neither base64 of user:password nor an htpasswd line"),
    ([b64("nocolon")], "", "is neither base64"),
    (["bob:plaintext"], "", "an htpasswd line must be user:HASH"),
    ([":$6$salt$abc"], "", "an htpasswd line must be user:HASH"),
    (["bob:$2y$05$tooshort"], "", "user 'bob': malformed hash"),
    ([b64("a:b")], 'realm = "a\\"b"', "'realm' in [plugins.auth] may not hold quotes"),
])
def test_config_errors(tmp_path, auths, extra, msg):
    p, r = check(tmp_path, auths, extra)
    assert r.returncode != 0
    assert "%s:" % p in r.stderr and msg in r.stderr, r.stderr


# ---------------------------------------------------------------------------
# Differential: nginx's auth_basic with the same users (an htpasswd file)
# and the same Authorization headers. Where they differ, it is on purpose:
# see DIFFERENCES.

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

# Where weir answers otherwise, on purpose (name: (nginx, weir)). nginx
# decodes base64 leniently (no padding, spare bits set) and lets those in;
# weir takes one canonical encoding, so no hop after it reads the
# credentials another way. Two Authorization fields: nginx calls the
# request malformed (400), weir refuses the credentials (401) as it does
# every other doubtful Authorization, with the challenge.
DIFFERENCES = {"no-padding": (200, 401), "spare-bits": (200, 401), "two-fields": (400, 401)}


def diff_cases(hashes):
    frank = b64("frank:has:colons")
    return [
        ("none", []),
        ("bcrypt-ok", auth("carol", "c-pass")),
        ("sha512-ok", auth("dave", "d-pass")),
        ("sha256-ok", auth("erin", "e-pass")),
        ("bcrypt-wrong", auth("carol", "c-pas")),
        ("sha512-wrong", auth("dave", "D-pass")),
        ("unknown-user", auth("zed", "d-pass")),
        ("user-case", auth("Dave", "d-pass")),
        ("lower-scheme", [("Authorization", "basic " + b64("dave:d-pass"))]),
        ("bearer", [("Authorization", "Bearer " + b64("dave:d-pass"))]),
        ("no-colon", [("Authorization", "Basic " + b64("davedpass"))]),
        ("garbage", [("Authorization", "Basic !!!!")]),
        ("empty", [("Authorization", "Basic ")]),
        ("no-padding", [("Authorization", "Basic " + b64("dave:d-pass").rstrip("="))]),
        ("spare-bits", [("Authorization", "Basic " + b64("dave:d-pass")[:-2] + "N=")]),
        ("two-fields", auth("dave", "d-pass") + auth("zed", "x")),
        ("colon-password", [("Authorization", "Basic " + frank)]),
    ]


@pytest.fixture
def nginx_auth(tmp_path, hashes):
    if not os.access(NGINX, os.X_OK):
        pytest.skip("nginx not installed")
    procs = []

    def start(b):
        port = free_port()
        d = tmp_path / ("nginx%d" % port)
        d.mkdir()
        (d / "htpasswd").write_text("\n".join([hashes["bcrypt"], hashes["sha512"],
                                               hashes["sha256"]]) + "\n")
        user = "user %s;" % pwd.getpwuid(os.getuid()).pw_name if os.getuid() == 0 else ""
        (d / "nginx.conf").write_text(user + """
daemon off; worker_processes 1; pid %(d)s/nginx.pid; error_log %(d)s/error.log;
events { worker_connections 64; }
http {
    access_log off; client_body_temp_path %(d)s; proxy_temp_path %(d)s;
    fastcgi_temp_path %(d)s; uwsgi_temp_path %(d)s; scgi_temp_path %(d)s;
    server {
        listen 127.0.0.1:%(p)d;
        location / {
            auth_basic "api"; auth_basic_user_file %(d)s/htpasswd;
            proxy_pass http://%(b)s; proxy_http_version 1.1; proxy_set_header Connection "";
        }
    }
}
""" % {"d": d, "p": port, "b": b.addr})
        p = subprocess.Popen([NGINX, "-c", str(d / "nginx.conf"), "-e", str(d / "error.log")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             stdin=subprocess.DEVNULL)
        procs.append(p)
        assert wait_port(port, p), (d / "error.log").read_text(errors="replace")
        return port

    yield start
    for p in procs:
        p.terminate()
        p.wait(timeout=10)


def test_same_answers_as_nginx_auth_basic(weir_toml, backend, hashes, nginx_auth):
    b = backend(B.fixed(b"secret stuff\n"))
    text = CONF % {"auths": ", ".join('"%s"' % a for a in [b64("frank:has:colons"),
                                                           hashes["bcrypt"], hashes["sha512"],
                                                           hashes["sha256"]]),
                   "extra": 'realm = "api"', "server": ""}
    w = weir_toml(text, threads=1, B=b)
    nport = nginx_auth(b)
    seen = []
    for name, hs in diff_cases(hashes):
        rw, rn = req(w.port, hs), req(nport, hs)
        if name == "colon-password":
            continue  # frank is a base64 entry for weir only (nginx has no such form)
        if name in DIFFERENCES:
            assert (rn.status, rw.status) == DIFFERENCES[name], (name, rn.status, rw.status)
        else:
            assert rw.status == rn.status, (name, rw.status, rn.status)
        seen.append(name)
        if rw.status == 401:
            assert rw.headers.get("WWW-Authenticate").startswith('Basic realm="api"')
        if rn.status == 401:
            assert rn.headers.get("WWW-Authenticate") == 'Basic realm="api"'
    assert len(seen) == 16


def test_reload_while_a_refusal_is_delayed(backend, start_proc, tmp_path, hashes):
    """The delayed 401 belongs to the configuration it began under: a
    reload that removes the plugin meanwhile neither crashes weir nor lets
    that request through; the next request runs on the new configuration."""
    import signal
    from conftest import binary as weir_bin
    b = backend(B.fixed(b"secret stuff\n"))
    port = free_port()
    path = tmp_path / "w.toml"

    def text(auths, extra):
        return (CONF % {"auths": auths, "extra": extra, "server": ""}).replace(
            "@PORT@", str(port)).replace("@B@", b.addr)

    path.write_text(text('"%s"' % b64("alice:a-pass"), 'delay = "800ms"'))
    w = start_proc([weir_bin("weir"), "-c", str(path), "--threads", "1"], port, "weir")
    out = {}
    th = threading.Thread(target=lambda: out.update(r=req(port, auth("alice", "bad"))))
    th.start()
    time.sleep(0.2)
    path.write_text(text('"%s"' % b64("bob:b-pass"), ""))
    w.signal(signal.SIGHUP)
    th.join(10)
    assert out["r"].status == 401
    deadline = time.monotonic() + 10
    while "reloaded" not in w.stderr() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert req(port, auth("bob", "b-pass")).status == 200
    assert req(port, auth("alice", "a-pass")).status == 401
    assert b.request_count() == 1
