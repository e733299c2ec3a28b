#!/usr/bin/env bash
# envelope-vs-age.sh compares file encryption throughput, in one run on the
# same file: `coffer encrypt` / `coffer decrypt` (envelope encryption, the
# data key wrapped by a local Coffer dev server), age v1.3.1 (X25519
# recipient), and `cat` as the I/O floor.
#
# The input is SIZE bytes of random data on tmpfs (/dev/shm), so disks do not
# count. Each command runs RUNS times; the best wall time is kept. It prints
# MiB/s, peak RSS (from /usr/bin/time), and the ratios coffer/age (target
# >= 1.5) and coffer/cat (target >= 0.4). Then it streams LARGE_BYTES through
# a pipe (`coffer encrypt | coffer decrypt`) to show that peak RSS does not
# grow with the file size (target < 64 MiB). Missing a target is reported,
# not an error: the script fails only when something fails to build or run,
# or a round trip does not give back the input.
#
# Environment:
#   SIZE         input bytes (default 1073741824, 1 GiB)
#   RUNS         runs per command (default 3)
#   LARGE_BYTES  bytes streamed through the pipe (default 3221225472; 0 skips)
#   TMPFS_DIR    where the files go (default /dev/shm)
#   COFFER_BIN   prebuilt coffer; otherwise built from this tree
#   AGE_BIN      directory holding age and age-keygen; otherwise installed with
#                go install filippo.io/age/cmd/...@v1.3.1
#   KEEP_WORK=1  keep the work directory
set -euo pipefail

SIZE=${SIZE:-1073741824}
RUNS=${RUNS:-3}
LARGE_BYTES=${LARGE_BYTES:-3221225472}
TMPFS_DIR=${TMPFS_DIR:-/dev/shm}
AGE_VERSION=v1.3.1

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
work=$(mktemp -d "$TMPFS_DIR/coffer-envelope-bench.XXXXXX")

