"""proxy_added_headers: which of the five fields weir adds upstream
(X-Request-Id, X-Forwarded-For, X-Real-IP, X-Forwarded-Proto, Via) a location
sends (docs/config.md). The attacks: a client that sends its own copies,
names them in Connection, or sends them from an untrusted peer when weir is
told not to add them; a reload that changes the list; bad names in the
config."""
import re
import signal
import subprocess
import time

import pytest

import backends as B
from conftest import binary, free_port, require_binary, wait_port
from test_admin import Admin
from test_security import access_lines

FIVE = ["X-Request-Id", "X-Forwarded-For", "X-Real-IP", "X-Forwarded-Proto", "Via"]

CONF = """
%(admin)s
[servers.s]
addr = "127.0.0.1:@PORT@"
locations = ["none", "xff", "two", "all"]
access_log = "{client_ip} {request_id}"
access_log_file = "@TMP@/access.log"
%(server)s

[locations.none]
path = "/none/"
upstream = "u"
proxy_added_headers = []

[locations.xff]
path = "/xff/"
upstream = "u"
proxy_added_headers = ["X-Forwarded-For"]

[locations.two]
path = "/two/"
upstream = "u"
proxy_added_headers = ["via", "x-request-id"]

[locations.all]
upstream = "u"
%(all)s

[upstreams.u]
addrs = ["@B@"]
max_fails = 0
"""


def conf(server="", all_line="", admin=""):
    return CONF % {"server": server, "all": all_line, "admin": admin}


def get(port, target, headers=()):
    hs = "".join("%s: %s\r\n" % kv for kv in headers)
    return B.request(port, ("GET %s HTTP/1.1\r\nHost: t\r\n%sConnection: close\r\n\r\n"
                            % (target, hs)).encode(), "GET", timeout=10)


def sent(b):
    h = b.last().headers
    return {n: h.get_all(n) for n in FIVE if h.has(n)}


@pytest.fixture
def setup(weir_toml, backend):
    def start(**kw):
        b = backend(B.fixed(b"ok\n"))
        return weir_toml(conf(**kw), threads=1, B=b), b
    return start


def test_default_is_all_five(setup):
    w, b = setup()
    assert get(w.port, "/x").status == 200
    got = sent(b)
    assert set(got) == set(FIVE), got
    assert got["X-Forwarded-For"] == ["127.0.0.1"] and got["Via"] == ["1.1 weir"]


def test_empty_list_adds_none(setup, tmp_path):
    w, b = setup()
    assert get(w.port, "/none/a").status == 200
    assert sent(b) == {}
    # The logs still have an id, though the backend was not sent one.
    assert re.fullmatch(r"127\.0\.0\.1 [0-9a-f]{32}", access_lines(tmp_path, 1)[0])


def test_one_field_only(setup):
    w, b = setup()
    assert get(w.port, "/xff/a").status == 200
    assert sent(b) == {"X-Forwarded-For": ["127.0.0.1"]}
    assert get(w.port, "/two/a").status == 200
    got = sent(b)
    assert set(got) == {"Via", "X-Request-Id"} and got["Via"] == ["1.1 weir"]


def test_left_out_fields_pass_as_sent_but_identity_is_still_dropped(setup):
    """With x-real-ip and x-forwarded-proto left out, a client still cannot
    choose them: an untrusted peer's identity fields go at the gate."""
    w, b = setup()
    evil = [("X-Real-IP", "6.6.6.6"), ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "evil"), ("Forwarded", "for=6.6.6.6"),
            ("X-Forwarded-For", "6.6.6.6"), ("Via", "1.1 evil"), ("X-Request-Id", "bad id!")]
    assert get(w.port, "/none/a", evil).status == 200
    h = b.last().headers
    assert not h.has("X-Real-IP") and not h.has("X-Forwarded-Proto")
    assert not h.has("X-Forwarded-Host") and not h.has("Forwarded")
    # Not added by weir: the client's own go through as they came.
    assert h.get_all("X-Forwarded-For") == ["6.6.6.6"]
    assert h.get_all("Via") == ["1.1 evil"]
    assert h.get_all("X-Request-Id") == ["bad id!"]
    # Where weir adds X-Forwarded-For, it appends, and replaces a bad id.
    assert get(w.port, "/two/a", evil).status == 200
    h = b.last().headers
    assert h.get_all("Via") == ["1.1 evil, 1.1 weir"]
    assert re.fullmatch(r"[0-9a-f]{32}", h.get("X-Request-Id"))
    assert not h.has("X-Real-IP")


