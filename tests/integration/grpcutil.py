"""gRPC helpers for test_grpc.py: grpcio servers and clients with generic
handlers and raw-bytes messages (no protoc, no generated code), the TOML of
a weir in front of them, and a throw-away CA made with the openssl command
line.

GrpcBackend serves, under /weir.test.Svc/:

  Unary         -> b"NAME:" + request              (counts calls per backend)
  ClientStream  -> b"NAME|" + all requests joined
  ServerStream  request b"N" -> N messages b"NAME:i"
  Slow          one message b"NAME:i" every 50 ms until cancelled (20 s max)
  Bidi          each request r -> b"NAME:" + r
  Sleep         request b"SECONDS" -> sleeps (checking for cancellation), b"slept"
  Meta          sends initial metadata, echoes x-req in trailing metadata
  Abort         trailing metadata + abort(NOT_FOUND, "thing REQUEST not found")

and /grpc.health.v1.Health/Check answering its `health` attribute
(SERVING = b"\\x08\\x01", NOT_SERVING = b"\\x08\\x02"; None fails the call
with UNIMPLEMENTED), recording each request's bytes.

Loopback only; every call has a deadline.
"""
import collections
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent import futures

import grpc

LOOPBACK = "127.0.0.1"
SVC = "/weir.test.Svc/"
HEALTH = "/grpc.health.v1.Health/Check"
SERVING = b"\x08\x01"
NOT_SERVING = b"\x08\x02"
MB = 1 << 20
CALL_TIMEOUT = 15.0

# 4 MB messages are at grpcio's default receive limit: raise it on both ends.
MSG_OPTIONS = [("grpc.max_send_message_length", 64 * MB),
               ("grpc.max_receive_message_length", 64 * MB)]


# ---------------------------------------------------------------------------
# The backend


class _Handler(grpc.GenericRpcHandler):
    def __init__(self, backend):
        self.b = backend

    def service(self, details):
        b = self.b
        m = details.method
        if m == HEALTH:
            return grpc.unary_unary_rpc_method_handler(b._health)
        if not m.startswith(SVC):
            return None
        name = m[len(SVC):]
        with b.lock:
            b.metadata.append(dict(details.invocation_metadata))
        kinds = {
            "Unary": grpc.unary_unary_rpc_method_handler,
            "Sleep": grpc.unary_unary_rpc_method_handler,
            "Meta": grpc.unary_unary_rpc_method_handler,
            "Abort": grpc.unary_unary_rpc_method_handler,
            "ClientStream": grpc.stream_unary_rpc_method_handler,
            "ServerStream": grpc.unary_stream_rpc_method_handler,
            "Slow": grpc.unary_stream_rpc_method_handler,
            "Bidi": grpc.stream_stream_rpc_method_handler,
        }
        make = kinds.get(name)
        if make is None:
            return None
        fn = getattr(b, "_" + name.lower())
        return make(fn)  # no (de)serializers: messages are bytes


class GrpcBackend:
    """A grpcio server on 127.0.0.1 (h2c, or TLS with tls=(cert, key))."""

    def __init__(self, name, tls=None, health=SERVING, workers=16, port=0):
        self.name = name
        self.tag = name.encode()
        self.health = health
        self.lock = threading.Lock()
        self.counts = collections.Counter()  # method -> calls
        self.health_requests = []
        self.metadata = []  # each call's invocation metadata, as a dict
        self.slow_started = threading.Event()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers),
                                  options=MSG_OPTIONS + [("grpc.so_reuseport", 0)])
        self.server.add_generic_rpc_handlers((_Handler(self),))
        if tls:
            with open(tls[0], "rb") as f:
                cert = f.read()
            with open(tls[1], "rb") as f:
                key = f.read()
            creds = grpc.ssl_server_credentials([(key, cert)])
            self.port = self.server.add_secure_port("%s:%d" % (LOOPBACK, port), creds)
        else:
            self.port = self.server.add_insecure_port("%s:%d" % (LOOPBACK, port))
        assert self.port, "grpc server could not bind"
        self.addr = "%s:%d" % (LOOPBACK, self.port)
        self.server.start()
        self.stopped = False

    def stop(self, grace=0):
        if not self.stopped:
            self.stopped = True
            self.server.stop(grace).wait(10)

    def count(self, method="Unary"):
        with self.lock:
            return self.counts[method]

    def _hit(self, method):
        with self.lock:
            self.counts[method] += 1

    # -- methods
    def _health(self, req, ctx):
        with self.lock:
            self.health_requests.append(bytes(req))
        health = self.health
        if health is None:  # a failed call: grpc-status 12
            ctx.abort(grpc.StatusCode.UNIMPLEMENTED, "no health service here")
        return health

    def _unary(self, req, ctx):
        self._hit("Unary")
        return self.tag + b":" + req

    def _clientstream(self, reqs, ctx):
        self._hit("ClientStream")
        return self.tag + b"|" + b"".join(reqs)

    def _serverstream(self, req, ctx):
        self._hit("ServerStream")
        for i in range(int(req)):
            yield b"%s:%d" % (self.tag, i)

    def _slow(self, req, ctx):
        self._hit("Slow")
        self.slow_started.set()
        for i in range(400):
            if not ctx.is_active():
                return
            yield b"%s:%d" % (self.tag, i)
            time.sleep(0.05)

    def _bidi(self, reqs, ctx):
        self._hit("Bidi")
        for r in reqs:
            yield self.tag + b":" + r

    def _sleep(self, req, ctx):
        self._hit("Sleep")
        deadline = time.monotonic() + float(req)
        while time.monotonic() < deadline and ctx.is_active():
            time.sleep(0.02)
        return b"slept"

    def _meta(self, req, ctx):
        self._hit("Meta")
        got = dict(ctx.invocation_metadata())
        ctx.send_initial_metadata([("x-initial", "i1")])
        ctx.set_trailing_metadata([("x-trailer", "t1"), ("x-echo", got.get("x-req", "-")),
                                   ("x-bin-bin", b"\x00\xffbin")])
        return self.tag + b":meta"

    def _abort(self, req, ctx):
        self._hit("Abort")
        ctx.set_trailing_metadata([("x-why", "missing")])
        ctx.abort(grpc.StatusCode.NOT_FOUND, "thing %s not found" % req.decode())


