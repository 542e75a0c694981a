#!/usr/bin/python3
"""Small helpers for bench/run (Debian python3, stdlib only).

Used both as a module (idle_conns.py imports proc_tree/tree_rss_bytes) and as a
command line tool from bench/run:

    lib.py free-port                 print a free TCP port on 127.0.0.1
    lib.py tree PID                  print PID and all its descendants
    lib.py cpu-us PID                utime+stime of PID's process tree, microseconds
    lib.py rss PID                   VmRSS of PID's process tree, bytes
    lib.py cpu-jiffies [N]           "busy total" jiffies of CPU N (all CPUs if empty)
    lib.py parse-wrk FILE            print wrk results as shell-safe KEY=VALUE lines
    lib.py table RESULTS.tsv HEADER  print the results table
    lib.py reuse-table REUSE.tsv HEADER SECS   print the upstream-reuse tables

Process *trees* matter because nginx runs a master plus one worker: the worker
does the work, but summing the tree keeps the numbers comparable with the
single-process weir and HAProxy (the idle master adds ~nothing to the deltas).
"""
import os
import re
import socket
import sys

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    # Let the kernel pick an unused port, then release it for the proxy to bind.
    # There is a tiny race with other programs, acceptable on a bench machine.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stat_fields(pid):
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    # comm (field 2) may contain spaces or ')', so split after the last ')'.
    return data[data.rindex(")") + 2:].split()


def proc_tree(root):
    """root and all its descendants (by scanning /proc for parent pids)."""
    children = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            ppid = int(_stat_fields(name)[1])  # field 4 overall
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(name))
    out, todo = [], [int(root)]
    while todo:
        pid = todo.pop()
        if not os.path.exists(f"/proc/{pid}"):
            continue
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def tree_cpu_us(root):
    """utime+stime (all threads of each process) over the tree, in microseconds."""
    ticks = 0
    for pid in proc_tree(root):
        try:
            f = _stat_fields(pid)
        except OSError:
            continue
        ticks += int(f[11]) + int(f[12])  # fields 14 (utime) and 15 (stime)
    return ticks * 1_000_000 // CLK_TCK


def tree_rss_bytes(root):
    total = 0
    for pid in proc_tree(root):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024  # reported in kB
                        break
        except OSError:
            continue
    return total


