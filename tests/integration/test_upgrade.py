"""Zero-downtime binary upgrade: weir -u takes the listening sockets over
the upgrade socket while clients keep sending; nothing is refused or reset."""
import os
import signal
import subprocess
import threading
import time

import backends as B
from conftest import binary, free_port, require_binary


def config(port, sock, backend, pid_file=None):
    basic = 'upgrade_sock = "%s"\ngrace_period = "5s"\n' % sock
    if pid_file:
        basic += 'pid_file = "%s"\n' % pid_file
    return ('[basic]\n%s[servers.s]\naddr = "127.0.0.1:%d"\nlocations = ["all"]\n'
            '[locations.all]\nupstream = "u"\n[upstreams.u]\naddrs = ["%s"]\n'
            % (basic, port, backend))


def test_upgrade_under_load_loses_nothing(backend, start_proc, tmp_path):
    require_binary("weir")
    b = backend(B.fixed(b"ok\n"))
    port = free_port()
    sock = tmp_path / "upgrade.sock"
    cfg = tmp_path / "weir.toml"
    cfg.write_text(config(port, sock, b.addr))
    old = start_proc([binary("weir"), "-c", str(cfg), "--threads", "2"], port, "weir-old")
    deadline = time.monotonic() + 5
    while not sock.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sock.exists(), old.stderr()

    results, stop = [], threading.Event()

    def client():
        for i in range(3000):
            if stop.is_set():
                break
            try:
                r = B.get(port, "/u%d" % i, close=(i % 3 != 0))
                results.append(r.status)
            except Exception as e:
                results.append(repr(e))

    threads = [threading.Thread(target=client) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    new = start_proc([binary("weir"), "-u", "-c", str(cfg), "--threads", "2"], port,
                     "weir-new", wait=False)
    # The old process hands over, drains and exits 0 within its grace period.
    rc = old.wait(timeout=15)
    old.checked = True
    assert rc == 0, old.stderr()
    assert "handed" in old.stderr() and "draining" in old.stderr(), old.stderr()
    time.sleep(0.3)
    stop.set()
    for t in threads:
        t.join(30)
    failed = [r for r in results if r != 200]
    assert len(results) > 100 and not failed, (len(results), failed[:5])
    assert "took over" in new.stderr(), new.stderr()
    assert B.get(port, "/after").status == 200
    # The new process offers the next upgrade on the same socket.
    assert sock.exists()


def test_upgrade_without_a_running_weir_fails(tmp_path):
    require_binary("weir")
    port = free_port()
    cfg = tmp_path / "weir.toml"
    cfg.write_text(config(port, tmp_path / "nobody.sock", "127.0.0.1:1"))
    out = subprocess.run([binary("weir"), "-u", "-c", str(cfg)], capture_output=True, text=True,
                         timeout=20)
    assert out.returncode == 1
    assert "no running weir answered" in out.stderr


def test_upgrade_needs_upgrade_sock(tmp_path):
    require_binary("weir")
    cfg = tmp_path / "weir.toml"
    cfg.write_text('[servers.s]\naddr = "127.0.0.1:%d"\nlocations = []\n' % free_port())
    out = subprocess.run([binary("weir"), "-u", "-c", str(cfg)], capture_output=True, text=True,
                         timeout=20)
    assert out.returncode != 0 and "upgrade_sock" in out.stderr


def test_daemon_mode_writes_pid_file_and_stops(backend, tmp_path):
    require_binary("weir")
    b = backend()
    port = free_port()
    pid_file = tmp_path / "weir.pid"
    cfg = tmp_path / "weir.toml"
    cfg.write_text(config(port, tmp_path / "u.sock", b.addr, pid_file=pid_file)
                   .replace("[basic]\n", '[basic]\nerror_log = "%s"\n' % (tmp_path / "err.log")))
    out = subprocess.run([binary("weir"), "-d", "-c", str(cfg)], capture_output=True, text=True,
                         timeout=20)
    assert out.returncode == 0, out.stderr
    deadline = time.monotonic() + 5
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    pid = int(pid_file.read_text())
    try:
        assert B.get(port).status == 200
    finally:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        raise AssertionError("daemon did not stop")
    assert not pid_file.exists()
    log = (tmp_path / "err.log").read_text()
    assert "listening on" in log
    assert "Sanitizer" not in log and "runtime error" not in log, log
