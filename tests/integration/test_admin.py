"""The admin API ([admin], docs/admin-api.md): auth, every endpoint with good
and bad input, runtime upstream membership under load, persistence.
"""
import http.client
import json
import os
import subprocess
import threading
import time

import pytest

import backends as B
from conftest import binary, free_port, require_binary, wait_port

TOKEN = "t0ken-for-tests"


def config(port, admin_port, addrs, token=TOKEN, persist=False, extra_admin="", header="1",
           upstream_extra=""):
    admin = '[admin]\naddr = "127.0.0.1:%d"\n' % admin_port
    if token:
        admin += 'token = "%s"\n' % token
    if persist:
        admin += "persist = true\n"
    return ('%s%s\n[servers.s]\naddr = "127.0.0.1:%d"\nlocations = ["all"]\n\n'
            '[locations.all]\nupstream = "u"\nresponse_set_headers = ["X-Gen: %s"]\n\n'
            '# the backends\n[upstreams.u]\naddrs = [%s] # keep me\n%s'
            % (admin, extra_admin, port, header, ", ".join('"%s"' % a for a in addrs),
               upstream_extra))


class Admin:
    def __init__(self, port, token=TOKEN):
        self.port = port
        self.token = token

    def call(self, method, path, body=None, token="default", headers=None):
        token = self.token if token == "default" else token
        hs = dict(headers or {})
        if token:
            hs["Authorization"] = "Bearer " + token
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            c.request(method, path, body=body, headers=hs)
            r = c.getresponse()
            data = r.read()
            r.json = json.loads(data) if data else None
            return r
        finally:
            c.close()


def start(start_proc, tmp_path, text, port, admin_port, args=()):
    require_binary("weir")
    path = tmp_path / "weir.toml"
    path.write_text(text)
    w = start_proc([binary("weir"), "-c", str(path), "--threads", "2"] + list(args), port, "weir")
    assert wait_port(admin_port, w.proc), w.describe()
    return path, w


def start_admin(backend, start_proc, tmp_path, n=2, **kw):
    bs = [backend(B.fixed(("b%d\n" % i).encode())) for i in range(n)]
    port, aport = free_port(), free_port()
    path, w = start(start_proc, tmp_path, config(port, aport, [b.addr for b in bs], **kw), port,
                    aport)
    return bs, port, Admin(aport), path, w


def addrs_of(r):
    return sorted(b["addr"] for b in r.json["backends"])


# ---------------------------------------------------------------------------
# Auth


def test_health_needs_no_token_everything_else_does(backend, start_proc, tmp_path):
    _, _, adm, _, _ = start_admin(backend, start_proc, tmp_path)
    r = adm.call("GET", "/api/health", token=None)
    assert r.status == 200 and r.json == {"status": "ok"}
    for method, path in [("GET", "/api/upstreams"), ("GET", "/api/config"),
                         ("POST", "/api/reload"), ("DELETE", "/api/upstreams/u/backends/x"),
                         ("GET", "/api/nothing")]:
        r = adm.call(method, path, token=None)
        assert r.status == 401, (method, path)
        assert r.getheader("WWW-Authenticate") == "Bearer"
        assert "error" in r.json
    for wrong in ["x", TOKEN[:-1], TOKEN + "x", TOKEN.upper()]:
        assert adm.call("GET", "/api/upstreams", token=wrong).status == 401
    r = adm.call("GET", "/api/upstreams", token=None, headers={"Authorization": "Basic " + TOKEN})
    assert r.status == 401
    assert adm.call("GET", "/api/upstreams").status == 200


def test_token_file_is_read_without_its_newline(backend, start_proc, tmp_path):
    tf = tmp_path / "token"
    tf.write_text("from-a-file\n")
    b = backend(B.fixed(b"a\n"))
    port, aport = free_port(), free_port()
    text = config(port, aport, [b.addr], token=None, extra_admin='token_file = "%s"\n' % tf)
    start(start_proc, tmp_path, text, port, aport)
    assert Admin(aport, "from-a-file").call("GET", "/api/upstreams").status == 200
    assert Admin(aport, "from-a-fil").call("GET", "/api/upstreams").status == 401
    assert Admin(aport, None).call("GET", "/api/upstreams").status == 401


