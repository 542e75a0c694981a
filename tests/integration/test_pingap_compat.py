"""Pingap configurations that weir used to accept with another meaning:
paths with a blank after = or ~, comma lists of hosts and certificate
domains, the access-log presets and variables Pingap users write."""
import re
import time

import pytest

import backends as B
import tlsutil as T
from conftest import binary, free_port, require_binary


def lines(path, n, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = path.read_text().splitlines() if path.exists() else []
        if len(got) >= n:
            return got
        time.sleep(0.02)
    return path.read_text().splitlines() if path.exists() else []


def get_host(port, path, host, extra=b""):
    return B.request(port, b"GET %s HTTP/1.1\r\nHost: %s\r\n%sConnection: close\r\n\r\n"
                     % (path.encode(), host.encode(), extra))


@pytest.mark.parametrize("path,hit,miss", [
    ("= /exact", "/exact", "/exact/x"),
    ("=  /exact ", "/exact", "/exactly"),
    ("~ \\\\.php$", "/index.php", "/index.html"),
    (" /prefix ", "/prefix/a", "/other"),
])
def test_path_with_blanks_after_the_sign(weir_toml, path, hit, miss):
    w = weir_toml('[servers.s]\naddr = "127.0.0.1:@PORT@"\nlocations = ["l", "rest"]\n'
                  '[locations.l]\npath = "%s"\necho = true\n'
                  '[locations.rest]\nproxy_set_headers = []\nupstream = "u"\n'
                  '[upstreams.u]\naddrs = ["127.0.0.1:1"]\n' % path)
    assert B.get(w.port, hit).status == 200
    assert B.get(w.port, miss).status == 502, "%s must not match %s" % (path, miss)


def test_host_as_a_comma_list(weir_toml):
    w = weir_toml('[servers.s]\naddr = "127.0.0.1:@PORT@"\nlocations = ["l", "rest"]\n'
                  '[locations.l]\nhost = "a.example.com, b.example.com"\necho = true\n'
                  '[locations.rest]\nupstream = "u"\n[upstreams.u]\naddrs = ["127.0.0.1:1"]\n')
    assert get_host(w.port, "/", "a.example.com").status == 200
    assert get_host(w.port, "/", "b.example.com").status == 200
    assert get_host(w.port, "/", "c.example.com").status == 502


def test_certificate_domains_as_a_comma_list(weir_toml, tmp_path):
    """domains = "x,y" is two names: SNI y picks that certificate."""
    pki = T.PKI(tmp_path / "pki")
    w = weir_toml('[certificates.a]\ncert = "%s"\nkey = "%s"\ndomains = "a.test, alias.test"\n'
                  '[certificates.d]\ncert = "%s"\nkey = "%s"\ndefault = true\n'
                  '[servers.s]\naddr = "127.0.0.1:@PORT@"\nlocations = ["l"]\n'
                  'certificates = ["a", "d"]\n[locations.l]\necho = true\n'
                  % (pki.path("a.crt"), pki.path("a.key"), pki.path("default.crt"),
                     pki.path("default.key")))
    ctx = T.client_context(pki)
    ctx.check_hostname = False
    assert T.peer_cn(w.port, ctx, "alias.test") == "a.test"
    assert T.peer_cn(w.port, ctx, "a.test") == "a.test"
    assert T.peer_cn(w.port, ctx, "nope.test") == "default.test"


PRESET_RE = {
    "tiny": r'GET /p\?q=1 200 \d+ - \d+(us|ms|\.\ds)',
    "short": r'127\.0\.0\.1 - GET /p\?q=1 HTTP/1\.1 200 \d+ - \d+(us|ms|\.\ds)',
    "common": r'127\.0\.0\.1 - - \[[^]]+\] "GET /p\?q=1 HTTP/1\.1" 200 \d+',
}


@pytest.mark.parametrize("preset", sorted(PRESET_RE))
def test_access_log_presets(weir_toml, tmp_path, preset):
    log = tmp_path / "a.log"
    w = weir_toml('[servers.s]\naddr = "127.0.0.1:@PORT@"\nlocations = ["l"]\n'
                  'access_log = "%s"\naccess_log_file = "%s"\n[locations.l]\necho = true\n'
                  % (preset, log))
    assert B.get(w.port, "/p?q=1").status == 200
    got = lines(log, 1)
    assert got and re.fullmatch(PRESET_RE[preset], got[0]), got


def test_pingap_access_log_variables(weir_toml, backend, tmp_path, monkeypatch):
    monkeypatch.setenv("WEIR_TEST_DC", "dc7")
    b = backend(B.fixed(b"x" * 1500, headers=[("X-Resp", "r1")]))
    log = tmp_path / "a.log"
    fmt = ("{host}|{scheme}|{remote}|{proto}|{when_utc_iso}|{when_unix}|{size_human}|"
           "{latency_human}|{payload_size}|{~sid}|{>x-in}|{<x-resp}|{$WEIR_TEST_DC}|"
           "{:location}|{:upstream_reused}|{:upstream_connect_time}|"
           "{:upstream_response_time}|{:tls_version}|{referer}|{user_agent}")
    w = weir_toml('[servers.s]\naddr = "127.0.0.1:@PORT@"\nlocations = ["l"]\n'
                  'access_log = "%s"\naccess_log_file = "%s"\n'
                  '[locations.l]\nupstream = "u"\n[upstreams.u]\naddrs = ["@B@"]\n'
                  % (fmt, log), B=b, threads=1)
    extra = b"Cookie: a=1; sid=s42\r\nX-In: in1\r\nReferer: https://r.test/\r\nUser-Agent: ua/1\r\n"
    assert get_host(w.port, "/v", "shop.test", extra).status == 200
    s = B.connect(w.port)
    s.sendall(b"POST /v HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 5\r\n\r\nhello"
              b"GET /v HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n")
    rd = B.Reader(s)
    B.read_response(rd, "POST")
    B.read_response(rd)
    s.close()
    got = [line.split("|") for line in lines(log, 3)]
    f = got[0]
    assert f[0] == "shop.test" and f[1] == "http" and f[2] == "127.0.0.1"
    assert f[3] == "HTTP/1.1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", f[4]), f[4]
    assert abs(int(f[5]) / 1000 - time.time()) < 60
    assert re.fullmatch(r"1\.\dKB", f[6]), f[6]
    assert re.fullmatch(r"\d+(us|ms)|\d+\.\ds", f[7]), f[7]
    assert f[9] == "s42" and f[10] == "in1" and f[11] == "r1" and f[12] == "dc7"
    assert f[13] == "l"
    assert f[14] == "false", "the first request opened its connection"
    assert re.fullmatch(r"\d+\.\d{3}", f[15]) and re.fullmatch(r"\d+\.\d{3}", f[16])
    assert f[17] == "-", "no TLS"
    assert f[18] == "https://r.test/" and f[19] == "ua/1"
    post = b"POST /v HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 5\r\n\r\nhello"
    assert int(got[1][8]) == len(post), "payload_size: the request's bytes, head and body"
    assert got[2][14] == "true", "a pooled connection was reused"


