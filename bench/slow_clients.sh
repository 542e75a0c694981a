#!/usr/bin/env bash
# bench/slow_clients.sh - what slow clients do to weir and to nginx.
#
# For each slowhttptest mode (-B slow body, -H slow headers, -X slow read) and
# each proxy in turn (a fresh proxy per run), against one shared python3
# backend that counts its own concurrent client connections:
#   * slowhttptest with the same parameters for both proxies;
#   * once a second, one normal `curl --max-time 3` GET through the proxy
#     (a failure is a curl error or a status other than 200);
#   * the backend's peak number of concurrent connections during the run.
# Prints one table at the end.
#
#   bench/slow_clients.sh                     # ~4 minutes
#   DURATION=10 bench/slow_clients.sh         # quick pass
#   PROXIES=weir TESTS="B X" bench/slow_clients.sh
#   WEIR_BIN=/path/to/weir KEEP_TMP=1 bench/slow_clients.sh
#
# Needs: slowhttptest, nginx (nginx-light), curl, python3. Missing Debian
# packages are installed with apt-get when running as root. Loopback only,
# kernel-chosen free ports, everything in a mktemp -d directory, and every
# process it started is killed on exit (trap), so it can be re-run at will.
set -u

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
WEIR_BIN=${WEIR_BIN:-$ROOT/build/bin/weir}
DURATION=${DURATION:-30}          # slowhttptest -l, seconds per run
CONNS=${CONNS:-1000}              # slowhttptest -c
RATE=${RATE:-200}                 # slowhttptest -r
PROXIES=${PROXIES:-weir nginx}
TESTS=${TESTS:-B H X}
NGINX_WORKER_CONNECTIONS=${NGINX_WORKER_CONNECTIONS:-4096}
KEEP_TMP=${KEEP_TMP:-0}

need() { command -v "$1" >/dev/null 2>&1; }
missing=()
need slowhttptest || missing+=(slowhttptest)
need nginx || missing+=(nginx-light)
need curl || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && need apt-get; then
        echo "installing ${missing[*]}" >&2
        apt-get install -y "${missing[@]}" >/dev/null 2>&1 ||
            { apt-get update -qq >/dev/null 2>&1 && apt-get install -y "${missing[@]}" >/dev/null 2>&1; }
    fi
fi
for t in slowhttptest nginx curl python3; do
    need "$t" || { echo "slow_clients: $t not found" >&2; exit 2; }
done
case " $PROXIES " in *" weir "*)
    [ -x "$WEIR_BIN" ] || { echo "slow_clients: $WEIR_BIN missing (cmake --build build --target weir)" >&2; exit 2; } ;;
esac

# Enough descriptors for 1000 slow clients plus the backend side.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 20000 2>/dev/null || true

TMP=$(mktemp -d "${TMPDIR:-/tmp}/weir-slow.XXXXXX")
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null
    done
    sleep 0.3
    for p in "${PIDS[@]}"; do
        kill -9 "$p" 2>/dev/null
    done
    wait 2>/dev/null
    if [ "$KEEP_TMP" = 1 ]; then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Stop one process we started (by pid) and forget it.
