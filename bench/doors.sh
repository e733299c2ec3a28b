#!/usr/bin/env bash
# doors.sh compares Coffer's compatible APIs with its own (issue 17): encrypt
# ops/s through the AWS KMS door (every request signed with SigV4 by the AWS
# SDK's signer) and through the Vault transit door (X-Vault-Token), against
# Coffer's REST API with a bearer token, on one dev server, in the same run.
# The load generator is its own process (coffer bench), as in http-floor.sh.
#
# It starts one dev server (HTTP/2 over TLS on loopback), makes one key
# (alias/doorbench), a policy that allows kms:Encrypt and kms:Decrypt on it
# only, and a token and an access key holding that policy (so every door
# authenticates and authorizes the same way: not the root token, which
# the REST and Vault doors would otherwise use), then runs, ROUNDS times,
# each door in turn with
#   coffer bench --door DOOR --op $OP --key alias/doorbench --payload-size 32
#                -c $CONCURRENCY -d $DURATION --warmup $WARMUP --json
#                --insecure-skip-verify
# (the access key reaches bench through COFFER_BENCH_AWS_ACCESS_KEY_ID and
# COFFER_BENCH_AWS_SECRET_ACCESS_KEY, never argv). Each round starts at the
# next door, so a slow phase of a shared machine does not always hit the
# same one. It prints every run, then per door the median ops/s with its
# spread (min-max) and the median p50 and p99, and the ratios aws-kms/rest
# and vault/rest of each round (target >= 0.8) with their median and
# spread, and the CPU time per request of the server and of the load
# generator (from /proc and bash's time), steadier than ops/s on a shared
# machine. Missing the target is reported, not an error: the script exits
# non-zero only when something fails to build, start or run.
#
# Environment:
#   DURATION     measured time per run (default 10s)
#   WARMUP       warmup per run (default 1s)
#   CONCURRENCY  workers (default 32)
#   ROUNDS       rounds of all doors (default 3)
#   DOORS        doors to measure (default "rest aws-kms vault"; rest is the
#                reference of the ratios)
#   OP           encrypt or decrypt (default encrypt)
#   SERVER_CPUS, BENCH_CPUS  CPU lists (taskset -c) to pin the server and
#                coffer bench to, e.g. 0 and 1, so the generator's signing
#                does not take the server's CPU (default: not pinned)
#   COFFER_BIN   a prebuilt coffer binary to use instead of building
#   KEEP_WORK=1  keep the temporary directory with logs and JSON results
#
# The Coffer dev server is started as
#   coffer server --dev --listen 127.0.0.1:PORT --dev-root-token TOKEN --tls-auto
# on a free port chosen here; it is ready once /v1/sys/seal-status says
# "sealed": false (or, without curl, once the port accepts connections).
set -euo pipefail

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-1s}
CONCURRENCY=${CONCURRENCY:-32}
ROUNDS=${ROUNDS:-3}
DOORS=${DOORS:-"rest aws-kms vault"}
OP=${OP:-encrypt}
SERVER_CPUS=${SERVER_CPUS:-}
BENCH_CPUS=${BENCH_CPUS:-}
START_TIMEOUT=${START_TIMEOUT:-60} # seconds to wait for the server

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/coffer-doors.XXXXXX")

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
		echo "doors: logs and results kept in $work" >&2
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say() { echo "doors: $*" >&2; }
die() {
	say "error: $*"
	exit 1
}

case $OP in
encrypt | decrypt) ;;
*) die "OP must be encrypt or decrypt, not $OP" ;;
esac
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive number, not $ROUNDS"
for door in $DOORS; do
	case $door in
	rest | aws-kms | vault) ;;
	*) die "unknown door $door in DOORS (want rest, aws-kms and/or vault)" ;;
	esac
