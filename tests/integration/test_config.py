"""The weir program's TOML configuration: `weir -t` on the examples and the
default, one bad file per class of error (exact FILE:LINE and message),
all errors reported in one run, refusing to start on a bad file, and the
[basic] settings that act on the process (pid_file, log_level, threads).

Error lines are located with a "# <-" marker in the file text, so the
expected line numbers follow the text when it is edited.
"""
import os
import re
import signal
import subprocess
import time

import pytest

import backends as B
from conftest import REPO, free_port, require_binary, wait_port

EXAMPLES = os.path.join(REPO, "examples")
EXAMPLE_FILES = ["quickstart.toml", "multi-site.toml", "api-gateway.toml", "two-tier.toml"]
MARK = "# <-"


def weir_bin():
    return require_binary("weir")


def run_weir(*args, timeout=30):
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0")
    return subprocess.run([weir_bin()] + [str(a) for a in args], capture_output=True,
                          text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)


def write(tmp_path, text, name="weir.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def marked_lines(text):
    """1-based numbers of the lines carrying the marker."""
    return [i + 1 for i, line in enumerate(text.splitlines()) if MARK in line]


def check(tmp_path, text, name="weir.toml"):
    """Runs `weir -t -c` on text; returns (path, rc, error lines, stderr)."""
    path = write(tmp_path, text, name)
    r = run_weir("-t", "-c", path)
    assert "Sanitizer" not in r.stderr and "runtime error:" not in r.stderr, r.stderr
    lines = r.stderr.splitlines()
    return str(path), r.returncode, lines, r.stderr


def expect_one_error(tmp_path, text, fragment, with_line=True):
    """Asserts `weir -t` reports exactly one error, at the marked line,
    containing fragment; returns the error line."""
    path, rc, lines, err = check(tmp_path, text)
    assert rc == 1, err
    assert len(lines) == 2, err  # the error and the summary
    assert lines[-1] == "weir: configuration %s has 1 error" % path, err
    if with_line:
        (want,) = marked_lines(text)
        prefix = "%s:%d: " % (path, want)
    else:
        prefix = "%s: " % path
    assert lines[0].startswith(prefix), "want prefix %r in:\n%s" % (prefix, err)
    assert fragment in lines[0], "want %r in:\n%s" % (fragment, err)
    return lines[0]


# A valid configuration the error cases are variations of.
BASE = """\
[basic]
threads = 1{basic}

[servers.main]
addr = "127.0.0.1:{port}"{server}
locations = ["root"{locations}]

[locations.root]
path = "/"
upstream = "{upstream}"{location}

[upstreams.app]
addrs = ["127.0.0.1:9"]{upstreams}
"""


def base(basic="", server="", locations="", location="", upstreams="", upstream="app",
         port=None):
    return BASE.format(basic=basic, server=server, locations=locations, location=location,
                       upstreams=upstreams, upstream=upstream, port=port or 18080)


# ---------------------------------------------------------------------------
# Valid files


@pytest.mark.parametrize("name", EXAMPLE_FILES)
def test_example_is_valid(name):
    path = os.path.join(EXAMPLES, name)
    r = run_weir("-t", "-c", path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "weir: configuration %s is valid" % path
    assert r.stderr == ""


def test_base_is_valid(tmp_path):
    path, rc, lines, err = check(tmp_path, base())
    assert rc == 0 and lines == [], err


def test_default_config_is_valid():
    r = run_weir("-t")
    assert r.returncode == 0, r.stderr
    assert "configuration (default) is valid" in r.stdout


def test_printed_default_config_is_valid(tmp_path):
    r = run_weir("--print-default-config")
    assert r.returncode == 0
    text = r.stdout
    # What the help text promises: 6188 in front of echo upstreams 6101/6102.
    assert 'addr = "127.0.0.1:6188"' in text
    assert '"127.0.0.1:6101"' in text and '"127.0.0.1:6102"' in text
    path = write(tmp_path, text, "default.toml")
    t = run_weir("-t", "-c", path)
    assert t.returncode == 0, t.stderr
    assert "is valid" in t.stdout


@pytest.mark.deadline(30)
def test_printed_default_config_runs_like_the_default(tmp_path, start_proc):
    """The printed default, moved to free ports, proxies round-robin to its
    two built-in echo servers (the same behaviour test_routing checks on
    the real default ports)."""
    text = run_weir("--print-default-config").stdout
    p, a, b = free_port(), free_port(), free_port()
    moved = (text.replace("127.0.0.1:6188", "127.0.0.1:%d" % p)
             .replace("127.0.0.1:6101", "127.0.0.1:%d" % a)
             .replace("127.0.0.1:6102", "127.0.0.1:%d" % b))
    assert moved.count(str(a)) == 2 and moved.count(str(b)) == 2
    path = write(tmp_path, moved, "default-moved.toml")
    w = start_proc([weir_bin(), "-c", str(path), "--threads", "1"], p, "weir")
    assert wait_port(a, w.proc) and wait_port(b, w.proc)
    bodies = [B.get(p, "/x?y=%d" % i).body for i in range(4)]
    want_a = b"echo from 127.0.0.1:%d: GET /x?y=" % a
    want_b = b"echo from 127.0.0.1:%d: GET /x?y=" % b
    assert sum(x.startswith(want_a) for x in bodies) == 2, bodies
    assert sum(x.startswith(want_b) for x in bodies) == 2, bodies
    assert bodies[0] != bodies[1][:len(bodies[0])]
    # The echo servers answer directly too.
    r = B.get(a, "/direct")
    assert r.status == 200 and r.body == b"echo from 127.0.0.1:%d: GET /direct\n" % a
    assert r.headers.get("X-Echo-Upstream") == "127.0.0.1:%d" % a


def test_empty_upstream_is_valid(tmp_path):
    path, rc, lines, err = check(tmp_path, base(upstreams="\n[upstreams.spare]\naddrs = []"))
    assert rc == 0, err


# ---------------------------------------------------------------------------
# One bad file per class of error


def test_unknown_key_with_suggestion(tmp_path):
    text = base(upstreams='\nread_timout = "5s"  ' + MARK)
    expect_one_error(tmp_path, text,
                     "unknown key 'read_timout' in [upstreams.app]; did you mean 'read_timeout'?")


def test_unknown_key_without_suggestion(tmp_path):
    text = base(server='\nfrobnicate = true  ' + MARK)
    line = expect_one_error(tmp_path, text, "unknown key 'frobnicate' in [servers.main]")
    assert "did you mean" not in line


def test_unknown_top_level_section(tmp_path):
    text = base() + "\n[upstream.extra]  " + MARK + '\naddrs = ["127.0.0.1:1"]\n'
    expect_one_error(tmp_path, text,
                     "unknown key 'upstream' in [top level]; did you mean 'upstreams'?")


def test_wrong_type_integer(tmp_path):
    text = base(basic='\ngrace_period = "5s"\nlog_level = "info"').replace(
        "threads = 1", 'threads = "4"  ' + MARK)
    expect_one_error(tmp_path, text, "'threads' in [basic] must be an integer, not string")


def test_wrong_type_bool(tmp_path):
    text = base().replace('upstream = "app"', 'echo = "yes"  ' + MARK)
    path, rc, lines, err = check(tmp_path, text)
    assert rc == 1
    want = "%s:%d: " % (path, marked_lines(text)[0])
    assert any(l.startswith(want) and "'echo' in [locations.root] must be true or false" in l
               for l in lines), err


def test_wrong_type_string_list(tmp_path):
    text = base().replace('addr = "127.0.0.1:18080"', "addr = 18080  " + MARK)
    expect_one_error(tmp_path, text,
                     "'addr' in [servers.main] must be a string or an array of strings")


def test_out_of_range_integer(tmp_path):
    text = base().replace("threads = 1", "threads = 2000  " + MARK)
    expect_one_error(tmp_path, text,
                     "'threads' in [basic] is 2000; it must be between 0 and 1024")


def test_out_of_range_negative_keepalive(tmp_path):
    text = base(upstreams="\nkeepalive = -1  " + MARK)
    expect_one_error(tmp_path, text,
                     "'keepalive' in [upstreams.app] is -1; it must be between 0 and 100000")


def test_bad_log_level(tmp_path):
    text = base(basic='\nlog_level = "verbose"  ' + MARK)
    expect_one_error(tmp_path, text,
                     "'log_level' in [basic] must be error, warn, info or debug, not 'verbose'")


@pytest.mark.parametrize("value", ['"10 s"', '"10sec"', '"-1s"', '""', "10", '"1.5s"'])
def test_bad_duration(tmp_path, value):
    text = base(upstreams="\nread_timeout = %s  %s" % (value, MARK))
    expect_one_error(tmp_path, text, "'read_timeout' in [upstreams.app] must be a duration "
                                     'like "10s", "500ms" or "1m"')


def test_zero_duration_out_of_range(tmp_path):
    text = base(location='\nread_timeout = "0s"  ' + MARK)
    expect_one_error(tmp_path, text, "'read_timeout' in [locations.root] is out of range")


def test_good_durations(tmp_path):
    text = base(basic='\ngrace_period = "1m30s"',
                server='\nclient_header_timeout = "500ms"\nkeepalive_timeout = "1h"',
                upstreams='\nidle_timeout = "0s"\nread_timeout = "2m"')
    path, rc, lines, err = check(tmp_path, text)
    assert rc == 0, err


@pytest.mark.parametrize("value", ['"10XB"', '"ten"', "-5", '"-5KB"', '"1.5MB"', "true"])
def test_bad_size(tmp_path, value):
    text = base(server="\nmax_body_size = %s  %s" % (value, MARK))
    expect_one_error(tmp_path, text, "'max_body_size' in [servers.main] must be a size like "
                                     '1048576, "64KB" or "10MB"')


def test_size_too_large(tmp_path):
    text = base(server='\nmax_header_size = "2MB"  ' + MARK)
    expect_one_error(tmp_path, text, "'max_header_size' in [servers.main] is too large")


def test_good_sizes(tmp_path):
    text = base(server='\nmax_body_size = "10MB"\nmax_header_size = "64kb"',
                location="\nclient_max_body_size = 1024")
    path, rc, lines, err = check(tmp_path, text)
    assert rc == 0, err


def test_undefined_upstream_with_suggestion(tmp_path):
    text = base(upstream="ap").replace('upstream = "ap"', 'upstream = "ap"  ' + MARK)
    expect_one_error(tmp_path, text,
                     "[locations.root] refers to undefined upstream 'ap'; did you mean 'app'?")


def test_undefined_upstream_without_suggestion(tmp_path):
    text = base(upstream="zzzzzzzz").replace('upstream = "zzzzzzzz"',
                                             'upstream = "zzzzzzzz"  ' + MARK)
    line = expect_one_error(tmp_path, text,
                            "[locations.root] refers to undefined upstream 'zzzzzzzz'")
    assert "did you mean" not in line


def test_undefined_location(tmp_path):
    text = base(locations=', "rot"').replace('locations = ["root", "rot"]',
                                             'locations = ["root", "rot"]  ' + MARK)
    expect_one_error(tmp_path, text,
                     "[servers.main] refers to undefined location 'rot'; did you mean 'root'?")


def test_location_without_upstream(tmp_path):
    text = base().replace('upstream = "app"', "").replace("[locations.root]",
                                                          "[locations.root]  " + MARK)
    expect_one_error(tmp_path, text, "[locations.root] needs 'upstream' (or echo = true)")


def test_duplicate_listen_address_across_servers(tmp_path):
    text = base() + ('\n[servers.other]  %s\naddr = ["127.0.0.1:18081", "127.0.0.1:18080"]\n'
                     'locations = ["root"]\n' % MARK)
    path, rc, lines, err = check(tmp_path, text)
    assert rc == 1 and len(lines) == 2, err
    header = marked_lines(text)[0]
    # The [servers.other] header, or its addr line just below.
    assert re.match(r"%s:(%d|%d): " % (re.escape(path), header, header + 1), lines[0]), err
    assert ("listen address 127.0.0.1:18080 of [servers.other] is also used by "
            "[servers.main]") in lines[0], err


def test_invalid_path_regex(tmp_path):
    text = base().replace('path = "/"', 'path = "~^/(api"  ' + MARK)
    line = expect_one_error(tmp_path, text, "[locations.root]: invalid path regex '^/(api': ")
    # The PCRE2 message and offset.
    assert "missing closing parenthesis at offset 6" in line


def test_invalid_path_form(tmp_path):
    text = base().replace('path = "/"', 'path = "api/"  ' + MARK)
    expect_one_error(tmp_path, text, "'path' in [locations.root] must be \"/prefix\"")


@pytest.mark.parametrize("host,fragment", [
    ("*foo.example.com", "invalid host '*foo.example.com'"),
    ("a*.example.com", "invalid host 'a*.example.com'"),
    ("*.*.example.com", "invalid host '*.*.example.com'"),
    ("", "invalid host ''"),
    ("~[bad", "invalid host regex '[bad': missing terminating ] for character class"),
])
def test_invalid_host_pattern(tmp_path, host, fragment):
    text = base(location='\nhost = ["ok.example.com", "%s"]  %s' % (host, MARK))
    expect_one_error(tmp_path, text, "[locations.root]: " + fragment)


@pytest.mark.deadline(30)
def test_unresolvable_hostname(tmp_path):
    text = base(upstreams="").replace('addrs = ["127.0.0.1:9"]',
                                      'addrs = ["backend.weir-test.invalid:8080"]  ' + MARK)
    expect_one_error(tmp_path, text,
                     "cannot resolve 'backend.weir-test.invalid' in [upstreams.app]: ")


@pytest.mark.parametrize("addr,fragment", [
    ("127.0.0.1:1 0", "invalid weight '0' in [upstreams.app]: expected 1..10000"),
    ("127.0.0.1:1 x", "invalid weight 'x' in [upstreams.app]"),
    ("127.0.0.1:1 2 3", "invalid address '127.0.0.1:1 2 3' in [upstreams.app]"),
    ("127.0.0.1", "invalid address '127.0.0.1' in [upstreams.app]: expected \"host:port\""),
    ("127.0.0.1:99999", "invalid port in '127.0.0.1:99999' in [upstreams.app]"),
])
def test_invalid_upstream_address(tmp_path, addr, fragment):
    text = base().replace('addrs = ["127.0.0.1:9"]', 'addrs = ["%s"]  %s' % (addr, MARK))
    expect_one_error(tmp_path, text, fragment)


@pytest.mark.parametrize("addr", ["localhost:8080", "127.0.0.1", "127.0.0.1:99999",
                                  "300.0.0.1:80", "[::1:80", "127.0.0.1:80x"])
def test_invalid_listen_address(tmp_path, addr):
    text = base().replace('addr = "127.0.0.1:18080"', 'addr = "%s"  %s' % (addr, MARK))
    expect_one_error(tmp_path, text,
                     "invalid listen address '%s' in [servers.main]: expected \"ip:port\"" % addr)


def test_unknown_algo(tmp_path):
    text = base(upstreams='\nalgo = "fastest"  ' + MARK)
    expect_one_error(tmp_path, text,
                     "invalid algo 'fastest' in [upstreams.app]: expected round_robin, random, "
                     "least_conn, p2c, hash:KEY or maglev:KEY")
    text = base(upstreams='\nalgo = "hash:body"  ' + MARK)
    expect_one_error(tmp_path, text,
                     "invalid algo 'hash:body' in [upstreams.app]: the hash key must be ip, uri, "
                     "path, header:NAME, cookie:NAME or query:NAME")


def test_bad_header_items(tmp_path):
    text = base(location='\nproxy_set_headers = ["X-No-Colon"]  ' + MARK)
    expect_one_error(tmp_path, text,
                     "'proxy_set_headers' in [locations.root]: 'X-No-Colon' must be "
                     "\"Name: value\"")
    text = base(location='\nresponse_remove_headers = ["Bad Name"]  ' + MARK)
    expect_one_error(tmp_path, text,
                     "'response_remove_headers' in [locations.root]: invalid header name "
                     "'Bad Name'")


def test_bad_rewrite(tmp_path):
    text = base(location='\nrewrite = "^/(x /y"  ' + MARK)
    expect_one_error(tmp_path, text, "invalid regex in 'rewrite' of [locations.root]: "
                                     "missing closing parenthesis")
    text = base(location='\nrewrite = "^/x"  ' + MARK)
    expect_one_error(tmp_path, text, "'rewrite' in [locations.root] must be "
                                     "\"REGEX REPLACEMENT\"")


def test_bad_access_log_template(tmp_path):
    text = base(server='\naccess_log = "{client_ip} {nope}"  ' + MARK)
    expect_one_error(tmp_path, text, "'access_log' in [servers.main]: ")


def test_upstream_and_echo_together(tmp_path):
    text = base().replace('upstream = "app"', 'upstream = "app"  %s\necho = true' % MARK)
    expect_one_error(tmp_path, text, "[locations.root] has both 'upstream' and echo = true")


@pytest.mark.parametrize("text,line,col,fragment", [
    ('[servers.main]\naddr = "127.0.0.1:1\nlocations = []\n', 2, 8, "unterminated string"),
    ('[servers.main]\naddr = "127.0.0.1:1"\nlocations = ["x"\n', 3, 13, "unterminated array"),
    ('[servers.main]\naddr = = 1\n', 2, 8, "expected a value"),
    ('[servers.main]\naddr = "a"\naddr = "b"\n', 3, 1, ""),
])
def test_toml_syntax_error(tmp_path, text, line, col, fragment):
    path, rc, lines, err = check(tmp_path, text)
    assert rc == 1, err
    assert len(lines) == 2, err  # a syntax error stops the load: nothing else
    assert lines[-1] == "weir: configuration %s has 1 error" % path
    m = re.match(r"(.*):(\d+):(\d+): (.+)$", lines[0])
    assert m, err
    assert m.group(1) == path and int(m.group(2)) == line, err
    assert int(m.group(3)) == col, err
    assert fragment in m.group(4), err


def test_missing_servers(tmp_path):
    text = '[basic]\nthreads = 1\n\n[upstreams.app]\naddrs = ["127.0.0.1:9"]\n'
    expect_one_error(tmp_path, text, "no [servers.NAME] section: nothing to listen on",
                     with_line=False)


def test_empty_file(tmp_path):
    expect_one_error(tmp_path, "", "no [servers.NAME] section", with_line=False)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.toml"
    r = run_weir("-t", "-c", path)
    assert r.returncode == 1
    assert r.stderr.splitlines()[0] == "%s: cannot open: No such file or directory" % path


def test_several_errors_all_reported(tmp_path):
    text = """\
[basic]
threads = -1  # <-
log_level = "loud"  # <-

[servers.main]
addr = "127.0.0.1:18080"
locations = ["root", "missing"]  # <-
max_body_size = "lots"  # <-
keepalive_timeout = "forever"  # <-

[servers.second]  # <-
addr = "127.0.0.1:18080"
locations = ["root"]

[locations.root]
path = "~(unclosed"  # <-
upstream = "ap"  # <-
proxy_add_headers = ["Oops"]  # <-
colour = "blue"  # <-

[upstreams.app]
addrs = ["127.0.0.1:9 0"]  # <-
algo = "fastest"  # <-
"""
    path, rc, lines, err = check(tmp_path, text)
    want = marked_lines(text)
    assert rc == 1, err
    errors, summary = lines[:-1], lines[-1]
    assert summary == "weir: configuration %s has %d errors" % (path, len(want)), err
    assert len(errors) == len(want), err
    got = sorted(int(re.match(r"%s:(\d+): " % re.escape(path), l).group(1)) for l in errors)
    # The duplicate address is reported at [servers.second] (or its addr line).
    dup = want[5]
    got = [dup if g == dup + 1 else g for g in got]
    assert got == sorted(want), err


def test_errors_in_several_upstreams_and_locations(tmp_path):
    sections = []
    for i in range(5):
        sections.append('[upstreams.u%d]\naddrs = ["127.0.0.1:%d"]\nkeepalive = "x"  %s\n'
                        % (i, 9000 + i, MARK))
    for i in range(5):
        sections.append('[locations.l%d]\npath = "/p%d"\nupstream = "u%d"\nweight = -%d  %s\n'
                        % (i, i, i, i + 1, MARK))
    text = ('[servers.main]\naddr = "127.0.0.1:18080"\nlocations = [%s]\n\n'
            % ", ".join('"l%d"' % i for i in range(5))) + "\n".join(sections)
    path, rc, lines, err = check(tmp_path, text)
    assert rc == 1
    got = sorted(int(l.split(":")[1]) for l in lines[:-1])
    assert got == marked_lines(text), err
    assert lines[-1].endswith("has 10 errors")


# ---------------------------------------------------------------------------
# Running with a configuration file


@pytest.mark.deadline(20)
def test_refuses_to_start_with_bad_file(tmp_path):
    port = free_port()
    text = base(port=port, upstream="nope")
    path = write(tmp_path, text)
    t0 = time.monotonic()
    r = run_weir("-c", path, timeout=15)
    assert r.returncode == 1, r.stderr
    assert time.monotonic() - t0 < 10
    assert "refers to undefined upstream 'nope'" in r.stderr
    assert "weir: configuration %s has 1 error" % path in r.stderr
    # Nothing listened meanwhile (and nothing listens now).
    assert not wait_port(port, timeout=0.2)


@pytest.mark.deadline(20)
def test_refuses_to_start_with_missing_file(tmp_path):
    r = run_weir("-c", tmp_path / "absent.toml", timeout=15)
    assert r.returncode == 1
    assert "cannot open" in r.stderr


def start_weir(start_proc, tmp_path, text, *extra, name="weir.toml", port):
    path = write(tmp_path, text, name)
    return start_proc([weir_bin(), "-c", str(path)] + [str(a) for a in extra], port, "weir")


@pytest.mark.deadline(30)
def test_pid_file_written_and_removed(tmp_path, start_proc, backend):
    b = backend()
    port = free_port()
    pid_file = tmp_path / "run" / "weir.pid"
    pid_file.parent.mkdir()
    text = base(port=port, basic='\npid_file = "%s"' % pid_file).replace(
        "127.0.0.1:9", b.addr)
    w = start_weir(start_proc, tmp_path, text, port=port)
    assert pid_file.read_text() == "%d\n" % w.pid
    assert B.get(port, "/").status == 200
    w.signal(signal.SIGTERM)
    assert w.wait(timeout=15) == 0
    problems = w.stop()
    assert not problems, problems
    assert not pid_file.exists()


@pytest.mark.deadline(20)
def test_pid_file_unwritable_refuses_to_start(tmp_path):
    port = free_port()
    text = base(port=port, basic='\npid_file = "%s"' % (tmp_path / "no" / "dir" / "w.pid"))
    path = write(tmp_path, text)
    r = run_weir("-c", path, timeout=15)
    assert r.returncode == 1
    assert "pid_file" in r.stderr and "No such file or directory" in r.stderr


@pytest.mark.deadline(30)
def test_log_level_warn_suppresses_listening_line(tmp_path, start_proc):
    port = free_port()
    text = base(port=port, basic='\nlog_level = "warn"')
    w = start_weir(start_proc, tmp_path, text, port=port)
    time.sleep(0.3)
    assert "listening on" not in w.stderr(), w.stderr()
    assert not w.stop()
    assert "listening on" not in w.stderr(), w.stderr()


@pytest.mark.deadline(30)
def test_log_level_info_shows_listening_line(tmp_path, start_proc):
    port = free_port()
    text = base(port=port, basic='\nlog_level = "info"')
    w = start_weir(start_proc, tmp_path, text, port=port)
    deadline = time.monotonic() + 5
    while "listening on" not in w.stderr() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "listening on 127.0.0.1:%d" % port in w.stderr(), w.stderr()


@pytest.mark.deadline(30)
def test_command_line_log_level_wins_over_file(tmp_path, start_proc):
    port = free_port()
    text = base(port=port, basic='\nlog_level = "warn"')
    w = start_weir(start_proc, tmp_path, text, "--log-level", "info", port=port)
    deadline = time.monotonic() + 5
    while "listening on" not in w.stderr() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "listening on 127.0.0.1:%d" % port in w.stderr(), w.stderr()


@pytest.mark.deadline(30)
def test_error_log_file(tmp_path, start_proc):
    port = free_port()
    log = tmp_path / "error.log"
    text = base(port=port, basic='\nerror_log = "%s"\nlog_level = "info"' % log)
    start_weir(start_proc, tmp_path, text, port=port)
    deadline = time.monotonic() + 5
    while (not log.exists() or "listening on" not in log.read_text()) \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "listening on 127.0.0.1:%d" % port in log.read_text()


def task_count(pid):
    return len(os.listdir("/proc/%d/task" % pid))


@pytest.mark.deadline(30)
def test_threads_honoured(tmp_path, start_proc):
    port = free_port()
    text = base(port=port).replace("threads = 1", "threads = 5")
    w = start_weir(start_proc, tmp_path, text, port=port)
    # The listening sockets are bound before the workers start: wait for them.
    deadline = time.monotonic() + 10
    while task_count(w.pid) < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert task_count(w.pid) >= 5
    deadline = time.monotonic() + 5
    while "workers)" not in w.stderr() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "(5 workers)" in w.stderr(), w.stderr()


@pytest.mark.deadline(30)
def test_command_line_threads_win_over_file(tmp_path, start_proc):
    port = free_port()
    text = base(port=port).replace("threads = 1", "threads = 2")
    w = start_weir(start_proc, tmp_path, text, "--threads", "6", port=port)
    # The listening sockets are bound before the workers start: wait for them.
    deadline = time.monotonic() + 10
    while task_count(w.pid) < 6 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert task_count(w.pid) >= 6
    deadline = time.monotonic() + 5
    while "workers)" not in w.stderr() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "(6 workers)" in w.stderr(), w.stderr()


@pytest.mark.deadline(30)
def test_listen_on_several_addresses(tmp_path, start_proc, backend):
    b = backend(B.fixed(b"multi\n"))
    p1, p2 = free_port(), free_port()
    text = base(port=p1).replace('addr = "127.0.0.1:%d"' % p1,
                                 'addr = ["127.0.0.1:%d", "127.0.0.1:%d"]' % (p1, p2))
    text = text.replace("127.0.0.1:9", b.addr)
    w = start_weir(start_proc, tmp_path, text, port=p1)
    assert wait_port(p2, w.proc)
    assert B.get(p1, "/").body == b"multi\n"
    assert B.get(p2, "/").body == b"multi\n"