stop_pid() {
    local pid=$1 i
    kill "$pid" 2>/dev/null
    for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    local keep=() p
    for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

wait_http() {   # url, seconds
    local i
    for i in $(seq 1 $(( $2 * 10 ))); do
        curl -s -o /dev/null --max-time 1 "$1" && return 0
        sleep 0.1
    done
    return 1
}

# ---------------------------------------------------------------- backend
cat > "$TMP/backend.py" <<'EOF'
# HTTP/1.1 backend that counts its own concurrent client connections.
# argv: port stats_port.  Stats (own port, not counted): GET /stats -> one
# "key=value" a line; GET /reset -> peak := current, counters := 0.
import sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

lock = threading.Lock()
st = {"cur": 0, "peak": 0, "accepted": 0, "requests": 0,
      "inflight": 0, "inflight_peak": 0}
BODY = b"hello from backend\n"

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 120                      # idle keep-alive connections end

    def setup(self):
        super().setup()
        with lock:
            st["cur"] += 1
            st["accepted"] += 1
            st["peak"] = max(st["peak"], st["cur"])

    def finish(self):
        try:
            super().finish()
        finally:
            with lock:
                st["cur"] -= 1

    def _answer(self):
        with lock:
            st["requests"] += 1
            st["inflight"] += 1
            st["inflight_peak"] = max(st["inflight_peak"], st["inflight"])
        try:
            n = int(self.headers.get("Content-Length") or 0)
            while n > 0:
                b = self.rfile.read(min(n, 65536))
                if not b:
                    break
                n -= len(b)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(BODY)
        finally:
            with lock:
                st["inflight"] -= 1

    do_GET = do_POST = do_HEAD = do_PUT = _answer

    def log_message(self, *a):
        pass

class S(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 4096

class Stats(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def do_GET(self):
        with lock:
            if self.path == "/reset":
                st["peak"] = st["cur"]
                st["inflight_peak"] = st["inflight"]
                st["accepted"] = st["requests"] = 0
            body = "".join("%s=%d\n" % kv for kv in st.items()).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass

main = S(("127.0.0.1", int(sys.argv[1])), H)
stats = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), Stats)
stats.daemon_threads = True
threading.Thread(target=stats.serve_forever, daemon=True).start()
main.serve_forever()
EOF

BPORT=$(free_port)
SPORT=$(free_port)
python3 "$TMP/backend.py" "$BPORT" "$SPORT" > "$TMP/backend.log" 2>&1 &
PIDS+=($!)
BACKEND_PID=$!
wait_http "http://127.0.0.1:$SPORT/stats" 10 ||
    { echo "slow_clients: backend did not start" >&2; cat "$TMP/backend.log" >&2; exit 1; }
stat_field() {   # stats|reset key
    local v; v=$(curl -s --max-time 2 "http://127.0.0.1:$SPORT/$1" | sed -n "s/^$2=//p")
    echo "${v:-?}"
}

# ---------------------------------------------------------------- proxies
PROXY_PID=
start_weir() {   # port
    cat > "$TMP/weir.toml" <<EOF
[basic]
threads = 2
log_level = "warn"

[servers.web]
addr = "127.0.0.1:$1"
locations = ["all"]
client_header_timeout = "60s"
client_body_timeout = "60s"

[locations.all]
path = "/"
upstream = "be"
# the defaults, written out
request_buffering = true
request_buffer_size = "64KB"

[upstreams.be]
addrs = ["127.0.0.1:$BPORT"]
EOF
    "$WEIR_BIN" -c "$TMP/weir.toml" >> "$TMP/weir.log" 2>&1 &
    PROXY_PID=$!
    PIDS+=($PROXY_PID)
}

start_nginx() {  # port
    mkdir -p "$TMP/nginx/logs"
    cat > "$TMP/nginx/nginx.conf" <<EOF
worker_processes 2;
worker_rlimit_nofile 16384;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/logs/error.log warn;
events { worker_connections $NGINX_WORKER_CONNECTIONS; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx/client_body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    server {
        listen 127.0.0.1:$1;
        location / { proxy_pass http://127.0.0.1:$BPORT; }
    }
}
EOF
    nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -g 'daemon off;' >> "$TMP/nginx/logs/stderr.log" 2>&1 &
    PROXY_PID=$!
    PIDS+=($PROXY_PID)
}

slow_args() {   # test letter
    case $1 in
    B) echo "-c $CONNS -B -i 10 -r $RATE -s 8192 -t POST -l $DURATION -x 10" ;;
    H) echo "-c $CONNS -H -i 10 -r $RATE -l $DURATION" ;;
    X) echo "-c $CONNS -X -r $RATE -w 512 -y 1024 -n 5 -z 32 -k 3 -l $DURATION" ;;
    esac
}
test_name() { case $1 in B) echo "slow body (-B)";; H) echo "slow headers (-H)";; X) echo "slow read (-X)";; esac; }