def check_config(tmp_path, text):
    path = tmp_path / "check.toml"
    path.write_text(text)
    return subprocess.run([binary("weir"), "-t", "-c", str(path)], capture_output=True,
                          text=True, timeout=30)


def test_config_check_of_the_admin_section(tmp_path):
    require_binary("weir")
    base = config(free_port(), free_port(), ["127.0.0.1:1"], token=None)
    public = base.replace('addr = "127.0.0.1:', 'addr = "0.0.0.0:', 1)
    r = check_config(tmp_path, public)
    assert r.returncode == 1
    assert "check.toml:2: [admin] listens on 0.0.0.0:" in r.stderr
    assert "(not loopback) without a token" in r.stderr
    assert check_config(tmp_path, public.replace("[admin]\n", '[admin]\ntoken = "x"\n')).returncode == 0
    assert check_config(tmp_path, base).returncode == 0  # loopback without a token is fine
    r = check_config(tmp_path, base.replace("[admin]\n", "[admin]\npersit = true\n"))
    assert "unknown key 'persit' in [admin]; did you mean 'persist'?" in r.stderr
    r = check_config(tmp_path, base.replace("[admin]\n", '[admin]\ntoken = "a"\ntoken_file = "/x"\n'))
    assert "[admin] takes 'token' or 'token_file', not both" in r.stderr
    r = check_config(tmp_path, base.replace("[admin]\n", '[admin]\ntoken_file = "/nonexistent"\n'))
    assert "[admin] token_file /nonexistent:" in r.stderr
    r = check_config(tmp_path, base.replace("[admin]\n", "[admin]\npersist = 1\n"))
    assert "'persist' in [admin] must be true or false" in r.stderr
    r = check_config(tmp_path, base.replace('addr = "127.0.0.1:', 'addr = "127.0.0.1:x', 1))
    assert "invalid listen address" in r.stderr and r.returncode == 1
    # the admin address is no server's
    sport = free_port()
    clash = config(sport, sport, ["127.0.0.1:1"])
    r = check_config(tmp_path, clash)
    assert r.returncode == 1 and "[admin] address 127.0.0.1:%d is also used by [servers.s]" % sport in r.stderr


# ---------------------------------------------------------------------------
# Reading


def test_get_upstreams_and_one_upstream(backend, start_proc, tmp_path):
    bs, port, adm, _, _ = start_admin(backend, start_proc, tmp_path)
    for _ in range(4):
        assert B.get(port).status == 200
    # A request leaves in_flight once weir has logged it, which may be just
    # after the client read the response.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        r = adm.call("GET", "/api/upstreams")
        if all(b["in_flight"] == 0 for b in r.json["upstreams"][0]["backends"]):
            break
        time.sleep(0.02)
    assert r.status == 200 and r.getheader("Content-Type") == "application/json"
    [u] = r.json["upstreams"]
    assert u["name"] == "u" and u["algo"] == "round_robin"
    assert sorted(b["addr"] for b in u["backends"]) == sorted(b.addr for b in bs)
    keys = {"addr", "weight", "healthy", "draining", "breaker", "in_flight", "requests",
            "failures", "conns_new", "conns_reused", "health_changes"}
    for b in u["backends"]:
        assert set(b) == keys
        assert b["weight"] == 1 and b["healthy"] and not b["draining"]
        assert b["breaker"] == "closed" and b["in_flight"] == 0
    assert sum(b["requests"] for b in u["backends"]) == 4
    r = adm.call("GET", "/api/upstreams/u")
    assert r.status == 200 and r.json["name"] == "u" and len(r.json["backends"]) == 2
    r = adm.call("GET", "/api/upstreams/nope")
    assert r.status == 404 and "nope" in r.json["error"]


