#!/usr/bin/python3
"""What tracing costs per request: weir proxying to an nginx backend with
no tracing, with otlp_exporter recording every request (always_on: the
span, its attempt, the export's protobuf, or JSON, and POST all counted;
the backend's nginx stands in for a collector that keeps up), with
otlp_exporter and nothing sampled (always_off: the trace context only),
and with server_timing.

Figures as bench/plugins.py's: instructions per request (valgrind
callgrind, every thread, deterministic across machines; N2 - N1 requests
so start-up and shut-down cancel out) and CPU microseconds per request
under wrk (noisier).

Usage: bench/tracing.py [--duration 10] [--repeat 3] [--no-wrk] [--no-callgrind]
"""
import argparse
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import plugins as P  # noqa: E402


def variants(collector_port):
    url = "http://127.0.0.1:%d" % collector_port
    return {
        "off": ("", ""),
        "otlp, all sampled": ('otlp_sampler = "always_on"\n',
                              'otlp_exporter = "%s"\n' % url),
        "otlp json, all sampled": ('otlp_sampler = "always_on"\notlp_protocol = "http/json"\n',
                                   'otlp_exporter = "%s"\n' % url),
        "otlp, none sampled": ('otlp_sampler = "always_off"\n',
                               'otlp_exporter = "%s"\n' % url),
        "server_timing": ("", "server_timing = true\n"),
    }


def config(tmp, name, basic, server, backend_port, port, admin=None):
    text = ('[basic]\n%s\n[servers.s]\naddr = "127.0.0.1:%d"\nlocations = ["l"]\n'
            'keepalive_requests = 1000000\n%s'
            '[locations.l]\nupstream = "u"\n[upstreams.u]\naddrs = ["127.0.0.1:%d"]\n'
            % (basic, port, server, backend_port))
    if admin:
        text += '[admin]\naddr = "127.0.0.1:%d"\n' % admin
    path = os.path.join(tmp, "weir-%s.toml" % "".join(c if c.isalnum() else "_" for c in name))
    with open(path, "w") as f:
        f.write(text)
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--no-wrk", action="store_true")
    ap.add_argument("--no-callgrind", action="store_true")
    ap.add_argument("--repeat", type=int, default=3,
                    help="wrk runs per variant, interleaved; the median is shown")
    args = ap.parse_args()
    if not os.access(P.WEIR, os.X_OK):
        sys.exit("no %s: run make first (or set WEIR_BIN)" % P.WEIR)
    use_wrk = not args.no_wrk and shutil.which("wrk")
    use_cg = not args.no_callgrind and shutil.which("valgrind")
    tmp = tempfile.mkdtemp(prefix="weir-bench-tracing-")
    backend, bport = P.start_backend(tmp)
    rows, spans_seen = {}, {}
    try:
        # The backend's nginx is the collector too: it answers any POST
        # 200 (reading and dropping the body) at once, as a collector
        # that keeps up would.
        irs, cpus = {}, {}
        for name, (basic, server) in variants(bport).items():
            port = P.free_port()
            cfg = config(tmp, name, basic, server, bport, port)
            irs[name] = P.instructions_per_request(tmp, cfg, port) if use_cg else None
        # wrk's CPU figures move by ±10% from run to run on a small
        # machine: each variant runs --repeat times, the variants
        # interleaved so a slow spell does not fall on one of them.
        for r in range(args.repeat if use_wrk else 0):
            for name, (basic, server) in variants(bport).items():
                port, admin = P.free_port(), P.free_port()
                cfg = config(tmp, name, basic, server, bport, port, admin)
                got = {}
                cpu = P.cpu_per_request(cfg, port, args.duration,
                                        before_stop=lambda: got.update(spans(admin)))
                cpus.setdefault(name, []).append(cpu)
                if got.get("exported") or got.get("dropped_queue") or got.get("dropped_export"):
                    spans_seen[name] = got
                print("[bench] %s run %d: %.2f us/req" % (name, r + 1, cpu[0]), file=sys.stderr)
        for name in variants(bport):
            runs = sorted(cpus.get(name, []), key=lambda c: c[0])
            cpu = runs[len(runs) // 2] if runs else (None, None)
            rows[name] = (irs[name], cpu[0], cpu[1])
            if runs:
                print("[bench] %s: us/req runs %s" % (
                    name, ", ".join("%.2f" % c[0] for c in cpus[name])), file=sys.stderr)
    finally:
        backend.terminate()
        backend.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    base = rows["off"]
    print("weir tracing cost: one thread (its exporter thread on the same CPU); wrk -t1 -c50 "
          "-d%ds, median of %d runs; callgrind over 2,000 keep-alive requests"
          % (args.duration, args.repeat))
    print("%-19s %12s %8s %12s %8s %10s" % ("variant", "instr/req", "vs off", "CPU us/req",
                                           "vs off", "req/s"))
    for name, (ir, cpu, rps) in rows.items():
        def rel(a, b):
            return "%+.1f%%" % (100.0 * (a - b) / b) if a is not None and b else "-"
        print("%-19s %12s %8s %12s %8s %10s" % (
            name, "%.0f" % ir if ir is not None else "-", rel(ir, base[0]),
            "%.2f" % cpu if cpu is not None else "-", rel(cpu, base[1]),
            "%.0f" % rps if rps is not None else "-"))
    for name, got in spans_seen.items():
        print("%s under wrk: %s spans exported, %s dropped (worker queues full), %s dropped "
              "(the collector too slow)" % (name, got.get("exported"), got.get("dropped_queue"),
                                            got.get("dropped_export")))


def spans(admin):
    """weir_otlp_spans_total by result, from weir's metrics."""
    import re
    import time
    import urllib.request
    time.sleep(1.5)  # what the exporter still holds goes out
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % admin, timeout=5).read()
    return {m.group(1): int(m.group(2)) for m in re.finditer(
        r'weir_otlp_spans_total\{result="(\w+)"\} (\d+)', text.decode())}


if __name__ == "__main__":
    main()
