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

# Release builds and the Debian package (packaging/, scripts/mkdeb.sh):
#   make build-amd64 build-arm64 build-arm   static binaries dist/multiwan-linux-ARCH
#   make deb [ARCH=amd64|arm64|arm]          dist/multiwan_VERSION-1_DEBARCH.deb (arm: armhf)
#   make deb-check                           the package through lintian
#   sudo make install [PREFIX=/usr/local] [DESTDIR=...]   the same files without dpkg
DIST     ?= dist
VERSION  ?= $(shell scripts/version.sh)
COMMIT   ?= $(shell git rev-parse HEAD 2>/dev/null)
MODIFIED ?= $(shell git status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo true)
ARCH     ?= $(shell $(GO) env GOARCH)
override ARCH := $(patsubst armhf,arm,$(ARCH))
DEBARCH   = $(if $(filter arm,$(ARCH)),armhf,$(ARCH))
DEB       = $(DIST)/multiwan_$(VERSION)-1_$(DEBARCH).deb
RELEASE_LDFLAGS = -s -w -X main.buildVersion=$(VERSION) -X main.buildCommit=$(COMMIT) -X main.buildModified=$(MODIFIED)
PREFIX   ?= /usr/local
DESTDIR  ?=
SYSCONFDIR     ?= /etc
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
MANDIR         ?= $(PREFIX)/share/man
BASHCOMPDIR    ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR     ?= $(PREFIX)/share/zsh/site-functions
DOCDIR         ?= $(PREFIX)/share/doc/multiwan

.PHONY: build-amd64 build-arm64 build-arm deb deb-check install clean-dist

# Static (CGO_ENABLED=0), without local paths (-trimpath), stripped, with
# the version and commit that `multiwan version` prints.
build-amd64 build-arm64 build-arm: build-%:
	CGO_ENABLED=0 GOOS=linux GOARCH=$* $(if $(filter arm,$*),GOARM=7) \
		$(GO) build -trimpath -ldflags '$(RELEASE_LDFLAGS)' -o $(DIST)/multiwan-linux-$* ./cmd/multiwan

deb: build-$(ARCH)
	scripts/mkdeb.sh $(DIST)/multiwan-linux-$(ARCH) $(DEBARCH) $(VERSION) $(DIST)

deb-check: deb
	lintian --fail-on error --display-info $(DEB)

install: build-$(ARCH)
	install -D -m 0755 $(DIST)/multiwan-linux-$(ARCH) $(DESTDIR)$(PREFIX)/sbin/multiwan
	install -d -m 0755 $(DESTDIR)$(SYSTEMDUNITDIR)
	sed -e 's|/usr/sbin/multiwan|$(PREFIX)/sbin/multiwan|' -e 's|/etc/multiwan/|$(SYSCONFDIR)/multiwan/|' \
		packaging/multiwan.service >$(DESTDIR)$(SYSTEMDUNITDIR)/multiwan.service
	chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/multiwan.service
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/multiwan/multiwan.yaml ]; then \
		echo "install: keeping $(DESTDIR)$(SYSCONFDIR)/multiwan/multiwan.yaml"; \
	else \
		echo "install -D -m 0644 packaging/multiwan.yaml $(DESTDIR)$(SYSCONFDIR)/multiwan/multiwan.yaml"; \
		install -D -m 0644 packaging/multiwan.yaml $(DESTDIR)$(SYSCONFDIR)/multiwan/multiwan.yaml; \
	fi
	install -D -m 0644 packaging/man/multiwan.8 $(DESTDIR)$(MANDIR)/man8/multiwan.8
	install -D -m 0644 packaging/man/multiwan.yaml.5 $(DESTDIR)$(MANDIR)/man5/multiwan.yaml.5
	install -D -m 0644 packaging/completion/multiwan.bash $(DESTDIR)$(BASHCOMPDIR)/multiwan
	install -D -m 0644 packaging/completion/_multiwan $(DESTDIR)$(ZSHCOMPDIR)/_multiwan
	install -D -m 0755 packaging/hooks/notify $(DESTDIR)$(DOCDIR)/examples/hooks.d/notify
	install -D -m 0755 packaging/hooks/mwan3-user $(DESTDIR)$(DOCDIR)/examples/hooks.d/mwan3-user
	install -m 0644 examples/*.yaml $(DESTDIR)$(DOCDIR)/examples/
	@echo "installed; next: systemctl daemon-reload, then see man multiwan (SYSTEMD)"

clean-dist:
	rm -rf $(DIST)
