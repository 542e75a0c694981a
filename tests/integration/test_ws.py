"""WebSocket through weir with a real WebSocket stack (python3-websockets)
on the backend side.

A. HTTP/1.1 Upgrade, websockets client to websockets server, over a plain
   listener (the tunnel moves bytes with splice) and over TLS (it cannot):
   text, binary, 10 MB, 1,000 small messages, close codes both ways, a
   backend that drops its TCP connection, a client that vanishes;
B. the server's tunnel_idle_timeout, for HTTP/1.1 and RFC 8441 tunnels,
   and keepalive_timeout not applying to a tunnel;
C. RFC 8441 (WebSocket over HTTP/2, extended CONNECT) from a python3-h2
   client, frames built by hand (websockets.frames), to the same HTTP/1.1
   backend: echo, close codes, resets and drops, several tunnels on one
   connection, refusals.

The backend's event loop runs in a thread; clients run asyncio.run() (A) or
the synchronous h2util.H2Client (C). Every wait is bounded.
"""
import asyncio
import http
import shutil
import ssl
import struct
import threading
import time

import pytest

websockets = pytest.importorskip("websockets", reason="python3-websockets is needed")
pytest.importorskip("h2", reason="python3-h2 is needed")

import h2.settings  # noqa: E402
from websockets.frames import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT  # noqa: E402
from websockets.frames import Close, Frame  # noqa: E402

import h2util as U  # noqa: E402
from conftest import binary, free_port, require_binary  # noqa: E402
from h2util import H2Client  # noqa: E402

LOOPBACK = "127.0.0.1"
MB = 1 << 20
WAIT = 10.0  # bound on every "the other side notices" wait


# ---------------------------------------------------------------------------
# The backend: a websockets server in its own thread


class WSConn:
    """What the backend saw of one WebSocket connection."""

    def __init__(self, path, headers):
        self.path = path
        self.headers = headers
        self.received = 0
        self.close_code = None
        self.close_reason = None
        self.done = threading.Event()


class WSBackend:
    """A websockets server on 127.0.0.1. Paths:

    /close4001  echoes one message, then closes with 4001 "bye"
    /drop       echoes one message, then closes its TCP connection (no
                close frame)
    /forbidden  refuses the handshake with 403
    anything else echoes every message until the peer closes.
    """

    def __init__(self):
        self.conns = []
        self.errors = []
        self.lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = self._call(self._start())
        self.port = self.server.sockets[0].getsockname()[1]
        self.addr = "%s:%d" % (LOOPBACK, self.port)

    def _call(self, coro, timeout=WAIT):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self):
        return await websockets.serve(self._handler, LOOPBACK, 0, max_size=None,
                                      ping_interval=None, close_timeout=5,
                                      process_request=self._process)

    async def _process(self, path, headers):
        if path == "/forbidden":
            return http.HTTPStatus.FORBIDDEN, [("Content-Type", "text/plain")], b"no\n"
        return None

    async def _handler(self, ws):
        conn = WSConn(ws.path, ws.request_headers)
        with self.lock:
            self.conns.append(conn)
        try:
            if ws.path == "/close4001":
                await ws.send(await ws.recv())
                await ws.close(4001, "bye")
            elif ws.path == "/drop":
                await ws.send(await ws.recv())
                ws.transport.close()  # flushes, then FIN; no close frame
            else:
                async for msg in ws:
                    conn.received += 1
                    await ws.send(msg)
        except websockets.ConnectionClosed:
            pass
        except Exception as e:  # noqa: BLE001 - reported by the fixture
            with self.lock:
                self.errors.append(repr(e))
        finally:
            await ws.wait_closed()
            conn.close_code, conn.close_reason = ws.close_code, ws.close_reason
            conn.done.set()

    def conn(self, i=-1, timeout=WAIT):
        """The i-th connection the backend accepted (waits for it)."""
        assert U.wait_for(lambda: len(self.conns) > (i if i >= 0 else -i - 1), timeout), \
            "the backend got no WebSocket connection"
        return self.conns[i]

    def close(self):
        async def stop():
            self.server.close()
            await self.server.wait_closed()

        try:
            self._call(stop(), 15)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


