"""gRPC through weir: grpcio clients (h2c prior knowledge, or TLS with ALPN
h2) -> weir -> grpcio servers over h2c or h2 over TLS (`alpn = "h2"`).

A. the four call shapes, 4 MB messages, metadata, trailers and statuses;
B. per-call balancing: one channel's calls spread over every backend;
C. a backend killed in the middle of a server stream;
D. errors weir answers itself, in gRPC's terms (UNAVAILABLE,
   DEADLINE_EXCEEDED, UNIMPLEMENTED);
E. grpc_idle_timeout: a quiet stream outlives the upstream read_timeout;
F. grpc.health.v1 active checks;
G. TLS on both sides.

Helpers are in grpcutil.py. Messages are raw bytes (generic handlers, no
protoc). Every call has a deadline; waits are bounded polls.
"""
import queue
import shutil
import time

import pytest

grpc = pytest.importorskip("grpc", reason="python3-grpcio is needed")

import grpcutil as G  # noqa: E402
from conftest import binary, closed_port, free_port, require_binary  # noqa: E402

SC = grpc.StatusCode
MB = G.MB


# ---------------------------------------------------------------------------
# Fixtures


@pytest.fixture
def gbackend():
    """Factory: gbackend(name, tls=None, health=SERVING) -> GrpcBackend,
    stopped at teardown."""
    made = []

    def make(name, **kw):
        b = G.GrpcBackend(name, **kw)
        made.append(b)
        return b

    yield make
    for b in made:
        b.stop()


@pytest.fixture
def gweir(tmp_path, start_proc):
    """Factory: gweir(addrs, **grpcutil.config keywords) -> Proc running
    `weir -c` with that configuration (Proc.port, Proc.config_text)."""
    count = [0]

    def start(addrs, **kw):
        require_binary("weir")
        port = free_port()
        count[0] += 1
        text = G.config(port, addrs, **kw)
        path = tmp_path / ("weir-grpc-%d.toml" % count[0])
        path.write_text(text)
        p = start_proc([binary("weir"), "-c", str(path), "--threads", "2"], port, "weir")
        p.config_text = text
        return p

    return start