def test_health_check_url_options_are_settings_not_path(weir_toml, backend):
    """Pingap's ?check_frequency=...&success=...&failure=... configure the
    check; the probe's path keeps only the other parameters."""
    b = backend(B.fixed(b"ok\n"))
    w = weir_toml('[servers.s]\naddr = "127.0.0.1:@PORT@"\nlocations = ["l"]\n'
                  '[locations.l]\nupstream = "u"\n[upstreams.u]\naddrs = ["@B@"]\n'
                  'health_check = "http://u/ping?connection_timeout=2s&check_frequency=100ms'
                  '&success=1&failure=2&reuse&x=1"\n', B=b)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and b.request_count() < 3:
        time.sleep(0.05)
    paths = {r.path for r in b.requests}
    assert b.request_count() >= 3, "a probe every 100 ms"
    assert paths == {"/ping?x=1"}, paths


@pytest.mark.parametrize("url,msg", [
    ("http://u/ping?check_frequency=often", "'check_frequency' must be a duration"),
    ("http://u/ping?success=0", "'success' must be 1..100"),
])
def test_health_check_url_option_errors(tmp_path, url, msg):
    require_binary("weir")
    import subprocess
    cfg = tmp_path / "c.toml"
    cfg.write_text('[servers.s]\naddr = "127.0.0.1:1"\nlocations = ["l"]\n'
                   '[locations.l]\nupstream = "u"\n[upstreams.u]\naddrs = ["127.0.0.1:2"]\n'
                   'health_check = "%s"\n' % url)
    r = subprocess.run([binary("weir"), "-t", "-c", str(cfg)], capture_output=True, text=True,
                       timeout=20)
    assert r.returncode != 0 and msg in r.stderr and "c.toml:8:" in r.stderr, r.stderr


# ---- weir convert --from pingap ----

