#!/usr/bin/env bash
# CubeFS part 2 benchmark: one `mast server` (2 shards) as the master of DATA_NODES simulated
# data nodes and META_NODES meta nodes (three zones, one loopback address each). It seeds PARTITIONS data partitions (volume perf1 with VOL_DPS of
# them, the rest in seed volumes of SEED_VOL_DPS each), then measures with mast-load, closed
# loop, CONNS connections, DURATION each:
#   - /client/partitions?name=perf1 (the hottest read), and nginx (1 worker, gzip off)
#     serving the very same reply body as a file, same run,
#   - /dataPartition/get of perf1's partitions,
#   - /admin/createVol of small volumes (3 data partitions each; CREATE_CONNS connections).
# Each simulating process registers its nodes in a burst, so a node set (18 nodes) holds
# nodes of one IP; the three zones z1..z3 (one IP each for data and for meta nodes) and
# cross-zone volumes (one replica per zone) keep replicas on distinct IPs. Growth of volumes
# to 10 data partitions is off (--cubefs-dp-growth-interval-ms 0): no partitions are created
# during the measurements.
# Prints a markdown table. Everything it starts, it stops by PID.
#
# Usage: nice -n -15 perf/cubefs-vol.sh
# Knobs: DATA_NODES=1000 META_NODES=12 PARTITIONS=100000 VOL_DPS=1000
#   SEED_VOL_DPS=1000 DURATION=15s CONNS=4 CREATE_CONNS=2 SKIP_BUILD=1 BASE_PORT=24300.
#   Data nodes listen on 127.0.1.<k>:21000.., meta nodes on 127.0.2.<k>:22000...
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DATA_NODES=${DATA_NODES:-1000}
DATA_IPS=3
META_NODES=${META_NODES:-12}
PARTITIONS=${PARTITIONS:-100000}
VOL_DPS=${VOL_DPS:-1000}
SEED_VOL_DPS=${SEED_VOL_DPS:-1000}
DURATION=${DURATION:-15s}
CONNS=${CONNS:-4}
CREATE_CONNS=${CREATE_CONNS:-2}
BASE_PORT=${BASE_PORT:-24300}
MAST=$ROOT/target/release/mast
LOAD=$ROOT/target/release/mast-load
RUN=$(mktemp -d /tmp/mast-cubefs-vol.XXXXXX)
PIDS=()

