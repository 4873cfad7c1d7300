# The two commands: `make run` and `make test`.
GO ?= go
CONFIG ?= examples/local.toml

.PHONY: run test build vet fuzz bench

# What `portico version` and the start log line print.
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)

# Portico on an example config with the embedded file storage and its own
# local CA, on unprivileged ports. Built, then run as a binary: Ctrl-C stops
# it cleanly (it drains and exits 0; `go run` exited 1, which make reported
# as "Error 1"). The command has no shell syntax, so make runs it directly
# and says nothing of the Ctrl-C it gets too.
run: build
	./bin/portico run -config $(CONFIG) -log-format console

# Every test, integration included: needs redis-server and knotd on PATH, and
# in CI chromium and python3-yaml (README "Building and testing"; .ci/run
# installs them).
test: vet
	$(GO) test -race -count=1 -timeout 30m ./...
	# allocation counts, which the race detector's sync.Pool skews
	$(GO) test -count=1 -run 'Allocat' ./proxy/ ./proxy/route/ ./proxy/accesslog/

# staticcheck (honnef.co/go/tools), pinned: a newer release may add checks.
# v0.8.2 (2026.2.2) knows Go 1.26. `go run pkg@version` fetches it once
# through the module proxy, checksummed, without touching go.mod.
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o bin/portico ./cmd/portico
