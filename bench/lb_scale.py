#!/usr/bin/python3
"""Upstreams with many backends: what loading and changing them costs.

    make && bench/lb_scale.py                      # N = 500 2000 4096 10000
    WEIR_BUILD=build-lb-rel bench/lb_scale.py 1000 50000
    SECTIONS="check put" bench/lb_scale.py         # some sections only

Sections (all by default; stdlib only, 127.0.0.1 only, nothing is
contacted: the backends are 127.0.X.Y:1 and weir -t or the tables never
connect to them):

  lib    build/bin/lb_scale: adding N backends one by one, the first
         selection (which builds the tables), a rebuild, a selection, peak
         RSS, for round_robin, ketama and maglev (bench/lb_scale.c)
  check  `weir -t` on one upstream of N backends: seconds and peak RSS
  start  weir started with it: seconds until it listens and answers (the
         tables are built at start), peak RSS
  put    an admin PUT /api/upstreams/u of 2,000 backends into a running
         weir, then one replacing all of them, then one back to 1; with
         [admin] persist off and on (on: the file is rewritten and loaded);
         and the request after each (the one that rebuilds the tables)

Prints tables and asserts nothing: these are figures for the machine at hand,
use a release build. Exit status 1 only if a run failed outright.
"""
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BUILD = os.path.abspath(os.environ.get("WEIR_BUILD", os.path.join(ROOT, "build")))
WEIR = os.path.join(BUILD, "bin", "weir")
LB_SCALE = os.path.join(BUILD, "bin", "lb_scale")
SECTIONS = os.environ.get("SECTIONS", "lib check start put").split()
SIZES = [int(a) for a in sys.argv[1:]] or [500, 2000, 4096, 10000]
ALGOS = ["round_robin", "hash:ip", "maglev:ip"]
TIMEOUT = float(os.environ.get("TIMEOUT", "300"))
TOKEN = "bench"
sys.path.insert(0, os.path.dirname(__file__))
from lib import free_port  # noqa: E402

failed = False


def addrs(n, port=1):
    return ["127.%d.%d.%d:%d" % (i >> 16, (i >> 8) & 255, i & 255, port) for i in range(n)]


def config(port, algo, backends, admin_port=None, persist=False):
    text = ""
    if admin_port:
        text += '[admin]\naddr = "127.0.0.1:%d"\ntoken = "%s"\n' % (admin_port, TOKEN)
        text += "persist = %s\n\n" % ("true" if persist else "false")
    text += ('[servers.s]\naddr = "127.0.0.1:%d"\nlocations = ["all"]\n\n'
             '[locations.all]\nupstream = "u"\n\n[upstreams.u]\nalgo = "%s"\naddrs = [%s]\n'
             % (port, algo, ", ".join('"%s"' % a for a in backends)))
    return text


