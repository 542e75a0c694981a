"""Test peers for the weir integration suite: a raw-socket HTTP/1.1 backend
whose framing we control byte by byte, and a small HTTP/1.x client-side
response parser.

Only the standard library; loopback only.
"""
import errno
import socket
import threading
import time

LOOPBACK = "127.0.0.1"
IO_TIMEOUT = 30.0


class PeerClosed(Exception):
    """The other side closed the connection before a full message."""


# ---------------------------------------------------------------------------
# A buffered reader over a socket (used by both the backend and the client).


class Reader:
    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise PeerClosed("connection closed")
        self.buf += data

    def readline(self, limit=1 << 20):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[: i + 1])
                del self.buf[: i + 1]
                return line
            if len(self.buf) > limit:
                raise ValueError("line too long")
            self._fill()

    def read_head(self):
        """Reads up to and including the blank line; returns the lines."""
        lines = []
        while True:
            line = self.readline()
            if line in (b"\r\n", b"\n"):
                return lines
            lines.append(line)

    def read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def discard_exact(self, n):
        """Reads and drops n bytes without holding them; returns n."""
        take = min(n, len(self.buf))
        del self.buf[:take]
        left = n - take
        scratch = bytearray(1 << 20)
        view = memoryview(scratch)
        while left:
            got = self.sock.recv_into(view[: min(left, len(scratch))])
            if not got:
                raise PeerClosed("closed with %d bytes left" % left)
            left -= got
        return n

    def read_to_eof(self, sink=None):
        """Reads until EOF; returns the bytes (or the count if sink=False)."""
        out = bytearray(self.buf)
        count = len(self.buf)
        self.buf.clear()
        while True:
            data = self.sock.recv(1 << 20)
            if not data:
                break
            count += len(data)
            if sink is not False:
                out += data
        return count if sink is False else bytes(out)


def parse_headers(lines):
    """[b"Name: value\r\n", ...] -> list of (name, value) str tuples."""
    out = []
    for raw in lines:
        line = raw.rstrip(b"\r\n").decode("latin-1")
        name, _, value = line.partition(":")
        out.append((name, value.strip()))
    return out


class Headers(list):
    """A list of (name, value) with case-insensitive look-ups."""

    def get(self, name, default=None):
        name = name.lower()
        for k, v in self:
            if k.lower() == name:
                return v
        return default

    def get_all(self, name):
        name = name.lower()
        return [v for k, v in self if k.lower() == name]

    def has(self, name):
        return self.get(name) is not None


def read_chunked(reader, sink=True):
    """Reads a chunked body; returns (body or length, trailers Headers)."""
    body = bytearray()
    total = 0
    while True:
        line = reader.readline()
        size = int(line.split(b";")[0].strip(), 16)
        if size == 0:
            break
        if sink:
            body += reader.read_exact(size)
        else:
            reader.discard_exact(size)
        total += size
        if reader.read_exact(2) != b"\r\n":
            raise ValueError("bad chunk terminator")
    trailers = Headers(parse_headers(reader.read_head()))
    return (bytes(body) if sink else total), trailers


# ---------------------------------------------------------------------------
# The backend.


class Request:
    def __init__(self, method, target, version, headers, conn_id):
        self.method = method
        self.path = target
        self.version = version
        self.headers = headers
        self.conn_id = conn_id
        self.body = b""
        self.body_len = 0
        self.chunked = False
        self.trailers = Headers()

    def __repr__(self):
        return "<Request %s %s conn=%d len=%d>" % (self.method, self.path, self.conn_id,
                                                    self.body_len)


