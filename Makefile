# canopy — build, run, test.
#
#   make run          a local tree on loopback (root + supernode + leaves), embedded TSDB
#   make test         unit and end-to-end tests (race detector on)
#   make sim          the tree simulation with 100,000 nodes
#   make integration  installs and starts real services (node_exporter, Prometheus, VictoriaMetrics; root only), runs the integration suite
#   make bench-remote remote-write throughput into the real Prometheus and VictoriaMetrics
#   make proto        regenerates protobuf, gRPC, gateway and OpenAPI code offline
#   make check        proto freshness, buf lint, gofmt, go vet

GO      ?= go
BIN     := bin
PLUGINS := $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc $(BIN)/protoc-gen-grpc-gateway $(BIN)/protoc-gen-openapiv2

.PHONY: all build run test bench bench-remote bench-project bench-run bench-direct bench-footprint sim integration proto proto-check lint check clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

run: build
	./scripts/local-tree.sh

test:
	$(GO) test -race -count=1 ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./batch/ ./root/ ./root/remote/ ./reader/ ./leaf/ ./filter/ ./supernode/ ./bench/

# The Astral paper's sink-load projection: its two tables (and sink
# servers, samples and bytes), and its three graphs as SVG.
bench-project:
	mkdir -p bench/results/projection
	$(GO) run ./cmd/canopy-bench project --plots bench/results/projection | tee bench/results/projection/tables.txt

# The live tree beside the projection: 10,000 emulated leaves in two- and
# three-level trees (supernodes of 100) at windows of 5 s and 10 s. Results
# (text and JSON) go to bench/results/run.
RUN_LEAVES ?= 10000
bench-run: build
	mkdir -p bench/results/run
	for levels in 2 3; do for w in 5s 10s; do \
		$(BIN)/canopy-bench run --leaves $(RUN_LEAVES) --levels $$levels --window $$w --quiet \
			--out bench/results/run/tree-$(RUN_LEAVES)-$${levels}l-$$w.json | tee bench/results/run/tree-$(RUN_LEAVES)-$${levels}l-$$w.txt || exit 1; \
	done; done

# The centralised baseline at the same scale: every emulated leaf
# remote-writes every sample to a real VictoriaMetrics (installed and
# started like the integration suite).
DIRECT_LEAVES ?= 10000
bench-direct: build
	mkdir -p bench/results/run
	CANOPY_IT_COMMAND='bin/canopy-bench run --direct "$$CANOPY_IT_VICTORIAMETRICS_URL/api/v1/write" --sink-pid "$$CANOPY_IT_VICTORIAMETRICS_PID" --leaves $(DIRECT_LEAVES) --window 5s --quiet --out bench/results/run/direct-$(DIRECT_LEAVES)-5s.json | tee bench/results/run/direct-$(DIRECT_LEAVES)-5s.txt' \
		./scripts/integration.sh

# The leaf's footprint beside vmagent and Prometheus in agent mode (Debian
# packages): the same real node_exporter scraped every 2 s and forwarded
# to the same VictoriaMetrics, one agent at a time.
bench-footprint: build
	mkdir -p bench/results
	CANOPY_IT_COMMAND='bin/canopy-bench footprint --node-exporter "$$CANOPY_IT_NODE_EXPORTER_URL" --sink "$$CANOPY_IT_VICTORIAMETRICS_URL/api/v1/write" --query "$$CANOPY_IT_VICTORIAMETRICS_URL" --out bench/results/footprint.json | tee bench/results/footprint.txt' \
		./scripts/integration.sh

# The tree simulation at full size (100,000 nodes; `make test` runs a
# smaller one under the race detector).
sim:
	$(GO) test -count=1 -run 'TestSimulation$$' -v -timeout 60m ./tree/

integration: build
	./scripts/integration.sh

# Remote write into the real Prometheus and VictoriaMetrics: sustained
# samples/s and bytes per sample (installs and starts them like integration).
bench-remote: build
	CANOPY_IT_BENCH=1 CANOPY_IT_GO_TEST_ARGS="-count=1 -run ^$$ -bench BenchmarkRealRemoteWrite -benchtime 2x" ./scripts/integration.sh

# Tools are built from pinned modules under tools/; nothing is fetched from
# a remote buf registry.
$(BIN)/buf: tools/buf/go.mod tools/buf/go.sum
	cd tools/buf && $(GO) build -o ../../$(BIN)/ github.com/bufbuild/buf/cmd/buf

$(PLUGINS) &: tools/plugins/go.mod tools/plugins/go.sum
	cd tools/plugins && $(GO) build -o ../../$(BIN)/ \
		google.golang.org/protobuf/cmd/protoc-gen-go \
		google.golang.org/grpc/cmd/protoc-gen-go-grpc \
		github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway \
		github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2

proto: $(BIN)/buf $(PLUGINS)
	$(BIN)/buf format -w proto
	$(BIN)/buf lint
	$(BIN)/buf generate

# Fails when committed generated code differs from what `make proto` makes
# (new files included).
proto-check: proto
	git add -N proto
	git diff --exit-code -- proto

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

check: proto-check lint

clean:
	rm -rf $(BIN) data
