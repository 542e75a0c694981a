#!/usr/bin/python3
"""What a cache hit costs: weir's cache plugin, nginx's proxy_cache and
Varnish (when installed), each in front of the same nginx origin, one
worker pinned to CPU 0, answering a 1 KiB and a 100 KiB object from their
stores; then the hit rate and memory of weir with a Zipf-distributed key
set four times larger than its memory tier (nginx with the same bound on
its cache size, for comparison).

Figures:
  - instructions per hit (valgrind callgrind, user space, deterministic
    across machines) for weir and nginx: the total for N2 hits minus the
    total for N1, over N2 - N1 (Varnish's threads do not run under
    valgrind in reasonable time: not measured);
  - CPU microseconds per hit under wrk (50 keep-alive connections, wrk on
    CPU 1): the proxy's process tree's utime + stime over the requests.
  - Zipf (s = 1.0) over KEYS keys of 4 KiB: the share of hits after a
    warm-up, and weir's RSS.

Usage: bench/cache.py [--duration 10] [--no-wrk] [--no-callgrind] [--no-zipf]
"""
import argparse
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import free_port, tree_cpu_us, tree_rss_bytes, wait_port  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEIR = os.environ.get("WEIR_BIN", os.path.join(ROOT, "build", "bin", "weir"))
SIZES = {"1k": 1024, "100k": 100 * 1024}
KEYS = 20000
ZIPF_BODY = 4096


def log(msg):
    print("[cache-bench] " + msg, file=sys.stderr, flush=True)


def start_origin(tmp):
    """nginx serving /1k and /100k (files, Cache-Control: max-age=3600) and
    /z/ANY (4 KiB, the same)."""
    port = free_port()
    d = os.path.join(tmp, "origin")
    os.makedirs(os.path.join(d, "www"))
    for name, n in SIZES.items():
        with open(os.path.join(d, "www", name), "wb") as f:
            f.write(b"x" * n)
    with open(os.path.join(d, "www", "z"), "wb") as f:
        f.write(b"z" * ZIPF_BODY)
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write("""daemon off; master_process on; worker_processes 1; pid %(d)s/nginx.pid; user root;
error_log %(d)s/error.log; events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000;
  client_body_temp_path %(d)s; proxy_temp_path %(d)s; fastcgi_temp_path %(d)s;
  uwsgi_temp_path %(d)s; scgi_temp_path %(d)s;
  server { listen 127.0.0.1:%(port)d; root %(d)s/www;
    add_header Cache-Control "max-age=3600";
    location /z/ { try_files /z =404; } } }
""" % {"d": d, "port": port})
    p = subprocess.Popen(["taskset", "-c", "1", "nginx", "-p", d, "-c", conf],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not wait_port(port):
        sys.exit("origin nginx did not start")
    return p, port


def conf_weir(d, port, oport, memory):
    path = os.path.join(d, "weir.toml")
    with open(path, "w") as f:
        f.write("""[servers.s]
addr = "127.0.0.1:%d"
locations = ["l"]
keepalive_requests = 1000000
[caches.default]
memory = "%s"
[plugins.c]
category = "cache"
[locations.l]
upstream = "u"
plugins = ["c"]
[upstreams.u]
addrs = ["127.0.0.1:%d"]
""" % (port, memory, oport))
    return [WEIR, "-c", path, "--threads", "1"]


def conf_nginx(d, port, oport, memory, valgrind=False):
    path = os.path.join(d, "nginx.conf")
    with open(path, "w") as f:
        f.write("""daemon off; master_process %(mp)s; worker_processes 1; pid %(d)s/nginx.pid; user root;
error_log %(d)s/error.log; events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000;
  client_body_temp_path %(d)s; proxy_temp_path %(d)s/proxy; fastcgi_temp_path %(d)s;
  uwsgi_temp_path %(d)s; scgi_temp_path %(d)s;
  proxy_cache_path %(d)s/cache levels=1:2 keys_zone=c:64m max_size=%(mem)s inactive=1h;
  upstream o { server 127.0.0.1:%(o)d; keepalive 32; }
  server { listen 127.0.0.1:%(port)d;
    location / { proxy_pass http://o; proxy_http_version 1.1;
      proxy_set_header Connection ""; proxy_cache c; proxy_cache_lock on;
      add_header X-Cache-Status $upstream_cache_status; } } }
""" % {"d": d, "port": port, "o": oport, "mem": memory.lower().replace("mb", "m"),
       "mp": "off" if valgrind else "on"})
    return ["nginx", "-p", d, "-c", path]


def conf_varnish(d, port, oport, memory):
    vcl = os.path.join(d, "default.vcl")
    with open(vcl, "w") as f:
        f.write('vcl 4.1;\nbackend o { .host = "127.0.0.1"; .port = "%d"; }\n'
                'sub vcl_deliver { if (obj.hits > 0) { set resp.http.X-Cache-Status = "HIT"; }'
                ' else { set resp.http.X-Cache-Status = "MISS"; } }\n' % oport)
    return ["varnishd", "-F", "-n", os.path.join(d, "varnish"), "-a", "127.0.0.1:%d" % port,
            "-f", vcl, "-s", "malloc,%s" % memory.upper().replace("MB", "M"),
            "-p", "thread_pools=1", "-p", "thread_pool_min=10"]


CONF = {"weir": conf_weir, "nginx": conf_nginx, "varnish": conf_varnish}


def start(name, tmp, oport, memory, pin=True):
    d = os.path.join(tmp, name + "-" + memory)
    os.makedirs(d, exist_ok=True)
    port = free_port()
    argv = CONF[name](d, port, oport, memory)
    if pin:
        argv = ["taskset", "-c", "0"] + argv
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not wait_port(port, 30):
        p.kill()
        raise RuntimeError("%s did not start" % name)
    return p, port


def stop(p):
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(30)
    except subprocess.TimeoutExpired:
        p.kill()


def drive(port, n, path):
    """n keep-alive GETs of path on one connection, each read whole."""
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    req = ("GET %s HTTP/1.1\r\nHost: b\r\n\r\n" % path).encode()
    buf = b""
    heads = []
    for _ in range(n):
        s.sendall(req)
        while True:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                m = re.search(rb"content-length: *(\d+)", buf[:end], re.I)
                total = end + 4 + int(m.group(1))
                if len(buf) >= total:
                    heads.append(buf[:end])
                    buf = buf[total:]
                    break
            chunk = s.recv(1 << 20)
            if not chunk:
                raise RuntimeError("the proxy closed the connection")
            buf += chunk
    s.close()
    return heads


def is_hit(head):
    h = head.lower()
    return b"cache-status: weir; hit" in h or b"x-cache-status: hit" in h


def wrk_hits(name, tmp, oport, path, duration):
    p, port = start(name, tmp, oport, "256MB")
    try:
        heads = drive(port, 3, path)
        if not is_hit(heads[-1]):
            raise RuntimeError("%s: not a hit: %r" % (name, heads[-1]))
        url = "http://127.0.0.1:%d%s" % (port, path)
        subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c50", "-d2s", url],
                       capture_output=True)
        t0 = tree_cpu_us(p.pid)
        r = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c50", "-d%ds" % duration, url],
                           capture_output=True, text=True)
        t1 = tree_cpu_us(p.pid)
        m = re.search(r"(\d+) requests in", r.stdout)
        if not m or "Non-2xx" in r.stdout or "Socket errors" in r.stdout:
            raise RuntimeError("wrk: " + r.stdout)
        n = int(m.group(1))
        return (t1 - t0) / n, n / duration
    finally:
        stop(p)


