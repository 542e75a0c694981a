#!/usr/bin/python3
"""L4 benchmark: a TCP tunnel through weir (protocol = "tcp"), HAProxy
(mode tcp, with and without `option splice-auto`) and nginx (stream),
side by side in one run, each with one worker pinned to CPU 0; the load
and the backend (bench/l4_load.c) share CPU 1.

Three runs per proxy:
  up     CONNS connections sending as fast as they can (client -> backend)
  down   CONNS connections receiving (backend -> client)
  conns  SHORT connections at once, each: connect, 17 bytes, echo, close
Printed: GiB/s and the proxy's CPU seconds per GiB (utime+stime of its
process tree), connections/s and CPU microseconds per connection, and
weir's ratio to each peer (CPU per unit: below 1 is weir cheaper).

Env: SECS (per run, default 5), CONNS (default 8), SHORT (default 50),
     PROXIES (default "weir haproxy haproxy-splice nginx"),
     WEIR_BIN, L4_LOAD (default build/bin/...).
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import free_port, pinned, tree_cpu_us, wait_port  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECS = float(os.environ.get("SECS", "5"))
CONNS = int(os.environ.get("CONNS", "8"))
SHORT = int(os.environ.get("SHORT", "50"))
PROXIES = os.environ.get("PROXIES", "weir haproxy haproxy-splice nginx").split()
WEIR = os.environ.get("WEIR_BIN", os.path.join(ROOT, "build", "bin", "weir"))
LOAD = os.environ.get("L4_LOAD", os.path.join(ROOT, "build", "bin", "l4_load"))
NGINX_STREAM = "/usr/lib/nginx/modules/ngx_stream_module.so"


def start_proxy(name, port, backend, tmp):
    log = open(os.path.join(tmp, name + ".log"), "wb")
    if name == "weir":
        cfg = os.path.join(tmp, "weir.toml")
        with open(cfg, "w") as f:
            f.write('[servers.t]\naddr = "127.0.0.1:%d"\nprotocol = "tcp"\nupstream = "u"\n'
                    '[upstreams.u]\naddrs = ["127.0.0.1:%d"]\nmax_fails = 0\n' % (port, backend))
        return pinned(0, [WEIR, "-c", cfg, "--threads", "1"], stdout=log, stderr=log)
    if name.startswith("haproxy"):
        cfg = os.path.join(tmp, name + ".cfg")
        splice = "  option splice-auto\n" if name.endswith("splice") else ""
        with open(cfg, "w") as f:
            f.write("global\n  nbthread 1\n  maxconn 5000\ndefaults\n  mode tcp\n"
                    "  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n%s"
                    "listen l\n  bind 127.0.0.1:%d\n  server s 127.0.0.1:%d\n"
                    % (splice, port, backend))
        return pinned(0, [shutil.which("haproxy") or "/usr/sbin/haproxy", "-f", cfg, "-db"],
                      stdout=log, stderr=log)
    if name == "nginx":
        cfg = os.path.join(tmp, "nginx.conf")
        with open(cfg, "w") as f:
            f.write("load_module %s;\nworker_processes 1;\npid %s/nginx.pid;\n"
                    "error_log %s/nginx.err warn;\nevents { worker_connections 10000; }\n"
                    "stream { server { listen 127.0.0.1:%d; proxy_pass 127.0.0.1:%d; } }\n"
                    % (NGINX_STREAM, tmp, tmp, port, backend))
        return pinned(0, ["/usr/sbin/nginx", "-p", tmp, "-c", cfg, "-g", "daemon off;"],
                      stdout=log, stderr=log)
    raise SystemExit("unknown proxy " + name)


def available(name):
    if name == "weir":
        return os.access(WEIR, os.X_OK)
    if name.startswith("haproxy"):
        return bool(shutil.which("haproxy") or os.access("/usr/sbin/haproxy", os.X_OK))
    if name == "nginx":
        return os.access("/usr/sbin/nginx", os.X_OK) and os.path.exists(NGINX_STREAM)
    return False


def load(mode, port, n):
    out = subprocess.run(["taskset", "-c", "1", LOAD, mode, str(port), str(n), str(SECS)],
                         capture_output=True, text=True, timeout=SECS + 60)
    return dict(kv.split("=") for kv in out.stdout.split())


def measure(pid, mode, port, n):
    before = tree_cpu_us(pid)
    r = load(mode, port, n)
    cpu_s = (tree_cpu_us(pid) - before) / 1e6
    secs = float(r["secs"])
    if mode == "conns":
        conns = int(r["conns"])
        return {"rate": conns / secs, "cpu": cpu_s * 1e6 / max(conns, 1),
                "failed": int(r["failed"])}
    gib = int(r["bytes"]) / (1 << 30)
    return {"rate": gib / secs, "cpu": cpu_s / max(gib, 1e-9), "failed": 0}


def main():
    if not os.access(LOAD, os.X_OK):
        raise SystemExit("bench/l4.py: %s not built (make)" % LOAD)
    tmp = tempfile.mkdtemp(prefix="weir-l4-")
    bport = free_port()
    backend = pinned(1, [LOAD, "serve", str(bport)], stdout=subprocess.PIPE, text=True)
    backend.stdout.readline()
    results = {}
    try:
        for name in PROXIES:
            if not available(name):
                print("[l4] %s: not installed, skipped" % name, file=sys.stderr)
                continue
            port = free_port()
            p = start_proxy(name, port, bport, tmp)
            try:
                if not wait_port(port):
                    print("[l4] %s did not start (see %s)" % (name, tmp), file=sys.stderr)
                    continue
                load("up", port, 1)  # warm-up is cheap; one short run
                results[name] = {m: measure(p.pid, m, port, SHORT if m == "conns" else CONNS)
                                 for m in ("up", "down", "conns")}
            finally:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
    finally:
        backend.kill()
    print("L4 TCP tunnel: one proxy worker on CPU 0, load and backend on CPU 1, "
          "%gs per run, %d streams, %d short connections at once" % (SECS, CONNS, SHORT))
    print("%-15s %9s %9s %9s %9s %10s %9s %7s" % ("proxy", "up GiB/s", "CPU s/GiB", "down GiB/s",
                                               "CPU s/GiB", "conns/s", "CPU us/c", "failed"))
    for name, r in results.items():
        print("%-15s %9.2f %9.3f %9.2f %9.3f %10.0f %9.1f %7d"
              % (name, r["up"]["rate"], r["up"]["cpu"], r["down"]["rate"], r["down"]["cpu"],
                 r["conns"]["rate"], r["conns"]["cpu"], r["conns"]["failed"]))
    w = results.get("weir")
    if w:
        print("weir / peer (CPU per GiB up, down; CPU per connection; below 1: weir cheaper)")
        for name, r in results.items():
            if name == "weir":
                continue
            print("  vs %-14s %6.2fx %6.2fx %6.2fx" % (
                name, w["up"]["cpu"] / max(r["up"]["cpu"], 1e-9),
                w["down"]["cpu"] / max(r["down"]["cpu"], 1e-9),
                w["conns"]["cpu"] / max(r["conns"]["cpu"], 1e-9)))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