def test_get_config_shape(backend, start_proc, tmp_path):
    bs, port, adm, path, _ = start_admin(backend, start_proc, tmp_path)
    r = adm.call("GET", "/api/config")
    assert r.status == 200
    c = r.json
    assert c["file"] == str(path)
    assert set(c) >= {"basic", "admin", "servers", "locations", "upstreams"}
    assert c["admin"]["token"] is True and TOKEN not in json.dumps(c)
    [s] = c["servers"]
    assert s["name"] == "s" and s["addr"] == ["127.0.0.1:%d" % port] and s["locations"] == ["all"]
    [loc] = c["locations"]
    assert loc["upstream"] == "u" and loc["response_set_headers"] == ["X-Gen: 1"]
    [u] = c["upstreams"]
    assert u["name"] == "u" and u["algo"] == "round_robin" and u["addrs"] == [b.addr for b in bs]
    assert u["max_retries"] == 2 and u["health_check"] is None


def test_unknown_endpoints_and_methods(backend, start_proc, tmp_path):
    _, _, adm, _, _ = start_admin(backend, start_proc, tmp_path)
    for path in ["/api", "/api/", "/api/nothing", "/api/upstreams/u/x",
                 "/api/upstreams/u/backends/a/b", "/api/config/x"]:
        r = adm.call("GET", path)
        assert r.status == 404 and r.json["error"] == "no such endpoint", path
    for method, path, allow in [("POST", "/api/upstreams", "GET"), ("GET", "/api/reload", "POST"),
                                ("DELETE", "/api/upstreams/u", "GET, PUT"),
                                ("GET", "/api/upstreams/u/backends", "POST"),
                                ("PUT", "/api/config", "GET"),
                                ("GET", "/api/upstreams/u/backends/127.0.0.1:1", "DELETE, PATCH"),
                                ("POST", "/api/health", "GET")]:
        r = adm.call(method, path)
        assert r.status == 405, (method, path)
        assert r.getheader("Allow") == allow and "error" in r.json
    r = adm.call("DELETE", "/api/upstreams/u/backends/127.0.0.1%3")
    assert r.status == 400 and "percent" in r.json["error"]


# ---------------------------------------------------------------------------
# Membership


def test_add_remove_reweight_and_replace(backend, start_proc, tmp_path):
    bs, port, adm, path, _ = start_admin(backend, start_proc, tmp_path)
    extra = backend(B.fixed(b"extra\n"))
    before = path.read_text()
    r = adm.call("POST", "/api/upstreams/u/backends", {"addr": extra.addr, "weight": 3})
    assert r.status == 200, r.json
    assert addrs_of(r) == sorted([b.addr for b in bs] + [extra.addr])
    assert r.json["persisted"] is False
    assert {b["addr"]: b["weight"] for b in r.json["backends"]}[extra.addr] == 3
    # traffic reaches it
    bodies = {B.get(port).body for _ in range(10)}
    assert b"extra\n" in bodies
    # PATCH weight
    r = adm.call("PATCH", "/api/upstreams/u/backends/" + extra.addr, {"weight": 5})
    assert r.status == 200 and {b["addr"]: b["weight"] for b in r.json["backends"]}[extra.addr] == 5
    # DELETE, url-encoded address
    r = adm.call("DELETE", "/api/upstreams/u/backends/" + extra.addr.replace(":", "%3A"))
    assert r.status == 200 and addrs_of(r) == sorted(b.addr for b in bs)
    assert all(B.get(port).body != b"extra\n" for _ in range(6))
    # PUT replaces
    r = adm.call("PUT", "/api/upstreams/u", {"backends": [{"addr": extra.addr},
                                                          {"addr": bs[0].addr, "weight": 2}]})
    assert r.status == 200, r.json
    assert {b["addr"]: b["weight"] for b in r.json["backends"]} == {extra.addr: 1, bs[0].addr: 2}
    assert {B.get(port).body for _ in range(9)} == {b"extra\n", b"b0\n"}
    # persist is off: the file is untouched
    assert path.read_text() == before
    assert not os.path.exists(str(path) + ".prev")
    # an empty list is allowed: 503 until backends come back
    r = adm.call("PUT", "/api/upstreams/u", {"backends": []})
    assert r.status == 200 and r.json["backends"] == []
    assert B.get(port).status == 503


