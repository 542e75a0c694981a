#!/usr/bin/python3
"""The body plugins side by side with nginx, in one run:

  compression  CPU per MiB of compressible text compressed on the way through
               (gzip level 6 against nginx's gzip_comp_level 6, same file, same
               backend), and for weir's brotli and zstd the CPU per MiB and the
               ratio (nginx-light has neither);
  static       requests/s and CPU per request serving a 1 KiB and a 1 MiB file
               with keep-alive (weir's directory plugin against nginx's static
               module with sendfile on).

Each proxy runs one worker on CPU 0; the clients (and the backend) run on
CPU 1. CPU is the proxy's process tree's utime+stime over the measured part.

Usage: bench/bodies.py [--duration 5] [--requests 60]
"""
import argparse
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lib  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEIR = os.environ.get("WEIR_BIN", os.path.join(ROOT, "build", "bin", "weir"))
NGINX = "/usr/sbin/nginx"
MIB = 1 << 20


def text_file(size):
    """Deterministic text that compresses like prose (about 3:1 with gzip)."""
    rnd = random.Random(1)
    words = ["".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 9)))
             for _ in range(3000)]
    out, n = [], 0
    while n < size:
        line = " ".join(rnd.choice(words) for _ in range(rnd.randint(6, 14))) + ".\n"
        out.append(line)
        n += len(line)
    return "".join(out).encode()[:size]


