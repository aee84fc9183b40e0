#!/usr/bin/env bash
# CubeFS part 1 scale run: one `mast server` (2 shards) as the master of DATA_NODES data and
# META_NODES meta nodes simulated by two `mast node` processes, each node heartbeating every
# 6 s with PARTITIONS partition reports. Once every node is active it measures, for DURATION:
#   - /admin/getCluster and /dataNode/get (mast-load, open loop at GETCLUSTER_RATE and
#     DATANODE_RATE requests/s: an operator's dashboard and the nodes' own lookups, CONNS
#     connections each),
#   - the master's CPU (user+system from /proc, in cores),
#   - heartbeat health: nodes active (must stay at the total) and the heartbeat round lag
#     (from /metrics), sampled every second.
# Prints a markdown table. Everything it starts, it stops by PID.
#
# Usage: perf/cubefs-scale.sh    Knobs: DATA_NODES=5000 META_NODES=5000 PARTITIONS=100
#   DURATION=30s CONNS=4 GETCLUSTER_RATE=10 DATANODE_RATE=200 SKIP_BUILD=1 BASE_PORT=24100 (HTTP), agents listen from 20000/26000.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DATA_NODES=${DATA_NODES:-5000}
META_NODES=${META_NODES:-5000}
PARTITIONS=${PARTITIONS:-100}
DURATION=${DURATION:-30s}
CONNS=${CONNS:-4}
GETCLUSTER_RATE=${GETCLUSTER_RATE:-10}
DATANODE_RATE=${DATANODE_RATE:-200}
BASE_PORT=${BASE_PORT:-24100}
MAST=$ROOT/target/release/mast
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

"$MAST" node --role data --master "$HTTP" --simulate "$DATA_NODES" --listen 127.0.0.1:20000 \
    --data-dir "$RUN/data" --preload-partitions "$PARTITIONS" >"$RUN/data.log" 2>&1 &
PIDS+=($!)
"$MAST" node --role meta --master "$HTTP" --simulate "$META_NODES" --listen 127.0.0.1:26000 \
    --data-dir "$RUN/meta" --preload-partitions "$PARTITIONS" >"$RUN/meta.log" 2>&1 &
PIDS+=($!)

TOTAL=$((DATA_NODES + META_NODES))
metric() { # metric NAME: sum over shards
    curl -s "http://$HTTP/metrics" | awk -v n="$1" '$1 ~ "^"n"({|$)" {s+=$2} END {print s+0}'
}
log "waiting for $TOTAL nodes to register and answer a heartbeat"
deadline=$((SECONDS + 300))
while [ "$(metric mast_admin_nodes_active)" -lt "$TOTAL" ]; do
    [ $SECONDS -gt $deadline ] && { log "only $(metric mast_admin_nodes_active) of $TOTAL active after 300 s"; exit 1; }
    sleep 2
done
log "all $TOTAL active after $SECONDS s"

# A registered data node to ask for.
ADDR=127.0.0.1:20000
cpu_ticks() { awk '{print $14 + $15}' "/proc/$MASTER_PID/stat"; }
HZ=$(getconf CLK_TCK)
t0=$(date +%s.%N); c0=$(cpu_ticks)
: >"$RUN/health"
(
    end=$((SECONDS + ${DURATION%s}))
    while [ $SECONDS -lt $end ]; do
        echo "$(metric mast_admin_nodes_active) $(curl -s "http://$HTTP/metrics" | awk '$1 ~ /^mast_admin_heartbeat_lag_ms/ {if ($2>m) m=$2} END {print m+0}')" >>"$RUN/health"
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

python3 - "$RUN" "$TOTAL" "$t0" "$t1" "$c0" "$c1" "$HZ" <<'EOF'
import json, sys
run, total, t0, t1, c0, c1, hz = sys.argv[1:]
cores = (int(c1) - int(c0)) / int(hz) / (float(t1) - float(t0))
health = [tuple(map(int, l.split())) for l in open(f"{run}/health") if l.strip()]
print(f"| measurement | value |\n|---|---|")
print(f"| nodes (data + meta), heartbeating every 6 s | {total} |")
print(f"| nodes active, min over the run (sampled 1/s) | {min(a for a, _ in health)} |")
print(f"| heartbeat round lag, max (ms) | {max(l for _, l in health)} |")
print(f"| master CPU (cores, user+system, during the route load) | {cores:.2f} |")
for name in ("getcluster", "datanode"):
    d = json.load(open(f"{run}/{name}.json"))
    lat = d["latency_us"]
    print(f"| {name}: req/s, p50 / p99 (ms), errors | {d['throughput']:.0f}, "
          f"{lat['p50'] / 1000:.1f} / {lat['p99'] / 1000:.1f}, {d['error_total']} |")
EOF
log "raw files in $RUN"
