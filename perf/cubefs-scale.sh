#!/usr/bin/env bash
# CubeFS part 1 scale run: one `mast server` (2 shards) as the master of DATA_NODES data and
# META_NODES meta nodes simulated by two `mast node` processes, each node heartbeating every
# 6 s with PARTITIONS partition reports. Once every node is active it measures, for DURATION:
#   - /admin/getCluster and /dataNode/get (mast-load, open loop at GETCLUSTER_RATE and
#     DATANODE_RATE requests/s: an operator's dashboard and the nodes' own lookups, CONNS
#     connections each),
#   - the master's CPU (user+system from /proc, in cores),
#   - heartbeat health, sampled every second from /metrics: nodes active (must stay at the
#     total), the heartbeat round lag, and the longest gap between two applied heartbeat
#     answers of one node (must stay under the 6 s interval plus travel); and the master's
#     CPU per second.
# Prints a markdown table. Everything it starts, it stops by PID.
#
# On a shared machine: with autogroup scheduling (/proc/sys/kernel/sched_autogroup_enabled)
# `nice` only ranks processes within one session, and every session gets an equal share of
# the CPUs however niced. Run `setsid perf/cubefs-scale.sh` with AUTOGROUP_NICE=-15 (root)
# so the run's own session outranks the others.
#
# Usage: perf/cubefs-scale.sh    Knobs: DATA_NODES=5000 META_NODES=5000 PARTITIONS=100
#   DURATION=30s CONNS=4 GETCLUSTER_RATE=10 DATANODE_RATE=200 SKIP_BUILD=1 BASE_PORT=24100 (HTTP)
#   MAST=path/to/mast (another build, to compare) AUTOGROUP_NICE=-15 (see below)
#   AGENT_NICE=0 (10: the simulated nodes, standing in for other machines, yield the CPU to
#   the master and the load clients; 0, the default, lets them compete);
#   data nodes listen on 127.0.0.2:20000.., meta nodes on 127.0.0.3:20000.. (loopback
#   addresses nothing else on the machine uses, so no port of the range is taken).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ -n "${AUTOGROUP_NICE:-}" ] && [ -w /proc/self/autogroup ]; then
    echo "$AUTOGROUP_NICE" >/proc/self/autogroup 2>/dev/null || true
fi
DATA_NODES=${DATA_NODES:-5000}
META_NODES=${META_NODES:-5000}
PARTITIONS=${PARTITIONS:-100}
DURATION=${DURATION:-30s}
CONNS=${CONNS:-4}
GETCLUSTER_RATE=${GETCLUSTER_RATE:-10}
DATANODE_RATE=${DATANODE_RATE:-200}
BASE_PORT=${BASE_PORT:-24100}
AGENT_NICE=${AGENT_NICE:-0}
MAST=${MAST:-$ROOT/target/release/mast}
LOAD=$ROOT/target/release/mast-load
RUN=$(mktemp -d /tmp/mast-cubefs-scale.XXXXXX)
PIDS=()

