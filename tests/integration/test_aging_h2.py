"""Connection aging over HTTP/2, on both sides, and under load.

Client side: h2_max_connection_age retires a connection the graceful way
(RFC 9113 6.8): a shutdown notice (GOAWAY naming 2^31-1) with a PING, then
on the PING's ACK, or without one after a second, the final GOAWAY naming
the last stream taken. Streams in flight finish; a stream sent after the
final GOAWAY is ignored (the client retries it elsewhere); the connection
closes after its last stream, or at the end of h2_max_connection_age_grace
with what is still open reset. keepalive_requests retires a connection
after N streams. A grpcio channel making calls across the age never sees
a failure.

Upstream side: an HTTP/2 backend connection past max_connection_age or
max_requests takes no new streams: the next call goes on a new connection
(the backend sees a new peer) while a call in flight on the old one
completes.

Load: HTTP/1 and gRPC clients for ~15 s across every limit at once, with
every error counted: none is allowed.

Frames are read with h2util.RawH2 (the h2 package refuses frames after a
GOAWAY, which is what must keep coming). Waits are bounded; a backend gate
(not a clock) decides when a response leaves the backend.
"""
import collections
import http.client
import socket
import threading
import time
from concurrent import futures

import pytest

import backends as B
import h2util as U
from conftest import binary, free_port, require_binary

grpc = pytest.importorskip("grpc", reason="python3-grpcio is needed")
import grpcutil as G  # noqa: E402

NOTICE_SID = 0x7FFFFFFF
AGE = {"h2_max_connection_age": "1s"}


@pytest.fixture
def aweir(tmp_path, start_proc):
    """Factory: aweir(text, threads=2) -> Proc running `weir -c text`;
    @PORT@ is its port."""
    count = [0]

    def start(text, threads=2):
        require_binary("weir")
        port = free_port()
        count[0] += 1
        path = tmp_path / ("aging-%d.toml" % count[0])
        path.write_text(text.replace("@PORT@", str(port)))
        return start_proc([binary("weir"), "-c", str(path), "--threads", str(threads)], port,
                          "weir")

    return start


def at_port(text):
    """A config made for port 0, for aweir to put its port in."""
    return text.replace('"127.0.0.1:0"', '"127.0.0.1:@PORT@"')


def h2conf(backend, **server):
    srv = {"h2c": True}
    srv.update(server)
    return at_port(U.config(0, backend, None, srv))


def read_until(r, pred, ack_pings=True, timeout=20.0, what="frame"):
    """Like RawH2.expect, answering the server's PINGs (as a real client
    does) unless ack_pings is False."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        f = r.read_frame(left) if left > 0 else None
        if f is None:
            raise AssertionError("%s: no %s; frames %r" % (
                "closed" if r.eof else "timed out", what, r.frames))
        if f.type == U.PING and not f.flags & U.ACK and ack_pings:
            r.send_frame(U.PING, U.ACK, 0, f.payload)
        if pred(f):
            return f


class CountingRelay:
    """A TCP relay on loopback in front of weir that counts the
    connections its clients make (how often a gRPC channel reconnected)."""

    def __init__(self, port):
        self.target = port
        self.lock = threading.Lock()
        self.accepted = 0
        self.socks = []
        self.sock = B.listen_socket(backlog=128)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
                u = socket.create_connection(("127.0.0.1", self.target), timeout=10)
            except OSError:
                return
            u.settimeout(None)
            with self.lock:
                self.accepted += 1
                self.socks += [c, u]
            threading.Thread(target=self._pump, args=(c, u), daemon=True).start()
            threading.Thread(target=self._pump, args=(u, c), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                dst.sendall(data)
        except OSError:
            for x in (src, dst):
                try:
                    x.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def connections(self):
        with self.lock:
            return self.accepted

    def close(self):
        self.sock.close()
        with self.lock:
            socks = list(self.socks)
        for x in socks:
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            x.close()


def client_channel(port):
    """A grpcio channel as applications get it: retries on (the default).
    grpcutil.channel turns them off, and then a call still queued in the
    client (no stream id yet) when any GOAWAY arrives fails with
    UNAVAILABLE "GOAWAY received" instead of going to the new connection:
    grpcio's own transparent retry, which no server can stand in for."""
    return grpc.insecure_channel("127.0.0.1:%d" % port,
                                 options=[("grpc.enable_http_proxy", 0)])


def gated(gate, body=b"late\n"):
    def handler(conn, req):
        if req.path != "/fast":
            gate.wait(60)
        conn.send(B.response_head(200, [("Content-Length", str(len(body)))]) + body)
    return handler


def goaways(r):
    return [f for f in r.frames if f.type == U.GOAWAY]


# ---------------------------------------------------------------------------
# Client side


