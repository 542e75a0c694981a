"""protocol = "resp" servers (issue 19): a consistent-hash ring answering
over the Redis protocol. GET key -> "ip:port" of the backend weir's own
hash balancing sends that key to; MGET, INFO, the built-in commands;
redis-cli, redis-py and a raw client; pipelining and back-pressure.

Attacks first: malformed and oversized frames, a byte-at-a-time client,
a client that pipelines without reading, a member going down and coming
back (only its keys move, about 1/N), the admin API, a reload and DNS
discovery changing the ring under open connections, a stop with clients
connected.
"""
import http.client
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

import backends as B
import resputil as R
from conftest import binary, free_port, require_binary, wait_port
from test_admin import Admin
from test_discovery import dnsmasq  # noqa: F401 (fixture)
from test_metrics import scrape, value

redis = pytest.importorskip("redis")

TOKEN = "ring-token"
KEYS = ["/k/%d" % i for i in range(10000)]


def config(port, addrs, aport=None, algo="hash:uri", up_extra="", srv_extra="", http=None):
    text = ""
    if aport:
        text += '[admin]\naddr = "127.0.0.1:%d"\ntoken = "%s"\n\n' % (aport, TOKEN)
    text += ('[servers.ring]\naddr = "127.0.0.1:%d"\nprotocol = "resp"\nupstream = "u"\n%s\n'
             '[upstreams.u]\naddrs = [%s]\nalgo = "%s"\n%s\n'
             % (port, srv_extra, ", ".join('"%s"' % a for a in addrs), algo, up_extra))
    if http:
        text += ('[servers.web]\naddr = "127.0.0.1:%d"\nlocations = ["all"]\n\n'
                 '[locations.all]\nupstream = "u"\n' % http)
    return text


def start(start_proc, tmp_path, text, port, name="weir.toml", threads=2):
    require_binary("weir")
    path = tmp_path / name
    path.write_text(text)
    w = start_proc([binary("weir"), "-c", str(path), "--threads", str(threads)], port, "weir")
    return w, path


def ring_of(client, keys=KEYS):
    """{key: owner} over MGETs of 1000 keys."""
    out = {}
    for i in range(0, len(keys), 1000):
        chunk = keys[i:i + 1000]
        for k, v in zip(chunk, client.mget(chunk)):
            out[k] = v.decode() if v is not None else None
    return out


def info(client):
    """INFO ring as text fields (redis-py would parse the member lines)."""
    r = R.Raw(client.connection_pool.connection_kwargs["port"])
    try:
        text = r.command("INFO", "ring").decode()
    finally:
        r.close()
    return dict(line.split(":", 1) for line in text.split("\r\n") if ":" in line)