PINGAP = {
    "basic.toml": '[basic]\nname = "edge"\nthreads = 2\nlog_level = "WARN"\nwork_stealing = true\n',
    "servers.toml": '[servers.web]\naddr = "127.0.0.1:@PORT@"\nlocations = ["api", "home"]\n'
                    'access_log = "@TMP@/access.log {method} {path} {status}"\n'
                    'prometheus_metrics = "/metrics"\n',
    "locations.toml": '[locations.api]\nupstream = "api"\nhost = "api.test,api2.test"\n'
                      'path = "~ ^/v1"\nplugins = ["pong", "gz", "lim"]\n'
                      'proxy_set_headers = ["X-Client: $remote_addr"]\n'
                      'enable_reverse_proxy_headers = true\n'
                      '[locations.home]\nupstream = "api"\npath = "= /"\n',
    "upstreams.toml": '[upstreams.api]\naddrs = ["@B@ 5"]\nconnection_timeout = "2s"\n'
                      'health_check = "http://api/ping?check_frequency=100ms&success=1"\n'
                      'discovery = "dns"\nupdate_frequency = "10s"\nipv4_only = true\n'
                      'sni = "api.internal"\nverify_cert = false\n'
                      '[upstreams.dock]\naddrs = ["127.0.0.1:8080"]\ndiscovery = "docker"\n'
                      'update_frequency = "10s"\n',
    "plugins.toml": '[plugins.pong]\ncategory = "ping"\npath = "/v1/ping"\nremark = "up?"\n'
                    '[plugins.gz]\ncategory = "compression"\ngzip_level = 6\n'
                    '[plugins.lim]\ncategory = "limit"\nmax = 2\ninterval = "1m"\n'
                    'weird_key = 1\n',
    "storages.toml": '[storages.x]\ncategory = "config"\n',
}


def convert(path):
    import subprocess
    require_binary("weir")
    return subprocess.run([binary("weir"), "convert", "--from", "pingap", str(path)],
                          capture_output=True, text=True, timeout=20)


def write_pingap(tmp_path, files):
    d = tmp_path / "pingap"
    d.mkdir()
    for name, text in files.items():
        (d / name).write_text(text.replace("@TMP@", str(tmp_path)))
    return d


def test_convert_a_pingap_directory(tmp_path):
    d = write_pingap(tmp_path, PINGAP)
    r = convert(d)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for line in ['threads = 2', 'log_level = "warn"', 'addr = ["127.0.0.1:@PORT@"]',
                 'access_log_file = "%s/access.log"' % tmp_path,
                 'access_log = "{method} {path} {status}"',
                 'host = "api.test,api2.test"', 'plugins = ["pong", "gz", "lim"]',
                 '[plugins.gz]\ncategory = "compression"\ngzip_level = 6',
                 'tls = true', 'sni = "api.internal"', 'verify_cert = false',
                 'addrs = ["@B@ 5"]', 'discovery = "dns"\nupdate_frequency = "10s"\n'
                 'ipv4_only = true']:
        assert line in out, (line, out)
    for comment in ['# not converted: name = "edge"', '# not converted: work_stealing = true',
                    '# not converted: prometheus_metrics = "/metrics"',
                    '# not converted: discovery = "docker"',
                    '# not converted: update_frequency = "10s"  (only with discovery = "dns")',
                    '# not converted: remark = "up?"',
                    '# not converted: weird_key = 1',
                    '# not converted: enable_reverse_proxy_headers = true',
                    '# not converted: [storages] of']:
        assert comment in out, (comment, out)


def test_reverse_proxy_headers_off_converts_to_none(tmp_path):
    files = dict(PINGAP)
    files["locations.toml"] = files["locations.toml"].replace(
        "enable_reverse_proxy_headers = true", "enable_reverse_proxy_headers = false")
    r = convert(write_pingap(tmp_path, files))
    assert r.returncode == 0, r.stderr
    assert "proxy_added_headers = []\n" in r.stdout, r.stdout
    assert "enable_reverse_proxy_headers" not in r.stdout


def test_converted_config_runs_and_means_the_same(weir_toml, backend, tmp_path):
    b = backend(B.fixed(b"api\n"))
    files = dict(PINGAP)
    files["upstreams.toml"] = files["upstreams.toml"].replace('sni = "api.internal"\n', "") \
        .replace('verify_cert = false\n', "")
    r = convert(write_pingap(tmp_path, files))
    assert r.returncode == 0, r.stderr
    w = weir_toml(r.stdout, B=b)
    assert get_host(w.port, "/v1/ping", "api2.test").body == b"pong"
    assert get_host(w.port, "/v1/x", "api.test").body == b"api\n"
    assert get_host(w.port, "/v1/x", "api.test").body == b"api\n"
    assert get_host(w.port, "/v1/x", "api.test").status == 429, "the limit came along"
    assert get_host(w.port, "/", "other.test").body == b"api\n", "= / with a blank"
    proxied = [q for q in b.requests if q.path.startswith("/v1")]
    assert proxied and proxied[0].headers.get("x-client") == "127.0.0.1"


