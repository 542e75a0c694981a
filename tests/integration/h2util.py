"""HTTP/2 helpers for the weir integration suite (test_h2.py).

- make_cert(): a self-signed certificate for 127.0.0.1/localhost, made with
  the openssl command line into a directory of the caller's.
- config(): the TOML of one weir server (h2c or TLS) in front of backends.
- H2Client: a client on python3-h2 (h2.connection, client_side=True) over a
  plain or TLS socket; it answers flow control and PINGs itself, records
  every stream's response, and can upload bodies paced by the peer's window.
- RawH2: frames written and read byte by byte (struct), with its own HPACK
  encoder and decoder, for malformed input and floods that h2 would refuse
  to produce.
- StreamBackend: an HTTP/1.1 backend whose handler reads the request body
  itself (slowly, gated, hashed), which backends.Backend cannot do since
  it reads whole bodies before calling its handler.

Loopback only; every wait is bounded.
"""
import hashlib
import re
import socket
import ssl
import struct
import subprocess
import threading
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import hpack

import backends as B

LOOPBACK = B.LOOPBACK
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113 6)
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, \
    WINDOW_UPDATE, CONTINUATION = range(10)
FRAME_NAMES = ["DATA", "HEADERS", "PRIORITY", "RST_STREAM", "SETTINGS", "PUSH_PROMISE", "PING",
               "GOAWAY", "WINDOW_UPDATE", "CONTINUATION"]

# Flags
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# Error codes (RFC 9113 7)
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
SETTINGS_TIMEOUT = 0x4
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9
CONNECT_ERROR = 0xa
ENHANCE_YOUR_CALM = 0xb

ERROR_NAMES = {v: k for k, v in dict(
    NO_ERROR=0, PROTOCOL_ERROR=1, INTERNAL_ERROR=2, FLOW_CONTROL_ERROR=3, SETTINGS_TIMEOUT=4,
    STREAM_CLOSED=5, FRAME_SIZE_ERROR=6, REFUSED_STREAM=7, CANCEL=8, COMPRESSION_ERROR=9,
    CONNECT_ERROR=10, ENHANCE_YOUR_CALM=11, INADEQUATE_SECURITY=12,
    HTTP_1_1_REQUIRED=13).items()}

# SETTINGS identifiers
S_HEADER_TABLE_SIZE = 0x1
S_ENABLE_PUSH = 0x2
S_MAX_CONCURRENT_STREAMS = 0x3
S_INITIAL_WINDOW_SIZE = 0x4
S_MAX_FRAME_SIZE = 0x5
S_MAX_HEADER_LIST_SIZE = 0x6

IO_TIMEOUT = 30.0


def error_name(code):
    return "%s(0x%x)" % (ERROR_NAMES.get(code, "UNKNOWN"), code)


# ---------------------------------------------------------------------------
# Certificates and configuration


def make_cert(directory):
    """A self-signed EC certificate for localhost and 127.0.0.1 in
    `directory`; returns (cert_path, key_path)."""
    cert = str(directory / "h2-cert.pem")
    key = str(directory / "h2-key.pem")
    r = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise RuntimeError("openssl failed:\n%s%s" % (r.stdout, r.stderr))
    return cert, key