def test_bad_membership_input_is_rejected_and_changes_nothing(backend, start_proc, tmp_path):
    bs, port, adm, _, _ = start_admin(backend, start_proc, tmp_path)
    want = sorted(b.addr for b in bs)
    cases = [
        ("POST", "/api/upstreams/u/backends", '{"addr": "127.0.0.1:9"', 400, "malformed JSON"),
        ("POST", "/api/upstreams/u/backends", "", 400, "malformed JSON"),
        ("POST", "/api/upstreams/u/backends", "[1]", 400, "must be a JSON object"),
        ("POST", "/api/upstreams/u/backends", {"addr": "127.0.0.1:9", "wieght": 2}, 400,
         "unknown field 'wieght'"),
        ("POST", "/api/upstreams/u/backends", {"addr": "localhost:9"}, 400, "invalid address"),
        ("POST", "/api/upstreams/u/backends", {"addr": "127.0.0.1"}, 400, "invalid address"),
        ("POST", "/api/upstreams/u/backends", {"addr": "127.0.0.1:0"}, 400, "invalid address"),
        ("POST", "/api/upstreams/u/backends", {"addr": "0.0.0.0:80"}, 400, "invalid address"),
        ("POST", "/api/upstreams/u/backends", {"addr": 5}, 400, "'addr' must be a string"),
        ("POST", "/api/upstreams/u/backends", {"weight": 2}, 400, "'addr' must be a string"),
        ("POST", "/api/upstreams/u/backends", {"addr": "127.0.0.1:9", "weight": 0}, 400,
         "'weight' must be an integer from 1 to 10000"),
        ("POST", "/api/upstreams/u/backends", {"addr": "127.0.0.1:9", "weight": 2.5}, 400,
         "'weight'"),
        ("POST", "/api/upstreams/u/backends", '{"addr": "127.0.0.1:9", "addr": "127.0.0.1:8"}',
         400, "malformed JSON"),
        ("POST", "/api/upstreams/u/backends", {"addr": bs[0].addr}, 409, "already"),
        ("POST", "/api/upstreams/nope/backends", {"addr": "127.0.0.1:9"}, 404, "no upstream 'nope'"),
        ("PUT", "/api/upstreams/nope", {"backends": []}, 404, "no upstream 'nope'"),
        ("PUT", "/api/upstreams/u", {"backend": []}, 400, "unknown field 'backend'"),
        ("PUT", "/api/upstreams/u", {"backends": {}}, 400, "'backends' must be an array"),
        ("PUT", "/api/upstreams/u", {"backends": [{"addr": "127.0.0.1:9"}, {"addr": "bad"}]}, 400,
         "invalid address 'bad'"),
        ("PUT", "/api/upstreams/u", {"backends": [{"addr": "127.0.0.1:9"},
                                                  {"addr": "127.0.0.1:9"}]}, 400, "twice"),
        ("PUT", "/api/upstreams/u", {"backends": ["127.0.0.1:9"]}, 400, "must be an object"),
        ("DELETE", "/api/upstreams/u/backends/127.0.0.1:9", None, 404, "no backend 127.0.0.1:9"),
        ("DELETE", "/api/upstreams/u/backends/nonsense", None, 400, "invalid address"),
        ("DELETE", "/api/upstreams/nope/backends/127.0.0.1:9", None, 404, "no upstream"),
        ("DELETE", "/api/upstreams/u/backends/" + bs[0].addr, {"force": True}, 400,
         "unknown field 'force'"),
        ("PATCH", "/api/upstreams/u/backends/" + bs[0].addr, {}, 400, "nothing to change"),
        ("PATCH", "/api/upstreams/u/backends/" + bs[0].addr, {"drain": "yes"}, 400,
         "'drain' must be true or false"),
        ("PATCH", "/api/upstreams/u/backends/" + bs[0].addr, {"weight": 10001}, 400, "'weight'"),
        ("PATCH", "/api/upstreams/u/backends/" + bs[0].addr, {"color": 1}, 400, "unknown field"),
        ("PATCH", "/api/upstreams/u/backends/127.0.0.1:9", {"weight": 2}, 404, "no backend"),
        ("POST", "/api/reload", {"now": True}, 400, "unknown field 'now'"),
        ("POST", "/api/reload", "nope", 400, "malformed JSON"),
    ]
    for method, p, body, status, text in cases:
        r = adm.call(method, p, body)
        assert r.status == status, (method, p, body, r.status, r.json)
        assert text in r.json["error"], (method, p, body, r.json)
        assert addrs_of(adm.call("GET", "/api/upstreams/u")) == want, (method, p, body)
    # over 1 MiB
    r = adm.call("PUT", "/api/upstreams/u", b" " * (1024 * 1024 + 1))
    assert r.status == 413 and "error" in r.json
    # binary garbage
    r = adm.call("POST", "/api/upstreams/u/backends", bytes(range(256)))
    assert r.status == 400
    assert B.get(port).status == 200


