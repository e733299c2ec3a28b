#!/usr/bin/env bash
# ha-throughput.sh measures Coffer on etcd against Coffer on bbolt, in the
# same run, with real processes: a 3-member etcd cluster from the etcd binary
# and 3 `coffer server` replicas on it, plus one replica on a bbolt file.
#
#   - encrypt and decrypt ops/s on one replica, etcd vs bbolt (target >= 0.9:
#     the crypto path must not touch storage), two alternating rounds;
#   - aggregate encrypt ops/s with 1, 2 and 3 replicas behind a client that
#     spreads its workers over them, with the CPU each replica used (cores)
#     and ops per CPU-second; on a 2-core machine the figure is bounded by
#     CPU, shared by etcd, the replicas and the load generator;
#   - key creation and token issue per second on one replica, etcd vs bbolt.
#
# It runs BenchmarkHAThroughput in test/ha (go test, the load generator of
# internal/loadgen in-process). Environment: DURATION (10s per run),
# CONCURRENCY (32 workers in all), AUDIT (off; "on" keeps the audit trail),
# ETCD_BIN (default: etcd on PATH or /usr/bin/etcd), OUT (a file that gets
# the report lines too).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
out=${OUT:-}
cd "$repo"
COFFER_E2E=1 HA_BENCH_OUT="$out" \
	DURATION="${DURATION:-10s}" CONCURRENCY="${CONCURRENCY:-32}" AUDIT="${AUDIT:-off}" \
	go test -count=1 -timeout 30m -run '^$' -bench '^BenchmarkHAThroughput$' -benchtime 1x ./test/ha/ |
	grep -E 'bench_test.go|^(--- |ok|FAIL)' | sed -E 's/^ +bench_test.go:[0-9]+: //'