@pytest.mark.parametrize("ack_pings", [True, False], ids=["client-acks-ping", "silent-client"])
def test_age_goaway_lets_the_stream_in_flight_finish(backend, aweir, ack_pings):
    gate = threading.Event()
    b = backend(gated(gate))
    w = aweir(h2conf(b, h2_max_connection_age="1s", h2_max_connection_age_grace="60s"))
    r = U.RawH2(w.port)
    r.send_headers(1, r.request_headers("/slow"))
    assert b.wait_requests(1)
    notice = read_until(r, lambda f: f.type == U.GOAWAY, ack_pings, what="GOAWAY notice")
    assert notice.code == U.NO_ERROR and notice.last_sid == NOTICE_SID, notice
    final = read_until(r, lambda f: f.type == U.GOAWAY, ack_pings, what="final GOAWAY")
    assert final.code == U.NO_ERROR and final.last_sid == 1, final
    # A new stream after the final GOAWAY is not taken: never forwarded,
    # never answered, and it does not keep the connection open.
    r.send_headers(3, r.request_headers("/fast"))
    gate.set()
    headers, body, rst = r.expect_end(1, timeout=30)
    assert rst is None and dict(headers)[":status"] == "200" and body == b"late\n"
    assert r.wait_eof(20), "connection not closed after its last stream: %r" % r.frames
    assert not [f for f in r.frames if f.sid == 3], r.frames
    r.close()
    assert [q.path for q in b.requests] == ["/slow"]
    # The client's retry on a new connection is served.
    r2 = U.RawH2(w.port)
    r2.send_headers(1, r2.request_headers("/fast"))
    headers, body, rst = r2.expect_end(1)
    assert dict(headers)[":status"] == "200" and rst is None
    r2.close()


def test_stream_outlasting_the_grace_is_reset_and_the_connection_closed(backend, aweir):
    gate = threading.Event()
    b = backend(gated(gate))
    w = aweir(h2conf(b, h2_max_connection_age="1s", h2_max_connection_age_grace="1s"))
    try:
        r = U.RawH2(w.port)
        r.send_headers(1, r.request_headers("/forever"))
        assert b.wait_requests(1)
        read_until(r, lambda f: f.type == U.GOAWAY and f.last_sid == 1, what="final GOAWAY")
        rst = read_until(r, lambda f: f.type == U.RST_STREAM and f.sid == 1, what="RST_STREAM",
                         timeout=30)
        assert rst.code == U.CANCEL, rst
        assert r.wait_eof(20), r.frames
        headers, body, _ = r.stream_result(1)
        assert headers is None and body == b""
        r.close()
        assert U.wait_for(lambda: "1 streams still open, reset" in w.stderr()), w.stderr()
    finally:
        gate.set()


def test_keepalive_requests_retires_an_h2_connection(backend, aweir):
    b = backend(B.fixed(b"ok\n"))
    w = aweir(h2conf(b, keepalive_requests=3))
    r = U.RawH2(w.port)
    for sid in (1, 3, 5):
        r.send_headers(sid, r.request_headers("/k%d" % sid))
        headers, body, rst = r.expect_end(sid)
        assert dict(headers)[":status"] == "200" and body == b"ok\n" and rst is None
    final = read_until(r, lambda f: f.type == U.GOAWAY and f.last_sid != NOTICE_SID,
                       what="final GOAWAY")
    assert final.last_sid == 5 and final.code == U.NO_ERROR, final
    assert r.wait_eof(20)
    assert goaways(r)[0].last_sid == NOTICE_SID  # the notice came first
    r.close()


def test_no_age_no_goaway(backend, aweir):
    b = backend(B.fixed(b"ok\n"))
    w = aweir(h2conf(b))
    r = U.RawH2(w.port)
    r.send_headers(1, r.request_headers("/a"))
    r.expect_end(1)
    time.sleep(2.0)  # where an age of 1 s would have retired it
    r.send_headers(3, r.request_headers("/b"))
    headers, _, rst = r.expect_end(3)
    assert dict(headers)[":status"] == "200" and rst is None
    assert not goaways(r), r.frames
    r.close()


def test_grpc_calls_across_the_age_never_fail(aweir):
    gb = G.GrpcBackend("A")
    try:
        w = aweir(at_port(G.config(0, [gb], server={"h2_max_connection_age": "1s",
                                                    "h2_max_connection_age_grace": "5s"})))
        relay = CountingRelay(w.port)
        ch = client_channel(relay.port)
        ok, failed = 0, []
        end = time.monotonic() + 5
        while time.monotonic() < end:
            try:
                assert G.unary(ch, b"x") == b"A:x"
                ok += 1
            except grpc.RpcError as e:
                failed.append(e.code())
        ch.close()
        relay.close()
        assert failed == [], failed
        assert ok > 0
        # The channel went through several connections (each aged) and
        # kept going on each new one.
        assert relay.connections() >= 3, relay.connections()
    finally:
        gb.stop()


# ---------------------------------------------------------------------------
# Upstream side: an HTTP/2 (h2c) backend that tells each call its peer