@pytest.fixture
def chan(start_proc):
    """Factory: chan(port, root_ca=None) -> grpc.Channel, closed before weir
    is stopped (this fixture is set up after start_proc, torn down before)."""
    made = []

    def make(port, **kw):
        c = G.channel(port, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    if not shutil.which("openssl"):
        pytest.skip("openssl command not found")
    return G.make_ca(tmp_path_factory.mktemp("grpc-pki"))


def served_by(msgs):
    return {bytes(m).split(b":")[0].decode() for m in msgs}


# ---------------------------------------------------------------------------
# A. Call shapes, sizes, metadata, statuses


def test_unary(gbackend, gweir, chan):
    b = gbackend("A")
    w = gweir([b])
    ch = chan(w.port)
    assert G.unary(ch, b"hello") == b"A:hello"
    assert G.unary(ch, b"") == b"A:"  # an empty message is a 5-byte frame
    assert b.count("Unary") == 2


def test_client_streaming(gbackend, gweir, chan):
    b = gbackend("A")
    w = gweir([b])
    ch = chan(w.port)
    parts = [b"part-%03d;" % i for i in range(100)]
    got = ch.stream_unary(G.SVC + "ClientStream")(iter(parts), timeout=G.CALL_TIMEOUT)
    assert got == b"A|" + b"".join(parts)


def test_server_streaming(gbackend, gweir, chan):
    b = gbackend("A")
    w = gweir([b])
    ch = chan(w.port)
    got = list(ch.unary_stream(G.SVC + "ServerStream")(b"300", timeout=G.CALL_TIMEOUT))
    assert got == [b"A:%d" % i for i in range(300)]


def test_bidi_ping_pong(gbackend, gweir, chan):
    """Each request is sent only after the previous answer came back: the
    stream must be relayed message by message both ways, not buffered."""
    b = gbackend("A")
    w = gweir([b])
    ch = chan(w.port)
    q = queue.Queue()

    def requests():
        while True:
            item = q.get(timeout=G.CALL_TIMEOUT)
            if item is None:
                return
            yield item

    n = 200
    call = ch.stream_stream(G.SVC + "Bidi")(requests(), timeout=30)
    for i in range(n):
        q.put(b"ping %d" % i)
        assert next(call) == b"A:ping %d" % i
    q.put(None)
    assert list(call) == []
    assert call.code() == SC.OK


def test_large_messages(gbackend, gweir, chan):
    """A 4 MB request and a 4 MB response (more than any HTTP/2 window)."""
    b = gbackend("A")
    w = gweir([b])
    ch = chan(w.port)
    req = bytes(range(256)) * (4 * MB // 256)
    got = G.unary(ch, req, timeout=30)
    assert len(got) == 2 + len(req) and got == b"A:" + req
    # A stream of large messages in both directions.
    reqs = [bytes([i]) * (4 * MB) for i in range(3)]
    got = list(ch.stream_stream(G.SVC + "Bidi")(iter(reqs), timeout=60))
    assert [len(m) for m in got] == [2 + 4 * MB] * 3
    assert all(m == b"A:" + r for m, r in zip(got, reqs))


def test_metadata_and_trailers(gbackend, gweir, chan):
    b = gbackend("A")
    w = gweir([b])
    ch = chan(w.port)
    resp, call = ch.unary_unary(G.SVC + "Meta").with_call(
        b"", timeout=G.CALL_TIMEOUT, metadata=[("x-req", "from client")])
    assert resp == b"A:meta"
    initial = dict(call.initial_metadata())
    trailing = dict(call.trailing_metadata())
    assert initial.get("x-initial") == "i1", initial
    assert trailing.get("x-trailer") == "t1", trailing
    assert trailing.get("x-echo") == "from client", trailing
    assert trailing.get("x-bin-bin") == b"\x00\xffbin", trailing
    assert call.code() == SC.OK


def test_abort_status_details_and_trailers(gbackend, gweir, chan):
    b = gbackend("A")
    w = gweir([b])
    ch = chan(w.port)
    e = G.rpc_error(G.unary, ch, b"42 (100% \xc3\xa9t\xc3\xa9)", method="Abort")
    assert e.code() == SC.NOT_FOUND, (e.code(), e.details())
    # grpc-message is percent-encoded on the wire: it must pass unchanged.
    assert e.details() == "thing 42 (100% \u00e9t\u00e9) not found", e.details()
    assert dict(e.trailing_metadata()).get("x-why") == "missing", e.trailing_metadata()
    assert b.count("Abort") == 1


# ---------------------------------------------------------------------------
# B. Per-call balancing


def test_calls_of_one_channel_spread_over_backends(gbackend, gweir, chan):
    a, b = gbackend("A"), gbackend("B")
    w = gweir([a, b])
    ch = chan(w.port)
    seen = [G.unary(ch, b"%d" % i) for i in range(20)]
    assert a.count() + b.count() == 20
    assert a.count() > 0 and b.count() > 0, "one channel's calls all went to one backend: " \
        "A %d, B %d" % (a.count(), b.count())
    assert served_by(seen) == {"A", "B"}
    # 40 calls in flight at once on the same connection.
    futs = [ch.unary_unary(G.SVC + "Unary").future(b"c%d" % i, timeout=G.CALL_TIMEOUT)
            for i in range(40)]
    results = [f.result() for f in futs]
    assert sorted(r.split(b":", 1)[1] for r in results) == sorted(b"c%d" % i for i in range(40))
    assert served_by(results) == {"A", "B"}
    assert a.count() + b.count() == 60


# ---------------------------------------------------------------------------
# C. A backend killed mid-stream


@pytest.mark.parametrize("how", ["stop", "sigkill"])
def test_backend_killed_mid_stream(gbackend, gweir, chan, how):
    """stop: grpcio's server.stop(0), which cancels the call with trailers
    of its own; sigkill: the backend process dies and its connection is
    simply cut, so weir must end the client's stream itself."""
    if how == "stop":
        backends = {"A": gbackend("A"), "B": gbackend("B")}
    else:
        backends = {"A": G.BackendProcess("A"), "B": G.BackendProcess("B")}
    try:
        _killed_mid_stream(gweir, chan, backends)
    finally:
        for b in backends.values():
            b.stop()


def _killed_mid_stream(gweir, chan, backends):
    w = gweir(list(backends.values()))
    ch = chan(w.port)
    deadline = 20.0
    start = time.monotonic()
    call = ch.unary_stream(G.SVC + "Slow")(b"", timeout=deadline)
    first = next(call)
    victim = first.split(b":")[0].decode()
    survivor = "B" if victim == "A" else "A"
    assert next(call) == b"%s:1" % victim.encode()
    backends[victim].stop()
    got = []
    try:
        for m in call:
            got.append(m)
            assert len(got) < 400, "the stream went on after its backend stopped"
        raise AssertionError("the stream ended with OK after its backend was stopped "
                             "(%d more messages)" % len(got))
    except grpc.RpcError as e:
        code, details = e.code(), e.details()
    elapsed = time.monotonic() - start
    # The client is told, rather than left waiting for its own deadline.
    assert code != SC.OK
    assert code != SC.DEADLINE_EXCEEDED and elapsed < deadline - 1, \
        "the call hung until its deadline (%s %r after %.1f s)" % (code, details, elapsed)
    assert code in (SC.UNAVAILABLE, SC.INTERNAL, SC.CANCELLED, SC.UNKNOWN, SC.ABORTED), \
        (code, details)
    # New calls go to the backend that is left.
    after = [G.unary(ch, b"after %d" % i) for i in range(6)]
    assert served_by(after) == {survivor}, after


# ---------------------------------------------------------------------------
# D. Errors weir answers in gRPC's terms


def test_refused_backend_is_unavailable(gweir, chan):
    w = gweir([G.LOOPBACK + ":%d" % closed_port()])
    ch = chan(w.port)
    e = G.rpc_error(G.unary, ch, b"x")
    assert e.code() == SC.UNAVAILABLE, (e.code(), e.details())
    # A streaming call gets the same answer.
    e = G.rpc_error(lambda: list(ch.unary_stream(G.SVC + "ServerStream")(
        b"3", timeout=G.CALL_TIMEOUT)))
    assert e.code() == SC.UNAVAILABLE, (e.code(), e.details())


def test_empty_upstream_is_unavailable(gweir, chan):
    w = gweir([])
    ch = chan(w.port)
    e = G.rpc_error(G.unary, ch, b"x")
    assert e.code() == SC.UNAVAILABLE, (e.code(), e.details())


def test_upstream_read_timeout_is_deadline_exceeded(gbackend, gweir, chan):
    b = gbackend("A")
    w = gweir([b], upstream={"read_timeout": "1s"})
    ch = chan(w.port)
    client_deadline = 20.0
    start = time.monotonic()
    e = G.rpc_error(G.unary, ch, b"5", method="Sleep", timeout=client_deadline)
    elapsed = time.monotonic() - start
    assert e.code() == SC.DEADLINE_EXCEEDED, (e.code(), e.details())
    # weir's answer, not the client's own deadline.
    assert elapsed < client_deadline - 5, elapsed
    assert b.count("Sleep") == 1
    # The next call on the same channel is fine.
    assert G.unary(ch, b"next") == b"A:next"


@pytest.mark.parametrize("location", [{"path": "/weir.test.Other/"},
                                      {"host": "nowhere.test"}], ids=["path", "host"])
def test_no_matching_location_is_unimplemented(gbackend, gweir, chan, location):
    b = gbackend("A")
    w = gweir([b], location=location)
    ch = chan(w.port)
    e = G.rpc_error(G.unary, ch, b"x")
    assert e.code() == SC.UNIMPLEMENTED, (e.code(), e.details())
    # weir answered (grpcio's own answer would be "Method not found!").
    assert b.count("Unary") == 0 and "Method not found" not in (e.details() or "")


# ---------------------------------------------------------------------------
# E. grpc_idle_timeout


@pytest.mark.parametrize("idle", ["1m", None], ids=["grpc_idle_timeout", "read_timeout"])
def test_quiet_bidi_stream(gbackend, gweir, chan, idle):
    """A bidi stream quiet for twice the upstream read_timeout: kept with
    grpc_idle_timeout, cut without it."""
    b = gbackend("A")
    w = gweir([b], upstream={"read_timeout": "1s"},
              location={"grpc_idle_timeout": idle} if idle else None)
    ch = chan(w.port)
    q = queue.Queue()

    def requests():
        while True:
            item = q.get(timeout=30)
            if item is None:
                return
            yield item

    client_deadline = 15.0
    start = time.monotonic()
    call = ch.stream_stream(G.SVC + "Bidi")(requests(), timeout=client_deadline)
    q.put(b"before")
    assert next(call) == b"A:before"
    time.sleep(2.0)  # 2 x read_timeout with no byte either way
    q.put(b"after")
    if idle:
        assert next(call) == b"A:after"
        q.put(None)
        assert list(call) == [] and call.code() == SC.OK
    else:
        e = G.rpc_error(next, call)
        elapsed = time.monotonic() - start
        # Cut by weir, not by the client's own deadline.
        assert e.code() != SC.OK and elapsed < client_deadline - 5, (e.code(), e.details(),
                                                                     elapsed)
        q.put(None)


# ---------------------------------------------------------------------------
# F. grpc.health.v1 checks


HC = {"health_check": "grpc://", "health_check_interval": "200ms", "health_check_fall": 1,
      "health_check_rise": 1, "health_check_timeout": "2s"}


def wait_log(w, text, timeout=10.0):
    assert G.wait_for(lambda: text in w.stderr(), timeout), \
        "weir never logged %r\n%s" % (text, w.stderr()[-3000:])


def poll_calls_until(ch, name, timeout=10.0):
    """Makes calls until one is served by backend `name`; True if one was."""
    return G.wait_for(lambda: G.unary(ch, b"poll").startswith(name.encode() + b":"), timeout,
                      interval=0.05)


@pytest.mark.parametrize("bad", ["not_serving", "grpc_error"])
def test_health_check_takes_backend_out_and_back(gbackend, gweir, chan, bad):
    a = gbackend("A", health=G.NOT_SERVING if bad == "not_serving" else None)
    b = gbackend("B")
    w = gweir([a, b], upstream=HC)
    ch = chan(w.port)
    wait_log(w, "backend %s is unhealthy" % a.addr)
    assert G.wait_for(lambda: len(b.health_requests) >= 2)
    before = a.count()
    got = [G.unary(ch, b"%d" % i) for i in range(10)]
    assert served_by(got) == {"B"}, got
    assert a.count() == before
    # The check asks about the whole server: an empty HealthCheckRequest.
    assert set(b.health_requests) == {b""}, b.health_requests[:3]
    # A recovers: it is checked again and gets calls.
    a.health = G.SERVING
    assert poll_calls_until(ch, "A"), "backend A never got calls after turning SERVING"
    assert "backend %s is healthy again" % a.addr in w.stderr()
    assert "backend %s is unhealthy" % b.addr not in w.stderr()


def test_health_check_service_name_and_refused_backend(gbackend, gweir, chan):
    """grpc://SERVICE sends the name; a backend that refuses connections is
    unhealthy, and turns healthy once a server listens on its port."""
    a_port = closed_port()
    b = gbackend("B")
    hc = dict(HC, health_check="grpc://weir.test.Svc")
    w = gweir([G.LOOPBACK + ":%d" % a_port, b], upstream=hc)
    ch = chan(w.port)
    wait_log(w, "backend %s:%d is unhealthy" % (G.LOOPBACK, a_port))
    got = [G.unary(ch, b"%d" % i) for i in range(6)]
    assert served_by(got) == {"B"}
    assert G.wait_for(lambda: b.health_requests)
    name = b"weir.test.Svc"
    assert b.health_requests[0] == b"\x0a" + bytes([len(name)]) + name, b.health_requests[0]
    # A server comes up on A's port.
    a = gbackend("A", port=a_port)
    assert poll_calls_until(ch, "A"), "backend A never got calls after it came up"
    assert a.health_requests and a.health_requests[0].endswith(name)
    assert "backend %s is healthy again" % a.addr in w.stderr()


# ---------------------------------------------------------------------------
# G. TLS


def test_tls_both_sides(gbackend, gweir, chan, pki):
    b = gbackend("T", tls=(pki["cert"], pki["key"]))
    w = gweir([b], cert=(pki["cert"], pki["key"]),
              upstream={"tls": True, "ca_file": pki["ca"], "sni": "localhost"})
    ch = chan(w.port, root_ca=pki["ca"])
    assert G.unary(ch, b"over tls") == b"T:over tls"
    got = list(ch.unary_stream(G.SVC + "ServerStream")(b"5", timeout=G.CALL_TIMEOUT))
    assert got == [b"T:%d" % i for i in range(5)]
    resp, call = ch.unary_unary(G.SVC + "Meta").with_call(
        b"", timeout=G.CALL_TIMEOUT, metadata=[("x-req", "tls")])
    assert dict(call.trailing_metadata()).get("x-echo") == "tls"
    assert b.count("Unary") == 1 and b.count("ServerStream") == 1