def test_connection_tricks_change_nothing(setup):
    w, b = setup()
    r = get(w.port, "/xff/a", [("X-Forwarded-For", "9.9.9.9"),
                               ("Connection", "close, X-Forwarded-For, Via, X-Request-Id")])
    assert r.status == 200
    assert sent(b) == {"X-Forwarded-For": ["127.0.0.1"]}


def test_trusted_peer_with_the_list(setup):
    w, b = setup(server='trusted_proxies = ["127.0.0.0/8"]')
    hs = [("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-Proto", "https"),
          ("X-Real-IP", "5.5.5.5")]
    assert get(w.port, "/xff/a", hs).status == 200
    h = b.last().headers
    assert h.get_all("X-Forwarded-For") == ["1.2.3.4, 127.0.0.1"]
    # A trusted proxy's X-Forwarded-Proto is kept; X-Real-IP is weir's to
    # set even from a trusted proxy, so with x-real-ip left out there is none.
    assert h.get_all("X-Forwarded-Proto") == ["https"] and not h.has("X-Real-IP")


def test_over_http2_too(setup):
    import h2util as U
    w, b = setup(server="h2c = true")
    c = U.H2Client(w.port)
    try:
        st = c.get("/none/a")
        assert st.status == 200
    finally:
        c.close()
    assert sent(b) == {}


def check(tmp_path, line):
    require_binary("weir")
    p = tmp_path / "bad.toml"
    p.write_text('[servers.s]\naddr = "127.0.0.1:1"\nlocations = ["l"]\n\n'
                 '[locations.l]\nupstream = "u"\n%s\n\n'
                 '[upstreams.u]\naddrs = ["127.0.0.1:2"]\n' % line)
    return p, subprocess.run([binary("weir"), "-t", "-c", str(p)], capture_output=True,
                             text=True, timeout=30)


@pytest.mark.parametrize("line,msg", [
    ('proxy_added_headers = ["x-forwarded-host"]', "'x-forwarded-host' is not a field weir adds"),
    ('proxy_added_headers = ["via", "X-Gateway"]', "'X-Gateway' is not a field weir adds"),
    ('proxy_added_headers = [1]', "must be a string or an array of strings"),
    ('proxy_added_headers = true', "must be a string or an array of strings"),
])
def test_config_errors(tmp_path, line, msg):
    p, r = check(tmp_path, line)
    assert r.returncode != 0
    assert "%s:7: " % p in r.stderr and msg in r.stderr, r.stderr


def test_reload_changes_the_list_and_a_bad_one_keeps_it(backend, start_proc, tmp_path):
    require_binary("weir")
    b = backend(B.fixed(b"ok\n"))
    port = free_port()
    path = tmp_path / "w.toml"

    def text(all_line):
        return (conf(all_line=all_line).replace("@PORT@", str(port))
                .replace("@TMP@", str(tmp_path)).replace("@B@", b.addr))

    path.write_text(text(""))
    w = start_proc([binary("weir"), "-c", str(path), "--threads", "2"], port, "weir")
    assert get(port, "/x").status == 200 and set(sent(b)) == set(FIVE)
    path.write_text(text('proxy_added_headers = ["via"]'))
    w.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and w.stderr().count("reloaded") < 1:
        time.sleep(0.02)
    assert get(port, "/x").status == 200 and sent(b) == {"Via": ["1.1 weir"]}
    path.write_text(text('proxy_added_headers = ["vai"]'))
    w.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "reload failed" not in w.stderr():
        time.sleep(0.02)
    assert "'vai' is not a field weir adds" in w.stderr()
    assert get(port, "/x").status == 200 and sent(b) == {"Via": ["1.1 weir"]}


def test_admin_config_shows_the_list(backend, start_proc, tmp_path):
    require_binary("weir")
    b = backend(B.fixed(b"ok\n"))
    port, aport = free_port(), free_port()
    path = tmp_path / "w.toml"
    path.write_text(conf(admin='[admin]\naddr = "127.0.0.1:%d"\ntoken = "t0k3n"\n' % aport)
                    .replace("@PORT@", str(port)).replace("@TMP@", str(tmp_path))
                    .replace("@B@", b.addr))
    w = start_proc([binary("weir"), "-c", str(path)], port, "weir")
    assert wait_port(aport, w.proc)
    r = Admin(aport, "t0k3n").call("GET", "/api/config")
    assert r.status == 200
    locs = {loc["name"]: loc["proxy_added_headers"] for loc in r.json["locations"]}
    assert locs == {"none": [], "xff": ["x-forwarded-for"], "two": ["x-request-id", "via"],
                    "all": ["x-request-id", "x-forwarded-for", "x-real-ip",
                            "x-forwarded-proto", "via"]}