done
read -r -a doors <<<"$DOORS"
((${#doors[@]} > 0)) || die "DOORS is empty"
server_pin=() bench_pin=()
if [[ -n $SERVER_CPUS || -n $BENCH_CPUS ]]; then
	command -v taskset >/dev/null 2>&1 || die "SERVER_CPUS and BENCH_CPUS need taskset"
fi
[[ -z $SERVER_CPUS ]] || server_pin=(taskset -c "$SERVER_CPUS")
[[ -z $BENCH_CPUS ]] || bench_pin=(taskset -c "$BENCH_CPUS")

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

# stats prints "median min max" of the numbers on stdin ("n/a n/a n/a"
# when there are none; n/a values are left out).
stats() {
	grep -Ev '^(n/a)?$' | sort -g | awk '
		{ v[NR] = $1 }
		END {
			if (NR == 0) { print "n/a n/a n/a"; exit }
			m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
			printf "%g %g %g\n", m, v[1], v[NR]
		}'
}

# --- build -------------------------------------------------------------------
coffer=${COFFER_BIN:-}
if [[ -z $coffer ]]; then
	command -v go >/dev/null 2>&1 || die "go not found (or set COFFER_BIN)"
	say "building coffer"
	(cd "$repo" && go build -o "$work/coffer" ./cmd/coffer) || die "building coffer failed"
	coffer=$work/coffer
fi

# --- server ------------------------------------------------------------------
log=$work/coffer.log
port=$(free_port) || die "no free port found"
token=bench-root-token-$RANDOM$RANDOM
"${server_pin[@]}" "$coffer" server --dev --listen "127.0.0.1:$port" --dev-root-token "$token" --tls-auto >"$log" 2>&1 &
pid=$!
children+=("$pid")
addr=https://127.0.0.1:$port
ready=
for ((i = 0; i < START_TIMEOUT * 10; i++)); do
	if ! kill -0 "$pid" 2>/dev/null; then
		tail -n 20 "$log" >&2 || true
		die "the Coffer dev server exited"
	fi
	# The server says where it listens; trust the port chosen here, take
	# only the scheme from that line.
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

export COFFER_ADDR=$addr COFFER_TOKEN=$token COFFER_SKIP_VERIFY=1 COFFER_CACERT=
cof() { "$coffer" "$@" 2>>"$work/setup.err" || {
	cat "$work/setup.err" >&2
	die "coffer $1 $2 failed"
}; }

# --- key and access key ------------------------------------------------------
key=alias/doorbench
cof key create --alias "$key" --description "bench/doors.sh" >/dev/null
cat >"$work/policy.yaml" <<EOF
statements:
  - effect: allow
    actions: [kms:Encrypt, kms:Decrypt]
    resources: [$key]
EOF
cof policy put doorbench "$work/policy.yaml" >/dev/null
cof token create --policy doorbench --ttl 12h --display-name bench-doors -o json >"$work/token.json"
bench_token=$(json_str "$work/token.json" token)
rm -f "$work/token.json"
[[ -n $bench_token ]] || die "the token answer had no token"
cof access-key create --policy doorbench --description "bench/doors.sh" -o json >"$work/ak.json"
COFFER_BENCH_AWS_ACCESS_KEY_ID=$(json_str "$work/ak.json" access_key_id)
COFFER_BENCH_AWS_SECRET_ACCESS_KEY=$(json_str "$work/ak.json" secret_access_key)
rm -f "$work/ak.json" # the secret stays in the environment only
[[ -n $COFFER_BENCH_AWS_ACCESS_KEY_ID && -n $COFFER_BENCH_AWS_SECRET_ACCESS_KEY ]] || die "the access key answer had no id or secret"
export COFFER_BENCH_AWS_ACCESS_KEY_ID COFFER_BENCH_AWS_SECRET_ACCESS_KEY

# --- runs --------------------------------------------------------------------
# server_cpu prints the CPU seconds (user + system) the server has used,
# from /proc ("" without it).
ticks=$(getconf CLK_TCK 2>/dev/null || echo 100)
server_cpu() {
	[[ -r /proc/$pid/stat ]] || return 0
	# Fields after the command name: utime and stime are the 12th and 13th.
	sed -E 's/^.*\) //' "/proc/$pid/stat" | awk -v t="$ticks" '{ printf "%.3f", ($12 + $13) / t }'
}

# run_bench DOOR ROUND leaves the JSON of one run in $work/DOOR-ROUND.json,
# and in $work/DOOR-ROUND.cpu the CPU seconds of the server and of coffer
# bench over the run (warmup included).
run_bench() {
	local door=$1 round=$2
	local out=$work/$door-$round.json errf=$work/$door-$round.err before after tf=$work/$door-$round.time
	say "round $round: $door $OP for $DURATION (+$WARMUP warmup), $CONCURRENCY workers"
	before=$(server_cpu)
	local TIMEFORMAT='%U %S'
	if ! { time COFFER_TOKEN=$bench_token "${bench_pin[@]}" "$coffer" bench --door "$door" --op "$OP" --key "$key" --payload-size 32 -c "$CONCURRENCY" \
		-d "$DURATION" --warmup "$WARMUP" --json --insecure-skip-verify >"$out" 2>"$errf"; } 2>"$tf"; then
		cat "$errf" >&2
		die "coffer bench --door $door failed"
	fi
	after=$(server_cpu)
	awk -v b="${before:-}" -v a="${after:-}" '{ c = $1 + $2 } END { if (b == "" || a == "") print "n/a", c; else print a - b, c }' "$tf" >"$work/$door-$round.cpu"
	grep -q '"ops_per_sec"' "$out" || die "coffer bench --door $door printed no result"
	local errors
	errors=$(json_num "$out" errors)
	if [[ ${errors:-0} != 0 ]]; then
		say "warning: $door round $round: $errors failed requests; first: $(json_str "$out" first_error)"
	fi
}

n=${#doors[@]}
for ((r = 1; r <= ROUNDS; r++)); do
	for ((j = 0; j < n; j++)); do
		run_bench "${doors[(r - 1 + j) % n]}" "$r"
	done
done

# --- report ------------------------------------------------------------------
val() { json_num "$work/$1-$2.json" "$3"; }

# cpu_per_op DOOR ROUND FIELD prints the CPU microseconds per request of the
# server (FIELD 1) or of coffer bench (FIELD 2): CPU seconds over the run
# divided by the requests of the run, its warmup counted at the measured
# rate.
warmup_s=$(awk -v w="$WARMUP" 'BEGIN { n = w + 0; if (w ~ /ms$/) n /= 1000; else if (w ~ /m$/) n *= 60; print n }')
cpu_per_op() {
	local f=$work/$1-$2
	awk -v k="$3" -v ops="$(json_num "$f.json" ops)" -v rate="$(json_num "$f.json" ops_per_sec)" -v w="$warmup_s" '
		{ c = $k }
		END { n = ops + rate * w; if (c == "n/a" || n <= 0) print "n/a"; else printf "%.1f", c * 1e6 / n }' "$f.cpu"
}

echo
echo "Compatible doors: $OP of 32 bytes, $CONCURRENCY workers, $DURATION per run, $ROUNDS rounds, $(nproc 2>/dev/null || echo '?') CPUs${SERVER_CPUS:+, server on CPUs $SERVER_CPUS}${BENCH_CPUS:+, bench on CPUs $BENCH_CPUS}"
printf '%-8s %-6s %-9s %12s %10s %10s %8s %13s %13s\n' door round protocol ops/s p50 p99 errors "server us/op" "client us/op"
for door in "${doors[@]}"; do
	for ((r = 1; r <= ROUNDS; r++)); do
		f=$work/$door-$r.json
		printf '%-8s %-6s %-9s %12.1f %10s %10s %8s %13s %13s\n' "$door" "$r" "$(json_str "$f" protocol)" \
			"$(json_num "$f" ops_per_sec)" "$(ms "$(json_num "$f" p50_ns)")" "$(ms "$(json_num "$f" p99_ns)")" \
			"$(json_num "$f" errors)" "$(cpu_per_op "$door" "$r" 1)" "$(cpu_per_op "$door" "$r" 2)"
	done
done
echo
printf '%-8s %12s %21s %10s %10s %13s %13s\n' door "median ops/s" "spread (min-max)" "med p50" "med p99" "server us/op" "client us/op"
for door in "${doors[@]}"; do
	read -r med lo hi < <(for ((r = 1; r <= ROUNDS; r++)); do val "$door" "$r" ops_per_sec; done | stats)
	read -r p50 _ _ < <(for ((r = 1; r <= ROUNDS; r++)); do val "$door" "$r" p50_ns; done | stats)
	read -r p99 _ _ < <(for ((r = 1; r <= ROUNDS; r++)); do val "$door" "$r" p99_ns; done | stats)
	read -r scpu _ _ < <(for ((r = 1; r <= ROUNDS; r++)); do cpu_per_op "$door" "$r" 1; echo; done | stats)
	read -r ccpu _ _ < <(for ((r = 1; r <= ROUNDS; r++)); do cpu_per_op "$door" "$r" 2; echo; done | stats)
	printf '%-8s %12.1f %10.1f-%-10.1f %10s %10s %13s %13s\n' "$door" "$med" "$lo" "$hi" "$(ms "$p50")" "$(ms "$p99")" "$scpu" "$ccpu"
done
echo "(us/op: CPU microseconds per request of the server and of coffer bench, medians;"
echo " on a shared machine they are steadier than ops/s, which also follow the other load)"
echo

if [[ " ${doors[*]} " == *" rest "* ]]; then
	for door in aws-kms vault; do
		[[ " ${doors[*]} " == *" $door "* ]] || continue
		rs=()
		for ((r = 1; r <= ROUNDS; r++)); do
			rs+=("$(ratio "$(val "$door" "$r" ops_per_sec)" "$(val rest "$r" ops_per_sec)")")
		done
		read -r med lo hi < <(printf '%s\n' "${rs[@]}" | stats)
		med=$(awk -v m="$med" 'BEGIN { if (m == "n/a") print m; else printf "%.2f", m }')
		printf '%-7s/rest ops/s per round: %s; median %s (spread %s-%s; target >= 0.8: %s)\n' \
			"$door" "${rs[*]}" "$med" "$lo" "$hi" "$(meets "$med" 0.8)"
	done
fi