def test_convert_a_single_file_with_inline_certificates(tmp_path):
    f = tmp_path / "pingap.toml"
    f.write_text('[certificates.site]\ntls_cert = "-----BEGIN CERTIFICATE-----\\nMIIB\\n"\n'
                 'tls_key = "/etc/ssl/site.key"\ndomains = "a.test,b.test"\nis_default = true\n'
                 'acme = "lets_encrypt"\n'
                 '[servers.s]\naddr = "0.0.0.0:443"\nlocations = []\nglobal_certificates = true\n'
                 'enabled_h2 = false\n')
    r = convert(f)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "# not converted: tls_cert holds the PEM (or base64) itself" in out
    assert 'key = "/etc/ssl/site.key"' in out and 'default = true' in out
    assert 'domains = "a.test,b.test"' in out
    assert 'certificates = ["site"]' in out and 'alpn = ["http/1.1"]' in out
    assert '# not converted: acme = "lets_encrypt"' in out


def test_convert_reports_a_broken_file(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text('[servers.s]\naddr = "x\n')
    r = convert(f)
    assert r.returncode == 1 and "bad.toml:2" in r.stderr, r.stderr
    r = convert(tmp_path / "missing")
    assert r.returncode == 1 and "No such file or directory" in r.stderr


def test_convert_keeps_quoted_names_and_floats(tmp_path):
    f = tmp_path / "q.toml"
    f.write_text('[upstreams."api.v1"]\naddrs = ["127.0.0.1:1"]\n'
                 '[plugins."resp hdr"]\ncategory = "ping"\npath = "/p"\n'
                 '[locations.l]\nupstream = "api.v1"\nplugins = ["resp hdr"]\n'
                 '[servers.s]\naddr = "127.0.0.1:1"\nlocations = ["l"]\n'
                 '[basic]\ngrace_period = "1s"\n')
    r = convert(f)
    assert r.returncode == 0 and '[upstreams."api.v1"]' in r.stdout
    assert '[plugins."resp hdr"]' in r.stdout
    out = tmp_path / "out.toml"
    out.write_text(r.stdout)
    import subprocess
    t = subprocess.run([binary("weir"), "-t", "-c", str(out)], capture_output=True, text=True,
                       timeout=20)
    assert t.returncode == 0, t.stderr + r.stdout


def test_convert_the_cache_plugin(weir_toml, backend, tmp_path):
    from test_cache import Origin, status_of
    files = dict(PINGAP)
    files["basic.toml"] += 'cache_directory = "@TMP@/pcache"\ncache_max_size = "64MB"\n'
    files["plugins.toml"] += ('[plugins.ca]\ncategory = "cache"\nlock = "2s"\nmax_ttl = "1m"\n'
                              'namespace = "pingap"\nheaders = ["Accept-Encoding"]\n'
                              'eviction = true\npredictor = true\nmax_file_size = "100kb"\n')
    files["locations.toml"] = files["locations.toml"].replace(
        'plugins = ["pong", "gz", "lim"]', 'plugins = ["pong", "ca"]')
    files["upstreams.toml"] = files["upstreams.toml"].replace('sni = "api.internal"\n', "") \
        .replace('verify_cert = false\n', "")  # a plain origin
    r = convert(write_pingap(tmp_path, files))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for line in ['[caches.default]\ndirectory = "%s/pcache"\ndisk_size = "64MB"' % tmp_path,
                 'key_headers = ["Accept-Encoding"]', 'max_file_size = "100kb"',
                 'namespace = "pingap"', '# not converted: eviction = true']:
        assert line in out, (line, out)
    o = Origin()
    o.set("/v1/c", headers=[("Cache-Control", "max-age=60")], body="c")
    w = weir_toml(out, B=backend(o.handler))
    B.request(w.port, b"GET /v1/c HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n")
    r = B.request(w.port, b"GET /v1/c HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n")
    assert "hit" in r.headers.get("cache-status", ""), r
    assert o.count("/v1/c") == 1


def test_convert_a_plugin_without_category(tmp_path):
    # str() of a missing key once read through a NULL value.
    files = dict(PINGAP)
    files["plugins.toml"] += '[plugins.nocat]\nremark = "x"\n'
    r = convert(write_pingap(tmp_path, files))
    assert r.returncode == 0, r.stderr
    assert '# [plugins.nocat]: category "?" is not in weir yet' in r.stdout, r.stdout