def start(argv, port, what):
    p = subprocess.Popen(["taskset", "-c", "0"] + argv, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    if not lib.wait_port(port):
        p.kill()
        raise RuntimeError("%s did not start" % what)
    return p


def stop(p):
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(20)
    except subprocess.TimeoutExpired:
        p.kill()


def nginx_conf(tmp, name, body):
    conf = os.path.join(tmp, name + ".conf")
    user = "user root;\n" if os.getuid() == 0 else ""
    with open(conf, "w") as f:
        f.write(user + """daemon off; worker_processes 1; pid %(t)s/%(n)s.pid;
error_log %(t)s/%(n)s.err;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path %(t)s; proxy_temp_path %(t)s;
  fastcgi_temp_path %(t)s; uwsgi_temp_path %(t)s; scgi_temp_path %(t)s;
  include /etc/nginx/mime.types; default_type application/octet-stream;
  sendfile on; tcp_nopush on; keepalive_requests 1000000;
%(b)s }
""" % {"t": tmp, "n": name, "b": body})
    return conf


def get_loop(port, path, n, headers=""):
    """n keep-alive GETs; returns the bytes of body received in all."""
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    req = ("GET %s HTTP/1.1\r\nHost: b\r\n%s\r\n" % (path, headers)).encode()
    total = 0
    buf = b""
    for _ in range(n):
        s.sendall(req)
        while b"\r\n\r\n" not in buf:
            buf += s.recv(65536)
        head, _, buf = buf.partition(b"\r\n\r\n")
        m = re.search(rb"(?i)content-length: *(\d+)", head)
        if m:
            need = int(m.group(1))
            while len(buf) < need:
                buf += s.recv(1 << 20)
            total += need
            buf = buf[need:]
        else:  # chunked
            while True:
                while b"\r\n" not in buf:
                    buf += s.recv(65536)
                line, _, buf = buf.partition(b"\r\n")
                size = int(line.split(b";")[0], 16)
                while len(buf) < size + 2:
                    buf += s.recv(1 << 20)
                total += size
                buf = buf[size + 2:]
                if size == 0:
                    break
    s.close()
    return total


def measure(p, fn):
    t0 = lib.tree_cpu_us(p.pid)
    w0 = time.monotonic()
    out = fn()
    return lib.tree_cpu_us(p.pid) - t0, time.monotonic() - w0, out


def compression(tmp, n):
    body = text_file(MIB)
    with open(os.path.join(tmp, "text.txt"), "wb") as f:
        f.write(body)
    bport = lib.free_port()
    backend = subprocess.Popen(
        ["taskset", "-c", "1", NGINX, "-c",
         nginx_conf(tmp, "backend", "server { listen 127.0.0.1:%d; root %s; gzip off; }"
                    % (bport, tmp)), "-e", os.path.join(tmp, "backend.err")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = []
    try:
        if not lib.wait_port(bport):
            raise RuntimeError("backend nginx did not start")
        gz = zlib.compressobj(6, zlib.DEFLATED, 31)
        print("compression: %d requests of a %d KiB text file each (python zlib -6: ratio %.3f)"
              % (n, len(body) >> 10, len(gz.compress(body) + gz.flush()) / len(body)))
        variants = [("nginx gzip 6", "gzip", None), ("weir gzip 6", "gzip", "gzip_level = 6"),
                    ("weir br 4", "br", "br_level = 4"), ("weir br 6", "br", "br_level = 6"),
                    ("weir zstd 3", "zstd", "zstd_level = 3")]
        for name, enc, keys in variants:
            port = lib.free_port()
            if keys is None:
                conf = nginx_conf(tmp, "gz", """upstream b { server 127.0.0.1:%d; keepalive 16; }
  server { listen 127.0.0.1:%d; gzip on; gzip_comp_level 6; gzip_types text/plain;
    gzip_min_length 20; gzip_proxied any;
    location / { proxy_pass http://b; proxy_http_version 1.1;
      proxy_set_header Connection ""; } }""" % (bport, port))
                p = start([NGINX, "-c", conf, "-e", os.path.join(tmp, "gz.err")], port, name)
            else:
                cfg = os.path.join(tmp, "weir-%s.toml" % enc)
                with open(cfg, "w") as f:
                    f.write('[servers.s]\naddr = "127.0.0.1:%d"\nlocations = ["l"]\n'
                            'keepalive_requests = 1000000\n'
                            '[locations.l]\nupstream = "u"\nplugins = ["c"]\n'
                            '[upstreams.u]\naddrs = ["127.0.0.1:%d"]\n'
                            '[plugins.c]\ncategory = "compression"\n%s\n' % (port, bport, keys))
                p = start([WEIR, "-c", cfg, "--threads", "1"], port, name)
            try:
                hdr = "Accept-Encoding: %s\r\n" % enc
                get_loop(port, "/text.txt", 3, hdr)  # warm up
                cpu, wall, out = measure(p, lambda: get_loop(port, "/text.txt", n, hdr))
                mib = n * len(body) / MIB
                rows.append((name, cpu / mib, out / (n * len(body)), n / wall))
            finally:
                stop(p)
    finally:
        stop(backend)
    print("  %-14s %14s %8s %10s" % ("", "CPU us per MiB", "ratio", "req/s"))
    base = rows[0][1]
    for name, us, ratio, rps in rows:
        print("  %-14s %14.0f %8.3f %10.1f   %.2fx nginx" % (name, us, ratio, rps, us / base))
    return rows


def static(tmp, duration):
    site = os.path.join(tmp, "site")
    os.makedirs(site, exist_ok=True)
    with open(os.path.join(site, "1k.bin"), "wb") as f:
        f.write(os.urandom(1024))
    with open(os.path.join(site, "1m.bin"), "wb") as f:
        f.write(os.urandom(MIB))
    rows = []
    for name in ("nginx", "weir"):
        port = lib.free_port()
        if name == "nginx":
            conf = nginx_conf(tmp, "static", "server { listen 127.0.0.1:%d; root %s; }"
                              % (port, site))
            p = start([NGINX, "-c", conf, "-e", os.path.join(tmp, "static.err")], port, name)
        else:
            cfg = os.path.join(tmp, "weir-static.toml")
            with open(cfg, "w") as f:
                f.write('[servers.s]\naddr = "127.0.0.1:%d"\nlocations = ["l"]\n'
                        'keepalive_requests = 1000000\n'
                        '[locations.l]\nplugins = ["d"]\n'
                        '[plugins.d]\ncategory = "directory"\npath = "%s"\n' % (port, site))
            p = start([WEIR, "-c", cfg, "--threads", "1"], port, name)
        try:
            for f in ("1k.bin", "1m.bin"):
                url = "http://127.0.0.1:%d/%s" % (port, f)
                conns = "50" if f == "1k.bin" else "10"
                subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c" + conns, "-d1s", url],
                               capture_output=True)
                out = os.path.join(tmp, "wrk-%s-%s.txt" % (name, f))

                def run():
                    r = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c" + conns,
                                        "-d%ds" % duration, url], capture_output=True, text=True)
                    with open(out, "w") as o:
                        o.write(r.stdout)
                    return lib.parse_wrk(out)
                cpu, _, w = measure(p, run)
                reqs = int(w["requests"])
                rows.append((name, f, float(w["rps"]), cpu / max(reqs, 1), w["errors"]))
        finally:
            stop(p)
    print("static files (one worker, wrk keep-alive, %d s each):" % duration)
    print("  %-6s %-7s %10s %14s  %s" % ("", "file", "req/s", "CPU us/req", "errors"))
    for name, f, rps, us, errs in rows:
        ref = [r for r in rows if r[0] == "nginx" and r[1] == f][0]
        print("  %-6s %-7s %10.0f %14.2f  %s  (%.2fx nginx CPU)" % (name, f, rps, us,
                                                                   errs or "-", us / ref[3]))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--requests", type=int, default=60)
    ap.add_argument("--only", choices=["compression", "static"])
    a = ap.parse_args()
    subprocess.run([os.path.join(ROOT, "scripts", "install-deps"), "bench"], check=True)
    if not os.environ.get("WEIR_BIN"):
        subprocess.run(["make", "-C", ROOT, "all"], check=True, stdout=subprocess.DEVNULL)
    with tempfile.TemporaryDirectory(prefix="weir-bodies-") as tmp:
        os.chmod(tmp, 0o755)
        if a.only in (None, "compression"):
            compression(tmp, a.requests)
        if a.only in (None, "static"):
            static(tmp, a.duration)


if __name__ == "__main__":
    main()
