#!/usr/bin/env bash
# Installs the pinned developer tools into $BLOCKVAULT_TOOLS (default
# ~/.cache/blockvault-tools), once per machine: a tool whose stamp for its
# pinned version exists is not installed again. Prints the directory to put on
# PATH. Go tools come from the Go module proxy, buf from the npm registry (its
# package ships the release binary: seconds instead of minutes of building).
set -euo pipefail

TOOLS=${BLOCKVAULT_TOOLS:-$HOME/.cache/blockvault-tools}
BIN=$TOOLS/bin
STAMPS=$TOOLS/stamps
mkdir -p "$BIN" "$STAMPS"

BUF_VERSION=1.75.0
GO_TOOLS=(
  "protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12"
  "protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2"
  "protoc-gen-grpc-gateway github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway@v2.33.0"
  "protoc-gen-openapiv2 github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2@v2.33.0"
  "grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4"
  "versitygw github.com/versity/versitygw/cmd/versitygw@v1.8.0"
)

for entry in "${GO_TOOLS[@]}"; do
  name=${entry%% *}
  pkg=${entry#* }
  stamp=$STAMPS/$name@${pkg##*@}
  if [[ -f $stamp && -x $BIN/$name ]]; then continue; fi
  echo "tools: installing $pkg" >&2
  (cd /tmp && GOBIN=$BIN GOFLAGS=-mod=mod go install "$pkg") >&2
  touch "$stamp"
done

stamp=$STAMPS/buf@$BUF_VERSION
if [[ ! -f $stamp || ! -x $BIN/buf ]]; then
  echo "tools: installing buf $BUF_VERSION (npm @bufbuild/buf)" >&2
  rm -rf "$TOOLS/buf"
  npm install --silent --no-audit --no-fund --prefix "$TOOLS/buf" "@bufbuild/buf@$BUF_VERSION" >&2
  ln -sf "$TOOLS/buf/node_modules/.bin/buf" "$BIN/buf"
  "$BIN/buf" --version >&2
  touch "$stamp"
fi

echo "$BIN"
