#!/usr/bin/python3
"""Ring (RESP) benchmark: redis-benchmark GET against weir's ring server
(protocol = "resp", 16 members, Ketama) and against redis-server
answering a plain GET of keys it holds (10,000 keys set before, each an
"ip:port" like the ring's answers), side by side in one run. Each server
has one thread pinned to CPU 0; redis-benchmark runs on CPU 1.

Two runs per server, CLIENTS connections each:
  single     one command in flight per connection (-P 1)
  pipelined  PIPELINE commands per round trip (-P 16)
Printed: ops/s, p50 and p99 latency (ms, redis-benchmark's own figures),
the server's CPU microseconds per op (utime+stime), and weir's ratios to
redis-server (ops/s: above 1 is weir faster; CPU per op: below 1 is weir
cheaper).

A third run, "one", has a single client with one command in flight: its
p99 is the server's round trip, not the queue of 50 clients on one
redis-benchmark thread.

Then, as bench/callgrind.py does for HTTP: each server under callgrind
answers N1 and N2 GETs in sequence on one connection, and the difference
of the instructions counted over N2 - N1 is its cost per GET (start-up
and shutdown cancel out); stable across machines.

Env: REQUESTS (per run, default 200000), CLIENTS (default 50), PIPELINE
(default 16), SERVERS (default "weir redis"), WEIR_BIN, CALLGRIND (default
1; 0 skips it), N1/N2 (default 2000/20000).
"""
import glob
import signal
import socket
import csv
import io
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import free_port, pinned, tree_cpu_us, wait_port  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUESTS = int(os.environ.get("REQUESTS", "200000"))
CLIENTS = int(os.environ.get("CLIENTS", "50"))
PIPELINE = int(os.environ.get("PIPELINE", "16"))
SERVERS = os.environ.get("SERVERS", "weir redis").split()
WEIR = os.environ.get("WEIR_BIN", os.path.join(ROOT, "build", "bin", "weir"))
KEYS = 10000
CALLGRIND = os.environ.get("CALLGRIND", "1") != "0"
N1 = int(os.environ.get("N1", "2000"))
N2 = int(os.environ.get("N2", "20000"))