def test_drain_stops_traffic_to_a_backend(backend, start_proc, tmp_path):
    bs, port, adm, _, _ = start_admin(backend, start_proc, tmp_path)
    r = adm.call("PATCH", "/api/upstreams/u/backends/" + bs[0].addr, {"drain": True})
    assert r.status == 200
    assert {b["addr"]: b["draining"] for b in r.json["backends"]}[bs[0].addr] is True
    n0 = bs[0].request_count()
    assert {B.get(port).body for _ in range(10)} == {b"b1\n"}
    assert bs[0].request_count() == n0
    r = adm.call("PATCH", "/api/upstreams/u/backends/" + bs[0].addr, {"drain": False})
    assert r.status == 200
    assert {B.get(port).body for _ in range(10)} == {b"b0\n", b"b1\n"}


@pytest.mark.deadline(120)
def test_dynamic_add_and_remove_under_load_loses_nothing(backend, start_proc, tmp_path):
    bs, port, adm, _, _ = start_admin(backend, start_proc, tmp_path, n=3)
    results, stop = [], threading.Event()

    def client():
        # A bounded stream of requests on fresh and kept-alive connections.
        for i in range(1500):
            if stop.is_set():
                break
            try:
                r = B.get(port, "/n%d" % i, close=(i % 2 == 0))
                results.append(r.status)
            except Exception as e:  # any failure counts
                results.append(repr(e))

    threads = [threading.Thread(target=client) for _ in range(3)]
    for t in threads:
        t.start()
    changes = 0
    deadline = time.monotonic() + 60
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
        victim = bs[changes % 3]
        r = adm.call("DELETE", "/api/upstreams/u/backends/" + victim.addr)
        assert r.status == 200, r.json
        time.sleep(0.02)
        r = adm.call("POST", "/api/upstreams/u/backends", {"addr": victim.addr})
        assert r.status == 200, r.json
        others = [b for b in bs if b is not victim]
        r = adm.call("PUT", "/api/upstreams/u",
                     {"backends": [{"addr": b.addr, "weight": 1 + changes % 3} for b in others]})
        assert r.status == 200, r.json
        time.sleep(0.02)
        r = adm.call("PUT", "/api/upstreams/u", {"backends": [{"addr": b.addr} for b in bs]})
        assert r.status == 200, r.json
        changes += 1
    stop.set()
    for t in threads:
        t.join(30)
    failed = [r for r in results if r != 200]
    assert changes >= 3 and len(results) == 4500 and not failed, (changes, failed[:5])
    r = adm.call("GET", "/api/upstreams/u")
    assert addrs_of(r) == sorted(b.addr for b in bs)
    assert all(b["in_flight"] == 0 for b in r.json["backends"])


# ---------------------------------------------------------------------------
# Validate and reload


def test_validate(backend, start_proc, tmp_path):
    bs, port, adm, path, _ = start_admin(backend, start_proc, tmp_path)
    r = adm.call("POST", "/api/config/validate", path.read_text())
    assert r.status == 200 and r.json == {"valid": True}
    bad = path.read_text() + "[upstreams.v]\nadrs = []\n"
    r = adm.call("POST", "/api/config/validate", bad)
    assert r.status == 200 and r.json["valid"] is False
    assert any(e.startswith("request:") and "unknown key 'adrs' in [upstreams.v]; did you mean "
               "'addrs'?" in e for e in r.json["errors"]), r.json
    r = adm.call("POST", "/api/config/validate", "x = [")
    assert r.json["valid"] is False and r.json["errors"][0].startswith("request:")
    r = adm.call("POST", "/api/config/validate", "")
    assert r.json["valid"] is False
    # validating changes nothing
    assert addrs_of(adm.call("GET", "/api/upstreams/u")) == sorted(b.addr for b in bs)


