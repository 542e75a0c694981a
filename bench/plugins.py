#!/usr/bin/python3
"""What plugins cost per request: weir with no plugin, with a chain of five
response_headers plugins (each sets a field: the chain and the work), with
five plugins that let the request pass (ping on other paths: the chain's
own cost), with a limit plugin (a rate it never reaches), and with
basic_auth, key_auth and jwt (HS256, and RS256 with a 2048-bit key)
letting every request in (each request carries its credentials), each
proxying to the same nginx backend.

Two figures per variant:
  - instructions per request (valgrind callgrind, user space, deterministic
    across machines): the total for N2 requests minus the total for N1,
    over N2 - N1, so start-up and shut-down cancel out;
  - CPU microseconds per request under wrk (one weir thread on CPU 0; wrk
    and the backend on CPU 1), which is noisier (see bench/README.md).

Usage: bench/plugins.py [--duration 10] [--no-wrk] [--no-callgrind] [--only NAME,...]
Prints a table and the overhead of each variant against no plugin.
"""
import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import wait_port  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEIR = os.environ.get("WEIR_BIN", os.path.join(ROOT, "build", "bin", "weir"))
BODY = b"hello from backend\n"

VARIANTS = {
    "none": ("", ""),
    "5 headers": (
        "".join('[plugins.h%d]\ncategory = "response_headers"\nset_headers = ["X-P%d: v%d"]\n'
                % (i, i, i) for i in range(5)),
        'plugins = ["h0", "h1", "h2", "h3", "h4"]'),
    "5 passing": (
        "".join('[plugins.p%d]\ncategory = "ping"\npath = "/ping%d"\nstep = "request"\n' % (i, i)
                for i in range(5)),
        'plugins = ["p0", "p1", "p2", "p3", "p4"]'),
    "limit": ('[plugins.lim]\ncategory = "limit"\nmax = 1000000000\ninterval = "1s"\n',
              'plugins = ["lim"]'),
    # base64 of "bench:secret" (a plain entry; a hashed one costs what
    # crypt(3) costs: bcrypt at cost 10 is about 130 ms, see docs/plugins.md)
    "basic_auth": ('[plugins.auth]\ncategory = "basic_auth"\n'
                   'authorizations = ["YmVuY2g6c2VjcmV0", "b3RoZXI6b3RoZXI="]\n',
                   'plugins = ["auth"]', ["Authorization: Basic YmVuY2g6c2VjcmV0"]),
    "key_auth": ('[plugins.keys]\ncategory = "key_auth"\nheader = "X-API-Key"\n'
                 'keys = ["k-0123456789abcdef", "k-fedcba9876543210"]\n',
                 'plugins = ["keys"]', ["X-API-Key: k-0123456789abcdef"]),
}


def b64url(data):
    import base64
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def add_jwt_variants(tmp):
    """jwt with HS256 and with RS256: the key made here by openssl, the
    tokens signed here (hmac, openssl dgst), valid for a day."""
    import hashlib
    import hmac
    import json
    secret = "bench-secret-0123456789abcdef0123"
    body = b64url(json.dumps({"sub": "bench", "exp": int(time.time()) + 86400}).encode())
    head = b64url(b'{"alg":"HS256","typ":"JWT"}')
    sig = hmac.new(secret.encode(), (head + "." + body).encode(), hashlib.sha256).digest()
    VARIANTS["jwt HS256"] = ('[plugins.jwt]\ncategory = "jwt"\nsecret = "%s"\n' % secret,
                             'plugins = ["jwt"]', ["Authorization: Bearer %s.%s.%s"
                                                   % (head, body, b64url(sig))])
    key, pub = os.path.join(tmp, "rsa.pem"), os.path.join(tmp, "rsa.pub.pem")
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                    "rsa_keygen_bits:2048", "-out", key], check=True, capture_output=True)
    subprocess.run(["openssl", "pkey", "-in", key, "-pubout", "-out", pub], check=True,
                   capture_output=True)
    head = b64url(b'{"alg":"RS256","typ":"JWT"}')
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key],
                         input=(head + "." + body).encode(), check=True,
                         capture_output=True).stdout
    VARIANTS["jwt RS256"] = ('[plugins.jwt]\ncategory = "jwt"\npublic_key_file = "%s"\n' % pub,
                             'plugins = ["jwt"]', ["Authorization: Bearer %s.%s.%s"
                                                   % (head, body, b64url(sig))])


