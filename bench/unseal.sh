#!/usr/bin/env bash
# unseal.sh measures each seal type against Shamir in the same run, with real
# processes and devices: a SoftHSM2 token (pkcs11), a swtpm bound to PCR 16
# (tpm2) and a second coffer over TLS on loopback (transit).
#
#   - unseal: one manual seal and a 2-share unseal through the API (under an
#     auto-unseal the shares are recovery shares and the device unwraps the
#     root key), ms per cycle;
#   - restart: SIGKILL and restart of the server process until /readyz is
#     200 (Shamir: the 2 unseal shares submitted at once), ms, and the
#     server's own unseal_seconds for the auto-unseal in it;
#   - encrypt: Encrypt of 32 bytes, 16 concurrent clients, ops/s, measured
#     interleaved (SEAL_BENCH_ROUNDS rounds, default 10, of 300 ms per type,
#     the order rotating, so that a shared machine's drifting load falls on
#     every type alike) and its ratio to Shamir: the seal is not on the
#     crypto path, so ~1.
#
# It runs BenchmarkSeal in test/seal. Needs softhsm2, swtpm and go.
# Environment: BENCHTIME (go test -benchtime, default 2s), OUT (a file that
# also gets the table).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
cd "$repo"
raw=$(mktemp)
trap 'rm -f "$raw"' EXIT
COFFER_E2E=1 go test -count=1 -timeout 20m -run '^$' -bench '^BenchmarkSeal$' \
	-benchtime "${BENCHTIME:-2s}" ./test/seal/ | tee "$raw" | grep -E '^(Benchmark|ok|FAIL|---)' >&2 || true
if ! grep -q '^ok' "$raw"; then
	echo "BenchmarkSeal failed:" >&2
	tail -50 "$raw" >&2
	exit 1
fi
table=$(awk '
	/^BenchmarkSeal\// {
		split($1, p, "/"); kind = p[2]; typ = p[3]
		sub(/-[0-9]+$/, "", kind); sub(/-[0-9]+$/, "", typ)
		if (typ != "" && !(typ in seen)) { seen[typ] = 1; order[++n] = typ }
		ns = $3
		if (kind == "unseal") unseal[typ] = ns / 1e6
		if (kind == "restart") {
			restart[typ] = ns / 1e6
			for (i = 4; i < NF; i++) if ($(i+1) == "unseal_s") srv[typ] = $i * 1000
		}
		if (kind ~ /^encrypt/) {
			for (i = 4; i < NF; i++) if ($(i+1) ~ /_ops\/s$/) { u = $(i+1); sub(/_ops\/s$/, "", u); ops[u] = $i }
		}
	}
	END {
		base = ops["shamir"]
		printf "%-8s %12s %12s %16s %12s %10s\n", "seal", "unseal ms", "restart ms", "server unseal ms", "encrypt/s", "vs shamir"
		for (j = 1; j <= n; j++) {
			t = order[j]; o = ops[t]
			s = (t in srv) ? sprintf("%.1f", srv[t]) : "-"
			printf "%-8s %12.1f %12.0f %16s %12.0f %10.2f\n", t, unseal[t], restart[t], s, o, o / base
		}
	}' "$raw")
echo "$table"
if [ -n "${OUT:-}" ]; then
	echo "$table" >>"$OUT"
fi
