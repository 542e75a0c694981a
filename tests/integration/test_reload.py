"""Configuration reload (SIGHUP) and log reopening (SIGUSR1).

A reload swaps the configuration snapshot: new requests use the new one,
requests in flight finish on theirs, and a bad file or a change of
listeners leaves the running configuration in place.
"""
import os
import signal
import threading
import time

import backends as B
from conftest import binary, free_port, require_binary


def config(port, addrs, header="1", extra_server=""):
    return ('[servers.s]\naddr = "127.0.0.1:%d"\nlocations = ["all"]\n%s'
            '[locations.all]\nupstream = "u"\nresponse_set_headers = ["X-Gen: %s"]\n'
            '[upstreams.u]\naddrs = [%s]\n'
            % (port, extra_server, header, ", ".join('"%s"' % a for a in addrs)))


def start(start_proc, tmp_path, text, port):
    require_binary("weir")
    path = tmp_path / "weir.toml"
    path.write_text(text)
    return path, start_proc([binary("weir"), "-c", str(path), "--threads", "2"], port, "weir")


def wait_log(proc, text, count=1, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.stderr().count(text) >= count:
            return True
        time.sleep(0.02)
    return False


def test_reload_switches_upstreams_and_headers(backend, start_proc, tmp_path):
    a, b = backend(B.fixed(b"a\n")), backend(B.fixed(b"b\n"))
    port = free_port()
    path, w = start(start_proc, tmp_path, config(port, [a.addr], "1"), port)
    r = B.get(port)
    assert r.body == b"a\n" and r.headers.get("x-gen") == "1"
    path.write_text(config(port, [b.addr], "2"))
    w.signal(signal.SIGHUP)
    assert wait_log(w, "reloaded"), w.stderr()
    r = B.get(port)
    assert r.body == b"b\n" and r.headers.get("x-gen") == "2"


def test_bad_reload_keeps_the_running_config(backend, start_proc, tmp_path):
    a = backend(B.fixed(b"a\n"))
    port = free_port()
    path, w = start(start_proc, tmp_path, config(port, [a.addr]), port)
    path.write_text(config(port, [a.addr]) + "[upstreams.u2]\nadrs = []\n")
    w.signal(signal.SIGHUP)
    assert wait_log(w, "reload failed"), w.stderr()
    assert "unknown key 'adrs' in [upstreams.u2]; did you mean 'addrs'?" in w.stderr()
    r = B.get(port)
    assert r.status == 200 and r.body == b"a\n"


def refused(port, timeout=5.0):
    """True once connections to port are refused (listener closed)."""
    import socket
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except ConnectionRefusedError:
            return True
        time.sleep(0.05)
    return False


def test_reload_moves_a_listener(backend, start_proc, tmp_path):
    a = backend(B.fixed(b"a\n"))
    port, other = free_port(), free_port()
    path, w = start(start_proc, tmp_path, config(port, [a.addr]), port)
    # A connection accepted before the reload finishes its exchange after it.
    import socket
    early = socket.create_connection(("127.0.0.1", port), timeout=5)
    path.write_text(config(other, [a.addr], "2"))
    w.signal(signal.SIGHUP)
    assert wait_log(w, "reloaded"), w.stderr()
    r = B.get(other)
    assert r.status == 200 and r.body == b"a\n" and r.headers.get("x-gen") == "2"
    assert refused(port), "the old address still accepts"
    early.sendall(b"GET /early HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    resp = B.read_response(B.Reader(early))
    assert resp.status == 200
    early.close()


def test_reload_adds_and_removes_servers(backend, start_proc, tmp_path):
    a, b = backend(B.fixed(b"a\n")), backend(B.fixed(b"b\n"))
    port, port2 = free_port(), free_port()
    path, w = start(start_proc, tmp_path, config(port, [a.addr]), port)
    two = config(port, [a.addr]) + (
        '[servers.t]\naddr = "127.0.0.1:%d"\nlocations = ["second"]\n'
        '[locations.second]\nupstream = "v"\n[upstreams.v]\naddrs = ["%s"]\n' % (port2, b.addr))
    path.write_text(two)
    w.signal(signal.SIGHUP)
    assert wait_log(w, "reloaded"), w.stderr()
    assert B.get(port2).body == b"b\n"
    assert B.get(port).body == b"a\n"
    path.write_text(two.replace("[servers.s]", "[servers.renamed]"))
    w.signal(signal.SIGHUP)
    assert wait_log(w, "reloaded", count=2), w.stderr()
    # the same address under another name: served by the new one
    assert B.get(port).body == b"a\n" and B.get(port2).body == b"b\n"
    path.write_text(config(port, [a.addr]))
    w.signal(signal.SIGHUP)
    assert wait_log(w, "reloaded", count=3), w.stderr()
    assert refused(port2)
    assert B.get(port).body == b"a\n"


def test_reload_to_a_busy_address_keeps_everything(backend, start_proc, tmp_path):
    import socket
    a = backend(B.fixed(b"a\n"))
    port = free_port()
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    taken = busy.getsockname()[1]
    try:
        path, w = start(start_proc, tmp_path, config(port, [a.addr], "1"), port)
        path.write_text(config(port, [a.addr], "2") + (
            '[servers.t]\naddr = "127.0.0.1:%d"\nlocations = ["all"]\n' % taken))
        w.signal(signal.SIGHUP)
        assert wait_log(w, "reload failed"), w.stderr()
        r = B.get(port)
        assert r.status == 200 and r.headers.get("x-gen") == "1"
    finally:
        busy.close()


def test_access_log_move_is_refused(backend, start_proc, tmp_path):
    a = backend(B.fixed(b"a\n"))
    port = free_port()
    path, w = start(start_proc, tmp_path, config(port, [a.addr]), port)
    path.write_text(config(port, [a.addr], extra_server='access_log = "main"\n'))
    w.signal(signal.SIGHUP)
    assert wait_log(w, "reload of"), w.stderr()
    assert "access_log" in w.stderr()
    assert B.get(port).status == 200


def test_twenty_reloads_under_load_lose_nothing(backend, start_proc, tmp_path):
    a, b = backend(B.fixed(b"a\n")), backend(B.fixed(b"b\n"))
    port = free_port()
    path, w = start(start_proc, tmp_path, config(port, [a.addr]), port)
    results, stop = [], threading.Event()

    def client():
        # A bounded stream of requests on fresh and kept-alive connections.
        for i in range(4000):
            if stop.is_set():
                break
            try:
                r = B.get(port, "/n%d" % i, close=(i % 2 == 0))
                results.append(r.status)
            except Exception as e:  # any failure counts
                results.append(repr(e))

    threads = [threading.Thread(target=client) for _ in range(3)]
    for t in threads:
        t.start()
    for i in range(20):
        path.write_text(config(port, [a.addr] if i % 2 else [b.addr], str(i)))
        w.signal(signal.SIGHUP)
        assert wait_log(w, "reloaded", count=i + 1), w.stderr()
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(30)
    failed = [r for r in results if r != 200]
    assert results and not failed, failed[:5]


def renamed(port, addrs, name):
    return config(port, addrs).replace("[servers.s]", "[servers.%s]" % name)


def test_renames_under_load_lose_nothing(backend, start_proc, tmp_path):
    """A server renamed on the same address keeps its sockets: connections
    queued in the backlog are not reset, and kept-alive connections
    accepted under the old name go on under the new one."""
    import http.client
    a = backend(B.fixed(b"a\n"))
    port = free_port()
    path, w = start(start_proc, tmp_path, config(port, [a.addr]), port)
    results, stop = [], threading.Event()

    def fresh():
        while not stop.is_set():
            try:
                results.append(B.get(port, "/f").status)
            except Exception as e:  # any failure counts
                results.append(repr(e))

    def kept():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while not stop.is_set():
            try:
                conn.request("GET", "/k")
                r = conn.getresponse()
                r.read()
                results.append(r.status)
                if r.getheader("connection", "").lower() == "close":
                    conn.close()
            except Exception as e:
                results.append(repr(e))
                conn.close()
        conn.close()

    threads = [threading.Thread(target=f) for f in (fresh, fresh, kept, kept)]
    for t in threads:
        t.start()
    import socket
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    taken = '[servers.t]\naddr = "127.0.0.1:%d"\nlocations = ["all"]\n' % busy.getsockname()[1]
    try:
        done = 0
        for i in range(24):
            text = renamed(port, [a.addr], "r%d" % i)
            if i % 6 == 5:  # the rename with a busy address: undone, nothing lost
                path.write_text(text + taken)
                w.signal(signal.SIGHUP)
                assert wait_log(w, "reload failed", count=i // 6 + 1), w.stderr()
            else:
                path.write_text(text)
                w.signal(signal.SIGHUP)
                done += 1
                assert wait_log(w, "reloaded", count=done), w.stderr()
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        busy.close()
    failed = [r for r in results if r != 200]
    assert len(results) > 100 and not failed, (len(failed), failed[:5])
    assert "stopped listening" not in w.stderr()


def test_two_servers_swap_addresses_under_load(backend, start_proc, tmp_path):
    """Servers that trade addresses keep the sockets: each address serves
    the settings of the server that now has it, and nothing fails."""
    a, b = backend(B.fixed(b"a\n")), backend(B.fixed(b"b\n"))
    p1, p2 = free_port(), free_port()

    def two(first, second):
        return ('[servers.x]\naddr = "127.0.0.1:%d"\nlocations = ["la"]\n'
                '[servers.y]\naddr = "127.0.0.1:%d"\nlocations = ["lb"]\n'
                '[locations.la]\nupstream = "ua"\n[locations.lb]\nupstream = "ub"\n'
                '[upstreams.ua]\naddrs = ["%s"]\n[upstreams.ub]\naddrs = ["%s"]\n'
                % (first, second, a.addr, b.addr))
    path, w = start(start_proc, tmp_path, two(p1, p2), p1)
    results, stop = [], threading.Event()

    def client(port):
        while not stop.is_set():
            try:
                results.append(B.get(port).status)
            except Exception as e:  # any failure counts
                results.append(repr(e))

    threads = [threading.Thread(target=client, args=(p,)) for p in (p1, p2, p1, p2)]
    for t in threads:
        t.start()
    try:
        for i in range(10):
            path.write_text(two(p2, p1) if i % 2 == 0 else two(p1, p2))
            w.signal(signal.SIGHUP)
            assert wait_log(w, "reloaded", count=i + 1), w.stderr()
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    failed = [r for r in results if r != 200]
    assert len(results) > 100 and not failed, (len(failed), failed[:5])
    # ten swaps: back where it started
    assert B.get(p1).body == b"a\n" and B.get(p2).body == b"b\n"
    path.write_text(two(p2, p1))
    w.signal(signal.SIGHUP)
    assert wait_log(w, "reloaded", count=11), w.stderr()
    assert B.get(p1).body == b"b\n" and B.get(p2).body == b"a\n"
    assert "stopped listening" not in w.stderr()


def test_sigusr1_reopens_the_access_log(backend, start_proc, tmp_path):
    a = backend(B.fixed(b"a\n"))
    port = free_port()
    log = tmp_path / "access.log"
    extra = 'access_log = "{method} {uri} {status}"\naccess_log_file = "%s"\n' % log
    path, w = start(start_proc, tmp_path, config(port, [a.addr], extra_server=extra), port)
    assert B.get(port, "/before").status == 200
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and "/before" not in (log.read_text() if log.exists() else ""):
        time.sleep(0.02)
    os.rename(log, tmp_path / "access.log.1")  # what logrotate does
    w.signal(signal.SIGUSR1)
    assert wait_log(w, "reopening"), w.stderr()
    time.sleep(0.1)
    assert B.get(port, "/after").status == 200
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not (log.exists() and "/after" in log.read_text()):
        time.sleep(0.02)
    assert "GET /after 200" in log.read_text()
    assert "/after" not in (tmp_path / "access.log.1").read_text()


def test_the_65th_server_name_fails_the_reload_and_keeps_serving(backend, start_proc, tmp_path):
    a = backend(B.fixed(b"a\n"))
    port = free_port()
    path, w = start(start_proc, tmp_path, config(port, [a.addr]), port)
    for i in range(63):  # s and r0..r62: 64 names
        path.write_text(renamed(port, [a.addr], "r%d" % i))
        w.signal(signal.SIGHUP)
        assert wait_log(w, "reloaded", count=i + 1), w.stderr()
    path.write_text(renamed(port, [a.addr], "one_too_many"))
    w.signal(signal.SIGHUP)
    assert wait_log(w, "reload failed"), w.stderr()
    assert "[servers.one_too_many]: this process has had 64 server names" in w.stderr()
    r = B.get(port)
    assert r.status == 200 and r.body == b"a\n"
    # a name it has had is still fine
    path.write_text(config(port, [a.addr]))
    w.signal(signal.SIGHUP)
    assert wait_log(w, "reloaded", count=64), w.stderr()
    assert B.get(port).status == 200
