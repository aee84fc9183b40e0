#!/usr/bin/env bash
# Side-by-side benchmark of mast against nginx (the machine's HTTP ceiling) and etcd (what mast
# replaces): same pinned CPUs, same disk, alternating rounds (A B A B ...), medians and ratios
# written as markdown into perf/results/<date>-<scenario>.md.
#
# Usage: perf/compare.sh [healthz|put-1|put-3|get-1|tso-1|tso-batch|ids-1|ids-batch|milvus-1|milvus-3|all]...
#   (default: healthz; all = healthz put-1 put-3 get-1)
# Knobs (environment): ROUNDS=5 DURATION=10s WARMUP=2s CONNS=64 SERVER_CPU=0 CLIENT_CPU=1
#   VALUE_SIZE=64 KEYS=10000 BATCH=1000 (count of tso-batch / ids-batch)
#   MAST_BIN=<path> LOAD_BIN=<path> CARGO_TARGET_DIR=<dir>
#   SKIP_BUILD=1 (use existing binaries)  SKIP_INSTALL=1 (do not apt-get)
# Everything it starts, it stops by PID (also on error or Ctrl-C).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PERF="$ROOT/perf"
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CONNS=${CONNS:-64}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
VALUE_SIZE=${VALUE_SIZE:-64}
KEYS=${KEYS:-10000}
BATCH=${BATCH:-1000}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
MAST_RUN=""
LOAD_START=""
MAST_BIN=${MAST_BIN:-$TARGET_DIR/release/mast}
LOAD_BIN=${LOAD_BIN:-$TARGET_DIR/release/mast-load}
DATE=$(date -u +%Y-%m-%d)
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RUN_DIR="$PERF/.run/$STAMP"
RESULTS="$PERF/results"
# Ports well away from the defaults of anything else on the machine.
BASE_PORT=${BASE_PORT:-23400}

PIDS=()
# Counts server starts, so every start gets fresh data directories.
ATTEMPT=0
ROWS=""

