"""The configuration file through the admin API (docs/admin-api.md): read
it, apply a new text, compare a text with what runs, the history of applied
texts and rollback. Every refusal must leave the file and the running
configuration as they were.
"""
import hashlib
import json
import os
import threading

import backends as B
from conftest import free_port
from test_admin import Admin, start


def text_of(port, aport, extra="", admin_extra="", timeout=""):
    locs = '"v2", "l"' if "[locations.v2]" in extra else '"l"'
    return ('[admin]\naddr = "127.0.0.1:%d"\ntoken = "t0ken-for-tests"\n%s\n'
            '[servers.s]\naddr = "127.0.0.1:%d"\nlocations = [%s]\n%s\n'
            '# the default\n[locations.l]\necho = true\n%s'
            % (aport, admin_extra, port, locs, timeout, extra))


V2 = ('\n[locations.v2]\npath = "/v2"\necho = true\nplugins = ["m"]\n'
      '[plugins.m]\ncategory = "mock"\ndata = "v2\\n"\n')


def running(start_proc, tmp_path, admin_extra=""):
    port, aport = free_port(), free_port()
    text = text_of(port, aport, admin_extra=admin_extra)
    path, w = start(start_proc, tmp_path, text, port, aport)
    return port, aport, Admin(aport), path, w


def sha(text):
    return hashlib.sha256(text.encode()).hexdigest()


def status_of(port, path):
    return B.get(port, path).status


def test_read_apply_and_history(start_proc, tmp_path):
    port, aport, adm, path, w = running(start_proc, tmp_path)
    old = path.read_text()
    r = adm.call("GET", "/api/config/file")
    assert r.status == 200 and r.json == {"file": str(path), "text": old, "sha256": sha(old)}
    assert adm.call("GET", "/api/config/file", token=None).status == 401
    assert B.get(port, "/v2").body != b"v2\n"
    new = text_of(port, aport, extra=V2)
    r = adm.call("PUT", "/api/config/file", {"text": new, "base": sha(old)})
    assert r.status == 200, r.json
    assert r.json["applied"] is True and r.json["sha256"] == sha(new), r.json
    assert path.read_text() == new
    assert (tmp_path / "weir.toml.prev").read_text() == old
    assert B.get(port, "/v2").body == b"v2\n"
    h = adm.call("GET", "/api/config/history").json
    assert [e["action"] for e in h["entries"]] == ["apply", "start"], h
    assert h["entries"][0]["id"] == r.json["history_id"] and h["keep"] == 20
    assert h["entries"][0]["sha256"] == sha(new) and h["entries"][1]["sha256"] == sha(old)
    e = adm.call("GET", "/api/config/history/%d" % h["entries"][1]["id"]).json
    assert e["text"] == old and e["action"] == "start"
    # The same text again: applied (a reload), and no new entry.
    r = adm.call("PUT", "/api/config/file", {"text": new})
    assert r.status == 200 and r.json["history_id"] == h["entries"][0]["id"]
    assert len(adm.call("GET", "/api/config/history").json["entries"]) == 2
    r = adm.call("POST", "/api/config/history/%d/rollback" % h["entries"][1]["id"])
    assert r.status == 200, r.json
    assert path.read_text() == old and B.get(port, "/v2").body != b"v2\n"


def test_a_stale_base_is_refused_and_nothing_changes(start_proc, tmp_path):
    port, aport, adm, path, w = running(start_proc, tmp_path)
    old = path.read_text()
    edited = old + "\n# edited by hand\n"
    path.write_text(edited)
    r = adm.call("PUT", "/api/config/file", {"text": text_of(port, aport, extra=V2),
                                             "base": sha(old)})
    assert r.status == 409 and r.json["sha256"] == sha(edited), r.json
    assert path.read_text() == edited


def test_a_text_that_does_not_load_changes_nothing(start_proc, tmp_path):
    port, aport, adm, path, w = running(start_proc, tmp_path)
    old = path.read_text()
    bad = old.replace("echo = true", "echo = 3\nbogus = 1")
    r = adm.call("PUT", "/api/config/file", {"text": bad, "base": sha(old)})
    assert r.status == 400, r.json
    want = "%s:11: 'echo' in [locations.l] must be true or false" % path
    assert any(want in e for e in r.json["errors"]), r.json
    assert any("unknown key 'bogus'" in e for e in r.json["errors"]), r.json
    assert path.read_text() == old and not (tmp_path / "weir.toml.prev").exists()
    assert status_of(port, "/") == 200
    assert [e["action"] for e in adm.call("GET", "/api/config/history").json["entries"]] == \
        ["start"]


