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