log() { printf '[compare %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

stop_pid() {
    local pid=$1
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    log "pid $pid ignored TERM for 5s, killing"
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

stop_all() {
    local pid
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    PIDS=()
}

trap 'stop_all' EXIT
trap 'exit 130' INT TERM

need() {
    # need COMMAND PACKAGE...
    local cmd=$1; shift
    command -v "$cmd" >/dev/null 2>&1 && return 0
    [ "${SKIP_INSTALL:-0}" = 1 ] && die "$cmd missing and SKIP_INSTALL=1"
    log "installing $*"
    if [ -z "${APT_UPDATED:-}" ]; then apt-get update -qq; APT_UPDATED=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# wait_http URL [seconds]: until URL answers (any HTTP status) or the deadline passes.
wait_http() {
    local url=$1 secs=${2:-20} i
    for i in $(seq 1 $((secs * 10))); do
        if curl -s -o /dev/null --max-time 1 "$url"; then return 0; fi
        sleep 0.1
    done
    die "$url did not answer within ${secs}s"
}

# --- servers -----------------------------------------------------------------------------

start_nginx() {
    # start_nginx PORT
    local port=$1 dir="$RUN_DIR/nginx-a$ATTEMPT"
    mkdir -p "$dir"
    cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
daemon off;
master_process on;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    keepalive_requests 1000000000;
    keepalive_timeout 300s;
    client_body_buffer_size 64k;
    server {
        listen 127.0.0.1:$port;
        location / { return 200 "ok\n"; }
        # Fixed replies in the shape of mast's /tso and /ids: the count echoed, the first value
        # growing with the connection's request number so the client's order check passes
        # (n * 10^6 leaves room for any count up to 10^6).
        location = /tso {
            default_type application/json;
            return 200 '{"timestamp":\${connection_requests}000000,"count":\$arg_count}';
        }
        location = /ids {
            default_type application/json;
            return 200 '{"id":\${connection_requests}000000,"count":\$arg_count}';
        }
    }
}
EOF
    taskset -c "$SERVER_CPU" nginx -c "$dir/nginx.conf" -p "$dir" >"$dir/out.log" 2>&1 &
    PIDS+=($!)
    wait_http "http://127.0.0.1:$port/"
}

start_mast() {
    # start_mast NODES: nodes 1..NODES, HTTP ports BASE+10+i, peer ports BASE+20+i
    local n=$1 i members=""
    for i in $(seq 1 "$n"); do
        members+="${members:+,}$i=127.0.0.1:$((BASE_PORT + 20 + i))/127.0.0.1:$((BASE_PORT + 10 + i))"
    done
    for i in $(seq 1 "$n"); do
        local dir="$RUN_DIR/m-a$ATTEMPT-$i"
        mkdir -p "$dir/data"
        local args=(server --id "$i" --data-dir "$dir/data" --http-addr "127.0.0.1:$((BASE_PORT + 10 + i))"
            --peer-addr "127.0.0.1:$((BASE_PORT + 20 + i))" --shards 1)
        [ "$n" -gt 1 ] && args+=(--members "$members")
        taskset -c "$SERVER_CPU" "$MAST_RUN" "${args[@]}" >"$dir/out.log" 2>&1 &
        PIDS+=($!)
    done
    for i in $(seq 1 "$n"); do wait_http "http://127.0.0.1:$((BASE_PORT + 10 + i))/healthz"; done
}

start_etcd() {
    # start_etcd NODES: client ports BASE+30+i, peer ports BASE+40+i
    local n=$1 i cluster=""
    for i in $(seq 1 "$n"); do
        cluster+="${cluster:+,}e$i=http://127.0.0.1:$((BASE_PORT + 40 + i))"
    done
    for i in $(seq 1 "$n"); do
        local dir="$RUN_DIR/etcd-a$ATTEMPT-$i"
        mkdir -p "$dir"
        taskset -c "$SERVER_CPU" etcd --name "e$i" --data-dir "$dir/data" \
            --listen-client-urls "http://127.0.0.1:$((BASE_PORT + 30 + i))" \
            --advertise-client-urls "http://127.0.0.1:$((BASE_PORT + 30 + i))" \
            --listen-peer-urls "http://127.0.0.1:$((BASE_PORT + 40 + i))" \
            --initial-advertise-peer-urls "http://127.0.0.1:$((BASE_PORT + 40 + i))" \
            --initial-cluster "$cluster" --initial-cluster-state new \
            --initial-cluster-token "compare-$STAMP" --log-level error >"$dir/out.log" 2>&1 &
        PIDS+=($!)
    done
    for i in $(seq 1 "$n"); do wait_http "http://127.0.0.1:$((BASE_PORT + 30 + i))/health"; done
    # Wait for a leader: a write must succeed.
    local _k
    for _k in $(seq 1 100); do
        if curl -s --max-time 1 -X POST -d '{"key":"cmVhZHk=","value":"MQ=="}' \
            "http://127.0.0.1:$((BASE_PORT + 31))/v3/kv/put" | grep -q revision; then return 0; fi
        sleep 0.1
    done
    die "etcd has no leader after 10s"
}

targets() {
    # targets SYSTEM NODES -> --target flags
    local sys=$1 n=$2 i out=()
    for i in $(seq 1 "$n"); do
        case $sys in
            mast) out+=(--target "127.0.0.1:$((BASE_PORT + 10 + i))") ;;
            etcd) out+=(--target "127.0.0.1:$((BASE_PORT + 30 + i))") ;;
            nginx) out+=(--target "127.0.0.1:$BASE_PORT") ;;
        esac
    done
    printf '%s\n' "${out[@]}"
}

start_system() {
    # start_system SYSTEM NODES
    case $1 in
        # kv-put / kv-get: mast, as the Milvus scenarios' baselines are labelled.
        mast | kv-put | kv-get) start_mast "$2" ;;
        etcd) start_etcd "$2" ;;
        nginx) start_nginx "$BASE_PORT" ;;
    esac
}

# --- measuring ---------------------------------------------------------------------------

# server_ticks: CPU clock ticks (user + system) used so far by every server process this
# script started and their children (nginx workers).
server_ticks() {
    local total=0 pid p t
    for pid in "${PIDS[@]}"; do
        for p in "$pid" $(pgrep -P "$pid" || true); do
            # Fields after the ")" that closes the command name: utime and stime are 12th, 13th.
            t=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}') || t=0
            total=$((total + ${t:-0}))
        done
    done
    echo "$total"
}
CLK_TCK=$(getconf CLK_TCK)

# json_field FILE KEY.PATH: prints a number from a mast-load JSON report.
json_field() {
    python3 -c 'import json,sys
v=json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."): v=v[k]
print(v)' "$1" "$2"
}

