#!/usr/bin/env bash
# Integration suite: installs the real services from Debian packages (as
# root), starts them on 127.0.0.1, runs the tests tagged `integration`
# against them, and stops them. With CI=true a service that cannot be
# installed or started fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

need_install=()
command -v prometheus-node-exporter >/dev/null || need_install+=(prometheus-node-exporter)
command -v prometheus >/dev/null || need_install+=(prometheus)
command -v victoria-metrics >/dev/null || need_install+=(victoria-metrics)
if [ ${#need_install[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "integration: need root to apt-get install ${need_install[*]}" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_install[@]}"
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null \
  || echo $((20000 + RANDOM % 20000)); }

wait_http() { # url name
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/${1##*:}") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "integration: $2 did not start" >&2
  exit 1
}

ne_port=$(free_port)
prometheus-node-exporter --web.listen-address="127.0.0.1:$ne_port" >"$work/node_exporter.log" 2>&1 &
pids+=($!)
wait_http "127.0.0.1:$ne_port" node_exporter
export CANOPY_IT_NODE_EXPORTER_URL="http://127.0.0.1:$ne_port/metrics"

# Prometheus as a remote-write receiver: no scraping, its own TSDB.
prom_port=$(free_port)
printf 'global:\n  scrape_interval: 1m\n' >"$work/prometheus.yml"
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/prometheus" \
  --web.listen-address="127.0.0.1:$prom_port" --web.enable-remote-write-receiver >"$work/prometheus.log" 2>&1 &
pids+=($!)
wait_http "127.0.0.1:$prom_port" prometheus
export CANOPY_IT_PROMETHEUS_URL="http://127.0.0.1:$prom_port"

vm_port=$(free_port)
victoria-metrics -storageDataPath="$work/victoria-metrics" -httpListenAddr="127.0.0.1:$vm_port" \
  -search.latencyOffset=0s >"$work/victoria-metrics.log" 2>&1 &
pids+=($!)
wait_http "127.0.0.1:$vm_port" victoria-metrics
export CANOPY_IT_VICTORIAMETRICS_URL="http://127.0.0.1:$vm_port"
export CANOPY_IT_VICTORIAMETRICS_PID=${pids[-1]}

# CANOPY_IT_COMMAND runs a command against the services instead of the
# tests (make bench-footprint, bench-direct); CANOPY_IT_GO_TEST_ARGS
# replaces the test selection (make bench-remote).
if [ -n "${CANOPY_IT_COMMAND:-}" ]; then
  bash -c "$CANOPY_IT_COMMAND"
  exit $?
fi
read -r -a args <<<"${CANOPY_IT_GO_TEST_ARGS:--race -count=1 -run TestReal -v}"
"$GO" test -tags integration "${args[@]}" ./internal/e2e/ 2>&1 | grep -v '^time='
rc=${PIPESTATUS[0]}
# CANOPY_IT_BENCH=1 also runs the bench harness against the same sinks.
if [ "$rc" -eq 0 ] && [ "${CANOPY_IT_BENCH:-}" = 1 ]; then
  bin/canopy-bench remote-write --url "$CANOPY_IT_PROMETHEUS_URL/api/v1/write" --url "$CANOPY_IT_VICTORIAMETRICS_URL/api/v1/write"
  rc=$?
fi
exit "$rc"
