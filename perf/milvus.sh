#!/usr/bin/env bash
# Milvus DDL throughput and p99 beside the KV baselines the issue's goals name, in one run:
#   create+drop collection pairs and create partition vs durable kv-put, describe/has/list
#   vs linearizable kv-get; on one node and on three, with the ratios to the baseline.
# Usage: nice -n -15 perf/milvus.sh [SECONDS]   (default 5; needs cargo build --release -p mast -p mast-load)
set -euo pipefail
cd "$(dirname "$0")/.."
D=${1:-5}
MAST=target/release/mast
LOAD=target/release/mast-load
TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT

start() { # start N: nodes 1..N, one shard each, HTTP 1717N0
    local n=$1 members="" i
    for i in $(seq 1 "$n"); do members+="${members:+,}$i=127.0.0.1:172${i}0/127.0.0.1:171${i}0"; done
    for i in $(seq 1 "$n"); do
        local extra=()
        [ "$n" -gt 1 ] && extra=(--members "$members")
        taskset -c 0 "$MAST" server --id "$i" --data-dir "$TMP/n$n-$i" --http-addr "127.0.0.1:171${i}0" \
            --peer-addr "127.0.0.1:172${i}0" --shards 1 "${extra[@]}" 2>"$TMP/n$n-$i.log" &
        PIDS+=($!)
    done
    for _ in $(seq 1 100); do
        curl -sf -XPOST localhost:17110/v2/rootcoord/component_states -d '{}' | grep -q '"Healthy"' && return 0
        sleep 0.1
    done
    echo "cluster of $n did not become healthy" >&2; exit 1
}

run() { # run NODES WORKLOAD
    local out
    out=$(taskset -c 1 "$LOAD" --target 127.0.0.1:17110 -c 32 --cpus 1 --warmup 1s -d "${D}s" \
        --workload "$2" --key-prefix "m$1" --json "$TMP/r.json" 2>&1 >/dev/null || true)
    python3 - "$1" "$2" "$TMP/r.json" "$TMP/base.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[3]))
def find(d, k):
    if isinstance(d, dict):
        if k in d: return d[k]
        for v in d.values():
            x = find(v, k)
            if x is not None: return x
    return None
tp = find(r, "throughput"); p99 = find(r, "p99")
errs = find(r, "errors")
w = sys.argv[2]
base = {"kv-put": None, "kv-get": None}
try:
    base = json.load(open(sys.argv[4]))
except Exception:
    pass
if w in base:
    base[w] = tp
    json.dump(base, open(sys.argv[4], "w"))
    ratio = "1.00× (baseline)"
else:
    ref = "kv-put" if w in ("milvus-create-drop", "milvus-partition") else "kv-get"
    ratio = f"{tp / base[ref]:.2f}× {ref}" if base.get(ref) else "?"
print(f"| {sys.argv[1]} | `{w}` | {tp:,.0f} | {p99/1000:.2f} ms | {ratio} | {errs or 'none'} |")
PY
}

echo "| nodes | workload | ops/s | p99 | vs baseline | errors |"
echo "|---|---|---|---|---|---|"
for n in 1 3; do
    start "$n"
    for w in kv-put milvus-create-drop milvus-partition kv-get milvus-describe milvus-has milvus-list; do
        run "$n" "$w"
    done
    cleanup; PIDS=(); TMP=$(mktemp -d)
done