# load NAME ARGS...: one mast-load run on the client CPU; the JSON lands in RUN_DIR/NAME.json.
# Prints "ops/s p99_us errors NAME server_cpu_s ops_handled".
load() {
    local name=$1; shift
    local t0 t1
    t0=$(server_ticks)
    taskset -c "$CLIENT_CPU" "$LOAD_BIN" --cpus "$CLIENT_CPU" --threads 1 -c "$CONNS" \
        --warmup "$WARMUP" -d "$DURATION" --value-size "$VALUE_SIZE" -q --label "$name" \
        --json "$RUN_DIR/$name.json" --hlog "$RUN_DIR/$name.hlog" --plots "$RUN_DIR/$name" "$@" \
        >"$RUN_DIR/$name.txt" 2>&1 || { cat "$RUN_DIR/$name.txt" >&2; die "mast-load $name failed"; }
    t1=$(server_ticks)
    printf '%s %s %s %s %s %s\n' "$(json_field "$RUN_DIR/$name.json" throughput)" \
        "$(json_field "$RUN_DIR/$name.json" latency_us.p99)" \
        "$(json_field "$RUN_DIR/$name.json" error_total)" "$name" \
        "$(python3 -c "print(($t1 - $t0) / $CLK_TCK)")" \
        "$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["completed"] + d["warmup_completed"])' "$RUN_DIR/$name.json")"
}

# secs_of DURATION: whole seconds (at least 1) of a duration like 10s, 500ms, 2m.
secs_of() {
    python3 -c 'import sys,re
m=re.fullmatch(r"([0-9.]+)(ms|s|m)?",sys.argv[1])
if not m: sys.exit("bad duration "+sys.argv[1])
n=float(m.group(1)); u=m.group(2) or "s"
print(max(1,int(n*{"ms":0.001,"s":1,"m":60}[u])))' "$1"
}

# wrk_run NAME URL: wrk -c CONNS on the client CPU, after a warm-up run; prints
# "rps p99_us errors NAME server_cpu_s ops_handled".
wrk_run() {
    local name=$1 url=$2 t0 t1
    taskset -c "$CLIENT_CPU" wrk -t1 -c "$CONNS" -d "$(secs_of "$WARMUP")s" "$url" >/dev/null 2>&1 || true
    t0=$(server_ticks)
    taskset -c "$CLIENT_CPU" wrk -t1 -c "$CONNS" -d "$(secs_of "$DURATION")s" --latency "$url" >"$RUN_DIR/$name.txt" 2>&1 \
        || { cat "$RUN_DIR/$name.txt" >&2; die "wrk $name failed"; }
    t1=$(server_ticks)
    python3 - "$RUN_DIR/$name.txt" "$name" "$(python3 -c "print(($t1 - $t0) / $CLK_TCK)")" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
rps = float(re.search(r"Requests/sec:\s*([0-9.]+)", text).group(1))
m = re.search(r"^\s*99%\s+([0-9.]+)(us|ms|s)\s*$", text, re.M)
p99 = float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)] if m else float("nan")
errs = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
non2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text)
errs += int(non2xx.group(1)) if non2xx else 0
done = int(re.search(r"(\d+) requests in", text).group(1))
print(f"{rps} {p99} {errs} {sys.argv[2]} {sys.argv[3]} {done}")
EOF
}

# --- reporting ---------------------------------------------------------------------------

machine_md() {
    echo "## Machine"
    echo
    echo "- CPUs: $(nproc) ($(lscpu | sed -n 's/^Model name: *//p' | head -1)); server pinned to CPU $SERVER_CPU, client to CPU $CLIENT_CPU"
    echo "- Kernel: $(uname -sr)"
    echo "- Disk (all data dirs): $(findmnt -n -T "$RUN_DIR" -o SOURCE,FSTYPE 2>/dev/null | tr -s ' ') — $(df -h "$RUN_DIR" | tail -1 | awk '{print $2" total, "$4" free"}')"
    echo "- Load average at the start of the run: $LOAD_START (the machine is shared: compare ratios, not absolutes)"
    echo "- Versions: $(nginx -v 2>&1 | sed 's/nginx version: //'), etcd $(etcd --version 2>/dev/null | sed -n 's/etcd Version: //p'), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2), mast $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo "?")"
    echo
}

