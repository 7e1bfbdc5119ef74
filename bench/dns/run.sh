#!/usr/bin/env bash
# Throughput and latency of the l4lb DNS server beside NSD: loopback, the same
# zone, the same run.
#
#   bench/dns/run.sh [VIPS] [SECONDS] [ROUNDS]     (defaults 10000, 10, 5)
#
# Both servers are pinned to CPU 0 (taskset; the Go server then runs with
# GOMAXPROCS=1 and one UDP socket) and dnsperf to CPU 1. Peak runs
# (dnsperf -q 500 outstanding) alternate between the servers for ROUNDS
# rounds, so that load from elsewhere on the machine hits both alike; then
# each server gets a latency run at half its median peak (-Q) with -v, from
# which p50/p99/p99.9 are computed. Queries are A queries for the path names
# of the VIPs, in order. Binds only 127.54.0.1 and 127.54.0.2, port 5353.
# Every process it starts is stopped on exit. Needs go, dnsperf, nsd, dig,
# taskset.
set -euo pipefail

VIPS=${1:-10000}
SECS=${2:-10}
ROUNDS=${3:-5}
OURS=127.54.0.1
NSD=127.54.0.2
PORT=5353
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DIR=$(mktemp -d /tmp/l4lb-dnsbench.XXXXXX)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$DIR"
}
trap cleanup EXIT

(cd "$ROOT" && go build -o "$DIR/dnsbench" ./bench/dns/dnsbench)
"$DIR/dnsbench" -vips "$VIPS" -gen "$DIR"

cat >"$DIR/nsd.conf" <<CONF
server:
	ip-address: $NSD@$PORT
	server-count: 1
	username: ""
	chroot: ""
	database: ""
	zonelistfile: "$DIR/zone.list"
	xfrdfile: "$DIR/xfrd.state"
	xfrdir: "$DIR"
	pidfile: "$DIR/nsd.pid"
	logfile: "$DIR/nsd.log"
	verbosity: 0
remote-control:
	control-enable: no
zone:
	name: l4lb.thisdcos.directory
	zonefile: "$DIR/zone"
CONF

wait_ready() { # addr
	local name
	name=$(head -1 "$DIR/queries" | cut -d' ' -f1)
	for _ in $(seq 1 100); do
		if dig +short +time=1 +tries=1 @"$1" -p "$PORT" "$name" A | grep -q .; then return 0; fi
		sleep 0.1
	done
	echo "server on $1 did not answer" >&2
	return 1
}

peak() { # label addr -> prints qps
	local out
	out=$(taskset -c 1 dnsperf -s "$2" -p "$PORT" -d "$DIR/queries" -l "$SECS" -q 500 -c 1 -T 1 2>&1)
	echo "   $1: $(awk '/Queries completed|Queries lost|Queries per second|Average Latency|Response codes/' <<<"$out" | tr -s ' ' | paste -sd ';')" >&2
	awk '/Queries per second/ {printf "%d\n", $4}' <<<"$out"
}

latency() { # label addr rate
	taskset -c 1 dnsperf -s "$2" -p "$PORT" -d "$DIR/queries" -l "$SECS" -q 500 -c 1 -T 1 -Q "$3" -v >"$DIR/lat.$1" 2>&1
	# Per-answer lines: "> NOERROR name A 0.000123" (latency in seconds, last field).
	grep '^> ' "$DIR/lat.$1" | awk '{print $NF}' | sort -g >"$DIR/lat.$1.sorted"
	local lost
	lost=$(awk '/Queries lost/ {print $3, $4}' "$DIR/lat.$1")
	awk -v label="$1" -v rate="$3" -v lost="$lost" '{a[NR]=$1} END {
		printf "%-5s at %6d qps: %d answers (lost %s), p50 %4.0f us, p99 %5.0f us, p99.9 %6.0f us\n",
			label, rate, NR, lost, a[int(NR*0.50)]*1e6, a[int(NR*0.99)]*1e6, a[int(NR*0.999)]*1e6 }' "$DIR/lat.$1.sorted"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "$(date -u +%FT%TZ) $(uname -m) $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "zone: $VIPS VIPs, $(grep -c . "$DIR/zone") records; $(wc -l <"$DIR/queries") A query names; ${SECS}s per run, $ROUNDS rounds"

taskset -c 0 "$DIR/dnsbench" -serve "$OURS:$PORT" 2>"$DIR/dnsbench.log" &
PIDS+=($!)
taskset -c 0 nsd -d -c "$DIR/nsd.conf" &
PIDS+=($!)
wait_ready "$OURS"
wait_ready "$NSD"

OURQ=() NSDQ=()
for r in $(seq 1 "$ROUNDS"); do
	echo "round $r:"
	OURQ+=("$(peak l4lb "$OURS")")
	NSDQ+=("$(peak nsd "$NSD")")
done
OM=$(printf '%s\n' "${OURQ[@]}" | median)
NM=$(printf '%s\n' "${NSDQ[@]}" | median)
echo "peak qps, one server core: l4lb ${OURQ[*]} (median $OM); nsd ${NSDQ[*]} (median $NM); l4lb/nsd $(awk -v a="$OM" -v b="$NM" 'BEGIN {printf "%.2f", a/b}')"
latency l4lb "$OURS" $((OM / 2))
latency nsd "$NSD" $((NM / 2))