def wait_for(pred, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError("timed out waiting for %s (last: %r)" % (what, last))


def addrs_of(n):
    """n distinct member addresses (nothing needs to listen there)."""
    return ["127.0.0.%d:%d" % (2 + i, 7000 + i) for i in range(n)]


class Listener:
    """A TCP port that accepts (and closes) connections: a member for
    tcp:// health checks, which can go down and come back on its port."""

    def __init__(self, port=0):
        self.port = port
        self.sock = None
        self.up()

    def up(self):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self.port = s.getsockname()[1]
        self.sock = s
        self.addr = "127.0.0.1:%d" % self.port
        threading.Thread(target=self._run, args=(s,), daemon=True).start()

    def _run(self, s):
        while True:
            try:
                c, _ = s.accept()
            except OSError:
                return
            c.close()

    def down(self):
        self.sock.close()
        self.sock = None


# ---- the commands ----


def test_commands_with_redis_cli(start_proc, tmp_path):
    port = free_port()
    addrs = addrs_of(3)
    start(start_proc, tmp_path, config(port, addrs), port)

    def cli(*args, extra=()):
        r = subprocess.run(["redis-cli", "-p", str(port)] + list(extra) + list(args),
                           capture_output=True, timeout=30)
        return r.stdout.decode().strip()

    assert cli("PING") == "PONG"
    assert cli("ping", "hi") == "hi"
    assert cli("ECHO", "a b") == "a b"
    assert cli("SELECT", "3") == "OK"
    assert "out of range" in cli("SELECT", "16")
    assert "not an integer" in cli("SELECT", "x")
    owner = cli("GET", "/a")
    assert owner in addrs
    assert cli("MGET", "/a", "/b", "/c").split("\n")[0] == owner
    assert cli("GET") == "ERR wrong number of arguments for 'get' command"
    assert cli("FLUSHALL", "x") == \
        "ERR unknown command 'FLUSHALL', with args beginning with: 'x'"
    assert int(cli("COMMAND", "COUNT")) >= 12
    assert "get" in cli("COMMAND", "LIST").split("\n")
    assert cli("QUIT") == "OK"
    text = cli("INFO")
    for want in ("# Server", "weir_version:", "config_revision:1", "# Ring", "upstream:u",
                 "algorithm:ketama", "members:3", "usable:3", "connected_clients:1"):
        assert want in text, (want, text)
    assert "# Server" not in cli("INFO", "ring")
    assert cli("INFO", "nosuchsection") == ""
    # RESP3 (redis-cli -3 sends HELLO 3 first)
    hello = cli("HELLO", "3", extra=["-3"])
    assert "proto" in hello and "3" in hello
    assert cli("GET", "/a", extra=["-3"]) == owner
    # Inline commands as a person types them.
    r = subprocess.run(["redis-cli", "-p", str(port)], input=b'GET "/a"\nPING\n',
                       capture_output=True, timeout=30)
    assert r.stdout.decode().split() == [owner, "PONG"]


def test_redis_py_and_weirs_own_balancing_agree(backend, start_proc, tmp_path):
    """The ring's answer is the backend weir's hash:uri balancing uses."""
    bs = [backend(B.fixed(("b%d" % i).encode())) for i in range(4)]
    name = {b.addr: "b%d" % i for i, b in enumerate(bs)}
    port, hport = free_port(), free_port()
    start(start_proc, tmp_path, config(port, [b.addr for b in bs], http=hport), port)
    assert wait_port(hport)
    c = redis.Redis(port=port)
    keys = ["/item/%d?x=%d" % (i, i * 7) for i in range(200)]
    ring = ring_of(c, keys)
    conn = http.client.HTTPConnection("127.0.0.1", hport, timeout=10)
    for k in keys:
        conn.request("GET", k)
        r = conn.getresponse()
        assert r.read().decode() == name[ring[k]], k
    assert len(set(ring.values())) == 4
    # The same answer on every connection and every worker.
    for _ in range(5):
        assert ring_of(redis.Redis(port=port), keys) == ring
    # redis-py's own view.
    assert c.ping() is True
    assert c.echo("x") == b"x"
    assert c.info("ring")["members"] == 4


def test_resp3_replies(start_proc, tmp_path):
    port = free_port()
    start(start_proc, tmp_path, config(port, addrs_of(2), up_extra='health_check = "tcp://"\n'
                                       'health_check_interval = "100ms"\n'), port)
    r = R.Raw(port)
    h = r.command("HELLO", "3", "SETNAME", "me")
    assert h[b"proto"] == 3 and h[b"server"] == b"weir" and h[b"mode"] == b"standalone"
    assert r.command("CLIENT", "GETNAME") == b"me"
    assert isinstance(r.command("CLIENT", "ID"), int)
    assert r.command("CONFIG", "GET", "save") == {}
    assert r.command("HELLO", "4").startswith("NOPROTO")
    # Nothing listens at the members: once checked, every key is nil (_).
    wait_for(lambda: r.command("GET", "/x") is None, what="nil owner")
    r.send(b"GET /x\r\n")
    assert r.buf == b"" and r._line() == b"_"
    assert r.command("RESET") == b"RESET"
    assert r.command("CLIENT", "GETNAME") is None
    r.send(b"GET /x\r\n")
    assert r._line() == b"$-1"


# ---- hostile input ----


BAD_FRAMES = [
    (b"*x\r\n", "invalid multibulk length"),
    (b"*2\r\n$3\r\nGET\r\n:1\r\n", "expected '$'"),
    (b"*1\r\n$-5\r\n", "invalid bulk length"),
    (b"*1\r\n$4\r\nPINGxx", "CRLF"),
    (b"*2\r\n$3\r\nGET\r\n$999999999\r\n", "too long"),
    (b"*99999999\r\n", "too many arguments"),
    (b'GET "unbalanced\r\n', "unbalanced quotes"),
]


@pytest.mark.parametrize("frame,why", BAD_FRAMES)
def test_malformed_frames_get_an_error_and_a_close(frame, why, start_proc, tmp_path):
    port = free_port()
    w, _ = start(start_proc, tmp_path, config(port, addrs_of(2)), port)
    r = R.Raw(port)
    r.send(b"PING\r\n" + frame + b"PING\r\n")
    data, eof = r.read_all()
    assert data.startswith(b"+PONG\r\n-ERR Protocol error"), data
    assert why.lower() in data.decode().lower(), data
    assert data.count(b"\r\n") == 2, data  # no answer to what came after
    assert eof is True
    assert "Protocol error" in w.stderr()
    assert redis.Redis(port=port).ping()


def test_limits(start_proc, tmp_path):
    port = free_port()
    start(start_proc, tmp_path,
          config(port, addrs_of(2), srv_extra='max_command_size = "4KB"\n'), port)
    # An argument larger than the command may be.
    r = R.Raw(port)
    r.send(R.encode("GET", "k" * 5000))
    data, eof = r.read_all()
    assert data.startswith(b"-ERR Protocol error") and eof is True, data
    # Many small arguments past the size.
    r = R.Raw(port)
    r.send(R.encode("MGET", *["key%d" % i for i in range(1000)]))
    data, eof = r.read_all()
    assert data.startswith(b"-ERR Protocol error") and eof is True, data
    # More arguments than max_args (1024), each tiny.
    r = R.Raw(port)
    r.send(b"*2000\r\n")
    data, eof = r.read_all()
    assert data.startswith(b"-ERR Protocol error") and eof is True, data
    # A line without its end.
    r = R.Raw(port)
    r.send(b"G" * 8000)
    data, eof = r.read_all()
    assert data.startswith(b"-ERR Protocol error") and eof is True, data
    # Under the limits all is well.
    c = redis.Redis(port=port)
    assert len(c.mget(["k%d" % i for i in range(300)])) == 300


def test_byte_at_a_time_and_empty_commands(start_proc, tmp_path):
    port = free_port()
    start(start_proc, tmp_path, config(port, addrs_of(3)), port)
    r = R.Raw(port)
    want = redis.Redis(port=port).get("/slow").decode()
    for ch in R.encode("GET", "/slow") + b"\r\n\r\n*0\r\n" + b"PING\r\n":
        r.send(bytes([ch]))
        time.sleep(0.001)
    assert r.reply().decode() == want
    assert r.reply() == b"PONG"


def test_pipelining_and_a_client_that_does_not_read(start_proc, tmp_path):
    port = free_port()
    addrs = addrs_of(5)
    start(start_proc, tmp_path, config(port, addrs), port)
    want = ring_of(redis.Redis(port=port), KEYS[:2000])
    # 200,000 commands in one stream, written while nothing is read: weir
    # stops reading once 1 MB of replies wait, then goes on as they are
    # read; every reply comes, in order.
    r = R.Raw(port, timeout=60)
    n = 200000
    stream = b"".join(R.encode("GET", KEYS[i % 2000]) for i in range(n))
    sender = threading.Thread(target=r.send, args=(stream,))
    sender.start()
    time.sleep(1.0)
    for i in range(n):
        assert r.reply().decode() == want[KEYS[i % 2000]]
    sender.join(30)
    assert not sender.is_alive()
    # redis-py's pipeline.
    p = redis.Redis(port=port).pipeline(transaction=False)
    for k in KEYS[:5000]:
        p.get(k)
    got = p.execute()
    assert [g.decode() for g in got[:2000]] == [want[k] for k in KEYS[:2000]]


def test_half_close_gets_every_reply(start_proc, tmp_path):
    port = free_port()
    start(start_proc, tmp_path, config(port, addrs_of(3)), port)
    r = R.Raw(port)
    r.send(b"".join(R.encode("GET", k) for k in KEYS[:3000]))
    r.sock.shutdown(socket.SHUT_WR)
    data, eof = r.read_all(10)
    assert eof is True
    assert data.count(b"$14\r\n") == 3000, len(data)


# ---- membership ----


def moved(before, after):
    return {k for k in before if before[k] != after[k]}


def test_a_member_down_moves_only_its_keys(start_proc, tmp_path):
    ls = [Listener() for _ in range(4)]
    port, aport = free_port(), free_port()
    up = ('health_check = "tcp://"\nhealth_check_interval = "100ms"\n'
          'health_check_rise = 1\nhealth_check_fall = 1\n')
    start(start_proc, tmp_path, config(port, [l.addr for l in ls], aport=aport, up_extra=up), port)
    c = redis.Redis(port=port)
    before = ring_of(c)
    assert set(before.values()) == {l.addr for l in ls}
    changes = int(info(c)["changes"])
    victim = ls[2]
    victim.down()
    wait_for(lambda: info(c)["usable"] == "3", what="3 usable")
    i = info(c)
    assert int(i["changes"]) > changes and int(i["last_change_ago_seconds"]) <= 5
    assert "addr=%s,weight=1,healthy=0" % victim.addr in "\n".join(
        v for k, v in i.items() if k.startswith("member"))
    after = ring_of(c)
    m = moved(before, after)
    assert m == {k for k in before if before[k] == victim.addr}
    assert 0.15 < len(m) / len(KEYS) < 0.35, len(m)
    assert victim.addr not in after.values()
    victim.up()
    wait_for(lambda: info(c)["usable"] == "4", what="4 usable")
    assert ring_of(c) == before
    _, _, text = scrape(aport, TOKEN)
    assert value(text, "weir_resp_commands_total", server="ring", command="mget") == 30
    assert value(text, "weir_ring_owned_keys_total", server="ring") == 3 * len(KEYS)
    assert value(text, "weir_ring_unowned_keys_total", server="ring") == 0
    assert value(text, "weir_client_connections", protocol="resp") >= 1


def test_admin_api_and_reload_change_the_ring_of_open_connections(start_proc, tmp_path):
    addrs = addrs_of(4)
    port, aport = free_port(), free_port()
    w, path = start(start_proc, tmp_path, config(port, addrs, aport=aport), port)
    assert wait_port(aport)
    adm = Admin(aport, token=TOKEN)
    c = redis.Redis(port=port)
    before = ring_of(c)
    new = "127.0.0.9:7009"
    r = adm.call("POST", "/api/upstreams/u/backends", {"addr": new, "weight": 1})
    assert r.status in (200, 201), r.status
    after = ring_of(c)
    m = moved(before, after)
    assert {after[k] for k in m} == {new}
    assert 0.1 < len(m) / len(KEYS) < 0.3, len(m)
    # A reload takes a member out; the same connection sees it.
    path.write_text(config(port, addrs[1:], aport=aport))
    w.signal(signal.SIGHUP)
    wait_for(lambda: info(c)["members"] == "3", what="reload")
    again = ring_of(c)
    assert {again[k] for k in moved(before, again)} <= set(addrs[1:])
    assert {k for k in before if before[k] == addrs[0]} == moved(before, again)
    server = c.info("server")
    assert server["config_revision"] == 2
    # A reload that fails changes nothing.
    path.write_text(config(port, addrs, aport=aport, algo="round_robin"))
    w.signal(signal.SIGHUP)
    time.sleep(0.5)
    assert ring_of(c) == again
    assert c.info("server")["config_revision"] == 2


def test_discovery_changes_the_ring(dnsmasq, start_proc, tmp_path):  # noqa: F811
    ips = ["127.0.0.%d" % i for i in range(2, 7)]
    dns = dnsmasq({"ring.test": ips[:4]})
    port = free_port()
    up = ('discovery = "dns"\ndns_server = "127.0.0.1:%d"\nupdate_frequency = "1s"\n'
          % dns.port)
    text = config(port, ["ring.test:7000"], up_extra=up)
    start(start_proc, tmp_path, text, port)
    c = redis.Redis(port=port)
    wait_for(lambda: info(c)["members"] == "4", what="4 members")
    before = ring_of(c)
    dns.set_hosts({"ring.test": ips})
    wait_for(lambda: info(c)["members"] == "5", what="5 members")
    after = ring_of(c)
    m = moved(before, after)
    assert {after[k] for k in m} == {"127.0.0.6:7000"}
    assert 0.1 < len(m) / len(KEYS) < 0.3, len(m)


# ---- the end ----


def test_stop_with_clients_connected(start_proc, tmp_path):
    port = free_port()
    w, _ = start(start_proc, tmp_path, config(port, addrs_of(3)), port)
    idle = [R.Raw(port) for _ in range(20)]
    for r in idle:
        assert r.command("PING") == b"PONG"
    busy = R.Raw(port)
    stop = threading.Event()
    answered = [0]
    errors = []

    def pump():
        try:
            while not stop.is_set():
                busy.send(R.encode("GET", "/x") * 50)
                for _ in range(50):
                    busy.reply()
                answered[0] += 50
        except (R.Closed, OSError) as e:
            errors.append(e)

    t = threading.Thread(target=pump)
    t.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    w.signal(signal.SIGTERM)
    w.wait(15)
    took = time.monotonic() - t0
    stop.set()
    t.join(10)
    assert took < 5, took
    for r in idle:
        data, eof = r.read_all(2)
        assert eof is True and data == b""
    assert answered[0] > 0


def check(tmp_path, text):
    p = tmp_path / "t.toml"
    p.write_text(text)
    r = subprocess.run([binary("weir"), "-t", "-c", str(p)], capture_output=True, timeout=30)
    return r.returncode, r.stderr.decode() + r.stdout.decode()


def test_config_errors(tmp_path):
    require_binary("weir")
    rc, out = check(tmp_path, config(6379, addrs_of(2), algo="round_robin"))
    assert rc != 0 and re.search(r't\.toml:\d+: .*a ring needs algo = "hash:KEY"', out), out
    rc, out = check(tmp_path, '[servers.r]\naddr = "127.0.0.1:6379"\nprotocol = "resp"\n')
    assert rc != 0 and "needs 'upstream'" in out, out
    rc, out = check(tmp_path, config(6379, addrs_of(2), srv_extra='locations = ["x"]\n'))
    assert rc != 0 and "'locations' in [servers.ring] is not for a protocol = \"resp\"" in out
    rc, out = check(tmp_path, config(6379, addrs_of(2), srv_extra='max_command_size = "10"\n'))
    assert rc != 0 and "max_command_size" in out, out
    rc, out = check(tmp_path, config(6379, addrs_of(2), algo="maglev:uri",
                                     srv_extra='idle_timeout = "30s"\n'))
    assert rc == 0, out


def test_idle_timeout(start_proc, tmp_path):
    port = free_port()
    start(start_proc, tmp_path, config(port, addrs_of(2), srv_extra='idle_timeout = "300ms"\n'),
          port)
    r = R.Raw(port)
    assert r.command("PING") == b"PONG"
    data, eof = r.read_all(5)
    assert eof is True and data == b""


def test_upgrade_under_load(start_proc, tmp_path):
    """weir -u with clients asking all the time: the old process closes
    each connection between two commands (a FIN after the last reply), and
    a client that retries a command whose connection closed before its
    reply (redis-py's retry_on_error) sees no error at all."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry
    require_binary("weir")
    port = free_port()
    sock = tmp_path / "upgrade.sock"
    cfg = tmp_path / "weir.toml"
    cfg.write_text('[basic]\nupgrade_sock = "%s"\ngrace_period = "5s"\n' % sock
                   + config(port, addrs_of(3)))
    old = start_proc([binary("weir"), "-c", str(cfg), "--threads", "2"], port, "weir-old")
    wait_for(sock.exists, 5, "the upgrade socket")
    want = ring_of(redis.Redis(port=port), KEYS[:100])
    results, stop = [], threading.Event()

    def client(n):
        c = redis.Redis(port=port, retry=Retry(NoBackoff(), 1),
                        retry_on_error=[redis.exceptions.ConnectionError])
        i = 0
        while not stop.is_set():
            k = KEYS[(i * 7 + n) % 100]
            try:
                got = c.get(k).decode()
                results.append("ok" if got == want[k] else "wrong: %s" % got)
            except Exception as e:
                results.append(repr(e))
            i += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    new = start_proc([binary("weir"), "-u", "-c", str(cfg), "--threads", "2"], port,
                     "weir-new", wait=False)
    rc = old.wait(timeout=15)
    old.checked = True
    assert rc == 0, old.stderr()
    time.sleep(0.3)
    stop.set()
    for t in threads:
        t.join(30)
    failed = [r for r in results if r != "ok"]
    assert len(results) > 300 and not failed, (len(results), failed[:5])
    assert "took over" in new.stderr(), new.stderr()


def test_a_reload_that_removes_the_server_closes_its_connections(start_proc, tmp_path):
    port, other = free_port(), free_port()
    w, path = start(start_proc, tmp_path, config(port, addrs_of(2)), port)
    r = R.Raw(port)
    assert r.command("PING") == b"PONG"
    # The ring moves to another address under another name.
    path.write_text(config(other, addrs_of(2)).replace("[servers.ring]", "[servers.ring2]"))
    w.signal(signal.SIGHUP)
    assert wait_port(other)
    reply = r.command("GET", "/a")
    assert isinstance(reply, R.Error) and "removed" in reply, reply
    data, eof = r.read_all(5)
    assert eof is True and data == b""
    assert redis.Redis(port=other).get("/a").decode() in addrs_of(2)
