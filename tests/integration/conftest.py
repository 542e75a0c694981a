"""Fixtures for the weir integration suite.

WEIR_BUILD points at a build tree (default: build-test/ of the repo); the
programs are $WEIR_BUILD/bin/{weir,round_robin,weir-test-app}.

Every test has a wall-clock limit (default 60 s, @pytest.mark.deadline(S)
to change it), enforced with SIGALRM since pytest-timeout is not assumed.
"""
import os
import resource
import signal
import socket
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import backends  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.path.abspath(os.environ.get("WEIR_BUILD", os.path.join(REPO, "build-test")))
BIN = os.path.join(BUILD, "bin")
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer",
                   "WARNING: ThreadSanitizer")
ASAN_OPTIONS = "detect_leaks=1:abort_on_error=0"
DEFAULT_DEADLINE = 60


def binary(name):
    return os.path.join(BIN, name)


def require_binary(name):
    path = binary(name)
    if not os.access(path, os.X_OK):
        pytest.skip("%s not built (looked for %s)" % (name, path))
    return path


def pytest_configure(config):
    config.addinivalue_line("markers", "deadline(seconds): wall-clock limit for one test")
    # 1,000 concurrent clients need ~2,000+ descriptors here and in weir.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 16384 if hard == resource.RLIM_INFINITY else min(hard, 16384)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


class DeadlineExceeded(Exception):
    pass


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    mark = item.get_closest_marker("deadline")
    seconds = mark.args[0] if mark else DEFAULT_DEADLINE

    def on_alarm(signum, frame):
        raise DeadlineExceeded("test exceeded its %s s deadline" % seconds)

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ---------------------------------------------------------------------------
# Ports


# Ports handed out, oldest first. A run hands out more than a worker's
# range holds once backends take theirs from it too: the oldest are given
# again, a thousand tests later, when nothing can still be talking to them.
_given_ports = {}
_GIVEN_KEEP = 3500


def _port_range():
    """This process's own port range, below the kernel's ephemeral ports
    (32768 and up): a port handed out here is never taken meanwhile by
    another pytest-xdist worker, nor as the source port of an outgoing
    connection."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    n = int(worker[2:]) if worker[2:].isdigit() else 0
    lo = 10000 + (n % 4) * 5000
    return lo, lo + 5000


def free_port(udp=False):
    """A loopback port that was free a moment ago (for UDP too when asked),
    not one of the last few thousand this worker handed out."""
    import random
    lo, hi = _port_range()
    for _ in range(1000):
        port = random.randrange(lo, hi)
        if port in _given_ports:
            continue
        kinds = [socket.SOCK_STREAM] + ([socket.SOCK_DGRAM] if udp else [])
        socks = []
        try:
            for k in kinds:
                s = socket.socket(socket.AF_INET, k)
                socks.append(s)
                s.bind((backends.LOOPBACK, port))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        _given_ports[port] = True
        if len(_given_ports) > _GIVEN_KEEP:
            for old in list(_given_ports)[:1000]:
                del _given_ports[old]
        return port
    raise RuntimeError("no free port in %d-%d" % (lo, hi))


def closed_port():
    """A loopback port with nobody listening (connect -> refused)."""
    return free_port()


def port_busy(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not busy
    try:
        s.bind((backends.LOOPBACK, port))
        return False
    except OSError:
        return True
    finally:
        s.close()


def wait_for(pred, timeout=10.0, step=0.05):
    """pred() until it is truthy (its value) or timeout s pass (its last)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


