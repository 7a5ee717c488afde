#!/usr/bin/env bash
# Runs a local canopy tree on loopback: one root (embedded TSDB), one
# supernode and four leaves, each with the built-in machine collector and
# one scraping its own agent's /metrics as an application target. No
# external service. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}
DATA=${DATA:-data/local}
LEAVES=${LEAVES:-4}
mkdir -p "$DATA"
pids=()
cleanup() {
  trap - INT TERM EXIT
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

"$BIN/canopy-root" --config examples/root.yaml --data-dir "$DATA/root" 2>"$DATA/root.log" &
pids+=($!)
"$BIN/canopy-node" --config examples/supernode.yaml 2>"$DATA/supernode.log" &
pids+=($!)
sleep 0.5
for i in $(seq 1 "$LEAVES"); do
  dc=eu-1; [ $((i % 2)) -eq 0 ] && dc=eu-2
  CANOPY_NODE_ID="leaf$i" CANOPY_NODE_DC="$dc" CANOPY_NODE_LISTEN="127.0.0.1:$((9180 + i))" \
    "$BIN/canopy-node" --config examples/leaf.yaml 2>"$DATA/leaf$i.log" &
  pids+=($!)
done
# An application registered at run time, as a scheduler would: leaf1
# scrapes its own agent's metrics as app "canopy-agent" (needs curl).
command -v curl >/dev/null || echo "curl not found: skipping the run-time app target" >&2
command -v curl >/dev/null && for _ in $(seq 1 50); do
  if curl -fsS -o /dev/null -X POST http://127.0.0.1:9181/api/v1/targets \
      -d '{"name":"agent","url":"http://127.0.0.1:9181/metrics","level":"app","app":"canopy-agent"}' 2>/dev/null; then
    break
  fi
  sleep 0.1
done

cat <<MSG
canopy local tree is running: root, supernode sn1, leaves leaf1..leaf$LEAVES (logs in $DATA/).
Data reaches the root after two 5 s windows. Then try:
  curl http://127.0.0.1:8080/api/metrics-api/nodes/leaf1/latest
  curl "http://127.0.0.1:8080/api/metrics-api/nodes/leaf1/\$(( \$(date +%s) - 60 ))"
  curl http://127.0.0.1:8080/api/metrics-api/apps/canopy-agent/\$(( \$(date +%s) - 60 ))
  $BIN/canopyctl latest node leaf2
  $BIN/canopyctl range node leaf2 \$(( \$(date +%s) - 60 )) now
  $BIN/canopyctl tree
  curl http://127.0.0.1:8080/metrics        # the root's own metrics
Press Ctrl-C to stop.
MSG
wait