# ---------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    if not shutil.which("openssl"):
        pytest.skip("openssl command not found")
    return U.make_cert(tmp_path_factory.mktemp("wscert"))


@pytest.fixture
def wsweir(tmp_path, start_proc, request):
    """Factory: wsweir(backend, tls=False, server=None) -> Proc running
    `weir -c` with one server (h2c on when plain) whose every path goes to
    the backend over HTTP/1.1."""
    count = [0]

    def start(backend, tls=False, server=None):
        require_binary("weir")
        port = free_port()
        srv = dict(server or {})
        if not tls:
            srv.setdefault("h2c", True)
        count[0] += 1
        path = tmp_path / ("weir-ws-%d.toml" % count[0])
        crt = request.getfixturevalue("cert") if tls else None
        path.write_text(U.config(port, backend.addr, crt, srv))
        p = start_proc([binary("weir"), "-c", str(path), "--threads", "2"], port, "weir")
        p.tls = tls
        return p

    return start


@pytest.fixture
def wsbackend(start_proc):
    """Factory: wsbackend() -> WSBackend. Set up after start_proc, so it is
    closed (and its tunnels with it) before weir is stopped."""
    made = []

    def make():
        b = WSBackend()
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()
    for b in made:
        assert not b.errors, "backend handler errors: %r" % b.errors


def run(coro, timeout=60):
    """Runs a client coroutine to the end, bounded."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def ws_url(w, path):
    return "%s://%s:%d%s" % ("wss" if w.tls else "ws", LOOPBACK, w.port, path)


def client_ssl(w):
    """No ALPN: weir's TLS server then speaks HTTP/1.1."""
    if not w.tls:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def connect(w, path):
    return websockets.connect(ws_url(w, path), ssl=client_ssl(w), max_size=None,
                              ping_interval=None, close_timeout=5, open_timeout=WAIT)


