"""DNS peers for the discovery tests (test_discovery.py).

Dnsmasq: Debian's dnsmasq on a loopback port, answering from files the
test rewrites: A/AAAA records from an addn-hosts file (re-read on SIGHUP),
SRV records and their targets from the config file (rewritten, then
dnsmasq restarted on the same port). Every answer has the TTL `ttl`.

FakeDns: a UDP (and TCP) DNS server in Python for what dnsmasq will not
do on purpose: SERVFAIL, NXDOMAIN, an empty answer, garbage, a truncated
answer with or without a TCP fallback, an answer that claims more records
than it has, and silence.

query(): a small stub resolver used to wait until a server answers what
the test wrote. Only the standard library; loopback only.
"""
import os
import signal
import socket
import struct
import subprocess
import threading
import time

LOOPBACK = "127.0.0.1"
A, AAAA, SRV = 1, 28, 33
NOERROR, SERVFAIL, NXDOMAIN = 0, 2, 3


def free_dns_port():
    """A loopback port free for both UDP and TCP."""
    from conftest import free_port
    return free_port(udp=True)


# ---------------------------------------------------------------------------
# Wire format


def encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def decode_name(msg, off):
    """(name, offset after the name at off), following compression."""
    labels, end, jumps = [], None, 0
    while True:
        n = msg[off]
        if n & 0xC0 == 0xC0:
            if end is None:
                end = off + 2
            off = ((n & 0x3F) << 8) | msg[off + 1]
            jumps += 1
            if jumps > 20:
                raise ValueError("compression loop")
            continue
        off += 1
        if n == 0:
            break
        labels.append(msg[off:off + n].decode())
        off += n
    return ".".join(labels), end if end is not None else off


def build_query(qid, name, qtype):
    return (struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + encode_name(name)
            + struct.pack(">HH", qtype, 1))


def parse_question(msg):
    """(id, flags, name, qtype) of a query."""
    qid, flags, qd = struct.unpack(">HHH", msg[:6])
    if qd < 1:
        raise ValueError("no question")
    name, off = decode_name(msg, 12)
    qtype, _ = struct.unpack(">HH", msg[off:off + 4])
    return qid, flags, name, qtype, msg[12:off + 4]


def rr(name, rtype, ttl, rdata):
    return encode_name(name) + struct.pack(">HHIH", rtype, 1, ttl, len(rdata)) + rdata


def rdata_of(rtype, value):
    if rtype == A:
        return socket.inet_pton(socket.AF_INET, value)
    if rtype == AAAA:
        return socket.inet_pton(socket.AF_INET6, value)
    if rtype == SRV:  # (priority, weight, port, target)
        prio, weight, port, target = value
        return struct.pack(">HHH", prio, weight, port) + encode_name(target)
    raise ValueError(rtype)


def response(question, qid, rcode=NOERROR, answers=(), tc=False, claim=None):
    """A response to `question` (the raw question section). answers: raw
    records; claim: the answer count to write in the header (default: the
    true one)."""
    flags = 0x8180 | rcode | (0x0200 if tc else 0)
    count = len(answers) if claim is None else claim
    return struct.pack(">HHHHHH", qid, flags, 1, count, 0, 0) + question + b"".join(answers)


def parse_answers(msg):
    """[(type, value)] of the answer section; value is an address string,
    or (priority, weight, port, target) for SRV."""
    _, flags, qd, an = struct.unpack(">HHHH", msg[:8])
    off = 12
    for _ in range(qd):
        _, off = decode_name(msg, off)
        off += 4
    out = []
    for _ in range(an):
        _, off = decode_name(msg, off)
        rtype, _, _, rdlen = struct.unpack(">HHIH", msg[off:off + 10])
        off += 10
        rdata = msg[off:off + rdlen]
        if rtype == A:
            out.append((A, socket.inet_ntop(socket.AF_INET, rdata)))
        elif rtype == AAAA:
            out.append((AAAA, socket.inet_ntop(socket.AF_INET6, rdata)))
        elif rtype == SRV:
            prio, weight, port = struct.unpack(">HHH", rdata[:6])
            out.append((SRV, (prio, weight, port, decode_name(msg, off + 6)[0])))
        off += rdlen
    return flags & 0xF, out


