"""One section at a time through the admin API (GET, PUT, DELETE
/api/config/sections/KIND[/NAME], docs/admin-api.md): with a file, the
section's lines are replaced and the rest of the file stays byte for byte;
with etcd, the section's key is written with a compare-and-swap.
"""
import hashlib
import json

import backends as B
from conftest import free_port, wait_for
from test_admin import Admin, start
from test_etcd import etcd, instances, seed  # noqa: F401 (fixtures)

TOKEN = "t0ken-for-tests"


def text_of(port, aport, backend):
    return ('[admin]\naddr = "127.0.0.1:%d"\ntoken = "%s"\n\n'
            '# the site\n[servers.s]\naddr = "127.0.0.1:%d"\nlocations = ["l"]\n\n'
            '# the location, keep this comment\n[locations.l]\nupstream = "u"\n\n'
            '[upstreams.u]  # the backends\naddrs = ["%s"]\n# end\n'
            % (aport, TOKEN, port, backend))


def running(backend, start_proc, tmp_path):
    a, b = backend(B.fixed(b"a\n")), backend(B.fixed(b"b\n"))
    port, aport = free_port(), free_port()
    path, w = start(start_proc, tmp_path, text_of(port, aport, a.addr), port, aport)
    return a, b, port, Admin(aport, TOKEN), path


def sec(name):
    return "/api/config/sections/" + name


def test_get_put_create_delete_a_section(backend, start_proc, tmp_path):
    a, b, port, adm, path = running(backend, start_proc, tmp_path)
    old = path.read_text()
    r = adm.call("GET", sec("upstreams/u"))
    assert r.status == 200, r.json
    assert r.json["values"] == {"addrs": [a.addr]} and r.json["kind"] == "upstreams"
    assert r.json["text"] == '[upstreams.u]  # the backends\naddrs = ["%s"]\n' % a.addr
    # Replaced: the rest of the file is as it was, byte for byte.
    r = adm.call("PUT", sec("upstreams/u"), {"values": {"addrs": [b.addr], "algo": "random"}})
    assert r.status == 200 and r.json["applied"], r.json
    new = path.read_text()
    assert new == old.replace('[upstreams.u]  # the backends\naddrs = ["%s"]\n' % a.addr,
                              '[upstreams.u]\naddrs = ["%s"]\nalgo = "random"\n' % b.addr)
    assert wait_for(lambda: B.get(port, "/").body == b"b\n", 10)
    # Created at the end, then deleted.
    r = adm.call("PUT", sec("caches/c"), {"values": {"memory": "8MB"}})
    assert r.status == 200, r.json
    assert path.read_text() == new + '\n[caches.c]\nmemory = "8MB"\n'
    assert adm.call("GET", sec("caches/c")).json["values"] == {"memory": "8MB"}
    r = adm.call("DELETE", sec("caches/c"))
    assert r.status == 200, r.json
    assert path.read_text() == new + "\n"
    assert adm.call("GET", sec("caches/c")).status == 404
    # basic and admin have no name.
    r = adm.call("PUT", sec("basic"), {"values": {"log_level": "warn"}})
    assert r.status == 200, r.json
    assert adm.call("GET", sec("basic")).json["values"] == {"log_level": "warn"}
    h = adm.call("GET", "/api/config/history").json["entries"]
    assert [e["action"] for e in h[:2]] == ["section", "section_delete"] or \
        h[0]["action"] == "section", h


def test_a_change_that_does_not_load_changes_nothing(backend, start_proc, tmp_path):
    a, b, port, adm, path = running(backend, start_proc, tmp_path)
    old = path.read_text()
    r = adm.call("DELETE", sec("locations/l"))  # the server lists it
    assert r.status == 400 and any("undefined location 'l'" in e for e in r.json["errors"]), r.json
    r = adm.call("PUT", sec("upstreams/u"), {"values": {"adrs": [b.addr]}})
    assert r.status == 400 and any("did you mean 'addrs'" in e for e in r.json["errors"]), r.json
    r = adm.call("PUT", sec("upstreams/u"), {"values": {"addrs": [b.addr]},
                                             "base": hashlib.sha256(b"x").hexdigest()})
    assert r.status == 409, r.json
    assert path.read_text() == old and B.get(port, "/").body == b"a\n"


