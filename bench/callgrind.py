#!/usr/bin/python3
"""Instructions per request, deterministic: weir, HAProxy, nginx and H2O, each
a reverse proxy with ONE worker thread/process in front of the same nginx
backend, run under valgrind --tool=callgrind (Debian python3, stdlib only).

The figure is user-space instructions (callgrind's Ir, every thread and every
process of the proxy) per request:

    (Ir total for N2 requests - Ir total for N1 requests) / (N2 - N1)

each total from a fresh proxy process, so start-up, configuration parsing,
the first connection (and TLS handshake) and shut-down cancel out. It does not
depend on the machine's speed or load, unlike the CPU time of bench/run.
The backend and the client are not under valgrind.

Three protocols:
  h1  keep-alive HTTP/1.1 over plain TCP: one client connection sending GET /
      in sequence (the next request after the whole response), body checked;
  h2  TLS 1.3 HTTP/2: h2load -n N -c 1 -m 10 (one connection, 10 concurrent
      streams), self-signed ECDSA P-256 certificate made with openssl;
  tcp L4 (weir protocol = "tcp", HAProxy mode tcp, nginx stream; H2O has
      none): short connections in sequence, each an HTTP/1.0 GET tunnelled to
      the backend, read to the backend's close; the figure is per connection.

Usage: bench/callgrind.py [--only h1|h2|tcp] [--n1 2000] [--n2 20000]
                          [--h2-n1 N] [--h2-n2 N]   (TLS h2; default --n1/--n2)
                          [--tcp-n1 200] [--tcp-n2 2000]
                          [--proxies "weir haproxy nginx h2o"] [--keep]
WEIR_BIN overrides build/bin/weir. See bench/README.md.
"""
import argparse
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # keep bench/ free of __pycache__ (as bench/run does)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import free_port, wait_port  # noqa: E402
from plugins import BODY, start_backend  # noqa: E402  (the same nginx backend)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEIR = os.environ.get("WEIR_BIN", os.path.join(ROOT, "build", "bin", "weir"))
PROXIES = ["weir", "haproxy", "nginx", "h2o"]


def log(msg):
    print("[callgrind] " + msg, file=sys.stderr, flush=True)


# ---- proxy configurations --------------------------------------------------
# The same for all four, as far as each allows: one worker thread or process,
# no access log, client keep-alive, upstream connections kept alive and reused
# (HTTP/1.1 to the backend), long idle timeouts on both sides, TLS 1.2-1.3 with
# the server's cipher order, ALPN h2,http/1.1, session tickets/cache at their
# defaults (on). Request/response headers are left at each proxy's defaults:
# weir adds X-Forwarded-For, X-Real-IP, X-Forwarded-Proto and Via, H2O adds
# x-forwarded-for, x-forwarded-proto and via; HAProxy and nginx as configured
# here (and in bench/run) add none. Each start_* returns (argv, config path).

def conf_weir(d, port, bport, tls):
    # weir's defaults otherwise: access log off, upstream keep-alive pool on,
    # the headers it adds (above) kept.
    cert = ""
    srv_cert = ""
    if tls:
        cert = '[certificates.c]\ncert = "%s"\nkey = "%s"\n\n' % (tls["cert"], tls["key"])
        srv_cert = 'certificates = ["c"]\n'
    text = ('[basic]\nthreads = 1\nlog_level = "warn"\n\n%s'
            '[servers.s]\naddr = "127.0.0.1:%d"\nlocations = ["l"]\n%s'
            'keepalive_timeout = "300s"\nkeepalive_requests = 1000000\n\n'
            '[locations.l]\nupstream = "u"\n\n'
            '[upstreams.u]\naddrs = ["127.0.0.1:%d"]\n' % (cert, port, srv_cert, bport))
    path = os.path.join(d, "weir.toml")
    with open(path, "w") as f:
        f.write(text)
    return [WEIR, "-c", path, "--threads", "1"], path


def conf_haproxy(d, port, bport, tls):
    # As bench/run's start_haproxy: nbthread 1, -db (one foreground process,
    # no master-worker), keep-alive both sides, http-reuse always (pooled
    # server connections), no "log" lines.
    bind = "127.0.0.1:%d" % port
    if tls:
        bind += " ssl crt %s alpn h2,http/1.1" % tls["pem"]
    text = """global
    nbthread 1
    maxconn 20000
    no strict-limits

defaults
    mode http
    maxconn 20000
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s
    timeout http-request 30s

frontend fe
    bind %s
    default_backend be

backend be
    server backend 127.0.0.1:%d
""" % (bind, bport)
    path = os.path.join(d, "haproxy.cfg")
    with open(path, "w") as f:
        f.write(text)
    return ["haproxy", "-db", "-f", path], path


