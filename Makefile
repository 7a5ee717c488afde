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

.PHONY: all build run test bench bench-remote bench-project sim integration proto proto-check lint check clean

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
