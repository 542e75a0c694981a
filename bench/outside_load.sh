#!/usr/bin/env bash
# Outside load for latency runs: a busy loop pinned to one CPU that spins
# BUSY_MS out of every PERIOD_MS (default 1 ms of 15: ~7 %), sleeping the
# rest, until killed. It stands for the "small outside load" of a shared
# machine (another engineer's job, a cron task), which bench/run's
# "[CPU 0 N% busy with other work]" note reports.
#
#   bench/outside_load.sh &            # ~7 % of CPU 0
#   CPU=0 BUSY_MS=1 PERIOD_MS=10 bench/outside_load.sh &   # ~10 %
#   WEIR_BIN=... PROXIES="weir haproxy" SECTIONS=tls-h1 bench/run; kill %1
set -eu
CPU=${CPU:-0}
BUSY_MS=${BUSY_MS:-1}
PERIOD_MS=${PERIOD_MS:-15}
exec taskset -c "$CPU" /usr/bin/python3 -c '
import sys, time
busy, period = float(sys.argv[1]) / 1e3, float(sys.argv[2]) / 1e3
while True:
    t = time.monotonic()
    while time.monotonic() - t < busy:
        pass
    time.sleep(max(0.0, period - (time.monotonic() - t)))
' "$BUSY_MS" "$PERIOD_MS"
