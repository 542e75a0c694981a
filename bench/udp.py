#!/usr/bin/python3
"""UDP benchmark: datagrams through weir (protocol = "udp") and nginx
(stream, `listen ... udp`), side by side in one run, each with one worker
pinned to CPU 0; the load and the echo backend (bench/udp_load.c) share
CPU 1. HAProxy's community edition proxies no UDP.

Two runs per proxy, CLIENTS clients each with one 64-byte query in flight:
  sessions  every client keeps its socket: one session per client, its
            datagrams on the session's backend socket (a game, QUIC)
  queries   every query from a new socket, and the proxies end a session
            after its answer (weir `responses = 1`, nginx `proxy_responses
            1`): a session per datagram (DNS)
Printed: replies/s, the proxy's CPU microseconds per reply (utime+stime of
its process tree), queries lost (unanswered for 200 ms, sent anew), and
weir's ratio to nginx (CPU per reply: below 1 is weir cheaper).

Env: SECS (per run, default 5), CLIENTS (default 16), PROXIES (default
"weir nginx"), WEIR_BIN, UDP_LOAD (default build/bin/...).
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import pinned, tree_cpu_us  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECS = float(os.environ.get("SECS", "5"))
CLIENTS = int(os.environ.get("CLIENTS", "16"))
PROXIES = os.environ.get("PROXIES", "weir nginx").split()
WEIR = os.environ.get("WEIR_BIN", os.path.join(ROOT, "build", "bin", "weir"))
LOAD = os.environ.get("UDP_LOAD", os.path.join(ROOT, "build", "bin", "udp_load"))
NGINX_STREAM = "/usr/lib/nginx/modules/ngx_stream_module.so"


def free_udp_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def udp_bound(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("127.0.0.1", port))
        return False
    except OSError:
        return True
    finally:
        s.close()


def start_proxy(name, port, backend, tmp, per_query):
    log = open(os.path.join(tmp, name + ".log"), "wb")
    if name == "weir":
        cfg = os.path.join(tmp, "weir.toml")
        with open(cfg, "w") as f:
            f.write('[basic]\nlog_level = "warn"\n'
                    '[servers.u]\naddr = "127.0.0.1:%d"\nprotocol = "udp"\nupstream = "u"\n'
                    'max_sessions = 100000\n%s'
                    '[upstreams.u]\naddrs = ["127.0.0.1:%d"]\nmax_fails = 0\n'
                    % (port, "responses = 1\n" if per_query else "", backend))
        return pinned(0, [WEIR, "-c", cfg, "--threads", "1"], stdout=log, stderr=log)
    if name == "nginx":
        cfg = os.path.join(tmp, "nginx.conf")
        with open(cfg, "w") as f:
            f.write("load_module %s;\nworker_processes 1;\npid %s/nginx.pid;\n"
                    "error_log %s/nginx.err warn;\nevents { worker_connections 100000; }\n"
                    "stream { server { listen 127.0.0.1:%d udp; proxy_pass 127.0.0.1:%d; "
                    "proxy_timeout 30s; %s} }\n"
                    % (NGINX_STREAM, tmp, tmp, port, backend,
                       "proxy_responses 1; " if per_query else ""))
        return pinned(0, ["/usr/sbin/nginx", "-p", tmp, "-c", cfg, "-g", "daemon off;"],
                      stdout=log, stderr=log)
    raise SystemExit("unknown proxy " + name)


def available(name):
    if name == "weir":
        return os.access(WEIR, os.X_OK)
    if name == "nginx":
        return os.access("/usr/sbin/nginx", os.X_OK) and os.path.exists(NGINX_STREAM)
    return False


def measure(pid, mode, port):
    before = tree_cpu_us(pid)
    out = subprocess.run(["taskset", "-c", "1", LOAD, "ping" if mode == "sessions" else "fresh",
                          str(port), str(CLIENTS), str(SECS)],
                         capture_output=True, text=True, timeout=SECS + 60)
    cpu_us = tree_cpu_us(pid) - before
    r = dict(kv.split("=") for kv in out.stdout.split())
    replies = int(r["replies"])
    return {"rate": replies / float(r["secs"]), "cpu": cpu_us / max(replies, 1),
            "lost": int(r["lost"])}


def main():
    if not os.access(LOAD, os.X_OK):
        raise SystemExit("bench/udp.py: %s not built (make)" % LOAD)
    tmp = tempfile.mkdtemp(prefix="weir-udp-")
    bport = free_udp_port()
    backend = pinned(1, [LOAD, "serve", str(bport)], stdout=subprocess.PIPE, text=True)
    backend.stdout.readline()
    results = {}
    try:
        for name in PROXIES:
            if not available(name):
                print("[udp] %s: not installed, skipped" % name, file=sys.stderr)
                continue
            results[name] = {}
            for mode in ("sessions", "queries"):
                port = free_udp_port()
                p = start_proxy(name, port, bport, tmp, mode == "queries")
                try:
                    deadline = time.monotonic() + 10
                    while not udp_bound(port) and time.monotonic() < deadline:
                        time.sleep(0.02)
                    time.sleep(0.2)
                    results[name][mode] = measure(p.pid, mode, port)
                finally:
                    p.terminate()
                    try:
                        p.wait(10)
                    except subprocess.TimeoutExpired:
                        p.kill()
    finally:
        backend.kill()
    print("UDP: one proxy worker on CPU 0, load and echo backend on CPU 1, %gs per run, "
          "%d clients with one 64-byte query in flight each" % (SECS, CLIENTS))
    print("%-8s %12s %9s %6s %12s %9s %6s" % ("proxy", "sessions: r/s", "CPU us", "lost",
                                            "queries: r/s", "CPU us", "lost"))
    for name, r in results.items():
        s, q = r["sessions"], r["queries"]
        print("%-8s %12.0f %9.2f %6d %12.0f %9.2f %6d"
              % (name, s["rate"], s["cpu"], s["lost"], q["rate"], q["cpu"], q["lost"]))
    w = results.get("weir")
    if w:
        print("weir / peer (CPU per reply, long sessions; per query, a session each; below 1: "
              "weir cheaper)")
        for name, r in results.items():
            if name != "weir":
                print("  vs %-8s %6.2fx %6.2fx" % (
                    name, w["sessions"]["cpu"] / max(r["sessions"]["cpu"], 1e-9),
                    w["queries"]["cpu"] / max(r["queries"]["cpu"], 1e-9)))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