def start(name, port, tmp, wrap=()):
    log = open(os.path.join(tmp, name + ".log"), "ab")
    if name == "weir":
        cfg = os.path.join(tmp, "weir.toml")
        members = ", ".join('"10.0.%d.%d:8080"' % (i // 250, 1 + i % 250) for i in range(16))
        with open(cfg, "w") as f:
            f.write('[basic]\nlog_level = "warn"\n'
                    '[servers.ring]\naddr = "127.0.0.1:%d"\nprotocol = "resp"\n'
                    'upstream = "u"\n[upstreams.u]\naddrs = [%s]\nalgo = "hash:uri"\n'
                    % (port, members))
        return pinned(0, list(wrap) + [WEIR, "-c", cfg, "--threads", "1"], stdout=log,
                      stderr=log)
    p = pinned(0, list(wrap) + ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--io-threads", "1", "--dir", tmp],
               stdout=log, stderr=log)
    if wait_port(port):
        # The keys redis-benchmark's -r asks for: key:000000000000 ...
        cmds = "".join("SET key:%012d 10.0.%d.%d:8080\r\n" % (i, i % 64, i % 250)
                       for i in range(KEYS))
        subprocess.run(["redis-cli", "-p", str(port), "--pipe"], input=cmds.encode(),
                       stdout=subprocess.DEVNULL, check=True, timeout=60)
    return p


def bench(port, pipeline, clients=None):
    argv = ["taskset", "-c", "1", "redis-benchmark", "-p", str(port), "-t", "get", "-n",
            str(REQUESTS), "-c", str(clients or CLIENTS), "-P", str(pipeline), "-r", str(KEYS),
            "--csv", "--precision", "3"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=300).stdout
    rows = [r for r in csv.DictReader(io.StringIO(out)) if r.get("test") == "GET"]
    if not rows:
        raise RuntimeError("redis-benchmark printed no GET row:\n" + out)
    return rows[0]


def main():
    tmp = tempfile.mkdtemp(prefix="weir-resp-bench-")
    results = {}
    for name in SERVERS:
        port = free_port()
        p = start(name, port, tmp)
        try:
            if not wait_port(port):
                print("%s did not start (see %s)" % (name, tmp))
                continue
            bench(port, 1)  # warm up: connections, the ring's tables
            for mode, pipe, clients in (("single", 1, CLIENTS), ("pipelined", PIPELINE, CLIENTS),
                                        ("one", 1, 1)):
                cpu0 = tree_cpu_us(p.pid)
                t0 = time.monotonic()
                row = bench(port, pipe, clients)
                cpu = tree_cpu_us(p.pid) - cpu0
                took = time.monotonic() - t0
                results[(name, mode)] = {
                    "rps": float(row["rps"]),
                    "p50": float(row["p50_latency_ms"]),
                    "p99": float(row["p99_latency_ms"]),
                    "cpu_us": cpu / REQUESTS,
                    "secs": took,
                }
        finally:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
    print("redis-benchmark GET, %d clients (\"one\": 1), %d requests per run, pipelined "
          "runs -P %d" % (CLIENTS, REQUESTS, PIPELINE))
    print("%-8s %-10s %12s %9s %9s %12s" % ("server", "mode", "ops/s", "p50 ms", "p99 ms",
                                             "CPU us/op"))
    for (name, mode), r in results.items():
        print("%-8s %-10s %12.0f %9.3f %9.3f %12.3f" % (name, mode, r["rps"], r["p50"], r["p99"],
                                                        r["cpu_us"]))
    for mode in ("single", "pipelined", "one"):
        w, r = results.get(("weir", mode)), results.get(("redis", mode))
        if w and r:
            print("weir/redis %-10s ops/s %.2f   CPU per op %.2f   p99 %.3f vs %.3f ms"
                  % (mode, w["rps"] / r["rps"], w["cpu_us"] / r["cpu_us"], w["p99"], r["p99"]))
    ok = "weir" not in SERVERS or all(("weir", m) in results for m in ("single", "pipelined"))
    if CALLGRIND:
        per = {}
        for name in SERVERS:
            a = callgrind(name, N1, tmp)
            b = callgrind(name, N2, tmp)
            per[name] = (b - a) / (N2 - N1)
        print("callgrind: instructions per GET (N1=%d N2=%d, one connection, in sequence)"
              % (N1, N2))
        for name, v in per.items():
            print("%-8s %10.0f" % (name, v))
        if "weir" in per and "redis" in per:
            print("weir/redis instructions per GET %.2f" % (per["weir"] / per["redis"]))
    return 0 if ok else 1


def drive(port, n):
    """n GETs in sequence on one connection, each reply read whole."""
    s = socket.create_connection(("127.0.0.1", port), timeout=120)
    buf = b""
    for i in range(n):
        k = b"key:%012d" % (i % KEYS)
        s.sendall(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(k), k))
        while True:
            end = buf.find(b"\r\n")
            if end > 0 and buf[:1] == b"$":
                total = end + 2 + int(buf[1:end]) + 2
                if len(buf) >= total:
                    buf = buf[total:]
                    break
            chunk = s.recv(65536)
            if not chunk:
                raise RuntimeError("closed after %d replies" % i)
            buf += chunk
    s.close()


def callgrind(name, n, tmp):
    """Instructions of NAME's whole life under callgrind answering n GETs."""
    out = os.path.join(tmp, "cg-%s-%d" % (name, n))
    os.makedirs(out)
    port = free_port()
    p = start(name, port, tmp, ["valgrind", "--tool=callgrind",
                                "--callgrind-out-file=" + os.path.join(out, "cg.%p")])
    try:
        if not wait_port(port, 120):
            raise RuntimeError("%s under valgrind did not start" % name)
        drive(port, n)
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(120)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    total = 0
    for path in glob.glob(os.path.join(out, "cg.*")):
        with open(path) as f:
            for line in f:
                if line.startswith("summary:"):
                    total += int(line.split()[1])
                    break
    if not total:
        raise RuntimeError("no callgrind summary for %s in %s" % (name, out))
    return total


if __name__ == "__main__":
    sys.exit(main())
