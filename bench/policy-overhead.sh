#!/usr/bin/env bash
# policy-overhead.sh measures HTTP encrypt throughput of one Coffer dev
# server with policies enforced (a role token: the role has 10 policies,
# 1,000 policies are stored across 100 roles, and the allowing statement
# has an encryption-context condition templated from the caller) against
# the same server with the root token (no policy evaluation), alternating
# rounds in the same run, and prints the ratio (issue 4: within 10%).
#
#   coffer bench --op encrypt --payload-size 32 -c $CONCURRENCY -d $DURATION --key alias/bench --context namespace=ns
#
# Environment: DURATION (10s), WARMUP (1s), CONCURRENCY (32), ROUNDS (3),
# COFFER_BIN (prebuilt binary). Audit is off so only authorization differs.
set -euo pipefail
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-1s}
CONCURRENCY=${CONCURRENCY:-32}
ROUNDS=${ROUNDS:-3}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/coffer-policy-bench.XXXXXX")
pid=""
cleanup() { [[ -n $pid ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
bin=${COFFER_BIN:-}
if [[ -z $bin ]]; then
	bin=$work/coffer
	(cd "$repo" && go build -o "$bin" ./cmd/coffer)
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'audit:\n  disabled: true\n  alerts_disabled: true\n' >"$work/cfg.yaml"
"$bin" server --dev --dev-dir "$work/dev" --config "$work/cfg.yaml" --listen "127.0.0.1:$port" --dev-root-token bench-root >"$work/log" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q listening "$work/log" 2>/dev/null && break; sleep 0.1; done
addr=http://127.0.0.1:$port

# 1,000 policies, 100 roles of 10; role-99 holds p0990..p0999 and p0999
# allows alias/bench when the context's namespace is the caller's.
role_token=$(python3 - "$addr" <<'PY'
import json, sys, urllib.request
addr = sys.argv[1]
def call(method, path, body):
    req = urllib.request.Request(addr + path, method=method, data=json.dumps(body).encode(),
        headers={"Authorization": "Bearer bench-root", "Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req))
for i in range(1000):
    res = "alias/bench" if i == 999 else "alias/team-%d-*" % i
    doc = ("statements:\n  - sid: S%d\n    effect: allow\n    actions: [kms:Encrypt, kms:Decrypt]\n"
           "    resources: [%s]\n    conditions:\n      StringEquals:\n        context.namespace: ${principal.attr.session}\n"
           "  - effect: deny\n    actions: [key:ScheduleDeletion]\n    resources: [\"*\"]\n") % (i, res)
    call("PUT", "/v1/policies/p%04d" % i, {"document": doc})
for r in range(100):
    call("POST", "/v1/roles", {"name": "role-%d" % r, "policies": ["p%04d" % (r * 10 + j) for j in range(10)], "max_ttl": "12h", "ttl": "12h"})
call("POST", "/v1/keys", {"alias": "alias/bench"})
print(call("POST", "/v1/auth/assume-role", {"role": "role-99", "session_name": "ns", "ttl": "12h"})["token"])
PY
)

run() { # $1 = token
	COFFER_ADDR=$addr COFFER_TOKEN=$1 "$bin" bench --op encrypt --payload-size 32 --key alias/bench --context namespace=ns \
		-c "$CONCURRENCY" -d "$DURATION" --warmup "$WARMUP" --json >"$work/res.json"
	python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
if r["errors"]:
    sys.exit("the run had %d errors, first: %s" % (r["errors"], r.get("first_error")))
print(r["ops_per_sec"])' "$work/res.json"
}
root_total=0
role_total=0
for r in $(seq "$ROUNDS"); do
	root=$(run bench-root)
	role=$(run "$role_token")
	echo "round $r: root (no policy evaluation) ${root} ops/s, role token (policies enforced) ${role} ops/s, ratio $(python3 -c "print(round($role/$root,3))")"
	root_total=$(python3 -c "print($root_total+$root)")
	role_total=$(python3 -c "print($role_total+$role)")
done
echo "policies enforced / not enforced: $(python3 -c "print(round($role_total/$root_total,3))") (issue 4 target: >= 0.9)"