def test_values_round_trip_and_bad_ones_are_refused(backend, start_proc, tmp_path):
    a, b, port, adm, path = running(backend, start_proc, tmp_path)
    hostile = 'a"b\\c\nd\t\u0001\u00e9\u2603 ]\n[admin]\ntoken = "x"'
    r = adm.call("PUT", sec("locations/odd%20name.x"), {"values": {"upstream": "u", "weight": 3}})
    assert r.status == 200, r.json  # a name that must be quoted
    assert '[locations."odd name.x"]\nupstream = "u"\nweight = 3\n' in path.read_text()
    r = adm.call("GET", sec("locations/odd%20name.x"))
    assert r.status == 200 and r.json["values"] == {"upstream": "u", "weight": 3}, r.json
    r = adm.call("PUT", sec("plugins/p"), {"values": {"category": "mock", "data": hostile,
                                                      "status": 201}})
    assert r.status == 200, r.json
    got = adm.call("GET", sec("plugins/p")).json["values"]
    assert got == {"category": "mock", "data": hostile, "status": 201}, got
    assert "[admin]" in path.read_text() and path.read_text().count("\n[admin]\n") == 0
    for bad, why in [({"values": {"addrs": None}}, "null"),
                     ({"values": [1]}, "'values' must be an object"),
                     ({"values": {"addrs": [b.addr]}, "extra": 1}, "unknown field"),
                     ({"values": {"x": json.loads("[" * 20 + "]" * 20)}}, "deeper"),
                     ({"values": {"a\u0000b": 1}}, "NUL")]:
        r = adm.call("PUT", sec("upstreams/u"), bad)
        assert r.status == 400 and why in r.json["error"], (bad, r.json)
    for p in ["nothing/x", "upstreams", "basic/x", "upstreams/a/b", "servers/%zz", "admins"]:
        assert adm.call("GET", sec(p)).status in (400, 404), p
    assert adm.call("POST", sec("upstreams/u"), {}).status == 405
    assert adm.call("GET", sec("upstreams/u"), token=None).status == 401


def test_a_section_written_in_a_form_a_rewrite_must_not_touch(backend, start_proc, tmp_path):
    a, b, port, adm, path = running(backend, start_proc, tmp_path)
    text = path.read_text().replace("[locations.l]\nupstream = \"u\"\n", "")
    text = 'locations.l.upstream = "u"\n' + text  # a dotted key at the top
    r = adm.call("PUT", "/api/config/file", {"text": text})
    assert r.status == 200, r.json
    r = adm.call("PUT", sec("locations/l"), {"values": {"upstream": "u"}})
    assert r.status == 409 and "dotted key" in r.json["error"], r.json
    assert path.read_text() == text


