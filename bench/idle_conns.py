#!/usr/bin/python3
"""Idle keep-alive connection memory probe (Debian python3, stdlib only).

Opens COUNT client connections to a proxy; each sends one `GET / HTTP/1.1`,
reads the full response and then stays open and idle. The proxy's RSS (its
whole process tree, VmRSS) is read before and after, and the difference per
connection is printed. This is what an idle keep-alive client costs the proxy:
its connection state, buffers it keeps (or releases) after a request, and
kernel-side nothing (socket buffers are not in RSS).

Output: KEY=VALUE lines (sourced by bench/run).
    target, established, failed, still_open, rss_before, rss_after,
    bytes_per_conn, elapsed_s, gave_up (reason or empty)

Connections are opened with at most --inflight handshakes/requests pending at a
time, so a proxy's listen backlog is never flooded (a dropped SYN costs a 1 s
retransmit and would only measure the backlog). The whole thing is bounded by
--timeout seconds; on timeout it reports what it reached.

--burst: every connection is opened first (still --inflight handshakes at a
time) and only then do all of them send their request at once, so the proxy
holds COUNT requests in flight (its buffers, sessions and new upstream
connections) before they all go idle. What is measured is then what the proxy
gives back after a burst: memory it keeps for connections it no longer uses.
"""
import argparse
import errno
import os
import resource
import selectors
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import tree_rss_bytes  # noqa: E402


def raise_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Conn:
    __slots__ = ("sock", "buf", "sent")

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.sent = False


def response_complete(buf):
    """True once buf holds a whole HTTP/1.x response (Content-Length or chunked)."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return False
    head = buf[:end].decode("latin-1").lower().split("\r\n")
    body = len(buf) - end - 4
    for line in head[1:]:
        name, _, value = line.partition(":")
        name, value = name.strip(), value.strip()
        if name == "content-length":
            return body >= int(value)
        if name == "transfer-encoding" and "chunked" in value:
            return buf.endswith(b"0\r\n\r\n")
    # No framing: a 1xx/204/304 has no body; anything else would be close-delimited,
    # which a keep-alive test cannot use, so treat the headers as the whole response.
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True, help="proxy pid (its tree is measured)")
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--inflight", type=int, default=100)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--settle", type=float, default=1.0,
                    help="seconds to wait after the last response before reading RSS")
    ap.add_argument("--burst", action="store_true",
                    help="connect all first, then send every request at once")
    args = ap.parse_args()

    nofile = raise_nofile(args.count + 256)
    req = (f"GET / HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n"
           f"User-Agent: weir-bench-idle\r\n\r\n").encode()

    rss_before = tree_rss_bytes(args.pid)
    start = time.monotonic()
    deadline = start + args.timeout
    sel = selectors.DefaultSelector()
    idle = []          # sockets that got their full response and now sit idle
    pending = 0        # connections still connecting / waiting for the response
    started = failed = 0
    gave_up = ""
    connected = []     # --burst: connections waiting for the others

    def fire():
        """--burst: every connection is up; send all the requests at once."""
        nonlocal pending, failed
        for c in connected:
            try:
                c.sock.send(req)
            except OSError:
                c.sock.close()
                failed += 1
                continue
            c.sent = True
            sel.register(c.sock, selectors.EVENT_READ, c)
            pending += 1
        connected.clear()

    def fail(c):
        nonlocal pending, failed
        sel.unregister(c.sock)
        c.sock.close()
        pending -= 1
        failed += 1

    while len(idle) < args.count:
        now = time.monotonic()
        if now >= deadline:
            gave_up = "timeout"
            break
        if failed > max(100, args.count // 10):
            gave_up = "too-many-failures"
            break
        # Top up the in-flight window; replace failed attempts so the target is reached.
        while pending < args.inflight and started - failed < args.count and not gave_up:
            try:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE):
                    gave_up = f"fd-limit({nofile})"
                    break
                raise
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            rc = s.connect_ex((args.host, args.port))
            started += 1
            if rc not in (0, errno.EINPROGRESS):
                s.close()
                failed += 1
                continue
            c = Conn(s)
            sel.register(s, selectors.EVENT_WRITE, c)
            pending += 1
        if gave_up and pending == 0:
            break
        for key, ev in sel.select(timeout=min(0.5, max(0.0, deadline - now))):
            c = key.data
            if not c.sent:
                if c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    fail(c)
                    continue
                if args.burst:
                    sel.unregister(c.sock)
                    pending -= 1
                    connected.append(c)
                    if len(connected) + len(idle) == args.count:
                        fire()
                    continue
                try:
                    c.sock.send(req)  # tiny; always fits the empty send buffer
                except OSError:
                    fail(c)
                    continue
                c.sent = True
                sel.modify(c.sock, selectors.EVENT_READ, c)
                continue
            try:
                data = c.sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                fail(c)
                continue
            if not data:  # proxy closed before a full response
                fail(c)
                continue
            c.buf += data
            if response_complete(c.buf):
                sel.unregister(c.sock)
                pending -= 1
                c.buf = b""
                idle.append(c.sock)

    # Drop connections that never finished: only the idle ones are counted.
    for key in list(sel.get_map().values()):
        sel.unregister(key.fileobj)
        key.fileobj.close()
    elapsed = time.monotonic() - start

    time.sleep(args.settle)  # let the proxy finish freeing per-request state
    rss_after = tree_rss_bytes(args.pid)

    # How many are still open? A readable idle socket means EOF/RST from the proxy
    # (an idle timeout shorter than this test would make the number meaningless).
    still_open = 0
    for s in idle:
        sel.register(s, selectors.EVENT_READ)
    ready = {k.fileobj for k, _ in sel.select(timeout=0)}
    for s in idle:
        if s not in ready:
            still_open += 1
            continue
        try:
            if s.recv(1, socket.MSG_PEEK):
                still_open += 1  # unexpected data, but the connection is alive
        except OSError:
            pass

    n = len(idle)
    bpc = (rss_after - rss_before) / n if n else 0
    print(f"target={args.count}")
    print(f"established={n}")
    print(f"failed={failed}")
    print(f"still_open={still_open}")
    print(f"rss_before={rss_before}")
    print(f"rss_after={rss_after}")
    print(f"bytes_per_conn={bpc:.0f}")
    print(f"elapsed_s={elapsed:.1f}")
    print(f"gave_up={gave_up}")
    sys.stdout.flush()
    for s in idle:
        s.close()
    return 0 if n else 1


if __name__ == "__main__":
    sys.exit(main())
