#!/usr/bin/env bash
# audit-overhead.sh measures HTTP encrypt throughput of a Coffer dev server
# with the file audit sink (fsync per group commit) and with audit disabled,
# in the same run, and prints the ratio (target >= 0.8), and the same with
# audit.durability batched (docs/audit.md, "Durability"): the records of
# encrypts answered before their fsync, fsynced within 10 ms.
#
#   coffer bench --op encrypt --payload-size 32 -c $CONCURRENCY -d $DURATION --json --insecure-skip-verify
#
# Environment: DURATION (10s), WARMUP (1s), CONCURRENCY ("32 256": each
# value is measured in turn; 32 clients do not saturate this server even
# without audit, so that ratio measures the fsync's latency, and 256 clients
# measure throughput at saturation), ROUNDS (2,
# alternating on/off to cancel drift), COFFER_BIN (prebuilt binary),
# AUDIT_DIR (where the audited server writes its log; default: the dev dir),
# MODES ("off on batched": which servers each round runs, in order),
# HTTP1 (1: the load generator speaks HTTP/1.1 over TLS instead of HTTP/2).
#
# Each round prints both throughputs, their ratio and, for each run, the CPU
# that other processes used meanwhile ("other", in cores: machine busy time
# minus the server's and the load generator's): on a shared machine other
# jobs move both numbers, so compare ratios of the same round and discard
# rounds where "other" is well above 0.
set -euo pipefail
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-1s}
CONCURRENCIES=${CONCURRENCY:-32 256}
ROUNDS=${ROUNDS:-2}
MODES=${MODES:-off on batched}
proto=()
[[ ${HTTP1:-} == 1 ]] && proto=(--http1)
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
# busy: the machine's busy CPU time in clock ticks (all CPUs, without idle and iowait).
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9; exit}' /proc/stat; }
# children: CPU seconds of this shell's waited-for children.
# (times must run in this shell, not in a pipeline's subshell.)
children() { times >"$work/times" && awk 'NR==2{split($1,u,/[ms]/); split($2,s,/[ms]/); print u[1]*60+u[2]+s[1]*60+s[2]}' "$work/times"; }

run_one() { # $1 = off|on|batched; prints ops/s, p99 latency (ms) and the other processes' CPU in cores
	local dir=$work/$1-$RANDOM port tok=bench-root-token cfg=$work/cfg-$1.yaml b0 c0 t0
	mkdir -p "$dir"
	children >"$work/c0"
	b0=$(busy) c0=$(<"$work/c0") t0=$(date +%s.%N)
	case $1 in
	off) printf 'audit:\n  disabled: true\n  alerts_disabled: true\n' >"$cfg" ;;
	on) printf 'audit:\n  dir: %s\n' "${AUDIT_DIR:-$dir/audit}" >"$cfg" ;;
	batched) printf 'audit:\n  dir: %s\n  durability: batched\n' "${AUDIT_DIR:-$dir/audit}" >"$cfg" ;;
	esac
	port=$(freeport)
	"$bin" server --dev --dev-dir "$dir" --config "$cfg" --listen "127.0.0.1:$port" --dev-root-token "$tok" --tls-auto >"$dir/log" 2>&1 &
	pid=$!
	for _ in $(seq 100); do
		grep -q "listening" "$dir/log" 2>/dev/null && break
		sleep 0.1
	done
	COFFER_ADDR=https://127.0.0.1:$port COFFER_TOKEN=$tok "$bin" bench --op encrypt --payload-size 32 \
		-c "$CONCURRENCY" -d "$DURATION" --warmup "$WARMUP" --json --insecure-skip-verify "${proto[@]}" >"$work/res-$1.json"
	kill "$pid"
	wait "$pid" 2>/dev/null || true
	pid=""
	children >"$work/c1"
	python3 -c 'import json,sys,os
res=json.load(open(sys.argv[1]))
ops=res["ops_per_sec"]
p99=res["latency"]["p99_ns"]/1e6
b0,b1,c0,c1,t0,t1=map(float,sys.argv[2:])
hz=os.sysconf("SC_CLK_TCK")
print(ops, p99, max(0.0,((b1-b0)/hz-(c1-c0))/(t1-t0)))' "$work/res-$1.json" "$b0" "$(busy)" "$c0" "$(<"$work/c1")" "$t0" "$(date +%s.%N)"
}

for CONCURRENCY in $CONCURRENCIES; do
label="HTTP/2"
[[ ${HTTP1:-} == 1 ]] && label="HTTP/1.1"
echo "== $CONCURRENCY clients ($label)"
declare -A total=()
for r in $(seq "$ROUNDS"); do
	declare -A ops=()
	line="round $r:"
	for m in $MODES; do
		read -r o p99 other < <(run_one "$m")
		ops[$m]=$o
		total[$m]=$(python3 -c "print(${total[$m]:-0}+$o)")
		line+=$(python3 -c "print(f' $m {$o:.0f} ops/s p99 {$p99:.2f} ms (other {$other:.2f}),')")
	done
	for m in $MODES; do
		[[ $m != off && -n ${ops[off]:-} ]] && line+=$(python3 -c "print(f' $m/off {${ops[$m]}/${ops[off]}:.3f}')")
	done
	echo "$line"
done
if [[ -n ${total[off]:-} ]]; then
	for m in $MODES; do
		[[ $m == off ]] && continue
		python3 -c "r=${total[$m]}/${total[off]}; print(f'mean at $CONCURRENCY clients: $m/off {r:.3f} (target >= 0.8): ' + ('met' if r >= 0.8 else 'MISSED'))"
	done
fi
unset total
done