def wait_port(port, proc=None, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            socket.create_connection((backends.LOOPBACK, port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.02)
    return False


@pytest.fixture
def port():
    return free_port()


# ---------------------------------------------------------------------------
# Backends


@pytest.fixture
def backend():
    """Factory: backend(handler=None, store_body=True) -> backends.Backend."""
    made = []

    def make(handler=None, **kw):
        b = backends.Backend(handler, **kw)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()
    for b in made:
        assert not b.errors, "backend handler errors: %r" % b.errors


# ---------------------------------------------------------------------------
# Processes under test


class Proc:
    """A program under test: stdout/stderr captured to files."""

    def __init__(self, argv, port, tmp_path, name, env=None, stdout=True):
        self.argv = argv
        self.port = port
        self.name = name
        self.stderr_path = tmp_path / ("%s.%d.stderr" % (name, port))
        self.stdout_path = tmp_path / ("%s.%d.stdout" % (name, port))
        full_env = dict(os.environ)
        full_env["ASAN_OPTIONS"] = ASAN_OPTIONS
        full_env["UBSAN_OPTIONS"] = "print_stacktrace=1"
        if env:
            full_env.update(env)
        self._err = open(self.stderr_path, "wb")
        self._out = open(self.stdout_path, "wb")
        self.proc = subprocess.Popen(argv, stdout=self._out, stderr=self._err, env=full_env,
                                     stdin=subprocess.DEVNULL)
        self.pid = self.proc.pid
        self.checked = False

    def stderr(self):
        return self.stderr_path.read_text(errors="replace")

    def stdout(self):
        return self.stdout_path.read_text(errors="replace")

    def rss_kib(self):
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout):
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout=15.0):
        """SIGTERM (if still running), wait, and return a list of problems."""
        problems = []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
            problems.append("%s did not exit within %.0f s of SIGTERM" % (self.name, timeout))
        self._err.close()
        self._out.close()
        rc = self.proc.returncode
        if rc is not None and rc < 0 and not problems:
            problems.append("%s died of signal %d" % (self.name, -rc))
        elif rc and not problems:
            problems.append("%s exited with status %d" % (self.name, rc))
        err = self.stderr()
        for mark in SANITIZER_MARKS:
            if mark in err:
                problems.append("%s stderr contains %r" % (self.name, mark))
        self.checked = True
        return problems

    def describe(self):
        err = self.stderr()
        return "%s\n--- stderr (%s) ---\n%s" % (" ".join(self.argv), self.stderr_path,
                                                 err[-6000:])


class Weir(Proc):
    pass


@pytest.fixture
def start_proc(tmp_path):
    """Factory: start_proc(argv, port, name) -> Proc, started and listening."""
    procs = []

    def start(argv, port, name, env=None, wait=True):
        p = Proc(argv, port, tmp_path, name, env=env)
        procs.append(p)
        if wait and not wait_port(port, p.proc):
            problems = p.stop(timeout=5)
            pytest.fail("%s did not start listening on %d (%s)\n%s"
                        % (name, port, problems, p.describe()))
        return p

    yield start
    failures = []
    for p in procs:
        if p.checked:
            continue
        problems = p.stop()
        if problems:
            failures.append("; ".join(problems) + "\n" + p.describe())
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)


@pytest.fixture
def weir_toml(tmp_path, start_proc):
    """Factory: weir_toml(text, threads=2, **addrs) -> Proc running `weir -c`
    on text, where @PORT@ is a free listen port, @TMP@ the test's tmp_path
    and @NAME@ the address of addrs[NAME] (a Backend or "ip:port")."""
    count = [0]

    def start(text, threads=2, **addrs):
        require_binary("weir")
        port = free_port()
        text = text.replace("@PORT@", str(port)).replace("@TMP@", str(tmp_path))
        for name, b in addrs.items():
            text = text.replace("@%s@" % name, b if isinstance(b, str) else b.addr)
        count[0] += 1
        path = tmp_path / ("weir-%d.toml" % count[0])
        path.write_text(text)
        argv = [binary("weir"), "-c", str(path), "--threads", str(threads)]
        return start_proc(argv, port, "weir")

    return start


@pytest.fixture
def weir(start_proc):
    """Factory: weir(upstreams, *args, threads=2, port=None) -> Proc.

    upstreams: backends.Backend objects or "ip:port" strings. The process is
    stopped with SIGTERM at teardown and the test fails if it crashed,
    exited non-zero or a sanitizer reported anything.
    """

    def start(upstreams, *args, threads=2, port=None, env=None, wait=True):
        port = port or free_port()
        argv = [binary("weir"), "--listen", "127.0.0.1:%d" % port]
        for u in upstreams:
            argv += ["--upstream", u if isinstance(u, str) else u.addr]
        if threads:
            argv += ["--threads", str(threads)]
        argv += [str(a) for a in args]
        return start_proc(argv, port, "weir", env=env, wait=wait)

    return start


def check_stopped(p):
    """For tests that stop the process themselves: sanitizer + status check."""
    problems = p.stop(timeout=15)
    assert not problems, "; ".join(problems) + "\n" + p.describe()
