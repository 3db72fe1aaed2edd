# NOPS Kernel. `make run` starts a kernel with embedded defaults; `make test` runs every test.
GO        ?= go
BINDIR    ?= bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
COMMIT    ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS   := -X github.com/nops-kernel/nops/internal/buildinfo.version=$(VERSION) -X github.com/nops-kernel/nops/internal/buildinfo.commit=$(COMMIT)
TESTFLAGS ?=
# Extra `go build` flags, e.g. BUILDFLAGS=-trimpath for a release binary without local paths.
BUILDFLAGS ?=

.PHONY: run build test generate check-generated lint fmt alerts-test api-baseline release-notes

run: build
	./$(BINDIR)/nops server

# Writes bin/nops and bin/echo-agent (the quick start's Go agent) in one `go build`: the agent's
# few packages of its own then compile while the kernel's last packages and link keep one of two
# CPUs busy, at no cost in wall time. No -trimpath by default: it changes the cache key of every
# package, so a later `go run ./examples/echo-agent` or `go build` without it compiled all ~380
# packages of the agent again (standard library included: about 50 CPU-seconds) instead of only
# linking. The first build compiles ~750 packages, about 250 CPU-seconds: docs/benchmarks.md,
# "Cold build and the README quick start".
build:
	$(GO) build $(BUILDFLAGS) -ldflags '$(LDFLAGS)' -o $(BINDIR)/ ./cmd/nops ./examples/echo-agent

# The DoS test compares a client's p99 latency with and without an attack on the same server:
# it runs alone, after the rest, so that other packages' tests (run in parallel) do not add
# their own bursts to the comparison, and without the race detector, which slows the server's
# work for the attack several times over (the rest of internal/netguard runs with -race above).
DOS_TEST := TestDoSWellBehavedClientIsNotStarved

# The end-to-end package takes 6-7 minutes on 2 CPUs: the default 10-minute timeout per package
# would fail it on a busy machine, 30 minutes is a hang, not slowness.
test:
	$(GO) test -race -count=1 -timeout 30m $(TESTFLAGS) -skip '^$(DOS_TEST)$$' ./...
	$(GO) test -count=1 $(TESTFLAGS) -run '^$(DOS_TEST)$$' ./internal/netguard

generate:
	$(GO) generate ./...

# Fails when the generated code differs from what `make generate` writes.
check-generated: generate
	@git diff --exit-code -- '*.gen.go' || (echo 'generated code is stale: run make generate and commit' >&2; exit 1)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

# Makes the current API document the baseline the evolution gate compares with (api/compat_test.go):
# run it when a version is released, never to silence the gate.
api-baseline:
	cp api/kernel.yaml api/baseline/kernel.yaml

# Prints the release notes as Markdown: the API changes between api/baseline/kernel.yaml and
# api/kernel.yaml (oasdiff), and the commits since the last tag (without one, since the baseline
# last changed) grouped by issue and area. Run it before `make api-baseline`; SINCE=<rev> overrides
# where the commits start.
SINCE ?=
release-notes:
	@$(GO) run ./cmd/release-notes $(if $(SINCE),-since $(SINCE))

# Checks and unit-tests the Prometheus alert and recording rules (promtool) and the Grafana
# dashboard's queries; installs Debian's prometheus package when promtool is missing.
alerts-test:
	bash scripts/promtool-test.sh
