#!/usr/bin/env bash
# Issue 11's DD-event latency: time from a `collections/create` reply (the DDL acknowledged)
# to its `ddl` line on a DD watcher connected to the same node, p50/p99/max over N DDLs
# sent one at a time on a 1-node server.
# Usage: perf/milvus-dd-latency.sh [N] [SHARDS]   (defaults 500, 2; needs cargo build --release)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-500}
SHARDS=${2:-2}
MAST=${MAST:-target/release/mast}
TMP=$(mktemp -d)
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
"$MAST" server --id 1 --data-dir "$TMP/n1" --http-addr 127.0.0.1:17310 \
    --peer-addr 127.0.0.1:17320 --shards "$SHARDS" 2>"$TMP/n1.log" &
PID=$!
for _ in $(seq 1 100); do
    curl -sf -XPOST localhost:17310/v2/rootcoord/component_states -d '{}' | grep -q '"Healthy"' && break
    sleep 0.1
done
python3 - "$N" <<'PY'
import http.client, json, sys, threading, time
n = int(sys.argv[1])
host, port = "127.0.0.1", 17310
seen, lock, ready = {}, threading.Lock(), threading.Event()

def watch():
    c = http.client.HTTPConnection(host, port)
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
