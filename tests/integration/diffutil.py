"""Helpers for test_differential.py: weir, nginx and HAProxy started side by
side on loopback, each in front of its own recording backend, a raw client
that reports what the client got and what the backend received, and a
reference model of weir's path normalisation.

Only the standard library (nginx and HAProxy are the Debian packages
nginx-light and haproxy); loopback only.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import backends as B
from conftest import free_port, wait_port

# ---------------------------------------------------------------------------
# Configurations: the same routing in each proxy.

WEIR_TOML = """
[servers.main]
addr = "127.0.0.1:@PORT@"
locations = ["users", "any"]
@LOG@

[locations.users]
path = "/users/"
rewrite = "^/users/(.*) /api/v1/users/$1"
proxy_set_headers = ["X-Gateway: weir"]
upstream = "b"

[locations.any]
proxy_set_headers = ["X-Gateway: weir"]
upstream = "b"

[upstreams.b]
addrs = ["@BACKEND@"]
"""

# Host $http_host: weir and HAProxy pass the client's Host on; nginx would
# send its proxy_host (127.0.0.1:PORT) otherwise, which differs on every row.
NGINX_CONF = """
worker_processes 1;
user root;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path @DIR@/body;
    proxy_temp_path @DIR@/proxy;
    fastcgi_temp_path @DIR@/fastcgi;
    uwsgi_temp_path @DIR@/uwsgi;
    scgi_temp_path @DIR@/scgi;
    server {
        listen 127.0.0.1:@PORT@;
        proxy_set_header Host $http_host;
        proxy_set_header X-Gateway weir;
        proxy_set_header X-Real-IP $remote_addr;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        location /users/ { proxy_pass http://@BACKEND@/api/v1/users/; }
        location / { proxy_pass http://@BACKEND@; }
    }
}
"""

# replace-path mirrors weir's rewrite, so both route /users/ the same way.
HAPROXY_CFG = """
global
    maxconn 256
defaults
    mode http
    timeout connect 2s
    timeout client 5s
    timeout server 5s
frontend fe
    bind 127.0.0.1:@PORT@
    option forwardfor
    http-request set-header X-Gateway weir
    http-request set-header X-Real-IP %[src]
    http-request set-header X-Forwarded-Proto http
    http-request replace-path ^/users/(.*) /api/v1/users/\\1
    default_backend be
backend be
    server s1 @BACKEND@
"""


def fill(text, **subs):
    for k, v in subs.items():
        text = text.replace("@%s@" % k, str(v))
    assert "@" not in text.replace("%[src]", ""), text
    return text


# ---------------------------------------------------------------------------
# Peer processes (nginx, HAProxy): ours to start and to stop.


class Peer:
    def __init__(self, name, argv, port, workdir):
        self.name = name
        self.port = port
        self.argv = argv
        self.err_path = os.path.join(workdir, "%s.stderr" % name)
        self._err = open(self.err_path, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._err,
                                     stderr=self._err, start_new_session=True)
        self.ok = wait_port(port, self.proc, timeout=10)

    def stderr(self):
        with open(self.err_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            # Its own session: the signal reaches the master and its workers.
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self._err.close()


def start_nginx(workdir, backend_addr):
    exe = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.access(exe, os.X_OK):
        return None, "nginx not installed"
    d = os.path.join(workdir, "nginx")
    os.makedirs(d, exist_ok=True)
    port = free_port()
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(fill(NGINX_CONF, DIR=d, PORT=port, BACKEND=backend_addr))
    p = Peer("nginx", [exe, "-p", d, "-c", conf, "-g",
                       "daemon off; pid %s/nginx.pid; error_log stderr;" % d], port, workdir)
    return p, None if p.ok else "nginx did not start:\n" + p.stderr()


def start_haproxy(workdir, backend_addr):
    exe = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not os.access(exe, os.X_OK):
        return None, "haproxy not installed"
    port = free_port()
    cfg = os.path.join(workdir, "haproxy.cfg")
    with open(cfg, "w") as f:
        f.write(fill(HAPROXY_CFG, PORT=port, BACKEND=backend_addr))
    p = Peer("haproxy", [exe, "-f", cfg, "-db"], port, workdir)
    return p, None if p.ok else "haproxy did not start:\n" + p.stderr()


# ---------------------------------------------------------------------------
# One exchange: raw bytes in, (client's view, backend's view) out.


def build_request(method="GET", target="/", headers=(), body=None, host="test.local",
                  close=True, version="HTTP/1.1"):
    """Request bytes; target, header names and values are str (latin-1) or
    bytes. host=None sends no Host field; close adds Connection: close."""

    def b(x):
        return x if isinstance(x, bytes) else x.encode("latin-1")

    out = b(method) + b" " + b(target) + b" " + b(version) + b"\r\n"
    if host is not None:
        out += b"Host: " + b(host) + b"\r\n"
    for k, v in headers:
        out += b(k) + b": " + b(v) + b"\r\n"
    if close:
        out += b"Connection: close\r\n"
    return out + b"\r\n" + (b(body) if body is not None else b"")


class Outcome:
    """What one proxy did with one request."""

    def __init__(self):
        self.status = None  # int, or "closed" / "timeout" / "refused"
        self.resp_headers = B.Headers()
        self.closed = None  # the proxy closed the connection after answering
        self.got = []  # the backend's Requests for this exchange

    @property
    def target(self):
        return self.got[0].path if self.got else None

    def header(self, name):
        """The backend's fields of that name joined with ", ", or None."""
        if not self.got:
            return None
        vals = self.got[0].headers.get_all(name)
        return ", ".join(vals) if vals else None

    def short(self):
        t = self.target
        if t is not None and len(t) > 48:
            t = "%s...(%d bytes)" % (t[:12], len(t))
        if len(self.got) > 1:
            t = "%s (+%d more)" % (t, len(self.got) - 1)
        return "%s %s" % (self.status, t if t is not None else "-")


def exchange(port, raw, backend, method="GET", timeout=3.0, watch_close=False, close_wait=2.0):
    """Sends raw on a new connection to port; returns an Outcome whose got
    holds the requests backend recorded meanwhile."""
    o = Outcome()
    before = backend.request_count()
    try:
        s = B.connect(port, timeout=timeout)
    except OSError:
        o.status = "refused"
        return o
    try:
        try:
            s.sendall(raw)
        except OSError:
            pass  # the proxy may answer and close before reading it all
        reader = B.Reader(s)
        try:
            r = B.read_response(reader, method)
            o.status = r.status
            o.resp_headers = r.headers
            if watch_close:
                o.closed = B.closed_after(s, timeout=close_wait)
        except socket.timeout:
            o.status = "timeout"
        except (B.PeerClosed, ConnectionError, ValueError, IndexError):
            o.status = "closed"
    finally:
        s.close()
    # A backend request is recorded before its answer is sent; a proxy that
    # forwards and then fails (or answers early) may leave it a moment.
    if o.status not in (200,):
        time.sleep(0.02)
    with backend.lock:
        o.got = list(backend.requests[before:])
    return o


# ---------------------------------------------------------------------------
# Reference model of weir's target handling (request_gate.h, docs).

UNRESERVED = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
HEX = b"0123456789abcdefABCDEF"


class Refused(Exception):
    pass


def model_path(path):
    """path (bytes, no query) -> the normalised path weir should route and
    forward, or raises Refused(why). Written from the rules, not the C."""
    if not path.startswith(b"/"):
        raise Refused("not origin-form")
    # 1. Decode: a list of tokens, each one byte (literal) or b"%XX".
    toks = []
    i = 0
    while i < len(path):
        c = path[i]
        if c == 0x25:  # '%'
            h = path[i + 1:i + 3]
            if len(h) < 2 or h[0] not in HEX or h[1] not in HEX:
                raise Refused("bad percent-encoding")
            d = int(h, 16)
            if d == 0:
                raise Refused("%00")
            toks.append(bytes([d]) if d in UNRESERVED else b"%" + h.upper())
            i += 3
            continue
        if c == 0x23:
            raise Refused("fragment")
        if c <= 0x20 or c == 0x7F:
            raise Refused("control byte")
        toks.append(bytes([c]))
        i += 1
    # 2. Segments on literal '/' only (escapes are data), slashes merged,
    # dot segments resolved; a climb above the root is refused.
    segs = [[]]
    for t in toks:
        if t == b"/":
            segs.append([])
        else:
            segs[-1].append(t)
    segs = [b"".join(s) for s in segs[1:]]
    stack = []
    for s in segs:
        if s in (b"", b"."):
            continue
        if s == b"..":
            if not stack:
                raise Refused("above the root")
            stack.pop()
        else:
            stack.append(s)
    out = b"/" + b"/".join(stack)
    if stack and segs[-1] in (b"", b".", b".."):
        out += b"/"
    # 3. No "." or ".." left once %2F, %5C and '\' count as separators and
    # ";params" are cut.
    for seg in re.split(rb"/|\\|%2F|%5C", out):
        if seg.split(b";")[0] in (b".", b".."):
            raise Refused("hidden dot segment")
    return out


def model_target(target):
    """target (bytes) -> (upstream target, location) or raises Refused."""
    if target == b"*":
        return b"*", "any"
    path, q, query = target.partition(b"?")
    if b"#" in query:
        raise Refused("fragment")
    p = model_path(path)
    loc = "any"
    if p.startswith(b"/users/"):
        p = b"/api/v1/users/" + p[len(b"/users/"):]
        loc = "users"
    return p + q + query, loc


def path_invariant_problems(target):
    """Why target (str, as the backend saw it) breaks the invariants."""
    if target == "*":
        return []
    problems = []
    if not target.startswith("/"):
        problems.append("does not start with '/'")
    path = target.split("?", 1)[0]
    if "//" in path:
        problems.append("'//' in the path")
    if "%2e" in path.lower():
        problems.append("'%2e' in the path")
    if any(seg in (".", "..") for seg in path.split("/")):
        problems.append("a '.' or '..' segment")
    return problems