# summarize SCENARIO FILE_OF_ROWS: rows are "group system rps p99 errors name"; writes the
# markdown tables of rounds, medians and ratios.
summarize_md() {
    python3 - "$1" "$2" <<'EOF'
import sys, statistics, collections
scenario, rows_file = sys.argv[1], sys.argv[2]
rows = [l.split() for l in open(rows_file) if l.strip()]
by = collections.OrderedDict()
for group, system, rps, p99, errs, name, cpu, ops in rows:
    eff = float(ops) / float(cpu) if float(cpu) > 0 else 0.0
    by.setdefault(group, collections.OrderedDict()).setdefault(system, []).append(
        (float(rps), float(p99), int(errs), float(cpu), eff))
print("## Rounds\n")
print("| measurement | system | round | ops/s | p99 (µs) | errors | server CPU (s) | ops per server CPU-second |")
print("|---|---|---|---:|---:|---:|---:|---:|")
for group, systems in by.items():
    for system, vals in systems.items():
        for i, (rps, p99, errs, cpu, eff) in enumerate(vals, 1):
            print(f"| {group} | {system} | {i} | {rps:.0f} | {p99:.0f} | {errs} | {cpu:.2f} | {eff:.0f} |")
print("\n## Medians and ratios\n")
print("| measurement | system | median ops/s | median p99 (µs) | errors (sum) | median ops per server CPU-s | ops/s mast ÷ system | p99 mast ÷ system | ops per CPU-s mast ÷ system |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
for group, systems in by.items():
    med = {s: (statistics.median(v[0] for v in vals), statistics.median(v[1] for v in vals),
               sum(v[2] for v in vals), statistics.median(v[4] for v in vals))
           for s, vals in systems.items()}
    mast = med.get("mast")
    for s, (rps, p99, errs, eff) in med.items():
        r = ["", "", ""]
        # A system with no completed operations (e.g. an API not built yet) has no ratios.
        if mast and s != "mast" and mast[0] > 0:
            r = [f"{mast[0] / rps:.2f}" if rps > 0 else "",
                 f"{mast[1] / p99:.2f}" if p99 > 0 else "",
                 f"{mast[3] / eff:.2f}" if eff > 0 else ""]
        print(f"| {group} | {s} | {rps:.0f} | {p99:.0f} | {errs} | {eff:.0f} | {r[0]} | {r[1]} | {r[2]} |")
EOF
}

write_result() {
    # write_result SCENARIO TITLE ROWS_FILE NOTES
    local scenario=$1 title=$2 rows=$3 notes=$4 outfile="$RESULTS/$DATE-$1.md"
    mkdir -p "$RESULTS"
    {
        echo "# $title"
        echo
        echo "Run $STAMP by \`perf/compare.sh $scenario\` (ROUNDS=$ROUNDS DURATION=$DURATION WARMUP=$WARMUP CONNS=$CONNS VALUE_SIZE=$VALUE_SIZE)."
        echo
        machine_md
        echo "$notes"
        echo
        summarize_md "$scenario" "$rows"
        echo
        echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
        echo "Latency is mast-load's coordinated-omission-corrected latency (wrk: its own p99)."
        echo "Server CPU is the user+system time of the server processes during the load (mast-load:"
        echo "warm-up included, so ops per CPU-second counts warm-up requests too). It is less sensitive"
        echo "to noisy neighbours than ops/s: time stolen by other jobs is not charged to the server."
        echo "Raw reports (JSON, .hlog, PNG) of this run: perf/.run/$STAMP/ (not committed)."
    } >"$outfile"
    log "wrote $outfile"
    cat "$outfile" >&2
}

copy_plots() {
    # copy_plots SCENARIO NAME...: keeps the last round's plots next to the table.
    local scenario=$1; shift
    local name kind
    for name in "$@"; do
        for kind in latency throughput; do
            [ -f "$RUN_DIR/$name-$kind.png" ] && cp "$RUN_DIR/$name-$kind.png" "$RESULTS/$DATE-$name-$kind.png"
        done
    done
    return 0
}

# --- scenarios ---------------------------------------------------------------------------

# attempt GROUP SYSTEM NODES NAME COMMAND...: starts SYSTEM fresh (new data dirs), runs the
# measuring COMMAND (which prints one row tail), stops everything, and appends
# "GROUP SYSTEM <row>" to $ROWS. A server that dies during the measurement (or a failed
# measurement) is retried once on a fresh start, then the run is abandoned.
attempt() {
    local group=$1 sys=$2 nodes=$3; shift 3
    local try row
    for try in 1 2; do
        ATTEMPT=$((ATTEMPT + 1))
        start_system "$sys" "$nodes"
        if row=$("$@") && alive_all; then
            stop_all
            echo "$group $sys $row" >>"$ROWS"
            log "$group $sys: $row"
            return 0
        fi
        log "$group $sys: measurement failed or a server exited (try $try); server logs in $RUN_DIR/*-a$ATTEMPT-*"
        stop_all
    done
    die "$group $sys failed twice"
}

alive_all() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null || { log "server pid $pid is gone"; return 1; }
    done
}