def test_sections_in_etcd_are_written_with_compare_and_swap(etcd, backend, instances):  # noqa: F811
    e = etcd()
    b1, b2 = backend(B.fixed(b"one\n")), backend(B.fixed(b"two\n"))
    seed(e, "p", b1.addr)
    w1, w2 = instances(e.url("p"), 2)
    assert wait_for(lambda: B.get(w2.port).body == b"one\n", 10)
    r = w1.admin.call("GET", sec("upstreams/u"))
    assert r.status == 200 and r.json["values"] == {"addrs": [b1.addr]}, r.json
    mod = r.json["mod_revision"]
    assert mod > 0 and r.json["local"] is False
    # A stale base writes nothing.
    r = w1.admin.call("PUT", sec("upstreams/u"), {"values": {"addrs": [b2.addr]},
                                                  "base": mod - 1})
    assert r.status == 409 and e.get("/p/upstreams/u") == 'addrs = ["%s"]\n' % b1.addr
    r = w1.admin.call("PUT", sec("upstreams/u"), {"values": {"addrs": [b2.addr]}, "base": mod})
    assert r.status == 200 and r.json["written"] == "etcd", r.json
    assert e.get("/p/upstreams/u") == 'addrs = ["%s"]\n' % b2.addr
    # Every instance applies it from the watch.
    assert wait_for(lambda: B.get(w2.port).body == b"two\n" and
                    B.get(w1.port).body == b"two\n", 10)
    # What would not load is not written.
    r = w2.admin.call("DELETE", sec("upstreams/u"))
    assert r.status == 400 and r.json["errors"], r.json
    r = w2.admin.call("PUT", sec("caches/c"), {"values": {"memory": "4MB"}})
    assert r.status == 200, r.json
    assert e.get("/p/caches/c") == 'memory = "4MB"\n'
    assert wait_for(lambda: w2.admin.call("GET", sec("caches/c")).status == 200, 10)
    r = w2.admin.call("DELETE", sec("caches/c"))
    assert r.status == 200, r.json
    assert wait_for(lambda: e.get("/p/caches/c") in ("", None), 10)
    # The server is in the --local file: not etcd's to change.
    r = w1.admin.call("PUT", sec("servers/main"), {"values": {"addr": "127.0.0.1:1"}})
    assert r.status == 409 and "--local" in r.json["error"], r.json


def test_the_history_of_a_fleet_is_in_etcd(etcd, backend, instances):  # noqa: F811
    e = etcd()
    b1, b2 = backend(B.fixed(b"one\n")), backend(B.fixed(b"two\n"))
    seed(e, "p", b1.addr)
    w1, w2 = instances(e.url("p"), 2)
    assert wait_for(lambda: B.get(w2.port).body == b"one\n", 10)
    r = w1.admin.call("PUT", sec("upstreams/u"), {"values": {"addrs": [b2.addr]}})
    assert r.status == 200 and r.json["history_id"] == r.json["revision"], r.json
    assert wait_for(lambda: B.get(w2.port).body == b"two\n", 10)
    # Both instances see one history: the state as found, then the change.
    h = w2.admin.call("GET", "/api/config/history").json
    assert [x["action"] for x in h["entries"]] == ["section", "etcd"], h
    assert h["dir"] == "etcd:/p/history/" and "text" not in h["entries"][0]
    first = h["entries"][1]["id"]
    got = w2.admin.call("GET", "/api/config/history/%d" % first).json
    assert 'addrs = ["%s"]' % b1.addr in got["text"], got
    # The history is not configuration: no instance reads it as such.
    assert e.get("/p/history/%020d" % first).startswith("{")
    # A rollback from the other instance: one transaction, applied by both.
    r = w2.admin.call("POST", "/api/config/history/%d/rollback" % first)
    assert r.status == 200 and r.json["written"] == "etcd", r.json
    assert e.get("/p/upstreams/u") == 'addrs = ["%s"]\n' % b1.addr
    assert wait_for(lambda: B.get(w1.port).body == b"one\n" and
                    B.get(w2.port).body == b"one\n", 10)
    top = w1.admin.call("GET", "/api/config/history").json["entries"][0]
    assert top["action"] == "rollback" and top["rollback_of"] == first, top
    assert w1.admin.call("GET", "/api/config/history/12345").status == 404
    # Rolling back to what runs changes nothing and still answers.
    r = w1.admin.call("POST", "/api/config/history/%d/rollback" % first)
    assert r.status == 200, r.json