def test_a_refused_reload_puts_the_old_file_back(start_proc, tmp_path):
    """client_header_timeout is fixed for a listener's life: the text loads,
    the reload refuses it, and the file must say what runs."""
    port, aport, adm, path, w = running(start_proc, tmp_path)
    old = path.read_text()
    new = text_of(port, aport, extra=V2, timeout='client_header_timeout = "3s"\n')
    r = adm.call("PUT", "/api/config/file", {"text": new, "base": sha(old)})
    assert r.status == 409, r.json
    assert "the file is restored" in r.json["error"]
    assert any("client_header_timeout" in e for e in r.json["errors"]), r.json
    assert path.read_text() == old
    assert status_of(port, "/") == 200
    assert len(adm.call("GET", "/api/config/history").json["entries"]) == 1
    st = adm.call("GET", "/api/status").json
    assert st["revision"] == 1 and st["source"] == "file" and st["config"] == str(path), st
    assert st["last_reload"]["ok"] is False and "client_header_timeout" in \
        st["last_reload"]["error"], st
    r = adm.call("PUT", "/api/config/file", {"text": text_of(port, aport, extra=V2)})
    assert r.status == 200, r.json
    st = adm.call("GET", "/api/status").json
    assert st["revision"] == 2 and st["last_reload"]["ok"] is True and \
        st["last_reload"]["error"] is None, st


def test_rollback_and_the_history_bound(start_proc, tmp_path):
    port, aport, adm, path, w = running(start_proc, tmp_path, admin_extra="history = 3\n")
    start_text = path.read_text()
    texts = [text_of(port, aport, admin_extra="history = 3\n",
                     extra=V2 + "# version %d\n" % i) for i in range(3)]
    ids = []
    for t in texts:
        r = adm.call("PUT", "/api/config/file", {"text": t})
        assert r.status == 200, r.json
        ids.append(r.json["history_id"])
    assert ids == sorted(ids) and len(set(ids)) == 3
    h = adm.call("GET", "/api/config/history").json["entries"]
    assert [e["id"] for e in h] == ids[::-1], h  # the start entry went past the bound
    assert sorted(p.name for p in (tmp_path / "weir.toml.history").iterdir()) == \
        sorted("%d.%s" % (i, x) for i in ids for x in ("json", "toml"))
    assert adm.call("GET", "/api/config/history/1").status == 404
    r = adm.call("POST", "/api/config/history/%d/rollback" % ids[0],
                 {"base": sha(path.read_text())})
    assert r.status == 200, r.json
    assert path.read_text() == texts[0] and B.get(port, "/v2").body == b"v2\n"
    top = adm.call("GET", "/api/config/history").json["entries"][0]
    assert top["action"] == "rollback" and top["rollback_of"] == ids[0], top
    # A damaged entry is not offered.
    victim = tmp_path / "weir.toml.history" / ("%d.toml" % ids[1])
    victim.write_text(start_text)
    assert adm.call("GET", "/api/config/history/%d" % ids[1]).status == 404
    assert adm.call("POST", "/api/config/history/%d/rollback" % ids[1]).status == 404
    assert path.read_text() == texts[0]


def test_diff_names_the_sections(start_proc, tmp_path):
    port, aport, adm, path, w = running(start_proc, tmp_path)
    new = text_of(port, aport, extra=V2).replace("echo = true\n", "echo = true\nweight = 5\n", 1)
    r = adm.call("POST", "/api/config/diff", {"text": new})
    assert r.status == 200, r.json
    assert r.json == {"valid": True, "added": ["locations.v2", "plugins.m"],
                      "changed": ["servers.s", "locations.l"], "removed": []}, r.json
    gone = new.replace('[servers.s]', '[servers.t]')
    r = adm.call("POST", "/api/config/diff", {"text": gone})
    assert "servers.t" in r.json["added"] and "servers.s" in r.json["removed"], r.json
    r = adm.call("POST", "/api/config/diff", {"text": "[servers.s]\n"})
    assert r.status == 200 and r.json["valid"] is False and r.json["errors"], r.json
    assert path.read_text() == text_of(port, aport)