def test_reload_through_the_api(backend, start_proc, tmp_path):
    bs, port, adm, path, w = start_admin(backend, start_proc, tmp_path)
    c = backend(B.fixed(b"c\n"))
    aport = adm.port
    path.write_text(config(port, aport, [c.addr], header="2"))
    r = adm.call("POST", "/api/reload")
    assert r.status == 200 and r.json["reloaded"] is True
    r = B.get(port)
    assert r.body == b"c\n" and r.headers.get("x-gen") == "2"
    assert addrs_of(adm.call("GET", "/api/upstreams/u")) == [c.addr]
    # a bad file: 409 with the errors, the running configuration stays
    path.write_text(config(port, aport, [c.addr], header="3") + "[upstreams.v]\nadrs = []\n")
    r = adm.call("POST", "/api/reload", "{}")
    assert r.status == 409 and "running configuration stays" in r.json["error"]
    assert any("unknown key 'adrs'" in e for e in r.json["errors"]), r.json
    r = B.get(port)
    assert r.body == b"c\n" and r.headers.get("x-gen") == "2"
    # a change the running server cannot take is refused the same way
    path.write_text(config(port, aport, [c.addr], header="2").replace(
        "[servers.s]\n", '[servers.s]\nkeepalive_timeout = "5s"\n'))
    r = adm.call("POST", "/api/reload")
    assert r.status == 409, r.json
    assert any("'keepalive_timeout' of [servers.s] changed" in e for e in r.json["errors"]), r.json
    assert B.get(port).headers.get("x-gen") == "2"
    # the token follows the reloaded file
    path.write_text(config(port, aport, [c.addr], token="new-token", header="4"))
    assert adm.call("POST", "/api/reload").status == 200
    assert adm.call("GET", "/api/upstreams").status == 401
    assert Admin(aport, "new-token").call("GET", "/api/upstreams").status == 200


# ---------------------------------------------------------------------------
# Persistence


def test_persist_rewrites_the_addrs_line_and_keeps_the_previous_file(backend, start_proc,
                                                                      tmp_path):
    bs, port, adm, path, w = start_admin(backend, start_proc, tmp_path, persist=True,
                                   upstream_extra='algo = "round_robin" # rr\n')
    extra = backend(B.fixed(b"extra\n"))
    original = path.read_text()
    r = adm.call("POST", "/api/upstreams/u/backends", {"addr": extra.addr, "weight": 4})
    assert r.status == 200 and r.json["persisted"] is True, r.json
    text = path.read_text()
    want_line = 'addrs = ["%s", "%s", "%s 4"] # keep me' % (bs[0].addr, bs[1].addr, extra.addr)
    assert want_line in text.splitlines(), text
    # everything else is kept, comments included
    assert text.replace(want_line, "") == original.replace(
        'addrs = ["%s", "%s"] # keep me' % (bs[0].addr, bs[1].addr), "")
    assert (tmp_path / "weir.toml.prev").read_text() == original
    assert not (tmp_path / "weir.toml.tmp").exists()
    # drain is runtime state: not written
    r = adm.call("PATCH", "/api/upstreams/u/backends/" + bs[0].addr, {"drain": True})
    assert r.status == 200 and r.json["persisted"] is False
    assert path.read_text() == text
    r = adm.call("DELETE", "/api/upstreams/u/backends/" + bs[1].addr)
    assert r.status == 200 and r.json["persisted"] is True
    assert (tmp_path / "weir.toml.prev").read_text() == text
    # a reload of the written file keeps the membership
    assert adm.call("POST", "/api/reload").status == 200
    r = adm.call("GET", "/api/upstreams/u")
    assert {b["addr"]: b["weight"] for b in r.json["backends"]} == {bs[0].addr: 1, extra.addr: 4}
    # the file checks
    assert subprocess.run([binary("weir"), "-t", "-c", str(path)], capture_output=True,
                          timeout=30).returncode == 0


