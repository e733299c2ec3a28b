#!/usr/bin/env bash
# Builds the SOPS CLI that test/sops drives into $OUT (default ./.bin/sops),
# at the version tools/sops/go.mod pins. sops is built from its own tools
# module so that its dependencies never enter the coffer module's go.mod.
# A binary already at $OUT that reports the pinned version is kept.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
mod="$root/tools/sops"
OUT=${OUT:-$root/.bin/sops}
version=$(sed -n 's#^[[:space:]]*github.com/getsops/sops/v3 v\([^ ]*\).*#\1#p' "$mod/go.mod")
if [ -z "$version" ]; then
  echo "build-sops.sh: no github.com/getsops/sops/v3 requirement in $mod/go.mod" >&2
  exit 1
fi
if [ -x "$OUT" ] && "$OUT" --disable-version-check --version 2>/dev/null | grep -qx "sops $version"; then
  echo "sops $version already at $OUT"
  exit 0
fi
# The tools module resolves its own requirements, whatever the caller's
# GOFLAGS (.ci/run exports -mod=readonly for the coffer module).
export GOFLAGS=-mod=mod
mkdir -p "$(dirname "$OUT")"
cd "$mod"
# -buildvcs=false: the tools module sits inside the coffer checkout, whose
# git state says nothing about sops (and git may refuse a checkout owned by
# another user).
go build -trimpath -buildvcs=false -ldflags "-s -w" -o "$OUT" github.com/getsops/sops/v3/cmd/sops
echo "built $OUT"
"$OUT" --disable-version-check --version
