#!/usr/bin/python3
"""Small helpers for bench/run (Debian python3, stdlib only).

Used both as a module (idle_conns.py imports proc_tree/tree_rss_bytes) and as a
command line tool from bench/run:

    lib.py free-port                 print a free TCP port on 127.0.0.1
    lib.py tree PID                  print PID and all its descendants
    lib.py cpu-us PID                utime+stime of PID's process tree, microseconds
    lib.py rss PID                   VmRSS of PID's process tree, bytes
    lib.py cpu-jiffies [N]           "busy total" jiffies of CPU N (all CPUs if empty)
    lib.py cpu-jiffies N steal       "busy total steal" (steal: taken by the hypervisor)
    lib.py parse-wrk FILE            print wrk results as shell-safe KEY=VALUE lines
    lib.py table RESULTS.tsv HEADER  print the results table
    lib.py reuse-table REUSE.tsv HEADER SECS   print the upstream-reuse tables
    lib.py parse-h2load OUT LOG      print h2load results (and p50/p99 from its
                                     --log-file) as shell-safe KEY=VALUE lines
    lib.py h2-count OUT SECS         h2load -n for about SECS s at OUT's rate
    lib.py tls-table TLS.tsv HEADER CONNS SECS HS_CONNS HS_SECS   print the TLS tables

Process *trees* matter because nginx runs a master plus one worker: the worker
does the work, but summing the tree keeps the numbers comparable with the
single-process weir and HAProxy (the idle master adds ~nothing to the deltas).
"""
import os
import re
import socket
import subprocess
import sys

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    # Let the kernel pick an unused port, then release it for the proxy to bind.
    # There is a tiny race with other programs, acceptable on a bench machine.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10.0):
    """True once something accepts on 127.0.0.1:port (within timeout)."""
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


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