class Conn:
    """One accepted backend connection, passed to handlers."""

    def __init__(self, backend, sock, conn_id):
        self.backend = backend
        self.sock = sock
        self.id = conn_id
        self.reader = Reader(sock)
        self.close_after = False

    def send(self, data):
        self.sock.sendall(data)

    def wait_peer_close(self, timeout):
        """Sleeps up to `timeout`; returns True early if the peer closed
        (EOF or reset) meanwhile. Pipelined bytes are buffered, not lost."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(min(left, 0.05))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return True
            finally:
                self.sock.settimeout(IO_TIMEOUT)
            if not data:
                return True
            self.reader.buf += data


def listen_socket(host=LOOPBACK, port=0, backlog=1024, rcvbuf=0):
    """A TCP socket listening on host:port. Port 0 is one from this pytest
    worker's own range (conftest.free_port), not an ephemeral one: a port
    the kernel hands out may have been another worker's backend a moment
    ago, and that worker's weir may still probe or retry it."""
    from conftest import free_port
    for attempt in range(20):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        try:
            s.bind((host, port or free_port()))
        except OSError as e:
            s.close()
            if port or e.errno != errno.EADDRINUSE or attempt == 19:
                raise
            continue
        s.listen(backlog)
        return s


def response_head(status, headers=(), reason=None):
    reasons = {100: "Continue", 103: "Early Hints", 200: "OK", 204: "No Content",
               304: "Not Modified", 404: "Not Found", 500: "Internal Server Error"}
    lines = ["HTTP/1.1 %d %s" % (status, reason or reasons.get(status, "Whatever"))]
    lines += ["%s: %s" % (k, v) for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class Backend:
    """A threaded HTTP/1.1 server on 127.0.0.1 with a pluggable handler.

    handler(conn, req) writes the whole response with conn.send(); it may
    set conn.close_after = True to close the connection afterwards, or
    raise PeerClosed / return "close" to drop it. Records every request
    (method, path, headers, body) and counts accepted TCP connections.
    store_body=False reads request bodies without keeping them (body_len
    still counts them). host and port: where it listens (discovery tests
    put backends on 127.0.0.N, all on one port, behind one A record set).
    """

    def __init__(self, handler=None, store_body=True, name="backend", host=LOOPBACK, port=0):
        self.handler = handler or fixed(b"hello\n")
        self.store_body = store_body
        self.name = name
        self.lock = threading.Lock()
        self.requests = []
        self.connections = 0
        self.closed_by_peer = []  # conn ids the proxy closed (seen as EOF)
        self.heads = 0  # request heads seen (complete requests or not)
        self.bad_framing = []  # requests whose body framing the backend rejected
        self.errors = []
        self.sock = listen_socket(host, port)
        self.port = self.sock.getsockname()[1]
        self.addr = "%s:%d" % (host, self.port)
        self.stopping = False
        self.conns = set()
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    # -- bookkeeping
    def request_count(self):
        with self.lock:
            return len(self.requests)

    def last(self):
        with self.lock:
            return self.requests[-1]

    def wait_requests(self, n, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.request_count() >= n:
                return True
            time.sleep(0.01)
        return False

    def close(self):
        self.stopping = True
        try:
            self.sock.close()
        except OSError:
            pass
        with self.lock:
            conns = list(self.conns)
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    # -- serving
    def _accept_loop(self):
        while not self.stopping:
            try:
                s, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                conn_id = self.connections
                self.conns.add(s)
            threading.Thread(target=self._serve, args=(s, conn_id), daemon=True).start()

    def _serve(self, s, conn_id):
        try:
            s.settimeout(IO_TIMEOUT)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            return  # close() at teardown closed it before this thread ran
        conn = Conn(self, s, conn_id)
        try:
            while not self.stopping:
                try:
                    lines = conn.reader.read_head()
                except PeerClosed:
                    with self.lock:
                        self.closed_by_peer.append(conn_id)
                    return
                while lines and not lines[0].strip():
                    lines.pop(0)  # tolerate a stray CRLF between requests
                if not lines:
                    continue
                method, target, version = lines[0].decode("latin-1").split()
                req = Request(method, target, version, Headers(parse_headers(lines[1:])), conn_id)
                with self.lock:
                    self.heads += 1
                if (req.headers.get("Expect", "").lower() == "100-continue"):
                    conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
                te = req.headers.get("Transfer-Encoding")
                if te is not None:
                    req.chunked = True
                    body, req.trailers = read_chunked(conn.reader, sink=self.store_body)
                    if self.store_body:
                        req.body, req.body_len = body, len(body)
                    else:
                        req.body_len = body
                elif req.headers.has("Content-Length"):
                    n = int(req.headers.get("Content-Length"))
                    if self.store_body:
                        req.body = conn.reader.read_exact(n)
                    else:
                        conn.reader.discard_exact(n)
                    req.body_len = n
                with self.lock:
                    self.requests.append(req)
                if self.handler(conn, req) == "close" or conn.close_after:
                    return
                if (req.headers.get("Connection", "").lower() == "close"
                        or version == "HTTP/1.0"):
                    return
        except (PeerClosed, ConnectionError):
            with self.lock:
                self.closed_by_peer.append(conn_id)
        except socket.timeout:
            pass
        except ValueError as e:  # the proxy forwarded a malformed body
            with self.lock:
                self.bad_framing.append(repr(e))
        except OSError as e:
            # close() shuts sockets under running handlers: EBADF then is
            # the test ending, not a fault.
            if not (self.stopping and e.errno == errno.EBADF):
                with self.lock:
                    self.errors.append(repr(e))
        except Exception as e:  # pragma: no cover - reported by tests
            with self.lock:
                self.errors.append(repr(e))
        finally:
            with self.lock:
                self.conns.discard(s)
            try:
                s.close()
            except OSError:
                pass


# ---------------------------------------------------------------------------
# Handler factories (the backend "modes").


def fixed(body=b"hello\n", status=200, headers=()):
    """Fixed body with Content-Length; HEAD gets the head only."""

    def handler(conn, req):
        hs = [("Content-Length", str(len(body)))] + list(headers)
        hs.append(("X-Backend-Conn", str(conn.id)))
        hs.append(("X-Backend-Port", str(conn.backend.port)))
        conn.send(response_head(status, hs) + (b"" if req.method == "HEAD" else body))

    return handler


def echo():
    """Echoes the request body back; X-Got-Chunked tells how it came."""

    def handler(conn, req):
        hs = [("Content-Length", str(len(req.body))),
              ("X-Got-Chunked", "1" if req.chunked else "0"),
              ("X-Got-Method", req.method)]
        conn.send(response_head(200, hs) + req.body)

    return handler


def chunked(pieces=(b"hello ", b"chunked ", b"world\n"), trailers=(("X-Checksum", "abc123"),)):
    """A chunked response with trailers."""

    def handler(conn, req):
        hs = [("Transfer-Encoding", "chunked")]
        if trailers:
            hs.append(("Trailer", ", ".join(k for k, _ in trailers)))
        out = bytearray(response_head(200, hs))
        for p in pieces:
            out += b"%x\r\n%s\r\n" % (len(p), p)
        out += b"0\r\n"
        for k, v in trailers:
            out += ("%s: %s\r\n" % (k, v)).encode()
        out += b"\r\n"
        conn.send(bytes(out))

    return handler


def slow(delay, body=b"slow\n"):
    """Waits `delay` seconds (watching for the proxy closing) then answers."""

    def handler(conn, req):
        if conn.wait_peer_close(delay):
            with conn.backend.lock:
                conn.backend.closed_by_peer.append(conn.id)
            return "close"
        conn.send(response_head(200, [("Content-Length", str(len(body)))]) + body)

    return handler


def close_mid(announced=100000, sent=1000):
    """Announces `announced` bytes, sends `sent`, then closes."""

    def handler(conn, req):
        conn.send(response_head(200, [("Content-Length", str(announced))]) + b"x" * sent)
        time.sleep(0.05)
        return "close"

    return handler


def close_mid_chunked(sent=1000):
    """Chunked response cut off in the middle of a chunk."""

    def handler(conn, req):
        conn.send(response_head(200, [("Transfer-Encoding", "chunked")])
                  + b"%x\r\n" % (sent * 2) + b"y" * sent)
        time.sleep(0.05)
        return "close"

    return handler


PATTERN = bytes(range(256)) * 4096  # 1 MiB


def huge(n, chunk_size=1 << 20):
    """A body of n bytes generated on the fly (Content-Length)."""

    def handler(conn, req):
        conn.send(response_head(200, [("Content-Length", str(n))]))
        left = n
        view = memoryview(PATTERN)
        while left:
            k = min(left, chunk_size)
            conn.sock.sendall(view[:k])
            left -= k

    return handler


def interim(codes=(103,), status=200, body=b"final\n"):
    """Sends 1xx interim responses before the final one."""

    def handler(conn, req):
        out = b""
        for c in codes:
            out += response_head(c, [("Link", "</style.css>; rel=preload")] if c == 103 else [])
        out += response_head(status, [("Content-Length", str(len(body)))]) + body
        conn.send(out)

    return handler


def no_body(status):
    """204 or 304 (no body, no Content-Length for 204)."""

    def handler(conn, req):
        hs = [("ETag", '"v1"')] if status == 304 else []
        conn.send(response_head(status, hs))

    return handler


# ---------------------------------------------------------------------------
# Client side.


class Response:
    def __init__(self, status, reason, version, headers, body, trailers, framing):
        self.status = status
        self.reason = reason
        self.version = version
        self.headers = headers
        self.body = body
        self.trailers = trailers
        self.framing = framing  # "length", "chunked", "close" or "none"
        self.interim = []

    def __repr__(self):
        return "<Response %d %s %s len=%s>" % (self.status, self.framing, self.headers,
                                               len(self.body) if isinstance(self.body, bytes)
                                               else self.body)


def read_response(reader, method="GET", keep_interim=False, sink=True):
    """Reads one response (skipping 1xx unless keep_interim) from reader.
    sink=False: count body bytes instead of keeping them."""
    interim = []
    while True:
        lines = reader.read_head()
        status_line = lines[0].decode("latin-1").rstrip("\r\n")
        version, code, *reason = status_line.split(" ", 2)
        status = int(code)
        headers = Headers(parse_headers(lines[1:]))
        if 100 <= status < 200:
            interim.append((status, headers))
            if keep_interim:
                r = Response(status, reason[0] if reason else "", version, headers, b"", Headers(),
                             "none")
                return r
            continue
        break
    trailers = Headers()
    if method == "HEAD" or status in (204, 304):
        body, framing = (b"" if sink else 0), "none"
    elif headers.get("Transfer-Encoding", "").lower().endswith("chunked"):
        body, trailers = read_chunked(reader, sink=sink)
        framing = "chunked"
    elif headers.has("Content-Length"):
        n = int(headers.get("Content-Length"))
        body = reader.read_exact(n) if sink else reader.discard_exact(n)
        framing = "length"
    else:
        body = reader.read_to_eof(sink=None if sink else False)
        framing = "close"
    r = Response(status, reason[0] if reason else "", version, headers, body, trailers, framing)
    r.interim = interim
    return r


def connect(port, timeout=IO_TIMEOUT):
    s = socket.create_connection((LOOPBACK, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def request(port, raw, method="GET", timeout=IO_TIMEOUT):
    """Sends raw bytes on a new connection, returns the parsed response."""
    s = connect(port, timeout)
    try:
        s.sendall(raw)
        return read_response(Reader(s), method)
    finally:
        s.close()


def get(port, path="/", headers=(), timeout=IO_TIMEOUT, method="GET", close=True):
    hs = "".join("%s: %s\r\n" % kv for kv in headers)
    raw = ("%s %s HTTP/1.1\r\nHost: test.local\r\n%s%s\r\n"
           % (method, path, hs, "Connection: close\r\n" if close else "")).encode("latin-1")
    return request(port, raw, method, timeout)


def closed_after(sock, timeout=5.0):
    """True if the peer closes the connection (EOF or reset) within timeout,
    after any pending bytes are drained."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(65536)
        except socket.timeout:
            return False
        except OSError:
            return True
        if not data:
            return True
    return False