class PeerBackend:
    """grpcio server: /t.S/Peer answers the caller's address (one per
    connection weir made); /t.S/Hold does the same once `release` is set."""

    def __init__(self):
        self.release = threading.Event()
        self.holding = threading.Event()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                                  options=[("grpc.so_reuseport", 0)])
        backend = self

        class H(grpc.GenericRpcHandler):
            def service(self, details):
                if details.method == "/t.S/Peer":
                    return grpc.unary_unary_rpc_method_handler(backend._peer)
                if details.method == "/t.S/Hold":
                    return grpc.unary_unary_rpc_method_handler(backend._hold)
                return None

        self.server.add_generic_rpc_handlers((H(),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.addr = "127.0.0.1:%d" % self.port
        self.server.start()

    def _peer(self, req, ctx):
        return ctx.peer().encode()

    def _hold(self, req, ctx):
        self.holding.set()
        self.release.wait(30)
        return ctx.peer().encode()

    def stop(self):
        self.release.set()
        self.server.stop(0).wait(10)


@pytest.fixture
def pbackend():
    b = PeerBackend()
    yield b
    b.stop()


def call(ch, method, timeout=15):
    return ch.unary_unary("/t.S/" + method)(b"", timeout=timeout)


def test_h2_upstream_max_connection_age(pbackend, aweir):
    w = aweir(at_port(G.config(0, [pbackend], upstream={"max_connection_age": "1s"})),
              threads=1)
    ch = G.channel(w.port)
    try:
        p1 = call(ch, "Peer")
        assert call(ch, "Peer") == p1  # one connection while young
        held = ch.unary_unary("/t.S/Hold").future(b"", timeout=30)
        assert pbackend.holding.wait(15)
        time.sleep(2.5)  # past 1 s + 10 % jitter
        p2 = call(ch, "Peer")
        assert p2 != p1, "an aged backend connection took a new stream"
        pbackend.release.set()
        # The call in flight on the old connection completes there.
        assert held.result(timeout=20) == p1
        assert call(ch, "Peer") == p2
    finally:
        ch.close()


def test_h2_upstream_max_requests(pbackend, aweir):
    w = aweir(at_port(G.config(0, [pbackend], upstream={"max_requests": 2})), threads=1)
    ch = G.channel(w.port)
    try:
        peers = [call(ch, "Peer") for _ in range(6)]
    finally:
        ch.close()
    assert peers[0] == peers[1] and peers[2] == peers[3] and peers[4] == peers[5], peers
    assert len(set(peers)) == 3, peers


# ---------------------------------------------------------------------------
# Under load


LOAD = """
[servers.s]
addr = "127.0.0.1:@PORT@"
locations = ["g", "h"]
h2c = true
keepalive_requests = 5
keepalive_time = "1s"
h2_max_connection_age = "1s"
h2_max_connection_age_grace = "10s"

[locations.g]
path = "/weir.test.Svc/"
upstream = "g"

[locations.h]
upstream = "h"

[upstreams.g]
addrs = ["@G@"]
alpn = "h2"
max_fails = 0
max_connection_age = "1s"
max_requests = 20

[upstreams.h]
addrs = ["@H@"]
max_fails = 0
max_connection_age = "1s"
max_requests = 3
"""


@pytest.mark.deadline(120)
def test_load_across_every_limit_has_no_error(backend, aweir):
    hb = backend(B.fixed(b"ok\n"))
    gb = G.GrpcBackend("G")
    try:
        w = aweir(LOAD.replace("@G@", gb.addr).replace("@H@", hb.addr))
        stats = collections.Counter()
        errors = []
        lock = threading.Lock()
        end = time.monotonic() + 15

        def h1_client(n):
            conn = http.client.HTTPConnection("127.0.0.1", w.port, timeout=15)
            i = 0
            while time.monotonic() < end:
                i += 1
                try:
                    conn.request("GET", "/h1/%d/%d" % (n, i))
                    r = conn.getresponse()
                    body = r.read()
                    with lock:
                        stats["h1"] += 1
                        if r.status != 200 or body != b"ok\n":
                            errors.append(("h1 status", r.status, body))
                        if (r.getheader("Connection") or "").lower() == "close":
                            stats["h1 close"] += 1
                except Exception as e:  # every socket error counts
                    with lock:
                        errors.append(("h1", repr(e)))
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", w.port, timeout=15)
            conn.close()

        relay = CountingRelay(w.port)

        def grpc_client():
            ch = client_channel(relay.port)
            while time.monotonic() < end:
                try:
                    got = G.unary(ch, b"y")
                    with lock:
                        stats["grpc"] += 1
                        if got != b"G:y":
                            errors.append(("grpc body", got))
                except grpc.RpcError as e:
                    with lock:
                        errors.append(("grpc", e.code(), e.details()))
            ch.close()

        threads = [threading.Thread(target=h1_client, args=(n,)) for n in range(3)]
        threads += [threading.Thread(target=grpc_client) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads)
        relay.close()
        assert errors == [], (errors[:10], len(errors), stats)
        assert stats["h1"] > 0 and stats["grpc"] > 0, stats
        # The limits were reached (not a vacuous pass): closes over HTTP/1,
        # aged connections over HTTP/2, new backend connections.
        assert stats["h1 close"] > 0, stats
        assert relay.connections() >= 3, relay.connections()
        assert hb.connections > 1
    finally:
        gb.stop()