ROWS=()
DETAILS=()
run_one() {   # test proxy
    local t=$1 p=$2 port out ok=1
    port=$(free_port)
    "start_$p" "$port"
    if ! wait_http "http://127.0.0.1:$port/" 10; then
        ROWS+=("$(printf '%-18s %-6s %10s %14s  %s' "$(test_name "$t")" "$p" '-' '-' 'proxy failed to start')")
        stop_pid "$PROXY_PID"
        return
    fi
    sleep 0.5                                 # let connections from the check settle
    curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$SPORT/reset"
    out="$TMP/slow-$t-$p.txt"
    local args; args=$(slow_args "$t")
    echo "== $(test_name "$t") / $p: slowhttptest $args -u http://127.0.0.1:$port/" >&2
    # shellcheck disable=SC2086
    timeout $(( DURATION + 60 )) slowhttptest $args -u "http://127.0.0.1:$port/" > "$out" 2>&1 &
    local spid=$!
    PIDS+=($spid)
    local samples="$TMP/samples-$t-$p" n=0 cur peak_sampled=0 t0 d probes=()
    : > "$samples"
    t0=$(date +%s%N)
    while kill -0 "$spid" 2>/dev/null; do
        n=$((n + 1))
        # one normal request a second, each in the background so a slow one
        # (up to 3 s) does not delay the next tick
        ( code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 "http://127.0.0.1:$port/" 2>/dev/null)
          echo "${code:-000}" >> "$samples" ) &
        probes+=($!)
        cur=$(stat_field stats cur)
        [ "$cur" != '?' ] && [ "$cur" -gt "$peak_sampled" ] && peak_sampled=$cur
        d=$(( t0 + n * 1000000000 - $(date +%s%N) ))
        [ "$d" -gt 0 ] && sleep "$(printf '%d.%09d' $((d / 1000000000)) $((d % 1000000000)))"
    done
    wait "$spid" 2>/dev/null
    wait "${probes[@]}" 2>/dev/null           # the last probes (3 s at most)
    local total fail peak inflight accepted alive verdict
    total=$(wc -l < "$samples")
    fail=$(grep -vc '^200$' "$samples")
    peak=$(stat_field stats peak)
    inflight=$(stat_field stats inflight_peak)
    accepted=$(stat_field stats accepted)
    local reqs; reqs=$(stat_field stats requests)
    if kill -0 "$PROXY_PID" 2>/dev/null; then alive=yes; else alive="NO (died)"; fi
    verdict=$(tr '\r' '\n' < "$out" | sed 's/\x1b\[[0-9;]*[A-Za-z]//g' |
              grep -i 'service available' | tail -1 | sed 's/^[[:space:]]*//; s/[[:space:]]\+/ /g')
    [ -n "$verdict" ] || verdict="(no verdict line; see $out)"
    ROWS+=("$(printf '%-18s %-6s %10s %14s  %s' "$(test_name "$t")" "$p" "$peak" "$fail/$total" "$verdict")")
    local last; last=$(tr '\r' '\n' < "$out" | sed 's/\x1b\[[0-9;]*[A-Za-z]//g' |
        grep -E 'closed|pending|connected|error' | tail -4 | sed 's/^[[:space:]]*//; s/[[:space:]]\+/ /g' | paste -sd';' -)
    local ended; ended=$(tr '\r' '\n' < "$out" | sed 's/\x1b\[[0-9;]*[A-Za-z]//g' |
        grep -E '^(Test ended|Exit status)' | paste -sd' ' - | sed 's/[[:space:]]\+/ /g')
    DETAILS+=("$(printf '%-18s %-6s backend: peak conns sampled 1/s %s, new conns %s, requests %s, peak in flight %s; proxy alive after: %s; slowhttptest last status: %s; %s' \
        "$(test_name "$t")" "$p" "$peak_sampled" "$accepted" "$reqs" "$inflight" "$alive" "$last" "$ended")")
    stop_pid "$PROXY_PID"
    sleep 0.3
}

START=$(date +%s)
for t in $TESTS; do
    for p in $PROXIES; do
        run_one "$t" "$p"
    done
done

weir_rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
[ -n "$(git -C "$ROOT" status --porcelain -- src include 2>/dev/null)" ] && weir_rev="$weir_rev-dirty"
[ -e "$WEIR_BIN" ] && weir_rev="tree at $weir_rev, binary built $(date -u -r "$WEIR_BIN" +%H:%M:%SZ)"
echo
echo "weir slow clients $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(nproc) CPUs, $(($(date +%s) - START)) s; weir $weir_rev ($WEIR_BIN), $(nginx -v 2>&1 | sed 's/.*: //')"
echo "slowhttptest -c $CONNS -r $RATE -l $DURATION; backend: python3 ThreadingHTTPServer on 127.0.0.1:$BPORT"
echo "weir: threads 2, client_header/body_timeout 60s, request_buffering on (64KB); nginx: 2 workers, worker_connections $NGINX_WORKER_CONNECTIONS, defaults otherwise"
echo "normal: one GET / per second through the proxy, curl --max-time 3; failed = curl error or status != 200"
echo
printf '%-18s %-6s %10s %14s  %s\n' test proxy 'peak bk cn' 'normal fail/n' 'slowhttptest verdict'
printf '%s\n' "----------------------------------------------------------------------------------------------"
printf '%s\n' "${ROWS[@]}"
echo
echo "details:"
printf '  %s\n' "${DETAILS[@]}"
[ -s "$TMP/weir.log" ] && { echo; echo "weir log (last 10 lines):"; tail -10 "$TMP/weir.log" | sed 's/^/  /'; }
[ -s "$TMP/nginx/logs/error.log" ] && { echo; echo "nginx error.log (last 5 lines):"; tail -5 "$TMP/nginx/logs/error.log" | sed 's/^/  /'; }
exit 0
