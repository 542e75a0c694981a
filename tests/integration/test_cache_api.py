"""The cache from a C program (weir/cache.h and the cache phases of
weir_proxy_ops), through tests/tools' weir-test-app: a store of the
program's own, its key, and each phase changing a decision."""
import time

import pytest

from conftest import free_port, require_binary
from test_cache import Origin, h1, status_of


@pytest.fixture
def app(backend, start_proc):
    path = require_binary("weir-test-app")
    o = Origin()
    o.backend = backend(o.handler)
    port = free_port()
    p = start_proc([path, "127.0.0.1:%d" % port, o.backend.addr], port, "weir-test-app")
    return o, p


def test_a_hit_runs_no_upstream_phase(app):
    o, p = app
    o.set("/cached/a", headers=[("Cache-Control", "max-age=60")], body="a")
    r1 = h1(p.port, "/cached/a")
    r2 = h1(p.port, "/cached/a")
    assert r2.body == b"a" and "hit" in status_of(r2)
    assert "upstream_peer" in r1.get("x-phases")
    phases = r2.get("x-phases")
    assert "request_cache_filter" in phases and "cache_hit_filter" in phases
    assert "upstream_peer" not in phases and "response_filter" in phases
    assert o.count("/cached/a") == 1


def test_the_programs_key_ignores_the_query(app):
    o, p = app
    o.set("/cached/k", headers=[("Cache-Control", "max-age=60")], body="k")
    h1(p.port, "/cached/k?x=1")
    r = h1(p.port, "/cached/k?x=2")
    assert "hit" in status_of(r)
    assert h1(p.port, "/cache-purge?key=app:/cached/k").body == b"purged\n"
    h1(p.port, "/cached/k")
    assert o.count("/cached/k?x=1") + o.count("/cached/k") == 2


def test_outside_the_prefix_nothing_is_cached(app):
    o, p = app
    o.set("/plain", headers=[("Cache-Control", "max-age=60")], body="p")
    h1(p.port, "/plain")
    r = h1(p.port, "/plain")
    assert r.get("cache-status") is None and o.count("/plain") == 2


def test_cache_hit_filter_forces_validation(app):
    o, p = app
    o.set("/cached/f", headers=[("Cache-Control", "max-age=60"), ("ETag", '"f"')], body="f")
    h1(p.port, "/cached/f")
    r = h1(p.port, "/cached/f", [("X-Force-Miss", "1")])
    assert "fwd=stale" in status_of(r) and o.count("/cached/f") == 2
    assert o.backend.last().headers.get("if-none-match") == '"f"'


def test_response_cache_filter_refuses_and_sets_lifetimes(app):
    o, p = app
    o.set("/cached/n", headers=[("Cache-Control", "max-age=60"), ("X-No-Store", "1")])
    o.set("/cached/t", headers=[("X-TTL", "60")])  # nothing storable by the RFC alone
    o.set("/cached/z", headers=[("Cache-Control", "max-age=600"), ("X-TTL", "1")])
    for path in ("/cached/n", "/cached/t", "/cached/z"):
        h1(p.port, path)
    assert "detail=app" in status_of(h1(p.port, "/cached/n"))
    assert o.count("/cached/n") == 2
    assert o.count("/cached/t") == 1, "the program gave it a lifetime"
    time.sleep(1.2)
    h1(p.port, "/cached/z")
    assert o.count("/cached/z") == 2, "the program shortened it"


def test_should_serve_stale_decides_last(app):
    o, p = app
    state = {"down": False}

    def answer(req, n):
        if state["down"]:
            return 502, [], b"down"
        return 200, [("Cache-Control", "max-age=1")], b"fine"
    o.routes["/cached/s"] = answer
    h1(p.port, "/cached/s")
    time.sleep(1.2)
    state["down"] = True
    r = h1(p.port, "/cached/s")
    assert r.status == 200 and r.body == b"fine" and "stale-on-error" in status_of(r)
    assert "should_serve_stale" in (h1(p.port, "/cached/s").get("x-phases") or "should_serve_stale")
    assert h1(p.port, "/cached/s", [("X-No-Stale", "1")]).status == 502
    stats = h1(p.port, "/cache-stats").body.decode()
    assert "stored 1" in stats and "stale 2" in stats, stats
