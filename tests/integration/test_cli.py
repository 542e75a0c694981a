"""The weir command line."""
import os
import re
import subprocess
import time

import pytest

import backends as B
from conftest import binary, free_port, port_busy

BAD_ARGS = [
    ["--bogus"],
    ["--threads", "1025"],
    ["--threads", "abc"],
    ["--listen", "127.0.0.1:1"],  # without --upstream
    ["--upstream", "127.0.0.1:1"],  # without --listen
    ["--listen", "127.0.0.1:1", "--upstream", "not-an-address"],
    ["--listen", "127.0.0.1:1", "--upstream", "127.0.0.1:1", "--read-timeout", "0"],
    ["--listen", "127.0.0.1:1", "--upstream", "127.0.0.1:1", "--max-body-size", "-5"],
    ["--log-level", "loud"],
    ["stray-argument"],
]


def run(args, timeout=10):
    return subprocess.run([binary("weir")] + args, capture_output=True, timeout=timeout,
                          env={"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0"})


def test_help():
    r = run(["--help"])
    assert r.returncode == 0
    assert b"Usage: weir" in r.stdout
    assert b"--upstream" in r.stdout


def test_version():
    r = run(["--version"])
    assert r.returncode == 0
    assert r.stdout.startswith(b"weir ")
    assert r.stdout.strip().split()[1][:1].isdigit()


@pytest.mark.parametrize("args", BAD_ARGS, ids=[" ".join(a if isinstance(a, list) else a.values[0])
                                                 for a in BAD_ARGS])
def test_bad_arguments_exit_2(args):
    r = run(args)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stderr.strip(), "no message on stderr"
    assert b"AddressSanitizer" not in r.stderr and b"runtime error" not in r.stderr


def test_listen_address_in_use_fails(backend):
    b = backend()
    r = run(["--listen", b.addr, "--upstream", b.addr])
    assert r.returncode != 0
    assert b"in use" in r.stderr.lower() or b"cannot" in r.stderr.lower()


def test_default_config(start_proc):
    if any(port_busy(p) for p in (6188, 6101, 6102)):
        pytest.skip("ports 6188/6101/6102 are busy")
    p = start_proc([binary("weir")], 6188, "weir-default")
    bodies = set()
    for _ in range(2):
        r = B.get(6188, "/path")
        assert r.status == 200
        bodies.add(r.body)
    assert bodies == {b"echo from 127.0.0.1:6101: GET /path\n",
                      b"echo from 127.0.0.1:6102: GET /path\n"}
    # The echo upstreams also answer directly.
    assert B.get(6101, "/direct").body == b"echo from 127.0.0.1:6101: GET /direct\n"
    assert p.proc.poll() is None


SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src")


def read_src(rel):
    with open(os.path.join(SRC, rel)) as f:
        return f.read()


def test_help_lists_every_option_and_the_signals():
    """--help shows every option main.c's getopt table accepts (long names
    and short letters) and every signal server.c handles."""
    main_c = read_src("app/main.c")
    table = main_c[main_c.index("long_opts[] = {"):]
    table = table[:table.index("};")]
    longs = re.findall(r'\{"([a-z0-9-]+)",', table)
    shorts = re.search(r'getopt_long\(argc, argv, "([^"]+)"', main_c).group(1).replace(":", "")
    signals = set(re.findall(r"sigaddset\(&mask, (SIG[A-Z0-9]+)\)", read_src("proxy/server.c")))
    assert len(longs) >= 20 and "daemon" in longs and "upgrade" in longs, longs
    assert {"SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1"} <= signals, signals
    r = run(["--help"])
    assert r.returncode == 0
    out = r.stdout.decode()
    for name in longs:
        assert re.search(r"(^|[ ,])--%s\b" % re.escape(name), out, re.M), "--%s missing" % name
    for letter in shorts:
        assert re.search(r"^\s+-%s, --" % letter, out, re.M), "-%s missing" % letter
    section = out[out.index("Signals:"):]
    for sig in signals:
        assert sig in section, sig + " missing"


def test_help_goes_to_stderr_on_a_bad_option():
    r = run(["--bogus"])
    assert r.returncode == 2 and b"--daemon" in r.stderr and b"SIGHUP" in r.stderr


def n_tasks(pid):
    return len(os.listdir("/proc/%d/task" % pid))


def settled_tasks(pid, want=None, timeout=10.0):
    """The process's thread count once it stops growing (or reaches want)."""
    deadline = time.monotonic() + timeout
    last, since = n_tasks(pid), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        n = n_tasks(pid)
        if n == want:
            return n
        if n != last:
            last, since = n, time.monotonic()
        elif want is None and time.monotonic() - since > 1.0:
            return n
    return n_tasks(pid)


def test_threads_0_means_one_worker_per_cpu(backend, start_proc, tmp_path):
    """--threads 0 is accepted like [basic] threads = 0 (one worker per CPU)
    and wins over the file's setting."""
    b = backend(B.fixed(b"ok\n"))
    cpus = os.sysconf("SC_NPROCESSORS_ONLN")
    counts = {}
    for args in (["--threads", "1"], ["--threads", "0"]):
        port = free_port()
        path = tmp_path / ("t%s.toml" % args[1])
        path.write_text('[basic]\nthreads = 1\n[servers.s]\naddr = "127.0.0.1:%d"\n'
                        'locations = ["all"]\n[locations.all]\nupstream = "u"\n'
                        '[upstreams.u]\naddrs = ["%s"]\n' % (port, b.addr))
        r = run(["-t", "-c", str(path)] + args)
        assert r.returncode == 0, r.stderr
        p = start_proc([binary("weir"), "-c", str(path)] + args, port, "weir-t" + args[1])
        assert B.get(port, "/").status == 200
        want = None if args[1] == "1" else counts["1"] + cpus - 1
        counts[args[1]] = settled_tasks(p.pid, want)
    assert counts["0"] - counts["1"] == cpus - 1, (counts, cpus)


def test_threads_0_serves_config_less(weir, backend):
    b = backend(B.fixed(b"ok\n"))
    w = weir([b], "--threads", "0", threads=None)
    assert B.get(w.port, "/").body == b"ok\n"


def test_unused_certificate_with_missing_files_fails_the_check(tmp_path):
    """weir -t reads every [certificates.NAME], also one no server uses."""
    path = tmp_path / "w.toml"
    missing = tmp_path / "nope.crt"
    path.write_text('[certificates.spare]\ncert = "%s"\nkey = "%s"\n'
                    '[servers.s]\naddr = "127.0.0.1:1"\nlocations = ["all"]\n'
                    '[locations.all]\nupstream = "u"\n[upstreams.u]\naddrs = []\n'
                    % (missing, tmp_path / "nope.key"))
    r = run(["-t", "-c", str(path)])
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    err = r.stderr.decode()
    assert ("%s:2: [certificates.spare]: TLS: cannot read certificate file %s" % (path, missing)
            in err), err
    assert "Sanitizer" not in err and "runtime error" not in err
