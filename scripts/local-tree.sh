#!/usr/bin/env bash
# Runs a local canopy tree on loopback that forms itself: one root
# (embedded TSDB, at most 2 children) and six nodes that know only the
# root's address. They probe, join, and the full root elects supernodes
# among them. Each node runs the built-in machine collector; node1 also
# scrapes its own agent's metrics as an application registered at run
# time. No external service. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}
DATA=${DATA:-data/local}
NODES=${NODES:-6}
mkdir -p "$DATA"
pids=()
cleanup() {
  trap - INT TERM EXIT
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

CANOPY_ROOT_CHILD_LIMIT=2 "$BIN/canopy-root" --config examples/root.yaml --data-dir "$DATA/root" 2>"$DATA/root.log" &
pids+=($!)
sleep 0.5
for i in $(seq 1 "$NODES"); do
  dc=eu-1; [ $((i % 2)) -eq 0 ] && dc=eu-2
  CANOPY_NODE_ID="node$i" CANOPY_NODE_DC="$dc" CANOPY_NODE_LISTEN="127.0.0.1:$((9180 + i))" \
  CANOPY_NODE_TREE_LISTEN="127.0.0.1:$((7070 + i))" CANOPY_NODE_STATE_DIR="$DATA/node$i" \
  CANOPY_TREE_CHILD_LIMIT=3 CANOPY_TREE_PROMOTE_MIN_UPTIME=1m \
    "$BIN/canopy-node" --config examples/node.yaml 2>"$DATA/node$i.log" &
  pids+=($!)
  sleep 0.3
done
# An application registered at run time, as a scheduler would: node1
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
canopy local tree is running: a root and node1..node$NODES forming the tree themselves (logs in $DATA/).
Data reaches the root within a few 5 s windows. Then try:
  $BIN/canopyctl tree
  curl http://127.0.0.1:8080/api/metrics-api/nodes/node1/latest
  curl "http://127.0.0.1:8080/api/metrics-api/nodes/node1/\$(( \$(date +%s) - 60 ))"
  curl http://127.0.0.1:8080/api/metrics-api/apps/canopy-agent/\$(( \$(date +%s) - 60 ))
  $BIN/canopyctl latest node node2
  $BIN/canopyctl range node node2 \$(( \$(date +%s) - 60 )) now
  curl http://127.0.0.1:8080/metrics        # the root's own metrics
Press Ctrl-C to stop.
MSG
wait