server_pid=
cleanup() {
	if [[ -n $server_pid ]]; then
		kill "$server_pid" 2>/dev/null || true
		wait "$server_pid" 2>/dev/null || true
	fi
	if [[ ${KEEP_WORK:-} == 1 ]]; then
		echo "envelope-vs-age: files kept in $work" >&2
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say() { echo "envelope-vs-age: $*" >&2; }
die() {
	say "error: $*"
	exit 1
}

[[ -x /usr/bin/time ]] || die "/usr/bin/time (GNU time) is needed for peak RSS"

# --- tools -------------------------------------------------------------------
coffer=${COFFER_BIN:-}
if [[ -z $coffer ]]; then
	say "building coffer"
	(cd "$repo" && go build -o "$work/coffer" ./cmd/coffer) || die "building coffer failed"
	coffer=$work/coffer
fi
agedir=${AGE_BIN:-}
if [[ -z $agedir ]]; then
	say "installing age $AGE_VERSION"
	GOBIN=$work/agebin go install "filippo.io/age/cmd/...@$AGE_VERSION" || die "installing age failed"
	agedir=$work/agebin
fi
age=$agedir/age
"$age" --version >/dev/null || die "$age does not run"

# --- server ------------------------------------------------------------------
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
export COFFER_ADDR=http://127.0.0.1:$port
export COFFER_TOKEN=bench-root-token-$RANDOM$RANDOM
"$coffer" server --dev --listen "127.0.0.1:$port" --dev-root-token "$COFFER_TOKEN" >"$work/server.log" 2>&1 &
server_pid=$!
for ((i = 0; i < 300; i++)); do
	kill -0 "$server_pid" 2>/dev/null || {
		tail -n 20 "$work/server.log" >&2
		die "the Coffer dev server exited"
	}
	"$coffer" operator status >/dev/null 2>&1 && break
	sleep 0.1
done
"$coffer" key create --alias alias/bench >/dev/null || die "creating the key failed"
"$age"-keygen -o "$work/age.key" 2>/dev/null
recipient=$("$age"-keygen -y "$work/age.key")

# --- input -------------------------------------------------------------------
say "writing $SIZE random bytes to $work/in"
head -c "$SIZE" /dev/urandom >"$work/in"

# measure NAME OUT CMD... runs CMD RUNS times and records the best wall time
# (seconds) in secs[NAME] and the peak RSS (KiB) in rss[NAME]. OUT, the
# command's output file, is removed before each run, outside the timing, so
# that no command pays for freeing the previous run's tmpfs pages.
declare -A secs rss
measure() {
	local name=$1 out=$2 best= r t0 t1 el kb
	shift 2
	for ((r = 0; r < RUNS; r++)); do
		rm -f "$out"
		t0=$(date +%s.%N)
		/usr/bin/time -f %M -o "$work/rss" "$@" || die "$name failed: $*"
		t1=$(date +%s.%N)
		el=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", b - a }')
		kb=$(tail -n 1 "$work/rss")
		if [[ -z $best ]] || awk -v a="$el" -v b="$best" 'BEGIN { exit !(a < b) }'; then
			best=$el
		fi
		rss[$name]=$((${rss[$name]:-0} > kb ? ${rss[$name]:-0} : kb))
	done
	secs[$name]=$best
}

say "encrypting and decrypting, best of $RUNS runs each"
measure cat-enc "$work/out" sh -c 'cat "$1" >"$2"' sh "$work/in" "$work/out"
measure cat-dec "$work/out" sh -c 'cat "$1" >"$2"' sh "$work/in" "$work/out"
measure coffer-enc "$work/in.cfe" "$coffer" encrypt --key alias/bench --context bench=1 --out "$work/in.cfe" "$work/in"
measure coffer-dec "$work/out" "$coffer" decrypt --out "$work/out" "$work/in.cfe"
cmp -s "$work/in" "$work/out" || die "coffer round trip differs from the input"
measure age-enc "$work/in.age" "$age" -r "$recipient" -o "$work/in.age" "$work/in"
measure age-dec "$work/out" "$age" -d -i "$work/age.key" -o "$work/out" "$work/in.age"
cmp -s "$work/in" "$work/out" || die "age round trip differs from the input"

mibs() { awk -v n="$SIZE" -v s="$1" 'BEGIN { printf "%.0f", n / 1048576 / s }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b / a }'; } # of times: a/b speed = b_time/a_time
meets() { awk -v r="$1" -v t="$2" 'BEGIN { if (r + 0 >= t) print "met"; else print "NOT met" }'; }

echo
echo "Envelope encryption vs age vs cat: $SIZE bytes on tmpfs, $(nproc) CPUs, best of $RUNS"
printf '%-12s %10s %10s %12s\n' "command" "seconds" "MiB/s" "peak RSS"
for n in cat-enc coffer-enc age-enc cat-dec coffer-dec age-dec; do
	printf '%-12s %10s %10s %9s MiB\n' "$n" "${secs[$n]}" "$(mibs "${secs[$n]}")" "$((rss[$n] / 1024))"
done
echo
for op in enc dec; do
	ra=$(ratio "${secs[coffer-$op]}" "${secs[age-$op]}")
	rc=$(ratio "${secs[coffer-$op]}" "${secs[cat-$op]}")
	echo "$op: coffer/age = ${ra}x (target >= 1.5: $(meets "$ra" 1.5)); coffer/cat = $rc (target >= 0.4: $(meets "$rc" 0.4))"
done

# --- a large stream through a pipe ---------------------------------------------
if [[ $LARGE_BYTES != 0 ]]; then
	say "streaming $LARGE_BYTES bytes through coffer encrypt | coffer decrypt"
	t0=$(date +%s.%N)
	got=$(head -c "$LARGE_BYTES" /dev/zero |
		/usr/bin/time -f %M -o "$work/rss-enc" "$coffer" encrypt --key alias/bench |
		/usr/bin/time -f %M -o "$work/rss-dec" "$coffer" decrypt | wc -c)
	t1=$(date +%s.%N)
	[[ $got == "$LARGE_BYTES" ]] || die "the stream gave back $got bytes, not $LARGE_BYTES"
	el=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
	re=$(($(tail -n 1 "$work/rss-enc") / 1024))
	rd=$(($(tail -n 1 "$work/rss-dec") / 1024))
	peak=$((re > rd ? re : rd))
	echo "stream: $LARGE_BYTES bytes in ${el}s ($(awk -v n="$LARGE_BYTES" -v s="$el" 'BEGIN { printf "%.0f", n / 1048576 / s }') MiB/s, encrypt and decrypt concurrently); peak RSS encrypt $re MiB, decrypt $rd MiB (target < 64: $(meets $((64 - peak)) 1))"
fi