# ---------------------------------------------------------------------------
# A. HTTP/1.1 Upgrade


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_h1_echo(wsbackend, wsweir, tls):
    be = wsbackend()
    w = wsweir(be, tls=tls)
    big = bytes(range(256)) * (10 * MB // 256)

    async def client():
        async with connect(w, "/echo") as ws:
            await ws.send("h\u00e9llo w\u00f6rld \U0001f310")
            assert await ws.recv() == "h\u00e9llo w\u00f6rld \U0001f310"
            await ws.send(bytes(range(256)))
            assert await ws.recv() == bytes(range(256))
            await ws.send(big)
            got = await ws.recv()
            assert len(got) == len(big) and got == big
            for i in range(1000):
                await ws.send("m%d" % i)
            for i in range(1000):
                assert await ws.recv() == "m%d" % i
            await ws.close(1000, "done")
            assert ws.close_code == 1000

    run(client())
    conn = be.conn(0)
    assert conn.done.wait(WAIT)
    assert (conn.close_code, conn.close_reason) == (1000, "done")
    assert conn.received == 1003
    assert conn.headers.get("X-Forwarded-For") == LOOPBACK


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_h1_backend_close_code_reaches_client(wsbackend, wsweir, tls):
    be = wsbackend()
    w = wsweir(be, tls=tls)

    async def client():
        async with connect(w, "/close4001") as ws:
            await ws.send("last")
            assert await ws.recv() == "last"
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
            return ws.close_code, ws.close_reason

    assert run(client()) == (4001, "bye")
    assert be.conn(0).done.wait(WAIT)
    assert be.conn(0).close_code == 4001


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_h1_backend_drops_tcp(wsbackend, wsweir, tls):
    """The backend closes its TCP connection without a close frame: the
    client's connection is closed (1006), not left open."""
    be = wsbackend()
    w = wsweir(be, tls=tls)

    async def client():
        async with connect(w, "/drop") as ws:
            await ws.send("x")
            assert await ws.recv() == "x"
            with pytest.raises(websockets.ConnectionClosedError):
                await asyncio.wait_for(ws.recv(), WAIT)
            return ws.close_code

    assert run(client()) == 1006


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_h1_client_vanishes(wsbackend, wsweir, tls):
    """The client's TCP connection goes away without a close frame: the
    backend's connection is closed too."""
    be = wsbackend()
    w = wsweir(be, tls=tls)

    async def client():
        ws = await connect(w, "/echo")
        await ws.send("x")
        assert await ws.recv() == "x"
        ws.transport.abort()
        await ws.wait_closed()

    run(client())
    conn = be.conn(0)
    assert conn.done.wait(WAIT), "the backend connection outlived the client"
    assert conn.close_code == 1006


# ---------------------------------------------------------------------------
# C (helpers). RFC 8441 over python3-h2


def h2_send(c, sid, data, timeout=30.0):
    """Sends bytes on a stream as its flow-control window allows."""
    view = memoryview(data)
    off = 0
    deadline = time.monotonic() + timeout
    st = c.streams[sid]
    while off < len(view):
        assert not st.done, "stream %d ended while sending: %r" % (sid, st)
        n = min(c.conn.local_flow_control_window(sid), c.conn.max_outbound_frame_size,
                len(view) - off)
        if n <= 0:
            assert time.monotonic() < deadline, "stream %d: window never opened" % sid
            c.pump(0.5)
            continue
        c.conn.send_data(sid, view[off:off + n].tobytes())
        off += n
        c.flush()


class H2WebSocket:
    """One WebSocket over an HTTP/2 stream (RFC 8441) of an H2Client."""

    def __init__(self, client, path="/echo", protocol="websocket", headers=()):
        self.c = client
        hs = [(":protocol", protocol), ("sec-websocket-version", "13")] + list(headers)
        self.sid = client.request(path, method="CONNECT", headers=hs, end=False)
        self.st = client.streams[self.sid]
        self.off = 0  # parsed up to here in st.data

    def response(self, timeout=WAIT):
        st = self.st
        self.c.run_until(lambda: st.headers is not None or st.done, timeout,
                         "response to CONNECT on stream %d" % self.sid)
        return st

    def send(self, opcode, data):
        h2_send(self.c, self.sid, Frame(opcode, data).serialize(mask=True))

    def send_text(self, text):
        self.send(OP_TEXT, text.encode())

    def send_close(self, code, reason=""):
        self.send(OP_CLOSE, Close(code, reason).serialize())

    def _parse(self):
        """A whole server (unmasked) frame from st.data, or None."""
        buf = self.st.data
        i = self.off
        if len(buf) - i < 2:
            return None
        b1, b2 = buf[i], buf[i + 1]
        assert not b2 & 0x80, "the server's frame is masked"
        n, i = b2 & 0x7f, i + 2
        if n == 126:
            if len(buf) - i < 2:
                return None
            n, i = struct.unpack(">H", bytes(buf[i:i + 2]))[0], i + 2
        elif n == 127:
            if len(buf) - i < 8:
                return None
            n, i = struct.unpack(">Q", bytes(buf[i:i + 8]))[0], i + 8
        if len(buf) - i < n:
            return None
        payload = bytes(buf[i:i + n])
        self.off = i + n
        if self.off > 1 << 20:  # keep the buffer small
            del buf[:self.off]
            self.off = 0
        return b1 & 0x0f, bool(b1 & 0x80), payload

    def recv_frame(self, timeout=20.0):
        got = []

        def have():
            f = self._parse()
            if f:
                got.append(f)
            return bool(got) or self.st.done

        self.c.run_until(have, timeout, "a WebSocket frame on stream %d" % self.sid)
        if not got:  # the stream ended: a last frame may have come with it
            f = self._parse()
            assert f, "stream %d ended without a frame: %r" % (self.sid, self.st)
            got.append(f)
        return got[0]

    def recv(self, timeout=20.0):
        """The next data message (opcode, payload); a close frame is
        returned as (OP_CLOSE, Close)."""
        opcode, parts = None, []
        while True:
            op, fin, payload = self.recv_frame(timeout)
            if op == OP_CLOSE:
                return OP_CLOSE, Close.parse(payload)
            if op in (OP_PING, OP_PONG):
                continue
            if op != OP_CONT:
                opcode = op
            parts.append(payload)
            if fin:
                return opcode, b"".join(parts)

    def recv_text(self, timeout=20.0):
        op, data = self.recv(timeout)
        assert op == OP_TEXT, (op, data)
        return data.decode()

    def end(self):
        """END_STREAM from the client (the TCP FIN of the tunnel)."""
        if not self.st.done:
            self.c.conn.end_stream(self.sid)
            self.c.flush()

    def wait_done(self, timeout=WAIT):
        st = self.st
        self.c.run_until(lambda: st.done, timeout, "end of stream %d" % self.sid)
        return st


def orderly(st):
    """The stream ended with END_STREAM (RFC 8441 5: an orderly TCP close),
    perhaps followed by RST_STREAM(NO_ERROR), which RFC 9113 8.1 allows."""
    return st.ended and st.reset in (None, U.NO_ERROR)


def h2_client(w, **kw):
    c = H2Client(w.port, tls=w.tls, **kw)
    c.run_until(lambda: c.remote_settings_seen.is_set(), WAIT, "weir's SETTINGS")
    return c


def close_h2(ws, code=1000):
    """The WebSocket closing handshake, client first, in RFC 6455 order:
    Close, the server's Close, the server's end of stream, then ours."""
    ws.send_close(code)
    op, close = ws.recv()
    assert op == OP_CLOSE and close.code == code, (op, close)
    st = ws.wait_done()
    assert orderly(st), st
    ws.end()


def open_ws(c, path="/echo"):
    ws = H2WebSocket(c, path)
    st = ws.response()
    assert st.status == 200, st
    return ws


# ---------------------------------------------------------------------------
# B. Idle limits of tunnels


@pytest.mark.parametrize("proto", ["h1", "h2"])
def test_tunnel_idle_timeout(wsbackend, wsweir, proto):
    """tunnel_idle_timeout = 1s: a tunnel with traffic every 0.2 s for more
    than twice that stays up; once it is quiet, both sides are closed."""
    be = wsbackend()
    w = wsweir(be, server={"tunnel_idle_timeout": "1s"})
    if proto == "h1":
        async def client():
            async with connect(w, "/echo") as ws:
                end = time.monotonic() + 2.2
                n = 0
                while time.monotonic() < end:
                    await ws.send("tick %d" % n)
                    assert await ws.recv() == "tick %d" % n
                    n += 1
                    await asyncio.sleep(0.2)
                with pytest.raises(websockets.ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), WAIT)
                return ws.close_code

        assert run(client()) == 1006
    else:
        c = h2_client(w)
        ws = open_ws(c)
        end = time.monotonic() + 2.2
        n = 0
        while time.monotonic() < end:
            ws.send_text("tick %d" % n)
            assert ws.recv_text() == "tick %d" % n
            n += 1
            c.pump(0.2)
        st = ws.wait_done()
        assert st.ended or st.reset is not None
        # Only the stream ended: the connection carries another tunnel.
        ws2 = open_ws(c)
        ws2.send_text("again")
        assert ws2.recv_text() == "again"
        close_h2(ws2)
        c.close()
    conn = be.conn(0)
    assert conn.done.wait(WAIT), "the backend side of the idle tunnel stayed open"
    assert conn.received >= 5