def callgrind_total(name, tmp, oport, path, n):
    d = os.path.join(tmp, "cg-%s-%s-%d" % (name, path.strip("/"), n))
    os.makedirs(d)
    port = free_port()
    if name == "weir":
        argv = conf_weir(d, port, oport, "256MB")
    else:
        argv = conf_nginx(d, port, oport, "256MB", valgrind=True)
    out = os.path.join(d, "cg.out")
    p = subprocess.Popen(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out] + argv,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not wait_port(port, 60):
            raise RuntimeError("%s under valgrind did not start" % name)
        drive(port, 2, path)  # the miss and a first hit
        drive(port, n, path)
    finally:
        p.send_signal(signal.SIGQUIT if name == "nginx" else signal.SIGINT)
        p.wait(120)
    with open(out) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    raise RuntimeError("no totals in " + out)


def instructions_per_hit(name, tmp, oport, path, n1=500, n2=2500):
    a = callgrind_total(name, tmp, oport, path, n1)
    b = callgrind_total(name, tmp, oport, path, n2)
    return (b - a) / (n2 - n1)


def zipf_keys(n, count, s=1.0, seed=7):
    rnd = random.Random(seed)
    weights = [1.0 / (i + 1) ** s for i in range(n)]
    cum, t = [], 0.0
    for w in weights:
        t += w
        cum.append(t)
    import bisect
    perm = list(range(n))
    rnd.shuffle(perm)  # popular keys are not the first ones written
    return [perm[bisect.bisect_left(cum, rnd.random() * t)] for _ in range(count)]


def lru_hit_rate(keys, capacity):
    """Plain LRU of `capacity` objects over the same trace (a reference)."""
    from collections import OrderedDict
    lru = OrderedDict()
    hits = counted = 0
    warm = len(keys) // 4
    for i, k in enumerate(keys):
        hit = k in lru
        if hit:
            lru.move_to_end(k)
        else:
            lru[k] = True
            if len(lru) > capacity:
                lru.popitem(last=False)
        if i >= warm:
            counted += 1
            hits += hit
    return hits / counted


