"""GET /api/schema: every kind of section's keys with their types, and each
plugin category's. The web UI builds its forms from it, so the schema must
say what the loader does: each key is set here to a value of the wrong type
and `weir -t` must refuse it with that key's type error on its line.
"""
import concurrent.futures
import json
import os
import re
import subprocess

import pytest

from conftest import binary, free_port, require_binary, wait_port

PHRASE = {"string": "must be a string", "strings": "must be a string or an array of strings",
          "integer": "must be an integer", "boolean": "must be true or false",
          "duration": "must be a duration", "size": "must be a size"}
LOC = '[locations.l]\necho = true\n'
UP = '[upstreams.u]\naddrs = ["127.0.0.1:1"]\n'
HTTP = '[servers.s]\naddr = "127.0.0.1:1"\nlocations = ["l"]\n'

# Keys the loader reads only with another one: what they need.
NEEDS = {
    ("locations", "router_key"): 'router = "resp://127.0.0.1:1"',
    ("locations", "router_timeout"): 'router = "resp://127.0.0.1:1"',
    ("locations", "router_fallback"): 'router = "resp://127.0.0.1:1"',
    ("accept_encoding", "only_one_encoding"): 'encodings = ["gzip"]',
    ("forward_auth", "ca_file"): 'auth_url = "https://127.0.0.1:1/"',
    ("jwt", "ca_file"): 'jwks_url = "https://127.0.0.1:1/keys"',
    ("sub_filter", "types"): 'filters = [["a", "b"]]',
    ("upstreams", "alpn"): "tls = true",  # h2,h1 is chosen in the TLS handshake
}
for k in ("update_frequency", "dns_server", "dns_domain", "dns_search", "ipv4_only",
          "ipv6_only", "dns_min_ttl", "dns_timeout"):
    NEEDS[("upstreams", k)] = 'discovery = "dns"'


# Choices that need another key.
CHOICE_NEEDS = {("challenge", "dns-01"): 'dns_hook = "/bin/true"'}


def context(section, variant, key, value=None):
    """A configuration with @K@ where the key goes."""
    need = NEEDS.get((variant if section == "plugins" else section, key),
                     CHOICE_NEEDS.get((key, value), ""))
    k = "@K@\n" + (need + "\n" if need else "")
    if section == "basic":
        return "[basic]\n" + k + HTTP + LOC
    if section == "admin":
        return '[admin]\naddr = "127.0.0.1:2"\n' + k + HTTP + LOC
    if section == "servers" and variant == "http":
        return HTTP + k + LOC
    if section == "servers":
        return ('[servers.s]\naddr = "127.0.0.1:1"\nprotocol = "%s"\nupstream = "u"\n%s%s'
                % (variant, k, UP))
    if section == "locations":
        return HTTP + '[locations.l]\nupstream = "u"\n' + k + UP
    if section == "upstreams":
        return HTTP + '[locations.l]\nupstream = "u"\n[upstreams.u]\naddrs = ["127.0.0.1:1"]\n' + k
    if section == "certificates":
        return ('[certificates.c]\nacme = "letsencrypt"\ndomains = ["a.example"]\n' + k + HTTP
                + LOC)
    if section == "caches":
        return '[caches.c]\nmemory = "1MB"\n' + k + HTTP + LOC
    assert section == "plugins"
    return '[plugins.p]\ncategory = "%s"\n%s%s%s' % (variant, k, HTTP, LOC)


def place(text, key, value):
    """The text with `key = value` at @K@ (over a line of the context that
    sets the same key), and that line's number."""
    lines = [l for l in text.split("\n") if not l.startswith(key + " =")]
    want = "%s = %s" % (key, value)
    lines = [want if l == "@K@" else l for l in lines]
    return "\n".join(lines), lines.index(want) + 1