def cpu_jiffies(n, steal=False):
    """(busy, total) jiffies of CPU n ("" = all CPUs); busy excludes idle and iowait.
    With steal, (busy, total, steal): steal (time the hypervisor gave this
    virtual CPU's physical CPU to someone else) is part of busy."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{n} "):
                v = [int(x) for x in line.split()[1:]]
                total = sum(v[:8])  # guest time is already inside user/nice
                if steal:
                    return total - v[3] - v[4], total, v[7]
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
          "idle_bpc", "idle_reached", "idle_target", "errors", "note", "burst_bpc"]


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
           f"{'proxy CPU%':>10} {'load CPU%':>9} {'idle B/conn':>12} {'burst B/conn':>12}  errors"
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
                   f"{_fmt(r['cpu_pct'], '.0f'):>10} {_fmt(r['load_pct'], '.0f'):>9} {idle:>12} "
                   f"{_fmt(r['burst_bpc'], '.0f'):>12}  {errs}")

    # Ratios of weir against each other proxy that produced numbers.
    by = {r["name"]: r for r in rows}
    weir = by.get("weir")
    others = [r for r in rows if r["name"] != "weir"]
    if weir and others:
        out += ["", "Ratios weir/other: req/s higher is better (>1 = weir faster); "
                    "CPU us/req lower is better (<1 = weir cheaper)",
                f"{'':<12} {'req/s':>8} {'CPU us/req':>11} {'idle B/conn':>12} {'burst B/conn':>12}"]
        for o in others:
            cells = []
            for key in ("rps", "cpu_us_req", "idle_bpc", "burst_bpc"):
                a = _num(weir[key]) if weir["status"] == "ok" else None
                b = _num(o[key]) if o["status"] == "ok" else None
                cells.append("n/a" if a is None or not b else f"{a / b:.2f}x")
            out.append(f"{'vs ' + o['name']:<12} {cells[0]:>8} {cells[1]:>11} {cells[2]:>12} "
                       f"{cells[3]:>12}")
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


# ---- TLS section (bench/run's tls-h1, tls-h2, tls-hs) ----------------------

def parse_h2load(out_path, log_path):
    """h2load 1.52's summary plus percentiles from its per-request log.

    h2load prints only min/max/mean/sd of "time for request"; with
    --log-file it writes one line per request: start time (us since the
    epoch), status (-1 for a failed stream), microseconds until the end of the
    response. p50/p99 are taken over the completed requests of that file.
    """
    with open(out_path) as f:
        text = f.read()
    r = {"rps": "", "done": "0", "p50": "", "p99": "", "errors": "", "cipher": "", "proto": ""}
    m = re.search(r"^finished in [0-9.]+m?s, ([0-9.]+) req/s", text, re.M)
    if m:
        r["rps"] = m.group(1)
    errs = []
    m = re.search(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", text, re.M)
    if m:
        total, _, done, ok, failed, errored, timeout = map(int, m.groups())
        r["done"] = str(ok)
        if done < total:
            errs.append(f"not-done={total - done}")
        for name, val in (("errored", errored), ("timeout", timeout)):
            if val:
                errs.append(f"{name}={val}")
    m = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text, re.M)
    if m and int(m.group(3)) + int(m.group(4)):
        errs.append(f"non2xx={int(m.group(3)) + int(m.group(4))}")
    m = re.search(r"^Cipher: (\S+)", text, re.M)
    if m:
        r["cipher"] = m.group(1)
    m = re.search(r"^TLS Protocol: (\S+)", text, re.M)
    if m:
        r["proto"] = m.group(1)
    m = re.search(r"^Application protocol: (\S+)", text, re.M)
    if m and m.group(1) != "h2":
        errs.append(f"alpn={m.group(1)}")
    durations = []
    try:
        with open(log_path) as f:
            for line in f:
                parts = line.split("\t")
                if len(parts) >= 3 and parts[1] != "-1":
                    durations.append(int(parts[2]))
    except OSError:
        pass
    if durations:
        durations.sort()
        for pct in (50, 99):
            i = min(len(durations) - 1, len(durations) * pct // 100)
            r[f"p{pct}"] = f"{durations[i] / 1000:.3f}"
    if not r["rps"] or r["done"] == "0":
        errs.append("no-requests")
    r["errors"] = ",".join(errs)
    return r


def h2_count(out_path, secs):
    """Requests for about SECS seconds at the rate of a warm-up h2load run,
    rounded to thousands, at least 10,000 (100,000 if the rate is unknown)."""
    rate = _num(parse_h2load(out_path, "/nonexistent")["rps"])
    if not rate:
        return 100000
    return max(10000, min(10_000_000, int(rate * float(secs) / 1000 + 0.5) * 1000))


TLS_PARTS = ("h1", "h2", "hs-full", "hs-resumed")


def _read_tls(path):
    rows = []
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 3:
                continue
            r = {"part": parts[0], "name": parts[1], "status": parts[2]}
            for kv in parts[3:]:
                k, _, v = kv.partition("=")
                r[k] = v
            rows.append(r)
    return rows


def _errs_cell(r):
    e = r.get("errors", "")
    cell = "!! " + e if e else "none"
    if r.get("note"):
        cell += "  [" + r["note"] + "]"
    return cell


def _ratios(rows, cols):
    """Ratio lines weir/other for each (key, label) in cols."""
    by = {r["name"]: r for r in rows}
    weir = by.get("weir")
    others = [r for r in rows if r["name"] != "weir"]
    if not weir or not others:
        return []
    out = [f"{'':<12} " + " ".join(f"{label:>12}" for _, label in cols)]
    for o in others:
        cells = []
        for key, _ in cols:
            a = _num(weir.get(key)) if weir["status"] == "ok" else None
            b = _num(o.get(key)) if o["status"] == "ok" else None
            cells.append("n/a" if a is None or not b else f"{a / b:.2f}x")
        out.append(f"{'vs ' + o['name']:<12} " + " ".join(f"{c:>12}" for c in cells))
    return out


def tls_table(path, header, conns, secs, hs_conns, hs_secs):
    rows = _read_tls(path)
    out = [header]
    ratio_note = ("Ratios weir/other: req/s higher is better (>1 = weir faster); "
                  "CPU us lower is better (<1 = weir cheaper)")

    h1 = [r for r in rows if r["part"] == "h1"]
    if h1:
        cols = f"{'proxy':<9} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/req':>11} " \
               f"{'proxy CPU%':>10} {'load CPU%':>9}  errors"
        out += ["", f"TLS HTTP/1.1: wrk -t1 -c{conns} -d{secs}s --latency https://... "
                    "(keep-alive, one handshake per connection)", cols, "-" * len(cols)]
        for r in h1:
            if r["status"] != "ok":
                out.append(f"{r['name']:<9} {'failed':>10}  ({r.get('note') or 'see log above'})")
                continue
            out.append(f"{r['name']:<9} {_fmt(r.get('rps'), '.0f'):>10} {_fmt(r.get('p50'), '.3f'):>8} "
                       f"{_fmt(r.get('p99'), '.3f'):>8} {_fmt(r.get('cpu'), '.2f'):>11} "
                       f"{_fmt(r.get('cpupct'), '.0f'):>10} {_fmt(r.get('loadpct'), '.0f'):>9}  "
                       f"{_errs_cell(r)}")
        rat = _ratios(h1, [("rps", "req/s"), ("cpu", "CPU us/req")])
        if rat:
            out += ["", ratio_note] + rat

    h2 = [r for r in rows if r["part"] == "h2"]
    if h2:
        cols = f"{'proxy':<9} {'requests':>9} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} " \
               f"{'CPU us/req':>11} {'proxy CPU%':>10} {'load CPU%':>9}  {'cipher':<23} errors"
        out += ["", f"TLS HTTP/2: h2load -n N -c 10 -m 10 https://... (10 connections x 10 streams; "
                    f"N: ~{secs}s at the warm-up's rate)",
                "p50/p99: per-request times from h2load --log-file (stream start to end of response)",
                cols, "-" * len(cols)]
        for r in h2:
            if r["status"] != "ok":
                out.append(f"{r['name']:<9} {'failed':>9}  ({r.get('note') or 'see log above'})")
                continue
            out.append(f"{r['name']:<9} {r.get('requests') or '-':>9} {_fmt(r.get('rps'), '.0f'):>9} "
                       f"{_fmt(r.get('p50'), '.3f'):>8} {_fmt(r.get('p99'), '.3f'):>8} "
                       f"{_fmt(r.get('cpu'), '.2f'):>11} {_fmt(r.get('cpupct'), '.0f'):>10} "
                       f"{_fmt(r.get('loadpct'), '.0f'):>9}  {r.get('cipher') or '-':<23} "
                       f"{_errs_cell(r)}")
        rat = _ratios(h2, [("rps", "req/s"), ("cpu", "CPU us/req")])
        if rat:
            out += ["", ratio_note] + rat

    hs = [r for r in rows if r["part"] in ("hs-full", "hs-resumed")]
    if hs:
        cols = f"{'proxy':<9} {'handshake':<9} {'conn/s':>8} {'resumed':>8} {'hs p50 ms':>9} " \
               f"{'hs p99 ms':>9} {'CPU us/conn':>11} {'proxy CPU%':>10} {'load CPU%':>9}  errors"
        out += ["", f"New TLS connections: bench/tls_handshakes -c {hs_conns}, {hs_secs}s per run; "
                    "each connection = handshake + one GET (Connection: close)",
                "full: no session offered; resumed: each connection offers its predecessor's "
                "session (TLS 1.3 ticket)", cols, "-" * len(cols)]
        negotiated = {}
        for r in hs:
            mode = r["part"][3:]
            if r["status"] != "ok":
                out.append(f"{r['name']:<9} {mode:<9} {'failed':>8}  ({r.get('note') or 'see log above'})")
                continue
            done, res = _num(r.get("conns")), _num(r.get("resumed"))
            pct = f"{100 * res / done:.1f}%" if done and res is not None else "-"
            out.append(f"{r['name']:<9} {mode:<9} {_fmt(r.get('rate'), '.0f'):>8} {pct:>8} "
                       f"{_fmt(r.get('p50'), '.3f'):>9} {_fmt(r.get('p99'), '.3f'):>9} "
                       f"{_fmt(r.get('cpu'), '.1f'):>11} {_fmt(r.get('cpupct'), '.0f'):>10} "
                       f"{_fmt(r.get('loadpct'), '.0f'):>9}  {_errs_cell(r)}")
            if r.get("tls", "").strip():
                negotiated.setdefault(r["name"], r["tls"])
        if negotiated:
            kinds = set(negotiated.values())
            line = "; ".join(f"{n} {t}" for n, t in negotiated.items())
            out += ["", "negotiated: " + line + ("" if len(kinds) == 1 else "  !! differ")]
        for mode in ("full", "resumed"):
            rat = _ratios([r for r in hs if r["part"] == "hs-" + mode],
                          [("rate", "conn/s"), ("cpu", "CPU us/conn")])
            if rat:
                out += ["", f"Ratios weir/other, {mode} handshakes: conn/s higher is better; "
                            "CPU us/conn lower is better"] + rat
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
        print(*cpu_jiffies(argv[2] if len(argv) > 2 else "", len(argv) > 3 and argv[3] == "steal"))
    elif cmd == "parse-wrk":
        for k, v in parse_wrk(argv[2]).items():
            print(f"WRK_{k.upper()}='{v}'")
    elif cmd == "table":
        print(table(argv[2], argv[3]))
    elif cmd == "reuse-table":
        print(reuse_table(argv[2], argv[3], argv[4]))
    elif cmd == "parse-h2load":
        for k, v in parse_h2load(argv[2], argv[3]).items():
            print(f"H2_{k.upper()}='{v}'")
    elif cmd == "h2-count":
        print(h2_count(argv[2], argv[3]))
    elif cmd == "tls-table":
        print(tls_table(*argv[2:8]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)


def pinned(cpu, argv, **kw):
    """argv started on CPU cpu only (taskset)."""
    return subprocess.Popen(["taskset", "-c", str(cpu)] + argv, **kw)
