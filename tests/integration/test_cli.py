"""The weir command line."""
import subprocess

import pytest

import backends as B
from conftest import binary, port_busy

BAD_ARGS = [
    ["--bogus"],
    ["--threads", "0"],
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
