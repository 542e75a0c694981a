"""The plugin layer and the request plugins of the Pingap set: mock, ping,
redirect, request_id, request_headers and response_headers (with
variables), chains, steps, configuration errors and reloads."""
import gzip
import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

import backends as B
import conftest
from conftest import binary, free_port, require_binary


def server(locations, extra=""):
    """A server on @PORT@ with the given [locations.NAME] (dict: name -> body)."""
    text = ('[servers.s]\naddr = "127.0.0.1:@PORT@"\nlocations = [%s]\n'
            'access_log = "{status} {request_id} {uri}"\naccess_log_file = "@TMP@/access.log"\n'
            % ", ".join('"%s"' % n for n in locations))
    for name, body in locations.items():
        text += "[locations.%s]\n%s\n" % (name, body)
    return text + extra


def upstream(addr="@B@"):
    return '[upstreams.u]\naddrs = ["%s"]\n' % addr


def access_lines(tmp_path, n, timeout=5.0):
    log = tmp_path / "access.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = log.read_text().splitlines() if log.exists() else []
        if len(lines) >= n:
            return lines
        time.sleep(0.02)
    return log.read_text().splitlines() if log.exists() else []


def get_host(port, path, host):
    return B.request(port, b"GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
                     % (path.encode(), host.encode()))


def check(tmp_path, text):
    require_binary("weir")
    path = tmp_path / "check.toml"
    path.write_text(text.replace("@PORT@", "1").replace("@TMP@", str(tmp_path))
                    .replace("@B@", "127.0.0.1:2"))
    return subprocess.run([binary("weir"), "-t", "-c", str(path)], capture_output=True,
                          text=True, timeout=20)


# ---- mock ----

def test_mock_answers_with_status_headers_and_body(weir_toml, backend):
    b = backend()
    w = weir_toml(server({"l": 'upstream = "u"\nplugins = ["m"]'},
                         '[plugins.m]\ncategory = "mock"\nstatus = 503\n'
                         'headers = ["Retry-After: 30", "Content-Type: application/json"]\n'
                         'data = "{\\"down\\": true}"\n' + upstream()), B=b)
    r = B.get(w.port, "/anything")
    assert r.status == 503 and r.body == b'{"down": true}'
    assert r.headers.get("retry-after") == "30"
    assert r.headers.get("content-type") == "application/json"
    assert b.request_count() == 0


def test_mock_with_a_path_answers_only_that_path(weir_toml, backend):
    b = backend(B.fixed(b"from backend\n"))
    w = weir_toml(server({"l": 'upstream = "u"\nplugins = ["m"]'},
                         '[plugins.m]\ncategory = "mock"\npath = "/old"\ndata = "mocked"\n'
                         + upstream()), B=b)
    assert B.get(w.port, "/old").body == b"mocked"
    assert B.get(w.port, "/old/x").body == b"from backend\n"
    assert B.get(w.port, "/other").body == b"from backend\n"
    assert b.request_count() == 2