@pytest.fixture(scope="module")
def schema(tmp_path_factory):
    require_binary("weir")
    d = tmp_path_factory.mktemp("schema")
    admin = free_port()
    conf = d / "w.toml"
    conf.write_text('[admin]\naddr = "127.0.0.1:%d"\ntoken = "tk"\n[servers.s]\n'
                    'addr = "127.0.0.1:%d"\nlocations = ["l"]\n%s' % (admin, free_port(), LOC))
    p = subprocess.Popen([binary("weir"), "-c", str(conf)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    try:
        wait_port(admin)
        out = subprocess.run(["curl", "-s", "-H", "Authorization: Bearer tk",
                              "http://127.0.0.1:%d/api/schema" % admin], capture_output=True,
                             timeout=30)
        unauth = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                 "http://127.0.0.1:%d/api/schema" % admin],
                                capture_output=True, text=True, timeout=30)
    finally:
        p.terminate()
        p.wait(30)
    assert unauth.stdout == "401"
    return json.loads(out.stdout), d


def all_keys(s):
    for sec, d in s["sections"].items():
        for variant, dd in (d["variants"].items() if "variants" in d else [(None, d)]):
            for k in dd["keys"]:
                yield sec, variant, k
    for cat, d in s["plugins"].items():
        for k in d["keys"]:
            yield "plugins", cat, k


def check(binary_path, d, text, name):
    f = d / ("%s.toml" % name)
    f.write_text(text)
    return subprocess.run([binary_path, "-t", "-c", str(f)], capture_output=True, text=True,
                          timeout=60).stderr


def test_the_schema_has_every_section_and_plugin(schema):
    s, _ = schema
    assert set(s["sections"]) == {"basic", "admin", "servers", "locations", "upstreams",
                                  "certificates", "caches"}
    servers = s["sections"]["servers"]
    assert servers["variant_key"] == "protocol"
    assert set(servers["variants"]) == {"http", "tcp", "tls_passthrough", "udp", "resp"}
    http = {k["name"] for k in servers["variants"]["http"]["keys"]}
    assert "locations" in http and "upstream" not in http and "tls" not in http
    passthrough = {k["name"] for k in servers["variants"]["tls_passthrough"]["keys"]}
    assert "sni_routes" in passthrough and "certificates" not in passthrough
    assert len(s["plugins"]) >= 26
    cors = s["plugins"]["cors"]
    assert cors["default_step"] == "request" and "early_request" in cors["steps"]
    level = next(k for k in s["sections"]["basic"]["keys"] if k["name"] == "log_level")
    assert level == {"name": "log_level", "type": "string",
                     "choices": ["error", "warn", "info", "debug"]}
    types = {k["type"] for _, _, k in all_keys(s)}
    assert types <= set(PHRASE) | {"integers", "table", "array"}, types


def test_every_key_has_the_type_the_loader_reads(schema):
    s, d = schema
    w = binary("weir")

    def one(item):
        sec, variant, k = item
        wrong = '"x"' if k["type"] in ("boolean", "integer", "integers") else "true"
        text, line = place(context(sec, variant, k["name"]), k["name"], wrong)
        err = check(w, d, text, "t_%s_%s_%s" % (sec, variant, k["name"]))
        mine = [e for e in err.splitlines() if ":%d: " % line in e and "'%s'" % k["name"] in e]
        phrase = PHRASE.get(k["type"])
        if not any(phrase is None or phrase in e for e in mine):
            return "%s/%s %s (%s): %s" % (sec, variant, k["name"], k["type"], err.strip())
        return None

    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        bad = [b for b in ex.map(one, list(all_keys(s))) if b]
    assert not bad, "\n".join(bad)


def test_every_choice_loads_and_others_are_refused(schema):
    s, d = schema
    w = binary("weir")
    seen = 0
    for sec, variant, k in all_keys(s):
        if "choices" not in k or k["name"] == "protocol":
            continue
        for c in k["choices"] + ["not-a-choice"]:
            text, line = place(context(sec, variant, k["name"], c), k["name"], json.dumps(c))
            err = check(w, d, text, "c_%s_%s_%s" % (sec, variant, k["name"]))
            # A refusal of the value names it (another key the value
            # needs, such as certificates for tls_min_version, is no
            # refusal of the value).
            mine = [e for e in err.splitlines() if ":%d: " % line in e and c in e]
            if c == "not-a-choice":
                assert mine, (k, err)
            else:
                assert not mine, (k, c, err)
            seen += 1
    assert seen > 30
