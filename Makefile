# multiwan — see README.md.
#   sudo make demo    a live failover in a namespace lab
#   sudo make test    install test dependencies, build, unit + end-to-end tests
#   sudo make bench   benchmarks (tables with their baselines)
#   make fuzz         every fuzz target for FUZZTIME (default 30s) each

GO      ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
BIN     := bin
GOFLAGS ?=
export GOTOOLCHAIN := local

.PHONY: all build deps test unit race e2e vet demo bench fuzz clean

all: build

build:
	$(GO) build $(GOFLAGS) -o $(BIN)/multiwan ./cmd/multiwan
	$(GO) build $(GOFLAGS) -o $(BIN)/multiwan-demo ./cmd/multiwan-demo

# Debian packages the end-to-end suite drives: nft, ip, conntrack, curl,
# iperf3, dnsmasq, dhclient, socat. Installed only when missing.
deps:
	@scripts/deps.sh

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { gofmt -l .; echo "gofmt needed"; exit 1; }

unit:
	MULTIWAN_SKIP_E2E=1 $(GO) test -count=1 ./internal/... ./cmd/...

# The packages that run goroutines against each other, under the race
# detector: the daemon's loop, the control API, hooks, config reloads.
RACE_PKGS := ./internal/daemon/ ./internal/control/ ./internal/hooks/ ./internal/config/ ./internal/links/ ./internal/kernel/
race:
	$(GO) test -race -count=1 -timeout 6m $(RACE_PKGS)

# The end-to-end suite must run as root: it fails (never skips) otherwise.
e2e: build
	$(GO) test -count=1 -timeout 12m -v ./e2e/ 2>&1 | scripts/summarize.sh e2e

test: deps build vet race
	$(GO) test -count=1 -timeout 12m -v ./... 2>&1 | scripts/summarize.sh all

demo: deps build
	$(BIN)/multiwan-demo --multiwan $(BIN)/multiwan

# Every fuzz target for FUZZTIME each (default 30s): make fuzz FUZZTIME=10m
fuzz:
	GO=$(GO) scripts/fuzz.sh

bench: deps build
	$(GO) run ./bench

clean:
	rm -rf $(BIN)