class BackendProcess:
    """A GrpcBackend in a child process, so that it can die for real
    (SIGKILL: its connections are cut, no trailers, no GOAWAY). It exits by
    itself when its stdin closes."""

    def __init__(self, name):
        self.name = name
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), name],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        line = self.proc.stdout.readline()  # the port, once it listens
        if not line.strip().isdigit():
            self.kill()
            raise RuntimeError("backend process did not start: %r %r"
                               % (line, self.proc.stderr.read()))
        self.port = int(line)
        self.addr = "%s:%d" % (LOOPBACK, self.port)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            f.close()

    stop = kill


def _serve_main(name):
    b = GrpcBackend(name)
    sys.stdout.write("%d\n" % b.port)
    sys.stdout.flush()
    sys.stdin.read()  # until the parent closes it (or kills us)
    b.stop()


# ---------------------------------------------------------------------------
# Clients


def channel(port, root_ca=None, name_override="localhost"):
    """A channel to weir: h2c prior knowledge (insecure), or TLS trusting
    root_ca (a path) with the target name overridden."""
    opts = MSG_OPTIONS + [("grpc.enable_http_proxy", 0), ("grpc.enable_retries", 0)]
    target = "%s:%d" % (LOOPBACK, port)
    if root_ca is None:
        return grpc.insecure_channel(target, options=opts)
    with open(root_ca, "rb") as f:
        creds = grpc.ssl_channel_credentials(root_certificates=f.read())
    return grpc.secure_channel(target, creds,
                               options=opts + [("grpc.ssl_target_name_override", name_override)])


def unary(ch, req=b"x", method="Unary", timeout=CALL_TIMEOUT, **kw):
    return ch.unary_unary(SVC + method)(req, timeout=timeout, **kw)


def rpc_error(fn, *args, **kw):
    """Runs a call that must fail; returns the grpc.RpcError."""
    try:
        got = fn(*args, **kw)
    except grpc.RpcError as e:
        return e
    raise AssertionError("call succeeded (%r), an error was expected" % (got,))


def wait_for(pred, timeout=10.0, interval=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return pred()


# ---------------------------------------------------------------------------
# Configuration


def _toml(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[%s]" % ", ".join(_toml(x) for x in v)
    return '"%s"' % v


def _section(name, keys):
    return "[%s]\n%s\n" % (name, "".join("%s = %s\n" % (k, _toml(v)) for k, v in keys.items()))


def config(port, addrs, server=None, location=None, upstream=None, cert=None, extra=""):
    """One server on 127.0.0.1:port (h2c unless cert=(cert, key) makes it
    TLS), one catch-all location "g" (keys in `location`) to upstream "g"
    with `addrs`, alpn h2, no passive ejection (keys in `upstream`).
    `extra`: more TOML appended as is."""
    text = ""
    srv = {"addr": "%s:%d" % (LOOPBACK, port), "locations": ["g"]}
    if cert:
        text += _section("certificates.test", {"cert": cert[0], "key": cert[1]})
        srv["certificates"] = ["test"]
    else:
        srv["h2c"] = True
    srv.update(server or {})
    loc = {"upstream": "g"}
    loc.update(location or {})
    up = {"addrs": [a if isinstance(a, str) else a.addr for a in addrs], "alpn": "h2",
          "max_fails": 0}
    up.update(upstream or {})
    return (text + _section("servers.g", srv) + _section("locations.g", loc)
            + _section("upstreams.g", up) + extra)


# ---------------------------------------------------------------------------
# A test CA and a localhost certificate


def _run(argv, cwd):
    r = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise RuntimeError("%s failed:\n%s%s" % (" ".join(argv), r.stdout, r.stderr))


def make_ca(directory):
    """ca.crt and localhost.crt/.key (localhost, 127.0.0.1, signed by the
    CA) in `directory`; returns a dict of their paths."""
    d = str(directory)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    _run(["openssl", "req", "-x509", "-nodes"] + ec
         + ["-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=weir grpc test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign"], d)
    with open(os.path.join(d, "leaf.ext"), "w") as f:
        f.write("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _run(["openssl", "req", "-new", "-nodes"] + ec
         + ["-keyout", "localhost.key", "-out", "localhost.csr", "-subj", "/CN=localhost"], d)
    _run(["openssl", "x509", "-req", "-in", "localhost.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
          "-CAcreateserial", "-days", "2", "-sha256", "-extfile", "leaf.ext",
          "-out", "localhost.crt"], d)
    return {"ca": os.path.join(d, "ca.crt"), "cert": os.path.join(d, "localhost.crt"),
            "key": os.path.join(d, "localhost.key")}


if __name__ == "__main__":
    _serve_main(sys.argv[1])
