"""protocol = "resp" ring servers under attack, next to a real redis-server:
the same bytes to both, comparing the replies (an error by its first word
where the texts differ), how replies to pipelined commands line up, and
whether the connection closes.

weir must equal redis-server where they agree; where weir differs on
purpose the test asserts weir's documented behaviour (docs/config.md,
"Ring servers") and says in a comment how redis-server differs. The
"divergences" below were found here and fixed (number syntax, inline
separators, the inline limit, SELECT's integers, HELLO's error). Attacks: inline commands with odd white space and quotes, empty
commands, negative, huge and mismatched lengths, bare CR and LF, a client
that sends a byte at a time or a frame split at every position, a partial
frame then a close, 10,000 pipelined commands read at the end, replies far
past what weir buffers (back-pressure), limits at their edges, QUIT and a
protocol error behind a long pipeline, binary keys, RESP3 nils, and 200
connections reset in every state.
"""
import shutil
import socket
import struct
import threading
import time

import pytest

import resputil as R
from conftest import Proc, binary, free_port, require_binary, wait_port
from test_ring import addrs_of, config, ring_of, start, wait_for

redis = pytest.importorskip("redis")

pytestmark = pytest.mark.deadline(30)

MEMBERS = addrs_of(3)
END = R.encode("ECHO", "end-of-case")
END_REPLY = b"$11\r\nend-of-case\r\n"
RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset


def redis_argv(port, tmp):
    return ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(tmp)]


class Pair:
    def __init__(self, redis_port, weir_port, weir):
        self.redis = redis_port
        self.weir = weir_port
        self.weir_proc = weir


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A redis-server and a weir ring (3 members nothing listens at: all
    usable, no health checks), shared by the module's table tests."""
    require_binary("weir")
    if not shutil.which("redis-server"):
        pytest.skip("redis-server not installed")
    tmp = tmp_path_factory.mktemp("ring_attack")
    rport, wport = free_port(), free_port()
    procs = [Proc(redis_argv(rport, tmp), rport, tmp, "redis-server")]
    if not wait_port(rport, procs[0].proc):
        procs[0].stop(5)
        pytest.fail("redis-server did not start\n" + procs[0].describe())
    (tmp / "weir.toml").write_text(config(wport, MEMBERS))
    procs.append(Proc([binary("weir"), "-c", str(tmp / "weir.toml"), "--threads", "2"], wport,
                      tmp, "weir"))
    if not wait_port(wport, procs[1].proc):
        for p in procs:
            p.stop(5)
        pytest.fail("weir did not start\n" + procs[1].describe())
    yield Pair(rport, wport, procs[1])
    failures = []
    for p in procs:
        problems = p.stop()
        if problems:
            failures.append("; ".join(problems) + "\n" + p.describe())
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)


@pytest.fixture
def redis_server(start_proc, tmp_path):
    """A fresh redis-server: its port."""
    if not shutil.which("redis-server"):
        pytest.skip("redis-server not installed")
    port = free_port()
    start_proc(redis_argv(port, tmp_path), port, "redis-server")
    return port


