# The two commands: `make run` and `make test`.
GO ?= go
CONFIG ?= examples/local.toml

.PHONY: run test build vet fuzz bench

# Portico on an example config with the embedded file storage and its own
# local CA, on unprivileged ports.
run:
	$(GO) run ./cmd/portico run -config $(CONFIG) -log-format console

# Every test, integration included (needs redis-server on PATH; .ci/run installs it).
test: vet
	$(GO) test -race -count=1 -timeout 30m ./...

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet ./...

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/portico ./cmd/portico