@pytest.mark.parametrize("proto", ["h1", "h2"])
def test_keepalive_timeout_does_not_cut_a_tunnel(wsbackend, wsweir, proto):
    """keepalive_timeout (1s) is for idle connections between requests: a
    quiet tunnel is governed by tunnel_idle_timeout (default 10m)."""
    be = wsbackend()
    w = wsweir(be, server={"keepalive_timeout": "1s"})
    if proto == "h1":
        async def client():
            async with connect(w, "/echo") as ws:
                await ws.send("before")
                assert await ws.recv() == "before"
                await asyncio.sleep(2.5)
                await ws.send("after")
                assert await ws.recv() == "after"

        run(client())
    else:
        c = h2_client(w)
        ws = open_ws(c)
        ws.send_text("before")
        assert ws.recv_text() == "before"
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            c.pump(0.2)
        assert not ws.st.done and not c.eof and c.goaway is None, (ws.st, c.goaway)
        ws.send_text("after")
        assert ws.recv_text() == "after"
        close_h2(ws)
        c.close()
    assert be.conn(0).received == 2


# ---------------------------------------------------------------------------
# C. RFC 8441: WebSocket over HTTP/2


@pytest.mark.parametrize("tls", [False, True], ids=["h2c", "tls"])
def test_h2_advertises_extended_connect(wsbackend, wsweir, tls):
    w = wsweir(wsbackend(), tls=tls)
    c = h2_client(w)
    try:
        assert c.conn.remote_settings.get(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL) == 1
    finally:
        c.close()


