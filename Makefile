# blockvault developer tasks. The pinned tools are installed once per machine
# by .ci/tools.sh into ~/.cache/blockvault-tools/bin.
SHELL := /bin/bash
# Recipes that need the tools run with: PATH="$$(./.ci/tools.sh):$$PATH".
TOOLS := PATH="$$(./.ci/tools.sh):$$PATH"

# The rbd volume driver (Ceph) is compiled in where librbd-dev is installed
# (cgo); without it the binaries have the file driver only and say so when
# asked for --driver rbd. `make GOTAGS= build` leaves it out.
GOTAGS ?= $(if $(wildcard /usr/include/rbd/librbd.h),rbd,)

.PHONY: all build deps generate lint test test-short fuzz quickstart clean bench bench-daemons

all: build

build:
	go build -tags "$(GOTAGS)" -ldflags "-X github.com/blockvault/blockvault/pkg/daemon.Version=$$(git describe --always --dirty 2>/dev/null || echo dev)" -o bin/ ./cmd/...

# Regenerates gen/ from proto/ (committed; CI checks it is unchanged).
generate:
	rm -rf gen
	$(TOOLS) buf generate
	cp gen/openapiv2/blockvault.swagger.json services/gateway/openapi.json

lint:
	$(TOOLS) buf lint
	gofmt -l $$(git ls-files '*.go' | grep -v '^gen/') | (! grep .)
	go vet -tags "$(GOTAGS)" ./...

# Debian packages the tests talk to (installed once; needs root or sudo).
deps:
	./.ci/deps.sh

# The whole suite, against real PostgreSQL, NBD peers, XFS and S3 servers,
# then each fuzz target for a short while. The timeout only catches a hang:
# the suite takes about 8 minutes on an idle 2-core machine, and tests wait
# on events, so a loaded machine takes longer without failing.
test: deps build
	$(TOOLS) go test -tags "$(GOTAGS)" -count=1 -timeout 45m ./...
	$(MAKE) fuzz

# The fuzz targets, FUZZTIME each (longer on demand: make fuzz FUZZTIME=10m).
# Their corpora are committed under testdata/fuzz (plain `go test` runs them
# as regression cases); inputs that fail are written there too: commit
# them with the fix. After a long run, copy the interesting inputs from
# $$(go env GOCACHE)/fuzz to grow the committed corpora.
FUZZTIME ?= 15s
fuzz:
	go test -run '^$$' -fuzz '^FuzzServer$$' -fuzztime $(FUZZTIME) ./pkg/nbd/
	go test -run '^$$' -fuzz '^FuzzRequestDecoding$$' -fuzztime $(FUZZTIME) ./services/gateway/
	go test -run '^$$' -fuzz '^FuzzDecoders$$' -fuzztime $(FUZZTIME) ./pkg/engine/

test-short:
	go test -tags "$(GOTAGS)" -count=1 -short ./...

# Brings the three daemons up on the embedded defaults and shows them working
# (the first build downloads the modules and compiles: about two minutes on
# 2 cores; later runs start at once).
quickstart:
	@echo "quickstart: building bin/ (go build; the first build downloads modules and takes about two minutes)..."
	@s=$$(date +%s); $(MAKE) -s build && echo "quickstart: built in $$(( $$(date +%s) - s )) s; starting the daemons"
	./bin/blockvault quickstart $(QUICKSTART_FLAGS)

bench:
	go test -tags "$(GOTAGS)" -run '^$$' -bench . -benchtime 1x ./pkg/...

# The whole system through the real daemons (issue 9's benchmark): 8 GiB
# volumes by default, restic and borg beside it when installed; about 45
# minutes on 2 cores and 4x BENCH_SIZE free in the temp directory. Three
# deployments (BENCH_VARIANTS picks some): nbd and local on the file
# driver, rbd on a single-node Ceph cluster it starts. The report is
# written to stdout (docs/benchmarks.md holds a committed one).
BENCH_SIZE ?= 8GiB
BENCH_VARIANTS ?=
bench-daemons: build
	BLOCKVAULT_BENCH_SIZE=$(BENCH_SIZE) BLOCKVAULT_BENCH_VARIANTS="$(BENCH_VARIANTS)" go test -tags "$(GOTAGS)" -run '^$$' -bench '^BenchmarkThroughDaemons$$' -benchtime 1x -timeout 120m ./services/e2etest/

clean:
	rm -rf bin
