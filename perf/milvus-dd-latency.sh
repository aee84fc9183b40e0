#!/usr/bin/env bash
# Issue 11's DD-event latency: time from a `collections/create` reply (the DDL acknowledged)
# to its `ddl` line on a DD watcher, p50/p99/max over N DDLs sent one at a time. With one
# node the watcher is on the node that acknowledges; with three, DDLs go to node 1 and the
# watcher is on node 3 (it sees them when node 3's replicas apply them).
# Usage: perf/milvus-dd-latency.sh [N] [SHARDS] [NODES]   (defaults 500, 2, 1; needs cargo build --release)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-500}
SHARDS=${2:-2}
NODES=${3:-1}
MAST=${MAST:-target/release/mast}
TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
members=""
for i in $(seq 1 "$NODES"); do members+="${members:+,}$i=127.0.0.1:173${i}0/127.0.0.1:174${i}0"; done
for i in $(seq 1 "$NODES"); do
    extra=()
    [ "$NODES" -gt 1 ] && extra=(--members "$members")
    "$MAST" server --id "$i" --data-dir "$TMP/n$i" --http-addr "127.0.0.1:174${i}0" \
        --peer-addr "127.0.0.1:173${i}0" --shards "$SHARDS" "${extra[@]}" 2>"$TMP/n$i.log" &
    PIDS+=($!)
done
for port in 17410 "174${NODES}0"; do
    for _ in $(seq 1 100); do
        curl -sf -XPOST "localhost:$port/v2/rootcoord/component_states" -d '{}' | grep -q '"Healthy"' && break
        sleep 0.1
    done
done
python3 - "$N" "$NODES" <<'PY'
import http.client, json, sys, threading, time
n = int(sys.argv[1])
host, port = "127.0.0.1", 17410
watch_port = 17400 + 10 * int(sys.argv[2])
seen, lock, ready = {}, threading.Lock(), threading.Event()

def watch():
    c = http.client.HTTPConnection(host, watch_port)
    c.request("POST", "/v2/rootcoord/dd/watch", body="{}")
    r = c.getresponse()
    while True:
        line = r.readline()
        if not line:
            return
        t = time.monotonic()
        v = json.loads(line)
        if v["type"] == "tick":
            ready.set()
        elif v["type"] == "ddl":
            with lock:
                for e in v["events"]:
                    seen.setdefault(e.get("collectionName"), t)

threading.Thread(target=watch, daemon=True).start()
ready.wait(10)
c = http.client.HTTPConnection(host, port)
acked = {}
run = f"l{int(time.time())}"
for i in range(n):
    name = f"{run}_{i}"
    c.request("POST", "/v2/vectordb/collections/create",
              body=json.dumps({"collectionName": name, "dimension": 8}))
    body = json.loads(c.getresponse().read())
    acked[name] = time.monotonic()
    assert body.get("code") == 0, body
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    with lock:
        if all(k in seen for k in acked):
            break
    time.sleep(0.01)
with lock:
    lat = sorted((seen[k] - t) * 1000 for k, t in acked.items() if k in seen)
missing = n - len(lat)
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
print(f"DDLs {n}, seen {len(lat)} (missing {missing}): ack->event p50 {q(0.5):.2f} ms, "
      f"p99 {q(0.99):.2f} ms, max {lat[-1]:.2f} ms")
PY
