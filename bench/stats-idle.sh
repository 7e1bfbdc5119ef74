#!/bin/bash
# stats-idle.sh BIN: the idle CPU of one agent holding 3,000 VIPs x 10
# backends (--dataplane none, backends from --services-dir: 100 files of
# 300), with and without the stats page, twice each way, alternating. The
# agent listens on 127.78.0.1 only; each measurement waits until the table
# holds the 3,000 VIPs (at most 60 s), then 20 s, then reads utime+stime
# from /proc/PID/stat over 30 s. Run it under the heavy lock on a shared
# machine: flock /tmp/l4lb/heavy.lock bench/stats-idle.sh bin/l4lb
set -euo pipefail
BIN=$(realpath "${1:?usage: stats-idle.sh path/to/l4lb}")
work=$(mktemp -d /tmp/l4lb-stats-idle.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/svc"
python3 - "$work/svc" <<'PY'
import json, sys
e = [{"vip": "/svc/app%d:80" % i, "backend": "10.%d.%d.%d:8080" % (k >> 16 & 255, k >> 8 & 255, k & 255)}
     for i in range(3000) for j in range(10) for k in [i * 10 + j + 1]]
for i in range(0, len(e), 300):
    json.dump(e[i:i + 300], open("%s/part%03d.json" % (sys.argv[1], i // 300), "w"))
PY
measure() {
	rm -rf "$work/state"
	"$BIN" agent --node-name n1 --bind 127.78.0.1 --api-listen 127.78.0.1:62080 --dns-listen 127.78.0.1:5354 \
		--dns-forward=false --dataplane none --state-dir "$work/state" --services-dir "$work/svc" --log-level warn "$@" \
		>"$work/agent.log" 2>&1 &
	local pid=$! n=""
	for _ in $(seq 1 120); do
		n=$(curl -s 127.78.0.1:62080/metrics 2>/dev/null | awk '/^l4lb_vips\{state="desired"\}/ {print $2}' || true)
		[ "$n" = "3000" ] && break
		sleep 0.5
	done
	sleep 20
	local t0 t1
	t0=$(awk '{print $14+$15}' /proc/$pid/stat)
	sleep 30
	t1=$(awk '{print $14+$15}' /proc/$pid/stat)
	printf '%-40s VIPs %s, idle CPU %s %% of a core, RSS %s\n' "${*:-without the stats page}" "$n" \
		"$(echo "scale=2; ($t1-$t0)/30" | bc)" "$(awk '/VmRSS/ {print $2, $3}' /proc/$pid/status)"
	kill $pid
	wait $pid 2>/dev/null || true
}
for _ in 1 2; do
	measure
	measure --stats-listen 127.78.0.1:9090
done
uptime
