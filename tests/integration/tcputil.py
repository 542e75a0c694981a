"""TCP peers for the L4 tests: an echo server, a server that answers with
its name, and one whose behaviour a test scripts per connection."""
import socket
import threading

import backends as B

IO_TIMEOUT = 20.0


class TcpServer:
    """Listens on 127.0.0.1 (a free port); each accepted connection runs
    handler(conn, server) on its own thread. Counts connections and keeps
    what each connection received when the handler stores it."""

    def __init__(self, handler, name="tcp", host="127.0.0.1", port=0):
        self.handler = handler
        self.name = name
        self.sock = B.listen_socket(host, port, 512)  # the worker's own port range
        self.port = self.sock.getsockname()[1]
        self.addr = "%s:%d" % (host, self.port)
        self.lock = threading.Lock()
        self.connections = 0
        self.received = []  # bytes per finished connection, for handlers that record
        self.peers = []
        self.conns = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, peer = self.sock.accept()
            except OSError:
                return
            c.settimeout(IO_TIMEOUT)
            with self.lock:
                self.connections += 1
                self.peers.append(peer)
                self.conns.append(c)
            threading.Thread(target=self._run, args=(c,), daemon=True).start()

    def _run(self, c):
        try:
            self.handler(c, self)
        except OSError:
            pass
        finally:
            try:
                c.close()
            except OSError:
                pass

    def close(self):
        """Stops listening and resets every open connection."""
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass
        with self.lock:
            for c in self.conns:
                try:
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                    c.close()
                except OSError:
                    pass


def echo(c, srv):
    """Sends back what comes, until the client's FIN; then a FIN."""
    got = 0
    while True:
        d = c.recv(1 << 16)
        if not d:
            break
        got += len(d)
        c.sendall(d)
    c.shutdown(socket.SHUT_WR)
    with srv.lock:
        srv.received.append(got)


def name(c, srv):
    """Answers with its name and closes."""
    c.sendall(srv.name.encode() + b"\n")
    c.shutdown(socket.SHUT_WR)
    while c.recv(4096):
        pass


def read_all(sock, timeout=IO_TIMEOUT):
    sock.settimeout(timeout)
    out = bytearray()
    while True:
        d = sock.recv(1 << 16)
        if not d:
            return bytes(out)
        out += d


def round_trip(port, data, timeout=IO_TIMEOUT):
    """Connects, sends data, half-closes, reads until EOF."""
    c = socket.create_connection(("127.0.0.1", port), timeout=timeout)

    def send():
        try:
            c.sendall(data)
            c.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the reader sees what happened

    t = threading.Thread(target=send, daemon=True)
    t.start()
    try:
        return read_all(c, timeout)
    finally:
        t.join(timeout)
        c.close()


def closed_without_data(sock, timeout=IO_TIMEOUT):
    """True if the peer closes (FIN, or a reset: a close with the client's
    bytes unread resets) without sending a byte."""
    try:
        return read_all(sock, timeout) == b""
    except ConnectionResetError:
        return True


class TlsTcpServer(TcpServer):
    """TcpServer whose connections are TLS (cert/key files); the handler
    gets the TLS socket. Handshake failures are counted, not raised."""

    def __init__(self, handler, cert, key, name="tls"):
        import ssl
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.handshake_failures = 0
        inner = handler

        def wrapped(c, srv):
            try:
                t = self.ctx.wrap_socket(c, server_side=True)
            except (ssl.SSLError, OSError):
                with srv.lock:
                    srv.handshake_failures += 1
                return
            inner(t, srv)

        super().__init__(wrapped, name=name)


def tls_echo(c, srv):
    """echo over TLS: a TLS socket has no half-close, so it answers until
    the peer's close_notify or EOF."""
    got = 0
    while True:
        try:
            d = c.recv(1 << 16)
        except OSError:
            break
        if not d:
            break
        got += len(d)
        c.sendall(d)
    with srv.lock:
        srv.received.append(got)


def client_hello(name):
    """The bytes of a ClientHello for server name `name` (Python's ssl)."""
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    i, o = ssl.MemoryBIO(), ssl.MemoryBIO()
    s = ctx.wrap_bio(i, o, server_hostname=name)
    try:
        s.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return o.read()
