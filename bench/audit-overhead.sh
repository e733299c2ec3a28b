#!/usr/bin/env bash
# audit-overhead.sh measures HTTP encrypt throughput of a Coffer dev server
# with the file audit sink (fsync per group commit) and with audit disabled,
# in the same run, and prints the ratio (target >= 0.8).
#
#   coffer bench --op encrypt --payload-size 32 -c $CONCURRENCY -d $DURATION --json --insecure-skip-verify
#
# Environment: DURATION (10s), WARMUP (1s), CONCURRENCY (32), ROUNDS (2,
# alternating on/off to cancel drift), COFFER_BIN (prebuilt binary),
# AUDIT_DIR (where the audited server writes its log; default: the dev dir).
set -euo pipefail
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-1s}
CONCURRENCY=${CONCURRENCY:-32}
ROUNDS=${ROUNDS:-2}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/coffer-audit-bench.XXXXXX")
pid=""
cleanup() { [[ -n $pid ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
bin=${COFFER_BIN:-}
if [[ -z $bin ]]; then
	bin=$work/coffer
	(cd "$repo" && go build -o "$bin" ./cmd/coffer)
fi
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

run_one() { # $1 = on|off
	local dir=$work/$1-$RANDOM port tok=bench-root-token cfg=$work/cfg-$1.yaml
	mkdir -p "$dir"
	if [[ $1 == off ]]; then
		printf 'audit:\n  disabled: true\n  alerts_disabled: true\n' >"$cfg"
	else
		printf 'audit:\n  dir: %s\n' "${AUDIT_DIR:-$dir/audit}" >"$cfg"
	fi
	port=$(freeport)
	"$bin" server --dev --dev-dir "$dir" --config "$cfg" --listen "127.0.0.1:$port" --dev-root-token "$tok" --tls-auto >"$dir/log" 2>&1 &
	pid=$!
	for _ in $(seq 100); do
		grep -q "listening" "$dir/log" 2>/dev/null && break
		sleep 0.1
	done
	COFFER_ADDR=https://127.0.0.1:$port COFFER_TOKEN=$tok "$bin" bench --op encrypt --payload-size 32 \
		-c "$CONCURRENCY" -d "$DURATION" --warmup "$WARMUP" --json --insecure-skip-verify >"$work/res-$1.json"
	kill "$pid"
	wait "$pid" 2>/dev/null || true
	pid=""
	python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ops_per_sec"])' "$work/res-$1.json"
}

on_total=0
off_total=0
for r in $(seq "$ROUNDS"); do
	off=$(run_one off)
	on=$(run_one on)
	echo "round $r: audit off ${off} ops/s, audit on (file, fsync) ${on} ops/s"
	on_total=$(python3 -c "print($on_total+$on)")
	off_total=$(python3 -c "print($off_total+$off)")
done
python3 -c "on=$on_total/$ROUNDS; off=$off_total/$ROUNDS; r=on/off; print(f'mean: off {off:.0f} ops/s, on {on:.0f} ops/s, ratio {r:.3f} (target >= 0.8): ' + ('met' if r >= 0.8 else 'MISSED'))"