@pytest.mark.parametrize("tls", [False, True], ids=["h2c", "tls"])
def test_h2_websocket_echo(wsbackend, wsweir, tls):
    be = wsbackend()
    w = wsweir(be, tls=tls)
    c = h2_client(w)
    ws = H2WebSocket(c, "/echo?x=1")
    st = ws.response()
    assert st.status == 200, st
    names = [k for k, _ in st.headers]
    assert "sec-websocket-accept" not in names and "upgrade" not in names, st.headers
    assert not st.done
    # What reached the HTTP/1.1 backend: a normal Upgrade with a key.
    conn = be.conn(0)
    assert conn.path == "/echo?x=1"
    assert conn.headers.get("Upgrade", "").lower() == "websocket"
    assert conn.headers.get("Sec-WebSocket-Version") == "13"
    assert len(conn.headers.get("Sec-WebSocket-Key", "")) == 24
    # Messages of every kind and size.
    ws.send_text("h\u00e9llo over h2")
    assert ws.recv_text() == "h\u00e9llo over h2"
    ws.send(OP_BINARY, bytes(range(256)))
    assert ws.recv() == (OP_BINARY, bytes(range(256)))
    big = bytes(range(256)) * (4 * MB // 256)
    ws.send(OP_BINARY, big)  # 64 times the initial stream window
    op, got = ws.recv(timeout=30)
    assert op == OP_BINARY and len(got) == len(big) and got == big
    # 1,000 small messages in one burst.
    burst = b"".join(Frame(OP_TEXT, b"m%d" % i).serialize(mask=True) for i in range(1000))
    h2_send(c, ws.sid, burst)
    for i in range(1000):
        assert ws.recv_text() == "m%d" % i
    # A fragmented message.
    ws.c.conn.send_data(ws.sid, Frame(OP_TEXT, b"frag", fin=False).serialize(mask=True)
                        + Frame(OP_CONT, b"mented").serialize(mask=True))
    c.flush()
    assert ws.recv_text() == "fragmented"
    # The client closes with 1000: the backend answers, then closes its TCP
    # connection first (RFC 6455 7.1.1), which ends the stream in order.
    ws.send_close(1000, "client done")
    op, close = ws.recv()
    assert op == OP_CLOSE and close.code == 1000, close
    st = ws.wait_done()
    assert orderly(st), st
    ws.end()
    assert conn.done.wait(WAIT)
    assert (conn.close_code, conn.close_reason) == (1000, "client done")
    assert conn.received == 1004
    c.close()


def test_h2_backend_close_code_reaches_client(wsbackend, wsweir):
    be = wsbackend()
    w = wsweir(be)
    c = h2_client(w)
    ws = open_ws(c, "/close4001")
    ws.send_text("last")
    assert ws.recv_text() == "last"
    op, close = ws.recv()
    assert op == OP_CLOSE and (close.code, close.reason) == (4001, "bye"), close
    ws.send(OP_CLOSE, Close(4001, "bye").serialize())  # the client's answer
    st = ws.wait_done()  # the backend closed its TCP: the stream ends
    assert orderly(st), st
    ws.end()
    assert be.conn(0).done.wait(WAIT) and be.conn(0).close_code == 4001
    c.close()


def test_h2_backend_drops_tcp(wsbackend, wsweir):
    """The backend's TCP connection closes without a close frame: the
    stream ends with END_STREAM; the connection lives on."""
    be = wsbackend()
    w = wsweir(be)
    c = h2_client(w)
    ws = open_ws(c, "/drop")
    ws.send_text("x")
    assert ws.recv_text() == "x"
    st = ws.wait_done()
    assert orderly(st), st  # a FIN, not a reset
    assert not c.eof and c.goaway is None
    ws2 = open_ws(c)
    ws2.send_text("still here")
    assert ws2.recv_text() == "still here"
    close_h2(ws2)
    c.close()


@pytest.mark.parametrize("how", ["rst_stream", "close_connection"])
def test_h2_client_goes_away(wsbackend, wsweir, how):
    """RST_STREAM on a tunnel, or the client's whole connection closing
    (with two tunnels on it): every backend connection concerned is closed."""
    be = wsbackend()
    w = wsweir(be)
    c = h2_client(w)
    a = open_ws(c)
    b = open_ws(c)
    for ws in (a, b):
        ws.send_text("hi")
        assert ws.recv_text() == "hi"
    assert U.wait_for(lambda: len(be.conns) == 2)
    if how == "rst_stream":
        c.conn.reset_stream(a.sid, error_code=U.CANCEL)
        c.flush()
        assert be.conns[0].done.wait(WAIT), "the backend connection outlived the stream"
        assert be.conns[0].close_code == 1006
        # The other tunnel is unaffected.
        assert not be.conns[1].done.is_set()
        b.send_text("b lives")
        assert b.recv_text() == "b lives"
        close_h2(b)
        c.close()
        assert be.conns[1].done.wait(WAIT) and be.conns[1].close_code == 1000
    else:
        c.sock.close()
        for conn in be.conns:
            assert conn.done.wait(WAIT), "a backend connection outlived the client connection"
            assert conn.close_code == 1006


def test_h2_tunnels_and_requests_share_a_connection(wsbackend, wsweir):
    """Three tunnels interleaved on one connection, with an ordinary GET
    between their messages."""
    be = wsbackend()
    w = wsweir(be)
    c = h2_client(w)
    tunnels = [open_ws(c, "/echo/%d" % i) for i in range(3)]
    for r in range(20):
        for i, ws in enumerate(tunnels):
            ws.send_text("t%d r%d" % (i, r))
        for i, ws in enumerate(tunnels):
            assert ws.recv_text() == "t%d r%d" % (i, r)
    # A plain GET to the websockets server: its answer to a non-WebSocket
    # request (426) comes back on the same connection.
    st = c.get("/plain")
    assert st.status == 426, st
    for ws in tunnels:
        close_h2(ws)
    assert sorted(conn.path for conn in be.conns) == ["/echo/0", "/echo/1", "/echo/2"]
    assert all(conn.done.wait(WAIT) and conn.close_code == 1000 for conn in be.conns)
    c.close()


def test_h2_refused_handshake_passes_status(wsbackend, wsweir):
    """A backend that answers the Upgrade with a refusal: its status goes
    back as is and no tunnel is made."""
    be = wsbackend()
    w = wsweir(be)
    c = h2_client(w)
    ws = H2WebSocket(c, "/forbidden")
    st = ws.response()
    assert st.status == 403, st
    ws.wait_done()
    assert bytes(st.data) == b"no\n"
    assert be.conns == []
    c.close()


def test_h2_connect_for_another_protocol_is_refused(wsbackend, wsweir):
    be = wsbackend()
    w = wsweir(be)
    c = h2_client(w)
    ws = H2WebSocket(c, "/echo", protocol="not-websocket")
    st = ws.response()
    assert st.status == 405, st
    assert be.conns == []
    c.close()


@pytest.mark.parametrize("tls", [False, True], ids=["h2c", "tls"])
def test_h2_client_end_stream_is_a_half_close(wsbackend, wsweir, tls):
    """RFC 8441 5: END_STREAM is the tunnel's orderly TCP FIN. A client that
    sends a message and its Close and then ends its stream must still get
    what the backend sends after that (its Close), and the stream then ends
    in order. (Whether the echo of the last message comes first is up to
    the backend: one that reads both frames at once is already closing and
    may not send it.)"""
    be = wsbackend()
    w = wsweir(be, tls=tls)
    c = h2_client(w)
    ws = open_ws(c)
    c.conn.send_data(ws.sid, Frame(OP_TEXT, b"last words").serialize(mask=True)
                     + Frame(OP_CLOSE, Close(1000, "done").serialize()).serialize(mask=True),
                     end_stream=True)
    c.flush()
    conn = be.conn(0)
    assert conn.done.wait(WAIT) and conn.close_code == 1000
    try:
        op, data = ws.recv()
        if op == OP_TEXT:
            assert data == "last words" or data == b"last words", data
            op, data = ws.recv()
        assert op == OP_CLOSE and data.code == 1000, data
        assert orderly(ws.wait_done()), ws.st
    finally:
        c.close()
