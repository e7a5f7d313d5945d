# blockvault developer tasks. The pinned tools are installed once per machine
# by .ci/tools.sh into ~/.cache/blockvault-tools/bin.
SHELL := /bin/bash
TOOLS_BIN := $(shell ./.ci/tools.sh)
export PATH := $(TOOLS_BIN):$(PATH)

.PHONY: all build generate lint test test-short quickstart clean bench

all: build

build:
	go build -o bin/ ./cmd/...

# Regenerates gen/ from proto/ (committed; CI checks it is unchanged).
generate:
	rm -rf gen
	buf generate
	cp gen/openapiv2/blockvault.swagger.json services/gateway/openapi.json

lint:
	buf lint
	gofmt -l $$(git ls-files '*.go' | grep -v '^gen/') | (! grep .)
	go vet ./...

# The whole suite: needs root, PostgreSQL binaries, xfsprogs, libnbd-bin,
# nbdkit, qemu-utils (see .ci/run for what it installs).
test:
	go test -count=1 -timeout 15m ./...

test-short:
	go test -count=1 -short ./...

# Brings the three daemons up on the embedded defaults and shows them working.
quickstart: build
	./scripts/quickstart.sh

bench:
	go test -run '^$$' -bench . -benchtime 1x ./pkg/...

clean:
	rm -rf bin