def test_mock_delay_does_not_hold_the_worker(weir_toml, backend):
    """Ten delayed requests on one worker finish together after ~the delay,
    and a request that is not delayed is served meanwhile."""
    b = backend(B.fixed(b"fast\n"))
    w = weir_toml(server({"l": 'upstream = "u"\nplugins = ["slow"]'},
                         '[plugins.slow]\ncategory = "mock"\npath = "/slow"\ndata = "late"\n'
                         'delay = "400ms"\n' + upstream()), B=b, threads=1)
    results = []
    t0 = time.monotonic()
    threads = [threading.Thread(target=lambda: results.append(B.get(w.port, "/slow")))
               for _ in range(10)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    fast = B.get(w.port, "/fast")
    fast_at = time.monotonic() - t0
    for t in threads:
        t.join(10)
    assert fast.status == 200 and fast.body == b"fast\n"
    assert fast_at < 0.4, "the worker was held by a delayed mock (%.2f s)" % fast_at
    assert len(results) == 10 and all(r.body == b"late" for r in results)


def test_client_leaving_during_a_mock_delay(weir_toml, backend):
    b = backend()
    w = weir_toml(server({"l": 'upstream = "u"\nplugins = ["slow"]'},
                         '[plugins.slow]\ncategory = "mock"\ndata = "late"\ndelay = "200ms"\n'
                         + upstream()), B=b)
    for _ in range(5):
        s = B.connect(w.port)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        s.close()
    time.sleep(0.5)
    # The worker goes on; the parked sessions ended without a trace in the
    # sanitizers (the fixture checks stderr at teardown).
    assert B.get(w.port, "/").body == b"late"


# ---- ping ----

def test_ping_answers_pong_on_its_path_only(weir_toml, backend):
    b = backend(B.fixed(b"app\n"))
    w = weir_toml(server({"l": 'upstream = "u"\nplugins = ["p"]'},
                         '[plugins.p]\ncategory = "ping"\npath = "/ping"\n' + upstream()), B=b)
    r = B.get(w.port, "/ping")
    assert r.status == 200 and r.body == b"pong"
    assert B.get(w.port, "/ping2").body == b"app\n"
    assert B.get(w.port, "/ping?x=1").body == b"pong"
    assert b.request_count() == 1


# ---- redirect ----

def test_redirect_to_a_prefix_keeps_path_and_query(weir_toml):
    w = weir_toml(server({"l": 'echo = true\nplugins = ["r"]'},
                         '[plugins.r]\ncategory = "redirect"\nprefix = "/app"\nstatus = 307\n'))
    r = B.get(w.port, "/x/y?a=1&b=2")
    assert r.status == 307 and r.headers.get("location") == "/app/x/y?a=1&b=2"
    # Already under the prefix: served.
    r = B.get(w.port, "/app/x")
    assert r.status == 200 and r.body.startswith(b"echo from")
    # "/application" is not under "/app".
    assert B.get(w.port, "/application").headers.get("location") == "/app/application"


def test_redirect_http_to_https(weir_toml):
    w = weir_toml(server({"l": 'echo = true\nplugins = ["r"]'},
                         '[plugins.r]\ncategory = "redirect"\nhttp_to_https = true\n'
                         'https_port = 8443\nstatus = 308\n'))
    r = get_host(w.port, "/p?q=1", "example.com:8080")
    assert r.status == 308 and r.headers.get("location") == "https://example.com:8443/p?q=1"


@pytest.mark.parametrize("bad,msg", [
    ('status = 303', "'status' in [plugins.r] must be 301, 302, 307 or 308"),
    ('prefix = "app"', "'prefix' in [plugins.r] must be a path starting with one '/'"),
    ('', "[plugins.r] needs 'http_to_https' or 'prefix'"),
])
def test_redirect_config_errors(tmp_path, bad, msg):
    r = check(tmp_path, server({"l": 'echo = true\nplugins = ["r"]'},
                               '[plugins.r]\ncategory = "redirect"\n' + bad + "\n"))
    assert r.returncode != 0 and msg in r.stderr, r.stderr
    assert re.search(r"check\.toml:\d+: ", r.stderr), r.stderr


def test_server_redirect_https_is_a_builtin_before_routing(weir_toml):
    w = weir_toml('[servers.s]\naddr = "127.0.0.1:@PORT@"\nlocations = ["l"]\n'
                  'redirect_https = true\n[locations.l]\npath = "/only"\necho = true\n')
    r = get_host(w.port, "/not-routed", "h.test")
    assert r.status == 301 and r.headers.get("location") == "https://h.test/not-routed"


# ---- request_id ----

UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
UUID7 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
NANO = re.compile(r"[A-Za-z0-9_-]{21}")


@pytest.mark.parametrize("algo,pattern", [("uuid", UUID4), ("uuidv7", UUID7),
                                          ("nanoid", NANO)])
def test_request_id_forms_reach_the_backend_and_the_log(weir_toml, backend, tmp_path, algo,
                                                        pattern):
    b = backend()
    w = weir_toml(server({"l": 'upstream = "u"\nplugins = ["rid"]'},
                         '[plugins.rid]\ncategory = "request_id"\nalgorithm = "%s"\n' % algo
                         + upstream()), B=b)
    for i in range(20):
        assert B.get(w.port, "/%d" % i).status == 200
    ids = [req.headers.get("x-request-id") for req in b.requests]
    assert all(pattern.fullmatch(i) for i in ids), ids
    assert len(set(ids)) == 20
    # Two workers log on their own: compare as sets.
    logged = [line.split()[1] for line in access_lines(tmp_path, 20)]
    assert sorted(logged) == sorted(ids)


def test_request_id_v7_is_time_ordered(weir_toml, backend):
    b = backend()
    w = weir_toml(server({"l": 'upstream = "u"\nplugins = ["rid"]'},
                         '[plugins.rid]\ncategory = "request_id"\nalgorithm = "uuidv7"\n'
                         + upstream()), B=b, threads=1)
    for i in range(5):
        B.get(w.port, "/%d" % i)
        time.sleep(0.002)
    ids = [req.headers.get("x-request-id") for req in b.requests]
    assert ids == sorted(ids)


def test_request_id_keeps_a_valid_incoming_id_when_asked(weir_toml, backend):
    b = backend()
    w = weir_toml(server({"l": 'upstream = "u"\nplugins = ["rid"]'},
                         '[plugins.rid]\ncategory = "request_id"\nuse_existing = true\n'
                         + upstream()), B=b)
    B.get(w.port, "/", headers=[("X-Request-Id", "client-42")])
    B.get(w.port, "/", headers=[("X-Request-Id", "bad id with spaces")])
    B.get(w.port, "/")
    got = [req.headers.get("x-request-id") for req in b.requests]
    assert got[0] == "client-42"
    assert UUID4.fullmatch(got[1]) and UUID4.fullmatch(got[2]), got
    assert all(len(req.headers.get_all("x-request-id")) == 1 for req in b.requests)


def test_request_id_replaces_the_client_id_by_default(weir_toml, backend):
    b = backend()
    w = weir_toml(server({"l": 'upstream = "u"\nplugins = ["rid"]'},
                         '[plugins.rid]\ncategory = "request_id"\nalgorithm = "nanoid"\n'
                         'size = 12\n' + upstream()), B=b)
    B.get(w.port, "/", headers=[("X-Request-Id", "client-42")])
    got = b.requests[0].headers.get("x-request-id")
    assert re.fullmatch(r"[A-Za-z0-9_-]{12}", got), got


def test_request_id_in_another_header(weir_toml, backend):
    b = backend()
    w = weir_toml(server({"l": 'upstream = "u"\nplugins = ["rid"]'},
                         '[plugins.rid]\ncategory = "request_id"\nheader_name = "X-Trace"\n'
                         + upstream()), B=b)
    B.get(w.port, "/")
    h = b.requests[0].headers
    assert UUID4.fullmatch(h.get("x-trace"))
    assert re.fullmatch(r"[0-9a-f]{32}", h.get("x-request-id")), "weir's own id stays"


# ---- headers and variables ----

def test_proxy_set_headers_variables_reach_the_backend_resolved(weir_toml, backend):
    """$remote_addr used to reach the backend as literal text."""
    b = backend()
    os.environ["WEIR_TEST_REGION"] = "eu-1"
    w = weir_toml(server({"l": 'upstream = "u"\nproxy_set_headers = ["X-Client: $remote_addr", '
                               '"X-Req: $request_id", "X-Where: ${WEIR_TEST_REGION}/$scheme", '
                               '"X-Lit: $not_a_var and 5$"]'}, upstream()), B=b)
    B.get(w.port, "/v", headers=[("X-Request-Id", "rid-1")])
    h = b.requests[0].headers
    assert h.get("x-client") == "127.0.0.1"
    assert h.get("x-req") == "rid-1"
    assert h.get("x-where") == "eu-1/http"
    assert h.get("x-lit") == "$not_a_var and 5$"


def test_response_headers_plugin(weir_toml, backend):
    b = backend(B.fixed(b"ok\n", headers=[("X-Old", "v"), ("Server", "backend/1"),
                                          ("X-Frame-Options", "SAMEORIGIN")]))
    w = weir_toml(server({"l": 'upstream = "u"\nplugins = ["rh"]'},
                         '[plugins.rh]\ncategory = "response_headers"\n'
                         'add_headers = ["X-Up: $upstream_addr", "X-Host: $host"]\n'
                         'set_headers = ["Cache-Control: no-store"]\n'
                         'remove_headers = ["Server"]\n'
                         'rename_headers = ["X-Old: X-New"]\n'
                         'set_headers_not_exists = ["X-Frame-Options: DENY", '
                         '"X-Content-Type-Options: nosniff"]\n' + upstream()), B=b)
    r = get_host(w.port, "/", "shop.test")
    h = r.headers
    assert h.get("x-up") == b.addr
    assert h.get("x-host") == "shop.test"
    assert h.get("cache-control") == "no-store"
    assert h.get("x-new") == "v" and h.get("x-old") is None
    assert h.get("x-frame-options") == "SAMEORIGIN"
    assert h.get("x-content-type-options") == "nosniff"
    assert h.get("server") is None


def test_request_headers_plugin_at_proxy_upstream(weir_toml, backend):
    b = backend()
    w = weir_toml(server({"l": 'upstream = "u"\nplugins = ["qh"]'},
                         '[plugins.qh]\ncategory = "request_headers"\n'
                         'set_headers = ["X-Path: $path", "X-Method: $method"]\n'
                         'remove_headers = ["X-Secret"]\n' + upstream()), B=b)
    B.get(w.port, "/a/b?c=1", headers=[("X-Secret", "s")])
    h = b.requests[0].headers
    assert h.get("x-path") == "/a/b" and h.get("x-method") == "GET"
    assert h.get("x-secret") is None


def test_header_rules_cannot_touch_framing(tmp_path):
    r = check(tmp_path, server({"l": 'upstream = "u"\nplugins = ["rh"]'},
                               '[plugins.rh]\ncategory = "response_headers"\n'
                               'set_headers = ["Content-Length: 1"]\n' + upstream()))
    assert r.returncode != 0 and "'Content-Length' cannot be changed" in r.stderr, r.stderr


# ---- chains, steps, errors, reload ----

def test_chain_runs_in_order_and_an_answer_stops_it(weir_toml, backend):
    b = backend()
    w = weir_toml(server({"l": 'upstream = "u"\nplugins = ["first", "second"]'},
                         '[plugins.first]\ncategory = "mock"\npath = "/a"\ndata = "first"\n'
                         '[plugins.second]\ncategory = "mock"\ndata = "second"\n' + upstream()),
                  B=b)
    assert B.get(w.port, "/a").body == b"first"
    assert B.get(w.port, "/b").body == b"second"


def test_neighbouring_header_plugins_act_one_after_another(weir_toml, backend, tmp_path):
    """Header plugins next to each other run as one merged list (fewer
    calls per request): what each does must still see what the one before
    did, as when they ran apart, on both sides and across a reload."""
    b = backend(B.fixed(b"ok\n", headers=[("Server", "be"), ("X-Up", "1")]))
    plugins = (
        '[plugins.a]\ncategory = "response_headers"\nremove_headers = ["Server"]\n'
        'set_headers = ["X-A: a"]\n'
        '[plugins.b]\ncategory = "response_headers"\nrename_headers = ["X-A: X-B"]\n'
        'set_headers_not_exists = ["X-Up: 2"]\n'
        '[plugins.c]\ncategory = "response_headers"\nset_headers_not_exists = ["X-B: no", "X-A: again"]\n'
        'add_headers = ["X-C: c"]\n'
        '[plugins.d]\ncategory = "response_headers"\nremove_headers = ["X-C"]\nadd_headers = ["X-D: $request_id"]\n'
        '[plugins.qa]\ncategory = "request_headers"\nset_headers = ["X-Q: 1"]\n'
        '[plugins.qb]\ncategory = "request_headers"\nrename_headers = ["X-Q: X-R"]\n')
    text = server({"l": 'upstream = "u"\nproxy_set_headers = ["X-Q: 0"]\n'
                        'plugins = ["a", "b", "qa", "c", "qb", "d"]'}, plugins + upstream())
    w = weir_toml(text, B=b)

    def check_once():
        r = B.get(w.port, "/")
        assert r.status == 200
        h = r.headers
        assert h.get("server") is None and h.get("x-a") == "again" and h.get("x-b") == "a"
        assert h.get("x-up") == "1" and h.get("x-c") is None and len(h.get("x-d", "")) > 8
        got = b.last().headers
        assert got.get("x-q") is None and got.get("x-r") == "1"
        return h

    assert check_once().get("x-e") is None
    cfg = [a for a in w.argv if a.endswith(".toml")][0]
    text = open(cfg).read().replace('"X-D: $request_id"', '"X-D: $request_id", "X-E: e"')
    open(cfg, "w").write(text)
    w.signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and B.get(w.port, "/").headers.get("x-e") != "e":
        time.sleep(0.05)
    assert check_once().get("x-e") == "e", w.stderr()


def test_step_moves_a_plugin(weir_toml, backend):
    """A mock at proxy_upstream runs after the location's request-step
    plugins: a ping there answers first."""
    b = backend()
    w = weir_toml(server({"l": 'upstream = "u"\nplugins = ["m", "p"]'},
                         '[plugins.m]\ncategory = "mock"\ndata = "mock"\nstep = "proxy_upstream"\n'
                         '[plugins.p]\ncategory = "ping"\npath = "/ping"\nstep = "request"\n'
                         + upstream()), B=b)
    assert B.get(w.port, "/ping").body == b"pong"
    assert B.get(w.port, "/x").body == b"mock"
    assert b.request_count() == 0


@pytest.mark.parametrize("plugins,loc,msg", [
    ('[plugins.m]\ncategory = "moc"\n', 'plugins = ["m"]',
     "unknown plugin category 'moc'; did you mean 'mock'?"),
    ('[plugins.m]\n', 'plugins = ["m"]', "[plugins.m] needs 'category'"),
    ('[plugins.m]\ncategory = "mock"\nstatuss = 200\n', 'plugins = ["m"]',
     "unknown key 'statuss' in [plugins.m]; did you mean 'status'?"),
    ('[plugins.m]\ncategory = "mock"\n', 'plugins = ["mm"]',
     "[locations.l] refers to undefined plugin 'mm'; did you mean 'm'?"),
    ('[plugins.m]\ncategory = "mock"\nstep = "response"\n', 'plugins = ["m"]',
     "'step' in [plugins.m]: a mock plugin runs at early_request, request, proxy_upstream, "
     "not 'response'"),
    ('[plugins.m]\ncategory = "mock"\nstatus = 99\n', 'plugins = ["m"]',
     "'status' in [plugins.m]"),
    ('[plugins.p]\ncategory = "ping"\n', 'plugins = ["p"]', "[plugins.p] needs 'path'"),
    ('[plugins.r]\ncategory = "request_id"\nalgorithm = "uuid9"\n', 'plugins = ["r"]',
     "'algorithm' in [plugins.r] must be uuid, uuidv7 or nanoid, not 'uuid9'"),
    ('[plugins.r]\ncategory = "rewrite"\n', 'plugins = ["r"]',
     "unknown plugin category 'rewrite'"),
])
def test_plugin_config_errors_name_the_line(tmp_path, plugins, loc, msg):
    r = check(tmp_path, server({"l": 'upstream = "u"\n' + loc}, plugins + upstream()))
    assert r.returncode != 0, r.stderr
    assert msg in r.stderr, r.stderr
    assert re.search(r"check\.toml:\d+: ", r.stderr), r.stderr


def test_reload_changes_plugins(weir_toml, backend, tmp_path):
    b = backend()
    text = server({"l": 'upstream = "u"\nplugins = ["m"]'},
                  '[plugins.m]\ncategory = "mock"\ndata = "one"\n' + upstream())
    w = weir_toml(text, B=b)
    assert B.get(w.port, "/").body == b"one"
    cfg = [a for a in w.argv if a.endswith(".toml")][0]
    body = open(cfg).read().replace('data = "one"', 'data = "two"')
    open(cfg, "w").write(body)
    w.signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and B.get(w.port, "/").body != b"two":
        time.sleep(0.05)
    assert B.get(w.port, "/").body == b"two"
    # A bad plugin in a reload keeps the running configuration.
    open(cfg, "w").write(body.replace('category = "mock"', 'category = "nope"'))
    w.signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and "reload failed" not in w.stderr():
        time.sleep(0.05)
    assert "unknown plugin category 'nope'" in w.stderr()
    assert B.get(w.port, "/").body == b"two"


def test_config_api_shows_the_chain(tmp_path, start_proc, backend):
    require_binary("weir")
    import json
    import urllib.request
    b = backend()
    port, admin = free_port(), free_port()
    cfg = tmp_path / "w.toml"
    cfg.write_text(('[admin]\naddr = "127.0.0.1:%d"\n' % admin)
                   + server({"l": 'upstream = "u"\nproxy_set_headers = ["X-A: 1"]\n'
                                  'plugins = ["p"]'},
                            '[plugins.p]\ncategory = "ping"\npath = "/ping"\n'
                            + upstream(b.addr)).replace("@PORT@", str(port))
                   .replace("@TMP@", str(tmp_path)))
    start_proc([binary("weir"), "-c", str(cfg), "--threads", "1"], port, "weir")
    with urllib.request.urlopen("http://127.0.0.1:%d/api/config" % admin, timeout=5) as r:
        doc = json.loads(r.read())
    loc = doc["locations"][0]
    assert loc["plugins"] == ["p"]
    assert [(p["category"], p["step"], p["builtin"]) for p in loc["chain"]] == [
        ("request_headers", "proxy_upstream", True), ("ping", "early_request", False)]
    assert doc["plugins"] == [{"name": "p", "category": "ping", "step": "early_request",
                               "builtin": False}]


# ---- limit ----

def limit_cfg(body, threads_note=""):
    return server({"l": 'upstream = "u"\nplugins = ["lim"]'},
                  '[plugins.lim]\ncategory = "limit"\n' + body + upstream())


def statuses(port, n, headers=()):
    return [B.get(port, "/", headers=headers).status for _ in range(n)]


def test_rate_limit_per_ip_answers_429_with_retry_after(weir_toml, backend):
    b = backend()
    w = weir_toml(limit_cfg('type = "rate"\ntag = "ip"\nmax = 5\ninterval = "10s"\n'), B=b)
    got = statuses(w.port, 8)
    assert got == [200] * 5 + [429] * 3, got
    r = B.get(w.port, "/")
    assert r.status == 429 and 1 <= int(r.headers.get("retry-after")) <= 10
    assert b.request_count() == 5


def test_rate_limit_is_one_limit_across_workers(weir_toml, backend):
    """Forty requests on forty connections spread over four workers: the
    limit of 10 holds for all of them together."""
    b = backend()
    w = weir_toml(limit_cfg('max = 10\ninterval = "30s"\n'), B=b, threads=4)
    results = []
    lock = threading.Lock()

    def one():
        st = B.get(w.port, "/").status
        with lock:
            results.append(st)

    threads = [threading.Thread(target=one) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(results) == [200] * 10 + [429] * 30, sorted(results)


def test_rate_limit_refills(weir_toml, backend):
    b = backend()
    w = weir_toml(limit_cfg('max = 2\ninterval = "400ms"\n'), B=b)
    assert statuses(w.port, 3) == [200, 200, 429]
    time.sleep(0.25)  # one emission interval (200 ms) later: one more
    assert statuses(w.port, 2) == [200, 429]


def test_rate_limit_by_header_keys_apart_and_skips_requests_without_it(weir_toml, backend):
    b = backend()
    w = weir_toml(limit_cfg('tag = "header"\nkey = "X-Api-Key"\nmax = 2\ninterval = "30s"\n'),
                  B=b)
    assert statuses(w.port, 3, [("X-Api-Key", "alice")]) == [200, 200, 429]
    assert statuses(w.port, 2, [("X-Api-Key", "bob")]) == [200, 200]
    assert statuses(w.port, 4) == [200] * 4, "no key: not limited"


def test_rate_limit_by_cookie_and_query(weir_toml, backend):
    b = backend()
    w = weir_toml(limit_cfg('tag = "cookie"\nkey = "sid"\nmax = 1\ninterval = "30s"\n'), B=b)
    h = [("Cookie", "a=1; sid=xyz; b=2")]
    assert statuses(w.port, 2, h) == [200, 429]
    assert statuses(w.port, 1, [("Cookie", "sid=other")]) == [200]
    w2 = weir_toml(limit_cfg('tag = "query"\nkey = "token"\nmax = 1\ninterval = "30s"\n'), B=b)
    assert B.get(w2.port, "/?token=t1&x=2").status == 200
    assert B.get(w2.port, "/?x=2&token=t1").status == 429
    assert B.get(w2.port, "/?token=t2").status == 200


def test_inflight_limit(weir_toml, backend):
    b = backend(B.slow(0.5, b"slow\n"))
    w = weir_toml(limit_cfg('type = "inflight"\nmax = 2\n'), B=b)
    results = []
    threads = [threading.Thread(target=lambda: results.append(B.get(w.port, "/").status))
               for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    assert B.get(w.port, "/").status == 429, "a third at once is refused"
    for t in threads:
        t.join(10)
    assert results == [200, 200]
    assert B.get(w.port, "/").status == 200, "their places came back"


def test_limit_state_survives_a_reload(weir_toml, backend):
    b = backend()
    w = weir_toml(limit_cfg('max = 3\ninterval = "60s"\n'), B=b)
    assert statuses(w.port, 4) == [200, 200, 200, 429]
    cfg = [a for a in w.argv if a.endswith(".toml")][0]
    text = open(cfg).read()
    open(cfg, "w").write(text + "# touched\n")
    w.signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and w.stderr().count("reloaded") < 1:
        time.sleep(0.05)
    assert "reloaded" in w.stderr()
    assert statuses(w.port, 1) == [429], "the buckets were kept"
    # Another name is another limit.
    open(cfg, "w").write(text.replace("plugins.lim", "plugins.lim2")
                         .replace('plugins = ["lim"]', 'plugins = ["lim2"]'))
    w.signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and w.stderr().count("reloaded") < 2:
        time.sleep(0.05)
    assert statuses(w.port, 1) == [200]


@pytest.mark.parametrize("body,msg", [
    ('max = 0\n', "'max' in [plugins.lim]"),
    ('', "[plugins.lim] needs 'max'"),
    ('type = "burst"\nmax = 1\n', "'type' in [plugins.lim] must be rate or inflight"),
    ('tag = "header"\nmax = 1\n', "[plugins.lim] needs 'key': the header to limit by"),
    ('tag = "user"\nmax = 1\n', "'tag' in [plugins.lim] must be ip, header, cookie or query"),
    ('type = "inflight"\nmax = 1\ninterval = "1s"\n',
     "'interval' in [plugins.lim] is for type = \"rate\""),
])
def test_limit_config_errors(tmp_path, body, msg):
    r = check(tmp_path, limit_cfg(body))
    assert r.returncode != 0 and msg in r.stderr, r.stderr


# ---- restrictions ----

def restricted(weir_toml, backend, body, **kw):
    b = backend()
    return weir_toml(server({"l": 'upstream = "u"\nplugins = ["x"]'},
                            "[plugins.x]\n" + body + upstream()), B=b, **kw), b


def test_ip_restriction_deny_and_allow(weir_toml, backend):
    w, b = restricted(weir_toml, backend, 'category = "ip_restriction"\n'
                      'ip_list = ["127.0.0.0/8"]\nmessage = "go away"\n')
    r = B.get(w.port, "/")
    assert r.status == 403 and r.body == b"go away"
    w2, b2 = restricted(weir_toml, backend, 'category = "ip_restriction"\ntype = "allow"\n'
                        'ip_list = ["10.0.0.0/8", "127.0.0.1"]\n')
    assert B.get(w2.port, "/").status == 200
    w3, _ = restricted(weir_toml, backend, 'category = "ip_restriction"\ntype = "allow"\n'
                       'ip_list = ["10.0.0.0/8", "::1"]\n')
    assert B.get(w3.port, "/").status == 403


def test_ip_restriction_follows_trusted_proxies_only(weir_toml, backend):
    """X-Forwarded-For decides only from a trusted peer: a client cannot
    claim an allowed address."""
    b = backend()
    base = server({"l": 'upstream = "u"\nplugins = ["x"]'},
                  '[plugins.x]\ncategory = "ip_restriction"\ntype = "allow"\n'
                  'ip_list = ["203.0.113.0/24"]\n' + upstream())
    w = weir_toml(base, B=b)
    assert B.get(w.port, "/", headers=[("X-Forwarded-For", "203.0.113.9")]).status == 403
    trusted = base.replace('locations = ["l"]', 'locations = ["l"]\ntrusted_proxies = ["127.0.0.1"]')
    w2 = weir_toml(trusted, B=b)
    assert B.get(w2.port, "/", headers=[("X-Forwarded-For", "203.0.113.9")]).status == 200
    assert B.get(w2.port, "/", headers=[("X-Forwarded-For", "198.51.100.1")]).status == 403


def test_referer_restriction(weir_toml, backend):
    w, _ = restricted(weir_toml, backend, 'category = "referer_restriction"\ntype = "allow"\n'
                      'referer_list = ["example.com", "*.example.com"]\n')
    ok = [("Referer", "https://example.com/page"), ("Referer", "http://a.b.example.com:8080/x"),
          ("Referer", "https://user@shop.example.com/")]
    bad = [("Referer", "https://evil.com/"), ("Referer", "https://example.com.evil.com/"),
           ("Referer", "not a url"), ("Referer", "https://evilexample.com/")]
    for h in ok:
        assert B.get(w.port, "/", headers=[h]).status == 200, h
    for h in bad:
        assert B.get(w.port, "/", headers=[h]).status == 403, h
    assert B.get(w.port, "/").status == 403, "no Referer: not in an allow list"


def test_ua_restriction(weir_toml, backend):
    w, _ = restricted(weir_toml, backend, 'category = "ua_restriction"\n'
                      'ua_list = ["~(?i)bot", "curl/*", "Exact Agent 1.0"]\n')
    for ua in ("Googlebot/2.1", "my-BOT", "curl/8.1", "exact agent 1.0"):
        assert B.get(w.port, "/", headers=[("User-Agent", ua)]).status == 403, ua
    for ua in ("Mozilla/5.0", "wget/1.0", "Exact Agent 1.01"):
        assert B.get(w.port, "/", headers=[("User-Agent", ua)]).status == 200, ua


@pytest.mark.parametrize("kind,status", [("deny", 403), ("allow", 403)])
def test_ua_restriction_a_regex_that_cannot_finish_decides_against(weir_toml, backend, kind,
                                                                   status):
    """A user agent made to exhaust PCRE2's match limit on a backtracking
    pattern: neither list lets it through for that (a deny list denies, an
    allow list refuses), where treating the error as no match would have
    opened the deny list."""
    w, _ = restricted(weir_toml, backend, 'category = "ua_restriction"\ntype = "%s"\n'
                      'ua_list = ["~^(a|a)+$"]\n' % kind)
    hostile = "a" * 40 + "!"
    assert B.get(w.port, "/", headers=[("User-Agent", hostile)]).status == status
    fine = "Mozilla/5.0" if kind == "deny" else "aaaa"
    assert B.get(w.port, "/", headers=[("User-Agent", fine)]).status == 200


def test_ua_restriction_an_undecided_regex_leaves_the_others_to_decide(weir_toml, backend):
    """The order of an allow list does not matter: a regex that cannot
    finish does not hide a later pattern that matches."""
    hostile = "a" * 40 + "!"
    for order in ('["~^(a|a)+$", "aaaa*"]', '["aaaa*", "~^(a|a)+$"]'):
        w, _ = restricted(weir_toml, backend, 'category = "ua_restriction"\ntype = "allow"\n'
                          'ua_list = %s\n' % order)
        assert B.get(w.port, "/", headers=[("User-Agent", hostile)]).status == 200, order


@pytest.mark.parametrize("body,msg", [
    ('category = "ip_restriction"\nip_list = ["10.0.0.0/33"]\n',
     "'ip_list' in [plugins.x]: '10.0.0.0/33' is not an address or CIDR block"),
    ('category = "ip_restriction"\n', "[plugins.x] needs 'ip_list'"),
    ('category = "ip_restriction"\ntype = "block"\nip_list = []\n',
     "'type' in [plugins.x] must be allow or deny"),
    ('category = "ua_restriction"\nua_list = ["~(unclosed"]\n',
     "'ua_list' in [plugins.x]: bad regex '(unclosed'"),
    ('category = "referer_restriction"\n', "[plugins.x] needs 'referer_list'"),
])
def test_restriction_config_errors(tmp_path, body, msg):
    r = check(tmp_path, server({"l": 'upstream = "u"\nplugins = ["x"]'},
                               "[plugins.x]\n" + body + upstream()))
    assert r.returncode != 0 and msg in r.stderr, r.stderr


# ---- cors ----

def cors(weir_toml, backend, body, handler=None):
    b = backend(handler) if handler else backend()
    return weir_toml(server({"l": 'upstream = "u"\nplugins = ["c"]'},
                            '[plugins.c]\ncategory = "cors"\n' + body + upstream()), B=b), b


def preflight(port, origin, method="PUT", headers="X-Custom, Content-Type"):
    raw = ("OPTIONS /api HTTP/1.1\r\nHost: x\r\nOrigin: %s\r\n"
           "Access-Control-Request-Method: %s\r\nAccess-Control-Request-Headers: %s\r\n"
           "Connection: close\r\n\r\n" % (origin, method, headers)).encode()
    return B.request(port, raw, "OPTIONS")


def test_cors_preflight_is_answered_for_allowed_origins(weir_toml, backend):
    w, b = cors(weir_toml, backend, 'allow_origins = ["https://app.example.com", '
                '"~^https://[a-z]+\\\\.example\\\\.org$"]\nallow_credentials = true\n'
                'max_age = "1h"\nallow_methods = "GET, PUT"\n')
    r = preflight(w.port, "https://app.example.com")
    assert r.status == 204
    h = r.headers
    assert h.get("access-control-allow-origin") == "https://app.example.com"
    assert h.get("access-control-allow-methods") == "GET, PUT"
    assert h.get("access-control-allow-headers") == "X-Custom, Content-Type"
    assert h.get("access-control-allow-credentials") == "true"
    assert h.get("access-control-max-age") == "3600"
    assert "Origin" in h.get("vary")
    assert preflight(w.port, "https://shop.example.org").status == 204
    assert preflight(w.port, "https://evil.com").status == 403
    assert preflight(w.port, "https://shop.example.org.evil.com").status == 403
    assert b.request_count() == 0, "preflights are answered by weir"


def test_cors_actual_request_gets_the_fields(weir_toml, backend):
    w, b = cors(weir_toml, backend, 'allow_origins = ["https://app.example.com"]\n'
                'expose_headers = "X-Request-Id"\n',
                B.fixed(b"ok\n", headers=[("Access-Control-Allow-Origin", "*"),
                                          ("Vary", "Accept-Encoding")]))
    r = B.get(w.port, "/api", headers=[("Origin", "https://app.example.com")])
    assert r.status == 200
    assert r.headers.get_all("access-control-allow-origin") == ["https://app.example.com"]
    assert r.headers.get("access-control-expose-headers") == "X-Request-Id"
    assert "Origin" in ", ".join(r.headers.get_all("vary"))
    r = B.get(w.port, "/api", headers=[("Origin", "https://evil.com")])
    assert r.status == 200 and r.headers.get("access-control-allow-origin") == "*", \
        "an origin not allowed gets nothing of ours (the backend's field stays)"
    r = B.get(w.port, "/api")
    assert r.headers.get_all("vary") == ["Accept-Encoding"], "no Origin: untouched"


def test_cors_star_with_and_without_credentials(weir_toml, backend):
    w, _ = cors(weir_toml, backend, 'allow_origins = ["*"]\n')
    r = B.get(w.port, "/", headers=[("Origin", "https://any.test")])
    assert r.headers.get("access-control-allow-origin") == "*"
    w2, _ = cors(weir_toml, backend, 'allow_origins = ["*"]\nallow_credentials = true\n')
    r = B.get(w2.port, "/", headers=[("Origin", "https://any.test")])
    assert r.headers.get("access-control-allow-origin") == "https://any.test"
    assert r.headers.get("access-control-allow-credentials") == "true"
    # "null" (a sandboxed iframe) is not "any origin": reflecting it with
    # credentials would open the API to every page.
    r = B.get(w2.port, "/", headers=[("Origin", "null")])
    assert r.headers.get("access-control-allow-origin") is None
    assert preflight(w2.port, "null").status == 403
    w3, _ = cors(weir_toml, backend, 'allow_origins = ["null"]\n')
    assert preflight(w3.port, "null").status == 204, "listed by name, it is allowed"


def test_cors_star_beside_other_origins(weir_toml, backend, tmp_path):
    """Entries next to "*" are still read: a bad regex there is an error,
    and "null" listed by name is allowed while no wildcard or regex covers
    it."""
    r = check(tmp_path, server({"l": 'upstream = "u"\nplugins = ["c"]'},
                               '[plugins.c]\ncategory = "cors"\n'
                               'allow_origins = ["*", "~(unclosed"]\n' + upstream()))
    assert r.returncode != 0 and "bad regex '(unclosed'" in r.stderr, r.stderr
    w, _ = cors(weir_toml, backend, 'allow_origins = ["*", "null"]\nallow_credentials = true\n')
    assert preflight(w.port, "null").status == 204
    w2, _ = cors(weir_toml, backend, 'allow_origins = ["*n*", "~^n"]\n')
    assert preflight(w2.port, "null").status == 403
    assert preflight(w2.port, "https://n.test").status == 204


# ---- traffic_splitting ----

def split_cfg(body):
    return server({"l": 'upstream = "u"\nplugins = ["split"]'},
                  '[plugins.split]\ncategory = "traffic_splitting"\nupstream = "v2"\n' + body
                  + upstream() + '[upstreams.v2]\naddrs = ["@C@"]\n')


def test_traffic_splitting_sends_its_share(weir_toml, backend):
    main, canary = backend(B.fixed(b"v1\n")), backend(B.fixed(b"v2\n"))
    w = weir_toml(split_cfg("weight = 20\n"), B=main, C=canary)
    bodies = [B.get(w.port, "/").body for _ in range(400)]
    share = bodies.count(b"v2\n") / 400
    assert 0.12 < share < 0.28, share
    w0 = weir_toml(split_cfg("weight = 0\n"), B=main, C=canary)
    assert all(B.get(w0.port, "/").body == b"v1\n" for _ in range(50))
    w100 = weir_toml(split_cfg("weight = 100\n"), B=main, C=canary)
    assert all(B.get(w100.port, "/").body == b"v2\n" for _ in range(50))


def test_traffic_splitting_sticky_by_cookie(weir_toml, backend):
    main, canary = backend(B.fixed(b"v1\n")), backend(B.fixed(b"v2\n"))
    w = weir_toml(split_cfg('weight = 50\nstickiness = "cookie"\nsticky_key = "uid"\n'),
                  B=main, C=canary)
    seen = {}
    for user in range(40):
        got = {B.get(w.port, "/", headers=[("Cookie", "uid=user%d" % user)]).body
               for _ in range(5)}
        assert len(got) == 1, "user%d moved between upstreams" % user
        seen[user] = got.pop()
    assert set(seen.values()) == {b"v1\n", b"v2\n"}, "both get some users"


def test_traffic_splitting_undefined_upstream(tmp_path):
    r = check(tmp_path, server({"l": 'upstream = "u"\nplugins = ["split"]'},
                               '[plugins.split]\ncategory = "traffic_splitting"\n'
                               'upstream = "uu"\nweight = 5\n' + upstream()))
    assert r.returncode != 0
    assert "[plugins.split] refers to undefined upstream 'uu'; did you mean 'u'?" in r.stderr
    assert re.search(r"check\.toml:\d+: \[plugins\.split\] refers", r.stderr), r.stderr


# ---- accept_encoding ----

@pytest.mark.parametrize("sent,only_one,want", [
    ("gzip, deflate, br", "false", "br, gzip"),
    ("gzip, deflate, br", "true", "br"),
    ("gzip;q=0.5, br;q=0", "false", "gzip"),
    ("*", "true", "zstd"),
    ("*, zstd;q=0", "false", "br, gzip"),
    ("deflate", "false", None),
    ("identity", "false", None),
])
def test_accept_encoding_normalised(weir_toml, backend, sent, only_one, want):
    b = backend()
    w = weir_toml(server({"l": 'upstream = "u"\nplugins = ["ae"]'},
                         '[plugins.ae]\ncategory = "accept_encoding"\n'
                         'encodings = "zstd, br, gzip"\nonly_one_encoding = %s\n' % only_one
                         + upstream()), B=b)
    B.get(w.port, "/", headers=[("Accept-Encoding", sent)])
    assert b.requests[0].headers.get("accept-encoding") == want


# ---- stats ----

def test_stats_document(weir_toml, backend):
    import json
    b = backend()
    w = weir_toml(server({"l": 'upstream = "u"\nplugins = ["st"]'},
                         '[plugins.st]\ncategory = "stats"\npath = "/stats"\n' + upstream()),
                  B=b)
    B.get(w.port, "/warm")
    # /warm's backend slot is given back when its session ends, which may
    # be a moment after the client has the response (another worker may
    # answer /stats first): in flight until then.
    docs = []

    def settled():
        r = B.get(w.port, "/stats")
        assert r.status == 200 and r.headers.get("content-type") == "application/json"
        docs.append(json.loads(r.body))
        return docs[-1]["upstreams"][0]["in_flight"] == 0
    assert conftest.wait_for(settled, 10), docs
    doc = docs[-1]
    assert doc["pid"] == w.proc.pid and doc["workers"] == 2
    assert doc["memory_rss_bytes"] > 1 << 20 and doc["uptime_s"] >= 0
    assert doc["client_connections"]["http1"] >= 1
    assert doc["upstreams"] == [{"name": "u", "backends": 1, "healthy": 1, "in_flight": 0}]
    assert b.request_count() == 1


# ---- csrf ----

def csrf_proxy(weir_toml, backend):
    b = backend()
    w = weir_toml(server({"l": 'upstream = "u"\nplugins = ["csrf"]'},
                         '[plugins.csrf]\ncategory = "csrf"\ntoken_path = "/csrf-token"\n'
                         'key = "0123456789abcdef-secret"\nttl = "10m"\n' + upstream()), B=b)
    return w, b


def post(port, headers=()):
    hs = "".join("%s: %s\r\n" % h for h in headers)
    return B.request(port, ("POST /form HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n%s"
                            "Connection: close\r\n\r\nok" % hs).encode(), "POST")


def test_csrf_double_submit(weir_toml, backend):
    import json
    w, b = csrf_proxy(weir_toml, backend)
    r = B.get(w.port, "/csrf-token")
    assert r.status == 200
    tok = json.loads(r.body)["token"]
    cookie = r.headers.get("set-cookie")
    assert cookie.startswith("x-csrf-token=%s;" % tok) and "SameSite=Strict" in cookie
    ok = post(w.port, [("Cookie", "x-csrf-token=" + tok), ("X-CSRF-Token", tok)])
    assert ok.status == 200
    assert B.get(w.port, "/page").status == 200, "safe methods need no token"
    assert post(w.port).status == 403
    assert post(w.port, [("X-CSRF-Token", tok)]).status == 403, "header without the cookie"
    assert post(w.port, [("Cookie", "x-csrf-token=" + tok)]).status == 403
    other = json.loads(B.get(w.port, "/csrf-token").body)["token"]
    assert post(w.port, [("Cookie", "x-csrf-token=" + tok), ("X-CSRF-Token", other)]).status \
        == 403, "two different tokens"
    forged = tok[:-1] + ("0" if tok[-1] != "0" else "1")
    assert post(w.port, [("Cookie", "x-csrf-token=" + forged),
                         ("X-CSRF-Token", forged)]).status == 403, "a bad signature"
    nonce, expiry, sig = tok.split(".")
    later = "%s.%d.%s" % (nonce, int(expiry) + 3600, sig)
    assert post(w.port, [("Cookie", "x-csrf-token=" + later),
                         ("X-CSRF-Token", later)]).status == 403, "an extended expiry"
    assert b.request_count() == 2


def test_csrf_needs_a_real_key(tmp_path):
    r = check(tmp_path, server({"l": 'upstream = "u"\nplugins = ["c"]'},
                               '[plugins.c]\ncategory = "csrf"\nkey = "short"\n' + upstream()))
    assert r.returncode != 0 and "needs 'key', a secret of 16 characters or more" in r.stderr


@pytest.mark.parametrize("body,msg", [
    ('category = "cors"\n', "[plugins.x] needs 'allow_origins'"),
    ('category = "cors"\nallow_origins = ["~(bad"]\n', "bad regex '(bad'"),
    ('category = "cors"\nallow_origins = ["*"]\nmax_age = "forever"\n', "'max_age' in [plugins.x]"),
    ('category = "stats"\n', "[plugins.x] needs 'path'"),
    ('category = "stats"\npath = "stats"\n', "'path' in [plugins.x] must start with '/'"),
    ('category = "accept_encoding"\n', "[plugins.x] needs 'encodings'"),
    ('category = "accept_encoding"\nencodings = "gzip, b r"\n',
     "'encodings' in [plugins.x]: 'b r' is not a content-coding"),
    ('category = "traffic_splitting"\nupstream = "u"\n', "[plugins.x] needs 'weight' (percent)"),
    ('category = "traffic_splitting"\nupstream = "u"\nweight = 101\n', "'weight' in [plugins.x]"),
    ('category = "traffic_splitting"\nupstream = "u"\nweight = 5\nstickiness = "ip"\n',
     "'stickiness' in [plugins.x] must be cookie or header"),
    ('category = "traffic_splitting"\nupstream = "u"\nweight = 5\nstickiness = "cookie"\n',
     "[plugins.x] needs 'sticky_key' with 'stickiness'"),
    ('category = "mock"\ndelay = "2m"\n', "'delay' in [plugins.x]"),
    ('category = "request_id"\nsize = 4\n', "'size' in [plugins.x]"),
    ('category = "csrf"\nkey = "0123456789abcdef0"\ntoken_path = "x"\n',
     "'token_path' in [plugins.x] must start with '/'"),
])
def test_more_plugin_config_errors(tmp_path, body, msg):
    r = check(tmp_path, server({"l": 'upstream = "u"\nplugins = ["x"]'},
                               "[plugins.x]\n" + body + upstream()))
    assert r.returncode != 0 and msg in r.stderr, r.stderr
    assert re.search(r"check\.toml:\d+: ", r.stderr), r.stderr


# ---- sub_filter (a response_body hook) ----

def pieces_backend(pieces, ctype="text/html; charset=utf-8", extra=(), pause=0.05):
    """Answers chunked, one piece at a time with a pause between them, so
    the proxy reads them as separate pieces."""
    def handler(conn, req):
        conn.send(B.response_head(200, [("Content-Type", ctype), ("Transfer-Encoding", "chunked")]
                                  + list(extra)))
        for p in pieces:
            conn.send(b"%x\r\n%s\r\n" % (len(p), p))
            time.sleep(pause)
        conn.send(b"0\r\n\r\n")
    return handler


def sub_cfg(body):
    return server({"l": 'upstream = "u"\nplugins = ["sf"]'},
                  '[plugins.sf]\ncategory = "sub_filter"\n' + body + upstream())


def test_sub_filter_replaces_across_piece_boundaries(weir_toml, backend):
    b = backend(pieces_backend([b"<a href='http://exa", b"mple.com/x'>http://example.com</a> ",
                                b"and http://example", b".com"]))
    w = weir_toml(sub_cfg('filters = [["http://example.com", "https://example.com"]]\n'
                          'once = false\n'), B=b)
    r = B.get(w.port, "/")
    assert r.status == 200
    assert r.body == (b"<a href='https://example.com/x'>https://example.com</a> "
                      b"and https://example.com"), r.body


def test_sub_filter_once_case_and_a_length_known_body(weir_toml, backend):
    body = b"<p>Old Name, old name, OLD NAME</p>"
    b = backend(B.fixed(body, headers=[("Content-Type", "text/html")]))
    w = weir_toml(sub_cfg('filters = [["old name", "New Name!"]]\nignore_case = true\n'), B=b)
    r = B.get(w.port, "/")
    assert r.body == b"<p>New Name!, old name, OLD NAME</p>", r.body
    assert r.headers.get("content-length") is None and r.framing == "chunked"
    w2 = weir_toml(sub_cfg('filters = [["old name", "x"]]\nignore_case = true\nonce = false\n'),
                   B=b)
    assert B.get(w2.port, "/").body == b"<p>x, x, x</p>"


def test_sub_filter_leaves_other_types_and_compressed_bodies(weir_toml, backend):
    js = backend(B.fixed(b"var u='http://a';", headers=[("Content-Type", "application/javascript")]))
    w = weir_toml(sub_cfg('filters = [["http://a", "https://a"]]\n'), B=js)
    r = B.get(w.port, "/")
    assert r.body == b"var u='http://a';" and r.headers.get("content-length") == "17"
    # A body in an encoding it cannot decode is left whole.
    lz = backend(B.fixed(b"http://a", headers=[("Content-Type", "text/html"),
                                               ("Content-Encoding", "lzma")]))
    w2 = weir_toml(sub_cfg('filters = [["http://a", "https://a"]]\n'), B=lz)
    r = B.get(w2.port, "/")
    assert r.body == b"http://a" and r.headers.get("content-encoding") == "lzma"
    # A gzip one is decoded, filtered, and sent plain (no compression plugin).
    gz = backend(B.fixed(gzip.compress(b"http://a"), headers=[("Content-Type", "text/html"),
                                                              ("Content-Encoding", "gzip")]))
    w4 = weir_toml(sub_cfg('filters = [["http://a", "https://a"]]\n'), B=gz)
    r = B.get(w4.port, "/")
    assert r.body == b"https://a" and r.headers.get("content-encoding") is None
    css = backend(B.fixed(b"url(http://a)", headers=[("Content-Type", "text/css")]))
    w3 = weir_toml(sub_cfg('filters = [["http://a", "https://a"]]\ntypes = ["text/css"]\n'), B=css)
    assert B.get(w3.port, "/").body == b"url(https://a)"


def test_sub_filter_streams_a_large_body(weir_toml, backend):
    """4 MB in 64 KiB pieces, a pattern in each and across each boundary:
    the whole body comes through replaced, in bounded memory."""
    pieces = []
    for i in range(64):
        pieces.append(b"x" * 65530 + b"AB" + (b"C" if i % 2 else b"") )
    b = backend(pieces_backend(pieces, pause=0))
    w = weir_toml(sub_cfg('filters = [["ABC", "-"], ["AB", "+"]]\nonce = false\n'), B=b)
    r = B.get(w.port, "/")
    want = b"".join(pieces).replace(b"ABC", b"-").replace(b"AB", b"+")
    assert r.status == 200 and len(r.body) == len(want) and r.body == want


def test_sub_filter_keeps_the_length_of_responses_without_a_body(weir_toml, backend):
    """HEAD and 304 answers carry no body: their Content-Length (the GET
    body's length) stays, as the backend sent it."""
    def handler(conn, req):
        if req.path == "/304":
            conn.send(B.response_head(304, [("Content-Type", "text/html"),
                                            ("Content-Length", "42")]))
        else:
            body = b"<p>http://a</p>"
            conn.send(B.response_head(200, [("Content-Type", "text/html"),
                                            ("Content-Length", str(len(body)))])
                      + (b"" if req.method == "HEAD" else body))
    b = backend(handler)
    w = weir_toml(sub_cfg('filters = [["http://a", "https://a"]]\n'), B=b)
    r = B.get(w.port, "/", method="HEAD")
    assert r.status == 200 and r.headers.get("content-length") == "15" and r.body == b""
    r = B.get(w.port, "/304")
    assert r.status == 304 and r.headers.get("content-length") == "42"
    r = B.get(w.port, "/")
    assert r.body == b"<p>https://a</p>" and r.headers.get("content-length") is None


def test_sub_filter_regex_with_groups_across_pieces(weir_toml, backend):
    b = backend(pieces_backend([b"release v1.", b"2 and v3.45 and v", b"6", b".7"]))
    w = weir_toml(sub_cfg('filters = [[\'v(\\d+)\\.(\\d+)\', "version $1-$2 ($$)", "rg"]]\n'),
                  B=b)
    r = B.get(w.port, "/")
    assert r.body == (b"release version 1-2 ($) and version 3-45 ($) and version 6-7 ($)"), r.body


def test_sub_filter_earliest_match_and_flags(weir_toml, backend):
    b = backend(pieces_backend([b"ab", b"cAB", b"C abc"]))
    w = weir_toml(sub_cfg('filters = [["bc", "2"], ["abc", "3", "ig"]]\n'), B=b)
    # "abc" starts before "bc": it wins; "ABC" by ignore case; "once"
    # (the default) keeps the first "bc" rule to one replacement.
    assert B.get(w.port, "/").body == b"33 3"


def test_sub_filter_holds_only_a_possible_match(weir_toml, backend):
    """A tail that cannot start a match goes out with its piece: the
    client gets "hello " before the backend sends the rest."""
    def handler(conn, req):
        conn.send(B.response_head(200, [("Content-Type", "text/html"),
                                        ("Transfer-Encoding", "chunked")]))
        conn.send(b"6\r\nhello \r\n")
        time.sleep(1.0)
        conn.send(b"5\r\nworld\r\n0\r\n\r\n")
    b = backend(handler)
    w = weir_toml(sub_cfg('filters = [["abcdef", "x"]]\n'), B=b)
    s = B.connect(w.port)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    rd = B.Reader(s)
    rd.read_head()
    size = int(rd.readline().strip(), 16)
    assert rd.read_exact(size) == b"hello ", "the first piece waited for the second"
    rd.readline()
    assert B.read_chunked(rd)[0] == b"world"
    s.close()


def test_sub_filter_config_errors(tmp_path):
    for body, msg in [('', "[plugins.sf] needs 'filters'"),
                      ('filters = [["a(", "b", "r"]]\n', "regex 'a(':"),
                      ('filters = [["x*", "b", "r"]]\n', "can match the empty string"),
                      ('filters = [["a", "b", "q"]]\n', "flag 'q' is not r, i, g or o"),
                      ('filters = ["a", "b"]\n', "must be a list of [\"FROM\", \"TO\"] pairs"),
                      ('filters = [["", "b"]]\n', "FROM 1 to 256 bytes"),
                      ('filters = []\n', "'filters' in [plugins.sf] is empty")]:
        r = check(tmp_path, sub_cfg(body))
        assert r.returncode != 0 and msg in r.stderr, (body, r.stderr)


# ---- found by an attacking review ----

@pytest.mark.parametrize("body,msg", [
    ('category = "request_headers"\nrename_headers = ["X-Len: Content-Length"]\n',
     "'Content-Length' cannot be changed by a header rule"),
    ('category = "request_id"\nheader_name = "Content-Length"\n',
     "'header_name' in [plugins.x] must be a header name weir does not write itself"),
    ('category = "sub_filter"\nfilters = [["f\\u0000oo", "X"]]\n', "FROM 1 to 256 bytes"),
    ('category = "mock"\nstatus = 100\n', "'status' in [plugins.x]"),
    ('category = "redirect"\nprefix = "//evil.com"\n', "must be a path starting with one '/'"),
    ('category = "redirect"\nprefix = "/\\\\evil.com"\n', "must be a path starting with one '/'"),
    ('category = "mock"\npath = ""\n', "'path' in [plugins.x] must start with '/'"),
    ('category = "mock"\npath = "api"\n', "'path' in [plugins.x] must start with '/'"),
    ('category = "mock"\ndata = "a\\u0000b"\n', "'data' in [plugins.x] contains a NUL character"),
    ('category = "limit"\ntag = "ip"\nkey = "X-User"\nmax = 10\n',
     "'key' in [plugins.x] is for tag header, cookie or query"),
    ('category = "traffic_splitting"\nupstream = "u"\nweight = 10\nsticky_key = "uid"\n',
     "'sticky_key' in [plugins.x] needs 'stickiness'"),
])
def test_review_config_errors(tmp_path, body, msg):
    r = check(tmp_path, server({"l": 'upstream = "u"\nplugins = ["x"]'},
                               "[plugins.x]\n" + body + upstream()))
    assert r.returncode != 0 and msg in r.stderr, r.stderr


def test_step_may_name_the_only_step(tmp_path):
    r = check(tmp_path, server({"l": 'upstream = "u"\nplugins = ["x"]'},
                               '[plugins.x]\ncategory = "response_headers"\nstep = "response"\n'
                               'add_headers = ["X-A: 1"]\n' + upstream()))
    assert r.returncode == 0, r.stderr


def test_redirect_prefix_with_a_slash_and_dot_segments(weir_toml):
    w = weir_toml(server({"l": 'echo = true\nplugins = ["r"]'},
                         '[plugins.r]\ncategory = "redirect"\nprefix = "/app/"\n'))
    assert B.get(w.port, "/app").headers.get("location") == "/app/"
    assert B.get(w.port, "/x?q=1").headers.get("location") == "/app/x?q=1"
    w2 = weir_toml(server({"l": 'echo = true\nplugins = ["r"]'},
                          '[plugins.r]\ncategory = "redirect"\nprefix = "/app"\n'))
    # The normalised path decides, and goes into the Location.
    assert B.get(w2.port, "/app/../x").headers.get("location") == "/app/x"


@pytest.mark.parametrize("host", ["good.com@evil.com", "evil.com/x?", ":443", "a b"])
def test_https_redirect_refuses_a_host_that_would_point_elsewhere(weir_toml, host):
    w = weir_toml('[servers.s]\naddr = "127.0.0.1:@PORT@"\nlocations = ["l"]\n'
                  'redirect_https = true\n[locations.l]\necho = true\n')
    r = get_host(w.port, "/p", host)
    assert r.status == 400, (host, r.status, r.headers.get("location"))


def test_referer_with_a_trailing_dot_or_backslash(weir_toml, backend):
    w, _ = restricted(weir_toml, backend, 'category = "referer_restriction"\n'
                      'referer_list = ["evil.com", "*.evil.com"]\n')
    assert B.get(w.port, "/", headers=[("Referer", "https://evil.com./")]).status == 403
    assert B.get(w.port, "/", headers=[("Referer", "https://evil.com\\\\@good.com/")]).status \
        == 403
    assert B.get(w.port, "/", headers=[("Referer", "https://good.com/")]).status == 200


def test_accept_encoding_tab_before_q(weir_toml, backend):
    b = backend()
    w = weir_toml(server({"l": 'upstream = "u"\nplugins = ["ae"]'},
                         '[plugins.ae]\ncategory = "accept_encoding"\nencodings = "br, gzip"\n'
                         + upstream()), B=b)
    B.get(w.port, "/", headers=[("Accept-Encoding", "gzip\t;q=0, *")])
    assert b.requests[0].headers.get("accept-encoding") == "br"


def test_a_value_with_many_variables_is_whole(weir_toml, backend):
    b = backend()
    value = " ".join("%d$method" % i for i in range(40)) + " END"
    w = weir_toml(server({"l": 'upstream = "u"\nproxy_set_headers = ["X-Many: %s"]' % value},
                         upstream()), B=b)
    B.get(w.port, "/")
    assert b.requests[0].headers.get("x-many") == value.replace("$method", "GET")


def test_sub_filter_with_a_long_replacement_and_no_match(weir_toml, backend):
    big = "x" * 60000
    b = backend(B.fixed(b"b" * 100000, headers=[("Content-Type", "text/html")]))
    w = weir_toml(sub_cfg('filters = [["a", "%s"]]\n' % big), B=b)
    r = B.get(w.port, "/")
    assert r.status == 200 and r.body == b"b" * 100000


# ---- the request body hook (test_request_body: a test build's plugin) ----

def body_plugins(*defs):
    return "".join('[plugins.%s]\ncategory = "test_request_body"\n%s\n' % (n, d) for n, d in defs)


def post_body(port, body, chunked=False, path="/up"):
    if chunked:
        pieces = [body[i:i + 7000] for i in range(0, len(body), 7000)]
        payload = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
        head = b"POST %s HTTP/1.1\r\nHost: b\r\nTransfer-Encoding: chunked\r\n" % path.encode()
    else:
        payload = body
        head = b"POST %s HTTP/1.1\r\nHost: b\r\nContent-Length: %d\r\n" % (path.encode(), len(body))
    return B.request(port, head + b"Connection: close\r\n\r\n" + payload, method="POST")


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("buffered", [False, True])
def test_request_body_hooks_run_in_chain_order(weir_toml, backend, chunked, buffered):
    """lower then upper: the backend sees upper case, over pieces of a
    300 KB body, streamed or buffered first, whatever the client's
    framing; Content-Length stays when the length does not change."""
    b = backend()
    loc = 'upstream = "u"\nplugins = ["lo", "up"]\n'
    if buffered:
        loc += 'request_buffer_size = "1MB"\n'
    w = weir_toml(server({"l": loc}, body_plugins(("lo", 'mode = "lower"'), ("up", 'mode = "upper"'))
                         + upstream()), B=b)
    body = (b"Hello, Body! " * 25000)[:300000]
    r = post_body(w.port, body, chunked=chunked)
    assert r.status == 200
    got = b.last()
    assert got.body == body.upper()
    if not chunked:
        assert got.headers.get("content-length") == str(len(body)) and not got.chunked


def test_request_body_hook_that_changes_the_length_goes_chunked(weir_toml, backend):
    b = backend()
    w = weir_toml(server({"l": 'upstream = "u"\nplugins = ["dbl"]\n'},
                         body_plugins(("dbl", 'mode = "double"')) + upstream()), B=b)
    body = bytes(range(256)) * 400
    r = post_body(w.port, body)
    assert r.status == 200
    got = b.last()
    assert got.chunked and got.headers.get("content-length") is None
    assert got.body == bytes(x for x in body for _ in (0, 1))
    # a request without a body is untouched by it
    r = B.get(w.port, "/up")
    assert r.status == 200 and b.last().body == b""


@pytest.mark.parametrize("buffered", [False, True])
def test_request_body_hook_starts_over_on_a_retry(weir_toml, backend, buffered):
    """A 503 from the first backend: the body goes again to the second,
    and the hook is told to start over (its byte count would otherwise
    pass fail_after on the replay); a length-changing hook goes chunked on
    both attempts."""
    busy, fine = backend(B.fixed(b"busy\n", status=503)), backend(B.echo())
    loc = 'upstream = "u"\nplugins = ["f"]\n' + ('request_buffer_size = "1MB"\n' if buffered else "")
    w = weir_toml(server({"l": loc}, body_plugins(("f", 'mode = "upper"\nfail_after = 1000'))
                         + '[upstreams.u]\naddrs = ["@X@", "@Y@"]\nalgo = "round_robin"\n'
                         'max_fails = 0\nretry_on = ["connect", "reset", "503", "non_idempotent"]\n'),
                  X=busy, Y=fine)
    for _ in range(4):
        r = post_body(w.port, b"a" * 1000)
        assert r.status == 200, r.status
        assert r.body.endswith(b"A" * 1000)
    assert busy.request_count() >= 1, "the retry path ran"
    assert all(q.body == b"A" * 1000 for q in fine.requests)


def test_request_body_hook_error_ends_the_request(weir_toml, backend, tmp_path):
    """A hook that fails mid-body: the client gets 502 and the log line,
    the backend never sees a complete request, and weir goes on."""
    b = backend()
    w = weir_toml(server({"l": 'upstream = "u"\nplugins = ["f"]\n'},
                         body_plugins(("f", "fail_after = 50000")) + upstream()), B=b)
    r = post_body(w.port, b"x" * 200000)
    assert r.status == 502
    assert any(line.startswith("502 ") for line in access_lines(tmp_path, 1))
    assert all(len(q.body) < 200000 for q in b.requests)
    r = post_body(w.port, b"small")
    assert r.status == 200 and b.last().body == b"SMALL"


def test_location_without_request_body_plugins_keeps_bodies_as_sent(weir_toml, backend):
    b = backend()
    w = weir_toml(server({"a": 'upstream = "u"\nplugins = ["up"]\npath = "/up"\n',
                          "b": 'upstream = "u"\npath = "/"\n'},
                         body_plugins(("up", 'mode = "upper"')) + upstream()), B=b)
    assert post_body(w.port, b"abc", path="/other").status == 200
    assert b.last().body == b"abc"
    assert post_body(w.port, b"abc", path="/up").status == 200
    assert b.last().body == b"ABC"


def test_request_body_plugin_config_errors(tmp_path):
    r = check(tmp_path, server({"l": 'upstream = "u"\nplugins = ["x"]\n'},
                               body_plugins(("x", 'mode = "sideways"')) + upstream()))
    assert r.returncode != 0
    assert re.search(r"check\.toml:\d+: 'mode' in \[plugins\.x\]: 'sideways'", r.stderr), r.stderr
