#!/usr/bin/env bash
# http-floor.sh compares Coffer's HTTP throughput with the "floor": a bare Go
# JSON echo server (bench/echoserver) doing the same JSON work without the
# crypto, the auth and the storage. Both serve HTTP/2 over TLS on loopback.
#
# For each target it runs
#   coffer bench --op encrypt --payload-size 32 -c 32 -d $DURATION --json --insecure-skip-verify
#   coffer bench --op encrypt-batch --batch-size 100 ... (same flags)
# and prints ops/s, items/s and latencies, the ratio coffer/echo for single
# encrypts (target >= 0.6) and batch items/s against single ops/s (target
# >= 10x). Missing a target is reported, not an error: the script exits
# non-zero only when something fails to build, start or run.
#
# Environment:
#   DURATION     measured time per run (default 10s)
#   WARMUP       warmup per run (default 1s)
#   CONCURRENCY  workers (default 32)
#   BATCH_SIZE   items per encrypt-batch request (default 100)
#   TARGETS      which servers to measure, in order (default "echo coffer")
#   COFFER_BIN, ECHOSERVER_BIN  prebuilt binaries to use instead of building
#   KEEP_WORK=1  keep the temporary directory with logs and JSON results
#   HTTP1=1      the load generator speaks HTTP/1.1 over TLS (coffer bench
#                --http1, one connection per worker) instead of HTTP/2
#   AUDIT_DURABILITY  per-request (the default) or batched: Coffer's
#                audit.durability (docs/audit.md, "Durability"), with the
#                audit log in the temporary directory
#
# The Coffer dev server is started as
#   coffer server --dev --listen 127.0.0.1:PORT --dev-root-token TOKEN --tls-auto
# on a free port chosen here; it is ready once /v1/sys/seal-status says
# "sealed": false (or, without curl, once the port accepts connections).
set -euo pipefail

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-1s}
CONCURRENCY=${CONCURRENCY:-32}
BATCH_SIZE=${BATCH_SIZE:-100}
TARGETS=${TARGETS:-"echo coffer"}
START_TIMEOUT=${START_TIMEOUT:-60} # seconds to wait for a server
proto=()
[[ ${HTTP1:-} == 1 ]] && proto=(--http1)

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/coffer-http-floor.XXXXXX")