def run_timed(argv):
    """(exit status or None if killed after TIMEOUT, seconds, peak RSS MiB).
    Peak RSS comes from /usr/bin/time: a child forked from this python would
    count python's own pages in its ru_maxrss."""
    out = os.path.join(tempfile.gettempdir(), "lb_scale.%d.time" % os.getpid())
    t0 = time.monotonic()
    r = subprocess.run(["/usr/bin/time", "-o", out, "-f", "%M", "timeout", "%d" % TIMEOUT] + argv,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rc = None if r.returncode == 124 else r.returncode
    secs = time.monotonic() - t0
    try:
        with open(out) as f:
            rss = int(f.read().split()[-1]) / 1024
        os.unlink(out)
    except (OSError, ValueError, IndexError):
        rss = 0.0
    return rc, secs, rss


def hwm_mib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def wait_answer(port, proc, timeout):
    """Seconds until GET / on port answers (any status), None if it did not."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            return None
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/")
            c.getresponse().read()
            c.close()
            return time.monotonic() - t0
        except OSError:
            time.sleep(0.005)
    return None


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def section_lib():
    global failed
    if not os.access(LB_SCALE, os.X_OK):
        print("lib: %s not built\n" % LB_SCALE)
        return
    print("## library: N adds, first selection (table build), rebuild after one change")
    sys.stdout.flush()
    r = subprocess.run([LB_SCALE] + [str(n) for n in SIZES], timeout=TIMEOUT * len(SIZES) * 3)
    failed |= r.returncode != 0
    print()


def section_check(tmp):
    global failed
    print("## weir -t -c FILE, one upstream of N backends")
    print("%-12s %7s %10s %10s" % ("algo", "N", "seconds", "peak MiB"))
    for algo in ALGOS:
        for n in SIZES:
            path = os.path.join(tmp, "check.toml")
            with open(path, "w") as f:
                f.write(config(free_port(), algo, addrs(n)))
            rc, secs, rss = run_timed([WEIR, "-t", "-c", path])
            note = "" if rc == 0 else ("  timed out" if rc is None else "  exit %s" % rc)
            failed |= rc is not None and rc != 0
            print("%-12s %7d %10.2f %10.1f%s" % (algo, n, secs, rss, note))
            sys.stdout.flush()
    print()


def section_start(tmp):
    global failed
    print("## weir started with one upstream of N backends: until it answers")
    print("%-12s %7s %10s %10s" % ("algo", "N", "seconds", "peak MiB"))
    for algo in ALGOS:
        for n in SIZES:
            port = free_port()
            path = os.path.join(tmp, "start.toml")
            with open(path, "w") as f:
                f.write(config(port, algo, addrs(n)))
            p = subprocess.Popen([WEIR, "-c", path, "--threads", "1"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            secs = wait_answer(port, p, TIMEOUT)
            rss = hwm_mib(p.pid) if p.poll() is None else 0.0
            stop(p)
            failed |= secs is None
            print("%-12s %7d %10s %10.1f" % (algo, n, "%.2f" % secs if secs else "failed", rss))
            sys.stdout.flush()
    print()


def put(aport, backends):
    body = json.dumps({"backends": [{"addr": a, "weight": w} for a, w in backends]})
    t0 = time.monotonic()
    c = http.client.HTTPConnection("127.0.0.1", aport, timeout=TIMEOUT)
    c.request("PUT", "/api/upstreams/u", body=body,
              headers={"Authorization": "Bearer " + TOKEN, "Content-Type": "application/json"})
    r = c.getresponse()
    r.read()
    c.close()
    return r.status, time.monotonic() - t0


def section_put(tmp):
    global failed
    print("## admin PUT /api/upstreams/u into a running weir (round_robin): PUT ms, then the"
          " next request's ms (it rebuilds the tables)")
    print("%-8s %20s %20s %20s" % ("persist", "1 -> 2000", "2000 -> 2000 others", "2000 -> 1"))
    many = addrs(4000)
    for persist in (False, True):
        port, aport = free_port(), free_port()
        path = os.path.join(tmp, "put.toml")
        with open(path, "w") as f:
            f.write(config(port, "round_robin", many[:1], aport, persist))
        p = subprocess.Popen([WEIR, "-c", path, "--threads", "1"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cells = []
        if wait_answer(port, p, 30) is None:
            failed = True
            cells = ["failed"] * 3
        else:
            for backends in ([(a, 1) for a in many[:2000]],
                             [(a, 1 + i % 2) for i, a in enumerate(many[2000:])],
                             [(many[0], 1)]):
                status, secs = put(aport, backends)
                after = wait_answer(port, p, 5)
                failed |= status != 200 or after is None
                cells.append("%.1f (%.1f)" % (secs * 1000, (after or 0) * 1000)
                             if status == 200 else "status %d" % status)
        stop(p)
        print("%-8s %20s %20s %20s" % ("on" if persist else "off", *cells))
        sys.stdout.flush()
    print()


def main():
    if not os.access(WEIR, os.X_OK):
        print("no %s: build first (make, or WEIR_BUILD=DIR)" % WEIR)
        return 1
    print("weir: %s; N = %s\n" % (WEIR, " ".join(map(str, SIZES))))
    with tempfile.TemporaryDirectory(prefix="weir-lb-scale-") as tmp:
        for name in SECTIONS:
            if name == "lib":
                section_lib()
            elif name == "check":
                section_check(tmp)
            elif name == "start":
                section_start(tmp)
            elif name == "put":
                section_put(tmp)
            else:
                print("unknown section %s" % name)
                return 2
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