def zipf_run(name, tmp, oport, memory, requests):
    p, port = start(name, tmp, oport, memory, pin=False)
    try:
        keys = zipf_keys(KEYS, requests)
        s = socket.create_connection(("127.0.0.1", port), timeout=60)
        buf = b""
        hits = counted = 0
        warm = requests // 4
        for i, k in enumerate(keys):
            s.sendall(b"GET /z/%d HTTP/1.1\r\nHost: b\r\n\r\n" % k)
            while True:
                end = buf.find(b"\r\n\r\n")
                if end >= 0:
                    m = re.search(rb"content-length: *(\d+)", buf[:end], re.I)
                    total = end + 4 + int(m.group(1))
                    if len(buf) >= total:
                        head = buf[:end]
                        buf = buf[total:]
                        break
                chunk = s.recv(1 << 20)
                if not chunk:
                    raise RuntimeError("closed")
                buf += chunk
            if i >= warm:
                counted += 1
                hits += is_hit(head)
        s.close()
        stored = "-"
        cdir = os.path.join(tmp, name + "-" + memory, "cache")
        if os.path.isdir(cdir):  # nginx: what its cache directory holds at the end
            sizes = [os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(cdir)
                     for f in fs]
            stored = "%d files, %.1f MB" % (len(sizes), sum(sizes) / 1e6)
        return hits / counted, tree_rss_bytes(p.pid), stored
    finally:
        stop(p)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--no-wrk", action="store_true")
    ap.add_argument("--no-callgrind", action="store_true")
    ap.add_argument("--no-zipf", action="store_true")
    ap.add_argument("--zipf-requests", type=int, default=60000)
    args = ap.parse_args()
    if not os.access(WEIR, os.X_OK):
        sys.exit("no %s: run make first (or set WEIR_BIN)" % WEIR)
    proxies = ["weir", "nginx"] + (["varnish"] if shutil.which("varnishd") else [])
    tmp = tempfile.mkdtemp(prefix="weir-bench-cache-")
    os.chmod(tmp, 0o755)  # varnishd reads its VCL as its own user
    origin, oport = start_origin(tmp)
    rows = []
    try:
        for size in SIZES:
            path = "/" + size
            for name in proxies:
                ir = None
                if not args.no_callgrind and shutil.which("valgrind") and name != "varnish":
                    ir = instructions_per_hit(name, tmp, oport, path)
                cpu = (None, None)
                if not args.no_wrk and shutil.which("wrk"):
                    cpu = wrk_hits(name, tmp, oport, path, args.duration)
                rows.append((size, name, ir, cpu[0], cpu[1]))
                log("%s %s: %s instr/hit, %s us/hit" % (size, name, ir, cpu[0]))
        zrows = []
        if not args.no_zipf:
            for name in ("weir", "nginx"):
                rate, rss, stored = zipf_run(name, tmp, oport, "16MB", args.zipf_requests)
                zrows.append((name, rate, rss, stored))
                log("zipf %s: %.3f hit rate, rss %d" % (name, rate, rss))
            # what weir's 16 MB hold: a body, its head and key (~350 B) and
            # 256 B of bookkeeping per object
            cap = (16 << 20) // (ZIPF_BODY + 350 + 256)
            zrows.append(("LRU of %d objects (simulated)" % cap,
                          lru_hit_rate(zipf_keys(KEYS, args.zipf_requests), cap), 0, "-"))
    finally:
        stop(origin)
        shutil.rmtree(tmp, ignore_errors=True)

    def f(v, fmt):
        return fmt % v if v is not None else "-"
    print("Cache hits, one worker on CPU 0, 50 keep-alive connections (wrk on CPU 1)")
    print("| object | proxy | instructions/hit | CPU us/hit | hits/s | vs nginx (instr) |")
    print("|---|---|---|---|---|---|")
    for size, name, ir, cpu, rate in rows:
        ng = [r[2] for r in rows if r[0] == size and r[1] == "nginx"][0]
        ratio = "%.2f" % (ir / ng) if ir and ng else "-"
        print("| %s | %s | %s | %s | %s | %s |" % (size, name, f(ir, "%.0f"), f(cpu, "%.2f"),
                                                    f(rate, "%.0f"), ratio))
    if not args.no_zipf:
        print()
        print("Zipf s=1.0 over %d keys of %d B (%d MB of objects), a 16 MB store, "
              "hits after a quarter of %d requests" % (KEYS, ZIPF_BODY,
                                                       KEYS * ZIPF_BODY >> 20,
                                                       args.zipf_requests))
        print("| proxy | hit rate | RSS MB | on disk at the end |")
        print("|---|---|---|---|")
        for name, rate, rss, stored in zrows:
            print("| %s | %.3f | %s | %s |" % (name, rate, "%.1f" % (rss / 1e6) if rss else "-",
                                                stored))


if __name__ == "__main__":
    main()