def conf_nginx(d, port, bport, tls):
    # Single-process mode (master_process off, daemon off): the one process
    # is the worker. Upstream keepalive pool with HTTP/1.1 and Connection "",
    # keepalive_requests 1000000 both sides, access_log off. For TLS, as
    # bench/run's tls_start_nginx: nginx 1.22 needs TLSv1.3 and the server's
    # cipher order spelled out; a shared session cache as the others have.
    listen = "127.0.0.1:%d" % port
    ssl = ""
    if tls:
        listen += " ssl http2"
        ssl = """        ssl_certificate %s;
        ssl_certificate_key %s;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_prefer_server_ciphers on;
        ssl_session_cache shared:SSL:10m;
""" % (tls["cert"], tls["key"])
    text = """daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 20000; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    upstream be {{
        server 127.0.0.1:{bport};
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }}
    server {{
        listen {listen};
{ssl}        location / {{
            proxy_pass http://be;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
""".format(d=d, bport=bport, listen=listen, ssl=ssl)
    path = os.path.join(d, "nginx.conf")
    with open(path, "w") as f:
        f.write(text)
    return ["nginx", "-p", d, "-e", os.path.join(d, "error.log"), "-c", path], path


def h2o_config(d, port, bport, tls):
    """H2O 2.2 configuration (YAML), the same as bench/run's start_h2o."""
    # `h2o -m worker` (the default): one process, no master; num-threads 1.
    # No access-log directive = no access log. proxy.reverse.url speaks
    # HTTP/1.1 to the backend and keeps idle connections for
    # proxy.timeout.keepalive (2 s by default; 300 s as the others). Client
    # idle timeouts 300 s (defaults 10 s). max-connections as the others'
    # maxconn (default 1024). ocsp-update-interval 0: no OCSP fetcher child
    # (a self-signed certificate has none). cipher-preference server and TLS
    # 1.2-1.3, as the others; tickets are on by default. Started as root,
    # H2O would switch to "nobody" (its default `user`); `user: root` keeps
    # it root like the others here (valgrind, as nobody, could not write the
    # profile it opened as root).
    ssl = ""
    if tls:
        ssl = """  ssl:
    certificate-file: %s
    key-file: %s
    minimum-version: TLSv1.2
    cipher-preference: server
    ocsp-update-interval: 0
""" % (tls["cert"], tls["key"])
    user = "user: root\n" if os.geteuid() == 0 else ""
    return user + """num-threads: 1
max-connections: 20000
error-log: {d}/error.log
http1-request-timeout: 300
http2-idle-timeout: 300
listen:
  host: 127.0.0.1
  port: {port}
{ssl}proxy.timeout.keepalive: 300000
hosts:
  default:
    paths:
      /:
        proxy.reverse.url: http://127.0.0.1:{bport}/
""".format(d=d, port=port, bport=bport, ssl=ssl)


def conf_h2o(d, port, bport, tls):
    path = os.path.join(d, "h2o.conf")
    with open(path, "w") as f:
        f.write(h2o_config(d, port, bport, tls))
    return ["h2o", "-c", path], path


CONF = {"weir": conf_weir, "haproxy": conf_haproxy, "nginx": conf_nginx, "h2o": conf_h2o}


# ---- L4 configurations (proto "tcp"): one worker, no log, the defaults ----

def conf_weir_l4(d, port, bport, tls):
    text = ('[basic]\nthreads = 1\nlog_level = "warn"\n\n'
            '[servers.s]\naddr = "127.0.0.1:%d"\nprotocol = "tcp"\nupstream = "u"\n\n'
            '[upstreams.u]\naddrs = ["127.0.0.1:%d"]\n' % (port, bport))
    path = os.path.join(d, "weir.toml")
    with open(path, "w") as f:
        f.write(text)
    return [WEIR, "-c", path, "--threads", "1"], path


def conf_haproxy_l4(d, port, bport, tls):
    text = """global
    nbthread 1
    maxconn 20000
    no strict-limits

defaults
    mode tcp
    maxconn 20000
    timeout connect 5s
    timeout client 300s
    timeout server 300s

listen l4
    bind 127.0.0.1:%d
    server backend 127.0.0.1:%d
""" % (port, bport)
    path = os.path.join(d, "haproxy.cfg")
    with open(path, "w") as f:
        f.write(text)
    return ["haproxy", "-db", "-f", path], path