def test_a_rollback_undoes_what_the_fleet_refused_and_hostile_entries_are_not_used(
        etcd, backend, instances):  # noqa: F811
    e = etcd()
    b1, b2 = backend(B.fixed(b"one\n")), backend(B.fixed(b"two\n"))
    seed(e, "p", b1.addr)
    w1, w2 = instances(e.url("p"), 2)
    assert wait_for(lambda: B.get(w2.port).body == b"one\n", 10)
    good = w1.admin.call("GET", "/api/config/history").json["entries"][0]["id"]
    # Changes made with etcdctl that every instance refuses: the running
    # configuration stays, etcd holds the bad keys.
    e.put("/p/upstreams/u", 'adrs = ["%s"]\n' % b2.addr)
    e.put("/p/caches/bad", "memory = true\n")
    assert wait_for(lambda: w1.admin.call("GET", "/api/fleet").json["config"]["rejected"] >= 1,
                    10)
    assert B.get(w1.port).body == b"one\n"
    # What GET shows is what etcd holds (to be fixed), and a write from it
    # is not refused for ever by a stale mod revision.
    r = w1.admin.call("GET", sec("upstreams/u"))
    assert r.json["values"] == {"adrs": [b2.addr]}, r.json
    # The rollback makes every configuration key what the entry says: the
    # refused value replaced, the refused key deleted, nothing else touched.
    r = w2.admin.call("POST", "/api/config/history/%d/rollback" % good)
    assert r.status == 200, r.json
    assert e.get("/p/upstreams/u") == 'addrs = ["%s"]\n' % b1.addr
    assert e.get("/p/caches/bad") == ""
    assert e.ctl("get", "--prefix", "/p/instances/", "--keys-only").strip()
    assert B.get(w1.port).body == b"one\n"
    # Hostile entries, put with etcdctl: listed as damaged, never used.
    for key, value in [("/p/history/00000000000000000002", '{"sha256": ""}'),
                       ("/p/history/00000000000000000003", "not json"),
                       ("/p/history/00000000000000000004",
                        '{"id": "../../reload#", "sha256": "x", "text": ""}'),
                       ("/p/history/5", '{"id": 5}')]:
        e.put(key, value)
    h = w1.admin.call("GET", "/api/config/history").json["entries"]
    damaged = sorted(x["id"] for x in h if x.get("damaged"))
    assert damaged == [0, 2, 3, 4], h  # /p/history/5 has no id of twenty digits
    assert all(set(x) <= {"id", "time", "action", "instance", "sha256", "size", "rollback_of"}
               for x in h if not x.get("damaged")), h
    for i in (2, 3, 4):
        assert w1.admin.call("GET", "/api/config/history/%d" % i).status == 404
        assert w1.admin.call("POST", "/api/config/history/%d/rollback" % i).status == 404
    assert e.get("/p/upstreams/u") == 'addrs = ["%s"]\n' % b1.addr
    # A delete is recorded at its own revision.
    assert w1.admin.call("PUT", sec("caches/c"), {"values": {"memory": "1MB"}}).status == 200
    r = w1.admin.call("DELETE", sec("caches/c"))
    assert r.status == 200 and r.json["history_id"] == r.json["revision"] > 0, r.json


def test_names_and_layouts_a_rewrite_must_keep(backend, start_proc, tmp_path):
    a, b, port, adm, path = running(backend, start_proc, tmp_path)
    for name in ['a%22b', 'a%5Cb', '%01x', 'x' * 201]:
        r = adm.call("PUT", sec("caches/" + name), {"values": {"memory": "1MB"}})
        assert r.status == 400, (name, r.json)
    # A multi-line string whose last lines look like comments is the section's.
    text = path.read_text().replace(
        '[locations.l]\nupstream = "u"\n',
        '[locations.l]\nupstream = "u"\nresponse_set_headers = ["X-A: 1"]\n'
        '[plugins.m]\ncategory = "mock"\ndata = """\nbody\n# not a comment\n"""\n\n# a comment\n')
    r = adm.call("PUT", "/api/config/file", {"text": text})
    assert r.status == 200, r.json
    r = adm.call("GET", sec("plugins/m"))
    assert r.status == 200 and r.json["values"]["data"] == "body\n# not a comment\n", r.json
    r = adm.call("PUT", sec("plugins/m"), {"values": {"category": "mock", "data": "x"}})
    assert r.status == 200, r.json
    assert "# not a comment" not in path.read_text() and "# a comment\n" in path.read_text()
    # A dry run with a stale base says so.
    r = adm.call("PUT", sec("plugins/m"), {"values": {"category": "mock"}, "dry_run": True,
                                           "base": hashlib.sha256(b"x").hexdigest()})
    assert r.status == 409, r.json