def _toml(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[%s]" % ", ".join(_toml(x) for x in v)
    return '"%s"' % v


def config(port, routes, cert=None, server=None, upstream=None):
    """One server on 127.0.0.1:port. routes: a backend (everything goes to
    it) or {path_prefix: backend}; a backend may be "echo" (a location
    answered by weir itself). cert: (cert, key) for a TLS server,
    None for a plain one. server/upstream: extra keys of those sections."""
    if not isinstance(routes, dict):
        routes = {"/": routes}
    text = ""
    srv = {"addr": "127.0.0.1:%d" % port,
           "locations": ["l%d" % i for i in range(len(routes))]}
    if cert:
        text += '[certificates.test]\ncert = "%s"\nkey = "%s"\n\n' % cert
        srv["certificates"] = ["test"]
    srv.update(server or {})
    text += "[servers.h2]\n" + "".join("%s = %s\n" % (k, _toml(v)) for k, v in srv.items())
    for i, (prefix, b) in enumerate(routes.items()):
        text += '\n[locations.l%d]\n' % i
        if prefix != "/":
            text += 'path = "%s"\n' % prefix
        if b == "echo":  # the built-in echo answer, no upstream
            text += "echo = true\n"
            continue
        text += 'upstream = "u%d"\n' % i
        up = {"addrs": [b if isinstance(b, str) else b.addr], "max_fails": 0}
        up.update(upstream or {})
        text += "\n[upstreams.u%d]\n" % i
        text += "".join("%s = %s\n" % (k, _toml(v)) for k, v in up.items())
    return text


def wait_for(pred, timeout=10.0, interval=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return pred()


def connect(port, tls=False, alpn=("h2",), timeout=IO_TIMEOUT):
    """A socket to weir; with tls, wrapped with ALPN `alpn` (no verification:
    the tests are about HTTP/2, test_tls.py is about certificates)."""
    s = socket.create_connection((LOOPBACK, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(list(alpn))
        s = ctx.wrap_socket(s, server_hostname="localhost")
    return s


# ---------------------------------------------------------------------------
# A client on h2.connection


class Stream:
    def __init__(self, sid):
        self.id = sid
        self.headers = None  # response headers [(name, value)], str
        self.headers_ended_stream = False
        self.informational = []
        self.data = bytearray()
        self.data_frames = 0
        self.trailers = None
        self.ended = False
        self.reset = None  # error code of a RST_STREAM from the server
        self.upload = None  # [memoryview, offset, end_stream]
        self.sent = 0  # request body bytes handed to h2

    @property
    def status(self):
        return int(self.header(":status")) if self.headers else None

    def header(self, name):
        for k, v in self.headers or ():
            if k == name:
                return v
        return None

    def header_all(self, name):
        return [v for k, v in self.headers or () if k == name]

    @property
    def done(self):
        return self.ended or self.reset is not None

    def __repr__(self):
        return "<Stream %d status=%s len=%d ended=%s reset=%s sent=%d>" % (
            self.id, self.status, len(self.data), self.ended,
            None if self.reset is None else error_name(self.reset), self.sent)


class H2Client:
    """An HTTP/2 client connection to weir (h2c with prior knowledge, or TLS
    with ALPN h2). settings: extra local SETTINGS sent right after the
    preface. ack_data=False leaves flow control to the test (the windows
    only open with open_window())."""

    def __init__(self, port, tls=False, settings=None, ack_data=True, authority=None,
                 timeout=IO_TIMEOUT):
        self.port = port
        self.tls = tls
        self.sock = connect(port, tls=tls, timeout=timeout)
        if tls:
            self.alpn = self.sock.selected_alpn_protocol()
            assert self.alpn == "h2", "ALPN chose %r, not h2" % self.alpn
        self.authority = authority or "localhost:%d" % port
        self.ack_data = ack_data
        cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config=cfg)
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        self.streams = {}
        self.events = []
        self.goaway = None  # h2.events.ConnectionTerminated
        self.eof = False
        self.settings_acked = 0
        self.pings = []
        self.remote_settings_seen = threading.Event()
        self.flush()

    # -- output
    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    # -- requests
    def request(self, path="/", method="GET", headers=(), body=None, end=None, scheme=None,
                content_length=True):
        """Opens a stream. body: bytes sent as the window allows while the
        client pumps (content-length added unless content_length=False).
        end=False keeps the stream open after the head/body."""
        sid = self.conn.get_next_available_stream_id()
        hs = [(":method", method), (":scheme", scheme or ("https" if self.tls else "http")),
              (":authority", self.authority), (":path", path)]
        if body is not None and content_length:
            hs.append(("content-length", str(len(body))))
        hs += list(headers)
        st = Stream(sid)
        self.streams[sid] = st
        if end is None:
            end = True
        self.conn.send_headers(sid, hs, end_stream=end and body is None)
        if body is not None:
            st.upload = [memoryview(body), 0, end]
            self._feed()
        self.flush()
        return sid

    def _feed(self):
        for st in self.streams.values():
            up = st.upload
            if up is None or st.done:
                continue
            view, off, end = up
            while off < len(view):
                try:
                    window = self.conn.local_flow_control_window(st.id)
                except h2.exceptions.StreamClosedError:
                    st.upload = None
                    break
                n = min(window, self.conn.max_outbound_frame_size, len(view) - off)
                if n <= 0:
                    break
                last = off + n == len(view)
                self.conn.send_data(st.id, view[off:off + n].tobytes(),
                                    end_stream=last and end)
                off += n
                st.sent = off
                up[1] = off
            if off >= len(view):
                if len(view) == 0 and end:
                    self.conn.end_stream(st.id)
                st.upload = None

    def open_window(self, sid, n):
        """WINDOW_UPDATE n on the stream and on the connection."""
        self.conn.increment_flow_control_window(n, stream_id=sid)
        self.conn.increment_flow_control_window(n)
        self.flush()

    def ping(self, payload=b"12345678"):
        self.conn.ping(payload)
        self.flush()

    # -- input
    def pump(self, timeout=1.0):
        """Reads once (up to timeout) and handles what came. Returns False
        on timeout, True otherwise (EOF sets self.eof)."""
        if self.eof:
            return True
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 20)
        except socket.timeout:
            return False
        except (ConnectionResetError, ssl.SSLError, OSError):
            data = b""
        finally:
            self.sock.settimeout(IO_TIMEOUT)
        if not data:
            self.eof = True
            return True
        events = self.conn.receive_data(data)
        for ev in events:
            self._event(ev)
        self._feed()
        self.flush()
        return True

    def _event(self, ev):
        self.events.append(ev)
        sid = getattr(ev, "stream_id", None)
        st = self.streams.get(sid) if sid else None
        if isinstance(ev, h2.events.ResponseReceived):
            st.headers = ev.headers
            st.headers_ended_stream = ev.stream_ended is not None
        elif isinstance(ev, h2.events.InformationalResponseReceived):
            st.informational.append(ev.headers)
        elif isinstance(ev, h2.events.DataReceived):
            st.data += ev.data
            st.data_frames += 1
            if self.ack_data and ev.flow_controlled_length:
                try:
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                except h2.exceptions.StreamClosedError:
                    pass
        elif isinstance(ev, h2.events.TrailersReceived):
            st.trailers = ev.headers
        elif isinstance(ev, h2.events.StreamEnded):
            st.ended = True
        elif isinstance(ev, h2.events.StreamReset):
            if st is not None:
                st.reset = ev.error_code
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = ev
        elif isinstance(ev, h2.events.SettingsAcknowledged):
            self.settings_acked += 1
        elif isinstance(ev, h2.events.RemoteSettingsChanged):
            self.remote_settings_seen.set()
        elif isinstance(ev, h2.events.PingAckReceived):
            self.pings.append(ev.ping_data)

    def run_until(self, pred, timeout=20.0, what="condition"):
        deadline = time.monotonic() + timeout
        while not pred():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("timed out after %.0f s waiting for %s; streams %r, "
                                     "goaway %r, eof %s" % (timeout, what,
                                                            list(self.streams.values()),
                                                            self.goaway, self.eof))
            if self.eof and not pred():
                raise AssertionError("connection closed while waiting for %s; streams %r, "
                                     "goaway %r" % (what, list(self.streams.values()),
                                                    self.goaway))
            self.pump(min(left, 0.5))
        return True

    def response(self, sid, timeout=20.0):
        st = self.streams[sid]
        self.run_until(lambda: st.done, timeout, "stream %d" % sid)
        return st

    def get(self, path="/", timeout=20.0, **kw):
        return self.response(self.request(path, **kw), timeout)

    def wait_closed(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while not self.eof and time.monotonic() < deadline:
            self.pump(min(0.5, max(0.01, deadline - time.monotonic())))
        return self.eof


# ---------------------------------------------------------------------------
# Raw frames


def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", ftype, flags,
                                                           sid & 0x7fffffff) + payload


def settings_payload(pairs):
    return b"".join(struct.pack(">HI", k, v) for k, v in pairs)


class Frame:
    def __init__(self, ftype, flags, sid, payload):
        self.type = ftype
        self.flags = flags
        self.sid = sid
        self.payload = payload
        self.headers = None  # decoded, for HEADERS (with its CONTINUATIONs)

    @property
    def code(self):
        """Error code of RST_STREAM / GOAWAY."""
        if self.type == RST_STREAM:
            return struct.unpack(">I", self.payload[:4])[0]
        if self.type == GOAWAY:
            return struct.unpack(">I", self.payload[4:8])[0]
        return None

    @property
    def last_sid(self):
        return struct.unpack(">I", self.payload[:4])[0] & 0x7fffffff

    def header(self, name):
        for k, v in self.headers or ():
            if k == name:
                return v
        return None

    def __repr__(self):
        name = FRAME_NAMES[self.type] if self.type < len(FRAME_NAMES) else str(self.type)
        extra = ""
        if self.type in (RST_STREAM, GOAWAY):
            extra = " " + error_name(self.code)
            if self.type == GOAWAY:
                extra += " last=%d debug=%r" % (self.last_sid, self.payload[8:])
        elif self.headers is not None:
            extra = " %r" % (self.headers,)
        elif self.type in (DATA, PING, SETTINGS, WINDOW_UPDATE):
            extra = " len=%d" % len(self.payload)
        return "<%s flags=0x%x sid=%d%s>" % (name, self.flags, self.sid, extra)


class RawH2:
    """An HTTP/2 connection spoken frame by frame. The preface and a
    SETTINGS frame (settings: [(id, value)]) go out at once unless
    preface=False; the server's SETTINGS are ACKed as they come unless
    ack_settings=False, and DATA read is given back with WINDOW_UPDATEs
    unless auto_window=False. (h2.connection cannot be used where a stream
    must go on after a GOAWAY: it refuses every frame after one.)"""

    def __init__(self, port, tls=False, settings=(), preface=True, ack_settings=True,
                 auto_window=True, timeout=IO_TIMEOUT):
        self.sock = connect(port, tls=tls, timeout=timeout)
        self.authority = "localhost:%d" % port
        self.scheme = "https" if tls else "http"
        self.enc = hpack.Encoder()
        self.dec = hpack.Decoder()
        self.buf = bytearray()
        self.frames = []  # every frame read
        self.eof = False
        self.ack_settings = ack_settings
        self.auto_window = auto_window
        self._block = None  # (first frame, fragments) of a header block being read
        if preface:
            self.send(PREFACE + frame(SETTINGS, 0, 0, settings_payload(settings)))

    def send(self, data):
        self.sock.sendall(data)

    def send_frame(self, ftype, flags, sid, payload=b""):
        self.send(frame(ftype, flags, sid, payload))

    def request_headers(self, path="/", method="GET", extra=(), authority=None):
        return [(":method", method), (":scheme", self.scheme),
                (":authority", authority or self.authority), (":path", path)] + list(extra)

    def headers_frame(self, sid, headers, end_stream=True, end_headers=True):
        """The bytes of a HEADERS frame (encoded now: HPACK state moves)."""
        flags = (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
        return frame(HEADERS, flags, sid, self.enc.encode(headers))

    def send_headers(self, sid, headers, end_stream=True):
        self.send(self.headers_frame(sid, headers, end_stream))

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _fill(self, timeout):
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 20)
        except socket.timeout:
            return False
        except (ConnectionResetError, ssl.SSLError, OSError):
            data = b""
        finally:
            self.sock.settimeout(IO_TIMEOUT)
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _parse(self):
        if len(self.buf) < 9:
            return None
        length = struct.unpack(">I", b"\0" + bytes(self.buf[:3]))[0]
        if len(self.buf) < 9 + length:
            return None
        ftype, flags, sid = struct.unpack(">BBI", bytes(self.buf[3:9]))
        payload = bytes(self.buf[9:9 + length])
        del self.buf[:9 + length]
        f = Frame(ftype, flags, sid & 0x7fffffff, payload)
        if ftype == HEADERS:
            p = payload
            if flags & PADDED:
                pad = p[0]
                p = p[1:len(p) - pad]
            if flags & PRIORITY_FLAG:
                p = p[5:]
            self._block = (f, [p])
        elif ftype == CONTINUATION and self._block:
            self._block[1].append(payload)
        if ftype in (HEADERS, CONTINUATION) and flags & END_HEADERS and self._block:
            first, parts = self._block
            self._block = None
            first.headers = [(k.decode() if isinstance(k, bytes) else k,
                              v.decode() if isinstance(v, bytes) else v)
                             for k, v in self.dec.decode(b"".join(parts), raw=True)]
        try:
            if ftype == SETTINGS and not flags & ACK and self.ack_settings and not self.eof:
                self.send_frame(SETTINGS, ACK, 0)
            if ftype == DATA and length and self.auto_window and not self.eof:
                update = frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", length))
                if not flags & END_STREAM:
                    update += frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", length))
                self.send(update)
        except OSError:
            pass
        return f

    def read_frame(self, timeout=10.0):
        """The next frame, or None on EOF or timeout (self.eof tells)."""
        deadline = time.monotonic() + timeout
        while True:
            f = self._parse()
            if f is not None:
                self.frames.append(f)
                return f
            left = deadline - time.monotonic()
            if self.eof or left <= 0:
                return None
            self._fill(min(left, 0.5))

    def expect(self, pred, timeout=10.0, what="frame"):
        """Reads until a frame satisfies pred; fails on EOF or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            f = self.read_frame(max(0.0, left)) if left > 0 else None
            if f is None:
                raise AssertionError("%s: no %s; frames seen %r" % (
                    "connection closed" if self.eof else "timed out", what, self.frames))
            if pred(f):
                return f

    def expect_goaway(self, timeout=10.0):
        return self.expect(lambda f: f.type == GOAWAY, timeout, "GOAWAY")

    def expect_rst(self, sid, timeout=10.0):
        return self.expect(lambda f: f.type == RST_STREAM and f.sid == sid, timeout,
                           "RST_STREAM on stream %d" % sid)

    def expect_end(self, sid, timeout=10.0):
        """Reads until the stream ends (END_STREAM or RST_STREAM); returns
        (headers, body, rst_frame_or_None) from every frame of the stream
        read so far, earlier ones included."""
        def ended(f):
            return f.sid == sid and (f.type == RST_STREAM or (
                f.type in (HEADERS, DATA) and f.flags & END_STREAM))

        if not any(ended(f) for f in self.frames):
            self.expect(ended, timeout, "end of stream %d" % sid)
        return self.stream_result(sid)

    def stream_result(self, sid):
        headers, body, rst = None, bytearray(), None
        for f in self.frames:
            if f.sid != sid:
                continue
            if f.type == HEADERS and headers is None:
                headers = f.headers
            elif f.type == DATA:
                body += f.payload
            elif f.type == RST_STREAM:
                rst = f
        return headers, bytes(body), rst

    def wait_eof(self, timeout=10.0):
        """Reads (and records) frames until EOF; True if it came in time."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self.read_frame(left) is None and not self.eof:
                return False
        while self._parse_and_keep():
            pass
        return True

    def _parse_and_keep(self):
        f = self._parse()
        if f is not None:
            self.frames.append(f)
        return f is not None


# ---------------------------------------------------------------------------
# A backend whose handler reads the request body


class PacedReader(B.Reader):
    """A backends.Reader whose refills call pace() first and take at most
    `piece` bytes: a slow reader of the socket, for back-pressure tests."""

    def __init__(self, sock, piece=1 << 16):
        super().__init__(sock)
        self.pace = None
        self.piece = piece

    def _fill(self):
        if self.pace:
            self.pace()
        data = self.sock.recv(self.piece if self.pace else 1 << 16)
        if not data:
            raise B.PeerClosed("connection closed")
        self.buf += data


def _pass_on(reader, n, sink):
    left = n
    while left:
        if not reader.buf:
            reader._fill()
        take = min(left, len(reader.buf))
        sink(bytes(reader.buf[:take]))
        del reader.buf[:take]
        left -= take


def read_body(reader, headers, sink):
    """Reads a request body (Content-Length or chunked) from reader, passing
    pieces to sink(bytes) as they come; returns (length, chunked)."""
    if headers.get("Transfer-Encoding") is not None:
        total = 0
        while True:
            size = int(reader.readline().split(b";")[0].strip(), 16)
            if size == 0:
                break
            _pass_on(reader, size, sink)
            total += size
            if reader.read_exact(2) != b"\r\n":
                raise ValueError("bad chunk terminator")
        reader.read_head()  # trailers
        return total, True
    n = int(headers.get("Content-Length", "0"))
    _pass_on(reader, n, sink)
    return n, False


class StreamRequest:
    def __init__(self, method, path, headers, conn_id):
        self.method = method
        self.path = path
        self.headers = headers
        self.conn_id = conn_id
        self.body_len = None
        self.sha256 = None


class StreamBackend:
    """A threaded HTTP/1.1 server: handler(conn, req) reads the body (with
    read_body(conn.reader, req.headers, sink) or hash_body(conn, req))
    and answers with conn.sock.sendall. SO_RCVBUF rcvbuf on the accepted
    sockets keeps the kernel from buffering much of a body for us."""

    def __init__(self, handler, rcvbuf=None):
        self.handler = handler
        self.lock = threading.Lock()
        self.requests = []
        self.errors = []
        self.conns = set()
        self.stopping = False
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock = B.listen_socket(LOOPBACK, 0, 256, rcvbuf)
        self.port = self.sock.getsockname()[1]
        self.addr = "%s:%d" % (LOOPBACK, self.port)
        self.n_conns = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopping:
            try:
                s, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.n_conns += 1
                cid = self.n_conns
                self.conns.add(s)
            threading.Thread(target=self._serve, args=(s, cid), daemon=True).start()

    def _serve(self, s, cid):
        s.settimeout(B.IO_TIMEOUT)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        class Conn:
            pass

        conn = Conn()
        conn.sock = s
        conn.id = cid
        conn.reader = PacedReader(s)
        try:
            while not self.stopping:
                lines = conn.reader.read_head()
                if not lines:
                    continue
                method, target, _ = lines[0].decode("latin-1").split()
                req = StreamRequest(method, target, B.Headers(B.parse_headers(lines[1:])), cid)
                with self.lock:
                    self.requests.append(req)
                if self.handler(conn, req) == "close":
                    return
        except (B.PeerClosed, ConnectionError, socket.timeout, OSError):
            pass
        except Exception as e:  # reported by the fixture
            with self.lock:
                self.errors.append(repr(e))
        finally:
            with self.lock:
                self.conns.discard(s)
            try:
                s.close()
            except OSError:
                pass

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


def hash_body(conn, req):
    """Reads the body, sets req.body_len / req.sha256."""
    h = hashlib.sha256()
    req.body_len, req.chunked = read_body(conn.reader, req.headers, h.update)
    req.sha256 = h.hexdigest()
    return req.sha256


def respond(conn, status=200, body=b"", headers=()):
    hs = [("Content-Length", str(len(body)))] + list(headers)
    conn.sock.sendall(B.response_head(status, hs) + body)


def nghttp_streams(url, n, headers=()):
    """n concurrent streams of url through 16 KiB windows (nghttp -v):
    {stream id: DATA bytes received}, and the :status values."""
    args = ["nghttp", "-n", "-v", "-w", "14", "-W", "14", "-m", str(n)]
    for h in headers:
        args += ["-H", h]
    r = subprocess.run(args + [url], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    got = {}
    for m in re.finditer(r"recv DATA frame <length=(\d+), flags=0x[0-9a-f]+, stream_id=(\d+)>",
                         r.stdout):
        got[int(m.group(2))] = got.get(int(m.group(2)), 0) + int(m.group(1))
    return got, re.findall(r"recv \(stream_id=\d+\) :status: (\d+)", r.stdout)