log() { printf '[scale %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    (cd "$ROOT" && cargo build --release -p mast -p mast-load)
fi

HTTP=127.0.0.1:$BASE_PORT
"$MAST" server --id 1 --data-dir "$RUN/master" --http-addr "$HTTP" \
    --peer-addr "127.0.0.1:$((BASE_PORT + 1))" --shards 2 >"$RUN/master.log" 2>&1 &
MASTER_PID=$!
PIDS+=("$MASTER_PID")
for _ in $(seq 1 100); do
    curl -sf "http://$HTTP/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done

nice -n "$AGENT_NICE" "$MAST" node --role data --master "$HTTP" --simulate "$DATA_NODES" --listen 127.0.0.2:20000 \
    --data-dir "$RUN/data" --preload-partitions "$PARTITIONS" >"$RUN/data.log" 2>&1 &
DATA_PID=$!
PIDS+=("$DATA_PID")
nice -n "$AGENT_NICE" "$MAST" node --role meta --master "$HTTP" --simulate "$META_NODES" --listen 127.0.0.3:20000 \
    --data-dir "$RUN/meta" --preload-partitions "$PARTITIONS" >"$RUN/meta.log" 2>&1 &
META_PID=$!
PIDS+=("$META_PID")

TOTAL=$((DATA_NODES + META_NODES))
metric() { # metric NAME: sum over shards
    curl -s "http://$HTTP/metrics" | awk -v n="$1" '$1 ~ "^"n"({|$)" {s+=$2} END {print s+0}'
}
log "waiting for $TOTAL nodes to register and answer a heartbeat"
deadline=$((SECONDS + 300))
while [ "$(metric mast_admin_nodes_active)" -lt "$TOTAL" ]; do
    [ $SECONDS -gt $deadline ] && { log "only $(metric mast_admin_nodes_active) of $TOTAL active after 300 s"; exit 1; }
    for p in "$MASTER_PID" "$DATA_PID" "$META_PID"; do
        kill -0 "$p" 2>/dev/null || { log "process $p exited; logs in $RUN"; tail -3 "$RUN"/*.log >&2; exit 1; }
    done
    sleep 2
done
ACTIVE_AFTER=$SECONDS
log "all $TOTAL active after $ACTIVE_AFTER s"

# A registered data node to ask for.
ADDR=127.0.0.2:20000
cpu_ticks() { awk '{print $14 + $15}' "/proc/$MASTER_PID/stat"; }
HZ=$(getconf CLK_TCK)
t0=$(date +%s.%N); c0=$(cpu_ticks)
: >"$RUN/health"
(
    end=$((SECONDS + ${DURATION%s}))
    while [ $SECONDS -lt $end ]; do
        m=$(curl -s "http://$HTTP/metrics")
        echo "$(date +%s) $(awk '$1 ~ /^mast_admin_nodes_active[{]/ {s+=$2} END {print s+0}' <<<"$m") $(awk '$1 ~ /^mast_admin_heartbeat_lag_ms[{]/ {if ($2>x) x=$2} END {print x+0}' <<<"$m") $(awk '$1 ~ /^mast_admin_heartbeat_gap_max_ms[{]/ {if ($2>x) x=$2} END {print x+0}' <<<"$m") $(cpu_ticks)" >>"$RUN/health"
        sleep 1
    done
) &
SAMPLER=$!
"$LOAD" --target "$HTTP" --method GET --path /admin/getCluster -c "$CONNS" --rate "$GETCLUSTER_RATE" --warmup 2s \
    -d "$DURATION" -q --json "$RUN/getcluster.json" >"$RUN/getcluster.txt" 2>&1 &
L1=$!
"$LOAD" --target "$HTTP" --method GET --path "/dataNode/get?addr=$ADDR" -c "$CONNS" --rate "$DATANODE_RATE" --warmup 2s \
    -d "$DURATION" -q --json "$RUN/datanode.json" >"$RUN/datanode.txt" 2>&1 &
L2=$!
wait $L1 $L2 $SAMPLER
t1=$(date +%s.%N); c1=$(cpu_ticks)

python3 - "$RUN" "$TOTAL" "$t0" "$t1" "$c0" "$c1" "$HZ" "$ACTIVE_AFTER" <<'EOF'
import json, sys
run, total, t0, t1, c0, c1, hz, active_after = sys.argv[1:]
cores = (int(c1) - int(c0)) / int(hz) / (float(t1) - float(t0))
health = [tuple(map(int, l.split())) for l in open(f"{run}/health") if l.strip()]
print(f"| measurement | value |\n|---|---|")
print(f"| nodes (data + meta), heartbeating every 6 s | {total} |")
print(f"| all registered and active after (s, from the master's start) | {active_after} |")
print(f"| nodes active, min over the run (sampled 1/s) | {min(h[1] for h in health)} |")
print(f"| heartbeat round lag, max (ms) | {max(h[2] for h in health)} |")
print(f"| longest gap between two applied answers of a node, max (ms) | {max(h[3] for h in health)} |")
print(f"| master CPU (cores, user+system, during the route load) | {cores:.2f} |")
per_s = [(b[4] - a[4]) / int(hz) / max(b[0] - a[0], 1) for a, b in zip(health, health[1:])]
if per_s:
    print(f"| master CPU, busiest second (cores) | {max(per_s):.2f} |")
print(f"| nodes active over time (every 5th sample) | {' '.join(str(h[1]) for h in health[::5])} |")
for name in ("getcluster", "datanode"):
    d = json.load(open(f"{run}/{name}.json"))
    lat = d["latency_us"]
    print(f"| {name}: req/s, p50 / p99 (ms), errors | {d['throughput']:.0f}, "
          f"{lat['p50'] / 1000:.1f} / {lat['p99'] / 1000:.1f}, {d['error_total']} |")
EOF
log "raw files in $RUN"
