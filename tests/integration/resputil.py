"""A small RESP client over a raw socket, for what redis-py does not do:
RESP3 replies, malformed frames, pipelines of any size, byte-exact checks.
"""
import socket
import time


class Closed(Exception):
    pass


class Raw:
    def __init__(self, port, host="127.0.0.1", timeout=10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def command(self, *args):
        self.send(encode(*args))
        return self.reply()

    def _fill(self):
        d = self.sock.recv(1 << 16)
        if not d:
            raise Closed()
        self.buf += d

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self):
        """One reply: bytes (bulk/simple), int, None (nil), list, dict (RESP3
        map), or an Error."""
        line = self._line()
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest
        if t == b"-":
            return Error(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"_":
            return None
        if t in (b"$", b"="):
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self._fill()
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data
        if t in (b"*", b"~", b">"):
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        if t == b"%":
            n = int(rest)
            out = {}
            for _ in range(n):
                k = self.reply()
                out[k] = self.reply()
            return out
        raise AssertionError("unexpected reply line %r" % line)

    def read_all(self, timeout=5.0):
        """Everything until EOF (or the timeout): (bytes, eof)."""
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                d = self.sock.recv(1 << 16)
            except socket.timeout:
                return self.buf, False
            except ConnectionResetError:
                return self.buf, "reset"
            if not d:
                return self.buf, True
            self.buf += d
        return self.buf, False

    def close(self):
        self.sock.close()


class Error(str):
    pass


def encode(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif isinstance(a, int):
            a = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class FakeServer:
    """A RESP server on loopback answering GET key with answer(key): a str
    (a bulk string), None (nil), an Error (an error reply), or "hang" (no
    reply ever). Remembers the keys it was asked, in order; pipelining
    works (replies in order)."""

    def __init__(self, answer, port=0):
        import threading
        self.answer = answer
        self.keys = []
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.addr = "127.0.0.1:%d" % self.port
        self.conns = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import threading
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        buf = b""
        try:
            while True:
                d = c.recv(65536)
                if not d:
                    return
                buf += d
                out = b""
                while True:
                    cmd, buf = _take(buf)
                    if cmd is None:
                        break
                    key = cmd[1].decode() if len(cmd) > 1 else ""
                    with self.lock:
                        self.keys.append(key)
                    a = self.answer(key)
                    if a == "hang":
                        continue
                    if a is None:
                        out += b"$-1\r\n"
                    elif isinstance(a, Error):
                        out += b"-" + a.encode() + b"\r\n"
                    else:
                        b = a.encode()
                        out += b"$%d\r\n%s\r\n" % (len(b), b)
                if out:
                    c.sendall(out)
        except OSError:
            return

    def close(self):
        self.closed = True
        self.sock.close()
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()


def _take(buf):
    """One multibulk command off buf: ([args], rest) or (None, buf)."""
    if not buf.startswith(b"*"):
        return None, buf
    pos = buf.find(b"\r\n")
    if pos < 0:
        return None, buf
    n = int(buf[1:pos])
    pos += 2
    args = []
    for _ in range(n):
        e = buf.find(b"\r\n", pos)
        if e < 0:
            return None, buf
        ln = int(buf[pos + 1:e])
        if len(buf) < e + 2 + ln + 2:
            return None, buf
        args.append(buf[e + 2:e + 2 + ln])
        pos = e + 2 + ln + 2
    return args, buf[pos:]