def query(port, name, qtype=A, timeout=1.0):
    """(rcode, answers) from the server on 127.0.0.1:port, or None."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(build_query(0x4242, name, qtype), (LOOPBACK, port))
        data, _ = s.recvfrom(65536)
        return parse_answers(data)
    except (OSError, ValueError, struct.error, IndexError, UnicodeDecodeError):
        return None
    finally:
        s.close()


def wait_answer(port, name, qtype, want, timeout=10.0):
    """Waits until the server answers `name` with exactly the set `want`
    (values as parse_answers gives them)."""
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        got = query(port, name, qtype)
        if got is not None and set(v for t, v in got[1] if t == qtype) == set(want):
            return True
        time.sleep(0.02)
    raise AssertionError("DNS on %d answers %r for %s, not %r" % (port, got, name, want))


# ---------------------------------------------------------------------------
# dnsmasq


class Dnsmasq:
    """dnsmasq on 127.0.0.1:port, authoritative for what the test wrote:
    hosts {name: [ip, ...]} and srv [(service, target, port, priority,
    weight)] with targets in hosts."""

    def __init__(self, directory, ttl=1):
        self.dir = directory
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_dns_port()
        self.ttl = ttl
        self.hosts = {}
        self.srv = []
        self.proc = None
        self.conf = os.path.join(self.dir, "dnsmasq.conf")
        self.hosts_file = os.path.join(self.dir, "hosts")
        self.log = open(os.path.join(self.dir, "dnsmasq.log"), "ab")

    def _write(self):
        with open(self.hosts_file + ".tmp", "w") as f:
            for name, ips in self.hosts.items():
                for ip in ips:
                    f.write("%s %s\n" % (ip, name))
        os.replace(self.hosts_file + ".tmp", self.hosts_file)
        with open(self.conf, "w") as f:
            for service, target, port, prio, weight in self.srv:
                f.write("srv-host=%s,%s,%d,%d,%d\n" % (service, target, port, prio, weight))

    def start(self):
        self._write()
        argv = ["dnsmasq", "--keep-in-foreground", "--conf-file=" + self.conf,
                "--port=%d" % self.port, "--listen-address=" + LOOPBACK, "--bind-interfaces",
                "--no-resolv", "--no-hosts", "--addn-hosts=" + self.hosts_file,
                "--local-ttl=%d" % self.ttl, "--auth-ttl=%d" % self.ttl,
                "--pid-file=" + os.path.join(self.dir, "dnsmasq.pid"), "--log-facility=-",
                "--local=/test/"]
        if os.geteuid() == 0:
            argv += ["--user=root", "--group=root"]
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=self.log,
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("dnsmasq exited: see %s" % self.log.name)
            if query(self.port, "nothing.test", timeout=0.2) is not None:
                return self
            time.sleep(0.02)
        raise RuntimeError("dnsmasq did not answer on %d" % self.port)

    def set_hosts(self, hosts, wait=True):
        """Replaces the A/AAAA records (SIGHUP: dnsmasq re-reads the file
        and forgets its cache); waits until it answers them."""
        self.hosts = {k: list(v) for k, v in hosts.items()}
        self._write()
        self.proc.send_signal(signal.SIGHUP)
        if wait:
            for name, ips in self.hosts.items():
                v4 = [ip for ip in ips if ":" not in ip]
                if v4:
                    wait_answer(self.port, name, A, v4)

    def set_srv(self, srv, hosts=None):
        """Replaces the SRV records (and the hosts): dnsmasq restarts on
        the same port; waits until it answers them."""
        self.srv = list(srv)
        if hosts is not None:
            self.hosts = {k: list(v) for k, v in hosts.items()}
        self.stop()
        self.start()
        for service in set(s[0] for s in self.srv):
            want = [(p, w, port, t) for s, t, port, p, w in self.srv if s == service]
            wait_answer(self.port, service, SRV, want)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def close(self):
        self.stop()
        self.log.close()


# ---------------------------------------------------------------------------
# A DNS server that misbehaves on purpose


class FakeDns:
    """Answers on UDP and TCP 127.0.0.1:port. records: {(name, qtype):
    [value, ...]}; mode (settable at any time):

      ok         the records (NOERROR; no records = empty answer)
      servfail   SERVFAIL
      nxdomain   NXDOMAIN
      empty      NOERROR with no answer
      garbage    random bytes with the query's id
      truncated  TC set over UDP; TCP answers the records in full
      truncated-notcp  TC set over UDP; TCP connections are closed at once
      overclaim  the header claims more answers than the message holds
      silent     no answer at all

    Counts the queries it saw, per transport."""

    def __init__(self, ttl=1):
        self.ttl = ttl
        self.records = {}
        self.mode = "ok"
        self.lock = threading.Lock()
        self.udp_queries = 0
        self.tcp_queries = 0
        self.errors = []
        self.port = free_dns_port()
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((LOOPBACK, self.port))
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind((LOOPBACK, self.port))
        self.tcp.listen(64)
        self.stopping = False
        self.threads = [threading.Thread(target=self._udp_loop, daemon=True),
                        threading.Thread(target=self._tcp_loop, daemon=True)]
        for t in self.threads:
            t.start()

    def queries(self):
        with self.lock:
            return self.udp_queries + self.tcp_queries

    def _answer(self, msg, tcp):
        qid, _, name, qtype, question = parse_question(msg)
        mode = self.mode
        values = self.records.get((name.lower(), qtype), [])
        answers = [rr(name, qtype, self.ttl, rdata_of(qtype, v)) for v in values]
        if mode == "silent":
            return None
        if mode == "servfail":
            return response(question, qid, SERVFAIL)
        if mode == "nxdomain":
            return response(question, qid, NXDOMAIN)
        if mode == "empty":
            return response(question, qid)
        if mode == "garbage":
            return struct.pack(">H", qid) + os.urandom(40)
        if mode == "overclaim":
            return response(question, qid, answers=answers[:1], claim=len(answers) + 5)
        if mode in ("truncated", "truncated-notcp") and not tcp:
            return response(question, qid, answers=answers[:1], tc=True)
        return response(question, qid, answers=answers)

    def _udp_loop(self):
        while not self.stopping:
            try:
                msg, peer = self.udp.recvfrom(65536)
            except OSError:
                return
            if self.stopping:
                return
            with self.lock:
                self.udp_queries += 1
            try:
                out = self._answer(msg, tcp=False)
                if out is not None:
                    self.udp.sendto(out, peer)
            except (ValueError, struct.error, IndexError, OSError) as e:
                self.errors.append(repr(e))

    def _tcp_loop(self):
        while not self.stopping:
            try:
                c, _ = self.tcp.accept()
            except OSError:
                return
            threading.Thread(target=self._tcp_serve, args=(c,), daemon=True).start()

    def _tcp_serve(self, c):
        try:
            c.settimeout(5)
            if self.mode in ("truncated-notcp", "silent"):
                return
            buf = b""
            while True:
                while len(buf) < 2 or len(buf) < 2 + struct.unpack(">H", buf[:2])[0]:
                    data = c.recv(65536)
                    if not data:
                        return
                    buf += data
                n = struct.unpack(">H", buf[:2])[0]
                msg, buf = buf[2:2 + n], buf[2 + n:]
                with self.lock:
                    self.tcp_queries += 1
                out = self._answer(msg, tcp=True)
                if out is None:
                    return
                c.sendall(struct.pack(">H", len(out)) + out)
        except (OSError, ValueError, struct.error, IndexError):
            pass
        finally:
            c.close()

    def close(self):
        self.stopping = True
        for s in (self.udp, self.tcp):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