def request_headers(name):
    """The extra request header lines a variant's requests carry."""
    v = VARIANTS[name]
    return v[2] if len(v) > 2 else []


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_backend(tmp):
    port = free_port()
    d = os.path.join(tmp, "backend")
    os.makedirs(d)
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write("""daemon off; master_process on; worker_processes 1; pid %s/nginx.pid;
error_log %s/error.log; events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000;
  client_body_temp_path %s; proxy_temp_path %s; fastcgi_temp_path %s; uwsgi_temp_path %s;
  scgi_temp_path %s;
  server { listen 127.0.0.1:%d; location / { return 200 "%s"; } } }
""" % (d, d, d, d, d, d, d, port, BODY.decode().replace("\n", "\\n")))
    p = subprocess.Popen(["taskset", "-c", "1", "nginx", "-p", d, "-c", conf],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not wait_port(port):
        sys.exit("backend nginx did not start")
    return p, port


def config(tmp, name, backend_port, port):
    plugins, loc = VARIANTS[name][:2]
    text = ('[servers.s]\naddr = "127.0.0.1:%d"\nlocations = ["l"]\n'
            'keepalive_requests = 1000000\n'
            '%s'
            '[locations.l]\nupstream = "u"\n%s\n[upstreams.u]\naddrs = ["127.0.0.1:%d"]\n'
            % (port, plugins, loc, backend_port))
    path = os.path.join(tmp, "weir-%s.toml" % name.replace(" ", "_"))
    with open(path, "w") as f:
        f.write(text)
    return path


def drive(port, n, headers=()):
    """n keep-alive GETs on one connection, each read whole."""
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    req = ("GET / HTTP/1.1\r\nHost: b\r\n%s\r\n" % "".join(h + "\r\n" for h in headers)).encode()
    buf = b""
    for _ in range(n):
        s.sendall(req)
        while True:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                m = re.search(rb"content-length: *(\d+)", buf[:end], re.I)
                total = end + 4 + int(m.group(1))
                if len(buf) >= total:
                    buf = buf[total:]
                    break
            chunk = s.recv(65536)
            if not chunk:
                raise RuntimeError("weir closed the connection")
            buf += chunk
    s.close()


def callgrind_total(tmp, cfg, port, n, headers=()):
    out = os.path.join(tmp, "cg.%d.out" % n)
    p = subprocess.Popen(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
                          WEIR, "-c", cfg, "--threads", "1"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not wait_port(port, 60):
            raise RuntimeError("weir under valgrind did not start")
        drive(port, n, headers)
    finally:
        p.send_signal(signal.SIGINT)
        p.wait(120)
    with open(out) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    raise RuntimeError("no totals in " + out)


def instructions_per_request(tmp, cfg, port, n1=500, n2=2500, headers=()):
    a = callgrind_total(tmp, cfg, port, n1, headers)
    b = callgrind_total(tmp, cfg, port, n2, headers)
    return (b - a) / (n2 - n1)


def cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return int(parts[11]) + int(parts[12])


def cpu_per_request(cfg, port, duration, headers=(), before_stop=None):
    """(CPU us per request, requests per second) under wrk; before_stop()
    runs while weir still runs (to read its metrics)."""
    hs = [a for h in headers for a in ("-H", h)]
    p = subprocess.Popen(["taskset", "-c", "0", WEIR, "-c", cfg, "--threads", "1"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not wait_port(port):
            raise RuntimeError("weir did not start")
        subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c50", "-d2s"] + hs +
                       ["http://127.0.0.1:%d/" % port], capture_output=True)
        t0 = cpu_ticks(p.pid)
        r = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c50", "-d%ds" % duration] + hs +
                           ["http://127.0.0.1:%d/" % port], capture_output=True, text=True)
        t1 = cpu_ticks(p.pid)
        m = re.search(r"(\d+) requests in", r.stdout)
        if not m or "Non-2xx" in r.stdout or "Socket errors" in r.stdout:
            raise RuntimeError("wrk: " + r.stdout)
        reqs = int(m.group(1))
        hz = os.sysconf("SC_CLK_TCK")
        if before_stop:
            before_stop()
        return (t1 - t0) / hz * 1e6 / reqs, reqs / duration
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(30)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--no-wrk", action="store_true")
    ap.add_argument("--no-callgrind", action="store_true")
    ap.add_argument("--only", help="comma-separated variants (none is always run)")
    args = ap.parse_args()
    if not os.access(WEIR, os.X_OK):
        sys.exit("no %s: run make first (or set WEIR_BIN)" % WEIR)
    use_wrk = not args.no_wrk and shutil.which("wrk")
    use_cg = not args.no_callgrind and shutil.which("valgrind")
    tmp = tempfile.mkdtemp(prefix="weir-bench-plugins-")
    add_jwt_variants(tmp)
    only = set(args.only.split(",")) | {"none"} if args.only else set(VARIANTS)
    backend, bport = start_backend(tmp)
    rows = {}
    try:
        for name in [v for v in VARIANTS if v in only]:
            port = free_port()
            cfg = config(tmp, name, bport, port)
            hs = request_headers(name)
            ir = instructions_per_request(tmp, cfg, port, headers=hs) if use_cg else None
            cpu = cpu_per_request(cfg, port, args.duration, hs) if use_wrk else (None, None)
            rows[name] = (ir, cpu[0], cpu[1])
            print("[bench] %s: %s instr/req, %s us/req" % (name, ir, cpu[0]), file=sys.stderr)
    finally:
        backend.send_signal(signal.SIGTERM)
        backend.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    base = rows["none"]
    print("weir plugin cost: one thread; wrk -t1 -c50 -d%ds; callgrind over 2,000 "
          "keep-alive requests" % args.duration)
    print("%-11s %14s %8s %12s %8s %10s" % ("chain", "instr/req", "vs none", "CPU us/req",
                                           "vs none", "req/s"))
    for name, (ir, cpu, rps) in rows.items():
        def rel(a, b):
            return "%+.1f%%" % (100.0 * (a - b) / b) if a is not None and b else "-"
        print("%-11s %14s %8s %12s %8s %10s" % (
            name, "%.0f" % ir if ir is not None else "-", rel(ir, base[0]),
            "%.2f" % cpu if cpu is not None else "-", rel(cpu, base[1]),
            "%.0f" % rps if rps is not None else "-"))


if __name__ == "__main__":
    main()
