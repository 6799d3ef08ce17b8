#!/usr/bin/env bash
# Builds a static, stripped fedrank node binary with its version stamped.
#
#   scripts/build.sh [GOOS/GOARCH[/vARM]] ...      (default: the host's)
#
#   scripts/build.sh linux/arm64        # Raspberry Pi 3/4/5, 64-bit OS
#   scripts/build.sh linux/arm/7        # 32-bit armv7 boards (GOARM=7)
#   scripts/build.sh linux/amd64
#
# Output: bin/fedrank-node-GOOS-GOARCH[v7]. CGO is off (no libc needed on the
# board), -trimpath and -s -w strip paths, symbols and DWARF, and
# -X main.version stamps the version that `node version` prints and the
# daemon announces (agent fedrank/<version>): $FEDRANK_VERSION, else
# `git describe --tags --always --dirty`, else "dev".
set -euo pipefail
cd "$(dirname "$0")/.."
version=${FEDRANK_VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then targets=("$(go env GOOS)/$(go env GOARCH)"); fi
mkdir -p bin
for t in "${targets[@]}"; do
	IFS=/ read -r goos goarch goarm <<<"$t"
	if [ -z "${goos:-}" ] || [ -z "${goarch:-}" ]; then
		echo "build.sh: target $t: want GOOS/GOARCH or linux/arm/7" >&2
		exit 2
	fi
	out="bin/fedrank-node-$goos-$goarch${goarm:+v$goarm}"
	CGO_ENABLED=0 GOOS=$goos GOARCH=$goarch GOARM=${goarm:-} \
		go build -trimpath -ldflags "-s -w -X main.version=$version" -o "$out" ./cmd/node
	echo "$out $(stat -c %s "$out") bytes, version $version"
done