def test_bad_calls_get_400_404_405_413(start_proc, tmp_path):
    port, aport, adm, path, w = running(start_proc, tmp_path)
    old = path.read_text()
    for body in [{"text": old, "extra": 1}, {"text": 5}, {"base": sha(old)}, {"text": old,
                 "base": "ABC"}, {"text": old, "base": sha(old).upper()}, [old],
                 {"text": old.replace("echo", "ec\u0000ho")}]:
        r = adm.call("PUT", "/api/config/file", body)
        assert r.status == 400 and "error" in r.json, (body, r.json)
    assert adm.call("PUT", "/api/config/file", "{not json").status == 400
    assert adm.call("POST", "/api/config/diff", {"text": old, "base": sha(old)}).status == 400
    assert adm.call("POST", "/api/config/history/1/rollback", {"text": old}).status == 400
    for p in ["/api/config/history/0", "/api/config/history/abc", "/api/config/history/01",
              "/api/config/history/99999", "/api/config/history/1/nothing",
              "/api/config/history/123456789012", "/api/config/history/"]:
        assert adm.call("GET", p).status == 404, p
    assert adm.call("POST", "/api/config/file", {"text": old}).status == 405
    assert adm.call("DELETE", "/api/config/history").status == 405
    assert adm.call("GET", "/api/config/history/1/rollback").status == 405
    huge = json.dumps({"text": "#" * (1024 * 1024 + 10)})
    assert adm.call("PUT", "/api/config/file", huge).status == 413
    assert path.read_text() == old and status_of(port, "/") == 200