def cpu_jiffies(n):
    """(busy, total) jiffies of CPU n ("" = all CPUs); busy excludes idle and iowait."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{n} "):
                v = [int(x) for x in line.split()[1:]]
                total = sum(v[:8])  # guest time is already inside user/nice
                return total - v[3] - v[4], total
    raise ValueError(f"no cpu{n} in /proc/stat")


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def _to_ms(text):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text)
    if not m:
        raise ValueError(f"bad wrk duration {text!r}")
    return float(m.group(1)) * _UNIT_MS[m.group(2)]


def parse_wrk(path):
    """Pull req/s, p50/p99 (ms), request count and error counters out of wrk output."""
    with open(path) as f:
        text = f.read()
    r = {"rps": "", "p50": "", "p99": "", "requests": "0", "errors": ""}
    m = re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.M)
    if m:
        r["rps"] = m.group(1)
    m = re.search(r"^\s*(\d+) requests in ", text, re.M)
    if m:
        r["requests"] = m.group(1)
    for pct in ("50", "99"):
        m = re.search(rf"^\s*{pct}(?:\.0+)?%\s+(\S+)", text, re.M)
        if m:
            r["p" + pct] = f"{_to_ms(m.group(1)):.3f}"
    errs = []
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        for name, val in zip(("connect", "read", "write", "timeout"), m.groups()):
            if int(val):
                errs.append(f"{name}={val}")
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m and int(m.group(1)):
        errs.append(f"non2xx={m.group(1)}")
    if not r["rps"] or r["requests"] == "0":
        errs.append("no-requests")
    r["errors"] = ",".join(errs)
    return r


# ---- results table -------------------------------------------------------

FIELDS = ["name", "status", "rps", "p50", "p99", "cpu_us_req", "cpu_pct", "load_pct",
          "idle_bpc", "idle_reached", "idle_target", "errors", "note"]


def _num(s):
    try:
        return float(s)
    except (TypeError, ValueError):
        return None


def _fmt(v, spec):
    x = _num(v)
    return "-" if x is None else format(x, spec)


def table(path, header):
    rows = []
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            parts += [""] * (len(FIELDS) - len(parts))
            rows.append(dict(zip(FIELDS, parts)))
    out = [header, ""]
    cols = f"{'proxy':<9} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/req':>11} " \
           f"{'proxy CPU%':>10} {'load CPU%':>9} {'idle B/conn':>12}  errors"
    out += [cols, "-" * len(cols)]
    for r in rows:
        if r["status"] != "ok":
            out.append(f"{r['name']:<9} {'failed':>10}  ({r['note'] or 'see log above'})")
            continue
        idle = _fmt(r["idle_bpc"], ".0f")
        notes = [r["note"]] if r["note"] else []
        if r["idle_reached"] and r["idle_reached"] != r["idle_target"]:
            idle += "*"  # measured over fewer connections than asked for
            notes.append(f"idle: reached {r['idle_reached']}/{r['idle_target']} conns")
        errs = r["errors"] or "none"
        if r["errors"]:
            errs = "!! " + errs  # flag: numbers from a run with errors are suspect
        if notes:
            errs += "  [" + "; ".join(notes) + "]"
        out.append(f"{r['name']:<9} {_fmt(r['rps'], '.0f'):>10} {_fmt(r['p50'], '.3f'):>8} "
                   f"{_fmt(r['p99'], '.3f'):>8} {_fmt(r['cpu_us_req'], '.2f'):>11} "
                   f"{_fmt(r['cpu_pct'], '.0f'):>10} {_fmt(r['load_pct'], '.0f'):>9} {idle:>12}  {errs}")

    # Ratios of weir against each other proxy that produced numbers.
    by = {r["name"]: r for r in rows}
    weir = by.get("weir")
    others = [r for r in rows if r["name"] != "weir"]
    if weir and others:
        out += ["", "Ratios weir/other: req/s higher is better (>1 = weir faster); "
                    "CPU us/req lower is better (<1 = weir cheaper)",
                f"{'':<12} {'req/s':>8} {'CPU us/req':>11} {'idle B/conn':>12}"]
        for o in others:
            cells = []
            for key in ("rps", "cpu_us_req", "idle_bpc"):
                a = _num(weir[key]) if weir["status"] == "ok" else None
                b = _num(o[key]) if o["status"] == "ok" else None
                cells.append("n/a" if a is None or not b else f"{a / b:.2f}x")
            out.append(f"{'vs ' + o['name']:<12} {cells[0]:>8} {cells[1]:>11} {cells[2]:>12}")
    return "\n".join(out)


# ---- reuse tables (bench/run's reuse section) ----------------------------

REUSE_FIELDS = ["run", "name", "status", "wrk_requests", "rps", "errors", "window_s",
                "up_requests", "new_conns", "new_split", "cpu_us_req", "note"]
REUSE_TARGET = 99.9  # weir's reuse %, and at least each peer's
REUSE_RUNS = {
    "A": 'run A "keep-alive clients": wrk -t2 -c200 (keep-alive)',
    "B": 'run B "churn": wrk -t2 -c50 -H "Connection: close" (a new client connection per request)',
}


def _reuse_pct(r):
    """Reuse % = 100 * (1 - new conns / upstream requests), rounded as printed."""
    if r["status"] != "ok":
        return None
    new, req = _num(r["new_conns"]), _num(r["up_requests"])
    if new is None or not req:
        return None
    return round(100.0 * (1.0 - new / req), 3)


def reuse_table(path, header, duration):
    rows = []
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            parts += [""] * (len(REUSE_FIELDS) - len(parts))
            rows.append(dict(zip(REUSE_FIELDS, parts)))
    out = [header, f"Target: weir reuse >= {REUSE_TARGET:.3f}% and >= each peer's "
                   "(compared as printed, 3 decimals). Rows that miss it are marked MISS."]
    cols = (f"{'proxy':<8} {'wrk req':>9} {'req/s':>7} {'counted req':>11} {'new conns':>9} "
            f"{'(be1+be2)':<15} {'per 1k req':>10} {'reuse %':>8} {'CPU us/req':>10}  "
            f"{'errors':<12} target")
    verdicts = []
    for run in ("A", "B"):
        rr = [r for r in rows if r["run"] == run]
        if not rr:
            continue
        out += ["", f"{REUSE_RUNS[run]}, counted {duration}s", cols, "-" * len(cols)]
        pct = {r["name"]: _reuse_pct(r) for r in rr}
        peers = [r["name"] for r in rr if r["name"] != "weir"]
        for r in rr:
            name = r["name"]
            if r["status"] != "ok":
                out.append(f"{name:<8} {'failed':>9}  ({r['note'] or 'see log above'})"
                           + ("  MISS" if name == "weir" else ""))
                continue
            p = pct[name]
            new, req = _num(r["new_conns"]), _num(r["up_requests"])
            per1k = "-" if p is None else f"{1000.0 * new / req:.3f}"
            miss = []
            if p is None:
                miss.append("no requests")
            elif p < REUSE_TARGET:
                miss.append(f"< {REUSE_TARGET:g}%")
            if name == "weir" and p is not None:
                miss += [f"< {o}" for o in peers if pct[o] is not None and p < pct[o]]
            if name == "weir":
                target = "ok" if not miss else "MISS: " + ", ".join(miss)
            else:  # the target is weir's; a peer below 99.9% is only noted
                target = "ok" if not miss else "(" + ", ".join(miss) + ")"
            errs = r["errors"] or "none"
            if r["errors"]:
                errs = "!! " + errs  # numbers from a run with errors are suspect
            if r["note"]:
                target += f"  [{r['note']}]"
            cpu = _fmt(r["cpu_us_req"], ".2f")
            out.append(f"{name:<8} {r['wrk_requests'] or '-':>9} {_fmt(r['rps'], '.0f'):>7} "
                       f"{r['up_requests']:>11} {r['new_conns']:>9} {'(' + r['new_split'] + ')':<15} "
                       f"{per1k:>10} {'-' if p is None else f'{p:.3f}':>8} {cpu:>10}  "
                       f"{errs:<12} {target}")
        w = next((r for r in rr if r["name"] == "weir"), None)
        if w is not None:
            wp = pct["weir"]
            missing = [o for o in peers if pct[o] is None]
            if wp is None:
                verdicts.append(f"run {run}: weir target MISSED (no result)")
            else:
                reasons = []
                if wp < REUSE_TARGET:
                    reasons.append(f"{wp:.3f}% < {REUSE_TARGET:.3f}%")
                reasons += [f"below {o} ({pct[o]:.3f}%)" for o in peers
                            if pct[o] is not None and wp < pct[o]]
                v = f"run {run}: weir target " + ("met" if not reasons else
                                                  "MISSED: " + "; ".join(reasons))
                if missing:
                    v += f" (no comparison with {', '.join(missing)}: no result)"
                verdicts.append(v)
    if verdicts:
        out += [""] + verdicts
    return "\n".join(out)


def main(argv):
    cmd = argv[1] if len(argv) > 1 else ""
    if cmd == "free-port":
        print(free_port())
    elif cmd == "tree":
        print(" ".join(map(str, proc_tree(argv[2]))))
    elif cmd == "cpu-us":
        print(tree_cpu_us(argv[2]))
    elif cmd == "rss":
        print(tree_rss_bytes(argv[2]))
    elif cmd == "cpu-jiffies":
        print(*cpu_jiffies(argv[2] if len(argv) > 2 else ""))
    elif cmd == "parse-wrk":
        for k, v in parse_wrk(argv[2]).items():
            print(f"WRK_{k.upper()}='{v}'")
    elif cmd == "table":
        print(table(argv[2], argv[3]))
    elif cmd == "reuse-table":
        print(reuse_table(argv[2], argv[3], argv[4]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