def test_persist_refuses_what_it_cannot_rewrite(backend, start_proc, tmp_path):
    bs, port, adm, path, w = start_admin(backend, start_proc, tmp_path, persist=True)
    # the upstream now lives in an inline table the rewrite does not handle
    text = path.read_text()
    head, _, _ = text.partition("# the backends")
    path.write_text(head + '[upstreams]\nu = { addrs = ["%s", "%s"] }\n' % (bs[0].addr, bs[1].addr))
    written = path.read_text()
    r = adm.call("POST", "/api/upstreams/u/backends", {"addr": "127.0.0.1:9"})
    assert r.status == 500 and "cannot persist" in r.json["error"], r.json
    assert "nothing was changed" in r.json["error"]
    assert path.read_text() == written
    assert addrs_of(adm.call("GET", "/api/upstreams/u")) == sorted(b.addr for b in bs)


def test_get_config_shows_effective_defaults_and_rewrite_text(backend, start_proc, tmp_path):
    """Durations and sizes left out show the values in effect (the server's,
    upstream's and health checker's defaults), not 0; a location's timeouts
    fall back to its upstream's; the rewrite is shown as written."""
    bs = [backend(B.fixed(b"b\n"))]
    port, aport = free_port(), free_port()
    text = config(port, aport, [b.addr for b in bs],
                  upstream_extra='health_check = "tcp://"\nconnection_timeout = "3s"\n')
    text = text.replace('[locations.all]\n',
                        '[locations.all]\nrewrite = "^/old/(.*)  /new/$1"\n')
    text += ('\n[locations.slow]\nupstream = "u"\nread_timeout = "2s"\n'
             'request_buffering = false\n'
             '\n[locations.answer]\necho = true\nrequest_buffer_size = "1KB"\n')
    start(start_proc, tmp_path, text, port, aport)
    r = Admin(aport).call("GET", "/api/config")
    assert r.status == 200, r.json
    c = r.json
    [s] = c["servers"]
    assert {k: s[k] for k in ("client_header_timeout_ms", "client_body_timeout_ms",
                              "keepalive_timeout_ms", "send_timeout_ms", "tunnel_idle_timeout_ms",
                              "max_header_size", "max_headers", "max_uri_size", "max_body_size",
                              "tls_handshake_timeout_ms")} == {
        "client_header_timeout_ms": 10000, "client_body_timeout_ms": 60000,
        "keepalive_timeout_ms": 60000, "send_timeout_ms": 60000,
        "tunnel_idle_timeout_ms": 600000, "max_header_size": 65536, "max_headers": 100,
        "max_uri_size": 8192, "max_body_size": 0, "tls_handshake_timeout_ms": None}, s
    [u] = c["upstreams"]
    assert (u["connection_timeout_ms"], u["read_timeout_ms"], u["write_timeout_ms"],
            u["idle_timeout_ms"], u["total_connection_timeout_ms"], u["keepalive"]) == \
        (3000, 60000, 60000, 60000, 0, 256), u
    hc = u["health_check"]
    assert (hc["url"], hc["interval_ms"], hc["timeout_ms"], hc["rise"], hc["fall"]) == \
        ("tcp://", 5000, 2000, 2, 3), hc
    locs = {loc["name"]: loc for loc in c["locations"]}
    timeouts = {name: (loc["connection_timeout_ms"], loc["read_timeout_ms"],
                       loc["write_timeout_ms"], loc["request_buffer_size"])
                for name, loc in locs.items()}
    assert timeouts == {"all": (3000, 60000, 60000, 65536), "slow": (3000, 2000, 60000, 0),
                        "answer": (None, None, None, 1024)}, timeouts
    assert locs["all"]["rewrite"] == "^/old/(.*)  /new/$1"
    assert locs["slow"]["rewrite"] is None
    # The rewrite shown is the one applied.
    assert B.get(port, "/old/x").status == 200
    assert bs[0].last().path == "/new/x"