def test_two_applies_from_one_read_one_wins(start_proc, tmp_path):
    """Two operators edit from the same read: the second write must not
    silently undo the first."""
    port, aport, adm, path, w = running(start_proc, tmp_path)
    base = sha(path.read_text())
    texts = [text_of(port, aport, extra=V2 + "# from %s\n" % who) for who in "ab"]
    got = [None, None]

    def put(i):
        got[i] = adm.call("PUT", "/api/config/file", {"text": texts[i], "base": base}).status

    ts = [threading.Thread(target=put, args=(i,)) for i in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert sorted(got) == [200, 409], got
    assert path.read_text() == texts[got.index(200)]


# ---------------------------------------------------------------------------
# What a hostile page, a damaged file or an odd file system does


def raw(aport, method, path, headers, body=b""):
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", aport, timeout=10)
    try:
        c.putrequest(method, path, skip_host=True)
        for k, v in headers.items():
            c.putheader(k, v)
        c.putheader("Content-Length", str(len(body)))
        c.endheaders(body)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def test_a_page_of_another_site_cannot_use_the_api(start_proc, tmp_path):
    """Without a token (loopback only) a browser on any site can reach
    127.0.0.1: a cross-site POST (no preflight) or a DNS-rebound name must
    not get through. With a token, a cross-site Origin is refused too."""
    port, aport = free_port(), free_port()
    text = text_of(port, aport).replace('token = "t0ken-for-tests"\n', "")
    path, w = start(start_proc, tmp_path, text, port, aport)
    host = "127.0.0.1:%d" % aport
    for method, p, hs in [
            ("POST", "/api/reload", {"Host": host, "Origin": "http://evil.example",
                                     "Content-Type": "text/plain"}),
            ("POST", "/api/config/history/1/rollback", {"Host": host, "Origin": "null"}),
            ("GET", "/api/config/file", {"Host": "evil.example:%d" % aport}),
            ("GET", "/metrics", {"Host": "rebound.example"}),
            ("PUT", "/api/config/file", {"Host": host, "Origin": "http://127.0.0.1:1"})]:
        st, body = raw(aport, method, p, hs, b"{}" if method != "GET" else b"")
        assert st == 403, (method, p, hs, st, body)
    for hs in [{"Host": host}, {"Host": "localhost:%d" % aport},
               {"Host": host, "Origin": "http://" + host}, {"Host": "[::1]:%d" % aport}]:
        st, body = raw(aport, "GET", "/api/config/file", hs)
        assert st == 200, (hs, st, body)
    assert path.read_text() == text


def test_a_file_that_is_not_utf8_and_errors_cut_in_a_character(start_proc, tmp_path):
    port, aport, adm, path, w = running(start_proc, tmp_path)
    good = path.read_text()
    path.write_bytes(good.encode() + b"# caf\xe9\n")
    r = adm.call("GET", "/api/config/file")
    assert r.status == 422 and "UTF-8" in r.json["error"], r.json
    # An apply records the file as it was: an entry that cannot be used.
    r = adm.call("PUT", "/api/config/file", {"text": good})
    assert r.status == 200, r.json
    entries = adm.call("GET", "/api/config/history").json["entries"]
    damaged = [e for e in entries if e.get("damaged")]
    assert len(damaged) == 1 and "sha256" not in damaged[0], entries
    assert adm.call("POST", "/api/config/history/%d/rollback" % damaged[0]["id"]).status == 404
    # A reload error naming a long key of non-ASCII letters, cut at the
    # message's bound inside a character: still answered as text.
    path.write_text(good.replace("[servers.s]", '[basic]\n"%s" = 1\n\n[servers.s]' % ("\u00e9" * 400)))
    assert adm.call("POST", "/api/reload").status == 409
    st = adm.call("GET", "/api/status")
    assert st.status == 200 and st.json["last_reload"]["ok"] is False, st.json
    r = adm.call("PUT", "/api/config/file", {"text": path.read_text()})
    assert r.status == 400 and r.json["errors"] and all(r.json["errors"]), r.json


def test_odd_history_files_and_directories(start_proc, tmp_path):
    port, aport, adm, path, w = running(start_proc, tmp_path)
    hist = tmp_path / "weir.toml.history"
    for name in ["9223372036854775807.json", "012.json", "+5.json", " 7.json", "1x.json"]:
        (hist / name).write_text('{"id": 5}')
    (hist / "1.json").write_text('[1, 2]')  # the start entry, tampered
    r = adm.call("PUT", "/api/config/file", {"text": text_of(port, aport, extra=V2)})
    # The newest entry is not usable: the file as it was is recorded again.
    assert r.status == 200 and r.json["history_id"] == 3, r.json
    entries = adm.call("GET", "/api/config/history").json["entries"]
    assert [(e["id"], bool(e.get("damaged"))) for e in entries] == \
        [(3, False), (2, False), (1, True)], entries
    assert entries[1]["action"] == "file"
    # A history_dir that is a file, or that others may write: applied, and
    # the answer says nothing was recorded.
    bad = tmp_path / "shared"
    bad.mkdir()
    bad.chmod(0o777)
    for where in [tmp_path / "weir.toml.prev", bad]:
        t = text_of(port, aport, extra=V2, admin_extra='history_dir = "%s"\n' % where)
        r = adm.call("PUT", "/api/config/file", {"text": t})
        assert r.status == 200 and "history_error" in r.json, (where, r.json)
        assert "history_id" not in r.json
    assert list(bad.iterdir()) == []


def test_the_file_keeps_its_link_mode_and_prev(start_proc, tmp_path):
    port, aport, adm, path, w = running(start_proc, tmp_path)
    old = path.read_text()
    target = tmp_path / "real.toml"
    target.write_text(old)
    target.chmod(0o640)
    if os.geteuid() == 0:  # weir as root keeps the file's owner
        os.chown(target, 65534, 65534)
    path.unlink()
    path.symlink_to(target)
    r = adm.call("PUT", "/api/config/file", {"text": text_of(port, aport, extra=V2)})
    assert r.status == 200, r.json
    assert path.is_symlink() and target.read_text() == text_of(port, aport, extra=V2)
    assert (target.stat().st_mode & 0o777) == 0o640
    if os.geteuid() == 0:
        assert (target.stat().st_uid, target.stat().st_gid) == (65534, 65534)
    assert (tmp_path / "real.toml.prev").read_text() == old
    # A refused reload leaves FILE.prev as it was.
    r = adm.call("PUT", "/api/config/file",
                 {"text": text_of(port, aport, timeout='client_header_timeout = "3s"\n')})
    assert r.status == 409, r.json
    assert target.read_text() == text_of(port, aport, extra=V2)
    assert (tmp_path / "real.toml.prev").read_text() == old