NGINX_STREAM_SO = "/usr/lib/nginx/modules/ngx_stream_module.so"


def conf_nginx_l4(d, port, bport, tls):
    # proxy_half_close on: the same tunnel as weir's and HAProxy's.
    text = """load_module {so};
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 20000; }}
stream {{
    server {{
        listen 127.0.0.1:{port};
        proxy_pass 127.0.0.1:{bport};
        proxy_half_close on;
    }}
}}
""".format(so=NGINX_STREAM_SO, d=d, port=port, bport=bport)
    path = os.path.join(d, "nginx.conf")
    with open(path, "w") as f:
        f.write(text)
    return ["nginx", "-p", d, "-e", os.path.join(d, "error.log"), "-c", path], path


CONF_L4 = {"weir": conf_weir_l4, "haproxy": conf_haproxy_l4, "nginx": conf_nginx_l4}


# ---- clients (not measured) -------------------------------------------------

def drive_h1(port, n):
    """n keep-alive GETs on one connection in sequence, each read whole and
    checked (status 200, the backend's body)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=120)
    req = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    buf = b""
    for i in range(n):
        s.sendall(req)
        while True:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                head = buf[:end]
                m = re.search(rb"\r\ncontent-length: *(\d+)", head, re.I)
                if not m:
                    raise RuntimeError("response %d without Content-Length: %r" % (i, head))
                total = end + 4 + int(m.group(1))
                if len(buf) >= total:
                    if not head.startswith(b"HTTP/1.1 200") or buf[end + 4:total] != BODY:
                        raise RuntimeError("bad response %d: %r" % (i, buf[:total]))
                    buf = buf[total:]
                    break
            chunk = s.recv(65536)
            if not chunk:
                raise RuntimeError("proxy closed the connection after %d responses" % i)
            buf += chunk
    s.close()


def drive_tcp(port, n):
    """n short connections in sequence through the tunnel: an HTTP/1.0 GET
    (the backend answers and closes), read to EOF, the body checked."""
    req = b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=120)
        s.sendall(req)
        buf = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        s.close()
        if not buf.startswith(b"HTTP/1.1 200") or not buf.endswith(BODY):
            raise RuntimeError("bad response on connection %d: %r" % (i, buf[:200]))


def drive_h2(port, n):
    """h2load -n n -c 1 -m 10 over TLS; every request must succeed with 2xx
    over h2."""
    r = subprocess.run(["h2load", "-n", str(n), "-c", "1", "-m", "10",
                        "https://127.0.0.1:%d/" % port],
                       capture_output=True, text=True, timeout=1800)
    out = r.stdout
    ok = re.search(r"^requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", out, re.M)
    st = re.search(r"^status codes: (\d+) 2xx", out, re.M)
    proto = re.search(r"^Application protocol: (\S+)", out, re.M)
    cipher = re.search(r"^Cipher: (\S+)", out, re.M)
    if not (ok and st and proto) or int(ok.group(1)) != n or int(st.group(1)) != n \
            or proto.group(1) != "h2":
        raise RuntimeError("h2load did not complete %d h2 requests:\n%s%s" % (n, out, r.stderr))
    return cipher.group(1) if cipher else "?"


# ---- one callgrind run --------------------------------------------------------

def callgrind_total(tmp, name, proto, n, bport, tls):
    """Ir summed over every callgrind.out.* of one run of NAME serving n
    requests; returns (Ir, number of processes, cipher or None)."""
    d = os.path.join(tmp, "%s-%s-%d" % (name, proto, n))
    os.makedirs(d)
    out = os.path.join(d, "cg")
    os.makedirs(out)
    port = free_port()
    if proto == "tcp" and name not in CONF_L4:
        raise RuntimeError("%s has no L4 proxy" % name)
    conf = CONF_L4[name] if proto == "tcp" else CONF[name]
    argv, _ = conf(d, port, bport, tls if proto == "h2" else None)
    # --trace-children: a proxy that forks or execs is counted whole; %p
    # gives each process its file, and the Ir of all files are summed. The
    # one helper skipped: H2O starts /usr/share/h2o/annotate-backtrace-symbols
    # (a perl script that only annotates crash backtraces) and leaves it
    # blocked on a pipe; it serves no request.
    cmd = ["valgrind", "--tool=callgrind", "--trace-children=yes",
           "--trace-children-skip=*annotate-backtrace-symbols",
           "--callgrind-out-file=" + os.path.join(out, "callgrind.out.%p")] + argv
    with open(os.path.join(d, "log"), "w") as logf:
        # Own process group: every process of the run can be waited for.
        p = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, cwd=d,
                             start_new_session=True)
    cipher = None
    try:
        # One TCP connect succeeds (accepted and closed by the proxy) in
        # every run, failed attempts before the listener exists cost the
        # proxy nothing: this too cancels in the subtraction.
        if not wait_port(port, 120) or p.poll() is not None:
            raise RuntimeError("%s under valgrind did not start; see %s/log" % (name, d))
        t0 = time.monotonic()
        if proto == "h1":
            drive_h1(port, n)
        elif proto == "tcp":
            drive_tcp(port, n)
        else:
            cipher = drive_h2(port, n)
        log("%s %s: %d requests in %.1f s under callgrind" % (name, proto, n,
                                                               time.monotonic() - t0))
    finally:
        # weir, HAProxy, nginx and H2O all stop on SIGTERM by exiting, so
        # valgrind writes the profile (SIGKILL would lose it).
        # Under valgrind a SIGTERM that arrives while nginx sleeps in
        # epoll_wait can leave it asleep until its next timer (over a minute
        # seen): if it has not exited after 2 s, one TCP connect wakes its
        # loop, which then sees the signal. At most a connection accepted
        # per run or two, a few thousand instructions against millions.
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 180
        while True:
            try:
                p.wait(2)
                break
            except subprocess.TimeoutExpired:
                pass
            if time.monotonic() > deadline:
                p.kill()
                p.wait()
                raise RuntimeError("%s did not exit after SIGTERM" % name)
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                pass
    # H2O's neverbleed process (forked at start-up, it holds the TLS key and
    # signs handshakes) exits just after the main process; its profile is
    # complete only once it has. Wait for the whole process group.
    deadline = time.monotonic() + 60
    while True:
        try:
            os.killpg(p.pid, 0)
        except ProcessLookupError:
            break
        if time.monotonic() > deadline:
            os.killpg(p.pid, signal.SIGKILL)
            raise RuntimeError("%s: a child process did not exit" % name)
        time.sleep(0.1)
    files = glob.glob(os.path.join(out, "callgrind.out.*"))
    total = 0
    for path in files:
        with open(path) as f:
            for line in f:
                if line.startswith("summary:"):
                    total += int(line.split()[1])
                    break
            else:
                raise RuntimeError("no summary line in " + path)
    if not files:
        raise RuntimeError("no callgrind output for %s; see %s/log" % (name, d))
    return total, len(files), cipher


def make_cert(tmp):
    d = os.path.join(tmp, "tls")
    os.makedirs(d)
    tls = {"cert": os.path.join(d, "cert.pem"), "key": os.path.join(d, "key.pem"),
           "pem": os.path.join(d, "haproxy.pem")}
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", tls["key"],
                    "-out", tls["cert"], "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    with open(tls["pem"], "w") as f:  # HAProxy wants certificate and key in one file
        for part in ("cert", "key"):
            with open(tls[part]) as g:
                f.write(g.read())
    return tls


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["h1", "h2", "tcp"])
    ap.add_argument("--n1", type=int, default=2000, help="smaller run, HTTP/1.1 (default 2000)")
    ap.add_argument("--n2", type=int, default=20000, help="larger run, HTTP/1.1 (default 20000)")
    ap.add_argument("--h2-n1", type=int, help="smaller run, TLS HTTP/2 (default: --n1)")
    ap.add_argument("--h2-n2", type=int, help="larger run, TLS HTTP/2 (default: --n2)")
    ap.add_argument("--tcp-n1", type=int, default=200, help="smaller run, L4 (default 200)")
    ap.add_argument("--tcp-n2", type=int, default=2000, help="larger run, L4 (default 2000)")
    ap.add_argument("--proxies", default=" ".join(PROXIES),
                    help="space-separated subset of: " + " ".join(PROXIES))
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (configs, profiles)")
    args = ap.parse_args()
    protos = [args.only] if args.only else ["h1", "h2", "tcp"]
    ns = {"h1": (args.n1, args.n2),
          "h2": (args.h2_n1 or args.n1, args.h2_n2 or args.n2),
          "tcp": (args.tcp_n1, args.tcp_n2)}
    proxies = args.proxies.split()
    for name in proxies:
        if name not in CONF:
            sys.exit("unknown proxy %r (%s)" % (name, " ".join(PROXIES)))
    for proto in protos:
        if not 0 < ns[proto][0] < ns[proto][1]:
            sys.exit("%s: need 0 < n1 < n2" % proto)
    os.environ["PATH"] += ":/usr/sbin:/sbin"  # haproxy and nginx live in /usr/sbin
    need = ["valgrind", "nginx"] + [p for p in proxies if p != "weir"]
    if "h2" in protos:
        need += ["h2load", "openssl"]
    missing = [b for b in need if not shutil.which(b)]
    if missing:
        sys.exit("missing %s: run scripts/install-deps bench" % " ".join(missing))
    if "weir" in proxies and not os.access(WEIR, os.X_OK):
        sys.exit("no %s: run make first (or set WEIR_BIN)" % WEIR)

    tmp = tempfile.mkdtemp(prefix="weir-bench-callgrind-")
    backend, bport = start_backend(tmp)
    t_start = time.monotonic()
    results = {}  # (name, proto) -> instructions per request, or an error string
    ciphers = {}
    try:
        tls = make_cert(tmp) if "h2" in protos else None
        for proto in protos:
            n1, n2 = ns[proto]
            for name in proxies:
                try:
                    a, fa, _ = callgrind_total(tmp, name, proto, n1, bport, tls)
                    b, fb, c = callgrind_total(tmp, name, proto, n2, bport, tls)
                    results[(name, proto)] = (b - a) / (n2 - n1)
                    if c:
                        ciphers[name] = c
                    log("%s %s: Ir %d (N=%d, %d process%s), %d (N=%d, %d): %.0f instr/req"
                        % (name, proto, a, n1, fa, "" if fa == 1 else "es", b, n2, fb,
                           results[(name, proto)]))
                except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                    results[(name, proto)] = str(e).splitlines()[0]
                    log("%s %s: FAILED: %s" % (name, proto, e))
    finally:
        backend.send_signal(signal.SIGTERM)
        backend.wait(10)
        if args.keep:
            log("kept " + tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    print("weir callgrind bench: user-space instructions (Ir, all threads and processes of the")
    print("proxy) per request, (Ir at N2 - Ir at N1) / (N2 - N1); one worker each, same nginx backend.")
    parts = []
    if "h1" in protos:
        parts.append("h1 = keep-alive HTTP/1.1, one connection, N1=%d N2=%d" % ns["h1"])
    if "h2" in protos:
        parts.append("h2 = TLS 1.3 HTTP/2, h2load -c 1 -m 10, N1=%d N2=%d" % ns["h2"])
    if "tcp" in protos:
        parts.append("tcp = L4, per short connection (HTTP/1.0 GET tunnelled), N1=%d N2=%d"
                     % ns["tcp"])
    print("; ".join(parts) + ". Lower is better.")
    if ciphers:
        kinds = set(ciphers.values())
        print("h2 cipher: " + ("; ".join("%s %s" % kv for kv in ciphers.items())
                               if len(kinds) > 1 else kinds.pop()))
    print("(%.0f s)" % (time.monotonic() - t_start))
    print()
    head = "%-9s" % "proxy"
    for proto in protos:
        label = {"h1": "h1", "h2": "TLS h2", "tcp": "tcp"}[proto]
        head += " %15s %9s" % (label + (" instr/conn" if proto == "tcp" else " instr/req"),
                               "x weir")
    print(head)
    print("-" * len(head))

    def val(name, proto):
        v = results.get((name, proto))
        return v if isinstance(v, float) else None

    for name in proxies:
        line = "%-9s" % name
        notes = []
        for proto in protos:
            v, w = val(name, proto), val("weir", proto)
            if v is None:
                line += " %15s %9s" % ("failed", "")
                notes.append("%s: %s" % (proto, results.get((name, proto))))
                continue
            ratio = "%.2fx" % (v / w) if w else "-"
            line += " %15.0f %9s" % (v, ratio)
        print(line + ("  [" + "; ".join(notes) + "]" if notes else ""))
    others = [p for p in proxies if p != "weir"]
    if "weir" in proxies and others:
        print()
        print("Ratios weir/other (< 1 = weir executes fewer instructions per request)")
        print("%-12s" % "" + "".join(" %10s" % {"h1": "h1", "h2": "TLS h2", "tcp": "tcp"}[p]
                                     for p in protos))
        for o in others:
            cells = []
            for proto in protos:
                v, w = val(o, proto), val("weir", proto)
                cells.append("%.2fx" % (w / v) if v and w else "n/a")
            print("%-12s" % ("vs " + o) + "".join(" %10s" % c for c in cells))
    failed_weir = any(val("weir", p) is None for p in protos) if "weir" in proxies else False
    sys.exit(1 if failed_weir else 0)


if __name__ == "__main__":
    main()
