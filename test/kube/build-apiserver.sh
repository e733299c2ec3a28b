#!/usr/bin/env bash
# Builds a real kube-apiserver from the Go module proxy into $OUT (default
# ./.bin/kube-apiserver). `go install k8s.io/kubernetes/...` does not work
# because k8s.io/kubernetes replaces its staging modules with local paths, so
# this makes a throwaway module that requires k8s.io/kubernetes and points
# each staging module at its published v0.Y.Z version.
set -euo pipefail
KUBE_VERSION=${KUBE_VERSION:-v1.37.2}
STAGING_VERSION=v0.${KUBE_VERSION#v1.}
OUT=${OUT:-$(cd "$(dirname "$0")/../.." && pwd)/.bin/kube-apiserver}
if [ -x "$OUT" ] && "$OUT" --version 2>/dev/null | grep -q "$KUBE_VERSION"; then
  echo "kube-apiserver $KUBE_VERSION already at $OUT"
  exit 0
fi
# The throwaway module is edited and tidied here, whatever the caller's
# GOFLAGS (.ci/run exports -mod=readonly for the coffer module).
export GOFLAGS=-mod=mod
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
go mod init kubebuild >/dev/null 2>&1
go mod edit -require=k8s.io/kubernetes@"$KUBE_VERSION"
go mod download -json k8s.io/kubernetes@"$KUBE_VERSION" >/dev/null
modfile=$(go mod download -json k8s.io/kubernetes@"$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
# Every staging module k8s.io/kubernetes replaces with ./staging/... gets the published version.
for m in $(sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$modfile"); do
  go mod edit -replace="$m"="$m"@"$STAGING_VERSION"
done
cat > main.go <<'GO'
package main

import _ "k8s.io/kubernetes/cmd/kube-apiserver/app"

func main() {}
GO
go mod tidy >/dev/null 2>&1 || true
mkdir -p "$(dirname "$OUT")"
go build -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION" -o "$OUT" k8s.io/kubernetes/cmd/kube-apiserver
echo "built $OUT"
"$OUT" --version