children=()
cleanup() {
	local pid
	for pid in "${children[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${children[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	if [[ ${KEEP_WORK:-} == 1 ]]; then
		echo "http-floor: logs and results kept in $work" >&2
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say() { echo "http-floor: $*" >&2; }
die() {
	say "error: $*"
	exit 1
}

# stop_child PID stops one server started here and forgets it.
stop_child() {
	local pid=$1 rest=() p
	kill "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	for p in "${children[@]}"; do
		[[ $p == "$pid" ]] || rest+=("$p")
	done
	children=("${rest[@]}")
}

# port_open PORT succeeds when something accepts connections on it.
port_open() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# free_port prints a loopback port nothing listens on.
free_port() {
	if command -v python3 >/dev/null 2>&1; then
		python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
		return
	fi
	local p i
	for i in $(seq 200); do
		p=$((20000 + RANDOM % 40000))
		if ! port_open "$p"; then
			echo "$p"
			return
		fi
	done
	return 1
}

# alive PID LOG dies with the log's tail when the process has exited.
alive() {
	if ! kill -0 "$1" 2>/dev/null; then
		say "server exited; last lines of $2:"
		tail -n 20 "$2" >&2 || true
		die "server failed to start"
	fi
}

# json_num FILE NAME prints the first number field NAME of a JSON file.
json_num() {
	grep -Eo "\"$2\": *-?[0-9][0-9.eE+-]*" "$1" | head -n 1 | sed -E 's/.*: *//'
}

# json_str FILE NAME prints the first string field NAME of a JSON file.
json_str() {
	grep -Eo "\"$2\": *\"[^\"]*\"" "$1" | head -n 1 | sed -E 's/^[^:]*: *"//; s/"$//'
}

ms() { awk -v ns="${1:-0}" 'BEGIN { printf "%.2fms", ns / 1e6 }'; }
ratio() { awk -v a="${1:-0}" -v b="${2:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "n/a" }'; }
meets() { awk -v r="$1" -v t="$2" 'BEGIN { if (r != "n/a" && r + 0 >= t) print "met"; else print "NOT met" }'; }

# --- build -------------------------------------------------------------------
coffer=${COFFER_BIN:-}
echoserver=${ECHOSERVER_BIN:-}
if [[ -z $coffer || -z $echoserver ]]; then
	command -v go >/dev/null 2>&1 || die "go not found (or set COFFER_BIN and ECHOSERVER_BIN)"
fi
if [[ -z $coffer ]]; then
	say "building coffer"
	(cd "$repo" && go build -o "$work/coffer" ./cmd/coffer) || die "building coffer failed"
	coffer=$work/coffer
fi
if [[ -z $echoserver ]]; then
	say "building the echo server"
	(cd "$repo" && go build -o "$work/echoserver" ./bench/echoserver) || die "building the echo server failed"
	echoserver=$work/echoserver
fi

# --- servers -----------------------------------------------------------------
# Each start_* sets addr, token, key_flag and pid.

start_echo() {
	local log=$work/echo.log out=$work/echo.out i
	"$echoserver" -listen 127.0.0.1:0 -tls-auto >"$out" 2>"$log" &
	pid=$!
	children+=("$pid")
	addr=
	for ((i = 0; i < START_TIMEOUT * 10; i++)); do
		alive "$pid" "$log"
		addr=$(head -n 1 "$out" 2>/dev/null || true)
		[[ $addr == http*://* ]] && break
		sleep 0.1
	done
	[[ $addr == http*://* ]] || die "the echo server printed no address"
	token=unused
	key_flag=(--key bench-echo) # the echo server has no /v1/keys
}

start_coffer() {
	local log=$work/coffer.log port i printed ready=
	port=$(free_port) || die "no free port found"
	token=bench-root-token-$RANDOM$RANDOM
	local cfg=()
	if [[ -n ${AUDIT_DURABILITY:-} ]]; then
		printf 'audit:\n  dir: %s\n  durability: %s\n' "$work/audit-$RANDOM" "$AUDIT_DURABILITY" >"$work/coffer.yaml"
		cfg=(--config "$work/coffer.yaml")
	fi
	"$coffer" server --dev "${cfg[@]}" --listen "127.0.0.1:$port" --dev-root-token "$token" --tls-auto >"$log" 2>&1 &
	pid=$!
	children+=("$pid")
	addr=https://127.0.0.1:$port
	for ((i = 0; i < START_TIMEOUT * 10; i++)); do
		alive "$pid" "$log"
		# The server says where it listens (a line like "Address: https://...");
		# trust the port chosen here, take only the scheme from that line.
		printed=$(grep -Eo "https?://(127\.0\.0\.1|localhost|\[::1\]):$port" "$log" | head -n 1 || true)
		[[ -n $printed ]] && addr=${printed%%://*}://127.0.0.1:$port
		if port_open "$port"; then
			if ! command -v curl >/dev/null 2>&1; then
				sleep 1
				ready=1
				break
			fi
			if curl -ksS --max-time 2 "$addr/v1/sys/seal-status" 2>/dev/null | grep -Eq '"sealed": *false'; then
				ready=1
				break
			fi
		fi
		sleep 0.1
	done
	[[ -n $ready ]] || {
		tail -n 20 "$log" >&2 || true
		die "the Coffer dev server was not ready within ${START_TIMEOUT}s at $addr"
	}
	key_flag=() # coffer bench creates a throwaway key
}

# --- runs --------------------------------------------------------------------
# run_bench NAME OP [FLAGS...] runs coffer bench against the current server
# and leaves its JSON in $work/NAME-OP.json.
run_bench() {
	local name=$1 op=$2
	shift 2
	local out=$work/$name-$op.json errf=$work/$name-$op.err
	say "$name: $op for $DURATION (+$WARMUP warmup), $CONCURRENCY workers at $addr"
	if ! env COFFER_ADDR="$addr" COFFER_TOKEN="$token" COFFER_CACERT= \
		"$coffer" bench --op "$op" --payload-size 32 -c "$CONCURRENCY" -d "$DURATION" \
		--warmup "$WARMUP" --json --insecure-skip-verify "${proto[@]}" "$@" >"$out" 2>"$errf"; then
		cat "$errf" >&2
		die "coffer bench --op $op against $name failed"
	fi
	grep -q '"ops_per_sec"' "$out" || die "coffer bench --op $op against $name printed no result"
	local errors
	errors=$(json_num "$out" errors)
	if [[ ${errors:-0} != 0 ]]; then
		say "warning: $name $op: $errors failed requests; first: $(json_str "$out" first_error)"
	fi
}

for name in $TARGETS; do
	case $name in
	echo) start_echo ;;
	coffer) start_coffer ;;
	*) die "unknown target $name in TARGETS (want echo and/or coffer)" ;;
	esac
	run_bench "$name" encrypt "${key_flag[@]}"
	run_bench "$name" encrypt-batch --batch-size "$BATCH_SIZE" "${key_flag[@]}"
	stop_child "$pid"
done

# --- report ------------------------------------------------------------------
echo
echo "HTTP floor: 32-byte payloads, $CONCURRENCY workers, $DURATION per run, batches of $BATCH_SIZE, $(nproc 2>/dev/null || echo '?') CPUs"
printf '%-8s %-14s %-9s %12s %14s %10s %10s %8s\n' target op protocol ops/s items/s p50 p99 errors
for name in $TARGETS; do
	for op in encrypt encrypt-batch; do
		f=$work/$name-$op.json
		printf '%-8s %-14s %-9s %12.1f %14.1f %10s %10s %8s\n' "$name" "$op" \
			"$(json_str "$f" protocol)" "$(json_num "$f" ops_per_sec)" "$(json_num "$f" items_per_sec)" \
			"$(ms "$(json_num "$f" p50_ns)")" "$(ms "$(json_num "$f" p99_ns)")" "$(json_num "$f" errors)"
	done
done
echo

ops() { json_num "$work/$1-$2.json" "$3"; }
has() { [[ " $TARGETS " == *" $1 "* ]]; }
if has echo && has coffer; then
	r=$(ratio "$(ops coffer encrypt ops_per_sec)" "$(ops echo encrypt ops_per_sec)")
	echo "coffer/echo encrypt ops/s:                 $r (target >= 0.6: $(meets "$r" 0.6))"
	r=$(ratio "$(ops coffer encrypt-batch items_per_sec)" "$(ops echo encrypt-batch items_per_sec)")
	echo "coffer/echo encrypt-batch items/s:         $r (for reference)"
fi
if has coffer; then
	r=$(ratio "$(ops coffer encrypt-batch items_per_sec)" "$(ops coffer encrypt ops_per_sec)")
	echo "coffer batch items/s vs single ops/s:      ${r}x (target >= 10x: $(meets "$r" 10))"
fi
if has echo; then
	r=$(ratio "$(ops echo encrypt-batch items_per_sec)" "$(ops echo encrypt ops_per_sec)")
	echo "echo batch items/s vs single ops/s:        ${r}x (for reference)"
fi