def connect(port, timeout=10.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_until(s, done, timeout=10.0):
    """Reads until done(buf), EOF or a reset: (buf, closed) where closed is
    True (EOF or reset), False (done) or "timeout"."""
    buf = b""
    deadline = time.monotonic() + timeout
    while not done(buf):
        left = deadline - time.monotonic()
        if left <= 0:
            return buf, "timeout"
        s.settimeout(left)
        try:
            d = s.recv(1 << 20)
        except socket.timeout:
            return buf, "timeout"
        except ConnectionResetError:
            return buf, True
        if not d:
            return buf, True
        buf += d
    return buf, False


def talk(port, data, end=True, idle=0.5):
    """data on a new connection: (bytes, closed). end: an ECHO marker
    follows data and reading stops at its reply (closed False) or at EOF;
    else reading stops at EOF, or after `idle` s of silence (closed
    False)."""
    s = connect(port)
    try:
        try:
            s.sendall(data + (END if end else b""))
        except (BrokenPipeError, ConnectionResetError):
            pass
        if end:
            buf, closed = read_until(s, lambda b: b.endswith(END_REPLY))
            if closed is False:
                buf = buf[:-len(END_REPLY)]
            return buf, closed
        buf = b""
        s.settimeout(idle)
        while True:
            try:
                d = s.recv(1 << 20)
            except socket.timeout:
                return buf, False
            except ConnectionResetError:
                return buf, True
            if not d:
                return buf, True
            buf += d
    finally:
        s.close()


def _end(data, i):
    """The index after the reply at data[i], or None if it is not whole."""
    e = data.find(b"\r\n", i)
    if e < 0:
        return None
    t, rest = data[i:i + 1], data[i + 1:e]
    if t in (b"+", b"-", b":", b"_", b",", b"#", b"("):
        return e + 2
    if t in (b"$", b"=", b"!"):
        n = int(rest)
        if n < 0:
            return e + 2
        return e + 4 + n if len(data) >= e + 4 + n else None
    if t in (b"*", b"~", b">", b"%"):
        n = int(rest)
        k = e + 2
        for _ in range(max(n, 0) * (2 if t == b"%" else 1)):
            k = _end(data, k)
            if k is None:
                return None
        return k
    raise AssertionError("not a reply at %d: %r" % (i, data[i:i + 40]))


def split(data):
    """The whole replies in data, each its bytes; what remains must be
    nothing."""
    out, i = [], 0
    while i < len(data):
        e = _end(data, i)
        assert e is not None, "a cut reply: %r" % data[i:i + 80]
        out.append(data[i:e])
        i = e
    return out


def shapes(data):
    """Replies with each error reduced to its first word."""
    return [b"-" + r[1:].split(b" ", 1)[0].rstrip(b"\r\n") if r.startswith(b"-") else r
            for r in split(data)]


def bulk(b):
    return b"$%d\r\n%s\r\n" % (len(b), b)


def echo(payload):
    return R.encode("ECHO", payload)


# ---- the same bytes to redis-server and weir ----


SAME = [
    ("spaces and tabs", b"  PING  \t \r\n\tECHO   x\t\r\n"),
    ("double quotes", b'ECHO "a b"\r\nECHO ""\r\nECHO "\\\\"\r\n'),
    ("single quotes", b"ECHO 'a\\'b'\r\nECHO 'a\\nb'\r\n"),
    ("escapes", b'ECHO "\\x41\\x4g\\n\\q\\r\\t\\b\\a"\r\n'),
    ("a CR splits an inline argument", b"ECHO x\ry\r\n"),
    ("a closing quote then a tab", b'ECHO "a"\tx\r\n'),
    ("empty lines and commands", b"\r\n\r\n\n\n   \r\n*0\r\n*-1\r\n*-5\r\nPING\r\n"),
    ("a bare LF ends an inline command", b"PING\nECHO a\n"),
    ("a bulk string that is not in an array", b"$3\r\nGET\r\n"),
    ("mixed case", b"gEt\r\nMgEt\r\nget a b\r\npInG\r\nEcHo x\r\n"),
    ("unknown command", b"fOo a b\r\n*2\r\n$5\r\nflush\r\n$1\r\nx\r\n"),
    ("unknown binary name", b"*1\r\n$7\r\nA\r\nB\x00C\r\r\nPING\r\n"),
    ("wrong arity", b"GET\r\nGET a b\r\nMGET\r\nECHO\r\nPING a b\r\n"),
    ("binary echo", R.encode("ECHO", b"\x00\r\n\r\n*1\r\n$-1\xff") + b"PING\r\n"),
    ("an empty argument", R.encode("ECHO", b"")),
    ("quit mid-pipeline", b"PING\r\nECHO a\r\nQUIT\r\nPING\r\nECHO b\r\n"),
    ("quit with arguments", R.encode("PING") + R.encode("QUIT", "now") + b"PING\r\n"),
    # A malformed frame: an error, then a close; nothing after it is answered.
    ("unbalanced double quote", b'PING\r\nECHO "abc\r\nPING\r\n'),
    ("text after a closing quote", b'ECHO "a"b\r\nPING\r\n'),
    ("text after a closing single quote", b"ECHO 'a'b\r\nPING\r\n"),
    ("two quoted strings touching", b'ECHO "a""b"\r\nPING\r\n'),
    ("not a number of arguments", b"*x\r\nPING\r\n"),
    ("a bare LF in the array head", b"*1\n$4\r\nPING\r\n"),
    ("a bare LF in the bulk head", b"*1\r\n$4\nPING\r\n"),
    ("a nil bulk as an argument", b"*1\r\n$-1\r\nPING\r\n"),
    ("a negative bulk length", b"PING\r\n*1\r\n$-5\r\n"),
    ("a bulk length past int64", b"*2\r\n$4\r\nECHO\r\n$99999999999999999999\r\n"),
    ("an integer as an argument", b"*2\r\n$3\r\nGET\r\n:1\r\n"),
    # The texts differ: weir "too many arguments", redis "invalid multibulk length".
    ("a huge argument count", b"PING\r\n*9999999999\r\n"),
    # The texts differ: weir "argument too long", redis "invalid bulk length".
    ("a huge bulk length", b"*2\r\n$4\r\nECHO\r\n$9999999999\r\nx\r\n"),
]


@pytest.mark.parametrize("data", [c[1] for c in SAME], ids=[c[0] for c in SAME])
def test_same_replies_as_redis(pair, data):
    want, want_closed = talk(pair.redis, data)
    got, closed = talk(pair.weir, data)
    assert want_closed != "timeout" and closed != "timeout", (want, got)
    assert shapes(got) == shapes(want), (got, want)
    assert closed == want_closed, (got, want)


def test_error_texts_as_redis(pair):
    """The errors clients and redis-cli read: the very text of redis."""
    data = (b"GET\r\nMGET\r\nfOo a b\r\nECHO\r\nPING a b\r\nSELECT x\r\nSELECT 16\r\n"
            b"HELLO x\r\nHELLO 4\r\nCLIENT\r\nCLIENT FOO\r\nCOMMAND FOO\r\nCONFIG\r\n"
            b"CONFIG GET\r\nCLIENT SETNAME \"a b\"\r\n")
    want, _ = talk(pair.redis, data)
    got, closed = talk(pair.weir, data)
    assert closed is False
    assert got == want


def test_incomplete_frames_wait_for_the_rest(pair):
    """Fewer bytes than a length declares: no reply until they come."""
    for port in (pair.redis, pair.weir):
        for first, rest, want in [
            (b"*2\r\n$4\r\nECHO\r\n$10\r\nabc", b"defghij\r\n", bulk(b"abcdefghij")),
            (b"*2\r\n$4\r\nECHO\r\n$1", b"0\r\nabcdefghij\r\n", bulk(b"abcdefghij")),
            (b"*", b"1\r\n$4\r\nPING\r\n", b"+PONG\r\n"),
            (b"ECHO \"a b", b"\"\r\n", bulk(b"a b")),
            (b"*1\r\n$4\r\nPING\r", b"\n", b"+PONG\r\n"),
        ]:
            s = connect(port)
            s.sendall(first)
            s.settimeout(0.3)
            with pytest.raises(socket.timeout):
                s.recv(100)
            s.sendall(rest)
            got, closed = read_until(s, lambda b: len(b) >= len(want))
            assert (got, closed) == (want, False), (port, first)
            s.close()


PARTIAL = [b"*2\r\n$3\r\nGET\r\n$5\r\nab", b"*3\r\n", b"GET /a", b"*1\r\n$4\r\nPING",
           b"*1\r\n$4\r\nPING\r", b"*2\r\n$3\r\nGET\r\n$", b'ECHO "a']


@pytest.mark.parametrize("frame", PARTIAL)
def test_partial_frame_then_close(pair, frame):
    """Part of a command, then a half-close: the commands before it are
    answered, the part is not, the connection ends."""
    for port in (pair.redis, pair.weir):
        s = connect(port)
        s.sendall(b"PING\r\n" + frame)
        s.shutdown(socket.SHUT_WR)
        got, closed = read_until(s, lambda b: False, timeout=5)
        assert (got, closed) == (b"+PONG\r\n", True), (port, got, closed)
        s.close()


def test_stricter_framing_than_redis(pair):
    """weir checks the CRLF that ends a bulk string and every head line;
    redis-server skips two bytes after a bulk string and any one byte after
    a head line's CR, so it reads on (in step or not)."""
    for data, why in [
        # More bytes than declared (redis answers GET's arity error, then PONG).
        (b"*1\r\n$3\r\nGETX\r\nPING\r\n", "expected CRLF after a bulk string"),
        # Fewer (redis: unknown command 'PI', then an empty inline line).
        (b"*1\r\n$2\r\nPING\r\nPING\r\n", "expected CRLF after a bulk string"),
        # A bare LF after the data (redis: PONG PONG).
        (b"*1\r\n$4\r\nPING\n\nPING\r\n", "expected CRLF after a bulk string"),
        # A CR not followed by LF in a head line (redis: PONG).
        (b"*1\rX$4\r\nPING\r\n", "invalid multibulk length"),
        (b"*1\r\n$4\rXPING\r\n", "invalid bulk length"),
    ]:
        got, closed = talk(pair.weir, b"PING\r\n" + data)
        assert got == b"+PONG\r\n-ERR Protocol error: %s\r\n" % why.encode(), (data, got)
        assert closed is True


def test_a_nul_in_an_inline_command_is_a_byte(pair):
    # redis-server looks for the line's LF with strchr: it stops at the NUL
    # and waits (for more, until 64 KB); weir takes inline lines as bytes.
    got, closed = talk(pair.weir, b"ECHO a\x00b\r\nPING\r\n")
    assert (got, closed) == (bulk(b"a\x00b") + b"+PONG\r\n", False)


# ---- divergences found here, now as redis-server ----


@pytest.mark.parametrize("data", [b"*01\r\n$4\r\nPING\r\n", b"*1\r\n$04\r\nPING\r\n",
                                  b"*-0\r\nPING\r\n", b"*2\r\n$4\r\nECHO\r\n$-0\r\n\r\n"],
                         ids=["*01", "$04", "*-0", "$-0"])
def test_frame_numbers_as_redis_reads_them(pair, data):
    want, want_closed = talk(pair.redis, data)
    assert want.startswith(b"-ERR Protocol error") and want_closed is True, want
    got, closed = talk(pair.weir, data)
    assert shapes(got) == shapes(want) and closed is True, got


@pytest.mark.parametrize("sep", [b"\x0b", b"\x0c"], ids=["vt", "ff"])
def test_inline_vertical_tab_and_form_feed_stay_in_the_argument(pair, sep):
    data = b"ECHO a" + sep + b"b\r\n"
    want, _ = talk(pair.redis, data)
    assert want == bulk(b"a" + sep + b"b"), want
    got, closed = talk(pair.weir, data)
    assert (got, closed) == (want, False)


def test_an_inline_line_of_64kb_with_crlf(pair):
    line = b"ECHO " + b"x" * (65536 - 5)
    got, closed = talk(pair.weir, line + b"\n")
    assert got == bulk(b"x" * (65536 - 5)) and closed is False  # passes
    got, closed = talk(pair.weir, line + b"\r\n")
    assert got == bulk(b"x" * (65536 - 5)) and closed is False, got[:60]


@pytest.mark.parametrize("arg", [b"-0", b"99999999999999999999"])
def test_select_integers_as_redis(pair, arg):
    data = b"SELECT " + arg + b"\r\n"
    want, _ = talk(pair.redis, data)
    assert want == b"-ERR value is not an integer or out of range\r\n", want
    got, _ = talk(pair.weir, data)
    assert got == want


def test_hello_syntax_error_text_as_redis(pair):
    want, _ = talk(pair.redis, b"HELLO 3 FOO\r\n")
    assert want == b"-ERR Syntax error in HELLO option 'FOO'\r\n", want
    got, _ = talk(pair.weir, b"HELLO 3 FOO\r\n")
    assert got == want


# ---- slow clients ----


SLOW_STREAM = (b"PING\r\n\r\n*0\r\n  ECHO \"a b\"  \r\n" + R.encode("ECHO", b"\x00\r\nz")
               + b"*-1\r\ngEt\r\n" + R.encode("PING", "hi") + b"nosuch 'x y'\r\nQUIT\r\n")


def test_byte_at_a_time_as_redis(pair):
    out = {}
    for port in (pair.redis, pair.weir):
        s = connect(port)
        for ch in SLOW_STREAM:
            s.sendall(bytes([ch]))
            time.sleep(0.001)
        out[port], closed = read_until(s, lambda b: False, timeout=10)
        assert closed is True, (port, out[port])
        s.close()
    assert out[pair.weir] == out[pair.redis]
    assert len(split(out[pair.weir])) == 7


def test_a_frame_split_at_every_byte(pair):
    data = R.encode("ECHO", "abc\r\ndef") + b'ECHO "q x"\r\n' + R.encode("GET")
    want, _ = talk(pair.redis, data)
    for k in range(1, len(data)):
        s = connect(pair.weir)
        s.sendall(data[:k])
        time.sleep(0.005)
        s.sendall(data[k:])
        got, closed = read_until(s, lambda b: len(b) >= len(want), timeout=5)
        assert (got, closed) == (want, False), k
        s.close()


# ---- pipelines ----


def test_ten_thousand_pipelined_commands_read_at_the_end(pair):
    """One write of 10,000 commands (GETs, ECHOs, errors, empty commands),
    nothing read until it is all sent: every reply, in order."""
    keys = ["/pipe/%d" % i for i in range(2500)]
    owner = ring_of(redis.Redis(port=pair.weir), keys)
    cmds, want = [], []
    for i in range(10000):
        k = keys[i // 4]
        if i % 4 == 0:
            cmds.append(R.encode("GET", k))
            want.append(bulk(owner[k].encode()))
        elif i % 4 == 1:
            cmds.append(R.encode("ECHO", "e%d" % i))
            want.append(bulk(b"e%d" % i))
        elif i % 4 == 2:
            cmds.append(b"\r\n*0\r\nGET\r\n")
            want.append(b"-ERR wrong number of arguments for 'get' command\r\n")
        else:
            cmds.append(R.encode("MGET", k, "x"))
            want.append(b"*2\r\n" + bulk(owner[k].encode()) + bulk(
                redis.Redis(port=pair.weir).get("x") if i == 3 else b"") if False else None)
            want[-1] = None  # filled below
    x = redis.Redis(port=pair.weir).get("x")
    for i in range(3, 10000, 4):
        want[i] = b"*2\r\n" + bulk(owner[keys[i // 4]].encode()) + bulk(x)
    want = b"".join(want)
    s = connect(pair.weir, timeout=20)
    s.sendall(b"".join(cmds))
    got, closed = read_until(s, lambda b: len(b) >= len(want), timeout=20)
    assert closed is False
    assert got == want
    s.close()


def big_pipeline(n, size):
    """n ECHOs of size bytes, each different: (commands, their replies)."""
    cmds, replies = [], []
    for i in range(n):
        p = (b"%08d" % i) * (size // 8)
        cmds.append(echo(p))
        replies.append(bulk(p))
    return b"".join(cmds), b"".join(replies)


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_back_pressure_bounds_what_weir_holds(pair):
    """10,000 ECHOs of 4 KB (41 MB of replies) in one write by a client that
    reads nothing for 2 s: weir stops reading once 1 MB of replies wait, so
    the write blocks and weir's memory stays put; then every reply comes,
    in order."""
    cmds, want = big_pipeline(10000, 4096)
    before = rss_kib(pair.weir_proc.pid)
    s = connect(pair.weir, timeout=25)
    sent = threading.Event()

    def send():
        s.sendall(cmds)
        sent.set()

    t = threading.Thread(target=send, daemon=True)
    t.start()
    time.sleep(2.0)
    grew = rss_kib(pair.weir_proc.pid) - before
    # redis-server reads it all and keeps every reply (client-output-buffer-limit
    # normal 0 0 0): its RSS grows by the 41 MB.
    assert not sent.is_set(), "weir read 41 MB while its client read nothing"
    assert grew < 16 * 1024, grew
    got, closed = read_until(s, lambda b: len(b) >= len(want), timeout=20)
    t.join(5)
    assert sent.is_set() and closed is False
    assert got == want
    s.close()


def test_quit_behind_a_long_pipeline(pair):
    """QUIT after 3 MB of replies (three times what weir holds back for) and
    more commands after it, read late: every reply before it, +OK, the
    end; nothing after."""
    cmds, want = big_pipeline(3000, 1024)
    data = cmds + b"QUIT\r\n" + b"PING\r\n" * 1000
    # Only weir's replies are compared: redis-server closes at once with the
    # PINGs unread, so its kernel sends a reset, which can drop replies the
    # client has not read yet (a race). weir shuts its side and reads on
    # until the client's FIN (or 2 s) before it closes.
    for port in (pair.redis, pair.weir):
        s = connect(port, timeout=20)
        threading.Thread(target=lambda: s.sendall(data), daemon=True).start()
        time.sleep(0.5)
        got, closed = read_until(s, lambda b: False, timeout=20)
        assert closed is True, port
        if port == pair.weir:
            assert got == want + b"+OK\r\n", (len(got), got[-40:])
        s.close()


def test_protocol_error_behind_a_long_pipeline(pair):
    cmds, want = big_pipeline(3000, 1024)
    data = cmds + b"*1\r\n$-5\r\n" + b"PING\r\n" * 1000
    for port in (pair.redis, pair.weir):  # as above: weir's replies only
        s = connect(port, timeout=20)
        threading.Thread(target=lambda: s.sendall(data), daemon=True).start()
        time.sleep(0.5)
        got, closed = read_until(s, lambda b: False, timeout=20)
        assert closed is True, port
        if port == pair.weir:
            assert got == want + b"-ERR Protocol error: invalid bulk length\r\n", got[-60:]
        s.close()


# ---- commands ----


def test_get_and_mget_arity_and_sizes(pair):
    c = redis.Redis(port=pair.weir)
    keys = ["/m/%d" % i for i in range(1023)]
    # MGET with 1,000 keys: as many answers, each the GET's.
    r = R.Raw(pair.weir)
    many = r.command("MGET", *keys[:1000])
    assert len(many) == 1000 and set(many) <= {a.encode() for a in MEMBERS}
    assert many[:50] == [c.get(k) for k in keys[:50]]
    assert len(set(many)) == 3
    # redis-server answers 1,000 nils.
    assert R.Raw(pair.redis).command("MGET", *keys[:1000]) == [None] * 1000
    # 1,023 keys (1,024 arguments) is the most one command may have.
    assert len(r.command("MGET", *keys)) == 1023
    # One more closes the connection (redis-server takes 1024*1024 arguments).
    got, closed = talk(pair.weir, R.encode("MGET", *keys, "one-more"), end=False)
    assert got == b"-ERR Protocol error: too many arguments\r\n" and closed is True
    # An inline MGET is held to the same count.
    got, closed = talk(pair.weir, b"MGET" + b" k" * 1024 + b"\r\n", end=False)
    assert got == b"-ERR Protocol error: too many arguments\r\n" and closed is True


def test_binary_keys(pair):
    """Keys with NUL, CR and LF bytes: framing holds, the whole key is
    hashed (not up to a NUL or a CRLF), GET and MGET agree."""
    keys = [b"k\x00%d" % i for i in range(40)] + [b"\r\n%d\r\n" % i for i in range(40)]
    r = R.Raw(pair.weir)
    data = b"".join(R.encode("GET", k) + b"PING\r\n" for k in keys) + R.encode("MGET", *keys)
    r.send(data)
    owners = []
    for _ in keys:
        owners.append(r.reply())
        assert r.reply() == b"PONG"
    assert r.reply() == owners
    assert set(owners) == {a.encode() for a in MEMBERS}
    assert len(set(owners[:40])) > 1 and len(set(owners[40:])) > 1
    # The same key, the same owner, on another connection.
    assert R.Raw(pair.weir).command("GET", keys[7]) == owners[7]
    # ECHO gives the bytes back as redis-server does.
    weird = b"\x00\xff\r\n$3\r\n*1\r\n\r"
    assert R.Raw(pair.weir).command("ECHO", weird) == R.Raw(pair.redis).command("ECHO", weird)


def test_resp3_nils_as_redis(redis_server, start_proc, tmp_path):
    """HELLO 3: a key no member owns is _ (as redis-server's missing key),
    in MGET too; HELLO 2 and RESET bring back $-1."""
    port = free_port()
    up = ('health_check = "tcp://"\nhealth_check_interval = "100ms"\n'
          'health_check_fall = 1\n')
    start(start_proc, tmp_path, config(port, addrs_of(2), up_extra=up), port)
    wait_for(lambda: R.Raw(port).command("GET", "/x") is None, what="no usable member")
    out = {}
    for p in (redis_server, port):
        r = R.Raw(p)
        assert r.command("HELLO", "3")[b"proto"] == 3
        r.send(b"GET /x\r\nMGET /x /y\r\n")
        a = r.sock.recv(100)
        while len(a) < 13:
            a += r.sock.recv(100)
        assert isinstance(r.command("HELLO", "2"), list)
        r.send(b"GET /x\r\n")
        b = r._line()
        assert r.command("HELLO", "3")[b"proto"] == 3
        assert r.command("RESET") == b"RESET"
        r.send(b"MGET /x\r\n")
        c = r._line() + r._line()
        out[p] = (a, b, c)
    assert out[port] == out[redis_server]
    assert out[port] == (b"_\r\n*2\r\n_\r\n_\r\n", b"$-1", b"*1$-1")


# ---- limits ----


def test_limits_at_their_edges(start_proc, tmp_path):
    port = free_port()
    start(start_proc, tmp_path,
          config(port, MEMBERS, srv_extra='max_command_size = "4KB"\n'), port)
    at = echo(b"x" * 4073)
    over = echo(b"x" * 4074)
    assert len(at) == 4096 and len(over) == 4097
    # A command of exactly max_command_size is answered, behind another.
    got, closed = talk(port, b"PING\r\n" + at + at)
    assert (got, closed) == (b"+PONG\r\n" + bulk(b"x" * 4073) * 2, False)
    # One byte more: the error, the end; whole or in pieces.
    got, closed = talk(port, b"PING\r\n" + over)
    assert got == b"+PONG\r\n-ERR Protocol error: command too big\r\n" and closed is True
    s = connect(port)
    s.sendall(b"PING\r\n")
    try:
        for i in range(0, len(over), 500):
            s.sendall(over[i:i + 500])
            time.sleep(0.01)
    except (BrokenPipeError, ConnectionResetError):
        pass
    got, closed = read_until(s, lambda b: False, timeout=5)
    assert got == b"+PONG\r\n-ERR Protocol error: command too big\r\n" and closed is True
    s.close()
    # An inline line: 4,094 bytes and its CRLF is the whole 4 KB.
    line = b"ECHO " + b"y" * 4089
    got, closed = talk(port, line + b"\r\n")
    assert (got, closed) == (bulk(b"y" * 4089), False)
    got, closed = talk(port, line + b"yy\r\n")
    assert got.startswith(b"-ERR Protocol error") and closed is True


def test_default_argument_limit(pair):
    # redis-server takes arguments up to 512 MB (proto-max-bulk-len).
    arg = b"z" * (512 * 1024)
    got, closed = talk(pair.weir, echo(arg))
    assert (got, closed) == (bulk(arg), False)
    got, closed = talk(pair.weir, b"PING\r\n" + echo(arg + b"z"))
    assert got == b"+PONG\r\n-ERR Protocol error: argument too long\r\n" and closed is True
    # An inline line of 65,535 bytes (and CRLF) is the longest.
    line = b"ECHO " + b"i" * (65535 - 5)
    assert talk(pair.weir, line + b"\r\n") == (bulk(b"i" * (65535 - 5)), False)


# ---- connections that go away ----


def reset(s):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RST)
    s.close()


def abuse(port, i):
    """One connection, ended with a reset in one of many states."""
    s = connect(port, timeout=5)
    kind = i % 8
    try:
        if kind == 0:
            pass  # nothing sent
        elif kind == 1:
            s.sendall(b"*2\r\n$3\r\nGET\r\n$5\r\nab")  # mid-argument
        elif kind == 2:
            s.sendall(R.encode("GET", "/a") * 2000)  # replies unread
            time.sleep(0.01)
        elif kind == 3:
            # Past the back-pressure threshold: weir holds replies it cannot send.
            s.settimeout(0.3)
            try:
                s.sendall(echo(b"p" * 4096) * 1000)
            except socket.timeout:
                pass
        elif kind == 4:
            s.sendall(b"HELLO 3\r\nQUIT\r\nPING\r\n")  # lingering after QUIT
            time.sleep(0.01)
        elif kind == 5:
            s.sendall(b"*1\r\n$-5\r\nPING\r\n" * 100)  # a protocol error
            time.sleep(0.01)
        elif kind == 6:
            s.sendall(b"ECHO " + b"q" * 30000)  # an inline line, unfinished
        else:
            s.sendall(R.encode("MGET", *["/k%d" % j for j in range(1000)]))
            s.shutdown(socket.SHUT_WR)  # a half-close, then a reset
    except OSError:
        pass
    reset(s)


def test_200_connections_reset_in_every_state(start_proc, tmp_path):
    port = free_port()
    w, _ = start(start_proc, tmp_path, config(port, MEMBERS), port)
    errors = []

    def worker(n):
        try:
            for i in range(n, 200, 4):
                abuse(port, i)
        except Exception as e:
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(25)
    assert not errors, errors
    assert w.proc.poll() is None, w.describe()
    r = R.Raw(port)
    assert r.command("PING") == b"PONG"
    assert r.command("GET", "/a").decode() in MEMBERS
    # Every connection is gone, lingering ones included (at most 2 s).
    wait_for(lambda: "connected_clients:1\r\n" in r.command("INFO", "clients").decode(),
             timeout=10, what="the reset connections to go")
    r.close()
    problems = w.stop()
    assert not problems, "; ".join(problems) + "\n" + w.describe()
    err = w.stderr()
    assert "ERROR: AddressSanitizer" not in err and "runtime error:" not in err, err[-3000:]