first_addr() { targets "$1" 1 | sed -n 2p; }

scenario_healthz() {
    # Issue #2: GET /healthz from one shard on one core vs nginx (1 worker, same core), loaded
    # from the other core by wrk -c64 and by mast-load, alternating.
    ROWS="$RUN_DIR/healthz.rows"
    : >"$ROWS"
    local r sys
    for r in $(seq 1 "$ROUNDS"); do
        for sys in mast nginx; do
            attempt wrk "$sys" 1 wrk_run "healthz-wrk-$sys-r$r" "http://$(first_addr "$sys")/healthz"
            # shellcheck disable=SC2046
            attempt mast-load "$sys" 1 load "healthz-load-$sys-r$r" $(targets "$sys" 1) --path /healthz
        done
    done
    copy_plots healthz "healthz-load-mast-r$ROUNDS" "healthz-load-nginx-r$ROUNDS"
    write_result healthz "GET /healthz: mast (1 shard) vs nginx (1 worker), same core" "$ROWS" \
        "Goal (issue #2): mast ≥ 0.80 × nginx requests/s, both with wrk -c$CONNS and mast-load -c$CONNS."
}

api_of() { if [ "$1" = etcd ]; then echo etcd; else echo mast; fi; }

scenario_put() {
    # put-N: durable PUT /kv, mast vs etcd (N nodes; N=1 adds nginx's fixed response).
    local n=$1
    ROWS="$RUN_DIR/put-$n.rows"
    : >"$ROWS"
    local r sys systems=(mast etcd)
    [ "$n" = 1 ] && systems+=(nginx)
    for r in $(seq 1 "$ROUNDS"); do
        for sys in "${systems[@]}"; do
            # shellcheck disable=SC2046
            attempt closed "$sys" "$n" load "put$n-$sys-r$r" $(targets "$sys" "$n") \
                --workload kv-put --api "$(api_of "$sys")"
        done
    done
    local notes
    if [ "$n" = 1 ]; then
        notes="Goals: mast ≥ 10 × etcd writes/s (etcd at $CONNS connections); mast ≥ 0.7 × nginx's fixed-response rate (nginx answers the same PUTs with 200 \"ok\")."
    else
        # Open loop at half of etcd's median closed-loop rate: compare corrected p99.
        local half
        half=$(python3 -c 'import sys,statistics
v=[float(l.split()[2]) for l in open(sys.argv[1]) if l.split()[1]=="etcd"]
print(max(1.0, statistics.median(v)/2))' "$ROWS")
        for r in $(seq 1 "$ROUNDS"); do
            for sys in mast etcd; do
                # shellcheck disable=SC2046
                attempt "open@${half%.*}/s" "$sys" "$n" load "put$n-open-$sys-r$r" $(targets "$sys" "$n") \
                    --workload kv-put --api "$(api_of "$sys")" --rate "$half"
            done
        done
        notes="Goals: mast ≥ 5 × etcd's 3-node writes/s (closed loop); at half of etcd's max rate (open loop, ${half%.*} req/s), mast's p99 ≤ 0.1 × etcd's."
    fi
    local title="Durable PUT /kv, $n node(s) on 127.0.0.1: mast vs etcd"
    [ "$n" = 1 ] && title+=" vs nginx"
    copy_plots "put-$n" "put$n-mast-r$ROUNDS" "put$n-etcd-r$ROUNDS" \
        "put$n-open-mast-r$ROUNDS" "put$n-open-etcd-r$ROUNDS"
    write_result "put-$n" "$title" "$ROWS" "$notes"
}

scenario_get() {
    # get-1: linearizable GET /kv single node vs nginx (and etcd for reference).
    ROWS="$RUN_DIR/get-1.rows"
    : >"$ROWS"
    local r sys
    for r in $(seq 1 "$ROUNDS"); do
        for sys in mast nginx etcd; do
            local extra=(--preload)
            [ "$sys" = nginx ] && extra=()
            # shellcheck disable=SC2046
            attempt closed "$sys" 1 load "get1-$sys-r$r" $(targets "$sys" 1) \
                --workload kv-get --api "$(api_of "$sys")" --keys "$KEYS" "${extra[@]}"
        done
    done
    copy_plots get-1 "get1-mast-r$ROUNDS" "get1-nginx-r$ROUNDS"
    write_result get-1 "Linearizable GET /kv, 1 node: mast vs nginx (etcd for reference)" "$ROWS" \
        "Goal: mast ≥ 0.9 × nginx's rate on the same core."
}

scenario_batch() {
    # tso-1 / tso-batch / ids-1 / ids-batch: POST /tso|/ids?count=N on one mast node (group 0
    # leader, 1 shard) vs nginx answering the same requests with a fixed JSON reply of the same
    # shape (the HTTP ceiling of the core). Values per second = ops/s × N (a reply with another
    # count is an error).
    local kind=$1 count=$2 name=$3
    ROWS="$RUN_DIR/$name.rows"
    : >"$ROWS"
    local r sys unit=timestamps
    [ "$kind" = ids ] && unit=ids
    for r in $(seq 1 "$ROUNDS"); do
        for sys in mast nginx; do
            # shellcheck disable=SC2046
            attempt "count=$count" "$sys" 1 load "$name-$sys-r$r" $(targets "$sys" 1) \
                --workload "$kind" --count "$count"
        done
    done
    local items half
    items=$(python3 -c 'import sys,statistics
v=[float(l.split()[2]) for l in open(sys.argv[1]) if l.split()[1]=="mast"]
print(f"{statistics.median(v) * int(sys.argv[2]):.0f}")' "$ROWS" "$count")
    # Open loop at half of mast's median closed-loop rate: the latency a client sees when the
    # server is not saturated (corrected p99, from the intended send time).
    half=$(python3 -c 'import sys,statistics
v=[float(l.split()[2]) for l in open(sys.argv[1]) if l.split()[1]=="mast"]
print(max(1.0, statistics.median(v)/2))' "$ROWS")
    for r in $(seq 1 "$ROUNDS"); do
        # shellcheck disable=SC2046
        attempt "open@${half%.*}/s" mast 1 load "$name-open-mast-r$r" $(targets mast 1) \
            --workload "$kind" --count "$count" --rate "$half"
    done
    copy_plots "$name" "$name-mast-r$ROUNDS" "$name-nginx-r$ROUNDS" "$name-open-mast-r$ROUNDS"
    write_result "$name" "POST /$kind?count=$count, 1 node: mast vs nginx (fixed reply)" "$ROWS" \
        "Each successful request hands out $count $unit (ops/s × $count = $unit/s; mast's median: $items $unit/s; every JSON report in the run dir has \`items.throughput\`). Goals (issue #10): at count=1, mast ≥ 0.7 × nginx's fixed reply of the same shape on the same core; with count batching ≥ 1,000,000 $unit/s and p99 < 1 ms open loop at half of mast's max rate (${half%.*} req/s). mast-load checks that each connection's batches increase and carry exactly count=$count."
}

# milvus_load N NAME ARGS...: waits until node 1..N say their Milvus coordinator is Healthy
# (every shard has a leader; /healthz alone does not say so, and a preload or a Milvus
# workload's setup request would fail), then runs load NAME ARGS...
milvus_load() {
    local n=$1 i _k; shift
    for i in $(seq 1 "$n"); do
        for _k in $(seq 1 100); do
            curl -s --max-time 1 -X POST -d '{}' \
                "http://127.0.0.1:$((BASE_PORT + 10 + i))/v2/rootcoord/component_states" |
                grep -q '"role":"rootcoord","stateCode":"Healthy"' && break
            sleep 0.1
        done
    done
    load "$@"
}

scenario_milvus() {
    # milvus-N: Milvus DDL and reads through the REST v2 API on N mast nodes (1 shard each),
    # each against the KV operation its goal names, measured in the same round: create+drop
    # pairs and partition creation vs durable PUT /kv, describe/has/list vs linearizable
    # GET /kv. Rows put the Milvus workload under system "mast" and the baseline under its
    # own name, so the ratio columns read "Milvus ÷ KV".
    local n=$1
    ROWS="$RUN_DIR/milvus-$n.rows"
    : >"$ROWS"
    local r w
    for r in $(seq 1 "$ROUNDS"); do
        # shellcheck disable=SC2046
        attempt kv-put kv-put "$n" milvus_load "$n" "milvus$n-kv-put-r$r" $(targets mast "$n") \
            --workload kv-put
        # shellcheck disable=SC2046
        attempt kv-get kv-get "$n" milvus_load "$n" "milvus$n-kv-get-r$r" $(targets mast "$n") \
            --workload kv-get --keys "$KEYS" --preload
        for w in create-drop partition describe has list; do
            # shellcheck disable=SC2046
            attempt "$w" mast "$n" milvus_load "$n" "milvus$n-$w-r$r" $(targets mast "$n") \
                --workload "milvus-$w" --key-prefix "r$r"
        done
    done
    # Each baseline row also stands beside every Milvus workload it is the goal's reference of.
    python3 - "$ROWS" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
out = [r for r in rows if r[0] not in ("kv-put", "kv-get")]
for r in rows:
    if r[0] == "kv-put":
        out += [[g] + r[1:] for g in ("create-drop", "partition")]
    elif r[0] == "kv-get":
        out += [[g] + r[1:] for g in ("describe", "has", "list")]
order = ["create-drop", "partition", "describe", "has", "list"]
out.sort(key=lambda r: (order.index(r[0]), r[1] != "mast"))
open(sys.argv[1], "w").write("".join(" ".join(r) + "\n" for r in out))
PY
    write_result "milvus-$n" "Milvus REST v2 DDL and reads, $n node(s), vs the KV baselines in the same rounds" "$ROWS" \
        "System \"mast\" is the Milvus workload of the row's measurement (mast-load --workload milvus-<measurement>; a reply counts only with Milvus code 0); kv-put is a durable PUT /kv and kv-get a linearizable GET /kv on the same servers. Goals (issue #11): create-collection ≥ 0.5 × kv-put's rate; describe/has/list ≥ 0.8 × kv-get's (the \"ops/s mast ÷ system\" column)."
}

# --- main --------------------------------------------------------------------------------

main() {
    LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
    local scenarios=("$@")
    [ ${#scenarios[@]} -eq 0 ] && scenarios=(healthz)
    [ "${scenarios[0]}" = all ] && scenarios=(healthz put-1 put-3 get-1)
    [ "$(nproc)" -ge 2 ] || log "warning: one CPU only; server and client share it"
    need curl curl
    need python3 python3
    need taskset util-linux
    need nginx nginx
    need wrk wrk
    need etcd etcd-server
    # Plot text uses this font; without it the PNGs have no labels.
    [ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need fc-list fonts-dejavu-core fontconfig
    if [ "${SKIP_BUILD:-0}" != 1 ]; then
        log "building release binaries into $TARGET_DIR"
        (cd "$ROOT" && CARGO_TARGET_DIR=$TARGET_DIR cargo build --release -p mast -p mast-load)
    fi
    [ -x "$LOAD_BIN" ] || die "no mast-load at $LOAD_BIN"
    [ -x "$MAST_BIN" ] || die "no mast at $MAST_BIN"
    mkdir -p "$RUN_DIR/bin"
    log "run dir $RUN_DIR"
    # The machine is shared, and other jobs have been seen stopping every process whose command
    # line mentions "mast". A copy under a neutral name (and neutral data paths) keeps them
    # from ending a measurement half-way.
    MAST_RUN="$RUN_DIR/bin/mnode"
    cp "$MAST_BIN" "$MAST_RUN"
    local s
    for s in "${scenarios[@]}"; do
        case $s in
            healthz) scenario_healthz ;;
            put-1) scenario_put 1 ;;
            put-3) scenario_put 3 ;;
            get-1) scenario_get ;;
            tso-1) scenario_batch tso 1 tso-1 ;;
            tso-batch) scenario_batch tso "$BATCH" tso-batch ;;
            ids-1) scenario_batch ids 1 ids-1 ;;
            ids-batch) scenario_batch ids "$BATCH" ids-batch ;;
            milvus-1) scenario_milvus 1 ;;
            milvus-3) scenario_milvus 3 ;;
            *) die "unknown scenario $s (healthz, put-1, put-3, get-1, tso-1, tso-batch, ids-1, ids-batch, milvus-1, milvus-3, all)" ;;
        esac
    done
}

main "$@"
