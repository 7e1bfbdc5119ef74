#!/usr/bin/env bash
# The control plane at scale, with real agents on loopback (see README.md).
#
#   bench/scale/run.sh [FLAGS]          e.g. -quick, -scenario a -backends 2000
#   L4LB_BIN=/path/to/l4lb bench/scale/run.sh [FLAGS]
#
# Builds the tool (./bench/scale) and, unless L4LB_BIN or -l4lb names a
# binary, l4lb itself (./cmd/l4lb) from this tree, into a temporary
# directory removed at exit; then runs the tool with FLAGS. The tool starts
# `l4lb agent --dataplane none` processes on 127.77.0.1, .2, ... (unprivileged
# ports: API 62080, DNS 5354, gossip 7946; see -ip-prefix and the -*-port
# flags) and stops every one of them when it exits.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DIR=$(mktemp -d /tmp/l4lb-scale-build.XXXXXX)
trap 'rm -rf "$DIR"' EXIT

(cd "$ROOT" && go build -o "$DIR/scale" ./bench/scale)
BIN=${L4LB_BIN:-}
for a in "$@"; do
	case $a in -l4lb | --l4lb | -l4lb=* | --l4lb=*) BIN=given ;; esac
done
ARGS=()
if [ -z "$BIN" ]; then
	(cd "$ROOT" && go build -o "$DIR/l4lb" ./cmd/l4lb)
	ARGS=(-l4lb "$DIR/l4lb")
elif [ "$BIN" != given ]; then
	ARGS=(-l4lb "$BIN")
fi
"$DIR/scale" "${ARGS[@]}" "$@"