log() { printf '[cubefs-vol %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
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
NGINX=127.0.0.1:$((BASE_PORT + 5))
"$MAST" server --id 1 --data-dir "$RUN/master" --http-addr "$HTTP" \
    --peer-addr "127.0.0.1:$((BASE_PORT + 1))" --shards 2 \
    --cubefs-dp-growth-interval-ms 0 >"$RUN/master.log" 2>&1 &
MASTER_PID=$!
PIDS+=("$MASTER_PID")
for _ in $(seq 1 100); do
    curl -sf "http://$HTTP/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done

per_ip=$(((DATA_NODES + DATA_IPS - 1) / DATA_IPS))
for k in $(seq 1 "$DATA_IPS"); do
    "$MAST" node --role data --master "$HTTP" --simulate "$per_ip" --listen "127.0.1.$k:21000" --zone "z$k" \
        --capacity-gb 1000000 --data-dir "$RUN/data-$k" >"$RUN/data-$k.log" 2>&1 &
    PIDS+=($!)
done
meta_per_ip=$(((META_NODES + 2) / 3))
for k in 1 2 3; do
    "$MAST" node --role meta --master "$HTTP" --simulate "$meta_per_ip" --listen "127.0.2.$k:22000" --zone "z$k" \
        --capacity-gb 1024 --data-dir "$RUN/meta-$k" >"$RUN/meta-$k.log" 2>&1 &
    PIDS+=($!)
done
TOTAL=$((per_ip * DATA_IPS + meta_per_ip * 3))

metric() { # metric NAME: sum over shards
    curl -s "http://$HTTP/metrics" | awk -v n="$1" '$1 ~ "^"n"({|$)" {s+=$2} END {print s+0}'
}
log "waiting for $TOTAL nodes to register and answer a heartbeat"
deadline=$((SECONDS + 300))
while [ "$(metric mast_admin_nodes_active)" -lt "$TOTAL" ]; do
    [ $SECONDS -gt $deadline ] && { log "only $(metric mast_admin_nodes_active) of $TOTAL active after 300 s"; exit 1; }
    for p in "${PIDS[@]}"; do
        kill -0 "$p" 2>/dev/null || { log "process $p exited; logs in $RUN"; tail -3 "$RUN"/*.log >&2; exit 1; }
    done
    sleep 2
done
log "all $TOTAL active after $SECONDS s"

# cubefs GET PATH: the reply's code must be 0.
cubefs() {
    local body
    body=$(curl -sS --max-time 120 "http://$HTTP$1")
    case "$body" in
        '{"code":0,'*) ;;
        *) log "GET $1: $body"; exit 1 ;;
    esac
}
# fill VOL N: VOL gets N data partitions (createVol with up to 200, then batches of 100). A
# batch that creates only part of its partitions (a create task failing) counts what it made
# and the next batch makes up the rest; 20 such shortfalls in a row stop the script.
fill() {
    local vol=$1 n=$2 first=$(( $2 < 200 ? $2 : 200 ))
    first=$(( first < 3 ? 3 : first ))
    cubefs "/admin/createVol?name=$vol&owner=perf&capacity=100000&dpCount=$first&crossZone=true"
    local have=$first short=0 body made
    while [ "$have" -lt "$n" ]; do
        local c=$(( n - have < 100 ? n - have : 100 ))
        body=$(curl -sS --max-time 120 "http://$HTTP/dataPartition/create?name=$vol&count=$c")
        case "$body" in
            '{"code":0,'*) have=$((have + c)); short=0; continue ;;
        esac
        made=$(printf '%s' "$body" | sed -n 's/.*created \([0-9]*\) of.*/\1/p')
        have=$((have + ${made:-0}))
        short=$((short + 1))
        [ "$short" -ge 20 ] && { log "GET /dataPartition/create: $body"; exit 1; }
    done
}
t_seed=$SECONDS
fill perf1 "$VOL_DPS"
seeded=$VOL_DPS
i=0
while [ "$seeded" -lt "$PARTITIONS" ]; do
    n=$(( PARTITIONS - seeded < SEED_VOL_DPS ? PARTITIONS - seeded : SEED_VOL_DPS ))
    n=$(( n < 3 ? 3 : n ))
    fill "seed$i" "$n"
    seeded=$((seeded + n)); i=$((i + 1))
    log "seeded $seeded of $PARTITIONS data partitions"
done
log "seeding took $((SECONDS - t_seed)) s"

# The reply nginx serves: the same bytes mast answers for perf1.
chmod 755 "$RUN"
mkdir -p "$RUN/www/client"
curl -sS "http://$HTTP/client/partitions?name=perf1" -o "$RUN/www/client/partitions"
chmod -R a+rX "$RUN/www"
BODY_BYTES=$(stat -c %s "$RUN/www/client/partitions")
cat >"$RUN/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
master_process on;
pid $RUN/nginx.pid;
error_log $RUN/nginx-error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    gzip off;
    keepalive_requests 1000000000;
    keepalive_timeout 300s;
    server {
        listen $NGINX;
        root $RUN/www;
        location / { default_type application/json; }
    }
}
NGINX
nginx -c "$RUN/nginx.conf" -p "$RUN" >"$RUN/nginx.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do
    curl -sf "http://$NGINX/client/partitions" >/dev/null 2>&1 && break
    sleep 0.1
done

load() { # load NAME ARGS...: one closed-loop run, JSON in $RUN/NAME.json
    local name=$1
    shift
    "$LOAD" -q --warmup 2s -d "$DURATION" --response-bytes-max $((64 << 20)) \
        --json "$RUN/$name.json" "$@" >"$RUN/$name.txt" 2>&1
}
load partitions --target "$HTTP" -c "$CONNS" --workload cubefs-client-partitions --cubefs-vol perf1
load nginx --target "$NGINX" -c "$CONNS" --method GET --path /client/partitions
load dpget --target "$HTTP" -c "$CONNS" --workload cubefs-dp-get --cubefs-vol perf1
load createvol --target "$HTTP" -c "$CREATE_CONNS" --workload cubefs-create-vol --key-prefix "p$$" \
    --cubefs-create-args "owner=perf&capacity=10&dpCount=3&crossZone=true"

python3 - "$RUN" "$DATA_NODES" "$PARTITIONS" "$VOL_DPS" "$BODY_BYTES" <<'PY'
import json, sys
run, nodes, parts, vol_dps, body = sys.argv[1:]
print("| measurement | req/s | p50 (ms) | p99 (ms) | errors |\n|---|---|---|---|---|")
rows = [("partitions", f"mast /client/partitions ({vol_dps} dps, {int(body) // 1024} KiB)"),
        ("nginx", "nginx, same body as a file (gzip off)"),
        ("dpget", "mast /dataPartition/get"),
        ("createvol", "mast /admin/createVol (3 dps, 3 mps)")]
res = {}
for name, label in rows:
    d = json.load(open(f"{run}/{name}.json"))
    lat = d["latency_us"]
    res[name] = d["throughput"]
    print(f"| {label} | {d['throughput']:.0f} | {lat['p50'] / 1000:.2f} | {lat['p99'] / 1000:.2f} | {d['error_total']} |")
print(f"\n{nodes} simulated data nodes, {parts} data partitions seeded; "
      f"/client/partitions at {res['partitions'] / res['nginx']:.2f} x nginx.")
PY
log "raw files in $RUN"
